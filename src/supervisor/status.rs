//! What the HTTP routes read of a supervisor: a read-only view of its state ([`Status`]), and
//! each lane as `/health/redis` shows it ([`LaneStatus`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::core::Core;
use crate::availability::Availability;
use crate::config::Config;
use crate::health::HealthSnapshot;
use crate::route::RouteState;

/// One lane as `/health/redis` shows it.
#[derive(Debug, Clone)]
pub(crate) struct LaneStatus {
    /// `connecting`, `up`, `not_ready` or `down`.
    pub(crate) state: &'static str,
    /// The server it is connected to.
    pub(crate) address: Option<String>,
    /// Why it was last lost.
    pub(crate) last_error: Option<String>,
    /// Commands outstanding and answered on its current connection (with more than one lane).
    pub(crate) outstanding: usize,
    pub(crate) served: u64,
}

/// A read-only view of a supervisor's state, for the HTTP routes.
#[derive(Clone)]
pub(crate) struct Status {
    pub(super) core: Arc<Core>,
}

impl Status {
    pub(crate) fn availability(&self) -> Availability {
        self.core.availability.current()
    }

    pub(crate) fn config(&self) -> &Config {
        &self.core.config
    }

    pub(crate) fn restarts(&self) -> u64 {
        self.core.restarts.load(Ordering::Relaxed)
    }

    pub(crate) fn health(&self) -> HealthSnapshot {
        self.core.board.snapshot()
    }

    /// Whether the subscriber connection is up, and the live subscriptions.
    pub(crate) fn pubsub(&self) -> (bool, usize) {
        self.core.pubsub.report()
    }

    /// Each lane's state, with the commands outstanding on it and answered (serving lanes).
    pub(crate) fn lanes(&self) -> Vec<LaneStatus> {
        let mut lanes = self
            .core
            .lanes
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        if let RouteState::Serving(serving) = &self.core.route.current().state {
            for lane in serving.all() {
                if let Some(l) = lanes.get_mut(lane.index()) {
                    l.outstanding = lane.outstanding();
                    l.served = lane.served();
                }
            }
        }
        lanes
    }

    /// With Sentinel: the topology as the watcher last saw it.
    pub(crate) fn sentinel(&self) -> Option<crate::topology::SentinelView> {
        self.core.topology.sentinel().map(|s| s.view())
    }

    /// The deployment's kind.
    pub(crate) fn topology(&self) -> crate::topology::Kind {
        self.core.topology.kind()
    }

    /// The blocking pool's open connections and commands running.
    pub(crate) fn blocking(&self) -> (usize, usize) {
        self.core
            .handles
            .pool(crate::pool::Purpose::Blocking)
            .report()
    }
}
