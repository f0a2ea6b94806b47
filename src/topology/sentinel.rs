//! The Sentinel topology: what is known of it ([`SentinelShared`]: the sentinels, the master
//! followed, a promotion under way), and finding the master. A connection to the master asks
//! each sentinel in order, within the connect timeout each, `SENTINEL GET-MASTER-ADDR-BY-NAME
//! <master>` (the first answer wins) — unless a promotion is under way: then the replica being
//! promoted is the master, before the sentinels name it. The connection then checks `ROLE` on the
//! node it reached (a sentinel can be a failover behind). Following failovers is the sentinel
//! watcher's job (`sentinel.rs`); it writes what it learns here.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{Config, NodeAddr};
use crate::error::{ConnectionFailure, FailureKind, describe_connection_error};
use crate::sync::lock;

/// How long a promotion seen in the sentinels' events is followed while they still name the old
/// master; past it their answer wins again (a failover that ended without a word).
const PROMOTION_LIMIT: Duration = Duration::from_secs(30);

/// What is known of the Sentinel topology (and what `/health/redis` shows of it); written only by
/// the watcher.
#[derive(Debug, Clone, Default)]
pub(crate) struct SentinelView {
    /// The master the sentinels named last.
    pub(crate) master: Option<NodeAddr>,
    /// Every sentinel known: the configured ones, then those discovered.
    pub(crate) known: Vec<NodeAddr>,
    /// The sentinel watched now.
    pub(crate) watching: Option<NodeAddr>,
    /// The master's replicas a failover could promote that replicate from it (from `SENTINEL
    /// REPLICAS`, at each check and on the events that change them).
    pub(crate) replicas: u32,
    /// The replicas a failover could promote that still answer as masters: demoted by a planned
    /// failover, not yet made replicas by the sentinels (about 2 s). They cannot acknowledge a
    /// `WAIT`; what must survive a failover is written to them directly.
    pub(crate) demoted: Vec<NodeAddr>,
    /// The master followed ahead of the sentinel the watcher asks — a replica being promoted,
    /// or the new master of a switch another sentinel announced — and since when; `None` once
    /// the watched sentinel names it too.
    pub(crate) promoted: Option<(NodeAddr, Instant)>,
}

/// What the watcher, its restarts, every connection that locates the master and the HTTP routes
/// share.
pub(crate) struct SentinelShared {
    config: Arc<Config>,
    view: Mutex<SentinelView>,
    /// Where the next watcher starts (rotates on every failure).
    next: AtomicUsize,
}

impl SentinelShared {
    pub(crate) fn new(config: Arc<Config>) -> Arc<Self> {
        let known = config.sentinels().iter().cloned().collect();
        Arc::new(SentinelShared {
            config,
            view: Mutex::new(SentinelView {
                known,
                ..SentinelView::default()
            }),
            next: AtomicUsize::new(0),
        })
    }

    /// The topology as last seen.
    pub(crate) fn view(&self) -> SentinelView {
        lock(&self.view).clone()
    }

    /// The watcher failed: the next one starts at the following sentinel.
    pub(crate) fn rotate(&self) {
        self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.view).watching = None;
    }

    /// Where the next watcher starts.
    pub(crate) fn next_index(&self) -> usize {
        self.next.load(Ordering::Relaxed)
    }

    /// The sentinels' config, as the watcher reads it.
    pub(crate) fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The replicas a failover could promote: `n` replicating, and `demoted` masters.
    pub(crate) fn replicas(&self, n: u32, demoted: Vec<NodeAddr>) {
        let mut view = lock(&self.view);
        view.replicas = n;
        view.demoted = demoted;
    }

    /// The watcher now watches `sentinel` (or none).
    pub(crate) fn watching(&self, sentinel: Option<NodeAddr>) {
        lock(&self.view).watching = sentinel;
    }

    /// The master followed ahead of the sentinels' answers (a promotion or a switch seen in
    /// their events), while it is.
    pub(crate) fn promoting(&self) -> Option<NodeAddr> {
        let view = lock(&self.view);
        view.promoted
            .as_ref()
            .filter(|(_, since)| since.elapsed() < PROMOTION_LIMIT)
            .map(|(node, _)| node.clone())
    }

    /// The sentinels are promoting `replica`: it is the master from now on.
    pub(crate) fn promote(&self, replica: NodeAddr) {
        let mut view = lock(&self.view);
        if view.master.as_ref() != Some(&replica) {
            // Those were the old master's; the new one's are counted at the next check.
            view.replicas = 0;
        }
        view.master = Some(replica.clone());
        view.promoted = Some((replica, Instant::now()));
    }

    /// A sentinel names `master`: in an answer to the watcher's check, or (`switched`) in a
    /// `+switch-master` event. Whether to follow it. A switch is followed at once, and, like a
    /// promotion, ahead of the sentinel the watcher asks (each sentinel learns of a failover in
    /// its own time, the one watched perhaps last): until that one names the same master, its
    /// answers naming another are not followed (for at most [`PROMOTION_LIMIT`]).
    pub(crate) fn named(&self, master: &NodeAddr, switched: bool) -> bool {
        let mut view = lock(&self.view);
        if switched {
            view.promoted = Some((master.clone(), Instant::now()));
        } else if let Some((ahead, since)) = &view.promoted {
            if ahead != master && since.elapsed() < PROMOTION_LIMIT {
                return false;
            }
            view.promoted = None;
        }
        if view.master.as_ref() != Some(master) {
            // Those were the old master's; the new one's are counted at the next check.
            view.replicas = 0;
        }
        view.master = Some(master.clone());
        true
    }

    /// A failover ended without a switch (aborted): the sentinels' answer wins again.
    pub(crate) fn abort_promotion(&self) {
        lock(&self.view).promoted = None;
    }

    /// Learns another sentinel (from `+sentinel` or `SENTINEL SENTINELS`).
    pub(crate) fn learn(&self, sentinel: NodeAddr) {
        let mut view = lock(&self.view);
        if !view.known.contains(&sentinel) {
            tracing::info!(client = %self.config.name(), sentinel = %sentinel, "sentinel discovered");
            view.known.push(sentinel);
        }
    }
}

/// The master's address: the replica being promoted, while a promotion is followed; otherwise
/// the first sentinel's answer.
pub(super) async fn locate_master(
    config: &Config,
    shared: Option<&SentinelShared>,
) -> Result<NodeAddr, ConnectionFailure> {
    if let Some(promoted) = shared.and_then(SentinelShared::promoting) {
        return Ok(promoted);
    }
    let name = config.sentinel_master().unwrap_or_default();
    let mut tried = Vec::new();
    for sentinel in config.sentinels() {
        match ask_master(config, sentinel, config.connect_timeout()).await {
            Ok(Some(master)) => return Ok(master),
            Ok(None) => tried.push(format!("{sentinel}: no master named {name:?}")),
            Err(why) => tried.push(format!("{sentinel}: {why}")),
        }
    }
    Err(ConnectionFailure::new(
        FailureKind::NotConnected,
        format!(
            "no sentinel named the master {name:?} (tried {})",
            tried.join("; ")
        ),
    ))
}

/// Asks one sentinel for the master's address, within `limit`: `Ok(None)` when it does not
/// monitor a master of that name; `Err` with a secret-free reason when it does not answer.
async fn ask_master(
    config: &Config,
    sentinel: &NodeAddr,
    limit: Duration,
) -> Result<Option<NodeAddr>, String> {
    let name = config.sentinel_master().unwrap_or_default();
    let ask = async {
        let client = config
            .sentinel_client(sentinel)
            .map_err(|e| describe_connection_error(&e).message)?;
        let timeouts = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(limit))
            .set_response_timeout(Some(limit));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&timeouts)
            .await
            .map_err(|e| describe_connection_error(&e).message)?;
        let reply: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(name)
            .query_async(&mut conn)
            .await
            .map_err(|e| match e.code() {
                Some(code) => format!("{code} {}", e.detail().unwrap_or_default()),
                None => describe_connection_error(&e).message,
            })?;
        Ok(reply.map(|(host, port)| NodeAddr { host, port }))
    };
    tokio::time::timeout(limit, ask)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} ms", limit.as_millis())))
}
