//! Availability: the state of the connection as the supervisor sees it, and the pair of channels
//! that publish it — a `watch` with the current state and a `broadcast` with every transition.
//!
//! The supervisor actor is the only writer. It updates the `watch` before it sends the event,
//! so a subscriber that has received an event always finds the current state equal to that event
//! or to a later one.
//!
//! # The states over time
//!
//! A typical life: `Connecting { attempt: 1 }` → `Up` → `Degraded` → `Up` → `Down` →
//! `Connecting { .. }` → `Up` → … → `Stopped`. A server that answers but cannot serve yet shows
//! as `NotReady` between `Connecting` (or `Up`) and `Up`, and `GaveUp` follows a `Down` only with
//! [`Config::max_attempts`](crate::Config::max_attempts) (`REDIS_MAX_ATTEMPTS`).
//!
//! - **Every event is news.** A slow server publishes one `Degraded` when it becomes slow and
//!   one `Up` when it recovers, not one per probe (the latency is in the metrics). The
//!   supervisor starts in `Connecting { attempt: 1 }` and does not publish that state as an
//!   event.
//! - **`Up` means the server can serve now.** `Degraded` is connected and serving, with its
//!   reason: probes slow or failing, a restart storm, some lanes down ("k of n lanes down", see
//!   [`Config::lanes`](crate::Config::lanes)) or, on a Redis Cluster, slots whose primary does
//!   not answer. While `NotReady`, commands wait and `/health/ready` answers 503; on a Redis
//!   Cluster `NotReady` has the kind [`FailureKind::ClusterDown`](crate::FailureKind::ClusterDown)
//!   when no primary answers. [`Availability::is_serving`] is true for `Up` and `Degraded`
//!   alone.
//! - **After shutdown.** Once [`Supervisor::shutdown`](crate::Supervisor::shutdown) is called the
//!   state is never `Up` (or `Degraded`, `NotReady`, `Connecting`) again: no reconnect happens
//!   during the drain.
//!
//! # What the server may refuse
//!
//! The refusals of a server that cannot serve *yet* (`LOADING`, `MASTERDOWN`, `BUSY`) make the
//! state `NotReady`, and the refused commands wait (see [`handle`](crate::handle)). Write
//! refusals that are the server's policy rather than a passing state — `NOREPLICAS`, `OOM` under
//! `maxmemory-policy noeviction`, `MISCONF` after a failed save — reach the caller as
//! [`Error::Server`](crate::Error::Server): the server can serve, it refuses that write, and
//! waiting would not change it. `READONLY` is neither: it means the node is no longer the master
//! (a failover demoted it), and the connection is replaced.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{broadcast, watch};

/// Capacity of the event stream per subscriber. A subscriber that falls further behind gets
/// [`EventsError::Lagged`] (with the number of events it missed) and then continues with the
/// newest events; [`AvailabilityEvents::current`] always has the current state.
pub const EVENT_CAPACITY: usize = 256;

/// The state of the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Availability {
    /// A connection attempt is in progress. `attempt` counts consecutive attempts since the last
    /// stable connection (1 for the first).
    Connecting {
        /// Consecutive attempt number, from 1.
        attempt: u32,
    },
    /// Connected, and the server can serve now (it answered the ready check): commands are
    /// being served.
    Up {
        /// `redis_version` from `INFO server`.
        server_version: String,
        /// `role` from `INFO replication` (`master`, `slave`).
        role: String,
        /// The server's `host:port`: with Sentinel, the master the sentinels named.
        address: String,
    },
    /// Connected and serving, but not as it should: probes slow or failing, a restart storm,
    /// some lanes down, or (on a Redis Cluster) slots whose primary does not answer.
    Degraded {
        /// Why.
        reason: String,
    },
    /// Connected, but the server cannot serve yet: it is loading its dataset, it is a replica
    /// that lost its master and refuses stale reads, it is busy running a long script, or (on a
    /// Redis Cluster) no primary answers. Commands wait (per the offline policy, within their deadline) instead of receiving the
    /// server's refusal; the health actor keeps checking and the state turns `Up` once it can
    /// serve.
    NotReady {
        /// The server's refusal, e.g. "LOADING Redis is loading the dataset in memory".
        reason: String,
        /// [`FailureKind::Loading`](crate::FailureKind::Loading),
        /// [`MasterDown`](crate::FailureKind::MasterDown), [`Busy`](crate::FailureKind::Busy) or
        /// [`ClusterDown`](crate::FailureKind::ClusterDown).
        kind: crate::FailureKind,
    },
    /// Not connected; the next attempt starts in `retry_in`.
    Down {
        /// Why the connection (or the attempt) failed, secret-free.
        error: String,
        /// The kind of failure behind `error`.
        kind: crate::FailureKind,
        /// Delay before the next attempt, at the latest: after a refused attempt (nothing
        /// listens) on one server, the attempt comes as soon as the port accepts again.
        #[serde(serialize_with = "serialize_ms", rename = "retry_in_ms")]
        retry_in: Duration,
    },
    /// The supervisor gave up after the configured maximum of consecutive failed attempts
    /// ([`Config::max_attempts`](crate::Config::max_attempts)); no further attempts, every
    /// command fails at once.
    GaveUp {
        /// The last failure, secret-free.
        error: String,
        /// How many consecutive attempts failed.
        attempts: u32,
    },
    /// The supervisor has shut down; no further attempts.
    Stopped,
}

fn serialize_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis().min(u64::MAX as u128) as u64)
}

impl Availability {
    /// The state's name as used in logs and the `state` metric label: `connecting`, `up`,
    /// `degraded`, `not_ready`, `down`, `gave_up`, `stopped`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Connecting { .. } => "connecting",
            Self::Up { .. } => "up",
            Self::Degraded { .. } => "degraded",
            Self::NotReady { .. } => "not_ready",
            Self::Down { .. } => "down",
            Self::GaveUp { .. } => "gave_up",
            Self::Stopped => "stopped",
        }
    }

    /// Every state name, in a fixed order (for metrics that must exist at zero).
    pub const NAMES: &'static [&'static str] = &[
        "connecting",
        "up",
        "degraded",
        "not_ready",
        "down",
        "gave_up",
        "stopped",
    ];

    /// True when commands can be served (`Up` or `Degraded`).
    pub fn is_serving(&self) -> bool {
        matches!(self, Self::Up { .. } | Self::Degraded { .. })
    }
}

impl std::fmt::Display for Availability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connecting { attempt } => write!(f, "connecting (attempt {attempt})"),
            Self::Up {
                server_version,
                role,
                address,
            } => write!(f, "up (redis {server_version}, {role} at {address})"),
            Self::Degraded { reason } => write!(f, "degraded: {reason}"),
            Self::NotReady { reason, kind } => write!(f, "not ready ({kind}): {reason}"),
            Self::Down {
                error, retry_in, ..
            } => {
                write!(f, "down: {error}; retrying in {} ms", retry_in.as_millis())
            }
            Self::GaveUp { error, attempts } => {
                write!(f, "gave up after {attempts} attempts: {error}")
            }
            Self::Stopped => f.write_str("stopped"),
        }
    }
}

/// What an [`AvailabilityEvent`] announces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The state changed to [`AvailabilityEvent::state`].
    Transition,
    /// More than [`Config::restart_intensity`](crate::Config::restart_intensity) connections
    /// were lost within the window: the connection is flapping. The state is unchanged by this
    /// event; while the storm lasts the reconnect delay stays at the cap and a connection that
    /// comes up is reported `Degraded`. The storm ends when a connection stays up for the stable
    /// period (a `Transition` to `Up` with that reason).
    RestartStorm {
        /// Connections lost within the window.
        restarts: u32,
        /// The window, in milliseconds.
        window_ms: u64,
    },
    /// A Sentinel failover moved the master: the sentinel leading it promoted a replica
    /// (`+failover-state-send-slaveof-noone`, or `+promoted-slave`, from any of the sentinels),
    /// the sentinels announced the switch (`+switch-master`), or a periodic check found them
    /// naming another master. The connection to `from` is replaced by one to `to` at once, at the
    /// promotion (not a second later at the announcement), without a backoff wait. Published with the state at that moment; the transitions that follow (`Down` with
    /// [`FailureKind::Failover`](crate::FailureKind::Failover), then `Up` naming `to`) come as
    /// usual.
    Failover {
        /// The old master, `host:port`.
        from: String,
        /// The new master, `host:port`.
        to: String,
    },
    /// A Redis Cluster changed shape, as the health probes saw it: a replica promoted, slots
    /// moved between primaries, a node joined or left. Published with the state at that moment;
    /// the cluster connection follows by itself (the crate's own router takes the new slot map
    /// at once), so nothing is replaced.
    ClusterChanged {
        /// The new shape, one entry per shard in slot order: `primary slots [replicas …]`,
        /// e.g. `127.0.0.1:7000 0-5460 replicas 127.0.0.1:7003`.
        shards: Vec<String>,
    },
}

/// One transition of [`Availability`], or a notice about it ([`EventKind`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AvailabilityEvent {
    /// Position in the stream, from 1, without gaps: a gap means the subscriber lagged.
    pub seq: u64,
    /// When the transition happened.
    #[serde(serialize_with = "serialize_unix_ms", rename = "at_unix_ms")]
    pub at: SystemTime,
    /// The new state.
    pub state: Availability,
    /// Why the transition happened (e.g. "connected", "connection closed by server").
    pub reason: String,
    /// A plain transition, or a notice such as a restart storm.
    pub kind: EventKind,
}

fn serialize_unix_ms<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    s.serialize_u64(ms.min(u64::MAX as u128) as u64)
}

/// Why [`AvailabilityEvents::recv`] returned no event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventsError {
    /// This subscriber fell more than [`EVENT_CAPACITY`] events behind; `missed` events were
    /// skipped. The next `recv` returns the oldest event still held.
    #[error("availability subscriber lagged, {missed} events missed")]
    Lagged {
        /// How many events were skipped.
        missed: u64,
    },
    /// The supervisor is gone; no more events will come.
    #[error("availability stream closed")]
    Closed,
}

/// An ordered stream of [`AvailabilityEvent`]s, from [`Supervisor::subscribe`](crate::Supervisor::subscribe).
#[derive(Debug)]
pub struct AvailabilityEvents {
    rx: broadcast::Receiver<AvailabilityEvent>,
    current: watch::Receiver<Availability>,
}

impl AvailabilityEvents {
    /// The next event, in order.
    ///
    /// # Errors
    /// [`EventsError::Lagged`] when events were skipped because this subscriber was too slow;
    /// [`EventsError::Closed`] once the supervisor is gone and every event has been read.
    pub async fn recv(&mut self) -> Result<AvailabilityEvent, EventsError> {
        self.rx.recv().await.map_err(|e| match e {
            broadcast::error::RecvError::Lagged(missed) => EventsError::Lagged { missed },
            broadcast::error::RecvError::Closed => EventsError::Closed,
        })
    }

    /// The current state (equal to the last event sent, which may not have been read yet).
    pub fn current(&self) -> Availability {
        self.current.borrow().clone()
    }
}

/// The writer side, owned by the supervisor actor (and readable by everyone holding the shared
/// state).
#[derive(Debug)]
pub(crate) struct AvailabilityPublisher {
    current: watch::Sender<Availability>,
    events: broadcast::Sender<AvailabilityEvent>,
    seq: std::sync::atomic::AtomicU64,
}

impl AvailabilityPublisher {
    pub(crate) fn new(initial: Availability) -> Self {
        let (current, _) = watch::channel(initial);
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Self {
            current,
            events,
            seq: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Publishes a transition: the `watch` first, then the event.
    pub(crate) fn publish(
        &self,
        state: Availability,
        reason: impl Into<String>,
    ) -> AvailabilityEvent {
        self.publish_kind(state, reason, EventKind::Transition)
    }

    /// Publishes an event of any kind (a notice repeats the current state).
    pub(crate) fn publish_kind(
        &self,
        state: Availability,
        reason: impl Into<String>,
        kind: EventKind,
    ) -> AvailabilityEvent {
        use std::sync::atomic::Ordering;
        let event = AvailabilityEvent {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            at: SystemTime::now(),
            state: state.clone(),
            reason: reason.into(),
            kind,
        };
        self.current.send_replace(state);
        // No subscribers is fine: the watch holds the state.
        let _ = self.events.send(event.clone());
        event
    }

    pub(crate) fn current(&self) -> Availability {
        self.current.borrow().clone()
    }

    pub(crate) fn watch(&self) -> watch::Receiver<Availability> {
        self.current.subscribe()
    }

    pub(crate) fn subscribe(&self) -> AvailabilityEvents {
        AvailabilityEvents {
            rx: self.events.subscribe(),
            current: self.current.subscribe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn current_equals_last_event_and_events_are_ordered() {
        let p = AvailabilityPublisher::new(Availability::Connecting { attempt: 1 });
        let mut sub = p.subscribe();
        p.publish(
            Availability::Up {
                server_version: "7.0.0".into(),
                role: "master".into(),
                address: "127.0.0.1:6379".into(),
            },
            "connected",
        );
        p.publish(
            Availability::Down {
                error: "x".into(),
                kind: crate::FailureKind::Other,
                retry_in: Duration::from_millis(50),
            },
            "x",
        );
        let a = sub.recv().await.unwrap();
        let b = sub.recv().await.unwrap();
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_eq!(b.state, sub.current());
        assert_eq!(a.state.name(), "up");
    }

    #[tokio::test]
    async fn slow_subscriber_sees_a_lag_signal() {
        let p = AvailabilityPublisher::new(Availability::Stopped);
        let mut sub = p.subscribe();
        for i in 0..(EVENT_CAPACITY as u32 + 10) {
            p.publish(Availability::Connecting { attempt: i }, "x");
        }
        assert_eq!(sub.recv().await, Err(EventsError::Lagged { missed: 10 }));
        assert_eq!(sub.recv().await.unwrap().seq, 11);
    }

    #[test]
    fn json_shape() {
        let s = serde_json::to_value(Availability::Down {
            error: "connection refused".into(),
            kind: crate::FailureKind::Refused,
            retry_in: Duration::from_millis(200),
        })
        .unwrap();
        assert_eq!(
            s,
            serde_json::json!({"state": "down", "error": "connection refused", "kind": "refused", "retry_in_ms": 200})
        );
    }
}
