//! Hardening of the core, against real servers: each test proves one class of defect fixed.
//!
//! - A server stall shorter than the probe detection bound replaces nothing, however many
//!   callers with tiny deadlines miss them (promise 10).
//! - `with_timeout(Duration::MAX)` works and `with_timeout(Duration::ZERO)` never sends.
//! - `DEL` in flight on a lost connection is `Ambiguous`, never replayed; `GET` is replayed.
//! - A slow-but-alive server is one `Degraded` event, not one per probe (promise 5).
//! - Once `shutdown()` has begun, availability never says `Up` again, even if the server comes
//!   back during the drain.
//! - Health probes are not callers' commands in the metrics.
//! - The initial `Connecting { attempt: 1 }` is never published as an event.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use redis_supervisor::testing::{Fault, FaultProxy, RedisServer};
use redis_supervisor::{Availability, Config, Error, Supervisor};
use tokio::time::Instant;

use crate::support::clients::stall;
use crate::support::helpers::*;
use crate::support::readiness_helpers::*;

/// Waits (up to `SOON`) until `srv` has answered `n` more `PING`s, counted from now: the health
/// probe's (nothing else here sends one). With `n` = 2 right after a stall, at least one probe
/// was sent after it and answered in time (the first may have waited out the stall).
async fn probes_answered(srv: &RedisServer, n: u64) {
    let before = command_calls(srv, "ping").await;
    poll_until(&format!("{n} probes answered"), SOON, async || {
        command_calls(srv, "ping").await >= before + n
    })
    .await;
}

/// Bytes that arrived on the established connections of loopback port `port` but were not read
/// yet by the side that accepted them (`rx_queue` in `/proc/net/tcp`): for a proxy in
/// [`Fault::Blackhole`], which stops reading, what it holds back from the server.
fn unread_bytes(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, queues) = (fields.get(1)?, fields.get(3)?, fields.get(4)?);
            let local_port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
            let unread = usize::from_str_radix(queues.split_once(':')?.1, 16).ok()?;
            // 01: ESTABLISHED.
            (local_port == port && *state == "01").then_some(unread)
        })
        .sum()
}

/// What the looping callers of the stall test saw.
#[derive(Debug, Default)]
struct Seen {
    ok: u64,
    timeouts: u64,
    ambiguous: u64,
    other: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_shorter_than_detection_bound_replaces_nothing() {
    let srv = server().await;
    // Default health settings; the INCRs' ordinary deadline (3 s) outlasts every stall.
    let sup = supervisor_with(&srv, |b| b.command_timeout(Duration::from_secs(3))).await;
    let bound = sup.config().detection_bound();
    assert_eq!(
        bound,
        Duration::from_millis(3500),
        "default detection bound"
    );
    let log = EventLog::start(&sup);
    let redis = sup.handle();
    redis.set("g", "v").await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let spawn = |tiny: bool, i: usize| {
        let (r, stop) = (redis.clone(), stop.clone());
        tokio::spawn(async move {
            let tiny_r = r.with_timeout(Duration::from_millis(20));
            let mut seen = Seen::default();
            while !stop.load(Ordering::Relaxed) {
                let res = if tiny {
                    tiny_r.get::<_, Option<String>>("g").await.map(drop)
                } else {
                    r.incr("counter").await.map(drop)
                };
                match res {
                    Ok(()) => seen.ok += 1,
                    Err(Error::Timeout { .. }) => seen.timeouts += 1,
                    Err(Error::Ambiguous { .. }) => seen.ambiguous += 1,
                    Err(e) => seen.other.push(format!("task {i}: {e:?}")),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            seen
        })
    };
    let tiny: Vec<_> = (0..32).map(|i| spawn(true, i)).collect();
    let incr: Vec<_> = (0..8).map(|i| spawn(false, i)).collect();

    // Stalls of 0.3 to 1.5 s, each shorter than the bound, with a probe answered in every gap
    // between them (and after the last).
    let mut admin = admin_unbounded(&srv).await;
    for ms in [300, 700, 1100, 1500] {
        probes_answered(&srv, 2).await;
        let started = Instant::now();
        stall(&mut admin, ms).await;
        assert!(started.elapsed() >= Duration::from_millis(ms));
    }
    probes_answered(&srv, 2).await;
    stop.store(true, Ordering::Relaxed);

    let mut tiny_seen = Seen::default();
    for t in tiny {
        let s = t.await.unwrap();
        tiny_seen.ok += s.ok;
        tiny_seen.timeouts += s.timeouts;
        tiny_seen.other.extend(s.other);
    }
    let mut incr_seen = Seen::default();
    for t in incr {
        let s = t.await.unwrap();
        incr_seen.ok += s.ok;
        incr_seen.timeouts += s.timeouts;
        incr_seen.ambiguous += s.ambiguous;
        incr_seen.other.extend(s.other);
    }
    let events = log.events();
    let counter: i64 = redis::cmd("GET")
        .arg("counter")
        .query_async(&mut admin)
        .await
        .unwrap();

    // The case was really exercised: tiny deadlines expired during the stalls.
    assert!(
        tiny_seen.timeouts >= 32,
        "the tiny-deadline GETs must have timed out: {tiny_seen:?}"
    );
    assert!(
        tiny_seen.other.is_empty(),
        "{} unexpected errors, e.g. {:?}",
        tiny_seen.other.len(),
        &tiny_seen.other[..tiny_seen.other.len().min(3)]
    );
    assert_eq!(
        sup.restarts(),
        0,
        "a stall shorter than {bound:?} replaced the connection; events {:?}",
        names(&events)
    );
    assert!(
        events.iter().all(|e| !matches!(
            e.state,
            Availability::Down { .. } | Availability::Connecting { .. }
        )),
        "no Down, no reconnect: {events:#?}"
    );
    assert_eq!(
        (
            incr_seen.ambiguous,
            incr_seen.timeouts,
            incr_seen.other.len()
        ),
        (0, 0, 0),
        "INCRs with ordinary deadlines all succeed; errors e.g. {:?}",
        &incr_seen.other[..incr_seen.other.len().min(3)]
    );
    assert!(incr_seen.ok > 0);
    assert_eq!(
        u64::try_from(counter).unwrap(),
        incr_seen.ok,
        "every INCR ran exactly once"
    );
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_timeout_max_and_zero() {
    let mut srv = server().await;
    let sup = supervisor(&srv).await;
    let redis = sup.handle();

    // No deadline: every typed command works.
    let forever = redis.with_timeout(Duration::MAX);
    forever.set("k", "v").await.unwrap();
    assert_eq!(
        forever
            .get::<_, Option<String>>("k")
            .await
            .unwrap()
            .as_deref(),
        Some("v")
    );
    assert_eq!(forever.incr("n").await.unwrap(), 1);
    assert!(forever.ping().await.is_ok());

    // A zero deadline answers at once and never sends.
    let zero = redis.with_timeout(Duration::ZERO);
    let started = Instant::now();
    for _ in 0..10 {
        match zero.incr("n").await {
            Err(Error::Timeout { sent: false, .. }) => {}
            other => panic!("a zero deadline must be Timeout {{ sent: false }}: {other:?}"),
        }
        match zero.get::<_, Option<String>>("k").await {
            Err(Error::Timeout { sent: false, .. }) => {}
            other => panic!("a zero deadline must be Timeout {{ sent: false }}: {other:?}"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered at once"
    );
    let stats = command_stats(&srv).await;
    assert!(
        stats.contains("cmdstat_incr:calls=1,"),
        "only the one INCR with a deadline reached the server:\n{stats}"
    );
    assert_eq!(redis.get::<_, Option<i64>>("n").await.unwrap(), Some(1));

    // No deadline while the server is down: it waits (no overflow, no panic) and is served
    // once the server is back.
    let mut events = kill_until_down(&mut srv, &sup).await;
    let waiting = tokio::spawn(async move { forever.get::<_, Option<String>>("k").await });
    wait_offline_waiting(&sup, 1).await;
    srv.restart().await.unwrap();
    events_until(&mut events, |s| matches!(s, Availability::Up { .. })).await;
    let got = tokio::time::timeout(SOON, waiting)
        .await
        .expect("answered once the server is back")
        .unwrap();
    assert_eq!(got.unwrap(), None, "the restarted server has no data");
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn del_in_flight_is_ambiguous_not_replayed() {
    let srv = server().await;
    let proxy = FaultProxy::start(([127, 0, 0, 1], srv.port()).into())
        .await
        .unwrap();
    let config = Config::builder()
        .url(proxy.url())
        .command_timeout(Duration::from_secs(8))
        .backoff_base(Duration::from_millis(20))
        .backoff_max(Duration::from_millis(200))
        // The probes must not notice the blackhole before the reset does.
        .health_interval(Duration::from_secs(10))
        .build()
        .unwrap();
    let sup = Supervisor::start(config).await.unwrap();
    sup.wait_until_up(SOON).await.unwrap();
    let redis = sup.handle();
    redis.set("doomed", "1").await.unwrap();
    redis.set("read", "r").await.unwrap();
    redis.set("n", "0").await.unwrap();

    // The link goes silent: the commands are handed over but get no reply.
    proxy.set_fault(Fault::Blackhole);
    let del = {
        let r = redis.clone();
        tokio::spawn(async move { r.del(["doomed"]).await })
    };
    let get = {
        let r = redis.clone();
        tokio::spawn(async move { r.get::<_, Option<String>>("read").await })
    };
    let incr = {
        let r = redis.clone();
        tokio::spawn(async move { r.incr("n").await })
    };
    // They are handed to the live connection at once (it is Up), which writes them into the
    // blackhole: wait until all three are there, unread by the proxy. Were one not handed over
    // yet, it would simply run on the next connection and the assertions below would fail, not
    // pass.
    let sent: usize = [("DEL", "doomed"), ("GET", "read"), ("INCR", "n")]
        .iter()
        .map(|(command, key)| redis::cmd(command).arg(*key).get_packed_command().len())
        .sum();
    poll_until(
        "the three commands are in the blackhole",
        SOON,
        async || unread_bytes(proxy.addr().port()) >= sent,
    )
    .await;
    // Then the connection dies with all three in flight, and the link heals.
    proxy.set_fault(Fault::Reset);
    poll_until("the proxied connections are reset", SOON, async || {
        proxy.active_connections() == 0
    })
    .await;
    proxy.set_fault(Fault::Pass);

    let del = tokio::time::timeout(SOON, del).await.unwrap().unwrap();
    let get = tokio::time::timeout(SOON, get).await.unwrap().unwrap();
    let incr = tokio::time::timeout(SOON, incr).await.unwrap().unwrap();
    assert!(
        matches!(del, Err(Error::Ambiguous { .. })),
        "a DEL in flight on a lost connection may have run: {del:?}"
    );
    assert!(
        matches!(incr, Err(Error::Ambiguous { .. })),
        "an INCR in flight may have run: {incr:?}"
    );
    assert_eq!(
        get.unwrap().as_deref(),
        Some("r"),
        "a GET in flight is replayed on the next connection"
    );
    // The blackholed DEL and INCR never reached the server, and neither was sent again.
    let mut admin = admin(&srv).await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg("doomed")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(exists, 1, "the DEL was not replayed");
    let n: i64 = redis::cmd("GET")
        .arg("n")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(n, 0, "the INCR was not replayed");
    assert!(sup.restarts() >= 1);
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_server_publishes_one_degraded_event() {
    let srv = server().await;
    let proxy = FaultProxy::start(([127, 0, 0, 1], srv.port()).into())
        .await
        .unwrap();
    let recorder = redis_supervisor::metrics::prometheus_builder().build_recorder();
    let prometheus = recorder.handle();
    let config = Config::builder()
        .url(proxy.url())
        .backoff_base(Duration::from_millis(20))
        .health_interval(Duration::from_millis(150))
        .health_timeout(Duration::from_millis(150))
        .health_slow(Duration::from_millis(30))
        .health_failures(5)
        .build()
        .unwrap();
    let sup = Supervisor::start_with_recorder(config, Arc::new(recorder))
        .await
        .unwrap();
    sup.wait_until_up(SOON).await.unwrap();
    // (The first Up may still reach a subscriber that came right after `wait_until_up`: the
    // watch turns before the event is sent. Such a leading Up is skipped below.)
    let log = EventLog::start(&sup);
    let news = || -> Vec<_> {
        log.events()
            .into_iter()
            .skip_while(|e| e.seq == 1 && matches!(e.state, Availability::Up { .. }))
            .collect()
    };

    // Every round trip now takes ≥ 50 ms: slower than 30 ms, well within 150 ms.
    proxy.set_fault(Fault::Latency(Duration::from_millis(25)));
    wait_state(&sup, SOON, "degraded", |a| {
        matches!(a, Availability::Degraded { .. })
    })
    .await;
    let slow_before = sample(
        &prometheus.render(),
        "redis_client_probes_total",
        &[("outcome", "slow")],
    );
    // Ten more probes of the same slowness.
    let probes = |outcome: &str| {
        sample(
            &prometheus.render(),
            "redis_client_probes_total",
            &[("outcome", outcome)],
        )
    };
    poll_until("ten more slow probes", SOON, async || {
        probes("slow") >= slow_before + 10.0
    })
    .await;
    let during = news();
    let slow_after = probes("slow");

    proxy.set_fault(Fault::Pass);
    wait_state(&sup, SOON, "up", |a| matches!(a, Availability::Up { .. })).await;
    // Ten more probes of a healthy server: no more news.
    let ok_before = probes("ok");
    poll_until("ten more healthy probes", SOON, async || {
        probes("ok") >= ok_before + 10.0
    })
    .await;
    let all = news();

    assert_eq!(
        names(&during),
        ["degraded"],
        "a slow server is one Degraded event, not one per probe: {during:#?}"
    );
    assert_eq!(
        names(&all),
        ["degraded", "up"],
        "recovery is one Up event: {all:#?}"
    );
    assert_eq!(sup.restarts(), 0);
    assert!(
        slow_after - slow_before >= 3.0,
        "the slowness lasted several probes (slow probes {slow_before} -> {slow_after})"
    );
    sup.shutdown().await;
}

/// One round of [`never_up_after_shutdown_begins`]: the server comes back `lag` after its
/// restart began, around the moment shutdown begins.
async fn shutdown_while_server_returns(srv: &mut RedisServer, lag: Duration) {
    let sup = Arc::new(
        supervisor_with(srv, |b| {
            b.backoff_base(Duration::from_millis(5))
                .backoff_max(Duration::from_millis(20))
                .connect_timeout(Duration::from_millis(300))
                .shutdown_timeout(Duration::from_secs(3))
        })
        .await,
    );
    let redis = sup.handle();
    let log = EventLog::start(&sup);
    kill_until_down(srv, &sup).await;
    // A command waiting offline with a long deadline, for the drain to wait on.
    let waiting = {
        let r = redis.with_timeout(Duration::from_secs(3));
        tokio::spawn(async move { r.get::<_, Option<String>>("k").await })
    };
    wait_offline_waiting(&sup, 1).await;

    // The server comes back (reconnect attempts run every ≤ 20 ms) while shutdown begins.
    let (began, ()) = tokio::join!(
        async {
            tokio::time::sleep(lag).await;
            let sup = sup.clone();
            tokio::spawn(async move { sup.shutdown().await });
            // Shutdown has begun once new commands are refused.
            let probe = redis.with_timeout(Duration::ZERO);
            let deadline = Instant::now() + SOON;
            while !matches!(
                probe.get::<_, Option<String>>("x").await,
                Err(Error::ShuttingDown)
            ) {
                assert!(Instant::now() < deadline, "shutdown never began");
                tokio::task::yield_now().await;
            }
            SystemTime::now()
        },
        async { srv.restart().await.unwrap() }
    );
    let got = tokio::time::timeout(SOON, waiting).await.unwrap().unwrap();
    let events = log
        .wait_for(SOON, |s| matches!(s, Availability::Stopped))
        .await;
    let after: Vec<_> = events.iter().filter(|e| e.at > began).collect();
    for e in &after {
        assert!(
            matches!(
                e.state,
                Availability::Down { .. } | Availability::GaveUp { .. } | Availability::Stopped
            ),
            "lag {lag:?}: after shutdown began the state said {}: {events:#?}",
            e.state.name()
        );
    }
    assert_eq!(sup.availability(), Availability::Stopped);
    assert!(
        matches!(events.last().map(|e| &e.state), Some(Availability::Stopped)),
        "lag {lag:?}: the last event is Stopped: {events:#?}"
    );
    // The GET waiting offline may only have been served by a connection that came up before
    // shutdown began.
    let first_down = events
        .iter()
        .position(|e| matches!(e.state, Availability::Down { .. }))
        .unwrap();
    let back_before = events[first_down..]
        .iter()
        .any(|e| e.at <= began && e.state.is_serving());
    assert!(
        got.is_err() || back_before,
        "lag {lag:?}: the GET waiting offline was served after shutdown began: {got:?} \
         {events:#?}"
    );
}

/// After `shutdown()` begins, no reconnect and no `Up` (nor `Degraded`, `NotReady`,
/// `Connecting`), even when the server comes back at that very moment. The fixed core ends
/// offline waits at once when shutdown begins (nothing can serve them any more), so the drain
/// is short and the race is between the server's return, a reconnect attempt in flight and the
/// stop: each round shifts the server's return against the start of shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_up_after_shutdown_begins() {
    let mut srv = server().await;
    for lag_ms in [0, 3, 6, 9, 12, 15, 20, 30] {
        shutdown_while_server_returns(&mut srv, Duration::from_millis(lag_ms)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_are_not_commands() {
    let srv = server().await;
    let recorder = redis_supervisor::metrics::prometheus_builder().build_recorder();
    let prometheus = recorder.handle();
    let sup = Supervisor::start_with_recorder(
        config(&srv, |b| {
            b.name("probes").health_interval(Duration::from_millis(100))
        }),
        Arc::new(recorder),
    )
    .await
    .unwrap();
    sup.wait_until_up(SOON).await.unwrap();
    let probes_ok = || {
        sample(
            &prometheus.render(),
            "redis_client_probes_total",
            &[("client", "probes"), ("outcome", "ok")],
        )
    };
    let caller_pings = || {
        sample(
            &prometheus.render(),
            "redis_client_commands_total",
            &[("client", "probes"), ("command", "ping"), ("outcome", "ok")],
        )
    };
    // Idle for a while: only probes run.
    poll_until("five probes answered", SOON, async || probes_ok() >= 5.0).await;
    assert_eq!(
        caller_pings(),
        0.0,
        "probes are not callers' commands:\n{}",
        prometheus.render()
    );
    assert_eq!(
        sample(
            &prometheus.render(),
            "redis_client_commands_total",
            &[("client", "probes")]
        ),
        0.0,
        "no caller has sent anything yet"
    );
    sup.handle().ping().await.unwrap();
    assert_eq!(caller_pings(), 1.0, "one caller PING counts once");
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_connecting_is_not_republished() {
    let srv = server().await;
    for round in 0..10 {
        let sup = Supervisor::start(config(&srv, |b| b)).await.unwrap();
        let mut events = sup.subscribe();
        // Every event up to Up (none at all when Up came before the subscription).
        let mut seen = Vec::new();
        let deadline = Instant::now() + SOON;
        loop {
            assert!(
                Instant::now() < deadline,
                "round {round}: never up: {seen:#?}"
            );
            match tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
                Ok(Ok(e)) => {
                    let up = matches!(e.state, Availability::Up { .. });
                    seen.push(e);
                    if up {
                        break;
                    }
                }
                Ok(Err(e)) => panic!("round {round}: {e}"),
                Err(_) if matches!(sup.availability(), Availability::Up { .. }) => break,
                Err(_) => {}
            }
        }
        assert!(
            seen.iter()
                .all(|e| e.state != Availability::Connecting { attempt: 1 }),
            "round {round}: the initial Connecting {{ attempt: 1 }} was published again: {seen:#?}"
        );
        sup.shutdown().await;
    }
}
