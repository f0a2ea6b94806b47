//! Helpers shared by `hardening` and `readiness` (and others): an admin connection without
//! a reply timeout (for stalls and long scripts), a server stall by a Lua busy loop, waiting on
//! the availability watch with a deadline, reading one sample of the Prometheus text, and the
//! check that no caller was ever handed a "cannot serve yet" refusal.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis_supervisor::testing::RedisServer;
use redis_supervisor::{Availability, AvailabilityEvent, Error, EventsError, Supervisor};
use tokio::task::JoinHandle;

/// A raw redis-rs connection to `server` with no response timeout (redis-rs's default of 500 ms
/// would cut a stall or a `DEBUG RELOAD` short).
pub async fn admin_unbounded(server: &RedisServer) -> MultiplexedConnection {
    super::clients::admin_at(format!("{}:{}", server.host(), server.port())).await
}

/// Waits (up to `within`) until the supervisor's current state satisfies `pred`; returns it.
/// Panics with the last state seen when it does not happen in time.
pub async fn wait_state(
    sup: &Supervisor,
    within: Duration,
    what: &str,
    mut pred: impl FnMut(&Availability) -> bool,
) -> Availability {
    let mut rx = sup.watch();
    match tokio::time::timeout(within, rx.wait_for(|a| pred(a))).await {
        Ok(Ok(state)) => state.clone(),
        _ => panic!(
            "state never became {what} within {within:?}; it is {:?}",
            sup.availability()
        ),
    }
}

/// The value of the sample `name{labels...}` in Prometheus text `rendered`, matching the given
/// labels (others may be present); 0 when there is no such sample.
pub fn sample(rendered: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    rendered
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            (metric == name).then_some((rest, value))
        })
        .filter(|(rest, _)| {
            labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .sum()
}

/// The server error codes that mean "cannot serve yet": callers must never be handed them.
pub const REFUSALS: [&str; 3] = ["LOADING", "MASTERDOWN", "BUSY"];

/// Panics if `result` is a server refusal that should have been waited out.
pub fn assert_not_refused<T: std::fmt::Debug>(what: &str, result: &Result<T, Error>) {
    if let Err(e) = result {
        if let Some(code) = e.server_code() {
            assert!(
                !REFUSALS.contains(&code),
                "{what}: a caller was handed the server's refusal {code}: {e:?}"
            );
        }
    }
}

/// The names of the states of `events`, in order (for failure messages).
pub fn names(events: &[AvailabilityEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.state.name()).collect()
}

/// Records every availability event of a supervisor from its creation on, in a task of its own.
pub struct EventLog {
    seen: Arc<Mutex<Vec<AvailabilityEvent>>>,
    lagged: Arc<Mutex<Option<u64>>>,
    task: JoinHandle<()>,
}

impl EventLog {
    /// Subscribes to `sup` now and records from then on.
    pub fn start(sup: &Supervisor) -> EventLog {
        let mut events = sup.subscribe();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let lagged = Arc::new(Mutex::new(None));
        let (s, l) = (seen.clone(), lagged.clone());
        let task = tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e) => s.lock().unwrap().push(e),
                    Err(EventsError::Lagged { missed }) => *l.lock().unwrap() = Some(missed),
                    Err(EventsError::Closed) => return,
                }
            }
        });
        EventLog { seen, lagged, task }
    }

    /// The events recorded so far; panics if the recorder lagged (events would be missing).
    pub fn events(&self) -> Vec<AvailabilityEvent> {
        if let Some(missed) = *self.lagged.lock().unwrap() {
            panic!("the event log lagged by {missed} events");
        }
        self.seen.lock().unwrap().clone()
    }
}

impl EventLog {
    /// Waits (up to `within`, polling) until an event satisfying `pred` has been recorded;
    /// returns every event recorded by then.
    pub async fn wait_for(
        &self,
        within: Duration,
        mut pred: impl FnMut(&Availability) -> bool,
    ) -> Vec<AvailabilityEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let events = self.events();
            if events.iter().any(|e| pred(&e.state)) {
                return events;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no such event within {within:?}: {events:#?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}
