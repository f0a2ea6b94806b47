//! The supervisor: the actor that owns the connection actor and the health actor — restarting
//! the connection with backoff and jitter, replacing it when the health actor finds it silent,
//! and publishing every availability transition — and the public [`Supervisor`] type that starts
//! it, hands out [`RedisHandle`]s and shuts everything down.
//!
//! The supervisor is the one writer of availability and of the route (derived from it, see
//! the `route` module). Its children report through types of their own (`ConnectionReport`,
//! `HealthReport`) that convert into its message type; it never `call`s a child that could
//! call it back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
use crate::error::{ConnectionFailure, Error, FailureKind};
use crate::handle::{HandleCore, RedisHandle};
use crate::health::{
    HealthActor, HealthArgs, HealthBoard, HealthMsg, HealthReport, HealthSnapshot, Verdict,
};
use crate::lane::{Lane, NotReady};
use crate::metrics::{ClientMetrics, ConnectOutcome, HealthMetrics, Metrics, SharedRecorder};
use crate::pubsub::{PubSub, PubSubShared, SubscriberReport, SubscriberWanted};
use crate::route::{Route, RouteState, RouteWriter};
use crate::sentinel::{SentinelShared, WatcherReport};
use crate::topology::Topology;

mod dedicated;
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
    /// With Sentinel: what the watcher knows of the topology.
    sentinel: Option<Arc<SentinelShared>>,
}

impl Core {
    /// Publishes a transition: the route derived from it (about `lane`), the state gauges, then
    /// the watch and the event. Once shutdown has begun only `Down`, `GaveUp` and `Stopped` are
    /// still published: availability never says `Up` again.
    fn publish(&self, state: Availability, reason: impl Into<String>, lane: Option<&Lane>) {
        let terminal = matches!(
            state,
            Availability::Down { .. } | Availability::GaveUp { .. } | Availability::Stopped
        );
        if self.handles.is_closed() && !terminal {
            return;
        }
        let route = RouteState::derive(&state, lane, &self.route.current().state);
        self.route.set(route);
        self.metrics.set_state(&state);
        self.availability.publish(state, reason);
    }

    /// Shutdown begins: no new commands, waiting ones answer `ShuttingDown`.
    fn begin_shutdown(&self) {
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
    /// The backoff delay of generation `generation` has passed: start a new connection.
    Reconnect { generation: u64 },
    /// A connection that came up during a restart storm may have been stable long enough.
    StableCheck { generation: u64 },
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
    /// What was last published for this connection.
    published: Option<Class>,
}

/// The current connection actor and how far it got.
struct Child {
    actor: ActorRef<ConnectionMsg>,
    /// `None` while it is still connecting.
    connected: Option<Connected>,
}

/// State of the supervisor actor.
pub(crate) struct SupervisorState {
    core: Arc<Core>,
    topology: Topology,
    tracker: RestartTracker,
    intensity: RestartIntensity,
    /// While a restart storm lasts: its description.
    storm: Option<String>,
    child: Option<Child>,
    /// The health actor (restarted if it fails).
    health: Option<ActorRef<HealthMsg>>,
    /// Bumped by every lost connection: a timer armed for an older generation is stale.
    generation: u64,
    /// The pending reconnect, after the backoff delay.
    reconnect_timer: Option<Timer>,
    /// The pending check that a connection made during a storm stayed up for the stable period.
    stable_timer: Option<Timer>,
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
    fn connected(&mut self, id: ActorId) -> Option<&mut Connected> {
        self.child
            .as_mut()
            .filter(|c| c.actor.get_id() == id)
            .and_then(|c| c.connected.as_mut())
    }

    fn is_child(&self, id: ActorId) -> bool {
        self.child.as_ref().is_some_and(|c| c.actor.get_id() == id)
    }

    fn abort_timers(&mut self) {
        for t in [self.reconnect_timer.take(), self.stable_timer.take()]
            .into_iter()
            .flatten()
        {
            t.abort();
        }
    }

    /// Publishes the connected server's state (`Up`, `Degraded` or `NotReady`) if its class
    /// changed since the last publication.
    fn publish_connected(&mut self, reason: &str) {
        let storm = self.storm.clone();
        let Some(c) = self.child.as_mut().and_then(|c| c.connected.as_mut()) else {
            return;
        };
        let (state, class) = match (&c.condition, storm) {
            // A server that cannot serve is not serving, storm or not.
            (Condition::NotReady(n), _) => (
                Availability::NotReady {
                    reason: n.message.clone(),
                    kind: n.kind,
                },
                Class::NotReady(n.kind),
            ),
            (_, Some(storm)) => (Availability::Degraded { reason: storm }, Class::Storm),
            (Condition::Slow(why), None) => (
                Availability::Degraded {
                    reason: why.clone(),
                },
                Class::Slow,
            ),
            (Condition::Failing(why), None) => (
                Availability::Degraded {
                    reason: why.clone(),
                },
                Class::Failing,
            ),
            (Condition::Ready, None) => (
                Availability::Up {
                    server_version: c.version.clone(),
                    role: c.role.clone(),
                    address: c.address.to_string(),
                },
                Class::Up,
            ),
        };
        if c.published == Some(class) {
            return;
        }
        c.published = Some(class);
        self.core.publish(state, reason, Some(&c.lane));
    }
}

/// The supervisor actor.
pub(crate) struct SupervisorActor;

impl SupervisorActor {
    /// Starts a connection actor (it connects in its own task; the supervisor does not wait).
    async fn start_child(&self, myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState) {
        let connecting = Availability::Connecting {
            attempt: state.tracker.attempt().saturating_add(1),
        };
        // The first attempt is the state the supervisor started in: publish it once.
        if state.core.availability.current() != connecting {
            state.core.publish(connecting, "connecting", None);
        }
        let args = ConnectionArgs {
            config: state.core.config.clone(),
            topology: state.topology,
            report: myself.get_derived(),
        };
        match ConnectionActor::spawn_linked(None, ConnectionActor, args, myself.get_cell()).await {
            Ok((actor, _join)) => {
                state.child = Some(Child {
                    actor,
                    connected: None,
                });
            }
            Err(e) => {
                let message = format!("connection actor did not start: {e}");
                self.child_failed(
                    myself,
                    state,
                    ConnectionFailure::new(FailureKind::Other, message),
                );
            }
        }
    }

    /// Starts the health actor (linked; restarted if it ever fails).
    async fn start_health(&self, myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState) {
        let core = &state.core;
        let args = HealthArgs {
            config: core.config.clone(),
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

    /// The current connection (or attempt) failed: publish `Down` (or `GaveUp`) and schedule
    /// the next attempt.
    fn child_failed(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        failure: ConnectionFailure,
    ) {
        let was_up = state.child.take().is_some_and(|c| c.connected.is_some());
        if state.stopping {
            return;
        }
        if !was_up {
            state.core.metrics.connect(ConnectOutcome::Failure);
        }
        if let Some(health) = &state.health {
            let _ = health.cast(HealthMsg::Lost(failure.clone()));
        }
        let now = Instant::now();
        let storm_started = was_up.then(|| note_restart(state, now)).flatten();
        // A failover moved the master: not a failure of ours, reconnect (to the new one) at once.
        // (A node found not to be the master while connecting waits its backoff: the sentinels
        // may not have switched yet.)
        let moved = failure.kind == FailureKind::Failover
            || (was_up && failure.kind == FailureKind::NotMaster);
        let delay = if moved {
            Duration::ZERO
        } else {
            state
                .tracker
                .on_failure(now, fastrand::f64(), state.storm.is_some())
        };
        if let Some(t) = state.stable_timer.take() {
            t.abort();
        }
        if gave_up(state, &failure) {
            return;
        }
        publish_down(state, &failure, delay, storm_started);
        self.schedule_reconnect(myself, state, delay);
    }

    fn schedule_reconnect(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        delay: Duration,
    ) {
        state.generation = state.generation.wrapping_add(1);
        let generation = state.generation;
        if let Some(t) = state.reconnect_timer.take() {
            t.abort();
        }
        state.reconnect_timer =
            Some(myself.send_after(delay, move || SupervisorMsg::Reconnect { generation }));
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
        if !state.is_child(id) || state.stopping || state.core.handles.is_closed() {
            return;
        }
        state.tracker.on_up(Instant::now());
        state.core.metrics.connect(ConnectOutcome::Success);
        tracing::debug!(
            client = %state.core.config.name(),
            state = "up",
            server_version = %stats.version,
            role = %stats.role,
            ready = not_ready.is_none(),
            "redis connection up"
        );
        if state.topology == Topology::Sentinel {
            match state.master.clone() {
                Some(known) if known != address => self.announce_failover(state, &known, &address),
                _ => state.master = Some(address.clone()),
            }
        }
        let reason = match &not_ready {
            None => "connected".to_string(),
            Some(n) => format!("connected, but the server cannot serve yet: {}", n.message),
        };
        if let Some(child) = state.child.as_mut() {
            child.connected = Some(Connected {
                lane,
                address,
                version: stats.version.clone(),
                role: stats.role.clone(),
                condition: not_ready.map_or(Condition::Ready, Condition::NotReady),
                published: None,
            });
        }
        if let Some(health) = &state.health {
            let _ = health.cast(HealthMsg::Connected { id, stats });
        }
        state.publish_connected(&reason);
        if state.storm.is_some() {
            let generation = state.generation;
            let period = state.core.config.stable_period();
            state.stable_timer =
                Some(myself.send_after(period, move || SupervisorMsg::StableCheck { generation }));
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
            Verdict::Unhealthy(reason) => return self.replace(myself, state, reason),
            Verdict::NotMaster(reason) => {
                return self.replace_now(myself, state, FailureKind::NotMaster, reason);
            }
            Verdict::Healthy => Condition::Ready,
            Verdict::Slow(why) => Condition::Slow(why),
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

    /// The health actor found the connection silent: replace it now (its termination event
    /// arrives later and is then stale).
    fn replace(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        reason: String,
    ) {
        self.replace_now(myself, state, FailureKind::Unhealthy, reason);
    }

    /// Replaces the current connection (or attempt) now, for a reason of `kind`.
    fn replace_now(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        kind: FailureKind,
        reason: String,
    ) {
        let Some(actor) = state.child.as_ref().map(|c| c.actor.clone()) else {
            return;
        };
        let failure = ConnectionFailure::new(kind, reason.clone());
        self.child_failed(myself, state, failure);
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
        if let Some(child) = state.child.take() {
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
        state.core.publish(Availability::Stopped, "shutdown", None);
    }
}

/// Records a lost connection against the restart intensity; returns the storm's description,
/// restarts and window when this loss starts a restart storm.
fn note_restart(state: &mut SupervisorState, now: Instant) -> Option<(String, u32, Duration)> {
    if state.tracker.is_stable(now) {
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
fn gave_up(state: &SupervisorState, failure: &ConnectionFailure) -> bool {
    let attempts = state.tracker.attempt();
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
    state.core.publish(gave_up, text, None);
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
    core.publish(down.clone(), failure.message.clone(), None);
    if let Some((text, restarts, window)) = storm_started {
        tracing::warn!(client = %core.config.name(), restarts, "redis restart storm");
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let notice = EventKind::RestartStorm {
            restarts,
            window_ms,
        };
        core.availability.publish_kind(down, text, notice);
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
            topology: Topology::of(&config),
            tracker: RestartTracker::new(config.backoff(), config.stable_period()),
            intensity: RestartIntensity::new(config.restart_intensity(), config.restart_window()),
            storm: None,
            child: None,
            health: None,
            generation: 0,
            reconnect_timer: None,
            stable_timer: None,
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
        if state.core.sentinel.is_some() {
            self.start_watcher(&myself, state).await;
        }
        self.start_child(&myself, state).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Reconnect { generation } => {
                let closed = state.core.handles.is_closed();
                if generation == state.generation
                    && !state.stopping
                    && !closed
                    && state.child.is_none()
                {
                    state.reconnect_timer = None;
                    state.core.restarts.fetch_add(1, Ordering::Relaxed);
                    state.core.metrics.restarted();
                    self.start_child(&myself, state).await;
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
            SupervisorMsg::StableCheck { generation } => {
                state.stable_timer = None;
                let up = state.child.as_ref().is_some_and(|c| c.connected.is_some());
                if generation == state.generation
                    && up
                    && state.storm.is_some()
                    && state.tracker.is_stable(Instant::now())
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
                self.child_failed(&myself, state, failure);
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) if state.is_child(cell.get_id()) => {
                let reason = reason.unwrap_or_else(|| "connection actor stopped".to_string());
                let failure = ConnectionFailure::new(FailureKind::Other, reason);
                self.child_failed(&myself, state, failure);
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
                .publish(Availability::Stopped, "supervisor stopped", None);
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
        } = Metrics::new(config.name(), recorder);
        let config = Arc::new(config);
        let (route, reader) = RouteWriter::new();
        let core = Arc::new(Core {
            handles: HandleCore::new(config.clone(), reader.clone(), commands, patterns, blocking),
            pubsub: PubSubShared::new(config.clone(), pubsub),
            sentinel: (Topology::of(&config) == Topology::Sentinel)
                .then(|| SentinelShared::new(config.clone())),
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
        Err(crate::handle::unavailable(
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
            RouteState::Serving(lane) => Some(lane.clone()),
            _ => None,
        };
        self.core.begin_shutdown();
        let handles = &self.core.handles;
        handles.blocking().close(lane).await;
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

    /// With Sentinel: the topology as the watcher last saw it.
    pub(crate) fn sentinel(&self) -> Option<crate::sentinel::SentinelView> {
        self.core.sentinel.as_ref().map(|s| s.view())
    }

    /// The blocking pool's open connections and commands running.
    pub(crate) fn blocking(&self) -> (usize, usize) {
        self.core.handles.blocking().report()
    }
}
