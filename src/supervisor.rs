//! The supervisor: the actor that owns the connection actor (restarting it with backoff and
//! jitter, and publishing every availability transition), and the public [`Supervisor`] type
//! that starts it, hands out [`RedisHandle`]s and shuts everything down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::{Mutex, Notify, watch};
use tokio::task::JoinHandle;

use crate::availability::{Availability, AvailabilityEvents, AvailabilityPublisher};
use crate::backoff::RestartTracker;
use crate::config::Config;
use crate::connection::{ConnectionActor, ConnectionArgs, ConnectionMsg};
use crate::error::Error;
use crate::handle::RedisHandle;

/// Where commands go right now. Internal twin of [`Availability`], written only by the
/// supervisor actor (and set to `Stopped` by shutdown).
#[derive(Clone)]
pub(crate) enum Route {
    /// Send commands to this connection actor.
    Up(ActorRef<ConnectionMsg>),
    /// No connection since `since`, because of `reason`.
    Down { since: SystemTime, reason: Arc<str> },
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
}

/// Messages of the supervisor actor.
pub(crate) enum SupervisorMsg {
    /// The backoff delay of generation `generation` has passed: start a new connection.
    Reconnect { generation: u64 },
    /// A connection actor finished its handshake.
    ConnectionUp {
        id: ActorId,
        server_version: String,
        role: String,
    },
    /// Close the connection (QUIT), stop it, publish `Stopped`, stop.
    Shutdown(RpcReplyPort<()>),
}

/// State of the supervisor actor.
pub(crate) struct SupervisorState {
    shared: Arc<Shared>,
    tracker: RestartTracker,
    child: Option<ActorRef<ConnectionMsg>>,
    child_up: bool,
    generation: u64,
    timer: Option<JoinHandle<Result<(), ractor::MessagingErr<SupervisorMsg>>>>,
    stopping: bool,
}

/// The supervisor actor.
pub(crate) struct SupervisorActor;

impl SupervisorActor {
    /// Starts a connection actor (it connects in its own task; the supervisor does not wait).
    async fn start_child(&self, myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState) {
        let attempt = state.tracker.attempt() + 1;
        state
            .shared
            .availability
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
                format!("connection actor did not start: {e}"),
            ),
        }
    }

    /// The current connection (or attempt) failed: publish `Down` and schedule the next attempt.
    fn child_failed(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        reason: String,
    ) {
        let was_up = state.child_up;
        state.child = None;
        state.child_up = false;
        if state.stopping {
            return;
        }
        let delay = state
            .tracker
            .on_failure(std::time::Instant::now(), fastrand::f64());
        let since = match &*state.shared.route.borrow() {
            Route::Down { since, .. } if !was_up => *since,
            _ => SystemTime::now(),
        };
        let reason_arc: Arc<str> = Arc::from(reason.as_str());
        set_route(
            &state.shared,
            Route::Down {
                since,
                reason: reason_arc,
            },
        );
        tracing::debug!(
            client = %state.shared.config.name(),
            state = "down",
            reason = %reason,
            retry_in_ms = delay.as_millis() as u64,
            "redis connection down"
        );
        state.shared.availability.publish(
            Availability::Down {
                error: reason.clone(),
                retry_in: delay,
            },
            reason,
        );
        state.generation += 1;
        let generation = state.generation;
        if let Some(t) = state.timer.take() {
            t.abort();
        }
        state.timer =
            Some(myself.send_after(delay, move || SupervisorMsg::Reconnect { generation }));
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
        Ok(SupervisorState {
            shared,
            tracker,
            child: None,
            child_up: false,
            generation: 0,
            timer: None,
            stopping: false,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
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
                    self.start_child(&myself, state).await;
                }
            }
            SupervisorMsg::ConnectionUp {
                id,
                server_version,
                role,
            } => {
                if !Self::is_child(state, id) || state.stopping {
                    return Ok(());
                }
                let Some(child) = state.child.clone() else {
                    return Ok(());
                };
                state.child_up = true;
                state.tracker.on_up(std::time::Instant::now());
                set_route(&state.shared, Route::Up(child));
                tracing::debug!(
                    client = %state.shared.config.name(),
                    state = "up",
                    server_version = %server_version,
                    role = %role,
                    "redis connection up"
                );
                state.shared.availability.publish(
                    Availability::Up {
                        server_version,
                        role,
                    },
                    "connected",
                );
            }
            SupervisorMsg::Shutdown(reply) => {
                state.stopping = true;
                if let Some(t) = state.timer.take() {
                    t.abort();
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
                state
                    .shared
                    .availability
                    .publish(Availability::Stopped, "shutdown");
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
            SupervisionEvent::ActorFailed(cell, err) => {
                if Self::is_child(state, cell.get_id()) {
                    self.child_failed(&myself, state, err.to_string());
                } else {
                    tracing::debug!(actor = %cell.get_id(), error = %err, "stale connection actor failed");
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if Self::is_child(state, cell.get_id()) {
                    let reason = reason.unwrap_or_else(|| "connection actor stopped".to_string());
                    self.child_failed(&myself, state, reason);
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
        if let Some(t) = state.timer.take() {
            t.abort();
        }
        state.shared.shutting_down.store(true, Ordering::SeqCst);
        state.shared.route.send_replace(Route::Stopped);
        if state.shared.availability.current() != Availability::Stopped {
            state
                .shared
                .availability
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
        let config = Arc::new(config);
        let (route, _) = watch::channel(Route::Down {
            since: SystemTime::now(),
            reason: Arc::from("not connected yet"),
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
        let wait = rx.wait_for(|a| a.is_serving() || *a == Availability::Stopped);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(a)) if a.is_serving() => Ok(()),
            Ok(_) => Err(Error::ShuttingDown),
            Err(_) => {
                let (since, reason) = match &*self.shared.route.borrow() {
                    Route::Down { since, reason } => (*since, reason.to_string()),
                    _ => (SystemTime::now(), "not up".to_string()),
                };
                Err(Error::Unavailable { since, reason })
            }
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
