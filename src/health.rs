//! The health actor: judges the live connection by its own behaviour, never by callers'
//! deadlines (DESIGN.md promise 10).
//!
//! On a drift-free timer it sends `PING` (with its own timeout) to the connection in the route
//! every probe interval and reads `INFO` every info interval. Each probe ends in a verdict,
//! reported to the supervisor:
//! - answered within the slow threshold: healthy; answered slower: slow (`Degraded`);
//! - refused with `LOADING`, `MASTERDOWN` or `BUSY`: the server cannot serve yet (`NotReady`);
//! - no answer within the probe timeout **while other replies kept arriving** on the connection:
//!   the connection is busy, not silent — slow, not a failure;
//! - no answer, and *nothing at all* came back on the connection meanwhile: a failure.
//!   [`Config::health_failures`](crate::Config::health_failures) (K) failures in a row make the
//!   supervisor replace the connection, so a hung or half-open connection leaves `Up` within
//!   `probe_interval × K + probe_timeout`, while a server stall shorter than that replaces
//!   nothing.
//!
//! The health actor is the one writer of the probe metrics, `redis_up`, the server gauges and
//! the `/health/redis` snapshot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, DerivedActorRef};
use redis::Value;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::Config;
use crate::error::{ConnectionFailure, FailureKind};
use crate::lane::{ExecError, Lane, NotReady};
use crate::metrics::{HealthMetrics, ProbeOutcome};
use crate::request::Request;
use crate::route::Route;

pub use crate::info::ServerStats;

/// What `/health/redis` reports besides the availability state.
#[derive(Debug, Clone, Default)]
pub(crate) struct HealthSnapshot {
    /// Round trip of the last answered probe; `None` while disconnected.
    pub(crate) ping: Option<Duration>,
    /// The last INFO read (at connect or by the periodic probe).
    pub(crate) stats: Option<ServerStats>,
    /// Why the connection was last lost, its kind, and when.
    pub(crate) last_error: Option<(String, FailureKind, SystemTime)>,
}

/// The `/health/redis` snapshot: written only by the health actor, read by anyone.
#[derive(Debug, Clone, Default)]
pub(crate) struct HealthBoard(Arc<Mutex<HealthSnapshot>>);

impl HealthBoard {
    /// A copy of the current snapshot.
    pub(crate) fn snapshot(&self) -> HealthSnapshot {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut HealthSnapshot)) {
        if let Ok(mut s) = self.0.lock() {
            f(&mut s);
        }
    }
}

/// A probe's verdict on the connection it probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Answered within the slow threshold.
    Healthy,
    /// Answered slower than the slow threshold, or late behind other replies: why.
    Slow(String),
    /// Refused: the server cannot serve yet.
    NotReady(NotReady),
    /// No answer and nothing else came back either; fewer than K in a row so far.
    Failing(String),
    /// K probes in a row got no answer: replace the connection.
    Unhealthy(String),
    /// With Sentinel, INFO says the server is a replica now (demoted by a failover the watcher
    /// has not reported): replace the connection with one to the master.
    NotMaster(String),
}

/// What the health actor tells its supervisor.
#[derive(Debug)]
pub(crate) struct HealthReport {
    /// The connection probed.
    pub(crate) id: ActorId,
    pub(crate) verdict: Verdict,
}

/// Messages of the health actor.
pub(crate) enum HealthMsg {
    /// Timer: probe the connection.
    Probe,
    /// Timer: read INFO.
    Info,
    /// From the supervisor: connection `id` came up with this INFO.
    Connected { id: ActorId, stats: ServerStats },
    /// From the supervisor: the connection was lost.
    Lost(ConnectionFailure),
}

/// Start-up arguments (cloned when the supervisor restarts a failed health actor).
#[derive(Clone)]
pub(crate) struct HealthArgs {
    pub(crate) config: Arc<Config>,
    pub(crate) route: Route,
    pub(crate) metrics: Arc<HealthMetrics>,
    pub(crate) board: HealthBoard,
    /// Where verdicts go (the supervisor, through a port of this actor's own type).
    pub(crate) report: DerivedActorRef<HealthReport>,
}

/// State of the health actor.
pub(crate) struct HealthState {
    args: HealthArgs,
    timers: Vec<JoinHandle<()>>,
    /// Consecutive probes without an answer, per connection probed last time.
    failures: HashMap<ActorId, u32>,
    info: Request,
}

/// The health actor.
pub(crate) struct HealthActor;

/// A drift-free ticker sending `msg()` to `actor` every `period` until the actor is gone.
fn ticker(actor: ActorRef<HealthMsg>, period: Duration, msg: fn() -> HealthMsg) -> JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now()
            .checked_add(period)
            .unwrap_or_else(Instant::now);
        let mut interval = tokio::time::interval_at(start, period);
        // A slow probe must not cause a burst of catch-up probes.
        interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            if actor.cast(msg()).is_err() {
                break;
            }
        }
    })
}

/// How one probe request ended.
enum Probe {
    Answered(Value),
    Refused(NotReady),
    /// No answer within the timeout; `busy` when other replies arrived meanwhile.
    NoAnswer {
        reason: String,
        busy: bool,
    },
}

/// Sends `request` on `lane` and waits for its answer until `timeout`.
async fn probe(lane: &Lane, request: &Request, timeout: Duration) -> Probe {
    if !lane.is_open() {
        return Probe::NoAnswer {
            reason: "connection closing".into(),
            busy: false,
        };
    }
    lane.listen();
    let mut lane_ = lane.clone();
    let outcome = tokio::time::timeout(timeout, lane_.run(request, false)).await;
    let heard = lane.heard();
    match outcome {
        Ok(Ok(value)) => Probe::Answered(value),
        // Any other reply proves the server is there (e.g. NOPERM for an ACL user without +ping).
        Ok(Err(ExecError::Reply(_))) => Probe::Answered(Value::Nil),
        Ok(Err(ExecError::Refused(not_ready))) => Probe::Refused(not_ready),
        Ok(Err(ExecError::Transport(reason))) => Probe::NoAnswer {
            reason,
            busy: false,
        },
        Err(_) => Probe::NoAnswer {
            reason: format!("no reply within {} ms", timeout.as_millis()),
            busy: heard,
        },
    }
}

impl HealthState {
    /// The connections to probe now (every serving lane, or the one that cannot serve yet);
    /// failure counts of connections no longer there are forgotten.
    fn targets(&mut self) -> Vec<Lane> {
        let lanes = self.args.route.load().state.probe_targets().to_vec();
        self.failures
            .retain(|id, _| lanes.iter().any(|l| l.id() == *id));
        lanes
    }

    /// The first target, for INFO (every lane reaches the same server).
    fn target(&mut self) -> Option<Lane> {
        self.targets().into_iter().next()
    }

    /// One `PING` probe on every lane at once (so N lanes keep the detection bound), each
    /// recorded and judged.
    async fn probe_all(&mut self, lanes: Vec<Lane>) -> Vec<(ActorId, Verdict)> {
        let timeout = self.args.config.health_timeout();
        let probes: Vec<_> = lanes
            .into_iter()
            .map(|lane| {
                tokio::spawn(async move {
                    let ping = Request::raw(redis::cmd("PING"));
                    let start = Instant::now();
                    let outcome = probe(&lane, &ping, timeout).await;
                    (lane.id(), outcome, start.elapsed())
                })
            })
            .collect();
        let mut verdicts = Vec::with_capacity(probes.len());
        for p in probes {
            // A probe task cannot panic; a cancelled one (runtime shutting down) says nothing.
            if let Ok((id, outcome, took)) = p.await {
                verdicts.push((id, self.judge(id, outcome, took)));
            }
        }
        verdicts
    }

    /// Records and judges one probe of connection `id`.
    fn judge(&mut self, id: ActorId, outcome: Probe, took: Duration) -> Verdict {
        let config = self.args.config.clone();
        let metrics = self.args.metrics.clone();
        let answered = !matches!(outcome, Probe::NoAnswer { busy: false, .. });
        metrics.set_up(answered);
        let verdict = match outcome {
            Probe::Answered(_) if took > config.health_slow() => Verdict::Slow(format!(
                "PING slower than {} ms",
                config.health_slow().as_millis()
            )),
            Probe::Answered(_) => Verdict::Healthy,
            Probe::Refused(not_ready) => Verdict::NotReady(not_ready),
            Probe::NoAnswer { reason, busy: true } => Verdict::Slow(format!(
                "PING: {reason}, behind other replies (connection busy)"
            )),
            Probe::NoAnswer {
                reason,
                busy: false,
            } => self.failed(id, reason),
        };
        if !matches!(verdict, Verdict::Failing(_) | Verdict::Unhealthy(_)) {
            self.failures.remove(&id);
        }
        let (outcome, round_trip) = match &verdict {
            Verdict::Healthy => (ProbeOutcome::Ok, Some(took)),
            Verdict::Slow(_) => (ProbeOutcome::Slow, Some(took)),
            Verdict::NotReady(_) => (ProbeOutcome::NotReady, Some(took)),
            // (`NotMaster` comes from INFO, never from a probe.)
            Verdict::Failing(_) | Verdict::Unhealthy(_) | Verdict::NotMaster(_) => {
                (ProbeOutcome::Failed, None)
            }
        };
        metrics.probe(outcome, round_trip);
        if let Some(took) = round_trip {
            self.args.board.update(|s| s.ping = Some(took));
        }
        verdict
    }

    /// Counts one probe of `id` without an answer; K in a row is the verdict "unhealthy".
    fn failed(&mut self, id: ActorId, reason: String) -> Verdict {
        let failures = self.failures.entry(id).or_insert(0);
        *failures = failures.saturating_add(1);
        let k = self.args.config.health_failures();
        if *failures >= k {
            self.failures.remove(&id);
            Verdict::Unhealthy(format!("{k} consecutive health probes failed ({reason})"))
        } else {
            Verdict::Failing(format!("health probe failed: {reason}"))
        }
    }

    /// Reads INFO into the server gauges and the snapshot.
    async fn read_info(&self, lane: &Lane) {
        let timeout = self.args.config.health_timeout();
        let text = match probe(lane, &self.info, timeout).await {
            Probe::Answered(value) => value
                .extract_error()
                .map_err(|e| e.to_string())
                .and_then(|v| redis::from_redis_value::<String>(v).map_err(|e| e.to_string())),
            Probe::Refused(n) => Err(n.message),
            Probe::NoAnswer { reason, .. } => Err(reason),
        };
        match text {
            Ok(text) => {
                let stats = ServerStats::parse(&text);
                let demoted = !self.args.config.sentinels().is_empty()
                    && !stats.role.is_empty()
                    && stats.role != "master";
                if demoted {
                    let why = format!("INFO says the server is a {} now", stats.role);
                    let report = HealthReport {
                        id: lane.id(),
                        verdict: Verdict::NotMaster(why),
                    };
                    // A gone supervisor is stopping this actor anyway.
                    let _ = self.args.report.send_message(report);
                }
                self.record_stats(stats);
            }
            // The PING probes judge the connection; a failed INFO only leaves the gauges as
            // they were.
            Err(reason) => tracing::debug!(reason = %reason, "INFO probe failed"),
        }
    }

    fn record_stats(&self, stats: ServerStats) {
        self.args.metrics.set_server(&stats);
        self.args.board.update(|s| s.stats = Some(stats));
    }
}

impl Actor for HealthActor {
    type Msg = HealthMsg;
    type State = HealthState;
    type Arguments = HealthArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: HealthArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(HealthState {
            args,
            timers: Vec::new(),
            failures: HashMap::new(),
            info: Request::raw(redis::cmd("INFO")),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let config = &state.args.config;
        let (probe_every, info_every) = (config.health_interval(), config.info_interval());
        state
            .timers
            .push(ticker(myself.clone(), probe_every, || HealthMsg::Probe));
        state
            .timers
            .push(ticker(myself, info_every, || HealthMsg::Info));
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for t in state.timers.drain(..) {
            t.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HealthMsg::Probe => {
                // Nothing to probe while down: the supervisor is already reconnecting.
                let lanes = state.targets();
                for (id, verdict) in state.probe_all(lanes).await {
                    // A gone supervisor is stopping this actor anyway.
                    let _ = state.args.report.send_message(HealthReport { id, verdict });
                }
            }
            HealthMsg::Info => {
                if let Some(lane) = state.target() {
                    state.read_info(&lane).await;
                }
            }
            HealthMsg::Connected { id, stats } => {
                state.failures.remove(&id);
                state.record_stats(stats);
            }
            HealthMsg::Lost(failure) => {
                state.args.metrics.set_up(false);
                state.args.board.update(|s| {
                    s.ping = None;
                    s.last_error = Some((failure.message, failure.kind, SystemTime::now()));
                });
            }
        }
        Ok(())
    }
}
