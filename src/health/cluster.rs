//! The health probe on a Redis Cluster: `CLUSTER SLOTS` from any node gives the shape (which
//! primary serves which slots, and its replicas), then every primary — and every replica, when
//! reads use them — gets its own `PING`, at once, each within the probe timeout. The cluster
//! connection is judged on the `CLUSTER SLOTS` answer (no node answering at all, K times in a
//! row, replaces it); the nodes' answers say which slots are served:
//! - every primary answers (and every replica reads use): the usual healthy / slow verdict;
//! - some do not, or some slots have no primary: [`Verdict::Partial`], naming the slots and
//!   nodes (`Degraded`);
//! - no primary answers: [`Verdict::NotReady`] with [`FailureKind::ClusterDown`] (commands
//!   wait, per the offline policy, for a failover).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::time::Instant;

use super::{NodeHealth, Probe, Verdict};
use crate::config::{Config, NodeAddr};
use crate::error::{ErrorSide, FailureKind, classify, describe_connection_error};
use crate::lane::{Lane, NotReady};
use crate::sync::lock;
use crate::topology::cluster::{Ranges, SLOTS, Shard, open_node, shards};

/// The health actor's own connection to each node it probes. Not the cluster client's: a
/// request to a node redis-rs has no connection for makes it reconnect to every seed, and a
/// probe must see a node as it is, not as the cluster client's repairs leave it.
pub(super) type NodeConns = Arc<Mutex<HashMap<NodeAddr, MultiplexedConnection>>>;

/// `PING` on the health actor's connection to `node` (opened first when there is none). Any
/// answer, even an error such as `NOPERM`, proves the node is there; a transport failure
/// drops the connection (the next probe opens a new one) and says why.
async fn ping_node(config: &Config, conns: &NodeConns, node: &NodeAddr) -> Result<(), String> {
    let existing = lock(conns).get(node).cloned();
    let mut conn = match existing {
        Some(conn) => conn,
        None => {
            let conn = open_node(config, node)
                .await
                .map_err(|e| describe_connection_error(&e).message)?;
            lock(conns).insert(node.clone(), conn.clone());
            conn
        }
    };
    match conn.send_packed_command(&redis::cmd("PING")).await {
        Err(e) if classify(&e) == ErrorSide::Transport => {
            lock(conns).remove(node);
            Err(describe_connection_error(&e).message)
        }
        _ => Ok(()),
    }
}

/// What one cluster probe found.
pub(super) struct ClusterView {
    pub(super) shards: Vec<Shard>,
    /// Slots with a primary, of 16 384.
    pub(super) covered: u32,
    /// Every node probed, primaries first (in shard order), then replicas.
    pub(super) nodes: Vec<NodeHealth>,
}

/// Probes the cluster behind `lane` (see the module docs). Without a view (`None`), the probe
/// outcome is `CLUSTER SLOTS`'s own: no answer, or a refusal to say (an ACL without
/// `cluster`), which counts as an answer.
pub(super) async fn probe(
    lane: &Lane,
    config: &Arc<Config>,
    conns: &NodeConns,
    timeout: Duration,
) -> (Probe, Option<ClusterView>) {
    let replicas = config.cluster_read_from_replicas();
    let Some(router) = lane.cluster() else {
        return (Probe::Answered(Value::Nil), None);
    };
    let mut slots = redis::cmd("CLUSTER");
    slots.arg("SLOTS");
    // Any primary will do: one that cannot be reached is passed over (its own PING below says
    // so), so that one dead node does not make every third probe a failure of the cluster.
    let ask = async {
        let mut why = "no primary known".to_string();
        for _ in 0..router.primaries().len().max(1) {
            let Some(node) = router.any_primary() else {
                break;
            };
            let mut conn = match router.conn(&node).await {
                Ok(conn) => conn,
                Err(e) => {
                    router.broken(&node);
                    why = format!("{}: {}", node.addr, describe_connection_error(&e).message);
                    continue;
                }
            };
            match conn.send_packed_command(&slots).await {
                Err(e) if classify(&e) == ErrorSide::Transport => {
                    router.broken(&node);
                    why = format!("{}: {}", node.addr, describe_connection_error(&e).message);
                }
                other => return Ok(other),
            }
        }
        Err(why)
    };
    let reply = match tokio::time::timeout(timeout, ask).await {
        Err(_) => {
            let reason = format!(
                "no reply to CLUSTER SLOTS within {} ms",
                timeout.as_millis()
            );
            return (
                Probe::NoAnswer {
                    reason,
                    busy: false,
                },
                None,
            );
        }
        Ok(Err(reason)) => {
            return (
                Probe::NoAnswer {
                    reason,
                    busy: false,
                },
                None,
            );
        }
        // A refusal to say (an ACL without `cluster`) still proves the node answers.
        Ok(Ok(Err(_) | Ok(Value::ServerError(_)))) => return (Probe::Answered(Value::Nil), None),
        Ok(Ok(Ok(v))) => v,
    };
    let (shards, covered) = shards(&reply);
    // The router follows what the probe sees (a failover without a MOVED to tell it).
    if !shards.is_empty() {
        router.install(shards.clone());
    }
    let mut targets: Vec<(NodeAddr, &'static str, String)> = shards
        .iter()
        .map(|s| (s.primary.clone(), "primary", Ranges(&s.slots).to_string()))
        .collect();
    if replicas {
        for s in &shards {
            let ranges = Ranges(&s.slots).to_string();
            targets.extend(
                s.replicas
                    .iter()
                    .map(|r| (r.clone(), "replica", ranges.clone())),
            );
        }
    }
    let pings: Vec<_> = targets
        .into_iter()
        .map(|(node, role, slots)| {
            let (config, conns) = (config.clone(), conns.clone());
            tokio::spawn(async move {
                let start = Instant::now();
                let ping = ping_node(&config, &conns, &node);
                let (up, error) = match tokio::time::timeout(timeout, ping).await {
                    Err(_) => {
                        // A connection that stays silent is not kept for the next probe.
                        lock(&conns).remove(&node);
                        (
                            false,
                            Some(format!("no reply within {} ms", timeout.as_millis())),
                        )
                    }
                    Ok(Err(why)) => (false, Some(why)),
                    Ok(Ok(())) => (true, None),
                };
                NodeHealth {
                    node: node.to_string(),
                    role,
                    slots,
                    up,
                    ping: up.then(|| start.elapsed()),
                    error,
                }
            })
        })
        .collect();
    let mut nodes = Vec::with_capacity(pings.len());
    for p in pings {
        // A probe task cannot panic; a cancelled one (runtime shutting down) says nothing.
        if let Ok(n) = p.await {
            nodes.push(n);
        }
    }
    let view = ClusterView {
        shards,
        covered,
        nodes,
    };
    (Probe::Answered(reply), Some(view))
}

impl ClusterView {
    /// The shape, one line per shard in slot order: `primary slots [replicas …]`.
    pub(super) fn shape(&self) -> Vec<String> {
        let mut shards: Vec<&Shard> = self.shards.iter().collect();
        shards.sort_by_key(|s| s.slots.first().copied());
        shards
            .iter()
            .map(|s| {
                let mut line = format!("{} {}", s.primary, Ranges(&s.slots));
                if !s.replicas.is_empty() {
                    let r: Vec<String> = s.replicas.iter().map(ToString::to_string).collect();
                    line.push_str(&format!(" replicas {}", r.join(",")));
                }
                line
            })
            .collect()
    }

    /// The slots whose primary answered.
    pub(super) fn served(&self) -> u32 {
        let unserved: u32 = self
            .nodes
            .iter()
            .filter(|n| n.role == "primary" && !n.up)
            .map(NodeHealth::slot_count)
            .sum();
        self.covered.saturating_sub(unserved)
    }

    /// The slowest answering node's round trip.
    pub(super) fn slowest(&self) -> Option<Duration> {
        self.nodes.iter().filter_map(|n| n.ping).max()
    }

    /// Why not all is well: slots unserved, replicas that reads use not answering, or no
    /// primary at all. `None` when every node answered and every slot has a primary.
    pub(super) fn problem(&self) -> Option<Verdict> {
        let down: Vec<&NodeHealth> = self.nodes.iter().filter(|n| !n.up).collect();
        let primaries = self.nodes.iter().filter(|n| n.role == "primary").count();
        let primaries_down = down.iter().filter(|n| n.role == "primary").count();
        let mut why: Vec<String> = down
            .iter()
            .map(|n| match n.role {
                "primary" => format!(
                    "slots {} unserved: primary {} does not answer ({})",
                    n.slots,
                    n.node,
                    n.error.as_deref().unwrap_or("no answer")
                ),
                _ => format!(
                    "replica {} of slots {} does not answer ({})",
                    n.node,
                    n.slots,
                    n.error.as_deref().unwrap_or("no answer")
                ),
            })
            .collect();
        if self.covered < SLOTS {
            why.push(format!(
                "{} of {SLOTS} slots have no primary",
                SLOTS - self.covered
            ));
        }
        if why.is_empty() {
            return None;
        }
        let why = why.join("; ");
        if primaries == 0 || primaries_down == primaries {
            return Some(Verdict::NotReady(NotReady {
                kind: FailureKind::ClusterDown,
                message: format!("no cluster primary answers: {why}"),
            }));
        }
        Some(Verdict::Partial(why))
    }
}
