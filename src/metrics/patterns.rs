//! The patterns' metrics (cache, rate limiter, sessions, …): registered with the supervisor's
//! other metrics at start (each series, each label value, at zero), carried by every
//! [`RedisHandle`](crate::RedisHandle) and written only by the pattern that owns each series.

use metrics::Counter;

use super::Registry;
use super::names::*;

/// Declares a fixed label set: the enum (its discriminant indexes the handles) and the names.
macro_rules! labels {
    ($(#[$m:meta])* $name:ident, $(#[$cm:meta])* $names:ident, { $($v:ident = $l:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum $name { $($v),+ }
        $(#[$cm])*
        pub const $names: &[&str] = &[$($l),+];
    };
}

labels! {
    /// A value of the `op` label of `redis_client_degraded_ops_total`.
    DegradedOp,
    /// Values of the `op` label of `redis_client_degraded_ops_total`: the pattern operation a
    /// degradation policy answered without Redis.
    DEGRADED_OPS,
    {
        CacheGet = "cache_get",
        CacheSet = "cache_set",
        CacheDelete = "cache_delete",
        CacheInvalidate = "cache_invalidate",
        CacheGetOrLoad = "cache_get_or_load",
        RatelimitCheck = "ratelimit_check",
        PresenceHeartbeat = "presence_heartbeat",
        PresenceLeave = "presence_leave",
    }
}

labels! {
    /// A value of the `result` label of `redis_client_cache_lookups_total`.
    Lookup,
    /// Values of the `result` label of `redis_client_cache_lookups_total`.
    CACHE_LOOKUP_RESULTS,
    { Hit = "hit", Miss = "miss" }
}

labels! {
    /// A value of the `outcome` label of `redis_client_cache_loads_total`.
    LoadOutcome,
    /// Values of the `outcome` label of `redis_client_cache_loads_total`.
    CACHE_LOAD_OUTCOMES,
    { Ok = "ok", Error = "error", Timeout = "timeout", Panic = "panic" }
}

labels! {
    /// A value of the `decision` label of `redis_client_ratelimit_checks_total`.
    Check,
    /// Values of the `decision` label of `redis_client_ratelimit_checks_total`.
    RATELIMIT_DECISIONS,
    { Allowed = "allowed", Denied = "denied", Degraded = "degraded", Error = "error" }
}

labels! {
    /// A value of the `result` label of `redis_client_lock_acquires_total`.
    Acquire,
    /// Values of the `result` label of `redis_client_lock_acquires_total`.
    LOCK_ACQUIRE_RESULTS,
    { Acquired = "acquired", Busy = "busy", Error = "error" }
}

/// Every pattern's metric handles.
pub(crate) struct PatternMetrics {
    degraded_ops: Vec<Counter>,
    lookups: Vec<Counter>,
    loads: Vec<Counter>,
    coalesced: Counter,
    corrupt: Counter,
    checks: Vec<Counter>,
    sessions_created: Counter,
    sessions_revoked: Counter,
    lock_acquires: Vec<Counter>,
    lock_lost: Counter,
}

impl PatternMetrics {
    pub(super) fn new(r: &Registry) -> Self {
        PatternMetrics {
            degraded_ops: r.counters(CLIENT_DEGRADED_OPS, "op", DEGRADED_OPS),
            lookups: r.counters(CACHE_LOOKUPS, "result", CACHE_LOOKUP_RESULTS),
            loads: r.counters(CACHE_LOADS, "outcome", CACHE_LOAD_OUTCOMES),
            coalesced: r.counter(CACHE_COALESCED),
            corrupt: r.counter(CACHE_CORRUPT),
            checks: r.counters(RATELIMIT_CHECKS, "decision", RATELIMIT_DECISIONS),
            sessions_created: r.counter(SESSIONS_CREATED),
            sessions_revoked: r.counter(SESSIONS_REVOKED),
            lock_acquires: r.counters(LOCK_ACQUIRES, "result", LOCK_ACQUIRE_RESULTS),
            lock_lost: r.counter(LOCK_LOST),
        }
    }

    /// An operation was answered by a degradation policy without Redis.
    pub(crate) fn degraded(&self, op: DegradedOp) {
        bump(&self.degraded_ops, op as usize, 1);
    }

    /// `n` cache reads with this result.
    pub(crate) fn lookups(&self, result: Lookup, n: u64) {
        bump(&self.lookups, result as usize, n);
    }

    /// A single-flight load finished.
    pub(crate) fn load(&self, outcome: LoadOutcome) {
        bump(&self.loads, outcome as usize, 1);
    }

    /// A `get_or_load` caller joined a load already running.
    pub(crate) fn coalesced(&self) {
        self.coalesced.increment(1);
    }

    /// A read found data it cannot decode.
    pub(crate) fn corrupt(&self) {
        self.corrupt.increment(1);
    }

    /// A rate-limit check was answered.
    pub(crate) fn check(&self, decision: Check) {
        bump(&self.checks, decision as usize, 1);
    }

    /// A session was created.
    pub(crate) fn session_created(&self) {
        self.sessions_created.increment(1);
    }

    /// `n` sessions were revoked.
    pub(crate) fn sessions_revoked(&self, n: u64) {
        self.sessions_revoked.increment(n);
    }

    /// A lock acquire call ended.
    pub(crate) fn lock_acquire(&self, result: Acquire) {
        bump(&self.lock_acquires, result as usize, 1);
    }

    /// A guard found its lock lost.
    pub(crate) fn lock_lost(&self) {
        self.lock_lost.increment(1);
    }
}

fn bump(counters: &[Counter], i: usize, n: u64) {
    if let Some(c) = counters.get(i) {
        c.increment(n);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::metrics::{Metrics, prometheus_builder};

    #[test]
    fn every_pattern_series_exists_at_zero_with_help() {
        let recorder = prometheus_builder().build_recorder();
        let handle = recorder.handle();
        let _m = Metrics::new("p", 1, Some(Arc::new(recorder)));
        let text = handle.render();
        let labelled = [
            (CLIENT_DEGRADED_OPS, "op", DEGRADED_OPS),
            (CACHE_LOOKUPS, "result", CACHE_LOOKUP_RESULTS),
            (CACHE_LOADS, "outcome", CACHE_LOAD_OUTCOMES),
            (RATELIMIT_CHECKS, "decision", RATELIMIT_DECISIONS),
            (LOCK_ACQUIRES, "result", LOCK_ACQUIRE_RESULTS),
        ];
        for (name, label, values) in labelled {
            assert!(text.contains(&format!("# HELP {name} ")), "{name} has HELP");
            for v in values {
                let series = format!("{name}{{client=\"p\",{label}=\"{v}\"}} 0");
                assert!(text.contains(&series), "{series}:\n{text}");
            }
        }
        for name in [
            CACHE_COALESCED,
            CACHE_CORRUPT,
            SESSIONS_CREATED,
            SESSIONS_REVOKED,
            LOCK_LOST,
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name} has HELP");
            assert!(
                text.contains(&format!("{name}{{client=\"p\"}} 0")),
                "{name}"
            );
        }
    }
}
