//! Metric names, descriptions and the pre-registered handles the hot path records into.
//!
//! The library only emits through the [`metrics`] facade; the binary (or your service) installs a
//! recorder — [`prometheus_builder`] gives one with buckets suited to Redis. Every metric carries
//! a `client` label (the supervisor's [name](crate::Config::name)). Every handle, including each
//! `state`, `outcome` and `command` label value, is created (at zero) when the supervisor starts,
//! so dashboards and alerts never see "no data", and recording on the command path is an atomic
//! add on a handle resolved once: no string formatting, no registry lookup.
//!
//! Server-side metrics come from `INFO` and are named as oliver006/redis_exporter names them, so
//! existing dashboards and alerts work.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Recorder, SharedString, Unit};

use crate::availability::Availability;

/// `redis_client_up`: 1 while commands can be served, else 0.
pub const CLIENT_UP: &str = "redis_client_up";
/// `redis_client_state{state}`: 1 for the current availability state, 0 for the others.
pub const CLIENT_STATE: &str = "redis_client_state";
/// `redis_client_restarts_total`: connection actors started to replace a failed one.
pub const CLIENT_RESTARTS: &str = "redis_client_restarts_total";
/// `redis_client_restart_storms_total`: restart storms declared (more connections lost within
/// the window than the restart intensity allows).
pub const CLIENT_RESTART_STORMS: &str = "redis_client_restart_storms_total";
/// `redis_client_connect_attempts_total{outcome}`: connection attempts, `success` or `failure`.
pub const CLIENT_CONNECT_ATTEMPTS: &str = "redis_client_connect_attempts_total";
/// `redis_client_commands_total{command,outcome}`: finished commands.
pub const CLIENT_COMMANDS: &str = "redis_client_commands_total";
/// `redis_client_command_duration_seconds{command}`: command latency as the caller saw it.
pub const CLIENT_COMMAND_DURATION: &str = "redis_client_command_duration_seconds";
/// `redis_client_ping_duration_seconds`: health probe round trips.
pub const CLIENT_PING_DURATION: &str = "redis_client_ping_duration_seconds";
/// `redis_client_offline_waiting`: commands waiting for the connection right now.
pub const CLIENT_OFFLINE_WAITING: &str = "redis_client_offline_waiting";
/// `redis_client_ambiguous_total`: commands answered `Ambiguous` (may have executed).
pub const CLIENT_AMBIGUOUS: &str = "redis_client_ambiguous_total";
/// `redis_client_degraded_ops_total`: operations that a degradation policy answered without Redis.
pub const CLIENT_DEGRADED_OPS: &str = "redis_client_degraded_ops_total";

/// `redis_up`: 1 when the last probe of the server succeeded.
pub const SERVER_UP: &str = "redis_up";
/// `redis_uptime_in_seconds` (INFO `uptime_in_seconds`).
pub const SERVER_UPTIME: &str = "redis_uptime_in_seconds";
/// `redis_memory_used_bytes` (INFO `used_memory`).
pub const SERVER_MEMORY_USED: &str = "redis_memory_used_bytes";
/// `redis_memory_max_bytes` (INFO `maxmemory`; 0 means no limit).
pub const SERVER_MEMORY_MAX: &str = "redis_memory_max_bytes";
/// `redis_connected_clients` (INFO `connected_clients`).
pub const SERVER_CONNECTED_CLIENTS: &str = "redis_connected_clients";
/// `redis_blocked_clients` (INFO `blocked_clients`).
pub const SERVER_BLOCKED_CLIENTS: &str = "redis_blocked_clients";
/// `redis_keyspace_hits_total` (INFO `keyspace_hits`).
pub const SERVER_KEYSPACE_HITS: &str = "redis_keyspace_hits_total";
/// `redis_keyspace_misses_total` (INFO `keyspace_misses`).
pub const SERVER_KEYSPACE_MISSES: &str = "redis_keyspace_misses_total";
/// `redis_evicted_keys_total` (INFO `evicted_keys`).
pub const SERVER_EVICTED_KEYS: &str = "redis_evicted_keys_total";
/// `redis_expired_keys_total` (INFO `expired_keys`).
pub const SERVER_EXPIRED_KEYS: &str = "redis_expired_keys_total";
/// `redis_instance_info{redis_version,role,redis_mode}`: 1 for the server currently connected.
pub const SERVER_INSTANCE_INFO: &str = "redis_instance_info";

/// Histogram buckets (seconds) for Redis latencies: 50 µs to 5 s.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

/// Values of the `command` label: a fixed set (raw commands outside it count as `other`), so the
/// cardinality is bounded and never carries a key.
pub const COMMANDS: [&str; 14] = [
    "get", "set", "del", "exists", "expire", "ttl", "incr", "incrby", "mget", "mset", "ping",
    "pipeline", "multi", "other",
];

/// Values of the `outcome` label of `redis_client_commands_total`.
pub const OUTCOMES: [&str; 6] = [
    "ok",
    "error",
    "timeout",
    "unavailable",
    "ambiguous",
    "shutting_down",
];

/// Values of the `outcome` label of `redis_client_connect_attempts_total`.
pub const CONNECT_OUTCOMES: [&str; 2] = ["success", "failure"];

/// Index of a `command` label value in [`COMMANDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CommandLabel(pub(crate) u8);

impl CommandLabel {
    pub(crate) const GET: Self = Self(0);
    pub(crate) const SET: Self = Self(1);
    pub(crate) const DEL: Self = Self(2);
    pub(crate) const EXISTS: Self = Self(3);
    pub(crate) const EXPIRE: Self = Self(4);
    pub(crate) const TTL: Self = Self(5);
    pub(crate) const INCR: Self = Self(6);
    pub(crate) const INCRBY: Self = Self(7);
    pub(crate) const MGET: Self = Self(8);
    pub(crate) const MSET: Self = Self(9);
    pub(crate) const PING: Self = Self(10);
    pub(crate) const PIPELINE: Self = Self(11);
    pub(crate) const MULTI: Self = Self(12);
    pub(crate) const OTHER: Self = Self(13);

    /// The label for a raw command, from its name (ASCII case-insensitive).
    pub(crate) fn for_name(name: &[u8]) -> Self {
        let known: [(&[u8], Self); 14] = [
            (b"get", Self::GET),
            (b"set", Self::SET),
            (b"del", Self::DEL),
            (b"unlink", Self::DEL),
            (b"exists", Self::EXISTS),
            (b"expire", Self::EXPIRE),
            (b"pexpire", Self::EXPIRE),
            (b"ttl", Self::TTL),
            (b"pttl", Self::TTL),
            (b"incr", Self::INCR),
            (b"incrby", Self::INCRBY),
            (b"mget", Self::MGET),
            (b"mset", Self::MSET),
            (b"ping", Self::PING),
        ];
        known
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or(Self::OTHER, |(_, l)| *l)
    }
}

/// Index of an `outcome` label value in [`OUTCOMES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok = 0,
    Error = 1,
    Timeout = 2,
    Unavailable = 3,
    Ambiguous = 4,
    ShuttingDown = 5,
}

impl Outcome {
    pub(crate) fn of<T>(result: &Result<T, crate::Error>) -> Self {
        use crate::Error as E;
        match result {
            Ok(_) => Self::Ok,
            Err(E::Timeout { .. }) => Self::Timeout,
            Err(E::Unavailable { .. }) => Self::Unavailable,
            Err(E::Ambiguous { .. }) => Self::Ambiguous,
            Err(E::ShuttingDown) => Self::ShuttingDown,
            Err(_) => Self::Error,
        }
    }
}

/// Installs nothing: returns a Prometheus exporter builder with [`LATENCY_BUCKETS`] for every
/// `*_duration_seconds` histogram. Call `.install_recorder()` (once per process) or
/// `.build_recorder()` on it.
pub fn prometheus_builder() -> metrics_exporter_prometheus::PrometheusBuilder {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    // Only fails for an empty bucket list, which this is not; fall back to the plain builder.
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("duration_seconds".to_string()),
            &LATENCY_BUCKETS,
        )
        .unwrap_or_else(|_| PrometheusBuilder::new())
}

/// A recorder to register this supervisor's metrics with instead of the global one (tests,
/// several registries in one process).
pub type SharedRecorder = Arc<dyn Recorder + Send + Sync>;

/// Labels of the `redis_instance_info` series currently at 1.
type InstanceLabels = (String, String, String);

/// Every metric handle of one supervisor, created at start.
pub(crate) struct Metrics {
    client: SharedString,
    recorder: Option<SharedRecorder>,
    pub(crate) up: Gauge,
    states: [Gauge; 6],
    pub(crate) restarts: Counter,
    pub(crate) restart_storms: Counter,
    pub(crate) connect_success: Counter,
    pub(crate) connect_failure: Counter,
    commands: Vec<[Counter; 6]>,
    durations: Vec<Histogram>,
    pub(crate) ping: Histogram,
    pub(crate) offline_waiting: Gauge,
    pub(crate) ambiguous: Counter,
    pub(crate) degraded_ops: Counter,
    pub(crate) server: ServerMetrics,
    instance: Mutex<Option<InstanceLabels>>,
}

/// Handles of the INFO-derived server metrics.
pub(crate) struct ServerMetrics {
    pub(crate) up: Gauge,
    pub(crate) uptime: Gauge,
    pub(crate) memory_used: Gauge,
    pub(crate) memory_max: Gauge,
    pub(crate) connected_clients: Gauge,
    pub(crate) blocked_clients: Gauge,
    pub(crate) keyspace_hits: Counter,
    pub(crate) keyspace_misses: Counter,
    pub(crate) evicted_keys: Counter,
    pub(crate) expired_keys: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

fn describe_all() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        CLIENT_UP,
        "1 while the Redis connection can serve commands, else 0."
    );
    describe_gauge!(
        CLIENT_STATE,
        "1 for the current availability state of the Redis connection, 0 for the others."
    );
    describe_counter!(
        CLIENT_RESTARTS,
        "Connection actors started by the supervisor to replace a failed one."
    );
    describe_counter!(
        CLIENT_RESTART_STORMS,
        "Restart storms: more Redis connections lost within the window than the restart intensity allows."
    );
    describe_counter!(
        CLIENT_CONNECT_ATTEMPTS,
        "Redis connection attempts, by outcome (success, failure)."
    );
    describe_counter!(
        CLIENT_COMMANDS,
        "Redis commands finished, by command and outcome."
    );
    describe_histogram!(
        CLIENT_COMMAND_DURATION,
        Unit::Seconds,
        "Redis command latency as seen by the caller, by command."
    );
    describe_histogram!(
        CLIENT_PING_DURATION,
        Unit::Seconds,
        "Round trip of the health actor's PING probes."
    );
    describe_gauge!(
        CLIENT_OFFLINE_WAITING,
        "Commands currently waiting for the Redis connection to come up."
    );
    describe_counter!(
        CLIENT_AMBIGUOUS,
        "Commands that may have executed but got no reply (answered Ambiguous, never replayed)."
    );
    describe_counter!(
        CLIENT_DEGRADED_OPS,
        "Operations answered by a graceful-degradation policy without Redis."
    );
    describe_gauge!(
        SERVER_UP,
        "1 when the last probe of the Redis server succeeded."
    );
    describe_gauge!(
        SERVER_UPTIME,
        Unit::Seconds,
        "Redis server uptime (INFO uptime_in_seconds)."
    );
    describe_gauge!(SERVER_MEMORY_USED, Unit::Bytes, "Redis used_memory.");
    describe_gauge!(
        SERVER_MEMORY_MAX,
        Unit::Bytes,
        "Redis maxmemory (0: no limit)."
    );
    describe_gauge!(SERVER_CONNECTED_CLIENTS, "Redis connected_clients.");
    describe_gauge!(SERVER_BLOCKED_CLIENTS, "Redis blocked_clients.");
    describe_counter!(SERVER_KEYSPACE_HITS, "Redis keyspace_hits.");
    describe_counter!(SERVER_KEYSPACE_MISSES, "Redis keyspace_misses.");
    describe_counter!(SERVER_EVICTED_KEYS, "Redis evicted_keys.");
    describe_counter!(SERVER_EXPIRED_KEYS, "Redis expired_keys.");
    describe_gauge!(
        SERVER_INSTANCE_INFO,
        "Information about the Redis instance (1 for the server connected)."
    );
}

impl Metrics {
    /// Describes and registers every metric for `client`, in `recorder` when given, else in the
    /// global recorder (a no-op when none is installed).
    pub(crate) fn new(client: &str, recorder: Option<SharedRecorder>) -> Self {
        let client: SharedString = client.to_string().into();
        let build = || {
            describe_all();
            let c = client.clone();
            let gauge = |name: &'static str| metrics::gauge!(name, "client" => c.clone());
            let counter = |name: &'static str| metrics::counter!(name, "client" => c.clone());
            let states = Availability::NAMES
                .map(|s| metrics::gauge!(CLIENT_STATE, "client" => c.clone(), "state" => s));
            let commands = COMMANDS
                .iter()
                .map(|cmd| {
                    OUTCOMES.map(|o| {
                        metrics::counter!(CLIENT_COMMANDS, "client" => c.clone(), "command" => *cmd, "outcome" => o)
                    })
                })
                .collect();
            let durations = COMMANDS
                .iter()
                .map(|cmd| {
                    metrics::histogram!(CLIENT_COMMAND_DURATION, "client" => c.clone(), "command" => *cmd)
                })
                .collect();
            let connect = CONNECT_OUTCOMES.map(|o| {
                metrics::counter!(CLIENT_CONNECT_ATTEMPTS, "client" => c.clone(), "outcome" => o)
            });
            let [connect_success, connect_failure] = connect;
            let m = Metrics {
                client: client.clone(),
                recorder: None,
                up: gauge(CLIENT_UP),
                states,
                restarts: counter(CLIENT_RESTARTS),
                restart_storms: counter(CLIENT_RESTART_STORMS),
                connect_success,
                connect_failure,
                commands,
                durations,
                ping: metrics::histogram!(CLIENT_PING_DURATION, "client" => c.clone()),
                offline_waiting: gauge(CLIENT_OFFLINE_WAITING),
                ambiguous: counter(CLIENT_AMBIGUOUS),
                degraded_ops: counter(CLIENT_DEGRADED_OPS),
                server: ServerMetrics {
                    up: gauge(SERVER_UP),
                    uptime: gauge(SERVER_UPTIME),
                    memory_used: gauge(SERVER_MEMORY_USED),
                    memory_max: gauge(SERVER_MEMORY_MAX),
                    connected_clients: gauge(SERVER_CONNECTED_CLIENTS),
                    blocked_clients: gauge(SERVER_BLOCKED_CLIENTS),
                    keyspace_hits: counter(SERVER_KEYSPACE_HITS),
                    keyspace_misses: counter(SERVER_KEYSPACE_MISSES),
                    evicted_keys: counter(SERVER_EVICTED_KEYS),
                    expired_keys: counter(SERVER_EXPIRED_KEYS),
                },
                instance: Mutex::new(None),
            };
            // Touch every handle so each series exists at zero from the start.
            m.up.set(0.0);
            m.restarts.increment(0);
            m.restart_storms.increment(0);
            m.connect_success.increment(0);
            m.connect_failure.increment(0);
            m.offline_waiting.set(0.0);
            m.ambiguous.increment(0);
            m.degraded_ops.increment(0);
            for per_cmd in &m.commands {
                for c in per_cmd {
                    c.increment(0);
                }
            }
            let s = &m.server;
            for g in [
                &s.up,
                &s.uptime,
                &s.memory_used,
                &s.memory_max,
                &s.connected_clients,
                &s.blocked_clients,
            ] {
                g.set(0.0);
            }
            for c in [
                &s.keyspace_hits,
                &s.keyspace_misses,
                &s.evicted_keys,
                &s.expired_keys,
            ] {
                c.absolute(0);
            }
            m.set_state(&Availability::Connecting { attempt: 1 });
            m
        };
        let mut m = match &recorder {
            Some(r) => metrics::with_local_recorder(r.as_ref(), build),
            None => build(),
        };
        m.recorder = recorder;
        m
    }

    /// Records one finished command.
    #[inline]
    pub(crate) fn command(&self, label: CommandLabel, outcome: Outcome, took: Duration) {
        let i = label.0 as usize;
        if let Some(per_outcome) = self.commands.get(i) {
            per_outcome[outcome as usize].increment(1);
        }
        if let Some(h) = self.durations.get(i) {
            h.record(took.as_secs_f64());
        }
        if outcome == Outcome::Ambiguous {
            self.ambiguous.increment(1);
        }
    }

    /// Sets `redis_client_state` and `redis_client_up` for a new state.
    pub(crate) fn set_state(&self, state: &Availability) {
        let current = state.name();
        for (gauge, name) in self.states.iter().zip(Availability::NAMES) {
            gauge.set(if name == current { 1.0 } else { 0.0 });
        }
        self.up.set(if state.is_serving() { 1.0 } else { 0.0 });
    }

    /// Sets the server gauges from a parsed INFO reply.
    pub(crate) fn set_server(&self, info: &crate::health::ServerStats) {
        let s = &self.server;
        s.up.set(1.0);
        s.uptime.set(info.uptime_seconds as f64);
        s.memory_used.set(info.memory_used_bytes as f64);
        s.memory_max.set(info.memory_max_bytes as f64);
        s.connected_clients.set(info.connected_clients as f64);
        s.blocked_clients.set(info.blocked_clients as f64);
        s.keyspace_hits.absolute(info.keyspace_hits);
        s.keyspace_misses.absolute(info.keyspace_misses);
        s.evicted_keys.absolute(info.evicted_keys);
        s.expired_keys.absolute(info.expired_keys);
        let labels = (info.version.clone(), info.role.clone(), info.mode.clone());
        let Ok(mut current) = self.instance.lock() else {
            return;
        };
        if current.as_ref() == Some(&labels) {
            return;
        }
        let client = self.client.clone();
        let register = |l: &InstanceLabels, value: f64| {
            let set = || {
                metrics::gauge!(
                    SERVER_INSTANCE_INFO,
                    "client" => client.clone(),
                    "redis_version" => l.0.clone(),
                    "role" => l.1.clone(),
                    "redis_mode" => l.2.clone()
                )
                .set(value)
            };
            match &self.recorder {
                Some(r) => metrics::with_local_recorder(r.as_ref(), set),
                None => set(),
            }
        };
        if let Some(old) = current.take() {
            register(&old, 0.0);
        }
        register(&labels, 1.0);
        *current = Some(labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_command_labels() {
        assert_eq!(CommandLabel::for_name(b"GET"), CommandLabel::GET);
        assert_eq!(CommandLabel::for_name(b"pExpire"), CommandLabel::EXPIRE);
        assert_eq!(CommandLabel::for_name(b"HGETALL"), CommandLabel::OTHER);
        assert_eq!(COMMANDS[CommandLabel::OTHER.0 as usize], "other");
        assert_eq!(COMMANDS[CommandLabel::MULTI.0 as usize], "multi");
        assert_eq!(COMMANDS[CommandLabel::PING.0 as usize], "ping");
    }

    #[test]
    fn every_series_exists_at_zero_with_help() {
        let recorder = prometheus_builder().build_recorder();
        let handle = recorder.handle();
        let _m = Metrics::new("t", Some(Arc::new(recorder)));
        let text = handle.render();
        for name in [
            CLIENT_UP,
            CLIENT_RESTARTS,
            CLIENT_RESTART_STORMS,
            CLIENT_OFFLINE_WAITING,
            CLIENT_AMBIGUOUS,
            CLIENT_DEGRADED_OPS,
            SERVER_UP,
            SERVER_MEMORY_MAX,
            SERVER_KEYSPACE_HITS,
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name} has HELP");
            assert!(
                text.contains(&format!("{name}{{client=\"t\"}} 0")),
                "{name} at 0:\n{text}"
            );
        }
        for s in Availability::NAMES {
            assert!(text.contains(&format!("{CLIENT_STATE}{{client=\"t\",state=\"{s}\"}}")));
        }
        for o in OUTCOMES {
            assert!(text.contains(&format!(
                "{CLIENT_COMMANDS}{{client=\"t\",command=\"get\",outcome=\"{o}\"}} 0"
            )));
        }
    }
}
