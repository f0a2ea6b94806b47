//! The `redis-supervisor` service: reads its configuration from the environment, supervises one
//! Redis connection, serves `/metrics` (Prometheus) and the health routes, logs every
//! availability transition, and shuts down gracefully on SIGTERM or SIGINT (exit code 0).
//!
//! ```text
//! redis-supervisor [--listen ADDR]      # default 127.0.0.1:9180, or $LISTEN_ADDR
//! ```
//! Redis settings: the `REDIS_*` variables of [`redis_supervisor::config`]. `RUST_LOG` sets the
//! log filter (default `info`).

use std::net::SocketAddr;
use std::process::ExitCode;

use redis_supervisor::{Availability, Config, EventKind, EventsError, Supervisor};
use tracing_subscriber::EnvFilter;

/// Default HTTP listen address: loopback only.
const DEFAULT_LISTEN: &str = "127.0.0.1:9180";

const USAGE: &str = "usage: redis-supervisor [--listen ADDR]

Supervises one Redis connection and serves /metrics and /health* on ADDR (default 127.0.0.1:9180, or $LISTEN_ADDR).
Redis settings come from REDIS_URL (default redis://127.0.0.1:6379) and the other REDIS_* variables
(redis_supervisor::config::ENV_VARS; docs/operations.md). RUST_LOG sets the log filter (default info).";

fn listen_addr() -> Result<SocketAddr, String> {
    let mut args = std::env::args().skip(1);
    let mut listen: Option<String> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                listen = Some(
                    args.next()
                        .ok_or("--listen needs an address, e.g. 127.0.0.1:9180")?,
                )
            }
            s if s.starts_with("--listen=") => listen = Some(s["--listen=".len()..].to_string()),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    let (source, value) = match listen {
        Some(v) => ("--listen", v),
        None => match std::env::var("LISTEN_ADDR") {
            Ok(v) => ("LISTEN_ADDR", v),
            Err(_) => ("default", DEFAULT_LISTEN.to_string()),
        },
    };
    value.parse().map_err(|e| {
        format!("invalid {source} = {value:?}: {e} (expected HOST:PORT, e.g. 127.0.0.1:9180)")
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the service");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("interrupt received, shutting down");
    }
}

/// Logs each availability event as one line.
fn log_event(event: &redis_supervisor::AvailabilityEvent) {
    match &event.kind {
        EventKind::RestartStorm {
            restarts,
            window_ms,
        } => tracing::warn!(
            state = event.state.name(),
            restarts,
            window_ms,
            reason = %event.reason,
            "redis restart storm; reconnect delay held at the cap"
        ),
        EventKind::Failover { from, to } => tracing::warn!(
            from = %from,
            to = %to,
            reason = %event.reason,
            "redis failover; moving to the new master"
        ),
        EventKind::ClusterChanged { shards } => tracing::warn!(
            state = event.state.name(),
            shards = %shards.join("; "),
            "redis cluster changed shape"
        ),
        _ => log_state(&event.state, &event.reason),
    }
}

/// Logs a state with its reason (and next retry, when down) as one line.
fn log_state(availability: &Availability, reason: &str) {
    let state = availability.name();
    match availability {
        Availability::Down {
            error,
            kind,
            retry_in,
        } => tracing::warn!(
            state,
            kind = kind.name(),
            reason = %error,
            retry_in_ms = u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX),
            "redis down; retrying"
        ),
        Availability::Up {
            server_version,
            role,
            address,
        } => tracing::info!(
            state,
            reason = %reason,
            server_version = %server_version,
            role = %role,
            address = %address,
            "redis up"
        ),
        Availability::Connecting { attempt } => {
            tracing::info!(state, attempt, "redis connecting")
        }
        Availability::Degraded { reason } => {
            tracing::warn!(state, reason = %reason, "redis degraded")
        }
        Availability::NotReady { reason, kind } => tracing::warn!(
            state,
            kind = kind.name(),
            reason = %reason,
            "redis connected but cannot serve yet"
        ),
        Availability::GaveUp { error, attempts } => tracing::error!(
            state,
            reason = %error,
            attempts,
            "redis supervisor gave up; no more attempts"
        ),
        _ => tracing::info!(state, reason = %reason, "redis {state}"),
    }
}

/// Installs the global Prometheus recorder (before the supervisor registers its metrics) and
/// spawns its periodic upkeep (`install_recorder` does not rotate histogram buckets by itself).
fn install_metrics() -> Result<
    (
        metrics_exporter_prometheus::PrometheusHandle,
        tokio::task::JoinHandle<()>,
    ),
    String,
> {
    let prometheus = redis_supervisor::metrics::prometheus_builder()
        .install_recorder()
        .map_err(|e| format!("cannot install the Prometheus recorder: {e}"))?;
    let handle = prometheus.clone();
    let upkeep = tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            handle.run_upkeep();
        }
    });
    Ok((prometheus, upkeep))
}

/// Logs the current state, then every availability event until the supervisor stops.
fn spawn_event_logger(supervisor: &Supervisor) -> tokio::task::JoinHandle<()> {
    let mut events = supervisor.subscribe();
    // The state at subscription time (the supervisor starts in `Connecting` and never publishes
    // that first state again); every later transition arrives as an event.
    log_state(&events.current(), "initial state");
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => {
                    log_event(&event);
                    if event.state == Availability::Stopped {
                        break;
                    }
                }
                Err(EventsError::Lagged { missed }) => {
                    tracing::warn!(missed, "availability log fell behind")
                }
                Err(EventsError::Closed) => break,
            }
        }
    })
}

/// Serves the routes until SIGTERM/SIGINT, then shuts the supervisor down.
async fn serve(
    supervisor: &Supervisor,
    listen: SocketAddr,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("redis-supervisor: cannot listen on {listen}: {e}");
            supervisor.shutdown().await;
            return ExitCode::from(1);
        }
    };
    let app = redis_supervisor::http::router(supervisor)
        .merge(redis_supervisor::http::metrics_router(prometheus));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await;
    supervisor.shutdown().await;
    match served {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "HTTP server failed");
            ExitCode::from(1)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let listen = match listen_addr() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("redis-supervisor: {e}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(redis = %config.redacted_url(), client = config.name(), %listen, "starting");
    let (prometheus, upkeep) = match install_metrics() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("redis-supervisor: {e}");
            return ExitCode::from(1);
        }
    };
    let supervisor = match Supervisor::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("redis-supervisor: {e}");
            return ExitCode::from(1);
        }
    };
    let logger = spawn_event_logger(&supervisor);
    let code = serve(&supervisor, listen, prometheus).await;
    let _ = logger.await;
    upkeep.abort();
    code
}
