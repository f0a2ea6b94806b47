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
//!
//! Its parts: every name once, with its kind, unit and HELP text (`metrics/names.rs`: the
//! constants below); the fixed label values (`metrics/labels.rs`); the handles, by the module that
//! writes them (`metrics/handles.rs` for the supervisor, the delivery loop and the health actor;
//! `metrics/dedicated.rs` for pub/sub and the pools; `metrics/patterns.rs` for the patterns).

use std::sync::Arc;

use metrics::{Counter, Gauge, Recorder, SharedString};

mod dedicated;
mod handles;
mod labels;
mod names;
mod patterns;
pub(crate) use dedicated::{PoolMetrics, PubSubMetrics};
pub(crate) use handles::{ClientMetrics, CommandMetrics, HealthMetrics};
pub use labels::{COMMANDS, CONNECT_OUTCOMES, OUTCOMES, PROBE_OUTCOMES};
pub(crate) use labels::{CommandLabel, ConnectOutcome, Outcome, ProbeOutcome};
pub use names::*;
pub(crate) use patterns::PatternMetrics;
pub(crate) use patterns::{Acquire, Check, DegradedOp, LoadOutcome, Lookup};
pub use patterns::{
    CACHE_LOAD_OUTCOMES, CACHE_LOOKUP_RESULTS, DEGRADED_OPS, LOCK_ACQUIRE_RESULTS,
    RATELIMIT_DECISIONS,
};

/// Histogram buckets (seconds) for Redis latencies: 50 µs to 5 s.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

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
            names::describe_all();
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

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("client", &self.health.registry.client)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::availability::Availability;
    use crate::info::ServerStats;

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
