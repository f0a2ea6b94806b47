//! The HTTP routes a service merges into its own axum app: `/health` (JSON; 200 when commands
//! can be served, 503 otherwise) and `/health/live` (200 while the supervisor runs).
//!
//! ```no_run
//! # async fn run(supervisor: &redis_supervisor::Supervisor) {
//! let app = axum::Router::new().merge(redis_supervisor::http::router(supervisor));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9180").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::availability::Availability;
use crate::supervisor::{Shared, Supervisor};

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

/// The routes for one supervisor: `/health`, `/health/live`.
pub fn router(supervisor: &Supervisor) -> axum::Router {
    router_for(supervisor.shared())
}

pub(crate) fn router_for(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/health", get(health))
        .route("/health/live", get(live))
        .with_state(shared)
}

fn report(shared: &Shared) -> HealthReport {
    let availability = shared.availability.current();
    HealthReport {
        status: if availability.is_serving() {
            "up"
        } else {
            "down"
        },
        client: shared.config.name().to_string(),
        url: shared.config.redacted_url(),
        availability,
        restarts: shared.restarts.load(std::sync::atomic::Ordering::Relaxed),
    }
}

async fn health(State(shared): State<Arc<Shared>>) -> Response {
    let report = report(&shared);
    (status_code(&report.availability), Json(report)).into_response()
}

async fn live(State(shared): State<Arc<Shared>>) -> Response {
    let availability = shared.availability.current();
    if availability == Availability::Stopped {
        (StatusCode::SERVICE_UNAVAILABLE, "stopped\n").into_response()
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
                retry_in: Duration::from_millis(1),
            },
            Availability::Stopped,
        ] {
            assert_eq!(status_code(&a), StatusCode::SERVICE_UNAVAILABLE);
        }
    }
}
