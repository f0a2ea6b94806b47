//! The supervisor: the actor that owns the connection actor and the health actor — restarting
//! the connection with backoff and jitter, replacing it when the health actor finds it silent,
//! and publishing every availability transition — and the public [`Supervisor`] type that starts
//! it, hands out [`RedisHandle`]s and shuts everything down.
//!
//! The supervisor is the one writer of availability and of the route (derived from it, see
//! the `route` module). Its children report through types of their own (`ConnectionReport`,
//! `HealthReport`) that convert into its message type; it never `call`s a child that could
//! call it back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::availability::{Availability, AvailabilityEvents, AvailabilityPublisher, EventKind};
use crate::backoff::{RestartIntensity, RestartTracker};
use crate::config::Config;
use crate::connection::{
    ConnectionActor, ConnectionArgs, ConnectionMsg, ConnectionReport, ConnectionUp,
};
use crate::delivery::HandleCore;
use crate::error::{ConnectionFailure, Error, FailureKind};
use crate::handle::RedisHandle;
use crate::health::{
    HealthActor, HealthArgs, HealthBoard, HealthMsg, HealthReport, HealthSnapshot, Verdict,
};
use crate::lane::{Lane, NotReady};
use crate::metrics::{ClientMetrics, ConnectOutcome, HealthMetrics, Metrics, SharedRecorder};
use crate::pubsub::{PubSub, PubSubShared, SubscriberReport, SubscriberWanted};
use crate::route::{Route, RouteState, RouteWriter};
use crate::sentinel::WatcherReport;
use crate::topology::Topology;

mod dedicated;
mod lanes;

/// The longest wait before connecting again to a replica being promoted that did not say
/// "master" yet.
const PROMOTION_RETRY: Duration = Duration::from_millis(10);
use dedicated::{Subscriber, Watcher};

/// What the supervisor and the public [`Supervisor`] share; written only by this module.
pub(crate) struct Core {
    config: Arc<Config>,
    route: RouteWriter,
    availability: AvailabilityPublisher,
    metrics: ClientMetrics,
    /// Connection actors started to replace a failed one.
    restarts: AtomicU64,
    handles: Arc<HandleCore>,
    /// What the health actor is started with (again, if it fails), but its report port.
    health_route: Route,
    health_metrics: Arc<HealthMetrics>,
    board: HealthBoard,
    /// The pub/sub registry and subscriber connection state.
    pubsub: Arc<PubSubShared>,
    /// Where connections go (with Sentinel: what the watcher knows of it).
    topology: Topology,
    /// Each lane's state for `/health/redis` (written by the supervisor actor only).
    lanes: std::sync::Mutex<Vec<LaneStatus>>,
    /// Orders publications against the start of shutdown (see `publish`).
    publishing: std::sync::Mutex<()>,
}

/// One lane as `/health/redis` shows it.
#[derive(Debug, Clone)]
pub(crate) struct LaneStatus {
    /// `connecting`, `up`, `not_ready` or `down`.
    pub(crate) state: &'static str,
    /// The server it is connected to.
    pub(crate) address: Option<String>,
    /// Why it was last lost.
    pub(crate) last_error: Option<String>,
    /// Commands outstanding and answered on its current connection (with more than one lane).
    pub(crate) outstanding: usize,
    pub(crate) served: u64,
}

impl Core {
    fn lane_status(&self, lane: usize, state: &'static str, address: Option<String>) {
        if let Ok(mut lanes) = self.lanes.lock()
            && let Some(l) = lanes.get_mut(lane)
        {
            l.state = state;
            if address.is_some() || state != "up" {
                l.address = address;
            }
        }
    }

    fn lane_failed(&self, lane: usize, error: &str) {
        if let Ok(mut lanes) = self.lanes.lock()
            && let Some(l) = lanes.get_mut(lane)
        {
            l.state = "down";
            l.address = None;
            l.last_error = Some(error.to_string());
        }
    }
}

impl Core {
    /// Publishes a transition: the route derived from it (about `lane`), the state gauges, then
    /// the watch and the event. Once shutdown has begun only `Down`, `GaveUp` and `Stopped` are
    /// still published: availability never says `Up` again.
    fn publish(&self, state: Availability, reason: impl Into<String>, lanes: &[Lane]) {
        let terminal = matches!(
            state,
            Availability::Down { .. } | Availability::GaveUp { .. } | Availability::Stopped
        );
        // Held across the check and the publication, and by `begin_shutdown` across the close:
        // a state that is not terminal is either published before shutdown began or not at all.
        let _publishing = self
            .publishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.handles.is_closed() && !terminal {
            return;
        }
        let route = RouteState::derive(&state, lanes, &self.route.current().state);
        self.route.set(route);
        self.metrics.set_state(&state);
        self.availability.publish(state, reason);
    }

    /// The serving lanes changed but not what availability says (a lane back while another is
    /// still down): the route only.
    fn set_lanes(&self, lanes: &[Lane]) {
        let state = self.availability.current();
        if self.handles.is_closed() || !state.is_serving() {
            return;
        }
        self.route.set(RouteState::derive(
            &state,
            lanes,
            &self.route.current().state,
        ));
    }

    /// Shutdown begins: no new commands, waiting ones answer `ShuttingDown`.
    fn begin_shutdown(&self) {
        let _publishing = self
            .publishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.handles.close();
        self.route.set(RouteState::Stopped);
    }
}

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
enum Condition {
    Ready,
    Slow(String),
    Failing(String),
    NotReady(NotReady),
}

/// What a published serving state is, ignoring its text: a new event is published only when
/// this changes (a slow server does not publish one event per probe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Up,
    Storm,
    /// Some lanes down (how many), the others serving.
    LanesDown(usize),
    Slow,
    Failing,
    NotReady(FailureKind),
}

/// A connection actor that finished its handshake.
struct Connected {
    lane: Lane,
    /// Where it is (the master, with Sentinel).
    address: crate::config::NodeAddr,
    /// `redis_version` and `role` from its INFO, for `Up`.
    version: String,
    role: String,
    condition: Condition,
}

/// The current connection actor and how far it got.
struct Child {
    actor: ActorRef<ConnectionMsg>,
    /// `None` while it is still connecting.
    connected: Option<Connected>,
}

/// One lane: its connection actor (if any) and its own backoff.
struct Slot {
    child: Option<Child>,
    tracker: RestartTracker,
    /// Bumped by every loss of this lane: a timer armed for an older generation is stale.
    generation: u64,
    /// The pending reconnect, after the backoff delay.
    reconnect_timer: Option<Timer>,
    /// The pending check that a connection made during a storm stayed up for the stable period.
    stable_timer: Option<Timer>,
    /// Why this lane was last lost.
    last_failure: Option<String>,
}

impl Slot {
    fn new(config: &Config) -> Self {
        Slot {
            child: None,
            tracker: RestartTracker::new(config.backoff(), config.stable_period()),
            generation: 0,
            reconnect_timer: None,
            stable_timer: None,
            last_failure: None,
        }
    }

    fn connected(&self) -> Option<&Connected> {
        self.child.as_ref().and_then(|c| c.connected.as_ref())
    }

    /// Connected, and its server can serve.
    fn serving(&self) -> Option<&Connected> {
        self.connected()
            .filter(|c| !matches!(c.condition, Condition::NotReady(_)))
    }
}

/// State of the supervisor actor.
pub(crate) struct SupervisorState {
    core: Arc<Core>,
    topology: Topology,
    intensity: RestartIntensity,
    /// While a restart storm lasts: its description.
    storm: Option<String>,
    /// The lanes (`Config::lanes` of them), each with its connection actor.
    slots: Vec<Slot>,
    /// What serving state was last published, and on which lanes.
    published: Option<(Class, Vec<ActorId>)>,
    /// The health actor (restarted if it fails).
    health: Option<ActorRef<HealthMsg>>,
    /// Set when `Shutdown` is handled: no further attempt.
    stopping: bool,
    /// The pub/sub subscriber actor and its restarts.
    subscriber: Subscriber,
    /// The sentinel watcher (with Sentinel) and its restarts.
    watcher: Watcher,
    /// The master last connected to or named by the sentinels: a different one is a failover.
    master: Option<crate::config::NodeAddr>,
}

type Timer = JoinHandle<Result<(), ractor::MessagingErr<SupervisorMsg>>>;

impl SupervisorState {
    /// The lane whose connection actor is `id`.
    fn slot_of(&self, id: ActorId) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.child.as_ref().is_some_and(|c| c.actor.get_id() == id))
    }

    fn connected(&mut self, id: ActorId) -> Option<&mut Connected> {
        let i = self.slot_of(id)?;
        self.slots[i]
            .child
            .as_mut()
            .and_then(|c| c.connected.as_mut())
    }

    fn is_child(&self, id: ActorId) -> bool {
        self.slot_of(id).is_some()
    }

    /// True while some lane serves.
    fn any_serving(&self) -> bool {
        self.slots.iter().any(|s| s.serving().is_some())
    }

    fn abort_timers(&mut self) {
        for slot in &mut self.slots {
            for t in [slot.reconnect_timer.take(), slot.stable_timer.take()]
                .into_iter()
                .flatten()
            {
                t.abort();
            }
        }
    }

    /// Publishes the connected lanes' state (`Up`, `Degraded` or `NotReady`) if its class
    /// changed since the last publication; the route alone if only the serving lanes changed.
    /// With no lane connected, the `Down` or `Connecting` published stands.
    fn publish_connected(&mut self, reason: &str) {
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

impl SupervisorActor {
    /// Starts lane `lane`'s connection actor (it connects in its own task; the supervisor does
    /// not wait).
    async fn start_child(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        lane: usize,
    ) {
        // While another lane serves, this one connecting changes nothing callers see; while none
        // does, lane 0's attempts tell the outage (one stream of events, as with one lane).
        if !state.any_serving() && lane == 0 {
            let connecting = Availability::Connecting {
                attempt: state.slots[lane].tracker.attempt().saturating_add(1),
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
                state.slots[lane].child = Some(Child {
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
    async fn start_health(&self, myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState) {
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

    /// Lane `lane`'s connection (or attempt) failed: publish `Down` (or `GaveUp`) — or, while
    /// other lanes serve, `Degraded` naming how many are down — and schedule its next attempt.
    fn child_failed(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        lane: usize,
        failure: ConnectionFailure,
    ) {
        let served_before = state.any_serving();
        let slot = &mut state.slots[lane];
        let was_up = slot.child.take().is_some_and(|c| c.connected.is_some());
        slot.last_failure = Some(failure.message.clone());
        if state.stopping {
            return;
        }
        state.core.metrics.lane_up(lane, false);
        state.core.lane_failed(lane, &failure.message);
        if !was_up {
            state.core.metrics.connect(ConnectOutcome::Failure);
        }
        let others_serve = state.any_serving();
        if let Some(health) = &state.health
            && !others_serve
        {
            let _ = health.cast(HealthMsg::Lost(failure.clone()));
        }
        let now = Instant::now();
        let storm_started = was_up.then(|| note_restart(state, lane, now)).flatten();
        // A failover moved the master: not a failure of ours, reconnect (to the new one) at once.
        // (A node found not to be the master while connecting waits its backoff: the sentinels
        // may not have switched yet.)
        let moved = failure.kind == FailureKind::Failover
            || (was_up && failure.kind == FailureKind::NotMaster);
        // The replica the sentinels are promoting still said "replica": it turns master within
        // milliseconds of `REPLICAOF NO ONE`, so it is asked again soon, not after a backoff.
        let promoting = failure.kind == FailureKind::NotMaster && state.topology.promoting();
        let storming = state.storm.is_some();
        let slot = &mut state.slots[lane];
        let delay = if moved {
            Duration::ZERO
        } else if promoting {
            slot.tracker
                .on_failure(now, fastrand::f64(), storming)
                .min(PROMOTION_RETRY)
        } else {
            slot.tracker.on_failure(now, fastrand::f64(), storming)
        };
        if let Some(t) = slot.stable_timer.take() {
            t.abort();
        }
        if others_serve {
            // The others keep serving: `Degraded`, "k of n lanes down".
            state.publish_connected(&failure.message);
            if let Some((text, restarts, window)) = storm_started {
                publish_storm(state, text, restarts, window);
            }
        } else if lane == 0 || served_before {
            // This loss ended service, or it is lane 0's attempt during an outage: `Down` (the
            // other lanes' attempts meanwhile publish nothing: one stream of events).
            if gave_up(state, lane, &failure) {
                // Final: no lane tries again.
                state.stopping = true;
                state.abort_timers();
                for child in state.slots.iter_mut().filter_map(|s| s.child.take()) {
                    child.actor.stop(Some("gave up".into()));
                }
                return;
            }
            publish_down(state, &failure, delay, storm_started);
            state.published = None;
        }
        self.schedule_reconnect(myself, state, lane, delay);
    }

    fn schedule_reconnect(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        lane: usize,
        delay: Duration,
    ) {
        let slot = &mut state.slots[lane];
        slot.generation = slot.generation.wrapping_add(1);
        let generation = slot.generation;
        if let Some(t) = slot.reconnect_timer.take() {
            t.abort();
        }
        slot.reconnect_timer =
            Some(myself.send_after(delay, move || SupervisorMsg::Reconnect { lane, generation }));
    }

    /// Connection `id` finished its handshake.
    fn connection_up(
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
        let Some(index) = state.slot_of(id) else {
            return;
        };
        if state.stopping || state.core.handles.is_closed() {
            return;
        }
        state.slots[index].tracker.on_up(Instant::now());
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
        if state.topology.kind() == crate::topology::Kind::Sentinel {
            match state.master.clone() {
                Some(known) if known != address => self.announce_failover(state, &known, &address),
                _ => state.master = Some(address.clone()),
            }
        }
        let reason = match &not_ready {
            None => "connected".to_string(),
            Some(n) => format!("connected, but the server cannot serve yet: {}", n.message),
        };
        // The first lane back after an outage: the server answers again, so the other lanes'
        // failures belong to the outage. They are forgotten, and the lanes waiting out a
        // backoff reconnect now.
        if !state.any_serving() && not_ready.is_none() {
            for lane in 0..state.slots.len() {
                let slot = &mut state.slots[lane];
                if lane == index || slot.connected().is_some() {
                    continue;
                }
                slot.last_failure = None;
                if slot.child.is_none() {
                    self.schedule_reconnect(myself, state, lane, Duration::ZERO);
                }
            }
        }
        let shown = if not_ready.is_some() {
            "not_ready"
        } else {
            "up"
        };
        state
            .core
            .lane_status(index, shown, Some(address.to_string()));
        if let Some(child) = state.slots[index].child.as_mut() {
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
            let slot = &mut state.slots[index];
            let generation = slot.generation;
            let period = state.core.config.stable_period();
            slot.stable_timer =
                Some(
                    myself.send_after(period, move || SupervisorMsg::StableCheck {
                        lane: index,
                        generation,
                    }),
                );
        }
    }

    /// A health verdict on connection `id`.
    fn health_report(
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
            // Some slots unserved is degraded service, as a slow server is.
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

    /// The health actor found connection `id` silent: replace it now (its termination event
    /// arrives later and is then stale).
    fn replace(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        id: ActorId,
        reason: String,
    ) {
        self.replace_lane(myself, state, id, FailureKind::Unhealthy, reason);
    }

    /// Replaces connection `id` (or attempt) now, for a reason of `kind`.
    fn replace_lane(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        id: ActorId,
        kind: FailureKind,
        reason: String,
    ) {
        let Some(lane) = state.slot_of(id) else {
            return;
        };
        self.replace_slot(myself, state, lane, kind, reason);
    }

    /// Replaces every lane's connection (or attempt) now, for a reason of `kind`.
    fn replace_now(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        kind: FailureKind,
        reason: String,
    ) {
        for lane in 0..state.slots.len() {
            self.replace_slot(myself, state, lane, kind, reason.clone());
        }
    }

    fn replace_slot(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        lane: usize,
        kind: FailureKind,
        reason: String,
    ) {
        let Some(actor) = state.slots[lane].child.as_ref().map(|c| c.actor.clone()) else {
            return;
        };
        let failure = ConnectionFailure::new(kind, reason.clone());
        self.child_failed(myself, state, lane, failure);
        actor.stop(Some(reason));
    }

    /// Shutdown: stop the health actor, QUIT and stop the connection, publish `Stopped`.
    async fn shutdown(&self, state: &mut SupervisorState) {
        state.stopping = true;
        state.abort_timers();
        state.core.begin_shutdown();
        if let Some(health) = state.health.take() {
            let _ = health
                .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(2)))
                .await;
        }
        self.stop_subscriber(state).await;
        for child in state.slots.iter_mut().filter_map(|s| s.child.take()) {
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

/// Records a lost connection against the restart intensity; returns the storm's description,
/// restarts and window when this loss starts a restart storm.
fn note_restart(
    state: &mut SupervisorState,
    lane: usize,
    now: Instant,
) -> Option<(String, u32, Duration)> {
    if state.slots[lane].tracker.is_stable(now) {
        state.intensity.reset();
        state.storm = None;
    }
    let restarts = state.intensity.record(now)?;
    if state.storm.is_some() {
        return None;
    }
    let window = state.intensity.window();
    let text = format!(
        "restart storm: {restarts} connections lost within {} s",
        window.as_secs()
    );
    state.core.metrics.storm();
    state.storm = Some(text.clone());
    Some((text, restarts, window))
}

/// With a maximum of attempts configured and reached: publish `GaveUp` (final) and say so.
fn gave_up(state: &SupervisorState, lane: usize, failure: &ConnectionFailure) -> bool {
    let attempts = state.slots[lane].tracker.attempt();
    let Some(max) = state.core.config.max_attempts() else {
        return false;
    };
    if attempts < max {
        return false;
    }
    let reason = &failure.message;
    let text = format!("gave up after {attempts} consecutive failed attempts: {reason}");
    tracing::error!(client = %state.core.config.name(), reason = %reason, attempts, "redis supervisor gave up");
    let gave_up = Availability::GaveUp {
        error: reason.clone(),
        attempts,
    };
    state.core.publish(gave_up, text, &[]);
    true
}

/// Publishes `Down` (and the restart-storm notice, when one started).
fn publish_down(
    state: &SupervisorState,
    failure: &ConnectionFailure,
    delay: Duration,
    storm_started: Option<(String, u32, Duration)>,
) {
    let core = &state.core;
    tracing::debug!(
        client = %core.config.name(),
        state = "down",
        reason = %failure.message,
        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        "redis connection down"
    );
    let down = Availability::Down {
        error: failure.message.clone(),
        kind: failure.kind,
        retry_in: delay,
    };
    core.publish(down, failure.message.clone(), &[]);
    if let Some((text, restarts, window)) = storm_started {
        publish_storm(state, text, restarts, window);
    }
}

/// Publishes the restart-storm notice (with the state it happens in).
fn publish_storm(state: &SupervisorState, text: String, restarts: u32, window: Duration) {
    let core = &state.core;
    tracing::warn!(client = %core.config.name(), restarts, "redis restart storm");
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    let notice = EventKind::RestartStorm {
        restarts,
        window_ms,
    };
    core.availability
        .publish_kind(core.availability.current(), text, notice);
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
            slots: (0..config.lanes()).map(|_| Slot::new(&config)).collect(),
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
        for lane in 0..state.slots.len() {
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
                    .slots
                    .get(lane)
                    .is_some_and(|s| s.generation == generation && s.child.is_none());
                if due && !state.stopping && !closed {
                    state.slots[lane].reconnect_timer = None;
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
                let Some(slot) = state.slots.get_mut(lane) else {
                    return Ok(());
                };
                slot.stable_timer = None;
                let up = slot.connected().is_some();
                if generation == slot.generation
                    && up
                    && state.storm.is_some()
                    && slot.tracker.is_stable(Instant::now())
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
                if let Some(lane) = state.slot_of(cell.get_id()) {
                    self.child_failed(&myself, state, lane, failure);
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) if state.is_child(cell.get_id()) => {
                let reason = reason.unwrap_or_else(|| "connection actor stopped".to_string());
                let failure = ConnectionFailure::new(FailureKind::Other, reason);
                if let Some(lane) = state.slot_of(cell.get_id()) {
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

/// A running supervisor: owns the actors, hands out [`RedisHandle`]s, publishes availability.
///
/// ```no_run
/// use redis_supervisor::{Config, Supervisor};
///
/// # async fn run() -> Result<(), redis_supervisor::Error> {
/// let supervisor = Supervisor::start(Config::from_env()?).await?; // returns even if Redis is down
/// let redis = supervisor.handle();
/// redis.set("greeting", "hello").await?;
/// let v: Option<String> = redis.get("greeting").await?;
/// let mut events = supervisor.subscribe();
/// # let _ = (v, &mut events);
/// supervisor.shutdown().await;
/// # Ok(()) }
/// ```
///
/// Dropping it without [`shutdown`](Self::shutdown) stops the actors without QUIT; handles still
/// held then answer [`Error::ShuttingDown`].
pub struct Supervisor {
    core: Arc<Core>,
    actor: ActorRef<SupervisorMsg>,
    /// The actor's task, taken by the first `shutdown`.
    join: Mutex<Option<JoinHandle<()>>>,
    handle: RedisHandle,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("config", &self.core.config)
            .field("availability", &self.availability())
            .finish()
    }
}

impl Supervisor {
    /// Starts the supervisor and its first connection attempt, and returns at once: it does not
    /// wait for Redis (use [`wait_until_up`](Self::wait_until_up) for that).
    ///
    /// # Errors
    /// [`Error::Connection`] if the actor runtime refuses to start an actor (it does not fail for
    /// an unreachable Redis).
    pub async fn start(config: Config) -> Result<Supervisor, Error> {
        Self::start_inner(config, None).await
    }

    /// Like [`start`](Self::start), registering the metrics in `recorder` instead of the global
    /// recorder: for tests, or a service that keeps several registries.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), redis_supervisor::Error> {
    /// use std::sync::Arc;
    /// let recorder = redis_supervisor::metrics::prometheus_builder().build_recorder();
    /// let prometheus = recorder.handle();
    /// let supervisor = redis_supervisor::Supervisor::start_with_recorder(
    ///     redis_supervisor::Config::from_env()?,
    ///     Arc::new(recorder),
    /// )
    /// .await?;
    /// println!("{}", prometheus.render());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub async fn start_with_recorder(
        config: Config,
        recorder: SharedRecorder,
    ) -> Result<Supervisor, Error> {
        Self::start_inner(config, Some(recorder)).await
    }

    async fn start_inner(
        config: Config,
        recorder: Option<SharedRecorder>,
    ) -> Result<Supervisor, Error> {
        // rustls needs one process-wide crypto provider; ring is the only one in our tree. An
        // application that installed its own first keeps it.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if config.tls_insecure_skip_verify() {
            tracing::warn!(
                client = config.name(),
                "TLS certificate verification is OFF (tls_insecure_skip_verify): the connection can be intercepted"
            );
        }
        let Metrics {
            client,
            commands,
            health,
            patterns,
            pubsub,
            blocking,
            leased,
        } = Metrics::new(config.name(), config.lanes(), recorder);
        let config = Arc::new(config);
        let topology = Topology::of(&config);
        let (route, reader) = RouteWriter::new();
        let core = Arc::new(Core {
            handles: HandleCore::new(
                config.clone(),
                reader.clone(),
                commands,
                patterns,
                [blocking, leased],
                topology.clone(),
            ),
            pubsub: PubSubShared::new(config.clone(), pubsub),
            publishing: std::sync::Mutex::new(()),
            lanes: std::sync::Mutex::new(
                (0..config.lanes())
                    .map(|_| LaneStatus {
                        state: "connecting",
                        address: None,
                        last_error: None,
                        outstanding: 0,
                        served: 0,
                    })
                    .collect(),
            ),
            topology: topology.clone(),
            config,
            route,
            availability: AvailabilityPublisher::new(Availability::Connecting { attempt: 1 }),
            metrics: client,
            restarts: AtomicU64::new(0),
            health_route: reader,
            health_metrics: Arc::new(health),
            board: HealthBoard::default(),
        });
        let (actor, join) = SupervisorActor::spawn(None, SupervisorActor, core.clone())
            .await
            .map_err(|e| Error::Connection(format!("could not start the supervisor actor: {e}")))?;
        core.pubsub.set_starter(actor.get_derived());
        let handle = RedisHandle::new(core.handles.clone());
        Ok(Supervisor {
            core,
            actor,
            join: Mutex::new(Some(join)),
            handle,
        })
    }

    /// A cheap, cloneable handle for running commands.
    pub fn handle(&self) -> RedisHandle {
        self.handle.clone()
    }

    /// Pub/sub on this supervisor's subscriber connection (opened by the first subscription,
    /// restored after every reconnect). Publish with [`RedisHandle::publish`]. See
    /// [`pubsub`](crate::pubsub).
    pub fn pubsub(&self) -> PubSub {
        PubSub::new(self.core.pubsub.clone(), self.handle.clone())
    }

    /// The current availability (always equal to the last event published).
    pub fn availability(&self) -> Availability {
        self.core.availability.current()
    }

    /// An ordered stream of every availability transition from now on.
    pub fn subscribe(&self) -> AvailabilityEvents {
        self.core.availability.subscribe()
    }

    /// A `watch` receiver of the current availability, for `changed().await` loops.
    pub fn watch(&self) -> watch::Receiver<Availability> {
        self.core.availability.watch()
    }

    /// The configuration this supervisor runs with.
    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// How many times a failed connection (or connection attempt) has been replaced.
    pub fn restarts(&self) -> u64 {
        self.core.restarts.load(Ordering::Relaxed)
    }

    /// How many commands are waiting for the connection to come up right now.
    pub fn offline_waiting(&self) -> usize {
        self.core.handles.offline_waiting()
    }

    /// Waits until the connection is up and the server can serve (`Up` or `Degraded`).
    ///
    /// # Errors
    /// [`Error::Unavailable`] with the last reason if it is not up within `timeout`;
    /// [`Error::ShuttingDown`] if the supervisor stops meanwhile.
    pub async fn wait_until_up(&self, timeout: Duration) -> Result<(), Error> {
        let mut rx = self.watch();
        let wait = rx.wait_for(|a| {
            a.is_serving() || matches!(a, Availability::Stopped | Availability::GaveUp { .. })
        });
        let serving = match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(a)) => a.is_serving(),
            _ => false,
        };
        if serving {
            return Ok(());
        }
        // Gave up, stopped, or not up in time: the route says which, and why.
        Err(crate::delivery::unavailable(
            &self.core.route.current().state,
            None,
        ))
    }

    /// Graceful shutdown: new commands get [`Error::ShuttingDown`] at once, in-flight ones
    /// finish or reach their deadline (waiting at most the configured shutdown timeout), the
    /// connection is closed with QUIT, and every actor is stopped and awaited. From the moment
    /// it is called, availability never says `Up` again. Idempotent.
    pub async fn shutdown(&self) {
        let lane = match &self.core.route.current().state {
            RouteState::Serving(lanes) => lanes.all().first().cloned(),
            _ => None,
        };
        self.core.begin_shutdown();
        let handles = &self.core.handles;
        for pool in handles.pools() {
            pool.close(lane.clone()).await;
        }
        if tokio::time::timeout(self.core.config.shutdown_timeout(), handles.drained())
            .await
            .is_err()
        {
            tracing::warn!(
                client = %self.core.config.name(),
                in_flight = handles.in_flight(),
                "shutdown timeout reached with commands still in flight"
            );
        }
        let mut join = self.join.lock().await;
        if let Some(join) = join.take() {
            let _ = self
                .actor
                .call(SupervisorMsg::Shutdown, Some(Duration::from_secs(5)))
                .await;
            self.actor.stop(Some("shutdown".into()));
            let _ = join.await;
        }
    }

    /// What the HTTP routes read.
    pub(crate) fn status(&self) -> Status {
        Status {
            core: self.core.clone(),
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.core.begin_shutdown();
        self.actor.stop(Some("supervisor dropped".into()));
    }
}

/// A read-only view of a supervisor's state, for the HTTP routes.
#[derive(Clone)]
pub(crate) struct Status {
    core: Arc<Core>,
}

impl Status {
    pub(crate) fn availability(&self) -> Availability {
        self.core.availability.current()
    }

    pub(crate) fn config(&self) -> &Config {
        &self.core.config
    }

    pub(crate) fn restarts(&self) -> u64 {
        self.core.restarts.load(Ordering::Relaxed)
    }

    pub(crate) fn health(&self) -> HealthSnapshot {
        self.core.board.snapshot()
    }

    /// Whether the subscriber connection is up, and the live subscriptions.
    pub(crate) fn pubsub(&self) -> (bool, usize) {
        self.core.pubsub.report()
    }

    /// Each lane's state, with the commands outstanding on it and answered (serving lanes).
    pub(crate) fn lanes(&self) -> Vec<LaneStatus> {
        let mut lanes = self
            .core
            .lanes
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        if let RouteState::Serving(serving) = &self.core.route.current().state {
            for lane in serving.all() {
                if let Some(l) = lanes.get_mut(lane.index()) {
                    l.outstanding = lane.outstanding();
                    l.served = lane.served();
                }
            }
        }
        lanes
    }

    /// With Sentinel: the topology as the watcher last saw it.
    pub(crate) fn sentinel(&self) -> Option<crate::topology::SentinelView> {
        self.core.topology.sentinel().map(|s| s.view())
    }

    /// The deployment's kind.
    pub(crate) fn topology(&self) -> crate::topology::Kind {
        self.core.topology.kind()
    }

    /// The blocking pool's open connections and commands running.
    pub(crate) fn blocking(&self) -> (usize, usize) {
        self.core
            .handles
            .pool(crate::pool::Purpose::Blocking)
            .report()
    }
}
