//! `redis://` URLs: parsing one into the settings it carries (scheme → TLS, host, port, user,
//! password, database), refusing what this crate cannot honour, and redacting URLs for errors.

use super::value::Sourced;
use super::{ConfigError, DEFAULT_PORT, Layer, Secret};

/// A URL given through `source`, shown redacted.
pub(super) fn sourced(url: String, source: &str) -> Sourced<String> {
    let shown = redact_url(&url);
    Sourced::new(url, source, shown)
}

/// The settings a URL carries, each sourced from `url` (its setting name and redacted text), so
/// a part that fails a build-time check names the URL.
///
/// Accepted: `redis://` / `valkey://` (plain), `rediss://` / `valkeys://` (TLS), a database
/// number as the path, and the one query parameter `protocol=resp3` (or `3`): the crate always
/// speaks RESP3. Any other parameter, another protocol and a `#fragment` are refused.
pub(super) fn parse(url: &Sourced<String>) -> Result<Layer, ConfigError> {
    let err = |reason: String| url.error(reason);
    let parsed =
        url::Url::parse(url.value.trim()).map_err(|e| err(format!("not a valid URL ({e})")))?;
    check_extras(&parsed).map_err(err)?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(String::from)
            .map_err(|_| err("user name or password is not valid UTF-8".into()))
    };
    let db = |path: &str| {
        let reason =
            format!("database `{path}` must be a non-negative integer (redis://host:port/DB)");
        path.parse::<i64>().map_err(|_| err(reason))
    };
    let host = parsed.host_str().unwrap_or("");
    Ok(Layer {
        tls: Some(url.with(match parsed.scheme() {
            "redis" | "valkey" => false,
            "rediss" | "valkeys" => true,
            other => Err(err(format!(
                "unsupported scheme `{other}` (expected redis:// or rediss://)"
            )))?,
        })),
        host: Some(url.with(host.trim_start_matches('[').trim_end_matches(']').into())),
        port: Some(url.with(parsed.port().unwrap_or(DEFAULT_PORT))),
        username: url.with(Some(decode(parsed.username())?)).given(),
        password: match parsed.password().map(decode).transpose()? {
            Some(p) => url.with(Some(Secret::new(p))).given(),
            None => None,
        },
        db: match parsed.path().trim_start_matches('/') {
            "" => None,
            path => Some(url.with(db(path)?)),
        },
        ..Layer::default()
    })
}

/// Refuses a fragment, unknown query parameters and any protocol but RESP3. Parameter values
/// other than the protocol's are never shown (some clients put passwords there).
fn check_extras(url: &url::Url) -> Result<(), String> {
    if url.fragment().is_some() {
        return Err("a URL fragment (`#…`) is not supported".into());
    }
    let resp3 = |v: &str| matches!(v.to_ascii_lowercase().as_str(), "resp3" | "3");
    match url
        .query_pairs()
        .find(|(k, v)| !(k == "protocol" && resp3(v)))
    {
        None => Ok(()),
        Some((k, v)) if k == "protocol" => Err(format!(
            "`protocol={v}` is not supported: this client needs RESP3 (Redis >= 6); \
             use `protocol=resp3` or leave it out"
        )),
        Some((k, _)) => Err(format!(
            "unknown URL parameter `{k}` (only `protocol=resp3` is accepted)"
        )),
    }
}

/// Replaces the password (or a lone user-info part, which some clients read as a password) of a
/// Redis URL with `***`, and every query parameter's value except `protocol`'s. Works on strings
/// that do not parse as URLs (then all before an `@` is hidden), so errors about malformed URLs
/// never leak a secret.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_at(url.find("://").map_or(0, |i| i + 3));
    // `at` comes from `rfind`, so it is a char boundary: `split_at` cannot panic.
    let Some((userinfo, tail)) = rest.rfind('@').map(|at| rest.split_at(at)) else {
        return format!("{scheme}{}", redact_query(rest));
    };
    let user = match userinfo.split_once(':') {
        Some((user, _)) if !scheme.is_empty() => format!("{user}:"),
        _ => String::new(),
    };
    format!("{scheme}{user}***{}", redact_query(tail))
}

/// `…?a=1&protocol=resp2` → `…?a=***&protocol=resp2`.
fn redact_query(s: &str) -> String {
    let Some((head, query)) = s.split_once('?') else {
        return s.to_string();
    };
    let redact = |pair: &str| match pair.split_once('=') {
        Some((k, _)) if k != "protocol" => format!("{k}=***"),
        _ => pair.to_string(),
    };
    let pairs: Vec<String> = query.split('&').map(redact).collect();
    format!("{head}?{}", pairs.join("&"))
}
