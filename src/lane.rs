//! A [`Lane`]: one live connection as callers see it — redis-rs's multiplexed connection (whose
//! pipeline task is the connection's write queue: callers write into it directly, one hop) and
//! the state every caller shares about it: whether it is open, and whether anything came back on
//! it while a health probe waited (the health actor's evidence of silence, ARCHITECTURE.md promise 10).
//!
//! The connection actor creates a lane with a port to report what callers see (a broken
//! transport, a "cannot serve yet" refusal); the supervisor publishes it in the route.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ractor::ActorId;
use redis::Value;
use redis::aio::MultiplexedConnection;

use crate::error::{
    ConnectionFailure, ErrorSide, FailureKind, classify, describe_connection_error,
};
use crate::request::Request;
use crate::sync::{Striped, lock};
use crate::topology::cluster::Router;

/// The connection under a lane: one server's multiplexed connection, or the crate's cluster
/// router (one connection per node; the delivery loop routes each command by slot).
#[derive(Clone)]
pub(crate) enum Conn {
    Node(MultiplexedConnection),
    Cluster(Router),
}

/// What callers saw on a lane, reported to the connection actor that owns it.
#[derive(Debug)]
pub(crate) enum LaneEvent {
    /// The transport broke: the connection must be replaced.
    Broken(ConnectionFailure),
    /// The server refused a command because it cannot serve yet (`LOADING`, `MASTERDOWN`,
    /// `BUSY`); the command did not run.
    Refused(NotReady),
}

/// Why a connected server cannot serve yet, from its refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotReady {
    /// [`FailureKind::Loading`], [`FailureKind::MasterDown`] or [`FailureKind::Busy`].
    pub(crate) kind: FailureKind,
    /// The server's message, e.g. "LOADING Redis is loading the dataset in memory".
    pub(crate) message: String,
}

impl NotReady {
    /// The "cannot serve yet" refusal in a server error, if it is one.
    pub(crate) fn of_server_error(code: &str, detail: Option<&str>) -> Option<Self> {
        FailureKind::of_refusal(code).map(|kind| NotReady {
            kind,
            message: match detail {
                Some(d) => format!("{code} {d}"),
                None => code.to_string(),
            },
        })
    }

    /// The refusal in a reply value or error, if it is one.
    pub(crate) fn of_reply(result: &redis::RedisResult<Value>) -> Option<Self> {
        match result {
            Ok(Value::ServerError(e)) => Self::of_server_error(e.code(), e.details()),
            Err(e) => e
                .code()
                .and_then(|code| Self::of_server_error(code, e.detail())),
            Ok(_) => None,
        }
    }
}

/// How a command failed on a lane.
#[derive(Debug)]
pub(crate) enum ExecError {
    /// The transport failed after the command was handed over: it may have executed.
    Transport(String),
    /// The server cannot serve yet and refused the command: it did not run.
    Refused(NotReady),
    /// Redis answered with another error, or the reply was malformed; the connection is fine.
    Reply(redis::RedisError),
}

/// One command outstanding on a counted lane, until it is answered (or abandoned).
struct Outstanding<'a>(&'a LaneShared, bool);

impl<'a> Outstanding<'a> {
    fn enter(shared: &'a LaneShared, heavy: bool) -> Self {
        shared.outstanding.fetch_add(1, Ordering::Relaxed);
        if heavy {
            shared.heavy.fetch_add(1, Ordering::Relaxed);
        }
        Outstanding(shared, heavy)
    }
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        if self.1 {
            self.0.heavy.fetch_sub(1, Ordering::Relaxed);
        }
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
        self.0.served.fetch_add(1, Ordering::Relaxed);
    }
}

/// The port a lane reports through (to its connection actor).
pub(crate) type LanePort = Box<dyn Fn(LaneEvent) + Send + Sync>;

/// What the connection actor and every caller share about one connection.
struct LaneShared {
    /// The connection actor's id: identifies this connection.
    id: ActorId,
    /// Which of the supervisor's lanes this connection serves (0 with one lane).
    index: usize,
    /// Whether commands are counted (only with more than one lane: the count picks the lane).
    counted: bool,
    /// Commands handed to this connection and not answered yet (when `counted`).
    outstanding: AtomicUsize,
    /// Commands answered on this connection (when `counted`).
    served: AtomicU64,
    /// Of `outstanding`, those whose last reply was big (see `delivery/bulk.rs`).
    heavy: AtomicUsize,
    /// False once the connection is closing or broken: no new command is written on it.
    open: AtomicBool,
    /// Set by the health actor while a probe waits: replies then record that they came.
    watching: AtomicBool,
    /// Whether any reply (value or error) came back while `watching`: evidence that the
    /// connection is not silent. Written only while a probe waits, so the command path only
    /// reads a line nobody writes.
    heard: AtomicBool,
    /// Clones of a single server's connection kept for the next commands, per thread stripe
    /// (see [`Lease`]).
    spares: Striped<Mutex<Vec<MultiplexedConnection>>>,
    port: LanePort,
}

impl LaneShared {
    /// No new command is written on this connection from now on; its idle spare clones are
    /// dropped, so they keep neither the connection nor redis-rs's task for it alive. True
    /// for the call that closed it.
    fn shut(&self) -> bool {
        let was_open = self.open.swap(false, Ordering::SeqCst);
        for spares in self.spares.iter() {
            lock(spares).clear();
        }
        was_open
    }
}

/// Spare connection clones a stripe keeps at most (beyond, a returned clone is dropped).
const SPARES: usize = 256;

/// A live connection as callers see it (published in the route). Cheap to clone.
#[derive(Clone)]
pub(crate) struct Lane {
    conn: Conn,
    shared: Arc<LaneShared>,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("id", &self.id())
            .field("open", &self.is_open())
            .finish_non_exhaustive()
    }
}

impl Lane {
    /// A new open lane `index` on `conn`, owned by the connection actor `id`, reporting to
    /// `port`; `counted` when the supervisor runs more than one lane.
    pub(crate) fn new(
        conn: Conn,
        id: ActorId,
        index: usize,
        counted: bool,
        port: LanePort,
    ) -> Self {
        Lane {
            conn,
            shared: Arc::new(LaneShared {
                id,
                index,
                counted,
                outstanding: AtomicUsize::new(0),
                served: AtomicU64::new(0),
                heavy: AtomicUsize::new(0),
                open: AtomicBool::new(true),
                watching: AtomicBool::new(false),
                heard: AtomicBool::new(false),
                spares: Striped::new(|| Mutex::new(Vec::new())),
                port,
            }),
        }
    }

    /// The owning connection actor's id.
    pub(crate) fn id(&self) -> ActorId {
        self.shared.id
    }

    /// Which of the supervisor's lanes this is.
    pub(crate) fn index(&self) -> usize {
        self.shared.index
    }

    /// Commands outstanding on it now (0 when not counted: one lane).
    pub(crate) fn outstanding(&self) -> usize {
        self.shared.outstanding.load(Ordering::Relaxed)
    }

    /// Big-reply commands outstanding on it now (0 when not counted: one lane).
    pub(crate) fn heavy(&self) -> usize {
        self.shared.heavy.load(Ordering::Relaxed)
    }

    /// Commands answered on it so far (0 when not counted: one lane).
    pub(crate) fn served(&self) -> u64 {
        self.shared.served.load(Ordering::Relaxed)
    }

    /// True while new commands may be written on this connection.
    pub(crate) fn is_open(&self) -> bool {
        self.shared.open.load(Ordering::Acquire)
    }

    /// No new command is written on this connection from now on (closing, or broken).
    pub(crate) fn close(&self) {
        self.shared.shut();
        if let Conn::Cluster(router) = &self.conn {
            router.close();
        }
    }

    /// The connection for one command: a [`Lease`] on it, from this thread's spare clones
    /// when there is one (no shared reference count touched), a fresh clone otherwise.
    #[inline]
    pub(crate) fn lease(&self) -> Lease {
        let shared = self.shared.clone();
        let conn = match &self.conn {
            Conn::Node(conn) => {
                let spare = lock(shared.spares.mine().1).pop();
                Leased::Node(Some(spare.unwrap_or_else(|| conn.clone())))
            }
            Conn::Cluster(router) => Leased::Cluster(router.clone()),
        };
        Lease { shared, conn }
    }

    /// Starts recording whether any reply comes back (for a probe that is about to wait).
    pub(crate) fn listen(&self) {
        self.shared.heard.store(false, Ordering::Release);
        self.shared.watching.store(true, Ordering::Release);
    }

    /// Stops recording; returns whether any reply came back since [`listen`](Self::listen).
    pub(crate) fn heard(&self) -> bool {
        self.shared.watching.store(false, Ordering::Release);
        self.shared.heard.load(Ordering::Acquire)
    }

    /// The single server's connection, for the owner's own commands (QUIT, CLIENT UNBLOCK);
    /// `None` on a cluster.
    pub(crate) fn connection(&self) -> Option<MultiplexedConnection> {
        match &self.conn {
            Conn::Node(conn) => Some(conn.clone()),
            Conn::Cluster(_) => None,
        }
    }

    /// The cluster router, for the health actor's probes and per-node commands; `None` for
    /// one server.
    pub(crate) fn cluster(&self) -> Option<Router> {
        match &self.conn {
            Conn::Cluster(conn) => Some(conn.clone()),
            Conn::Node(_) => None,
        }
    }

    /// True when this lane is a cluster's (its commands go to the nodes of their slots).
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }
}

/// One command's hold on a lane's connection (from [`Lane::lease`]). A single server's clone
/// goes back to the spares of the thread it ends on, unless the lane has closed meanwhile.
pub(crate) struct Lease {
    shared: Arc<LaneShared>,
    conn: Leased,
}

enum Leased {
    /// Always `Some` until the lease drops.
    Node(Option<MultiplexedConnection>),
    Cluster(Router),
}

impl Lease {
    /// The cluster router, when this is a cluster connection (to find a key's node).
    pub(crate) fn router(&self) -> Option<&Router> {
        match &self.conn {
            Leased::Cluster(router) => Some(router),
            Leased::Node(_) => None,
        }
    }

    /// The owning connection actor's id.
    pub(crate) fn id(&self) -> ActorId {
        self.shared.id
    }

    /// The server refused a command sent on another connection to it (a pool's): reported as
    /// a refusal on this lane is, so the route is published again once the server serves.
    pub(crate) fn refused(&self, not_ready: &NotReady) {
        (self.shared.port)(LaneEvent::Refused(not_ready.clone()));
    }

    /// Runs `request` on this connection from the caller's task and classifies the result. A
    /// broken transport is reported once (and closes the lane); a refusal is reported each time.
    /// `heavy`: its last reply was big (counted apart, so small commands keep off this lane
    /// while it is delivering one). Not for a cluster lane, whose commands the delivery loop
    /// routes to its nodes (here they answer [`ExecError::Transport`], unsent).
    pub(crate) async fn run(&mut self, request: &Request, heavy: bool) -> Result<Value, ExecError> {
        let Lease { shared, conn } = self;
        let shared: &LaneShared = shared;
        let _counted = shared.counted.then(|| Outstanding::enter(shared, heavy));
        let result = match conn {
            Leased::Node(Some(conn)) => match (request.as_cmd(), request.as_pipeline()) {
                (Some(cmd), _) => conn.send_packed_command(cmd).await,
                // Boxed: a pipeline's future is large and would grow every command's.
                (None, Some(pipe)) => Box::pin(pipe.query_async::<Value>(conn)).await,
                (None, None) => Ok(Value::Nil),
            },
            // Only a dropped lease has given its connection back.
            Leased::Node(None) => {
                return Err(ExecError::Transport("connection already returned".into()));
            }
            Leased::Cluster(_) => {
                return Err(ExecError::Transport(
                    "a cluster lane routes by node (not sent)".into(),
                ));
            }
        };
        if let Err(err) = &result
            && classify(err) == ErrorSide::Transport
        {
            let failure = describe_connection_error(err);
            let reason = failure.message.clone();
            if shared.shut() {
                (shared.port)(LaneEvent::Broken(failure));
            }
            return Err(ExecError::Transport(reason));
        }
        // Any answer proves the connection is alive; recorded only while a probe listens.
        if shared.watching.load(Ordering::Acquire) {
            shared.heard.store(true, Ordering::Release);
        }
        if request.as_cmd().is_some()
            && let Some(refusal) = NotReady::of_reply(&result)
        {
            (shared.port)(LaneEvent::Refused(refusal.clone()));
            return Err(ExecError::Refused(refusal));
        }
        result.map_err(ExecError::Reply)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Leased::Node(conn) = &mut self.conn
            && let Some(conn) = conn.take()
        {
            let mut spares = lock(self.shared.spares.mine().1);
            // Checked under the stripe's lock: `Lane::close` clears every stripe after marking
            // the lane closed, so a clone put back here is either seen closed or cleared.
            if spares.len() < SPARES && self.shared.open.load(Ordering::SeqCst) {
                spares.push(conn);
            }
        }
    }
}
