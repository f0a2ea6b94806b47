//! What the lanes together say: the one availability state published for all of them. With
//! one lane this is that connection's state. With more: `Up` while every lane serves or is
//! making its first connection (named after the first serving lane), `Degraded` with "k of n
//! lanes down" while some were lost and the others serve, and only when none serves does the
//! state leave serving (`NotReady` for a connected server that cannot serve; otherwise the
//! `Down` or `Connecting` already published stands). When the first lane comes back after an
//! outage the others' failures are forgotten and they reconnect at once: the server answers
//! again, so the outage is over for every lane, as it is with one.

use super::actor::{Class, Condition, SupervisorState};
use crate::availability::Availability;
use crate::lane::Lane;

/// The state, its class and the lanes it is about (the serving ones; or the connected one that
/// cannot serve yet); `None` with no lane connected.
pub(super) fn aggregate(state: &SupervisorState) -> Option<(Availability, Class, Vec<Lane>)> {
    let n = state.lanes.len();
    let serving: Vec<_> = state.lanes.iter().filter_map(|s| s.serving()).collect();
    if serving.is_empty() {
        // A connected server that cannot serve is not serving, storm or not (every lane
        // reaches the same server: the first one says why).
        let c = state.lanes.iter().find_map(|s| s.connected())?;
        let Condition::NotReady(n) = &c.condition else {
            return None;
        };
        let not_ready = Availability::NotReady {
            reason: n.message.clone(),
            kind: n.kind,
        };
        return Some((not_ready, Class::NotReady(n.kind), vec![c.lane.clone()]));
    }
    let lanes: Vec<Lane> = serving.iter().map(|c| c.lane.clone()).collect();
    // Down: lost while another lane served. A lane still making its first connection (or its
    // first since the server came back) is not down.
    let down = state
        .lanes
        .iter()
        .filter(|s| s.serving().is_none() && s.last_failure.is_some())
        .count();
    let degraded = |reason: String| Availability::Degraded { reason };
    let (availability, class) = if let Some(storm) = &state.storm {
        (degraded(storm.clone()), Class::Storm)
    } else if down > 0 {
        let why = state
            .lanes
            .iter()
            .filter(|s| s.serving().is_none() && s.last_failure.is_some())
            .find_map(|s| match s.connected().map(|c| &c.condition) {
                Some(Condition::NotReady(n)) => Some(n.message.clone()),
                _ => s.last_failure.clone(),
            })
            .unwrap_or_else(|| "connecting".into());
        (
            degraded(format!("{down} of {n} lanes down: {why}")),
            Class::LanesDown(down),
        )
    } else if let Some(why) = serving.iter().find_map(|c| match &c.condition {
        Condition::Slow(why) => Some(why.clone()),
        _ => None,
    }) {
        (degraded(why), Class::Slow)
    } else if let Some(why) = serving.iter().find_map(|c| match &c.condition {
        Condition::Failing(why) => Some(why.clone()),
        _ => None,
    }) {
        (degraded(why), Class::Failing)
    } else {
        let first = serving[0];
        let up = Availability::Up {
            server_version: first.version.clone(),
            role: first.role.clone(),
            address: first.address.to_string(),
        };
        (up, Class::Up)
    };
    Some((availability, class, lanes))
}
