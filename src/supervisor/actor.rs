//! The supervisor actor: its messages, its state (one [`LaneState`] per lane, with its connection
//! actor and its own backoff), and what it does on each report — a connection up, a health
//! verdict, a replacement, shutdown. Its restart policy (a loss, its backoff, restart intensity,
//! giving up) is `restart.rs`; what the lanes together publish, `lanes.rs`; its dedicated
//! children (subscriber, sentinel watcher), `dedicated.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::task::JoinHandle;

use super::core::Core;
use super::dedicated::{Subscriber, Watcher};
use super::lanes;
use crate::availability::{Availability, EventKind};
use crate::backoff::{RestartIntensity, RestartTracker};
use crate::config::Config;
use crate::connection::{
    ConnectionActor, ConnectionArgs, ConnectionMsg, ConnectionReport, ConnectionUp,
};
use crate::error::{ConnectionFailure, FailureKind};
use crate::health::{HealthActor, HealthArgs, HealthMsg, HealthReport, Verdict};
use crate::lane::{Lane, NotReady};
use crate::metrics::ConnectOutcome;
use crate::pubsub::{SubscriberReport, SubscriberWanted};
use crate::sentinel::WatcherReport;
use crate::topology::Topology;

/// Messages of the supervisor actor.
pub(crate) enum SupervisorMsg {
    /// From the connection actor.
    Connection(ConnectionReport),
    /// From the health actor.
    Health(HealthReport),
    /// The backoff delay of lane `lane`'s generation `generation` has passed: start a new
    /// connection for it.
    Reconnect { lane: usize, generation: u64 },
    /// A connection (of lane `lane`) that came up during a restart storm may have been stable
    /// long enough.
    StableCheck { lane: usize, generation: u64 },
    /// From the subscriber actor.
    Subscriber(SubscriberReport),
    /// The first subscription wants the subscriber connection.
    SubscriberWanted,
    /// The backoff delay of a lost subscriber connection has passed.
    RestartSubscriber { generation: u64 },
    /// From the sentinel watcher.
    Watcher(WatcherReport),
    /// The backoff delay of a failed sentinel watcher has passed.
    RestartWatcher { generation: u64 },
    /// Close the connection (QUIT), stop the children, publish `Stopped`, stop.
    Shutdown(RpcReplyPort<()>),
}

/// Converts a child's report into the supervisor's message, and back (for `DerivedActorRef`).
macro_rules! report_conversions {
    ($($report:ty => $variant:ident),* $(,)?) => {$(
        impl From<$report> for SupervisorMsg {
            fn from(report: $report) -> Self {
                SupervisorMsg::$variant(report)
            }
        }

        impl TryFrom<SupervisorMsg> for $report {
            type Error = SupervisorMsg;
            fn try_from(msg: SupervisorMsg) -> Result<Self, SupervisorMsg> {
                match msg {
                    SupervisorMsg::$variant(report) => Ok(report),
                    other => Err(other),
                }
            }
        }
    )*};
}

report_conversions! {
    ConnectionReport => Connection,
    HealthReport => Health,
    SubscriberReport => Subscriber,
    WatcherReport => Watcher,
}

impl From<SubscriberWanted> for SupervisorMsg {
    fn from(_: SubscriberWanted) -> Self {
        SupervisorMsg::SubscriberWanted
    }
}

impl TryFrom<SupervisorMsg> for SubscriberWanted {
    type Error = SupervisorMsg;
    fn try_from(msg: SupervisorMsg) -> Result<Self, SupervisorMsg> {
        match msg {
            SupervisorMsg::SubscriberWanted => Ok(SubscriberWanted),
            other => Err(other),
        }
    }
}

/// How a connected server is doing, as far as the supervisor knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Condition {
    Ready,
    Slow(String),
    Failing(String),
    NotReady(NotReady),
}

/// What a published serving state is, ignoring its text: a new event is published only when
/// this changes (a slow server does not publish one event per probe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    Up,
    Storm,
    /// Some lanes down (how many), the others serving.
    LanesDown(usize),
    Slow,
    Failing,
    NotReady(FailureKind),
}

/// A connection actor that finished its handshake.
pub(super) struct Connected {
    pub(super) lane: Lane,
    /// Where it is (the master, with Sentinel).
    pub(super) address: crate::config::NodeAddr,
    /// `redis_version` and `role` from its INFO, for `Up`.
    pub(super) version: String,
    pub(super) role: String,
    pub(super) condition: Condition,
}

/// The current connection actor and how far it got.
pub(super) struct Child {
    pub(super) actor: ActorRef<ConnectionMsg>,
    /// `None` while it is still connecting.
    pub(super) connected: Option<Connected>,
}

/// One lane, as the supervisor keeps it: its connection actor (if any) and its own backoff.
pub(super) struct LaneState {
    pub(super) child: Option<Child>,
    pub(super) tracker: RestartTracker,
    /// Bumped by every loss of this lane: a timer armed for an older generation is stale.
    pub(super) generation: u64,
    /// The pending reconnect, after the backoff delay.
    pub(super) reconnect_timer: Option<Timer>,
    /// The pending check that a connection made during a storm stayed up for the stable period.
    pub(super) stable_timer: Option<Timer>,
    /// After a refused attempt: the watch for the port accepting again (`comeback`).
    pub(super) comeback: super::comeback::Watch,
    /// Why this lane was last lost.
    pub(super) last_failure: Option<String>,
}

impl LaneState {
    pub(super) fn new(config: &Config) -> Self {
        LaneState {
            child: None,
            tracker: RestartTracker::new(config.backoff(), config.stable_period()),
            generation: 0,
            reconnect_timer: None,
            stable_timer: None,
            comeback: super::comeback::Watch::default(),
            last_failure: None,
        }
    }

    pub(super) fn connected(&self) -> Option<&Connected> {
        self.child.as_ref().and_then(|c| c.connected.as_ref())
    }

    /// Connected, and its server can serve.
    pub(super) fn serving(&self) -> Option<&Connected> {
        self.connected()
            .filter(|c| !matches!(c.condition, Condition::NotReady(_)))
    }
}

/// State of the supervisor actor.
pub(crate) struct SupervisorState {
    pub(super) core: Arc<Core>,
    pub(super) topology: Topology,
    pub(super) intensity: RestartIntensity,
    /// While a restart storm lasts: its description.
    pub(super) storm: Option<String>,
    /// The lanes (`Config::lanes` of them), each with its connection actor.
    pub(super) lanes: Vec<LaneState>,
    /// What serving state was last published, and on which lanes.
    pub(super) published: Option<(Class, Vec<ActorId>)>,
    /// The health actor (restarted if it fails).
    pub(super) health: Option<ActorRef<HealthMsg>>,
    /// Set when `Shutdown` is handled: no further attempt.
    pub(super) stopping: bool,
    /// The pub/sub subscriber actor and its restarts.
    pub(super) subscriber: Subscriber,
    /// The sentinel watcher (with Sentinel) and its restarts.
    pub(super) watcher: Watcher,
    /// The master last connected to or named by the sentinels: a different one is a failover.
    pub(super) master: Option<crate::config::NodeAddr>,
}

pub(super) type Timer = JoinHandle<Result<(), ractor::MessagingErr<SupervisorMsg>>>;

impl SupervisorState {
    /// The lane whose connection actor is `id`.
    pub(super) fn lane_of(&self, id: ActorId) -> Option<usize> {
        self.lanes
            .iter()
            .position(|s| s.child.as_ref().is_some_and(|c| c.actor.get_id() == id))
    }

    pub(super) fn connected(&mut self, id: ActorId) -> Option<&mut Connected> {
        let i = self.lane_of(id)?;
        self.lanes[i]
            .child
            .as_mut()
            .and_then(|c| c.connected.as_mut())
    }

    pub(super) fn is_child(&self, id: ActorId) -> bool {
        self.lane_of(id).is_some()
    }

    /// True while some lane serves.
    pub(super) fn any_serving(&self) -> bool {
        self.lanes.iter().any(|s| s.serving().is_some())
    }

    pub(super) fn abort_timers(&mut self) {
        for lane_state in &mut self.lanes {
            for t in [
                lane_state.reconnect_timer.take(),
                lane_state.stable_timer.take(),
            ]
            .into_iter()
            .flatten()
            {
                t.abort();
            }
            lane_state.comeback.stop();
        }
    }

    /// Publishes the connected lanes' state (`Up`, `Degraded` or `NotReady`) if its class
    /// changed since the last publication; the route alone if only the serving lanes changed.
    /// With no lane connected, the `Down` or `Connecting` published stands.
    pub(super) fn publish_connected(&mut self, reason: &str) {
        let Some((state, class, lanes)) = lanes::aggregate(self) else {
            return;
        };
        let ids: Vec<ActorId> = lanes.iter().map(Lane::id).collect();
        match &self.published {
            Some((c, on)) if *c == class && *on == ids => return,
            Some((c, _)) if *c == class => self.core.set_lanes(&lanes),
            _ => self.core.publish(state, reason, &lanes),
        }
        self.published = Some((class, ids));
    }
}

/// The supervisor actor.
pub(crate) struct SupervisorActor;

/// During a restart storm, lane `index` came up: checks after the stable period that it stayed
/// up (which ends the storm).
fn arm_stable_check(myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState, index: usize) {
    let lane_state = &mut state.lanes[index];
    let generation = lane_state.generation;
    let period = state.core.config.stable_period();
    lane_state.stable_timer = Some(
        myself.send_after(period, move || SupervisorMsg::StableCheck {
            lane: index,
            generation,
        }),
    );
}

impl SupervisorActor {
    /// Starts lane `lane`'s connection actor (it connects in its own task; the supervisor does
    /// not wait).
    pub(super) async fn start_child(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        lane: usize,
    ) {
        // While another lane serves, this one connecting changes nothing callers see; while none
        // does, lane 0's attempts tell the outage (one stream of events, as with one lane).
        if !state.any_serving() && lane == 0 {
            let connecting = Availability::Connecting {
                attempt: state.lanes[lane].tracker.attempt().saturating_add(1),
            };
            // The first attempt is the state the supervisor started in: publish it once.
            if state.core.availability.current() != connecting {
                state.core.publish(connecting, "connecting", &[]);
                state.published = None;
            }
        }
        state.core.lane_status(lane, "connecting", None);
        let args = ConnectionArgs {
            config: state.core.config.clone(),
            topology: state.topology.clone(),
            lane,
            report: myself.get_derived(),
        };
        match ConnectionActor::spawn_linked(None, ConnectionActor, args, myself.get_cell()).await {
            Ok((actor, _join)) => {
                state.lanes[lane].child = Some(Child {
                    actor,
                    connected: None,
                });
            }
            Err(e) => {
                let message = format!("connection actor did not start: {e}");
                let failure = ConnectionFailure::new(FailureKind::Other, message);
                self.child_failed(myself, state, lane, failure);
            }
        }
    }

    /// Starts the health actor (linked; restarted if it ever fails).
    pub(super) async fn start_health(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) {
        let core = &state.core;
        let args = HealthArgs {
            config: core.config.clone(),
            topology: core.topology.clone(),
            route: core.health_route.clone(),
            metrics: core.health_metrics.clone(),
            board: core.board.clone(),
            report: myself.get_derived(),
        };
        match HealthActor::spawn_linked(None, HealthActor, args, myself.get_cell()).await {
            Ok((health, _join)) => state.health = Some(health),
            Err(e) => tracing::error!(error = %e, "health actor did not start; probes are off"),
        }
    }

    /// Connection `id` finished its handshake.
    pub(super) fn connection_up(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        up: ConnectionUp,
    ) {
        let ConnectionUp {
            id,
            stats,
            lane,
            not_ready,
            address,
        } = up;
        let Some(index) = state.lane_of(id) else {
            return;
        };
        if state.stopping || state.core.handles.is_closed() {
            return;
        }
        state.lanes[index].tracker.on_up(Instant::now());
        state.core.metrics.connect(ConnectOutcome::Success);
        state.core.metrics.lane_up(index, true);
        tracing::debug!(
            client = %state.core.config.name(),
            state = "up",
            server_version = %stats.version,
            role = %stats.role,
            ready = not_ready.is_none(),
            "redis connection up"
        );
        if state.topology.follows_sentinels() {
            match state.master.clone() {
                Some(known) if known != address => self.announce_failover(state, &known, &address),
                _ => state.master = Some(address.clone()),
            }
        }
        let reason = match &not_ready {
            None => "connected".to_string(),
            Some(n) => format!("connected, but the server cannot serve yet: {}", n.message),
        };
        if !state.any_serving() && not_ready.is_none() {
            self.outage_over(myself, state, index);
        }
        let shown = if not_ready.is_some() {
            "not_ready"
        } else {
            "up"
        };
        state
            .core
            .lane_status(index, shown, Some(address.to_string()));
        if let Some(child) = state.lanes[index].child.as_mut() {
            child.connected = Some(Connected {
                lane,
                address,
                version: stats.version.clone(),
                role: stats.role.clone(),
                condition: not_ready.map_or(Condition::Ready, Condition::NotReady),
            });
        }
        if let Some(health) = &state.health {
            let _ = health.cast(HealthMsg::Connected { id, stats });
        }
        state.publish_connected(&reason);
        if state.storm.is_some() {
            arm_stable_check(myself, state, index);
        }
    }

    /// The first lane back after an outage (lane `index`): the server answers again, so the
    /// other lanes' failures belong to the outage. They are forgotten, and the lanes waiting out
    /// a backoff reconnect now.
    fn outage_over(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        index: usize,
    ) {
        for lane in 0..state.lanes.len() {
            let lane_state = &mut state.lanes[lane];
            if lane == index || lane_state.connected().is_some() {
                continue;
            }
            lane_state.last_failure = None;
            if lane_state.child.is_none() {
                self.schedule_reconnect(myself, state, lane, Duration::ZERO);
            }
        }
    }

    /// A health verdict on connection `id`.
    pub(super) fn health_report(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        report: HealthReport,
    ) {
        let HealthReport { id, verdict } = report;
        if state.stopping {
            return;
        }
        let Some(connected) = state.connected(id) else {
            return;
        };
        let condition = match verdict {
            Verdict::Unhealthy(reason) => return self.replace(myself, state, id, reason),
            Verdict::NotMaster(reason) => {
                return self.replace_lane(myself, state, id, FailureKind::NotMaster, reason);
            }
            Verdict::Reshaped(shards) => {
                let reason = format!("the cluster changed shape: {}", shards.join("; "));
                tracing::info!(client = %state.core.config.name(), shape = %shards.join("; "), "redis cluster changed shape");
                let core = &state.core;
                core.metrics.cluster_changed();
                let notice = EventKind::ClusterChanged { shards };
                core.availability
                    .publish_kind(core.availability.current(), reason, notice);
                return;
            }
            Verdict::Healthy => Condition::Ready,
            // Some lanes unserved is degraded service, as a slow server is.
            Verdict::Slow(why) | Verdict::Partial(why) => Condition::Slow(why),
            // No answer does not make a server that cannot serve look like it can.
            Verdict::Failing(_) if matches!(connected.condition, Condition::NotReady(_)) => {
                return;
            }
            Verdict::Failing(why) => Condition::Failing(why),
            Verdict::NotReady(n) => Condition::NotReady(n),
        };
        let reason = match &condition {
            Condition::Ready => "health probes answer",
            Condition::Slow(why) | Condition::Failing(why) => why.as_str(),
            Condition::NotReady(n) => n.message.as_str(),
        }
        .to_string();
        connected.condition = condition;
        state.publish_connected(&reason);
    }

    /// Shutdown: stop the health actor, QUIT and stop the connection, publish `Stopped`.
    pub(super) async fn shutdown(&self, state: &mut SupervisorState) {
        state.stopping = true;
        state.abort_timers();
        state.core.begin_shutdown();
        if let Some(health) = state.health.take() {
            let _ = health
                .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(2)))
                .await;
        }
        self.stop_subscriber(state).await;
        for child in state.lanes.iter_mut().filter_map(|s| s.child.take()) {
            let _ = child
                .actor
                .call(ConnectionMsg::Quit, Some(Duration::from_secs(1)))
                .await;
            let _ = child
                .actor
                .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(2)))
                .await;
        }
        tracing::debug!(client = %state.core.config.name(), state = "stopped", "redis supervisor stopped");
        state.core.publish(Availability::Stopped, "shutdown", &[]);
    }
}

impl Actor for SupervisorActor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Arc<Core>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        core: Arc<Core>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let config = core.config.clone();
        Ok(SupervisorState {
            topology: core.topology.clone(),
            intensity: RestartIntensity::new(config.restart_intensity(), config.restart_window()),
            storm: None,
            lanes: (0..config.lanes())
                .map(|_| LaneState::new(&config))
                .collect(),
            published: None,
            health: None,
            stopping: false,
            subscriber: Subscriber::new(&config),
            watcher: Watcher::new(&config),
            master: None,
            core,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        self.start_health(&myself, state).await;
        if state.core.topology.sentinel().is_some() {
            self.start_watcher(&myself, state).await;
        }
        for lane in 0..state.lanes.len() {
            self.start_child(&myself, state, lane).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Reconnect { lane, generation } => {
                let closed = state.core.handles.is_closed();
                let due = state
                    .lanes
                    .get(lane)
                    .is_some_and(|s| s.generation == generation && s.child.is_none());
                if due && !state.stopping && !closed {
                    state.lanes[lane].reconnect_timer = None;
                    state.lanes[lane].comeback.stop();
                    state.core.restarts.fetch_add(1, Ordering::Relaxed);
                    state.core.metrics.restarted();
                    self.start_child(&myself, state, lane).await;
                }
            }
            SupervisorMsg::Connection(ConnectionReport::Up(up)) => {
                self.connection_up(&myself, state, *up);
            }
            SupervisorMsg::Connection(ConnectionReport::Refused { id, not_ready }) => {
                if let Some(c) = state.connected(id) {
                    let reason = not_ready.message.clone();
                    c.condition = Condition::NotReady(not_ready);
                    state.publish_connected(&reason);
                }
            }
            SupervisorMsg::Health(report) => self.health_report(&myself, state, report),
            SupervisorMsg::Subscriber(SubscriberReport::Up) => state.subscriber.up(),
            SupervisorMsg::SubscriberWanted => {
                if state.subscriber.actor.is_none() && !state.stopping {
                    self.start_subscriber(&myself, state).await;
                }
            }
            SupervisorMsg::RestartSubscriber { generation } => {
                if state.subscriber.is_due(generation) && !state.stopping {
                    self.start_subscriber(&myself, state).await;
                }
            }
            SupervisorMsg::Watcher(WatcherReport::Master { master, switched }) => {
                self.master_named(&myself, state, master, switched);
            }
            SupervisorMsg::RestartWatcher { generation } => {
                if state.watcher.is_due(generation) && !state.stopping {
                    self.start_watcher(&myself, state).await;
                }
            }
            SupervisorMsg::StableCheck { lane, generation } => {
                let Some(lane_state) = state.lanes.get_mut(lane) else {
                    return Ok(());
                };
                lane_state.stable_timer = None;
                let up = lane_state.connected().is_some();
                if generation == lane_state.generation
                    && up
                    && state.storm.is_some()
                    && lane_state.tracker.is_stable(Instant::now())
                {
                    state.storm = None;
                    state.intensity.reset();
                    state.publish_connected("stable again after a restart storm");
                }
            }
            SupervisorMsg::Shutdown(reply) => {
                self.shutdown(state).await;
                // The caller may have given up waiting.
                let _ = reply.send(());
                myself.stop(Some("shutdown".into()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(id) = event.actor_cell().map(|c| c.get_id()) {
            if state.subscriber.is(id) {
                self.subscriber_event(&myself, state, &event);
                return Ok(());
            }
            if state.watcher.is(id) {
                self.watcher_event(&myself, state, &event);
                return Ok(());
            }
        }
        match event {
            SupervisionEvent::ActorFailed(cell, err)
                if state.health.as_ref().map(|h| h.get_id()) == Some(cell.get_id()) =>
            {
                tracing::error!(error = %err, "health actor failed; restarting it");
                state.health = None;
                if !state.stopping {
                    self.start_health(&myself, state).await;
                }
            }
            SupervisionEvent::ActorFailed(cell, err) if state.is_child(cell.get_id()) => {
                let failure = ConnectionFailure::from_actor_error(err.as_ref());
                if let Some(lane) = state.lane_of(cell.get_id()) {
                    self.child_failed(&myself, state, lane, failure);
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) if state.is_child(cell.get_id()) => {
                let reason = reason.unwrap_or_else(|| "connection actor stopped".to_string());
                let failure = ConnectionFailure::new(FailureKind::Other, reason);
                if let Some(lane) = state.lane_of(cell.get_id()) {
                    self.child_failed(&myself, state, lane, failure);
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                tracing::debug!(actor = %cell.get_id(), error = %err, "stale connection actor failed");
            }
            SupervisionEvent::ActorTerminated(cell, ..) => {
                tracing::debug!(actor = %cell.get_id(), "stale child actor stopped");
            }
            SupervisionEvent::ActorStarted(_) => {}
            other => tracing::debug!(event = ?other, "unexpected supervision event"),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Reached by shutdown or by the public Supervisor being dropped: either way commands
        // must stop waiting.
        state.abort_timers();
        state.subscriber.abort_timer();
        state.watcher.abort_timer();
        state.core.begin_shutdown();
        state.core.pubsub.close();
        if state.core.availability.current() != Availability::Stopped {
            state
                .core
                .publish(Availability::Stopped, "supervisor stopped", &[]);
        }
        Ok(())
    }
}
