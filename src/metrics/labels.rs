//! The fixed label values of the metrics (`command`, `outcome`, …): each set declared once, as
//! the enum whose discriminant indexes the pre-registered handles and the public list of names.
//! Fixed sets keep the cardinality bounded; no label ever carries a key.

/// Declares a fixed set of label values once: the enum (its discriminant is the index into the
/// handles), the public list of names, and `name()`.
macro_rules! label_set {
    (
        $(#[$enum_meta:meta])* enum $name:ident;
        $(#[$const_meta:meta])* const $names:ident;
        { $($(#[$variant_meta:meta])* $variant:ident = $label:literal),+ $(,)? }
    ) => {
        $(#[$enum_meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum $name {
            $($(#[$variant_meta])* $variant),+
        }

        #[allow(dead_code)] // not every set uses every helper
        impl $name {
            /// Every value, in the order of the public name list.
            pub(crate) const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The label value.
            pub(crate) const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $label),+
                }
            }
        }

        $(#[$const_meta])*
        pub const $names: &[&str] = &[$($label),+];
    };
}

label_set! {
    /// A value of the `command` label.
    enum CommandLabel;
    /// Values of the `command` label: a fixed set (raw commands outside it count as `other`), so
    /// the cardinality is bounded and never carries a key.
    const COMMANDS;
    {
        Get = "get",
        Set = "set",
        Del = "del",
        Exists = "exists",
        Expire = "expire",
        Ttl = "ttl",
        Incr = "incr",
        IncrBy = "incrby",
        Mget = "mget",
        Mset = "mset",
        Ping = "ping",
        Publish = "publish",
        Blpop = "blpop",
        Brpop = "brpop",
        Bzpopmin = "bzpopmin",
        Xread = "xread",
        Wait = "wait",
        Pipeline = "pipeline",
        Multi = "multi",
        Other = "other",
    }
}

/// Raw command names that count under another label than their own.
const COMMAND_ALIASES: &[(&str, CommandLabel)] = &[
    ("unlink", CommandLabel::Del),
    ("pexpire", CommandLabel::Expire),
    ("pttl", CommandLabel::Ttl),
];

impl CommandLabel {
    /// The label for a raw command, from its name (ASCII case-insensitive). `pipeline` and
    /// `other` are never a command's own name.
    pub(crate) fn for_name(name: &[u8]) -> Self {
        let is = |label: &str| label.as_bytes().eq_ignore_ascii_case(name);
        Self::ALL
            .iter()
            .copied()
            .filter(|l| !matches!(l, Self::Pipeline | Self::Other))
            .find(|l| is(l.name()))
            .or_else(|| COMMAND_ALIASES.iter().find(|(n, _)| is(n)).map(|(_, l)| *l))
            .unwrap_or(Self::Other)
    }
}

label_set! {
    /// A value of the `outcome` label of `redis_client_commands_total`.
    enum Outcome;
    /// Values of the `outcome` label of `redis_client_commands_total`.
    const OUTCOMES;
    {
        Ok = "ok",
        Error = "error",
        Timeout = "timeout",
        Unavailable = "unavailable",
        Ambiguous = "ambiguous",
        ShuttingDown = "shutting_down",
    }
}

impl Outcome {
    /// The outcome of a finished command.
    pub(crate) fn of<T>(result: &Result<T, crate::Error>) -> Self {
        use crate::Error as E;
        match result {
            Ok(_) => Self::Ok,
            Err(E::Timeout { .. }) => Self::Timeout,
            Err(E::Unavailable { .. }) => Self::Unavailable,
            Err(E::Ambiguous { .. }) => Self::Ambiguous,
            Err(E::ShuttingDown) => Self::ShuttingDown,
            Err(_) => Self::Error,
        }
    }
}

label_set! {
    /// A value of the `outcome` label of `redis_client_connect_attempts_total`.
    enum ConnectOutcome;
    /// Values of the `outcome` label of `redis_client_connect_attempts_total`.
    const CONNECT_OUTCOMES;
    {
        Success = "success",
        Failure = "failure",
    }
}

label_set! {
    /// A value of the `outcome` label of `redis_client_probes_total`.
    enum ProbeOutcome;
    /// Values of the `outcome` label of `redis_client_probes_total`: answered in time (`ok`),
    /// answered slower than the slow threshold or late behind other replies (`slow`), refused
    /// because the server cannot serve yet (`not_ready`: loading, master down, busy, or no
    /// cluster primary answering), no answer (`failed`).
    const PROBE_OUTCOMES;
    {
        Ok = "ok",
        Slow = "slow",
        NotReady = "not_ready",
        Failed = "failed",
    }
}
