//! One setting's value on its way into a [`Config`](super::Config): where it came from
//! ([`Sourced`]), how it is shown in an error ([`Show`], secrets as `***`), the checks that run on
//! it at build time, and how a getter reads it back ([`View`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ConfigError, MAX_DURATION, OfflinePolicy, Secret};

/// A value, the setting (or environment variable) it came from and the text to show for it in
/// an error: what the user wrote, redacted when secret.
#[derive(Clone)]
pub(super) struct Sourced<T> {
    pub(super) value: T,
    pub(super) source: String,
    pub(super) shown: String,
}

impl<T: Show> Sourced<T> {
    /// A value given through the builder setting `source`.
    pub(super) fn new(value: T, source: &str) -> Self {
        let shown = value.show();
        Self::shown_as(value, source, shown)
    }
}

impl<T> Sourced<T> {
    /// A value shown as `shown` (e.g. a part of a URL, shown as the redacted URL).
    pub(super) fn shown_as(value: T, source: &str, shown: impl Into<String>) -> Self {
        Self {
            value,
            source: source.to_string(),
            shown: shown.into(),
        }
    }

    /// The error naming this value's setting and its shown text.
    pub(super) fn error(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError::new(&self.source, &self.shown, reason)
    }
}

/// Only the source and the shown text: a builder's `Debug` never prints a secret.
impl<T> fmt::Debug for Sourced<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {:?}", self.source, self.shown)
    }
}

/// How a value appears in an error, and whether it counts as "not given".
pub(super) trait Show {
    /// Secret values are shown as `***`, whatever their source.
    const SECRET: bool = false;
    /// The value as the user would have written it.
    fn show(&self) -> String;
    /// True for an empty user name, password or path: treated as if the setting were not given.
    fn is_unset(&self) -> bool {
        false
    }
}

macro_rules! show_by_display {
    ($($t:ty),*) => {$(
        impl Show for $t {
            fn show(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
show_by_display!(String, u16, u32, usize, i64, f64, bool, OfflinePolicy);

impl Show for Duration {
    fn show(&self) -> String {
        format!("{self:?}")
    }
}

impl Show for Option<u32> {
    fn show(&self) -> String {
        self.map_or_else(|| "none".into(), |n| n.to_string())
    }
}

impl Show for Option<String> {
    fn show(&self) -> String {
        self.clone().unwrap_or_default()
    }
    fn is_unset(&self) -> bool {
        self.as_deref().is_none_or(str::is_empty)
    }
}

impl Show for Option<Secret> {
    const SECRET: bool = true;
    fn show(&self) -> String {
        "***".into()
    }
    fn is_unset(&self) -> bool {
        self.as_ref().is_none_or(|s| s.expose().is_empty())
    }
}

impl Show for Option<PathBuf> {
    fn show(&self) -> String {
        self.as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }
    fn is_unset(&self) -> bool {
        self.as_deref().is_none_or(|p| p.as_os_str().is_empty())
    }
}

/// How a getter returns a stored value: a copy, or a borrow (`&str`, `Option<&Path>`, …).
pub(super) trait View<'a, Out> {
    fn view(&'a self) -> Out;
}

impl<T: Copy> View<'_, T> for T {
    fn view(&self) -> T {
        *self
    }
}

macro_rules! view_by_borrow {
    ($($t:ty => $out:ty, $how:expr;)*) => {$(
        impl<'a> View<'a, $out> for $t {
            fn view(&'a self) -> $out {
                ($how)(self)
            }
        }
    )*};
}
view_by_borrow! {
    String => &'a str, String::as_str;
    Option<String> => Option<&'a str>, Option::as_deref;
    Option<Secret> => Option<&'a Secret>, Option::as_ref;
    Option<PathBuf> => Option<&'a Path>, Option::as_deref;
}

/// A check's verdict: `Err` holds the reason.
pub(super) type Checked = Result<(), String>;

/// No constraint.
pub(super) fn any<T>(_: &T) -> Checked {
    Ok(())
}

/// Every duration setting: more than zero and at most [`MAX_DURATION`].
pub(super) fn duration(d: &Duration) -> Checked {
    if d.is_zero() {
        Err("must be greater than zero".into())
    } else if *d > MAX_DURATION {
        Err(format!("must be at most {} ms", MAX_DURATION.as_millis()))
    } else {
        Ok(())
    }
}

/// A count from 1 to `max`.
pub(super) fn count(n: impl TryInto<u64>, max: u64) -> Checked {
    match n.try_into() {
        Ok(n) if (1..=max).contains(&n) => Ok(()),
        _ => Err(format!("must be a whole number from 1 to {max}")),
    }
}

/// `Ok` when `ok`, else the reason.
fn ensure(ok: bool, reason: &str) -> Checked {
    if ok { Ok(()) } else { Err(reason.into()) }
}

/// A client name: 1-64 letters, digits, `_`, `.`, `:` or `-` (it becomes a metric label).
pub(super) fn name(name: &str) -> Checked {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-');
    ensure(
        (1..=64).contains(&name.len()) && name.bytes().all(allowed),
        "name must be 1-64 characters of letters, digits, `_`, `.`, `:` or `-`",
    )
}

/// A host: not empty.
pub(super) fn host(host: &str) -> Checked {
    ensure(!host.trim().is_empty(), "host must not be empty")
}

/// A port: 1-65535.
pub(super) fn port(port: &u16) -> Checked {
    ensure(*port != 0, "port must be 1-65535")
}

/// A database number: ≥ 0.
pub(super) fn db(db: &i64) -> Checked {
    ensure(*db >= 0, "database must be a non-negative integer")
}

/// The backoff growth factor: finite and ≥ 1.
pub(super) fn factor(f: &f64) -> Checked {
    ensure(f.is_finite() && *f >= 1.0, "must be a finite number >= 1")
}

/// The backoff jitter: in `[0, 1)`.
pub(super) fn jitter(j: &f64) -> Checked {
    ensure((0.0..1.0).contains(j), "must be in [0, 1)")
}
