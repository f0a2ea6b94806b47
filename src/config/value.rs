//! One setting's value on its way into a [`Config`](super::Config): where it came from and how it
//! is shown in an error ([`Sourced`]), what the settings table needs of each stored type
//! ([`Value`]), the small checks and conversions the table names, and the text parsers of the
//! variables (whole numbers, milliseconds, booleans).

use std::fmt::{self, Display};
use std::num::{IntErrorKind, ParseIntError};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use super::{ConfigError, MAX_DURATION, Nodes, OfflinePolicy, Secret};

/// A value, the setting (or environment variable) it came from and the text to show for it in
/// an error: what the user wrote, redacted when secret.
#[derive(Clone)]
pub(super) struct Sourced<T> {
    pub(super) value: T,
    pub(super) source: String,
    shown: String,
}

impl<T> Sourced<T> {
    /// `value` from `source`, shown as `shown` (e.g. a part of a URL, shown as the redacted URL).
    pub(super) fn new(value: T, source: &str, shown: impl Into<String>) -> Self {
        let (source, shown) = (source.to_string(), shown.into());
        Self {
            value,
            source,
            shown,
        }
    }

    /// Another value from the same source, shown the same way (a part of a URL).
    pub(super) fn with<U>(&self, value: U) -> Sourced<U> {
        Sourced::new(value, &self.source, &self.shown)
    }

    /// The error naming this value's setting and its shown text.
    pub(super) fn error(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError::new(&self.source, &self.shown, reason)
    }
}

impl<T: Value> Sourced<T> {
    /// A value given through the builder setting `source`, unless it counts as not given.
    pub(super) fn from_builder(value: T, source: &str) -> Option<Self> {
        let shown = value.show();
        Self::new(value, source, shown).given()
    }

    /// `None` for an empty user name, password or path, which must never erase a lower layer.
    pub(super) fn given(self) -> Option<Self> {
        (!self.value.is_unset()).then_some(self)
    }

    /// The value, once it has passed its type's check and then the setting's `checks`.
    pub(super) fn checked(&self, checks: &[fn(&T) -> Checked]) -> Result<T, ConfigError> {
        let v = &self.value;
        let verdict = v
            .check()
            .and_then(|()| checks.iter().try_for_each(|check| check(v)));
        verdict.map_err(|reason| self.error(reason))?;
        Ok(self.value.clone())
    }
}

impl Sourced<Option<PathBuf>> {
    /// The contents of the file this setting names.
    pub(super) fn read(&self) -> Result<Vec<u8>, ConfigError> {
        std::fs::read(self.value.as_deref().unwrap_or(Path::new("")))
            .map_err(|e| self.error(format!("cannot read the file: {e}")))
    }

    /// The password in the file this setting names (a trailing newline trimmed), shown as `***`.
    pub(super) fn password(&self) -> Result<Sourced<Option<Secret>>, ConfigError> {
        let text = String::from_utf8(self.read()?).map_err(|_| self.error("not valid UTF-8"))?;
        match text.trim_end_matches(['\r', '\n']) {
            "" => Err(self.error("the password file is empty")),
            pw => Ok(Sourced::new(Some(Secret::new(pw)), &self.source, "***")),
        }
    }
}

/// Only the source and the shown text: a builder's `Debug` never prints a secret.
impl<T> fmt::Debug for Sourced<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {:?}", self.source, self.shown)
    }
}

/// What the settings table needs of a stored type, beyond its getter and setter types
/// (`by_type!`).
pub(super) trait Value: Clone {
    /// Whether a variable's text must never be shown.
    const SECRET: bool = false;
    /// The value as the user would have written it (a secret as `***`).
    fn show(&self) -> String;
    /// True when the value counts as not given: only an optional one, absent or empty.
    fn is_unset(&self) -> bool {
        false
    }
    /// What every value of the type must be, whatever the setting.
    fn check(&self) -> Checked {
        Ok(())
    }
    /// The value a variable's text stands for (only parsed: range checks wait for build time).
    fn from_env(raw: &str) -> Result<Self, String>;
}

/// Implements [`Value`], one row per type: `show` and `env` are functions of the value and of a
/// variable's text; `secret`, `unset` and `check` override the defaults.
#[rustfmt::skip]
macro_rules! values {
    ($($t:ty: $(secret $secret:literal,)? show $show:expr, $(unset $unset:expr,)?
        $(check $check:expr,)? env $env:expr;)*) => {$(
        impl Value for $t {
            $(const SECRET: bool = $secret;)?
            fn show(&self) -> String { let f: fn(&Self) -> String = $show; f(self) }
            $(fn is_unset(&self) -> bool { let f: fn(&Self) -> bool = $unset; f(self) })?
            $(fn check(&self) -> Checked { let f: fn(&Self) -> Checked = $check; f(self) })?
            fn from_env(v: &str) -> Result<Self, String> { let f: fn(&str) -> Result<Self, String> = $env; f(v) }
        }
    )*};
}

values! {
    String: show Clone::clone, env |v| Ok(v.to_string());
    u16: show ToString::to_string, env |v| whole(v, u16::MAX, false);
    i64: show ToString::to_string, env |v| whole(v, i64::MAX, false);
    // Counts saturate, so their bound (below the type's maximum) refuses them with its own limit.
    u32: show ToString::to_string, env |v| whole(v, u32::MAX, true);
    usize: show ToString::to_string, env |v| whole(v, usize::MAX, true);
    Option<u32>: show |n| n.map_or("none".into(), |n| n.to_string()), env |v| whole(v, u32::MAX, true).map(Some);
    f64: show ToString::to_string, env |v| v.trim().parse().map_err(|_| "must be a number".into());
    bool: show ToString::to_string, env boolean;
    OfflinePolicy: show ToString::to_string, env str::parse;
    Duration: show |d| format!("{d:?}"), check duration, env millis;
    Option<String>: show |s| s.clone().unwrap_or_default(), unset |s| s.as_deref().is_none_or(str::is_empty),
        env |v| Ok(Some(v.to_string()));
    Option<PathBuf>: show |p| p.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
        unset |p| p.as_deref().is_none_or(|p| p.as_os_str().is_empty()), env |v| Ok(Some(PathBuf::from(v.trim())));
    Nodes: show ToString::to_string, unset Nodes::is_empty,
        check |n| n.invalid().map_or(Ok(()), |why| Err(why.to_string())), env |v| Ok(Nodes::parse(v.split(',')));
    Option<Secret>: secret true, show |_| "***".into(), unset |s| s.as_ref().is_none_or(|s| s.expose().is_empty()),
        env |v| Ok(Some(Secret::new(v)));
}

/// A stored type's getter type (`get`) and how the getter lends the value (`view`); the
/// setter's argument type (`arg`) and how it becomes the stored value (`conv`). By default a
/// value is copied out and taken as is.
#[rustfmt::skip]
macro_rules! by_type {
    (get String) => { &str };
    (get Option<String>) => { Option<&str> };
    (get Option<PathBuf>) => { Option<&Path> };
    (get Option<Secret>) => { Option<&Secret> };
    (get Nodes) => { &Nodes };
    (get $($t:tt)+) => { $($t)+ };
    (view $e:expr; String) => { $e.as_str() };
    (view $e:expr; Option<String>) => { $e.as_deref() };
    (view $e:expr; Option<PathBuf>) => { $e.as_deref() };
    (view $e:expr; Option<Secret>) => { $e.as_ref() };
    (view $e:expr; Nodes) => { &$e };
    (view $e:expr; $($t:tt)+) => { $e };
    (arg String) => { impl Into<String> };
    (arg Option<String>) => { impl Into<String> };
    (arg Option<Secret>) => { impl Into<String> };
    (arg Option<PathBuf>) => { impl Into<PathBuf> };
    (arg Nodes) => { impl IntoIterator<Item = impl AsRef<str>> };
    (arg $($t:tt)+) => { $($t)+ };
    (conv $v:ident; String) => { $v.into() };
    (conv $v:ident; Option<String>) => { Some($v.into()) };
    (conv $v:ident; Option<PathBuf>) => { Some($v.into()) };
    (conv $v:ident; Option<Secret>) => { Some(Secret::new($v)) };
    (conv $v:ident; Nodes) => { Nodes::parse($v) };
    (conv $v:ident; $($t:tt)+) => { $v };
}

/// A check's verdict: `Err` holds the reason.
pub(super) type Checked = Result<(), String>;

/// `Ok` when `ok`, else the reason.
pub(super) fn ensure(ok: bool, reason: &str) -> Checked {
    if ok { Ok(()) } else { Err(reason.into()) }
}

/// Every duration: more than zero and at most [`MAX_DURATION`].
fn duration(d: &Duration) -> Checked {
    let max = MAX_DURATION.as_millis();
    ensure(!d.is_zero(), "must be greater than zero")
        .and_then(|()| ensure(*d <= MAX_DURATION, &format!("must be at most {max} ms")))
}

/// A count from 1 to `max`.
pub(super) fn count(n: impl TryInto<u64>, max: u64) -> Checked {
    match n.try_into() {
        Ok(n) if (1..=max).contains(&n) => Ok(()),
        _ => Err(format!("must be a whole number from 1 to {max}")),
    }
}

/// A client name: 1-64 letters, digits, `_`, `.`, `:` or `-` (it becomes a metric label).
pub(super) fn name(name: &str) -> Checked {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-');
    ensure(
        (1..=64).contains(&name.len()) && name.bytes().all(allowed),
        "name must be 1-64 characters of letters, digits, `_`, `.`, `:` or `-`",
    )
}

/// A whole number of type `T`; one above `max` is `max` when `saturate`, else an error.
fn whole<T>(v: &str, max: T, saturate: bool) -> Result<T, String>
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
fn millis(v: &str) -> Result<Duration, String> {
    whole(v, u64::MAX, true)
        .map(Duration::from_millis)
        .map_err(|_| "must be a positive whole number of milliseconds".into())
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`; empty is `false`).
fn boolean(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}
