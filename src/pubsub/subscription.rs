//! One subscription's side of pub/sub: the events it reads ([`PubSubEvent`]), its bounded buffer
//! (filled by the subscriber connection's push callback, never blocking it) and the public
//! [`Subscription`] that reads it, as an `async fn recv` or a `futures` `Stream`.
//!
//! The buffer holds at most [`Config::pubsub_buffer`](crate::Config::pubsub_buffer) messages.
//! A message that finds it full is dropped for this subscription alone and counted; the count
//! reaches the reader as one [`PubSubEvent::Lagged`] exactly where the gap is (after the messages
//! buffered before it, before any message after it). A lost connection is a gap too: messages
//! that arrive on the new connection while the subscriptions are being restored are held back
//! until [`PubSubEvent::Resubscribed`] is in the buffer, so they always come after it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::metrics::PubSubMetrics;

use super::{PubSubShared, TargetKind};

/// One message received on a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// The channel it was published on.
    pub channel: String,
    /// The pattern it matched, for a [`psubscribe`](crate::pubsub::PubSub::psubscribe)
    /// subscription; `None` for a channel subscription.
    pub pattern: Option<String>,
    /// The payload, as published.
    pub payload: Vec<u8>,
}

impl Message {
    /// The payload as UTF-8 text, if it is.
    pub fn payload_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.payload).ok()
    }

    /// For a keyspace notification (`__keyspace@<db>__:<key>`), the key it is about (with the
    /// key prefix, as stored); `None` for any other channel. The payload is the event (`set`,
    /// `del`, `expired`, …).
    pub fn keyspace_key(&self) -> Option<&str> {
        let rest = self.channel.strip_prefix("__keyspace@")?;
        let (db, key) = rest.split_once("__:")?;
        db.bytes().all(|b| b.is_ascii_digit()).then_some(key)
    }
}

/// What a [`Subscription`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PubSubEvent {
    /// A message published on a subscribed channel (or one matching a subscribed pattern).
    Message(Message),
    /// The subscriber connection was lost and is back, with this subscription confirmed again.
    /// Messages published during `downtime` (from the loss to the confirmation) were missed:
    /// Redis pub/sub keeps nothing for absent subscribers.
    Resubscribed {
        /// From the moment the connection was found lost to the moment this subscription was
        /// confirmed on the new one.
        downtime: Duration,
    },
    /// This subscription's reader fell behind: its buffer was full and `dropped` messages were
    /// dropped for it (for it alone: other subscriptions got them). Counted in
    /// `redis_client_pubsub_lagged_total`.
    Lagged {
        /// How many messages were dropped at this point of the stream.
        dropped: u64,
    },
}

/// The buffer between the push callback and one subscription's reader.
pub(crate) struct Queue {
    state: Mutex<QueueState>,
    capacity: usize,
}

#[derive(Default)]
struct QueueState {
    events: VecDeque<PubSubEvent>,
    /// Messages in `events` (the markers are not counted against the capacity).
    messages: usize,
    /// Messages dropped since the last `Lagged` was queued.
    gap: u64,
    /// Whether this subscription's targets were confirmed on a connection: only then is a lost
    /// connection a gap for it.
    confirmed: bool,
    /// Set when the connection is lost (if confirmed): messages are held back until the
    /// subscriptions are restored and `Resubscribed` is queued.
    lost_at: Option<Instant>,
    /// Messages held back while restoring.
    held: Vec<Message>,
    /// Messages dropped while restoring (the held ones already fill the buffer).
    held_gap: u64,
    /// No more events will come (shutdown, or the subscription could not be restored).
    closed: bool,
    /// The reader, when it waits.
    waker: Option<Waker>,
}

impl QueueState {
    /// Queues a message, or counts it dropped when the buffer is full.
    fn push(&mut self, message: Message, capacity: usize, metrics: &PubSubMetrics) -> bool {
        if self.messages >= capacity {
            self.gap += 1;
            metrics.lagged();
            return false;
        }
        if self.gap > 0 {
            let dropped = std::mem::take(&mut self.gap);
            self.push_marker(PubSubEvent::Lagged { dropped });
        }
        self.events.push_back(PubSubEvent::Message(message));
        self.messages += 1;
        true
    }

    /// Queues a gap marker, merging it into one of the same kind among the trailing markers, so
    /// a reader that never reads holds at most two markers beyond its messages.
    fn push_marker(&mut self, marker: PubSubEvent) {
        for queued in self.events.iter_mut().rev().take(2) {
            match (queued, &marker) {
                (PubSubEvent::Message(_), _) => break,
                (PubSubEvent::Lagged { dropped }, PubSubEvent::Lagged { dropped: more }) => {
                    *dropped += more;
                    return;
                }
                (
                    PubSubEvent::Resubscribed { downtime },
                    PubSubEvent::Resubscribed { downtime: more },
                ) => {
                    *downtime += *more;
                    return;
                }
                _ => {}
            }
        }
        self.events.push_back(marker);
    }

    fn pop(&mut self) -> Option<PubSubEvent> {
        if let Some(event) = self.events.pop_front() {
            if matches!(event, PubSubEvent::Message(_)) {
                self.messages -= 1;
            }
            return Some(event);
        }
        (self.gap > 0).then(|| PubSubEvent::Lagged {
            dropped: std::mem::take(&mut self.gap),
        })
    }
}

impl Queue {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Queue {
            state: Mutex::new(QueueState::default()),
            capacity,
        })
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // The state stays consistent whatever panicked while holding it: every write is one
        // field at a time.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Delivers one message (from the push callback: never blocks). Returns whether it was
    /// buffered (false: dropped and counted, or held back while restoring).
    pub(crate) fn deliver(&self, message: Message, metrics: &PubSubMetrics) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        if state.lost_at.is_some() {
            if state.held.len() >= self.capacity {
                state.held_gap += 1;
                metrics.lagged();
            } else {
                state.held.push(message);
            }
            return false;
        }
        let queued = state.push(message, self.capacity, metrics);
        let waker = state.waker.take();
        drop(state);
        if let Some(w) = waker {
            w.wake();
        }
        queued
    }

    /// The subscription's targets are confirmed on the current connection.
    pub(crate) fn confirm(&self) {
        self.lock().confirmed = true;
    }

    /// The connection was lost at `at`: a gap for a confirmed subscription.
    pub(crate) fn lost(&self, at: Instant) {
        let mut state = self.lock();
        if state.confirmed && state.lost_at.is_none() {
            state.lost_at = Some(at);
        }
    }

    /// Every target is confirmed again on a new connection: queue `Resubscribed` (after any
    /// unreported drops from before the loss), then the messages held back meanwhile. Returns
    /// how many held messages were buffered, or `None` when this subscription had no gap.
    pub(crate) fn restored(&self, now: Instant, metrics: &PubSubMetrics) -> Option<u64> {
        let mut state = self.lock();
        let since = state.lost_at.take()?;
        if state.gap > 0 {
            let dropped = std::mem::take(&mut state.gap);
            state.push_marker(PubSubEvent::Lagged { dropped });
        }
        state.push_marker(PubSubEvent::Resubscribed {
            downtime: now.saturating_duration_since(since),
        });
        let mut buffered = 0;
        for message in std::mem::take(&mut state.held) {
            buffered += u64::from(state.push(message, self.capacity, metrics));
        }
        state.gap += std::mem::take(&mut state.held_gap);
        let waker = state.waker.take();
        drop(state);
        if let Some(w) = waker {
            w.wake();
        }
        Some(buffered)
    }

    /// No more events: the reader gets what is buffered, then the end of the stream.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        let waker = state.waker.take();
        drop(state);
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<PubSubEvent>> {
        let mut state = self.lock();
        if let Some(event) = state.pop() {
            return Poll::Ready(Some(event));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        match &state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn try_next(&self) -> Option<PubSubEvent> {
        self.lock().pop()
    }
}

/// A live subscription to channels ([`PubSub::subscribe`](crate::pubsub::PubSub::subscribe)) or
/// patterns ([`PubSub::psubscribe`](crate::pubsub::PubSub::psubscribe)): read it with
/// [`recv`](Self::recv) or as a `futures` `Stream` of [`PubSubEvent`]s.
///
/// It survives reconnects: after a lost subscriber connection it is restored on the new one and
/// reads [`PubSubEvent::Resubscribed`] before any message that came after the loss. Dropping it
/// unsubscribes (in the background); [`unsubscribe`](Self::unsubscribe) does so and waits for
/// the server to confirm. The stream ends (`None`) when the supervisor shuts down, after every
/// buffered event was read.
pub struct Subscription {
    pub(super) id: u64,
    pub(super) kind: TargetKind,
    pub(super) targets: super::Targets,
    pub(super) queue: Arc<Queue>,
    pub(super) shared: Arc<PubSubShared>,
    /// False once the subscription has been taken out of the registry.
    pub(super) registered: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("kind", &self.kind)
            .field("targets", &self.names())
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The next event, waiting for one; `None` once the supervisor has shut down and every
    /// buffered event was read.
    pub async fn recv(&mut self) -> Option<PubSubEvent> {
        std::future::poll_fn(|cx| self.queue.poll_next(cx)).await
    }

    /// The next buffered event, if there is one now (never waits).
    pub fn try_recv(&mut self) -> Option<PubSubEvent> {
        self.queue.try_next()
    }

    /// The channels (or patterns) this subscription is to, as given.
    pub fn names(&self) -> Vec<String> {
        self.targets
            .iter()
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .collect()
    }

    /// True for a pattern subscription ([`psubscribe`](crate::pubsub::PubSub::psubscribe)).
    pub fn is_pattern(&self) -> bool {
        self.kind == TargetKind::Pattern
    }

    /// Ends the subscription and waits until the server has confirmed `UNSUBSCRIBE` for the
    /// channels no other subscription still uses (if the subscriber connection is up).
    ///
    /// # Errors
    /// [`Error::Timeout`] if the server does not confirm within the command timeout (the
    /// subscription is ended anyway: no more events reach it);
    /// [`Error::Server`] if it refuses.
    pub async fn unsubscribe(mut self) -> Result<(), Error> {
        if std::mem::take(&mut self.registered) {
            let (kind, id, targets) = (self.kind, self.id, self.targets.clone());
            self.shared.unregister(kind, id, &targets).await;
        }
        self.shared.reconcile(self.kind).await
    }
}

impl futures_core::Stream for Subscription {
    type Item = PubSubEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PubSubEvent>> {
        self.queue.poll_next(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if std::mem::take(&mut self.registered) {
            let targets = self.targets.clone();
            self.shared.unregister_dropped(self.kind, self.id, targets);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::metrics::{Metrics, prometheus_builder};

    fn metrics() -> Metrics {
        Metrics::new(
            "q",
            1,
            Some(Arc::new(prometheus_builder().build_recorder())),
        )
    }

    fn msg(n: u32) -> Message {
        Message {
            channel: "c".into(),
            pattern: None,
            payload: n.to_string().into_bytes(),
        }
    }

    fn drain(q: &Queue) -> Vec<PubSubEvent> {
        std::iter::from_fn(|| q.try_next()).collect()
    }

    #[test]
    fn a_full_buffer_drops_and_reports_the_gap_where_it_is() {
        let m = metrics();
        let q = Queue::new(2);
        for n in 0..5 {
            q.deliver(msg(n), &m.pubsub);
        }
        // Reader catches up, then one more message arrives.
        assert_eq!(q.try_next(), Some(PubSubEvent::Message(msg(0))));
        q.deliver(msg(5), &m.pubsub);
        assert_eq!(
            drain(&q),
            vec![
                PubSubEvent::Message(msg(1)),
                PubSubEvent::Lagged { dropped: 3 },
                PubSubEvent::Message(msg(5)),
            ]
        );
        // Drops with nothing after them are reported once the buffer is read.
        for n in 6..10 {
            q.deliver(msg(n), &m.pubsub);
        }
        assert_eq!(
            drain(&q),
            vec![
                PubSubEvent::Message(msg(6)),
                PubSubEvent::Message(msg(7)),
                PubSubEvent::Lagged { dropped: 2 },
            ]
        );
    }

    #[test]
    fn messages_after_a_loss_come_after_resubscribed() {
        let m = metrics();
        let q = Queue::new(4);
        q.deliver(msg(0), &m.pubsub);
        q.confirm();
        let lost = Instant::now();
        q.lost(lost);
        // Arrives on the new connection while the others are still being restored.
        q.deliver(msg(1), &m.pubsub);
        q.restored(lost + Duration::from_millis(30), &m.pubsub);
        q.deliver(msg(2), &m.pubsub);
        assert_eq!(
            drain(&q),
            vec![
                PubSubEvent::Message(msg(0)),
                PubSubEvent::Resubscribed {
                    downtime: Duration::from_millis(30)
                },
                PubSubEvent::Message(msg(1)),
                PubSubEvent::Message(msg(2)),
            ]
        );
    }

    #[test]
    fn an_unconfirmed_subscription_has_no_gap_and_markers_stay_bounded() {
        let m = metrics();
        let q = Queue::new(1);
        q.lost(Instant::now());
        assert_eq!(q.restored(Instant::now(), &m.pubsub), None);
        assert!(drain(&q).is_empty());
        q.confirm();
        q.deliver(msg(0), &m.pubsub);
        for _ in 0..100 {
            q.deliver(msg(1), &m.pubsub);
            q.lost(Instant::now());
            q.restored(Instant::now(), &m.pubsub);
        }
        let events = drain(&q);
        assert!(events.len() <= 3, "{events:?}");
        let dropped: u64 = events
            .iter()
            .map(|e| match e {
                PubSubEvent::Lagged { dropped } => *dropped,
                _ => 0,
            })
            .sum();
        assert_eq!(dropped, 100);
    }

    #[test]
    fn keyspace_key() {
        let mut m = msg(0);
        m.channel = "__keyspace@0__:user:1".into();
        assert_eq!(m.keyspace_key(), Some("user:1"));
        m.channel = "orders".into();
        assert_eq!(m.keyspace_key(), None);
    }
}
