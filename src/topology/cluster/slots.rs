//! The cluster's addressing, as pure functions: a key's hash slot (CRC16), `CLUSTER SLOTS`
//! replies parsed into shards, a redirect's target, slot ranges written out.

use std::fmt;

use redis::Value;

use crate::config::NodeAddr;

/// One shard of the cluster: the slot ranges its primary serves, and its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shard {
    /// Inclusive slot ranges, in order.
    pub(crate) slots: Vec<(u16, u16)>,
    pub(crate) primary: NodeAddr,
    pub(crate) replicas: Vec<NodeAddr>,
}

/// The slot ranges, as `0-5460,10923` (a range of one slot written alone).
pub(crate) struct Ranges<'a>(pub(crate) &'a [(u16, u16)]);

impl fmt::Display for Ranges<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (a, b)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match a == b {
                true => write!(f, "{a}")?,
                false => write!(f, "{a}-{b}")?,
            }
        }
        Ok(())
    }
}

/// Slots in a cluster.
pub(crate) const SLOTS: u32 = 16_384;

/// The shards in a `CLUSTER SLOTS` reply, grouped by primary (in the order of their first
/// range), and how many of the 16 384 slots have an owner.
pub(crate) fn shards(reply: &Value) -> (Vec<Shard>, u32) {
    let mut shards: Vec<Shard> = Vec::new();
    let mut covered = 0u32;
    let Value::Array(ranges) = reply else {
        return (shards, covered);
    };
    for range in ranges {
        let Value::Array(items) = range else { continue };
        let (Some(start), Some(end)) = (int(items.first()), int(items.get(1))) else {
            continue;
        };
        let mut nodes = items.iter().skip(2).filter_map(node);
        let Some(primary) = nodes.next() else {
            continue;
        };
        covered += u32::from(end.saturating_sub(start)) + 1;
        let replicas: Vec<NodeAddr> = nodes.collect();
        match shards.iter_mut().find(|s| s.primary == primary) {
            Some(shard) => {
                shard.slots.push((start, end));
                for r in replicas {
                    if !shard.replicas.contains(&r) {
                        shard.replicas.push(r);
                    }
                }
            }
            None => shards.push(Shard {
                slots: vec![(start, end)],
                primary,
                replicas,
            }),
        }
    }
    for shard in &mut shards {
        shard.slots.sort_unstable();
        shard
            .replicas
            .sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
    }
    (shards, covered)
}

fn int(v: Option<&Value>) -> Option<u16> {
    match v? {
        Value::Int(n) => u16::try_from(*n).ok(),
        _ => None,
    }
}

/// `[host, port, id, …]` of one node in a `CLUSTER SLOTS` range.
fn node(v: &Value) -> Option<NodeAddr> {
    let Value::Array(fields) = v else { return None };
    let host = match fields.first()? {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => s.clone(),
        _ => return None,
    };
    let port = int(fields.get(1))?;
    (!host.is_empty() && host != "?").then_some(NodeAddr { host, port })
}

/// The node of a `MOVED`/`ASK` reply's detail (`slot host:port`).
pub(crate) fn redirect_target(detail: Option<&str>) -> Option<NodeAddr> {
    let addr = detail?.split_whitespace().nth(1)?;
    let (host, port) = addr.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    (!host.is_empty()).then_some(NodeAddr { host, port })
}

/// The cluster slot of `key` (CRC16 of the key, or of its `{hash tag}`, modulo 16 384).
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|b| *b == b'}')
                .filter(|close| *close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % (SLOTS as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn n(host: &str, port: i64) -> Value {
        Value::Array(vec![bulk(host), Value::Int(port), bulk("id")])
    }

    #[test]
    fn slots_follow_the_reference_values() {
        // From the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(key_slot(b"{}x"), key_slot(b"{}x"));
        assert_ne!(key_slot(b"{}x"), key_slot(b"x"));
    }

    #[test]
    fn redirect_targets_parse() {
        let n = redirect_target(Some("3999 127.0.0.1:6381")).map(|n| n.to_string());
        assert_eq!(n.as_deref(), Some("127.0.0.1:6381"));
        let n = redirect_target(Some("1 [::1]:7000")).map(|n| (n.host, n.port));
        assert_eq!(n, Some(("::1".to_string(), 7000)));
        assert!(redirect_target(Some("3999")).is_none());
        assert!(redirect_target(None).is_none());
    }

    #[test]
    fn shards_group_ranges_by_primary() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                n("10.0.0.1", 7000),
                n("10.0.0.4", 7003),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(10922),
                n("10.0.0.2", 7001),
            ]),
            Value::Array(vec![
                Value::Int(10923),
                Value::Int(10923),
                n("10.0.0.1", 7000),
            ]),
        ]);
        let (shards, covered) = shards(&reply);
        assert_eq!(covered, 10_924);
        assert_eq!(shards.len(), 2);
        assert_eq!(Ranges(&shards[0].slots).to_string(), "0-5460,10923");
        assert_eq!(shards[0].replicas.len(), 1);
        assert_eq!(shards[1].primary.to_string(), "10.0.0.2:7001");
    }
}
