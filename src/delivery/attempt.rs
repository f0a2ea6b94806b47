//! One attempt of a command on the connection its plan names — a lane of the shared connection
//! (the hot path), a cluster node's connection, or a pool's — sorted into an [`Attempt`] for the
//! loop to judge.

use std::sync::Arc;
use std::time::Duration;

use redis::{RedisResult, Value};
use tokio::time::Instant;

use super::{Attempt, HandleCore, Plan, Target, Via};
use crate::config::NodeAddr;
use crate::deadline;
use crate::error::{Error, ErrorSide, FailureKind, classify, describe_connection_error};
use crate::lane::{ExecError, Lease, NotReady};
use crate::pool::{Pool, Waited};
use crate::request::Request;
use crate::topology::cluster::{Node, Router, key_slot, redirect_target};

/// On `lease`, a lane of one server's shared connection: the path of almost every command.
#[inline]
pub(super) async fn shared(
    mut lease: Lease,
    plan: &Plan<'_>,
    remaining: Duration,
    heavy: bool,
) -> Attempt {
    let outcome = {
        // Pinned here, where it is made: it is most of a command's future.
        let run = lease.run(plan.request, heavy);
        deadline::within(remaining, plan.deadline, std::pin::pin!(run)).await
    };
    match outcome {
        Some(Ok(value)) => Attempt::Answered(value),
        // A pipeline's error replies are sorted as every other path sorts them (a lane sorts
        // a single command's refusal itself).
        Some(Err(ExecError::Reply(e))) if plan.request.as_pipeline().is_some() => {
            let attempt = sort(Err(e), plan.request, false);
            if let Attempt::Refused(not_ready) = &attempt {
                lease.refused(not_ready);
            }
            attempt
        }
        Some(Err(ExecError::Reply(e))) => Attempt::Failed(e),
        Some(Err(ExecError::Refused(not_ready))) => Attempt::Refused(not_ready),
        Some(Err(ExecError::Transport(reason))) => Attempt::Lost(reason),
        None => Attempt::NoAnswer,
    }
}

/// Anywhere but a lane of one server: a cluster node's shared connection, or a pool's
/// connection (to the node of the key's slot, on a cluster).
pub(super) async fn elsewhere(
    core: &HandleCore,
    lease: Lease,
    plan: &Plan<'_>,
    target: &Target,
) -> Attempt {
    let router = lease.router().cloned();
    let attempt = match (plan.via, &router) {
        (Via::Pool(purpose), router) => {
            pooled(core.pool(purpose), router.as_ref(), plan, target).await
        }
        (Via::Shared, Some(router)) => on_node(router, plan, target).await,
        // A lane of one server is the loop's own path.
        (Via::Shared, None) => Attempt::Final(Error::Connection("no cluster router".into())),
    };
    // One server refused a pool's command: the supervisor hears of it as of a lane's refusal,
    // so the route it waits on is published again once the server serves.
    if let (Attempt::Refused(not_ready), None) = (&attempt, &router) {
        lease.refused(not_ready);
    }
    attempt
}

/// The node the next attempt goes to on a cluster, and whether it is an `ASK`; or why there is
/// none (no node serves the slot yet: the slot map is read again).
fn node_of(router: &Router, plan: &Plan<'_>, target: &Target) -> Result<(Arc<Node>, bool), String> {
    let request = plan.request;
    match target {
        Target::Moved(addr) => return Ok((router.node(addr), false)),
        Target::Ask(addr) => return Ok((router.node(addr), true)),
        Target::Slot => {}
    }
    if let Some(pinned) = request.node() {
        return Ok((router.node(pinned), false));
    }
    let (slot, read) = match (request.as_cmd(), request.as_pipeline()) {
        (Some(cmd), _) => (
            crate::command::key(cmd).map(key_slot),
            plan.via == Via::Shared
                && router.reads_from_replicas()
                && crate::command::is_read_only(cmd),
        ),
        (None, Some(pipe)) => (
            pipe.cmd_iter().find_map(crate::command::key).map(key_slot),
            false,
        ),
        (None, None) => (None, false),
    };
    let node = match slot {
        Some(slot) => router
            .node_for_slot(slot, read)
            .ok_or_else(|| format!("CLUSTERDOWN no node serves slot {slot}")),
        None => router
            .any_primary()
            .ok_or_else(|| "CLUSTERDOWN no primary known".to_string()),
    };
    node.map(|n| (n, false))
        .inspect_err(|_| router.refresh_soon())
}

/// On the shared connection to a cluster node.
async fn on_node(router: &Router, plan: &Plan<'_>, target: &Target) -> Attempt {
    let (node, ask) = match node_of(router, plan, target) {
        Ok(found) => found,
        Err(why) => return Attempt::Later(why),
    };
    let mut conn = match router.conn(&node).await {
        Ok(conn) => conn,
        // Not connected: it was not sent.
        Err(e) => {
            router.broken(&node);
            return Attempt::Later(format!(
                "cluster node {} not reachable (the command was not sent): {}",
                node.addr,
                describe_connection_error(&e).message
            ));
        }
    };
    let sent = plan.request.send(&mut conn, ask);
    let Ok(result) = tokio::time::timeout_at(plan.deadline, sent).await else {
        return Attempt::NoAnswer;
    };
    // A broken transport drops the node's connection (the next command opens a new one); a
    // refusal (`TRYAGAIN`, `BUSY`, …) came on a connection that works.
    if matches!(&result, Err(e) if classify(e) == ErrorSide::Transport) {
        router.broken(&node);
    }
    sort(result, plan.request, true)
}

/// On a connection of `pool` (to the key's node, on a cluster), held for this command alone;
/// given back only after a clean answer.
async fn pooled(pool: &Pool, router: Option<&Router>, plan: &Plan<'_>, target: &Target) -> Attempt {
    let (node, ask) = match router.map(|r| node_of(r, plan, target)) {
        None => (None, false),
        Some(Ok((node, ask))) => (Some(node.addr.clone()), ask),
        Some(Err(why)) => return Attempt::Later(why),
    };
    let permit = match pool.permit(plan.deadline).await {
        Ok(permit) => permit,
        Err(e) => return Attempt::Final(e),
    };
    let mut checkout = match pool.checkout(permit, plan.deadline, node.as_ref()).await {
        Ok(checkout) => checkout,
        Err(e) if router.is_some() => return Attempt::Later(e.to_string()),
        // The server refused the new connection's set-up: it cannot serve yet.
        Err(Error::Unavailable { kind, reason, .. })
            if kind.is_not_ready() || kind == FailureKind::NotMaster =>
        {
            return Attempt::Refused(NotReady {
                kind,
                message: reason,
            });
        }
        Err(e) => return Attempt::Final(e),
    };
    // Shutdown began while it connected: it would not be unblocked. Not sent.
    if pool.is_closed() {
        return Attempt::Final(Error::ShuttingDown);
    }
    let shortened = shortened(plan);
    let request = shortened.as_ref().unwrap_or(plan.request);
    let Some(ran) = pool
        .run(&mut checkout, request, ask, plan.deadline, plan.durability)
        .await
    else {
        return Attempt::NoAnswer;
    };
    let attempt = match sort(ran.result, plan.request, router.is_some()) {
        // Unblocked by shutdown (`CLIENT UNBLOCK … ERROR`): it popped nothing.
        Attempt::Failed(e) if e.code() == Some("UNBLOCKED") && pool.is_closed() => {
            return Attempt::Final(Error::ShuttingDown);
        }
        Attempt::Answered(Value::ServerError(e)) if e.code() == "UNBLOCKED" && pool.is_closed() => {
            return Attempt::Final(Error::ShuttingDown);
        }
        Attempt::Lost(_) if pool.is_closed() => return Attempt::Final(Error::ShuttingDown),
        // An error reply wrote nothing: there is nothing for the replicas to have.
        Attempt::Answered(value @ Value::ServerError(_)) => Attempt::Answered(value),
        Attempt::Answered(value) => match replicated(plan, ran.waited) {
            Ok(()) => Attempt::Answered(plan.request.reply_of(value)),
            Err(e) => Attempt::Final(e),
        },
        other => other,
    };
    if !matches!(attempt, Attempt::Lost(_)) {
        pool.give_back(checkout);
    }
    attempt
}

/// A write that was to reach `plan.durability` replicas: whether `WAIT` said it did.
fn replicated(plan: &Plan<'_>, waited: Option<Waited>) -> Result<(), Error> {
    let Some(durability) = plan.durability else {
        return Ok(());
    };
    let (acknowledged, why) = match waited {
        Some(Waited::Acknowledged(n)) if n >= u64::from(durability.replicas) => return Ok(()),
        Some(Waited::Acknowledged(n)) => (n, None),
        Some(Waited::Refused(why)) => (0, Some(why)),
        None => (0, Some("no time was left to wait".to_string())),
    };
    Err(Error::NotReplicated {
        command: plan.request.name(),
        acknowledged: u32::try_from(acknowledged).unwrap_or(u32::MAX),
        required: durability.replicas,
        reason: why.unwrap_or_else(|| {
            format!(
                "WAIT {} {} answered {acknowledged}",
                durability.replicas,
                durability.timeout.as_millis()
            )
        }),
    })
}

/// A blocking command that waited for its connection blocks only for what its deadline has left
/// (keeping the rest for the reply): blocking its full time would answer after the deadline, and
/// a pop the caller no longer waits for loses its element.
fn shortened(plan: &Plan<'_>) -> Option<Request> {
    let block = plan.block?;
    let budget_rest = plan.budget.saturating_sub(block);
    let left = plan
        .deadline
        .saturating_duration_since(Instant::now())
        .saturating_sub(budget_rest);
    if left + Duration::from_millis(5) >= block {
        return None;
    }
    let cmd = plan.request.as_cmd()?;
    crate::command::with_block_time(cmd, left).map(|c| Request::typed(c, plan.request.label()))
}

/// Sorts the reply to `request` (on a cluster node when `cluster`) into what the loop does next.
pub(super) fn sort(result: RedisResult<Value>, request: &Request, cluster: bool) -> Attempt {
    match result {
        Ok(Value::ServerError(e)) => {
            let (code, detail) = (e.code().to_string(), e.details().map(str::to_string));
            by_code(&code, detail.as_deref(), cluster)
                .unwrap_or(Attempt::Answered(Value::ServerError(e)))
        }
        Ok(value) => Attempt::Answered(value),
        Err(e) => {
            if let Some(pipe) = request.as_pipeline()
                && let Some(attempt) = pipeline_bounced(&e, pipe, cluster)
            {
                return attempt;
            }
            if let Some(code) = e.code() {
                let (code, detail) = (code.to_string(), e.detail().map(str::to_string));
                if let Some(attempt) = by_code(&code, detail.as_deref(), cluster) {
                    return attempt;
                }
            }
            match classify(&e) {
                // Refused: nothing was sent.
                ErrorSide::Transport if e.is_connection_refusal() && cluster => {
                    Attempt::Later(describe_connection_error(&e).message)
                }
                ErrorSide::Transport => Attempt::Lost(describe_connection_error(&e).message),
                ErrorSide::Reply => Attempt::Failed(e),
            }
        }
    }
}

/// A pipeline some of whose commands were redirected or refused for now (`MOVED`, `ASK`,
/// `TRYAGAIN`, `CLUSTERDOWN`, `LOADING`, `BUSY`, `MASTERDOWN`, `READONLY`): what that means for
/// the whole. Every command bounced, or a transaction (`EXECABORT`: nothing of it ran) whose
/// every error is such a bounce: nothing ran, the first bounce is the attempt's outcome. Some
/// bounced and the rest ran: [`Attempt::Partly`]. `None`: no bounce (the caller's answer).
fn pipeline_bounced(
    e: &redis::RedisError,
    pipe: &redis::Pipeline,
    cluster: bool,
) -> Option<Attempt> {
    let errors = e.clone().into_server_errors()?;
    let mut bounces = errors.iter().filter_map(|(at, err)| {
        by_code(err.code(), err.details(), cluster).map(|attempt| (*at, attempt))
    });
    let (at, first) = bounces.next()?;
    let bounced = 1 + bounces.count();
    if pipe.is_transaction() {
        return (bounced == errors.len()).then_some(first);
    }
    if bounced == pipe.len() {
        return Some(first);
    }
    Some(Attempt::Partly {
        reason: format!(
            "command {} of the pipeline was not run ({}), {} of its {} commands were",
            at + 1,
            first.why(),
            pipe.len() - bounced,
            pipe.len()
        ),
        bounce: Box::new(first),
    })
}

/// What an error code says about a command that got it: redirected, refused for now (it did
/// not run), or nothing special (`None`: the caller's answer).
fn by_code(code: &str, detail: Option<&str>, cluster: bool) -> Option<Attempt> {
    match code {
        "MOVED" | "ASK" => {
            let node: NodeAddr = redirect_target(detail)?;
            Some(Attempt::Redirected {
                node,
                ask: code == "ASK",
            })
        }
        "TRYAGAIN" | "CLUSTERDOWN" => Some(Attempt::Later(format!(
            "{code} {}",
            detail.unwrap_or_default()
        ))),
        _ => {
            let refusal = NotReady::of_server_error(code, detail)?;
            Some(if cluster {
                Attempt::Later(refusal.message)
            } else {
                Attempt::Refused(refusal)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: &str, detail: &str) -> RedisResult<Value> {
        Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "x",
            format!("{code} {detail}"),
        )))
    }

    #[test]
    fn redirects_refusals_and_losses_are_told_apart() {
        let get = Request::raw(redis::cmd("GET").arg("k").clone());
        let server = |text: &str| -> RedisResult<Value> {
            let reply = format!("-{text}\r\n");
            redis::parse_redis_value(reply.as_bytes())
        };
        assert!(matches!(
            sort(server("MOVED 3999 127.0.0.1:7001"), &get, true),
            Attempt::Redirected { ask: false, ref node } if node.port == 7001
        ));
        assert!(matches!(
            sort(server("ASK 1 127.0.0.1:7002"), &get, true),
            Attempt::Redirected { ask: true, .. }
        ));
        assert!(matches!(
            sort(server("TRYAGAIN x"), &get, true),
            Attempt::Later(_)
        ));
        assert!(matches!(
            sort(server("LOADING x"), &get, true),
            Attempt::Later(_)
        ));
        assert!(matches!(
            sort(server("LOADING x"), &get, false),
            Attempt::Refused(_)
        ));
        assert!(matches!(
            sort(server("WRONGTYPE x"), &get, true),
            Attempt::Answered(Value::ServerError(_)) | Attempt::Failed(_)
        ));
        assert!(matches!(
            sort(err("IO", "broken"), &get, true),
            Attempt::Lost(_)
        ));
    }
}
