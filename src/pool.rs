//! Pools of connections that one command (or one transaction) holds on its own, so that what it
//! does to its connection — block on the server for seconds, `WATCH` keys, wait for replicas —
//! never touches the connection every other caller shares. Two pools per supervisor, one per
//! [`Purpose`]:
//!
//! - **blocking** (`BLPOP`, `BRPOP`, `BZPOPMIN`, `XREAD BLOCK`, `WAIT`, …): a command that waits
//!   on the server would stall the shared connection's pipeline and its health probes;
//! - **leased** (`RedisHandle::transaction`'s `WATCH`/`MULTI`/`EXEC`, writes that wait for
//!   replicas, lock acquires): connection state of its own, and `WAIT`.
//!
//! A connection is handed to one user at a time: at most the pool's size run at once (opened on
//! demand, kept open while idle); more wait for a free one within their deadline, then get
//! [`Error::Overloaded`]. A connection is given back only in a clean state (its command answered;
//! no `WATCH` or `MULTI` left on it); one whose command failed, ran out of time or left state
//! behind is closed (the server then unblocks and forgets it), never reused. Connections are
//! opened only while the supervisor's command connection is up, so an outage is paced by the
//! supervisor's backoff, not by callers retrying in a loop; after a failover the idle ones are
//! closed and the busy ones are not reused.
//!
//! At shutdown a pool refuses new commands, sends `CLIENT UNBLOCK <id> ERROR` (on the command
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
use crate::lane::Lane;
use crate::lane::NotReady;
use crate::metrics::PoolMetrics;
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

/// Replicas a write must reach before it is answered `Ok` (`WAIT` on its own connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Durability {
    /// How many replicas must acknowledge it.
    pub(crate) replicas: u32,
    /// How long `WAIT` may wait for them (cut to what the deadline leaves).
    pub(crate) timeout: Duration,
}

/// What a pool's connections are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Blocking commands ([`Config::blocking_connections`] of them).
    Blocking,
    /// Transactions, writes that wait for replicas, lock acquires
    /// ([`Config::leased_connections`] of them).
    Leased,
}

impl Purpose {
    /// The connections' name suffix (`CLIENT SETNAME redis-supervisor:<name>:<suffix>`).
    fn name(self) -> &'static str {
        match self {
            Purpose::Blocking => "blocking",
            Purpose::Leased => "leased",
        }
    }
}

/// A pool (two per supervisor, shared by every handle).
pub(crate) struct Pool {
    purpose: Purpose,
    /// Connections at most (open and idle together).
    size: usize,
    config: Arc<Config>,
    topology: Topology,
    metrics: PoolMetrics,
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

/// What a command on a pool's connection came to: its reply, and, when it was to reach replicas,
/// what `WAIT` said.
pub(crate) struct Ran {
    pub(crate) result: redis::RedisResult<Value>,
    pub(crate) waited: Option<Waited>,
}

/// What `WAIT` said after a write.
#[derive(Debug)]
pub(crate) enum Waited {
    /// This many replicas acknowledged it.
    Acknowledged(u64),
    /// `WAIT` did not answer a count (refused, lost, out of time): why.
    Refused(String),
}

/// `WAIT replicas timeout` on `conn`, after a write on it; the timeout cut to what the deadline
/// leaves (less a margin for the reply).
async fn wait(
    conn: &mut MultiplexedConnection,
    durability: Durability,
    deadline: Instant,
) -> Waited {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .saturating_sub(WAIT_MARGIN);
    let timeout = durability.timeout.min(left);
    if timeout.is_zero() {
        return Waited::Refused("no time was left to wait for replicas".into());
    }
    let mut cmd = redis::cmd("WAIT");
    cmd.arg(durability.replicas)
        .arg(u64::try_from(timeout.as_millis().max(1)).unwrap_or(u64::MAX));
    match tokio::time::timeout_at(deadline, conn.send_packed_command(&cmd)).await {
        Ok(Ok(Value::Int(n))) => Waited::Acknowledged(u64::try_from(n).unwrap_or(0)),
        Ok(Ok(Value::ServerError(e))) => Waited::Refused(format!(
            "WAIT refused: {} {}",
            e.code(),
            e.details().unwrap_or_default()
        )),
        Ok(Ok(other)) => Waited::Refused(format!("WAIT answered {other:?}")),
        Ok(Err(e)) => Waited::Refused(format!("WAIT failed: {e}")),
        Err(_) => Waited::Refused("WAIT got no answer by the deadline".into()),
    }
}

/// Time kept from a `WAIT`'s timeout for its answer to arrive by the deadline.
const WAIT_MARGIN: Duration = Duration::from_millis(20);

/// A connection checked out for one command; returned to the pool only by
/// [`Pool::give_back`] after a clean answer.
pub(crate) struct Checkout<'a> {
    pool: &'a Pool,
    key: u64,
    dedicated: Option<Dedicated>,
    _permit: OwnedSemaphorePermit,
}

impl Checkout<'_> {
    /// The connection, for a user that runs several commands on it (a transaction); `None`
    /// only once it was taken back.
    pub(crate) fn conn(&mut self) -> Option<&mut MultiplexedConnection> {
        self.dedicated.as_mut().map(|d| &mut d.conn)
    }
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

impl Pool {
    pub(crate) fn new(
        config: Arc<Config>,
        topology: Topology,
        purpose: Purpose,
        metrics: PoolMetrics,
    ) -> Self {
        let size = match purpose {
            Purpose::Blocking => config.blocking_connections(),
            Purpose::Leased => config.leased_connections(),
        };
        Pool {
            purpose,
            size,
            topology,
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
            Err(_) => Err(Error::Overloaded { limit: self.size }),
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
                    && idle.len() + self.size - self.permits.available_permits() >= self.size =>
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
                    reason: format!("{} connection: {}", self.purpose.name(), f.message),
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

    /// Runs `request` on the checked-out connection until `deadline` (behind `ASKING` for an
    /// `ASK` redirect), then, for `durability`, `WAIT`s on it for that many replicas (within what
    /// the deadline leaves); cut short at shutdown if `CLIENT UNBLOCK` did not end it. `None`: no
    /// answer in time (it may have run).
    pub(crate) async fn run(
        &self,
        checkout: &mut Checkout<'_>,
        request: &Request,
        ask: bool,
        deadline: Instant,
        durability: Option<Durability>,
    ) -> Option<Ran> {
        let d = checkout.dedicated.as_mut()?;
        let mut closing = self.closing.subscribe();
        let cut_off = async move {
            let _ = closing.wait_for(|c| *c).await;
            tokio::time::sleep(UNBLOCK_GRACE).await;
        };
        let exec = async {
            let result = request.send(&mut d.conn, ask).await;
            let waited = match (&result, durability) {
                (Ok(value), Some(durability)) if !matches!(value, Value::ServerError(_)) => {
                    Some(wait(&mut d.conn, durability, deadline).await)
                }
                _ => None,
            };
            Ran { result, waited }
        };
        tokio::select! {
            ran = exec => Some(ran),
            () = tokio::time::sleep_until(deadline) => None,
            () = cut_off => Some(Ran {
                result: Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "cut off at shutdown",
                ))),
                waited: None,
            }),
        }
    }

    /// Dedicated connections open now, and how many run a command.
    pub(crate) fn report(&self) -> (usize, usize) {
        let idle = lock(&self.idle).len();
        let in_use = self.size - self.permits.available_permits();
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
            .arg(format!(
                "redis-supervisor:{}:{}",
                config.name(),
                self.purpose.name()
            ))
            .ignore()
            .cmd("CLIENT")
            .arg("ID");
        let client_id = match setup.query_async::<(i64,)>(&mut conn).await {
            Ok((id,)) => Some(id),
            Err(e) if classify(&e) == ErrorSide::Transport => {
                return Err(describe_connection_error(&e));
            }
            // The server cannot serve yet (`LOADING`, `BUSY`, …): no connection yet, and the
            // command waits as for its own refusal.
            Err(e) if let Some(refusal) = refusal_in(&e) => {
                return Err(ConnectionFailure::new(refusal.kind, refusal.message));
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

/// The first "cannot serve yet" refusal among a pipeline's errors.
fn refusal_in(e: &redis::RedisError) -> Option<NotReady> {
    e.clone()
        .into_server_errors()?
        .iter()
        .find_map(|(_, err)| NotReady::of_server_error(err.code(), err.details()))
}
