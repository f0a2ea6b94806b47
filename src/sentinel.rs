//! The sentinel watcher: with Sentinel configured, an actor under the supervisor that keeps one
//! RESP3 connection to one sentinel at a time, subscribed to `+switch-master` (and `+odown`,
//! `+failover-end`, `+sentinel`, logged), and asks it for the master every health interval. It
//! tells the supervisor the master the sentinels name (`WatcherReport::Master`): on a switch at
//! once, otherwise on every check, so a connection left on another node than the one the
//! sentinels name — a missed message, a watcher that just moved — is replaced too.
//!
//! When its sentinel stops answering (a broken connection, or `health_failures` checks in a row
//! without an answer) it fails; the supervisor starts it again on the next sentinel (the
//! configured ones, then those discovered with `SENTINEL SENTINELS`), after a backoff.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ractor::{Actor, ActorProcessingErr, ActorRef, DerivedActorRef};
use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::task::JoinHandle;

use crate::config::{Config, NodeAddr};
use crate::error::{
    ConnectionFailure, ErrorSide, FailureKind, classify, describe_connection_error,
};
use crate::sync::lock;

/// The channels the watcher subscribes to on its sentinel.
const EVENTS: [&str; 4] = ["+switch-master", "+odown", "+failover-end", "+sentinel"];

/// What the watcher tells the supervisor.
#[derive(Debug)]
pub(crate) enum WatcherReport {
    /// The master the sentinels name now; `switched` when a `+switch-master` said so.
    Master { master: NodeAddr, switched: bool },
}

/// What `/health/redis` shows of the Sentinel topology; written only by the watcher.
#[derive(Debug, Clone, Default)]
pub(crate) struct SentinelView {
    /// The master the sentinels named last.
    pub(crate) master: Option<NodeAddr>,
    /// Every sentinel known: the configured ones, then those discovered.
    pub(crate) known: Vec<NodeAddr>,
    /// The sentinel watched now.
    pub(crate) watching: Option<NodeAddr>,
}

/// What the watcher, its restarts and the HTTP routes share.
pub(crate) struct SentinelShared {
    config: Arc<Config>,
    view: Mutex<SentinelView>,
    /// Where the next watcher starts (rotates on every failure).
    next: AtomicUsize,
}

impl SentinelShared {
    pub(crate) fn new(config: Arc<Config>) -> Arc<Self> {
        let known = config.sentinels().iter().cloned().collect();
        Arc::new(SentinelShared {
            config,
            view: Mutex::new(SentinelView {
                known,
                ..SentinelView::default()
            }),
            next: AtomicUsize::new(0),
        })
    }

    /// The topology as last seen.
    pub(crate) fn view(&self) -> SentinelView {
        lock(&self.view).clone()
    }

    /// The watcher failed: the next one starts at the following sentinel.
    pub(crate) fn rotate(&self) {
        self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.view).watching = None;
    }

    fn learn(&self, sentinel: NodeAddr) {
        let mut view = lock(&self.view);
        if !view.known.contains(&sentinel) {
            tracing::info!(client = %self.config.name(), sentinel = %sentinel, "sentinel discovered");
            view.known.push(sentinel);
        }
    }
}

/// Messages of the watcher.
pub(crate) enum WatcherMsg {
    /// An event published by the sentinel (channel, payload).
    Event(String, String),
    /// Time to ask for the master.
    Check,
    /// The sentinel connection broke.
    Broken,
}

/// Start-up arguments of the watcher.
pub(crate) struct WatcherArgs {
    pub(crate) shared: Arc<SentinelShared>,
    pub(crate) report: DerivedActorRef<WatcherReport>,
}

/// State of a running watcher.
pub(crate) struct WatcherState {
    args: WatcherArgs,
    conn: Option<MultiplexedConnection>,
    sentinel: Option<NodeAddr>,
    /// Checks in a row without an answer.
    failures: u32,
    checks: Option<JoinHandle<()>>,
}

/// The sentinel watcher actor.
pub(crate) struct WatcherActor;

impl Actor for WatcherActor {
    type Msg = WatcherMsg;
    type State = WatcherState;
    type Arguments = WatcherArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: WatcherArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // No I/O here: a pre_start failure would be a spawn error, not a supervision event.
        Ok(WatcherState {
            args,
            conn: None,
            sentinel: None,
            failures: 0,
            checks: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let shared = state.args.shared.clone();
        let known = shared.view().known;
        let start = shared.next.load(Ordering::Relaxed);
        let mut tried = Vec::new();
        for i in 0..known.len() {
            let sentinel = &known[(start + i) % known.len()];
            match watch(&shared.config, sentinel, &myself).await {
                Ok(conn) => {
                    lock(&shared.view).watching = Some(sentinel.clone());
                    tracing::debug!(client = %shared.config.name(), sentinel = %sentinel, "watching sentinel");
                    state.conn = Some(conn);
                    state.sentinel = Some(sentinel.clone());
                    break;
                }
                Err(why) => tried.push(format!("{sentinel}: {why}")),
            }
        }
        if state.conn.is_none() {
            return Err(Box::new(ConnectionFailure::new(
                FailureKind::NotConnected,
                format!("no sentinel to watch (tried {})", tried.join("; ")),
            )));
        }
        // The first check at once: it reports the master and discovers the other sentinels.
        check(state).await?;
        discover(state).await;
        let interval = shared.config.health_interval();
        state.checks = Some(myself.send_interval(interval, || WatcherMsg::Check));
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(checks) = state.checks.take() {
            checks.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WatcherMsg::Event(channel, payload) => {
                event(state, &channel, &payload);
                Ok(())
            }
            WatcherMsg::Check => check(state).await,
            WatcherMsg::Broken => {
                let sentinel = state.sentinel.as_ref().map(ToString::to_string);
                Err(Box::new(ConnectionFailure::new(
                    FailureKind::Closed,
                    format!(
                        "sentinel {} closed the connection",
                        sentinel.unwrap_or_default()
                    ),
                )))
            }
        }
    }
}

/// Opens the watching connection to `sentinel` and subscribes to its events.
async fn watch(
    config: &Config,
    sentinel: &NodeAddr,
    actor: &ActorRef<WatcherMsg>,
) -> Result<MultiplexedConnection, String> {
    let limit = config.connect_timeout();
    let client = config
        .sentinel_client(sentinel)
        .map_err(|e| describe_connection_error(&e).message)?;
    let events = actor.clone();
    let async_config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(limit))
        .set_response_timeout(None)
        .set_push_sender(move |info: redis::PushInfo| {
            match info.kind {
                redis::PushKind::Disconnection => {
                    let _ = events.cast(WatcherMsg::Broken);
                }
                redis::PushKind::Message => {
                    let mut data = info.data.into_iter().map(text);
                    if let (Some(Some(channel)), Some(Some(payload))) = (data.next(), data.next()) {
                        let _ = events.cast(WatcherMsg::Event(channel, payload));
                    }
                }
                _ => {}
            }
            Ok::<(), ()>(())
        });
    let open = async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&async_config)
            .await
            .map_err(|e| describe_connection_error(&e).message)?;
        conn.subscribe(&EVENTS)
            .await
            .map_err(|e| describe_connection_error(&e).message)?;
        Ok(conn)
    };
    tokio::time::timeout(limit, open)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} ms", limit.as_millis())))
}

fn text(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// Asks the sentinel for the master and reports it; `health_failures` unanswered checks in a
/// row (or a broken connection) fail the watcher.
async fn check(state: &mut WatcherState) -> Result<(), ActorProcessingErr> {
    let shared = state.args.shared.clone();
    let config = &shared.config;
    let Some(conn) = state.conn.as_mut() else {
        return Ok(());
    };
    let limit = config.health_timeout().min(config.health_interval());
    let mut ask = redis::cmd("SENTINEL");
    ask.arg("GET-MASTER-ADDR-BY-NAME")
        .arg(config.sentinel_master().unwrap_or_default());
    let reply = tokio::time::timeout(limit, conn.send_packed_command(&ask)).await;
    let master = match reply {
        Ok(Ok(v)) => redis::from_redis_value::<Option<(String, u16)>>(v)
            .ok()
            .flatten(),
        Ok(Err(e)) if classify(&e) == ErrorSide::Transport => {
            return Err(Box::new(describe_connection_error(&e)));
        }
        Ok(Err(_)) => None,
        Err(_) => {
            state.failures += 1;
            if state.failures >= config.health_failures() {
                return Err(Box::new(ConnectionFailure::new(
                    FailureKind::Unhealthy,
                    format!(
                        "sentinel {} silent: {} checks in a row got no answer within {} ms",
                        state
                            .sentinel
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                        state.failures,
                        limit.as_millis()
                    ),
                )));
            }
            return Ok(());
        }
    };
    state.failures = 0;
    if let Some((host, port)) = master {
        report_master(state, NodeAddr { host, port }, false);
    }
    Ok(())
}

fn report_master(state: &WatcherState, master: NodeAddr, switched: bool) {
    lock(&state.args.shared.view).master = Some(master.clone());
    // A gone supervisor is stopping this actor anyway.
    let _ = state
        .args
        .report
        .send_message(WatcherReport::Master { master, switched });
}

/// `SENTINEL SENTINELS <master>`: the other sentinels, for when the configured ones are gone.
async fn discover(state: &mut WatcherState) {
    let shared = state.args.shared.clone();
    let Some(conn) = state.conn.as_mut() else {
        return;
    };
    let mut ask = redis::cmd("SENTINEL");
    ask.arg("SENTINELS")
        .arg(shared.config.sentinel_master().unwrap_or_default());
    let limit = shared.config.health_timeout();
    let Ok(Ok(reply)) = tokio::time::timeout(limit, conn.send_packed_command(&ask)).await else {
        return;
    };
    let Ok(others) =
        redis::from_redis_value::<Vec<std::collections::HashMap<String, String>>>(reply)
    else {
        return;
    };
    for other in others {
        if let (Some(ip), Some(port)) = (other.get("ip"), other.get("port"))
            && let Ok(port) = port.parse()
        {
            shared.learn(NodeAddr {
                host: ip.clone(),
                port,
            });
        }
    }
}

/// One event from the sentinel.
fn event(state: &WatcherState, channel: &str, payload: &str) {
    let config = &state.args.shared.config;
    let name = config.sentinel_master().unwrap_or_default();
    let words: Vec<&str> = payload.split_whitespace().collect();
    match channel {
        // "<name> <old-ip> <old-port> <new-ip> <new-port>"
        "+switch-master" if words.first() == Some(&name) => {
            if let (Some(host), Some(Ok(port))) = (words.get(3), words.get(4).map(|p| p.parse())) {
                tracing::info!(client = %config.name(), payload, "sentinel: +switch-master");
                let master = NodeAddr {
                    host: (*host).to_string(),
                    port,
                };
                report_master(state, master, true);
            }
        }
        // "sentinel <id> <ip> <port> @ <name> <ip> <port>"
        "+sentinel" if words.get(5) == Some(&name) => {
            if let (Some(host), Some(Ok(port))) = (words.get(2), words.get(3).map(|p| p.parse())) {
                state.args.shared.learn(NodeAddr {
                    host: (*host).to_string(),
                    port,
                });
            }
        }
        // "master <name> <ip> <port> #quorum …" / "master <name> <ip> <port>"
        "+odown" | "+failover-end" if words.get(1) == Some(&name) => {
            tracing::info!(client = %config.name(), channel, payload, "sentinel event");
        }
        _ => {}
    }
}
