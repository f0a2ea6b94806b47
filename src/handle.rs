//! [`RedisHandle`]: the public command API. A typed method builds a request (the command, its
//! label, whether a replay is safe) and hands it to the one delivery loop every command goes
//! through, which finds a serving connection (waiting for one per the offline policy until the
//! deadline), writes the request on it — on one server, redis-rs's own pipeline queue, one hop;
//! on a Redis Cluster, the connection to the node of its key's slot — and bounds the wait for
//! the reply by the deadline. Every call gets exactly one answer, a value or a typed [`Error`],
//! by its deadline.
//!
//! # Delivery semantics
//!
//! | situation | what happens |
//! |---|---|
//! | connection up | handed to the connection at once (with several lanes, the one with the fewest commands outstanding); concurrent calls pipeline on it |
//! | connection down or server not ready, policy `wait` | waits for a ready connection until the deadline, then [`Error::Unavailable`] |
//! | connection down or server not ready, policy `fail-fast` | [`Error::Unavailable`] at once |
//! | [`Config::max_waiting`](crate::Config::max_waiting) (`REDIS_MAX_WAITING`) commands already waiting for a connection | [`Error::Overloaded`] at once (not sent) |
//! | the supervisor gave up ([`Config::max_attempts`](crate::Config::max_attempts), `REDIS_MAX_ATTEMPTS`) | [`Error::Unavailable`] at once |
//! | refused with `LOADING`, `MASTERDOWN` or `BUSY` | the command did not run: it waits (as above) for the server to be ready and is sent again; the refusal never reaches the caller. A pipeline or `MULTI` every command of which was refused likewise; a pipeline only part of which was refused (the rest ran) is sent again only when replay-safe, else [`Error::Ambiguous`] |
//! | refused with `READONLY` (the node is no longer the master: a failover demoted it) | the command did not run: the connection is replaced (with Sentinel, by one to the master the sentinels name) and the command is sent again on the new one, within its deadline (a pipeline: as for `LOADING` above) |
//! | on a cluster: `MOVED` / `ASK` | the command did not run: it is sent to the node named (behind `ASKING` for an `ASK`; a pipeline's `ASK` waits for the migration to end), without counting as a replay; after 16 redirects, [`Error::TooManyRedirects`]. `TRYAGAIN`, `CLUSTERDOWN` and an unreachable node wait for the next read of the slot map |
//! | connection lost after the command was handed over | replay-safe commands are sent once more on the next connection within the deadline; others get [`Error::Ambiguous`] |
//! | handed over, no reply by the deadline | replay-safe: [`Error::Timeout`] with `sent: true`; others: [`Error::Ambiguous`] |
//! | deadline passed before it could be handed over (e.g. a zero deadline) | [`Error::Timeout`] with `sent: false`; it is never sent later |
//! | an error reply from Redis | [`Error::Server`] with its `code` (`WRONGTYPE`, `NOPERM`, …) and message; the connection stays |
//! | a reply of another type than the one asked for | [`Error::ReplyType`]; the connection stays |
//! | shutting down | [`Error::ShuttingDown`] (the command was not sent) |
//!
//! "Handed over" is all the crate can know: the command is in the connection's write queue,
//! and redis-rs does not say when it is written, so from then on it may have executed.
//!
//! **Replay rule.** A command is sent again after a lost connection only if running it twice
//! has the effect of running it once *and its reply means the same* on a replay: `GET`,
//! `MGET`, `EXISTS`, `PTTL`, `SET` without `NX`/`XX`, `MSET`, `PEXPIRE`, `PING`. Never
//! replayed: `INCR`/`INCRBY` (the effect doubles), `SET NX`/`XX` (a replay reports "not set"
//! for a write that happened), `DEL` (a replay reports 0 removed for a delete that happened),
//! raw [`cmd`](RedisHandle::cmd) and [`pipeline`](RedisHandle::pipeline). Mark your own with
//! [`cmd_idempotent`](RedisHandle::cmd_idempotent) /
//! [`pipeline_idempotent`](RedisHandle::pipeline_idempotent).
//!
//! The chaos suite (`tests/it/chaos.rs`) checks the rule on a server with `appendfsync always`: its
//! 64 tasks of mixed reads and writes `INCR` one counter, and after every fault
//! `ok ≤ counter ≤ ok + ambiguous` — an `INCR` never ran twice.
//!
//! # Commands that change the connection's state
//!
//! The shared connection is one socket for every caller of a supervisor: a command that changes
//! what the *connection* is — its database, its protocol, whether it replies, who it is
//! authenticated as, whether it is in a transaction or subscribed — changes it for every other
//! caller too (their writes land in another database, they receive each other's replies). These
//! are refused before anything is sent, with [`Error::InvalidArgument`] naming the command and
//! the API that does the job instead; a pipeline is checked command by command.
//!
//! | command | instead |
//! |---|---|
//! | `SELECT` | [`Config::db`](crate::Config::db) (`REDIS_DB`), or a second supervisor for another database |
//! | `AUTH`, `HELLO` | the credentials of the [`Config`] (`REDIS_USERNAME`, `REDIS_PASSWORD`); the crate always speaks RESP3 |
//! | `RESET`, `QUIT` | nothing: [`Supervisor::shutdown`](crate::Supervisor::shutdown) closes the connection |
//! | `CLIENT REPLY`, `CLIENT TRACKING`, `CLIENT CACHING`, `CLIENT NO-EVICT`, `CLIENT NO-TOUCH` | nothing on the shared connection |
//! | `CLIENT SETNAME`, `CLIENT SETINFO` | [`Config::name`](crate::Config::name) (`REDIS_CLIENT_NAME`): the crate names its connections after it |
//! | `MULTI`, `EXEC`, `DISCARD` | `pipeline(redis::pipe().atomic()…)`, or [`transaction`](RedisHandle::transaction) |
//! | `WATCH`, `UNWATCH` | [`transaction`](RedisHandle::transaction): `WATCH` on a connection of its own |
//! | `SUBSCRIBE`, `PSUBSCRIBE`, `SSUBSCRIBE` and their unsubscribes | [`Supervisor::pubsub`](crate::Supervisor::pubsub) |
//! | `MONITOR`, `SYNC`, `PSYNC`, `REPLCONF` | nothing: they turn the connection into a stream |
//! | `READONLY`, `READWRITE`, `ASKING` | nothing: cluster routing (and `ASK` redirects) are the crate's |
//!
//! Every other command runs as it is. Commands that change the *server* (`CONFIG SET`,
//! `FLUSHALL`, `CLIENT KILL`, `CLIENT PAUSE`, …) are the caller's business, as with any client;
//! `SELECT` inside a Lua script changes only the script's database.
//!
//! A caller's deadline is the caller's budget: a command that misses it is no evidence against
//! the connection, and never makes the supervisor replace it. For example, 64 callers whose
//! 20 ms deadlines all expire during a 1 s server stall replace nothing. The health actor alone
//! judges the connection (see [`health`](crate::health)): a probe that gets no reply *while
//! nothing else comes back on the connection either* is a failure, and
//! [`Config::health_failures`](crate::Config::health_failures) such probes in a row replace it
//! (within 3.5 s by default); a probe that is late behind other replies only makes the state
//! `Degraded`.
//!
//! # Blocking commands
//!
//! [`blpop`](RedisHandle::blpop), [`brpop`](RedisHandle::brpop),
//! [`bzpopmin`](RedisHandle::bzpopmin), [`xread_block`](RedisHandle::xread_block) and
//! [`wait`](RedisHandle::wait) run on dedicated connections under the supervisor, never on the
//! shared command connection, where a command waiting on the server would hold up every reply
//! behind it, and the health probes.
//!
//! ```no_run
//! # async fn run(redis: redis_supervisor::RedisHandle) -> Result<(), redis_supervisor::Error> {
//! use std::time::Duration;
//! // The deadline is the block time plus the handle's timeout.
//! let job: Option<(String, String)> = redis.blpop(&["jobs"], Duration::from_secs(5)).await?;
//! let acked: u64 = redis.wait(1, Duration::from_millis(500)).await?;
//! # let _ = (job, acked); Ok(()) }
//! ```
//!
//! - **A pool.** Each command holds one connection of the blocking pool for its run: at most
//!   [`Config::blocking_connections`](crate::Config::blocking_connections)
//!   (`REDIS_BLOCKING_CONNECTIONS`, default 16) at once, opened on demand, kept while idle;
//!   beyond that callers wait within their deadline, then get [`Error::Overloaded`]. They open
//!   only while the command connection is up, so an outage is paced by the supervisor's backoff.
//! - **Deadlines.** The deadline is the command's own block time plus the handle's timeout. A
//!   command that waited for its connection (an outage) is sent blocking only for what its
//!   deadline has left, so it still answers in time, and a pop never takes an element after its
//!   caller stopped waiting. A block time of 0 (forever) is refused with
//!   [`Error::InvalidArgument`]: every command is answered by a deadline.
//! - **Replays.** A pop that may have happened without its reply (lost connection, deadline) is
//!   [`Error::Ambiguous`], never replayed; `XREAD` and `WAIT` only read, and are replayed once.
//! - **Raw blocking commands** sent through [`cmd`](RedisHandle::cmd) (`BLPOP`, `BRPOP`,
//!   `BLMOVE`, `BRPOPLPUSH`, `BLMPOP`, `BZPOPMIN`, `BZPOPMAX`, `BZMPOP`, `XREAD`/`XREADGROUP`
//!   with `BLOCK`, `WAIT`, `WAITAOF`) are found by name and routed to the pool, with the block
//!   time read from their arguments: routed rather than refused, because a refused command is
//!   one more thing to work around, and the routing costs every other raw command a look at its
//!   first letter.
//! - **`WAIT`** counts only the writes of the connection it runs on, and this one runs on a
//!   dedicated connection: [`wait`](RedisHandle::wait) (and a raw `WAIT`) first publishes an
//!   empty message on `__redis-supervisor:wait` — a write that replicates, made after every write
//!   the caller saw acknowledged — and waits for that. To make each write of a handle wait for
//!   its replicas instead, use [`wait_replicas`](RedisHandle::wait_replicas).
//! - **On a Redis Cluster** a blocking command runs on a dedicated connection to the primary of
//!   its key's slot, found in the slot map, and follows `MOVED`/`ASK`; shutdown unblocks it on
//!   that node.
//! - **Shutdown.** [`Supervisor::shutdown`](crate::Supervisor::shutdown) sends
//!   `CLIENT UNBLOCK <id> ERROR` for every blocked command, so it returns at once: answered
//!   [`Error::ShuttingDown`], it popped nothing. One not unblocked within 500 ms is cut off.
//! - **Metrics.** `redis_client_blocking_connections` (dedicated connections open) and
//!   `redis_client_blocking_in_use` (blocking commands running), each at 0 from the start; the
//!   blocking commands count in `redis_client_commands_total` under `blpop`, `brpop`,
//!   `bzpopmin`, `xread` and `wait`.

use std::sync::Arc;
use std::time::Duration;

use redis::{FromRedisValue, ToRedisArgs, Value};
use tokio::time::Instant;

use crate::config::{Config, NodeAddr, OfflinePolicy};
use crate::delivery::{Durability, HandleCore, Plan, Via};
use crate::error::{Error, from_reply_error};
use crate::metrics::{CommandLabel, Outcome, PatternMetrics};
use crate::pool::Purpose;
use crate::request::Request;
use crate::topology::Topology;

mod blocking;
mod commands;
mod transaction;
pub use transaction::{TRANSACTION_ATTEMPTS, Transaction};

use crate::deadline::deadline_after;

/// A cheap, cloneable handle to a [`Supervisor`](crate::Supervisor)'s connection
/// (`Clone + Send + Sync + 'static`).
///
/// ```no_run
/// # async fn run(redis: redis_supervisor::RedisHandle) -> Result<(), redis_supervisor::Error> {
/// use std::time::Duration;
/// redis.set_ex("session:42", "{}", Duration::from_secs(1800)).await?;
/// let n: i64 = redis.incr("visits").await?;
/// // A longer deadline for one call:
/// let v: Option<String> = redis.with_timeout(Duration::from_secs(5)).get("big").await?;
/// // Any other command:
/// let len: usize = redis.cmd(redis::cmd("STRLEN").arg("big").clone()).await?;
/// # let _ = (n, v, len); Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisHandle {
    core: Arc<HandleCore>,
    timeout: Duration,
    /// What a command does while no connection can serve it: the config's policy, or the one
    /// given to [`with_offline_policy`](RedisHandle::with_offline_policy).
    offline: OfflinePolicy,
    /// Replicas a write must reach before it is answered: the config's
    /// ([`Config::wait_replicas`]), or those given to
    /// [`wait_replicas`](RedisHandle::wait_replicas).
    durability: Option<Durability>,
}

impl std::fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHandle")
            .field("client", &self.core.config().name())
            .field("timeout", &self.timeout)
            .field("offline", &self.offline)
            .field("durability", &self.durability)
            .finish()
    }
}
/// Options for [`RedisHandle::set_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetOptions {
    ttl: Option<Duration>,
    condition: Option<SetCondition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetCondition {
    Nx,
    Xx,
}

impl SetOptions {
    /// No TTL, unconditional.
    pub fn new() -> Self {
        Self::default()
    }
    /// Expire the key after `ttl` (millisecond precision, `PX`).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
    /// Only set if the key does not exist (`NX`).
    pub fn nx(mut self) -> Self {
        self.condition = Some(SetCondition::Nx);
        self
    }
    /// Only set if the key already exists (`XX`).
    pub fn xx(mut self) -> Self {
        self.condition = Some(SetCondition::Xx);
        self
    }
}

/// The time to live of a key, from [`RedisHandle::ttl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTtl {
    /// The key does not exist.
    Missing,
    /// The key exists and has no expiry.
    Persistent,
    /// The key expires in this much time (millisecond precision).
    Expires(Duration),
}

/// A key argument with the configured prefix in front.
struct PrefixedKey<'a, K> {
    prefix: &'a [u8],
    key: K,
}

impl<K: AsRef<[u8]>> ToRedisArgs for PrefixedKey<'_, K> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        if self.prefix.is_empty() {
            out.write_arg(self.key.as_ref());
        } else {
            use std::io::Write;
            let mut w = out.writer_for_next_arg();
            // Writing into the command's own buffer cannot fail.
            let _ = w.write_all(self.prefix);
            let _ = w.write_all(self.key.as_ref());
        }
    }
}

/// A typed command whose replay is safe (see the replay rule in the [module docs](self)).
const fn safe(label: CommandLabel) -> (CommandLabel, bool) {
    (label, true)
}

/// A typed command that is never replayed.
const fn never(label: CommandLabel) -> (CommandLabel, bool) {
    (label, false)
}

impl RedisHandle {
    pub(crate) fn new(core: Arc<HandleCore>) -> Self {
        let config = core.config();
        let (timeout, offline) = (config.command_timeout(), config.offline_policy());
        let durability = (config.wait_replicas() > 0).then(|| Durability {
            replicas: config.wait_replicas(),
            timeout: config.wait_timeout(),
        });
        Self {
            core,
            timeout,
            offline,
            durability,
        }
    }

    /// A copy of this handle whose commands use `timeout` as their deadline instead of the
    /// configured command timeout. Cheap; use it per call. `Duration::MAX` (or anything over
    /// 30 years) means no deadline; `Duration::ZERO` fails every command at once with
    /// [`Error::Timeout`] (`sent: false`).
    pub fn with_timeout(&self, timeout: Duration) -> RedisHandle {
        Self {
            timeout,
            ..self.clone()
        }
    }

    /// The deadline this handle gives each command.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A copy of this handle whose commands follow `policy` while no connection can serve
    /// them, instead of the configured [`Config::offline_policy`]. Cheap; the patterns built on
    /// the returned handle ([`cache`](crate::cache), [`ratelimit`](crate::ratelimit), …) follow
    /// it too. The usual use: a web request's cache read or rate-limit check that should fall
    /// back at once while Redis is down ([`OfflinePolicy::FailFast`]), beside a background
    /// worker that waits for the reconnect ([`OfflinePolicy::Wait`]).
    ///
    /// ```no_run
    /// # async fn run(supervisor: redis_supervisor::Supervisor) {
    /// use redis_supervisor::OfflinePolicy;
    /// let requests = supervisor.handle().with_offline_policy(OfflinePolicy::FailFast);
    /// match requests.get::<_, Option<String>>("hot").await {
    ///     Err(e) if e.is_unavailable() => { /* at once while down: serve without Redis */ }
    ///     other => { let _ = other; }
    /// }
    /// # }
    /// ```
    ///
    /// Pub/sub subscriptions ([`Supervisor::pubsub`](crate::Supervisor::pubsub)) follow the
    /// configured policy.
    pub fn with_offline_policy(&self, policy: OfflinePolicy) -> RedisHandle {
        Self {
            offline: policy,
            ..self.clone()
        }
    }

    /// What this handle's commands do while no connection can serve them.
    pub fn offline_policy(&self) -> OfflinePolicy {
        self.offline
    }

    /// A copy of this handle whose writes are answered `Ok` only once `replicas` replicas have
    /// acknowledged them (`WAIT replicas timeout` after each, on its connection), instead of
    /// [`Config::wait_replicas`]; `0` turns it off. Cheap; the patterns built on the returned
    /// handle ([`session`](crate::session), [`lock`](crate::lock), …) follow it too.
    ///
    /// Redis replicates asynchronously: a write the master acknowledged is lost if the master
    /// fails before a replica has it, and a failover then promotes a replica without it. A write
    /// through this handle that fewer replicas acknowledge within `timeout` (cut to what its
    /// deadline leaves) is answered [`Error::NotReplicated`]: it ran on the master but may not
    /// survive a failover. One answered `Ok` survives the failure of the master as long as one of
    /// the replicas that acknowledged it is promoted (Sentinel and Redis Cluster promote the
    /// most up-to-date replica).
    ///
    /// Writes are the commands not known to only read (`GET`, `MGET`, `EXISTS`, `PTTL`, …, the
    /// read-only commands of the [replay rule](self#delivery-semantics)); they run on a leased
    /// connection
    /// ([`Config::leased_connections`]), because `WAIT` holds its connection; reads and blocking
    /// commands run as usual. Cost: the leased connection, and the replicas' round trip.
    ///
    /// ```no_run
    /// # async fn run(redis: redis_supervisor::RedisHandle) -> Result<(), redis_supervisor::Error> {
    /// use std::time::Duration;
    /// let durable = redis.wait_replicas(1, Duration::from_millis(500));
    /// durable.set("order:42", "paid").await?; // on the master and on at least one replica
    /// # Ok(()) }
    /// ```
    pub fn wait_replicas(&self, replicas: u32, timeout: Duration) -> RedisHandle {
        Self {
            durability: (replicas > 0).then_some(Durability { replicas, timeout }),
            ..self.clone()
        }
    }

    /// How many replicas this handle's writes must reach before they are answered (0: none).
    pub fn replicas_required(&self) -> u32 {
        self.durability.map_or(0, |d| d.replicas)
    }

    /// The configuration of the supervisor this handle belongs to (key prefix, name, …).
    pub fn config(&self) -> &Config {
        self.core.config()
    }

    /// Where this handle's commands go (for the patterns: whether keys must share a slot).
    pub(crate) fn topology(&self) -> &Topology {
        self.core.topology()
    }

    /// The patterns' metrics (registered with this supervisor's recorder and `client` label).
    pub(crate) fn pattern_metrics(&self) -> &PatternMetrics {
        self.core.patterns()
    }

    /// The key with the configured prefix, written straight into the command (no allocation).
    fn key<K: AsRef<[u8]>>(&self, key: K) -> PrefixedKey<'_, K> {
        PrefixedKey {
            prefix: self.core.config().key_prefix().as_bytes(),
            key,
        }
    }

    fn cmd_with_keys<K: AsRef<[u8]>>(
        &self,
        name: &'static str,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<redis::Cmd, Error> {
        let mut cmd = redis::cmd(name);
        let mut any = false;
        for k in keys {
            cmd.arg(self.key(k));
            any = true;
        }
        if !any {
            return Err(Error::InvalidArgument(format!(
                "{name} needs at least one key"
            )));
        }
        Ok(cmd)
    }

    /// The nodes a walk of the keyspace (`SCAN`) must visit: `[None]` (the one server) unless
    /// keys are spread over a cluster's slots, where it is every primary (from the slot map),
    /// each walked alone.
    ///
    /// # Errors
    /// As any command while the cluster does not serve (waiting per the offline policy), or
    /// [`Error::Unavailable`] when its slot map names no primary.
    pub(crate) async fn scan_targets(&self) -> Result<Vec<Option<NodeAddr>>, Error> {
        if !self.core.topology().slotted() {
            return Ok(vec![None]);
        }
        let deadline = deadline_after(Instant::now(), self.timeout);
        self.core.serving(deadline, self.offline).await?;
        let primaries = self.core.primaries();
        if primaries.is_empty() {
            return Err(Error::Unavailable {
                since: std::time::SystemTime::now(),
                reason: "the cluster's slot map names no primary".into(),
                kind: crate::error::FailureKind::ClusterDown,
            });
        }
        Ok(primaries.into_iter().map(Some).collect())
    }

    /// Like [`cmd`](Self::cmd) (`replay_safe`: [`cmd_idempotent`](Self::cmd_idempotent)), on
    /// the cluster node `node` when given (a `SCAN` step of [`scan_targets`](Self::scan_targets)).
    pub(crate) async fn cmd_at<RV: FromRedisValue>(
        &self,
        node: Option<&NodeAddr>,
        cmd: redis::Cmd,
        replay_safe: bool,
    ) -> Result<RV, Error> {
        self.run(Request::raw(cmd).at(node), replay_safe).await
    }

    async fn query<RV: FromRedisValue>(
        &self,
        cmd: redis::Cmd,
        (label, replay_safe): (CommandLabel, bool),
    ) -> Result<RV, Error> {
        self.run(Request::typed(cmd, label), replay_safe).await
    }

    /// A pipeline's replies as the server sent them, error replies included (not turned into
    /// the answer's error): for a pattern that reads each (the lock's acquire).
    pub(crate) async fn pipeline_values(&self, pipe: redis::Pipeline) -> Result<Value, Error> {
        let mut pipe = pipe;
        pipe.ignore_errors();
        let request = Request::pipeline(pipe);
        let start = Instant::now();
        let result = self.deliver(&request, false, start).await;
        self.core
            .metrics()
            .command(request.label(), Outcome::of(&result), start.elapsed());
        result
    }

    /// The one path every command takes: exactly one answer by the deadline, converted to the
    /// caller's type, counted once (error replies inside the value count as errors).
    async fn run<RV: FromRedisValue>(
        &self,
        request: Request,
        replay_safe: bool,
    ) -> Result<RV, Error> {
        let start = Instant::now();
        let result = self
            .deliver(&request, replay_safe, start)
            .await
            .and_then(convert)
            .map_err(|e| cross_slot(e, &request));
        self.core
            .metrics()
            .command(request.label(), Outcome::of(&result), start.elapsed());
        result
    }

    /// Delivers `request` through the one delivery loop: on the shared connection, or, for a
    /// write that must reach replicas, on a leased one (`WAIT` holds its connection).
    async fn deliver(
        &self,
        request: &Request,
        replay_safe: bool,
        start: Instant,
    ) -> Result<Value, Error> {
        // A write that must reach replicas waits for them on a leased connection (`WAIT` holds
        // its connection); everything else takes the shared one.
        let durability = self.durability.filter(|_| request.writes());
        let plan = Plan {
            request,
            replay_safe,
            via: match durability {
                Some(_) => Via::Pool(Purpose::Leased),
                None => Via::Shared,
            },
            budget: self.timeout,
            deadline: deadline_after(start, self.timeout),
            offline: self.offline,
            block: None,
            durability,
        };
        self.core.deliver(&plan).await
    }

    /// How many replicas the node serving `key` has, as the topology knows them (with Sentinel,
    /// from the sentinels; on a cluster, from the slot map; one server: none known). For a
    /// pattern that must reach every replica when the server will not say (`ROLE` refused).
    pub(crate) fn known_replicas(&self, key: &[u8]) -> u32 {
        self.core.known_replicas(key)
    }

    /// The nodes a failover could promote that do not replicate yet (Sentinel: masters demoted
    /// by a planned failover, until the sentinels make them replicas): a `WAIT` cannot reach
    /// them, so a pattern writes to them directly what must survive a failover.
    pub(crate) fn demoted_masters(&self) -> Vec<crate::config::NodeAddr> {
        self.core.demoted_masters()
    }
}

/// A `CROSSSLOT` refusal as [`Error::CrossSlot`], naming the command's key arguments (the
/// arguments after its name, at most 8) with their slots; any other error as it is.
fn cross_slot(error: Error, request: &Request) -> Error {
    let (Error::Server { code, .. }, Some(cmd)) = (&error, request.as_cmd()) else {
        return error;
    };
    if code != "CROSSSLOT" {
        return error;
    }
    let keys = crate::command::args(cmd)
        .skip(1)
        .take(8)
        .map(|key| {
            let slot = crate::topology::cluster::key_slot(key);
            format!("{} (slot {slot})", String::from_utf8_lossy(key))
        })
        .collect();
    Error::CrossSlot {
        command: request.name(),
        keys,
    }
}

fn convert<RV: FromRedisValue>(value: Value) -> Result<RV, Error> {
    let value = value.extract_error().map_err(from_reply_error)?;
    redis::from_redis_value(value).map_err(|e| Error::ReplyType(e.to_string()))
}

fn ttl_ms(name: &str, ttl: Duration) -> Result<u64, Error> {
    let ms = ttl.as_millis();
    if ms == 0 {
        return Err(Error::InvalidArgument(format!(
            "{name} must be at least 1 ms, got {ttl:?}"
        )));
    }
    Ok(ms.min(i64::MAX as u128) as u64)
}
