//! Which commands bring back big replies, so that with several lanes they go to the bulk lane
//! (the last one) and the small ones stay on the others: a reply is delivered in order on its
//! connection, so a small reply behind a 4 MiB one waits for all of it.
//!
//! Counting outstanding commands cannot tell a big reply from a small one before it comes; the
//! command's last reply can. A table of 4096 bits, indexed by a hash of the command (name and
//! arguments), remembers whether the last reply to that command was big
//! ([`BIG_REPLY`] bytes or more). Collisions only misplace a command onto the other kind of lane.
//! Kept only with more than one lane.

use std::sync::atomic::{AtomicU64, Ordering};

use redis::Value;

use crate::request::Request;

/// A reply this big (bytes) or bigger sends its command to the bulk lane next time.
pub(crate) const BIG_REPLY: usize = 128 * 1024;

const WORDS: usize = 64;

/// The big-reply table.
pub(crate) struct BigReplies {
    bits: [AtomicU64; WORDS],
}

impl BigReplies {
    pub(crate) fn new() -> Self {
        BigReplies {
            bits: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// The table entry of a single command (`None` for a pipeline: not tracked).
    pub(crate) fn entry(request: &Request) -> Option<usize> {
        let cmd = request.as_cmd()?;
        // FNV-1a over the arguments, with a separator between them.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for bytes in crate::command::args(cmd) {
            for b in bytes.iter().chain(std::iter::once(&0xff)) {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        Some((h % (WORDS as u64 * 64)) as usize)
    }

    /// Whether the last reply to the command at `entry` was big.
    pub(crate) fn is_big(&self, entry: usize) -> bool {
        let (word, bit) = (entry / 64, entry % 64);
        self.bits[word].load(Ordering::Relaxed) & (1 << bit) != 0
    }

    /// Records the size of a reply to the command at `entry` (writes only on a change).
    pub(crate) fn record(&self, entry: usize, reply: &Value) {
        let big = reply_size(reply) >= BIG_REPLY;
        if self.is_big(entry) != big {
            let (word, bit) = (entry / 64, entry % 64);
            if big {
                self.bits[word].fetch_or(1 << bit, Ordering::Relaxed);
            } else {
                self.bits[word].fetch_and(!(1 << bit), Ordering::Relaxed);
            }
        }
    }
}

/// About how many bytes a reply took on the wire: its strings, one level deep.
fn reply_size(v: &Value) -> usize {
    let flat = |v: &Value| match v {
        Value::BulkString(b) => b.len(),
        Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => s.len(),
        _ => 8,
    };
    match v {
        Value::Array(items) | Value::Set(items) | Value::Push { data: items, .. } => {
            items.iter().map(flat).sum()
        }
        Value::Map(pairs) => pairs.iter().map(|(k, v)| flat(k) + flat(v)).sum(),
        other => flat(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_replies_are_remembered_per_command() {
        let t = BigReplies::new();
        let get = |k: &str| Request::raw(redis::cmd("GET").arg(k).clone());
        let (big, small) = (
            BigReplies::entry(&get("blob")).unwrap(),
            BigReplies::entry(&get("k")).unwrap(),
        );
        assert_ne!(big, small);
        t.record(big, &Value::BulkString(vec![0; BIG_REPLY]));
        t.record(small, &Value::BulkString(vec![0; 64]));
        assert!(t.is_big(big) && !t.is_big(small));
        t.record(big, &Value::Nil);
        assert!(!t.is_big(big), "a small reply clears it");
        let pipe = Request::pipeline(redis::pipe());
        assert_eq!(BigReplies::entry(&pipe), None);
    }
}
