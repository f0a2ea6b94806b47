//! Configuration: one [`Config`] from a URL, the environment or a builder, validated once at
//! build time, secrets redacted in every `Debug`, `Display` and error. Each setting is one row
//! of the `settings!` table below (everything about it follows from that row); [`ENV_VARS`]
//! lists the variables, each with its meaning and default. Every error names the variable as
//! read and its value (`***` if secret).
//!
//! **A second Redis.** [`Config::from_env_prefixed`]`("CACHE")` reads the same variables with
//! `CACHE_` in front (`CACHE_REDIS_URL`, `CACHE_REDIS_HOST`, …); start a second
//! [`Supervisor`](crate::Supervisor) on them. It is named after the prefix in lower case unless
//! `CACHE_REDIS_CLIENT_NAME` says otherwise, so the `client` metric label tells the two apart.
//!
//! **Precedence**, lowest first: defaults; the parts of `REDIS_URL`; `REDIS_PASSWORD_FILE`; the
//! individual variables or builder settings. An empty user name, password or path counts as not
//! given (compose's `REDIS_PASSWORD=${REDIS_PASSWORD}`): it never erases a lower layer.
//!
//! **Bounds**: durations are more than zero and at most [`MAX_DURATION`]; counts are bounded
//! too (`REDIS_HEALTH_FAILURES` 1 to [`MAX_HEALTH_FAILURES`], `REDIS_LANES` 1 to [`MAX_LANES`],
//! …), so every derived value fits. A value out of range, or a number too large for its type
//! (or for 64 bits), is an [`Error::Config`](crate::Error::Config) naming the variable, never a
//! panic or a silent wrap-around.
//!
//! **URLs**: `redis[s]://[user[:password]@]host[:port][/db]`. The crate speaks RESP3 only, so it
//! needs Redis ≥ 6: the one query parameter accepted is `protocol=resp3` (or `protocol=3`),
//! which changes nothing; `?protocol=resp2`, any other parameter and a `#fragment` are refused.
//!
//! # Names on the server
//!
//! The connections are named after [`Config::name`] (`REDIS_CLIENT_NAME`) with
//! `CLIENT SETNAME`: `redis-supervisor:NAME` for the command connection
//! (`redis-supervisor:NAME:lane<i>` with several [lanes](Config::lanes)), and
//! `redis-supervisor:NAME:pubsub`, `…:blocking` and `…:leased` for the dedicated ones, so
//! `CLIENT LIST` shows whose they are.
//!
//! # Backoff
//!
//! The reconnect delay grows from `REDIS_BACKOFF_BASE_MS` to `REDIS_BACKOFF_MAX_MS` by
//! [`Config::backoff_factor`] per attempt, with ±20 % jitter ([`Config::backoff_jitter`], 0.2 by
//! default) on top of the cap too: the longest delay is `max × 1.2` (see [`BackoffPolicy`]).
//! That is the latest the next attempt comes: when an attempt on one server (not Sentinel or
//! Cluster) was refused at the TCP level, nothing listens there, and the port is tried with a
//! bare TCP connect every 25 ms; the attempt comes once it accepts, after a random pause of up
//! to 50 ms. A server that answers and fails (credentials, accept-and-drop, loading) waits its
//! whole delay.
//!
//! # Addresses
//!
//! `REDIS_SENTINELS` and `REDIS_CLUSTER_NODES` take `host:port,host:port`, each port explicit, an
//! IPv6 address in brackets (`[::1]:26379`). With `REDIS_CLUSTER_READ_FROM_REPLICAS`, the
//! replicas serve reads in `READONLY` mode.
//!
//! # TLS
//!
//! rustls with **ring** as the only crypto provider in the dependency tree (the Prometheus
//! exporter's default features, which would add aws-lc-rs, are off); the supervisor installs
//! ring as the process default at start unless the application installed a provider first. The
//! CA bundle, client certificate and key are read and checked when the `Config` is built, so a
//! wrong file fails at start, not at connect. TLS applies to the sentinels and every cluster
//! node as to a standalone server.
//!
//! # Where each group of settings is explained
//!
//! - Lanes, Sentinel and Redis Cluster: the [`supervisor`](crate::supervisor) module docs
//!   ([Lanes](crate::supervisor#lanes), [Sentinel](crate::supervisor#sentinel),
//!   [Redis Cluster](crate::supervisor#redis-cluster)).
//! - `REDIS_WAIT_REPLICAS`, `REDIS_WAIT_TIMEOUT_MS`:
//!   [`RedisHandle::wait_replicas`](crate::RedisHandle::wait_replicas).
//! - `REDIS_LEASED_CONNECTIONS`: [`RedisHandle::transaction`](crate::RedisHandle::transaction).
//! - `REDIS_BLOCKING_CONNECTIONS`: the [`handle`](crate::handle#blocking-commands) module docs
//!   ("Blocking commands").
//! - `REDIS_PUBSUB_BUFFER`: [`pubsub`](crate::pubsub).
//! - The health settings: [`health`](crate::health).
//! - The service binary adds `LISTEN_ADDR` (also `--listen ADDR`; default `127.0.0.1:9180`) and
//!   `RUST_LOG` (default `info`): see `docs/operations.md` in the repository.

mod env;
mod nodes;
mod tls;
mod url;
#[macro_use]
mod value;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub use self::nodes::{NodeAddr, Nodes};
pub use self::url::redact_url;
use self::value::{Sourced, count, ensure};
use crate::backoff::{
    BackoffPolicy, DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_FACTOR, DEFAULT_BACKOFF_JITTER,
    DEFAULT_BACKOFF_MAX,
};
pub use crate::error::ConfigError;

/// Default server URL: `redis://127.0.0.1:6379`.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// Default host: `127.0.0.1`.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// Default supervisor name (the `client` metric label): `default`.
pub const DEFAULT_NAME: &str = "default";
/// The longest any duration setting may be: 24 h, so no deadline or derived sum can overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// The most consecutive failed probes [`Config::health_failures`] may wait for: 1 000.
pub const MAX_HEALTH_FAILURES: u32 = 1_000;
/// The largest [`Config::restart_intensity`]: 10 000 (the supervisor keeps that many instants).
pub const MAX_RESTART_INTENSITY: u32 = 10_000;
/// The largest [`Config::max_attempts`]: 1 000 000.
pub const MAX_ATTEMPTS_BOUND: u32 = 1_000_000;
/// The largest [`Config::max_waiting`]: 1 000 000.
pub const MAX_WAITING_BOUND: usize = 1_000_000;
/// The largest [`Config::lanes`]: 16.
pub const MAX_LANES: usize = 16;
/// The largest [`Config::pubsub_buffer`]: 1 000 000 events per subscription.
pub const MAX_PUBSUB_BUFFER: usize = 1_000_000;
/// The largest [`Config::blocking_connections`] and [`Config::leased_connections`]: 1 024.
pub const MAX_BLOCKING_CONNECTIONS: usize = 1_024;

/// What a command does while the connection is not up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OfflinePolicy {
    /// Wait for the connection until the command's own deadline, then fail with
    /// [`Error::Unavailable`](crate::Error::Unavailable).
    #[default]
    Wait,
    /// Fail at once with [`Error::Unavailable`](crate::Error::Unavailable).
    FailFast,
}

impl FromStr for OfflinePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "wait" => Ok(Self::Wait),
            "fail-fast" | "failfast" | "fail_fast" => Ok(Self::FailFast),
            _ => Err("expected `wait` or `fail-fast`".to_string()),
        }
    }
}

impl fmt::Display for OfflinePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Wait => "wait",
            Self::FailFast => "fail-fast",
        })
    }
}

/// A password or token: its `Debug` and `Display` print `***`, never the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself, for the one place that must send it (AUTH).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Generates, from one row per setting, the stored field and its default (and the public
/// `DEFAULT_*` constant, if the row names one; its type must then be a plain name), the
/// builder's slot, the getter and setter (documented by the row, typed by `by_type!`), the
/// checks (the type's, then the row's), the variable's parsing, `Debug` and [`ENV_VARS`].
macro_rules! settings {
    ($(
        #[doc = $doc:literal]
        $f:ident: $t:ident $(<$i:ident>)? = $(pub $const:ident =)? $default:expr,
        $(env $env:literal,)? default $dd:literal $(, check $check:expr)?;
    )*) => {
        $($(#[doc = concat!("Default [`Config::", stringify!($f), "`]: ", $dd, ".")]
        pub const $const: $t = $default;)?)*

        /// Every validated setting, as stored.
        #[derive(Clone)]
        struct Settings { $($f: $t $(<$i>)?,)* }

        impl Default for Settings {
            fn default() -> Self { Self { $($f: $default,)* } }
        }

        /// The settings one source gives (builder or environment, URL), each with where it came
        /// from; an empty value is never stored (see [`Sourced::given`]).
        #[derive(Clone, Debug, Default)]
        struct Layer { $($f: Option<Sourced<$t $(<$i>)?>>,)* }

        impl Layer {
            /// This layer over `lower`: a setting given here wins.
            fn over(self, lower: Layer) -> Layer {
                Layer { $($f: self.$f.or(lower.$f),)* }
            }

            /// Checks each given value; the given values, and the defaults for the rest.
            fn settle(&self) -> Result<Settings, ConfigError> {
                let d = Settings::default();
                Ok(Settings { $($f: match &self.$f {
                    Some(s) => s.checked(&[$($check)?])?,
                    None => d.$f,
                },)* })
            }

            /// Reads the variables through `get`, which returns the (prefixed) name and text.
            fn read_env(
                &mut self,
                get: impl Fn(&str) -> Option<(String, String)>,
            ) -> Result<(), ConfigError> {
                $($(if let Some((var, raw)) = get($env) {
                    self.$f = env::parse(&var, &raw)?;
                })?)*
                Ok(())
            }
        }

        impl Config {
            $(#[doc = $doc] pub fn $f(&self) -> by_type!(get $t $(<$i>)?) {
                by_type!(view self.s.$f; $t $(<$i>)?)
            })*
        }

        impl ConfigBuilder {
            $(#[doc = $doc] pub fn $f(mut self, v: by_type!(arg $t $(<$i>)?)) -> Self {
                let value: $t $(<$i>)? = by_type!(conv v; $t $(<$i>)?);
                self.layer.$f = Sourced::from_builder(value, stringify!($f));
                self
            })*
        }

        impl fmt::Debug for Config {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let url = self.redacted_url();
                f.debug_struct("Config").field("url", &url)$(.field(stringify!($f), &self.s.$f))*.finish()
            }
        }

        /// Every environment variable [`Config::from_env`] reads (unprefixed), in table order:
        ///
        /// | variable | meaning | default |
        /// |---|---|---|
        /// | `REDIS_URL` | `redis://[user[:password]@]host[:port][/db]`; the variables below override its parts | `redis://127.0.0.1:6379` |
        $($(#[doc = concat!("| `", $env, "` |", $doc, " | ", $dd, " |")])?)*
        pub const ENV_VARS: &[&str] = &["REDIS_URL", $($($env,)?)*];
    };
}

settings! {
    /// The supervisor name: the `client` metric label and `CLIENT SETNAME` suffix (1-64 letters, digits, `_ . : -`).
    name: String = DEFAULT_NAME.into(), env "REDIS_CLIENT_NAME", default "`default`, or the prefix", check |n| value::name(n);
    /// Server host name or IP (not empty).
    host: String = DEFAULT_HOST.into(), env "REDIS_HOST", default "`127.0.0.1`",
        check |h| ensure(!h.trim().is_empty(), "host must not be empty");
    /// Server port (1-65535).
    port: u16 = pub DEFAULT_PORT = 6379, env "REDIS_PORT", default "`6379`", check |p| ensure(*p != 0, "port must be 1-65535");
    /// Whether TLS is used, verifying the server certificate (as a `rediss://` URL does).
    tls: bool = false, env "REDIS_TLS", default "`false`";
    /// ACL user name, if any.
    username: Option<String> = None, env "REDIS_USERNAME", default "none";
    /// The password, if any (kept as a [`Secret`]: its `Debug`/`Display` print `***`).
    password: Option<Secret> = None, env "REDIS_PASSWORD", default "none";
    /// A file holding the password (a mounted container secret; trailing newline trimmed); an explicit password wins.
    password_file: Option<PathBuf> = None, env "REDIS_PASSWORD_FILE", default "none";
    /// Database number (≥ 0).
    db: i64 = 0, env "REDIS_DB", default "`0`", check |d| ensure(*d >= 0, "database must be a non-negative integer");
    /// The CA bundle (PEM) trusted instead of the system roots (TLS only).
    tls_ca_file: Option<PathBuf> = None, env "REDIS_TLS_CA_FILE", default "system roots";
    /// The client certificate (PEM) for mutual TLS; needs the key file too.
    tls_cert_file: Option<PathBuf> = None, env "REDIS_TLS_CERT_FILE", default "none";
    /// The client key (PEM) for mutual TLS (only its path is ever shown); needs the certificate too.
    tls_key_file: Option<PathBuf> = None, env "REDIS_TLS_KEY_FILE", default "none";
    /// **Insecure**: accept any server certificate (tests and emergencies; logged as a warning, `/health/redis` shows `"tls_verify": false`).
    tls_insecure_skip_verify: bool = false, env "REDIS_TLS_INSECURE_SKIP_VERIFY", default "`false`";
    /// Prefix prepended to every key by the typed commands of [`RedisHandle`](crate::RedisHandle) (not by raw `cmd`).
    key_prefix: String = String::new(), env "REDIS_KEY_PREFIX", default "empty";
    /// Limit on TCP connect plus handshake (HELLO, AUTH, SELECT, CLIENT SETNAME, INFO).
    connect_timeout: Duration = pub DEFAULT_CONNECT_TIMEOUT = Duration::from_secs(2), env "REDIS_CONNECT_TIMEOUT_MS", default "2 s";
    /// Default command deadline; override per call with [`RedisHandle::with_timeout`](crate::RedisHandle::with_timeout).
    command_timeout: Duration = pub DEFAULT_COMMAND_TIMEOUT = Duration::from_secs(1), env "REDIS_COMMAND_TIMEOUT_MS", default "1 s";
    /// First reconnect delay (≤ the cap).
    backoff_base: Duration = DEFAULT_BACKOFF_BASE, env "REDIS_BACKOFF_BASE_MS", default "50 ms";
    /// Cap on the reconnect delay (≥ the base).
    backoff_max: Duration = DEFAULT_BACKOFF_MAX, env "REDIS_BACKOFF_MAX_MS", default "2 s";
    /// Reconnect delay growth per attempt (finite, ≥ 1).
    backoff_factor: f64 = DEFAULT_BACKOFF_FACTOR, default "2", check |f| ensure(f.is_finite() && *f >= 1.0, "must be a finite number >= 1");
    /// Relative reconnect delay jitter, in `[0, 1)`.
    backoff_jitter: f64 = DEFAULT_BACKOFF_JITTER, default "0.2", check |j| ensure((0.0..1.0).contains(j), "must be in [0, 1)");
    /// Uptime after which the backoff resets.
    stable_period: Duration = pub DEFAULT_STABLE_PERIOD = Duration::from_secs(5), env "REDIS_STABLE_PERIOD_MS", default "5 s";
    /// What commands do while the connection is down: `wait` or `fail-fast`.
    offline_policy: OfflinePolicy = pub DEFAULT_OFFLINE_POLICY = OfflinePolicy::Wait, env "REDIS_OFFLINE_POLICY", default "`wait`";
    /// Longest wait for in-flight commands during [`Supervisor::shutdown`](crate::Supervisor::shutdown).
    shutdown_timeout: Duration = pub DEFAULT_SHUTDOWN_TIMEOUT = Duration::from_secs(5), env "REDIS_SHUTDOWN_TIMEOUT_MS", default "5 s";
    /// Interval between health probes (`PING`).
    health_interval: Duration = pub DEFAULT_HEALTH_INTERVAL = Duration::from_secs(1), env "REDIS_HEALTH_INTERVAL_MS", default "1 s";
    /// Timeout of one health probe (≤ the interval; unset, the default or the interval, whichever is shorter).
    health_timeout: Duration = pub DEFAULT_HEALTH_TIMEOUT = Duration::from_millis(500), env "REDIS_HEALTH_TIMEOUT_MS", default "500 ms";
    /// Consecutive failed probes after which the connection is replaced (1 to [`MAX_HEALTH_FAILURES`]).
    health_failures: u32 = pub DEFAULT_HEALTH_FAILURES = 3, env "REDIS_HEALTH_FAILURES", default "3",
        check |n| count(*n, MAX_HEALTH_FAILURES.into());
    /// Probe latency above which the connection is `Degraded`.
    health_slow: Duration = pub DEFAULT_HEALTH_SLOW = Duration::from_millis(250), env "REDIS_HEALTH_SLOW_MS", default "250 ms";
    /// Interval between `INFO` reads (the server gauges).
    info_interval: Duration = pub DEFAULT_INFO_INTERVAL = Duration::from_secs(10), env "REDIS_INFO_INTERVAL_MS", default "10 s";
    /// Connections lost within the restart window beyond which a restart storm is declared (1 to [`MAX_RESTART_INTENSITY`]).
    restart_intensity: u32 = pub DEFAULT_RESTART_INTENSITY = 5, env "REDIS_RESTART_INTENSITY", default "5",
        check |n| count(*n, MAX_RESTART_INTENSITY.into());
    /// The restart-intensity window.
    restart_window: Duration = pub DEFAULT_RESTART_WINDOW = Duration::from_secs(60), env "REDIS_RESTART_WINDOW_MS", default "60 s";
    /// Consecutive failed attempts after which the supervisor gives up for good (`None` or `0`: never; at most [`MAX_ATTEMPTS_BOUND`]).
    max_attempts: Option<u32> = None, env "REDIS_MAX_ATTEMPTS", default "never",
        check |n| n.map_or(Ok(()), |n| count(n.max(1), MAX_ATTEMPTS_BOUND.into()));
    /// Commands that may wait for the connection at once; more get [`Error::Overloaded`](crate::Error::Overloaded) (1 to [`MAX_WAITING_BOUND`]).
    max_waiting: usize = pub DEFAULT_MAX_WAITING = 10_000, env "REDIS_MAX_WAITING", default "10 000",
        check |n| count(*n, MAX_WAITING_BOUND as u64);
    /// Connections (lanes) commands are spread over, each supervised alone; a command goes to the one with the fewest outstanding (1 to [`MAX_LANES`]; when more than one pays off: the [supervisor docs' Lanes section](crate::supervisor#lanes)).
    lanes: usize = pub DEFAULT_LANES = 1, env "REDIS_LANES", default "1",
        check |n| count(*n, MAX_LANES as u64);
    /// Events one pub/sub [`Subscription`](crate::pubsub::Subscription) buffers for its reader; beyond it messages are dropped for that subscription alone and reported as [`Lagged`](crate::pubsub::PubSubEvent::Lagged) (1 to [`MAX_PUBSUB_BUFFER`]).
    pubsub_buffer: usize = pub DEFAULT_PUBSUB_BUFFER = 1_024, env "REDIS_PUBSUB_BUFFER", default "1 024",
        check |n| count(*n, MAX_PUBSUB_BUFFER as u64);
    /// Sentinel addresses (`host:port,host:port`, each port explicit): the master named by [`sentinel_master`](Config::sentinel_master) is found through them (the URL's host and port are then unused) and followed across failovers.
    sentinels: Nodes = Nodes::EMPTY, env "REDIS_SENTINELS", default "none";
    /// The master name the sentinels monitor (required with [`sentinels`](Config::sentinels)).
    sentinel_master: Option<String> = None, env "REDIS_SENTINEL_MASTER", default "none";
    /// ACL user for the sentinels (the data nodes use [`username`](Config::username)).
    sentinel_username: Option<String> = None, env "REDIS_SENTINEL_USERNAME", default "none";
    /// Password for the sentinels (kept as a [`Secret`]; the data nodes use [`password`](Config::password)).
    sentinel_password: Option<Secret> = None, env "REDIS_SENTINEL_PASSWORD", default "none";
    /// Redis Cluster seed nodes (`host:port,host:port`, each port explicit): commands are routed by slot across the cluster these nodes belong to (the URL's host and port are then unused; its credentials, database 0 and TLS apply to every node). Not with [`sentinels`](Config::sentinels).
    cluster_nodes: Nodes = Nodes::EMPTY, env "REDIS_CLUSTER_NODES", default "none";
    /// With [`cluster_nodes`](Config::cluster_nodes): read-only commands (`GET`, `MGET`, `EXISTS`, …) may be served by replicas (which can be behind their primary); the health actor then probes the replicas too.
    cluster_read_from_replicas: bool = false, env "REDIS_CLUSTER_READ_FROM_REPLICAS", default "`false`";
    /// Dedicated connections for blocking commands (`BLPOP` & co.), opened on demand; callers beyond it wait within their deadline, then get [`Error::Overloaded`](crate::Error::Overloaded) (1 to [`MAX_BLOCKING_CONNECTIONS`]).
    blocking_connections: usize = pub DEFAULT_BLOCKING_CONNECTIONS = 16, env "REDIS_BLOCKING_CONNECTIONS", default "16",
        check |n| count(*n, MAX_BLOCKING_CONNECTIONS as u64);
    /// Replicas every write must reach before it is answered `Ok` (`WAIT` after it, on a leased connection); fewer within [`wait_timeout`](Config::wait_timeout) is [`Error::NotReplicated`](crate::Error::NotReplicated). Per handle: [`RedisHandle::wait_replicas`](crate::RedisHandle::wait_replicas). `0`: off (0 to 64).
    wait_replicas: u32 = 0, env "REDIS_WAIT_REPLICAS", default "`0` (off)", check |n| ensure(*n <= 64, "must be 0 to 64 replicas");
    /// How long a write waits for [`wait_replicas`](Config::wait_replicas) replicas (cut to what its deadline leaves).
    wait_timeout: Duration = pub DEFAULT_WAIT_TIMEOUT = Duration::from_millis(500), env "REDIS_WAIT_TIMEOUT_MS", default "500 ms";
    /// Leased connections, opened on demand, each held by one user at a time: [`RedisHandle::transaction`](crate::RedisHandle::transaction) (`WATCH`/`MULTI`/`EXEC`), writes that wait for replicas and lock acquires on a replicated master; callers beyond it wait within their deadline, then get [`Error::Overloaded`](crate::Error::Overloaded) (1 to [`MAX_BLOCKING_CONNECTIONS`]).
    leased_connections: usize = pub DEFAULT_LEASED_CONNECTIONS = 8, env "REDIS_LEASED_CONNECTIONS", default "8",
        check |n| count(*n, MAX_BLOCKING_CONNECTIONS as u64);
}

/// The validated configuration of one [`Supervisor`](crate::Supervisor).
///
/// Build it with [`Config::from_url`], [`Config::from_env`], [`Config::from_env_prefixed`] or
/// [`Config::builder`]. Its `Debug` shows the password as `***`.
///
/// ```
/// use std::time::Duration;
/// use redis_supervisor::Config;
///
/// let config = Config::builder()
///     .url("redis://app:hunter2@127.0.0.1:6379/2")
///     .name("cache")
///     .command_timeout(Duration::from_millis(250))
///     .build()?;
/// assert_eq!(config.db(), 2);
/// assert!(!format!("{config:?}").contains("hunter2"));
/// assert_eq!(config.redacted_url(), "redis://app:***@127.0.0.1:6379/2");
/// # Ok::<(), redis_supervisor::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Config {
    s: Settings,
    /// The CA bundle and client certificate read at build time, if any (TLS only).
    certificates: Option<redis::TlsCertificates>,
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.redacted_url(), self.s.name)
    }
}

impl Config {
    /// A builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// Parses a `redis://` URL; everything else takes its default.
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) naming the URL (password redacted) and the problem.
    pub fn from_url(url: &str) -> Result<Self, crate::Error> {
        Self::builder().url(url).build()
    }

    /// Reads the `REDIS_*` environment variables (see [`ENV_VARS`] and the [module docs](self)).
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) naming the first invalid variable and its value.
    pub fn from_env() -> Result<Self, crate::Error> {
        Self::from_lookup("", |k| std::env::var(k).ok())
    }

    /// Reads `{PREFIX}_REDIS_*` variables, e.g. `CACHE_REDIS_URL` for prefix `CACHE`. The
    /// supervisor name defaults to the prefix in lower case.
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) naming the first invalid variable (with its
    /// prefix) and its value.
    pub fn from_env_prefixed(prefix: &str) -> Result<Self, crate::Error> {
        Self::from_lookup(prefix, |k| std::env::var(k).ok())
    }

    /// Like [`from_env_prefixed`](Self::from_env_prefixed), reading variables through `lookup`
    /// instead of the process environment (handy in tests).
    ///
    /// ```
    /// use redis_supervisor::Config;
    /// let vars = [("REDIS_PORT", "7000"), ("REDIS_OFFLINE_POLICY", "fail-fast")];
    /// let config = Config::from_lookup("", |k| {
    ///     vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    /// })?;
    /// assert_eq!(config.port(), 7000);
    /// # Ok::<(), redis_supervisor::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) naming the first invalid variable and its value.
    pub fn from_lookup(
        prefix: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, crate::Error> {
        env::builder(prefix, lookup)?.build()
    }

    /// Reconnect backoff, from [`backoff_base`](Self::backoff_base),
    /// [`backoff_max`](Self::backoff_max), [`backoff_factor`](Self::backoff_factor) and
    /// [`backoff_jitter`](Self::backoff_jitter).
    pub fn backoff(&self) -> BackoffPolicy {
        let s = &self.s;
        BackoffPolicy {
            base: s.backoff_base,
            max: s.backoff_max,
            factor: s.backoff_factor,
            jitter: s.backoff_jitter,
        }
    }

    /// The longest time a hung or half-open connection can stay `Up`:
    /// `health_interval × health_failures + health_timeout` (saturating); 3.5 s by default.
    pub fn detection_bound(&self) -> Duration {
        let s = &self.s;
        s.health_interval
            .saturating_mul(s.health_failures)
            .saturating_add(s.health_timeout)
    }

    /// The server URL with the password replaced by `***`, e.g. `redis://app:***@host:6379/0`.
    pub fn redacted_url(&self) -> String {
        let s = &self.s;
        let scheme = if s.tls { "rediss" } else { "redis" };
        let auth = match (s.username.as_deref().unwrap_or(""), s.password.is_some()) {
            ("", false) => String::new(),
            (user, false) => format!("{user}@"),
            (user, true) => format!("{user}:***@"),
        };
        let host = if s.host.contains(':') {
            format!("[{}]", s.host)
        } else {
            s.host.clone()
        };
        format!("{scheme}://{auth}{host}:{}/{}", s.port, s.db)
    }

    /// The client for the data node at `host:port` (RESP3, so it learns of disconnects at once;
    /// credentials, database and TLS as configured: plain, TLS with the system roots, or TLS
    /// with our CA and client certificate).
    pub(crate) fn redis_client_at(
        &self,
        host: &str,
        port: u16,
    ) -> redis::RedisResult<redis::Client> {
        let s = &self.s;
        let conn = redis::RedisConnectionInfo::default().set_db(s.db);
        self.client(host, port, conn, s.username.as_deref(), s.password.as_ref())
    }

    /// The client for the sentinel at `addr`: the sentinel credentials, TLS as for the data
    /// nodes, no database.
    pub(crate) fn sentinel_client(&self, addr: &NodeAddr) -> redis::RedisResult<redis::Client> {
        let s = &self.s;
        let conn = redis::RedisConnectionInfo::default();
        let (user, password) = (s.sentinel_username.as_deref(), s.sentinel_password.as_ref());
        self.client(&addr.host, addr.port, conn, user, password)
    }

    fn client(
        &self,
        host: &str,
        port: u16,
        conn: redis::RedisConnectionInfo,
        username: Option<&str>,
        password: Option<&Secret>,
    ) -> redis::RedisResult<redis::Client> {
        use redis::{ConnectionAddr, IntoConnectionInfo};
        let s = &self.s;
        let mut conn = conn.set_protocol(redis::ProtocolVersion::RESP3);
        if let Some(u) = username {
            conn = conn.set_username(u);
        }
        if let Some(p) = password {
            conn = conn.set_password(p.expose());
        }
        let (host, insecure) = (host.to_string(), s.tls_insecure_skip_verify);
        let addr = match s.tls {
            true => ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                tls_params: None,
            },
            false => ConnectionAddr::Tcp(host, port),
        };
        let info = addr.into_connection_info()?.set_redis_settings(conn);
        match self.certificates.clone() {
            Some(certificates) => redis::Client::build_with_tls(info, certificates),
            None => redis::Client::open(info),
        }
    }
}

/// Cluster seed nodes exclude sentinels (a cluster fails over by itself) and a database other
/// than 0 (a cluster has only database 0); the read-from-replicas switch needs seed nodes.
fn cluster_alone(layer: &Layer, s: &Settings) -> Result<(), ConfigError> {
    let Some(given) = &layer.cluster_nodes else {
        if let Some(read) = layer
            .cluster_read_from_replicas
            .as_ref()
            .filter(|_| s.cluster_read_from_replicas)
        {
            return Err(read.error(
                "reading from replicas needs cluster seed nodes (REDIS_CLUSTER_NODES or .cluster_nodes([..]))",
            ));
        }
        return Ok(());
    };
    if layer.sentinels.is_some() {
        return Err(given.error(
            "cluster seed nodes and sentinels exclude each other: a cluster fails over by itself",
        ));
    }
    if s.db != 0 {
        return Err(given.error(format!(
            "a cluster has only database 0, but database {} is configured",
            s.db
        )));
    }
    Ok(())
}

/// Sentinels and a master name come together: the error names the one missing (as the other was
/// given: a variable or a builder setting).
fn sentinel_pair(layer: &Layer, s: &Settings) -> Result<(), ConfigError> {
    match (&layer.sentinels, &layer.sentinel_master) {
        (Some(given), None) => {
            let missing = if given.source.contains("REDIS_SENTINELS") {
                given.source.replace("REDIS_SENTINELS", "REDIS_SENTINEL_MASTER")
            } else {
                "sentinel_master".to_string()
            };
            Err(ConfigError::new(
                &missing,
                "",
                format!("the master name is required with sentinels ({})", s.sentinels),
            ))
        }
        (None, Some(given)) => Err(given.error(
            "a sentinel master name needs the sentinels' addresses (REDIS_SENTINELS or .sentinels([..]))",
        )),
        _ => Ok(()),
    }
}

/// Builds a [`Config`]; every check happens in [`build`](Self::build), and each error names
/// the setting (or environment variable) it came from.
#[derive(Debug, Default, Clone)]
pub struct ConfigBuilder {
    /// The URL, shown redacted.
    url: Option<Sourced<String>>,
    /// The settings given one by one.
    layer: Layer,
}

impl ConfigBuilder {
    /// Server URL: `redis://[user[:password]@]host[:port][/db][?protocol=resp3]`. Explicit
    /// settings override the URL's parts (see the [module docs](self)).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url::sourced(url.into(), "url"));
        self
    }

    /// Validates every setting and builds the [`Config`]: the explicit settings over the
    /// password file over the URL's parts; each value's checks, then those across settings,
    /// then the files'.
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) naming the first invalid setting and its value
    /// (redacted when secret).
    pub fn build(self) -> Result<Config, crate::Error> {
        let url = self.url.as_ref().map(url::parse).transpose()?;
        let mut layer = self.layer;
        let file_password = layer
            .password_file
            .as_ref()
            .map(Sourced::password)
            .transpose()?;
        layer.password = layer.password.or(file_password);
        let layer = layer.over(url.unwrap_or_default());
        let mut s = layer.settle()?;
        match &layer.health_timeout {
            // Unset, the probe timeout follows a short probe interval down rather than refusing it.
            None => s.health_timeout = s.health_timeout.min(s.health_interval),
            Some(given) if s.health_timeout > s.health_interval => Err(given.error(format!(
                "the probe timeout ({:?}) must not exceed the probe interval ({:?})",
                s.health_timeout, s.health_interval
            )))?,
            Some(_) => {}
        }
        // The error names whichever backoff bound was given, the cap first.
        let backoff = layer.backoff_max.as_ref().or(layer.backoff_base.as_ref());
        if let Some(given) = backoff.filter(|_| s.backoff_max < s.backoff_base) {
            Err(given.error(format!(
                "the backoff cap ({:?}) must be at least the base delay ({:?})",
                s.backoff_max, s.backoff_base
            )))?;
        }
        sentinel_pair(&layer, &s)?;
        cluster_alone(&layer, &s)?;
        let certificates = tls::certificates(&layer, s.tls)?;
        s.max_attempts = s.max_attempts.filter(|n| *n > 0);
        s.tls_insecure_skip_verify &= s.tls;
        Ok(Config { s, certificates })
    }
}
