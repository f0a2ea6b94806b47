//! A soak: 100 kill -9 / restart cycles under load, with the invariants checked every cycle.
//! Ignored by default (about two minutes): `./scripts/test.sh --test it soak:: -- --ignored --nocapture`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis_supervisor::{Availability, Error};
use tokio::time::Instant;

use crate::support::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: about two minutes; run explicitly"]
async fn hundred_kill_restart_cycles() {
    let deadline = Duration::from_millis(500);
    let mut srv = server_with(&["--appendonly", "yes", "--appendfsync", "always"]).await;
    let sup = supervisor_with(&srv, |b| {
        b.command_timeout(deadline)
            .health_interval(Duration::from_millis(200))
            .health_timeout(Duration::from_millis(150))
    })
    .await;
    let r = sup.handle();
    let bound = sup.config().backoff().ceiling() + Duration::from_secs(2);
    let stop = Arc::new(AtomicBool::new(false));
    let incr_ok = Arc::new(AtomicU64::new(0));
    let incr_amb = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let (r, stop, ok, amb) = (r.clone(), stop.clone(), incr_ok.clone(), incr_amb.clone());
            tokio::spawn(async move {
                let mut answers = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let res = if i % 2 == 0 {
                        r.incr("counter").await.map(drop)
                    } else {
                        r.get::<_, Option<String>>("counter").await.map(drop)
                    };
                    assert!(
                        start.elapsed() <= deadline + Duration::from_millis(750),
                        "{res:?}"
                    );
                    answers += 1;
                    match res {
                        Ok(()) if i % 2 == 0 => drop(ok.fetch_add(1, Ordering::Relaxed)),
                        Ok(()) => {}
                        Err(Error::Ambiguous { .. }) => drop(amb.fetch_add(1, Ordering::Relaxed)),
                        Err(e) if e.is_unavailable() || e.is_ambiguous() => {}
                        Err(ref e) if e.server_code() == Some("LOADING") => {}
                        Err(e) => panic!("{e:?}"),
                    }
                    tokio::task::yield_now().await;
                }
                answers
            })
        })
        .collect();

    let mut worst = Duration::ZERO;
    for cycle in 0..100 {
        let mut events = sup.subscribe();
        srv.kill().await.unwrap();
        events_until(&mut events, |s| matches!(s, Availability::Down { .. })).await;
        srv.restart().await.unwrap();
        let start = Instant::now();
        while r.ping().await.is_err() {
            assert!(
                start.elapsed() < bound,
                "cycle {cycle}: no recovery within {bound:?}"
            );
        }
        worst = worst.max(start.elapsed());
        // Exactly-once, every cycle: the persisted counter is within [ok, ok + ambiguous].
        let c = counter(&srv).await;
        let (ok, amb) = (
            incr_ok.load(Ordering::SeqCst),
            incr_amb.load(Ordering::SeqCst),
        );
        // In-flight INCRs may land after the snapshot of `ok`: allow those 16 tasks.
        assert!(
            ok <= c + 16 && c <= ok + amb + 16,
            "cycle {cycle}: counter {c}, ok {ok}, ambiguous {amb}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut answers = 0;
    for t in tasks {
        answers += t.await.expect("no panic");
    }
    let c = counter(&srv).await;
    let (ok, amb) = (
        incr_ok.load(Ordering::SeqCst),
        incr_amb.load(Ordering::SeqCst),
    );
    assert!(
        ok <= c && c <= ok + amb,
        "final: counter {c}, ok {ok}, ambiguous {amb}"
    );
    eprintln!(
        "soak: 100 cycles, {answers} answers, INCR ok {ok}, ambiguous {amb}, counter {c}, restarts {}, worst recovery after restart {worst:?}",
        sup.restarts()
    );
    sup.shutdown().await;
}

/// The persisted INCR counter, read over an admin connection.
async fn counter(srv: &redis_supervisor::testing::RedisServer) -> u64 {
    let mut admin = admin(srv).await;
    let c: Option<u64> = redis::cmd("GET")
        .arg("counter")
        .query_async(&mut admin)
        .await
        .unwrap();
    c.unwrap_or(0)
}
