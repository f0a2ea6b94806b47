//! The supervisor: the actor that owns the connection actors (one per [lane](#lanes)) and the
//! health actor — restarting a connection with backoff and jitter, replacing it when the health
//! actor finds it silent, and publishing every availability transition — and the public
//! [`Supervisor`] type that starts it, hands out [`RedisHandle`]s and shuts everything down. The
//! sections below are the guide to what it supervises besides one connection to one server:
//! [Lanes](#lanes), [Sentinel](#sentinel) and [Redis Cluster](#redis-cluster).
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
//!
//! # Lanes
//!
//! One multiplexed connection is the right default for small commands, but every reply on it is
//! delivered in order: a 4 MiB value being read holds up every small reply behind it.
//! [`Config::lanes`](crate::Config::lanes) (`REDIS_LANES=n`, builder `.lanes(n)`, 1–16) keeps *n*
//! supervised connections ("lanes") behind the same [`RedisHandle`]:
//!
//! - A command goes to the open lane with the fewest commands outstanding (one atomic count per
//!   lane, read without a lock; ties go to the lowest lane). A pipeline or `MULTI`/`EXEC` is one
//!   request and stays on one lane. With one lane nothing is counted.
//! - **Big replies share one lane.** Counting commands alone cannot tell a 4 MiB reply from a
//!   64-byte one before it comes. So the handle remembers, per command (a 4096-bit table indexed
//!   by a hash of the command and its arguments), whether its last reply was big (≥ 128 KiB).
//!   Such a command goes to the *bulk lane* (the last one); a lane delivering one counts as full,
//!   so small commands keep off it while it does. Without big replies every lane takes small
//!   commands alike.
//! - Each lane is a connection actor of its own, with its own backoff, health probe (all lanes are
//!   probed at once, so the detection bound is unchanged) and `redis_client_lane_up{lane}`.
//! - A lane that fails is replaced alone: the others keep serving, availability stays serving —
//!   `Degraded` with the reason "k of n lanes down: …" — and the commands in flight on the failed
//!   lane follow the delivery semantics (`Ambiguous`, or sent once more on another lane). All
//!   lanes down is `Down`, exactly as with one. When the first lane comes back after an outage,
//!   the others reconnect at once: the server answers again.
//! - `/health/redis` lists each lane: `{"lane":0,"state":"up","address":"127.0.0.1:6379",
//!   "last_error":null,"outstanding":3,"served":18250}`; the connections are named
//!   `redis-supervisor:<name>:lane<i>` in `CLIENT LIST`.
//! - Pub/sub, the blocking pool and the leased connections are dedicated connections, not lanes.
//!
//! **Default: 1 lane.** More lanes cost small-command throughput, and they only pay off where big
//! values are read. Measured with `cargo bench --bench lanes` (full results in
//! `benches/results/lanes.md`, the tables in `docs/performance.md`, "Lanes"): the p50 of 16 tasks
//! of 64-byte GETs beside 2 tasks reading 4 MiB values is 49 × its value alone with 1 lane,
//! 1.89 × with 2 lanes (big replies on the bulk lane) and 1.21 × with 4, where a raw connection
//! with the big values on a second connection gives 1.73 ×; without big values, GET throughput is
//! 0.67 × raw at C = 256 with 2 lanes, 1.00 × with 1. Use 2 lanes where a few large values live
//! beside many small ones; keep 1 otherwise.
//!
//! # Sentinel
//!
//! Point the supervisor at the sentinels instead of a server
//! ([`Config::sentinels`](crate::Config::sentinels),
//! [`Config::sentinel_master`](crate::Config::sentinel_master)); it finds the master through them
//! and follows every failover:
//!
//! ```sh
//! REDIS_SENTINELS=10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379 REDIS_SENTINEL_MASTER=mymaster \
//! REDIS_PASSWORD_FILE=/run/secrets/redis-password REDIS_SENTINEL_PASSWORD="$SENTINEL_PASSWORD" \
//! cargo run --release
//! ```
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = redis_supervisor::Config::builder()
//!     .sentinels(["10.0.0.1:26379", "10.0.0.2:26379", "10.0.0.3:26379"])
//!     .sentinel_master("mymaster")
//!     .password_file("/run/secrets/redis-password")          // the data nodes
//!     .sentinel_password(std::env::var("SENTINEL_PASSWORD")?) // the sentinels (also: username)
//!     .build()?;
//! # let _ = config; Ok(()) }
//! ```
//!
//! - **Finding the master.** Each connection (command, pub/sub, blocking, leased) asks the
//!   sentinels in order, within the connect timeout each, for `SENTINEL GET-MASTER-ADDR-BY-NAME`,
//!   connects to the first answer, and checks `ROLE` there: a node that is not the master (a
//!   sentinel a failover behind) is a failed attempt, retried with backoff (a replica the
//!   sentinels are promoting is asked again soon, not after a full backoff step). While a
//!   promotion is under way, the replica being promoted is the master, before the sentinels name
//!   it. TLS (`REDIS_TLS`, CA and client certificate) applies to sentinels and data nodes alike;
//!   the credentials are separate ([`Config::sentinel_username`](crate::Config::sentinel_username),
//!   [`Config::sentinel_password`](crate::Config::sentinel_password)). With no sentinel answering,
//!   the state is `Down` with a reason naming every sentinel tried and why.
//! - **Following a failover.** A sentinel watcher (an actor under the supervisor) keeps a
//!   connection to one sentinel, asks it for the master every health interval, and listens to the
//!   events of **every** known sentinel — the watched one and, on connections of their own, the
//!   others, because only the sentinel leading a failover announces its steps. It moves the
//!   connections **at the promotion**: when the leader sends `REPLICAOF NO ONE` to the replica it
//!   selected (`+failover-state-send-slaveof-noone`, or `+promoted-slave` if that was missed),
//!   that replica is the master from then on. The old master would go on acknowledging writes
//!   that the failover then throws away until the sentinels announce the switch (`+switch-master`,
//!   about a second later). Until the sentinels name the new master, their answers naming the old
//!   one are not followed; an aborted failover (`-failover-abort-*`) ends that. `+switch-master`
//!   and every periodic check are followed too, so a connection left on another node than the one
//!   the sentinels name (a missed message, a watcher that just moved) is replaced. `+odown` and
//!   `+failover-end` are logged; sentinels announced with `+sentinel` join the list the watcher
//!   fails over to.
//! - **What moves.** When the master changes, the supervisor publishes
//!   [`EventKind::Failover`](crate::EventKind::Failover) `{ from, to }`, replaces the connection
//!   **at once** (no backoff: not a failure of ours; `Down` with kind `failover` and `retry_in` 0,
//!   then `Up` naming the new master's `address`), restarts the subscriber connection
//!   (subscriptions get `Resubscribed`), closes the idle blocking and leased connections and does
//!   not reuse the busy ones. A `READONLY` reply (a demoted master) does the same from the command
//!   path: the refused command did not run, so it waits for the new master and is sent there,
//!   within its deadline; so does the health actor when `INFO` says the server is no longer the
//!   master. When the watched sentinel stops answering (a broken connection, or
//!   [`Config::health_failures`](crate::Config::health_failures) checks in a row without an
//!   answer), the watcher moves to the next one (the configured ones, then those discovered with
//!   `SENTINEL SENTINELS`), after a backoff.
//! - **Delivery semantics stay.** Commands in flight on the old master when its connection is
//!   replaced are `Ambiguous` (non-idempotent) or sent once more (replay-safe); never replayed
//!   silently.
//! - **What Redis does not promise.** Replication is asynchronous: writes the old master
//!   acknowledged and no replica had are lost when a replica is promoted, and a demoted master
//!   keeps accepting writes until the sentinels reconfigure it (this crate stops sending it
//!   commands at the promotion, as above; other clients may not). Where a write must survive a
//!   failover, send it through
//!   [`RedisHandle::wait_replicas`](crate::RedisHandle::wait_replicas)`(n, timeout)` (or set
//!   `REDIS_WAIT_REPLICAS` / `REDIS_WAIT_TIMEOUT_MS` for every handle): it is answered `Ok` only
//!   once `n` replicas acknowledged it, and [`Error::NotReplicated`] otherwise (it ran on the
//!   master, but may not survive a failover). Lock fencing tokens never repeat across a failover
//!   (see [`lock`](crate::lock)). `tests/it/sentinel.rs` checks durable writes under
//!   `SENTINEL FAILOVER`, kill -9 and SIGSTOP of the master, and the fencing tokens under
//!   `SENTINEL FAILOVER` and kill -9.
//! - `/health/redis` shows the topology: `{"kind":"sentinel","master":"10.0.0.2:6379",
//!   "sentinels":[…],"watching":"10.0.0.1:26379"}`; `redis_client_failovers_total` counts the
//!   failovers followed (the alert `RedisSentinelFailoverFlapping` fires on more than 2 in 15
//!   minutes).
//! - **No `redis+sentinel://` URL**: there is no convention users already know. Lettuce (Java) has
//!   `redis-sentinel://host1:26379,host2:26379#mymaster`, but ioredis, node-redis and redis-rs take
//!   options rather than a URL, and none of them says how to give the sentinels' and the data
//!   nodes' credentials apart. A URL would be a dialect of our own; the four variables say it
//!   plainly.
//!
//! How long a failover takes, measured with `testing::SentinelTopology`: `docs/performance.md`
//! ("Sentinel failovers") in the repository.
//!
//! # Redis Cluster
//!
//! Give the seed nodes of a Redis Cluster instead of a server
//! ([`Config::cluster_nodes`](crate::Config::cluster_nodes)); commands are routed by slot:
//!
//! ```sh
//! REDIS_CLUSTER_NODES=10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000 \
//! REDIS_PASSWORD_FILE=/run/secrets/redis-password cargo run --release
//! ```
//!
//! ```no_run
//! # fn main() -> Result<(), redis_supervisor::Error> {
//! let config = redis_supervisor::Config::builder()
//!     .cluster_nodes(["10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"])
//!     .cluster_read_from_replicas(false) // REDIS_CLUSTER_READ_FROM_REPLICAS
//!     .build()?;
//! # let _ = config; Ok(()) }
//! ```
//!
//! TLS, ACL user and password apply to every node as to a standalone server. Seed nodes exclude
//! sentinels (a cluster fails over by itself) and any database but 0; each mistake is an
//! [`Error::Config`] naming the variable.
//!
//! - **Routing.** The supervised connection is a router: the slot map from `CLUSTER SLOTS`, and
//!   one redis-rs `MultiplexedConnection` per node, opened on first use. A command goes to the
//!   primary of its key's slot (with reads from replicas on, a read-only command such as `GET` to
//!   one of its replicas, in `READONLY` mode); a command without arguments to some primary.
//!   [`RedisHandle`] is unchanged: single-key commands, hash-tagged multi-key commands
//!   (`{user:42}:cart`, `{user:42}:orders`), pipelines, `MULTI` and
//!   [`transaction`](crate::RedisHandle::transaction) on one slot all work as on one server (a
//!   pipeline goes to the node of its first key, so its keys must share a slot: the loop never
//!   splits a pipeline).
//! - **Multi-key commands across slots.** `MGET`, `DEL`, `EXISTS`, `UNLINK`, `TOUCH` and `MSET` are
//!   split, one command per slot, each part delivered on its own (all at once, those for one node
//!   pipelined on its connection), and recombined: `MGET` in key order, counts summed. `MSET`
//!   across slots is then not atomic. Every other multi-key command whose keys hash to different
//!   slots is refused by the server with `CROSSSLOT`, which comes back as
//!   [`Error::CrossSlot`] `{ command, keys }`, naming each key with its
//!   slot.
//! - **Delivery semantics hold.** `MOVED` and `ASK` are followed (to the node named, `ASK` behind
//!   `ASKING`); they are not replays, the command did not run. A second `MOVED` for the same
//!   command waits for the slot map to be read again (the slot is moving), and a pipeline's `ASK`
//!   waits for the next read of the slot map instead of sending the pipeline behind `ASKING`; a
//!   command redirected more than 16 times within its deadline is [`Error::TooManyRedirects`] (it
//!   did not run). A plain pipeline (not `atomic()`, not replay-safe) only some of whose commands
//!   were redirected is `Ambiguous`: the others ran. `TRYAGAIN`, `CLUSTERDOWN`, a node's "cannot
//!   serve" refusal (`LOADING`, `READONLY`, …), a node that refuses connections, a slot without a
//!   primary: also "did not run", sent again once the slot map has been read again (at most one
//!   read per 50 ms; no fixed pauses), until the deadline, which bounds everything (redirects and
//!   map reads included); still refused at the deadline, the answer is [`Error::Unavailable`] with
//!   kind `cluster_down`. A connection lost with a command in flight gives `Ambiguous` for a
//!   non-idempotent one; a replay-safe one is sent once more. One node's lost connection is that
//!   node's: it is reopened, the other nodes' stay. A part of a split command is judged alone (a
//!   redirected `MGET` part is re-sent, a `DEL` part lost in flight makes the `DEL` `Ambiguous`).
//! - **Health per node.** The health actor reads `CLUSTER SLOTS` every probe interval (K probes
//!   without an answer from any node replace the router, as for a silent server) and sends every
//!   primary (and every replica when reads use them) a `PING` with a token of its own, at once,
//!   each within the probe timeout, on the connection commands to that node use: a silent
//!   connection, or one whose reply is not the token's echo (it lost its reply order), is dropped,
//!   and the next command to the node opens a new one. Every slot served: `Up`. Some primaries
//!   silent or some slots without one: `Degraded`, naming the slots and the node
//!   (`slots 10923-16383 unserved: primary 10.0.0.3:7000 does not answer (connection refused)`).
//!   No primary answering: `NotReady` with kind `cluster_down`. A new shape (a promotion, slots
//!   moved, a node joined or left) is an
//!   [`EventKind::ClusterChanged`](crate::EventKind::ClusterChanged) `{ shards }` event, and the
//!   router takes the new map at once (a promotion sends no `MOVED` to tell it).
//!   `/health/redis` lists the nodes (`topology.nodes`: `node`, `role`, `slots`, `up`, `ping_ms`,
//!   `error`); the gauges `redis_client_cluster_node_up{node}`,
//!   `redis_client_cluster_node_ping_seconds{node}`, `redis_client_cluster_slots_served` and the
//!   counter `redis_client_cluster_changes_total` feed the dashboard's Cluster row and the
//!   `RedisClusterSlotsUnserved` alert.
//! - **Across all primaries.** [`Cache::invalidate`](crate::cache::Cache::invalidate) walks every
//!   primary (a `SCAN` cursor is one node's). Blocking commands (`blpop` & co.) run on a dedicated
//!   connection to their key's primary, found in the slot map, following `MOVED`/`ASK`; shutdown
//!   unblocks them on that node. Pub/sub is the classic kind: a `PUBLISH` reaches subscribers on
//!   every node, so the subscriber connection goes to the first seed node that answers. Keyspace
//!   notifications are per node, so [`keyspace_events`](crate::pubsub::PubSub::keyspace_events)
//!   is refused on a cluster ([`Error::InvalidArgument`] saying so)
//!   rather than delivering a third of them. Sharded pub/sub (`SSUBSCRIBE`) is not offered.
//! - **The patterns.** The rate limiter and presence use one key per script, the cache one key per
//!   command, and work (the cache's `set_many` sends one pipeline per slot of its keys). Locks
//!   work: the lock and its fencing counter are written with the lock's name in a hash tag, so they
//!   share a slot. Sessions are not supported yet — a session and its user's index hash to
//!   different slots — and
//!   [`SessionStoreBuilder::build`](crate::session::SessionStoreBuilder::build) refuses a cluster
//!   with [`Error::Config`] naming `session`: keep sessions on a standalone or Sentinel-managed
//!   Redis (a second [`Supervisor`]).
//!
//! **Why not redis-rs's cluster client.** The first version put redis-rs's cluster-async client
//! behind this crate's promises (its retries off, our deadlines). It failed the resharding test: with redis 1.8.1, 64 tasks of `INCR` and a `redis-cli --cluster
//! reshard` of 200 slots, the client's slot refresh (`async cluster client recovery: beginning
//! slot refresh`, never followed by `slot refresh complete`) stalls every request for good. The
//! same happens with the client used directly, with its default retries, in RESP2 and RESP3 (5 of
//! 6 reshards in one run); with a 1 s response timeout each reshard costs 64–128 timed-out
//! requests instead. The router here is small: `src/topology/cluster.rs` (CRC16 slots, a map
//! swapped whole, one connection per node), `src/command.rs` (which argument holds the key: a
//! command it does not know is taken to have its key first, and a wrong guess costs one `MOVED`)
//! and the one delivery loop, `src/delivery.rs` (redirects, and splits in
//! `src/delivery/split.rs`).
//!
//! Measured against redis-rs's cluster client (throughput, p99, client CPU) and through a reshard
//! and a kill -9 of a primary: `docs/performance.md` ("Redis Cluster") in the repository.

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
mod comeback;
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
