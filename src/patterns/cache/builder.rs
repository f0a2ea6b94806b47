//! [`CacheBuilder`]: a cache's settings, checked once when it is built.

use std::sync::Arc;
use std::time::Duration;

use super::{Cache, DEFAULT_LOAD_TIMEOUT, DEFAULT_NAMESPACE, DEFAULT_TTL, Degrade, Inner};
use crate::error::{ConfigError, Error};
use crate::handle::RedisHandle;
use crate::patterns::keys::{Namespace, checked_ttl};
use crate::patterns::singleflight::Flights;

/// Builds a [`Cache`]; from [`Cache::builder`].
#[derive(Debug)]
#[must_use]
pub struct CacheBuilder {
    handle: RedisHandle,
    namespace: String,
    ttl: Duration,
    degrade: Degrade,
    load_timeout: Duration,
}

impl CacheBuilder {
    pub(super) fn new(handle: RedisHandle) -> Self {
        CacheBuilder {
            handle,
            namespace: DEFAULT_NAMESPACE.to_string(),
            ttl: DEFAULT_TTL,
            degrade: Degrade::default(),
            load_timeout: DEFAULT_LOAD_TIMEOUT,
        }
    }

    /// The namespace: every key is `<REDIS_KEY_PREFIX><namespace>:<key>`. Default
    /// [`DEFAULT_NAMESPACE`]. 1 to 256 bytes, no control characters; glob characters and colons
    /// are fine (invalidation escapes them).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The default TTL (millisecond precision, at least 1 ms; above [`MAX_TTL`](super::MAX_TTL) it is cut to
    /// it). Default [`DEFAULT_TTL`].
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// What to answer when Redis cannot. Default [`Degrade::Miss`].
    pub fn on_unavailable(mut self, degrade: Degrade) -> Self {
        self.degrade = degrade;
        self
    }

    /// The loader's own deadline in [`Cache::get_or_load`] (more than zero; `Duration::MAX`
    /// means none). Default [`DEFAULT_LOAD_TIMEOUT`].
    pub fn load_timeout(mut self, timeout: Duration) -> Self {
        self.load_timeout = timeout;
        self
    }

    /// The cache.
    ///
    /// ```no_run
    /// # fn run(handle: redis_supervisor::RedisHandle) -> Result<(), redis_supervisor::Error> {
    /// use std::time::Duration;
    /// let cache = redis_supervisor::cache::Cache::builder(handle)
    ///     .namespace("api")
    ///     .ttl(Duration::from_secs(60))
    ///     .build()?;
    /// # let _ = cache; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] naming the setting (`cache.namespace`, `cache.ttl`,
    /// `cache.load_timeout`) and its value: an empty, too long or control-character namespace, a
    /// TTL under 1 ms, a zero load timeout.
    pub fn build(self) -> Result<Cache, Error> {
        let ns = Namespace::new(&self.handle, "cache.namespace", &self.namespace)?;
        let ttl = checked_ttl(self.ttl).map_err(|reason| {
            Error::Config(ConfigError::new(
                "cache.ttl",
                format!("{:?}", self.ttl),
                reason,
            ))
        })?;
        if self.load_timeout.is_zero() {
            return Err(Error::Config(ConfigError::new(
                "cache.load_timeout",
                "0ns",
                "must be more than zero",
            )));
        }
        Ok(Cache {
            inner: Arc::new(Inner {
                handle: self.handle,
                ns,
                ttl,
                degrade: self.degrade,
                load_timeout: self.load_timeout,
                flights: Arc::new(Flights::default()),
            }),
        })
    }
}
