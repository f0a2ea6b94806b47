//! The delivery loop's rules, kind by kind, on one server (typed commands, pipelines, blocking
//! commands; the cluster kinds are in `delivery_cluster`):
//!
//! - **a refusal is waited out and the command sent again**: a Lua script keeps the server busy
//!   past `lua-time-limit`, so it answers `BUSY` to everything; each kind sent then is refused
//!   (the server's `errorstat_BUSY` counts it), waits, and is answered once the script ends;
//! - **a lost connection**: `CLIENT PAUSE … WRITE` holds a write on the server (not run), then
//!   `CLIENT KILL` drops the connection it came on. A non-idempotent command is `Ambiguous` (and
//!   not run again); a replay-safe one is sent again on a new connection and answered — once:
//!   lost a second time, it is `Ambiguous` too.

use std::time::Duration;

use redis_supervisor::testing::RedisServer;
use redis_supervisor::{Error, RedisHandle, Supervisor};

use crate::support::clients::{self, client, held};
use crate::support::helpers::*;

/// The name of the supervisors here: their shared connection is `redis-supervisor:dlv`, the
/// blocking pool's `redis-supervisor:dlv:blocking`.
const NAME: &str = "dlv";
const SHARED: &str = "redis-supervisor:dlv";
const BLOCKING: &str = "redis-supervisor:dlv:blocking";

/// Generous deadline of the commands under test.
const DEADLINE: Duration = Duration::from_secs(8);

/// A server whose scripts count as busy after 100 ms, and a supervisor on it.
async fn setup() -> (RedisServer, Supervisor, RedisHandle) {
    let server = server_with(&["--lua-time-limit", "100"]).await;
    let sup = supervisor_with(&server, |b| b.name(NAME)).await;
    let redis = sup.handle().with_timeout(DEADLINE);
    (server, sup, redis)
}

/// Starts a script that keeps `server` busy for `ms`; returns once it answers `BUSY`.
async fn busy_for(server: &RedisServer, ms: u64) -> tokio::task::JoinHandle<()> {
    clients::busy_for(addr(server), ms).await
}

fn addr(server: &RedisServer) -> String {
    format!("{}:{}", server.host(), server.port())
}

/// How many `BUSY` refusals the server has answered (`INFO errorstats`).
async fn busy_refusals(server: &RedisServer) -> u64 {
    let mut admin = admin(server).await;
    let info: String = redis::cmd("INFO")
        .arg("errorstats")
        .query_async(&mut admin)
        .await
        .expect("INFO errorstats");
    info.lines()
        .find_map(|l| l.strip_prefix("errorstat_BUSY:count="))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// Runs `command` with writes paused on `server` and its connection (`conn`, held in `cmd`)
/// killed `times` times; its answer.
async fn lost<T: Send + 'static>(
    server: &RedisServer,
    conn: &str,
    cmd: &str,
    times: usize,
    command: impl Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    let mut admin = clients::admin_at(addr(server)).await;
    clients::lost(&mut admin, conn, cmd, times, command).await
}

async fn counter(server: &RedisServer, key: &str) -> Option<i64> {
    let mut admin = admin(server).await;
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut admin)
        .await
        .unwrap()
}

fn assert_ambiguous<T: std::fmt::Debug>(what: &str, result: &Result<T, Error>) {
    assert!(
        matches!(result, Err(Error::Ambiguous { .. })),
        "{what}: a command lost in flight that is not replay-safe must be Ambiguous, got {result:?}"
    );
}

// ---- a refusal is waited out and sent again -------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_refusal_is_waited_out_and_sent_again() {
    let (server, _sup, redis) = setup().await;
    let before = busy_refusals(&server).await;
    let script = busy_for(&server, 1500).await;
    let n = redis.incr("typed").await;
    script.await.unwrap();
    assert_eq!(n.expect("INCR after the script"), 1, "run exactly once");
    assert!(
        busy_refusals(&server).await > before,
        "INCR was refused at least once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_refusal_is_waited_out_and_sent_again() {
    let (server, _sup, redis) = setup().await;
    let before = busy_refusals(&server).await;
    let script = busy_for(&server, 1500).await;
    let pipe = redis::pipe().incr("p", 1).incr("p", 1).clone();
    let replies: Result<(i64, i64), Error> = redis.pipeline(pipe).await;
    script.await.unwrap();
    assert_eq!(
        replies.expect("pipeline after the script"),
        (1, 2),
        "run once"
    );
    assert!(
        busy_refusals(&server).await >= before + 2,
        "both commands were refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_refusal_is_waited_out_and_sent_again() {
    let (server, _sup, redis) = setup().await;
    let script = busy_for(&server, 1500).await;
    let pipe = redis::pipe().atomic().incr("t", 1).incr("t", 1).clone();
    let replies: Result<(i64, i64), Error> = redis.pipeline(pipe).await;
    script.await.unwrap();
    assert_eq!(replies.expect("MULTI after the script"), (1, 2), "run once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_refusal_is_waited_out_and_sent_again() {
    let (server, _sup, redis) = setup().await;
    let before = busy_refusals(&server).await;
    let script = busy_for(&server, 1500).await;
    let pop = {
        let redis = redis.clone();
        tokio::spawn(async move {
            redis
                .blpop::<_, Option<(String, String)>>(&["jobs"], Duration::from_secs(5))
                .await
        })
    };
    script.await.unwrap();
    let mut admin = admin(&server).await;
    // The pop is back on the server, blocked on the list, before the element is pushed.
    held(&mut admin, BLOCKING, "blpop").await;
    let _: i64 = redis::cmd("RPUSH")
        .arg("jobs")
        .arg("one")
        .query_async(&mut admin)
        .await
        .unwrap();
    let popped = pop.await.unwrap().expect("BLPOP after the script");
    assert_eq!(popped, Some(("jobs".into(), "one".into())));
    assert!(
        busy_refusals(&server).await > before,
        "BLPOP was refused at least once"
    );
}

// ---- a lost connection ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_lost_in_flight() {
    let (server, _sup, redis) = setup().await;
    // Not idempotent: Ambiguous, and not sent again (it never ran: the pause held it).
    let r = redis.clone();
    let incr = lost(&server, SHARED, "incr", 1, async move { r.incr("n").await }).await;
    assert_ambiguous("INCR", &incr);
    assert_eq!(counter(&server, "n").await, None, "INCR was not sent again");

    // Idempotent: sent again once, on a new connection.
    let r = redis.clone();
    let set = lost(
        &server,
        SHARED,
        "set",
        1,
        async move { r.set("s", "v").await },
    )
    .await;
    set.expect("SET sent again after one loss");
    let value: Option<String> = redis.get("s").await.unwrap();
    assert_eq!(value.as_deref(), Some("v"));

    // Lost twice: sent again only once, so the second loss is the answer.
    let r = redis.clone();
    let set = lost(
        &server,
        SHARED,
        "set",
        2,
        async move { r.set("s2", "v").await },
    )
    .await;
    assert_ambiguous("SET lost twice", &set);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_safe_raw_command_runs_once_more_after_a_loss() {
    let (server, _sup, redis) = setup().await;
    // The caller vouches that INCR may run twice: it is sent again once, and runs once (the
    // held one never ran).
    let r = redis.clone();
    let incr = lost(&server, SHARED, "incr", 1, async move {
        r.cmd_idempotent::<i64>(redis::cmd("INCR").arg("c").clone())
            .await
    })
    .await;
    assert_eq!(incr.expect("sent again"), 1);
    assert_eq!(counter(&server, "c").await, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_lost_in_flight() {
    let (server, _sup, redis) = setup().await;
    let pipe = redis::pipe().incr("p", 1).incr("p", 1).clone();
    let (r, p) = (redis.clone(), pipe.clone());
    let run = lost(&server, SHARED, "incrby", 1, async move {
        r.pipeline::<(i64, i64)>(p).await
    })
    .await;
    assert_ambiguous("pipeline", &run);
    assert_eq!(counter(&server, "p").await, None, "not sent again");

    let (r, p) = (redis.clone(), pipe.clone());
    let run = lost(&server, SHARED, "incrby", 1, async move {
        r.pipeline_idempotent::<(i64, i64)>(p).await
    })
    .await;
    assert_eq!(run.expect("sent again"), (1, 2));

    let r = redis.clone();
    let run = lost(&server, SHARED, "incrby", 2, async move {
        r.pipeline_idempotent::<(i64, i64)>(pipe).await
    })
    .await;
    assert_ambiguous("pipeline lost twice", &run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_lost_in_flight() {
    let (server, _sup, redis) = setup().await;
    // BLPOP pops (not replay-safe): held by the write pause, its connection killed.
    let r = redis.clone();
    let pop = lost(&server, BLOCKING, "blpop", 1, async move {
        r.blpop::<_, Option<(String, String)>>(&["q"], Duration::from_secs(5))
            .await
    })
    .await;
    assert_ambiguous("BLPOP", &pop);

    // XREAD BLOCK only reads: blocked on the stream, its connection killed, sent again, and
    // answered with the entry added afterwards.
    let read = tokio::spawn({
        let redis = redis.clone();
        async move {
            redis
                .xread_block::<_, Option<redis::Value>>(
                    &[("events", "$")],
                    None,
                    Duration::from_secs(5),
                )
                .await
        }
    });
    let mut admin = admin(&server).await;
    let id = held(&mut admin, BLOCKING, "xread").await;
    client(&mut admin, &["KILL", "ID", &id.to_string()]).await;
    // Blocked again on a new connection before the entry is added.
    held(&mut admin, BLOCKING, "xread").await;
    let _: String = redis::cmd("XADD")
        .arg("events")
        .arg("*")
        .arg("f")
        .arg("v")
        .query_async(&mut admin)
        .await
        .unwrap();
    let entries = read.await.unwrap().expect("XREAD sent again");
    assert!(entries.is_some(), "the entry added after the loss");

    // Lost twice: the second loss is the answer (Timeout, as for a read-only command past
    // its one replay, or Ambiguous).
    let read = tokio::spawn({
        let redis = redis.clone();
        async move {
            redis
                .xread_block::<_, Option<redis::Value>>(
                    &[("events", "$")],
                    None,
                    Duration::from_secs(5),
                )
                .await
        }
    });
    for _ in 0..2 {
        let id = held(&mut admin, BLOCKING, "xread").await;
        client(&mut admin, &["KILL", "ID", &id.to_string()]).await;
    }
    let second = read.await.unwrap();
    assert!(
        matches!(
            second,
            Err(Error::Ambiguous { .. } | Error::Timeout { sent: true, .. })
        ),
        "XREAD lost twice is not sent a third time: {second:?}"
    );
}

// ---- the caller's own errors ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelines_error_names_its_failing_command() {
    let (_server, _sup, redis) = setup().await;
    redis.set("text", "x").await.unwrap();
    let pipe = redis::pipe().get("text").incr("text", 1).clone();
    match redis.pipeline::<(String, i64)>(pipe).await {
        Err(Error::Server { code, message }) => {
            assert_eq!(code, "ERR", "{message}");
            assert!(
                message.starts_with("command 2 of the pipeline: "),
                "{message}"
            );
        }
        other => panic!("a pipeline whose second command failed: {other:?}"),
    }
    let pipe = redis::pipe().lpush("text", "v").clone();
    match redis.pipeline::<(i64,)>(pipe).await {
        Err(Error::Server { code, message }) => {
            assert_eq!(code, "WRONGTYPE", "{message}");
            assert!(
                message.starts_with("command 1 of the pipeline: "),
                "{message}"
            );
        }
        other => panic!("a pipeline whose command failed: {other:?}"),
    }
}
