//! What every pattern shares: its namespace (validated once), its keys
//! (`<REDIS_KEY_PREFIX><namespace>:<key>`), SCAN patterns confined to the namespace, and which
//! errors a degradation policy may answer.

use std::time::Duration;

use base64::Engine;

use crate::error::{ConfigError, Error};
use crate::handle::RedisHandle;

/// The longest namespace accepted, in bytes.
pub(crate) const MAX_NAMESPACE_LEN: usize = 256;

/// A pattern's key space: the handle's key prefix and the pattern's namespace, as one string
/// `"<prefix><namespace>:"` that every key starts with.
#[derive(Debug, Clone)]
pub(crate) struct Namespace {
    /// `"<namespace>:"`, for the handle's typed commands (which add the prefix themselves).
    local: String,
    /// `"<prefix><namespace>:"`, for raw commands and scripts.
    full: String,
}

impl Namespace {
    /// Validates `namespace` (the builder setting `setting`, e.g. `cache.namespace`): 1 to
    /// [`MAX_NAMESPACE_LEN`] bytes, no control characters. Glob characters and colons are fine.
    pub(crate) fn new(handle: &RedisHandle, setting: &str, namespace: &str) -> Result<Self, Error> {
        let bad = |reason: &str| {
            Error::Config(ConfigError::new(
                setting,
                namespace.chars().take(64).collect::<String>(),
                reason,
            ))
        };
        if namespace.is_empty() {
            return Err(bad("must not be empty"));
        }
        if namespace.len() > MAX_NAMESPACE_LEN {
            return Err(bad(&format!(
                "must be at most {MAX_NAMESPACE_LEN} bytes, got {}",
                namespace.len()
            )));
        }
        if namespace.chars().any(char::is_control) {
            return Err(bad("must not contain control characters"));
        }
        let local = format!("{namespace}:");
        let full = format!("{}{local}", handle.config().key_prefix());
        Ok(Namespace { local, full })
    }

    /// `"<namespace>:<key>"`: the key for the handle's typed commands.
    pub(crate) fn local(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.local.len() + key.len());
        k.push_str(&self.local);
        k.push_str(key);
        k
    }

    /// `"<prefix><namespace>:<key>"`: the key as stored in Redis (raw commands, errors).
    pub(crate) fn full(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.full.len() + key.len());
        k.push_str(&self.full);
        k.push_str(key);
        k
    }

    /// A SCAN `MATCH` pattern: the escaped prefix and namespace, then `pattern` as a glob. It
    /// never matches a key outside the namespace.
    pub(crate) fn glob(&self, pattern: &str) -> String {
        let mut g = escape_glob(&self.full);
        g.push_str(pattern);
        g
    }
}

/// `s` with every glob metacharacter of Redis's `stringmatchlen` (`* ? [ ] \`) escaped.
pub(crate) fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// True for the errors that mean "Redis could not answer this now", which a degradation policy
/// may answer instead: unavailable, overloaded, shutting down, a connection error, no reply by
/// the deadline, or an ambiguous outcome. Server error replies (`WRONGTYPE`, `NOPERM`, …) are
/// answers, not outages: they always reach the caller.
pub(crate) fn degradable(e: &Error) -> bool {
    e.is_unavailable() || e.is_retryable() || e.is_ambiguous()
}

/// The longest identifier (session user, presence scope or member, lock key) accepted, in bytes.
pub(crate) const MAX_ID_LEN: usize = 64 * 1024;

/// Checks an identifier given to a pattern call: at most [`MAX_ID_LEN`] bytes, and not empty
/// unless `allow_empty`. `what` names the argument in the error.
pub(crate) fn check_id(what: &str, id: &str, allow_empty: bool) -> Result<(), Error> {
    if id.is_empty() && !allow_empty {
        return Err(Error::InvalidArgument(format!("{what} must not be empty")));
    }
    if id.len() > MAX_ID_LEN {
        return Err(Error::InvalidArgument(format!(
            "{what} must be at most {MAX_ID_LEN} bytes, got {}",
            id.len()
        )));
    }
    Ok(())
}

/// The longest TTL the patterns store: longer ones (up to `Duration::MAX`) are cut to this, 100
/// years.
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `ttl` as stored: at least 1 ms, at most [`MAX_TTL`].
pub(super) fn checked_ttl(ttl: Duration) -> Result<Duration, String> {
    if ttl < Duration::from_millis(1) {
        return Err(format!("must be at least 1 ms, got {ttl:?}"));
    }
    Ok(ttl.min(MAX_TTL))
}

/// A TTL or timeout in whole milliseconds for a script: at least 1 ms; longer than
/// [`MAX_TTL`] (up to `Duration::MAX`) saturates to it. The error
/// names `what`; `config` picks [`Error::Config`] (a builder setting) or
/// [`Error::InvalidArgument`] (a call's argument).
pub(crate) fn ttl_ms(what: &str, ttl: Duration, config: bool) -> Result<u64, Error> {
    match checked_ttl(ttl) {
        Ok(ttl) => Ok(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
        Err(reason) if config => Err(Error::Config(ConfigError::new(
            what,
            format!("{ttl:?}"),
            reason,
        ))),
        Err(reason) => Err(Error::InvalidArgument(format!("{what} {reason}"))),
    }
}

/// Bytes of randomness in a [`random_token`]: 128 bits.
pub(crate) const TOKEN_BYTES: usize = 16;
/// The length of a [`random_token`]: 22 characters.
pub(crate) const TOKEN_LEN: usize = 22;

/// A fresh secret token: [`TOKEN_BYTES`] from the operating system's CSPRNG (`getrandom`),
/// base64url without padding ([`TOKEN_LEN`] characters of `A-Z a-z 0-9 - _`).
///
/// # Errors
/// [`Error::Connection`] in the (practically unheard-of) case that the OS cannot supply
/// randomness; nothing was sent.
pub(crate) fn random_token() -> Result<String, Error> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Connection(format!("the OS random number generator failed: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// True if `s` has the shape of a [`random_token`] (so may be one of ours).
pub(crate) fn is_token(s: &str) -> bool {
    s.len() == TOKEN_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `key` cut to at most 200 bytes (on a character boundary) for a log line.
pub(crate) fn loggable(key: &str) -> &str {
    let mut end = key.len().min(200);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_glob("a*b?[c]\\d:"), "a\\*b\\?\\[c\\]\\\\d:");
        assert_eq!(escape_glob("plain:ns:"), "plain:ns:");
    }

    #[test]
    fn tokens_are_url_safe_and_distinct() {
        let a = random_token().unwrap();
        let b = random_token().unwrap();
        assert!(is_token(&a) && is_token(&b) && a != b, "{a} {b}");
        assert!(!is_token("short") && !is_token(&format!("{a}=")) && !is_token(&"é".repeat(11)));
    }

    #[test]
    fn ids_and_ttls_are_checked() {
        assert!(check_id("user", "", false).is_err());
        assert!(check_id("key", "", true).is_ok());
        assert!(check_id("key", &"x".repeat(MAX_ID_LEN + 1), true).is_err());
        assert!(
            matches!(ttl_ms("ttl", Duration::ZERO, false), Err(Error::InvalidArgument(m)) if m.contains("ttl"))
        );
        assert!(
            matches!(ttl_ms("s.ttl", Duration::ZERO, true), Err(Error::Config(c)) if c.setting == "s.ttl")
        );
        assert_eq!(
            ttl_ms("ttl", Duration::from_micros(1500), false).unwrap(),
            1
        );
        let max = ttl_ms("ttl", Duration::MAX, false).unwrap();
        assert_eq!(u128::from(max), crate::cache::MAX_TTL.as_millis());
    }

    #[test]
    fn loggable_cuts_on_a_char_boundary() {
        let k = "é".repeat(150);
        let l = loggable(&k);
        assert!(l.len() <= 200 && k.starts_with(l));
        assert_eq!(loggable("short"), "short");
    }
}
