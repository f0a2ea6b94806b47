//! The crate's one typed error, and how each kind of failure is classified.
//!
//! Classification lives on the type: [`Error::is_retryable`], [`Error::is_ambiguous`],
//! [`Error::is_unavailable`]. No message of this type ever contains a password or token (ARCHITECTURE.md
//! promise 8): configuration errors show values redacted, and server messages come from Redis, which
//! never echoes credentials back.

use std::time::{Duration, SystemTime};

/// Every failure the public API can report.
///
/// Matching on a variant is fine; for decisions prefer the classification helpers, which stay
/// correct as variants are added.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection was not up by the command's deadline (or at once, under
    /// [`OfflinePolicy::FailFast`](crate::OfflinePolicy::FailFast)). The command was never sent.
    #[error("redis unavailable since {} ago: {reason}", format_since(*since))]
    Unavailable {
        /// When the connection was last lost (or when the supervisor started, if it never came up).
        since: SystemTime,
        /// Why it is down, e.g. "connection refused", "authentication failed".
        reason: String,
        /// The kind of failure behind `reason`.
        kind: FailureKind,
    },

    /// No reply by the command's deadline.
    ///
    /// What is known, exactly: with `sent: true` the command was handed to the connection's
    /// write queue (redis-rs's pipeline task), so it may have been written and executed — the
    /// crate cannot know which, because that queue gives no word when it writes. Only a
    /// command whose replay is safe gets this error with `sent: true`; any other gets
    /// [`Ambiguous`](Error::Ambiguous) instead. With `sent: false` the command was never handed
    /// to any connection (its deadline had passed before it could be: a zero deadline, or a
    /// connection found just as the deadline passed) and it never will be: it did not run. A
    /// command that waited for a connection that never came gets
    /// [`Unavailable`](Error::Unavailable), not this.
    #[error("redis command {command} timed out after {after:?} ({})", if *sent { "it may have executed" } else { "never sent" })]
    Timeout {
        /// The command name, e.g. `GET`.
        command: String,
        /// The deadline the caller gave the command.
        after: Duration,
        /// Whether the command was handed to a connection (and so may have run).
        sent: bool,
    },

    /// The connection was lost after the command may have reached the server, and the command is
    /// not idempotent, so it was not replayed: it may or may not have executed.
    #[error("redis command {command} may have executed: {reason}")]
    Ambiguous {
        /// The command name, e.g. `INCR`.
        command: String,
        /// What happened to the connection.
        reason: String,
    },

    /// Too many commands were already waiting for the connection
    /// ([`Config::max_waiting`](crate::Config::max_waiting)), or, for a blocking command, every
    /// dedicated connection ([`Config::blocking_connections`](crate::Config::blocking_connections))
    /// stayed busy until its deadline. The command was never sent.
    #[error("redis overloaded: {limit} already waiting or running; not sent")]
    Overloaded {
        /// The configured limit that was reached.
        limit: usize,
    },

    /// The supervisor is shutting down (or has shut down); the command was not sent.
    #[error("redis supervisor is shutting down")]
    ShuttingDown,

    /// Redis answered with an error reply (`WRONGTYPE`, `NOPERM`, `NOSCRIPT`, …). The connection
    /// is fine.
    #[error("redis server error {code}: {message}")]
    Server {
        /// The error code Redis sent, e.g. `WRONGTYPE`, `NOPERM`, `ERR`.
        code: String,
        /// The rest of the message.
        message: String,
    },

    /// The reply did not convert into the type the caller asked for (e.g. a string read as an
    /// integer). A caller error; the connection is fine.
    #[error("unexpected reply type: {0}")]
    ReplyType(String),

    /// The configuration is invalid; the message names the setting and the (redacted) value.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// A bad argument to a command, caught before anything was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// On a Redis Cluster, a multi-key command whose keys hash to different slots (the server
    /// refused it with `CROSSSLOT`: it did not run). Give the keys a common hash tag —
    /// `{user:42}:cart` and `{user:42}:orders` share a slot. `MGET`, `DEL`, `EXISTS`, `UNLINK`,
    /// `TOUCH` and `MSET` never get this: they are split per slot and recombined (see the
    /// [`supervisor`](crate::supervisor#redis-cluster) module docs, "Redis Cluster").
    #[error("the keys of {command} hash to different cluster slots: {}; give them a common {{hash tag}}", keys.join(", "))]
    CrossSlot {
        /// The command name, e.g. `SUNIONSTORE`.
        command: String,
        /// Its key arguments with their slots, e.g. `cart:1 (slot 5049)` (at most 8).
        keys: Vec<String>,
    },

    /// A connection-level failure that is none of the above (e.g. a transport error reported for a
    /// command that had not been sent).
    #[error("redis connection error: {0}")]
    Connection(String),

    /// The loader of [`Cache::get_or_load`](crate::cache::Cache::get_or_load) failed, timed out
    /// or panicked; every caller waiting on that load gets this same error. `source` is the
    /// loader's own error (downcast it with `source.downcast_ref::<YourError>()`), or a
    /// [`LoadTimeout`](crate::cache::LoadTimeout) / [`LoadPanicked`](crate::cache::LoadPanicked).
    /// Nothing was cached; the next call runs the loader again.
    #[error("loading cache key {key:?} failed: {source}")]
    Loader {
        /// The Redis key being loaded (with the key prefix and the cache's namespace).
        key: String,
        /// Why the load failed.
        source: std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// The data under a key is not what the reader expects: not JSON, JSON of another shape, or
    /// not a string value (`WRONGTYPE`). The value itself is never part of the message.
    #[error("corrupt data under key {key:?}: {reason}")]
    Corrupt {
        /// The Redis key (with the key prefix and the pattern's namespace).
        key: String,
        /// What is wrong, e.g. the JSON decoder's message (position and expectation).
        reason: String,
    },

    /// A write was to reach `required` replicas before it was answered (see
    /// [`RedisHandle::wait_replicas`](crate::RedisHandle::wait_replicas)), and `WAIT` said only
    /// `acknowledged` had it in time. It **ran on the master**, but may not survive a failover:
    /// asynchronous replication can lose it if the master fails before a replica has it. Not
    /// retryable as such (a retry would run it twice); [`is_ambiguous`](Error::is_ambiguous).
    #[error(
        "{command} ran on the master, but only {acknowledged} of {required} replicas acknowledged it in time ({reason}): it may not survive a failover"
    )]
    NotReplicated {
        /// The command name, e.g. `INCR`.
        command: String,
        /// Replicas that acknowledged it.
        acknowledged: u32,
        /// Replicas required.
        required: u32,
        /// What `WAIT` answered, or why it could not.
        reason: String,
    },

    /// A command was redirected (`MOVED`/`ASK`, on a Redis Cluster) more times than the
    /// redirect budget allows (16), within its deadline: a slot moving faster than it could
    /// follow, or nodes that disagree. It did not run.
    #[error("{command} redirected {redirects} times (last to {last}); not run")]
    TooManyRedirects {
        /// The command name, e.g. `GET`.
        command: String,
        /// Redirects followed.
        redirects: u32,
        /// The node the last redirect named (`host:port`).
        last: String,
    },

    /// [`RedisHandle::transaction`](crate::RedisHandle::transaction) was aborted `attempts`
    /// times in a row (another client changed a watched key between `WATCH` and `EXEC` each
    /// time) and gave up at its bound or its deadline. Nothing of it was committed.
    #[error(
        "transaction aborted {attempts} times by changes to its watched keys; nothing was committed"
    )]
    TransactionAborted {
        /// How many times `EXEC` was aborted.
        attempts: u32,
    },

    /// A [`LockGuard`](crate::lock::LockGuard) found its lock no longer held by it (`extend` or
    /// `release`): the TTL passed (and another holder may have it now) or the key was deleted.
    /// Nothing was changed: another holder's lock is never extended or freed. Work done under
    /// the lock since it was lost was not protected by it.
    #[error("lock {key:?} is no longer held by this guard")]
    LockLost {
        /// The lock's Redis key (with the key prefix and the lock manager's namespace).
        key: String,
    },

    /// [`LockManager::acquire`](crate::lock::LockManager::acquire) did not get the lock within
    /// its `wait`: another holder had it the whole time. An answer, not a failure of Redis.
    #[error("lock {key:?} still held by another after waiting {waited:?}")]
    LockBusy {
        /// The lock's Redis key (with the key prefix and the lock manager's namespace).
        key: String,
        /// How long the call waited.
        waited: Duration,
    },
}

fn format_since(since: SystemTime) -> String {
    let d = SystemTime::now().duration_since(since).unwrap_or_default();
    format!("{:.1}s", d.as_secs_f64())
}

impl Error {
    /// True when retrying the same call later may succeed without any change by the caller:
    /// [`Unavailable`](Error::Unavailable), [`Timeout`](Error::Timeout),
    /// [`Connection`](Error::Connection), [`Overloaded`](Error::Overloaded),
    /// [`TransactionAborted`](Error::TransactionAborted),
    /// [`TooManyRedirects`](Error::TooManyRedirects). Not
    /// [`Loader`](Error::Loader) (whether the loader's failure is transient is the loader's
    /// business: inspect `source`), [`Corrupt`](Error::Corrupt) (the data stays corrupt until
    /// it is overwritten or deleted), [`LockLost`](Error::LockLost) (the lock is gone: acquire
    /// it again) nor [`LockBusy`](Error::LockBusy) (another holder's lock: an answer).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. }
                | Error::Timeout { .. }
                | Error::Connection(_)
                | Error::Overloaded { .. }
                | Error::TransactionAborted { .. }
                | Error::TooManyRedirects { .. }
        )
    }

    /// True when the command may or may not have executed on the server — a
    /// [`Timeout`](Error::Timeout) with `sent`, or [`Ambiguous`](Error::Ambiguous) — or may not
    /// survive a failover ([`NotReplicated`](Error::NotReplicated)).
    pub fn is_ambiguous(&self) -> bool {
        matches!(
            self,
            Error::Ambiguous { .. }
                | Error::Timeout { sent: true, .. }
                | Error::NotReplicated { .. }
        )
    }

    /// True when the command failed because Redis could not be reached (or the client is going
    /// away): the error a graceful-degradation policy treats as "Redis is down".
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. }
                | Error::ShuttingDown
                | Error::Connection(_)
                | Error::Overloaded { .. }
        )
    }

    /// The server's error code (`WRONGTYPE`, `NOPERM`, …) when Redis answered with an error reply.
    pub fn server_code(&self) -> Option<&str> {
        match self {
            Error::Server { code, .. } => Some(code),
            _ => None,
        }
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
    pub(crate) fn new(
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

/// Which side a redis-rs error is on: the connection's, or the command's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorSide {
    /// The transport broke (I/O, dropped, refused, timeout): the connection must be replaced.
    Transport,
    /// An error reply or a conversion problem: the connection is healthy.
    Reply,
}

/// Classifies a redis-rs error: only transport failures are a reason to drop a connection
/// (a reply-type mismatch is "unrecoverable" to redis-rs, but it is a caller error).
pub(crate) fn classify(err: &redis::RedisError) -> ErrorSide {
    if err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
        || err.kind() == redis::ErrorKind::Io
    {
        ErrorSide::Transport
    } else {
        ErrorSide::Reply
    }
}

/// Converts a redis-rs error for a command that got a (non-transport) answer.
pub(crate) fn from_reply_error(err: redis::RedisError) -> Error {
    // A pipeline's errors with a code redis-rs has no kind for (`BUSY`, a module's): the
    // first failing command's.
    if err.code().is_none()
        && let Some(errors) = err.clone().into_server_errors()
        && let Some((at, first)) = errors.first()
    {
        return Error::Server {
            code: first.code().to_string(),
            message: format!(
                "command {} of the pipeline: {}",
                at + 1,
                first.details().unwrap_or_default()
            ),
        };
    }
    if let Some(code) = err.code() {
        let message = match err.detail() {
            Some(detail) => detail.to_string(),
            // A pipeline's or transaction's errors: the first failing command's, and which.
            None => match err.clone().into_server_errors().as_deref() {
                Some([(at, first), ..]) if first.code() == code => format!(
                    "command {} of the pipeline: {}",
                    at + 1,
                    first.details().unwrap_or_default()
                ),
                Some([(at, first), ..]) => format!(
                    "command {} of the pipeline: {} {}",
                    at + 1,
                    first.code(),
                    first.details().unwrap_or_default()
                ),
                _ => String::new(),
            },
        };
        return Error::Server {
            code: code.to_string(),
            message,
        };
    }
    match err.kind() {
        redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType => {
            Error::ReplyType(err.to_string())
        }
        redis::ErrorKind::AuthenticationFailed => Error::Server {
            code: "WRONGPASS".to_string(),
            message: "authentication failed".to_string(),
        },
        // Refused by redis-rs before anything was sent (the caller's input): not a connection
        // problem, and retrying the same call cannot help.
        redis::ErrorKind::Client | redis::ErrorKind::InvalidClientConfig => {
            Error::InvalidArgument(err.to_string())
        }
        // A server error reply redis-rs has no kind for (a module's own code, say): still the
        // server's answer, not a connection problem.
        redis::ErrorKind::Extension => Error::Server {
            code: err
                .to_string()
                .split_whitespace()
                .next()
                .unwrap_or("ERR")
                .trim_end_matches(':')
                .to_string(),
            message: err.to_string(),
        },
        _ => Error::Connection(err.to_string()),
    }
}

/// Why a connection, or a connection attempt, failed: the typed part of every "down" reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// No attempt has finished yet.
    NotConnected,
    /// The host name did not resolve (DNS).
    Dns,
    /// Nothing listens at the address (TCP connection refused).
    Refused,
    /// The connect or handshake did not finish within the connect timeout.
    Timeout,
    /// The server refused the credentials (`WRONGPASS`, `NOAUTH`, …).
    Authentication,
    /// The TLS handshake failed (unknown issuer, name mismatch, expired certificate, client
    /// certificate required, …).
    Tls,
    /// The server or the network closed the connection.
    Closed,
    /// The connection stopped answering: consecutive health probes got no reply of any kind.
    Unhealthy,
    /// The server answers but cannot serve yet: it is loading its dataset into memory (after a
    /// restart, or a replica's full resynchronisation); it refuses commands with `LOADING`.
    Loading,
    /// The server is a replica that lost its master and is configured not to serve stale data
    /// (`replica-serve-stale-data no`); it refuses commands with `MASTERDOWN`.
    MasterDown,
    /// The server is busy running a script or function past `busy-reply-threshold`; it refuses
    /// commands with `BUSY` until the script ends or is killed.
    Busy,
    /// The node reached is not (or no longer) the master: a write was refused with `READONLY`,
    /// or `ROLE` said replica where the sentinels said master. The connection is replaced by one
    /// to the master the sentinels name now.
    NotMaster,
    /// A Sentinel failover moved the master (the leader promoted a replica:
    /// `+failover-state-send-slaveof-noone` or `+promoted-slave`; or the sentinels announced or
    /// named another master: `+switch-master`, a periodic check): the connection to the old one
    /// was replaced at once, without a backoff wait. Not a failure of the connection.
    Failover,
    /// A Redis Cluster cannot serve every slot (`cluster_state:fail`, or `CLUSTERDOWN`
    /// replies): a shard has no reachable primary, so its slots wait for a failover.
    ClusterDown,
    /// Anything else (I/O errors, protocol errors, an unexpected handshake reply).
    Other,
}

impl FailureKind {
    /// The kind's name, as in JSON: `refused`, `authentication`, `tls`, …
    pub fn name(self) -> &'static str {
        match self {
            Self::NotConnected => "not_connected",
            Self::Dns => "dns",
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::Authentication => "authentication",
            Self::Tls => "tls",
            Self::Closed => "closed",
            Self::Unhealthy => "unhealthy",
            Self::Loading => "loading",
            Self::MasterDown => "master_down",
            Self::Busy => "busy",
            Self::NotMaster => "not_master",
            Self::Failover => "failover",
            Self::ClusterDown => "cluster_down",
            Self::Other => "other",
        }
    }
}

impl FailureKind {
    /// The kind of refusal a server error code announces: "cannot serve yet" (`LOADING`,
    /// `MASTERDOWN`, `BUSY`) or "not the master" (`READONLY`). Such a refusal means the command
    /// was not executed.
    pub(crate) fn of_refusal(code: &str) -> Option<Self> {
        match code {
            "LOADING" => Some(Self::Loading),
            "MASTERDOWN" => Some(Self::MasterDown),
            "BUSY" => Some(Self::Busy),
            "READONLY" => Some(Self::NotMaster),
            "CLUSTERDOWN" => Some(Self::ClusterDown),
            _ => None,
        }
    }

    /// True for the kinds of a server that answers but cannot serve yet.
    pub fn is_not_ready(self) -> bool {
        matches!(
            self,
            Self::Loading | Self::MasterDown | Self::Busy | Self::ClusterDown
        )
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A connection failure as the supervisor sees it: a kind and a secret-free message. It travels
/// from the connection actor to the supervisor inside the actor's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct ConnectionFailure {
    pub(crate) kind: FailureKind,
    pub(crate) message: String,
}

impl ConnectionFailure {
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// Recovers the failure from an actor's error (any other error is `Other`).
    pub(crate) fn from_actor_error(err: &(dyn std::error::Error + Send + Sync + 'static)) -> Self {
        match err.downcast_ref::<ConnectionFailure>() {
            Some(f) => f.clone(),
            None => Self::new(FailureKind::Other, err.to_string()),
        }
    }
}

/// Classifies a TLS failure from its message (rustls errors reach us wrapped in I/O errors whose
/// source chain is not preserved, so the text is what there is).
fn tls_failure(text: &str) -> Option<String> {
    let t = text.to_ascii_lowercase();
    let reason = if t.contains("unknownissuer") || t.contains("unknown issuer") {
        "TLS: unknown issuer (the server certificate is not signed by a trusted CA; set REDIS_TLS_CA_FILE or tls_ca_file)"
            .to_string()
    } else if t.contains("notvalidforname") || t.contains("not valid for name") {
        "TLS: the server certificate is not valid for this host name".to_string()
    } else if t.contains("expired") && t.contains("certificate") {
        "TLS: the server certificate has expired".to_string()
    } else if t.contains("certificaterequired") || t.contains("certificate required") {
        "TLS: the server requires a client certificate (set REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE, or tls_cert_file and tls_key_file)"
            .to_string()
    } else if t.contains("badcertificate")
        || t.contains("unknownca")
        || t.contains("decrypterror")
        || t.contains("accessdenied")
    {
        "TLS: the server rejected the client certificate".to_string()
    } else if t.contains("invalid peer certificate")
        || t.contains("received fatal alert")
        || t.contains("tls handshake")
        || t.contains("invalidmessage")
        || t.contains("corrupt message")
        || t.contains("invalid certificate")
    {
        format!("TLS: handshake failed ({})", text.trim())
    } else {
        return None;
    };
    Some(reason)
}

/// A short, secret-free description of why a connection attempt or connection failed, used as
/// the availability reason ("connection refused", "authentication failed", "TLS: …").
pub(crate) fn describe_connection_error(err: &redis::RedisError) -> ConnectionFailure {
    if err.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(err.code(), Some("WRONGPASS") | Some("NOAUTH"))
    {
        let message = format!("authentication failed: {}", err.detail().unwrap_or(""))
            .trim_end_matches([':', ' '])
            .to_string();
        return ConnectionFailure::new(FailureKind::Authentication, message);
    }
    if let Some(kind) = err.code().and_then(FailureKind::of_refusal) {
        return ConnectionFailure::new(
            kind,
            format!("handshake refused: {}", err.to_string().trim()),
        );
    }
    let text = err.to_string();
    if let Some(reason) = tls_failure(&text) {
        return ConnectionFailure::new(FailureKind::Tls, reason);
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("failed to lookup address")
        || lower.contains("name or service not known")
        || lower.contains("temporary failure in name resolution")
        || lower.contains("no address associated")
    {
        return ConnectionFailure::new(
            FailureKind::Dns,
            format!("host name did not resolve: {text}"),
        );
    }
    if err.is_connection_refusal() {
        return ConnectionFailure::new(FailureKind::Refused, "connection refused");
    }
    if err.is_timeout() {
        return ConnectionFailure::new(FailureKind::Timeout, "timed out");
    }
    if err.is_connection_dropped() {
        return ConnectionFailure::new(FailureKind::Closed, "connection closed by server");
    }
    ConnectionFailure::new(FailureKind::Other, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_helpers() {
        let down = Error::Unavailable {
            since: SystemTime::now(),
            reason: "connection refused".into(),
            kind: FailureKind::Refused,
        };
        assert!(down.is_retryable() && down.is_unavailable() && !down.is_ambiguous());
        let amb = Error::Ambiguous {
            command: "INCR".into(),
            reason: "connection lost".into(),
        };
        assert!(amb.is_ambiguous() && !amb.is_retryable());
        let srv = Error::Server {
            code: "WRONGTYPE".into(),
            message: "Operation against a key holding the wrong kind of value".into(),
        };
        assert_eq!(srv.server_code(), Some("WRONGTYPE"));
        assert!(!srv.is_retryable() && !srv.is_unavailable());
        assert!(Error::ShuttingDown.is_unavailable());
        let lost = Error::LockLost {
            key: "lock:a".into(),
        };
        let busy = Error::LockBusy {
            key: "lock:a".into(),
            waited: Duration::from_secs(1),
        };
        for e in [lost, busy] {
            assert!(
                !e.is_retryable() && !e.is_unavailable() && !e.is_ambiguous(),
                "{e}"
            );
        }
    }

    #[test]
    fn caller_mistakes_are_not_connection_failures() {
        let client = redis::RedisError::from((redis::ErrorKind::Client, "empty command"));
        let e = from_reply_error(client);
        assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
        assert!(!e.is_unavailable() && !e.is_retryable());
        let parse = redis::RedisError::from((redis::ErrorKind::Parse, "bad"));
        assert!(matches!(from_reply_error(parse), Error::ReplyType(_)));
    }

    #[test]
    fn unavailable_display_says_since_and_why() {
        let e = Error::Unavailable {
            since: SystemTime::now() - Duration::from_secs(3),
            reason: "connection refused".into(),
            kind: FailureKind::Refused,
        };
        let s = e.to_string();
        assert!(s.contains("connection refused"), "{s}");
        assert!(s.contains("3."), "{s}");
    }

    #[test]
    fn connection_errors_are_classified() {
        let io = |msg: &str| redis::RedisError::from(std::io::Error::other(msg.to_string()));
        let f = describe_connection_error(&io(
            "failed to lookup address information: Name or service not known",
        ));
        assert_eq!(f.kind, FailureKind::Dns);
        assert!(f.message.starts_with("host name did not resolve"), "{f:?}");
        let f = describe_connection_error(&redis::RedisError::from(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert_eq!(f.kind, FailureKind::Refused);
        let f = describe_connection_error(&io("invalid peer certificate: UnknownIssuer"));
        assert_eq!(f.kind, FailureKind::Tls);
    }

    #[test]
    fn tls_messages_are_classified() {
        for (text, needle) in [
            ("invalid peer certificate: UnknownIssuer", "unknown issuer"),
            (
                "invalid peer certificate: certificate not valid for name \"localhost\"",
                "not valid for this host name",
            ),
            (
                "invalid peer certificate: NotValidForName",
                "not valid for this host name",
            ),
            ("invalid peer certificate: Expired", "expired"),
            (
                "invalid peer certificate: certificate expired: verification time 1, but certificate is not valid after 0",
                "expired",
            ),
            (
                "received fatal alert: CertificateRequired",
                "requires a client certificate",
            ),
            ("received fatal alert: HandshakeFailure", "handshake failed"),
        ] {
            let got = tls_failure(text).unwrap_or_default();
            assert!(
                got.starts_with("TLS: ") && got.contains(needle),
                "{text} -> {got}"
            );
        }
        assert_eq!(tls_failure("Connection refused (os error 111)"), None);
    }
}
