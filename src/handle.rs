//! [`RedisHandle`]: the public command API. Typed methods build a typed command (the request,
//! whether it is idempotent, its deadline) and write it into the queue of the live connection,
//! which the connection actor owns and publishes (its lane; see the `connection` module for why
//! there is no second hop); every call gets exactly one answer — a value or a typed [`Error`] —
//! by its deadline.
//!
//! # Delivery semantics
//!
//! | situation | what happens |
//! |---|---|
//! | connection up | sent at once; concurrent calls pipeline on one socket |
//! | connection down, policy `wait` | waits for the connection until the deadline, then [`Error::Unavailable`] |
//! | connection down, policy `fail-fast` | [`Error::Unavailable`] at once |
//! | connection lost before the command was written | sent on the next connection, within the deadline |
//! | connection lost after it may have been written | idempotent commands are retried once on the next connection within the deadline; others get [`Error::Ambiguous`] |
//! | written, no reply by the deadline | idempotent: [`Error::Timeout`] with `sent: true`; others: [`Error::Ambiguous`] |
//! | deadline passed before it could be written | [`Error::Timeout`] with `sent: false`; it is never sent later |
//! | shutting down | [`Error::ShuttingDown`] |
//!
//! Idempotent (safe to replay): `GET`, `MGET`, `EXISTS`, `TTL`/`PTTL`, `SET` without `NX`/`XX`,
//! `MSET`, `DEL`, `PEXPIRE`, `PING`. Not idempotent: `INCR`/`INCRBY`, `SET NX`/`XX` (a replay
//! could report "not set" for a write that happened), raw [`cmd`](RedisHandle::cmd) and
//! [`pipeline`](RedisHandle::pipeline) (use [`cmd_idempotent`](RedisHandle::cmd_idempotent)
//! / [`pipeline_idempotent`](RedisHandle::pipeline_idempotent) to mark them).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use ractor::ActorId;
use redis::{FromRedisValue, ToRedisArgs, Value};
use tokio::time::Instant;

use crate::OfflinePolicy;
use crate::connection::{ExecError, Lane, Request, Sender};
use crate::error::{Error, FailureKind, from_reply_error};
use crate::metrics::{CommandLabel, Outcome};
use crate::supervisor::{Route, Shared};

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
    shared: Arc<Shared>,
    timeout: Duration,
}

impl std::fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHandle")
            .field("client", &self.shared.config.name())
            .field("timeout", &self.timeout)
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

/// What the handle needs to know about a command besides its bytes.
#[derive(Debug, Clone, Copy)]
struct Spec {
    idempotent: bool,
    label: CommandLabel,
}

const fn idempotent(label: CommandLabel) -> Spec {
    Spec {
        idempotent: true,
        label,
    }
}

const fn not_idempotent(label: CommandLabel) -> Spec {
    Spec {
        idempotent: false,
        label,
    }
}

/// The metric label of a raw command, from its name.
fn raw_label(cmd: &redis::Cmd) -> CommandLabel {
    match cmd.args_iter().next() {
        Some(redis::Arg::Simple(name)) => CommandLabel::for_name(name),
        _ => CommandLabel::OTHER,
    }
}

fn pipeline_label(pipe: &redis::Pipeline) -> CommandLabel {
    if pipe.is_transaction() {
        CommandLabel::MULTI
    } else {
        CommandLabel::PIPELINE
    }
}

/// Decrements the in-flight count when a call ends, however it ends.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1
            && self.0.shutting_down.load(Ordering::SeqCst)
        {
            self.0.idle.notify_waiters();
        }
    }
}

/// Counts a command waiting for the connection while it waits.
struct Waiting<'a>(&'a Shared);

impl<'a> Waiting<'a> {
    /// Counts one more waiting command, or `None` when the limit is reached.
    fn enter(shared: &'a Shared) -> Option<Self> {
        let before = shared.offline_waiting.fetch_add(1, Ordering::Relaxed);
        if before >= shared.config.max_waiting() {
            shared.offline_waiting.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        shared.metrics.offline_waiting.increment(1.0);
        Some(Waiting(shared))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.offline_waiting.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.offline_waiting.decrement(1.0);
    }
}

impl RedisHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let timeout = shared.config.command_timeout();
        Self { shared, timeout }
    }

    /// A copy of this handle whose commands use `timeout` as their deadline instead of the
    /// configured command timeout. Cheap; use it per call.
    pub fn with_timeout(&self, timeout: Duration) -> RedisHandle {
        Self {
            shared: self.shared.clone(),
            timeout,
        }
    }

    /// The deadline this handle gives each command.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The key with the configured prefix, written straight into the command (no allocation).
    fn key<K: AsRef<[u8]>>(&self, key: K) -> PrefixedKey<'_, K> {
        PrefixedKey {
            prefix: self.shared.config.key_prefix().as_bytes(),
            key,
        }
    }

    fn cmd_with_keys<K: AsRef<[u8]>>(
        &self,
        name: &'static str,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<redis::Cmd, Error> {
        let mut cmd = redis::cmd(name);
        let mut n = 0;
        for k in keys {
            cmd.arg(self.key(k));
            n += 1;
        }
        if n == 0 {
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
        self.query(cmd, idempotent(CommandLabel::GET)).await
    }

    /// `SET key value`.
    ///
    /// # Errors
    /// See the [module docs](self).
    pub async fn set<K: AsRef<[u8]>, V: ToRedisArgs>(&self, key: K, value: V) -> Result<(), Error> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(value);
        self.query::<Value>(cmd, idempotent(CommandLabel::SET))
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
            None => idempotent(CommandLabel::SET),
            Some(SetCondition::Nx) => {
                cmd.arg("NX");
                not_idempotent(CommandLabel::SET)
            }
            Some(SetCondition::Xx) => {
                cmd.arg("XX");
                not_idempotent(CommandLabel::SET)
            }
        };
        let v: Value = self.query(cmd, spec).await?;
        Ok(!matches!(v, Value::Nil))
    }

    /// `DEL key [key …]`: returns how many keys were removed. Pass one key as `["k"]`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty key list; otherwise see the [module docs](self).
    pub async fn del<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<u64, Error> {
        let cmd = self.cmd_with_keys("DEL", keys)?;
        self.query(cmd, idempotent(CommandLabel::DEL)).await
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
        self.query(cmd, idempotent(CommandLabel::EXISTS)).await
    }

    /// `PEXPIRE key ttl`: returns whether the key exists (and now expires).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `ttl` is under 1 ms; otherwise see the [module docs](self).
    pub async fn expire<K: AsRef<[u8]>>(&self, key: K, ttl: Duration) -> Result<bool, Error> {
        let mut cmd = redis::cmd("PEXPIRE");
        cmd.arg(self.key(key)).arg(ttl_ms("ttl", ttl)?);
        self.query(cmd, idempotent(CommandLabel::EXPIRE)).await
    }

    /// `PTTL key`.
    ///
    /// # Errors
    /// See the [module docs](self).
    pub async fn ttl<K: AsRef<[u8]>>(&self, key: K) -> Result<KeyTtl, Error> {
        let mut cmd = redis::cmd("PTTL");
        cmd.arg(self.key(key));
        let ms: i64 = self.query(cmd, idempotent(CommandLabel::TTL)).await?;
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
        self.query(cmd, not_idempotent(CommandLabel::INCR)).await
    }

    /// `INCRBY key delta`. Not idempotent.
    ///
    /// # Errors
    /// As [`incr`](Self::incr).
    pub async fn incr_by<K: AsRef<[u8]>>(&self, key: K, delta: i64) -> Result<i64, Error> {
        let mut cmd = redis::cmd("INCRBY");
        cmd.arg(self.key(key)).arg(delta);
        self.query(cmd, not_idempotent(CommandLabel::INCRBY)).await
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
        self.query(cmd, idempotent(CommandLabel::MGET)).await
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
        self.query::<Value>(cmd, idempotent(CommandLabel::MSET))
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
            .query(redis::cmd("PING"), idempotent(CommandLabel::PING))
            .await?;
        Ok(start.elapsed())
    }

    /// Any command, as a [`redis::Cmd`]. Keys are sent as given (no key prefix). Treated as
    /// non-idempotent: never replayed after an ambiguous failure.
    ///
    /// # Errors
    /// See the [module docs](self).
    pub async fn cmd<RV: FromRedisValue>(&self, cmd: redis::Cmd) -> Result<RV, Error> {
        let label = raw_label(&cmd);
        self.query(cmd, not_idempotent(label)).await
    }

    /// Like [`cmd`](Self::cmd), for a command you know is safe to run twice: it is retried once
    /// on a new connection if the connection is lost before its reply.
    ///
    /// # Errors
    /// See the [module docs](self).
    pub async fn cmd_idempotent<RV: FromRedisValue>(&self, cmd: redis::Cmd) -> Result<RV, Error> {
        let label = raw_label(&cmd);
        self.query(cmd, idempotent(label)).await
    }

    /// Runs a [`redis::Pipeline`] in one round trip; `redis::pipe().atomic()` wraps it in
    /// `MULTI`/`EXEC`. Treated as non-idempotent. No key prefix is applied.
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
    /// See the [module docs](self); [`Error::Server`] for the first failing command.
    pub async fn pipeline<RV: FromRedisValue>(&self, pipe: redis::Pipeline) -> Result<RV, Error> {
        let spec = not_idempotent(pipeline_label(&pipe));
        self.run(Request::Pipeline(pipe), spec).await
    }

    /// Like [`pipeline`](Self::pipeline), for pipelines that are safe to run twice.
    ///
    /// # Errors
    /// See the [module docs](self).
    pub async fn pipeline_idempotent<RV: FromRedisValue>(
        &self,
        pipe: redis::Pipeline,
    ) -> Result<RV, Error> {
        let spec = idempotent(pipeline_label(&pipe));
        self.run(Request::Pipeline(pipe), spec).await
    }

    async fn query<RV: FromRedisValue>(&self, cmd: redis::Cmd, spec: Spec) -> Result<RV, Error> {
        self.run(Request::Cmd(cmd), spec).await
    }

    /// The one path every command takes: exactly one answer by the deadline, converted to the
    /// caller's type, counted once (error replies inside the value count as errors).
    async fn run<RV: FromRedisValue>(&self, request: Request, spec: Spec) -> Result<RV, Error> {
        let start = Instant::now();
        let result = self.run_inner(request, spec, start).await.and_then(convert);
        self.shared
            .metrics
            .command(spec.label, Outcome::of(&result), start.elapsed());
        result
    }

    async fn run_inner(
        &self,
        request: Request,
        spec: Spec,
        start: Instant,
    ) -> Result<Value, Error> {
        let shared = &*self.shared;
        if shared.shutting_down.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        let deadline = start + self.timeout;
        let _in_flight = InFlight::enter(shared);
        let mut retried = false;
        // A connection known to be gone: wait for a different one.
        let mut avoid: Option<ActorId> = None;
        loop {
            if avoid.is_some() && Instant::now() >= deadline {
                // Out of time for another connection (a retry of an idempotent command that
                // was in flight, or one the old connection never wrote).
                return Err(Error::Timeout {
                    command: request.name(),
                    after: self.timeout,
                    sent: retried,
                });
            }
            let (lane, mut sender) = self.sender(deadline, avoid).await?;
            match tokio::time::timeout_at(deadline, sender.run(&request)).await {
                // Sent, no reply by the deadline: it may have run. Only a command that is safe
                // to run twice is a plain timeout.
                Err(_) => {
                    self.missed_deadline(lane);
                    return Err(if spec.idempotent {
                        Error::Timeout {
                            command: request.name(),
                            after: self.timeout,
                            sent: true,
                        }
                    } else {
                        Error::Ambiguous {
                            command: request.name(),
                            reason: format!("no reply within {} ms", self.timeout.as_millis()),
                        }
                    });
                }
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(ExecError::Reply(e))) => return Err(from_reply_error(e)),
                // The connection died with the command in flight: it may have run.
                Ok(Err(ExecError::Transport(reason))) => {
                    if shared.shutting_down.load(Ordering::SeqCst) {
                        return Err(Error::ShuttingDown);
                    }
                    if !spec.idempotent || retried {
                        return Err(Error::Ambiguous {
                            command: request.name(),
                            reason,
                        });
                    }
                    retried = true;
                    avoid = Some(lane);
                }
            }
        }
    }

    /// A sender on the live connection (other than `avoid`), waiting for one per the offline
    /// policy until `deadline`. Returns the connection's id with it.
    async fn sender(
        &self,
        deadline: Instant,
        avoid: Option<ActorId>,
    ) -> Result<(ActorId, Sender), Error> {
        // Fast path: one read lock and a cheap clone of the connection.
        {
            let route = self.shared.route.borrow();
            match &*route {
                Route::Up(lane) if Some(lane.id()) != avoid && lane.is_open() => {
                    return Ok((lane.id(), lane.sender()));
                }
                Route::Stopped | Route::GaveUp { .. } => return Err(unavailable(&route)),
                _ => {}
            }
        }
        // Slow path, boxed so that every command's future stays small.
        let lane = Box::pin(self.wait_for_lane(deadline, avoid)).await?;
        Ok((lane.id(), lane.sender()))
    }

    /// A command on connection `id` missed its deadline: count it against that connection.
    fn missed_deadline(&self, id: ActorId) {
        if let Route::Up(lane) = &*self.shared.route.borrow()
            && lane.id() == id
        {
            lane.missed_deadline();
        }
    }

    /// A live connection other than `avoid`, waiting for one (per the offline policy) until
    /// `deadline`.
    async fn wait_for_lane(
        &self,
        deadline: Instant,
        avoid: Option<ActorId>,
    ) -> Result<Lane, Error> {
        let shared = &*self.shared;
        if shared.config.offline_policy() == OfflinePolicy::FailFast {
            return Err(unavailable(&shared.route.borrow()));
        }
        let mut rx = shared.route.subscribe();
        let _waiting = Waiting::enter(shared).ok_or(Error::Overloaded {
            limit: shared.config.max_waiting(),
        })?;
        loop {
            let unavailable = {
                let route = rx.borrow_and_update();
                match &*route {
                    Route::Up(lane) if Some(lane.id()) != avoid && lane.is_open() => {
                        return Ok(lane.clone());
                    }
                    Route::Stopped | Route::GaveUp { .. } => return Err(unavailable(&route)),
                    _ => unavailable(&route),
                }
            };
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(Error::ShuttingDown),
                Err(_) => return Err(unavailable),
            }
        }
    }
}

/// The error for a command that cannot get a connection on `route`.
pub(crate) fn unavailable(route: &Route) -> Error {
    match route {
        Route::Down {
            since,
            reason,
            kind,
        }
        | Route::GaveUp {
            since,
            reason,
            kind,
        } => Error::Unavailable {
            since: *since,
            reason: reason.to_string(),
            kind: *kind,
        },
        Route::Stopped => Error::ShuttingDown,
        Route::Up(_) => Error::Unavailable {
            since: SystemTime::now(),
            reason: "connection lost".to_string(),
            kind: FailureKind::Closed,
        },
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
