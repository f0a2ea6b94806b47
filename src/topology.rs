//! Topology: how a connection actor finds the server it connects to. This is the one seam for
//! the ways Redis is deployed — a standalone server today; Sentinel master resolution and the
//! Cluster slot map plug in here — so the actors never branch on the deployment themselves.

use crate::config::Config;
use crate::error::{ConnectionFailure, describe_connection_error};

/// Where a connection actor connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Topology {
    /// One server at the configured address.
    Standalone,
}

/// The server found for the next connection.
pub(crate) struct Located {
    /// A redis-rs client for it (TLS and credentials applied).
    pub(crate) client: redis::Client,
    /// `host:port`, for messages.
    pub(crate) address: String,
}

impl Topology {
    /// The topology `config` describes.
    pub(crate) fn of(_config: &Config) -> Self {
        Topology::Standalone
    }

    /// Finds the server the next connection goes to.
    pub(crate) async fn locate(self, config: &Config) -> Result<Located, ConnectionFailure> {
        match self {
            Topology::Standalone => Ok(Located {
                client: config
                    .redis_client()
                    .map_err(|e| describe_connection_error(&e))?,
                address: format!("{}:{}", config.host(), config.port()),
            }),
        }
    }
}
