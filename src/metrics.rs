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
use crate::info::ServerStats;

mod dedicated;
mod patterns;
pub use dedicated::{
    BLOCKING_CONNECTIONS, BLOCKING_IN_USE, LEASED_CONNECTIONS, LEASED_IN_USE, PUBSUB_LAGGED,
    PUBSUB_MESSAGES, PUBSUB_RESUBSCRIBES, PUBSUB_SUBSCRIPTIONS, PUBSUB_UP,
};
pub(crate) use dedicated::{PoolMetrics, PubSubMetrics};
pub(crate) use patterns::PatternMetrics;
pub(crate) use patterns::{Acquire, Check, DegradedOp, LoadOutcome, Lookup};
pub use patterns::{
    CACHE_COALESCED, CACHE_CORRUPT, CACHE_LOAD_OUTCOMES, CACHE_LOADS, CACHE_LOOKUP_RESULTS,
    CACHE_LOOKUPS, DEGRADED_OPS, LOCK_ACQUIRE_RESULTS, LOCK_ACQUIRES, LOCK_LOST, RATELIMIT_CHECKS,
    RATELIMIT_DECISIONS, SESSIONS_CREATED, SESSIONS_REVOKED,
};

/// `redis_client_up`: 1 while commands can be served, else 0.
pub const CLIENT_UP: &str = "redis_client_up";
/// `redis_client_state{state}`: 1 for the current availability state, 0 for the others.
pub const CLIENT_STATE: &str = "redis_client_state";
/// `redis_client_restarts_total`: connection actors started to replace a failed one.
pub const CLIENT_RESTARTS: &str = "redis_client_restarts_total";
/// `redis_client_restart_storms_total`: restart storms declared (more connections lost within
/// the window than the restart intensity allows).
pub const CLIENT_RESTART_STORMS: &str = "redis_client_restart_storms_total";
/// `redis_client_failovers_total`: Sentinel failovers followed (the connection moved to the master
/// the sentinels named).
pub const CLIENT_FAILOVERS: &str = "redis_client_failovers_total";
/// `redis_client_cluster_node_up{node}`: on a Redis Cluster, 1 while the node (`host:port`)
/// answered the last health probe, else 0; one series per node probed (every primary, and
/// every replica when reads use them). A node that left the cluster reads 0 from then on.
pub const CLIENT_CLUSTER_NODE_UP: &str = "redis_client_cluster_node_up";
/// `redis_client_cluster_node_ping_seconds{node}`: on a Redis Cluster, the round trip of the
/// node's last answered health probe.
pub const CLIENT_CLUSTER_NODE_PING: &str = "redis_client_cluster_node_ping_seconds";
/// `redis_client_cluster_slots_served`: on a Redis Cluster, the slots (of 16 384) whose primary
/// answered the last health probe; 0 when not a cluster.
pub const CLIENT_CLUSTER_SLOTS_SERVED: &str = "redis_client_cluster_slots_served";
/// `redis_client_cluster_changes_total`: changes of the cluster's shape seen by the health
/// probes (a failover, slots moved, a node joined or left).
pub const CLIENT_CLUSTER_CHANGES: &str = "redis_client_cluster_changes_total";
/// `redis_client_lane_up{lane}`: 1 while lane `lane`'s connection is up (`Config::lanes` of them,
/// `lane` = 0, 1, …), else 0.
pub const CLIENT_LANE_UP: &str = "redis_client_lane_up";
/// `redis_client_connect_attempts_total{outcome}`: connection attempts, `success` or `failure`.
pub const CLIENT_CONNECT_ATTEMPTS: &str = "redis_client_connect_attempts_total";
/// `redis_client_commands_total{command,outcome}`: callers' finished commands (health probes are
/// counted apart, in [`CLIENT_PROBES`]).
pub const CLIENT_COMMANDS: &str = "redis_client_commands_total";
/// `redis_client_command_duration_seconds{command}`: command latency as the caller saw it.
pub const CLIENT_COMMAND_DURATION: &str = "redis_client_command_duration_seconds";
/// `redis_client_ping_duration_seconds`: round trips of the health actor's answered probes.
pub const CLIENT_PING_DURATION: &str = "redis_client_ping_duration_seconds";
/// `redis_client_probes_total{outcome}`: health probes by verdict (`ok`, `slow`, `not_ready`,
/// `failed`). Probes are not callers' commands: `redis_client_commands_total` never counts them.
pub const CLIENT_PROBES: &str = "redis_client_probes_total";
/// `redis_client_offline_waiting`: commands waiting for the connection right now.
pub const CLIENT_OFFLINE_WAITING: &str = "redis_client_offline_waiting";
/// `redis_client_ambiguous_total`: commands answered `Ambiguous` (may have executed).
pub const CLIENT_AMBIGUOUS: &str = "redis_client_ambiguous_total";
/// `redis_client_degraded_ops_total{op}`: pattern operations that a degradation policy answered
/// without Redis, by `op` (one of [`DEGRADED_OPS`]: `cache_get`, `cache_set`, …).
pub const CLIENT_DEGRADED_OPS: &str = "redis_client_degraded_ops_total";

/// `redis_up`: 1 while the last health probe (or the connect handshake) got an answer from the
/// server, 0 when it failed or there is no connection.
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

/// Declares a fixed set of label values once: the enum (its discriminant is the index into the
/// handles), the public list of names, and `name()`.
macro_rules! label_set {
    (
        $(#[$enum_meta:meta])* enum $name:ident;
        $(#[$const_meta:meta])* const $names:ident;
        { $($(#[$variant_meta:meta])* $variant:ident = $label:literal),+ $(,)? }
    ) => {
        $(#[$enum_meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum $name {
            $($(#[$variant_meta])* $variant),+
        }

        #[allow(dead_code)] // not every set uses every helper
        impl $name {
            /// Every value, in the order of the public name list.
            pub(crate) const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The label value.
            pub(crate) const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $label),+
                }
            }
        }

        $(#[$const_meta])*
        pub const $names: &[&str] = &[$($label),+];
    };
}

label_set! {
    /// A value of the `command` label.
    enum CommandLabel;
    /// Values of the `command` label: a fixed set (raw commands outside it count as `other`), so
    /// the cardinality is bounded and never carries a key.
    const COMMANDS;
    {
        Get = "get",
        Set = "set",
        Del = "del",
        Exists = "exists",
        Expire = "expire",
        Ttl = "ttl",
        Incr = "incr",
        IncrBy = "incrby",
        Mget = "mget",
        Mset = "mset",
        Ping = "ping",
        Publish = "publish",
        Blpop = "blpop",
        Brpop = "brpop",
        Bzpopmin = "bzpopmin",
        Xread = "xread",
        Wait = "wait",
        Pipeline = "pipeline",
        Multi = "multi",
        Other = "other",
    }
}

/// Raw command names that count under another label than their own.
const COMMAND_ALIASES: &[(&str, CommandLabel)] = &[
    ("unlink", CommandLabel::Del),
    ("pexpire", CommandLabel::Expire),
    ("pttl", CommandLabel::Ttl),
];

impl CommandLabel {
    /// The label for a raw command, from its name (ASCII case-insensitive). `pipeline` and
    /// `other` are never a command's own name.
    pub(crate) fn for_name(name: &[u8]) -> Self {
        let is = |label: &str| label.as_bytes().eq_ignore_ascii_case(name);
        Self::ALL
            .iter()
            .copied()
            .filter(|l| !matches!(l, Self::Pipeline | Self::Other))
            .find(|l| is(l.name()))
            .or_else(|| COMMAND_ALIASES.iter().find(|(n, _)| is(n)).map(|(_, l)| *l))
            .unwrap_or(Self::Other)
    }
}

label_set! {
    /// A value of the `outcome` label of `redis_client_commands_total`.
    enum Outcome;
    /// Values of the `outcome` label of `redis_client_commands_total`.
    const OUTCOMES;
    {
        Ok = "ok",
        Error = "error",
        Timeout = "timeout",
        Unavailable = "unavailable",
        Ambiguous = "ambiguous",
        ShuttingDown = "shutting_down",
    }
}

impl Outcome {
    /// The outcome of a finished command.
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

label_set! {
    /// A value of the `outcome` label of `redis_client_connect_attempts_total`.
    enum ConnectOutcome;
    /// Values of the `outcome` label of `redis_client_connect_attempts_total`.
    const CONNECT_OUTCOMES;
    {
        Success = "success",
        Failure = "failure",
    }
}

label_set! {
    /// A value of the `outcome` label of `redis_client_probes_total`.
    enum ProbeOutcome;
    /// Values of the `outcome` label of `redis_client_probes_total`: answered in time (`ok`),
    /// answered slower than the slow threshold or late behind other replies (`slow`), refused
    /// because the server cannot serve yet (`not_ready`: loading, master down, busy), no answer
    /// (`failed`).
    const PROBE_OUTCOMES;
    {
        Ok = "ok",
        Slow = "slow",
        NotReady = "not_ready",
        Failed = "failed",
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

/// Where a supervisor's metric handles are registered: its `client` label and its recorder.
#[derive(Clone)]
struct Registry {
    client: SharedString,
    recorder: Option<SharedRecorder>,
}

impl Registry {
    /// Runs `f` (which creates handles) against this registry's recorder.
    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        match &self.recorder {
            Some(r) => metrics::with_local_recorder(r.as_ref(), f),
            None => f(),
        }
    }

    fn gauge(&self, name: &'static str) -> Gauge {
        let gauge = metrics::gauge!(name, "client" => self.client.clone());
        gauge.set(0.0);
        gauge
    }

    fn counter(&self, name: &'static str) -> Counter {
        let counter = metrics::counter!(name, "client" => self.client.clone());
        counter.absolute(0);
        counter
    }

    /// One counter per value of a label, each at zero.
    fn counters(
        &self,
        name: &'static str,
        label: &'static str,
        values: &[&'static str],
    ) -> Vec<Counter> {
        let client = &self.client;
        values
            .iter()
            .map(|v| {
                let counter = metrics::counter!(name, "client" => client.clone(), label => *v);
                counter.increment(0);
                counter
            })
            .collect()
    }
}

/// Every metric handle of one supervisor, created (at zero) at start and split by the one module
/// that writes each group: the supervisor ([`ClientMetrics`]), the handle ([`CommandMetrics`]),
/// the health actor ([`HealthMetrics`]), the patterns ([`PatternMetrics`], carried by the handle).
pub(crate) struct Metrics {
    pub(crate) client: ClientMetrics,
    pub(crate) commands: CommandMetrics,
    pub(crate) health: HealthMetrics,
    pub(crate) patterns: PatternMetrics,
    pub(crate) pubsub: PubSubMetrics,
    pub(crate) blocking: PoolMetrics,
    pub(crate) leased: PoolMetrics,
}

impl Metrics {
    /// Describes and registers every metric for `client`, in `recorder` when given, else in the
    /// global recorder (a no-op when none is installed).
    /// Every handle of a supervisor named `client` with `lanes` lanes, registered in
    /// `recorder` (or the global one).
    pub(crate) fn new(client: &str, lanes: usize, recorder: Option<SharedRecorder>) -> Self {
        let registry = Registry {
            client: client.to_string().into(),
            recorder,
        };
        registry.with(|| {
            describe_all();
            Metrics {
                client: ClientMetrics::new(&registry, lanes),
                commands: CommandMetrics::new(&registry),
                health: HealthMetrics::new(&registry),
                patterns: PatternMetrics::new(&registry),
                pubsub: PubSubMetrics::new(&registry),
                blocking: PoolMetrics::blocking(&registry),
                leased: PoolMetrics::leased(&registry),
            }
        })
    }
}

/// The supervisor's metrics: availability state, restarts, connect attempts.
pub(crate) struct ClientMetrics {
    up: Gauge,
    states: Vec<Gauge>,
    restarts: Counter,
    restart_storms: Counter,
    failovers: Counter,
    cluster_changes: Counter,
    connects: Vec<Counter>,
    lanes_up: Vec<Gauge>,
}

impl ClientMetrics {
    fn new(r: &Registry, lanes: usize) -> Self {
        let m = ClientMetrics {
            up: r.gauge(CLIENT_UP),
            states: Availability::NAMES
                .iter()
                .map(|s| metrics::gauge!(CLIENT_STATE, "client" => r.client.clone(), "state" => *s))
                .collect(),
            restarts: r.counter(CLIENT_RESTARTS),
            restart_storms: r.counter(CLIENT_RESTART_STORMS),
            failovers: r.counter(CLIENT_FAILOVERS),
            cluster_changes: r.counter(CLIENT_CLUSTER_CHANGES),
            lanes_up: (0..lanes)
                .map(|i| {
                    let g = metrics::gauge!(CLIENT_LANE_UP, "client" => r.client.clone(), "lane" => i.to_string());
                    g.set(0.0);
                    g
                })
                .collect(),
            connects: r.counters(CLIENT_CONNECT_ATTEMPTS, "outcome", CONNECT_OUTCOMES),
        };
        m.set_state(&Availability::Connecting { attempt: 1 });
        m
    }

    /// Sets `redis_client_state` and `redis_client_up` for a new state.
    pub(crate) fn set_state(&self, state: &Availability) {
        let current = state.name();
        for (gauge, name) in self.states.iter().zip(Availability::NAMES) {
            gauge.set(if *name == current { 1.0 } else { 0.0 });
        }
        self.up.set(if state.is_serving() { 1.0 } else { 0.0 });
    }

    /// A connection actor was started to replace a failed one.
    pub(crate) fn restarted(&self) {
        self.restarts.increment(1);
    }

    /// A restart storm was declared.
    /// Lane `lane`'s connection came up (`true`) or was lost.
    pub(crate) fn lane_up(&self, lane: usize, up: bool) {
        if let Some(g) = self.lanes_up.get(lane) {
            g.set(if up { 1.0 } else { 0.0 });
        }
    }

    /// A Sentinel failover was followed.
    pub(crate) fn failover(&self) {
        self.failovers.increment(1);
    }

    /// The cluster's shape changed.
    pub(crate) fn cluster_changed(&self) {
        self.cluster_changes.increment(1);
    }

    pub(crate) fn storm(&self) {
        self.restart_storms.increment(1);
    }

    /// A connection attempt finished.
    pub(crate) fn connect(&self, outcome: ConnectOutcome) {
        if let Some(c) = self.connects.get(outcome as usize) {
            c.increment(1);
        }
    }
}

/// The handle's metrics: callers' commands, their latency, offline waiting, ambiguous answers.
pub(crate) struct CommandMetrics {
    /// `commands[label × OUTCOMES.len() + outcome]`.
    commands: Vec<Counter>,
    durations: Vec<Histogram>,
    offline_waiting: Gauge,
    ambiguous: Counter,
}

impl CommandMetrics {
    fn new(r: &Registry) -> Self {
        let client = &r.client;
        let commands = COMMANDS
            .iter()
            .flat_map(|cmd| {
                OUTCOMES.iter().map(move |o| {
                    let c = metrics::counter!(CLIENT_COMMANDS, "client" => client.clone(), "command" => *cmd, "outcome" => *o);
                    c.increment(0);
                    c
                })
            })
            .collect();
        let durations = COMMANDS
            .iter()
            .map(|cmd| metrics::histogram!(CLIENT_COMMAND_DURATION, "client" => client.clone(), "command" => *cmd))
            .collect();
        CommandMetrics {
            commands,
            durations,
            offline_waiting: r.gauge(CLIENT_OFFLINE_WAITING),
            ambiguous: r.counter(CLIENT_AMBIGUOUS),
        }
    }

    /// Records one finished command.
    #[inline]
    pub(crate) fn command(&self, label: CommandLabel, outcome: Outcome, took: Duration) {
        let i = label as usize;
        if let Some(c) = self.commands.get(i * OUTCOMES.len() + outcome as usize) {
            c.increment(1);
        }
        if let Some(h) = self.durations.get(i) {
            h.record(took.as_secs_f64());
        }
        if outcome == Outcome::Ambiguous {
            self.ambiguous.increment(1);
        }
    }

    /// One more (`true`) or one fewer (`false`) command waiting for the connection.
    pub(crate) fn waiting(&self, more: bool) {
        if more {
            self.offline_waiting.increment(1.0);
        } else {
            self.offline_waiting.decrement(1.0);
        }
    }
}

/// Handles of the INFO-derived server gauges and counters.
struct ServerMetrics {
    uptime: Gauge,
    memory_used: Gauge,
    memory_max: Gauge,
    connected_clients: Gauge,
    blocked_clients: Gauge,
    keyspace_hits: Counter,
    keyspace_misses: Counter,
    evicted_keys: Counter,
    expired_keys: Counter,
}

/// Labels of the `redis_instance_info` series currently at 1.
type InstanceLabels = (String, String, String);

/// The health actor's metrics: probes, `redis_up`, and the server's INFO.
pub(crate) struct HealthMetrics {
    registry: Registry,
    up: Gauge,
    ping: Histogram,
    probes: Vec<Counter>,
    server: ServerMetrics,
    instance: Mutex<Option<InstanceLabels>>,
    slots_served: Gauge,
    /// Per cluster node: `up` and `ping` gauges, created when the node is first probed.
    nodes: Mutex<Vec<(String, Gauge, Gauge)>>,
}

impl HealthMetrics {
    fn new(r: &Registry) -> Self {
        HealthMetrics {
            registry: r.clone(),
            up: r.gauge(SERVER_UP),
            ping: metrics::histogram!(CLIENT_PING_DURATION, "client" => r.client.clone()),
            probes: r.counters(CLIENT_PROBES, "outcome", PROBE_OUTCOMES),
            server: ServerMetrics {
                uptime: r.gauge(SERVER_UPTIME),
                memory_used: r.gauge(SERVER_MEMORY_USED),
                memory_max: r.gauge(SERVER_MEMORY_MAX),
                connected_clients: r.gauge(SERVER_CONNECTED_CLIENTS),
                blocked_clients: r.gauge(SERVER_BLOCKED_CLIENTS),
                keyspace_hits: r.counter(SERVER_KEYSPACE_HITS),
                keyspace_misses: r.counter(SERVER_KEYSPACE_MISSES),
                evicted_keys: r.counter(SERVER_EVICTED_KEYS),
                expired_keys: r.counter(SERVER_EXPIRED_KEYS),
            },
            instance: Mutex::new(None),
            slots_served: r.gauge(CLIENT_CLUSTER_SLOTS_SERVED),
            nodes: Mutex::new(Vec::new()),
        }
    }

    /// Sets the cluster gauges from one probe: each node's `up` and round trip (`(node, up,
    /// round trip)`; nodes no longer probed drop to 0), and the slots whose primary answered.
    pub(crate) fn set_cluster(&self, probed: &[(&str, bool, Option<Duration>)], served: u32) {
        let Ok(mut nodes) = self.nodes.lock() else {
            return;
        };
        for (node, up, _) in nodes.iter() {
            if !probed.iter().any(|(n, _, _)| *n == node.as_str()) {
                up.set(0.0);
            }
        }
        for (n, is_up, rtt) in probed {
            let index = match nodes.iter().position(|(node, _, _)| node.as_str() == *n) {
                Some(i) => i,
                None => {
                    let client = &self.registry.client;
                    let (up, ping) = self.registry.with(|| {
                        (
                            metrics::gauge!(CLIENT_CLUSTER_NODE_UP, "client" => client.clone(), "node" => n.to_string()),
                            metrics::gauge!(CLIENT_CLUSTER_NODE_PING, "client" => client.clone(), "node" => n.to_string()),
                        )
                    });
                    nodes.push((n.to_string(), up, ping));
                    nodes.len() - 1
                }
            };
            let (_, up, ping) = &nodes[index];
            up.set(if *is_up { 1.0 } else { 0.0 });
            if let Some(rtt) = rtt {
                ping.set(rtt.as_secs_f64());
            }
        }
        self.slots_served.set(f64::from(served));
    }

    /// Records one probe: its verdict, and its round trip when it was answered.
    pub(crate) fn probe(&self, outcome: ProbeOutcome, took: Option<Duration>) {
        if let Some(c) = self.probes.get(outcome as usize) {
            c.increment(1);
        }
        if let Some(took) = took {
            self.ping.record(took.as_secs_f64());
        }
    }

    /// Sets `redis_up`.
    pub(crate) fn set_up(&self, up: bool) {
        self.up.set(if up { 1.0 } else { 0.0 });
    }

    /// Sets the server gauges from a parsed INFO reply (which proves the server answers).
    pub(crate) fn set_server(&self, info: &ServerStats) {
        let s = &self.server;
        self.up.set(1.0);
        s.uptime.set(info.uptime_seconds as f64);
        s.memory_used.set(info.memory_used_bytes as f64);
        s.memory_max.set(info.memory_max_bytes as f64);
        s.connected_clients.set(info.connected_clients as f64);
        s.blocked_clients.set(info.blocked_clients as f64);
        s.keyspace_hits.absolute(info.keyspace_hits);
        s.keyspace_misses.absolute(info.keyspace_misses);
        s.evicted_keys.absolute(info.evicted_keys);
        s.expired_keys.absolute(info.expired_keys);
        self.set_instance((info.version.clone(), info.role.clone(), info.mode.clone()));
    }

    /// Moves `redis_instance_info` to the series of `labels` (the old one drops to 0).
    fn set_instance(&self, labels: InstanceLabels) {
        let Ok(mut current) = self.instance.lock() else {
            return;
        };
        if current.as_ref() == Some(&labels) {
            return;
        }
        let client = &self.registry.client;
        let register = |l: &InstanceLabels, value: f64| {
            self.registry.with(|| {
                metrics::gauge!(
                    SERVER_INSTANCE_INFO,
                    "client" => client.clone(),
                    "redis_version" => l.0.clone(),
                    "role" => l.1.clone(),
                    "redis_mode" => l.2.clone()
                )
                .set(value)
            })
        };
        if let Some(old) = current.take() {
            register(&old, 0.0);
        }
        register(&labels, 1.0);
        *current = Some(labels);
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("client", &self.health.registry.client)
            .finish_non_exhaustive()
    }
}

/// What kind of metric a name is.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// HELP text (and unit) of every metric, described once per recorder.
const DESCRIPTIONS: &[(&str, Kind, Option<Unit>, &str)] = &[
    (
        PUBSUB_UP,
        Kind::Gauge,
        None,
        "1 while the pub/sub subscriber connection is up with every subscription confirmed, else 0.",
    ),
    (
        PUBSUB_SUBSCRIPTIONS,
        Kind::Gauge,
        None,
        "Live pub/sub subscriptions.",
    ),
    (
        PUBSUB_MESSAGES,
        Kind::Counter,
        None,
        "Pub/sub messages put in a subscription's buffer (one per subscription reached).",
    ),
    (
        PUBSUB_LAGGED,
        Kind::Counter,
        None,
        "Pub/sub messages dropped for a subscription whose buffer was full (reported to it as Lagged).",
    ),
    (
        PUBSUB_RESUBSCRIBES,
        Kind::Counter,
        None,
        "Subscriber connections restored after a loss with every subscription confirmed again.",
    ),
    (
        BLOCKING_CONNECTIONS,
        Kind::Gauge,
        None,
        "Dedicated connections for blocking commands (BLPOP and co.) open now.",
    ),
    (
        BLOCKING_IN_USE,
        Kind::Gauge,
        None,
        "Blocking commands running on a dedicated connection now.",
    ),
    (
        LEASED_CONNECTIONS,
        Kind::Gauge,
        None,
        "Leased connections (transactions, writes that wait for replicas, lock acquires) open now.",
    ),
    (
        LEASED_IN_USE,
        Kind::Gauge,
        None,
        "Leased connections held by a transaction or command now.",
    ),
    (
        CLIENT_UP,
        Kind::Gauge,
        None,
        "1 while the Redis connection can serve commands, else 0.",
    ),
    (
        CLIENT_STATE,
        Kind::Gauge,
        None,
        "1 for the current availability state of the Redis connection, 0 for the others.",
    ),
    (
        CLIENT_RESTARTS,
        Kind::Counter,
        None,
        "Connection actors started by the supervisor to replace a failed one.",
    ),
    (
        CLIENT_RESTART_STORMS,
        Kind::Counter,
        None,
        "Restart storms: more Redis connections lost within the window than the restart intensity allows.",
    ),
    (
        CLIENT_LANE_UP,
        Kind::Gauge,
        None,
        "1 while the lane's connection is up, else 0 (one series per lane).",
    ),
    (
        CLIENT_CLUSTER_NODE_UP,
        Kind::Gauge,
        None,
        "Redis Cluster: 1 while the node answered the last health probe, else 0 (one series per node).",
    ),
    (
        CLIENT_CLUSTER_NODE_PING,
        Kind::Gauge,
        Some(Unit::Seconds),
        "Redis Cluster: round trip of the node's last answered health probe.",
    ),
    (
        CLIENT_CLUSTER_SLOTS_SERVED,
        Kind::Gauge,
        None,
        "Redis Cluster: slots (of 16384) whose primary answered the last health probe.",
    ),
    (
        CLIENT_CLUSTER_CHANGES,
        Kind::Counter,
        None,
        "Redis Cluster: changes of the cluster's shape (failover, slots moved, node joined or left).",
    ),
    (
        CLIENT_FAILOVERS,
        Kind::Counter,
        None,
        "Sentinel failovers followed: the connection moved to the master the sentinels named.",
    ),
    (
        CLIENT_CONNECT_ATTEMPTS,
        Kind::Counter,
        None,
        "Redis connection attempts, by outcome (success, failure).",
    ),
    (
        CLIENT_COMMANDS,
        Kind::Counter,
        None,
        "Redis commands finished by callers (health probes excluded), by command and outcome.",
    ),
    (
        CLIENT_COMMAND_DURATION,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Redis command latency as seen by the caller, by command.",
    ),
    (
        CLIENT_PROBES,
        Kind::Counter,
        None,
        "Health probes of the Redis connection, by verdict (ok, slow, not_ready, failed); not counted as commands.",
    ),
    (
        CLIENT_PING_DURATION,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Round trip of the health actor's PING probes.",
    ),
    (
        CLIENT_OFFLINE_WAITING,
        Kind::Gauge,
        None,
        "Commands currently waiting for the Redis connection to come up.",
    ),
    (
        CLIENT_AMBIGUOUS,
        Kind::Counter,
        None,
        "Commands that may have executed but got no reply (answered Ambiguous, never replayed).",
    ),
    (
        CLIENT_DEGRADED_OPS,
        Kind::Counter,
        None,
        "Pattern operations answered by a graceful-degradation policy without Redis, by op (cache_get, cache_set, cache_delete, cache_invalidate, cache_get_or_load, ratelimit_check, presence_heartbeat, presence_leave).",
    ),
    (
        CACHE_LOOKUPS,
        Kind::Counter,
        None,
        "Cache reads by result (hit, miss); a read degraded to a miss counts as a miss.",
    ),
    (
        CACHE_LOADS,
        Kind::Counter,
        None,
        "Cache loader runs (one per single-flight load) by outcome (ok, error, timeout, panic).",
    ),
    (
        CACHE_COALESCED,
        Kind::Counter,
        None,
        "Cache get_or_load callers that joined a load already running instead of running the loader.",
    ),
    (
        CACHE_CORRUPT,
        Kind::Counter,
        None,
        "Cache reads that found data they cannot decode (not JSON, another shape, not a string).",
    ),
    (
        RATELIMIT_CHECKS,
        Kind::Counter,
        None,
        "Rate-limit checks by decision (allowed, denied, degraded: allowed without Redis, error).",
    ),
    (
        SESSIONS_CREATED,
        Kind::Counter,
        None,
        "Sessions created by the session store.",
    ),
    (
        SESSIONS_REVOKED,
        Kind::Counter,
        None,
        "Sessions revoked (revoke, revoke_all, tower-sessions delete); expiry is not counted.",
    ),
    (
        LOCK_ACQUIRES,
        Kind::Counter,
        None,
        "Lock acquire and try_acquire calls by result (acquired, busy: held by another, error).",
    ),
    (
        LOCK_LOST,
        Kind::Counter,
        None,
        "Lock extends and releases that found the lock no longer held by their guard (LockLost).",
    ),
    (
        SERVER_UP,
        Kind::Gauge,
        None,
        "1 while the Redis server answers the health probes, else 0.",
    ),
    (
        SERVER_UPTIME,
        Kind::Gauge,
        Some(Unit::Seconds),
        "Redis server uptime (INFO uptime_in_seconds).",
    ),
    (
        SERVER_MEMORY_USED,
        Kind::Gauge,
        Some(Unit::Bytes),
        "Redis used_memory.",
    ),
    (
        SERVER_MEMORY_MAX,
        Kind::Gauge,
        Some(Unit::Bytes),
        "Redis maxmemory (0: no limit).",
    ),
    (
        SERVER_CONNECTED_CLIENTS,
        Kind::Gauge,
        None,
        "Redis connected_clients.",
    ),
    (
        SERVER_BLOCKED_CLIENTS,
        Kind::Gauge,
        None,
        "Redis blocked_clients.",
    ),
    (
        SERVER_KEYSPACE_HITS,
        Kind::Counter,
        None,
        "Redis keyspace_hits.",
    ),
    (
        SERVER_KEYSPACE_MISSES,
        Kind::Counter,
        None,
        "Redis keyspace_misses.",
    ),
    (
        SERVER_EVICTED_KEYS,
        Kind::Counter,
        None,
        "Redis evicted_keys.",
    ),
    (
        SERVER_EXPIRED_KEYS,
        Kind::Counter,
        None,
        "Redis expired_keys.",
    ),
    (
        SERVER_INSTANCE_INFO,
        Kind::Gauge,
        None,
        "Information about the Redis instance (1 for the server connected).",
    ),
];

fn describe_all() {
    for &(name, kind, unit, help) in DESCRIPTIONS {
        match (kind, unit) {
            (Kind::Counter, Some(u)) => metrics::describe_counter!(name, u, help),
            (Kind::Counter, None) => metrics::describe_counter!(name, help),
            (Kind::Gauge, Some(u)) => metrics::describe_gauge!(name, u, help),
            (Kind::Gauge, None) => metrics::describe_gauge!(name, help),
            (Kind::Histogram, Some(u)) => metrics::describe_histogram!(name, u, help),
            (Kind::Histogram, None) => metrics::describe_histogram!(name, help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_command_labels() {
        assert_eq!(CommandLabel::for_name(b"GET"), CommandLabel::Get);
        assert_eq!(CommandLabel::for_name(b"pExpire"), CommandLabel::Expire);
        assert_eq!(CommandLabel::for_name(b"HGETALL"), CommandLabel::Other);
        assert_eq!(CommandLabel::for_name(b"pipeline"), CommandLabel::Other);
        assert_eq!(COMMANDS[CommandLabel::Other as usize], "other");
        assert_eq!(COMMANDS[CommandLabel::Multi as usize], "multi");
        assert_eq!(COMMANDS[CommandLabel::Ping as usize], "ping");
        for (i, l) in CommandLabel::ALL.iter().enumerate() {
            assert_eq!((*l as usize, l.name()), (i, COMMANDS[i]));
        }
    }

    #[test]
    fn every_series_exists_at_zero_with_help() {
        let recorder = prometheus_builder().build_recorder();
        let handle = recorder.handle();
        let _m = Metrics::new("t", 1, Some(Arc::new(recorder)));
        let text = handle.render();
        for name in [
            CLIENT_UP,
            CLIENT_RESTARTS,
            CLIENT_RESTART_STORMS,
            CLIENT_OFFLINE_WAITING,
            CLIENT_AMBIGUOUS,
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
        for o in PROBE_OUTCOMES {
            assert!(
                text.contains(&format!(
                    "{CLIENT_PROBES}{{client=\"t\",outcome=\"{o}\"}} 0"
                )),
                "{o}:\n{text}"
            );
        }
    }

    #[test]
    fn info_into_gauges() {
        let recorder = prometheus_builder().build_recorder();
        let handle = recorder.handle();
        let m = Metrics::new("info", 1, Some(Arc::new(recorder)));
        m.health
            .set_server(&ServerStats::parse(crate::info::tests::INFO));
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
        m.health.set_server(&ServerStats::parse(
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
