//! The published route: where callers' commands go right now — the serving connections'
//! [`Lane`]s ([`Lanes::pick`] takes the open one with the fewest commands outstanding), or why
//! there are none. The supervisor is the one writer ([`RouteWriter`]); every command reads
//! it ([`Route::load`], lock-free) and the health actor finds its probe target in it.
//!
//! The route is not a second, hand-synchronised copy of [`Availability`]: the supervisor
//! publishes an availability state and the route is *derived* from it ([`RouteState::derive`])
//! plus the lane it is about, in the same step.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::{ArcSwap, Guard};
use tokio::sync::watch;

use crate::availability::Availability;
use crate::error::FailureKind;
use crate::lane::Lane;

/// The lanes that serve now (at least one), in lane order.
#[derive(Clone)]
pub(crate) struct Lanes(Arc<[Lane]>);

impl Lanes {
    /// `None` for no lanes.
    pub(crate) fn of(lanes: &[Lane]) -> Option<Lanes> {
        (!lanes.is_empty()).then(|| Lanes(Arc::from(lanes)))
    }

    /// Every serving lane.
    pub(crate) fn all(&self) -> &[Lane] {
        &self.0
    }

    /// The lane for a command, other than `avoid`. One lane: that lane, nothing counted. More:
    /// the open lane with the fewest commands outstanding (ties to the lowest), where a lane
    /// delivering a big reply counts as full — so small commands keep off it — and a command
    /// whose last reply was big (`bulk`) goes to the bulk lane (the last serving one) while it
    /// is open, so big replies share one lane instead of spreading over all of them.
    #[inline]
    pub(crate) fn pick(&self, avoid: Option<ractor::ActorId>, bulk: bool) -> Option<&Lane> {
        let usable = |l: &&Lane| Some(l.id()) != avoid && l.is_open();
        match &*self.0 {
            [only] => Some(only).filter(usable),
            [.., last] if bulk && usable(&last) => Some(last),
            many => fewest(many, avoid),
        }
    }
}

/// A lane delivering a big reply counts as this many commands outstanding.
const HEAVY: usize = 1 << 20;

/// The open lane of `lanes` with the fewest commands outstanding (big replies weighing
/// [`HEAVY`]), other than `avoid`.
fn fewest(lanes: &[Lane], avoid: Option<ractor::ActorId>) -> Option<&Lane> {
    lanes
        .iter()
        .filter(|l| Some(l.id()) != avoid && l.is_open())
        .min_by_key(|l| l.outstanding() + l.heavy() * HEAVY)
}

/// Where commands go.
#[derive(Clone)]
pub(crate) enum RouteState {
    /// `Up` or `Degraded`: write on one of these lanes.
    Serving(Lanes),
    /// `Connecting`, `Down` or `NotReady`: wait (per the offline policy) until the deadline.
    /// `lane` is the connected server that cannot serve yet (the health actor keeps checking it).
    Waiting {
        lane: Option<Lane>,
        /// When commands last could be served (or when the supervisor started).
        since: SystemTime,
        reason: Arc<str>,
        kind: FailureKind,
    },
    /// `GaveUp`: fail at once, for good.
    Closed {
        since: SystemTime,
        reason: Arc<str>,
        kind: FailureKind,
    },
    /// Shut down: fail with `ShuttingDown`.
    Stopped,
}

impl RouteState {
    /// The route for availability `state` (about `lanes`: the serving ones, or the connected
    /// one that cannot serve yet), given the route it replaces (which keeps `since` and the
    /// last failure's reason across non-serving states).
    pub(crate) fn derive(state: &Availability, lanes: &[Lane], previous: &RouteState) -> Self {
        let lane = lanes.first();
        let (since, last) = match previous.why() {
            Some((since, reason, kind)) => (since, Some((reason.clone(), kind))),
            None => (SystemTime::now(), None),
        };
        let waiting = |lane: Option<&Lane>, reason: Arc<str>, kind| RouteState::Waiting {
            lane: lane.cloned(),
            since,
            reason,
            kind,
        };
        match state {
            Availability::Up { .. } | Availability::Degraded { .. } => match Lanes::of(lanes) {
                Some(lanes) => RouteState::Serving(lanes),
                None => waiting(None, Arc::from("no connection"), FailureKind::NotConnected),
            },
            Availability::NotReady { reason, kind } => {
                waiting(lane, Arc::from(reason.as_str()), *kind)
            }
            Availability::Connecting { .. } => {
                let (reason, kind) =
                    last.unwrap_or_else(|| (Arc::from("connecting"), FailureKind::NotConnected));
                waiting(None, reason, kind)
            }
            Availability::Down { error, kind, .. } => {
                waiting(None, Arc::from(error.as_str()), *kind)
            }
            Availability::GaveUp { .. } => RouteState::Closed {
                since,
                reason: Arc::from(state.to_string()),
                kind: last.map_or(FailureKind::Other, |(_, kind)| kind),
            },
            Availability::Stopped => RouteState::Stopped,
        }
    }

    /// Since when, and why, commands cannot be served (`Waiting` and `Closed` only).
    pub(crate) fn why(&self) -> Option<(SystemTime, &Arc<str>, FailureKind)> {
        match self {
            RouteState::Waiting {
                since,
                reason,
                kind,
                ..
            }
            | RouteState::Closed {
                since,
                reason,
                kind,
            } => Some((*since, reason, *kind)),
            RouteState::Serving(_) | RouteState::Stopped => None,
        }
    }

    /// The connections to probe: the serving lanes, or a connected server that cannot serve yet.
    pub(crate) fn probe_targets(&self) -> &[Lane] {
        match self {
            RouteState::Serving(lanes) => lanes.all(),
            RouteState::Waiting { lane, .. } => lane.as_slice(),
            RouteState::Closed { .. } | RouteState::Stopped => &[],
        }
    }
}

/// One publication of the route.
pub(crate) struct Published {
    /// Counts publications: a waiter that saw version `v` knows a later one is news.
    pub(crate) version: u64,
    pub(crate) state: RouteState,
}

struct Shared {
    current: ArcSwap<Published>,
    /// Carries the version of every publication, to wake waiters.
    changed: watch::Sender<u64>,
}

/// The reading side of the route: cheap to clone, lock-free to read.
#[derive(Clone)]
pub(crate) struct Route {
    shared: Arc<Shared>,
}

impl Route {
    /// The current route.
    #[inline]
    pub(crate) fn load(&self) -> Guard<Arc<Published>> {
        self.shared.current.load()
    }

    /// A receiver woken by every publication.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }
}

/// The writing side of the route, held by the supervisor only.
pub(crate) struct RouteWriter {
    shared: Arc<Shared>,
}

impl RouteWriter {
    /// A route that starts `Waiting` ("not connected yet"), and its reader.
    pub(crate) fn new() -> (RouteWriter, Route) {
        let state = RouteState::Waiting {
            lane: None,
            since: SystemTime::now(),
            reason: Arc::from("not connected yet"),
            kind: FailureKind::NotConnected,
        };
        let shared = Arc::new(Shared {
            current: ArcSwap::from_pointee(Published { version: 0, state }),
            changed: watch::channel(0).0,
        });
        (
            RouteWriter {
                shared: shared.clone(),
            },
            Route { shared },
        )
    }

    /// The current route (for deriving the next one).
    pub(crate) fn current(&self) -> Guard<Arc<Published>> {
        self.shared.current.load()
    }

    /// Publishes `state`; once the route is `Stopped` it stays so (shutdown wins every race).
    pub(crate) fn set(&self, state: RouteState) {
        let mut version = 0;
        self.shared.current.rcu(|old| {
            version = old.version.wrapping_add(1);
            if matches!(old.state, RouteState::Stopped) {
                return old.clone();
            }
            Arc::new(Published {
                version,
                state: state.clone(),
            })
        });
        self.shared.changed.send_replace(version);
    }
}
