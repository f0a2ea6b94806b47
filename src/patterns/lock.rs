//! Distributed locks over a [`RedisHandle`]: `SET NX PX` with a random value, compare-and-act
//! scripts for `extend` and `release` (a guard never touches another holder's lock), and a
//! fencing token from the acquire script itself.
//!
//! ```no_run
//! use std::time::Duration;
//! use redis_supervisor::lock::{LockGuard, LockManager};
//!
//! # async fn run(supervisor: redis_supervisor::Supervisor) -> Result<(), redis_supervisor::Error> {
//! let locks = LockManager::new(supervisor.handle());     // namespace "lock"
//! // ttl 10 s; wait up to 2 s for another holder to let go (else Error::LockBusy)
//! let guard = locks.acquire("invoice:42", Duration::from_secs(10), Duration::from_secs(2)).await?;
//! let fence: u64 = guard.token();  // pass it to the storage you write to (see "Fencing")
//! guard.extend(Duration::from_secs(10)).await?;          // Err(Error::LockLost { .. }) if lost
//! guard.release().await?;                                // compare-and-delete
//! if let Some(guard) = locks.try_acquire("invoice:42", Duration::from_secs(10)).await? {
//!     drop(guard); // released in the background
//! }
//! # let _ = fence; Ok(()) }
//! ```
//!
//! # How it works
//!
//! A lock `k` is the key `<REDIS_KEY_PREFIX><namespace>:k` holding a value of 128 random bits
//! (from the OS CSPRNG) that only its guard knows, with the TTL as `PX`. The acquire script runs
//! `SET key value NX PX ttl` and, only when that succeeds, `INCR` of the lock's counter
//! `<REDIS_KEY_PREFIX><namespace>.fence:k`: the fencing token, in the same atomic step (on a
//! Redis Cluster both are written with `{k}`, a hash tag, so they share a slot). `ROLE` rides in
//! the same round trip: when the master has replicas, the token is handed out only once every
//! one of them has it (a replicated write after it on a leased connection, then `WAIT`; see
//! "Across a failover"). `extend` runs "`PEXPIRE` if the value is still mine", `release` "`DEL`
//! if the value is still mine"; both answer [`Error::LockLost`] when it is not (the TTL passed,
//! perhaps another holds it now). Each script is run by its SHA (`EVALSHA`) and sent once more
//! with its body when the server does not have it (`NOSCRIPT`: after a restart or
//! `SCRIPT FLUSH`; it did not run).
//!
//! [`acquire`](LockManager::acquire) retries with jittered, growing pauses (2 ms up to 50 ms,
//! never past the holder's remaining TTL) until `wait` has passed, then answers
//! [`Error::LockBusy`]; each try takes at most the handle's deadline, so the call ends within
//! `wait` plus one deadline. Locks are not fair (no queue); `wait` of `Duration::MAX` saturates
//! (waits as long as it takes).
//!
//! # Dropping a guard
//!
//! A guard dropped without [`release`](LockGuard::release) (an early return, a panic, a cancelled
//! task) releases its lock in the background: `Drop` spawns the compare-and-delete on the current
//! tokio runtime and returns at once, never blocking. Outside a runtime (or while it shuts down)
//! nothing is spawned and the lock expires at its TTL. A dropped guard gets no word of the
//! outcome; call `release` to know.
//!
//! # Delivery and degradation
//!
//! The scripts write, so they are never replayed ([`RedisHandle::cmd`]). A lock is never
//! pretended: when Redis cannot answer, every call returns the handle's error
//! ([`Error::Unavailable`] within the deadline, …); there is no degraded mode. What an
//! ambiguous answer ([`Error::Ambiguous`], or a timeout after sending) means per call:
//! - `acquire` / `try_acquire`: the `SET` may have happened. The manager then runs the
//!   compare-and-delete with the value it tried (a lock it may have taken is freed at once, never
//!   another's) and returns the error: you do not hold the lock. A token may have been used up
//!   (tokens increase, with gaps).
//! - `extend`: the TTL may or may not have been extended; the lock is yours at least until the
//!   old TTL ends. Extend again or stop.
//! - `release`: the lock is either freed or frees itself at its TTL; no other holder's lock was
//!   touched.
//!
//! # Across a failover: what holds, and what does not
//!
//! - **Fencing tokens never repeat and never go backwards**, across a Sentinel failover
//!   (planned or not) and a Redis Cluster failover. A token is handed out only once every
//!   replica of the master has it: as many as the master reports connected (`ROLE`) or as the
//!   topology knows a failover could promote (the sentinels' replicas that are up, whatever
//!   their link's last reported state; the cluster's slot map), whichever is more. A failover
//!   promotes one of those replicas, so the counter there is at least every token handed out,
//!   and the next holder's token is higher. A token the replicas do not confirm in time (a
//!   replica resynchronising, or one whose link is down) is never handed out: the lock is released
//!   and [`acquire`](LockManager::acquire) tries again within its `wait`
//!   ([`try_acquire`](LockManager::try_acquire) answers [`Error::NotReplicated`]). After a
//!   planned failover (`SENTINEL FAILOVER`) the demoted master is alive and could be promoted
//!   by a second failover, but replicates nothing until the sentinels make it a replica (about
//!   2 s with Redis 7): meanwhile each token is written to it directly (its counter raised to
//!   the token) before it is handed out. A master that crashed counts for nothing: the
//!   sentinels promote only a node they are connected to. What it costs:
//!   with replicas, an acquire takes a leased connection
//!   ([`Config::leased_connections`](crate::Config::leased_connections)) for one more round trip
//!   and the replicas' acknowledgement.
//! - **The lock itself can still be held twice** across a failover: a release or an expiry on the
//!   old master that the new one never saw, a holder that learns late that the master changed.
//!   Redis replicates asynchronously; this is the single-Redis lock of the Redis documentation, not
//!   Redlock. That is what fencing is for.
//! - The crate stops writing to an old master within milliseconds of the sentinels promoting
//!   another (it follows the promotion, not the announcement), so the window in which the old
//!   master grants locks that the failover then discards is the promotion's own.
//! - A server restart without persistence loses every lock, and every counter: the tokens start
//!   again at 1.
//!
//! # Limits (read before relying on it)
//!
//! - **Time.** A holder paused (GC, swap, a stalled VM) past its TTL loses the lock without
//!   noticing until its next `extend` or `release`. Keep the TTL well above the work, or extend
//!   it while working.
//! - **Fencing** is what protects against that and a failover alike: pass [`LockGuard::token`]
//!   with every write to the protected resource and have the resource refuse a token lower than
//!   the highest it has seen. Tokens strictly increase per lock name as long as its counter key
//!   lives (it has no TTL; one small key per lock name ever used; deleting it restarts the
//!   tokens at 1, which defeats fencing). Fencing does not help a resource that cannot check
//!   tokens.
//!
//! # Metrics
//!
//! Each at 0 from the start: `redis_client_lock_acquires_total{result}` (`acquired`, `busy`,
//! `error`) and `redis_client_lock_lost_total` (extends and releases that found the lock no
//! longer held: [`Error::LockLost`]). The Grafana dashboard's "Patterns" row shows them.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::time::Instant;

use redis::Value;

use super::keys::{Namespace, check_id, random_token, ttl_ms};
use super::script::Lua;
use crate::config::NodeAddr;
use crate::error::Error;
use crate::handle::RedisHandle;
use crate::metrics::Acquire;

/// The namespace of [`LockManager::new`].
pub const DEFAULT_NAMESPACE: &str = "lock";

/// KEYS: lock, counter. ARGV: value, ttl ms. `{1, token}` when set, else `{0, pttl of holder}`.
const ACQUIRE_LUA: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, redis.call('INCR', KEYS[2])}
end
return {0, redis.call('PTTL', KEYS[1])}
"#;

/// KEYS: lock. ARGV: value. 1 if deleted, 0 if not ours.
const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// KEYS: lock. ARGV: value, ttl ms. 1 if extended, 0 if not ours.
const EXTEND_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

static ACQUIRE: LazyLock<Lua> = LazyLock::new(|| Lua::new(ACQUIRE_LUA));
static RELEASE: LazyLock<Lua> = LazyLock::new(|| Lua::new(RELEASE_LUA));
static EXTEND: LazyLock<Lua> = LazyLock::new(|| Lua::new(EXTEND_LUA));

/// The number of replicas in a `ROLE` reply of a master (`["master", offset, [[ip, port,
/// offset], …]]`); `None` for anything else (a refusal, a replica's reply).
fn replicas_of_role(role: Value) -> Option<u32> {
    let Value::Array(fields) = role else {
        return None;
    };
    let mut fields = fields.into_iter();
    let is_master = match fields.next()? {
        Value::BulkString(b) => b == b"master",
        Value::SimpleString(s) => s == "master",
        _ => false,
    };
    match (is_master, fields.nth(1)?) {
        (true, Value::Array(replicas)) => u32::try_from(replicas.len()).ok(),
        _ => None,
    }
}

/// Raises a counter to at least a value: `KEYS = [counter]`, `ARGV = [value]` (on a master
/// demoted by a planned failover; see `Inner::raise_on`).
const RAISE_LUA: &str = "local c = tonumber(redis.call('GET', KEYS[1]) or '0') \
    if c < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end \
    return 1";

/// The Lua sources of the acquire, release and extend scripts (to run them yourself, e.g. in a
/// benchmark). Acquire: `KEYS = [lock, counter]`, `ARGV = [value, ttl_ms]`; release:
/// `KEYS = [lock]`, `ARGV = [value]`; extend: `KEYS = [lock]`, `ARGV = [value, ttl_ms]`.
pub fn script_sources() -> [&'static str; 3] {
    [ACQUIRE_LUA, RELEASE_LUA, EXTEND_LUA]
}

/// The longest a token waits for the replicas to confirm it (`WAIT`), per try: a replica
/// resynchronising after a failover confirms nothing for a while, and `acquire` tries again
/// (within its `wait`) rather than spending its whole deadline on one try.
const CONFIRM_WAIT: Duration = Duration::from_millis(200);

/// The first pause between tries of [`LockManager::acquire`].
const FIRST_PAUSE: Duration = Duration::from_millis(2);
/// The longest pause between tries.
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// Hands out locks under one namespace (see the [module docs](self)). Cheap to clone.
#[derive(Clone)]
pub struct LockManager {
    inner: Arc<Inner>,
}

struct Inner {
    handle: RedisHandle,
    locks: Namespace,
    fences: Namespace,
}

impl std::fmt::Debug for LockManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockManager")
            .field("namespace", &self.inner.locks)
            .finish()
    }
}

impl LockManager {
    /// A manager over `handle` (its deadline bounds every command) in the namespace
    /// [`DEFAULT_NAMESPACE`].
    pub fn new(handle: RedisHandle) -> LockManager {
        // Cannot fail: the default namespace is short, non-empty and has no control characters.
        Self::with_namespace(handle, DEFAULT_NAMESPACE).expect("the default namespace is valid")
    }

    /// A manager in `namespace`: locks are `<REDIS_KEY_PREFIX><namespace>:<key>`, their fencing
    /// counters `<REDIS_KEY_PREFIX><namespace>.fence:<key>` (so the namespace
    /// `<namespace>.fence` is taken too).
    ///
    /// # Errors
    /// [`Error::Config`] naming `lock.namespace`: empty, over 250 bytes, control characters.
    pub fn with_namespace(handle: RedisHandle, namespace: &str) -> Result<LockManager, Error> {
        let locks = Namespace::new(&handle, "lock.namespace", namespace)?;
        let fences = Namespace::new(&handle, "lock.namespace", &format!("{namespace}.fence"))?;
        Ok(LockManager {
            inner: Arc::new(Inner {
                handle,
                locks,
                fences,
            }),
        })
    }

    /// The Redis key of lock `key` (with the key prefix and namespace; on a Redis Cluster,
    /// `key` in a hash tag, `lock:{key}`, so the lock and its fencing counter share a slot).
    pub fn redis_key(&self, key: &str) -> String {
        self.inner.locks.full(&self.inner.tagged(key))
    }

    /// Takes the lock `key` for `ttl`, waiting up to `wait` while another holds it — or while
    /// the master's replicas cannot confirm the new token (a replica resynchronising after a
    /// failover, or one whose link is down): such a token is never handed out, and the lock is
    /// tried again.
    ///
    /// # Errors
    /// [`Error::LockBusy`] when `wait` passed with the lock held by another;
    /// [`Error::NotReplicated`] when it passed with every token taken unconfirmed;
    /// [`Error::InvalidArgument`] for a `ttl` under 1 ms (longer than 100 years saturates) or
    /// a key over 64 KiB; the handle's error when Redis cannot answer (see the
    /// [module docs](self#delivery-and-degradation) for an ambiguous one: you do not hold the
    /// lock).
    pub async fn acquire(
        &self,
        key: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<LockGuard, Error> {
        let start = Instant::now();
        let deadline = start.checked_add(wait);
        let mut pause = FIRST_PAUSE;
        loop {
            let (holder_ttl, unconfirmed) = match self.inner.attempt(key, ttl).await {
                Ok(Attempt::Acquired(guard)) => return Ok(guard),
                Ok(Attempt::Held(holder_ttl)) => (holder_ttl, None),
                // Taken, but not confirmed by the replicas: released, and tried again.
                Err(e @ Error::NotReplicated { .. }) => (Duration::MAX, Some(e)),
                Err(e) => return Err(e),
            };
            let now = Instant::now();
            let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(now));
            if let Some(e) = unconfirmed.filter(|_| left.is_zero()) {
                return Err(e);
            }
            if left.is_zero() {
                self.inner.count(Acquire::Busy);
                return Err(Error::LockBusy {
                    key: self.redis_key(key),
                    waited: start.elapsed(),
                });
            }
            let jittered = pause.mul_f64(0.5 + fastrand::f64());
            tokio::time::sleep(jittered.min(holder_ttl).min(left)).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// Takes the lock `key` for `ttl` if nobody holds it: `None` if someone does.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire), without `LockBusy`.
    pub async fn try_acquire(&self, key: &str, ttl: Duration) -> Result<Option<LockGuard>, Error> {
        match self.inner.attempt(key, ttl).await? {
            Attempt::Acquired(guard) => Ok(Some(guard)),
            Attempt::Held(_) => {
                self.inner.count(Acquire::Busy);
                Ok(None)
            }
        }
    }
}

/// One try's answer.
enum Attempt {
    Acquired(LockGuard),
    /// Held by another, with this much of its TTL left (`ZERO` if unknown).
    Held(Duration),
}

impl Inner {
    fn count(&self, result: Acquire) {
        self.handle.pattern_metrics().lock_acquire(result);
    }

    /// `key` as it is written in both keys of a lock: in a hash tag on a Redis Cluster (the
    /// acquire script touches the lock and its counter, which must share a slot), else as is.
    fn tagged<'k>(&self, key: &'k str) -> std::borrow::Cow<'k, str> {
        if !self.handle.topology().slotted() {
            std::borrow::Cow::Borrowed(key)
        } else {
            std::borrow::Cow::Owned(format!("{{{key}}}"))
        }
    }

    /// One run of the acquire script; an ambiguous one is cleaned up before its error returns.
    async fn attempt(self: &Arc<Self>, key: &str, ttl: Duration) -> Result<Attempt, Error> {
        let checked = check_id("lock key", key, true)
            .and_then(|()| ttl_ms("lock ttl", ttl, false))
            .and_then(|ms| Ok((ms, random_token()?)));
        let (ttl_ms, value) = match checked {
            Ok(v) => v,
            Err(e) => {
                self.count(Acquire::Error);
                return Err(e);
            }
        };
        let tagged = self.tagged(key);
        let lock = self.locks.full(&tagged);
        let fence = self.fences.full(&tagged);
        let reply = self.acquire_script(&lock, &fence, &value, ttl_ms).await;
        // Whether the lock may be ours even though the call fails: free it then.
        let (error, taken) = match reply {
            Ok(((1, token), replicas)) => match self.confirm(&fence, token, replicas).await {
                Ok(()) => {
                    self.count(Acquire::Acquired);
                    return Ok(Attempt::Acquired(LockGuard {
                        manager: Arc::clone(self),
                        key: lock,
                        value,
                        token: u64::try_from(token).unwrap_or(0),
                        released: false,
                    }));
                }
                // Taken, but its token not confirmed on the replicas: never handed out.
                Err(e) => (e, true),
            },
            Ok(((_, pttl), _)) => {
                return Ok(Attempt::Held(Duration::from_millis(
                    u64::try_from(pttl).unwrap_or(0),
                )));
            }
            // The SET may have happened with our value.
            Err(e) => {
                let taken = e.is_ambiguous();
                (e, taken)
            }
        };
        self.count(Acquire::Error);
        if taken && let Err(clean) = self.release(&lock, &value).await {
            tracing::debug!(error = %clean, "lock: cleanup after a failed acquire failed; the lock expires at its TTL");
        }
        Err(error)
    }

    /// The acquire script, with `ROLE` in the same round trip on the same node: its answer
    /// (`(1, token)` or `(0, holder's pttl)`), and how many replicas the master has (`None`
    /// when it would not say: `ROLE` refused by an ACL).
    async fn acquire_script(
        &self,
        lock: &str,
        fence: &str,
        value: &str,
        ttl_ms: u64,
    ) -> Result<((i64, i64), Option<u32>), Error> {
        let pipe = |name: &str, script: &str| {
            let mut pipe = redis::pipe();
            pipe.cmd(name)
                .arg(script)
                .arg(2)
                .arg(lock)
                .arg(fence)
                .arg(value)
                .arg(ttl_ms)
                .cmd("ROLE");
            pipe
        };
        let mut replies = self
            .handle
            .pipeline_values(pipe("EVALSHA", ACQUIRE.hash()))
            .await?;
        if let Value::Array(r) = &replies
            && matches!(r.first(), Some(Value::ServerError(e)) if e.code() == "NOSCRIPT")
        {
            // Not loaded (a restart, `SCRIPT FLUSH`): it did not run; with its body.
            replies = self
                .handle
                .pipeline_values(pipe("EVAL", ACQUIRE.source()))
                .await?;
        }
        let Value::Array(mut replies) = replies else {
            return Err(Error::ReplyType(format!(
                "lock acquire answered {replies:?}, not two replies"
            )));
        };
        let role = replies.pop();
        let script = replies.pop().unwrap_or(Value::Nil);
        let answer = script
            .extract_error()
            .map_err(crate::error::from_reply_error)
            .and_then(|v| {
                redis::from_redis_value::<(i64, i64)>(v)
                    .map_err(|e| Error::ReplyType(e.to_string()))
            })?;
        Ok((answer, role.and_then(replicas_of_role)))
    }

    /// Hands out a token only once the master's replicas have it: a write after the acquire on
    /// a leased connection to the same node (`INCRBY <fence> 0`, which replicates), then `WAIT`
    /// for every replica. They then hold the token too, so a failover that promotes one of them
    /// never hands it out again. Every replica: as many as the master says it has connected
    /// (`replicas`, from `ROLE`; `None` when it would not say), or as the topology knows a
    /// failover could promote (the sentinels, the cluster's slot map), whichever is more — a
    /// replica whose link just dropped, or that is resynchronising, is not connected, but may
    /// still be promoted. A promotable node that does not replicate yet (a master demoted by a
    /// planned failover, until the sentinels make it a replica) is given the token directly:
    /// its counter is raised to it ([`raise_on`](Self::raise_on)). Nothing to wait for without
    /// replicas.
    async fn confirm(&self, fence: &str, token: i64, replicas: Option<u32>) -> Result<(), Error> {
        let known = self.handle.known_replicas(fence.as_bytes());
        let mut replicas = replicas.unwrap_or(0).max(known);
        for node in self.handle.demoted_masters() {
            if !self.raise_on(&node, fence, token).await? {
                // A replica by now (`READONLY`): the `WAIT` covers it.
                replicas = replicas.saturating_add(1);
            }
        }
        if replicas == 0 {
            return Ok(());
        }
        let durable = self
            .handle
            .wait_replicas(replicas, self.handle.timeout().min(CONFIRM_WAIT));
        let mut mark = redis::cmd("INCRBY");
        mark.arg(fence).arg(0);
        durable.cmd::<i64>(mark).await.map(drop)
    }

    /// Raises the counter `fence` on `node` (a demoted master that does not replicate yet) to at
    /// least `token`, so that were it promoted, its next token would be higher: `true` once
    /// done, `false` when it answers `READONLY` (a replica now). Any other failure is
    /// [`Error::NotReplicated`]: the token is not handed out.
    async fn raise_on(&self, node: &NodeAddr, fence: &str, token: i64) -> Result<bool, Error> {
        let limit = self.handle.timeout().min(CONFIRM_WAIT);
        let raise = async {
            let client = self
                .handle
                .config()
                .redis_client_at(&node.host, node.port)?;
            let timeouts = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(limit))
                .set_response_timeout(Some(limit));
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&timeouts)
                .await?;
            redis::cmd("EVAL")
                .arg(RAISE_LUA)
                .arg(1)
                .arg(fence)
                .arg(token)
                .query_async::<i64>(&mut conn)
                .await
        };
        let failed = |reason: String| Error::NotReplicated {
            command: "lock acquire".into(),
            acknowledged: 0,
            required: 1,
            reason: format!("the demoted master {node} did not take the token: {reason}"),
        };
        match tokio::time::timeout(limit, raise).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) if e.code() == Some("READONLY") => Ok(false),
            Ok(Err(e)) => Err(failed(crate::error::describe_connection_error(&e).message)),
            Err(_) => Err(failed(format!("no answer within {} ms", limit.as_millis()))),
        }
    }

    /// The compare-and-delete: whether the lock was ours (and is now gone).
    async fn release(&self, lock: &str, value: &str) -> Result<bool, Error> {
        let n: i64 = RELEASE
            .run(&self.handle, false, |cmd| {
                cmd.arg(1).arg(lock).arg(value);
            })
            .await?;
        Ok(n == 1)
    }
}

/// A held lock (see the [module docs](self)): [`release`](Self::release) it, or drop it to
/// release it in the background.
#[must_use = "dropping a guard releases the lock at once"]
pub struct LockGuard {
    manager: Arc<Inner>,
    /// The Redis key.
    key: String,
    /// The secret value only this guard knows.
    value: String,
    token: u64,
    released: bool,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("key", &self.key)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl LockGuard {
    /// The fencing token: strictly increasing per lock name, so a later holder's is higher —
    /// across failovers too (see the [module docs](self#across-a-failover-what-holds-and-what-does-not)).
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The lock's Redis key (with the key prefix and namespace).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Sets the lock's TTL to `ttl` from now, if this guard still holds it.
    ///
    /// # Errors
    /// [`Error::LockLost`] if the lock is no longer held by this guard (nothing was changed);
    /// [`Error::InvalidArgument`] for a `ttl` under 1 ms; the handle's error when Redis cannot
    /// answer.
    pub async fn extend(&self, ttl: Duration) -> Result<(), Error> {
        let ms = ttl_ms("lock ttl", ttl, false)?;
        let n: i64 = EXTEND
            .run(&self.manager.handle, false, |cmd| {
                cmd.arg(1).arg(&self.key).arg(&self.value).arg(ms);
            })
            .await?;
        if n == 1 { Ok(()) } else { Err(self.lost()) }
    }

    /// Frees the lock if this guard still holds it (compare-and-delete: never another's).
    ///
    /// # Errors
    /// [`Error::LockLost`] if it was no longer held by this guard (it had expired; whatever was
    /// done since was unprotected); the handle's error when Redis cannot answer (the lock then
    /// expires at its TTL).
    pub async fn release(mut self) -> Result<(), Error> {
        let result = self.manager.release(&self.key, &self.value).await;
        // Only now: if this future is dropped while waiting, `Drop` releases in the background.
        self.released = true;
        match result? {
            true => Ok(()),
            false => Err(self.lost()),
        }
    }

    fn lost(&self) -> Error {
        self.manager.handle.pattern_metrics().lock_lost();
        Error::LockLost {
            key: self.key.clone(),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // No runtime: the lock expires at its TTL.
        };
        let manager = Arc::clone(&self.manager);
        let key = std::mem::take(&mut self.key);
        let value = std::mem::take(&mut self.value);
        runtime.spawn(async move {
            if let Err(e) = manager.release(&key, &value).await {
                tracing::debug!(error = %e, "lock: background release failed; the lock expires at its TTL");
            }
        });
    }
}
