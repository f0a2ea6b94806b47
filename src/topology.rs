//! Topology: the one seam for the ways Redis is deployed — a standalone server, the master a set
//! of sentinels names (`topology/sentinel.rs`), or a Redis Cluster (`topology/cluster.rs`: the
//! crate's own router, one connection per node, routing by slot). Every connection (command,
//! subscriber, blocking, leased) finds its server here, so after a failover they all follow the
//! same master; nothing above this module matches on the configuration's kind.

use std::sync::Arc;

use crate::config::{Config, NodeAddr};
use crate::error::{ConnectionFailure, describe_connection_error};

pub(crate) mod cluster;
mod sentinel;

pub(crate) use sentinel::{SentinelShared, SentinelView};

/// The ways Redis is deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// One server at the configured address.
    Standalone,
    /// The master the configured sentinels name.
    Sentinel,
    /// The Redis Cluster the configured seed nodes belong to. The command connection routes by
    /// slot ([`cluster::Router`]); a connection that needs one node (the subscriber) takes the
    /// first seed node that answers.
    Cluster,
}

impl Kind {
    /// The name `/health/redis` shows: `standalone`, `sentinel` or `cluster`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Standalone => "standalone",
            Kind::Sentinel => "sentinel",
            Kind::Cluster => "cluster",
        }
    }
}

/// Where connections go: the deployment's kind, and what is known of it (with Sentinel, the
/// sentinels and the master followed). Cheap to clone; one per supervisor.
#[derive(Clone)]
pub(crate) struct Topology {
    kind: Kind,
    sentinel: Option<Arc<SentinelShared>>,
}

/// The server found for the next connection.
pub(crate) struct Located {
    /// A redis-rs client for it (TLS and credentials applied).
    pub(crate) client: redis::Client,
    /// Its address.
    pub(crate) address: NodeAddr,
    /// Whether the connection must check (with `ROLE`) that it reached a master: a sentinel's
    /// answer may be a failover behind.
    pub(crate) verify_master: bool,
}

impl Topology {
    /// The topology `config` describes.
    pub(crate) fn of(config: &Arc<Config>) -> Self {
        let kind = if !config.cluster_nodes().is_empty() {
            Kind::Cluster
        } else if config.sentinels().is_empty() {
            Kind::Standalone
        } else {
            Kind::Sentinel
        };
        Topology {
            kind,
            sentinel: (kind == Kind::Sentinel).then(|| SentinelShared::new(config.clone())),
        }
    }

    /// The deployment's kind.
    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// With Sentinel: what is known of the sentinels and the master.
    pub(crate) fn sentinel(&self) -> Option<&Arc<SentinelShared>> {
        self.sentinel.as_ref()
    }

    /// Whether keys are spread over hash slots (a cluster): the keys one command or script
    /// touches must share a slot, so the patterns put what their keys share in a `{hash tag}`,
    /// and whatever is per node (keyspace notifications, `SCAN`) is per node.
    pub(crate) fn slotted(&self) -> bool {
        self.kind == Kind::Cluster
    }

    /// The positions of `keys` grouped so that each group can go in one pipeline: by hash
    /// slot on a cluster (in order of first appearance), all in one group elsewhere.
    pub(crate) fn slot_groups<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) -> Vec<Vec<usize>> {
        if !self.slotted() {
            return vec![keys.enumerate().map(|(i, _)| i).collect()];
        }
        let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
        for (i, key) in keys.enumerate() {
            let slot = cluster::key_slot(key);
            match groups.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, group)) => group.push(i),
                None => groups.push((slot, vec![i])),
            }
        }
        groups.into_iter().map(|(_, group)| group).collect()
    }

    /// Whether the server connected to must be the master the sentinels name: one that says it
    /// is a replica (a failover demoted it) is left.
    pub(crate) fn follows_sentinels(&self) -> bool {
        self.kind == Kind::Sentinel
    }

    /// True while a Sentinel promotion is followed before the sentinels name the new master.
    pub(crate) fn promoting(&self) -> bool {
        self.sentinel
            .as_ref()
            .is_some_and(|s| s.promoting().is_some())
    }

    /// The one address every connection goes to (one server), to watch for its return after a
    /// refused attempt; `None` where each attempt asks where to go (Sentinel, Cluster).
    pub(crate) fn fixed_address(&self, config: &Config) -> Option<NodeAddr> {
        (self.kind == Kind::Standalone).then(|| NodeAddr {
            host: config.host().to_string(),
            port: config.port(),
        })
    }

    /// Finds the server the next connection goes to.
    pub(crate) async fn locate(&self, config: &Config) -> Result<Located, ConnectionFailure> {
        let address = match self.kind {
            Kind::Standalone => NodeAddr {
                host: config.host().to_string(),
                port: config.port(),
            },
            Kind::Sentinel => sentinel::locate_master(config, self.sentinel.as_deref()).await?,
            Kind::Cluster => cluster::any_node(config).await?,
        };
        let client = config
            .redis_client_at(&address.host, address.port)
            .map_err(|e| describe_connection_error(&e))?;
        Ok(Located {
            client,
            address,
            verify_master: self.kind == Kind::Sentinel,
        })
    }
}
