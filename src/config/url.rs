//! `redis://` URLs: parsing one into the settings it carries (scheme → TLS, host, port, user,
//! password, database), refusing what this crate cannot honour, and redacting URLs for errors.

use super::value::Sourced;
use super::{ConfigError, DEFAULT_PORT, Layer, Secret};

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
    fn part<T>(v: T, url: &Sourced<String>) -> Option<Sourced<T>> {
        Some(Sourced::shown_as(v, &url.source, &url.shown))
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| err("user name or password is not valid UTF-8".into()))
    };
    let host = parsed.host_str().unwrap_or("");
    let mut layer = Layer {
        tls: part(scheme_is_tls(parsed.scheme()).map_err(err)?, url),
        host: part(
            host.trim_start_matches('[').trim_end_matches(']').into(),
            url,
        ),
        port: part(parsed.port().unwrap_or(DEFAULT_PORT), url),
        username: part(Some(decode(parsed.username())?), url),
        ..Layer::default()
    };
    if let Some(p) = parsed.password() {
        layer.password = part(Some(Secret::new(decode(p)?)), url);
    }
    let path = parsed.path().trim_start_matches('/');
    if !path.is_empty() {
        let db = path.parse::<i64>().map_err(|_| {
            err(format!(
                "database `{path}` must be a non-negative integer (redis://host:port/DB)"
            ))
        })?;
        layer.db = part(db, url);
    }
    Ok(layer)
}

/// `Ok(true)` for the TLS schemes.
fn scheme_is_tls(scheme: &str) -> Result<bool, String> {
    match scheme {
        "redis" | "valkey" => Ok(false),
        "rediss" | "valkeys" => Ok(true),
        other => Err(format!(
            "unsupported scheme `{other}` (expected redis:// or rediss://)"
        )),
    }
}

/// Refuses a fragment, unknown query parameters and any protocol but RESP3. Parameter values
/// other than the protocol's are never shown (some clients put passwords there).
fn check_extras(url: &url::Url) -> Result<(), String> {
    if url.fragment().is_some() {
        return Err("a URL fragment (`#…`) is not supported".into());
    }
    for (k, v) in url.query_pairs() {
        match (&*k, v.to_ascii_lowercase().as_str()) {
            ("protocol", "resp3" | "3") => {}
            ("protocol", _) => {
                return Err(format!(
                    "`protocol={v}` is not supported: this client needs RESP3 (Redis >= 6); \
                     use `protocol=resp3` or leave it out"
                ));
            }
            _ => {
                return Err(format!(
                    "unknown URL parameter `{k}` (only `protocol=resp3` is accepted)"
                ));
            }
        }
    }
    Ok(())
}

/// Replaces the password (or a lone user-info part, which some clients read as a password) of a
/// Redis URL with `***`, and every query parameter's value except `protocol`'s. Works on strings
/// that do not parse as URLs, so errors about malformed URLs never leak a secret.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        // Not URL-shaped: show nothing that could be a secret before an '@'. (`at` comes from
        // `rfind`, so it is a char boundary: the slice cannot panic.)
        return match url.rfind('@') {
            Some(at) => format!("***{}", redact_query(&url[at..])),
            None => redact_query(url),
        };
    };
    let (scheme, rest) = url.split_at(scheme_end);
    match rest.rfind('@') {
        Some(at) => {
            let (userinfo, tail) = rest.split_at(at);
            let shown = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => "***".to_string(),
            };
            format!("{scheme}{shown}{}", redact_query(tail))
        }
        None => format!("{scheme}{}", redact_query(rest)),
    }
}

/// `…?a=1&protocol=resp2` → `…?a=***&protocol=resp2`.
fn redact_query(s: &str) -> String {
    let Some((head, query)) = s.split_once('?') else {
        return s.to_string();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if k == "protocol" => format!("{k}={v}"),
            Some((k, _)) => format!("{k}=***"),
            None => pair.to_string(),
        })
        .collect();
    format!("{head}?{}", pairs.join("&"))
}
