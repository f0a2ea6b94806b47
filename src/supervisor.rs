//! The supervisor: the actor that owns the connection actor and the health actor — restarting
//! the connection with backoff and jitter, replacing it when the health actor finds it silent,
//! and publishing every availability transition — and the public [`Supervisor`] type that starts
//! it, hands out [`RedisHandle`]s and shuts everything down.
//!
//! The supervisor is the one writer of availability and of the route (derived from it, see
//! the `route` module). Its children report through types of their own (`ConnectionReport`,
//! `HealthReport`) that convert into its message type; it never `call`s a child that could
//! call it back.
//!
//! Its parts: this file, the public [`Supervisor`]; `supervisor/actor.rs`, the actor (messages,
//! state, what it does on each report); `supervisor/restart.rs`, its restart policy;
//! `supervisor/lanes.rs`, the one state the lanes together publish; `supervisor/dedicated.rs`,
//! its dedicated children (subscriber, sentinel watcher) and failovers; `supervisor/core.rs`,
//! what the actor and the public type share (and the one place a state is published);
//! `supervisor/status.rs`, what the HTTP routes read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorRef};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::availability::{Availability, AvailabilityEvents, AvailabilityPublisher};
use crate::config::Config;
use crate::delivery::HandleCore;
use crate::error::Error;
use crate::handle::RedisHandle;
use crate::health::HealthBoard;
use crate::metrics::{Metrics, SharedRecorder};
use crate::pubsub::{PubSub, PubSubShared};
use crate::route::{RouteState, RouteWriter};
use crate::topology::Topology;

mod actor;
mod core;
mod dedicated;
mod lanes;
mod restart;
mod status;

use actor::{SupervisorActor, SupervisorMsg};
use core::Core;
pub(crate) use status::{LaneStatus, Status};

/// The longest wait before connecting again to a replica being promoted that did not say
/// "master" yet.
const PROMOTION_RETRY: Duration = Duration::from_millis(10);

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
