//! The blocking pool: dedicated connections for blocking commands (`BLPOP`, `BRPOP`,
//! `BZPOPMIN`, `XREAD BLOCK`, `WAIT`, …), so that a command which waits on the server for
//! seconds never stalls the shared command connection's pipeline or its health probes.
//!
//! A blocking command holds one connection for its whole run, so the pool hands each out to one
//! command at a time: at most [`Config::blocking_connections`] run at once (opened on demand,
//! kept open while idle); more wait for a free one within their deadline, then get
//! [`Error::Overloaded`]. A connection whose command failed or ran out of time is closed (the
//! server then unblocks it), never reused. Connections are opened only while the supervisor's
//! command connection is up, so an outage is paced by the supervisor's backoff, not by callers
//! retrying in a loop.
//!
//! At shutdown the pool refuses new commands, sends `CLIENT UNBLOCK <id> ERROR` (on the command
//! connection) for every command still blocked, so each returns at once and is answered
//! [`Error::ShuttingDown`] — it popped nothing — and closes the idle connections.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use crate::config::{Config, NodeAddr};
use crate::error::{
    ConnectionFailure, Error, ErrorSide, FailureKind, classify, describe_connection_error,
};
use crate::lane::{ExecError, Lane, NotReady};
use crate::metrics::BlockingMetrics;
use crate::request::Request;
use crate::sync::lock;
use crate::topology::Topology;

/// How long a command blocked at shutdown may take to answer once `CLIENT UNBLOCK` was sent
/// before it is cut off (its connection closed) and answered `ShuttingDown` anyway.
const UNBLOCK_GRACE: Duration = Duration::from_millis(500);

/// One dedicated connection.
pub(crate) struct Dedicated {
    conn: MultiplexedConnection,
    /// On a cluster: the node it is connected to (a blocking command must run where its key's
    /// slot is).
    node: Option<NodeAddr>,
    /// `CLIENT ID`, for `CLIENT UNBLOCK` (`None` if the server refused to say).
    client_id: Option<i64>,
    /// False once the server closed it (its push callback says so).
    alive: Arc<AtomicBool>,
    /// The pool's epoch when it was opened: one of an older epoch is not reused.
    epoch: u64,
}

/// The pool (one per supervisor, shared by every handle).
pub(crate) struct BlockingPool {
    config: Arc<Config>,
    topology: Topology,
    metrics: BlockingMetrics,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Dedicated>>,
    /// The client ids of the connections running a command now (and, on a cluster, their
    /// node), by checkout.
    busy: Mutex<HashMap<u64, (i64, Option<NodeAddr>)>>,
    next: AtomicU64,
    /// Bumped when every connection must be replaced (a failover).
    epoch: AtomicU64,
    closing: watch::Sender<bool>,
    closed: AtomicBool,
}

/// A connection checked out for one command; returned to the pool only by
/// [`BlockingPool::give_back`] after a clean answer.
pub(crate) struct Checkout<'a> {
    pool: &'a BlockingPool,
    key: u64,
    dedicated: Option<Dedicated>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        lock(&self.pool.busy).remove(&self.key);
        self.pool.metrics.in_use(false);
        if self.dedicated.take().is_some() {
            // Not given back: closed (dropping the last handle ends its socket).
            self.pool.metrics.connection(false);
        }
    }
}

impl BlockingPool {
    pub(crate) fn new(config: Arc<Config>, metrics: BlockingMetrics) -> Self {
        let size = config.blocking_connections();
        BlockingPool {
            topology: Topology::of(&config),
            config,
            metrics,
            permits: Arc::new(Semaphore::new(size)),
            idle: Mutex::new(Vec::new()),
            busy: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            closing: watch::Sender::new(false),
            closed: AtomicBool::new(false),
        }
    }

    /// Waits until `deadline` for one of the pool's places.
    pub(crate) async fn permit(&self, deadline: Instant) -> Result<OwnedSemaphorePermit, Error> {
        let acquire = self.permits.clone().acquire_owned();
        match tokio::time::timeout_at(deadline, acquire).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(Error::ShuttingDown),
            Err(_) if self.closed.load(Ordering::Acquire) => Err(Error::ShuttingDown),
            Err(_) => Err(Error::Overloaded {
                limit: self.config.blocking_connections(),
            }),
        }
    }

    /// An idle live connection (to `node`, on a cluster), or a new one (opened within the
    /// deadline).
    pub(crate) async fn checkout(
        &self,
        permit: OwnedSemaphorePermit,
        deadline: Instant,
        node: Option<&NodeAddr>,
    ) -> Result<Checkout<'_>, Error> {
        let reused = {
            let mut idle = lock(&self.idle);
            let before = idle.len();
            idle.retain(|d| d.alive.load(Ordering::Acquire));
            for _ in idle.len()..before {
                self.metrics.connection(false);
            }
            match idle.iter().rposition(|d| d.node.as_ref() == node) {
                Some(i) => Some(idle.swap_remove(i)),
                // None to that node: one to another node makes room (the pool's size bounds
                // every connection, idle ones too).
                None if node.is_some()
                    && idle.len() + self.config.blocking_connections()
                        - self.permits.available_permits()
                        >= self.config.blocking_connections() =>
                {
                    if !idle.is_empty() {
                        idle.swap_remove(0);
                        self.metrics.connection(false);
                    }
                    None
                }
                None => None,
            }
        };
        let dedicated = match reused {
            Some(d) => d,
            None => {
                let limit = self.config.connect_timeout();
                let opened =
                    tokio::time::timeout_at(deadline.min(Instant::now() + limit), self.open(node))
                        .await
                        .unwrap_or_else(|_| {
                            Err(ConnectionFailure::new(
                                FailureKind::Timeout,
                                "connect timed out",
                            ))
                        });
                let d = opened.map_err(|f| Error::Unavailable {
                    since: std::time::SystemTime::now(),
                    reason: format!("blocking connection: {}", f.message),
                    kind: f.kind,
                })?;
                self.metrics.connection(true);
                d
            }
        };
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        if let Some(id) = dedicated.client_id {
            lock(&self.busy).insert(key, (id, dedicated.node.clone()));
        }
        self.metrics.in_use(true);
        Ok(Checkout {
            pool: self,
            key,
            dedicated: Some(dedicated),
            _permit: permit,
        })
    }

    /// Returns a connection that answered cleanly to the idle set (closed instead at shutdown).
    pub(crate) fn give_back(&self, mut checkout: Checkout<'_>) {
        if let Some(d) = checkout.dedicated.take() {
            let stale = d.epoch != self.epoch.load(Ordering::Acquire);
            if self.closed.load(Ordering::Acquire) || !d.alive.load(Ordering::Acquire) || stale {
                self.metrics.connection(false);
            } else {
                lock(&self.idle).push(d);
            }
        }
    }

    /// Runs `request` on the checked-out connection until `deadline`; cut short at shutdown if
    /// `CLIENT UNBLOCK` did not end it. `None`: no answer in time (it may have run).
    pub(crate) async fn run(
        &self,
        checkout: &mut Checkout<'_>,
        request: &Request,
        deadline: Instant,
    ) -> Option<Result<Value, ExecError>> {
        let d = checkout.dedicated.as_mut()?;
        let mut closing = self.closing.subscribe();
        let cut_off = async move {
            let _ = closing.wait_for(|c| *c).await;
            tokio::time::sleep(UNBLOCK_GRACE).await;
        };
        let exec = async {
            let result = match (request.as_cmd(), request.as_pipeline()) {
                (Some(cmd), _) => d.conn.send_packed_command(cmd).await,
                (None, Some(pipe)) => pipe
                    .query_async::<Vec<Value>>(&mut d.conn)
                    .await
                    .map(|mut replies| replies.pop().unwrap_or(Value::Nil)),
                (None, None) => Ok(Value::Nil),
            };
            classify_reply(result)
        };
        tokio::select! {
            result = exec => Some(result),
            () = tokio::time::sleep_until(deadline) => None,
            () = cut_off => Some(Err(ExecError::Transport("cut off at shutdown".into()))),
        }
    }

    /// Dedicated connections open now, and how many run a command.
    pub(crate) fn report(&self) -> (usize, usize) {
        let idle = lock(&self.idle).len();
        let in_use = self.config.blocking_connections() - self.permits.available_permits();
        (idle + in_use, in_use)
    }

    /// Closes the idle connections (after a failover they point at the old master); the
    /// running ones are closed when their command ends.
    pub(crate) fn close_idle(&self) {
        let idle = std::mem::take(&mut *lock(&self.idle));
        for _ in &idle {
            self.metrics.connection(false);
        }
        drop(idle);
        // Those checked out now are not given back (see `give_back`).
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// True once shutdown has begun.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Shutdown: refuse new commands, unblock the running ones through `lane` (the command
    /// connection, if there is one), close the idle connections.
    pub(crate) async fn close(&self, lane: Option<Lane>) {
        self.closed.store(true, Ordering::Release);
        self.permits.close();
        self.closing.send_replace(true);
        let idle = std::mem::take(&mut *lock(&self.idle));
        for _ in &idle {
            self.metrics.connection(false);
        }
        drop(idle);
        let ids: Vec<(i64, Option<NodeAddr>)> = lock(&self.busy).values().cloned().collect();
        let Some(lane) = lane else {
            return;
        };
        for (id, node) in ids {
            let mut unblock = redis::cmd("CLIENT");
            unblock.arg("UNBLOCK").arg(id).arg("ERROR");
            // On a cluster, on the node the command blocks on.
            let sent = match (lane.connection(), lane.cluster(), node) {
                (Some(mut conn), _, _) => {
                    tokio::time::timeout(UNBLOCK_GRACE, conn.send_packed_command(&unblock)).await
                }
                (None, Some(router), Some(node)) => {
                    let node = router.node(&node);
                    let unblock = async {
                        let mut conn = router.conn(&node).await?;
                        conn.send_packed_command(&unblock).await
                    };
                    tokio::time::timeout(UNBLOCK_GRACE, unblock).await
                }
                _ => continue,
            };
            if let Ok(Err(e)) = sent {
                tracing::debug!(error = %e, client_id = id, "CLIENT UNBLOCK failed");
            }
        }
    }

    /// Opens and names one dedicated connection (to `node`, on a cluster).
    async fn open(&self, node: Option<&NodeAddr>) -> Result<Dedicated, ConnectionFailure> {
        let config = &self.config;
        let epoch = self.epoch.load(Ordering::Acquire);
        let client = match node {
            Some(node) => config
                .redis_client_at(&node.host, node.port)
                .map_err(|e| describe_connection_error(&e))?,
            None => self.topology.locate(config).await?.client,
        };
        let alive = Arc::new(AtomicBool::new(true));
        let flag = alive.clone();
        let async_config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout()))
            // The command's own deadline (its block time plus a grace) bounds it.
            .set_response_timeout(None)
            .set_push_sender(move |info: redis::PushInfo| {
                if info.kind == redis::PushKind::Disconnection {
                    flag.store(false, Ordering::Release);
                }
                Ok::<(), ()>(())
            });
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&async_config)
            .await
            .map_err(|e| describe_connection_error(&e))?;
        let mut setup = redis::pipe();
        setup
            .cmd("CLIENT")
            .arg("SETNAME")
            .arg(format!("redis-supervisor:{}:blocking", config.name()))
            .ignore()
            .cmd("CLIENT")
            .arg("ID");
        let client_id = match setup.query_async::<(i64,)>(&mut conn).await {
            Ok((id,)) => Some(id),
            Err(e) if classify(&e) == ErrorSide::Transport => {
                return Err(describe_connection_error(&e));
            }
            // A restricted ACL user: no SETNAME or ID, hence no CLIENT UNBLOCK at shutdown
            // (its commands are cut off after the grace instead).
            Err(_) => None,
        };
        Ok(Dedicated {
            conn,
            node: node.cloned(),
            client_id,
            alive,
            epoch,
        })
    }
}

/// A blocking command's result, classified as on a lane.
fn classify_reply(result: redis::RedisResult<Value>) -> Result<Value, ExecError> {
    if let Err(e) = &result
        && classify(e) == ErrorSide::Transport
    {
        return Err(ExecError::Transport(describe_connection_error(e).message));
    }
    if let Some(refusal) = NotReady::of_reply(&result) {
        return Err(ExecError::Refused(refusal));
    }
    result.map_err(ExecError::Reply)
}

/// How a command blocks, from its name and arguments: `Some(Ok(block))` for a blocking command
/// that blocks up to `block`, `Some(Err(_))` for one that would block forever (timeout 0) or
/// whose timeout is not a number, `None` for a command that does not block.
pub(crate) fn blocking_time(cmd: &redis::Cmd) -> Option<Result<Duration, Error>> {
    let mut args = crate::request::args(cmd);
    let name = args.next()?;
    // Most commands are rejected on their first letter, without an allocation.
    if !matches!(name.first(), Some(b'B' | b'b' | b'W' | b'w' | b'X' | b'x')) {
        return None;
    }
    let upper = name.to_ascii_uppercase();
    let args: Vec<&[u8]> = args.collect();
    let (arg, unit) = match upper.as_slice() {
        b"BLPOP" | b"BRPOP" | b"BZPOPMIN" | b"BZPOPMAX" | b"BLMOVE" | b"BRPOPLPUSH" => {
            (args.last().copied(), Unit::Seconds)
        }
        b"BLMPOP" | b"BZMPOP" => (args.first().copied(), Unit::Seconds),
        b"WAIT" | b"WAITAOF" => (args.last().copied(), Unit::Millis),
        b"XREAD" | b"XREADGROUP" => {
            let at = args.iter().position(|a| a.eq_ignore_ascii_case(b"BLOCK"))?;
            (args.get(at + 1).copied(), Unit::Millis)
        }
        _ => return None,
    };
    let name = String::from_utf8_lossy(&upper).into_owned();
    Some(parse_block(&name, arg, unit))
}

/// The key a blocking command blocks on (its first), which decides its node on a cluster;
/// `None` for `WAIT`/`WAITAOF` (no key) or a command whose key cannot be found.
pub(crate) fn first_key(cmd: &redis::Cmd) -> Option<&[u8]> {
    let args: Vec<&[u8]> = crate::request::args(cmd).collect();
    let name = args.first()?.to_ascii_uppercase();
    match name.as_slice() {
        b"BLMPOP" | b"BZMPOP" => args.get(3).copied(),
        b"XREAD" | b"XREADGROUP" => {
            let at = args
                .iter()
                .position(|a| a.eq_ignore_ascii_case(b"STREAMS"))?;
            args.get(at + 1).copied()
        }
        b"WAIT" | b"WAITAOF" => None,
        _ => args.get(1).copied(),
    }
}

/// `cmd` with its block time set to `block` (at least 10 ms: 0 would block forever), for a
/// command that waited for a connection and has less of its deadline left than it would block;
/// `None` when `cmd` is not a blocking command whose block time this knows.
pub(crate) fn with_block_time(cmd: &redis::Cmd, block: Duration) -> Option<redis::Cmd> {
    let args: Vec<&[u8]> = crate::request::args(cmd).collect();
    let name = args.first()?.to_ascii_uppercase();
    let last = args.len().checked_sub(1)?;
    let (at, unit) = match name.as_slice() {
        b"BLPOP" | b"BRPOP" | b"BZPOPMIN" | b"BZPOPMAX" | b"BLMOVE" | b"BRPOPLPUSH" => {
            (last, Unit::Seconds)
        }
        b"BLMPOP" | b"BZMPOP" => (1, Unit::Seconds),
        b"WAIT" | b"WAITAOF" => (last, Unit::Millis),
        b"XREAD" | b"XREADGROUP" => (
            args.iter().position(|a| a.eq_ignore_ascii_case(b"BLOCK"))? + 1,
            Unit::Millis,
        ),
        _ => return None,
    };
    if at == 0 || at > last {
        return None;
    }
    let block = block.max(Duration::from_millis(10));
    let value = match unit {
        Unit::Seconds => format!("{:.3}", block.as_secs_f64()),
        Unit::Millis => block.as_millis().to_string(),
    };
    let mut out = redis::cmd(std::str::from_utf8(args[0]).ok()?);
    for (i, a) in args.iter().enumerate().skip(1) {
        if i == at {
            out.arg(value.as_str());
        } else {
            out.arg(*a);
        }
    }
    Some(out)
}

#[derive(Clone, Copy)]
enum Unit {
    Seconds,
    Millis,
}

fn parse_block(name: &str, arg: Option<&[u8]>, unit: Unit) -> Result<Duration, Error> {
    let text = arg.map(String::from_utf8_lossy).unwrap_or_default();
    let secs = text.trim().parse::<f64>().ok().map(|n| match unit {
        Unit::Seconds => n,
        Unit::Millis => n / 1000.0,
    });
    match secs {
        Some(s) if s > 0.0 && s.is_finite() && s <= crate::config::MAX_DURATION.as_secs_f64() => {
            Ok(Duration::from_secs_f64(s))
        }
        Some(0.0) => Err(Error::InvalidArgument(format!(
            "{name} with timeout 0 would block forever; give it a finite timeout (every command \
             here is answered by a deadline)"
        ))),
        _ => Err(Error::InvalidArgument(format!(
            "{name} timeout {text:?} is not a number of {} from just above 0 to 24 h",
            match unit {
                Unit::Seconds => "seconds",
                Unit::Millis => "milliseconds",
            }
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(args: &[&str]) -> Option<Result<Duration, Error>> {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        blocking_time(&cmd)
    }

    #[test]
    fn blocking_commands_are_found_with_their_block_time() {
        let ok = |args: &[&str]| block(args).and_then(Result::ok);
        assert_eq!(ok(&["blpop", "a", "b", "2"]), Some(Duration::from_secs(2)));
        assert_eq!(ok(&["BRPOP", "a", "0.5"]), Some(Duration::from_millis(500)));
        assert_eq!(
            ok(&["BLMPOP", "3", "1", "a", "LEFT"]),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            ok(&["XREAD", "COUNT", "1", "block", "250", "STREAMS", "s", "$"]),
            Some(Duration::from_millis(250))
        );
        assert_eq!(ok(&["WAIT", "1", "100"]), Some(Duration::from_millis(100)));
        assert!(block(&["XREAD", "STREAMS", "s", "0"]).is_none(), "no BLOCK");
        assert!(block(&["GET", "k"]).is_none());
        let forever = block(&["BLPOP", "a", "0"]).and_then(Result::err);
        assert!(forever.is_some_and(|e| e.to_string().contains("forever")));
        let nan = block(&["BLPOP", "a", "soon"]).and_then(Result::err);
        assert!(nan.is_some_and(|e| e.to_string().contains("\"soon\"")));
        assert!(block(&["BLPOP", "a", "1e12"]).is_some_and(|r| r.is_err()));
    }

    #[test]
    fn block_times_are_shortened_in_place() {
        let short = |args: &[&str], ms: u64| {
            let mut cmd = redis::cmd(args[0]);
            for a in &args[1..] {
                cmd.arg(*a);
            }
            with_block_time(&cmd, Duration::from_millis(ms)).map(|c| {
                c.args_iter()
                    .filter_map(|a| match a {
                        redis::Arg::Simple(b) => Some(String::from_utf8_lossy(b).into_owned()),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
        };
        assert_eq!(
            short(&["BLPOP", "a", "b", "5"], 1250).as_deref(),
            Some("BLPOP a b 1.250")
        );
        assert_eq!(
            short(&["BLMPOP", "5", "1", "a", "LEFT"], 300).as_deref(),
            Some("BLMPOP 0.300 1 a LEFT")
        );
        assert_eq!(
            short(&["XREAD", "BLOCK", "5000", "STREAMS", "s", "$"], 700).as_deref(),
            Some("XREAD BLOCK 700 STREAMS s $")
        );
        // Never 0 (forever).
        assert_eq!(
            short(&["BRPOP", "a", "5"], 0).as_deref(),
            Some("BRPOP a 0.010")
        );
        assert_eq!(short(&["GET", "a"], 10), None);
    }
}
