//! Redis Cluster: the slot map and the connections to its nodes. The crate routes by itself
//! over one redis-rs `MultiplexedConnection` per node instead of using redis-rs's
//! cluster-async client: under a live resharding (`redis-cli --cluster reshard` while 64 tasks
//! write) that client's slot refresh stalls every request for good, with its default settings
//! as with ours (reproduced on redis 1.8.1; see the [`supervisor`](crate::supervisor#redis-cluster)
//! module docs, "Why not redis-rs's cluster client"), which no deadline of ours can repair
//! without losing every command in flight.
//!
//! What is here:
//! - [`Router`]: the slot map (from `CLUSTER SLOTS`, refreshed in the background when a
//!   command meets `MOVED`, a node that refuses connections, or when the health probe sees a
//!   new shape), and one lazily opened connection per node, dropped when it breaks.
//! - `cluster/slots.rs`: [`shards`], [`key_slot`], [`redirect_target`] — the cluster's shape,
//!   a key's slot, a redirect's node, as pure functions. (Which argument of a command is its
//!   key is `command.rs`'s.)
//!
//! How commands are delivered on the cluster (redirects, the replay rule, waits for the next
//! slot-map read) is the one delivery loop every command goes through, `delivery.rs` (one
//! attempt on a node: `delivery/attempt.rs`; multi-key commands split across slots:
//! `delivery/split.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::time::Instant;

use crate::config::{Config, NodeAddr};
use crate::error::{ConnectionFailure, FailureKind, describe_connection_error};
use crate::sync::lock;

mod slots;

pub(crate) use slots::{Ranges, SLOTS, Shard, key_slot, redirect_target, shards};

/// Shortest time between two slot-map refreshes (a burst of `MOVED` asks for one).
const REFRESH_EVERY: Duration = Duration::from_millis(50);

/// One node the router knows, and its connection (opened on first use).
pub(crate) struct Node {
    pub(crate) addr: NodeAddr,
    conn: ArcSwapOption<MultiplexedConnection>,
    /// One connect at a time per node.
    connecting: tokio::sync::Mutex<()>,
}

/// The slot map: each slot's shard, each shard's nodes.
struct Map {
    /// Per slot: the index of its shard in `shards`, or [`NO_SHARD`].
    slots: Box<[u16]>,
    shards: Vec<MapShard>,
    /// The shape it was built from (to see whether a new reply changes anything).
    shape: Vec<Shard>,
}

struct MapShard {
    primary: Arc<Node>,
    replicas: Vec<Arc<Node>>,
}

const NO_SHARD: u16 = u16::MAX;

/// Routes by slot over one connection per node (see the module docs). Cheap to clone.
#[derive(Clone)]
pub(crate) struct Router(Arc<RouterInner>);

struct RouterInner {
    config: Arc<Config>,
    map: ArcSwap<Map>,
    nodes: Mutex<HashMap<NodeAddr, Arc<Node>>>,
    /// A refresh is running.
    refreshing: AtomicBool,
    /// When the last refresh started.
    last_refresh: Mutex<Option<Instant>>,
    /// Spreads keyless commands and replica reads.
    next: AtomicUsize,
    /// False once the connection actor closed it.
    open: AtomicBool,
    /// A refresh is scheduled for when the throttle allows.
    scheduled: AtomicBool,
    /// Counts finished refreshes (read or not): a command that must wait for the map waits for
    /// the next one.
    refreshed: tokio::sync::watch::Sender<u64>,
}

impl Router {
    /// Reads the slot map from the first seed node that answers `CLUSTER SLOTS` within the
    /// connect timeout each.
    pub(crate) async fn connect(config: Arc<Config>) -> Result<Router, ConnectionFailure> {
        let router = Router(Arc::new(RouterInner {
            map: ArcSwap::from_pointee(Map {
                slots: vec![NO_SHARD; SLOTS as usize].into_boxed_slice(),
                shards: Vec::new(),
                shape: Vec::new(),
            }),
            config,
            nodes: Mutex::new(HashMap::new()),
            refreshing: AtomicBool::new(false),
            last_refresh: Mutex::new(None),
            next: AtomicUsize::new(0),
            open: AtomicBool::new(true),
            scheduled: AtomicBool::new(false),
            refreshed: tokio::sync::watch::Sender::new(0),
        }));
        let seeds: Vec<NodeAddr> = router.0.config.cluster_nodes().iter().cloned().collect();
        let mut tried = Vec::new();
        for seed in &seeds {
            let node = router.node(seed);
            match router.read_slots(&node).await {
                Ok(()) => return Ok(router),
                Err(why) => tried.push(format!("{seed}: {why}")),
            }
        }
        Err(ConnectionFailure::new(
            FailureKind::NotConnected,
            format!(
                "no cluster seed node answered CLUSTER SLOTS (tried {})",
                tried.join("; ")
            ),
        ))
    }

    /// No new command is sent, no refresh started (the cluster connection is being replaced).
    pub(crate) fn close(&self) {
        self.0.open.store(false, Ordering::Release);
    }

    /// The node at `addr` (known from now on).
    pub(crate) fn node(&self, addr: &NodeAddr) -> Arc<Node> {
        lock(&self.0.nodes)
            .entry(addr.clone())
            .or_insert_with(|| {
                Arc::new(Node {
                    addr: addr.clone(),
                    conn: ArcSwapOption::empty(),
                    connecting: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    /// The node serving `slot`: its primary, or (`read`, with reads from replicas on) one of
    /// its replicas. `None` when no node serves it.
    pub(crate) fn node_for_slot(&self, slot: u16, read: bool) -> Option<Arc<Node>> {
        let map = self.0.map.load();
        let shard = map
            .shards
            .get(usize::from(*map.slots.get(usize::from(slot))?))?;
        if read && self.0.config.cluster_read_from_replicas() && !shard.replicas.is_empty() {
            let i = self.0.next.fetch_add(1, Ordering::Relaxed) % shard.replicas.len();
            return Some(shard.replicas[i].clone());
        }
        Some(shard.primary.clone())
    }

    /// How many replicas the shard serving `slot` has in the slot map.
    pub(crate) fn replica_count(&self, slot: u16) -> u32 {
        let map = self.0.map.load();
        map.slots
            .get(usize::from(slot))
            .and_then(|i| map.shards.get(usize::from(*i)))
            .map_or(0, |s| u32::try_from(s.replicas.len()).unwrap_or(u32::MAX))
    }

    /// Whether read-only commands may go to replicas.
    pub(crate) fn reads_from_replicas(&self) -> bool {
        self.0.config.cluster_read_from_replicas()
    }

    /// A primary, in turn (for a command without a key).
    pub(crate) fn any_primary(&self) -> Option<Arc<Node>> {
        let map = self.0.map.load();
        if map.shards.is_empty() {
            return None;
        }
        let i = self.0.next.fetch_add(1, Ordering::Relaxed) % map.shards.len();
        Some(map.shards[i].primary.clone())
    }

    /// Every primary of the current map, in slot order.
    pub(crate) fn primaries(&self) -> Vec<NodeAddr> {
        self.0
            .map
            .load()
            .shape
            .iter()
            .map(|s| s.primary.clone())
            .collect()
    }

    /// The connection to `node`, opened (with the connect timeout) if there is none. With
    /// reads from replicas on, each connection is put in `READONLY` mode (harmless on a
    /// primary).
    pub(crate) async fn conn(&self, node: &Node) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(conn) = &*node.conn.load() {
            return Ok((**conn).clone());
        }
        let _one = node.connecting.lock().await;
        if let Some(conn) = &*node.conn.load() {
            return Ok((**conn).clone());
        }
        let config = &self.0.config;
        let mut conn = open_node(config, &node.addr).await?;
        if config.cluster_read_from_replicas() {
            conn.send_packed_command(&redis::cmd("READONLY")).await?;
        }
        let mut name = redis::cmd("CLIENT");
        name.arg("SETNAME")
            .arg(format!("redis-supervisor:{}", config.name()));
        // A user whose ACL forbids SETNAME still connects.
        let _ = conn.send_packed_command(&name).await;
        node.conn.store(Some(Arc::new(conn.clone())));
        Ok(conn)
    }

    /// The connection to `node` broke: the next command opens a new one; the map is read again.
    pub(crate) fn broken(&self, node: &Node) {
        node.conn.store(None);
        self.refresh_soon();
    }

    /// A receiver of the count of finished refreshes ([`refresh_soon`](Self::refresh_soon)
    /// asks for the next one).
    pub(crate) fn refreshes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.refreshed.subscribe()
    }

    /// Reads the slot map again in the background, at most once per [`REFRESH_EVERY`]: now, or
    /// when the last one is that old. Either way a refresh finishes soon after every call.
    pub(crate) fn refresh_soon(&self) {
        if !self.0.open.load(Ordering::Acquire) {
            return;
        }
        let wait = {
            let mut last = lock(&self.0.last_refresh);
            let wait = last.map_or(Duration::ZERO, |t| {
                REFRESH_EVERY.saturating_sub(t.elapsed())
            });
            if wait.is_zero() {
                if self.0.refreshing.swap(true, Ordering::AcqRel) {
                    return; // the running one finishes soon
                }
                *last = Some(Instant::now());
            }
            wait
        };
        let router = self.clone();
        if !wait.is_zero() {
            if !self.0.scheduled.swap(true, Ordering::AcqRel) {
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    router.0.scheduled.store(false, Ordering::Release);
                    router.refresh_soon();
                });
            }
            return;
        }
        tokio::spawn(async move {
            router.refresh().await;
            router.0.refreshing.store(false, Ordering::Release);
            router.0.refreshed.send_modify(|n| *n = n.wrapping_add(1));
        });
    }

    /// One refresh: `CLUSTER SLOTS` from the primaries in turn, then the seed nodes.
    async fn refresh(&self) {
        let mut candidates = self.primaries();
        candidates.extend(self.0.config.cluster_nodes().iter().cloned());
        for addr in candidates {
            let node = self.node(&addr);
            let read =
                tokio::time::timeout(self.0.config.connect_timeout(), self.read_slots(&node));
            if let Ok(Ok(())) = read.await {
                return;
            }
        }
        tracing::debug!("cluster slot map refresh: no node answered CLUSTER SLOTS");
    }

    async fn read_slots(&self, node: &Node) -> Result<(), String> {
        let mut conn = self
            .conn(node)
            .await
            .map_err(|e| describe_connection_error(&e).message)?;
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SLOTS");
        let reply = conn.send_packed_command(&cmd).await;
        let reply = match reply {
            Ok(Value::ServerError(e)) => {
                return Err(format!("{} {}", e.code(), e.details().unwrap_or_default()));
            }
            Ok(v) => v,
            Err(e) => {
                if crate::error::classify(&e) == crate::error::ErrorSide::Transport {
                    node.conn.store(None);
                }
                return Err(describe_connection_error(&e).message);
            }
        };
        let (shape, covered) = shards(&reply);
        if shape.is_empty() || covered == 0 {
            return Err("CLUSTER SLOTS named no slots (is cluster mode on?)".into());
        }
        self.install(shape);
        Ok(())
    }

    /// Installs the slot map of `shape` (a `CLUSTER SLOTS` reply's, e.g. from the health
    /// probe), if it differs from the current one.
    pub(crate) fn install(&self, shape: Vec<Shard>) {
        if self.0.map.load().shape == shape {
            return;
        }
        let mut slots = vec![NO_SHARD; SLOTS as usize].into_boxed_slice();
        let mut shards = Vec::with_capacity(shape.len());
        for (i, shard) in shape.iter().enumerate() {
            for (a, b) in &shard.slots {
                for slot in *a..=*b {
                    if let Some(s) = slots.get_mut(usize::from(slot)) {
                        *s = i as u16;
                    }
                }
            }
            shards.push(MapShard {
                primary: self.node(&shard.primary),
                replicas: shard.replicas.iter().map(|r| self.node(r)).collect(),
            });
        }
        // Nodes no longer in the cluster are forgotten (their connections close).
        {
            let mut nodes = lock(&self.0.nodes);
            let seeds = self.0.config.cluster_nodes();
            nodes.retain(|addr, _| {
                shape
                    .iter()
                    .any(|s| s.primary == *addr || s.replicas.contains(addr))
                    || seeds.iter().any(|s| s == addr)
            });
        }
        self.0.map.store(Arc::new(Map {
            slots,
            shards,
            shape,
        }));
    }
}

/// A new connection to the cluster node `addr` (credentials and TLS as configured), opened
/// within the connect timeout; no response timeout (deadlines are the callers').
async fn open_node(config: &Config, addr: &NodeAddr) -> redis::RedisResult<MultiplexedConnection> {
    let client = config.redis_client_at(&addr.host, addr.port)?;
    let settings = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout()))
        .set_response_timeout(None);
    let connect = client.get_multiplexed_async_connection_with_config(&settings);
    tokio::time::timeout(config.connect_timeout(), connect)
        .await
        .map_err(|_| {
            redis::RedisError::from((redis::ErrorKind::Io, "connect timed out", addr.to_string()))
        })?
}

/// The first seed node that answers `PING` within the connect timeout, for a connection that
/// needs one node of the cluster, not a slot (the pub/sub subscriber: a classic `PUBLISH`
/// reaches the subscribers of every node).
pub(super) async fn any_node(config: &Config) -> Result<NodeAddr, ConnectionFailure> {
    let limit = config.connect_timeout();
    let mut tried = Vec::new();
    for node in config.cluster_nodes() {
        let attempt = async {
            let client = config
                .redis_client_at(&node.host, node.port)
                .map_err(|e| describe_connection_error(&e).message)?;
            let timeouts = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(limit))
                .set_response_timeout(Some(limit));
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&timeouts)
                .await
                .map_err(|e| describe_connection_error(&e).message)?;
            conn.send_packed_command(&redis::cmd("PING"))
                .await
                .map(drop)
                .map_err(|e| describe_connection_error(&e).message)
        };
        match tokio::time::timeout(limit, attempt).await {
            Ok(Ok(())) => return Ok(node.clone()),
            Ok(Err(why)) => tried.push(format!("{node}: {why}")),
            Err(_) => tried.push(format!("{node}: no answer within {} ms", limit.as_millis())),
        }
    }
    Err(ConnectionFailure::new(
        FailureKind::NotConnected,
        format!("no cluster seed node answered (tried {})", tried.join("; ")),
    ))
}
