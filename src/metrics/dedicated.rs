//! The dedicated connections' metrics: the pub/sub subscriber connection (written only by the
//! `pubsub` module) and the two connection pools, blocking and leased (written only by the
//! `pool` module).
//! Registered with the supervisor's other metrics at start, each series at zero.

use metrics::{Counter, Gauge};

use super::Registry;
use super::names::*;

/// The subscriber connection's handles.
pub(crate) struct PubSubMetrics {
    up: Gauge,
    subscriptions: Gauge,
    messages: Counter,
    lagged: Counter,
    resubscribes: Counter,
}

impl PubSubMetrics {
    pub(super) fn new(r: &Registry) -> Self {
        PubSubMetrics {
            up: r.gauge(PUBSUB_UP),
            subscriptions: r.gauge(PUBSUB_SUBSCRIPTIONS),
            messages: r.counter(PUBSUB_MESSAGES),
            lagged: r.counter(PUBSUB_LAGGED),
            resubscribes: r.counter(PUBSUB_RESUBSCRIBES),
        }
    }

    /// The subscriber connection is (or is no longer) up and confirmed.
    pub(crate) fn set_up(&self, up: bool) {
        self.up.set(if up { 1.0 } else { 0.0 });
    }

    /// A subscription opened (`true`) or closed.
    pub(crate) fn subscription(&self, opened: bool) {
        if opened {
            self.subscriptions.increment(1.0);
        } else {
            self.subscriptions.decrement(1.0);
        }
    }

    /// `n` messages buffered for subscriptions.
    pub(crate) fn delivered(&self, n: u64) {
        self.messages.increment(n);
    }

    /// One message dropped for a subscription that did not keep up.
    pub(crate) fn lagged(&self) {
        self.lagged.increment(1);
    }

    /// A lost subscriber connection was restored.
    pub(crate) fn resubscribed(&self) {
        self.resubscribes.increment(1);
    }
}

/// One connection pool's handles.
pub(crate) struct PoolMetrics {
    connections: Gauge,
    in_use: Gauge,
}

impl PoolMetrics {
    /// The blocking pool's.
    pub(super) fn blocking(r: &Registry) -> Self {
        PoolMetrics {
            connections: r.gauge(BLOCKING_CONNECTIONS),
            in_use: r.gauge(BLOCKING_IN_USE),
        }
    }

    /// The leased pool's.
    pub(super) fn leased(r: &Registry) -> Self {
        PoolMetrics {
            connections: r.gauge(LEASED_CONNECTIONS),
            in_use: r.gauge(LEASED_IN_USE),
        }
    }

    /// A dedicated connection opened (`true`) or closed.
    pub(crate) fn connection(&self, opened: bool) {
        if opened {
            self.connections.increment(1.0);
        } else {
            self.connections.decrement(1.0);
        }
    }

    /// A connection was checked out (`true`) or came back (or was closed).
    pub(crate) fn in_use(&self, started: bool) {
        if started {
            self.in_use.increment(1.0);
        } else {
            self.in_use.decrement(1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::metrics::{Metrics, prometheus_builder};

    #[test]
    fn every_dedicated_series_exists_at_zero_with_help() {
        let recorder = prometheus_builder().build_recorder();
        let handle = recorder.handle();
        let _m = Metrics::new("d", 1, Some(Arc::new(recorder)));
        let text = handle.render();
        for name in [
            PUBSUB_UP,
            PUBSUB_SUBSCRIPTIONS,
            PUBSUB_MESSAGES,
            PUBSUB_LAGGED,
            PUBSUB_RESUBSCRIBES,
            BLOCKING_CONNECTIONS,
            BLOCKING_IN_USE,
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name} has HELP");
            assert!(
                text.contains(&format!("{name}{{client=\"d\"}} 0")),
                "{name}:\n{text}"
            );
        }
    }
}
