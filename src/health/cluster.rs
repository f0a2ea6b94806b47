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

use std::time::Duration;

use redis::Value;
use redis::aio::ConnectionLike;
use tokio::time::Instant;

use super::{NodeHealth, Probe, Verdict};
use crate::config::NodeAddr;
use crate::error::{ErrorSide, FailureKind, classify, describe_connection_error};
use crate::lane::{Lane, NotReady};
use crate::topology::cluster::{Ranges, SLOTS, Shard, at, shards};

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
    timeout: Duration,
    replicas: bool,
) -> (Probe, Option<ClusterView>) {
    let Some(mut conn) = lane.cluster() else {
        return (Probe::Answered(Value::Nil), None);
    };
    let mut slots = redis::cmd("CLUSTER");
    slots.arg("SLOTS");
    let reply = match tokio::time::timeout(timeout, conn.req_packed_command(&slots)).await {
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
        Ok(Err(e)) if classify(&e) == ErrorSide::Transport => {
            let reason = describe_connection_error(&e).message;
            return (
                Probe::NoAnswer {
                    reason,
                    busy: false,
                },
                None,
            );
        }
        Ok(Err(_)) => return (Probe::Answered(Value::Nil), None),
        Ok(Ok(Value::ServerError(_))) => return (Probe::Answered(Value::Nil), None),
        Ok(Ok(v)) => v,
    };
    let (shards, covered) = shards(&reply);
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
            let mut conn = conn.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                let ping = conn.route_command(redis::cmd("PING"), at(&node));
                let (up, error) = match tokio::time::timeout(timeout, ping).await {
                    Err(_) => (
                        false,
                        Some(format!("no reply within {} ms", timeout.as_millis())),
                    ),
                    Ok(Err(e))
                        if classify(&e) == ErrorSide::Transport
                            || e.kind() == redis::ErrorKind::ClusterConnectionNotFound =>
                    {
                        (false, Some(describe_connection_error(&e).message))
                    }
                    // Any other answer (even NOPERM) proves the node is there.
                    Ok(_) => (true, None),
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
