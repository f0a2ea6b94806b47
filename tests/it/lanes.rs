//! Lanes (`Config::lanes`): several supervised connections behind one `RedisHandle`, on a real
//! `redis-server`. Commands spread over the lanes; one lane's connection killed under 64 tasks
//! of INCR leaves the other answering throughout (nobody gets `Unavailable`, availability stays
//! serving, `Degraded` naming "1 of 2 lanes down") and the killed lane comes back; all lanes
//! down is `Down`, exactly as with one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis_supervisor::{Availability, Error, Supervisor};
use tokio::time::Instant;

use crate::support::clients::clients;
use crate::support::helpers::*;

/// `/health/redis` as JSON.
async fn report(sup: &Supervisor) -> serde_json::Value {
    let (_, body) = serve_get(sup, "/health/redis").await;
    serde_json::from_str(&body).expect("JSON")
}

/// The lanes' states, in order.
async fn lane_states(sup: &Supervisor) -> Vec<String> {
    report(sup).await["lanes"]
        .as_array()
        .expect("lanes")
        .iter()
        .map(|l| l["state"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn until_lanes(sup: &Supervisor, want: &[&str]) {
    let start = Instant::now();
    loop {
        let states = lane_states(sup).await;
        if states == want {
            return;
        }
        assert!(start.elapsed() < SOON, "lanes {states:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The server-side ids of our lanes' connections, by lane, once both are listed (a lane
/// whose connection was just killed is listed again only once its replacement has named
/// itself).
async fn lane_client_ids(srv: &redis_supervisor::testing::RedisServer, name: &str) -> Vec<u64> {
    let mut admin = admin(srv).await;
    let start = Instant::now();
    loop {
        let listed = clients(&mut admin).await;
        let ids: Vec<Option<u64>> = (0..2)
            .map(|i| {
                let wanted = format!("redis-supervisor:{name}:lane{i}");
                listed
                    .iter()
                    .find(|c| c.field("name") == wanted)
                    .map(|c| c.id())
            })
            .collect();
        if ids.iter().all(Option::is_some) {
            return ids.into_iter().flatten().collect();
        }
        assert!(
            start.elapsed() < SOON,
            "both lanes' connections listed: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_spread_over_the_lanes() {
    let srv = server().await;
    let sup = supervisor_with(&srv, |b| b.name("spread").lanes(2)).await;
    until_lanes(&sup, &["up", "up"]).await;
    let ids = lane_client_ids(&srv, "spread").await;
    assert_ne!(ids[0], ids[1], "two connections");
    let r = sup.handle();
    r.set("k", "v").await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let r = r.clone();
            tokio::spawn(async move {
                for _ in 0..500 {
                    let v: Option<String> = r.get("k").await.unwrap();
                    assert_eq!(v.as_deref(), Some("v"));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let lanes = report(&sup).await["lanes"].clone();
    for (i, lane) in lanes.as_array().unwrap().iter().enumerate() {
        let served = lane["served"].as_u64().unwrap();
        assert!(served > 100, "lane {i} served {served}: {lanes}");
        assert_eq!(lane["outstanding"].as_u64(), Some(0), "{lanes}");
        assert_eq!(
            lane["address"].as_str(),
            Some(format!("127.0.0.1:{}", srv.port()).as_str())
        );
    }
    // A transaction stays on one lane (MULTI/EXEC on one connection or it would fail).
    let (a, b): (i64, i64) = r
        .pipeline(redis::pipe().atomic().incr("t", 1).incr("t", 1).clone())
        .await
        .unwrap();
    assert_eq!((a, b), (1, 2));
    sup.shutdown().await;
}

/// CLIENT KILL of one lane's connection under 64 tasks of INCR: nobody gets `Unavailable`,
/// availability stays serving (`Degraded` "1 of 2 lanes down" at most), the lane comes back,
/// and `ok ≤ counter ≤ ok + ambiguous`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lane_killed_the_other_keeps_answering() {
    let srv = server().await;
    let sup = supervisor_with(&srv, |b| b.name("killed").lanes(2)).await;
    until_lanes(&sup, &["up", "up"]).await;
    let mut events = sup.subscribe();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let ambiguous = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let r = sup.handle();
            let (stop, ok, ambiguous) = (stop.clone(), ok.clone(), ambiguous.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match r.incr("counter").await {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if e.is_ambiguous() => {
                            ambiguous.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("INCR answered {e}"),
                    }
                }
            })
        })
        .collect();
    // The kill comes under load: once the tasks are well under way.
    poll_until("the INCR load runs", SOON, async || {
        ok.load(Ordering::Relaxed) >= 640
    })
    .await;
    let ids = lane_client_ids(&srv, "killed").await;
    let mut admin = admin(&srv).await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(ids[0])
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    until_lanes(&sup, &["up", "up"]).await;
    // Until the kill is seen, lane 0 still reads "up": wait for its new connection.
    let start = Instant::now();
    let new_ids = loop {
        let new_ids = lane_client_ids(&srv, "killed").await;
        if new_ids[0] != ids[0] {
            break new_ids;
        }
        assert!(start.elapsed() < SOON, "lane 0 never reconnected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    until_lanes(&sup, &["up", "up"]).await;
    assert_eq!(new_ids[1], ids[1], "lane 1 untouched");
    // The load goes on until lane 0's new connection has served some of it.
    poll_until("lane 0 serves again", SOON, async || {
        report(&sup).await["lanes"][0]["served"].as_u64() >= Some(100)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("no INCR task saw Unavailable");
    }
    let mut seen = Vec::new();
    while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(10), events.recv()).await {
        seen.push(e);
    }
    for e in &seen {
        assert!(e.state.is_serving(), "availability left serving: {seen:?}");
    }
    assert!(
        seen.iter().any(|e| matches!(&e.state, Availability::Degraded { reason } if reason.contains("1 of 2 lanes down"))),
        "{seen:?}"
    );
    let n: u64 = sup
        .handle()
        .get::<_, Option<u64>>("counter")
        .await
        .unwrap()
        .unwrap_or(0);
    let (ok, ambiguous) = (
        ok.load(Ordering::Relaxed),
        ambiguous.load(Ordering::Relaxed),
    );
    assert!(
        ok <= n && n <= ok + ambiguous,
        "ok {ok}, ambiguous {ambiguous}, counter {n}"
    );
    sup.shutdown().await;
}

/// Every lane down is `Down`, as with one lane; back up, every lane serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_lanes_down_is_down() {
    let mut srv = server().await;
    let sup = supervisor_with(&srv, |b| b.name("all").lanes(3)).await;
    until_lanes(&sup, &["up", "up", "up"]).await;
    let mut events = kill_until_down(&mut srv, &sup).await;
    let err = sup
        .handle()
        .with_timeout(Duration::from_millis(100))
        .get::<_, Option<String>>("k")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    srv.restart().await.unwrap();
    events_until(&mut events, |s| matches!(s, Availability::Up { .. })).await;
    until_lanes(&sup, &["up", "up", "up"]).await;
    sup.handle().set("k", "v").await.unwrap();
    sup.shutdown().await;
}

/// Big replies share the bulk lane (the last): after its first big reply a command goes there,
/// and while that lane delivers one, small commands take the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_replies_go_to_the_bulk_lane() {
    let srv = server().await;
    let sup = supervisor_with(&srv, |b| {
        b.name("bulk")
            .lanes(2)
            .command_timeout(Duration::from_secs(10))
    })
    .await;
    until_lanes(&sup, &["up", "up"]).await;
    let r = sup.handle();
    r.set("big", vec![b'x'; 1 << 20]).await.unwrap();
    r.set("small", "v").await.unwrap();
    let served = |report: &serde_json::Value| -> Vec<u64> {
        report["lanes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["served"].as_u64().unwrap())
            .collect()
    };
    let before = served(&report(&sup).await);
    for _ in 0..20 {
        let v: Vec<u8> = r.get("big").await.unwrap();
        assert_eq!(v.len(), 1 << 20);
    }
    let after = served(&report(&sup).await);
    assert!(
        after[1] - before[1] >= 19,
        "big GETs on the bulk lane: {before:?} -> {after:?}"
    );
    // Small GETs beside a loop of big ones: most go to the other lane.
    let big = {
        let r = r.clone();
        tokio::spawn(async move {
            for _ in 0..50 {
                let _: Vec<u8> = r.get("big").await.unwrap();
            }
        })
    };
    let small: Vec<_> = (0..8)
        .map(|_| {
            let r = r.clone();
            tokio::spawn(async move {
                for _ in 0..200 {
                    let v: Option<String> = r.get("small").await.unwrap();
                    assert_eq!(v.as_deref(), Some("v"));
                }
            })
        })
        .collect();
    for t in small {
        t.await.unwrap();
    }
    big.await.unwrap();
    let end = served(&report(&sup).await);
    let (lane0, lane1) = (end[0] - after[0], (end[1] - after[1]).saturating_sub(50));
    assert!(
        lane0 > lane1,
        "small GETs: lane 0 {lane0}, bulk lane {lane1}"
    );
    sup.shutdown().await;
}
