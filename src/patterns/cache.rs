//! A JSON cache over a [`RedisHandle`]: values with a TTL under one namespace, a single-flight
//! [`get_or_load`](Cache::get_or_load), batch reads and writes in one round trip each,
//! invalidation by pattern with `SCAN` + `UNLINK` (never `KEYS`), and a degradation policy
//! ([`Degrade`]) for when Redis cannot answer.
//!
//! ```no_run
//! use std::time::Duration;
//! use redis_supervisor::cache::{Cache, Degrade};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct User { id: u64, name: String }
//!
//! # #[derive(Debug)] struct DbError; impl std::fmt::Display for DbError {
//! # fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("db") } }
//! # impl std::error::Error for DbError {}
//! # async fn db_load(id: u64) -> Result<User, DbError> { Ok(User { id, name: "Ada".into() }) }
//! # async fn run(supervisor: redis_supervisor::Supervisor) -> Result<(), redis_supervisor::Error> {
//! let cache = Cache::builder(supervisor.handle())
//!     .namespace("api")                      // keys are "<REDIS_KEY_PREFIX>api:<key>"
//!     .ttl(Duration::from_secs(300))         // default TTL; per call: set_with_ttl
//!     .on_unavailable(Degrade::Miss)         // or Degrade::Fail
//!     .build()?;
//! let user = User { id: 7, name: "Ada".into() };
//! cache.set("user:7", &user).await?;
//! let u: Option<User> = cache.get("user:7").await?;
//! let u: User = cache.get_or_load("user:7", || db_load(7)).await?;
//! let removed: bool = cache.delete("user:7").await?;
//! let removed: u64 = cache.invalidate("user:*").await?;
//! # let _ = (u, removed); Ok(()) }
//! ```
//!
//! # Keys
//!
//! A key `k` is stored as `<REDIS_KEY_PREFIX><namespace>:k` (the prefix from the handle's
//! [`Config::key_prefix`](crate::Config::key_prefix)). Any string is a valid key, the empty one
//! included.
//!
//! # Degradation
//!
//! "Redis could not answer" means the handle returned [`Error::Unavailable`],
//! [`Error::Timeout`], [`Error::Ambiguous`], [`Error::Overloaded`], [`Error::Connection`] or
//! [`Error::ShuttingDown`]; each call takes at most the handle's deadline to find out. What
//! happens then is the cache's [`Degrade`] policy:
//!
//! | operation | [`Degrade::Miss`] | [`Degrade::Fail`] |
//! |---|---|---|
//! | `get`, `get_many` | a miss (`None`) | the handle's error |
//! | `ttl` | [`KeyTtl::Missing`] | the handle's error |
//! | `set`, `set_with_ttl`, `set_many` | a no-op, `Ok(())` | the handle's error |
//! | `delete` | a no-op, `Ok(false)` | the handle's error |
//! | `invalidate` | `Ok(n)`: the keys removed before Redis stopped answering | the handle's error |
//! | `get_or_load` | the loader's value (single-flight still applies; not written back) | the handle's error |
//!
//! Each degraded answer is counted in `redis_client_degraded_ops_total{op}`
//! ([`DEGRADED_OPS`](crate::metrics::DEGRADED_OPS)). Error replies from the server
//! (`NOPERM`, `OOM`, …) are answers, not outages: they reach the caller under either policy.
//!
//! # Corrupt data
//!
//! Data under a key that is not JSON, is JSON of another shape, or is not a string at all is
//! [`Error::Corrupt`] naming the key. It is counted in `redis_client_cache_corrupt_total` and
//! logged (`tracing::warn!`, key and decoder message only, never the value); under
//! [`Degrade::Miss`] the read is a miss instead of an error (and `get_or_load` overwrites it).
//!
//! # On a Redis Cluster
//!
//! `get`, `set`, `set_with_ttl`, `delete`, `ttl` and `get_or_load` use one key per command, and
//! `get_many` is one `MGET`, which the handle splits per slot: they work on a cluster as on one
//! server. `invalidate` walks every primary (a `SCAN` cursor is one node's). `set_many` sends
//! one pipeline per slot of its keys, all at once (one round trip for keys that share a hash
//! tag, `{user:7}:profile` and `{user:7}:prefs`).
//!
//! # Metrics
//!
//! Each series exists at 0 from the start, with the supervisor's `client` label:
//!
//! - `redis_client_cache_lookups_total{result}`: `hit`, `miss` (a read degraded to a miss counts
//!   as a miss);
//! - `redis_client_cache_loads_total{outcome}`: the single-flight loader's runs, `ok`, `error`,
//!   `timeout`, `panic`;
//! - `redis_client_cache_coalesced_total`: callers of `get_or_load` served by another caller's
//!   load;
//! - `redis_client_cache_corrupt_total`: data that did not decode;
//! - `redis_client_degraded_ops_total{op}`: the answers of the [`Degrade`] policy, `op` =
//!   `cache_get`, `cache_set`, `cache_delete`, `cache_invalidate`, `cache_get_or_load`.
//!
//! The Grafana dashboard's "Patterns" row shows them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::keys::{Namespace, checked_ttl, degradable, loggable};
use super::singleflight::{Flight, Flights, Joined, Outcome};
use crate::error::Error;
use crate::handle::{KeyTtl, RedisHandle};
use crate::metrics::{DegradedOp, LoadOutcome, Lookup};

/// The namespace when the builder is given none.
pub const DEFAULT_NAMESPACE: &str = "cache";
/// The TTL of [`set`](Cache::set), `set_many` and `get_or_load`'s write when the builder is
/// given none: 5 minutes.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// The loader's deadline in [`get_or_load`](Cache::get_or_load) when the builder is given none:
/// 10 seconds.
pub const DEFAULT_LOAD_TIMEOUT: Duration = Duration::from_secs(10);
pub use super::keys::MAX_TTL;
pub use builder::CacheBuilder;

mod builder;

/// Keys asked for per `SCAN` step of [`invalidate`](Cache::invalidate) (its `COUNT`), and so
/// the most keys one `UNLINK` removes (give or take: `COUNT` is a hint to the server).
pub const INVALIDATE_BATCH: usize = 1000;

/// What the cache answers when Redis cannot (see the [module docs](self#degradation)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Degrade {
    /// Reads are misses, writes and deletes no-ops, `get_or_load` calls the loader (default).
    #[default]
    Miss,
    /// Every operation returns the handle's error ([`Error::Unavailable`], …).
    Fail,
}

/// The loader of [`Cache::get_or_load`] did not finish within the cache's load timeout: the
/// `source` of [`Error::Loader`]. The loader's task was cancelled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the loader did not finish within {after:?}")]
pub struct LoadTimeout {
    /// The load timeout ([`CacheBuilder::load_timeout`]).
    pub after: Duration,
}

/// The loader of [`Cache::get_or_load`] panicked (or its task was cancelled): the `source` of
/// [`Error::Loader`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the loader panicked or was cancelled")]
pub struct LoadPanicked;

/// A JSON cache under one namespace (see the [module docs](self)). Cheap to clone; clones share
/// the single-flight state.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    handle: RedisHandle,
    ns: Namespace,
    ttl: Duration,
    degrade: Degrade,
    load_timeout: Duration,
    flights: Arc<Flights>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("namespace", &self.inner.ns)
            .field("ttl", &self.inner.ttl)
            .field("degrade", &self.inner.degrade)
            .field("load_timeout", &self.inner.load_timeout)
            .finish()
    }
}

impl Cache {
    /// A builder for a cache over `handle` (its deadline bounds every call).
    pub fn builder(handle: RedisHandle) -> CacheBuilder {
        CacheBuilder::new(handle)
    }

    /// The default TTL.
    pub fn default_ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The degradation policy.
    pub fn degrade(&self) -> Degrade {
        self.inner.degrade
    }

    /// The key `key` is stored under: `<REDIS_KEY_PREFIX><namespace>:<key>`.
    pub fn redis_key(&self, key: &str) -> String {
        self.inner.ns.full(key)
    }

    /// `GET`: the value under `key`, decoded from JSON, or `None`.
    ///
    /// ```no_run
    /// # async fn run(cache: redis_supervisor::cache::Cache) -> Result<(), redis_supervisor::Error> {
    /// let n: Option<u64> = cache.get("visits").await?;
    /// # let _ = n; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Corrupt`] for data that does not decode as `T` and, under [`Degrade::Fail`], the
    /// handle's error when Redis cannot answer (under [`Degrade::Miss`] both are misses).
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        let read = self.inner.handle.get(self.inner.ns.local(key)).await;
        self.inner.settle(key, read, DegradedOp::CacheGet)
    }

    /// `SET … PX`: stores `value` as JSON with the default TTL.
    ///
    /// ```no_run
    /// # async fn run(cache: redis_supervisor::cache::Cache) -> Result<(), redis_supervisor::Error> {
    /// cache.set("visits", &42u64).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `value` does not serialize to JSON; under
    /// [`Degrade::Fail`], the handle's error when Redis cannot answer.
    pub async fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), Error> {
        let json = self.inner.encode(key, value)?;
        self.inner.write(key, &json, self.inner.ttl).await
    }

    /// Like [`set`](Self::set) with its own TTL (at least 1 ms; above [`MAX_TTL`] it is cut to
    /// it).
    ///
    /// ```no_run
    /// # async fn run(cache: redis_supervisor::cache::Cache) -> Result<(), redis_supervisor::Error> {
    /// cache.set_with_ttl("otp:7", "123456", std::time::Duration::from_secs(30)).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a TTL under 1 ms or a value that does not serialize; as
    /// [`set`](Self::set) otherwise.
    pub async fn set_with_ttl<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), Error> {
        let ttl = checked_ttl(ttl).map_err(|reason| {
            Error::InvalidArgument(format!("ttl for key {:?} {reason}", loggable(key)))
        })?;
        let json = self.inner.encode(key, value)?;
        self.inner.write(key, &json, ttl).await
    }

    /// `DEL`: whether the key existed and was removed.
    ///
    /// ```no_run
    /// # async fn run(cache: redis_supervisor::cache::Cache) -> Result<(), redis_supervisor::Error> {
    /// let removed = cache.delete("user:7").await?;
    /// # let _ = removed; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Under [`Degrade::Fail`], the handle's error when Redis cannot answer (under
    /// [`Degrade::Miss`]: `Ok(false)`). A connection lost with the `DEL` in flight is
    /// [`Error::Ambiguous`] (a `DEL` is never replayed).
    pub async fn delete(&self, key: &str) -> Result<bool, Error> {
        match self.inner.handle.del([self.inner.ns.local(key)]).await {
            Ok(n) => Ok(n > 0),
            Err(e) => self.inner.degrade_or(e, DegradedOp::CacheDelete, false),
        }
    }

    /// `PTTL`: how long the key has left.
    ///
    /// ```no_run
    /// # async fn run(cache: redis_supervisor::cache::Cache) -> Result<(), redis_supervisor::Error> {
    /// use redis_supervisor::KeyTtl;
    /// if let KeyTtl::Expires(left) = cache.ttl("user:7").await? {
    ///     println!("{left:?} left");
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Under [`Degrade::Fail`], the handle's error when Redis cannot answer (under
    /// [`Degrade::Miss`]: [`KeyTtl::Missing`], counted as a degraded `cache_get`).
    pub async fn ttl(&self, key: &str) -> Result<KeyTtl, Error> {
        match self.inner.handle.ttl(self.inner.ns.local(key)).await {
            Ok(t) => Ok(t),
            Err(e) => self
                .inner
                .degrade_or(e, DegradedOp::CacheGet, KeyTtl::Missing),
        }
    }

    /// `MGET` in one round trip: one `Option` per key, in order. No keys: `Ok(vec![])` without
    /// a round trip.
    ///
    /// ```no_run
    /// # async fn run(cache: redis_supervisor::cache::Cache) -> Result<(), redis_supervisor::Error> {
    /// let got: Vec<Option<String>> = cache.get_many(&["a", "b"]).await?;
    /// # let _ = got; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the first key whose data does not decode (under
    /// [`Degrade::Miss`] that key is `None`); under [`Degrade::Fail`], the handle's error when
    /// Redis cannot answer (under [`Degrade::Miss`]: all `None`).
    pub async fn get_many<K: AsRef<str>, T: DeserializeOwned>(
        &self,
        keys: &[K],
    ) -> Result<Vec<Option<T>>, Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let inner = &*self.inner;
        let local = keys.iter().map(|k| inner.ns.local(k.as_ref()));
        let raw: Vec<Option<Vec<u8>>> = match inner.handle.mget(local).await {
            Ok(raw) => raw,
            Err(e) => {
                inner.degrade_or(e, DegradedOp::CacheGet, ())?;
                inner.lookups(Lookup::Miss, keys.len());
                return Ok(keys.iter().map(|_| None).collect());
            }
        };
        keys.iter()
            .zip(raw)
            .map(|(k, v)| inner.settle(k.as_ref(), Ok(v), DegradedOp::CacheGet))
            .collect()
    }

    /// Stores every pair as JSON with the default TTL in one round trip: a pipeline of
    /// `SET key value PX ttl` (not `MULTI`: each `SET` stands alone; on a cluster, one pipeline
    /// per slot, sent at once). No pairs: `Ok(())` without a round trip.
    ///
    /// Plain `SET` is replay-safe, so a connection lost before the replies came is handled as
    /// for one `SET`: the pipeline is sent once more on the next connection within the deadline.
    /// If that fails too, the caller gets [`Error::Timeout`] (`sent: true`) or
    /// [`Error::Ambiguous`]: any of the keys may or may not have been written.
    ///
    /// ```no_run
    /// # async fn run(cache: redis_supervisor::cache::Cache) -> Result<(), redis_supervisor::Error> {
    /// cache.set_many(&[("a", 1u32), ("b", 2)]).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if a value does not serialize (nothing is sent); under
    /// [`Degrade::Fail`], the handle's error when Redis cannot answer.
    pub async fn set_many<K: AsRef<str>, T: Serialize>(
        &self,
        items: &[(K, T)],
    ) -> Result<(), Error> {
        if items.is_empty() {
            return Ok(());
        }
        let inner = &*self.inner;
        let px = inner.ttl.as_millis() as u64;
        let mut sets = Vec::with_capacity(items.len());
        for (k, v) in items {
            let json = inner.encode(k.as_ref(), v)?;
            sets.push((inner.ns.full(k.as_ref()), json));
        }
        // On a cluster, one pipeline per slot (a pipeline goes to one node), all at once.
        let groups = inner
            .handle
            .topology()
            .slot_groups(sets.iter().map(|(key, _)| key.as_bytes()));
        let pipeline = |group: &[usize]| {
            let mut pipe = redis::pipe();
            for &i in group {
                let (key, json) = &sets[i];
                pipe.cmd("SET")
                    .arg(key)
                    .arg(json)
                    .arg("PX")
                    .arg(px)
                    .ignore();
            }
            pipe
        };
        let outcome = match groups.as_slice() {
            [one] => inner.handle.pipeline_idempotent::<()>(pipeline(one)).await,
            many => {
                let mut parts = tokio::task::JoinSet::new();
                for group in many {
                    let (handle, pipe) = (inner.handle.clone(), pipeline(group));
                    parts.spawn(async move { handle.pipeline_idempotent::<()>(pipe).await });
                }
                let mut outcome = Ok(());
                while let Some(part) = parts.join_next().await {
                    if let (Ok(()), Ok(Err(e))) = (&outcome, part) {
                        outcome = Err(e);
                    }
                }
                outcome
            }
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(e) => inner.degrade_or(e, DegradedOp::CacheSet, ()),
        }
    }

    /// Removes every key of the namespace that matches `pattern`, a Redis glob applied after
    /// `<REDIS_KEY_PREFIX><namespace>:` (`"user:*"`; `"*"` for the whole namespace); returns how
    /// many were removed. Keys outside the namespace are never matched: the prefix and
    /// namespace are escaped.
    ///
    /// It walks the keyspace with `SCAN … MATCH … COUNT` ([`INVALIDATE_BATCH`]) and removes
    /// each batch with one `UNLINK` (freed in the background) before asking for the next: the
    /// server does bounded work per step, and the client holds one batch at a time. Never
    /// `KEYS`. Keys written while it runs may or may not be removed (SCAN's guarantee: a key
    /// present from start to end is seen).
    ///
    /// ```no_run
    /// # async fn run(cache: redis_supervisor::cache::Cache) -> Result<(), redis_supervisor::Error> {
    /// let removed = cache.invalidate("user:*").await?;
    /// # let _ = removed; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Under [`Degrade::Fail`], the handle's error when Redis stops answering (the keys removed
    /// until then stay removed); under [`Degrade::Miss`], `Ok` with the count removed until then.
    /// A connection lost with an `UNLINK` in flight is [`Error::Ambiguous`] under
    /// [`Degrade::Fail`].
    pub async fn invalidate(&self, pattern: &str) -> Result<u64, Error> {
        let inner = &*self.inner;
        let glob = inner.ns.glob(pattern);
        let mut removed = 0u64;
        // One walk per primary on a cluster (a SCAN cursor is one node's).
        let nodes = match inner.handle.scan_targets().await {
            Ok(nodes) => nodes,
            Err(e) => return inner.degrade_or(e, DegradedOp::CacheInvalidate, removed),
        };
        for node in &nodes {
            let mut cursor = 0u64;
            loop {
                let step = inner.invalidate_step(node.as_ref(), cursor, &glob).await;
                match step {
                    Ok((next, n)) => {
                        removed += n;
                        cursor = next;
                        if cursor == 0 {
                            break;
                        }
                    }
                    Err(e) => return inner.degrade_or(e, DegradedOp::CacheInvalidate, removed),
                }
            }
        }
        Ok(removed)
    }

    /// The value under `key`, or, on a miss, the `loader`'s value, stored with the default TTL
    /// and returned.
    ///
    /// **Single-flight** (inside this process, per `Cache` and its clones): concurrent callers
    /// of one missing key run the loader once, in a task of its own, and all get its value — or
    /// all get its error as [`Error::Loader`], which keeps the loader's error as `source`. A
    /// caller that gives up (drops its future) does not stop the load for the others. The
    /// loader has its own deadline ([`CacheBuilder::load_timeout`]): past it, the loader is
    /// cancelled and every waiter gets [`Error::Loader`] with a [`LoadTimeout`] source. Nothing
    /// failed is remembered: the next call after an error runs the loader again. Across
    /// processes there is no coordination: each process loads a missing key at most once at a
    /// time.
    ///
    /// `loader` is called at most once, by the caller that starts the load; its future must be
    /// `Send + 'static` (it is spawned): move what it needs into it. The load reads the key
    /// once more before it runs that future: a value a load that just ended wrote meanwhile is
    /// used instead (so a caller whose read missed just before does not load it again). Each
    /// waiter decodes the shared JSON into its own `T`.
    ///
    /// ```no_run
    /// # #[derive(Debug)] struct DbError;
    /// # impl std::fmt::Display for DbError {
    /// #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("db") } }
    /// # impl std::error::Error for DbError {}
    /// # async fn count_orders(_: u64) -> Result<u64, DbError> { Ok(3) }
    /// # async fn run(cache: redis_supervisor::cache::Cache) -> Result<(), redis_supervisor::Error> {
    /// let user_id = 7;
    /// let orders: u64 = cache
    ///     .get_or_load(&format!("orders:{user_id}"), move || count_orders(user_id))
    ///     .await?;
    /// # let _ = orders; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Loader`] (the loader failed, timed out or panicked); as [`get`](Self::get) for
    /// the read and [`set`](Self::set) for the write-back (under [`Degrade::Fail`] a failed
    /// write-back is every waiter's error; under [`Degrade::Miss`] it is counted and the value
    /// returned); [`Error::Corrupt`] if the loaded value does not decode as its own `T`.
    pub async fn get_or_load<T, F, Fut, E>(&self, key: &str, loader: F) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let inner = &self.inner;
        let read = inner.handle.get(inner.ns.local(key)).await;
        let redis_down = matches!(&read, Err(e) if degradable(e));
        if let Some(value) = inner.settle(key, read, DegradedOp::CacheGetOrLoad)? {
            return Ok(value);
        }
        let waiter = match inner.flights.join(&inner.ns.full(key)) {
            Joined::Follower(waiter) => {
                inner.handle.pattern_metrics().coalesced();
                waiter
            }
            Joined::Leader(flight, waiter) => {
                let fut = loader();
                let inner = self.inner.clone();
                let key = key.to_string();
                tokio::spawn(async move { inner.load(flight, &key, fut, !redis_down).await });
                waiter
            }
        };
        let full = || inner.ns.full(key);
        let outcome = waiter.outcome().await.unwrap_or_else(|| {
            Err(Error::Loader {
                key: full(),
                source: Arc::new(LoadPanicked),
            })
        });
        let json = outcome?;
        serde_json::from_slice(&json).map_err(|e| Error::Corrupt {
            key: full(),
            reason: format!("the loaded value does not decode as its own type: {e}"),
        })
    }
}

impl Inner {
    /// A read's answer, per the policy: decoded value, miss, corrupt or degraded.
    fn settle<T: DeserializeOwned>(
        &self,
        key: &str,
        read: Result<Option<Vec<u8>>, Error>,
        op: DegradedOp,
    ) -> Result<Option<T>, Error> {
        match read {
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(v) => {
                    self.lookups(Lookup::Hit, 1);
                    Ok(Some(v))
                }
                Err(e) => self.corrupt(key, e.to_string()),
            },
            Ok(None) => {
                self.lookups(Lookup::Miss, 1);
                Ok(None)
            }
            Err(e) if e.server_code() == Some("WRONGTYPE") => {
                self.corrupt(key, "not a string value (WRONGTYPE)".to_string())
            }
            Err(e) => {
                let none = self.degrade_or(e, op, None)?;
                self.lookups(Lookup::Miss, 1);
                Ok(none)
            }
        }
    }

    /// Corrupt data under `key`: reported, then a miss or [`Error::Corrupt`] per the policy.
    fn corrupt<T>(&self, key: &str, reason: String) -> Result<Option<T>, Error> {
        let full = self.ns.full(key);
        self.handle.pattern_metrics().corrupt();
        tracing::warn!(key = loggable(&full), %reason, "cache: corrupt data under key");
        match self.degrade {
            Degrade::Miss => {
                self.lookups(Lookup::Miss, 1);
                Ok(None)
            }
            Degrade::Fail => Err(Error::Corrupt { key: full, reason }),
        }
    }

    /// `fallback` if the policy degrades `e` (counted under `op`), else `e`.
    fn degrade_or<T>(&self, e: Error, op: DegradedOp, fallback: T) -> Result<T, Error> {
        if self.degrade == Degrade::Miss && degradable(&e) {
            self.handle.pattern_metrics().degraded(op);
            tracing::debug!(op = ?op, error = %e, "cache: degraded without redis");
            Ok(fallback)
        } else {
            Err(e)
        }
    }

    fn lookups(&self, result: Lookup, n: usize) {
        self.handle.pattern_metrics().lookups(result, n as u64);
    }

    fn encode<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(value).map_err(|e| {
            Error::InvalidArgument(format!(
                "the value for cache key {:?} does not serialize to JSON: {e}",
                loggable(key)
            ))
        })
    }

    /// `SET <ns>:key json PX ttl`, per the policy.
    async fn write(&self, key: &str, json: &[u8], ttl: Duration) -> Result<(), Error> {
        match self.handle.set_ex(self.ns.local(key), json, ttl).await {
            Ok(()) => Ok(()),
            Err(e) => self.degrade_or(e, DegradedOp::CacheSet, ()),
        }
    }

    /// One `SCAN` step and the `UNLINK` of what it found: (next cursor, keys removed).
    async fn invalidate_step(
        &self,
        node: Option<&crate::config::NodeAddr>,
        cursor: u64,
        glob: &str,
    ) -> Result<(u64, u64), Error> {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(glob)
            .arg("COUNT")
            .arg(INVALIDATE_BATCH);
        let (next, keys): (u64, Vec<Vec<u8>>) = self.handle.cmd_at(node, scan, true).await?;
        if keys.is_empty() {
            return Ok((next, 0));
        }
        let mut unlink = redis::cmd("UNLINK");
        unlink.arg(&keys);
        let n: u64 = self.handle.cmd(unlink).await?;
        Ok((next, n))
    }

    /// Runs one single-flight load (in its own task) and publishes the outcome to `flight`.
    async fn load<T, E, Fut>(&self, flight: Flight, key: &str, fut: Fut, write_back: bool)
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        // Read again first: a caller whose read missed just before another flight for the key
        // wrote its value and ended would otherwise load it a second time. (Corrupt data, a
        // miss under `Degrade::Miss`, is loaded over.)
        let again = self.handle.get::<_, Option<Vec<u8>>>(self.ns.local(key));
        if write_back
            && let Ok(Some(bytes)) = again.await
            && serde_json::from_slice::<T>(&bytes).is_ok()
        {
            self.handle.pattern_metrics().coalesced();
            flight.finish(Ok(Arc::from(bytes)));
            return;
        }
        let outcome = self.run_loader(key, fut).await;
        let outcome = match outcome {
            Ok(json) if write_back => self.write(key, &json, self.ttl).await.map(|()| json),
            other => other,
        };
        flight.finish(outcome);
    }

    /// The loader's value as JSON, or the typed error, within the load timeout.
    async fn run_loader<T, E, Fut>(&self, key: &str, fut: Fut) -> Outcome
    where
        T: Serialize + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let metrics = self.handle.pattern_metrics();
        let task = tokio::spawn(fut);
        let abort = task.abort_handle();
        let loader_error = |source: Arc<dyn std::error::Error + Send + Sync>| Error::Loader {
            key: self.ns.full(key),
            source,
        };
        match tokio::time::timeout(self.load_timeout, task).await {
            Ok(Ok(Ok(value))) => {
                metrics.load(LoadOutcome::Ok);
                self.encode(key, &value).map(Arc::from)
            }
            Ok(Ok(Err(e))) => {
                metrics.load(LoadOutcome::Error);
                Err(loader_error(Arc::new(e)))
            }
            Ok(Err(_join)) => {
                metrics.load(LoadOutcome::Panic);
                Err(loader_error(Arc::new(LoadPanicked)))
            }
            Err(_elapsed) => {
                abort.abort();
                metrics.load(LoadOutcome::Timeout);
                Err(loader_error(Arc::new(LoadTimeout {
                    after: self.load_timeout,
                })))
            }
        }
    }
}
