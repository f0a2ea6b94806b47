//! Graceful shutdown: under load it returns, in-flight commands get one answer, later commands
//! get ShuttingDown, waiting commands are released at once, and no task is left behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis_supervisor::{Availability, Error};
use tokio::time::Instant;

use crate::support::clients::clients;
use crate::support::helpers::*;

/// Polls the runtime's live task count down to `baseline` (with a deadline).
async fn wait_for_tasks(baseline: usize) {
    let metrics = tokio::runtime::Handle::current().metrics();
    let deadline = Instant::now() + SOON;
    loop {
        let alive = metrics.num_alive_tasks();
        if alive <= baseline {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{alive} tasks alive after shutdown, expected {baseline}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_leaves_nothing_behind() {
    let srv = server().await;
    let baseline = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let sup = supervisor(&srv).await;
    let r = sup.handle();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let (r, stop) = (r.clone(), stop.clone());
            tokio::spawn(async move {
                let mut shut = false;
                while !stop.load(Ordering::Relaxed) {
                    match r.incr(format!("n{}", i % 4)).await {
                        Ok(_) => {}
                        Err(Error::ShuttingDown) => {
                            shut = true;
                            break;
                        }
                        Err(e) => panic!("unexpected error during shutdown: {e:?}"),
                    }
                }
                shut
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await; // let load build up
    let mut events = sup.subscribe();
    tokio::time::timeout(SOON, sup.shutdown())
        .await
        .expect("shutdown returns");
    assert_eq!(sup.availability(), Availability::Stopped);
    events_until(&mut events, |s| *s == Availability::Stopped).await;
    for t in tasks {
        assert!(
            t.await.expect("no panic"),
            "every loop ends with ShuttingDown"
        );
    }
    stop.store(true, Ordering::Relaxed);
    // Later commands, through old handles and new ones.
    assert!(matches!(r.ping().await, Err(Error::ShuttingDown)));
    assert!(matches!(
        sup.handle().set("k", "v").await,
        Err(Error::ShuttingDown)
    ));
    // Idempotent.
    sup.shutdown().await;
    // The connection was closed politely.
    let stats = command_stats(&srv).await;
    assert!(stats.contains("cmdstat_quit:calls=1"), "{stats}");
    drop((r, sup));
    wait_for_tasks(baseline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_commands_waiting_for_a_connection() {
    let mut srv = server().await;
    let sup = supervisor_with(&srv, |b| b.command_timeout(Duration::from_secs(30))).await;
    let r = sup.handle();
    let _events = kill_until_down(&mut srv, &sup).await;
    let waiting = spawn_gets(&r, 10);
    wait_offline_waiting(&sup, 10).await;
    let start = Instant::now();
    sup.shutdown().await;
    for w in waiting {
        assert!(matches!(w.await.unwrap(), Err(Error::ShuttingDown)));
    }
    // Released at once, not at their 30 s deadline.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(sup.offline_waiting(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_commands_finish() {
    let srv = server().await;
    let sup = supervisor_with(&srv, |b| b.name("in-flight")).await;
    let r = sup.handle().with_timeout(Duration::from_secs(5));
    let mut admin = admin(&srv).await;
    // Writes paused for 500 ms: two SETs are in flight when shutdown starts (the second sits in
    // the server's query buffer behind the first), and both still get their real answer.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(500)
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .unwrap();
    let slow: Vec<_> = (0..2)
        .map(|i| {
            let r = r.clone();
            tokio::spawn(async move { r.set(format!("k{i}"), i).await })
        })
        .collect();
    let deadline = Instant::now() + SOON;
    loop {
        let listed = clients(&mut admin).await;
        let queued = listed
            .iter()
            .filter(|c| c.field("name") == "redis-supervisor:in-flight")
            .any(|c| c.field("qbuf") != "0");
        if queued {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the SETs never reached the server: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sup.shutdown().await;
    for s in slow {
        s.await.unwrap().unwrap();
    }
}
