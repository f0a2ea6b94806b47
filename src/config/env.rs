//! Reading a [`ConfigBuilder`] from `{PREFIX}_REDIS_*` environment variables: the prefix rule and
//! the text parsers. Parsing only turns text into a typed value (see
//! [`Value::from_env`](super::value::Value::from_env)); every range check happens once, at
//! build time, for every source alike.

use std::fmt::Display;
use std::num::{IntErrorKind, ParseIntError};
use std::str::FromStr;
use std::time::Duration;

use super::value::{Sourced, Value};
use super::{ConfigBuilder, ConfigError, url};

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
        b.layer.name = Sourced::from_builder(prefix.to_ascii_lowercase(), "prefix");
    }
    let url_var = var("REDIS_URL");
    b.url = lookup(&url_var).map(|url| url::sourced(url, &url_var));
    b.layer.read_env(|name| {
        let key = var(name);
        lookup(&key).map(|v| (key, v))
    })?;
    Ok(b)
}

/// Parses `raw`, the text of variable `var`: shown as written (`***` if secret), and an error
/// names both.
pub(super) fn parse<T: Value>(var: &str, raw: &str) -> Result<Option<Sourced<T>>, ConfigError> {
    let shown = if T::SECRET { "***" } else { raw };
    let value = T::from_env(raw).map_err(|reason| ConfigError::new(var, shown, reason))?;
    Ok(Sourced::new(value, var, shown).given())
}

/// A whole number of type `T`; one above `max` is `max` when `saturate`, else an error.
pub(super) fn whole<T>(v: &str, max: T, saturate: bool) -> Result<T, String>
where
    T: FromStr<Err = ParseIntError> + Display,
{
    match v.trim().parse::<T>() {
        Err(e) if *e.kind() == IntErrorKind::PosOverflow && saturate => Ok(max),
        Err(e) if *e.kind() == IntErrorKind::PosOverflow => Err(format!("must be at most {max}")),
        r => r.map_err(|_| "must be a whole number".into()),
    }
}

/// Whole milliseconds; a number too large for `u64` saturates (and fails the duration bound).
pub(super) fn millis(v: &str) -> Result<Duration, String> {
    whole(v, u64::MAX, true)
        .map(Duration::from_millis)
        .map_err(|_| "must be a positive whole number of milliseconds".into())
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`; empty is `false`).
pub(super) fn boolean(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}
