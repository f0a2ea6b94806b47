//! The subscriber actor: owns the pub/sub connection (RESP3) for its whole life. It connects as
//! it starts (in `post_start`, so a failed attempt is a supervision event and the supervisor
//! retries with backoff), subscribes to everything the registry wants, restores the
//! subscriptions a lost connection left with a gap, probes the connection with `PING`, and stops
//! with failure when the connection breaks or falls silent.
//!
//! It is the one place `SUBSCRIBE`/`UNSUBSCRIBE` are sent, so they reach the server in the order
//! the registry changed: a channel dropped by one subscription and wanted again by another is
//! never left unsubscribed. Messages do not pass through it: the connection's push callback
//! delivers them straight into the subscriptions' buffers.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, DerivedActorRef, RpcReplyPort};
use redis::aio::MultiplexedConnection;
use tokio::task::JoinHandle;

use super::{CHUNK, PubSubShared, Queue, TargetKind, Targets};
use crate::error::{
    ConnectionFailure, Error, ErrorSide, FailureKind, classify, describe_connection_error,
    from_reply_error,
};
use crate::topology::Topology;

/// What the subscriber actor tells the supervisor (failures arrive as supervision events).
#[derive(Debug)]
pub(crate) enum SubscriberReport {
    /// The connection is up with every subscription restored.
    Up,
}

/// Messages of the subscriber actor.
pub(crate) enum SubscriberMsg {
    /// Subscribe the connection to `targets` (those it is not yet subscribed to), then mark the
    /// subscription whose queue this is confirmed.
    Confirm {
        kind: TargetKind,
        targets: Targets,
        queue: Arc<Queue>,
        reply: RpcReplyPort<Result<(), Error>>,
    },
    /// Unsubscribe from what no subscription wants any more (answering, if asked to).
    Reconcile(Option<RpcReplyPort<Result<(), Error>>>),
    /// Time for a health probe.
    Probe,
    /// The connection broke (from its push callback).
    Broken(ConnectionFailure),
}

/// Start-up arguments of the subscriber actor.
pub(crate) struct SubscriberArgs {
    pub(crate) shared: Arc<PubSubShared>,
    pub(crate) topology: Topology,
    pub(crate) report: DerivedActorRef<SubscriberReport>,
}

/// The connection and what the server has confirmed on it.
struct Connected {
    conn: MultiplexedConnection,
    channels: HashSet<Vec<u8>>,
    patterns: HashSet<Vec<u8>>,
}

impl Connected {
    fn confirmed(&mut self, kind: TargetKind) -> &mut HashSet<Vec<u8>> {
        match kind {
            TargetKind::Channel => &mut self.channels,
            TargetKind::Pattern => &mut self.patterns,
        }
    }
}

/// State of the subscriber actor.
pub(crate) struct SubscriberState {
    args: SubscriberArgs,
    connected: Option<Connected>,
    /// Consecutive probes that failed with nothing heard.
    failures: u32,
    probes: Option<JoinHandle<()>>,
}

/// How a subscribe-like command failed.
enum Failed {
    /// The connection is broken or silent: the actor fails, the supervisor replaces it.
    Connection(ConnectionFailure),
    /// The server refused (e.g. `NOPERM`); the connection is fine.
    Refused(Error),
}

/// The subscriber actor.
pub(crate) struct SubscriberActor;

impl Actor for SubscriberActor {
    type Msg = SubscriberMsg;
    type State = SubscriberState;
    type Arguments = SubscriberArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SubscriberArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // No I/O here: a pre_start failure would be a spawn error, not a supervision event.
        Ok(SubscriberState {
            args,
            connected: None,
            failures: 0,
            probes: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let shared = state.args.shared.clone();
        let config = shared.config.clone();
        let limit = config.connect_timeout();
        let opened = tokio::time::timeout(limit, connect(&shared, &state.args.topology, &myself))
            .await
            .unwrap_or_else(|_| {
                Err(ConnectionFailure::new(
                    FailureKind::Timeout,
                    format!("connect timed out after {} ms", limit.as_millis()),
                ))
            });
        let conn = match opened {
            Ok(conn) => conn,
            Err(failure) => {
                shared.lost(&failure.message, failure.kind);
                return Err(Box::new(failure));
            }
        };
        let mut connected = Connected {
            conn,
            channels: HashSet::new(),
            patterns: HashSet::new(),
        };
        if let Err(failure) = restore(&shared, &mut connected).await {
            shared.lost(&failure.message, failure.kind);
            return Err(Box::new(failure));
        }
        state.connected = Some(connected);
        let now = std::time::Instant::now();
        let mut buffered = 0;
        for (_, _, queue) in shared.all_subscriptions() {
            queue.confirm();
            buffered += queue.restored(now, &shared.metrics).unwrap_or(0);
        }
        shared.metrics.delivered(buffered);
        if shared.connected_before.swap(true, Ordering::AcqRel) {
            shared.metrics.resubscribed();
        }
        shared.metrics.set_up(true);
        shared.live.send_replace(Some(myself.clone()));
        state.probes =
            Some(myself.send_interval(config.health_interval(), || SubscriberMsg::Probe));
        let _ = state.args.report.send_message(SubscriberReport::Up);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(probes) = state.probes.take() {
            probes.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let shared = state.args.shared.clone();
        let Some(connected) = state.connected.as_mut() else {
            return Ok(());
        };
        let failure = match msg {
            SubscriberMsg::Confirm {
                kind,
                targets,
                queue,
                reply,
            } => match subscribe(&shared, connected, kind, &targets).await {
                Ok(()) => {
                    queue.confirm();
                    let _ = reply.send(Ok(()));
                    None
                }
                Err(Failed::Refused(e)) => {
                    let _ = reply.send(Err(e));
                    None
                }
                Err(Failed::Connection(f)) => Some(f),
            },
            SubscriberMsg::Reconcile(reply) => {
                let mut result = Ok(());
                let mut broken = None;
                for kind in [TargetKind::Channel, TargetKind::Pattern] {
                    match unsubscribe_unwanted(&shared, connected, kind).await {
                        Ok(()) => {}
                        Err(Failed::Refused(e)) => result = Err(e),
                        Err(Failed::Connection(f)) => broken = Some(f),
                    }
                }
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
                broken
            }
            SubscriberMsg::Probe => probe(&shared, connected, &mut state.failures).await,
            SubscriberMsg::Broken(failure) => Some(failure),
        };
        match failure {
            None => Ok(()),
            Some(failure) => {
                shared.lost(&failure.message, failure.kind);
                state.connected = None;
                Err(Box::new(failure))
            }
        }
    }
}

/// Opens the subscriber connection (RESP3, with the push callback) and names it.
async fn connect(
    shared: &Arc<PubSubShared>,
    topology: &Topology,
    actor: &ActorRef<SubscriberMsg>,
) -> Result<MultiplexedConnection, ConnectionFailure> {
    let config = &shared.config;
    let located = topology.locate(config).await?;
    let push = shared.clone();
    let broken = actor.clone();
    let async_config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout()))
        .set_response_timeout(None)
        .set_push_sender(move |info: redis::PushInfo| {
            if info.kind == redis::PushKind::Disconnection {
                let failure =
                    ConnectionFailure::new(FailureKind::Closed, "subscriber connection closed");
                let _ = broken.cast(SubscriberMsg::Broken(failure));
            } else {
                push.dispatch(info);
            }
            Ok::<(), ()>(())
        });
    let mut conn = located
        .client
        .get_multiplexed_async_connection_with_config(&async_config)
        .await
        .map_err(|e| describe_connection_error(&e))?;
    let mut setname = redis::cmd("CLIENT");
    setname
        .arg("SETNAME")
        .arg(format!("redis-supervisor:{}:pubsub", config.name()));
    match setname.query_async::<redis::Value>(&mut conn).await {
        Err(e) if classify(&e) == ErrorSide::Transport => Err(describe_connection_error(&e)),
        _ => Ok(conn),
    }
}

/// Subscribes a new connection to everything the live subscriptions want, subscription by
/// subscription (so the work is in steps of [`CHUNK`], never one pass over every target). A
/// target the server refuses (its ACL changed) ends the subscriptions to it; the others are
/// restored.
async fn restore(
    shared: &PubSubShared,
    connected: &mut Connected,
) -> Result<(), ConnectionFailure> {
    shared.clear_released();
    for (kind, targets, _) in shared.all_subscriptions() {
        match subscribe(shared, connected, kind, &targets).await {
            Ok(()) => {}
            Err(Failed::Connection(f)) => return Err(f),
            Err(Failed::Refused(_)) => {
                for target in targets.iter() {
                    let one = std::slice::from_ref(target);
                    match subscribe(shared, connected, kind, one).await {
                        Ok(()) => {}
                        Err(Failed::Connection(f)) => return Err(f),
                        Err(Failed::Refused(e)) => {
                            tracing::warn!(
                                client = %shared.config.name(),
                                target = %String::from_utf8_lossy(target),
                                error = %e,
                                "pub/sub subscription could not be restored; it ends"
                            );
                            shared.close_target(kind, target);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// `SUBSCRIBE`/`PSUBSCRIBE` those of `targets` the connection is not subscribed to yet,
/// [`CHUNK`] to a command (each step linear in its chunk), each confirmed within the command
/// timeout.
async fn subscribe(
    shared: &PubSubShared,
    connected: &mut Connected,
    kind: TargetKind,
    targets: &[Vec<u8>],
) -> Result<(), Failed> {
    let limit = shared.config.command_timeout();
    // Grown once here, not by doubling (a rehash of every element) part way.
    connected.confirmed(kind).reserve(targets.len());
    for chunk in targets.chunks(CHUNK) {
        let confirmed = connected.confirmed(kind);
        let missing: Vec<&Vec<u8>> = chunk.iter().filter(|t| !confirmed.contains(*t)).collect();
        if missing.is_empty() {
            // Nothing to send for this step: let the runtime run others before the next.
            tokio::task::yield_now().await;
            continue;
        }
        let conn = &mut connected.conn;
        let sent = match kind {
            TargetKind::Channel => tokio::time::timeout(limit, conn.subscribe(&missing)).await,
            TargetKind::Pattern => tokio::time::timeout(limit, conn.psubscribe(&missing)).await,
        };
        settle(sent, limit, kind.subscribe_command())?;
        connected
            .confirmed(kind)
            .extend(missing.into_iter().cloned());
    }
    Ok(())
}

/// `UNSUBSCRIBE`/`PUNSUBSCRIBE` what the connection is subscribed to and nobody wants any more
/// (the targets released since the last look), [`CHUNK`] to a command.
async fn unsubscribe_unwanted(
    shared: &PubSubShared,
    connected: &mut Connected,
    kind: TargetKind,
) -> Result<(), Failed> {
    let limit = shared.config.command_timeout();
    let command = match kind {
        TargetKind::Channel => "UNSUBSCRIBE",
        TargetKind::Pattern => "PUNSUBSCRIBE",
    };
    while shared.any_released(kind) {
        let mut unwanted = shared.take_released(kind, CHUNK);
        unwanted.retain(|t| connected.confirmed(kind).contains(t));
        if unwanted.is_empty() {
            continue;
        }
        let conn = &mut connected.conn;
        let sent = match kind {
            TargetKind::Channel => tokio::time::timeout(limit, conn.unsubscribe(&unwanted)).await,
            TargetKind::Pattern => tokio::time::timeout(limit, conn.punsubscribe(&unwanted)).await,
        };
        settle(sent, limit, command)?;
        for t in &unwanted {
            connected.confirmed(kind).remove(t);
        }
    }
    Ok(())
}

/// Classifies a subscribe-like command's outcome. No confirmation within the command timeout
/// means the connection is stuck: it is replaced (every subscription is then restored).
fn settle(
    sent: Result<redis::RedisResult<()>, tokio::time::error::Elapsed>,
    limit: Duration,
    command: &str,
) -> Result<(), Failed> {
    match sent {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if classify(&e) == ErrorSide::Transport => {
            Err(Failed::Connection(describe_connection_error(&e)))
        }
        Ok(Err(e)) => Err(Failed::Refused(from_reply_error(e))),
        Err(_) => Err(Failed::Connection(ConnectionFailure::new(
            FailureKind::Timeout,
            format!(
                "{command} not confirmed within {} ms on the subscriber connection",
                limit.as_millis()
            ),
        ))),
    }
}

/// What the subscriber connection's probe `PING` carries, to know its reply for its own.
const PROBE_TOKEN: &str = "redis-supervisor:probe";

/// One health probe: `PING` within the probe timeout. A probe that times out while pushes kept
/// arriving is not a failure (the connection is busy, not silent); `health_failures` silent
/// failures in a row fail the connection.
async fn probe(
    shared: &PubSubShared,
    connected: &mut Connected,
    failures: &mut u32,
) -> Option<ConnectionFailure> {
    let config = &shared.config;
    let limit = config.health_timeout().min(config.health_interval());
    shared.heard.store(false, Ordering::Release);
    shared.watching.store(true, Ordering::Release);
    let mut ping = redis::cmd("PING");
    ping.arg(PROBE_TOKEN);
    let reply = tokio::time::timeout(limit, connected.conn.send_packed_command(&ping)).await;
    shared.watching.store(false, Ordering::Release);
    let heard = shared.heard.load(Ordering::Acquire);
    match reply {
        Ok(Err(e)) if classify(&e) == ErrorSide::Transport => {
            return Some(describe_connection_error(&e));
        }
        // Its own reply, or a refusal PING can get (NOPERM): an answer. Anything else was
        // another command's: the connection has lost the order of its replies.
        Ok(Ok(redis::Value::BulkString(echo))) if echo == PROBE_TOKEN.as_bytes() => *failures = 0,
        Ok(Err(e)) if e.code() == Some("NOPERM") => *failures = 0,
        Ok(Ok(redis::Value::ServerError(e))) if e.code() == "NOPERM" => *failures = 0,
        Ok(_) => {
            return Some(ConnectionFailure::new(
                FailureKind::Unhealthy,
                "subscriber connection: PING was answered with another command's reply",
            ));
        }
        Err(_) if heard => *failures = 0,
        Err(_) => *failures += 1,
    }
    (*failures >= config.health_failures()).then(|| {
        ConnectionFailure::new(
            FailureKind::Unhealthy,
            format!(
                "subscriber connection silent: {} probes in a row got no answer within {} ms",
                *failures,
                limit.as_millis()
            ),
        )
    })
}
