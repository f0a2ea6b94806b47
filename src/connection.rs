//! The connection actor: owns one redis-rs `MultiplexedConnection` for its whole life. It
//! connects as it starts (in `post_start`, so a failed attempt is a supervision event), checks
//! that the server can serve (a `PING` that a loading server, a replica without its master or a
//! server busy with a script refuses), hands its [`Lane`] to the supervisor, sends QUIT at
//! shutdown, and stops with failure when the transport breaks, so the supervisor replaces it.
//!
//! Commands never pass through this actor's mailbox: callers write into the lane, which is
//! redis-rs's own pipeline queue (see [`crate::lane`]). The actor hears from the lane only when
//! something happens to the connection (a [`LaneEvent`]), and reports to its parent through a
//! type of its own, [`ConnectionReport`].

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, DerivedActorRef, RpcReplyPort};
use redis::Value;
use redis::aio::MultiplexedConnection;

use crate::config::Config;
use crate::error::{
    ConnectionFailure, ErrorSide, FailureKind, classify, describe_connection_error,
};
use crate::info::ServerStats;
use crate::lane::{Conn, Lane, LaneEvent, NotReady};
use crate::topology::{Topology, cluster};

/// How long QUIT may take during shutdown.
const QUIT_TIMEOUT: Duration = Duration::from_millis(500);

/// What a connection actor tells its supervisor (failures arrive as supervision events).
#[derive(Debug)]
pub(crate) enum ConnectionReport {
    /// A connection finished its handshake.
    Up(Box<ConnectionUp>),
    /// A caller's command on connection `id` was refused: the server cannot serve right now.
    Refused { id: ActorId, not_ready: NotReady },
}

/// A connection that finished its handshake.
#[derive(Debug)]
pub(crate) struct ConnectionUp {
    /// The connection actor's id.
    pub(crate) id: ActorId,
    /// Its INFO.
    pub(crate) stats: ServerStats,
    /// Where callers write.
    pub(crate) lane: Lane,
    /// Why the server cannot serve yet (`None`: it can).
    pub(crate) not_ready: Option<NotReady>,
    /// The server's address (with Sentinel: the master it named).
    pub(crate) address: crate::config::NodeAddr,
}

/// Messages of the connection actor (its life cycle; commands go through the [`Lane`]).
pub(crate) enum ConnectionMsg {
    /// Something callers saw on the lane.
    Lane(LaneEvent),
    /// Shutdown: refuse new commands, send QUIT, then answer.
    Quit(RpcReplyPort<()>),
}

/// Start-up arguments of the connection actor.
pub(crate) struct ConnectionArgs {
    pub(crate) config: Arc<Config>,
    pub(crate) topology: Topology,
    /// Which of the supervisor's lanes this connection serves.
    pub(crate) lane: usize,
    /// Where to report (the supervisor, seen through a port of this actor's own type).
    pub(crate) report: DerivedActorRef<ConnectionReport>,
}

/// State of a running connection actor.
pub(crate) struct ConnectionState {
    args: ConnectionArgs,
    /// The lane published for callers, once connected.
    lane: Option<Lane>,
    /// True once QUIT was sent: the socket closing is then expected, not a failure.
    closing: bool,
}

impl ConnectionState {
    /// No new command is written on this connection from now on.
    fn close(&self) {
        if let Some(lane) = &self.lane {
            lane.close();
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
            lane: None,
            closing: false,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let config = state.args.config.clone();
        let limit = config.connect_timeout();
        let attempt = connect(&config, &state.args.topology, state.args.lane, &myself);
        let (conn, stats, not_ready, address) =
            tokio::time::timeout(limit, attempt).await.map_err(|_| {
                ConnectionFailure::new(
                    FailureKind::Timeout,
                    format!(
                        "connect to {}:{} timed out after {} ms",
                        config.host(),
                        config.port(),
                        limit.as_millis()
                    ),
                )
            })??;
        let lane_actor = myself.clone();
        let port = Box::new(move |event| {
            // The actor being gone means the connection is already being replaced.
            let _ = lane_actor.cast(ConnectionMsg::Lane(event));
        });
        let counted = config.lanes() > 1;
        let lane = Lane::new(conn, myself.get_id(), state.args.lane, counted, port);
        state.lane = Some(lane.clone());
        // The supervisor checks the id: a stale "up" from a connection that already failed is
        // ignored.
        state
            .args
            .report
            .send_message(ConnectionReport::Up(Box::new(ConnectionUp {
                id: myself.get_id(),
                stats,
                lane,
                not_ready,
                address,
            })))
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
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ConnectionMsg::Lane(LaneEvent::Broken(failure)) => {
                if state.closing {
                    // Shutting down: the socket closing after QUIT is expected.
                    return Ok(());
                }
                state.close();
                Err(Box::new(failure))
            }
            // A replica now (a failover demoted it): replaced by a connection to the master.
            ConnectionMsg::Lane(LaneEvent::Refused(refusal))
                if refusal.kind == FailureKind::NotMaster && !state.closing =>
            {
                state.close();
                Err(Box::new(ConnectionFailure::new(
                    FailureKind::NotMaster,
                    format!("the server is no longer the master: {}", refusal.message),
                )))
            }
            ConnectionMsg::Lane(LaneEvent::Refused(not_ready)) => {
                let report = ConnectionReport::Refused {
                    id: myself.get_id(),
                    not_ready,
                };
                // A gone supervisor is stopping this actor anyway.
                let _ = state.args.report.send_message(report);
                Ok(())
            }
            ConnectionMsg::Quit(reply) => {
                state.closing = true;
                state.close();
                if let Some(mut conn) = state.lane.take().and_then(|l| l.connection()) {
                    let quit = redis::cmd("QUIT");
                    let _ =
                        tokio::time::timeout(QUIT_TIMEOUT, conn.send_packed_command(&quit)).await;
                }
                // The caller may have given up waiting; nothing else to do.
                let _ = reply.send(());
                Ok(())
            }
        }
    }
}

/// What a finished handshake yields: the connection, its INFO, whether it cannot serve yet, and
/// where it is.
type Handshake = (Conn, ServerStats, Option<NotReady>, crate::config::NodeAddr);

/// Opens the connection and performs the handshake: TLS (when configured), HELLO 3 with AUTH
/// and SELECT (by redis-rs), then CLIENT SETNAME, INFO and the ready check (`PING`). A user
/// whose ACL forbids SETNAME or INFO still connects: they only name the connection and fill the
/// server gauges.
async fn connect(
    config: &Arc<Config>,
    topology: &Topology,
    lane: usize,
    actor: &ActorRef<ConnectionMsg>,
) -> Result<Handshake, ConnectionFailure> {
    if topology.slotted() {
        return connect_cluster(config).await;
    }
    let located = topology.locate(config).await?;
    let push_actor = actor.clone();
    let async_config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout()))
        // Deadlines are ours (per command); redis-rs's 500 ms default must not cut them short.
        .set_response_timeout(None)
        .set_push_sender(move |info: redis::PushInfo| {
            if info.kind == redis::PushKind::Disconnection {
                let failure =
                    ConnectionFailure::new(FailureKind::Closed, "connection closed by server");
                let _ = push_actor.cast(ConnectionMsg::Lane(LaneEvent::Broken(failure)));
            }
            Ok::<(), ()>(())
        });
    let mut conn = located
        .client
        .get_multiplexed_async_connection_with_config(&async_config)
        .await
        .map_err(|e| describe_connection_error(&e))?;
    let mut setname = redis::cmd("CLIENT");
    let name = match config.lanes() {
        1 => format!("redis-supervisor:{}", config.name()),
        _ => format!("redis-supervisor:{}:lane{lane}", config.name()),
    };
    setname.arg("SETNAME").arg(name);
    optional_reply(setname.query_async::<Value>(&mut conn).await)?;
    let info = optional_reply(redis::cmd("INFO").query_async::<String>(&mut conn).await)?;
    if located.verify_master {
        verify_master(&mut conn, &located.address).await?;
    }
    let not_ready = ready_check(&mut conn).await?;
    tracing::debug!(address = %located.address, ready = not_ready.is_none(), "redis handshake done");
    Ok((
        Conn::Node(conn),
        ServerStats::parse(info.as_deref().unwrap_or("")),
        not_ready,
        located.address,
    ))
}

/// Opens the cluster connection (the crate's own router: the first seed node that answers
/// `CLUSTER SLOTS` gives the slot map; one connection per node) and checks that the cluster serves every slot (`CLUSTER INFO` says `cluster_state:ok`); INFO
/// from one node fills the server gauges. The address reported is the first seed node.
async fn connect_cluster(config: &Arc<Config>) -> Result<Handshake, ConnectionFailure> {
    let router = cluster::Router::connect(config.clone()).await?;
    let node = router.any_primary().ok_or_else(|| {
        ConnectionFailure::new(FailureKind::ClusterDown, "the cluster names no primary")
    })?;
    let mut conn = router
        .conn(&node)
        .await
        .map_err(|e| describe_connection_error(&e))?;
    let info = optional_reply(redis::cmd("INFO").query_async::<String>(&mut conn).await)?;
    let mut cluster_info = redis::cmd("CLUSTER");
    cluster_info.arg("INFO");
    let state = optional_reply(cluster_info.query_async::<String>(&mut conn).await)?;
    let not_ready = state.as_deref().and_then(cluster_not_ready);
    let address = config
        .cluster_nodes()
        .iter()
        .next()
        .cloned()
        .unwrap_or_else(|| crate::config::NodeAddr {
            host: config.host().to_string(),
            port: config.port(),
        });
    tracing::debug!(seeds = %config.cluster_nodes(), ready = not_ready.is_none(), "redis cluster handshake done");
    Ok((
        Conn::Cluster(router),
        ServerStats::parse(info.as_deref().unwrap_or("")),
        not_ready,
        address,
    ))
}

/// The cluster cannot serve every slot when `CLUSTER INFO` says `cluster_state:fail`.
pub(crate) fn cluster_not_ready(cluster_info: &str) -> Option<NotReady> {
    let state = cluster_info
        .lines()
        .find_map(|l| l.trim().strip_prefix("cluster_state:"))?;
    (state.trim() != "ok").then(|| NotReady {
        kind: FailureKind::ClusterDown,
        message: format!("CLUSTERDOWN cluster_state:{}", state.trim()),
    })
}

/// `ROLE` must say `master`: a sentinel's answer can be a failover behind (a demoted master is a
/// replica now). A server that refuses `ROLE` (ACL) is taken at the sentinels' word.
async fn verify_master(
    conn: &mut MultiplexedConnection,
    address: &crate::config::NodeAddr,
) -> Result<(), ConnectionFailure> {
    let reply = conn.send_packed_command(&redis::cmd("ROLE")).await;
    let role = match reply {
        Err(e) if classify(&e) == ErrorSide::Transport => {
            return Err(describe_connection_error(&e));
        }
        Ok(Value::Array(items)) => match items.into_iter().next() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
            Some(Value::SimpleString(s)) => s,
            _ => return Ok(()),
        },
        _ => return Ok(()),
    };
    if role == "master" {
        return Ok(());
    }
    Err(ConnectionFailure::new(
        FailureKind::NotMaster,
        format!("{address} named master by the sentinels is a {role}: a failover is under way"),
    ))
}

/// `PING`: a server that cannot serve yet refuses it (`LOADING`, `MASTERDOWN`, `BUSY`); any
/// other answer, even an error such as `NOPERM`, means it can.
async fn ready_check(
    conn: &mut MultiplexedConnection,
) -> Result<Option<NotReady>, ConnectionFailure> {
    let reply = conn.send_packed_command(&redis::cmd("PING")).await;
    match &reply {
        Err(e) if classify(e) == ErrorSide::Transport => Err(describe_connection_error(e)),
        _ => Ok(NotReady::of_reply(&reply)),
    }
}

/// A handshake step that may be refused by the server (e.g. `NOPERM` for a restricted ACL user)
/// without failing the connection; transport failures still fail it.
fn optional_reply<T>(result: redis::RedisResult<T>) -> Result<Option<T>, ConnectionFailure> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if classify(&e) == ErrorSide::Reply => {
            tracing::debug!(error = %e, "optional handshake step refused");
            Ok(None)
        }
        Err(e) => Err(describe_connection_error(&e)),
    }
}
