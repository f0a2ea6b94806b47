//! Configuration: one [`Config`] built from a URL, the environment or a builder, validated once at
//! build time, with secrets redacted in every `Debug`/`Display`.
//!
//! # Environment variables
//!
//! [`Config::from_env`] reads the variables below; [`Config::from_env_prefixed`]`("CACHE")` reads
//! the same names with `CACHE_` in front (`CACHE_REDIS_URL`, …), so one service can configure
//! several Redis instances. Individual variables override the matching part of `REDIS_URL`.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `REDIS_URL` | `redis://[user[:password]@]host[:port][/db]` | `redis://127.0.0.1:6379` |
//! | `REDIS_HOST`, `REDIS_PORT` | server address | `127.0.0.1`, `6379` |
//! | `REDIS_USERNAME`, `REDIS_PASSWORD` | ACL user and password | none |
//! | `REDIS_DB` | database number | `0` |
//! | `REDIS_PASSWORD_FILE` | read the password from this file (container secrets); trailing newline trimmed | none |
//! | `REDIS_TLS` | `true`/`false`: TLS with certificate verification (also `rediss://`) | `false` |
//! | `REDIS_TLS_CA_FILE` | PEM CA bundle to trust instead of the system roots | system roots |
//! | `REDIS_TLS_CERT_FILE`, `REDIS_TLS_KEY_FILE` | PEM client certificate and key, for mutual TLS | none |
//! | `REDIS_TLS_INSECURE_SKIP_VERIFY` | `true` disables certificate verification (logged as a warning) | `false` |
//! | `REDIS_KEY_PREFIX` | prefix added to every key of the typed commands | empty |
//! | `REDIS_CLIENT_NAME` | supervisor name: `client` metric label and `CLIENT SETNAME` | `default` |
//! | `REDIS_CONNECT_TIMEOUT_MS` | TCP connect + handshake limit | [`DEFAULT_CONNECT_TIMEOUT`] |
//! | `REDIS_COMMAND_TIMEOUT_MS` | default command deadline | [`DEFAULT_COMMAND_TIMEOUT`] |
//! | `REDIS_BACKOFF_BASE_MS`, `REDIS_BACKOFF_MAX_MS` | reconnect backoff | 50, 2000 |
//! | `REDIS_STABLE_PERIOD_MS` | uptime after which the backoff resets | [`DEFAULT_STABLE_PERIOD`] |
//! | `REDIS_OFFLINE_POLICY` | `wait` or `fail-fast` | `wait` |
//! | `REDIS_SHUTDOWN_TIMEOUT_MS` | longest wait for in-flight commands at shutdown | [`DEFAULT_SHUTDOWN_TIMEOUT`] |
//! | `REDIS_HEALTH_INTERVAL_MS` | health probe (PING) interval | [`DEFAULT_HEALTH_INTERVAL`] |
//! | `REDIS_HEALTH_TIMEOUT_MS` | health probe timeout (≤ interval; unset: the default or the interval, whichever is shorter) | [`DEFAULT_HEALTH_TIMEOUT`] |
//! | `REDIS_HEALTH_FAILURES` | consecutive failed probes that replace the connection | [`DEFAULT_HEALTH_FAILURES`] |
//! | `REDIS_HEALTH_SLOW_MS` | a probe slower than this makes the state `Degraded` | [`DEFAULT_HEALTH_SLOW`] |
//! | `REDIS_INFO_INTERVAL_MS` | INFO (server gauges) interval | [`DEFAULT_INFO_INTERVAL`] |
//! | `REDIS_RESTART_INTENSITY` | connections lost within the window that make a restart storm | [`DEFAULT_RESTART_INTENSITY`] |
//! | `REDIS_RESTART_WINDOW_MS` | the restart-intensity window | [`DEFAULT_RESTART_WINDOW`] |
//! | `REDIS_MAX_ATTEMPTS` | consecutive failed attempts before giving up for good (`0` or unset: never) | never |
//! | `REDIS_MAX_WAITING` | commands that may wait for the connection at once; more get `Overloaded` | [`DEFAULT_MAX_WAITING`] |

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::BackoffPolicy;

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

/// An invalid setting: names the setting (the environment variable when it came from the
/// environment) and its value, redacted when secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {setting} = {value:?}: {reason}")]
pub struct ConfigError {
    /// The variable or builder setting, e.g. `REDIS_PORT` or `command_timeout`.
    pub setting: String,
    /// The offending value, with any password replaced by `***`.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    fn new(
        setting: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            setting: setting.into(),
            value: value.into(),
            reason: reason.into(),
        }
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

/// TLS material read (and checked) when the configuration was built.
#[derive(Clone, Default)]
struct TlsFiles {
    ca: Option<(PathBuf, Arc<[u8]>)>,
    cert: Option<(PathBuf, Arc<[u8]>)>,
    /// The client key: secret, never shown.
    key: Option<(PathBuf, Arc<[u8]>)>,
}

/// Replaces the password (or a lone user-info part, which some clients read as a password) of a
/// Redis URL with `***`. Works on strings that do not parse as URLs, so errors about malformed
/// URLs never leak a secret.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        // Not URL-shaped: show nothing that could be a secret past an '@'.
        return match url.rfind('@') {
            Some(at) => format!("***{}", &url[at..]),
            None => url.to_string(),
        };
    };
    let rest = &url[scheme_end + 3..];
    match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let shown = match userinfo.find(':') {
                Some(colon) => format!("{}:***", &userinfo[..colon]),
                None => "***".to_string(),
            };
            format!("{}{}{}", &url[..scheme_end + 3], shown, &rest[at..])
        }
        None => url.to_string(),
    }
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
#[derive(Clone)]
pub struct Config {
    name: String,
    host: String,
    port: u16,
    tls: bool,
    username: Option<String>,
    password: Option<Secret>,
    db: i64,
    key_prefix: String,
    connect_timeout: Duration,
    command_timeout: Duration,
    backoff: BackoffPolicy,
    stable_period: Duration,
    offline_policy: OfflinePolicy,
    shutdown_timeout: Duration,
    health_interval: Duration,
    health_timeout: Duration,
    health_failures: u32,
    health_slow: Duration,
    info_interval: Duration,
    tls_files: TlsFiles,
    tls_insecure: bool,
    restart_intensity: u32,
    restart_window: Duration,
    max_attempts: Option<u32>,
    max_waiting: usize,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("name", &self.name)
            .field("url", &self.redacted_url())
            .field("tls_ca_file", &self.tls_ca_file())
            .field("tls_cert_file", &self.tls_cert_file())
            .field("tls_key_file", &self.tls_key_file())
            .field("tls_insecure_skip_verify", &self.tls_insecure)
            .field("key_prefix", &self.key_prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("backoff", &self.backoff)
            .field("stable_period", &self.stable_period)
            .field("offline_policy", &self.offline_policy)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("health_interval", &self.health_interval)
            .field("health_timeout", &self.health_timeout)
            .field("health_failures", &self.health_failures)
            .field("health_slow", &self.health_slow)
            .field("info_interval", &self.info_interval)
            .field("restart_intensity", &self.restart_intensity)
            .field("restart_window", &self.restart_window)
            .field("max_attempts", &self.max_attempts)
            .field("max_waiting", &self.max_waiting)
            .finish()
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.redacted_url(), self.name)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: DEFAULT_NAME.to_string(),
            host: DEFAULT_HOST.to_string(),
            port: DEFAULT_PORT,
            tls: false,
            username: None,
            password: None,
            db: 0,
            key_prefix: String::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            backoff: BackoffPolicy::default(),
            stable_period: DEFAULT_STABLE_PERIOD,
            offline_policy: DEFAULT_OFFLINE_POLICY,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            health_interval: DEFAULT_HEALTH_INTERVAL,
            health_timeout: DEFAULT_HEALTH_TIMEOUT,
            health_failures: DEFAULT_HEALTH_FAILURES,
            health_slow: DEFAULT_HEALTH_SLOW,
            info_interval: DEFAULT_INFO_INTERVAL,
            tls_files: TlsFiles::default(),
            tls_insecure: false,
            restart_intensity: DEFAULT_RESTART_INTENSITY,
            restart_window: DEFAULT_RESTART_WINDOW,
            max_attempts: None,
            max_waiting: DEFAULT_MAX_WAITING,
        }
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

    /// Reads the `REDIS_*` environment variables (see the [module docs](self)).
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
    /// [`Error::Config`](crate::Error::Config) naming the first invalid variable and its value.
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
        ConfigBuilder::from_lookup(prefix, lookup)?.build()
    }

    /// The supervisor's name: the `client` label on every metric and the `CLIENT SETNAME` suffix.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Server host name or IP.
    pub fn host(&self) -> &str {
        &self.host
    }
    /// Server port.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Whether TLS is requested.
    pub fn tls(&self) -> bool {
        self.tls
    }
    /// ACL user name, if any.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }
    /// The password, if any (its `Debug`/`Display` print `***`).
    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }
    /// Database number.
    pub fn db(&self) -> i64 {
        self.db
    }
    /// Prefix prepended to every key by the typed commands of
    /// [`RedisHandle`](crate::RedisHandle) (not by raw [`cmd`](crate::RedisHandle::cmd)).
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }
    /// Limit on TCP connect plus handshake.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
    /// Default command deadline.
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }
    /// Reconnect backoff.
    pub fn backoff(&self) -> BackoffPolicy {
        self.backoff
    }
    /// How long a connection must stay up before the backoff resets.
    pub fn stable_period(&self) -> Duration {
        self.stable_period
    }
    /// What commands do while the connection is down.
    pub fn offline_policy(&self) -> OfflinePolicy {
        self.offline_policy
    }
    /// Longest wait for in-flight commands during shutdown.
    pub fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }
    /// Interval between health probes (`PING`).
    pub fn health_interval(&self) -> Duration {
        self.health_interval
    }
    /// Timeout of one health probe.
    pub fn health_timeout(&self) -> Duration {
        self.health_timeout
    }
    /// Consecutive failed probes after which the connection is replaced.
    pub fn health_failures(&self) -> u32 {
        self.health_failures
    }
    /// Probe latency above which the connection is `Degraded`.
    pub fn health_slow(&self) -> Duration {
        self.health_slow
    }
    /// Interval between `INFO` reads.
    pub fn info_interval(&self) -> Duration {
        self.info_interval
    }
    /// The CA bundle trusted instead of the system roots, if set.
    pub fn tls_ca_file(&self) -> Option<&Path> {
        self.tls_files.ca.as_ref().map(|(p, _)| p.as_path())
    }
    /// The client certificate for mutual TLS, if set.
    pub fn tls_cert_file(&self) -> Option<&Path> {
        self.tls_files.cert.as_ref().map(|(p, _)| p.as_path())
    }
    /// The client key for mutual TLS, if set (only its path is ever shown).
    pub fn tls_key_file(&self) -> Option<&Path> {
        self.tls_files.key.as_ref().map(|(p, _)| p.as_path())
    }
    /// True when certificate verification is switched off (insecure).
    pub fn tls_insecure_skip_verify(&self) -> bool {
        self.tls && self.tls_insecure
    }
    /// Connections lost within [`restart_window`](Self::restart_window) beyond which the
    /// supervisor declares a restart storm.
    pub fn restart_intensity(&self) -> u32 {
        self.restart_intensity
    }
    /// The restart-intensity window.
    pub fn restart_window(&self) -> Duration {
        self.restart_window
    }
    /// Consecutive failed attempts after which the supervisor gives up for good (`None`: never).
    pub fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }
    /// Commands that may wait for the connection at once.
    pub fn max_waiting(&self) -> usize {
        self.max_waiting
    }
    /// The longest time a hung or half-open connection can stay `Up`:
    /// `health_interval × health_failures + health_timeout`.
    pub fn detection_bound(&self) -> Duration {
        self.health_interval * self.health_failures + self.health_timeout
    }
    /// The server URL with the password replaced by `***`, e.g. `redis://app:***@host:6379/0`.
    pub fn redacted_url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let auth = match (&self.username, &self.password) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (None, Some(_)) => ":***@".to_string(),
            (Some(u), None) => format!("{u}@"),
            (None, None) => String::new(),
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{auth}{host}:{}/{}", self.port, self.db)
    }

    /// The redis-rs connection parameters (RESP3, so the client learns of disconnects at once).
    pub(crate) fn connection_info(&self) -> redis::RedisResult<redis::ConnectionInfo> {
        let mut redis_info = redis::RedisConnectionInfo::default()
            .set_db(self.db)
            .set_protocol(redis::ProtocolVersion::RESP3);
        if let Some(u) = &self.username {
            redis_info = redis_info.set_username(u);
        }
        if let Some(p) = &self.password {
            redis_info = redis_info.set_password(p.expose());
        }
        use redis::IntoConnectionInfo;
        let addr = if self.tls {
            redis::ConnectionAddr::TcpTls {
                host: self.host.clone(),
                port: self.port,
                insecure: self.tls_insecure,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(self.host.clone(), self.port)
        };
        Ok(addr.into_connection_info()?.set_redis_settings(redis_info))
    }

    /// The redis-rs client: plain, TLS with the system roots, or TLS with our CA and client
    /// certificate.
    pub(crate) fn redis_client(&self) -> redis::RedisResult<redis::Client> {
        let info = self.connection_info()?;
        let files = &self.tls_files;
        if !self.tls || (files.ca.is_none() && files.cert.is_none()) {
            return redis::Client::open(info);
        }
        let client_tls = match (&files.cert, &files.key) {
            (Some((_, cert)), Some((_, key))) => Some(redis::ClientTlsConfig {
                client_cert: cert.to_vec(),
                client_key: key.to_vec(),
            }),
            _ => None,
        };
        redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls,
                root_cert: files.ca.as_ref().map(|(_, ca)| ca.to_vec()),
            },
        )
    }
}

/// Builds a [`Config`]; every check happens in [`build`](Self::build), and each error names
/// the setting (or environment variable) it came from.
#[derive(Debug, Default, Clone)]
pub struct ConfigBuilder {
    url: Option<Sourced<String>>,
    name: Option<Sourced<String>>,
    host: Option<Sourced<String>>,
    port: Option<Sourced<u16>>,
    tls: Option<Sourced<bool>>,
    username: Option<Sourced<String>>,
    password: Option<Secret>,
    password_file: Option<Sourced<PathBuf>>,
    tls_ca_file: Option<Sourced<PathBuf>>,
    tls_cert_file: Option<Sourced<PathBuf>>,
    tls_key_file: Option<Sourced<PathBuf>>,
    tls_insecure: Option<bool>,
    db: Option<Sourced<i64>>,
    key_prefix: Option<String>,
    connect_timeout: Option<Sourced<Duration>>,
    command_timeout: Option<Sourced<Duration>>,
    backoff_base: Option<Sourced<Duration>>,
    backoff_max: Option<Sourced<Duration>>,
    backoff_factor: Option<Sourced<f64>>,
    backoff_jitter: Option<Sourced<f64>>,
    stable_period: Option<Sourced<Duration>>,
    offline_policy: Option<OfflinePolicy>,
    shutdown_timeout: Option<Sourced<Duration>>,
    health_interval: Option<Sourced<Duration>>,
    health_timeout: Option<Sourced<Duration>>,
    health_failures: Option<Sourced<u32>>,
    health_slow: Option<Sourced<Duration>>,
    info_interval: Option<Sourced<Duration>>,
    restart_intensity: Option<Sourced<u32>>,
    restart_window: Option<Sourced<Duration>>,
    max_attempts: Option<Option<u32>>,
    max_waiting: Option<Sourced<usize>>,
}

/// A value and the name of the setting it came from, for error messages.
#[derive(Debug, Clone)]
struct Sourced<T> {
    value: T,
    source: String,
}

fn src<T>(value: T, source: &str) -> Option<Sourced<T>> {
    Some(Sourced {
        value,
        source: source.to_string(),
    })
}

impl ConfigBuilder {
    /// Server URL: `redis://[user[:password]@]host[:port][/db]`. Explicit `host`, `port`, `db`,
    /// `username` and `password` settings override the URL's parts.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = src(url.into(), "url");
        self
    }
    /// Supervisor name (letters, digits, `_ . : -`, at most 64): the `client` metric label.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = src(name.into(), "name");
        self
    }
    /// Server host.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = src(host.into(), "host");
        self
    }
    /// Server port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = src(port, "port");
        self
    }
    /// Use TLS (as a `rediss://` URL does), verifying the server certificate.
    pub fn tls(mut self, tls: bool) -> Self {
        self.tls = src(tls, "tls");
        self
    }
    /// Trust the CA certificates in this PEM file instead of the system roots.
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca_file = src(path.into(), "tls_ca_file");
        self
    }
    /// Present this PEM client certificate (mutual TLS); needs [`tls_key_file`](Self::tls_key_file).
    pub fn tls_cert_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_cert_file = src(path.into(), "tls_cert_file");
        self
    }
    /// The PEM private key of the client certificate.
    pub fn tls_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_key_file = src(path.into(), "tls_key_file");
        self
    }
    /// **Insecure**: accept any server certificate (no CA or host name check). For tests and
    /// emergencies only; the supervisor logs a warning when it starts and `/health/redis`
    /// reports `"tls_verify": false`.
    pub fn tls_insecure_skip_verify(mut self, insecure: bool) -> Self {
        self.tls_insecure = Some(insecure);
        self
    }
    /// Read the password from this file (e.g. a mounted container secret); a trailing newline
    /// is trimmed. An explicit [`password`](Self::password) wins.
    pub fn password_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.password_file = src(path.into(), "password_file");
        self
    }
    /// ACL user name.
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = src(username.into(), "username");
        self
    }
    /// Password (kept as a [`Secret`]).
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(Secret::new(password));
        self
    }
    /// Database number (≥ 0).
    pub fn db(mut self, db: i64) -> Self {
        self.db = src(db, "db");
        self
    }
    /// Prefix prepended to every key of the typed commands.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = Some(prefix.into());
        self
    }
    /// Limit on TCP connect plus handshake (> 0).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = src(d, "connect_timeout");
        self
    }
    /// Default command deadline (> 0).
    pub fn command_timeout(mut self, d: Duration) -> Self {
        self.command_timeout = src(d, "command_timeout");
        self
    }
    /// First reconnect delay (> 0).
    pub fn backoff_base(mut self, d: Duration) -> Self {
        self.backoff_base = src(d, "backoff_base");
        self
    }
    /// Cap on the reconnect delay (≥ base).
    pub fn backoff_max(mut self, d: Duration) -> Self {
        self.backoff_max = src(d, "backoff_max");
        self
    }
    /// Growth factor per attempt (≥ 1).
    pub fn backoff_factor(mut self, f: f64) -> Self {
        self.backoff_factor = src(f, "backoff_factor");
        self
    }
    /// Relative jitter in `[0, 1)`.
    pub fn backoff_jitter(mut self, j: f64) -> Self {
        self.backoff_jitter = src(j, "backoff_jitter");
        self
    }
    /// Uptime after which the backoff resets (> 0).
    pub fn stable_period(mut self, d: Duration) -> Self {
        self.stable_period = src(d, "stable_period");
        self
    }
    /// What commands do while the connection is down.
    pub fn offline_policy(mut self, p: OfflinePolicy) -> Self {
        self.offline_policy = Some(p);
        self
    }
    /// Longest wait for in-flight commands during shutdown (> 0).
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.shutdown_timeout = src(d, "shutdown_timeout");
        self
    }

    /// Interval between health probes (> 0).
    pub fn health_interval(mut self, d: Duration) -> Self {
        self.health_interval = src(d, "health_interval");
        self
    }
    /// Timeout of one health probe (> 0, ≤ the probe interval).
    pub fn health_timeout(mut self, d: Duration) -> Self {
        self.health_timeout = src(d, "health_timeout");
        self
    }
    /// Consecutive failed probes that replace the connection (≥ 1).
    pub fn health_failures(mut self, k: u32) -> Self {
        self.health_failures = src(k, "health_failures");
        self
    }
    /// Probe latency above which the connection is `Degraded` (> 0).
    pub fn health_slow(mut self, d: Duration) -> Self {
        self.health_slow = src(d, "health_slow");
        self
    }
    /// Interval between `INFO` reads (> 0).
    pub fn info_interval(mut self, d: Duration) -> Self {
        self.info_interval = src(d, "info_interval");
        self
    }

    /// Connections lost within the window beyond which a restart storm is declared (≥ 1).
    pub fn restart_intensity(mut self, n: u32) -> Self {
        self.restart_intensity = src(n, "restart_intensity");
        self
    }
    /// The restart-intensity window (> 0).
    pub fn restart_window(mut self, d: Duration) -> Self {
        self.restart_window = src(d, "restart_window");
        self
    }
    /// Give up for good after this many consecutive failed attempts (`None` or `Some(0)`: never).
    pub fn max_attempts(mut self, n: Option<u32>) -> Self {
        self.max_attempts = Some(n.filter(|n| *n > 0));
        self
    }
    /// Commands that may wait for the connection at once (≥ 1); more get
    /// [`Error::Overloaded`](crate::Error::Overloaded) at once.
    pub fn max_waiting(mut self, n: usize) -> Self {
        self.max_waiting = src(n, "max_waiting");
        self
    }

    /// A builder filled from `{prefix}_REDIS_*` variables read through `lookup`.
    fn from_lookup(
        prefix: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let var = |name: &str| {
            if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}_{name}")
            }
        };
        let get = |name: &str| -> Option<(String, String)> {
            let key = var(name);
            lookup(&key).map(|v| (key, v))
        };
        let mut b = Self::default();
        if !prefix.is_empty() {
            b.name = src(prefix.to_ascii_lowercase(), "prefix");
        }
        if let Some((k, v)) = get("REDIS_URL") {
            b.url = src(v, &k);
        }
        if let Some((k, v)) = get("REDIS_CLIENT_NAME") {
            b.name = src(v, &k);
        }
        if let Some((k, v)) = get("REDIS_HOST") {
            b.host = src(v, &k);
        }
        if let Some((k, v)) = get("REDIS_PORT") {
            b.port = src(parse_port(&k, &v)?, &k);
        }
        if let Some((k, v)) = get("REDIS_USERNAME") {
            b.username = src(v, &k);
        }
        if let Some((_, v)) = get("REDIS_PASSWORD") {
            b.password = Some(Secret::new(v));
        }
        if let Some((k, v)) = get("REDIS_DB") {
            b.db = src(parse_db(&k, &v)?, &k);
        }
        if let Some((k, v)) = get("REDIS_TLS") {
            b.tls = src(parse_bool(&k, &v)?, &k);
        }
        if let Some((k, v)) = get("REDIS_TLS_INSECURE_SKIP_VERIFY") {
            b.tls_insecure = Some(parse_bool(&k, &v)?);
        }
        for (name, slot) in [
            ("REDIS_PASSWORD_FILE", &mut b.password_file),
            ("REDIS_TLS_CA_FILE", &mut b.tls_ca_file),
            ("REDIS_TLS_CERT_FILE", &mut b.tls_cert_file),
            ("REDIS_TLS_KEY_FILE", &mut b.tls_key_file),
        ] {
            if let Some((k, v)) = get(name).filter(|(_, v)| !v.trim().is_empty()) {
                *slot = src(PathBuf::from(v), &k);
            }
        }
        if let Some((_, v)) = get("REDIS_KEY_PREFIX") {
            b.key_prefix = Some(v);
        }
        let ms = |name: &str| -> Result<Option<Sourced<Duration>>, ConfigError> {
            match get(name) {
                Some((k, v)) => Ok(src(parse_ms(&k, &v)?, &k)),
                None => Ok(None),
            }
        };
        b.connect_timeout = ms("REDIS_CONNECT_TIMEOUT_MS")?;
        b.command_timeout = ms("REDIS_COMMAND_TIMEOUT_MS")?;
        b.backoff_base = ms("REDIS_BACKOFF_BASE_MS")?;
        b.backoff_max = ms("REDIS_BACKOFF_MAX_MS")?;
        b.stable_period = ms("REDIS_STABLE_PERIOD_MS")?;
        b.shutdown_timeout = ms("REDIS_SHUTDOWN_TIMEOUT_MS")?;
        b.health_interval = ms("REDIS_HEALTH_INTERVAL_MS")?;
        b.health_timeout = ms("REDIS_HEALTH_TIMEOUT_MS")?;
        b.health_slow = ms("REDIS_HEALTH_SLOW_MS")?;
        b.info_interval = ms("REDIS_INFO_INTERVAL_MS")?;
        b.restart_window = ms("REDIS_RESTART_WINDOW_MS")?;
        let whole = |name: &str| -> Result<Option<(String, u64)>, ConfigError> {
            match get(name) {
                Some((k, v)) => match v.trim().parse::<u64>() {
                    Ok(n) => Ok(Some((k, n))),
                    Err(_) => Err(ConfigError::new(&k, &v, "must be a whole number")),
                },
                None => Ok(None),
            }
        };
        if let Some((k, n)) = whole("REDIS_RESTART_INTENSITY")? {
            let n =
                u32::try_from(n).map_err(|_| ConfigError::new(&k, n.to_string(), "too large"))?;
            b.restart_intensity = src(n, &k);
        }
        if let Some((k, n)) = whole("REDIS_MAX_ATTEMPTS")? {
            let n =
                u32::try_from(n).map_err(|_| ConfigError::new(&k, n.to_string(), "too large"))?;
            b.max_attempts = Some((n > 0).then_some(n));
        }
        if let Some((k, n)) = whole("REDIS_MAX_WAITING")? {
            let n =
                usize::try_from(n).map_err(|_| ConfigError::new(&k, n.to_string(), "too large"))?;
            b.max_waiting = src(n, &k);
        }
        if let Some((k, v)) = get("REDIS_HEALTH_FAILURES") {
            let n = v
                .trim()
                .parse::<u32>()
                .map_err(|_| ConfigError::new(&k, &v, "must be a whole number >= 1"))?;
            b.health_failures = src(n, &k);
        }
        if let Some((k, v)) = get("REDIS_OFFLINE_POLICY") {
            b.offline_policy = Some(
                v.parse()
                    .map_err(|reason: String| ConfigError::new(&k, &v, reason))?,
            );
        }
        Ok(b)
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
        let mut c = Config::default();
        if let Some(url) = &self.url {
            apply_url(&mut c, &url.value, &url.source)?;
        }
        if let Some(n) = self.name {
            validate_name(&n.source, &n.value)?;
            c.name = n.value;
        }
        if let Some(h) = self.host {
            c.host = h.value;
        }
        if let Some(p) = self.port {
            if p.value == 0 {
                return Err(ConfigError::new(&p.source, "0", "port must be 1-65535"));
            }
            c.port = p.value;
        }
        if let Some(t) = self.tls {
            c.tls = t.value;
        }
        if let Some(u) = self.username {
            c.username = (!u.value.is_empty()).then_some(u.value);
        }
        if let Some(f) = &self.password_file {
            let text = read_file(f)?;
            let text = String::from_utf8(text.to_vec()).map_err(|_| {
                ConfigError::new(&f.source, f.value.display().to_string(), "not valid UTF-8")
            })?;
            let pw = text.trim_end_matches(['\r', '\n']);
            if pw.is_empty() {
                return Err(ConfigError::new(
                    &f.source,
                    f.value.display().to_string(),
                    "the password file is empty",
                ));
            }
            c.password = Some(Secret::new(pw));
        }
        if let Some(p) = self.password {
            c.password = (!p.expose().is_empty()).then_some(p);
        }
        if let Some(db) = self.db {
            if db.value < 0 {
                return Err(ConfigError::new(
                    &db.source,
                    db.value.to_string(),
                    "database must be a non-negative integer",
                ));
            }
            c.db = db.value;
        }
        if let Some(p) = self.key_prefix {
            c.key_prefix = p;
        }
        let positive = |d: Option<Sourced<Duration>>, default: Duration| match d {
            Some(d) if d.value.is_zero() => Err(ConfigError::new(
                &d.source,
                format!("{:?}", d.value),
                "must be greater than zero",
            )),
            Some(d) => Ok(d.value),
            None => Ok(default),
        };
        c.connect_timeout = positive(self.connect_timeout, c.connect_timeout)?;
        c.command_timeout = positive(self.command_timeout, c.command_timeout)?;
        c.stable_period = positive(self.stable_period, c.stable_period)?;
        c.shutdown_timeout = positive(self.shutdown_timeout, c.shutdown_timeout)?;
        c.health_interval = positive(self.health_interval, c.health_interval)?;
        c.health_slow = positive(self.health_slow, c.health_slow)?;
        c.info_interval = positive(self.info_interval, c.info_interval)?;
        let timeout_src = self.health_timeout.as_ref().map(|s| s.source.clone());
        // Unset, the probe timeout follows a short probe interval down rather than refusing it.
        let default_timeout = c.health_timeout.min(c.health_interval);
        c.health_timeout = positive(self.health_timeout, default_timeout)?;
        if c.health_timeout > c.health_interval {
            return Err(ConfigError::new(
                timeout_src.unwrap_or_else(|| "health_timeout".into()),
                format!("{:?}", c.health_timeout),
                format!(
                    "the probe timeout must not exceed the probe interval ({:?})",
                    c.health_interval
                ),
            ));
        }
        c.restart_window = positive(self.restart_window, c.restart_window)?;
        if let Some(n) = self.restart_intensity {
            if n.value == 0 {
                return Err(ConfigError::new(
                    &n.source,
                    "0",
                    "must be a whole number >= 1",
                ));
            }
            c.restart_intensity = n.value;
        }
        if let Some(n) = self.max_attempts {
            c.max_attempts = n;
        }
        if let Some(n) = self.max_waiting {
            if n.value == 0 {
                return Err(ConfigError::new(
                    &n.source,
                    "0",
                    "must be a whole number >= 1",
                ));
            }
            c.max_waiting = n.value;
        }
        if let Some(k) = self.health_failures {
            if k.value == 0 {
                return Err(ConfigError::new(
                    &k.source,
                    "0",
                    "must be a whole number >= 1",
                ));
            }
            c.health_failures = k.value;
        }
        let base_src = self.backoff_base.as_ref().map(|s| s.source.clone());
        c.backoff.base = positive(self.backoff_base, c.backoff.base)?;
        let max_src = self.backoff_max.as_ref().map(|s| s.source.clone());
        c.backoff.max = positive(self.backoff_max, c.backoff.max)?;
        if c.backoff.max < c.backoff.base {
            return Err(ConfigError::new(
                max_src.or(base_src).unwrap_or_else(|| "backoff_max".into()),
                format!("{:?}", c.backoff.max),
                format!(
                    "backoff cap must be at least the base delay ({:?})",
                    c.backoff.base
                ),
            ));
        }
        if let Some(f) = self.backoff_factor {
            if !(f.value.is_finite() && f.value >= 1.0) {
                return Err(ConfigError::new(
                    &f.source,
                    f.value.to_string(),
                    "must be a finite number >= 1",
                ));
            }
            c.backoff.factor = f.value;
        }
        if let Some(j) = self.backoff_jitter {
            if !(j.value.is_finite() && (0.0..1.0).contains(&j.value)) {
                return Err(ConfigError::new(
                    &j.source,
                    j.value.to_string(),
                    "must be in [0, 1)",
                ));
            }
            c.backoff.jitter = j.value;
        }
        if let Some(p) = self.offline_policy {
            c.offline_policy = p;
        }
        if c.host.trim().is_empty() {
            let setting = self
                .url
                .map(|u| u.source)
                .unwrap_or_else(|| "host".to_string());
            return Err(ConfigError::new(setting, &c.host, "host must not be empty"));
        }
        c.tls_insecure = self.tls_insecure.unwrap_or(false);
        for f in [&self.tls_ca_file, &self.tls_cert_file, &self.tls_key_file]
            .into_iter()
            .flatten()
        {
            if !c.tls {
                return Err(ConfigError::new(
                    &f.source,
                    f.value.display().to_string(),
                    "set, but TLS is off (use a rediss:// URL or REDIS_TLS=true)",
                ));
            }
        }
        if let Some(f) = &self.tls_ca_file {
            let pem = read_file(f)?;
            check_pem(f, &pem, PemKind::Certificates)?;
            c.tls_files.ca = Some((f.value.clone(), pem));
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => {
                let cert_pem = read_file(cert)?;
                check_pem(cert, &cert_pem, PemKind::Certificates)?;
                let key_pem = read_file(key)?;
                check_pem(key, &key_pem, PemKind::PrivateKey)?;
                c.tls_files.cert = Some((cert.value.clone(), cert_pem));
                c.tls_files.key = Some((key.value.clone(), key_pem));
            }
            (Some(f), None) | (None, Some(f)) => {
                return Err(ConfigError::new(
                    &f.source,
                    f.value.display().to_string(),
                    "a client certificate needs both REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE",
                ));
            }
            (None, None) => {}
        }
        Ok(c)
    }
}

/// Reads a file named by a setting; the error names the setting and the path (paths are not
/// secret; contents never appear in errors).
fn read_file(f: &Sourced<PathBuf>) -> Result<Arc<[u8]>, ConfigError> {
    std::fs::read(&f.value).map(Arc::from).map_err(|e| {
        ConfigError::new(
            &f.source,
            f.value.display().to_string(),
            format!("cannot read the file: {e}"),
        )
    })
}

enum PemKind {
    Certificates,
    PrivateKey,
}

/// Checks that a PEM file holds what it should, so a wrong file fails at start, not at connect.
fn check_pem(f: &Sourced<PathBuf>, pem: &[u8], kind: PemKind) -> Result<(), ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ok = match kind {
        PemKind::Certificates => {
            let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
            matches!(certs, Ok(c) if !c.is_empty())
        }
        PemKind::PrivateKey => PrivateKeyDer::from_pem_slice(pem).is_ok(),
    };
    if ok {
        Ok(())
    } else {
        let what = match kind {
            PemKind::Certificates => "no PEM certificate in the file",
            PemKind::PrivateKey => "no PEM private key in the file",
        };
        Err(ConfigError::new(
            &f.source,
            f.value.display().to_string(),
            what,
        ))
    }
}

fn validate_name(setting: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            setting,
            name,
            "name must be 1-64 characters of letters, digits, `_`, `.`, `:` or `-`",
        ))
    }
}

fn parse_port(setting: &str, v: &str) -> Result<u16, ConfigError> {
    match v.trim().parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Ok(_) => Err(ConfigError::new(setting, v, "port must be 1-65535")),
        Err(_) => Err(ConfigError::new(
            setting,
            v,
            "port must be a number from 1 to 65535",
        )),
    }
}

fn parse_db(setting: &str, v: &str) -> Result<i64, ConfigError> {
    match v.trim().parse::<i64>() {
        Ok(db) if db >= 0 => Ok(db),
        _ => Err(ConfigError::new(
            setting,
            v,
            "database must be a non-negative integer",
        )),
    }
}

fn parse_bool(setting: &str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError::new(setting, v, "expected true or false")),
    }
}

fn parse_ms(setting: &str, v: &str) -> Result<Duration, ConfigError> {
    match v.trim().parse::<u64>() {
        Ok(0) => Err(ConfigError::new(setting, v, "must be greater than zero")),
        Ok(ms) => Ok(Duration::from_millis(ms)),
        Err(_) => Err(ConfigError::new(
            setting,
            v,
            "must be a positive whole number of milliseconds",
        )),
    }
}

/// Fills `c` from a `redis://` URL; `setting` names where the URL came from.
fn apply_url(c: &mut Config, raw: &str, setting: &str) -> Result<(), ConfigError> {
    let shown = redact_url(raw);
    let err = |reason: String| ConfigError::new(setting, &shown, reason);
    let url = url::Url::parse(raw.trim()).map_err(|e| err(format!("not a valid URL ({e})")))?;
    c.tls = match url.scheme() {
        "redis" | "valkey" => false,
        "rediss" | "valkeys" => true,
        other => {
            return Err(err(format!(
                "unsupported scheme `{other}` (expected redis:// or rediss://)"
            )));
        }
    };
    let host = url.host_str().unwrap_or("");
    if host.is_empty() {
        return Err(err("host must not be empty".into()));
    }
    c.host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    c.port = url.port().unwrap_or(DEFAULT_PORT);
    if c.port == 0 {
        return Err(err("port must be 1-65535".into()));
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| err("user name or password is not valid UTF-8".into()))
    };
    if !url.username().is_empty() {
        c.username = Some(decode(url.username())?);
    }
    if let Some(p) = url.password() {
        let p = decode(p)?;
        if !p.is_empty() {
            c.password = Some(Secret::new(p));
        }
    }
    let path = url.path().trim_start_matches('/');
    if !path.is_empty() {
        c.db = path
            .parse::<i64>()
            .ok()
            .filter(|d| *d >= 0)
            .ok_or_else(|| {
                err(format!(
                    "database `{path}` must be a non-negative integer (redis://host:port/DB)"
                ))
            })?;
    }
    for (k, _) in url.query_pairs() {
        if k != "protocol" {
            return Err(err(format!("unknown URL parameter `{k}`")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<Config, crate::Error> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup("", move |k| {
            vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    fn config_err(r: Result<Config, crate::Error>) -> ConfigError {
        match r {
            Err(crate::Error::Config(e)) => e,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = env(&[]).unwrap();
        assert_eq!(c.redacted_url(), "redis://127.0.0.1:6379/0");
        assert_eq!(c.command_timeout(), DEFAULT_COMMAND_TIMEOUT);
        assert_eq!(c.offline_policy(), OfflinePolicy::Wait);
        assert_eq!(c.name(), "default");
    }

    #[test]
    fn url_parts() {
        let c = Config::from_url("redis://bob:s%40cret@example.com:7000/3").unwrap();
        assert_eq!(
            (c.host(), c.port(), c.db(), c.username()),
            ("example.com", 7000, 3, Some("bob"))
        );
        assert_eq!(c.password().unwrap().expose(), "s@cret");
        let c = Config::from_url("redis://[::1]:6380").unwrap();
        assert_eq!(c.host(), "::1");
        assert_eq!(c.redacted_url(), "redis://[::1]:6380/0");
    }

    #[test]
    fn env_overrides_url_parts() {
        let c = env(&[
            ("REDIS_URL", "redis://:urlpw@h:1/1"),
            ("REDIS_PASSWORD", "envpw"),
            ("REDIS_DB", "4"),
        ])
        .unwrap();
        assert_eq!(c.password().unwrap().expose(), "envpw");
        assert_eq!((c.host(), c.port(), c.db()), ("h", 1, 4));
    }

    #[test]
    fn prefixed_env() {
        let vars = [("CACHE_REDIS_PORT", "7001")];
        let c = Config::from_lookup("CACHE", |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
        .unwrap();
        assert_eq!((c.port(), c.name()), (7001, "cache"));
    }

    /// Variables, the setting the error must name, and a piece of the value it must show.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);

    #[test]
    fn bad_values_name_setting_and_value() {
        let cases: &[Case] = &[
            (&[("REDIS_URL", "redis://h:70000")], "REDIS_URL", "70000"),
            (&[("REDIS_URL", "not a url")], "REDIS_URL", "not a url"),
            (&[("REDIS_URL", "http://h:1")], "REDIS_URL", "http"),
            (&[("REDIS_URL", "redis://h:1/x")], "REDIS_URL", "`x`"),
            (&[("REDIS_URL", "redis://:6379")], "REDIS_URL", "redis://"),
            (&[("REDIS_PORT", "70000")], "REDIS_PORT", "70000"),
            (&[("REDIS_PORT", "abc")], "REDIS_PORT", "abc"),
            (&[("REDIS_DB", "x")], "REDIS_DB", "\"x\""),
            (&[("REDIS_DB", "-1")], "REDIS_DB", "-1"),
            (
                &[("REDIS_COMMAND_TIMEOUT_MS", "0")],
                "REDIS_COMMAND_TIMEOUT_MS",
                "\"0\"",
            ),
            (
                &[("REDIS_COMMAND_TIMEOUT_MS", "-5")],
                "REDIS_COMMAND_TIMEOUT_MS",
                "-5",
            ),
            (
                &[("REDIS_CONNECT_TIMEOUT_MS", "1.5")],
                "REDIS_CONNECT_TIMEOUT_MS",
                "1.5",
            ),
            (&[("REDIS_HOST", "")], "host", "empty"),
            (
                &[("REDIS_OFFLINE_POLICY", "sometimes")],
                "REDIS_OFFLINE_POLICY",
                "sometimes",
            ),
            (&[("REDIS_TLS", "maybe")], "REDIS_TLS", "maybe"),
            (&[("REDIS_CLIENT_NAME", "a b")], "REDIS_CLIENT_NAME", "a b"),
            (&[("REDIS_MAX_WAITING", "0")], "REDIS_MAX_WAITING", "\"0\""),
            (
                &[("REDIS_MAX_WAITING", "lots")],
                "REDIS_MAX_WAITING",
                "lots",
            ),
            (
                &[("REDIS_RESTART_INTENSITY", "0")],
                "REDIS_RESTART_INTENSITY",
                "\"0\"",
            ),
            (&[("REDIS_MAX_ATTEMPTS", "-3")], "REDIS_MAX_ATTEMPTS", "-3"),
            (
                &[("REDIS_RESTART_WINDOW_MS", "0")],
                "REDIS_RESTART_WINDOW_MS",
                "\"0\"",
            ),
            (
                &[("REDIS_HEALTH_FAILURES", "0")],
                "REDIS_HEALTH_FAILURES",
                "\"0\"",
            ),
            (
                &[("REDIS_HEALTH_FAILURES", "-1")],
                "REDIS_HEALTH_FAILURES",
                "-1",
            ),
            (
                &[
                    ("REDIS_HEALTH_INTERVAL_MS", "100"),
                    ("REDIS_HEALTH_TIMEOUT_MS", "500"),
                ],
                "REDIS_HEALTH_TIMEOUT_MS",
                "500ms",
            ),
            (
                &[
                    ("REDIS_BACKOFF_BASE_MS", "500"),
                    ("REDIS_BACKOFF_MAX_MS", "100"),
                ],
                "REDIS_BACKOFF_MAX_MS",
                "100ms",
            ),
        ];
        for (vars, setting, needle) in cases {
            let e = config_err(env(vars));
            let msg = e.to_string();
            assert!(msg.contains(setting), "{vars:?}: {msg}");
            assert!(msg.contains(needle), "{vars:?}: {msg}");
        }
    }

    #[test]
    fn probe_timeout_follows_a_short_interval_unless_set() {
        let c = env(&[("REDIS_HEALTH_INTERVAL_MS", "200")]).unwrap();
        assert_eq!(c.health_timeout(), Duration::from_millis(200));
        let c = env(&[("REDIS_HEALTH_INTERVAL_MS", "5000")]).unwrap();
        assert_eq!(c.health_timeout(), DEFAULT_HEALTH_TIMEOUT);
        assert_eq!(c.detection_bound(), Duration::from_millis(15_500));
    }

    #[test]
    fn builder_rejects_zero_durations_by_name() {
        let e = config_err(Config::builder().command_timeout(Duration::ZERO).build());
        assert_eq!(e.setting, "command_timeout");
        let e = config_err(Config::builder().connect_timeout(Duration::ZERO).build());
        assert_eq!(e.setting, "connect_timeout");
        let e = config_err(Config::builder().backoff_factor(0.5).build());
        assert_eq!(e.setting, "backoff_factor");
    }

    #[test]
    fn secrets_never_shown() {
        let secret = "Sup3r-S3cret-pw";
        let url = format!("redis://alice:{secret}@h:1/0");
        let c = Config::from_url(&url).unwrap();
        for s in [format!("{c:?}"), format!("{c}"), c.redacted_url()] {
            assert!(!s.contains(secret), "{s}");
        }
        assert_eq!(c.redacted_url(), "redis://alice:***@h:1/0");
        // Malformed URLs are redacted too, including passwords with URL syntax in them.
        for bad in [
            format!("redis://alice:{secret}@h:99999"),
            format!("redis://alice:{secret}/x@h:1/zz"),
            format!("redis://{secret}@h:1/zz"),
            format!("alice:{secret}@h"),
        ] {
            let e = config_err(Config::from_url(&bad));
            for s in [e.to_string(), format!("{e:?}")] {
                assert!(!s.contains(secret), "{s}");
            }
        }
        let e = config_err(env(&[("REDIS_PASSWORD", secret), ("REDIS_PORT", "nope")]));
        assert!(!format!("{e} {e:?}").contains(secret));
    }

    #[test]
    fn tls_settings() {
        let c = Config::from_url("rediss://h:1").unwrap();
        assert!(c.tls() && !c.tls_insecure_skip_verify());
        assert_eq!(c.redacted_url(), "rediss://h:1/0");
        let e = config_err(env(&[("REDIS_TLS_CA_FILE", "/nonexistent/ca.pem")]));
        assert_eq!(e.setting, "REDIS_TLS_CA_FILE");
        assert!(e.reason.contains("TLS is off"), "{e}");
        let e = config_err(env(&[
            ("REDIS_TLS", "true"),
            ("REDIS_TLS_CA_FILE", "/nonexistent/ca.pem"),
        ]));
        assert_eq!(e.setting, "REDIS_TLS_CA_FILE");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        let dir = std::env::temp_dir().join(format!("rs-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = config_err(
            Config::builder()
                .url("rediss://h:1")
                .tls_ca_file(&junk)
                .build(),
        );
        assert_eq!(e.setting, "tls_ca_file");
        assert!(e.reason.contains("no PEM certificate"), "{e}");
        let e = config_err(
            Config::builder()
                .url("rediss://h:1")
                .tls_cert_file(&junk)
                .build(),
        );
        assert!(e.reason.contains("both"), "{e}");
        let c = Config::builder()
            .url("rediss://h:1")
            .tls_insecure_skip_verify(true)
            .build()
            .unwrap();
        assert!(c.tls_insecure_skip_verify());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn password_file() {
        let dir = std::env::temp_dir().join(format!("rs-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "from-file-secret\n").unwrap();
        let path = f.display().to_string();
        let c = env(&[("REDIS_PASSWORD_FILE", &path)]).unwrap();
        assert_eq!(c.password().unwrap().expose(), "from-file-secret");
        // An explicit password wins over the file.
        let c = env(&[
            ("REDIS_PASSWORD_FILE", &path),
            ("REDIS_PASSWORD", "explicit"),
        ])
        .unwrap();
        assert_eq!(c.password().unwrap().expose(), "explicit");
        std::fs::write(&f, "\n").unwrap();
        let e = config_err(env(&[("REDIS_PASSWORD_FILE", &path)]));
        assert!(e.reason.contains("empty") && !format!("{e:?}").contains("from-file"));
        let e = config_err(env(&[("REDIS_PASSWORD_FILE", "/nonexistent/pw")]));
        assert_eq!(e.setting, "REDIS_PASSWORD_FILE");
        std::fs::remove_dir_all(&dir).ok();
    }
}
