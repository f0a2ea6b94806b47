//! One command on a Redis Cluster, under the crate's delivery rules, over the [`Router`]'s
//! connections (one per node):
//!
//! - The command goes to the node serving its key's slot (a command without a key: a primary
//!   in turn; a `SCAN` step: the node it is pinned to).
//! - `MOVED slot host:port`: it did not run; sent to that node (the slot map is read again in
//!   the background). `ASK slot host:port` (a slot being migrated): sent to that node behind
//!   `ASKING`. A further redirect waits a little first (10 ms, doubling to 200 ms). None of this
//!   is a replay.
//! - `TRYAGAIN`, `CLUSTERDOWN`, `LOADING`, `MASTERDOWN`, a node that refuses the connection, a
//!   slot no node serves: it did not run; sent again after such a pause, by the slot map read
//!   meanwhile, while the deadline allows, else that answer is the caller's.
//! - The connection lost with the command in flight: it may have run. A replay-safe command is
//!   sent once more; any other is the caller's [`Error::Ambiguous`](crate::Error::Ambiguous).
//!   One node's lost connection is that node's: it is reopened, the others stay.
//!
//! `MGET`, `DEL`, `EXISTS`, `UNLINK`, `TOUCH` and `MSET` whose keys hash to several slots are
//! split: one command per slot, those of one node in one pipeline, the nodes at once; the
//! answers recombined (`MGET` in key order, the counts summed). Each part follows the rules
//! above on its own, so a redirect of one part re-sends that part only. `MSET` split is not
//! atomic across slots.
//!
//! A pipeline goes to the slot of its first keyed command. A redirect of it is followed only
//! when nothing in it can have run — a `MULTI` transaction, whose `EXEC` a redirect aborts —
//! or when it is replay-safe; otherwise the caller gets `Ambiguous`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use redis::{RedisResult, Value};
use tokio::time::Instant;

use super::ExecError;
use crate::command::{is_read_only, key as command_key};
use crate::config::NodeAddr;
use crate::error::{ErrorSide, classify, describe_connection_error};
use crate::request::Request;
use crate::topology::cluster::{Node, Router, key_slot, redirect_target};

/// Redirects followed for one command before its last answer is the caller's.
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
    /// It did not run and may succeed later (`TRYAGAIN`, `CLUSTERDOWN`, no connection).
    Later(redis::RedisError),
    /// The connection was lost with it in flight: it may have run.
    Lost(redis::RedisError),
}

/// Error codes that say the command did not run and may succeed if sent again later.
fn not_run_code(code: &str) -> bool {
    matches!(code, "TRYAGAIN" | "CLUSTERDOWN" | "LOADING" | "MASTERDOWN")
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
        None if err.is_connection_refusal() => Next::Later(err),
        None if classify(&err) == ErrorSide::Transport => Next::Lost(err),
        None => Next::Done(Err(err)),
    }
}

/// Sorts an answer into what comes next.
fn judge(result: RedisResult<Value>) -> Next {
    match result {
        Ok(Value::ServerError(e)) => {
            let (code, detail) = (e.code().to_string(), e.details().map(str::to_string));
            judge_error(Some(&code), detail.as_deref(), redis::RedisError::from(e))
        }
        Ok(v) => Next::Done(Ok(v)),
        Err(err) => {
            let code = err.code().map(str::to_string);
            let detail = err.detail().map(str::to_string);
            judge_error(code.as_deref(), detail.as_deref(), err)
        }
    }
}

/// Runs `request` on the cluster until it has a final answer (see the module docs). A
/// transport error (`ExecError::Transport`) means it may have run and was not (or no longer)
/// to be sent again.
pub(super) async fn run(
    router: &Router,
    request: &Request,
    replay_safe: bool,
    deadline: Instant,
) -> Result<Value, ExecError> {
    if let (Some(cmd), None) = (request.as_cmd(), request.node())
        && let Some(split) = Split::of(cmd)
    {
        return split.run(router, replay_safe, deadline).await;
    }
    run_one(router, request, replay_safe, deadline).await
}

/// A "did not run" error when the slot has no node.
fn unserved(slot: Option<u16>) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Io,
        "CLUSTERDOWN",
        match slot {
            Some(s) => format!("no node serves slot {s}"),
            None => "no primary known".to_string(),
        },
    ))
}

async fn run_one(
    router: &Router,
    request: &Request,
    replay_safe: bool,
    deadline: Instant,
) -> Result<Value, ExecError> {
    let pinned = request.node().map(|n| router.node(n));
    let (slot, read) = match (request.as_cmd(), request.as_pipeline()) {
        (Some(cmd), _) => (
            command_key(cmd).map(key_slot),
            router.reads_from_replicas() && is_read_only(cmd),
        ),
        (None, Some(pipe)) => (pipe.cmd_iter().find_map(command_key).map(key_slot), false),
        (None, None) => (None, false),
    };
    let mut target: Option<(Arc<Node>, bool)> = None;
    let mut redirects = 0u32;
    let mut replayed = false;
    let mut pause = FIRST_PAUSE;
    loop {
        let routed = match (target.take(), &pinned, slot) {
            (Some(t), _, _) => Some(t),
            (None, Some(n), _) => Some((n.clone(), false)),
            (None, None, Some(s)) => router.node_for_slot(s, read).map(|n| (n, false)),
            (None, None, None) => router.any_primary().map(|n| (n, false)),
        };
        let next = match routed {
            None => {
                router.refresh_soon();
                Next::Later(unserved(slot))
            }
            Some((node, ask)) => match router.conn(&node).await {
                // Not connected: it was not sent.
                Err(e) => {
                    router.broken(&node);
                    let slot = slot.map_or_else(String::new, |s| format!(", slot {s}"));
                    Next::Later(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "cluster node not reachable (the command was not sent)",
                        format!(
                            "{}{slot}: {}",
                            node.addr,
                            describe_connection_error(&e).message
                        ),
                    )))
                }
                Ok(mut conn) => {
                    let next = judge(send(&mut conn, request, ask).await);
                    if let Next::Lost(_) = next {
                        router.broken(&node);
                    }
                    next
                }
            },
        };
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
                if !ask {
                    router.refresh_soon();
                }
                if redirects > 1 {
                    if Instant::now() + pause >= deadline {
                        return Err(ExecError::Reply(redis::RedisError::from((
                            redis::ErrorKind::Io,
                            "cluster slot still moving at the deadline",
                            format!("last redirect to {node}"),
                        ))));
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
                // A pipeline's ASK is not followed behind ASKING (it holds several commands):
                // it waits for the migration to end instead.
                target = match (ask, pipeline.is_some()) {
                    (true, true) => None,
                    _ => Some((router.node(&node), ask)),
                };
            }
            Next::Later(err) => {
                router.refresh_soon();
                if Instant::now() + pause >= deadline {
                    return Err(ExecError::Reply(err));
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
            Next::Lost(err) => {
                if !replay_safe || replayed {
                    return Err(ExecError::Transport(
                        describe_connection_error(&err).message,
                    ));
                }
                replayed = true;
            }
        }
    }
}

/// One attempt on one node's connection (behind `ASKING` for `ASK`).
async fn send(
    conn: &mut redis::aio::MultiplexedConnection,
    request: &Request,
    ask: bool,
) -> RedisResult<Value> {
    match (request.as_cmd(), request.as_pipeline()) {
        (Some(cmd), _) if ask => {
            let mut asking = redis::pipe();
            asking.cmd("ASKING").ignore().add_command(cmd.clone());
            let mut replies: Vec<Value> = asking.query_async(conn).await?;
            Ok(replies.pop().unwrap_or(Value::Nil))
        }
        (Some(cmd), _) => conn.send_packed_command(cmd).await,
        (None, Some(pipe)) => pipe.query_async::<Value>(conn).await,
        (None, None) => Ok(Value::Nil),
    }
}

/// How a split command's parts recombine.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Combine {
    /// `MGET`: the values, in key order.
    Values,
    /// `DEL`, `EXISTS`, `UNLINK`, `TOUCH`: the counts, summed.
    Sum,
    /// `MSET`: `OK`.
    Ok,
}

/// A multi-key command whose keys hash to several slots, as one command per slot.
struct Split {
    combine: Combine,
    /// Per slot: its command and the positions (in the caller's key order) of its keys.
    parts: BTreeMap<u16, (redis::Cmd, Vec<usize>)>,
    keys: usize,
}

impl Split {
    /// The parts of `cmd`, when it is a splittable command over more than one slot.
    fn of(cmd: &redis::Cmd) -> Option<Split> {
        let mut args = crate::command::args(cmd);
        let name = args.next()?;
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        let (combine, step) = if is(b"MGET") {
            (Combine::Values, 1)
        } else if is(b"MSET") {
            (Combine::Ok, 2)
        } else if is(b"DEL") || is(b"EXISTS") || is(b"UNLINK") || is(b"TOUCH") {
            (Combine::Sum, 1)
        } else {
            return None;
        };
        let rest: Vec<&[u8]> = args.collect();
        if rest.is_empty() || rest.len() % step != 0 {
            return None;
        }
        let first = key_slot(rest[0]);
        if rest.chunks(step).all(|c| key_slot(c[0]) == first) {
            return None;
        }
        let mut parts: BTreeMap<u16, (redis::Cmd, Vec<usize>)> = BTreeMap::new();
        for (i, chunk) in rest.chunks(step).enumerate() {
            let (part, positions) = parts.entry(key_slot(chunk[0])).or_insert_with(|| {
                (
                    redis::cmd(std::str::from_utf8(name).unwrap_or("MGET")),
                    Vec::new(),
                )
            });
            for a in chunk {
                part.arg(*a);
            }
            positions.push(i);
        }
        Some(Split {
            combine,
            parts,
            keys: rest.len() / step,
        })
    }

    /// Runs the parts (those of one node in one pipeline, the nodes at once) and recombines.
    async fn run(
        self,
        router: &Router,
        replay_safe: bool,
        deadline: Instant,
    ) -> Result<Value, ExecError> {
        let Split {
            combine,
            parts,
            keys,
        } = self;
        let mut by_node: BTreeMap<String, (Option<Arc<Node>>, Vec<u16>)> = BTreeMap::new();
        for slot in parts.keys() {
            let node = router.node_for_slot(*slot, combine == Combine::Values);
            let name = node
                .as_ref()
                .map_or_else(String::new, |n| n.addr.to_string());
            by_node
                .entry(name)
                .or_insert((node, Vec::new()))
                .1
                .push(*slot);
        }
        let parts = Arc::new(parts);
        let mut tasks = tokio::task::JoinSet::new();
        for (_, (node, slots)) in by_node {
            let (router, parts) = (router.clone(), parts.clone());
            tasks.spawn(async move {
                let answers = tokio::time::timeout_at(
                    deadline,
                    run_on_node(&router, node, &slots, &parts, replay_safe, deadline),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(ExecError::Transport(
                        "no reply from a part of a split command by the deadline".into(),
                    ))
                });
                (slots, answers)
            });
        }
        let mut answers: BTreeMap<u16, Value> = BTreeMap::new();
        let mut failure: Option<ExecError> = None;
        while let Some(done) = tasks.join_next().await {
            let Ok((slots, result)) = done else {
                failure.get_or_insert(ExecError::Transport(
                    "a part of a split command failed".into(),
                ));
                continue;
            };
            match result {
                Ok(values) => answers.extend(slots.into_iter().zip(values)),
                // A lost part outranks a refused one: something may have run.
                Err(e @ ExecError::Transport(_)) => failure = Some(e),
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        combine_answers(combine, keys, &parts, answers)
    }
}

/// The split command's answer from its parts' (by slot).
fn combine_answers(
    combine: Combine,
    keys: usize,
    parts: &BTreeMap<u16, (redis::Cmd, Vec<usize>)>,
    answers: BTreeMap<u16, Value>,
) -> Result<Value, ExecError> {
    {
        match combine {
            Combine::Ok => Ok(Value::Okay),
            Combine::Sum => {
                let mut sum = 0i64;
                for v in answers.values() {
                    sum += redis::from_redis_value::<i64>(v.clone())
                        .map_err(|e| ExecError::Reply(e.into()))?;
                }
                Ok(Value::Int(sum))
            }
            Combine::Values => {
                let mut out = vec![Value::Nil; keys];
                for (slot, value) in answers {
                    let Some((_, positions)) = parts.get(&slot) else {
                        continue;
                    };
                    let Value::Array(values) = value else {
                        return Err(ExecError::Reply(redis::RedisError::from((
                            redis::ErrorKind::UnexpectedReturnType,
                            "MGET part did not answer an array",
                        ))));
                    };
                    for (p, v) in positions.iter().zip(values) {
                        if let Some(slot) = out.get_mut(*p) {
                            *slot = v;
                        }
                    }
                }
                Ok(Value::Array(out))
            }
        }
    }
}

/// The parts of `slots` on `node`, in one pipeline; a part that is redirected, refused for now
/// or whose node is unknown is then run alone under the usual rules.
async fn run_on_node(
    router: &Router,
    node: Option<Arc<Node>>,
    slots: &[u16],
    parts: &BTreeMap<u16, (redis::Cmd, Vec<usize>)>,
    replay_safe: bool,
    deadline: Instant,
) -> Result<Vec<Value>, ExecError> {
    let mut answers: Vec<Option<Value>> = vec![None; slots.len()];
    if let Some(node) = node
        && let Ok(mut conn) = router.conn(&node).await
    {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for slot in slots {
            if let Some((cmd, _)) = parts.get(slot) {
                pipe.add_command(cmd.clone());
            }
        }
        match pipe.query_async::<Vec<Value>>(&mut conn).await {
            Ok(values) => {
                for (answer, value) in answers.iter_mut().zip(values) {
                    if let Next::Done(Ok(v)) = judge(Ok(value)) {
                        *answer = Some(v);
                    }
                }
            }
            Err(e) if classify(&e) == ErrorSide::Transport && !e.is_connection_refusal() => {
                router.broken(&node);
                if !replay_safe {
                    return Err(ExecError::Transport(describe_connection_error(&e).message));
                }
            }
            Err(_) => {}
        }
    }
    // Whatever has no final answer yet goes alone (it did not run, or may be replayed).
    let mut out = Vec::with_capacity(slots.len());
    for (slot, answer) in slots.iter().zip(answers) {
        let value = match answer {
            Some(v) => v,
            None => {
                let cmd = parts.get(slot).map(|(c, _)| c.clone()).unwrap_or_default();
                run_one(router, &Request::raw(cmd), replay_safe, deadline).await?
            }
        };
        out.push(value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_commands_are_those_over_several_slots() {
        let mut mget = redis::cmd("MGET");
        mget.arg("a").arg("b").arg("c");
        let split = Split::of(&mget).expect("a, b, c are on 3 slots");
        assert_eq!(split.parts.len(), 3);
        assert_eq!(split.keys, 3);
        let mut tagged = redis::cmd("del");
        tagged.arg("{u}a").arg("{u}b");
        assert!(Split::of(&tagged).is_none());
        // MSET: only the keys count, not the values; each part keeps its pairs.
        let mut mset = redis::cmd("MSET");
        mset.arg("{u}a").arg("x").arg("{u}b").arg("y");
        assert!(Split::of(&mset).is_none());
        let mut mset = redis::cmd("MSET");
        mset.arg("a").arg("1").arg("b").arg("2");
        let split = Split::of(&mset).expect("two slots");
        let args: usize = split
            .parts
            .values()
            .map(|(c, _)| c.args_iter().count())
            .sum();
        assert_eq!(args, 6, "MSET k v per part");
        let mut get = redis::cmd("GET");
        get.arg("a");
        assert!(Split::of(&get).is_none());
    }

    #[test]
    fn redirects_and_refusals_are_told_apart() {
        let err = |code: &str, detail: &str| {
            redis::RedisError::from((redis::ErrorKind::Io, "x", format!("{code} {detail}")))
        };
        let moved = judge_error(Some("MOVED"), Some("3999 127.0.0.1:7001"), err("MOVED", ""));
        assert!(matches!(moved, Next::Redirect { ask: false, ref node } if node.port == 7001));
        let ask = judge_error(Some("ASK"), Some("1 127.0.0.1:7002"), err("ASK", ""));
        assert!(matches!(ask, Next::Redirect { ask: true, .. }));
        assert!(matches!(
            judge_error(Some("TRYAGAIN"), None, err("TRYAGAIN", "")),
            Next::Later(_)
        ));
        assert!(matches!(
            judge_error(Some("WRONGTYPE"), None, err("WRONGTYPE", "")),
            Next::Done(Err(_))
        ));
    }
}
