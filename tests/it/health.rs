//! The health actor against real servers: a frozen (SIGSTOP) server leaves Up within
//! `probe_interval × K + probe_timeout`, the HTTP routes tell the truth while it is frozen, and
//! the connection is replaced after SIGCONT; slow probes mean Degraded, not Down.

use std::time::Duration;

use redis_supervisor::Availability;
use tokio::time::Instant;

use crate::support::helpers::*;

/// Probes every 200 ms, 150 ms each, 3 failures: a frozen server is detected within 750 ms.
fn fast_detection(b: redis_supervisor::ConfigBuilder) -> redis_supervisor::ConfigBuilder {
    b.health_interval(Duration::from_millis(200))
        .health_timeout(Duration::from_millis(150))
        .health_failures(3)
        .connect_timeout(Duration::from_millis(300))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_server_is_detected_and_replaced() {
    let srv = server().await;
    let sup = supervisor_with(&srv, fast_detection).await;
    let bound = sup.config().detection_bound();
    assert_eq!(bound, Duration::from_millis(750));
    let (addr, _server) = serve(&sup).await;
    let r = sup.handle();
    r.set("k", "v").await.unwrap();
    assert_eq!(http_get(addr, "/health").await.unwrap().0, 200);
    assert_eq!(http_get(addr, "/health/ready").await.unwrap().0, 200);

    let mut events = sup.subscribe();
    srv.pause().unwrap();
    let frozen_at = Instant::now();
    let seen = events_until(&mut events, |s| matches!(s, Availability::Down { .. })).await;
    let detected = frozen_at.elapsed();
    // Within the bound, plus a margin for a loaded 2-core machine.
    assert!(
        detected <= bound + Duration::from_millis(1500),
        "took {detected:?} to leave Up (bound {bound:?}): {seen:?}"
    );
    match &seen.last().unwrap().state {
        Availability::Down { error, .. } => {
            assert!(error.contains("health probes failed"), "{error}")
        }
        other => panic!("{other:?}"),
    }

    // While frozen: not healthy, not ready, but alive.
    let (status, body) = http_get(addr, "/health").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(http_get(addr, "/health/ready").await.unwrap().0, 503);
    assert_eq!(http_get(addr, "/health/live").await.unwrap().0, 200);
    let (status, body) = http_get(addr, "/health/redis").await.unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("health probes failed"), "{body}");

    srv.resume().unwrap();
    events_until(&mut events, |s| matches!(s, Availability::Up { .. })).await;
    assert!(sup.restarts() >= 1);
    let v: Option<String> = r.get("k").await.unwrap();
    assert_eq!(v.as_deref(), Some("v"), "same server, data kept");
    let (status, body) = http_get(addr, "/health/redis").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "up");
    assert!(
        json["last_error"]
            .as_str()
            .unwrap()
            .contains("consecutive health probes failed"),
        "the report says why it was down: {json}"
    );
    assert!(json["restarts"].as_u64().unwrap() >= 1);
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_probes_degrade_then_recover_without_replacing() {
    let srv = server_with(&["--enable-debug-command", "yes"]).await;
    let sup = supervisor_with(&srv, |b| {
        b.health_interval(Duration::from_millis(100))
            .health_timeout(Duration::from_millis(100))
            .health_slow(Duration::from_millis(50))
            .health_failures(10)
    })
    .await;
    let (addr, _server) = serve(&sup).await;
    let mut events = sup.subscribe();
    let mut admin = admin(&srv).await;
    // The server stalls for 80 ms: a probe in flight takes longer than 50 ms but gets its reply.
    let stall = async {
        for _ in 0..5 {
            let _: () = redis::cmd("DEBUG")
                .arg("SLEEP")
                .arg(0.08)
                .query_async(&mut admin)
                .await
                .unwrap();
        }
    };
    let degraded =
        async { events_until(&mut events, |s| matches!(s, Availability::Degraded { .. })).await };
    let (_, seen) = tokio::join!(stall, degraded);
    let Availability::Degraded { reason } = &seen.last().unwrap().state else {
        unreachable!()
    };
    assert!(
        reason.contains("PING") || reason.contains("probe"),
        "{reason}"
    );
    // Degraded still serves commands.
    assert_eq!(http_get(addr, "/health/ready").await.unwrap().0, 200);
    let seen = events_until(&mut events, |s| matches!(s, Availability::Up { .. })).await;
    assert!(
        seen.iter()
            .all(|e| !matches!(e.state, Availability::Down { .. })),
        "a slow server is degraded, not down: {seen:?}"
    );
    assert_eq!(sup.restarts(), 0);
    sup.shutdown().await;
}

/// The connections of this server named like the supervisor's (`CLIENT LIST`), from a raw
/// connection of its own.
async fn supervisor_connections(srv: &redis_supervisor::testing::RedisServer) -> usize {
    let mut conn = admin(srv).await;
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    list.lines()
        .filter(|l| l.contains("name=redis-supervisor:"))
        .count()
}

/// The supervisor's connections on the server once they number `want`, or as many as are left
/// after `SOON` (the server sees a closed socket a little after the client closes it, and
/// sends no event for it: it is polled).
async fn connections_settle(srv: &redis_supervisor::testing::RedisServer, want: usize) -> usize {
    let start = Instant::now();
    loop {
        let open = supervisor_connections(srv).await;
        if open == want || start.elapsed() >= SOON {
            return open;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A command takes a clone of the connection and leaves it for the next one on its thread; a
/// replaced connection must not live on in those spare clones. Here 64 commands at once fill
/// them, the server freezes until the supervisor replaces the connection, and after it resumes
/// only the new connection is left on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_connection_is_closed_though_commands_kept_clones_of_it() {
    let srv = server().await;
    let sup = supervisor_with(&srv, fast_detection).await;
    let r = sup.handle();
    let burst = || {
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let r = r.clone();
                tokio::spawn(async move {
                    for _ in 0..20 {
                        r.set(format!("k{i}"), i).await.unwrap();
                    }
                })
            })
            .collect();
        async move {
            for t in tasks {
                t.await.unwrap();
            }
        }
    };
    burst().await;
    assert_eq!(supervisor_connections(&srv).await, 1);

    let mut events = sup.subscribe();
    srv.pause().unwrap();
    events_until(&mut events, |s| matches!(s, Availability::Down { .. })).await;
    srv.resume().unwrap();
    events_until(&mut events, |s| matches!(s, Availability::Up { .. })).await;
    assert!(sup.restarts() >= 1);
    burst().await;

    // The old socket closes as soon as nothing holds the old connection.
    assert_eq!(
        connections_settle(&srv, 1).await,
        1,
        "the replaced connection is still open on the server"
    );
    // Shut down while a handle (and the spares it filled) is still alive: nothing stays open.
    sup.shutdown().await;
    assert_eq!(connections_settle(&srv, 0).await, 0, "open after shutdown");
    drop(r);
}
