//! The connection actor: owns one redis-rs `MultiplexedConnection`, connects as it starts, and
//! runs the connection's **command lane**.
//!
//! Commands do not travel through the actor's ractor mailbox: a ractor message is boxed and
//! selected among four ports (about 0.7 µs of CPU per round trip, DESIGN.md §7), and a task per
//! command costs more again. Instead the actor starts, with each connection, a dispatcher task fed
//! by a plain tokio channel (the [`Lane`]). The dispatcher drains the channel in batches, starts
//! each command on the multiplexed connection without waiting for the previous one (so
//! concurrent commands pipeline on the one socket, in one write per batch), and polls every
//! command in flight itself (no task per command), sending each reply straight to its caller.
//! The actor keeps what needs an actor: start-up, failure, shutdown (QUIT) and supervision.
//!
//! When nothing is in flight on the connection, a command skips the dispatcher and runs in the
//! caller's own task on the same multiplexed connection: at low concurrency the hop to the
//! dispatcher and back would be two more task wake-ups on the critical path, while at high
//! concurrency the batching dispatcher is faster than callers writing one by one.
//!
//! A transport failure — a command's I/O error, the socket closing (RESP3 tells us at once, even
//! when idle), or [`Config::health_failures`] consecutive command timeouts (a hung server or a
//! half-open link only ever yields timeouts) — makes the actor stop with failure; its supervisor
//! publishes `Down` and replaces it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort};
use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::Config;
use crate::error::{ConnectionFailure, FailureKind, Fault, classify, describe_connection_error};
use crate::health::ServerStats;
use crate::supervisor::SupervisorMsg;

/// How long QUIT may take during shutdown.
const QUIT_TIMEOUT: Duration = Duration::from_millis(500);

/// The most commands the dispatcher takes from the lane at once.
const BATCH: usize = 256;

/// What a caller asks the connection to run.
#[derive(Debug)]
pub(crate) enum Request {
    Cmd(redis::Cmd),
    Pipeline(redis::Pipeline),
}

impl Request {
    /// The command name (upper case), for errors: the first argument of a command, `PIPELINE` or
    /// `MULTI` for pipelines.
    pub(crate) fn name(&self) -> String {
        match self {
            Request::Cmd(c) => match c.args_iter().next() {
                Some(redis::Arg::Simple(a)) => String::from_utf8_lossy(a).to_ascii_uppercase(),
                _ => "COMMAND".to_string(),
            },
            Request::Pipeline(p) if p.is_transaction() => "MULTI".to_string(),
            Request::Pipeline(_) => "PIPELINE".to_string(),
        }
    }
}

/// How a command failed inside the connection.
#[derive(Debug)]
pub(crate) enum ExecError {
    /// Never written to the socket (the connection was closing): safe to send elsewhere.
    NotSent,
    /// The transport failed after the command may have been written: it may have executed.
    Transport(String),
    /// The deadline had passed before the command could be written: never sent.
    Expired,
    /// Redis answered with an error, or the reply was malformed; the connection is fine.
    Reply(redis::RedisError),
}

/// The answer to one [`Exec`].
pub(crate) type ExecReply = Result<Value, ExecError>;

/// One command on its way to a connection's dispatcher.
pub(crate) struct Exec {
    pub(crate) request: Arc<Request>,
    /// After this instant the caller has given up: the command must not be written any more.
    pub(crate) deadline: Instant,
    pub(crate) reply: oneshot::Sender<ExecReply>,
}

/// What the connection's dispatcher, its actor and every caller share about one connection.
pub(crate) struct LaneState {
    actor: ActorRef<ConnectionMsg>,
    /// False once the connection is closing or broken: no new command is written.
    open: AtomicBool,
    /// Consecutive command deadlines missed on this connection (reset by any reply).
    timeouts: AtomicU32,
    limit: u32,
    /// Commands in flight (through the dispatcher or direct).
    busy: AtomicUsize,
}

impl LaneState {
    /// Turns a redis-rs result into the caller's answer, reporting a broken transport to the
    /// actor (once) and resetting the missed-deadline count on any reply.
    fn answer(&self, result: redis::RedisResult<Value>) -> ExecReply {
        match result {
            Ok(value) => {
                if self.timeouts.load(Ordering::Relaxed) != 0 {
                    self.timeouts.store(0, Ordering::Relaxed);
                }
                Ok(value)
            }
            Err(err) => match classify(&err) {
                Fault::Transport => {
                    let failure = describe_connection_error(&err);
                    let reason = failure.message.clone();
                    if self.open.swap(false, Ordering::AcqRel) {
                        let _ = self.actor.cast(ConnectionMsg::Failed(failure));
                    }
                    Err(ExecError::Transport(reason))
                }
                Fault::Reply => Err(ExecError::Reply(err)),
            },
        }
    }
}

/// Counts one command in flight on a connection until dropped.
pub(crate) struct Busy(Arc<LaneState>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The sending side of a live connection's command lane, published in the route for handles
/// and the health actor. Cloning it is cheap; handles send through the route without cloning.
#[derive(Clone)]
pub(crate) struct Lane {
    tx: mpsc::UnboundedSender<Exec>,
    conn: MultiplexedConnection,
    state: Arc<LaneState>,
}

/// How a command was handed to a connection.
pub(crate) enum Submitted {
    /// Queued for the dispatcher; the answer comes on this channel.
    Queued(oneshot::Receiver<ExecReply>),
    /// Nothing else was in flight: run it in the caller's task on this connection.
    Direct(Direct),
}

/// A command to run in the caller's task (see [`Submitted::Direct`]).
pub(crate) struct Direct {
    conn: MultiplexedConnection,
    busy: Busy,
}

impl Direct {
    /// Runs `request` and turns the result into the caller's answer.
    pub(crate) async fn run(mut self, request: &Request) -> ExecReply {
        let result = match request {
            Request::Cmd(cmd) => self.conn.send_packed_command(cmd).await,
            Request::Pipeline(pipe) => pipe.query_async::<Value>(&mut self.conn).await,
        };
        self.busy.0.answer(result)
    }
}

impl Lane {
    /// The connection actor's id: identifies this connection.
    pub(crate) fn id(&self) -> ActorId {
        self.state.actor.get_id()
    }

    /// Hands a command to this connection: directly when nothing is in flight (and `direct` is
    /// allowed), else through the dispatcher. Gives the request back if the connection is
    /// closing or gone (nothing was sent).
    pub(crate) fn submit(
        &self,
        request: &Arc<Request>,
        deadline: Instant,
        direct: bool,
    ) -> Result<Submitted, ()> {
        if !self.state.open.load(Ordering::Acquire) {
            return Err(());
        }
        if direct
            && self
                .state
                .busy
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return Ok(Submitted::Direct(Direct {
                conn: self.conn.clone(),
                busy: Busy(self.state.clone()),
            }));
        }
        let (reply, rx) = oneshot::channel();
        let exec = Exec {
            request: request.clone(),
            deadline,
            reply,
        };
        self.tx.send(exec).map_err(drop)?;
        Ok(Submitted::Queued(rx))
    }

    /// A command sent on this connection got no reply by its deadline. After `limit` in a row
    /// the connection is taken as hung and replaced.
    pub(crate) fn missed_deadline(&self) {
        let n = self.state.timeouts.fetch_add(1, Ordering::Relaxed) + 1;
        if n == self.state.limit {
            let _ = self
                .state
                .actor
                .cast(ConnectionMsg::Failed(ConnectionFailure::new(
                    FailureKind::Unhealthy,
                    format!("{n} consecutive command timeouts (server hung or link half-open)"),
                )));
        }
    }
}

/// Messages of the connection actor (lifecycle only; commands go through the [`Lane`]).
pub(crate) enum ConnectionMsg {
    /// The transport failed (from the dispatcher or the push channel): stop with failure.
    Failed(ConnectionFailure),
    /// Shutdown: refuse new commands, send QUIT, then answer.
    Quit(RpcReplyPort<()>),
}

/// Start-up arguments of the connection actor.
pub(crate) struct ConnectionArgs {
    pub(crate) config: Arc<Config>,
    pub(crate) supervisor: ActorRef<SupervisorMsg>,
}

/// State of a running connection actor.
pub(crate) struct ConnectionState {
    args: ConnectionArgs,
    conn: Option<MultiplexedConnection>,
    /// Shared with the dispatcher and the callers, once connected.
    lane: Option<Arc<LaneState>>,
    /// Dropping it (however the actor ends) tells the dispatcher to stop.
    stop_dispatcher: Option<oneshot::Sender<()>>,
    dispatcher: Option<JoinHandle<()>>,
    closing: bool,
}

impl ConnectionState {
    /// No new command is written on this connection from now on.
    fn close(&self) {
        if let Some(lane) = &self.lane {
            lane.open.store(false, Ordering::Release);
        }
    }
}

/// The connection actor.
pub(crate) struct ConnectionActor;

impl Actor for ConnectionActor {
    type Msg = ConnectionMsg;
    type State = ConnectionState;
    type Arguments = ConnectionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ConnectionArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // No I/O here: a pre_start failure would surface as a spawn error, not a supervision
        // event. Connecting happens in post_start.
        Ok(ConnectionState {
            args,
            conn: None,
            lane: None,
            stop_dispatcher: None,
            dispatcher: None,
            closing: false,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let config = &state.args.config;
        let (conn, info) = tokio::time::timeout(config.connect_timeout(), connect(config, &myself))
            .await
            .map_err(|_| {
                ConnectionFailure::new(
                    FailureKind::Timeout,
                    format!(
                        "connect to {}:{} timed out after {} ms",
                        config.host(),
                        config.port(),
                        config.connect_timeout().as_millis()
                    ),
                )
            })??;
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let shared = Arc::new(LaneState {
            actor: myself.clone(),
            open: AtomicBool::new(true),
            timeouts: AtomicU32::new(0),
            limit: config.health_failures(),
            busy: AtomicUsize::new(0),
        });
        let lane = Lane {
            tx,
            conn: conn.clone(),
            state: shared.clone(),
        };
        let dispatcher = Dispatcher {
            conn: conn.clone(),
            lane: shared.clone(),
        };
        state.lane = Some(shared);
        state.dispatcher = Some(tokio::spawn(dispatcher.run(rx, stop_rx)));
        state.stop_dispatcher = Some(stop_tx);
        state.conn = Some(conn);
        // The supervisor checks the id: a stale "up" from a connection that already failed is
        // ignored.
        state
            .args
            .supervisor
            .cast(SupervisorMsg::ConnectionUp {
                id: myself.get_id(),
                stats: info,
                lane,
            })
            .map_err(|_| "supervisor is gone")?;
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.close();
        // The dispatcher answers what is queued with NotSent and abandons what is in flight.
        state.stop_dispatcher.take();
        state.dispatcher.take();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ConnectionMsg::Failed(reason) => {
                if state.closing {
                    // Shutting down: the socket closing after QUIT is expected.
                    return Ok(());
                }
                state.close();
                Err(Box::new(reason))
            }
            ConnectionMsg::Quit(reply) => {
                state.closing = true;
                state.close();
                if let Some(mut conn) = state.conn.take() {
                    let quit = redis::cmd("QUIT");
                    let _ =
                        tokio::time::timeout(QUIT_TIMEOUT, conn.send_packed_command(&quit)).await;
                }
                let _ = reply.send(());
                Ok(())
            }
        }
    }
}

/// The dispatcher of one connection: drains the lane in batches and drives every command in
/// flight on the multiplexed connection from this one task.
struct Dispatcher {
    conn: MultiplexedConnection,
    lane: Arc<LaneState>,
}

impl Dispatcher {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Exec>, mut stop: oneshot::Receiver<()>) {
        let mut in_flight = FuturesUnordered::new();
        let mut batch = Vec::with_capacity(BATCH);
        let mut receiving = true;
        loop {
            tokio::select! {
                biased;
                // The actor is gone (stopped, failed or killed): answer what is queued, abandon
                // what is in flight (those callers' deadlines answer them).
                _ = &mut stop => break,
                Some((result, reply)) = in_flight.next(), if !in_flight.is_empty() => {
                    self.finish(result, reply);
                }
                n = rx.recv_many(&mut batch, BATCH), if receiving => {
                    if n == 0 {
                        receiving = false;
                        continue;
                    }
                    let now = Instant::now();
                    let open = self.lane.open.load(Ordering::Acquire);
                    for exec in batch.drain(..) {
                        if !open {
                            let _ = exec.reply.send(Err(ExecError::NotSent));
                        } else if exec.deadline <= now {
                            // Its caller has given up: it must not reach the server later.
                            let _ = exec.reply.send(Err(ExecError::Expired));
                        } else {
                            self.lane.busy.fetch_add(1, Ordering::Relaxed);
                            in_flight.push(execute(self.conn.clone(), exec));
                        }
                    }
                }
                else => break,
            }
        }
        rx.close();
        while let Ok(exec) = rx.try_recv() {
            let _ = exec.reply.send(Err(ExecError::NotSent));
        }
    }

    /// Answers one caller.
    fn finish(&self, result: redis::RedisResult<Value>, reply: oneshot::Sender<ExecReply>) {
        self.lane.busy.fetch_sub(1, Ordering::Relaxed);
        // The caller may have gone (its own deadline fired first): ignored on purpose.
        let _ = reply.send(self.lane.answer(result));
    }
}

/// Runs one request on the multiplexed connection.
async fn execute(
    mut conn: MultiplexedConnection,
    exec: Exec,
) -> (redis::RedisResult<Value>, oneshot::Sender<ExecReply>) {
    let result = match &*exec.request {
        Request::Cmd(cmd) => conn.send_packed_command(cmd).await,
        Request::Pipeline(pipe) => pipe.query_async::<Value>(&mut conn).await,
    };
    (result, exec.reply)
}

/// Opens the connection and performs the handshake: TLS (when configured), HELLO 3 with AUTH
/// and SELECT (by redis-rs), then CLIENT SETNAME and INFO. A user whose ACL forbids those last
/// two still connects: they only name the connection and fill the server gauges.
async fn connect(
    config: &Config,
    actor: &ActorRef<ConnectionMsg>,
) -> Result<(MultiplexedConnection, ServerStats), ConnectionFailure> {
    let client = config
        .redis_client()
        .map_err(|e| describe_connection_error(&e))?;
    let push_actor = actor.clone();
    let async_config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout()))
        // Deadlines are ours (per command); redis-rs's 500 ms default must not cut them short.
        .set_response_timeout(None)
        .set_push_sender(move |info: redis::PushInfo| {
            if info.kind == redis::PushKind::Disconnection {
                let _ = push_actor.cast(ConnectionMsg::Failed(ConnectionFailure::new(
                    FailureKind::Closed,
                    "connection closed by server",
                )));
            }
            Ok::<(), ()>(())
        });
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&async_config)
        .await
        .map_err(|e| describe_connection_error(&e))?;
    let mut setname = redis::cmd("CLIENT");
    setname
        .arg("SETNAME")
        .arg(format!("redis-supervisor:{}", config.name()));
    optional_reply(setname.query_async::<Value>(&mut conn).await)?;
    let info = optional_reply(redis::cmd("INFO").query_async::<String>(&mut conn).await)?;
    Ok((conn, ServerStats::parse(info.as_deref().unwrap_or(""))))
}

/// A handshake step that may be refused by the server (e.g. `NOPERM` for a restricted ACL user)
/// without failing the connection; transport failures still fail it.
fn optional_reply<T>(result: redis::RedisResult<T>) -> Result<Option<T>, ConnectionFailure> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if classify(&e) == Fault::Reply => {
            tracing::debug!(error = %e, "optional handshake step refused");
            Ok(None)
        }
        Err(e) => Err(describe_connection_error(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_names() {
        let mut c = redis::cmd("get");
        c.arg("k");
        assert_eq!(Request::Cmd(c).name(), "GET");
        assert_eq!(
            Request::Pipeline(redis::pipe().atomic().clone()).name(),
            "MULTI"
        );
        assert_eq!(Request::Pipeline(redis::pipe()).name(), "PIPELINE");
    }
}
