//! [`RedisHandle`]: the public command API. A typed method builds a request (the command, its
//! label, whether a replay is safe), finds the live connection's lane in the route (waiting for
//! one per the offline policy until the deadline), writes the request into the lane — redis-rs's
//! own pipeline queue, one hop — and bounds the wait for the reply by the deadline. Every call
//! gets exactly one answer, a value or a typed [`Error`], by its deadline.
//!
//! # Delivery semantics
//!
//! | situation | what happens |
//! |---|---|
//! | connection up | handed to the connection at once (with several lanes, the one with the fewest commands outstanding); concurrent calls pipeline on it |
//! | connection down or server not ready, policy `wait` | waits for a ready connection until the deadline, then [`Error::Unavailable`] |
//! | connection down or server not ready, policy `fail-fast` | [`Error::Unavailable`] at once |
//! | refused with `LOADING`, `MASTERDOWN` or `BUSY` | the command did not run: it waits (as above) for the server to be ready and is sent again; the refusal never reaches the caller (a pipeline is not sent again: part of it may have run, so a refused command in it comes back as [`Error::Server`]) |
//! | connection lost after the command was handed over | replay-safe commands are sent once more on the next connection within the deadline; others get [`Error::Ambiguous`] |
//! | handed over, no reply by the deadline | replay-safe: [`Error::Timeout`] with `sent: true`; others: [`Error::Ambiguous`] |
//! | deadline passed before it could be handed over (e.g. a zero deadline) | [`Error::Timeout`] with `sent: false`; it is never sent later |
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
//! the connection, and never makes the supervisor replace it (the health actor judges that).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use ractor::ActorId;
use redis::{FromRedisValue, ToRedisArgs, Value};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::command::blocking_time;
use crate::config::{Config, NodeAddr, OfflinePolicy};
use crate::deadline;
use crate::error::{Error, FailureKind, from_reply_error};
use crate::lane::{ExecError, Lane, Lease, NotReady};
use crate::metrics::{CommandLabel, CommandMetrics, Outcome, PatternMetrics, PoolMetrics};
use crate::pool::{Pool, Purpose};
use crate::request::Request;
use crate::route::{Route, RouteState};
use crate::sync::Striped;
use crate::topology::Topology;

mod blocking;
mod bulk;
mod transaction;
use bulk::BigReplies;
pub use transaction::{TRANSACTION_ATTEMPTS, Transaction};

pub(crate) use crate::deadline::deadline_after;

/// Admission of commands: counts those between entry and answer, and refuses new ones once
/// shutdown has begun. One atomic word per stripe (`in_flight × 2 + closed`): a command counts
/// itself in its thread's stripe, so the threads running commands do not fight over one line.
struct Gate {
    words: Striped<AtomicUsize>,
    /// Notified when the last in-flight command of a stripe leaves after closing.
    idle: Notify,
}

/// One admitted command (in stripe `1`); leaving is counted when it drops, however the command
/// ends, and on whichever thread it ends.
struct Entry<'a>(&'a Gate, usize);

impl Gate {
    fn new() -> Self {
        Gate {
            words: Striped::new(|| AtomicUsize::new(0)),
            idle: Notify::new(),
        }
    }

    fn enter(&self) -> Option<Entry<'_>> {
        let (stripe, word) = self.words.mine();
        let before = word.fetch_add(2, Ordering::AcqRel);
        let entry = Entry(self, stripe);
        (before & 1 == 0).then_some(entry)
    }

    /// Closes every stripe: a command that enters afterwards sees it closed.
    fn close(&self) {
        for word in self.words.iter() {
            word.fetch_or(1, Ordering::AcqRel);
        }
    }

    fn is_closed(&self) -> bool {
        self.words.get(0).load(Ordering::Acquire) & 1 == 1
    }

    fn in_flight(&self) -> usize {
        self.words
            .iter()
            .map(|w| w.load(Ordering::Acquire) >> 1)
            .sum()
    }
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        // The last one out of a stripe after closing (its word goes from 2 + 1 to 0 + 1) wakes
        // the drain, which counts the other stripes again.
        if self.0.words.get(self.1).fetch_sub(2, Ordering::AcqRel) == 3 {
            self.0.idle.notify_waiters();
        }
    }
}

/// What every handle of one supervisor shares; the handle module is its only writer.
pub(crate) struct HandleCore {
    config: Arc<Config>,
    route: Route,
    gate: Gate,
    /// Commands waiting for the connection right now.
    waiting: AtomicUsize,
    metrics: CommandMetrics,
    /// Carried for the patterns built on handles; they write it, the handle never does.
    patterns: PatternMetrics,
    /// The dedicated connections for blocking commands.
    blocking: Pool,
    /// The leased connections: transactions, writes that wait for replicas, lock acquires.
    leased: Pool,
    /// With more than one lane: which commands bring back big replies.
    bulk: Option<BigReplies>,
    /// Where connections go.
    topology: Topology,
}

impl HandleCore {
    pub(crate) fn new(
        config: Arc<Config>,
        route: Route,
        metrics: CommandMetrics,
        patterns: PatternMetrics,
        pools: [PoolMetrics; 2],
        topology: Topology,
    ) -> Arc<Self> {
        let [blocking, leased] = pools;
        Arc::new(HandleCore {
            blocking: Pool::new(
                config.clone(),
                topology.clone(),
                Purpose::Blocking,
                blocking,
            ),
            leased: Pool::new(config.clone(), topology.clone(), Purpose::Leased, leased),
            topology,
            bulk: (config.lanes() > 1).then(BigReplies::new),
            config,
            route,
            gate: Gate::new(),
            waiting: AtomicUsize::new(0),
            metrics,
            patterns,
        })
    }

    /// Shutdown begins: every new command answers [`Error::ShuttingDown`].
    pub(crate) fn close(&self) {
        self.gate.close();
    }

    /// True once shutdown has begun.
    pub(crate) fn is_closed(&self) -> bool {
        self.gate.is_closed()
    }

    /// Commands between entry and answer right now.
    pub(crate) fn in_flight(&self) -> usize {
        self.gate.in_flight()
    }

    /// Waits until no command is in flight (call after [`close`](Self::close)).
    pub(crate) async fn drained(&self) {
        loop {
            let notified = self.gate.idle.notified();
            if self.gate.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Commands waiting for the connection right now.
    pub(crate) fn offline_waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The two pools, blocking and leased (closed and unblocked by the supervisor at shutdown;
    /// emptied of idle connections at a failover).
    pub(crate) fn pools(&self) -> [&Pool; 2] {
        [&self.blocking, &self.leased]
    }

    /// The blocking pool.
    pub(crate) fn blocking(&self) -> &Pool {
        &self.blocking
    }
}

/// Counts a command waiting for the connection while it waits.
struct Waiting<'a>(&'a HandleCore);

impl<'a> Waiting<'a> {
    /// Counts one more waiting command, or `None` when the limit is reached.
    fn enter(core: &'a HandleCore) -> Option<Self> {
        let before = core.waiting.fetch_add(1, Ordering::Relaxed);
        if before >= core.config.max_waiting() {
            core.waiting.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        core.metrics.waiting(true);
        Some(Waiting(core))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.waiting(false);
    }
}

/// What a command needs from the route before it can be (re)sent.
#[derive(Clone, Copy, Default)]
struct Need<'a> {
    /// A connection known to be gone: wait for another.
    avoid: Option<ActorId>,
    /// The route version a refusal came on: wait for a later publication.
    after: Option<u64>,
    /// That refusal, to report if nothing changes in time.
    refusal: Option<&'a NotReady>,
    /// Its last reply was big: the bulk lane, if it serves.
    bulk: bool,
}

impl Need<'_> {
    /// The lane of `state` (published as `version`) if it satisfies this need.
    fn lane_in<'s>(&self, state: &'s RouteState, version: u64) -> Option<&'s Lane> {
        match state {
            RouteState::Serving(lanes) if self.after.is_none_or(|v| version > v) => {
                lanes.pick(self.avoid, self.bulk)
            }
            _ => None,
        }
    }
}

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
}

impl std::fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHandle")
            .field("client", &self.core.config.name())
            .field("timeout", &self.timeout)
            .field("offline", &self.offline)
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
        let timeout = core.config.command_timeout();
        let offline = core.config.offline_policy();
        Self {
            core,
            timeout,
            offline,
        }
    }

    /// A copy of this handle whose commands use `timeout` as their deadline instead of the
    /// configured command timeout. Cheap; use it per call. `Duration::MAX` (or anything over
    /// 30 years) means no deadline; `Duration::ZERO` fails every command at once with
    /// [`Error::Timeout`] (`sent: false`).
    pub fn with_timeout(&self, timeout: Duration) -> RedisHandle {
        Self {
            core: self.core.clone(),
            timeout,
            offline: self.offline,
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
            core: self.core.clone(),
            timeout: self.timeout,
            offline: policy,
        }
    }

    /// What this handle's commands do while no connection can serve them.
    pub fn offline_policy(&self) -> OfflinePolicy {
        self.offline
    }

    /// The configuration of the supervisor this handle belongs to (key prefix, name, …).
    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// Where this handle's commands go (for the patterns: whether keys must share a slot).
    pub(crate) fn topology(&self) -> &Topology {
        &self.core.topology
    }

    /// The patterns' metrics (registered with this supervisor's recorder and `client` label).
    pub(crate) fn pattern_metrics(&self) -> &PatternMetrics {
        &self.core.patterns
    }

    /// The key with the configured prefix, written straight into the command (no allocation).
    fn key<K: AsRef<[u8]>>(&self, key: K) -> PrefixedKey<'_, K> {
        PrefixedKey {
            prefix: self.core.config.key_prefix().as_bytes(),
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

    /// `GET key`.
    ///
    /// # Errors
    /// See the [module docs](self); [`Error::ReplyType`] if the value does not convert to `RV`.
    pub async fn get<K: AsRef<[u8]>, RV: FromRedisValue>(&self, key: K) -> Result<RV, Error> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key(key));
        self.query(cmd, safe(CommandLabel::Get)).await
    }

    /// `SET key value`.
    ///
    /// # Errors
    /// See the [module docs](self).
    pub async fn set<K: AsRef<[u8]>, V: ToRedisArgs>(&self, key: K, value: V) -> Result<(), Error> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(value);
        self.query::<Value>(cmd, safe(CommandLabel::Set))
            .await
            .map(drop)
    }

    /// `SET key value PX ttl`: the key expires after `ttl` (millisecond precision).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `ttl` is under 1 ms; otherwise see the [module docs](self).
    pub async fn set_ex<K: AsRef<[u8]>, V: ToRedisArgs>(
        &self,
        key: K,
        value: V,
        ttl: Duration,
    ) -> Result<(), Error> {
        self.set_with(key, value, SetOptions::new().ttl(ttl))
            .await
            .map(drop)
    }

    /// `SET` with options (TTL, `NX`, `XX`). Returns whether the value was set (`NX`/`XX` may
    /// refuse). `NX`/`XX` make the command non-idempotent.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the TTL is under 1 ms; otherwise see the [module docs](self).
    pub async fn set_with<K: AsRef<[u8]>, V: ToRedisArgs>(
        &self,
        key: K,
        value: V,
        options: SetOptions,
    ) -> Result<bool, Error> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(value);
        if let Some(ttl) = options.ttl {
            cmd.arg("PX").arg(ttl_ms("ttl", ttl)?);
        }
        let spec = match options.condition {
            None => safe(CommandLabel::Set),
            Some(SetCondition::Nx) => {
                cmd.arg("NX");
                never(CommandLabel::Set)
            }
            Some(SetCondition::Xx) => {
                cmd.arg("XX");
                never(CommandLabel::Set)
            }
        };
        let v: Value = self.query(cmd, spec).await?;
        Ok(!matches!(v, Value::Nil))
    }

    /// `DEL key [key …]`: returns how many keys were removed. Pass one key as `["k"]`.
    ///
    /// Never replayed: a replay after a lost connection would report 0 removed for a delete
    /// that happened, so a lost connection with it in flight gives [`Error::Ambiguous`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty key list; otherwise see the [module docs](self).
    pub async fn del<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<u64, Error> {
        let cmd = self.cmd_with_keys("DEL", keys)?;
        self.query(cmd, never(CommandLabel::Del)).await
    }

    /// `EXISTS key [key …]`: how many of the keys exist.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty key list; otherwise see the [module docs](self).
    pub async fn exists<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<u64, Error> {
        let cmd = self.cmd_with_keys("EXISTS", keys)?;
        self.query(cmd, safe(CommandLabel::Exists)).await
    }

    /// `PEXPIRE key ttl`: returns whether the key exists (and now expires).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `ttl` is under 1 ms; otherwise see the [module docs](self).
    pub async fn expire<K: AsRef<[u8]>>(&self, key: K, ttl: Duration) -> Result<bool, Error> {
        let mut cmd = redis::cmd("PEXPIRE");
        cmd.arg(self.key(key)).arg(ttl_ms("ttl", ttl)?);
        self.query(cmd, safe(CommandLabel::Expire)).await
    }

    /// `PTTL key`.
    ///
    /// # Errors
    /// See the [module docs](self).
    pub async fn ttl<K: AsRef<[u8]>>(&self, key: K) -> Result<KeyTtl, Error> {
        let mut cmd = redis::cmd("PTTL");
        cmd.arg(self.key(key));
        let ms: i64 = self.query(cmd, safe(CommandLabel::Ttl)).await?;
        Ok(match ms {
            -2 => KeyTtl::Missing,
            ms if ms < 0 => KeyTtl::Persistent,
            ms => KeyTtl::Expires(Duration::from_millis(ms as u64)),
        })
    }

    /// `INCR key`. Not idempotent: never replayed after an ambiguous failure.
    ///
    /// # Errors
    /// [`Error::Server`] (`ERR value is not an integer`) for a non-integer value; otherwise see
    /// the [module docs](self).
    pub async fn incr<K: AsRef<[u8]>>(&self, key: K) -> Result<i64, Error> {
        let mut cmd = redis::cmd("INCR");
        cmd.arg(self.key(key));
        self.query(cmd, never(CommandLabel::Incr)).await
    }

    /// `INCRBY key delta`. Not idempotent.
    ///
    /// # Errors
    /// As [`incr`](Self::incr).
    pub async fn incr_by<K: AsRef<[u8]>>(&self, key: K, delta: i64) -> Result<i64, Error> {
        let mut cmd = redis::cmd("INCRBY");
        cmd.arg(self.key(key)).arg(delta);
        self.query(cmd, never(CommandLabel::IncrBy)).await
    }

    /// `MGET key [key …]`: one `Option` per key, in order.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty key list; otherwise see the [module docs](self).
    pub async fn mget<K: AsRef<[u8]>, RV: FromRedisValue>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Option<RV>>, Error> {
        let cmd = self.cmd_with_keys("MGET", keys)?;
        self.query(cmd, safe(CommandLabel::Mget)).await
    }

    /// `MSET key value [key value …]`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no pairs; otherwise see the [module docs](self).
    pub async fn mset<K: AsRef<[u8]>, V: ToRedisArgs>(
        &self,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<(), Error> {
        let mut cmd = redis::cmd("MSET");
        let mut n = 0;
        for (k, v) in pairs {
            cmd.arg(self.key(k)).arg(v);
            n += 1;
        }
        if n == 0 {
            return Err(Error::InvalidArgument(
                "MSET needs at least one pair".into(),
            ));
        }
        self.query::<Value>(cmd, safe(CommandLabel::Mset))
            .await
            .map(drop)
    }

    /// `PING`: returns the round-trip time.
    ///
    /// # Errors
    /// See the [module docs](self).
    pub async fn ping(&self) -> Result<Duration, Error> {
        let start = Instant::now();
        let _: Value = self
            .query(redis::cmd("PING"), safe(CommandLabel::Ping))
            .await?;
        Ok(start.elapsed())
    }

    /// `PUBLISH channel payload`: returns how many subscribers received it (on this server).
    /// The channel is sent as given (no key prefix). Never replayed: a replay would deliver the
    /// message twice. Subscribe with [`Supervisor::pubsub`](crate::Supervisor::pubsub).
    ///
    /// # Errors
    /// See the [module docs](self).
    pub async fn publish<C: AsRef<[u8]>, P: ToRedisArgs>(
        &self,
        channel: C,
        payload: P,
    ) -> Result<u64, Error> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel.as_ref()).arg(payload);
        self.query(cmd, never(CommandLabel::Publish)).await
    }

    /// Any command that does not change the connection's own state, as a [`redis::Cmd`]. Keys
    /// are sent as given (no key prefix). Treated as non-idempotent: never replayed after an
    /// ambiguous failure.
    ///
    /// The connection is shared by every caller of the supervisor, so a command that would change
    /// what it is for all of them — `SELECT`, `CLIENT REPLY`, `MULTI`/`WATCH`, `SUBSCRIBE`,
    /// `MONITOR`, `HELLO`, `AUTH`, `RESET`, … — is refused with [`Error::InvalidArgument`] naming
    /// the API to use instead, and never sent (the table is in the
    /// [module docs](self#commands-that-change-the-connections-state)).
    ///
    /// A blocking command (`BLPOP`, `BRPOP`, `BLMOVE`, `BRPOPLPUSH`, `BLMPOP`, `BZPOPMIN`,
    /// `BZPOPMAX`, `BZMPOP`, `XREAD`/`XREADGROUP` with `BLOCK`, `WAIT`, `WAITAOF`) is found by
    /// name and runs on the blocking pool, as the typed [`blpop`](Self::blpop) & co. do, with its
    /// own block time (read from its arguments) plus this handle's timeout as its deadline. One
    /// whose timeout is 0 (block forever) or not a number is refused with
    /// [`Error::InvalidArgument`]: every command here is answered by a deadline. (Inside a
    /// pipeline or `MULTI` they do not block, and run as they are.)
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty command or one that changes the connection's
    /// state; otherwise see the [module docs](self).
    pub async fn cmd<RV: FromRedisValue>(&self, cmd: redis::Cmd) -> Result<RV, Error> {
        if let Some(refused) = crate::command::shared_refusal(&cmd) {
            return Err(self.refuse(&Request::raw(cmd), refused));
        }
        if let Some(block) = blocking_time(&cmd) {
            return self.raw_blocking(cmd, block, false).await;
        }
        self.run(Request::raw(cmd), false).await
    }

    /// Like [`cmd`](Self::cmd), for a command you know is safe to run twice *and whose reply
    /// means the same when it runs twice*: it is retried once on a new connection if the
    /// connection is lost before its reply.
    ///
    /// # Errors
    /// As [`cmd`](Self::cmd).
    pub async fn cmd_idempotent<RV: FromRedisValue>(&self, cmd: redis::Cmd) -> Result<RV, Error> {
        if let Some(refused) = crate::command::shared_refusal(&cmd) {
            return Err(self.refuse(&Request::raw(cmd), refused));
        }
        if let Some(block) = blocking_time(&cmd) {
            return self.raw_blocking(cmd, block, true).await;
        }
        self.run(Request::raw(cmd), true).await
    }

    /// Runs a [`redis::Pipeline`] in one round trip; `redis::pipe().atomic()` wraps it in
    /// `MULTI`/`EXEC`. Treated as non-idempotent. No key prefix is applied. Each command is
    /// checked as [`cmd`](Self::cmd) checks one: none may change the connection's state (a
    /// `MULTI` of your own among them included: use `.atomic()`).
    ///
    /// ```no_run
    /// # async fn run(redis: redis_supervisor::RedisHandle) -> Result<(), redis_supervisor::Error> {
    /// let (n, v): (i64, String) = redis
    ///     .pipeline(redis::pipe().atomic().incr("hits", 1).get("name").clone())
    ///     .await?;
    /// # let _ = (n, v); Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty pipeline or one holding a command that changes
    /// the connection's state; [`Error::Server`] for the first failing command; otherwise see
    /// the [module docs](self).
    pub async fn pipeline<RV: FromRedisValue>(&self, pipe: redis::Pipeline) -> Result<RV, Error> {
        self.run_pipeline(pipe, false).await
    }

    /// Like [`pipeline`](Self::pipeline), for pipelines that are safe to run twice.
    ///
    /// # Errors
    /// As [`pipeline`](Self::pipeline).
    pub async fn pipeline_idempotent<RV: FromRedisValue>(
        &self,
        pipe: redis::Pipeline,
    ) -> Result<RV, Error> {
        self.run_pipeline(pipe, true).await
    }

    async fn run_pipeline<RV: FromRedisValue>(
        &self,
        pipe: redis::Pipeline,
        replay_safe: bool,
    ) -> Result<RV, Error> {
        if let Some(refused) = crate::command::pipeline_refusal(&pipe) {
            return Err(self.refuse(&Request::pipeline(pipe), refused));
        }
        self.run(Request::pipeline(pipe), replay_safe).await
    }

    /// A command refused before it was sent (a caller's mistake): counted, and answered `error`.
    fn refuse(&self, request: &Request, error: Error) -> Error {
        let label = request.label();
        self.core
            .metrics
            .command(label, Outcome::Error, Duration::ZERO);
        error
    }

    /// The nodes a walk of the keyspace (`SCAN`) must visit: `[None]` (the one server) unless
    /// on a cluster, where it is every primary (from `CLUSTER SLOTS`), each walked alone.
    pub(crate) async fn scan_targets(&self) -> Result<Vec<Option<NodeAddr>>, Error> {
        if !self.core.topology.slotted() {
            return Ok(vec![None]);
        }
        let mut slots = redis::cmd("CLUSTER");
        slots.arg("SLOTS");
        let reply: Value = self.run(Request::raw(slots), true).await?;
        let (shards, _) = crate::topology::cluster::shards(&reply);
        Ok(shards.into_iter().map(|s| Some(s.primary)).collect())
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
            .metrics
            .command(request.label(), Outcome::of(&result), start.elapsed());
        result
    }

    /// Delivers `request` by the deadline, following the delivery semantics.
    async fn deliver(
        &self,
        request: &Request,
        replay_safe: bool,
        start: Instant,
    ) -> Result<Value, Error> {
        let _entry = self.core.gate.enter().ok_or(Error::ShuttingDown)?;
        let deadline = deadline_after(start, self.timeout);
        // Why an earlier attempt may have run (its connection was lost with it in flight).
        let mut lost: Option<String> = None;
        let mut refusal: Option<NotReady> = None;
        let bulk = self.core.bulk.as_ref();
        let slot = bulk.and_then(|_| BigReplies::slot(request));
        let big = matches!((bulk, slot), (Some(b), Some(s)) if b.is_big(s));
        let mut need = Need {
            bulk: big,
            ..Need::default()
        };
        // Time left at this attempt: the whole timeout at the first one, unless it waits.
        let mut remaining = self.timeout;
        loop {
            need.refusal = refusal.as_ref();
            // The fast path inline (an `async fn` here would nest a future in every command's);
            // the wait boxed, so that every command's future stays small.
            let found = match self.live_lane(need) {
                Ok(Some(found)) => Ok((found, false)),
                Ok(None) => Box::pin(self.wait_for_lane(deadline, need))
                    .await
                    .map(|found| (found, true)),
                Err(e) => Err(e),
            };
            let ((mut lane, version), waited) = match found {
                Ok(found) => found,
                Err(e) => return Err(self.not_resent(request, e, lost, deadline)),
            };
            if waited || lost.is_some() || refusal.is_some() {
                remaining = deadline.saturating_duration_since(Instant::now());
            }
            if self.timeout.is_zero() || (waited && remaining.is_zero()) {
                return Err(self.timeout_error(request, lost.is_some()));
            }
            let outcome = {
                // Pinned here, where it is made: it is most of a command's future.
                let run = lane.run(request, big, replay_safe && lost.is_none(), deadline);
                deadline::within(remaining, deadline, std::pin::pin!(run)).await
            };
            let lane_id = lane.id();
            match outcome {
                Some(Ok(value)) => {
                    if let (Some(b), Some(s)) = (bulk, slot) {
                        b.record(s, &value);
                    }
                    return Ok(value);
                }
                Some(Err(ExecError::Reply(e))) => return Err(from_reply_error(e)),
                // It did not run: wait for the server to be ready, then send it again.
                Some(Err(ExecError::Refused(not_ready))) => {
                    need = Need {
                        avoid: None,
                        after: Some(version),
                        refusal: None,
                        bulk: big,
                    };
                    refusal = Some(not_ready);
                }
                Some(Err(ExecError::Transport(reason))) => {
                    // A cluster lane already sent a replay-safe command again itself (one
                    // node's lost connection does not replace the cluster connection).
                    if !replay_safe || lost.is_some() || lane.is_cluster() {
                        return Err(Error::Ambiguous {
                            command: request.name(),
                            reason,
                        });
                    }
                    lost = Some(reason);
                    need = Need {
                        avoid: Some(lane_id),
                        after: None,
                        refusal: None,
                        bulk: big,
                    };
                }
                // Handed over, no reply in time: it may have run.
                None if replay_safe => return Err(self.timeout_error(request, true)),
                None => {
                    return Err(Error::Ambiguous {
                        command: request.name(),
                        reason: format!("no reply within {} ms", self.timeout.as_millis()),
                    });
                }
            }
        }
    }

    fn timeout_error(&self, request: &Request, sent: bool) -> Error {
        Error::Timeout {
            command: request.name(),
            after: self.timeout,
            sent,
        }
    }

    /// The answer for a command that found no connection to be (re)sent on: `error` as is, or,
    /// when an earlier attempt may have run, a timeout (out of time) or `Ambiguous`.
    fn not_resent(
        &self,
        request: &Request,
        error: Error,
        lost: Option<String>,
        deadline: Instant,
    ) -> Error {
        match lost {
            None => error,
            Some(_) if Instant::now() >= deadline => self.timeout_error(request, true),
            Some(reason) => Error::Ambiguous {
                command: request.name(),
                reason: format!("{reason}; not sent again: {error}"),
            },
        }
    }

    /// A lane that satisfies `need` right now — a lock-free read of the route and a lease on the
    /// lane (this thread's spare clone of its connection) — with the route version it was
    /// published in; `None` when the command must wait for one
    /// ([`wait_for_lane`](Self::wait_for_lane)), or the error when waiting cannot help (the
    /// route is closed or stopped).
    fn live_lane(&self, need: Need<'_>) -> Result<Option<(Lease, u64)>, Error> {
        let published = self.core.route.load();
        if let Some(live) = need.lane_in(&published.state, published.version) {
            return Ok(Some((live.lease(), published.version)));
        }
        match published.state {
            RouteState::Closed { .. } | RouteState::Stopped => {
                Err(unavailable(&published.state, need.refusal))
            }
            _ => Ok(None),
        }
    }

    /// A lane that satisfies `need`, waiting for one per the offline policy until `deadline`;
    /// with the route version it was published in.
    async fn lane(&self, deadline: Instant, need: Need<'_>) -> Result<(Lease, u64), Error> {
        match self.live_lane(need)? {
            Some(found) => Ok(found),
            None => Box::pin(self.wait_for_lane(deadline, need)).await,
        }
    }

    /// Waits (per the offline policy) until `deadline` for a lane that satisfies `need`.
    async fn wait_for_lane(
        &self,
        deadline: Instant,
        need: Need<'_>,
    ) -> Result<(Lease, u64), Error> {
        let core = &*self.core;
        let route = &core.route;
        if self.offline == OfflinePolicy::FailFast {
            return Err(unavailable(&route.load().state, need.refusal));
        }
        let mut rx = route.subscribe();
        let _waiting = Waiting::enter(core).ok_or(Error::Overloaded {
            limit: core.config.max_waiting(),
        })?;
        loop {
            // Marked seen before reading: a publication after this wakes `changed`.
            rx.borrow_and_update();
            let unavailable = {
                let published = route.load();
                if let Some(lane) = need.lane_in(&published.state, published.version) {
                    return Ok((lane.lease(), published.version));
                }
                let error = unavailable(&published.state, need.refusal);
                if let RouteState::Closed { .. } | RouteState::Stopped = published.state {
                    return Err(error);
                }
                error
            };
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(Error::ShuttingDown),
                Err(_) => return Err(unavailable),
            }
        }
    }
}

/// The error for a command that cannot get a connection on `route`; `refusal` is the server's
/// "cannot serve yet" answer that sent the command back, if one did.
pub(crate) fn unavailable(route: &RouteState, refusal: Option<&NotReady>) -> Error {
    if let RouteState::Stopped = route {
        return Error::ShuttingDown;
    }
    let (since, reason, kind) = match (route.why(), refusal) {
        (Some((since, reason, kind)), _) => (since, reason.to_string(), kind),
        (None, Some(refusal)) => (SystemTime::now(), refusal.message.clone(), refusal.kind),
        (None, None) => (
            SystemTime::now(),
            "connection lost".to_string(),
            FailureKind::Closed,
        ),
    };
    Error::Unavailable {
        since,
        reason,
        kind,
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
