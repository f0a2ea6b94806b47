//! The sentinel watcher: with Sentinel configured, an actor under the supervisor that keeps a
//! RESP3 connection to one sentinel at a time, asks it for the master every health interval, and
//! listens to the events of **every** known sentinel (the one watched and, on connections of
//! their own, the others: only the sentinel leading a failover announces its steps).
//!
//! It tells the supervisor the master to follow (`WatcherReport::Master`):
//! - **at the promotion**: when the leading sentinel sends `REPLICAOF NO ONE` to the replica it
//!   selected (`+failover-state-send-slaveof-noone`, or `+promoted-slave` if that was missed),
//!   that replica is the master from then on. The old master would go on acknowledging writes
//!   that the failover then throws away until the sentinels announce the switch (about a second
//!   later), so the connections move now, not at the announcement. Until the sentinels name the
//!   new master, their answers naming the old one are not followed (see
//!   [`SentinelShared::named`]); an aborted failover (`-failover-abort-*`) ends that;
//! - at `+switch-master`, and on every check: so a connection left on another node than the one
//!   the sentinels name — a missed message, a watcher that just moved — is replaced too.
//!
//! When its sentinel stops answering (a broken connection, or `health_failures` checks in a row
//! without an answer) it fails; the supervisor starts it again on the next sentinel (the
//! configured ones, then those discovered with `SENTINEL SENTINELS`), after a backoff. A lost
//! connection to another sentinel is opened again at the next check.

use std::collections::{HashMap, HashSet};

use ractor::{Actor, ActorProcessingErr, ActorRef, DerivedActorRef};
use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::task::JoinHandle;

use crate::config::{Config, NodeAddr};
use crate::error::{
    ConnectionFailure, ErrorSide, FailureKind, classify, describe_connection_error,
};
use crate::topology::SentinelShared;

/// The channels the watcher subscribes to on each sentinel.
const EVENTS: [&str; 10] = [
    "+switch-master",
    "+failover-state-send-slaveof-noone",
    "+promoted-slave",
    "+odown",
    "+failover-end",
    "+sentinel",
    // A replica found, converted from a stale master, down or back: the replicas a failover
    // could promote are counted again at once.
    "+slave",
    "+convert-to-slave",
    "+sdown",
    "-sdown",
];

/// The failover aborts (`-failover-abort-not-elected`, `-failover-abort-no-good-slave`, …).
const ABORTS: &str = "-failover-abort-*";

/// What the watcher tells the supervisor.
#[derive(Debug)]
pub(crate) enum WatcherReport {
    /// The master to follow now; `switched` when the sentinels switched (or are promoting) it, so
    /// connections elsewhere move at once.
    Master { master: NodeAddr, switched: bool },
}

/// Messages of the watcher.
pub(crate) enum WatcherMsg {
    /// An event published by a sentinel (channel, payload).
    Event(String, String),
    /// Time to ask for the master.
    Check,
    /// The watched sentinel's connection broke.
    Broken,
    /// The connection listening to another sentinel's events broke.
    ListenerLost(NodeAddr),
}

/// Start-up arguments of the watcher.
pub(crate) struct WatcherArgs {
    pub(crate) shared: std::sync::Arc<SentinelShared>,
    pub(crate) report: DerivedActorRef<WatcherReport>,
}

/// State of a running watcher.
pub(crate) struct WatcherState {
    args: WatcherArgs,
    conn: Option<MultiplexedConnection>,
    sentinel: Option<NodeAddr>,
    /// Connections listening to the other sentinels' events.
    listeners: HashMap<NodeAddr, MultiplexedConnection>,
    /// Checks in a row without an answer.
    failures: u32,
    checks: Option<JoinHandle<()>>,
    /// Masters the sentinels declared objectively down (`+odown`), by `ip:port`, until they
    /// are seen up again.
    down: HashSet<String>,
    /// Old masters of a switch they were not down for (a planned failover), by `ip:port`: alive,
    /// and promotable once the sentinels' new link to them is up (a moment after the switch),
    /// so counted as replicas even while that link is not up yet. Dropped once it is, or once
    /// they are down.
    demoted: HashSet<String>,
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
            listeners: HashMap::new(),
            failures: 0,
            checks: None,
            down: HashSet::new(),
            demoted: HashSet::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let shared = state.args.shared.clone();
        let config = shared.config().clone();
        let known = shared.view().known;
        let start = shared.next_index();
        let mut tried = Vec::new();
        for i in 0..known.len() {
            let sentinel = &known[(start + i) % known.len()];
            match watch(&config, sentinel, &myself, None).await {
                Ok(conn) => {
                    shared.watching(Some(sentinel.clone()));
                    tracing::debug!(client = %config.name(), sentinel = %sentinel, "watching sentinel");
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
        listen_to_others(state, &myself).await;
        let interval = config.health_interval();
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
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WatcherMsg::Event(channel, payload) => {
                if event(state, &channel, &payload) {
                    let config = state.args.shared.config().clone();
                    let limit = config.health_timeout().min(config.health_interval());
                    count_replicas(state, limit).await;
                }
                Ok(())
            }
            WatcherMsg::Check => {
                check(state).await?;
                listen_to_others(state, &myself).await;
                Ok(())
            }
            WatcherMsg::ListenerLost(sentinel) => {
                state.listeners.remove(&sentinel);
                Ok(())
            }
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

/// Opens a connection to `sentinel` subscribed to its events (delivered to `actor`). Its loss
/// is told as `Broken` (the watched sentinel, `listener` `None`) or `ListenerLost`.
async fn watch(
    config: &Config,
    sentinel: &NodeAddr,
    actor: &ActorRef<WatcherMsg>,
    listener: Option<NodeAddr>,
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
            forward(&events, info, listener.as_ref());
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
        conn.psubscribe(ABORTS)
            .await
            .map_err(|e| describe_connection_error(&e).message)?;
        Ok(conn)
    };
    tokio::time::timeout(limit, open)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} ms", limit.as_millis())))
}

/// A push from a sentinel connection, as a message to the watcher.
fn forward(actor: &ActorRef<WatcherMsg>, info: redis::PushInfo, listener: Option<&NodeAddr>) {
    let mut data = info.data.into_iter().map(text);
    let (channel, payload) = match info.kind {
        redis::PushKind::Disconnection => {
            let _ = actor.cast(match listener {
                Some(sentinel) => WatcherMsg::ListenerLost(sentinel.clone()),
                None => WatcherMsg::Broken,
            });
            return;
        }
        redis::PushKind::Message => (data.next(), data.next()),
        // [pattern, channel, payload]
        redis::PushKind::PMessage => (data.nth(1), data.next()),
        _ => return,
    };
    if let (Some(Some(channel)), Some(Some(payload))) = (channel, payload) {
        let _ = actor.cast(WatcherMsg::Event(channel, payload));
    }
}

/// Listens to the events of every known sentinel not listened to yet (each within the connect
/// timeout; one that does not answer is tried again at the next check).
async fn listen_to_others(state: &mut WatcherState, actor: &ActorRef<WatcherMsg>) {
    let shared = state.args.shared.clone();
    let config = shared.config().clone();
    for sentinel in shared.view().known {
        if Some(&sentinel) == state.sentinel.as_ref() || state.listeners.contains_key(&sentinel) {
            continue;
        }
        match watch(&config, &sentinel, actor, Some(sentinel.clone())).await {
            Ok(conn) => {
                state.listeners.insert(sentinel, conn);
            }
            Err(why) => {
                tracing::debug!(client = %config.name(), sentinel = %sentinel, reason = %why, "cannot listen to sentinel events");
            }
        }
    }
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
    let config = shared.config();
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
        let master = NodeAddr { host, port };
        if shared.named(&master, false) {
            report_master(state, master, false);
        }
    }
    count_replicas(state, limit).await;
    Ok(())
}

/// `SENTINEL REPLICAS <master>`: how many replicas a failover may promote — what a write that
/// must survive one (a lock's fencing token) waits for.
async fn count_replicas(state: &mut WatcherState, limit: std::time::Duration) {
    let shared = state.args.shared.clone();
    let Some(conn) = state.conn.as_mut() else {
        return;
    };
    let name = shared.config().sentinel_master().unwrap_or_default();
    let mut pipe = redis::pipe();
    pipe.cmd("SENTINEL")
        .arg("MASTER")
        .arg(name)
        .cmd("SENTINEL")
        .arg("REPLICAS")
        .arg(name);
    let Ok(Ok(replies)) = tokio::time::timeout(limit, conn.send_packed_commands(&pipe, 0, 2)).await
    else {
        return;
    };
    let Ok((master, replicas)) = redis::from_redis_value::<(
        HashMap<String, String>,
        Vec<HashMap<String, String>>,
    )>(Value::Array(replies)) else {
        return;
    };
    let down_after_ms = master
        .get("down-after-milliseconds")
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(DEFAULT_DOWN_AFTER_MS);
    let (mut count, mut masters) = (0_u32, Vec::new());
    for replica in &replicas {
        let name = replica.get("name").map_or("", String::as_str);
        let demoted = state.demoted.contains(name);
        if promotable(replica, down_after_ms, demoted) {
            match replica_addr(replica) {
                // Not replicating (yet): written to directly.
                Some(addr) if replica.get("role-reported").is_some_and(|r| r == "master") => {
                    masters.push(addr);
                }
                _ => count = count.saturating_add(1),
            }
        }
        let flags = replica.get("flags").map_or("", String::as_str);
        if demoted && (!flags.contains("disconnected") || flags.contains("_down")) {
            state.demoted.remove(name);
        }
        if !flags.contains("disconnected") && !flags.contains("_down") {
            // Back: a later switch away from it is a planned one again.
            state.down.remove(name);
        }
    }
    shared.replicas(count, masters);
}

/// The address of one entry of `SENTINEL REPLICAS` (its `ip` and `port` fields).
fn replica_addr(replica: &HashMap<String, String>) -> Option<NodeAddr> {
    Some(NodeAddr {
        host: replica.get("ip")?.clone(),
        port: replica.get("port")?.parse().ok()?,
    })
}

/// Sentinel's default `down-after-milliseconds`, for a `SENTINEL MASTER` reply without it.
const DEFAULT_DOWN_AFTER_MS: i64 = 30_000;

/// Whether a failover may promote this replica (one entry of `SENTINEL REPLICAS`), as the
/// sentinels choose (`sentinelSelectSlave`): not down nor disconnected, a priority other than 0,
/// and a link to the master down for at most ten times `down-after-milliseconds` — whatever
/// the last `INFO` of it said about its role and link. A replica in the middle of a full
/// resynchronisation (after a failover, a cut link) is promotable with the data it had, and so
/// counts: the sentinels refresh a replica's `INFO` only every 10 s, so "link ok" in their view
/// may be stale either way. A `demoted` master (alive: see [`WatcherState::demoted`]) counts
/// while the sentinels' link to it is not up yet.
fn promotable(replica: &HashMap<String, String>, down_after_ms: i64, demoted: bool) -> bool {
    let field = |name: &str| replica.get(name).map_or("", String::as_str);
    let up = !field("flags").split(',').any(|f| match f {
        "s_down" | "o_down" => true,
        "disconnected" => !demoted,
        _ => false,
    });
    let priority = field("slave-priority") != "0";
    let link_down_ms: i64 = field("master-link-down-time").parse().unwrap_or(0);
    up && priority && link_down_ms <= down_after_ms.saturating_mul(10)
}

fn report_master(state: &WatcherState, master: NodeAddr, switched: bool) {
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
        .arg(shared.config().sentinel_master().unwrap_or_default());
    let limit = shared.config().health_timeout();
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

/// The node at `words[at]` (host) and `words[at + 1]` (port).
fn node_at(words: &[&str], at: usize) -> Option<NodeAddr> {
    let host = words.get(at)?;
    let port = words.get(at + 1)?.parse().ok()?;
    Some(NodeAddr {
        host: (*host).to_string(),
        port,
    })
}

/// One event from a sentinel (the same event may come from several).
/// Acts on one event of a sentinel; whether the master's replicas may have changed (a switch,
/// a replica found, converted, down or back), so that they are counted again.
fn event(state: &mut WatcherState, channel: &str, payload: &str) -> bool {
    let shared = state.args.shared.clone();
    let config = shared.config().clone();
    let name = config.sentinel_master().unwrap_or_default();
    let words: Vec<&str> = payload.split_whitespace().collect();
    match channel {
        // "<name> <old-ip> <old-port> <new-ip> <new-port>"
        "+switch-master" if words.first() == Some(&name) => {
            // Every sentinel announces the switch: the old master stays known as down.
            if let Some(old) = node_at(&words, 1).map(|old| old.to_string())
                && !state.down.contains(&old)
            {
                state.demoted.insert(old);
            }
            if let Some(master) = node_at(&words, 3) {
                tracing::info!(client = %config.name(), payload, "sentinel: +switch-master");
                shared.named(&master, true);
                report_master(state, master, true);
            }
            return true;
        }
        // "slave <ip:port> <ip> <port> @ <name> <master-ip> <master-port>"
        "+slave" | "+convert-to-slave" | "+sdown" | "-sdown"
            if words.first() == Some(&"slave") && words.get(5) == Some(&name) =>
        {
            return true;
        }
        // "slave <ip:port> <ip> <port> @ <name> <master-ip> <master-port>": the replica the
        // leader selected is being made (or was made) master.
        "+failover-state-send-slaveof-noone" | "+promoted-slave"
            if words.first() == Some(&"slave") && words.get(5) == Some(&name) =>
        {
            if let Some(replica) = node_at(&words, 2)
                && shared.promoting().as_ref() != Some(&replica)
            {
                tracing::info!(client = %config.name(), channel, payload, "sentinel: a replica is being promoted");
                shared.promote(replica.clone());
                report_master(state, replica, true);
            }
        }
        // "master <name> <ip> <port> …"
        c if c.starts_with("-failover-abort") && words.get(1) == Some(&name) => {
            tracing::info!(client = %config.name(), channel, payload, "sentinel: failover aborted");
            shared.abort_promotion();
        }
        // "sentinel <id> <ip> <port> @ <name> <ip> <port>"
        "+sentinel" if words.get(5) == Some(&name) => {
            if let Some(sentinel) = node_at(&words, 2) {
                shared.learn(sentinel);
            }
        }
        // "master <name> <ip> <port> #quorum …" / "master <name> <ip> <port>"
        "+odown" | "+failover-end" if words.get(1) == Some(&name) => {
            tracing::info!(client = %config.name(), channel, payload, "sentinel event");
            if channel == "+odown"
                && let Some(master) = node_at(&words, 2)
            {
                state.down.insert(master.to_string());
            }
        }
        _ => {}
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(fields: &[(&str, &str)]) -> HashMap<String, String> {
        fields
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn a_replica_is_promotable_as_the_sentinels_would_choose_it() {
        let ok = [
            ("flags", "slave"),
            ("slave-priority", "100"),
            ("master-link-status", "ok"),
            ("master-link-down-time", "0"),
        ];
        assert!(promotable(&replica(&ok), 1000, false));
        // Its link down (a cut, a full resync) for a while, or never up (a demoted master that
        // has not synced yet): still promotable, so still counted.
        let mut resyncing = ok;
        resyncing[2] = ("master-link-status", "err");
        resyncing[3] = ("master-link-down-time", "4000");
        assert!(promotable(&replica(&resyncing), 1000, false));
        resyncing[3] = ("master-link-down-time", "-1000");
        assert!(promotable(&replica(&resyncing), 1000, false));
        // Down too long, down, disconnected, or never to be promoted: not counted.
        resyncing[3] = ("master-link-down-time", "10001");
        assert!(!promotable(&replica(&resyncing), 1000, false));
        for flags in ["slave,s_down", "slave,o_down", "slave,disconnected"] {
            let mut down = ok;
            down[0] = ("flags", flags);
            assert!(!promotable(&replica(&down), 1000, false), "{flags}");
        }
        // A master demoted by a planned failover, before the sentinels' link to it is up: it
        // counts; down, it does not.
        let mut demoted = ok;
        demoted[0] = ("flags", "slave,disconnected");
        assert!(promotable(&replica(&demoted), 1000, true));
        demoted[0] = ("flags", "slave,s_down,disconnected");
        assert!(!promotable(&replica(&demoted), 1000, true));
        let mut never = ok;
        never[1] = ("slave-priority", "0");
        assert!(!promotable(&replica(&never), 1000, false));
    }
}
