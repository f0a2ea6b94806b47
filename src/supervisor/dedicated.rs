//! The supervisor's dedicated children: the pub/sub subscriber actor, started by the first
//! subscription and restarted with backoff (its own attempt counter, the same policy as the
//! command connection) whenever its connection is lost. Its losses never change the published
//! availability: that is the command connection's; the subscriptions see theirs as
//! `Resubscribed` events, and `redis_client_pubsub_up` tells the dashboards.

use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorRef, SupervisionEvent};

use super::{SupervisorActor, SupervisorMsg, SupervisorState, Timer};
use crate::backoff::RestartTracker;
use crate::config::Config;
use crate::error::{ConnectionFailure, FailureKind};
use crate::pubsub::{SubscriberActor, SubscriberArgs, SubscriberMsg};

/// The subscriber actor, as the supervisor tracks it.
pub(super) struct Subscriber {
    pub(super) actor: Option<ActorRef<SubscriberMsg>>,
    tracker: RestartTracker,
    /// Bumped by every loss: a restart timer of an older generation is stale.
    generation: u64,
    timer: Option<Timer>,
}

impl Subscriber {
    pub(super) fn new(config: &Config) -> Self {
        Subscriber {
            actor: None,
            tracker: RestartTracker::new(config.backoff(), config.stable_period()),
            generation: 0,
            timer: None,
        }
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
            topology: state.topology,
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
        let delay = state
            .subscriber
            .tracker
            .on_failure(Instant::now(), fastrand::f64(), false);
        tracing::debug!(
            client = %state.core.config.name(),
            reason = %failure.message,
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "redis subscriber connection lost"
        );
        let sub = &mut state.subscriber;
        sub.generation = sub.generation.wrapping_add(1);
        let generation = sub.generation;
        sub.abort_timer();
        sub.timer = Some(
            myself.send_after(delay, move || SupervisorMsg::RestartSubscriber {
                generation,
            }),
        );
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
    }
}
