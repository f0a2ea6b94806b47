//! Blocking commands on their dedicated connections, against real `redis-server` processes:
//! values and timeouts, the key prefix, a pool that is full, raw blocking commands routed by
//! name, `WAIT` with a real replica, a shared connection that stays quick and healthy while 16
//! `BLPOP`s block, a kill -9 during a `BLPOP`, and `shutdown()` unblocking them.

use std::collections::HashMap;
use std::time::Duration;

use redis_supervisor::Error;
use tokio::time::Instant;

use crate::support::helpers::*;

#[tokio::test]
async fn blpop_returns_the_value_pushed_or_none_after_its_timeout() {
    let srv = server().await;
    let sup = supervisor_with(&srv, |b| b.key_prefix("app:")).await;
    let redis = sup.handle();

    let start = Instant::now();
    let none: Option<(String, String)> = redis
        .blpop(&["jobs"], Duration::from_millis(700))
        .await
        .unwrap();
    let took = start.elapsed();
    assert_eq!(none, None);
    assert!(
        took >= Duration::from_millis(650),
        "returned early: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");

    // Pushed once the BLPOP below is blocked on the server.
    let pusher = redis.clone();
    let mut watcher = admin(&srv).await;
    let push = tokio::spawn(async move {
        wait_blocked_clients(&mut watcher, 1).await;
        pusher
            .cmd::<i64>(redis::cmd("RPUSH").arg("app:jobs").arg("j1").clone())
            .await
    });
    let got: Option<(String, String)> = redis
        .blpop(&["other", "jobs"], Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        got,
        Some(("jobs".to_string(), "j1".to_string())),
        "key without the prefix"
    );
    push.await.unwrap().unwrap();

    redis
        .cmd::<i64>(redis::cmd("RPUSH").arg("app:q").arg("a").arg("b").clone())
        .await
        .unwrap();
    let tail: Option<(String, String)> = redis.brpop(&["q"], Duration::from_secs(1)).await.unwrap();
    assert_eq!(tail, Some(("q".into(), "b".into())));

    redis
        .cmd::<i64>(
            redis::cmd("ZADD")
                .arg("app:z")
                .arg(2)
                .arg("two")
                .arg(1)
                .arg("one")
                .clone(),
        )
        .await
        .unwrap();
    let min: Option<(String, String, f64)> = redis
        .bzpopmin(&["z"], Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(min, Some(("z".into(), "one".into(), 1.0)));

    // Bad block times are refused before anything is sent.
    for bad in [Duration::ZERO, Duration::MAX] {
        let err = redis
            .blpop::<_, Option<(String, String)>>(&["jobs"], bad)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }
    let empty: [&str; 0] = [];
    assert!(matches!(
        redis
            .blpop::<_, Option<(String, String)>>(&empty, Duration::from_secs(1))
            .await,
        Err(Error::InvalidArgument(_))
    ));
    sup.shutdown().await;
}

#[tokio::test]
async fn xread_block_waits_for_new_entries() {
    let srv = server().await;
    let sup = supervisor_with(&srv, |b| b.key_prefix("app:")).await;
    let redis = sup.handle();
    // Added once the XREAD below is blocked on the server (`$`: only entries added after it).
    let writer = redis.clone();
    let mut watcher = admin(&srv).await;
    let add = tokio::spawn(async move {
        wait_blocked_clients(&mut watcher, 1).await;
        writer
            .cmd::<String>(
                redis::cmd("XADD")
                    .arg("app:events")
                    .arg("*")
                    .arg("k")
                    .arg("v")
                    .clone(),
            )
            .await
    });
    type Entries = HashMap<String, Vec<(String, HashMap<String, String>)>>;
    let got: Option<Entries> = redis
        .xread_block(&[("events", "$")], Some(10), Duration::from_secs(5))
        .await
        .unwrap();
    add.await.unwrap().unwrap();
    let got = got.expect("an entry");
    let entries = &got["events"];
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].1["k"], "v");
    let none: Option<Entries> = redis
        .xread_block(&[("events", "$")], None, Duration::from_millis(200))
        .await
        .unwrap();
    assert!(none.is_none());
    sup.shutdown().await;
}

/// Raw blocking commands through `cmd` are found by name and run on the pool; one that would
/// block forever is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_blocking_commands_are_routed_to_the_pool() {
    let srv = server().await;
    let sup = supervisor(&srv).await;
    let redis = sup.handle();
    let blocker = redis.clone();
    // Longer than the 1 s command timeout: its own block time sets the deadline.
    let blpop = tokio::spawn(async move {
        let start = Instant::now();
        let v: Option<(String, String)> = blocker
            .cmd(redis::cmd("BLPOP").arg("raw").arg("1.5").clone())
            .await
            .unwrap();
        (v, start.elapsed())
    });
    wait_blocked_clients(&mut admin(&srv).await, 1).await;
    // The shared connection is not stalled meanwhile.
    let start = Instant::now();
    redis.ping().await.unwrap();
    assert!(start.elapsed() < Duration::from_millis(500));
    let (v, took) = blpop.await.unwrap();
    assert_eq!(v, None);
    assert!(took >= Duration::from_millis(1400), "{took:?}");

    let err = redis
        .cmd::<Option<(String, String)>>(redis::cmd("BLPOP").arg("raw").arg(0).clone())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("forever")),
        "{err}"
    );
    // Not blocking: XREAD without BLOCK runs on the shared connection as before.
    let v: Option<redis::Value> = redis
        .cmd(
            redis::cmd("XREAD")
                .arg("STREAMS")
                .arg("nostream")
                .arg("0")
                .clone(),
        )
        .await
        .unwrap();
    assert!(v.is_none());
    sup.shutdown().await;
}

/// Beyond the pool size, a blocking command waits within its deadline for a free connection,
/// then gets `Overloaded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_answers_overloaded_by_the_deadline() {
    let srv = server().await;
    let sup = supervisor_with(&srv, |b| b.blocking_connections(2)).await;
    let redis = sup.handle();
    let holders: Vec<_> = (0..2)
        .map(|i| {
            let r = redis.clone();
            tokio::spawn(async move {
                r.blpop::<_, Option<(String, String)>>(
                    &[format!("hold{i}")],
                    Duration::from_secs(3),
                )
                .await
            })
        })
        .collect();
    wait_blocked_clients(&mut admin(&srv).await, 2).await;
    let start = Instant::now();
    let err = redis
        .with_timeout(Duration::from_millis(200))
        .blpop::<_, Option<(String, String)>>(&["third"], Duration::from_millis(300))
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, Error::Overloaded { limit: 2 }), "{err}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    for h in holders {
        assert_eq!(h.await.unwrap().unwrap(), None);
    }
    // Freed: the next one runs.
    let v: Option<(String, String)> = redis
        .blpop(&["third"], Duration::from_millis(100))
        .await
        .unwrap();
    assert!(v.is_none());
    sup.shutdown().await;
}

/// 16 BLPOPs of 2 s while 64 tasks run GETs on the shared connection: every GET answers well
/// within its deadline, nothing is restarted, and each BLPOP answers after about 2 s (or with
/// the value pushed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_commands_block_nothing_else() {
    let srv = server().await;
    let sup = supervisor(&srv).await;
    let redis = sup.handle();
    redis.set("k", "v").await.unwrap();
    let mut events = sup.subscribe();
    let blpops: Vec<_> = (0..16)
        .map(|i| {
            let r = redis.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                let v = r
                    .blpop::<_, Option<(String, String)>>(
                        &[format!("q{i}")],
                        Duration::from_secs(2),
                    )
                    .await;
                (v, start.elapsed())
            })
        })
        .collect();
    let gets: Vec<_> = (0..64)
        .map(|_| {
            let r = redis.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                let mut worst = Duration::ZERO;
                let mut n = 0u32;
                while start.elapsed() < Duration::from_millis(2500) {
                    let t = Instant::now();
                    let v: Option<String> = r.get("k").await.expect("GET answered");
                    assert_eq!(v.as_deref(), Some("v"));
                    worst = worst.max(t.elapsed());
                    n += 1;
                }
                (n, worst)
            })
        })
        .collect();
    // One of them gets a value, once all 16 are blocked.
    wait_blocked_clients(&mut admin(&srv).await, 16).await;
    redis
        .cmd::<i64>(redis::cmd("RPUSH").arg("q3").arg("job").clone())
        .await
        .unwrap();
    for (i, b) in blpops.into_iter().enumerate() {
        let (v, took) = b.await.unwrap();
        let v = v.unwrap();
        if i == 3 {
            assert_eq!(v, Some(("q3".into(), "job".into())));
        } else {
            assert_eq!(v, None, "blpop {i}");
            assert!(
                took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
                "blpop {i} took {took:?}"
            );
        }
    }
    let mut total = 0;
    for g in gets {
        let (n, worst) = g.await.unwrap();
        total += n;
        assert!(worst < Duration::from_millis(900), "a GET took {worst:?}");
    }
    assert!(total > 64, "GETs ran: {total}");
    assert_eq!(sup.restarts(), 0);
    while let Ok(Ok(event)) = tokio::time::timeout(Duration::from_millis(10), events.recv()).await {
        assert!(
            matches!(event.state, redis_supervisor::Availability::Up { .. }),
            "no availability change: {event:?}"
        );
    }
    sup.shutdown().await;
}

/// `shutdown()` with 16 BLPOPs blocked: it returns within the shutdown timeout and every one is
/// answered `ShuttingDown` (unblocked: it popped nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_unblocks_every_blocked_command() {
    let srv = server().await;
    let sup = supervisor(&srv).await;
    let redis = sup.handle();
    let blpops: Vec<_> = (0..16)
        .map(|i| {
            let r = redis.clone();
            tokio::spawn(async move {
                r.blpop::<_, Option<(String, String)>>(&[format!("s{i}")], Duration::from_secs(60))
                    .await
            })
        })
        .collect();
    let mut admin = admin(&srv).await;
    let start = Instant::now();
    loop {
        let info: String = redis::cmd("INFO")
            .arg("clients")
            .query_async(&mut admin)
            .await
            .unwrap();
        if info.contains("blocked_clients:16") {
            break;
        }
        assert!(start.elapsed() < SOON, "16 BLPOPs never blocked: {info}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let start = Instant::now();
    sup.shutdown().await;
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    for b in blpops {
        let answer = tokio::time::timeout(Duration::from_secs(1), b)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(answer, Err(Error::ShuttingDown)), "{answer:?}");
    }
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(info.contains("blocked_clients:0"), "{info}");
}

/// kill -9 during a BLPOP: it may have popped, so it is `Ambiguous` (never replayed); after the
/// restart the next one runs on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_during_blpop_is_ambiguous() {
    let mut srv = server().await;
    let sup = supervisor(&srv).await;
    let redis = sup.handle();
    let r = redis.clone();
    let blpop = tokio::spawn(async move {
        r.blpop::<_, Option<(String, String)>>(&["lost"], Duration::from_secs(5))
            .await
    });
    wait_blocked_clients(&mut admin(&srv).await, 1).await;
    srv.kill().await.unwrap();
    let answer = tokio::time::timeout(SOON, blpop).await.unwrap().unwrap();
    assert!(matches!(answer, Err(Error::Ambiguous { .. })), "{answer:?}");
    srv.restart().await.unwrap();
    sup.wait_until_up(SOON).await.unwrap();
    redis
        .cmd::<i64>(redis::cmd("RPUSH").arg("lost").arg("x").clone())
        .await
        .unwrap();
    let v: Option<(String, String)> = redis
        .blpop(&["lost"], Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(v, Some(("lost".into(), "x".into())));
    sup.shutdown().await;
}

/// `wait` waits for the writes made through the shared connection, although it runs on
/// a dedicated one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_counts_a_real_replica() {
    let primary = server().await;
    let port = primary.port().to_string();
    let replica = server_with(&["--replicaof", "127.0.0.1", &port]).await;
    let sup = supervisor(&primary).await;
    let redis = sup.handle();
    let start = Instant::now();
    loop {
        let mut admin = admin(&replica).await;
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut admin)
            .await
            .unwrap();
        if info.contains("master_link_status:up") {
            break;
        }
        assert!(start.elapsed() < SOON, "replica never synced: {info}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis.set("replicated", "yes").await.unwrap();
    let acked = redis.wait(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(acked, 1);
    let mut on_replica = admin(&replica).await;
    let v: Option<String> = redis::cmd("GET")
        .arg("replicated")
        .query_async(&mut on_replica)
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("yes"), "acknowledged means replicated");
    // Asking for more replicas than exist waits the timeout and says how many did.
    let start = Instant::now();
    assert_eq!(redis.wait(2, Duration::from_millis(300)).await.unwrap(), 1);
    assert!(start.elapsed() >= Duration::from_millis(250));
    // Raw WAIT gets the same treatment.
    let raw: i64 = redis
        .cmd(redis::cmd("WAIT").arg(1).arg(2000).clone())
        .await
        .unwrap();
    assert_eq!(raw, 1);
    sup.shutdown().await;
}

/// A `BLPOP` that waited for the connection through an outage blocks only for what its
/// deadline has left: it answers (nothing popped) before the deadline instead of blocking its
/// full time and coming back `Ambiguous` — with an element it may have popped lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pop_that_waited_blocks_only_for_what_is_left() {
    let mut srv = server().await;
    let sup = supervisor_with(&srv, |b| b.command_timeout(Duration::from_millis(500))).await;
    let r = sup.handle();
    kill_until_down(&mut srv, &sup).await;
    let start = Instant::now();
    let pop = {
        let r = r.clone();
        tokio::spawn(async move {
            r.blpop::<_, Option<(String, String)>>(&["waited"], Duration::from_secs(2))
                .await
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    srv.restart().await.expect("restart");
    let answer = pop.await.expect("task");
    let took = start.elapsed();
    assert!(matches!(answer, Ok(None)), "{answer:?} after {took:?}");
    // Its deadline: the block time (2 s) plus the handle's timeout (0.5 s).
    assert!(
        took < Duration::from_millis(2500),
        "answered after {took:?}"
    );
    sup.shutdown().await;
}
