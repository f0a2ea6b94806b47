//! Reading a [`ConfigBuilder`] from `{PREFIX}_REDIS_*` environment variables: the prefix rule and
//! the text parsers. Parsing only turns text into a typed value; every range check happens once,
//! at build time, for every source alike.

use std::num::{IntErrorKind, ParseIntError};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::value::{Show, Sourced};
use super::{ConfigBuilder, ConfigError, Layer, OfflinePolicy, Secret, redact_url};

/// A builder filled from the variables `lookup` returns, each named `{prefix}_{NAME}` (or just
/// `NAME` when `prefix` is empty). With a prefix, the client name defaults to it in lower case.
pub(super) fn builder(
    prefix: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<ConfigBuilder, ConfigError> {
    let var = |name: &str| match prefix {
        "" => name.to_string(),
        _ => format!("{prefix}_{name}"),
    };
    let mut b = ConfigBuilder::default();
    if !prefix.is_empty() {
        b.layer.name = Some(Sourced::new(prefix.to_ascii_lowercase(), "prefix"));
    }
    let url_var = var("REDIS_URL");
    if let Some(url) = lookup(&url_var) {
        let shown = redact_url(&url);
        b.url = Some(Sourced::shown_as(url, &url_var, shown));
    }
    b.layer.read_env(|name| {
        let key = var(name);
        lookup(&key).map(|v| (key, v))
    })?;
    Ok(b)
}

impl Layer {
    /// Parses `raw`, the text of variable `var`, with `parse`; the error names both.
    pub(super) fn parsed<T: Show>(
        var: &str,
        raw: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<Sourced<T>>, ConfigError> {
        let shown = if T::SECRET { "***" } else { raw };
        let value = parse(raw).map_err(|reason| ConfigError::new(var, shown, reason))?;
        Ok(Some(Sourced::shown_as(value, var, shown)))
    }
}

/// Any text, as written.
pub(super) fn text(v: &str) -> Result<String, String> {
    Ok(v.to_string())
}

/// Optional text; empty means "not given" (see [`Show::is_unset`](super::value::Show::is_unset)).
pub(super) fn opt_text(v: &str) -> Result<Option<String>, String> {
    Ok(Some(v.to_string()))
}

/// A secret, kept as given.
pub(super) fn secret(v: &str) -> Result<Option<Secret>, String> {
    Ok(Some(Secret::new(v)))
}

/// A path; blank means "not given".
pub(super) fn path(v: &str) -> Result<Option<PathBuf>, String> {
    Ok(Some(PathBuf::from(v.trim())))
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`; empty is `false`).
pub(super) fn boolean(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// `wait` or `fail-fast`.
pub(super) fn policy(v: &str) -> Result<OfflinePolicy, String> {
    v.parse()
}

/// A whole number of the exact type; too large for it is an error.
pub(super) fn int<T: FromStr<Err = ParseIntError> + Bounded>(v: &str) -> Result<T, String> {
    v.trim().parse().map_err(|e: ParseIntError| match e.kind() {
        IntErrorKind::PosOverflow => format!("must be at most {}", T::MAX),
        _ => "must be a whole number".to_string(),
    })
}

/// A whole number that saturates when too large for its type, so the build-time bound (always
/// below the type's maximum) refuses it with the setting's real limit.
pub(super) fn count<T: TryFrom<u64> + Bounded>(v: &str) -> Result<T, String> {
    let n = match v.trim().parse::<u64>() {
        Ok(n) => n,
        Err(e) if *e.kind() == IntErrorKind::PosOverflow => u64::MAX,
        Err(_) => return Err("must be a whole number".into()),
    };
    Ok(T::try_from(n).unwrap_or(T::MAX))
}

/// `REDIS_MAX_ATTEMPTS`: a count, where `0` means "never give up".
pub(super) fn attempts(v: &str) -> Result<Option<u32>, String> {
    count(v).map(Some)
}

/// Whole milliseconds; a number too large for `u64` saturates (and fails the duration bound).
pub(super) fn millis(v: &str) -> Result<Duration, String> {
    count::<u64>(v)
        .map(Duration::from_millis)
        .map_err(|_| "must be a positive whole number of milliseconds".into())
}

/// Integer types with a known maximum, for the parsers' messages and saturation.
pub(super) trait Bounded: Sized + std::fmt::Display {
    const MAX: Self;
}

macro_rules! bounded {
    ($($t:ty),*) => {$(impl Bounded for $t { const MAX: Self = <$t>::MAX; })*};
}
bounded!(u16, u32, u64, usize, i64);
