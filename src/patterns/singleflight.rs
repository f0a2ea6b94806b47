//! Single-flight inside the process: concurrent loads of one key share one run. The first caller
//! starts a flight (the load runs in a task of its own, so no caller's future drives it) and
//! every caller, the first included, waits for its one outcome. A caller that gives up only drops
//! its receiver; the flight goes on for the others. The flight leaves the map *before* it
//! publishes its outcome, so a call that starts after a failed load's error was delivered runs a
//! new load instead of receiving the old error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::error::Error;

/// What a flight delivers: the value's JSON bytes (typed by each waiter itself) or the error.
pub(crate) type Outcome = Result<Arc<[u8]>, Error>;

type Slot = watch::Receiver<Option<Outcome>>;

/// The flights running now, by key.
#[derive(Default)]
pub(crate) struct Flights {
    running: Mutex<HashMap<String, Slot>>,
}

/// A caller's place in a flight.
pub(crate) enum Joined {
    /// No flight was running: this caller must start the load and [`finish`](Flight::finish) it.
    Leader(Flight, Waiter),
    /// A flight was running: wait for its outcome.
    Follower(Waiter),
}

/// The right (and duty) to publish a flight's outcome. Dropped unfinished (the load's task was
/// cancelled), it still leaves the map, and its waiters see the flight closed.
pub(crate) struct Flight {
    flights: Arc<Flights>,
    key: String,
    tx: watch::Sender<Option<Outcome>>,
    left: bool,
}

/// Waits for one flight's outcome.
pub(crate) struct Waiter(Slot);

impl Flights {
    /// Joins the flight for `key`, or opens one when none is running.
    pub(crate) fn join(self: &Arc<Self>, key: &str) -> Joined {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flight) = running.get(key) {
            return Joined::Follower(Waiter(flight.clone()));
        }
        let (tx, rx) = watch::channel(None);
        running.insert(key.to_string(), rx.clone());
        let flight = Flight {
            flights: self.clone(),
            key: key.to_string(),
            tx,
            left: false,
        };
        Joined::Leader(flight, Waiter(rx))
    }

    /// Flights running now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.running.lock().map(|m| m.len()).unwrap_or(0)
    }
}

impl Flight {
    /// Leaves the map, then hands `outcome` to every waiter.
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.leave();
        self.tx.send_replace(Some(outcome));
    }

    fn leave(&mut self) {
        if !self.left {
            self.left = true;
            let mut running = self
                .flights
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            running.remove(&self.key);
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.leave();
    }
}

impl Waiter {
    /// The flight's outcome, or `None` if the flight ended without one (its task was cancelled).
    pub(crate) async fn outcome(mut self) -> Option<Outcome> {
        let got = self.0.wait_for(Option::is_some).await.ok()?;
        got.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leader_then_a_fresh_flight_after_finishing() {
        let flights = Arc::new(Flights::default());
        let Joined::Leader(flight, first) = flights.join("k") else {
            panic!("the first caller leads");
        };
        let Joined::Follower(second) = flights.join("k") else {
            panic!("the second caller follows");
        };
        assert_eq!(flights.len(), 1);
        flight.finish(Ok(Arc::from(&b"1"[..])));
        assert_eq!(flights.len(), 0, "left the map before publishing");
        for w in [first, second] {
            assert_eq!(w.outcome().await.unwrap().unwrap().as_ref(), b"1");
        }
        assert!(matches!(flights.join("k"), Joined::Leader(..)));
    }

    #[tokio::test]
    async fn a_dropped_flight_closes_its_waiters() {
        let flights = Arc::new(Flights::default());
        let Joined::Leader(flight, waiter) = flights.join("k") else {
            panic!("leads");
        };
        drop(flight);
        assert!(waiter.outcome().await.is_none());
        assert_eq!(flights.len(), 0);
    }
}
