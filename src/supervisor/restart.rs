//! The supervisor's restart policy: a lane's connection replaced (silent, demoted, moved by a
//! failover) or lost, what is published (`Down`, `Degraded`, `GaveUp`), how long before the next
//! attempt (the backoff, none after a failover, little for a replica being promoted; sooner when
//! a refused port accepts again, see `comeback`), restart intensity and storms.

use std::time::{Duration, Instant};

use ractor::{ActorId, ActorRef};

use super::actor::{SupervisorActor, SupervisorMsg, SupervisorState};
use super::{PROMOTION_RETRY, comeback};
use crate::availability::{Availability, EventKind};
use crate::error::{ConnectionFailure, FailureKind};
use crate::health::HealthMsg;
use crate::metrics::ConnectOutcome;

impl SupervisorActor {
    /// The health actor found connection `id` silent: replace it now (its termination event
    /// arrives later and is then stale).
    pub(super) fn replace(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        id: ActorId,
        reason: String,
    ) {
        self.replace_lane(myself, state, id, FailureKind::Unhealthy, reason);
    }

    /// Replaces connection `id` (or attempt) now, for a reason of `kind`.
    pub(super) fn replace_lane(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        id: ActorId,
        kind: FailureKind,
        reason: String,
    ) {
        let Some(lane) = state.lane_of(id) else {
            return;
        };
        self.replace_lane_now(myself, state, lane, kind, reason);
    }

    /// Replaces every lane's connection (or attempt) now, for a reason of `kind`.
    pub(super) fn replace_now(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        kind: FailureKind,
        reason: String,
    ) {
        for lane in 0..state.lanes.len() {
            self.replace_lane_now(myself, state, lane, kind, reason.clone());
        }
    }

    pub(super) fn replace_lane_now(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        lane: usize,
        kind: FailureKind,
        reason: String,
    ) {
        let Some(actor) = state.lanes[lane].child.as_ref().map(|c| c.actor.clone()) else {
            return;
        };
        let failure = ConnectionFailure::new(kind, reason.clone());
        self.child_failed(myself, state, lane, failure);
        actor.stop(Some(reason));
    }

    /// Lane `lane`'s connection (or attempt) failed: publish `Down` (or `GaveUp`) — or, while
    /// other lanes serve, `Degraded` naming how many are down — and schedule its next attempt.
    pub(super) fn child_failed(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        lane: usize,
        failure: ConnectionFailure,
    ) {
        let served_before = state.any_serving();
        let lane_state = &mut state.lanes[lane];
        let was_up = lane_state
            .child
            .take()
            .is_some_and(|c| c.connected.is_some());
        lane_state.last_failure = Some(failure.message.clone());
        if state.stopping {
            return;
        }
        state.core.metrics.lane_up(lane, false);
        state.core.lane_failed(lane, &failure.message);
        if !was_up {
            state.core.metrics.connect(ConnectOutcome::Failure);
        }
        let others_serve = state.any_serving();
        if let Some(health) = &state.health
            && !others_serve
        {
            let _ = health.cast(HealthMsg::Lost(failure.clone()));
        }
        let now = Instant::now();
        let storm_started = was_up.then(|| note_restart(state, lane, now)).flatten();
        // A failover moved the master: not a failure of ours, reconnect (to the new one) at once.
        // (A node found not to be the master while connecting waits its backoff: the sentinels
        // may not have switched yet.)
        let moved = failure.kind == FailureKind::Failover
            || (was_up && failure.kind == FailureKind::NotMaster);
        // The replica the sentinels are promoting still said "replica": it turns master within
        // milliseconds of `REPLICAOF NO ONE`, so it is asked again soon, not after a backoff.
        let promoting = failure.kind == FailureKind::NotMaster && state.topology.promoting();
        let storming = state.storm.is_some();
        let lane_state = &mut state.lanes[lane];
        let delay = if moved {
            Duration::ZERO
        } else if promoting {
            lane_state
                .tracker
                .on_failure(now, fastrand::f64(), storming)
                .min(PROMOTION_RETRY)
        } else {
            lane_state
                .tracker
                .on_failure(now, fastrand::f64(), storming)
        };
        if let Some(t) = lane_state.stable_timer.take() {
            t.abort();
        }
        if others_serve {
            // The others keep serving: `Degraded`, "k of n lanes down".
            state.publish_connected(&failure.message);
            if let Some((text, restarts, window)) = storm_started {
                publish_storm(state, text, restarts, window);
            }
        } else if lane == 0 || served_before {
            // This loss ended service, or it is lane 0's attempt during an outage: `Down` (the
            // other lanes' attempts meanwhile publish nothing: one stream of events).
            if gave_up(state, lane, &failure) {
                // Final: no lane tries again.
                state.stopping = true;
                state.abort_timers();
                for child in state.lanes.iter_mut().filter_map(|s| s.child.take()) {
                    child.actor.stop(Some("gave up".into()));
                }
                return;
            }
            publish_down(state, &failure, delay, storm_started);
            state.published = None;
        }
        self.schedule_reconnect(myself, state, lane, delay);
        let refused = failure.kind == FailureKind::Refused && !storming;
        watch_if_refused(myself, state, lane, refused, delay);
    }

    pub(super) fn schedule_reconnect(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        lane: usize,
        delay: Duration,
    ) {
        let lane_state = &mut state.lanes[lane];
        lane_state.generation = lane_state.generation.wrapping_add(1);
        let generation = lane_state.generation;
        if let Some(t) = lane_state.reconnect_timer.take() {
            t.abort();
        }
        lane_state.comeback.stop();
        lane_state.reconnect_timer =
            Some(myself.send_after(delay, move || SupervisorMsg::Reconnect { lane, generation }));
    }
}

/// After an attempt `refused` at the TCP level (nothing listens; not during a storm), with the
/// next attempt `delay` away: watch the port rather than wait out the whole step
/// (`comeback`), where the topology has one address to watch.
fn watch_if_refused(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    lane: usize,
    refused: bool,
    delay: Duration,
) {
    let address = (refused && delay > comeback::POLL)
        .then(|| state.topology.fixed_address(&state.core.config))
        .flatten();
    if let Some(address) = address {
        let lane_state = &mut state.lanes[lane];
        let generation = lane_state.generation;
        lane_state.comeback = comeback::watch(address, myself.clone(), lane, generation);
    }
}

/// Records a lost connection against the restart intensity; returns the storm's description,
/// restarts and window when this loss starts a restart storm.
fn note_restart(
    state: &mut SupervisorState,
    lane: usize,
    now: Instant,
) -> Option<(String, u32, Duration)> {
    if state.lanes[lane].tracker.is_stable(now) {
        state.intensity.reset();
        state.storm = None;
    }
    let restarts = state.intensity.record(now)?;
    if state.storm.is_some() {
        return None;
    }
    let window = state.intensity.window();
    let text = format!(
        "restart storm: {restarts} connections lost within {} s",
        window.as_secs()
    );
    state.core.metrics.storm();
    state.storm = Some(text.clone());
    Some((text, restarts, window))
}

/// With a maximum of attempts configured and reached: publish `GaveUp` (final) and say so.
fn gave_up(state: &SupervisorState, lane: usize, failure: &ConnectionFailure) -> bool {
    let attempts = state.lanes[lane].tracker.attempt();
    let Some(max) = state.core.config.max_attempts() else {
        return false;
    };
    if attempts < max {
        return false;
    }
    let reason = &failure.message;
    let text = format!("gave up after {attempts} consecutive failed attempts: {reason}");
    tracing::error!(client = %state.core.config.name(), reason = %reason, attempts, "redis supervisor gave up");
    let gave_up = Availability::GaveUp {
        error: reason.clone(),
        attempts,
    };
    state.core.publish(gave_up, text, &[]);
    true
}

/// Publishes `Down` (and the restart-storm notice, when one started).
fn publish_down(
    state: &SupervisorState,
    failure: &ConnectionFailure,
    delay: Duration,
    storm_started: Option<(String, u32, Duration)>,
) {
    let core = &state.core;
    tracing::debug!(
        client = %core.config.name(),
        state = "down",
        reason = %failure.message,
        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        "redis connection down"
    );
    let down = Availability::Down {
        error: failure.message.clone(),
        kind: failure.kind,
        retry_in: delay,
    };
    core.publish(down, failure.message.clone(), &[]);
    if let Some((text, restarts, window)) = storm_started {
        publish_storm(state, text, restarts, window);
    }
}

/// Publishes the restart-storm notice (with the state it happens in).
fn publish_storm(state: &SupervisorState, text: String, restarts: u32, window: Duration) {
    let core = &state.core;
    tracing::warn!(client = %core.config.name(), restarts, "redis restart storm");
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    let notice = EventKind::RestartStorm {
        restarts,
        window_ms,
    };
    core.availability
        .publish_kind(core.availability.current(), text, notice);
}
