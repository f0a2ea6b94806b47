//! The crate's one typed error, and how each kind of failure is classified.
//!
//! Classification lives on the type: [`Error::is_retryable`], [`Error::is_ambiguous`],
//! [`Error::is_unavailable`]. No message of this type ever contains a password or token (DESIGN.md
//! promise 8): configuration errors show values redacted, and server messages come from Redis, which
//! never echoes credentials back.

use std::time::{Duration, SystemTime};

use crate::config::ConfigError;

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
    },

    /// The command was sent but no reply arrived by its deadline. It may or may not have run.
    #[error("redis command {command} timed out after {after:?} (it may have executed)")]
    Timeout {
        /// The command name, e.g. `GET`.
        command: String,
        /// The deadline the caller gave the command.
        after: Duration,
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
    /// ([`Config::max_waiting`](crate::Config::max_waiting)); this one failed at once and was
    /// never sent.
    #[error("redis unavailable and {limit} commands already waiting; not queued")]
    Overloaded {
        /// The configured limit.
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

    /// A connection-level failure that is none of the above (e.g. a transport error reported for a
    /// command that had not been sent).
    #[error("redis connection error: {0}")]
    Connection(String),
}

fn format_since(since: SystemTime) -> String {
    let d = SystemTime::now().duration_since(since).unwrap_or_default();
    format!("{:.1}s", d.as_secs_f64())
}

impl Error {
    /// True when retrying the same call later may succeed without any change by the caller:
    /// [`Unavailable`](Error::Unavailable), [`Timeout`](Error::Timeout),
    /// [`Connection`](Error::Connection), [`Overloaded`](Error::Overloaded).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. }
                | Error::Timeout { .. }
                | Error::Connection(_)
                | Error::Overloaded { .. }
        )
    }

    /// True when the command may or may not have executed on the server: a
    /// [`Timeout`](Error::Timeout) after sending, or [`Ambiguous`](Error::Ambiguous).
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, Error::Ambiguous { .. } | Error::Timeout { .. })
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

/// How a redis-rs error relates to the connection it happened on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The transport broke (I/O, dropped, refused, timeout): the connection must be replaced.
    Transport,
    /// An error reply or a conversion problem: the connection is healthy.
    Reply,
}

/// Classifies a redis-rs error: only transport failures are a reason to drop a connection
/// (a reply-type mismatch is "unrecoverable" to redis-rs, but it is a caller error).
pub(crate) fn classify(err: &redis::RedisError) -> Fault {
    if err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
        || err.kind() == redis::ErrorKind::Io
    {
        Fault::Transport
    } else {
        Fault::Reply
    }
}

/// Converts a redis-rs error for a command that got a (non-transport) answer.
pub(crate) fn from_reply_error(err: redis::RedisError) -> Error {
    if let Some(code) = err.code() {
        return Error::Server {
            code: code.to_string(),
            message: err.detail().unwrap_or_default().to_string(),
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
        _ => Error::Connection(err.to_string()),
    }
}

/// A short, secret-free description of why a connection attempt or connection failed, used as
/// the availability reason ("connection refused", "authentication failed", …).
pub(crate) fn describe_connection_error(err: &redis::RedisError) -> String {
    if err.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(err.code(), Some("WRONGPASS") | Some("NOAUTH"))
    {
        return format!("authentication failed: {}", err.detail().unwrap_or(""))
            .trim_end_matches([':', ' '])
            .to_string();
    }
    if err.is_connection_refusal() {
        return "connection refused".to_string();
    }
    if err.is_timeout() {
        return "timed out".to_string();
    }
    if err.is_connection_dropped() {
        return "connection closed by server".to_string();
    }
    err.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_helpers() {
        let down = Error::Unavailable {
            since: SystemTime::now(),
            reason: "connection refused".into(),
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
    }

    #[test]
    fn unavailable_display_says_since_and_why() {
        let e = Error::Unavailable {
            since: SystemTime::now() - Duration::from_secs(3),
            reason: "connection refused".into(),
        };
        let s = e.to_string();
        assert!(s.contains("connection refused"), "{s}");
        assert!(s.contains("3."), "{s}");
    }
}
