//! The connection actor: owns one redis-rs `MultiplexedConnection` — connects as it starts,
//! publishes the connection's [`Lane`] to the supervisor, sends QUIT at shutdown, and stops with
//! failure when the transport breaks, so the supervisor replaces it.
//!
//! Commands do not go through the actor's ractor mailbox. A ractor message is boxed and selected
//! among four ports (about 0.7 µs of CPU per round trip, DESIGN.md §7) and a task per command
//! costs more again; both measured at 0.64–0.77 × a raw `MultiplexedConnection` (see the README's
//! Performance section). The multiplexed connection already has a mailbox: redis-rs's pipeline
//! channel into the one task that owns the socket, which writes whatever is queued in one go and
//! matches replies in order. So the actor's [`Lane`] hands callers that channel: a command is
//! written into the connection's own queue from the caller's task, never waits for another
//! command (concurrent commands pipeline on the one socket), and its reply comes straight back.
//! One hop, owned by the connection actor, instead of ours on top of redis-rs's. (A batching
//! dispatcher task in between was measured too: it cost more CPU per command at every
//! concurrency and added latency at low concurrency.)
//!
//! A transport failure — a command's I/O error, the socket closing (RESP3 tells us at once, even
//! when idle), or [`Config::health_failures`] consecutive command timeouts (a hung server or a
//! half-open link only ever yields timeouts) — makes the actor stop with failure; its supervisor
//! publishes `Down` and replaces it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort};
use redis::Value;
use redis::aio::MultiplexedConnection;

use crate::config::Config;
use crate::error::{ConnectionFailure, FailureKind, Fault, classify, describe_connection_error};
use crate::health::ServerStats;
use crate::supervisor::SupervisorMsg;

/// How long QUIT may take during shutdown.
const QUIT_TIMEOUT: Duration = Duration::from_millis(500);

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

/// How a command failed on a connection.
#[derive(Debug)]
pub(crate) enum ExecError {
    /// The transport failed after the command may have been written: it may have executed.
    Transport(String),
    /// Redis answered with an error, or the reply was malformed; the connection is fine.
    Reply(redis::RedisError),
}

/// What the connection actor and every caller share about one connection.
struct LaneState {
    actor: ActorRef<ConnectionMsg>,
    /// False once the connection is closing or broken: no new command is written.
    open: AtomicBool,
    /// Consecutive command deadlines missed on this connection (reset by any reply).
    timeouts: AtomicU32,
    limit: u32,
}

/// A live connection as callers see it (published in the route): its multiplexed connection
/// and the shared state that decides whether to write on it.
#[derive(Clone)]
pub(crate) struct Lane {
    conn: MultiplexedConnection,
    state: Arc<LaneState>,
}

impl Lane {
    /// The connection actor's id: identifies this connection.
    pub(crate) fn id(&self) -> ActorId {
        self.state.actor.get_id()
    }

    /// True while new commands may be written on this connection.
    pub(crate) fn is_open(&self) -> bool {
        self.state.open.load(Ordering::Acquire)
    }

    /// A handle on the connection to write one command with (a cheap clone).
    pub(crate) fn sender(&self) -> Sender {
        Sender {
            conn: self.conn.clone(),
            state: self.state.clone(),
        }
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

/// Writes commands on one connection from the caller's task (see [`Lane::sender`]).
pub(crate) struct Sender {
    conn: MultiplexedConnection,
    state: Arc<LaneState>,
}

impl Sender {
    /// Runs `request` and classifies the result; a broken transport is reported to the
    /// connection actor (once), and any reply resets the missed-deadline count.
    pub(crate) async fn run(&mut self, request: &Request) -> Result<Value, ExecError> {
        let result = match request {
            Request::Cmd(cmd) => self.conn.send_packed_command(cmd).await,
            Request::Pipeline(pipe) => pipe.query_async::<Value>(&mut self.conn).await,
        };
        let state = &*self.state;
        match result {
            Ok(value) => {
                if state.timeouts.load(Ordering::Relaxed) != 0 {
                    state.timeouts.store(0, Ordering::Relaxed);
                }
                Ok(value)
            }
            Err(err) => match classify(&err) {
                Fault::Transport => {
                    let failure = describe_connection_error(&err);
                    let reason = failure.message.clone();
                    if state.open.swap(false, Ordering::AcqRel) {
                        let _ = state.actor.cast(ConnectionMsg::Failed(failure));
                    }
                    Err(ExecError::Transport(reason))
                }
                Fault::Reply => Err(ExecError::Reply(err)),
            },
        }
    }
}

/// Messages of the connection actor (its life cycle; commands go through the [`Lane`]).
pub(crate) enum ConnectionMsg {
    /// The transport failed (seen by a caller or the push channel): stop with failure.
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
    /// Shared with the callers, once connected.
    lane: Option<Arc<LaneState>>,
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
        let shared = Arc::new(LaneState {
            actor: myself.clone(),
            open: AtomicBool::new(true),
            timeouts: AtomicU32::new(0),
            limit: config.health_failures(),
        });
        let lane = Lane {
            conn: conn.clone(),
            state: shared.clone(),
        };
        state.lane = Some(shared);
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
