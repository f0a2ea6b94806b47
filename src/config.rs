//! Configuration: one [`Config`] built from a URL, the environment or a builder, validated once at
//! build time, with secrets redacted in every `Debug`/`Display` and in every error.
//!
//! Each setting is declared once, in the table at the heart of this module: its field, getter,
//! builder setter, environment variable, parser, default, check and doc all follow from that row.
//! The variables, with their meaning and default, are listed in [`ENV_VARS`].
//!
//! # Environment variables
//!
//! [`Config::from_env`] reads the [`ENV_VARS`]; [`Config::from_env_prefixed`]`("CACHE")` reads
//! the same names with `CACHE_` in front (`CACHE_REDIS_URL`, …), so one service can configure
//! several Redis instances; its client name defaults to the prefix in lower case. Every error
//! names the variable exactly as it was read (with its prefix) and the value (`***` if secret).
//!
//! # Precedence
//!
//! Lowest first: the defaults; the parts of `REDIS_URL` (or [`url`](ConfigBuilder::url)); the
//! password read from `REDIS_PASSWORD_FILE`; the individual variables or builder settings. So an
//! explicit `REDIS_PASSWORD` beats the password file, which beats the URL's password, and
//! `REDIS_USERNAME`, `REDIS_HOST`, `REDIS_PORT`, `REDIS_DB`, `REDIS_TLS` beat the URL's parts.
//! **An empty user name, password or file path counts as not given** (docker-compose's
//! `REDIS_PASSWORD=${REDIS_PASSWORD}` with the variable unset): it never erases a lower layer.
//!
//! # Bounds
//!
//! Every duration must be more than zero and at most [`MAX_DURATION`] (24 h); a number of
//! milliseconds too large even for `u64` is refused the same way. Counts have bounds too
//! ([`MAX_HEALTH_FAILURES`], [`MAX_RESTART_INTENSITY`], [`MAX_ATTEMPTS_BOUND`],
//! [`MAX_WAITING_BOUND`]), so every derived value ([`Config::detection_bound`], deadlines) fits.
//!
//! # URLs
//!
//! `redis://[user[:password]@]host[:port][/db][?protocol=resp3]` (`rediss://` for TLS). The crate
//! always speaks RESP3 (Redis ≥ 6): `protocol=resp2`, any other query parameter and a `#fragment`
//! are refused rather than ignored.

mod env;
mod files;
mod url;
mod value;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub use self::url::redact_url;
use self::value::{Show, Sourced, View};
use crate::backoff::{
    BackoffPolicy, DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_FACTOR, DEFAULT_BACKOFF_JITTER,
    DEFAULT_BACKOFF_MAX,
};
pub use crate::error::ConfigError;

/// Default server URL: `redis://127.0.0.1:6379`.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// Default host: `127.0.0.1`.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// Default port: 6379.
pub const DEFAULT_PORT: u16 = 6379;
/// Default supervisor name (the `client` metric label): `default`.
pub const DEFAULT_NAME: &str = "default";
/// Default limit on TCP connect plus handshake (HELLO, AUTH, SELECT, CLIENT SETNAME, INFO): 2 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default command deadline: 1 s. Override per call with
/// [`RedisHandle::with_timeout`](crate::RedisHandle::with_timeout).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// Default stable period: a connection that stays up this long resets the backoff: 5 s.
pub const DEFAULT_STABLE_PERIOD: Duration = Duration::from_secs(5);
/// Default longest wait for in-flight commands during [`Supervisor::shutdown`](crate::Supervisor::shutdown): 5 s.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Default health probe interval: a `PING` every 1 s.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// Default health probe timeout: 500 ms.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_millis(500);
/// Default number of consecutive failed probes after which the connection is replaced: 3.
/// With the defaults a hung server is detected within 1 s × 3 + 500 ms = 3.5 s.
pub const DEFAULT_HEALTH_FAILURES: u32 = 3;
/// Default latency above which a probe marks the connection `Degraded`: 250 ms.
pub const DEFAULT_HEALTH_SLOW: Duration = Duration::from_millis(250);
/// Default interval of the `INFO` read that feeds the server gauges: 10 s.
pub const DEFAULT_INFO_INTERVAL: Duration = Duration::from_secs(10);
/// Default restart intensity: more than 5 connections lost within the window is a restart storm.
pub const DEFAULT_RESTART_INTENSITY: u32 = 5;
/// Default restart-intensity window: 60 s.
pub const DEFAULT_RESTART_WINDOW: Duration = Duration::from_secs(60);
/// Default limit on commands waiting for the connection at once: 10 000.
pub const DEFAULT_MAX_WAITING: usize = 10_000;
/// Default offline policy: [`OfflinePolicy::Wait`].
pub const DEFAULT_OFFLINE_POLICY: OfflinePolicy = OfflinePolicy::Wait;

/// The longest any duration setting may be: 24 h. Longer is refused with "must be at most
/// 86400000 ms", so no deadline or derived sum can overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// The most consecutive failed probes [`Config::health_failures`] may wait for: 1 000.
pub const MAX_HEALTH_FAILURES: u32 = 1_000;
/// The largest [`Config::restart_intensity`]: 10 000 (the supervisor keeps that many instants).
pub const MAX_RESTART_INTENSITY: u32 = 10_000;
/// The largest [`Config::max_attempts`]: 1 000 000.
pub const MAX_ATTEMPTS_BOUND: u32 = 1_000_000;
/// The largest [`Config::max_waiting`]: 1 000 000.
pub const MAX_WAITING_BOUND: usize = 1_000_000;

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

/// Generates, from one row per setting: the stored `Settings` field and its default, the
/// builder's `Layer` slot, the `Config` getter, the `ConfigBuilder` setter (both documented by
/// the row's doc), the check run at build time, the environment variable and its parser, the
/// `Debug` field and the [`ENV_VARS`] table.
macro_rules! settings {
    ($(
        #[doc = $doc:literal]
        $f:ident: $ty:ty = $default:expr, get $get:ty, set($v:ident: $arg:ty) $conv:expr,
        check $check:expr $(, env $env:literal $parse:expr)?, default $dd:literal;
    )*) => {
        /// Every validated setting, as stored.
        #[derive(Clone)]
        struct Settings { $($f: $ty,)* }

        impl Default for Settings {
            fn default() -> Self {
                Self { $($f: $default,)* }
            }
        }

        /// The settings one source gives (builder or environment, URL, password file), each
        /// with where it came from; layers are stacked with [`Layer::over`].
        #[derive(Clone, Debug, Default)]
        struct Layer { $($f: Option<Sourced<$ty>>,)* }

        impl Layer {
            /// This layer over `lower`: a setting given here (and not empty) wins.
            fn over(self, lower: Layer) -> Layer {
                Layer { $($f: self.$f.filter(|s| !s.value.is_unset()).or(lower.$f),)* }
            }

            /// Runs each given setting's check; the error names its source and shown value.
            fn check(&self) -> Result<(), ConfigError> {
                $(if let Some(s) = &self.$f {
                    ($check)(&s.value).map_err(|reason| s.error(reason))?;
                })*
                Ok(())
            }

            /// The given values, the defaults for the rest.
            fn settle(self) -> Settings {
                let d = Settings::default();
                Settings { $($f: self.$f.filter(|s| !s.value.is_unset()).map_or(d.$f, |s| s.value),)* }
            }

            /// Reads the variables through `get`, which returns the (prefixed) name and text.
            fn read_env(
                &mut self,
                get: impl Fn(&str) -> Option<(String, String)>,
            ) -> Result<(), ConfigError> {
                $($(if let Some((var, raw)) = get($env) {
                    self.$f = Self::parsed(&var, &raw, $parse)?;
                })?)*
                Ok(())
            }
        }

        impl Settings {
            fn debug_fields(&self, d: &mut fmt::DebugStruct<'_, '_>) {
                $(d.field(stringify!($f), &self.$f);)*
            }
        }

        impl Config {
            $(#[doc = $doc] pub fn $f(&self) -> $get { View::view(&self.s.$f) })*
        }

        impl ConfigBuilder {
            $(#[doc = $doc] pub fn $f(mut self, $v: $arg) -> Self {
                self.layer.$f = Some(Sourced::new($conv, stringify!($f)));
                self
            })*
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
    name: String = DEFAULT_NAME.into(), get &str, set(v: impl Into<String>) v.into(),
        check value::name, env "REDIS_CLIENT_NAME" env::text, default "`default`, or the prefix";
    /// Server host name or IP (not empty).
    host: String = DEFAULT_HOST.into(), get &str, set(v: impl Into<String>) v.into(),
        check value::host, env "REDIS_HOST" env::text, default "`127.0.0.1`";
    /// Server port (1-65535).
    port: u16 = DEFAULT_PORT, get u16, set(v: u16) v,
        check value::port, env "REDIS_PORT" env::int, default "`6379`";
    /// Whether TLS is used, verifying the server certificate (as a `rediss://` URL does).
    tls: bool = false, get bool, set(v: bool) v,
        check value::any, env "REDIS_TLS" env::boolean, default "`false`";
    /// ACL user name, if any.
    username: Option<String> = None, get Option<&str>, set(v: impl Into<String>) Some(v.into()),
        check value::any, env "REDIS_USERNAME" env::opt_text, default "none";
    /// The password, if any (kept as a [`Secret`]: its `Debug`/`Display` print `***`).
    password: Option<Secret> = None, get Option<&Secret>, set(v: impl Into<String>) Some(Secret::new(v)),
        check value::any, env "REDIS_PASSWORD" env::secret, default "none";
    /// A file holding the password (a mounted container secret; trailing newline trimmed); an explicit password wins.
    password_file: Option<PathBuf> = None, get Option<&Path>, set(v: impl Into<PathBuf>) Some(v.into()),
        check value::any, env "REDIS_PASSWORD_FILE" env::path, default "none";
    /// Database number (≥ 0).
    db: i64 = 0, get i64, set(v: i64) v,
        check value::db, env "REDIS_DB" env::int, default "`0`";
    /// The CA bundle (PEM) trusted instead of the system roots (TLS only).
    tls_ca_file: Option<PathBuf> = None, get Option<&Path>, set(v: impl Into<PathBuf>) Some(v.into()),
        check value::any, env "REDIS_TLS_CA_FILE" env::path, default "system roots";
    /// The client certificate (PEM) for mutual TLS; needs the key file too.
    tls_cert_file: Option<PathBuf> = None, get Option<&Path>, set(v: impl Into<PathBuf>) Some(v.into()),
        check value::any, env "REDIS_TLS_CERT_FILE" env::path, default "none";
    /// The client key (PEM) for mutual TLS (only its path is ever shown); needs the certificate too.
    tls_key_file: Option<PathBuf> = None, get Option<&Path>, set(v: impl Into<PathBuf>) Some(v.into()),
        check value::any, env "REDIS_TLS_KEY_FILE" env::path, default "none";
    /// **Insecure**: accept any server certificate (tests and emergencies; logged as a warning, `/health/redis` shows `"tls_verify": false`).
    tls_insecure_skip_verify: bool = false, get bool, set(v: bool) v,
        check value::any, env "REDIS_TLS_INSECURE_SKIP_VERIFY" env::boolean, default "`false`";
    /// Prefix prepended to every key by the typed commands of [`RedisHandle`](crate::RedisHandle) (not by raw `cmd`).
    key_prefix: String = String::new(), get &str, set(v: impl Into<String>) v.into(),
        check value::any, env "REDIS_KEY_PREFIX" env::text, default "empty";
    /// Limit on TCP connect plus handshake.
    connect_timeout: Duration = DEFAULT_CONNECT_TIMEOUT, get Duration, set(v: Duration) v,
        check value::duration, env "REDIS_CONNECT_TIMEOUT_MS" env::millis, default "[`DEFAULT_CONNECT_TIMEOUT`]";
    /// Default command deadline.
    command_timeout: Duration = DEFAULT_COMMAND_TIMEOUT, get Duration, set(v: Duration) v,
        check value::duration, env "REDIS_COMMAND_TIMEOUT_MS" env::millis, default "[`DEFAULT_COMMAND_TIMEOUT`]";
    /// First reconnect delay (≤ the cap).
    backoff_base: Duration = DEFAULT_BACKOFF_BASE, get Duration, set(v: Duration) v,
        check value::duration, env "REDIS_BACKOFF_BASE_MS" env::millis, default "50 ms";
    /// Cap on the reconnect delay (≥ the base).
    backoff_max: Duration = DEFAULT_BACKOFF_MAX, get Duration, set(v: Duration) v,
        check value::duration, env "REDIS_BACKOFF_MAX_MS" env::millis, default "2000 ms";
    /// Reconnect delay growth per attempt (finite, ≥ 1).
    backoff_factor: f64 = DEFAULT_BACKOFF_FACTOR, get f64, set(v: f64) v,
        check value::factor, default "2";
    /// Relative reconnect delay jitter, in `[0, 1)`.
    backoff_jitter: f64 = DEFAULT_BACKOFF_JITTER, get f64, set(v: f64) v,
        check value::jitter, default "0.2";
    /// Uptime after which the backoff resets.
    stable_period: Duration = DEFAULT_STABLE_PERIOD, get Duration, set(v: Duration) v,
        check value::duration, env "REDIS_STABLE_PERIOD_MS" env::millis, default "[`DEFAULT_STABLE_PERIOD`]";
    /// What commands do while the connection is down: `wait` or `fail-fast`.
    offline_policy: OfflinePolicy = DEFAULT_OFFLINE_POLICY, get OfflinePolicy, set(v: OfflinePolicy) v,
        check value::any, env "REDIS_OFFLINE_POLICY" env::policy, default "`wait`";
    /// Longest wait for in-flight commands during shutdown.
    shutdown_timeout: Duration = DEFAULT_SHUTDOWN_TIMEOUT, get Duration, set(v: Duration) v,
        check value::duration, env "REDIS_SHUTDOWN_TIMEOUT_MS" env::millis, default "[`DEFAULT_SHUTDOWN_TIMEOUT`]";
    /// Interval between health probes (`PING`).
    health_interval: Duration = DEFAULT_HEALTH_INTERVAL, get Duration, set(v: Duration) v,
        check value::duration, env "REDIS_HEALTH_INTERVAL_MS" env::millis, default "[`DEFAULT_HEALTH_INTERVAL`]";
    /// Timeout of one health probe (≤ the interval; unset, the default or the interval, whichever is shorter).
    health_timeout: Duration = DEFAULT_HEALTH_TIMEOUT, get Duration, set(v: Duration) v,
        check value::duration, env "REDIS_HEALTH_TIMEOUT_MS" env::millis, default "[`DEFAULT_HEALTH_TIMEOUT`]";
    /// Consecutive failed probes after which the connection is replaced (1 to [`MAX_HEALTH_FAILURES`]).
    health_failures: u32 = DEFAULT_HEALTH_FAILURES, get u32, set(v: u32) v,
        check |n: &u32| value::count(*n, MAX_HEALTH_FAILURES.into()),
        env "REDIS_HEALTH_FAILURES" env::count, default "[`DEFAULT_HEALTH_FAILURES`]";
    /// Probe latency above which the connection is `Degraded`.
    health_slow: Duration = DEFAULT_HEALTH_SLOW, get Duration, set(v: Duration) v,
        check value::duration, env "REDIS_HEALTH_SLOW_MS" env::millis, default "[`DEFAULT_HEALTH_SLOW`]";
    /// Interval between `INFO` reads (the server gauges).
    info_interval: Duration = DEFAULT_INFO_INTERVAL, get Duration, set(v: Duration) v,
        check value::duration, env "REDIS_INFO_INTERVAL_MS" env::millis, default "[`DEFAULT_INFO_INTERVAL`]";
    /// Connections lost within the restart window beyond which a restart storm is declared (1 to [`MAX_RESTART_INTENSITY`]).
    restart_intensity: u32 = DEFAULT_RESTART_INTENSITY, get u32, set(v: u32) v,
        check |n: &u32| value::count(*n, MAX_RESTART_INTENSITY.into()),
        env "REDIS_RESTART_INTENSITY" env::count, default "[`DEFAULT_RESTART_INTENSITY`]";
    /// The restart-intensity window.
    restart_window: Duration = DEFAULT_RESTART_WINDOW, get Duration, set(v: Duration) v,
        check value::duration, env "REDIS_RESTART_WINDOW_MS" env::millis, default "[`DEFAULT_RESTART_WINDOW`]";
    /// Consecutive failed attempts after which the supervisor gives up for good (`None` or `0`: never; at most [`MAX_ATTEMPTS_BOUND`]).
    max_attempts: Option<u32> = None, get Option<u32>, set(v: Option<u32>) v,
        check |n: &Option<u32>| n.map_or(Ok(()), |n| value::count(n.max(1), MAX_ATTEMPTS_BOUND.into())),
        env "REDIS_MAX_ATTEMPTS" env::attempts, default "never";
    /// Commands that may wait for the connection at once; more get [`Error::Overloaded`](crate::Error::Overloaded) (1 to [`MAX_WAITING_BOUND`]).
    max_waiting: usize = DEFAULT_MAX_WAITING, get usize, set(v: usize) v,
        check |n: &usize| value::count(*n, MAX_WAITING_BOUND as u64),
        env "REDIS_MAX_WAITING" env::count, default "[`DEFAULT_MAX_WAITING`]";
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
    tls_material: files::TlsMaterial,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Config");
        d.field("url", &self.redacted_url());
        self.s.debug_fields(&mut d);
        d.finish()
    }
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
        BackoffPolicy {
            base: self.s.backoff_base,
            max: self.s.backoff_max,
            factor: self.s.backoff_factor,
            jitter: self.s.backoff_jitter,
        }
    }

    /// The longest time a hung or half-open connection can stay `Up`:
    /// `health_interval × health_failures + health_timeout` (saturating).
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
        let auth = match (&s.username, &s.password) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (None, Some(_)) => ":***@".to_string(),
            (Some(u), None) => format!("{u}@"),
            (None, None) => String::new(),
        };
        let host = if s.host.contains(':') {
            format!("[{}]", s.host)
        } else {
            s.host.clone()
        };
        format!("{scheme}://{auth}{host}:{}/{}", s.port, s.db)
    }

    /// The redis-rs connection parameters (RESP3, so the client learns of disconnects at once).
    pub(crate) fn connection_info(&self) -> redis::RedisResult<redis::ConnectionInfo> {
        use redis::IntoConnectionInfo;
        let s = &self.s;
        let mut redis_info = redis::RedisConnectionInfo::default()
            .set_db(s.db)
            .set_protocol(redis::ProtocolVersion::RESP3);
        if let Some(u) = &s.username {
            redis_info = redis_info.set_username(u);
        }
        if let Some(p) = &s.password {
            redis_info = redis_info.set_password(p.expose());
        }
        let addr = if s.tls {
            redis::ConnectionAddr::TcpTls {
                host: s.host.clone(),
                port: s.port,
                insecure: s.tls_insecure_skip_verify,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(s.host.clone(), s.port)
        };
        Ok(addr.into_connection_info()?.set_redis_settings(redis_info))
    }

    /// The redis-rs client: plain, TLS with the system roots, or TLS with our CA and client
    /// certificate.
    pub(crate) fn redis_client(&self) -> redis::RedisResult<redis::Client> {
        let info = self.connection_info()?;
        let m = &self.tls_material;
        if !self.s.tls || (m.ca.is_none() && m.client.is_none()) {
            return redis::Client::open(info);
        }
        let client_tls = m.client.as_ref().map(|c| redis::ClientTlsConfig {
            client_cert: c.cert.to_vec(),
            client_key: c.key.to_vec(),
        });
        let root_cert = m.ca.as_ref().map(|ca| ca.to_vec());
        redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls,
                root_cert,
            },
        )
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
        let url = url.into();
        let shown = redact_url(&url);
        self.url = Some(Sourced::shown_as(url, "url", shown));
        self
    }

    /// Validates every setting and builds the [`Config`].
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) naming the first invalid setting and its value
    /// (redacted when secret).
    pub fn build(self) -> Result<Config, crate::Error> {
        Ok(self.build_inner()?)
    }

    fn build_inner(self) -> Result<Config, ConfigError> {
        let layer = self.stack_layers()?;
        layer.check()?;
        check_health_timeout(&layer)?;
        check_backoff_order(&layer)?;
        let tls = layer.tls.as_ref().is_some_and(|s| s.value);
        let tls_material = files::tls_material(&layer, tls)?;
        let health_timeout_given = layer.health_timeout.is_some();
        let mut s = layer.settle();
        if !health_timeout_given {
            // Unset, the probe timeout follows a short probe interval down rather than refusing it.
            s.health_timeout = s.health_timeout.min(s.health_interval);
        }
        s.max_attempts = s.max_attempts.filter(|n| *n > 0);
        s.tls_insecure_skip_verify &= s.tls;
        Ok(Config { s, tls_material })
    }

    /// The explicit settings over the password file over the URL's parts.
    fn stack_layers(self) -> Result<Layer, ConfigError> {
        let url = self.url.as_ref().map(url::parse).transpose()?;
        let password_file = files::password_layer(&self.layer)?;
        Ok(self.layer.over(password_file.over(url.unwrap_or_default())))
    }
}

/// A probe timeout longer than the probe interval would let probes pile up.
fn check_health_timeout(layer: &Layer) -> Result<(), ConfigError> {
    let Some(timeout) = &layer.health_timeout else {
        return Ok(());
    };
    let interval = layer
        .health_interval
        .as_ref()
        .map_or(DEFAULT_HEALTH_INTERVAL, |s| s.value);
    if timeout.value <= interval {
        return Ok(());
    }
    Err(timeout.error(format!(
        "the probe timeout ({:?}) must not exceed the probe interval ({interval:?})",
        timeout.value
    )))
}

/// The backoff cap must not be below its base; the error names whichever was given (the cap
/// first).
fn check_backoff_order(layer: &Layer) -> Result<(), ConfigError> {
    let value = |s: &Option<Sourced<Duration>>, default| s.as_ref().map_or(default, |s| s.value);
    let base = value(&layer.backoff_base, DEFAULT_BACKOFF_BASE);
    let max = value(&layer.backoff_max, DEFAULT_BACKOFF_MAX);
    match layer.backoff_max.as_ref().or(layer.backoff_base.as_ref()) {
        Some(given) if max < base => Err(given.error(format!(
            "the backoff cap ({max:?}) must be at least the base delay ({base:?})"
        ))),
        _ => Ok(()),
    }
}
