//! The pre-registered handles of the core metrics, split by the one module that writes each
//! group: the supervisor ([`ClientMetrics`]), the delivery loop ([`CommandMetrics`]), the health
//! actor ([`HealthMetrics`]). Each is created at zero when the supervisor starts, so recording
//! is an atomic add on a handle resolved once.

use std::sync::Mutex;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

use super::Registry;
use super::labels::{
    COMMANDS, CONNECT_OUTCOMES, CommandLabel, ConnectOutcome, OUTCOMES, Outcome, PROBE_OUTCOMES,
    ProbeOutcome,
};
use super::names::*;
use crate::availability::Availability;
use crate::info::ServerStats;

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
    pub(super) fn new(r: &Registry, lanes: usize) -> Self {
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
    pub(super) fn new(r: &Registry) -> Self {
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
    pub(super) registry: Registry,
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
    pub(super) fn new(r: &Registry) -> Self {
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
