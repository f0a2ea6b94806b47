//! `INFO` parsing: the text of an `INFO` reply into [`ServerStats`]. Pure (no I/O); the health
//! actor and the connection actor read INFO, the metrics module turns the stats into gauges.

use serde::Serialize;

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const INFO: &str = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\nuptime_in_seconds:42\r\n\r\n# Clients\r\nconnected_clients:3\r\nblocked_clients:1\r\n\r\n# Memory\r\nused_memory:1048576\r\nmaxmemory:0\r\n\r\n# Stats\r\nkeyspace_hits:10\r\nkeyspace_misses:5\r\nexpired_keys:7\r\nevicted_keys:2\r\n\r\n# Replication\r\nrole:master\r\n";

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
}
