//! Finding the master through Sentinel: ask each configured sentinel in order, within the
//! connect timeout each, `SENTINEL GET-MASTER-ADDR-BY-NAME <master>`; the first answer wins. The
//! connection then checks `ROLE` on the node it reached (a sentinel can be a failover behind).
//! Following failovers afterwards is the sentinel watcher's job.

use std::time::Duration;

use crate::config::{Config, NodeAddr};
use crate::error::{ConnectionFailure, FailureKind, describe_connection_error};

/// The master's address, from the first sentinel that knows it.
pub(super) async fn locate_master(config: &Config) -> Result<NodeAddr, ConnectionFailure> {
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
