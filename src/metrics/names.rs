//! Every metric name, each once, with its kind, unit and HELP text: the constant's rustdoc and
//! the Prometheus `# HELP` line are that one text (the Grafana dashboard and the alert rules use
//! exactly these names).

use metrics::Unit;

/// What kind of metric a name is.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Declares each metric name once: the public constant (its rustdoc is the name, its labels and
/// the HELP text, then any `///` lines of the row) and its row of [`DESCRIPTIONS`].
macro_rules! metric_names {
    ($(
        $(#[doc = $see:literal])*
        $const:ident = $name:literal $([$labels:literal])?, $kind:ident, $unit:expr, $help:literal;
    )*) => {
        $(
            #[doc = concat!("`", $name, $("{", $labels, "}",)? "`: ", $help)]
            $(#[doc = ""] #[doc = $see])*
            pub const $const: &str = $name;
        )*

        /// Kind, unit and HELP text of every metric, described once per recorder.
        pub(super) const DESCRIPTIONS: &[(&str, Kind, Option<Unit>, &str)] =
            &[$(($const, Kind::$kind, $unit, $help)),*];
    };
}

metric_names! {
    CLIENT_UP = "redis_client_up", Gauge, None,
        "1 while the Redis connection can serve commands, else 0.";
    CLIENT_STATE = "redis_client_state" ["state"], Gauge, None,
        "1 for the current availability state of the Redis connection, 0 for the others.";
    CLIENT_RESTARTS = "redis_client_restarts_total", Counter, None,
        "Connection actors started by the supervisor to replace a failed one.";
    CLIENT_RESTART_STORMS = "redis_client_restart_storms_total", Counter, None,
        "Restart storms declared: more Redis connections lost within the window than the restart intensity allows.";
    CLIENT_FAILOVERS = "redis_client_failovers_total", Counter, None,
        "Sentinel failovers followed: the connections moved to the master the sentinels named or promoted.";
    CLIENT_CLUSTER_NODE_UP = "redis_client_cluster_node_up" ["node"], Gauge, None,
        "Redis Cluster: 1 while the node (host:port) answered the last health probe, else 0; one series per node probed (every primary, and every replica when reads use them); a node that left the cluster reads 0.";
    CLIENT_CLUSTER_NODE_PING = "redis_client_cluster_node_ping_seconds" ["node"], Gauge, Some(Unit::Seconds),
        "Redis Cluster: round trip of the node's last answered health probe.";
    CLIENT_CLUSTER_SLOTS_SERVED = "redis_client_cluster_slots_served", Gauge, None,
        "Redis Cluster: slots (of 16384) whose primary answered the last health probe; 0 when not a cluster.";
    CLIENT_CLUSTER_CHANGES = "redis_client_cluster_changes_total", Counter, None,
        "Redis Cluster: changes of the cluster's shape seen by the health probes (a failover, slots moved, a node joined or left).";
    CLIENT_LANE_UP = "redis_client_lane_up" ["lane"], Gauge, None,
        "1 while the lane's connection is up, else 0; one series per lane (0, 1, ...).";
    CLIENT_CONNECT_ATTEMPTS = "redis_client_connect_attempts_total" ["outcome"], Counter, None,
        "Redis connection attempts, by outcome (success, failure).";
    /// Health probes are counted apart, in [`CLIENT_PROBES`].
    CLIENT_COMMANDS = "redis_client_commands_total" ["command,outcome"], Counter, None,
        "Redis commands finished by callers (health probes excluded), by command and outcome.";
    CLIENT_COMMAND_DURATION = "redis_client_command_duration_seconds" ["command"], Histogram, Some(Unit::Seconds),
        "Redis command latency as seen by the caller, by command.";
    CLIENT_PING_DURATION = "redis_client_ping_duration_seconds", Histogram, Some(Unit::Seconds),
        "Round trip of the health actor's answered PING probes.";
    CLIENT_PROBES = "redis_client_probes_total" ["outcome"], Counter, None,
        "Health probes of the Redis connection, by verdict (ok, slow, not_ready, failed); not counted as commands.";
    CLIENT_OFFLINE_WAITING = "redis_client_offline_waiting", Gauge, None,
        "Commands waiting for the Redis connection to come up right now.";
    CLIENT_AMBIGUOUS = "redis_client_ambiguous_total", Counter, None,
        "Commands that may have executed but got no reply (answered Ambiguous, never replayed).";
    /// The values of `op`: [`DEGRADED_OPS`](super::DEGRADED_OPS).
    CLIENT_DEGRADED_OPS = "redis_client_degraded_ops_total" ["op"], Counter, None,
        "Pattern operations answered by a graceful-degradation policy without Redis, by op (cache_get, cache_set, cache_delete, cache_invalidate, cache_get_or_load, ratelimit_check, presence_heartbeat, presence_leave).";
    SERVER_UP = "redis_up", Gauge, None,
        "1 while the last health probe (or the connect handshake) got an answer from the Redis server, 0 when it failed or there is no connection.";
    SERVER_UPTIME = "redis_uptime_in_seconds", Gauge, Some(Unit::Seconds),
        "Redis server uptime (INFO uptime_in_seconds).";
    SERVER_MEMORY_USED = "redis_memory_used_bytes", Gauge, Some(Unit::Bytes),
        "Redis used_memory (INFO).";
    SERVER_MEMORY_MAX = "redis_memory_max_bytes", Gauge, Some(Unit::Bytes),
        "Redis maxmemory (INFO; 0: no limit).";
    SERVER_CONNECTED_CLIENTS = "redis_connected_clients", Gauge, None,
        "Redis connected_clients (INFO).";
    SERVER_BLOCKED_CLIENTS = "redis_blocked_clients", Gauge, None,
        "Redis blocked_clients (INFO).";
    SERVER_KEYSPACE_HITS = "redis_keyspace_hits_total", Counter, None,
        "Redis keyspace_hits (INFO).";
    SERVER_KEYSPACE_MISSES = "redis_keyspace_misses_total", Counter, None,
        "Redis keyspace_misses (INFO).";
    SERVER_EVICTED_KEYS = "redis_evicted_keys_total", Counter, None,
        "Redis evicted_keys (INFO).";
    SERVER_EXPIRED_KEYS = "redis_expired_keys_total", Counter, None,
        "Redis expired_keys (INFO).";
    SERVER_INSTANCE_INFO = "redis_instance_info" ["redis_version,role,redis_mode"], Gauge, None,
        "Information about the Redis instance (1 for the server connected now).";
    PUBSUB_UP = "redis_client_pubsub_up", Gauge, None,
        "1 while the pub/sub subscriber connection is up with every subscription confirmed, else 0 (also 0 before the first subscription opens it).";
    /// One per live [`Subscription`](crate::pubsub::Subscription).
    PUBSUB_SUBSCRIPTIONS = "redis_client_pubsub_subscriptions", Gauge, None,
        "Live pub/sub subscriptions.";
    PUBSUB_MESSAGES = "redis_client_pubsub_messages_total", Counter, None,
        "Pub/sub messages put in a subscription's buffer (a message reaching two subscriptions counts twice).";
    /// Each drop is reported to its subscription in a [`Lagged`](crate::pubsub::PubSubEvent::Lagged) event.
    PUBSUB_LAGGED = "redis_client_pubsub_lagged_total", Counter, None,
        "Pub/sub messages dropped for a subscription whose buffer was full (reported to it as Lagged).";
    PUBSUB_RESUBSCRIBES = "redis_client_pubsub_resubscribes_total", Counter, None,
        "Subscriber connections restored after a loss with every subscription confirmed again.";
    BLOCKING_CONNECTIONS = "redis_client_blocking_connections", Gauge, None,
        "Dedicated connections for blocking commands (BLPOP and co.) open now.";
    BLOCKING_IN_USE = "redis_client_blocking_in_use", Gauge, None,
        "Blocking commands running on a dedicated connection now.";
    LEASED_CONNECTIONS = "redis_client_leased_connections", Gauge, None,
        "Leased connections (transactions, writes that wait for replicas, lock confirmations) open now.";
    LEASED_IN_USE = "redis_client_leased_in_use", Gauge, None,
        "Leased connections held by a transaction or command now.";
    /// A read answered as a miss by [`Degrade::Miss`](crate::cache::Degrade::Miss) counts as a `miss`.
    CACHE_LOOKUPS = "redis_client_cache_lookups_total" ["result"], Counter, None,
        "Cache reads by result (hit, miss); a read degraded to a miss (Redis unavailable, corrupt data) counts as a miss; get_many counts one per key.";
    /// Runs of [`Cache::get_or_load`](crate::cache::Cache::get_or_load)'s loader.
    CACHE_LOADS = "redis_client_cache_loads_total" ["outcome"], Counter, None,
        "Cache loader runs by outcome (ok, error, timeout, panic): one per single-flight load, however many callers waited on it.";
    CACHE_COALESCED = "redis_client_cache_coalesced_total", Counter, None,
        "Cache get_or_load callers that joined a load already running in this process instead of running the loader.";
    CACHE_CORRUPT = "redis_client_cache_corrupt_total", Counter, None,
        "Cache reads that found data they cannot decode (not JSON, JSON of another shape, not a string).";
    /// `degraded`: allowed by [`OnUnavailable::Allow`](crate::ratelimit::OnUnavailable::Allow); `error`: e.g. under [`OnUnavailable::Deny`](crate::ratelimit::OnUnavailable::Deny).
    RATELIMIT_CHECKS = "redis_client_ratelimit_checks_total" ["decision"], Counter, None,
        "Rate-limit checks by decision (allowed, denied, degraded: allowed without Redis, error: the caller got an error).";
    /// By [`SessionStore`](crate::session::SessionStore) and its tower-sessions adapter.
    SESSIONS_CREATED = "redis_client_sessions_created_total", Counter, None,
        "Sessions created by the session store.";
    SESSIONS_REVOKED = "redis_client_sessions_revoked_total", Counter, None,
        "Sessions revoked (revoke and revoke_all, each session counting, and the tower-sessions delete); expiry is not counted.";
    /// Calls of [`LockManager`](crate::lock::LockManager)'s `acquire` and `try_acquire`.
    LOCK_ACQUIRES = "redis_client_lock_acquires_total" ["result"], Counter, None,
        "Lock acquire and try_acquire calls by result (acquired; busy: held by another, try_acquire answered None or acquire waited in vain; error).";
    /// Calls of a [`LockGuard`](crate::lock::LockGuard)'s `extend` and `release`.
    LOCK_LOST = "redis_client_lock_lost_total", Counter, None,
        "Lock extends and releases that found the lock no longer held by their guard (LockLost).";
}

/// Describes every metric (HELP and unit) in the current recorder.
pub(super) fn describe_all() {
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
