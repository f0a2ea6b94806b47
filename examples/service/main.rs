//! An example web service on redis-supervisor, like the Express backends teams write by hand:
//! sessions, cached API routes, rate limits, presence, live updates, a job queue, health checks,
//! metrics and graceful shutdown — and it keeps serving what it can while Redis is away.
//!
//! ```text
//! cargo run --example service        # listens on 127.0.0.1:3000, Redis at redis://127.0.0.1:6379
//! ```
//!
//! The routes are in `app.rs` (which `tests/process/service.rs` drives against a real `redis-server`);
//! `docs/service.md` walks through them with `curl`.
//!
//! Settings: the crate's `REDIS_*` variables (`REDIS_URL`, …; `REDIS_KEY_PREFIX` defaults to
//! `service:` here, so the example's keys stay apart on a shared Redis), and `LISTEN_ADDR`
//! (default `127.0.0.1:3000`), `API_RATE_LIMIT_PER_MIN` (60), `API_RATE_LIMIT_BURST` (30),
//! `ITEMS_DB_DELAY_MS` (100), `SHUTDOWN_TIMEOUT_MS` (10000). `RUST_LOG` sets the log filter
//! (default `info`).
//!
//! SIGTERM or SIGINT: open event streams end, the server stops accepting and drains its
//! connections (at most `SHUTDOWN_TIMEOUT_MS`), the job worker stops, the supervisor shuts down
//! (QUIT), and the process exits 0.
//!
//! Dependencies it uses, for a service of your own: `redis-supervisor`, `axum` 0.8, `tokio`
//! (`full`), `serde` + `serde_json`, `metrics-exporter-prometheus` 0.18 (default features off),
//! `futures-core`, `thiserror`, `tracing` + `tracing-subscriber`, `redis` (for `redis::cmd`, also
//! re-exported as `redis_supervisor::redis`).

// Some of the app's accessors (router, database, jobs) are there for tests/process/service.rs.
#[allow(dead_code)]
mod app;

use std::process::ExitCode;
use std::time::Duration;

use redis_supervisor::{Config, Supervisor};
use tracing_subscriber::EnvFilter;

/// The key prefix when `REDIS_KEY_PREFIX` is not set.
const DEFAULT_KEY_PREFIX: &str = "service:";
/// How long the service waits for Redis before it starts serving anyway.
const STARTUP_WAIT: Duration = Duration::from_secs(3);

/// The crate's `REDIS_*` settings, with the example's own default key prefix.
fn redis_config() -> Result<Config, redis_supervisor::Error> {
    Config::from_lookup("", |name| {
        std::env::var(name)
            .ok()
            .or_else(|| (name == "REDIS_KEY_PREFIX").then(|| DEFAULT_KEY_PREFIX.to_string()))
    })
}

/// The global Prometheus recorder (installed before the supervisor registers its metrics),
/// with its periodic upkeep.
fn install_metrics() -> Result<metrics_exporter_prometheus::PrometheusHandle, String> {
    let prometheus = redis_supervisor::metrics::prometheus_builder()
        .install_recorder()
        .map_err(|e| format!("cannot install the Prometheus recorder: {e}"))?;
    let upkeep = prometheus.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(prometheus)
}

/// Logs every availability transition as one line.
fn log_availability(supervisor: &Supervisor) {
    let mut events = supervisor.subscribe();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            tracing::info!(state = event.state.name(), reason = %event.reason, "redis {}", event.state);
        }
    });
}

async fn run() -> Result<(), String> {
    let settings = app::Settings::from_env()?;
    let config = redis_config().map_err(|e| e.to_string())?;
    tracing::info!(redis = %config.redacted_url(), listen = %settings.listen, "starting");
    let prometheus = install_metrics()?;
    let supervisor = Supervisor::start(config).await.map_err(|e| e.to_string())?;
    log_availability(&supervisor);
    let app = app::App::new(&supervisor, &settings, prometheus).map_err(|e| e.to_string())?;
    match supervisor.wait_until_up(STARTUP_WAIT).await {
        Ok(()) => match app.clear_cache().await {
            Ok(n) => tracing::info!(
                removed = n,
                "item cache cleared (the database starts afresh)"
            ),
            Err(e) => tracing::warn!(error = %e, "could not clear the item cache"),
        },
        Err(e) => tracing::warn!(error = %e, "redis is not up yet; serving without it meanwhile"),
    }
    let worker = app.spawn_worker();
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let signal = app::shutdown_signal().map_err(|e| format!("cannot handle signals: {e}"))?;
    tracing::info!(listen = %settings.listen, "serving");
    let served = app.clone().serve(listener, signal).await;
    app.stop();
    supervisor.shutdown().await; // unblocks the worker's BLPOP, sends QUIT
    let _ = worker.await;
    served.map_err(|e| format!("HTTP server failed: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("service: {e}");
            ExitCode::FAILURE
        }
    }
}
