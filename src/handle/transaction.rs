//! Optimistic transactions — `WATCH`, read, then `MULTI … EXEC`, again if a watched key changed
//! meanwhile — on a leased connection of their own ([`RedisHandle::transaction`]).
//!
//! `WATCH` and `MULTI` are state of the connection they run on, so they never run on the
//! connection every caller shares (see the module docs of [`handle`](super)): each attempt
//! leases a connection from the supervisor's leased pool
//! ([`Config::leased_connections`](crate::Config::leased_connections)), and gives it back only
//! when nothing is left on it — `EXEC` answered (committed or aborted) or `UNWATCH` answered.
//! A connection left in any other state (a lost reply, a deadline passed mid-way, a cancelled
//! call) is closed, never reused.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{FromRedisValue, Value};
use tokio::time::Instant;

use super::{RedisHandle, convert, deadline_after};
use crate::config::NodeAddr;
use crate::error::{Error, ErrorSide, classify, describe_connection_error, from_reply_error};
use crate::metrics::{CommandLabel, Outcome};
use crate::pool::{Checkout, Purpose};
use crate::sync::lock;
use crate::topology::cluster::{key_slot, redirect_target};

/// Attempts of one transaction at most (each one `WATCH`, the body, `EXEC`), within its deadline.
pub const TRANSACTION_ATTEMPTS: u32 = 64;

/// Longest pause between two attempts after an abort (jittered, doubling from 1 ms).
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// The body's view of a transaction: reads on its connection, after `WATCH` and before
/// `MULTI` (see [`RedisHandle::transaction`]). Cheap to clone; usable only while the body runs.
#[derive(Clone)]
pub struct Transaction {
    inner: Arc<TxInner>,
}

struct TxInner {
    /// The leased connection, taken back when the body returns.
    conn: Mutex<Option<MultiplexedConnection>>,
    deadline: Instant,
    timeout: Duration,
    /// A read lost its connection or ran out of time: nothing can be trusted on it.
    broken: AtomicBool,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction").finish_non_exhaustive()
    }
}

impl Transaction {
    /// Runs `cmd` on the transaction's connection, before `MULTI`: typically a read of a
    /// watched key, whose value the writes depend on. Keys are sent as given (no key prefix).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a command that changes the connection's state (`MULTI`,
    /// `WATCH`, `SELECT`, …: the transaction does those) or blocks; [`Error::Server`] for an
    /// error reply; [`Error::Timeout`] past the transaction's deadline; [`Error::Connection`]
    /// when the connection was lost (the transaction then starts again on another, if its
    /// deadline allows, whatever the body answers).
    pub async fn query<RV: FromRedisValue>(&self, cmd: redis::Cmd) -> Result<RV, Error> {
        if let Some(refused) = crate::command::shared_refusal(&cmd) {
            return Err(refused);
        }
        if crate::command::blocking_time(&cmd).is_some() {
            return Err(Error::InvalidArgument(
                "a blocking command inside a transaction would hold its connection: run it outside"
                    .into(),
            ));
        }
        let inner = &self.inner;
        let Some(mut conn) = lock(&inner.conn).clone() else {
            return Err(Error::InvalidArgument(
                "this transaction has ended: its Transaction is usable only while its body runs"
                    .into(),
            ));
        };
        let name = Self::name(&cmd);
        match tokio::time::timeout_at(inner.deadline, conn.send_packed_command(&cmd)).await {
            Ok(Ok(value)) => convert(value),
            Ok(Err(e)) if classify(&e) == ErrorSide::Transport => {
                inner.broken.store(true, Ordering::Release);
                Err(Error::Connection(describe_connection_error(&e).message))
            }
            Ok(Err(e)) => Err(from_reply_error(e)),
            Err(_) => {
                inner.broken.store(true, Ordering::Release);
                Err(Error::Timeout {
                    command: name,
                    after: inner.timeout,
                    sent: true,
                })
            }
        }
    }

    /// `GET key` on the transaction's connection (the key as given: no key prefix).
    ///
    /// # Errors
    /// As [`query`](Self::query).
    pub async fn get<K: AsRef<[u8]>, RV: FromRedisValue>(&self, key: K) -> Result<RV, Error> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key.as_ref());
        self.query(cmd).await
    }

    fn name(cmd: &redis::Cmd) -> String {
        crate::command::name(cmd).map_or_else(
            || "COMMAND".into(),
            |n| String::from_utf8_lossy(n).to_ascii_uppercase(),
        )
    }

    /// The body has returned: the connection is the transaction's again. Whether a read broke it.
    fn finish(&self) -> bool {
        lock(&self.inner.conn).take();
        self.inner.broken.load(Ordering::Acquire)
    }
}

/// How one attempt ended.
enum Step {
    /// `EXEC` answered with the replies of the queued commands.
    Committed(Value),
    /// `EXEC` was aborted: a watched key changed. The connection is clean.
    Aborted,
    /// `WATCH` was redirected to this node (a cluster slot moved). The connection is clean.
    Moved(NodeAddr),
    /// The connection failed before `EXEC` was sent: nothing was committed; start again on
    /// another connection.
    Lost(String),
    /// The transaction's answer is this error; `clean` when the connection can be reused.
    Failed { error: Error, clean: bool },
}

impl RedisHandle {
    /// An optimistic transaction (check-and-set) on `keys`: `WATCH keys`, then `body` reads what
    /// it needs through its [`Transaction`] and returns the writes as a [`redis::Pipeline`],
    /// which runs as `MULTI … EXEC`. If another client changed a watched key meanwhile, `EXEC`
    /// is aborted and the whole thing runs again — `body` included, so it reads the new values —
    /// after a short jittered pause, up to [`TRANSACTION_ATTEMPTS`] times within the handle's
    /// deadline. Returns `EXEC`'s replies, converted to `RV`.
    ///
    /// It runs on a leased connection of its own, never on the shared one, and that connection
    /// carries no `WATCH` or `MULTI` into its next use. Keys are sent as given, as with
    /// [`pipeline`](Self::pipeline) (no key prefix); on a Redis Cluster they must share a slot
    /// (give them a common `{hash tag}`).
    ///
    /// ```no_run
    /// # async fn run(redis: redis_supervisor::RedisHandle) -> Result<(), redis_supervisor::Error> {
    /// // Doubles a counter, atomically with respect to every other client.
    /// let (doubled,): (i64,) = redis
    ///     .transaction(&["counter"], |tx| async move {
    ///         let n: Option<i64> = tx.get("counter").await?;
    ///         let mut writes = redis::pipe();
    ///         writes.set("counter", n.unwrap_or(1) * 2).ignore().get("counter");
    ///         Ok(writes)
    ///     })
    ///     .await?;
    /// # let _ = doubled; Ok(()) }
    /// ```
    ///
    /// An error from `body` ends the transaction with that error (after `UNWATCH`; nothing was
    /// written), unless it came from a connection lost under a read: the transaction then starts
    /// again on another connection.
    ///
    /// # Errors
    /// [`Error::TransactionAborted`] when every attempt was aborted; [`Error::Ambiguous`] when the
    /// connection was lost or the deadline passed after `EXEC` was sent (it may have committed);
    /// [`Error::InvalidArgument`] for no keys, or writes holding a command that changes the
    /// connection's state; [`Error::CrossSlot`] for keys in several cluster slots;
    /// [`Error::Overloaded`] when no leased connection frees up in time; `body`'s own error;
    /// otherwise as any command (see the [module docs](super)).
    pub async fn transaction<K, RV, F, Fut>(&self, keys: &[K], mut body: F) -> Result<RV, Error>
    where
        K: AsRef<[u8]>,
        RV: FromRedisValue,
        F: FnMut(Transaction) -> Fut,
        Fut: Future<Output = Result<redis::Pipeline, Error>>,
    {
        let start = Instant::now();
        let keys: Vec<&[u8]> = keys.iter().map(AsRef::as_ref).collect();
        let result = self
            .run_transaction(&keys, &mut body, start)
            .await
            .and_then(convert);
        self.core
            .metrics()
            .command(CommandLabel::Multi, Outcome::of(&result), start.elapsed());
        result
    }

    async fn run_transaction<F, Fut>(
        &self,
        keys: &[&[u8]],
        body: &mut F,
        start: Instant,
    ) -> Result<Value, Error>
    where
        F: FnMut(Transaction) -> Fut,
        Fut: Future<Output = Result<redis::Pipeline, Error>>,
    {
        let _entry = self.core.admit().ok_or(Error::ShuttingDown)?;
        let deadline = deadline_after(start, self.timeout);
        let slotted = transaction_slot(keys, !self.core.topology().slotted())?;
        let pool = self.core.pool(Purpose::Leased);
        let mut node: Option<NodeAddr> = None;
        let mut aborts = 0u32;
        let mut lost: Option<String> = None;
        loop {
            // Leased connections are opened (and used) only while the server serves.
            self.core
                .serving(deadline, self.offline)
                .await
                .map_err(|e| {
                    lost.take().map_or(e, |reason| Error::Unavailable {
                        since: std::time::SystemTime::now(),
                        reason: format!("transaction: {reason}"),
                        kind: crate::error::FailureKind::Closed,
                    })
                })?;
            if slotted && node.is_none() {
                node = self.core.primary_for(keys[0]);
            }
            let permit = pool.permit(deadline).await?;
            let mut checkout = pool.checkout(permit, deadline, node.as_ref()).await?;
            match self.attempt(&mut checkout, keys, body, deadline).await {
                Step::Committed(value) => {
                    pool.give_back(checkout);
                    return Ok(value);
                }
                Step::Aborted => {
                    pool.give_back(checkout);
                    aborts += 1;
                    let pause = abort_pause(aborts);
                    if aborts >= TRANSACTION_ATTEMPTS || Instant::now() + pause >= deadline {
                        return Err(Error::TransactionAborted { attempts: aborts });
                    }
                    tokio::time::sleep(pause).await;
                }
                Step::Moved(to) => {
                    pool.give_back(checkout);
                    node = Some(to);
                }
                Step::Lost(reason) => lost = Some(reason),
                Step::Failed { error, clean } => {
                    if clean {
                        pool.give_back(checkout);
                    }
                    return Err(error);
                }
            }
        }
    }

    /// One attempt on `checkout`'s connection: `WATCH`, the body, `MULTI … EXEC`.
    async fn attempt<F, Fut>(
        &self,
        checkout: &mut Checkout<'_>,
        keys: &[&[u8]],
        body: &mut F,
        deadline: Instant,
    ) -> Step
    where
        F: FnMut(Transaction) -> Fut,
        Fut: Future<Output = Result<redis::Pipeline, Error>>,
    {
        let Some(conn) = checkout.conn() else {
            return Step::Lost("connection already returned".into());
        };
        let mut watch = redis::cmd("WATCH");
        for key in keys {
            watch.arg(*key);
        }
        match tokio::time::timeout_at(deadline, conn.send_packed_command(&watch)).await {
            Err(_) => return self.out_of_time("WATCH", false),
            Ok(Err(e)) if classify(&e) == ErrorSide::Transport => {
                return Step::Lost(describe_connection_error(&e).message);
            }
            Ok(Ok(Value::ServerError(e))) => return moved_or_failed(e.into()),
            Ok(Err(e)) => return moved_or_failed(e),
            Ok(Ok(_)) => {}
        }
        let tx = Transaction {
            inner: Arc::new(TxInner {
                conn: Mutex::new(Some(conn.clone())),
                deadline,
                timeout: self.timeout,
                broken: AtomicBool::new(false),
            }),
        };
        let outcome = body(tx.clone()).await;
        if tx.finish() {
            return Step::Lost("a read in the transaction lost its connection".into());
        }
        let writes = match outcome {
            Ok(writes) => writes,
            Err(error) => return unwatch(conn, deadline, error).await,
        };
        if let Some(refused) = writes_refusal(&writes) {
            return unwatch(conn, deadline, refused).await;
        }
        self.exec(conn, writes, deadline).await
    }

    /// `MULTI`, the writes, `EXEC`, in one round trip.
    async fn exec(
        &self,
        conn: &mut MultiplexedConnection,
        mut writes: redis::Pipeline,
        deadline: Instant,
    ) -> Step {
        writes.atomic();
        let sent = writes.query_async::<Value>(conn);
        match tokio::time::timeout_at(deadline, sent).await {
            Err(_) => self.out_of_time("EXEC", true),
            Ok(Err(e)) if classify(&e) == ErrorSide::Transport => Step::Failed {
                error: Error::Ambiguous {
                    command: "EXEC".into(),
                    reason: describe_connection_error(&e).message,
                },
                clean: false,
            },
            Ok(Ok(Value::Nil)) => Step::Aborted,
            Ok(Ok(value)) => Step::Committed(value),
            // EXEC answered with an error (EXECABORT: a queued command was refused): nothing
            // was committed, and the connection is out of MULTI.
            Ok(Err(e)) => Step::Failed {
                error: from_reply_error(e),
                clean: true,
            },
        }
    }

    /// The deadline passed waiting for `command`'s reply: the connection's state is unknown.
    fn out_of_time(&self, command: &str, committing: bool) -> Step {
        let after = self.timeout;
        let error = if committing {
            Error::Ambiguous {
                command: command.into(),
                reason: format!("no reply within {} ms", after.as_millis()),
            }
        } else {
            Error::Timeout {
                command: command.into(),
                after,
                sent: true,
            }
        };
        Step::Failed {
            error,
            clean: false,
        }
    }
}

/// Whether `keys` are routed by slot (on a cluster, where they must share one). Checks that there
/// is at least one key.
fn transaction_slot(keys: &[&[u8]], standalone: bool) -> Result<bool, Error> {
    let Some(first) = keys.first() else {
        return Err(Error::InvalidArgument(
            "a transaction needs at least one key to WATCH".into(),
        ));
    };
    if standalone {
        return Ok(false);
    }
    let slot = key_slot(first);
    if keys.iter().any(|k| key_slot(k) != slot) {
        return Err(Error::CrossSlot {
            command: "WATCH".into(),
            keys: keys
                .iter()
                .take(8)
                .map(|k| format!("{} (slot {})", String::from_utf8_lossy(k), key_slot(k)))
                .collect(),
        });
    }
    Ok(true)
}

/// A refused `WATCH`: a redirect to follow, or the transaction's error (nothing was watched).
fn moved_or_failed(e: redis::RedisError) -> Step {
    if let (Some("MOVED" | "ASK"), Some(node)) = (e.code(), redirect_target(e.detail())) {
        return Step::Moved(node);
    }
    Step::Failed {
        error: from_reply_error(e),
        clean: true,
    }
}

/// The writes may hold no command that changes the connection's state (`MULTI`, `WATCH`, …:
/// the transaction sends those itself).
fn writes_refusal(writes: &redis::Pipeline) -> Option<Error> {
    writes
        .cmd_iter()
        .enumerate()
        .find_map(|(i, cmd)| crate::command::shared_refusal(cmd).map(|e| (i, e)))
        .map(|(i, e)| Error::InvalidArgument(format!("write {} of the transaction: {e}", i + 1)))
}

/// Ends an attempt without `EXEC`: `UNWATCH`, then `error` is the answer (the connection is
/// reused if `UNWATCH` was answered).
async fn unwatch(conn: &mut MultiplexedConnection, deadline: Instant, error: Error) -> Step {
    let unwatch = redis::cmd("UNWATCH");
    let clean = matches!(
        tokio::time::timeout_at(deadline, conn.send_packed_command(&unwatch)).await,
        Ok(Ok(Value::Okay | Value::SimpleString(_)))
    );
    Step::Failed { error, clean }
}

/// The pause after the `aborts`-th abort: jittered, 1 ms doubling up to [`MAX_PAUSE`], so that
/// transactions on one key stop colliding.
fn abort_pause(aborts: u32) -> Duration {
    let cap = Duration::from_millis(1u64 << aborts.min(6)).min(MAX_PAUSE);
    cap.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_before_anything_is_sent() {
        assert!(matches!(
            transaction_slot(&[], true),
            Err(Error::InvalidArgument(_))
        ));
        assert!(!transaction_slot(&[b"a", b"b"], true).unwrap());
        let tagged: [&[u8]; 2] = [b"{u}a", b"{u}b"];
        assert!(transaction_slot(&tagged, false).unwrap());
        assert!(matches!(
            transaction_slot(&[b"a", b"b"], false),
            Err(Error::CrossSlot { .. })
        ));
        let mut writes = redis::pipe();
        writes.set("k", 1).cmd("MULTI");
        assert!(writes_refusal(&writes).is_some_and(|e| e.to_string().contains("write 2")));
        for n in 1..20 {
            assert!(abort_pause(n) <= MAX_PAUSE);
        }
    }
}
