//! The health actor: judges the live connection by its own behaviour, never by callers'
//! deadlines (ARCHITECTURE.md promise 10).
//!
//! On a drift-free timer it sends `PING` (with its own timeout) to the connection in the route
//! every probe interval and reads `INFO` every info interval. Each probe ends in a verdict,
//! reported to the supervisor:
//! - answered within the slow threshold: healthy; answered slower: slow (`Degraded`);
//! - refused with `LOADING`, `MASTERDOWN` or `BUSY`: the server cannot serve yet (`NotReady`);
//! - answered with a reply that is not its `PING`'s echo: the connection lost its reply order
//!   (callers would get each other's replies); it is replaced at once;
//! - on a cluster, see `health/cluster.rs`: every node probed on the connection commands use,
//!   and no primary answering is `NotReady` with `ClusterDown`;
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
use std::sync::atomic::{AtomicU64, Ordering};
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
use crate::topology::Topology;

pub use crate::info::ServerStats;

mod cluster;

/// What `/health/redis` reports besides the availability state.
#[derive(Debug, Clone, Default)]
pub(crate) struct HealthSnapshot {
    /// Round trip of the last answered probe; `None` while disconnected.
    pub(crate) ping: Option<Duration>,
    /// The last INFO read (at connect or by the periodic probe).
    pub(crate) stats: Option<ServerStats>,
    /// Why the connection was last lost, its kind, and when.
    pub(crate) last_error: Option<(String, FailureKind, SystemTime)>,
    /// On a cluster: every node of the last probe, primaries first.
    pub(crate) cluster: Vec<NodeHealth>,
}

/// One cluster node as the last probe found it (for `/health/redis`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NodeHealth {
    /// `host:port`.
    pub(crate) node: String,
    /// `primary` or `replica`.
    pub(crate) role: &'static str,
    /// The slots its shard serves (`0-5460,10923`).
    pub(crate) slots: String,
    /// Whether it answered the probe.
    pub(crate) up: bool,
    /// Its probe's round trip, when it answered.
    pub(crate) ping: Option<Duration>,
    /// Why not, when it did not.
    pub(crate) error: Option<String>,
}

impl NodeHealth {
    /// How many slots `slots` names.
    pub(crate) fn slot_count(&self) -> u32 {
        self.slots
            .split(',')
            .filter_map(|r| {
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                let (a, b) = (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?);
                Some(b.saturating_sub(a) + 1)
            })
            .sum()
    }
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
    /// On a cluster: some slots are not served (their primary does not answer, or they have
    /// none), or a replica that reads use does not answer; the rest serves. Why, naming the
    /// slots and nodes.
    Partial(String),
    /// On a cluster: its shape changed since the last probe (a failover, slots moved, a node
    /// joined or left). A notice, not a judgement: each shard as `primary slots [replicas]`.
    Reshaped(Vec<String>),
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
    pub(crate) topology: Topology,
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
    /// On a cluster: its shape at the last probe that read it.
    shape: Option<Vec<String>>,
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
    /// Answered with an error reply (its code): the server is there.
    Denied(String),
    /// Answered with a reply that is not the probe's own: the connection has lost the order of
    /// its replies (a command answered with another's reply), so no reply on it can be trusted.
    Misordered,
    Refused(NotReady),
    /// No answer within the timeout; `busy` when other replies arrived meanwhile.
    NoAnswer {
        reason: String,
        busy: bool,
    },
}

/// A `PING` whose reply names this probe alone: `PING redis-supervisor:probe:<n>`, echoed back
/// by the server.
fn ping_token() -> (redis::Cmd, Vec<u8>) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let token = format!(
        "redis-supervisor:probe:{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut ping = redis::cmd("PING");
    ping.arg(&token);
    (ping, token.into_bytes())
}

/// [`ping_token`] as a request on a lane.
fn ping_request() -> (Request, Vec<u8>) {
    let (ping, token) = ping_token();
    (Request::raw(ping), token)
}

/// Whether `outcome` is the answer to the `PING` that echoes `token`: the token back, or a
/// refusal that `PING` itself can get (`NOPERM` for a user without it: an answer, though not a
/// check of the order). Anything else came for another command.
fn own_reply(outcome: Probe, token: &[u8]) -> Probe {
    match outcome {
        Probe::Answered(Value::BulkString(echo)) if echo == token => Probe::Answered(Value::Okay),
        Probe::Answered(Value::SimpleString(echo)) if echo.as_bytes() == token => {
            Probe::Answered(Value::Okay)
        }
        Probe::Denied(code) if code == "NOPERM" => Probe::Answered(Value::Nil),
        Probe::Answered(Value::ServerError(e)) if e.code() == "NOPERM" => {
            Probe::Answered(Value::Nil)
        }
        Probe::Answered(_) | Probe::Denied(_) => Probe::Misordered,
        other => other,
    }
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
    let outcome = match lane.cluster() {
        None => {
            let mut lease = lane.lease();
            tokio::time::timeout(timeout, lease.run(request, false)).await
        }
        // A cluster lane routes by node: what a probe reads (INFO) any primary tells.
        Some(router) => tokio::time::timeout(timeout, on_any_primary(&router, request)).await,
    };
    let heard = lane.heard();
    match outcome {
        Ok(Ok(value)) => Probe::Answered(value),
        // Any other reply proves the server is there (e.g. NOPERM for an ACL user without +ping);
        // whether it is this probe's own is for the caller to judge.
        Ok(Err(ExecError::Reply(e))) => Probe::Denied(e.code().unwrap_or("ERR").to_string()),
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

/// `request` on the cluster connection to some primary, classified as on a lane.
async fn on_any_primary(
    router: &crate::topology::cluster::Router,
    request: &Request,
) -> Result<Value, ExecError> {
    let node = router
        .any_primary()
        .ok_or_else(|| ExecError::Transport("the cluster names no primary".into()))?;
    let mut conn = router
        .conn(&node)
        .await
        .map_err(|e| ExecError::Transport(crate::error::describe_connection_error(&e).message))?;
    match request.send(&mut conn, false).await {
        Err(e) if crate::error::classify(&e) == crate::error::ErrorSide::Transport => Err(
            ExecError::Transport(crate::error::describe_connection_error(&e).message),
        ),
        Ok(Value::ServerError(e)) => Err(ExecError::Reply(e.into())),
        other => other.map_err(ExecError::Reply),
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
                let config = self.args.config.clone();
                tokio::spawn(async move {
                    let start = Instant::now();
                    if lane.is_cluster() {
                        let (outcome, view) = cluster::probe(&lane, &config, timeout).await;
                        return (lane.id(), outcome, start.elapsed(), view);
                    }
                    let (ping, token) = ping_request();
                    let outcome = own_reply(probe(&lane, &ping, timeout).await, &token);
                    (lane.id(), outcome, start.elapsed(), None)
                })
            })
            .collect();
        let mut verdicts = Vec::with_capacity(probes.len());
        for p in probes {
            // A probe task cannot panic; a cancelled one (runtime shutting down) says nothing.
            let Ok((id, outcome, took, view)) = p.await else {
                continue;
            };
            let Some(view) = view else {
                verdicts.push((id, self.judge(id, outcome, took)));
                continue;
            };
            // A cluster: its shape first (a change is a notice), then its verdict.
            let shape = view.shape();
            if self.shape.as_ref().is_some_and(|old| *old != shape) {
                verdicts.push((id, Verdict::Reshaped(shape.clone())));
            }
            self.shape = Some(shape);
            let probed: Vec<(&str, bool, Option<Duration>)> = view
                .nodes
                .iter()
                .map(|n| (n.node.as_str(), n.up, n.ping))
                .collect();
            self.args.metrics.set_cluster(&probed, view.served());
            let verdict = match view.problem() {
                Some(verdict) => {
                    self.failures.remove(&id);
                    let rtt = view.slowest();
                    self.args.metrics.set_up(view.nodes.iter().any(|n| n.up));
                    self.args.metrics.probe(ProbeOutcome::Slow, rtt);
                    verdict
                }
                None => self.judge(id, outcome, took),
            };
            self.args.board.update(|s| s.cluster = view.nodes);
            verdicts.push((id, verdict));
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
            Probe::Answered(_) | Probe::Denied(_) => Verdict::Healthy,
            Probe::Misordered => {
                self.failures.remove(&id);
                Verdict::Unhealthy(
                    "PING was answered with another command's reply: the connection has lost the order of its replies".into(),
                )
            }
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
            // (`NotMaster` comes from INFO, `Partial` and `Reshaped` from a cluster probe.)
            Verdict::Partial(_) => (ProbeOutcome::Slow, Some(took)),
            Verdict::Failing(_)
            | Verdict::Unhealthy(_)
            | Verdict::NotMaster(_)
            | Verdict::Reshaped(_) => (ProbeOutcome::Failed, None),
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
            Probe::Misordered => Err("INFO got another command's reply".into()),
            Probe::Denied(code) => Err(format!("INFO refused: {code}")),
        };
        match text {
            Ok(text) => {
                let stats = ServerStats::parse(&text);
                let demoted = self.args.topology.follows_sentinels()
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
            shape: None,
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
