//! What every pattern shares: its namespace (validated once), its keys
//! (`<REDIS_KEY_PREFIX><namespace>:<key>`), SCAN patterns confined to the namespace, and which
//! errors a degradation policy may answer.

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
    fn loggable_cuts_on_a_char_boundary() {
        let k = "é".repeat(150);
        let l = loggable(&k);
        assert!(l.len() <= 200 && k.starts_with(l));
        assert_eq!(loggable("short"), "short");
    }
}
