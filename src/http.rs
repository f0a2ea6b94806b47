//! The HTTP routes a service merges into its own axum app.
//!
//! Per supervisor ([`router`]):
//! - `/health` — JSON [`HealthReport`]; 200 when commands can be served (`Up`, `Degraded`), 503
//!   otherwise;
//! - `/health/live` — 200 while the supervisor runs (the process is alive and supervising), 503
//!   once it has stopped;
//! - `/health/ready` — 200 only when commands can be served, else 503;
//! - `/health/redis` — JSON [`RedisReport`]: status, ping latency, version, role, memory used and
//!   max, uptime, connected clients, restarts, last error (redacted); same status code as
//!   `/health`.
//!
//! Per process ([`metrics_router`]): `/metrics`, the Prometheus text of the recorder you
//! installed (see [`crate::metrics::prometheus_builder`]).
//!
//! ```no_run
//! # async fn run(supervisor: &redis_supervisor::Supervisor) {
//! let prometheus = redis_supervisor::metrics::prometheus_builder()
//!     .install_recorder()
//!     .expect("first recorder of this process");
//! let app = axum::Router::new()
//!     .merge(redis_supervisor::http::router(supervisor))
//!     .merge(redis_supervisor::http::metrics_router(prometheus));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9180").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::availability::Availability;
use crate::supervisor::{Status, Supervisor};
use crate::topology::Kind;

/// The body of `/health`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HealthReport {
    /// `"up"` when commands can be served, `"down"` otherwise.
    pub status: &'static str,
    /// The supervisor's name (`client` metric label).
    pub client: String,
    /// The server URL, password redacted.
    pub url: String,
    /// The current availability state, with its details.
    pub availability: Availability,
    /// Connection restarts so far.
    pub restarts: u64,
}

/// The HTTP status a state maps to: 200 when commands can be served (`Up`, `Degraded`),
/// 503 otherwise.
pub fn status_code(availability: &Availability) -> StatusCode {
    if availability.is_serving() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// The body of `/health/redis`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RedisReport {
    /// `"up"` when commands can be served, `"down"` otherwise.
    pub status: &'static str,
    /// The availability state name (`up`, `degraded`, `down`, …).
    pub state: &'static str,
    /// The supervisor's name.
    pub client: String,
    /// The server URL, password redacted.
    pub url: String,
    /// Round trip of the last successful health probe, in milliseconds (absent while down).
    pub ping_ms: Option<f64>,
    /// `redis_version` of the server last connected.
    pub version: Option<String>,
    /// `role` of the server last connected.
    pub role: Option<String>,
    /// `used_memory`, bytes.
    pub memory_used_bytes: Option<u64>,
    /// `maxmemory`, bytes (0: no limit).
    pub memory_max_bytes: Option<u64>,
    /// `uptime_in_seconds`.
    pub uptime_seconds: Option<u64>,
    /// `connected_clients`.
    pub connected_clients: Option<u64>,
    /// Connection restarts so far.
    pub restarts: u64,
    /// Whether the connection uses TLS.
    pub tls: bool,
    /// Whether the server certificate is verified (false only with the insecure option).
    pub tls_verify: bool,
    /// Why the connection was last lost (secret-free), if it ever was.
    pub last_error: Option<String>,
    /// The kind of that failure (`refused`, `authentication`, `tls`, `unhealthy`, …).
    pub last_error_kind: Option<crate::FailureKind>,
    /// When that was, in milliseconds since the Unix epoch.
    pub last_error_at_unix_ms: Option<u64>,
    /// The pub/sub subscriber connection.
    pub pubsub: PubSubReport,
    /// The blocking-command pool.
    pub blocking: BlockingReport,
    /// How the server is found: standalone, or the master named by Sentinel.
    pub topology: TopologyReport,
    /// Each lane ([`Config::lanes`](crate::Config::lanes) of them), in order.
    pub lanes: Vec<LaneReport>,
}

/// One lane in `/health/redis`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LaneReport {
    /// Its number, from 0.
    pub lane: usize,
    /// `connecting`, `up`, `not_ready` or `down`.
    pub state: &'static str,
    /// The server it is connected to (`host:port`).
    pub address: Option<String>,
    /// Why it was last lost (secret-free).
    pub last_error: Option<String>,
    /// Commands outstanding on it now (counted with more than one lane only).
    pub outstanding: usize,
    /// Commands answered on its current connection (counted with more than one lane only).
    pub served: u64,
}

/// The topology part of `/health/redis`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TopologyReport {
    /// `standalone`, `sentinel` or `cluster`.
    pub kind: &'static str,
    /// The master (`host:port`): the configured server, or the one the sentinels named last;
    /// absent on a cluster (see `nodes`).
    pub master: Option<String>,
    /// With Sentinel: every sentinel known (configured, then discovered).
    pub sentinels: Vec<String>,
    /// With Sentinel: the sentinel the watcher follows now.
    pub watching: Option<String>,
    /// On a cluster: every node of the last health probe, primaries first.
    pub nodes: Vec<ClusterNodeReport>,
}

/// One Redis Cluster node in `/health/redis`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClusterNodeReport {
    /// `host:port`.
    pub node: String,
    /// `primary` or `replica`.
    pub role: &'static str,
    /// The slots of its shard, e.g. `0-5460`.
    pub slots: String,
    /// Whether it answered the last probe.
    pub up: bool,
    /// That probe's round trip, in milliseconds.
    pub ping_ms: Option<f64>,
    /// Why it did not answer (secret-free).
    pub error: Option<String>,
}

/// The pub/sub part of `/health/redis`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct PubSubReport {
    /// Whether the subscriber connection is up with every subscription confirmed (false before
    /// the first subscription opens it).
    pub up: bool,
    /// Live subscriptions.
    pub subscriptions: usize,
}

/// The blocking-pool part of `/health/redis`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct BlockingReport {
    /// Dedicated connections open now.
    pub connections: usize,
    /// Blocking commands running now.
    pub in_use: usize,
    /// The most that may run at once ([`Config::blocking_connections`](crate::Config::blocking_connections)).
    pub limit: usize,
}

/// The routes for one supervisor: `/health`, `/health/live`, `/health/ready`, `/health/redis`.
pub fn router(supervisor: &Supervisor) -> axum::Router {
    axum::Router::new()
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/health/redis", get(redis_report))
        .with_state(supervisor.status())
}

/// `/metrics`: the Prometheus text exposition of `handle`'s recorder.
pub fn metrics_router(handle: metrics_exporter_prometheus::PrometheusHandle) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(render_metrics))
        .with_state(handle)
}

async fn render_metrics(
    State(handle): State<metrics_exporter_prometheus::PrometheusHandle>,
) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

async fn ready(State(status): State<Status>) -> Response {
    let availability = status.availability();
    let status = status_code(&availability);
    let body = if status == StatusCode::OK {
        "ready\n".to_string()
    } else {
        format!("not ready: {availability}\n")
    };
    (status, body).into_response()
}

async fn redis_report(State(status): State<Status>) -> Response {
    let availability = status.availability();
    let snapshot = status.health();
    let stats = snapshot.stats.as_ref();
    let serving = availability.is_serving();
    let report = RedisReport {
        status: if serving { "up" } else { "down" },
        state: availability.name(),
        client: status.config().name().to_string(),
        url: status.config().redacted_url(),
        ping_ms: snapshot
            .ping
            .filter(|_| serving)
            .map(|d| d.as_secs_f64() * 1000.0),
        version: stats.map(|s| s.version.clone()),
        role: stats.map(|s| s.role.clone()),
        memory_used_bytes: stats.map(|s| s.memory_used_bytes),
        memory_max_bytes: stats.map(|s| s.memory_max_bytes),
        uptime_seconds: stats.map(|s| s.uptime_seconds),
        connected_clients: stats.map(|s| s.connected_clients),
        restarts: status.restarts(),
        tls: status.config().tls(),
        tls_verify: status.config().tls() && !status.config().tls_insecure_skip_verify(),
        last_error: snapshot.last_error.as_ref().map(|(e, _, _)| e.clone()),
        last_error_kind: snapshot.last_error.as_ref().map(|(_, k, _)| *k),
        last_error_at_unix_ms: snapshot.last_error.as_ref().map(|(_, _, at)| unix_ms(*at)),
        pubsub: {
            let (up, subscriptions) = status.pubsub();
            PubSubReport { up, subscriptions }
        },
        blocking: {
            let (connections, in_use) = status.blocking();
            BlockingReport {
                connections,
                in_use,
                limit: status.config().blocking_connections(),
            }
        },
        lanes: lanes_report(&status),
        topology: topology_report(&status, &snapshot),
    };
    (status_code(&availability), Json(report)).into_response()
}

/// Milliseconds since the Unix epoch (0 before it).
fn unix_ms(at: std::time::SystemTime) -> u64 {
    let ms = at
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// Each lane of the connection, for `/health/redis`.
fn lanes_report(status: &Status) -> Vec<LaneReport> {
    status
        .lanes()
        .into_iter()
        .enumerate()
        .map(|(lane, l)| LaneReport {
            lane,
            state: l.state,
            address: l.address,
            last_error: l.last_error,
            outstanding: l.outstanding,
            served: l.served,
        })
        .collect()
}

/// Where the connection goes, for `/health/redis`: the server, the Sentinel view, or the
/// cluster's nodes as the last probe saw them.
fn topology_report(status: &Status, snapshot: &crate::health::HealthSnapshot) -> TopologyReport {
    match status.sentinel() {
        _ if status.topology() == Kind::Cluster => TopologyReport {
            kind: Kind::Cluster.name(),
            master: None,
            sentinels: Vec::new(),
            watching: None,
            nodes: snapshot
                .cluster
                .iter()
                .map(|n| ClusterNodeReport {
                    node: n.node.clone(),
                    role: n.role,
                    slots: n.slots.clone(),
                    up: n.up,
                    ping_ms: n.ping.map(|d| d.as_secs_f64() * 1000.0),
                    error: n.error.clone(),
                })
                .collect(),
        },
        Some(view) => TopologyReport {
            kind: Kind::Sentinel.name(),
            master: view.master.map(|m| m.to_string()),
            sentinels: view.known.iter().map(ToString::to_string).collect(),
            watching: view.watching.map(|w| w.to_string()),
            nodes: Vec::new(),
        },
        None => TopologyReport {
            kind: Kind::Standalone.name(),
            master: Some(format!(
                "{}:{}",
                status.config().host(),
                status.config().port()
            )),
            sentinels: Vec::new(),
            watching: None,
            nodes: Vec::new(),
        },
    }
}

fn report(status: &Status) -> HealthReport {
    let availability = status.availability();
    HealthReport {
        status: if availability.is_serving() {
            "up"
        } else {
            "down"
        },
        client: status.config().name().to_string(),
        url: status.config().redacted_url(),
        availability,
        restarts: status.restarts(),
    }
}

async fn health(State(status): State<Status>) -> Response {
    let report = report(&status);
    (status_code(&report.availability), Json(report)).into_response()
}

async fn live(State(status): State<Status>) -> Response {
    let availability = status.availability();
    if matches!(
        availability,
        Availability::Stopped | Availability::GaveUp { .. }
    ) {
        (StatusCode::SERVICE_UNAVAILABLE, format!("{availability}\n")).into_response()
    } else {
        (StatusCode::OK, "alive\n").into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn state_to_status() {
        let up = Availability::Up {
            server_version: "7".into(),
            role: "master".into(),
            address: "127.0.0.1:6379".into(),
        };
        assert_eq!(status_code(&up), StatusCode::OK);
        assert_eq!(
            status_code(&Availability::Degraded {
                reason: "slow".into()
            }),
            StatusCode::OK
        );
        for a in [
            Availability::Connecting { attempt: 1 },
            Availability::Down {
                error: "x".into(),
                kind: crate::FailureKind::Other,
                retry_in: Duration::from_millis(1),
            },
            Availability::Stopped,
        ] {
            assert_eq!(status_code(&a), StatusCode::SERVICE_UNAVAILABLE);
        }
    }
}
