//! Reading a [`ConfigBuilder`] from `{PREFIX}_REDIS_*` environment variables: the prefix rule, and
//! each variable's text turned into its typed value (the parsers are the types' own, see
//! [`Value::from_env`](super::value::Value::from_env)); every range check happens once, at
//! build time, for every source alike.

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
