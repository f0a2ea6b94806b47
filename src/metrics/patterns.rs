//! The patterns' metrics (cache, rate limiter, sessions, …): registered with the supervisor's
//! other metrics at start (each series at zero), carried by every [`RedisHandle`](crate::RedisHandle)
//! and written only by the pattern that owns each series.

use metrics::Counter;

use super::{CLIENT_DEGRADED_OPS, Registry};

/// Every pattern's metric handles.
pub(crate) struct PatternMetrics {
    /// `redis_client_degraded_ops_total`: operations a degradation policy answered without Redis.
    degraded_ops: Counter,
}

impl PatternMetrics {
    pub(super) fn new(r: &Registry) -> Self {
        PatternMetrics {
            degraded_ops: r.counter(CLIENT_DEGRADED_OPS),
        }
    }

    /// An operation was answered by a degradation policy without Redis.
    #[allow(dead_code)] // the patterns that write it come with the pattern issues
    pub(crate) fn degraded_op(&self) {
        self.degraded_ops.increment(1);
    }
}
