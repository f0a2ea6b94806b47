//! The one delivery loop: every command the crate sends for a caller — a typed command, a raw one,
//! a pipeline or `MULTI`, a blocking command, a write that waits for replicas, on one server or
//! routed by slot on a cluster — goes through [`HandleCore::deliver`], which decides, attempt by
//! attempt:
//!
//! - **the time left**: the command's deadline (its [`Plan::budget`] from the start) bounds
//!   every wait and every attempt; a command never answers after it;
//! - **where to send it**: a serving lane of the route (waiting for one per the offline policy),
//!   then, on a cluster, the node of its key's slot, a redirect's node, or the node a
//!   keyspace walk pinned; on that lane's connection, or on a pool's (blocking, leased);
//! - **refusals** (`LOADING`, `MASTERDOWN`, `BUSY`, `READONLY` on one server; `TRYAGAIN`,
//!   `CLUSTERDOWN`, an unreachable or unknown node on a cluster): the command did not run; it
//!   waits for what can change the answer — a newer route from the supervisor, or the next read
//!   of the cluster's slot map — and is sent again, within the deadline. No fixed sleeps;
//! - **redirects** (`MOVED`, `ASK`): it did not run; sent to the node named, with a budget of
//!   their own ([`MAX_REDIRECTS`]), never spending the replay budget (a redirect storm ends in
//!   [`Error::TooManyRedirects`]);
//! - **the replay rule** (ARCHITECTURE.md promise 2): a command whose connection was lost with
//!   it in flight may have run. A replay-safe one is sent once more, on another connection;
//!   any other is [`Error::Ambiguous`]. No reply by the deadline: `Timeout { sent: true }` for a
//!   replay-safe command, `Ambiguous` for any other.
//!
//! What differs between kinds is data in the [`Plan`]: the channel ([`Via`]), the deadline (a
//! blocking command's is its own block time plus the handle's timeout), a blocking command's
//! block time (shortened to what the deadline leaves), replicas to wait for. A multi-key command
//! whose keys span several cluster slots is split (`delivery/split.rs`): each part goes through
//! this same loop, and the answers are recombined.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use ractor::ActorId;
use redis::Value;
use tokio::time::Instant;

use crate::config::{Config, NodeAddr, OfflinePolicy};
use crate::error::{Error, FailureKind};
use crate::lane::{Lane, Lease, NotReady};
use crate::metrics::{CommandMetrics, PatternMetrics, PoolMetrics};
pub(crate) use crate::pool::Durability;
use crate::pool::{Pool, Purpose};
use crate::request::Request;
use crate::route::{Route, RouteState};
use crate::topology::Topology;

mod attempt;
mod bulk;
mod gate;
mod split;

use bulk::BigReplies;
use gate::{Gate, Waiting};

/// Redirects (`MOVED`, `ASK`) one command follows at most before the last one is its answer
/// ([`Error::TooManyRedirects`]). A budget of its own: redirects never spend the replay budget.
pub(crate) const MAX_REDIRECTS: u32 = 16;

/// What every handle of one supervisor shares; the delivery module is its only writer.
pub(crate) struct HandleCore {
    config: Arc<Config>,
    route: Route,
    gate: Gate,
    /// Commands waiting for the connection right now.
    waiting: AtomicUsize,
    metrics: CommandMetrics,
    /// Carried for the patterns built on handles; they write it, the handle never does.
    patterns: PatternMetrics,
    /// The dedicated connections for blocking commands.
    blocking: Pool,
    /// The leased connections: transactions, writes that wait for replicas, lock confirmations.
    leased: Pool,
    /// With more than one lane: which commands bring back big replies.
    bulk: Option<BigReplies>,
    /// Where connections go.
    topology: Topology,
}

impl HandleCore {
    pub(crate) fn new(
        config: Arc<Config>,
        route: Route,
        metrics: CommandMetrics,
        patterns: PatternMetrics,
        pools: [PoolMetrics; 2],
        topology: Topology,
    ) -> Arc<Self> {
        let [blocking, leased] = pools;
        let pool = |purpose, metrics| Pool::new(config.clone(), topology.clone(), purpose, metrics);
        Arc::new(HandleCore {
            blocking: pool(Purpose::Blocking, blocking),
            leased: pool(Purpose::Leased, leased),
            bulk: (config.lanes() > 1).then(BigReplies::new),
            topology,
            config,
            route,
            gate: Gate::new(),
            waiting: AtomicUsize::new(0),
            metrics,
            patterns,
        })
    }

    /// Shutdown begins: every new command answers [`Error::ShuttingDown`].
    pub(crate) fn close(&self) {
        self.gate.close();
    }

    /// True once shutdown has begun.
    pub(crate) fn is_closed(&self) -> bool {
        self.gate.is_closed()
    }

    /// Commands between entry and answer right now.
    pub(crate) fn in_flight(&self) -> usize {
        self.gate.in_flight()
    }

    /// Waits until no command is in flight (call after [`close`](Self::close)).
    pub(crate) async fn drained(&self) {
        loop {
            let notified = self.gate.idle.notified();
            if self.gate.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Commands waiting for the connection right now.
    pub(crate) fn offline_waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The two pools, blocking and leased (closed and unblocked by the supervisor at shutdown;
    /// emptied of idle connections at a failover).
    pub(crate) fn pools(&self) -> [&Pool; 2] {
        [&self.blocking, &self.leased]
    }

    /// The pool for `purpose`.
    pub(crate) fn pool(&self, purpose: Purpose) -> &Pool {
        match purpose {
            Purpose::Blocking => &self.blocking,
            Purpose::Leased => &self.leased,
        }
    }

    /// The configuration.
    pub(crate) fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Where connections go.
    pub(crate) fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The callers' command metrics.
    pub(crate) fn metrics(&self) -> &CommandMetrics {
        &self.metrics
    }

    /// The patterns' metrics.
    pub(crate) fn patterns(&self) -> &PatternMetrics {
        &self.patterns
    }

    /// Admits one operation that is not a single delivery (a transaction): `None` once shutdown
    /// has begun. It counts as in flight until the guard drops.
    pub(crate) fn admit(&self) -> Option<impl Drop + '_> {
        self.gate.enter()
    }
}

/// Where a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// The shared connection (a lane; on a cluster, its connection to the key's node).
    Shared,
    /// A connection of a pool, held by this command alone.
    Pool(Purpose),
}

/// One command's delivery: what differs between kinds of command, as data for the loop.
pub(crate) struct Plan<'a> {
    pub(crate) request: &'a Request,
    /// May be sent again after a lost connection (the replay rule).
    pub(crate) replay_safe: bool,
    pub(crate) via: Via,
    /// What the caller gave it (errors report it): the handle's timeout, or a blocking
    /// command's block time plus that timeout.
    pub(crate) budget: Duration,
    /// When the answer is due (`start + budget`).
    pub(crate) deadline: Instant,
    /// What it does while no connection serves.
    pub(crate) offline: OfflinePolicy,
    /// A blocking command's block time: shortened to what the deadline leaves when it waited.
    pub(crate) block: Option<Duration>,
    /// Replicas to wait for after it (only on a pool's connection: `WAIT` blocks it).
    pub(crate) durability: Option<Durability>,
}

/// How one attempt ended.
pub(crate) enum Attempt {
    /// The reply (it may hold error replies in an array: the caller's to read).
    Answered(Value),
    /// An error reply, or a reply that did not parse: the caller's answer.
    Failed(redis::RedisError),
    /// One server cannot serve yet and refused it: it did not run.
    Refused(NotReady),
    /// On a cluster, it did not run and may later (`TRYAGAIN`, `CLUSTERDOWN`, a node not
    /// reachable or unknown): why.
    Later(String),
    /// `MOVED` / `ASK` to `node`: it did not run.
    Redirected { node: NodeAddr, ask: bool },
    /// Some commands of a pipeline bounced (`bounce`: redirected or refused for now) and the
    /// others ran: sent again only when replay-safe.
    Partly {
        bounce: Box<Attempt>,
        reason: String,
    },
    /// The connection was lost with it in flight: it may have run.
    Lost(String),
    /// Sent, and no reply by the deadline: it may have run.
    NoAnswer,
    /// The answer outright (no connection free in the pool, shutdown, replicas missing, …).
    Final(Error),
}

impl Attempt {
    /// A bounce's cause, for error messages: `MOVED to <node>`, the refusal's message, ….
    pub(crate) fn why(&self) -> String {
        match self {
            Attempt::Redirected { node, ask: false } => format!("MOVED to {node}"),
            Attempt::Redirected { node, ask: true } => format!("ASK to {node}"),
            Attempt::Refused(not_ready) => not_ready.message.clone(),
            Attempt::Later(why) | Attempt::Lost(why) | Attempt::Partly { reason: why, .. } => {
                why.clone()
            }
            Attempt::Answered(_) => "answered".into(),
            Attempt::Failed(e) => e.to_string(),
            Attempt::NoAnswer => "no answer".into(),
            Attempt::Final(e) => e.to_string(),
        }
    }
}

/// Where the next attempt goes on a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// The node of the command's key's slot (or the node it is pinned to).
    Slot,
    /// The node a `MOVED` named.
    Moved(NodeAddr),
    /// The node an `ASK` named (for this one attempt, behind `ASKING`).
    Ask(NodeAddr),
}

/// What a command needs from the route before it can be (re)sent.
#[derive(Clone, Copy, Default)]
struct Need<'a> {
    /// A connection known to be gone: wait for another.
    avoid: Option<ActorId>,
    /// The route version a refusal came on: wait for a later publication.
    after: Option<u64>,
    /// That refusal, to report if nothing changes in time.
    refusal: Option<&'a NotReady>,
    /// Its last reply was big: the bulk lane, if it serves.
    bulk: bool,
}

impl Need<'_> {
    /// The lane of `state` (published as `version`) if it satisfies this need.
    fn lane_in<'s>(&self, state: &'s RouteState, version: u64) -> Option<&'s Lane> {
        match state {
            RouteState::Serving(lanes) if self.after.is_none_or(|v| version > v) => {
                lanes.pick(self.avoid, self.bulk)
            }
            _ => None,
        }
    }
}

/// What one command's attempts have come to so far.
struct Progress {
    /// Why an earlier attempt may have run (its connection was lost with it in flight).
    lost: Option<String>,
    /// The refusal that sent it back, to report if nothing changes in time.
    refusal: Option<NotReady>,
    /// The last "not now" of a cluster, likewise.
    later: Option<String>,
    avoid: Option<ActorId>,
    after: Option<u64>,
    redirects: u32,
    target: Target,
    /// The command's entry in the big-reply table, and whether its last reply was big.
    bulk: Option<usize>,
    heavy: bool,
}

impl Progress {
    fn need(&self) -> Need<'_> {
        Need {
            avoid: self.avoid,
            after: self.after,
            refusal: self.refusal.as_ref(),
            bulk: self.heavy,
        }
    }

    /// Whether an attempt was made already (its time left must be read again).
    fn again(&self) -> bool {
        self.lost.is_some() || self.refusal.is_some() || self.later.is_some() || self.redirects > 0
    }
}

/// What the loop does after an attempt.
enum Next {
    /// The answer.
    Answer(Result<Value, Error>),
    /// Another attempt, at once.
    Again,
    /// Another attempt once the cluster's slot map has been read again.
    AfterRefresh,
}

impl HandleCore {
    /// Delivers `plan`'s command by its deadline (see the module docs): one answer, a value or a
    /// typed error.
    pub(crate) async fn deliver(&self, plan: &Plan<'_>) -> Result<Value, Error> {
        let _entry = self.gate.enter().ok_or(Error::ShuttingDown)?;
        if self.topology.slotted()
            && let Some(split) = split::Split::of(plan)
        {
            return Box::pin(split.run(self, plan)).await;
        }
        self.attempts(plan).await
    }

    /// The attempt loop for one command (or one part of a split one).
    async fn attempts(&self, plan: &Plan<'_>) -> Result<Value, Error> {
        let bulk = self.bulk.as_ref();
        let entry = bulk.and_then(|_| BigReplies::entry(plan.request));
        let mut p = Progress {
            lost: None,
            refusal: None,
            later: None,
            avoid: None,
            after: None,
            redirects: 0,
            target: Target::Slot,
            heavy: matches!((bulk, entry), (Some(b), Some(e)) if b.is_big(e)),
            bulk: entry,
        };
        // Time left at this attempt: the whole budget at the first one, unless it waits.
        let mut remaining = plan.budget;
        loop {
            // The fast path inline (an `async fn` here would nest a future in every command's);
            // the wait boxed, so that every command's future stays small.
            let found = match self.live_lane(p.need()) {
                Ok(Some(found)) => Ok((found, false)),
                Ok(None) => Box::pin(self.wait_for_lane(plan.deadline, plan.offline, p.need()))
                    .await
                    .map(|found| (found, true)),
                Err(e) => Err(e),
            };
            let ((lease, version), waited) = match found {
                Ok(found) => found,
                Err(e) => return Err(self.not_resent(plan, &p, e)),
            };
            if waited || p.again() {
                remaining = plan.deadline.saturating_duration_since(Instant::now());
            }
            if plan.budget.is_zero() || (waited && remaining.is_zero()) {
                return Err(timeout_error(plan, p.lost.is_some()));
            }
            // A lost connection to avoid next time: this lane's own (not a cluster node's, nor a
            // pool's, which are dropped where they broke).
            let lane = (plan.via == Via::Shared && lease.router().is_none()).then(|| lease.id());
            let outcome = match (plan.via, lease.router()) {
                (Via::Shared, None) => attempt::shared(lease, plan, remaining, p.heavy).await,
                _ => Box::pin(attempt::elsewhere(self, lease, plan, &p.target)).await,
            };
            match self.judge(plan, &mut p, outcome, lane, version) {
                Next::Answer(Ok(value)) => {
                    if let (Some(b), Some(s)) = (bulk, p.bulk) {
                        b.record(s, &value);
                    }
                    return Ok(value);
                }
                Next::Answer(Err(e)) => return Err(e),
                Next::Again => {}
                Next::AfterRefresh => {
                    if let Err(e) = self.wait_for_slot_map(plan).await {
                        return Err(self.not_resent(plan, &p, e));
                    }
                }
            }
        }
    }

    /// Decides what comes after an attempt (see the module docs).
    fn judge(
        &self,
        plan: &Plan<'_>,
        p: &mut Progress,
        outcome: Attempt,
        lane: Option<ActorId>,
        version: u64,
    ) -> Next {
        let name = || plan.request.name();
        match outcome {
            Attempt::Answered(value) => Next::Answer(Ok(value)),
            Attempt::Failed(e) => Next::Answer(Err(crate::error::from_reply_error(e))),
            // Not sent this time (no connection, shutdown, the pool full) after an attempt that
            // may have run: that earlier attempt decides the answer.
            Attempt::Final(
                e @ (Error::Unavailable { .. }
                | Error::ShuttingDown
                | Error::Overloaded { .. }
                | Error::Timeout { sent: false, .. }),
            ) if p.lost.is_some() => Next::Answer(Err(self.not_resent(plan, p, e))),
            Attempt::Final(e) => Next::Answer(Err(e)),
            // It did not run: wait for the server to be ready, then send it again.
            Attempt::Refused(not_ready) => {
                (p.avoid, p.after, p.refusal) = (None, Some(version), Some(not_ready));
                p.target = Target::Slot;
                Next::Again
            }
            Attempt::Later(why) => {
                p.later = Some(why);
                p.target = Target::Slot;
                Next::AfterRefresh
            }
            Attempt::Redirected { node, ask } => redirected(plan, p, node, ask),
            Attempt::Partly { bounce, .. } if plan.replay_safe => {
                self.judge(plan, p, *bounce, lane, version)
            }
            Attempt::Partly { reason, .. } => Next::Answer(Err(Error::Ambiguous {
                command: name(),
                reason,
            })),
            Attempt::Lost(reason) => {
                if !plan.replay_safe || p.lost.is_some() {
                    return Next::Answer(Err(Error::Ambiguous {
                        command: name(),
                        reason,
                    }));
                }
                p.lost = Some(reason);
                (p.avoid, p.after, p.refusal) = (lane, None, None);
                p.target = Target::Slot;
                Next::Again
            }
            // Handed over, no reply in time: it may have run.
            Attempt::NoAnswer if plan.replay_safe => Next::Answer(Err(timeout_error(plan, true))),
            Attempt::NoAnswer => Next::Answer(Err(Error::Ambiguous {
                command: name(),
                reason: format!("no reply within {} ms", plan.budget.as_millis()),
            })),
        }
    }

    /// The answer for a command that found no connection to be (re)sent on: `error` as is, or,
    /// when an earlier attempt may have run, a timeout (out of time) or `Ambiguous`.
    fn not_resent(&self, plan: &Plan<'_>, p: &Progress, error: Error) -> Error {
        match &p.lost {
            None => match (&p.later, error) {
                // A cluster that said "not now" until the deadline: that is the answer.
                (Some(why), Error::Timeout { sent: false, .. }) => Error::Unavailable {
                    since: SystemTime::now(),
                    reason: why.clone(),
                    kind: FailureKind::ClusterDown,
                },
                (_, error) => error,
            },
            Some(_) if Instant::now() >= plan.deadline => timeout_error(plan, true),
            Some(reason) => Error::Ambiguous {
                command: plan.request.name(),
                reason: format!("{reason}; not sent again: {error}"),
            },
        }
    }

    /// A lane that satisfies `need` right now — a lock-free read of the route and a lease on the
    /// lane (this thread's spare clone of its connection) — with the route version it was
    /// published in; `None` when the command must wait for one
    /// ([`wait_for_lane`](Self::wait_for_lane)), or the error when waiting cannot help (the
    /// route is closed or stopped).
    fn live_lane(&self, need: Need<'_>) -> Result<Option<(Lease, u64)>, Error> {
        let published = self.route.load();
        if let Some(live) = need.lane_in(&published.state, published.version) {
            return Ok(Some((live.lease(), published.version)));
        }
        match published.state {
            RouteState::Closed { .. } | RouteState::Stopped => {
                Err(unavailable(&published.state, need.refusal))
            }
            _ => Ok(None),
        }
    }

    /// Waits (per the offline policy) until the deadline for a lane that satisfies `need`.
    async fn wait_for_lane(
        &self,
        deadline: Instant,
        offline: OfflinePolicy,
        need: Need<'_>,
    ) -> Result<(Lease, u64), Error> {
        let route = &self.route;
        if offline == OfflinePolicy::FailFast {
            return Err(unavailable(&route.load().state, need.refusal));
        }
        let mut rx = route.subscribe();
        let _waiting = Waiting::enter(self).ok_or(Error::Overloaded {
            limit: self.config.max_waiting(),
        })?;
        loop {
            // Marked seen before reading: a publication after this wakes `changed`.
            rx.borrow_and_update();
            let unavailable = {
                let published = route.load();
                if let Some(lane) = need.lane_in(&published.state, published.version) {
                    return Ok((lane.lease(), published.version));
                }
                let error = unavailable(&published.state, need.refusal);
                if let RouteState::Closed { .. } | RouteState::Stopped = published.state {
                    return Err(error);
                }
                error
            };
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(Error::ShuttingDown),
                Err(_) => return Err(unavailable),
            }
        }
    }

    /// Returns once a connection serves (waiting per `offline` until `deadline`): for what runs
    /// on connections of its own (a transaction), which open only while the server serves.
    pub(crate) async fn serving(
        &self,
        deadline: Instant,
        offline: OfflinePolicy,
    ) -> Result<(), Error> {
        if self.live_lane(Need::default())?.is_none() {
            Box::pin(self.wait_for_lane(deadline, offline, Need::default())).await?;
        }
        Ok(())
    }

    /// Waits for the next read of the cluster's slot map (asking for one), within the deadline.
    async fn wait_for_slot_map(&self, plan: &Plan<'_>) -> Result<(), Error> {
        let router = match &self.route.load().state {
            RouteState::Serving(lanes) => lanes.all().iter().find_map(Lane::cluster),
            _ => None,
        };
        // No cluster lane serves: the loop waits for the route instead.
        let Some(router) = router else {
            return Ok(());
        };
        let mut refreshed = router.refreshes();
        refreshed.borrow_and_update();
        router.refresh_soon();
        match tokio::time::timeout_at(plan.deadline, refreshed.changed()).await {
            Ok(_) => Ok(()),
            Err(_) => Err(timeout_error(plan, false)),
        }
    }

    /// On a cluster, the primary serving `key`'s slot from the current slot map (`None` off a
    /// cluster, or while no cluster lane serves).
    pub(crate) fn primary_for(&self, key: &[u8]) -> Option<NodeAddr> {
        if !self.topology.slotted() {
            return None;
        }
        match &self.route.load().state {
            RouteState::Serving(lanes) => lanes.all().iter().find_map(|lane| {
                let router = lane.cluster()?;
                let slot = crate::topology::cluster::key_slot(key);
                router.node_for_slot(slot, false).map(|n| n.addr.clone())
            }),
            _ => None,
        }
    }

    /// The replicas of the node serving `key`, as the topology knows them (see
    /// [`RedisHandle::known_replicas`](crate::RedisHandle)).
    pub(crate) fn known_replicas(&self, key: &[u8]) -> u32 {
        if let Some(sentinel) = self.topology.sentinel() {
            return sentinel.view().replicas;
        }
        match &self.route.load().state {
            RouteState::Serving(lanes) => lanes
                .all()
                .iter()
                .find_map(Lane::cluster)
                .map_or(0, |router| {
                    router.replica_count(crate::topology::cluster::key_slot(key))
                }),
            _ => 0,
        }
    }

    /// The replicas a failover could promote that still answer as masters (Sentinel: demoted by
    /// a planned failover, not yet made replicas); none elsewhere.
    pub(crate) fn demoted_masters(&self) -> Vec<NodeAddr> {
        self.topology
            .sentinel()
            .map(|sentinel| sentinel.view().demoted)
            .unwrap_or_default()
    }

    /// Every primary of the cluster (from the current slot map), for a walk of the keyspace.
    pub(crate) fn primaries(&self) -> Vec<NodeAddr> {
        match &self.route.load().state {
            RouteState::Serving(lanes) => lanes
                .all()
                .iter()
                .find_map(Lane::cluster)
                .map(|r| r.primaries())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

/// `Timeout` for `plan`'s command; `sent` when it may have run.
fn timeout_error(plan: &Plan<'_>, sent: bool) -> Error {
    Error::Timeout {
        command: plan.request.name(),
        after: plan.budget,
        sent,
    }
}

/// The error for a command that cannot get a connection on `route`; `refusal` is the server's
/// "cannot serve yet" answer that sent the command back, if one did.
pub(crate) fn unavailable(route: &RouteState, refusal: Option<&NotReady>) -> Error {
    if let RouteState::Stopped = route {
        return Error::ShuttingDown;
    }
    let (since, reason, kind) = match (route.why(), refusal) {
        (Some((since, reason, kind)), _) => (since, reason.to_string(), kind),
        (None, Some(refusal)) => (SystemTime::now(), refusal.message.clone(), refusal.kind),
        (None, None) => (
            SystemTime::now(),
            "connection lost".to_string(),
            FailureKind::Closed,
        ),
    };
    Error::Unavailable {
        since,
        reason,
        kind,
    }
}

/// After a `MOVED` or `ASK` to `node`: the redirect is followed (without spending the replay
/// budget: the command did not run), up to [`MAX_REDIRECTS`].
fn redirected(plan: &Plan<'_>, p: &mut Progress, node: NodeAddr, ask: bool) -> Next {
    let name = || plan.request.name();
    p.redirects += 1;
    if p.redirects > MAX_REDIRECTS {
        return Next::Answer(Err(Error::TooManyRedirects {
            command: name(),
            redirects: p.redirects - 1,
            last: node.to_string(),
        }));
    }
    // (A pipeline only part of which was redirected is `Attempt::Partly`.)
    let pipeline = plan.request.as_pipeline();
    // A pipeline's ASK is not followed behind ASKING (it holds several commands):
    // it waits for the migration to end instead. A second redirect in a row waits
    // for the slot map (the slot is moving).
    match (ask, pipeline.is_some(), p.redirects) {
        (true, true, _) => {
            p.target = Target::Slot;
            Next::AfterRefresh
        }
        (_, _, 1) | (true, false, _) => {
            p.target = if ask {
                Target::Ask(node)
            } else {
                Target::Moved(node)
            };
            Next::Again
        }
        _ => {
            p.target = Target::Moved(node);
            Next::AfterRefresh
        }
    }
}
