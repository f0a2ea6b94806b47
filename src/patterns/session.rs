//! Login sessions over a [`RedisHandle`]: random ids, JSON data, a TTL (sliding if you like), a
//! per-user index for [`list`](SessionStore::list) and an atomic
//! [`revoke_all`](SessionStore::revoke_all). With the `tower-sessions` feature,
//! `TowerSessionStore` serves the same Redis as a `tower_sessions::SessionStore`.
//!
//! ```no_run
//! use std::time::Duration;
//! use redis_supervisor::session::{Session, SessionStore};
//!
//! #[derive(Clone, serde::Serialize, serde::Deserialize)]
//! struct Data { cart: Vec<u64> }
//!
//! # async fn run(supervisor: redis_supervisor::Supervisor) -> Result<(), redis_supervisor::Error> {
//! let sessions = SessionStore::builder(supervisor.handle())
//!     .namespace("sess")                    // keys under "<REDIS_KEY_PREFIX>sess:"
//!     .ttl(Duration::from_secs(1800))
//!     .sliding(true)                        // each get/update restarts the TTL
//!     .build()?;
//! let s = sessions.create("user:7", &Data { cart: vec![] }).await?;
//! let got: Option<Session<Data>> = sessions.get(&s.id).await?;   // None: expired, revoked, not ours
//! let still_there: bool = sessions.update(&s.id, &Data { cart: vec![42] }).await?;
//! let ids: Vec<String> = sessions.list("user:7").await?;
//! let revoked: bool = sessions.revoke(&s.id).await?;
//! let n: u64 = sessions.revoke_all("user:7").await?;    // "log out everywhere"
//! # let _ = (got, still_there, ids, revoked, n); Ok(()) }
//! ```
//!
//! # Ids
//!
//! 128 bits from the operating system's CSPRNG (`getrandom`), base64url without padding: 22
//! characters of `A-Z a-z 0-9 - _`, safe in cookies and URLs, never derived from user data. An
//! id is a bearer secret: it is never logged, and `Debug` of a [`Session`] hides it. A string
//! that is not shaped like one of our ids is answered as "no session" without asking Redis.
//!
//! # Keys and atomicity
//!
//! Session `id` is the hash `<REDIS_KEY_PREFIX><namespace>:s:<id>` (fields `u`: the user, `d`:
//! the data as JSON) with the TTL as its expiry; user `u`'s index is the sorted set
//! `<REDIS_KEY_PREFIX><namespace>:u:<u>` of their session ids scored by expiry (ms, server
//! clock), itself expiring with its last session. Every operation is one Lua script, so each is
//! atomic on the server: a create writes the session and indexes it in one step, and
//! `revoke_all` deletes every indexed session and the index in one step, so it cannot miss a
//! session created concurrently (that create ran wholly before it, and is deleted, or wholly
//! after). A script, not `MULTI`/`WATCH`: `WATCH` would need a read, a transaction and a retry
//! loop that livelocks while the user keeps logging in, and a lost connection between the steps
//! leaves the caller not knowing which step ran. Expired sessions leave the index on every
//! write to it (`create`) and read of it (`list`, `revoke_all`), so it never grows past the
//! user's live sessions. Each script is run by its SHA (`EVALSHA`) and sent once more with its
//! body when the server does not have it (`NOSCRIPT`: after a restart or `SCRIPT FLUSH`; it did
//! not run). A corrupt-data error ([`Error::Corrupt`]) names the session's key with the id
//! hidden.
//!
//! **Not on a Redis Cluster (yet).** A session and its user's index hash to different slots, and
//! the scripts reach keys they compute (the index from the session's user), so on a cluster
//! [`SessionStoreBuilder::build`] refuses with [`Error::Config`] naming `session`: keep sessions
//! on a standalone or Sentinel-managed Redis, with a second [`Supervisor`](crate::Supervisor).
//!
//! # Delivery and degradation
//!
//! Sessions do not degrade: a session store that answers "no session" or "revoked" without
//! Redis would log users out or pretend a revocation happened. When Redis cannot answer, every
//! call returns the handle's error ([`Error::Unavailable`] within the handle's deadline, …);
//! the application decides (e.g. an error page, or treat the request as anonymous). The scripts
//! write (`get` too, when sliding), so they are never replayed; [`Error::Ambiguous`] means:
//! `create` — a session may exist that nobody has the id of (it expires at its TTL);
//! `update` — the data may or may not be written; `revoke`/`revoke_all` — the sessions may or
//! may not be gone (call again: revoking is safe to repeat); sliding `get` — the TTL may or may
//! not have been restarted.
//!
//! # Metrics
//!
//! `redis_client_sessions_created_total` and `redis_client_sessions_revoked_total` (each session
//! `revoke_all` removes counting; expiry does not), at 0 from the start; the Grafana dashboard's
//! "Patterns" row shows them.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::keys::{Namespace, check_id, is_token, loggable, random_token, ttl_ms};
use super::script::Lua;
use crate::error::Error;
use crate::handle::RedisHandle;

#[cfg(feature = "tower-sessions")]
pub use super::tower::{DEFAULT_TOWER_NAMESPACE, TowerSessionStore};

/// The namespace when the builder is given none.
pub const DEFAULT_NAMESPACE: &str = "session";
/// The TTL when the builder is given none: 30 minutes.
pub const DEFAULT_TTL: Duration = Duration::from_secs(1800);

/// The Lua prelude of the scripts: the server's clock in ms, and `slide(index_prefix, user, id,
/// ttl)` re-scoring a session in its user's index and keeping the index alive as long.
macro_rules! prelude {
    () => {
        r#"
if redis.replicate_commands then redis.replicate_commands() end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function index(idx, id, ttl)
  redis.call('ZADD', idx, string.format('%.0f', now_ms() + tonumber(ttl)), id)
  if redis.call('PTTL', idx) < tonumber(ttl) then redis.call('PEXPIRE', idx, ttl) end
end
"#
    };
}

/// KEYS: session, index. ARGV: id, user, data, ttl. 0 if the id is taken, else 1.
const CREATE_LUA: &str = concat!(
    prelude!(),
    r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'u', ARGV[2], 'd', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', now_ms()))
index(KEYS[2], ARGV[1], ARGV[4])
return 1
"#
);

/// KEYS: session. ARGV: sliding ttl or 0, index prefix, id. `{user, data, pttl}` or nil.
const GET_LUA: &str = concat!(
    prelude!(),
    r#"
local v = redis.call('HMGET', KEYS[1], 'u', 'd')
if not v[1] or not v[2] then return false end
if ARGV[1] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  index(ARGV[2] .. v[1], ARGV[3], ARGV[1])
end
return {v[1], v[2], redis.call('PTTL', KEYS[1])}
"#
);

/// KEYS: session. ARGV: data, sliding ttl or 0, index prefix, id. 1 if updated, 0 if gone.
const UPDATE_LUA: &str = concat!(
    prelude!(),
    r#"
local user = redis.call('HGET', KEYS[1], 'u')
if not user then return 0 end
redis.call('HSET', KEYS[1], 'd', ARGV[1])
if ARGV[2] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  index(ARGV[3] .. user, ARGV[4], ARGV[2])
end
return 1
"#
);

/// KEYS: session. ARGV: index prefix, id. 1 if revoked, 0 if gone.
const REVOKE_LUA: &str = r#"
local user = redis.call('HGET', KEYS[1], 'u')
if not user then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', ARGV[1] .. user, ARGV[2])
return 1
"#;

/// KEYS: index. ARGV: session prefix. How many sessions were deleted.
const REVOKE_ALL_LUA: &str = r#"
local n = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  n = n + redis.call('DEL', ARGV[1] .. id)
end
redis.call('DEL', KEYS[1])
return n
"#;

/// KEYS: index. ARGV: session prefix. The live ids, soonest to expire first; prunes the rest.
const LIST_LUA: &str = concat!(
    prelude!(),
    r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now_ms()))
local live = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if redis.call('EXISTS', ARGV[1] .. id) == 1 then table.insert(live, id)
  else redis.call('ZREM', KEYS[1], id) end
end
return live
"#
);

static CREATE: LazyLock<Lua> = LazyLock::new(|| Lua::new(CREATE_LUA));
static GET: LazyLock<Lua> = LazyLock::new(|| Lua::new(GET_LUA));
static UPDATE: LazyLock<Lua> = LazyLock::new(|| Lua::new(UPDATE_LUA));
static REVOKE: LazyLock<Lua> = LazyLock::new(|| Lua::new(REVOKE_LUA));
static REVOKE_ALL: LazyLock<Lua> = LazyLock::new(|| Lua::new(REVOKE_ALL_LUA));
static LIST: LazyLock<Lua> = LazyLock::new(|| Lua::new(LIST_LUA));

/// The Lua source of the `get` script (to run it yourself, e.g. in a benchmark):
/// `KEYS = [session]`, `ARGV = [sliding ttl ms or "0", index prefix, id]`.
pub fn get_script_source() -> &'static str {
    GET_LUA
}

/// One session, as [`SessionStore::create`] and [`SessionStore::get`] answer it. `Debug` hides
/// the id.
#[derive(Clone, PartialEq, Eq)]
pub struct Session<T> {
    /// The session id: a bearer secret (see the [module docs](self#ids)).
    pub id: String,
    /// The user it belongs to.
    pub user: String,
    /// The application's data.
    pub data: T,
    /// When it expires if not extended: the server's remaining TTL added to this machine's clock.
    pub expires_at: SystemTime,
}

impl<T: std::fmt::Debug> std::fmt::Debug for Session<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &"***")
            .field("user", &self.user)
            .field("data", &self.data)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Builds a [`SessionStore`]; from [`SessionStore::builder`].
#[derive(Debug)]
#[must_use]
pub struct SessionStoreBuilder {
    handle: RedisHandle,
    namespace: String,
    ttl: Duration,
    sliding: bool,
}

impl SessionStoreBuilder {
    /// The namespace. Default [`DEFAULT_NAMESPACE`]; 1 to 256 bytes, no control characters.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How long a session lives (from its creation, or its last use when sliding). Default
    /// [`DEFAULT_TTL`]; at least 1 ms; over 100 years saturates.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Whether `get` and `update` restart the TTL (default `false`: a fixed lifetime).
    pub fn sliding(mut self, sliding: bool) -> Self {
        self.sliding = sliding;
        self
    }

    /// The store.
    ///
    /// # Errors
    /// [`Error::Config`] naming `session.namespace` or `session.ttl` and the value; naming
    /// `session` on a Redis Cluster, where sessions are not supported.
    pub fn build(self) -> Result<SessionStore, Error> {
        let ns = Namespace::new(&self.handle, "session.namespace", &self.namespace)?;
        if self.handle.topology().slotted() {
            // A session and its user's index live in different slots, and the scripts reach
            // the other sessions of a user by name: a cluster refuses both.
            return Err(Error::Config(crate::error::ConfigError::new(
                "session",
                &self.namespace,
                "sessions are not supported on a Redis Cluster yet: a session and its user's \
                 index would hash to different slots; use a standalone or Sentinel-managed Redis \
                 for sessions (a second Supervisor)",
            )));
        }
        let ttl_ms = ttl_ms("session.ttl", self.ttl, true)?;
        Ok(SessionStore {
            inner: Arc::new(Inner {
                sessions: ns.full("s:"),
                users: ns.full("u:"),
                handle: self.handle,
                ttl_ms,
                sliding: self.sliding,
            }),
        })
    }
}

/// Sessions under one namespace (see the [module docs](self)). Cheap to clone.
#[derive(Clone)]
pub struct SessionStore {
    inner: Arc<Inner>,
}

struct Inner {
    handle: RedisHandle,
    /// `<prefix><ns>:s:`, followed by the id.
    sessions: String,
    /// `<prefix><ns>:u:`, followed by the user.
    users: String,
    ttl_ms: u64,
    sliding: bool,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore")
            .field("keys", &self.inner.sessions)
            .field("ttl_ms", &self.inner.ttl_ms)
            .field("sliding", &self.inner.sliding)
            .finish()
    }
}

impl SessionStore {
    /// A builder over `handle` (its deadline bounds every call).
    pub fn builder(handle: RedisHandle) -> SessionStoreBuilder {
        SessionStoreBuilder {
            handle,
            namespace: DEFAULT_NAMESPACE.to_string(),
            ttl: DEFAULT_TTL,
            sliding: false,
        }
    }

    /// The session TTL.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.inner.ttl_ms)
    }

    /// Whether the TTL slides.
    pub fn sliding(&self) -> bool {
        self.inner.sliding
    }

    /// The Redis key of session `id` (a secret like the id: do not log it).
    pub fn redis_key(&self, id: &str) -> String {
        self.inner.key(id)
    }

    /// The Redis key of `user`'s index.
    pub fn index_key(&self, user: &str) -> String {
        format!("{}{user}", self.inner.users)
    }

    /// A new session for `user` with `data`, expiring after the TTL.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty user or one over 64 KiB, or data that does not
    /// serialize to JSON; the handle's error when Redis cannot answer (see the
    /// [module docs](self#delivery-and-degradation)).
    pub async fn create<T: Serialize + Clone>(
        &self,
        user: &str,
        data: &T,
    ) -> Result<Session<T>, Error> {
        let json = encode(data)?;
        let id = self.inner.create(user, &json).await?;
        Ok(Session {
            id,
            user: user.to_string(),
            data: data.clone(),
            expires_at: expires_at(self.inner.ttl_ms as i64),
        })
    }

    /// The session `id`, or `None` if it expired, was revoked or is not one of ours. When
    /// sliding, its TTL restarts.
    ///
    /// # Errors
    /// [`Error::Corrupt`] (naming the key with the id hidden) if its data does not decode as
    /// `T`; the handle's error when Redis cannot answer.
    pub async fn get<T: DeserializeOwned>(&self, id: &str) -> Result<Option<Session<T>>, Error> {
        let Some((user, json, pttl)) = self.inner.get(id).await? else {
            return Ok(None);
        };
        let data = serde_json::from_str(&json).map_err(|e| Error::Corrupt {
            key: self.inner.key("***"),
            reason: e.to_string(),
        })?;
        Ok(Some(Session {
            id: id.to_string(),
            user,
            data,
            expires_at: expires_at(pttl),
        }))
    }

    /// Replaces the data of session `id` (its TTL restarts when sliding): `false` if it is gone.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for data that does not serialize; the handle's error when Redis
    /// cannot answer.
    pub async fn update<T: Serialize>(&self, id: &str, data: &T) -> Result<bool, Error> {
        let json = encode(data)?;
        self.inner.update(id, &json).await
    }

    /// Ends session `id`: `false` if it was already gone.
    ///
    /// # Errors
    /// The handle's error when Redis cannot answer.
    pub async fn revoke(&self, id: &str) -> Result<bool, Error> {
        self.inner.revoke(id).await
    }

    /// Ends every session of `user`, atomically: how many there were.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty or over-long user; the handle's error when Redis
    /// cannot answer.
    pub async fn revoke_all(&self, user: &str) -> Result<u64, Error> {
        check_id("session user", user, false)?;
        let inner = &*self.inner;
        let n: u64 = REVOKE_ALL
            .run(&inner.handle, false, |cmd| {
                cmd.arg(1).arg(inner.index(user)).arg(&inner.sessions);
            })
            .await?;
        inner.handle.pattern_metrics().sessions_revoked(n);
        Ok(n)
    }

    /// The ids of `user`'s live sessions, soonest to expire first (expired ones are pruned from
    /// the index).
    ///
    /// # Errors
    /// As [`revoke_all`](Self::revoke_all).
    pub async fn list(&self, user: &str) -> Result<Vec<String>, Error> {
        check_id("session user", user, false)?;
        let inner = &*self.inner;
        LIST.run(&inner.handle, false, |cmd| {
            cmd.arg(1).arg(inner.index(user)).arg(&inner.sessions);
        })
        .await
    }
}

fn encode<T: Serialize + ?Sized>(data: &T) -> Result<String, Error> {
    serde_json::to_string(data).map_err(|e| {
        Error::InvalidArgument(format!("session data does not serialize to JSON: {e}"))
    })
}

/// This machine's clock plus the server's remaining TTL (`pttl` ms; negative: now).
fn expires_at(pttl: i64) -> SystemTime {
    let left = Duration::from_millis(u64::try_from(pttl).unwrap_or(0));
    SystemTime::now()
        .checked_add(left)
        .unwrap_or(SystemTime::now())
}

impl Inner {
    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.sessions)
    }

    fn index(&self, user: &str) -> String {
        format!("{}{user}", self.users)
    }

    /// The sliding TTL argument: the TTL when sliding, else `0`.
    fn slide_arg(&self) -> u64 {
        if self.sliding { self.ttl_ms } else { 0 }
    }

    /// Creates a session with a fresh id (a new one on the practically impossible collision).
    async fn create(&self, user: &str, json: &str) -> Result<String, Error> {
        check_id("session user", user, false)?;
        let index = self.index(user);
        for _ in 0..4 {
            let id = random_token()?;
            let created: i64 = CREATE
                .run(&self.handle, false, |cmd| {
                    cmd.arg(2)
                        .arg(self.key(&id))
                        .arg(&index)
                        .arg(&id)
                        .arg(user)
                        .arg(json)
                        .arg(self.ttl_ms);
                })
                .await?;
            if created == 1 {
                self.handle.pattern_metrics().session_created();
                return Ok(id);
            }
        }
        Err(Error::InvalidArgument(format!(
            "no free session id for user {:?} after 4 tries",
            loggable(user)
        )))
    }

    /// `(user, json, pttl)` of session `id`, sliding its TTL when configured.
    async fn get(&self, id: &str) -> Result<Option<(String, String, i64)>, Error> {
        if !is_token(id) {
            return Ok(None);
        }
        GET.run(&self.handle, false, |cmd| {
            cmd.arg(1)
                .arg(self.key(id))
                .arg(self.slide_arg())
                .arg(&self.users)
                .arg(id);
        })
        .await
    }

    /// Writes `json` into session `id` if it exists (sliding its TTL when configured).
    async fn update(&self, id: &str, json: &str) -> Result<bool, Error> {
        if !is_token(id) {
            return Ok(false);
        }
        let n: i64 = UPDATE
            .run(&self.handle, false, |cmd| {
                cmd.arg(1)
                    .arg(self.key(id))
                    .arg(json)
                    .arg(self.slide_arg())
                    .arg(&self.users)
                    .arg(id);
            })
            .await?;
        Ok(n == 1)
    }

    async fn revoke(&self, id: &str) -> Result<bool, Error> {
        if !is_token(id) {
            return Ok(false);
        }
        let n: i64 = REVOKE
            .run(&self.handle, false, |cmd| {
                cmd.arg(1).arg(self.key(id)).arg(&self.users).arg(id);
            })
            .await?;
        self.handle.pattern_metrics().sessions_revoked(n as u64);
        Ok(n == 1)
    }
}
