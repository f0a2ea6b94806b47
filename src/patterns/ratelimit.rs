//! A rate limiter over a [`RedisHandle`]: GCRA (the generic cell rate algorithm, a token bucket
//! without a refill timer) in one atomic server-side script, one key per client, O(1) time and
//! memory per check, on the server's clock (`TIME`), so application clocks may disagree. A tower
//! layer for axum answers 429 ([`RateLimitLayer`]).
//!
//! ```no_run
//! use redis_supervisor::ratelimit::{Decision, OnUnavailable, Rate, RateLimiter};
//!
//! # async fn run(supervisor: redis_supervisor::Supervisor) -> Result<(), redis_supervisor::Error> {
//! let limiter = RateLimiter::builder(supervisor.handle())
//!     .namespace("rl")
//!     .rate(Rate::per_minute(100))            // per_second / per_minute / per_hour / new(n, period)
//!     .burst(20)                              // capacity: 20 at once, then one every 600 ms
//!     .on_unavailable(OnUnavailable::Allow)   // fail-open, or OnUnavailable::Deny
//!     .build()?;
//! let d: Decision = limiter.check("user:7").await?;
//! if !d.allowed {
//!     println!("retry in {:?}", d.retry_after);
//! }
//! # Ok(()) }
//! ```
//!
//! # The burst convention
//!
//! A [`Rate`] of `n` per `period` lets one request through every `period / n` (the *emission
//! interval*) on average. The **burst is the capacity**: a client that has been idle long enough
//! may send `burst` requests at once; after that, one more each emission interval. The default
//! burst is `n` (as in go-redis/redis_rate): `Rate::per_second(10)` allows 10 at once, then one
//! every 100 ms. `check_n(key, cost)` takes `cost` tokens at once; a cost above the burst can
//! never pass and is denied with `retry_after: None`; a cost of 0 only reads the state.
//!
//! # Keys and state
//!
//! A client key `k` is stored as `<REDIS_KEY_PREFIX><namespace>:k`, holding one number (the
//! "theoretical arrival time", µs on the server's clock) that expires (`PX`) when the bucket would
//! be full again: an idle client costs nothing.
//!
//! # Delivery and degradation
//!
//! The script is loaded once per server and run by its SHA (`EVALSHA`); when the server does not
//! have it — after a server restart and after `SCRIPT FLUSH` alike (`NOSCRIPT`: it did not run)
//! — it is sent once more with its body (`EVAL`). A check is **not** replay-safe (a replay
//! would take the tokens twice), so it is never sent again after a lost connection: that is
//! [`Error::Ambiguous`]. "Redis could not answer" (unavailable, timeout, ambiguous, overloaded,
//! shutting down) is then the [`OnUnavailable`] policy's: `Allow` answers a fail-open
//! [`Decision`] (`allowed: true, remaining: 0, retry_after: None, reset_after: 0`), counted as
//! `degraded` (see [Metrics](#metrics)); `Deny` returns the error. Either way the answer comes
//! within the handle's deadline.
//!
//! # On a Redis Cluster
//!
//! One key per check: the limiter works on a cluster as on one server.
//!
//! # Metrics
//!
//! `redis_client_ratelimit_checks_total{decision}`, each value at 0 from the start: `allowed`,
//! `denied`, `degraded` (answered by [`OnUnavailable::Allow`] without Redis; also counted in
//! `redis_client_degraded_ops_total{op="ratelimit_check"}`), `error` (the caller got an error).
//! The Grafana dashboard's "Patterns" row shows them, and the alert
//! `RedisRateLimiterFailingOpen` fires on `degraded`.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use super::keys::{Namespace, degradable};
use super::script::Lua;
use crate::error::{ConfigError, Error};
use crate::handle::RedisHandle;
use crate::metrics::{Check, DegradedOp};

pub use super::layer::{RateLimitLayer, RateLimitService};

/// The namespace when the builder is given none.
pub const DEFAULT_NAMESPACE: &str = "ratelimit";

/// The GCRA script. KEYS[1]: the client's key. ARGV: burst, emission interval (µs), cost.
/// Returns `{allowed, remaining, retry_after_us or -1, reset_after_us}`, numbers as strings (Lua
/// numbers are doubles; strings keep large values intact).
const GCRA_LUA: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local burst = tonumber(ARGV[1])
local emission = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '')
if tat == nil or tat < now then tat = now end
local function fmt(x) return string.format('%.0f', x) end
-- Tokens left if the bucket's theoretical arrival time were `at` (with `spent` more taken):
-- burst - spent + (now - at) / emission, written so that no two huge numbers are subtracted
-- (doubles would lose the small difference between them).
local function tokens(at, spent)
  return math.max(math.floor((burst - spent) + (now - at) / emission + 1e-6), 0)
end
if cost > burst then
  return {0, fmt(tokens(tat, 0)), '-1', fmt(tat - now)}
end
-- Allowed when tat + emission * cost - emission * burst <= now, i.e. diff >= 0:
local diff = (now - tat) + emission * (burst - cost)
if diff < 0 then
  return {0, fmt(tokens(tat, 0)), fmt(math.ceil(-diff)), fmt(tat - now)}
end
local new_tat = tat + emission * cost
if cost > 0 then
  local ttl = math.min(math.ceil((new_tat - now) / 1000), 1e15)
  redis.call('SET', KEYS[1], fmt(new_tat), 'PX', fmt(math.max(ttl, 1)))
end
return {1, fmt(tokens(tat, cost)), '-1', fmt(new_tat - now)}
"#;

static GCRA: LazyLock<Lua> = LazyLock::new(|| Lua::new(GCRA_LUA));

/// The Lua source of the limiter's script (for running it yourself, e.g. in a benchmark).
pub fn script_source() -> &'static str {
    GCRA_LUA
}

/// `n` requests per `period`, on average.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    n: u64,
    period: Duration,
}

impl Rate {
    /// `n` per `period` (validated when the limiter is built: `n` ≥ 1, `period` > 0).
    pub const fn new(n: u64, period: Duration) -> Rate {
        Rate { n, period }
    }

    /// `n` per second.
    pub const fn per_second(n: u64) -> Rate {
        Rate::new(n, Duration::from_secs(1))
    }

    /// `n` per minute.
    pub const fn per_minute(n: u64) -> Rate {
        Rate::new(n, Duration::from_secs(60))
    }

    /// `n` per hour.
    pub const fn per_hour(n: u64) -> Rate {
        Rate::new(n, Duration::from_secs(3600))
    }

    /// Requests per period.
    pub const fn n(&self) -> u64 {
        self.n
    }

    /// The period.
    pub const fn period(&self) -> Duration {
        self.period
    }

    /// The emission interval `period / n` in µs (fractions kept).
    fn emission_us(&self) -> f64 {
        self.period.as_secs_f64() * 1e6 / self.n as f64
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} per {:?}", self.n, self.period)
    }
}

/// What a check answers when Redis cannot (see the [module docs](self#delivery-and-degradation)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnUnavailable {
    /// Fail open: the request is allowed (default; counted as degraded).
    #[default]
    Allow,
    /// Fail closed: the check returns the handle's error ([`Error::Unavailable`], …).
    Deny,
}

/// The answer to one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go ahead (its tokens were taken).
    pub allowed: bool,
    /// Whole tokens left: after this request if allowed; if denied, those available now (fewer
    /// than the cost).
    pub remaining: u64,
    /// When denied: how long until the same cost would be allowed. `None` when allowed, and when
    /// the cost exceeds the burst (it never will be).
    pub retry_after: Option<Duration>,
    /// How long until the bucket is full again (the key expires then).
    pub reset_after: Duration,
}

impl Decision {
    /// The fail-open answer of [`OnUnavailable::Allow`].
    const FAIL_OPEN: Decision = Decision {
        allowed: true,
        remaining: 0,
        retry_after: None,
        reset_after: Duration::ZERO,
    };
}

/// Builds a [`RateLimiter`]; from [`RateLimiter::builder`].
#[derive(Debug)]
#[must_use]
pub struct RateLimiterBuilder {
    handle: RedisHandle,
    namespace: String,
    rate: Option<Rate>,
    burst: Option<u64>,
    on_unavailable: OnUnavailable,
}

impl RateLimiterBuilder {
    /// The namespace: every key is `<REDIS_KEY_PREFIX><namespace>:<key>`. Default
    /// [`DEFAULT_NAMESPACE`]; 1 to 256 bytes, no control characters.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The rate (required).
    pub fn rate(mut self, rate: Rate) -> Self {
        self.rate = Some(rate);
        self
    }

    /// The capacity: how many requests may pass at once (at least 1). Default: the rate's `n`.
    pub fn burst(mut self, burst: u64) -> Self {
        self.burst = Some(burst);
        self
    }

    /// What to answer when Redis cannot. Default [`OnUnavailable::Allow`].
    pub fn on_unavailable(mut self, policy: OnUnavailable) -> Self {
        self.on_unavailable = policy;
        self
    }

    /// The limiter.
    ///
    /// ```no_run
    /// # fn run(handle: redis_supervisor::RedisHandle) -> Result<(), redis_supervisor::Error> {
    /// use redis_supervisor::ratelimit::{Rate, RateLimiter};
    /// let limiter = RateLimiter::builder(handle).rate(Rate::per_second(10)).build()?;
    /// # let _ = limiter; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] naming the setting (`ratelimit.rate`, `ratelimit.burst`,
    /// `ratelimit.namespace`) and its value: no rate, a rate of 0 or over a zero period, a
    /// burst of 0, a bad namespace.
    pub fn build(self) -> Result<RateLimiter, Error> {
        let ns = Namespace::new(&self.handle, "ratelimit.namespace", &self.namespace)?;
        let bad = |setting: &str, value: String, reason: &str| {
            Error::Config(ConfigError::new(setting, value, reason))
        };
        let rate = self
            .rate
            .ok_or_else(|| bad("ratelimit.rate", "none".into(), "a rate is required"))?;
        if rate.n == 0 {
            return Err(bad(
                "ratelimit.rate",
                rate.to_string(),
                "must allow at least 1 request per period",
            ));
        }
        if rate.period.is_zero() {
            return Err(bad(
                "ratelimit.rate",
                rate.to_string(),
                "the period must be more than zero",
            ));
        }
        let burst = self.burst.unwrap_or(rate.n);
        if burst == 0 {
            return Err(bad("ratelimit.burst", "0".into(), "must be at least 1"));
        }
        Ok(RateLimiter {
            inner: Arc::new(Inner {
                handle: self.handle,
                ns,
                rate,
                burst,
                burst_arg: burst.to_string(),
                emission_arg: rate.emission_us().to_string(),
                on_unavailable: self.on_unavailable,
            }),
        })
    }
}

/// A GCRA rate limiter under one namespace (see the [module docs](self)). Cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    handle: RedisHandle,
    ns: Namespace,
    rate: Rate,
    burst: u64,
    burst_arg: String,
    emission_arg: String,
    on_unavailable: OnUnavailable,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("namespace", &self.inner.ns)
            .field("rate", &self.inner.rate)
            .field("burst", &self.inner.burst)
            .field("on_unavailable", &self.inner.on_unavailable)
            .finish()
    }
}

impl RateLimiter {
    /// A builder for a limiter over `handle` (its deadline bounds every check).
    pub fn builder(handle: RedisHandle) -> RateLimiterBuilder {
        RateLimiterBuilder {
            handle,
            namespace: DEFAULT_NAMESPACE.to_string(),
            rate: None,
            burst: None,
            on_unavailable: OnUnavailable::default(),
        }
    }

    /// The rate.
    pub fn rate(&self) -> Rate {
        self.inner.rate
    }

    /// The burst (capacity).
    pub fn burst(&self) -> u64 {
        self.inner.burst
    }

    /// Takes one token for `key`.
    ///
    /// ```no_run
    /// # async fn run(limiter: redis_supervisor::ratelimit::RateLimiter) -> Result<(), redis_supervisor::Error> {
    /// let d = limiter.check("ip:203.0.113.7").await?;
    /// println!("allowed {} remaining {}", d.allowed, d.remaining);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`check_n`](Self::check_n).
    pub async fn check(&self, key: &str) -> Result<Decision, Error> {
        self.check_n(key, 1).await
    }

    /// Takes `cost` tokens for `key` at once, or none if they are not all there. A cost above
    /// the burst is denied with `retry_after: None`; a cost of 0 reads the state without taking
    /// anything (allowed, with the tokens available now).
    ///
    /// ```no_run
    /// # async fn run(limiter: redis_supervisor::ratelimit::RateLimiter) -> Result<(), redis_supervisor::Error> {
    /// let d = limiter.check_n("upload:7", 5).await?;
    /// # let _ = d; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Under [`OnUnavailable::Deny`], the handle's error when Redis cannot answer (a connection
    /// lost with the check in flight is [`Error::Ambiguous`]); under either policy, a server error
    /// reply (e.g. `WRONGTYPE` when the key holds something else, `NOPERM`) as
    /// [`Error::Server`], and [`Error::ReplyType`] if the reply is not the script's.
    pub async fn check_n(&self, key: &str, cost: u64) -> Result<Decision, Error> {
        let inner = &*self.inner;
        let metrics = inner.handle.pattern_metrics();
        match inner.run(&inner.ns.full(key), cost).await {
            Ok(d) => {
                metrics.check(if d.allowed {
                    Check::Allowed
                } else {
                    Check::Denied
                });
                Ok(d)
            }
            Err(e) if inner.on_unavailable == OnUnavailable::Allow && degradable(&e) => {
                metrics.check(Check::Degraded);
                metrics.degraded(DegradedOp::RatelimitCheck);
                tracing::debug!(error = %e, "ratelimit: allowed without redis");
                Ok(Decision::FAIL_OPEN)
            }
            Err(e) => {
                metrics.check(Check::Error);
                Err(e)
            }
        }
    }
}

impl Inner {
    /// Runs the script (by SHA, by body on `NOSCRIPT`); never replayed.
    async fn run(&self, key: &str, cost: u64) -> Result<Decision, Error> {
        let reply = GCRA
            .run(&self.handle, false, |cmd| {
                cmd.arg(1)
                    .arg(key)
                    .arg(&self.burst_arg)
                    .arg(&self.emission_arg)
                    .arg(cost);
            })
            .await?;
        decision(reply)
    }
}

/// The script's reply as a [`Decision`]; out-of-range numbers saturate.
fn decision(
    (allowed, remaining, retry, reset): (i64, String, String, String),
) -> Result<Decision, Error> {
    let num = |s: &str| {
        s.parse::<f64>().map_err(|_| {
            Error::ReplyType(format!("rate limit script returned {s:?}, not a number"))
        })
    };
    let micros = |v: f64| Duration::from_micros(v.max(0.0) as u64);
    let retry = num(&retry)?;
    Ok(Decision {
        allowed: allowed == 1,
        remaining: num(&remaining)?.max(0.0) as u64,
        retry_after: (retry >= 0.0).then(|| micros(retry)),
        reset_after: micros(num(&reset)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_parse_and_saturate() {
        let d = decision((1, "9".into(), "-1".into(), "100000".into())).unwrap();
        assert_eq!(
            d,
            Decision {
                allowed: true,
                remaining: 9,
                retry_after: None,
                reset_after: Duration::from_millis(100)
            }
        );
        let huge = decision((0, "1e30".into(), "5".into(), "1e40".into())).unwrap();
        assert_eq!(huge.remaining, u64::MAX);
        assert_eq!(huge.retry_after, Some(Duration::from_micros(5)));
        assert_eq!(huge.reset_after, Duration::from_micros(u64::MAX));
        assert!(decision((0, "x".into(), "0".into(), "0".into())).is_err());
    }

    #[test]
    fn emission_interval() {
        assert_eq!(Rate::per_second(10).emission_us(), 100_000.0);
        assert_eq!(Rate::per_minute(100).emission_us(), 600_000.0);
        assert_eq!(Rate::per_hour(1).emission_us(), 3.6e9);
    }
}
