//! The supervisor's dedicated children, each restarted with backoff (its own attempt counter,
//! the same policy as the command connection) whenever it fails; their losses never change the
//! published availability, which is the command connection's:
//! - the pub/sub subscriber actor, started by the first subscription (the subscriptions see a
//!   loss as `Resubscribed`, `redis_client_pubsub_up` tells the dashboards);
//! - with Sentinel, the sentinel watcher, started with the supervisor, moved to the next
//!   sentinel when it fails. Its reports of the master drive failovers (`failover` below).

use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorRef, SupervisionEvent};

use super::actor::{SupervisorActor, SupervisorMsg, SupervisorState, Timer};
use crate::availability::EventKind;
use crate::backoff::RestartTracker;
use crate::config::Config;
use crate::config::NodeAddr;
use crate::error::{ConnectionFailure, FailureKind};
use crate::pubsub::{SubscriberActor, SubscriberArgs, SubscriberMsg};
use crate::sentinel::{WatcherActor, WatcherArgs, WatcherMsg};

/// A dedicated child actor, as the supervisor tracks it.
pub(super) struct Dedicated<M: ractor::Message> {
    pub(super) actor: Option<ActorRef<M>>,
    tracker: RestartTracker,
    /// Bumped by every loss: a restart timer of an older generation is stale.
    generation: u64,
    timer: Option<Timer>,
    /// Stopped on purpose to follow a failover: restart at once, not after a backoff.
    moved: bool,
}

/// The pub/sub subscriber actor.
pub(super) type Subscriber = Dedicated<SubscriberMsg>;
/// The sentinel watcher.
pub(super) type Watcher = Dedicated<WatcherMsg>;

impl<M: ractor::Message> Dedicated<M> {
    pub(super) fn new(config: &Config) -> Self {
        Dedicated {
            actor: None,
            tracker: RestartTracker::new(config.backoff(), config.stable_period()),
            generation: 0,
            timer: None,
            moved: false,
        }
    }

    /// The delay before the next start after a loss, and the timer's generation.
    fn next_start(&mut self) -> (Duration, u64) {
        let delay = if std::mem::take(&mut self.moved) {
            Duration::ZERO
        } else {
            self.tracker
                .on_failure(Instant::now(), fastrand::f64(), false)
        };
        self.generation = self.generation.wrapping_add(1);
        self.abort_timer();
        (delay, self.generation)
    }

    pub(super) fn is(&self, id: ActorId) -> bool {
        self.actor.as_ref().is_some_and(|a| a.get_id() == id)
    }

    /// Its connection is up with every subscription restored.
    pub(super) fn up(&mut self) {
        self.tracker.on_up(Instant::now());
    }

    /// Whether a restart timer of `generation` is the pending one.
    pub(super) fn is_due(&self, generation: u64) -> bool {
        generation == self.generation && self.actor.is_none()
    }

    pub(super) fn abort_timer(&mut self) {
        if let Some(t) = self.timer.take() {
            t.abort();
        }
    }
}

impl SupervisorActor {
    /// Starts the subscriber actor (it connects in its own task).
    pub(super) async fn start_subscriber(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) {
        state.subscriber.timer = None;
        let args = SubscriberArgs {
            shared: state.core.pubsub.clone(),
            topology: state.topology.clone(),
            report: myself.get_derived(),
        };
        match SubscriberActor::spawn_linked(None, SubscriberActor, args, myself.get_cell()).await {
            Ok((actor, _join)) => state.subscriber.actor = Some(actor),
            Err(e) => {
                let failure = ConnectionFailure::new(
                    FailureKind::Other,
                    format!("subscriber actor did not start: {e}"),
                );
                self.subscriber_lost(myself, state, &failure);
            }
        }
    }

    /// A supervision event about the subscriber actor.
    pub(super) fn subscriber_event(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        event: &SupervisionEvent,
    ) {
        let failure = match event {
            SupervisionEvent::ActorFailed(_, err) => {
                ConnectionFailure::from_actor_error(err.as_ref())
            }
            SupervisionEvent::ActorTerminated(_, _, reason) => ConnectionFailure::new(
                FailureKind::Other,
                reason
                    .clone()
                    .unwrap_or_else(|| "subscriber actor stopped".into()),
            ),
            _ => return,
        };
        state.subscriber.actor = None;
        self.subscriber_lost(myself, state, &failure);
    }

    /// The subscriber connection is lost (or could not be opened): schedule the next one.
    fn subscriber_lost(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        failure: &ConnectionFailure,
    ) {
        state.core.pubsub.lost(&failure.message, failure.kind);
        if state.stopping || state.core.handles.is_closed() {
            return;
        }
        let (delay, generation) = state.subscriber.next_start();
        tracing::debug!(
            client = %state.core.config.name(),
            reason = %failure.message,
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "redis subscriber connection lost"
        );
        state.subscriber.timer =
            Some(
                myself.send_after(delay, move || SupervisorMsg::RestartSubscriber {
                    generation,
                }),
            );
    }

    /// Starts the sentinel watcher (it connects in its own task).
    pub(super) async fn start_watcher(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) {
        state.watcher.timer = None;
        let Some(shared) = state.core.topology.sentinel().cloned() else {
            return;
        };
        let args = WatcherArgs {
            shared,
            report: myself.get_derived(),
        };
        match WatcherActor::spawn_linked(None, WatcherActor, args, myself.get_cell()).await {
            Ok((actor, _join)) => state.watcher.actor = Some(actor),
            Err(e) => {
                tracing::error!(error = %e, "sentinel watcher did not start");
                self.watcher_lost(myself, state);
            }
        }
    }

    /// A supervision event about the sentinel watcher: start it again on the next sentinel.
    pub(super) fn watcher_event(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        event: &SupervisionEvent,
    ) {
        match event {
            SupervisionEvent::ActorFailed(_, err) => {
                tracing::warn!(client = %state.core.config.name(), error = %err, "sentinel watcher failed; moving to the next sentinel");
            }
            SupervisionEvent::ActorTerminated(..) => {}
            _ => return,
        }
        state.watcher.actor = None;
        self.watcher_lost(myself, state);
    }

    fn watcher_lost(&self, myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState) {
        if let Some(shared) = state.core.topology.sentinel() {
            shared.rotate();
        }
        if state.stopping || state.core.handles.is_closed() {
            return;
        }
        let (delay, generation) = state.watcher.next_start();
        state.watcher.timer =
            Some(myself.send_after(delay, move || SupervisorMsg::RestartWatcher { generation }));
    }

    /// The watcher says the sentinels name `master`. A connection on another node is moved to
    /// it at once (a failover, published as such); with none up, a pending reconnect is not
    /// made to wait out its backoff.
    pub(super) fn master_named(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        master: NodeAddr,
        switched: bool,
    ) {
        if state.stopping || state.core.handles.is_closed() {
            return;
        }
        if state.master.as_ref().is_some_and(|known| *known != master)
            && let Some(from) = state.master.clone()
        {
            self.announce_failover(state, &from, &master);
        }
        state.master = Some(master.clone());
        let elsewhere = state
            .lanes
            .iter()
            .filter_map(|s| s.connected())
            .map(|c| c.address.clone())
            .find(|a| *a != master);
        if let Some(from) = elsewhere {
            self.failover(myself, state, from, master);
        } else if switched {
            // Lanes waiting out a backoff for a master that has just been replaced: go now.
            for lane in 0..state.lanes.len() {
                if state.lanes[lane].child.is_none() {
                    self.schedule_reconnect(myself, state, lane, Duration::ZERO);
                }
            }
        }
    }

    /// Publishes a `Failover` notice (once per change of master) and counts it.
    pub(super) fn announce_failover(
        &self,
        state: &mut SupervisorState,
        from: &NodeAddr,
        to: &NodeAddr,
    ) {
        let reason = format!("the sentinels switched the master from {from} to {to}");
        tracing::info!(client = %state.core.config.name(), from = %from, to = %to, "redis failover");
        let core = &state.core;
        core.metrics.failover();
        let notice = EventKind::Failover {
            from: from.to_string(),
            to: to.to_string(),
        };
        core.availability
            .publish_kind(core.availability.current(), reason, notice);
        state.master = Some(to.clone());
    }

    /// Moves every connection from `from` to the master the sentinels name now.
    fn failover(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        from: NodeAddr,
        to: NodeAddr,
    ) {
        let reason = format!("moving from {from} to the master the sentinels name, {to}");
        self.replace_now(myself, state, FailureKind::Failover, reason.clone());
        if let Some(subscriber) = state.subscriber.actor.clone() {
            state.subscriber.moved = true;
            subscriber.stop(Some(reason));
        }
        for pool in state.core.handles.pools() {
            pool.close_idle();
        }
    }

    /// Shutdown: stop the subscriber actor and end every subscription's stream.
    pub(super) async fn stop_subscriber(&self, state: &mut SupervisorState) {
        state.subscriber.abort_timer();
        if let Some(actor) = state.subscriber.actor.take() {
            let _ = actor
                .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(2)))
                .await;
        }
        state.core.pubsub.close();
        state.watcher.abort_timer();
        if let Some(actor) = state.watcher.actor.take() {
            let _ = actor
                .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(2)))
                .await;
        }
    }
}
