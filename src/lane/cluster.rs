//! One command on a Redis Cluster, under the crate's delivery rules. redis-rs's cluster client
//! routes it by slot and refreshes its slot map on `MOVED`; with its retries off (see
//! [`crate::topology::cluster`]) everything else comes back here:
//!
//! - `MOVED slot host:port`: the command did not run; sent again to that node (redis-rs rebuilds
//!   its slot map meanwhile). `ASK slot host:port` (a slot being migrated): sent to that node
//!   behind `ASKING`, once. Neither is a replay.
//! - `TRYAGAIN`, `CLUSTERDOWN`, `LOADING`, `MASTERDOWN`, a node that refused the connection or
//!   has none yet: the command did not run; sent again after a short pause (10 ms, doubling to
//!   200 ms) while the deadline allows, else that answer is the caller's.
//! - A connection lost with the command in flight: it may have run. A replay-safe command is
//!   sent once more; any other is the caller's [`Error::Ambiguous`](crate::Error::Ambiguous).
//!   One node's lost connection is that node's: redis-rs reconnects it, the cluster connection
//!   stays.
//!
//! A pipeline is routed by its first key. A redirect of one of its commands is followed (the
//! pipeline sent again) only when nothing in it can have run — a `MULTI` transaction, whose
//! `EXEC` a redirect aborts — or when it is replay-safe; otherwise the caller gets `Ambiguous`.

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::SingleNodeRoutingInfo;
use redis::{RedisResult, Value};
use tokio::time::Instant;

use super::ExecError;
use crate::config::NodeAddr;
use crate::error::describe_connection_error;
use crate::request::Request;
use crate::topology::cluster::{at, key_slot};

/// Redirects followed for one command before its last answer is the caller's (a slot map in
/// flux settles in a few).
const MAX_REDIRECTS: u32 = 16;
/// First pause before sending again a command that did not run.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// Longest such pause.
const MAX_PAUSE: Duration = Duration::from_millis(200);

/// What an answer asks of the next attempt.
enum Next {
    /// The final answer (a value or an error reply for the caller).
    Done(RedisResult<Value>),
    /// `MOVED` / `ASK` to this node: it did not run.
    Redirect { node: NodeAddr, ask: bool },
    /// It did not run and may succeed later (`TRYAGAIN`, `CLUSTERDOWN`, no connection yet).
    Later(redis::RedisError),
    /// The connection was lost with it in flight: it may have run.
    Lost(redis::RedisError),
}

/// Error codes that say the command did not run and may succeed if sent again later.
fn not_run_code(code: &str) -> bool {
    matches!(code, "TRYAGAIN" | "CLUSTERDOWN" | "LOADING" | "MASTERDOWN")
}

/// `slot host:port` → the node.
fn redirect_target(detail: Option<&str>) -> Option<NodeAddr> {
    let addr = detail?.split_whitespace().nth(1)?;
    let (host, port) = addr.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    (!host.is_empty()).then_some(NodeAddr { host, port })
}

fn judge_error(code: Option<&str>, detail: Option<&str>, err: redis::RedisError) -> Next {
    match code {
        Some(c @ ("MOVED" | "ASK")) => match redirect_target(detail) {
            Some(node) => Next::Redirect {
                node,
                ask: c == "ASK",
            },
            None => Next::Done(Err(err)),
        },
        Some(c) if not_run_code(c) => Next::Later(err),
        Some(_) => Next::Done(Err(err)),
        None if err.kind() == redis::ErrorKind::ClusterConnectionNotFound
            || err.is_connection_refusal() =>
        {
            Next::Later(err)
        }
        None if crate::error::classify(&err) == crate::error::ErrorSide::Transport => {
            Next::Lost(err)
        }
        None => Next::Done(Err(err)),
    }
}

/// Sorts an answer into what comes next.
fn judge(result: RedisResult<Value>) -> Next {
    match result {
        Ok(Value::ServerError(e)) => {
            let (code, detail) = (e.code().to_string(), e.details().map(str::to_string));
            let err = redis::RedisError::from(e);
            judge_error(Some(&code), detail.as_deref(), err)
        }
        Ok(v) => Next::Done(Ok(v)),
        Err(err) => {
            let (code, detail) = (
                err.code().map(str::to_string),
                err.detail().map(str::to_string),
            );
            judge_error(code.as_deref(), detail.as_deref(), err)
        }
    }
}

/// Runs `request` on the cluster until it has a final answer, following redirects and waiting
/// out "try again" answers while `deadline` allows. A transport error (`ExecError::Transport`)
/// means it may have run and was not (or no longer) to be sent again.
pub(super) async fn run(
    conn: &mut ClusterConnection,
    request: &Request,
    replay_safe: bool,
    deadline: Instant,
) -> Result<Value, ExecError> {
    let pinned = request.node().map(|n| (n.clone(), false));
    let mut target: Option<(NodeAddr, bool)> = pinned.clone();
    let mut redirects = 0u32;
    let mut replayed = false;
    let mut pause = FIRST_PAUSE;
    // Split over several slots by redis-rs: an answer that sends one part back says nothing of
    // the others, which may have run.
    let split = request.as_cmd().is_some_and(fans_out);
    loop {
        let result = attempt(conn, request, target.as_ref()).await;
        let next = judge(result);
        if split && !replay_safe && !matches!(next, Next::Done(_)) {
            return Err(ExecError::Transport(
                "part of a command split over several cluster slots was redirected or lost: the other parts may have run".into(),
            ));
        }
        match next {
            Next::Done(result) => return result.map_err(ExecError::Reply),
            Next::Redirect { node, ask } => {
                let pipeline = request.as_pipeline();
                let resendable = pipeline.is_none_or(|p| p.is_transaction()) || replay_safe;
                if !resendable {
                    return Err(ExecError::Transport(format!(
                        "a command of the pipeline was redirected to {node} ({}): the others may have run",
                        if ask { "ASK" } else { "MOVED" }
                    )));
                }
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(ExecError::Reply(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "too many cluster redirects",
                        format!("last to {node}"),
                    ))));
                }
                // A pipeline or a split command is sent again by slot, after a pause (redis-rs
                // is rebuilding its map); a command goes straight to the node named.
                target = match pipeline.is_some() || split {
                    true => {
                        if Instant::now() + pause >= deadline {
                            return Err(ExecError::Reply(redis::RedisError::from((
                                redis::ErrorKind::Io,
                                "cluster slots still moving at the deadline",
                                format!("last redirect to {node}"),
                            ))));
                        }
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(MAX_PAUSE);
                        None
                    }
                    false => Some((node, ask)),
                };
            }
            Next::Later(err) => {
                if Instant::now() + pause >= deadline {
                    return Err(ExecError::Reply(err));
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
                target = pinned.clone();
            }
            Next::Lost(err) => {
                if !replay_safe || replayed {
                    return Err(ExecError::Transport(
                        describe_connection_error(&err).message,
                    ));
                }
                replayed = true;
                target = pinned.clone();
            }
        }
    }
}

/// Whether redis-rs splits `cmd` over several slots: `MGET`, `DEL`, `EXISTS`, `UNLINK`,
/// `TOUCH`, `WATCH` and `MSET` whose keys hash to more than one slot.
fn fans_out(cmd: &redis::Cmd) -> bool {
    let mut args = cmd.args_iter().filter_map(|a| match a {
        redis::Arg::Simple(bytes) => Some(bytes),
        _ => None,
    });
    let Some(name) = args.next() else {
        return false;
    };
    let step = match name.to_ascii_uppercase().as_slice() {
        b"MGET" | b"DEL" | b"EXISTS" | b"UNLINK" | b"TOUCH" | b"WATCH" => 1,
        b"MSET" => 2,
        _ => return false,
    };
    let mut slots = args.step_by(step).map(key_slot);
    let Some(first) = slots.next() else {
        return false;
    };
    slots.any(|s| s != first)
}

/// One attempt: by slot, or to the node a redirect named (behind `ASKING` for `ASK`).
async fn attempt(
    conn: &mut ClusterConnection,
    request: &Request,
    target: Option<&(NodeAddr, bool)>,
) -> RedisResult<Value> {
    match (request.as_cmd(), request.as_pipeline(), target) {
        (Some(cmd), _, None) => conn.req_packed_command(cmd).await,
        (Some(cmd), _, Some((node, false))) => conn.route_command(cmd.clone(), at(node)).await,
        (Some(cmd), _, Some((node, true))) => {
            let mut asking = redis::pipe();
            asking.cmd("ASKING").add_command(cmd.clone());
            let route = SingleNodeRoutingInfo::ByAddress {
                host: node.host.clone(),
                port: node.port,
            };
            let mut replies = conn.route_pipeline(asking, 1, 1, route).await?;
            Ok(replies.pop().unwrap_or(Value::Nil))
        }
        (None, Some(pipe), _) => pipe.query_async::<Value>(conn).await,
        (None, None, _) => Ok(Value::Nil),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_targets_parse() {
        let n = redirect_target(Some("3999 127.0.0.1:6381")).map(|n| n.to_string());
        assert_eq!(n.as_deref(), Some("127.0.0.1:6381"));
        let n = redirect_target(Some("1 [::1]:7000")).map(|n| (n.host, n.port));
        assert_eq!(n, Some(("::1".to_string(), 7000)));
        assert!(redirect_target(Some("3999")).is_none());
        assert!(redirect_target(None).is_none());
    }

    #[test]
    fn split_commands_are_those_over_several_slots() {
        let mut mget = redis::cmd("MGET");
        mget.arg("a").arg("b");
        assert!(fans_out(&mget));
        let mut tagged = redis::cmd("del");
        tagged.arg("{u}a").arg("{u}b");
        assert!(!fans_out(&tagged));
        // MSET: only the keys count, not the values.
        let mut mset = redis::cmd("MSET");
        mset.arg("{u}a").arg("x").arg("{u}b").arg("y");
        assert!(!fans_out(&mset));
        let mut get = redis::cmd("GET");
        get.arg("a");
        assert!(!fans_out(&get));
    }
}
