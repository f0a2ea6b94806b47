//! The connection actor: owns one redis-rs `MultiplexedConnection`, connects as it starts, and
//! executes commands without awaiting them in `handle` (each command's reply is awaited in its
//! own task, so concurrent commands pipeline on the one socket).
//!
//! A transport failure — a command's I/O error, the socket closing (RESP3 tells us at once, even
//! when idle), or [`Config::health_failures`] consecutive command timeouts (a hung server or a
//! half-open link only ever yields timeouts) — makes the actor stop with failure; its supervisor
//! publishes `Down` and replaces it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::time::Instant;

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

/// How a command failed inside the connection actor.
#[derive(Debug)]
pub(crate) enum ExecError {
    /// Never written to the socket (the actor was closing): safe to send elsewhere.
    NotSent,
    /// The transport failed after the command may have been written: it may have executed.
    Transport(String),
    /// No reply by the deadline: it may have executed.
    Timeout,
    /// The deadline had passed before the command could be written: never sent.
    Expired,
    /// Redis answered with an error, or the reply was malformed; the connection is fine.
    Reply(redis::RedisError),
}

/// Messages of the connection actor.
pub(crate) enum ConnectionMsg {
    /// Run a request; the reply goes straight to the caller.
    Exec {
        request: Arc<Request>,
        deadline: Instant,
        /// Health probes are judged by the health actor, not by the consecutive-timeout count.
        probe: bool,
        reply: RpcReplyPort<Result<Value, ExecError>>,
    },
    /// The transport failed (from a command task or the push channel): stop with failure.
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
    consecutive_timeouts: Arc<AtomicU32>,
    closing: bool,
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
            consecutive_timeouts: Arc::new(AtomicU32::new(0)),
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
        state.conn = Some(conn);
        // The supervisor checks the id: a stale "up" from a connection that already failed is
        // ignored.
        state
            .args
            .supervisor
            .cast(SupervisorMsg::ConnectionUp {
                id: myself.get_id(),
                stats: info,
            })
            .map_err(|_| "supervisor is gone")?;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ConnectionMsg::Exec {
                request,
                deadline,
                probe,
                reply,
            } => {
                let Some(conn) = state.conn.clone().filter(|_| !state.closing) else {
                    let _ = reply.send(Err(ExecError::NotSent));
                    return Ok(());
                };
                if deadline <= Instant::now() {
                    // A caller that has given up must not reach the server later.
                    let _ = reply.send(Err(ExecError::Expired));
                    return Ok(());
                }
                let timeouts = (!probe).then(|| {
                    (
                        state.consecutive_timeouts.clone(),
                        state.args.config.health_failures(),
                    )
                });
                tokio::spawn(run(conn, request, deadline, reply, timeouts, myself));
                Ok(())
            }
            ConnectionMsg::Failed(reason) => {
                if state.closing {
                    // Shutting down: the socket closing after QUIT is expected.
                    return Ok(());
                }
                Err(Box::new(reason))
            }
            ConnectionMsg::Quit(reply) => {
                state.closing = true;
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

/// Runs one request on the multiplexed connection and answers the caller.
async fn run(
    mut conn: MultiplexedConnection,
    request: Arc<Request>,
    deadline: Instant,
    reply: RpcReplyPort<Result<Value, ExecError>>,
    timeouts: Option<(Arc<AtomicU32>, u32)>,
    actor: ActorRef<ConnectionMsg>,
) {
    let exec = async {
        match &*request {
            Request::Cmd(cmd) => conn.send_packed_command(cmd).await,
            Request::Pipeline(pipe) => pipe.query_async::<Value>(&mut conn).await,
        }
    };
    let result = match tokio::time::timeout_at(deadline, exec).await {
        Ok(Ok(value)) => {
            if let Some((count, _)) = &timeouts
                && count.load(Ordering::Relaxed) != 0
            {
                count.store(0, Ordering::Relaxed);
            }
            Ok(value)
        }
        Ok(Err(err)) => match classify(&err) {
            Fault::Transport => {
                let failure = describe_connection_error(&err);
                let reason = failure.message.clone();
                let _ = actor.cast(ConnectionMsg::Failed(failure));
                Err(ExecError::Transport(reason))
            }
            Fault::Reply => Err(ExecError::Reply(err)),
        },
        Err(_) => {
            if let Some((count, limit)) = &timeouts {
                let n = count.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= *limit {
                    let _ = actor.cast(ConnectionMsg::Failed(ConnectionFailure::new(
                        FailureKind::Unhealthy,
                        format!("{n} consecutive command timeouts (server hung or link half-open)"),
                    )));
                }
            }
            Err(ExecError::Timeout)
        }
    };
    // The caller may have gone (its own deadline fired first): ignored on purpose.
    let _ = reply.send(result);
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
