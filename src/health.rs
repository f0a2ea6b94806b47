//! The health actor: on a drift-free timer it sends `PING` (with its own short timeout) to the
//! live connection every probe interval and reads `INFO` every info interval, records latency and
//! server gauges, and reports to the supervisor (by `cast`): a slow or failed probe makes the
//! state `Degraded`; [`Config::health_failures`](crate::Config::health_failures) consecutive
//! failures make the supervisor replace the connection. A hung or half-open connection therefore
//! leaves `Up` within `probe_interval × K + probe_timeout`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef};
use redis::Value;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::connection::{ExecError, Lane, Request};
use crate::metrics::{CommandLabel, Outcome};
use crate::supervisor::{Route, Shared, SupervisorMsg};

/// Server facts and counters parsed from an `INFO` reply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServerStats {
    /// `redis_version`.
    pub version: String,
    /// `role` (`master`, `slave`).
    pub role: String,
    /// `redis_mode` (`standalone`, `cluster`, `sentinel`).
    pub mode: String,
    /// `uptime_in_seconds`.
    pub uptime_seconds: u64,
    /// `used_memory`, bytes.
    pub memory_used_bytes: u64,
    /// `maxmemory`, bytes; 0 means no limit.
    pub memory_max_bytes: u64,
    /// `connected_clients`.
    pub connected_clients: u64,
    /// `blocked_clients`.
    pub blocked_clients: u64,
    /// `keyspace_hits`.
    pub keyspace_hits: u64,
    /// `keyspace_misses`.
    pub keyspace_misses: u64,
    /// `evicted_keys`.
    pub evicted_keys: u64,
    /// `expired_keys`.
    pub expired_keys: u64,
}

impl ServerStats {
    /// Parses the text of an `INFO` reply (any sections; missing fields stay at their default,
    /// text fields at `"unknown"`).
    pub fn parse(info: &str) -> Self {
        let mut s = ServerStats {
            version: "unknown".into(),
            role: "unknown".into(),
            mode: "unknown".into(),
            ..Default::default()
        };
        for line in info.lines() {
            let Some((k, v)) = line.trim_end().split_once(':') else {
                continue;
            };
            let num = || v.trim().parse::<u64>().unwrap_or(0);
            match k {
                "redis_version" => s.version = v.trim().to_string(),
                "role" => s.role = v.trim().to_string(),
                "redis_mode" => s.mode = v.trim().to_string(),
                "uptime_in_seconds" => s.uptime_seconds = num(),
                "used_memory" => s.memory_used_bytes = num(),
                "maxmemory" => s.memory_max_bytes = num(),
                "connected_clients" => s.connected_clients = num(),
                "blocked_clients" => s.blocked_clients = num(),
                "keyspace_hits" => s.keyspace_hits = num(),
                "keyspace_misses" => s.keyspace_misses = num(),
                "evicted_keys" => s.evicted_keys = num(),
                "expired_keys" => s.expired_keys = num(),
                _ => {}
            }
        }
        s
    }
}

/// What `/health/redis` reports besides the availability state; written by the health actor and
/// the supervisor.
#[derive(Debug, Clone, Default)]
pub(crate) struct HealthSnapshot {
    /// Round trip of the last successful probe.
    pub(crate) ping: Option<Duration>,
    /// The last INFO read (at connect or by the periodic probe).
    pub(crate) stats: Option<ServerStats>,
    /// Why the connection was last lost, its kind, and when.
    pub(crate) last_error: Option<(String, crate::FailureKind, SystemTime)>,
}

/// Messages of the health actor (sent by its own timers).
pub(crate) enum HealthMsg {
    Probe,
    Info,
}

/// State of the health actor.
pub(crate) struct HealthState {
    shared: Arc<Shared>,
    supervisor: ActorRef<SupervisorMsg>,
    timers: Vec<JoinHandle<()>>,
    /// The connection the failure count belongs to.
    conn: Option<ActorId>,
    failures: u32,
    ping: Request,
    info: Request,
}

/// The health actor.
pub(crate) struct HealthActor;

/// Start-up arguments: the shared state and the supervisor to report to.
pub(crate) type HealthArgs = (Arc<Shared>, ActorRef<SupervisorMsg>);

/// A drift-free ticker sending `msg()` to `actor` every `period` until the actor is gone.
fn ticker(actor: ActorRef<HealthMsg>, period: Duration, msg: fn() -> HealthMsg) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval_at(Instant::now() + period, period);
        // A slow probe must not cause a burst of catch-up probes.
        interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            if actor.cast(msg()).is_err() {
                break;
            }
        }
    })
}

/// Sends one request on `lane` and waits for its answer until `timeout`.
async fn probe(lane: &Lane, request: &Request, timeout: Duration) -> Result<Value, String> {
    if !lane.is_open() {
        return Err("connection closing".into());
    }
    let mut sender = lane.sender();
    match tokio::time::timeout(timeout, sender.run(request)).await {
        // Any reply proves the server is there, even an error reply (e.g. NOPERM for an ACL
        // user without +ping, or BUSY while a script runs).
        Ok(Ok(value)) => Ok(value),
        Ok(Err(ExecError::Reply(_))) => Ok(Value::Nil),
        Ok(Err(ExecError::Transport(reason))) => Err(reason),
        Err(_) => Err(format!("no reply within {} ms", timeout.as_millis())),
    }
}

impl Actor for HealthActor {
    type Msg = HealthMsg;
    type State = HealthState;
    type Arguments = HealthArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (shared, supervisor): HealthArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(HealthState {
            shared,
            supervisor,
            timers: Vec::new(),
            conn: None,
            failures: 0,
            ping: Request::Cmd(redis::cmd("PING")),
            info: Request::Cmd(redis::cmd("INFO")),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let config = &state.shared.config;
        state
            .timers
            .push(ticker(myself.clone(), config.health_interval(), || {
                HealthMsg::Probe
            }));
        state
            .timers
            .push(ticker(myself, config.info_interval(), || HealthMsg::Info));
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for t in state.timers.drain(..) {
            t.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let conn = match &*state.shared.route.borrow() {
            Route::Up(lane) => lane.clone(),
            _ => {
                // Nothing to probe while down; the supervisor is already reconnecting.
                state.conn = None;
                state.failures = 0;
                return Ok(());
            }
        };
        if state.conn != Some(conn.id()) {
            state.conn = Some(conn.id());
            state.failures = 0;
        }
        let config = state.shared.config.clone();
        match msg {
            HealthMsg::Probe => {
                let start = Instant::now();
                let result = probe(&conn, &state.ping, config.health_timeout()).await;
                let took = start.elapsed();
                let metrics = &state.shared.metrics;
                match result {
                    Ok(_) => {
                        state.failures = 0;
                        metrics.ping.record(took.as_secs_f64());
                        metrics.command(CommandLabel::PING, Outcome::Ok, took);
                        metrics.server.up.set(1.0);
                        if let Ok(mut snap) = state.shared.health.lock() {
                            snap.ping = Some(took);
                        }
                        let degraded = (took > config.health_slow()).then(|| {
                            format!(
                                "PING took {} ms (threshold {} ms)",
                                took.as_millis(),
                                config.health_slow().as_millis()
                            )
                        });
                        let _ = state.supervisor.cast(SupervisorMsg::Probed {
                            id: conn.id(),
                            degraded,
                        });
                    }
                    Err(reason) => {
                        state.failures += 1;
                        metrics.command(CommandLabel::PING, Outcome::Timeout, took);
                        metrics.server.up.set(0.0);
                        let k = config.health_failures();
                        let msg = if state.failures >= k {
                            state.failures = 0;
                            SupervisorMsg::Unhealthy {
                                id: conn.id(),
                                reason: format!("{k} consecutive health probes failed ({reason})"),
                            }
                        } else {
                            SupervisorMsg::Probed {
                                id: conn.id(),
                                degraded: Some(format!("health probe failed: {reason}")),
                            }
                        };
                        let _ = state.supervisor.cast(msg);
                    }
                }
            }
            HealthMsg::Info => {
                let info = probe(&conn, &state.info, config.health_timeout())
                    .await
                    .and_then(|v| v.extract_error().map_err(|e| e.to_string()))
                    .and_then(|v| redis::from_redis_value::<String>(v).map_err(|e| e.to_string()));
                match info {
                    Ok(text) => state.shared.record_server_stats(ServerStats::parse(&text)),
                    // The PING probes judge the connection; a failed INFO only leaves the
                    // gauges as they were.
                    Err(reason) => tracing::debug!(reason = %reason, "INFO probe failed"),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\nuptime_in_seconds:42\r\n\r\n# Clients\r\nconnected_clients:3\r\nblocked_clients:1\r\n\r\n# Memory\r\nused_memory:1048576\r\nmaxmemory:0\r\n\r\n# Stats\r\nkeyspace_hits:10\r\nkeyspace_misses:5\r\nexpired_keys:7\r\nevicted_keys:2\r\n\r\n# Replication\r\nrole:master\r\n";

    #[test]
    fn parses_info_into_stats() {
        let s = ServerStats::parse(INFO);
        assert_eq!(
            s,
            ServerStats {
                version: "7.0.15".into(),
                role: "master".into(),
                mode: "standalone".into(),
                uptime_seconds: 42,
                memory_used_bytes: 1_048_576,
                memory_max_bytes: 0,
                connected_clients: 3,
                blocked_clients: 1,
                keyspace_hits: 10,
                keyspace_misses: 5,
                evicted_keys: 2,
                expired_keys: 7,
            }
        );
    }

    #[test]
    fn maxmemory_limit_and_missing_fields() {
        let s = ServerStats::parse("maxmemory:104857600\nrole:slave\n");
        assert_eq!(s.memory_max_bytes, 104_857_600);
        assert_eq!(s.role, "slave");
        assert_eq!(s.version, "unknown");
        assert_eq!(s.uptime_seconds, 0);
        assert_eq!(
            ServerStats::parse("garbage\nused_memory:abc\n").memory_used_bytes,
            0
        );
    }

    #[test]
    fn info_into_gauges() {
        let recorder = crate::metrics::prometheus_builder().build_recorder();
        let handle = recorder.handle();
        let m = crate::metrics::Metrics::new("info", Some(Arc::new(recorder)));
        m.set_server(&ServerStats::parse(INFO));
        let text = handle.render();
        for line in [
            "redis_memory_used_bytes{client=\"info\"} 1048576",
            "redis_memory_max_bytes{client=\"info\"} 0",
            "redis_uptime_in_seconds{client=\"info\"} 42",
            "redis_connected_clients{client=\"info\"} 3",
            "redis_blocked_clients{client=\"info\"} 1",
            "redis_keyspace_hits_total{client=\"info\"} 10",
            "redis_keyspace_misses_total{client=\"info\"} 5",
            "redis_evicted_keys_total{client=\"info\"} 2",
            "redis_expired_keys_total{client=\"info\"} 7",
            "redis_instance_info{client=\"info\",redis_version=\"7.0.15\",role=\"master\",redis_mode=\"standalone\"} 1",
        ] {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
        // A new server (after a restart or failover): the old info series drops to 0.
        m.set_server(&ServerStats::parse(
            "redis_version:7.2.0\nrole:master\nredis_mode:standalone\n",
        ));
        let text = handle.render();
        assert!(
            text.contains("redis_version=\"7.0.15\",role=\"master\",redis_mode=\"standalone\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("redis_version=\"7.2.0\",role=\"master\",redis_mode=\"standalone\"} 1"),
            "{text}"
        );
    }
}
