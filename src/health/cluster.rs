//! The health probe on a Redis Cluster: `CLUSTER SLOTS` from any node gives the shape (which
//! primary serves which slots, and its replicas), then every primary — and every replica, when
//! reads use them — gets its own `PING <token>`, at once, each within the probe timeout, on
//! the connection commands to that node use: a silent connection, or one whose reply is not
//! the token's echo (it lost its reply order), is dropped, and the next command to the node
//! opens a new one. The cluster connection is judged on the `CLUSTER SLOTS` answer (no node
//! answering at all, K times in a row, replaces it); the nodes' answers say which slots are
//! served:
//! - every primary answers (and every replica reads use): the usual healthy / slow verdict;
//! - some do not, or some slots have no primary: [`Verdict::Partial`], naming the slots and
//!   nodes (`Degraded`);
//! - no primary answers: [`Verdict::NotReady`] with [`FailureKind::ClusterDown`] (commands
//!   wait, per the offline policy, for a failover).

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tokio::time::Instant;

use super::{NodeHealth, Probe, Verdict, ping_token};
use crate::config::{Config, NodeAddr};
use crate::error::{ErrorSide, FailureKind, classify, describe_connection_error};
use crate::lane::{Lane, NotReady};
use crate::topology::cluster::{Ranges, Router, SLOTS, Shard, shards};

/// `PING <token>` on the router's own connection to `node` (the one commands use; opened
/// first when there is none). The echo, or a refusal `PING` itself can get (`NOPERM`), proves
/// the node answers in order. A transport failure, or a reply that is not the echo (the
/// connection lost its reply order, and would hand callers each other's replies), drops the
/// connection: the next command opens a new one.
async fn ping_node(router: &Router, addr: &NodeAddr) -> Result<(), String> {
    let node = router.node(addr);
    let mut conn = router
        .conn(&node)
        .await
        .map_err(|e| describe_connection_error(&e).message)?;
    let (ping, token) = ping_token();
    match conn.send_packed_command(&ping).await {
        Ok(Value::BulkString(echo)) if echo == token => Ok(()),
        Ok(Value::SimpleString(echo)) if echo.as_bytes() == token => Ok(()),
        Err(e) if e.code() == Some("NOPERM") => Ok(()),
        Ok(Value::ServerError(e)) if e.code() == "NOPERM" => Ok(()),
        Err(e) if classify(&e) == ErrorSide::Transport => {
            router.broken(&node);
            Err(describe_connection_error(&e).message)
        }
        Ok(_) | Err(_) => {
            router.broken(&node);
            Err("a reply that was not its PING's echo (the connection lost its reply order; replaced)".into())
        }
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
    timeout: Duration,
) -> (Probe, Option<ClusterView>) {
    let Some(router) = lane.cluster() else {
        return (Probe::Answered(Value::Nil), None);
    };
    let reply = match tokio::time::timeout(timeout, slots_reply(&router)).await {
        Err(_) => {
            let reason = format!(
                "no reply to CLUSTER SLOTS within {} ms",
                timeout.as_millis()
            );
            return (no_answer(reason), None);
        }
        Ok(Err(reason)) => return (no_answer(reason), None),
        // A refusal to say (an ACL without `cluster`) still proves the node answers.
        Ok(Ok(Err(_) | Ok(Value::ServerError(_)))) => return (Probe::Answered(Value::Nil), None),
        Ok(Ok(Ok(v))) => v,
    };
    let (shards, covered) = shards(&reply);
    // The router follows what the probe sees (a failover without a MOVED to tell it).
    if !shards.is_empty() {
        router.install(shards.clone());
    }
    let targets = targets(&shards, config.cluster_read_from_replicas());
    let nodes = ping_all(&router, targets, timeout).await;
    let view = ClusterView {
        shards,
        covered,
        nodes,
    };
    (Probe::Answered(reply), Some(view))
}

fn no_answer(reason: String) -> Probe {
    Probe::NoAnswer {
        reason,
        busy: false,
    }
}

/// `CLUSTER SLOTS` from any primary: one that cannot be reached is passed over (its own `PING`
/// says so), so that one dead node does not make every third probe a failure of the cluster.
/// `Err` says why none answered.
async fn slots_reply(router: &Router) -> Result<redis::RedisResult<Value>, String> {
    let mut slots = redis::cmd("CLUSTER");
    slots.arg("SLOTS");
    let mut why = "no primary known".to_string();
    for _ in 0..router.primaries().len().max(1) {
        let Some(node) = router.any_primary() else {
            break;
        };
        let reply = match router.conn(&node).await {
            Ok(mut conn) => conn.send_packed_command(&slots).await,
            Err(e) => Err(e),
        };
        match reply {
            Err(e) if classify(&e) == ErrorSide::Transport => {
                router.broken(&node);
                why = format!("{}: {}", node.addr, describe_connection_error(&e).message);
            }
            other => return Ok(other),
        }
    }
    Err(why)
}

/// The nodes to `PING`: every primary with its slots, then (when reads use them) every
/// replica with its primary's slots.
fn targets(shards: &[Shard], replicas: bool) -> Vec<(NodeAddr, &'static str, String)> {
    let mut targets: Vec<_> = shards
        .iter()
        .map(|s| (s.primary.clone(), "primary", Ranges(&s.slots).to_string()))
        .collect();
    if replicas {
        for s in shards {
            let ranges = Ranges(&s.slots).to_string();
            targets.extend(
                s.replicas
                    .iter()
                    .map(|r| (r.clone(), "replica", ranges.clone())),
            );
        }
    }
    targets
}

/// `PING`s every target at once, each within `timeout`.
async fn ping_all(
    router: &Router,
    targets: Vec<(NodeAddr, &'static str, String)>,
    timeout: Duration,
) -> Vec<NodeHealth> {
    let pings: Vec<_> = targets
        .into_iter()
        .map(|(node, role, slots)| {
            let router = router.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                let (up, error) =
                    match tokio::time::timeout(timeout, ping_node(&router, &node)).await {
                        Err(_) => {
                            // A connection that stays silent is not kept: a half-open one
                            // would hold every command sent to this node.
                            router.broken(&router.node(&node));
                            let why = format!("no reply within {} ms", timeout.as_millis());
                            (false, Some(why))
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
    nodes
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
