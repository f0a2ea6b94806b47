//! What the supervisor actor and the public [`Supervisor`](super::Supervisor) share: the
//! configuration, the route and availability writers (the actor is their one writer), the
//! handles' core, the health board, pub/sub and the topology; and the one place a state is
//! published (route, gauges, watch and event in one step).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, PoisonError};

use super::status::LaneStatus;
use crate::availability::{Availability, AvailabilityPublisher};
use crate::config::Config;
use crate::delivery::HandleCore;
use crate::health::HealthBoard;
use crate::lane::Lane;
use crate::metrics::{ClientMetrics, HealthMetrics};
use crate::pubsub::PubSubShared;
use crate::route::{Route, RouteState, RouteWriter};
use crate::topology::Topology;

/// What the supervisor and the public [`Supervisor`] share; written only by this module.
pub(crate) struct Core {
    pub(super) config: Arc<Config>,
    pub(super) route: RouteWriter,
    pub(super) availability: AvailabilityPublisher,
    pub(super) metrics: ClientMetrics,
    /// Connection actors started to replace a failed one.
    pub(super) restarts: AtomicU64,
    pub(super) handles: Arc<HandleCore>,
    /// What the health actor is started with (again, if it fails), but its report port.
    pub(super) health_route: Route,
    pub(super) health_metrics: Arc<HealthMetrics>,
    pub(super) board: HealthBoard,
    /// The pub/sub registry and subscriber connection state.
    pub(super) pubsub: Arc<PubSubShared>,
    /// Where connections go (with Sentinel: what the watcher knows of it).
    pub(super) topology: Topology,
    /// Each lane's state for `/health/redis` (written by the supervisor actor only).
    pub(super) lanes: std::sync::Mutex<Vec<LaneStatus>>,
    /// Orders publications against the start of shutdown (see `publish`).
    pub(super) publishing: std::sync::Mutex<()>,
}

impl Core {
    pub(super) fn lane_status(&self, lane: usize, state: &'static str, address: Option<String>) {
        if let Ok(mut lanes) = self.lanes.lock()
            && let Some(l) = lanes.get_mut(lane)
        {
            l.state = state;
            if address.is_some() || state != "up" {
                l.address = address;
            }
        }
    }

    pub(super) fn lane_failed(&self, lane: usize, error: &str) {
        if let Ok(mut lanes) = self.lanes.lock()
            && let Some(l) = lanes.get_mut(lane)
        {
            l.state = "down";
            l.address = None;
            l.last_error = Some(error.to_string());
        }
    }
}

impl Core {
    /// Publishes a transition: the route derived from it (about `lane`), the state gauges, then
    /// the watch and the event. Once shutdown has begun only `Down`, `GaveUp` and `Stopped` are
    /// still published: availability never says `Up` again.
    pub(super) fn publish(&self, state: Availability, reason: impl Into<String>, lanes: &[Lane]) {
        let terminal = matches!(
            state,
            Availability::Down { .. } | Availability::GaveUp { .. } | Availability::Stopped
        );
        // Held across the check and the publication, and by `begin_shutdown` across the close:
        // a state that is not terminal is either published before shutdown began or not at all.
        let _publishing = self
            .publishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.handles.is_closed() && !terminal {
            return;
        }
        let route = RouteState::derive(&state, lanes, &self.route.current().state);
        self.route.set(route);
        self.metrics.set_state(&state);
        self.availability.publish(state, reason);
    }

    /// The serving lanes changed but not what availability says (a lane back while another is
    /// still down): the route only.
    pub(super) fn set_lanes(&self, lanes: &[Lane]) {
        let state = self.availability.current();
        if self.handles.is_closed() || !state.is_serving() {
            return;
        }
        self.route.set(RouteState::derive(
            &state,
            lanes,
            &self.route.current().state,
        ));
    }

    /// Shutdown begins: no new commands, waiting ones answer `ShuttingDown`.
    pub(super) fn begin_shutdown(&self) {
        let _publishing = self
            .publishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.handles.close();
        self.route.set(RouteState::Stopped);
    }
}
