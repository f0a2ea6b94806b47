//! The supervisor: the actor that owns the connection actor (restarting it with backoff and
//! jitter, and publishing every availability transition), and the public [`Supervisor`] type
//! that starts it, hands out [`RedisHandle`]s and shuts everything down.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, SystemTime};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::{Mutex, Notify, watch};
use tokio::task::JoinHandle;

use crate::availability::{Availability, AvailabilityEvents, AvailabilityPublisher, EventKind};
use crate::backoff::{RestartIntensity, RestartTracker};
use crate::config::Config;
use crate::connection::{ConnectionActor, ConnectionArgs, ConnectionMsg, Lane};
use crate::error::{ConnectionFailure, Error, FailureKind};
use crate::handle::RedisHandle;
use crate::health::{HealthActor, HealthMsg, HealthSnapshot, ServerStats};
use crate::metrics::{Metrics, SharedRecorder};

/// Where commands go right now. Internal twin of [`Availability`], written only by the
/// supervisor actor (and set to `Stopped` by shutdown).
#[derive(Clone)]
pub(crate) enum Route {
    /// Send commands through this connection's lane.
    Up(Lane),
    /// No connection since `since`, because of `reason`.
    Down {
        since: SystemTime,
        reason: Arc<str>,
        kind: FailureKind,
    },
    /// The supervisor gave up for good: fail at once.
    GaveUp {
        since: SystemTime,
        reason: Arc<str>,
        kind: FailureKind,
    },
    /// Shut down.
    Stopped,
}

/// State shared by the supervisor actor, the public [`Supervisor`] and every [`RedisHandle`].
pub(crate) struct Shared {
    pub(crate) config: Arc<Config>,
    pub(crate) route: watch::Sender<Route>,
    pub(crate) availability: AvailabilityPublisher,
    pub(crate) shutting_down: AtomicBool,
    /// Commands between entry and answer (sent or waiting).
    pub(crate) in_flight: AtomicUsize,
    /// Notified when `in_flight` drops to zero during shutdown.
    pub(crate) idle: Notify,
    /// Commands currently waiting for the connection to come up.
    pub(crate) offline_waiting: AtomicUsize,
    /// Connection actors started to replace a failed one.
    pub(crate) restarts: AtomicU64,
    /// Every metric handle, registered at start.
    pub(crate) metrics: Metrics,
    /// Latest probe and INFO results, and the last error, for `/health/redis`.
    pub(crate) health: StdMutex<HealthSnapshot>,
}

impl Shared {
    /// Publishes an availability transition (state gauges first, then the watch and the event).
    /// Only the supervisor actor calls this.
    pub(crate) fn publish(&self, state: Availability, reason: impl Into<String>) {
        self.metrics.set_state(&state);
        self.availability.publish(state, reason);
    }

    /// Records an INFO reading: server gauges and the `/health/redis` snapshot.
    pub(crate) fn record_server_stats(&self, stats: ServerStats) {
        self.metrics.set_server(&stats);
        if let Ok(mut h) = self.health.lock() {
            h.stats = Some(stats);
        }
    }
}

/// Messages of the supervisor actor.
pub(crate) enum SupervisorMsg {
    /// The backoff delay of generation `generation` has passed: start a new connection.
    Reconnect { generation: u64 },
    /// A connection actor finished its handshake; `stats` is its INFO.
    ConnectionUp {
        id: ActorId,
        stats: ServerStats,
        lane: Lane,
    },
    /// A health probe of connection `id` succeeded; `degraded` says why it was too slow.
    Probed {
        id: ActorId,
        degraded: Option<String>,
    },
    /// Connection `id` failed its health probes: replace it.
    Unhealthy { id: ActorId, reason: String },
    /// A connection that came up during a restart storm may have been stable long enough.
    StableCheck { generation: u64 },
    /// Close the connection (QUIT), stop it, publish `Stopped`, stop.
    Shutdown(RpcReplyPort<()>),
}

/// State of the supervisor actor.
pub(crate) struct SupervisorState {
    shared: Arc<Shared>,
    tracker: RestartTracker,
    child: Option<ActorRef<ConnectionMsg>>,
    child_up: bool,
    health: Option<ActorRef<HealthMsg>>,
    /// Version and role of the connected server, for `Up` after `Degraded`.
    server: Option<(String, String)>,
    degraded: Option<String>,
    generation: u64,
    timer: Option<Timer>,
    stable_timer: Option<Timer>,
    stopping: bool,
    intensity: RestartIntensity,
    /// While a restart storm lasts: its description.
    storm: Option<String>,
}

type Timer = JoinHandle<Result<(), ractor::MessagingErr<SupervisorMsg>>>;

/// The supervisor actor.
pub(crate) struct SupervisorActor;

impl SupervisorActor {
    /// Starts a connection actor (it connects in its own task; the supervisor does not wait).
    async fn start_child(&self, myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState) {
        let attempt = state.tracker.attempt() + 1;
        state
            .shared
            .publish(Availability::Connecting { attempt }, "connecting");
        let args = ConnectionArgs {
            config: state.shared.config.clone(),
            supervisor: myself.clone(),
        };
        match ConnectionActor::spawn_linked(None, ConnectionActor, args, myself.get_cell()).await {
            Ok((child, _join)) => {
                state.child = Some(child);
                state.child_up = false;
            }
            Err(e) => self.child_failed(
                myself,
                state,
                ConnectionFailure::new(
                    FailureKind::Other,
                    format!("connection actor did not start: {e}"),
                ),
            ),
        }
    }

    /// The current connection (or attempt) failed: publish `Down` and schedule the next attempt.
    fn child_failed(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        failure: ConnectionFailure,
    ) {
        let ConnectionFailure {
            kind,
            message: reason,
        } = failure;
        let was_up = state.child_up;
        state.child = None;
        state.child_up = false;
        state.degraded = None;
        if state.stopping {
            return;
        }
        let metrics = &state.shared.metrics;
        if !was_up {
            metrics.connect_failure.increment(1);
        }
        metrics.server.up.set(0.0);
        if let Ok(mut h) = state.shared.health.lock() {
            h.last_error = Some((reason.clone(), kind, SystemTime::now()));
            h.ping = None;
        }
        let now = std::time::Instant::now();
        let mut storm_started = None;
        if was_up {
            if state.tracker.is_stable(now) {
                state.intensity.reset();
                state.storm = None;
            }
            if let Some(restarts) = state.intensity.record(now)
                && state.storm.is_none()
            {
                let window = state.intensity.window();
                let text = format!(
                    "restart storm: {restarts} connections lost within {} s",
                    window.as_secs()
                );
                metrics.restart_storms.increment(1);
                state.storm = Some(text.clone());
                storm_started = Some((text, restarts, window));
            }
        }
        let delay = state
            .tracker
            .on_failure(now, fastrand::f64(), state.storm.is_some());
        let since = match &*state.shared.route.borrow() {
            Route::Down { since, .. } if !was_up => *since,
            _ => SystemTime::now(),
        };
        if let Some(t) = state.stable_timer.take() {
            t.abort();
        }
        let attempts = state.tracker.attempt();
        if let Some(max) = state.shared.config.max_attempts()
            && attempts >= max
        {
            // Final: no more attempts; every waiting command fails at once.
            let text = format!("gave up after {attempts} consecutive failed attempts: {reason}");
            set_route(
                &state.shared,
                Route::GaveUp {
                    since,
                    reason: Arc::from(text.as_str()),
                    kind,
                },
            );
            tracing::error!(client = %state.shared.config.name(), reason = %reason, attempts, "redis supervisor gave up");
            state.shared.publish(
                Availability::GaveUp {
                    error: reason,
                    attempts,
                },
                text,
            );
            return;
        }
        let reason_arc: Arc<str> = Arc::from(reason.as_str());
        set_route(
            &state.shared,
            Route::Down {
                since,
                reason: reason_arc,
                kind,
            },
        );
        tracing::debug!(
            client = %state.shared.config.name(),
            state = "down",
            reason = %reason,
            retry_in_ms = delay.as_millis() as u64,
            "redis connection down"
        );
        let down = Availability::Down {
            error: reason.clone(),
            kind,
            retry_in: delay,
        };
        state.shared.publish(down.clone(), reason);
        if let Some((text, restarts, window)) = storm_started {
            tracing::warn!(client = %state.shared.config.name(), restarts, "redis restart storm");
            state.shared.availability.publish_kind(
                down,
                text,
                EventKind::RestartStorm {
                    restarts,
                    window_ms: window.as_millis() as u64,
                },
            );
        }
        state.generation += 1;
        let generation = state.generation;
        if let Some(t) = state.timer.take() {
            t.abort();
        }
        state.timer =
            Some(myself.send_after(delay, move || SupervisorMsg::Reconnect { generation }));
    }

    /// Starts the health actor (linked; restarted if it ever fails).
    async fn start_health(&self, myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState) {
        let args = (state.shared.clone(), myself.clone());
        match HealthActor::spawn_linked(None, HealthActor, args, myself.get_cell()).await {
            Ok((health, _join)) => state.health = Some(health),
            Err(e) => tracing::error!(error = %e, "health actor did not start; probes are off"),
        }
    }

    /// Publishes `Up` or `Degraded` for the connected server.
    fn publish_serving(state: &SupervisorState, reason: &str) {
        let why = state.storm.as_ref().or(state.degraded.as_ref());
        let availability = match (why, &state.server) {
            (Some(why), _) => Availability::Degraded {
                reason: why.clone(),
            },
            (None, Some((server_version, role))) => Availability::Up {
                server_version: server_version.clone(),
                role: role.clone(),
            },
            (None, None) => return,
        };
        state.shared.publish(availability, reason);
    }

    fn is_child(state: &SupervisorState, id: ActorId) -> bool {
        state.child.as_ref().is_some_and(|c| c.get_id() == id)
    }
}

/// Sets the route unless shutdown has begun (shutdown's `Stopped` must win any race).
fn set_route(shared: &Shared, route: Route) {
    shared.route.send_modify(|r| {
        if !shared.shutting_down.load(Ordering::SeqCst) {
            *r = route;
        }
    });
}

impl Actor for SupervisorActor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        shared: Arc<Shared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let tracker = RestartTracker::new(shared.config.backoff(), shared.config.stable_period());
        let shared_intensity = (
            shared.config.restart_intensity(),
            shared.config.restart_window(),
        );
        Ok(SupervisorState {
            shared,
            tracker,
            child: None,
            child_up: false,
            health: None,
            server: None,
            degraded: None,
            generation: 0,
            timer: None,
            stable_timer: None,
            stopping: false,
            intensity: RestartIntensity::new(shared_intensity.0, shared_intensity.1),
            storm: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        self.start_health(&myself, state).await;
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
                if generation == state.generation && !state.stopping && state.child.is_none() {
                    state.timer = None;
                    state.shared.restarts.fetch_add(1, Ordering::Relaxed);
                    state.shared.metrics.restarts.increment(1);
                    self.start_child(&myself, state).await;
                }
            }
            SupervisorMsg::ConnectionUp { id, stats, lane } => {
                if !Self::is_child(state, id) || state.stopping {
                    return Ok(());
                }
                state.child_up = true;
                state.degraded = None;
                state.tracker.on_up(std::time::Instant::now());
                state.shared.metrics.connect_success.increment(1);
                state.shared.metrics.server.up.set(1.0);
                state.server = Some((stats.version.clone(), stats.role.clone()));
                tracing::debug!(
                    client = %state.shared.config.name(),
                    state = "up",
                    server_version = %stats.version,
                    role = %stats.role,
                    "redis connection up"
                );
                state.shared.record_server_stats(stats);
                set_route(&state.shared, Route::Up(lane));
                Self::publish_serving(state, "connected");
                if state.storm.is_some() {
                    let generation = state.generation;
                    let period = state.shared.config.stable_period();
                    state.stable_timer = Some(
                        myself
                            .send_after(period, move || SupervisorMsg::StableCheck { generation }),
                    );
                }
            }
            SupervisorMsg::Probed { id, degraded } => {
                if !Self::is_child(state, id) || !state.child_up || state.stopping {
                    return Ok(());
                }
                if state.degraded != degraded {
                    let reason = match &degraded {
                        Some(why) => why.clone(),
                        None => "health probes recovered".to_string(),
                    };
                    state.degraded = degraded;
                    Self::publish_serving(state, &reason);
                }
            }
            SupervisorMsg::StableCheck { generation } => {
                state.stable_timer = None;
                if generation == state.generation
                    && state.child_up
                    && state.storm.is_some()
                    && state.tracker.is_stable(std::time::Instant::now())
                {
                    state.storm = None;
                    state.intensity.reset();
                    Self::publish_serving(state, "stable again after a restart storm");
                }
            }
            SupervisorMsg::Unhealthy { id, reason } => {
                if !Self::is_child(state, id) || state.stopping {
                    return Ok(());
                }
                if let Some(child) = state.child.clone() {
                    // Replace it now; its termination event arrives later and is then stale.
                    self.child_failed(
                        &myself,
                        state,
                        ConnectionFailure::new(FailureKind::Unhealthy, reason.clone()),
                    );
                    child.stop(Some(reason));
                }
            }
            SupervisorMsg::Shutdown(reply) => {
                state.stopping = true;
                for t in [state.timer.take(), state.stable_timer.take()]
                    .into_iter()
                    .flatten()
                {
                    t.abort();
                }
                if let Some(health) = state.health.take() {
                    let _ = health
                        .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(2)))
                        .await;
                }
                if let Some(child) = state.child.take() {
                    let _ = child
                        .call(ConnectionMsg::Quit, Some(Duration::from_secs(1)))
                        .await;
                    let _ = child
                        .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(2)))
                        .await;
                }
                state.shared.route.send_replace(Route::Stopped);
                tracing::debug!(client = %state.shared.config.name(), state = "stopped", "redis supervisor stopped");
                state.shared.publish(Availability::Stopped, "shutdown");
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
            SupervisionEvent::ActorFailed(cell, err) => {
                if Self::is_child(state, cell.get_id()) {
                    let failure = ConnectionFailure::from_actor_error(err.as_ref());
                    self.child_failed(&myself, state, failure);
                } else {
                    tracing::debug!(actor = %cell.get_id(), error = %err, "stale connection actor failed");
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if Self::is_child(state, cell.get_id()) {
                    let reason = reason.unwrap_or_else(|| "connection actor stopped".to_string());
                    self.child_failed(
                        &myself,
                        state,
                        ConnectionFailure::new(FailureKind::Other, reason),
                    );
                } else {
                    tracing::debug!(actor = %cell.get_id(), "stale connection actor stopped");
                }
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
        for t in [state.timer.take(), state.stable_timer.take()]
            .into_iter()
            .flatten()
        {
            t.abort();
        }
        state.shared.shutting_down.store(true, Ordering::SeqCst);
        state.shared.route.send_replace(Route::Stopped);
        if state.shared.availability.current() != Availability::Stopped {
            state
                .shared
                .publish(Availability::Stopped, "supervisor stopped");
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
    shared: Arc<Shared>,
    actor: ActorRef<SupervisorMsg>,
    join: Mutex<Option<JoinHandle<()>>>,
    handle: RedisHandle,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("config", &self.shared.config)
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
        let metrics = Metrics::new(config.name(), recorder);
        let config = Arc::new(config);
        let (route, _) = watch::channel(Route::Down {
            since: SystemTime::now(),
            reason: Arc::from("not connected yet"),
            kind: FailureKind::NotConnected,
        });
        let shared = Arc::new(Shared {
            config,
            route,
            availability: AvailabilityPublisher::new(Availability::Connecting { attempt: 1 }),
            shutting_down: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            offline_waiting: AtomicUsize::new(0),
            restarts: AtomicU64::new(0),
            metrics,
            health: StdMutex::new(HealthSnapshot::default()),
        });
        let (actor, join) = SupervisorActor::spawn(None, SupervisorActor, shared.clone())
            .await
            .map_err(|e| Error::Connection(format!("could not start the supervisor actor: {e}")))?;
        let handle = RedisHandle::new(shared.clone());
        Ok(Supervisor {
            shared,
            actor,
            join: Mutex::new(Some(join)),
            handle,
        })
    }

    /// A cheap, cloneable handle for running commands.
    pub fn handle(&self) -> RedisHandle {
        self.handle.clone()
    }

    /// The current availability (always equal to the last event published).
    pub fn availability(&self) -> Availability {
        self.shared.availability.current()
    }

    /// An ordered stream of every availability transition from now on.
    pub fn subscribe(&self) -> AvailabilityEvents {
        self.shared.availability.subscribe()
    }

    /// A `watch` receiver of the current availability, for `changed().await` loops.
    pub fn watch(&self) -> watch::Receiver<Availability> {
        self.shared.availability.watch()
    }

    /// The configuration this supervisor runs with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// How many times a failed connection (or connection attempt) has been replaced.
    pub fn restarts(&self) -> u64 {
        self.shared.restarts.load(Ordering::Relaxed)
    }

    /// How many commands are waiting for the connection to come up right now.
    pub fn offline_waiting(&self) -> usize {
        self.shared.offline_waiting.load(Ordering::Relaxed)
    }

    /// Waits until the connection is up (serving commands).
    ///
    /// # Errors
    /// [`Error::Unavailable`] with the last reason if it is not up within `timeout`;
    /// [`Error::ShuttingDown`] if the supervisor stops meanwhile.
    pub async fn wait_until_up(&self, timeout: Duration) -> Result<(), Error> {
        let mut rx = self.watch();
        let wait = rx.wait_for(|a| {
            a.is_serving() || matches!(a, Availability::Stopped | Availability::GaveUp { .. })
        });
        let outcome = match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(a)) => Some(a.is_serving()),
            Ok(Err(_)) => Some(false),
            Err(_) => None,
        };
        match outcome {
            Some(true) => Ok(()),
            // Gave up, stopped, or not up in time: the route says which, and why.
            _ => Err(crate::handle::unavailable(&self.shared.route.borrow())),
        }
    }

    /// Graceful shutdown: new commands get [`Error::ShuttingDown`] at once, in-flight ones
    /// finish or reach their deadline (waiting at most the configured shutdown timeout), the
    /// connection is closed with QUIT, and every actor is stopped and awaited. Idempotent.
    pub async fn shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        // Commands waiting for a connection wake up and answer ShuttingDown.
        self.shared.route.send_replace(Route::Stopped);
        let drained = async {
            loop {
                let notified = self.shared.idle.notified();
                if self.shared.in_flight.load(Ordering::SeqCst) == 0 {
                    break;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(self.shared.config.shutdown_timeout(), drained)
            .await
            .is_err()
        {
            tracing::warn!(
                client = %self.shared.config.name(),
                in_flight = self.shared.in_flight.load(Ordering::SeqCst),
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
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        self.shared.route.send_replace(Route::Stopped);
        self.actor.stop(Some("supervisor dropped".into()));
    }
}

impl Supervisor {
    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }
}
