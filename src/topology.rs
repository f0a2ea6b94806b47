//! Topology: how a connection actor finds the server it connects to. This is the one seam for
//! the ways Redis is deployed — a standalone server, or the master a set of sentinels names
//! (`topology/sentinel.rs`), or a Redis Cluster (`topology/cluster.rs`: the command connection is
//! redis-rs's cluster client, routing by slot) — so the actors never branch on the deployment
//! themselves. Every connection (command, subscriber, blocking) locates its
//! server here, so after a failover they all follow the same master.

use crate::config::{Config, NodeAddr};
use crate::error::{ConnectionFailure, describe_connection_error};

pub(crate) mod cluster;
mod sentinel;

/// Where a connection actor connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Topology {
    /// One server at the configured address.
    Standalone,
    /// The master the configured sentinels name.
    Sentinel,
    /// The Redis Cluster the configured seed nodes belong to. The command connection routes by
    /// slot ([`cluster::connect`]); a connection that needs one node (the subscriber) takes the
    /// first seed node that answers.
    Cluster,
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
    pub(crate) fn of(config: &Config) -> Self {
        if !config.cluster_nodes().is_empty() {
            Topology::Cluster
        } else if config.sentinels().is_empty() {
            Topology::Standalone
        } else {
            Topology::Sentinel
        }
    }

    /// Finds the server the next connection goes to.
    pub(crate) async fn locate(self, config: &Config) -> Result<Located, ConnectionFailure> {
        let address = match self {
            Topology::Standalone => NodeAddr {
                host: config.host().to_string(),
                port: config.port(),
            },
            Topology::Sentinel => sentinel::locate_master(config).await?,
            Topology::Cluster => cluster::any_node(config).await?,
        };
        let client = config
            .redis_client_at(&address.host, address.port)
            .map_err(|e| describe_connection_error(&e))?;
        Ok(Located {
            client,
            address,
            verify_master: self == Topology::Sentinel,
        })
    }
}
