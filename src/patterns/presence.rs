//! "Who is online" over a [`RedisHandle`]: members of a scope (a room, a document, a tenant)
//! send heartbeats and count as online until `timeout` passes without one.
//!
//! ```no_run
//! use std::time::{Duration, SystemTime};
//! use redis_supervisor::presence::{OnUnavailable, Presence};
//!
//! # async fn run(supervisor: redis_supervisor::Supervisor) -> Result<(), redis_supervisor::Error> {
//! let presence = Presence::builder(supervisor.handle())
//!     .namespace("presence")
//!     .timeout(Duration::from_secs(30))          // absent after 30 s without a heartbeat
//!     .on_unavailable(OnUnavailable::Skip)       // default; or OnUnavailable::Fail
//!     .build()?;
//! presence.heartbeat("room:1", "user:7").await?;
//! let online: Vec<String> = presence.online("room:1").await?;
//! let n: u64 = presence.count("room:1").await?;
//! let seen: Option<SystemTime> = presence.last_seen("room:1", "user:7").await?;
//! let was_there: bool = presence.leave("room:1", "user:7").await?;
//! # let _ = (online, n, seen, was_there); Ok(()) }
//! ```
//!
//! # How it works
//!
//! A scope `s` is one sorted set `<REDIS_KEY_PREFIX><namespace>:s`: member → the time of its
//! last heartbeat in ms **on the server's clock** (`TIME` inside the script, so application
//! clocks may disagree). A member is stale once `timeout` has passed since then: every read
//! leaves stale members out, `heartbeat` and `count` remove them, and each heartbeat sets the
//! key's expiry to `timeout`, so a scope nobody heartbeats vanishes by itself. `online` reads
//! the set in pages (`ZSCAN`, 1000 per step: bounded server work and memory per page, the rest
//! of the server is never blocked by one huge reply) and answers the members sorted, each once.
//! A member that stays online throughout the call is always in it; one that joins or leaves
//! meanwhile may or may not be.
//!
//! Each operation is one Lua script, run by its SHA (`EVALSHA`) and sent once more with its body
//! when the server does not have it (`NOSCRIPT`: after a restart or `SCRIPT FLUSH`; it did not
//! run). One key per script: presence works on a Redis Cluster as on one server.
//!
//! # Delivery and degradation
//!
//! `heartbeat`, `leave` and `count` write (they prune), so they are never replayed; `online`
//! and `last_seen` only read, and are replayed once after a lost connection. When Redis cannot
//! answer, under [`OnUnavailable::Skip`] (default) `heartbeat` and `leave` are no-ops (`Ok`,
//! `leave` answering `false`), counted in `redis_client_degraded_ops_total{op}` (`op` =
//! `presence_heartbeat`, `presence_leave`): presence is soft state, and a missed heartbeat only
//! means the member may look absent for a while. Reads never degrade (an empty room would be a
//! lie): they return the handle's error ([`Error::Unavailable`] within the deadline, …), as does
//! every call under [`OnUnavailable::Fail`]. An ambiguous heartbeat may or may not have been
//! recorded; an ambiguous `leave`, the member may still be present until its timeout.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::keys::{Namespace, check_id, degradable, ttl_ms};
use super::script::Lua;
use crate::error::Error;
use crate::handle::RedisHandle;
use crate::metrics::DegradedOp;

/// The namespace when the builder is given none.
pub const DEFAULT_NAMESPACE: &str = "presence";
/// The timeout when the builder is given none: 30 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Members asked for per `ZSCAN` step of [`Presence::online`] (its `COUNT`).
pub const PAGE: usize = 1000;

macro_rules! clock {
    () => {
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = string.format('%.0f', now - tonumber(ARGV[2]))
"#
    };
}

/// KEYS: scope. ARGV: member, timeout ms.
const HEARTBEAT_LUA: &str = concat!(
    "if redis.replicate_commands then redis.replicate_commands() end",
    clock!(),
    r#"
redis.call('ZADD', KEYS[1], string.format('%.0f', now), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#
);

/// KEYS: scope. ARGV: unused, timeout ms. The live members' count.
const COUNT_LUA: &str = concat!(
    "if redis.replicate_commands then redis.replicate_commands() end",
    clock!(),
    r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
return redis.call('ZCARD', KEYS[1])
"#
);

/// KEYS: scope. ARGV: cursor, timeout ms, count. `{next cursor, live members…}`; read-only.
const PAGE_LUA: &str = concat!(
    clock!(),
    r#"
local r = redis.call('ZSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[3])
local out = {r[1]}
local page = r[2]
for i = 1, #page, 2 do
  if tonumber(page[i + 1]) > tonumber(cutoff) then table.insert(out, page[i]) end
end
return out
"#
);

/// KEYS: scope. ARGV: member, timeout ms. The last heartbeat (ms) if live, else nil; read-only.
const LAST_SEEN_LUA: &str = concat!(
    clock!(),
    r#"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= tonumber(cutoff) then return false end
return score
"#
);

static HEARTBEAT: LazyLock<Lua> = LazyLock::new(|| Lua::new(HEARTBEAT_LUA));
static COUNT: LazyLock<Lua> = LazyLock::new(|| Lua::new(COUNT_LUA));
static ONLINE_PAGE: LazyLock<Lua> = LazyLock::new(|| Lua::new(PAGE_LUA));
static LAST_SEEN: LazyLock<Lua> = LazyLock::new(|| Lua::new(LAST_SEEN_LUA));

/// What `heartbeat` and `leave` answer when Redis cannot (see the
/// [module docs](self#delivery-and-degradation)). Reads always return the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnUnavailable {
    /// `heartbeat` and `leave` are no-ops, counted as degraded (default).
    #[default]
    Skip,
    /// Every call returns the handle's error.
    Fail,
}

/// Builds a [`Presence`]; from [`Presence::builder`].
#[derive(Debug)]
#[must_use]
pub struct PresenceBuilder {
    handle: RedisHandle,
    namespace: String,
    timeout: Duration,
    on_unavailable: OnUnavailable,
}

impl PresenceBuilder {
    /// The namespace. Default [`DEFAULT_NAMESPACE`]; 1 to 256 bytes, no control characters.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How long a member stays online after its last heartbeat. Default [`DEFAULT_TIMEOUT`];
    /// at least 1 ms; over 100 years saturates.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What `heartbeat` and `leave` do when Redis cannot answer. Default
    /// [`OnUnavailable::Skip`].
    pub fn on_unavailable(mut self, policy: OnUnavailable) -> Self {
        self.on_unavailable = policy;
        self
    }

    /// The presence tracker.
    ///
    /// # Errors
    /// [`Error::Config`] naming `presence.namespace` or `presence.timeout` and the value.
    pub fn build(self) -> Result<Presence, Error> {
        let ns = Namespace::new(&self.handle, "presence.namespace", &self.namespace)?;
        let timeout_ms = ttl_ms("presence.timeout", self.timeout, true)?;
        Ok(Presence {
            inner: Arc::new(Inner {
                handle: self.handle,
                ns,
                timeout_ms,
                on_unavailable: self.on_unavailable,
            }),
        })
    }
}

/// Presence under one namespace (see the [module docs](self)). Cheap to clone.
#[derive(Clone)]
pub struct Presence {
    inner: Arc<Inner>,
}

struct Inner {
    handle: RedisHandle,
    ns: Namespace,
    timeout_ms: u64,
    on_unavailable: OnUnavailable,
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence")
            .field("namespace", &self.inner.ns)
            .field("timeout_ms", &self.inner.timeout_ms)
            .field("on_unavailable", &self.inner.on_unavailable)
            .finish()
    }
}

impl Presence {
    /// A builder over `handle` (its deadline bounds every call).
    pub fn builder(handle: RedisHandle) -> PresenceBuilder {
        PresenceBuilder {
            handle,
            namespace: DEFAULT_NAMESPACE.to_string(),
            timeout: DEFAULT_TIMEOUT,
            on_unavailable: OnUnavailable::default(),
        }
    }

    /// The timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.inner.timeout_ms)
    }

    /// The Redis key of `scope`.
    pub fn redis_key(&self, scope: &str) -> String {
        self.inner.ns.full(scope)
    }

    /// Marks `member` online in `scope` now (server time), for the timeout.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty member, or a scope or member over 64 KiB; under
    /// [`OnUnavailable::Fail`] the handle's error when Redis cannot answer.
    pub async fn heartbeat(&self, scope: &str, member: &str) -> Result<(), Error> {
        let inner = &*self.inner;
        let key = inner.key(scope, member)?;
        let done = HEARTBEAT
            .run(&inner.handle, false, |cmd| {
                cmd.arg(1).arg(&key).arg(member).arg(inner.timeout_ms);
            })
            .await
            .map(|_: i64| ());
        inner.degrade_or(done, DegradedOp::PresenceHeartbeat, ())
    }

    /// Removes `member` from `scope` at once: whether it was there (online or stale).
    ///
    /// # Errors
    /// As [`heartbeat`](Self::heartbeat) (degraded: `Ok(false)`).
    pub async fn leave(&self, scope: &str, member: &str) -> Result<bool, Error> {
        let inner = &*self.inner;
        let key = inner.key(scope, member)?;
        let mut zrem = redis::cmd("ZREM");
        zrem.arg(&key).arg(member);
        let done = inner.handle.cmd(zrem).await.map(|n: i64| n == 1);
        inner.degrade_or(done, DegradedOp::PresenceLeave, false)
    }

    /// The members of `scope` online now, sorted, each once (read in pages of [`PAGE`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a scope over 64 KiB; the handle's error when Redis cannot
    /// answer (never degraded).
    pub async fn online(&self, scope: &str) -> Result<Vec<String>, Error> {
        let inner = &*self.inner;
        let key = inner.key(scope, "-")?;
        let mut cursor = "0".to_string();
        let mut members = Vec::new();
        loop {
            let mut page: Vec<String> = ONLINE_PAGE
                .run(&inner.handle, true, |cmd| {
                    cmd.arg(1)
                        .arg(&key)
                        .arg(&cursor)
                        .arg(inner.timeout_ms)
                        .arg(PAGE);
                })
                .await?;
            if page.is_empty() {
                return Err(Error::ReplyType("presence page without a cursor".into()));
            }
            cursor = page.swap_remove(0);
            members.append(&mut page);
            if cursor == "0" {
                break;
            }
        }
        members.sort_unstable();
        members.dedup();
        Ok(members)
    }

    /// How many members of `scope` are online now (stale ones are removed).
    ///
    /// # Errors
    /// As [`online`](Self::online).
    pub async fn count(&self, scope: &str) -> Result<u64, Error> {
        let inner = &*self.inner;
        let key = inner.key(scope, "-")?;
        COUNT
            .run(&inner.handle, false, |cmd| {
                cmd.arg(1).arg(&key).arg("").arg(inner.timeout_ms);
            })
            .await
    }

    /// When `member` last sent a heartbeat to `scope` (server clock), if it is online now.
    ///
    /// # Errors
    /// As [`heartbeat`](Self::heartbeat), never degraded.
    pub async fn last_seen(&self, scope: &str, member: &str) -> Result<Option<SystemTime>, Error> {
        let inner = &*self.inner;
        let key = inner.key(scope, member)?;
        let score: Option<String> = LAST_SEEN
            .run(&inner.handle, true, |cmd| {
                cmd.arg(1).arg(&key).arg(member).arg(inner.timeout_ms);
            })
            .await?;
        let Some(score) = score else { return Ok(None) };
        let ms = score
            .parse::<f64>()
            .map_err(|_| Error::ReplyType(format!("presence score {score:?} is not a number")))?;
        Ok(UNIX_EPOCH.checked_add(Duration::from_millis(ms.max(0.0) as u64)))
    }
}

impl Inner {
    /// The scope's key, after checking the scope and member.
    fn key(&self, scope: &str, member: &str) -> Result<String, Error> {
        check_id("presence scope", scope, true)?;
        check_id("presence member", member, false)?;
        Ok(self.ns.full(scope))
    }

    /// `result`, or `fallback` (counted under `op`) when Skip applies to its error.
    fn degrade_or<T>(
        &self,
        result: Result<T, Error>,
        op: DegradedOp,
        fallback: T,
    ) -> Result<T, Error> {
        match result {
            Err(e) if self.on_unavailable == OnUnavailable::Skip && degradable(&e) => {
                self.handle.pattern_metrics().degraded(op);
                tracing::debug!(op = ?op, error = %e, "presence: skipped without redis");
                Ok(fallback)
            }
            other => other,
        }
    }
}
