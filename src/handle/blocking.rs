//! The blocking commands of [`RedisHandle`] (`BLPOP`, `BRPOP`, `BZPOPMIN`, `XREAD BLOCK`,
//! `WAIT`), run on the blocking pool's dedicated connections instead of the shared one, and
//! raw blocking commands sent through [`cmd`](RedisHandle::cmd), found by name and routed there
//! too.
//!
//! A blocking command's deadline is its own block time plus the handle's timeout as a grace
//! (not the command timeout alone, which would cut it short). Within it, the command waits (per
//! the offline policy) for the server to be up, then for a free dedicated connection
//! ([`Error::Overloaded`] if none frees up in time). Delivery is the one loop every command takes
//! (`delivery.rs`), with these as its data: a pop that may have happened without its reply
//! reaching the caller is [`Error::Ambiguous`] (never replayed); `XREAD` and `WAIT` are
//! read-only and replayed once on a lost connection; on a cluster it runs on the node of its
//! key's slot and follows `MOVED`/`ASK`. At shutdown a blocked command is unblocked and answered
//! [`Error::ShuttingDown`]: it popped nothing.

use std::time::Duration;

use redis::{FromRedisValue, Value};
use tokio::time::Instant;

use super::{RedisHandle, convert, deadline_after};
use crate::delivery::{Plan, Via};
use crate::error::Error;
use crate::metrics::{CommandLabel, Outcome};
use crate::pool::Purpose;
use crate::request::Request;

/// The channel [`RedisHandle::wait`] publishes an empty message on (see there).
const WAIT_MARK_CHANNEL: &str = "__redis-supervisor:wait";

/// Which key names in a reply carry the key prefix, to be taken off for the caller.
#[derive(Clone, Copy)]
enum Keys {
    /// None (raw commands: their keys were sent as given).
    AsSent,
    /// The first element of an array reply (`BLPOP`: `[key, value]`).
    First,
    /// The keys of a map reply (`XREAD`: stream name → entries).
    OfMap,
}

impl RedisHandle {
    /// `BLPOP key [key …] timeout`: pops the first element of the first non-empty list, waiting
    /// up to `timeout` for one; `None` (as `Option<(String, V)>`) when the time passed. Runs on a
    /// dedicated connection. The key in the answer is given without the key prefix.
    ///
    /// ```no_run
    /// # async fn run(redis: redis_supervisor::RedisHandle) -> Result<(), redis_supervisor::Error> {
    /// use std::time::Duration;
    /// let job: Option<(String, String)> = redis.blpop(&["jobs"], Duration::from_secs(5)).await?;
    /// # let _ = job; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no keys or a `timeout` of 0 (it would block forever) or
    /// over 24 h; [`Error::Overloaded`] when every dedicated connection stays busy past the
    /// deadline; [`Error::Ambiguous`] if the connection was lost or the deadline passed with the
    /// command sent (an element may have been popped); otherwise see the
    /// [module docs](super).
    pub async fn blpop<K: AsRef<[u8]>, RV: FromRedisValue>(
        &self,
        keys: &[K],
        timeout: Duration,
    ) -> Result<RV, Error> {
        self.pop("BLPOP", CommandLabel::Blpop, keys, timeout).await
    }

    /// `BRPOP key [key …] timeout`: as [`blpop`](Self::blpop), from the tail.
    ///
    /// # Errors
    /// As [`blpop`](Self::blpop).
    pub async fn brpop<K: AsRef<[u8]>, RV: FromRedisValue>(
        &self,
        keys: &[K],
        timeout: Duration,
    ) -> Result<RV, Error> {
        self.pop("BRPOP", CommandLabel::Brpop, keys, timeout).await
    }

    /// `BZPOPMIN key [key …] timeout`: pops the lowest-scored member of the first non-empty
    /// sorted set, as `Option<(String, String, f64)>` (key without prefix, member, score);
    /// `None` when the time passed.
    ///
    /// # Errors
    /// As [`blpop`](Self::blpop).
    pub async fn bzpopmin<K: AsRef<[u8]>, RV: FromRedisValue>(
        &self,
        keys: &[K],
        timeout: Duration,
    ) -> Result<RV, Error> {
        self.pop("BZPOPMIN", CommandLabel::Bzpopmin, keys, timeout)
            .await
    }

    /// `XREAD [COUNT count] BLOCK ms STREAMS key … id …`: entries after each `(stream, id)`
    /// (`"$"`: only new ones), waiting up to `block` for any; `None` (as an `Option`) when the
    /// time passed. The reply is a map from stream name (without the key prefix) to its entries,
    /// e.g. `Option<HashMap<String, Vec<(String, HashMap<String, String>)>>>`. Read-only: replayed
    /// once after a lost connection.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no streams, a `count` of 0, or a `block` under 1 ms or
    /// over 24 h; otherwise as [`blpop`](Self::blpop), with [`Error::Timeout`] instead of
    /// `Ambiguous`.
    pub async fn xread_block<K: AsRef<[u8]>, RV: FromRedisValue>(
        &self,
        streams: &[(K, &str)],
        count: Option<usize>,
        block: Duration,
    ) -> Result<RV, Error> {
        check_block("XREAD", block)?;
        if streams.is_empty() {
            return Err(Error::InvalidArgument(
                "XREAD needs at least one stream".into(),
            ));
        }
        let mut cmd = redis::cmd("XREAD");
        if let Some(n) = count {
            if n == 0 {
                return Err(Error::InvalidArgument(
                    "XREAD COUNT must be at least 1".into(),
                ));
            }
            cmd.arg("COUNT").arg(n);
        }
        cmd.arg("BLOCK")
            .arg(block.as_millis().max(1) as u64)
            .arg("STREAMS");
        for (key, _) in streams {
            cmd.arg(self.key(key));
        }
        for (_, id) in streams {
            cmd.arg(*id);
        }
        let request = Request::typed(cmd, CommandLabel::Xread);
        self.run_blocking(request, block, true, Keys::OfMap).await
    }

    /// `WAIT replicas timeout`: waits until at least `replicas` replicas acknowledged every
    /// write the server had applied when this was called — the writes of every handle, this
    /// one's included — or until `timeout`; returns how many did. (To make each write of a
    /// handle wait for replicas, see [`wait_replicas`](Self::wait_replicas).)
    ///
    /// Redis's `WAIT` counts only the writes of the connection it runs on, and this one runs on
    /// a dedicated connection (it would stall the shared one). So it first publishes an empty
    /// message on the channel `__redis-supervisor:wait` (a write that replicates, made after
    /// every write this handle saw acknowledged) and waits for that.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a `timeout` of 0 (it would block forever) or over 24 h;
    /// otherwise as [`blpop`](Self::blpop), with [`Error::Timeout`] instead of `Ambiguous`.
    pub async fn wait(&self, replicas: u32, timeout: Duration) -> Result<u64, Error> {
        check_block("WAIT", timeout)?;
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(timeout.as_millis().max(1) as u64);
        self.run_blocking(wait_request(wait), timeout, true, Keys::AsSent)
            .await
    }

    /// A raw blocking command (found by name, see `command::blocking_time`) on the pool.
    pub(super) async fn raw_blocking<RV: FromRedisValue>(
        &self,
        cmd: redis::Cmd,
        block: Result<Duration, Error>,
        replay_safe: bool,
    ) -> Result<RV, Error> {
        let request = Request::raw(cmd);
        let block = match block {
            Ok(b) => b,
            Err(e) => {
                let took = Duration::ZERO;
                self.core
                    .metrics()
                    .command(request.label(), Outcome::Error, took);
                return Err(e);
            }
        };
        let request = match request.as_cmd() {
            Some(cmd) if request.label() == CommandLabel::Wait || is_waitaof(cmd) => {
                wait_request(cmd.clone())
            }
            _ => request,
        };
        self.run_blocking(request, block, replay_safe, Keys::AsSent)
            .await
    }

    async fn pop<K: AsRef<[u8]>, RV: FromRedisValue>(
        &self,
        name: &'static str,
        label: CommandLabel,
        keys: &[K],
        timeout: Duration,
    ) -> Result<RV, Error> {
        check_block(name, timeout)?;
        let mut cmd = self.cmd_with_keys(name, keys)?;
        cmd.arg(timeout.as_secs_f64());
        self.run_blocking(Request::typed(cmd, label), timeout, false, Keys::First)
            .await
    }

    async fn run_blocking<RV: FromRedisValue>(
        &self,
        request: Request,
        block: Duration,
        replay_safe: bool,
        keys: Keys,
    ) -> Result<RV, Error> {
        let start = Instant::now();
        let prefix = self.core.config().key_prefix().as_bytes();
        let budget = block.saturating_add(self.timeout);
        let plan = Plan {
            request: &request,
            replay_safe,
            via: Via::Pool(Purpose::Blocking),
            budget,
            deadline: deadline_after(start, budget),
            offline: self.offline,
            block: Some(block),
            durability: None,
        };
        let result = self
            .core
            .deliver(&plan)
            .await
            .map(|v| unprefix(v, prefix, keys))
            .and_then(convert);
        self.core
            .metrics()
            .command(request.label(), Outcome::of(&result), start.elapsed());
        result
    }
}

fn is_waitaof(cmd: &redis::Cmd) -> bool {
    crate::command::name(cmd).is_some_and(|n| n.eq_ignore_ascii_case(b"WAITAOF"))
}

/// `WAIT`/`WAITAOF` after a replicated mark (see [`RedisHandle::wait`]).
fn wait_request(wait: redis::Cmd) -> Request {
    let mut pipe = redis::pipe();
    pipe.cmd("PUBLISH")
        .arg(WAIT_MARK_CHANNEL)
        .arg("")
        .ignore()
        .add_command(wait);
    Request::pipeline_as(pipe, CommandLabel::Wait)
}

/// A block time must be positive (0 blocks forever) and at most 24 h.
fn check_block(name: &str, block: Duration) -> Result<(), Error> {
    if block.is_zero() {
        return Err(Error::InvalidArgument(format!(
            "{name} timeout must be greater than 0 (0 would block forever), got {block:?}"
        )));
    }
    if block > crate::config::MAX_DURATION {
        return Err(Error::InvalidArgument(format!(
            "{name} timeout must be at most 24 h, got {block:?}"
        )));
    }
    Ok(())
}

/// Takes the key prefix off the key names in a blocking command's reply.
fn unprefix(value: Value, prefix: &[u8], keys: Keys) -> Value {
    if prefix.is_empty() {
        return value;
    }
    let strip = |v: Value| match v {
        Value::BulkString(b) if b.starts_with(prefix) => {
            Value::BulkString(b[prefix.len()..].to_vec())
        }
        other => other,
    };
    match (keys, value) {
        (Keys::First, Value::Array(mut items)) if !items.is_empty() => {
            let first = strip(items.remove(0));
            items.insert(0, first);
            Value::Array(items)
        }
        (Keys::OfMap, Value::Map(pairs)) => {
            Value::Map(pairs.into_iter().map(|(k, v)| (strip(k), v)).collect())
        }
        (_, other) => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_prefix_comes_off_reply_keys() {
        let reply = Value::Array(vec![
            Value::BulkString(b"app:jobs".to_vec()),
            Value::BulkString(b"app:x".to_vec()),
        ]);
        assert_eq!(
            unprefix(reply, b"app:", Keys::First),
            Value::Array(vec![
                Value::BulkString(b"jobs".to_vec()),
                Value::BulkString(b"app:x".to_vec()),
            ])
        );
        let map = Value::Map(vec![(Value::BulkString(b"app:s".to_vec()), Value::Nil)]);
        assert_eq!(
            unprefix(map, b"app:", Keys::OfMap),
            Value::Map(vec![(Value::BulkString(b"s".to_vec()), Value::Nil)])
        );
        assert_eq!(unprefix(Value::Nil, b"app:", Keys::First), Value::Nil);
    }

    #[test]
    fn block_times_are_checked() {
        assert!(check_block("BLPOP", Duration::ZERO).is_err());
        assert!(check_block("BLPOP", Duration::MAX).is_err());
        assert!(check_block("BLPOP", Duration::from_millis(1)).is_ok());
    }
}
