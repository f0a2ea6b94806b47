//! Presence against real redis-servers: exact counts under 1000 concurrent heartbeats, members
//! and idle scopes expiring by themselves, `online` of 100 000 members, the server gone, and
//! builder errors.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use metrics_exporter_prometheus::PrometheusHandle;
use redis_supervisor::metrics::prometheus_builder;
use redis_supervisor::presence::{OnUnavailable, Presence};
use redis_supervisor::{Error, Supervisor};
use tokio::time::Instant;

use crate::support::helpers::*;

fn presence(sup: &Supervisor, timeout: Duration) -> Presence {
    Presence::builder(sup.handle())
        .timeout(timeout)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counts_are_exact_under_a_thousand_concurrent_heartbeats() {
    let srv = server().await;
    let sup = supervisor(&srv).await;
    let p = presence(&sup, Duration::from_secs(30));
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let p = p.clone();
            // Two heartbeats per member: still counted once.
            tokio::spawn(async move {
                p.heartbeat("room:1", &format!("user:{}", i % 500)).await?;
                p.heartbeat("room:1", &format!("user:{}", i % 500)).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(p.count("room:1").await.unwrap(), 500);
    let online = p.online("room:1").await.unwrap();
    assert_eq!(online.len(), 500);
    assert!(online.windows(2).all(|w| w[0] < w[1]), "sorted, each once");
    let seen = p.last_seen("room:1", "user:7").await.unwrap().unwrap();
    let now = SystemTime::now();
    assert!(seen <= now + Duration::from_secs(1) && seen + Duration::from_secs(10) > now);
    assert!(p.leave("room:1", "user:7").await.unwrap());
    assert!(!p.leave("room:1", "user:7").await.unwrap());
    assert_eq!(p.last_seen("room:1", "user:7").await.unwrap(), None);
    assert_eq!(p.count("room:1").await.unwrap(), 499);
    assert_eq!(p.count("room:empty").await.unwrap(), 0);
    assert!(p.online("room:empty").await.unwrap().is_empty());
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_and_idle_scopes_expire_without_any_call() {
    let srv = server().await;
    let sup = supervisor_with(&srv, |b| b.key_prefix("app:")).await;
    let r = sup.handle();
    let p = presence(&sup, Duration::from_millis(300));
    p.heartbeat("doc", "a").await.unwrap();
    p.heartbeat("doc", "b").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.heartbeat("doc", "b").await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    // a is stale (350 ms), b is not (150 ms): every read leaves a out.
    assert_eq!(p.online("doc").await.unwrap(), vec!["b".to_string()]);
    assert_eq!(p.last_seen("doc", "a").await.unwrap(), None);
    assert!(p.last_seen("doc", "b").await.unwrap().is_some());
    assert_eq!(p.count("doc").await.unwrap(), 1);
    let card: u64 = r
        .cmd(redis::cmd("ZCARD").arg("app:presence:doc").clone())
        .await
        .unwrap();
    assert_eq!(card, 1, "count pruned the stale member");
    // Nobody heartbeats: the key goes away by itself.
    let deadline = Instant::now() + Duration::from_secs(3);
    while r.exists(["presence:doc"]).await.unwrap() == 1 {
        assert!(Instant::now() < deadline, "the idle scope never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(p.online("doc").await.unwrap().is_empty());
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_of_a_hundred_thousand_members_is_paged() {
    let srv = server().await;
    let sup = supervisor(&srv).await;
    let r = sup.handle();
    let p = presence(&sup, Duration::from_secs(60));
    // Fill with fresh scores on the server's clock (now), 10 000 per ZADD.
    let (secs, micros): (u64, u64) = r.cmd(redis::cmd("TIME")).await.unwrap();
    let now_ms = secs * 1000 + micros / 1000;
    for chunk in 0..10 {
        let mut zadd = redis::cmd("ZADD");
        zadd.arg("presence:big");
        for i in 0..10_000 {
            zadd.arg(now_ms).arg(format!("m{:06}", chunk * 10_000 + i));
        }
        let _: u64 = r.cmd(zadd).await.unwrap();
    }
    // Ten stale ones.
    let mut zadd = redis::cmd("ZADD");
    zadd.arg("presence:big");
    for i in 0..10 {
        zadd.arg(now_ms - 120_000).arg(format!("stale{i}"));
    }
    let _: u64 = r.cmd(zadd).await.unwrap();
    let big = p.clone();
    let online = big.online("big").await.unwrap();
    assert_eq!(online.len(), 100_000);
    assert_eq!(online[0], "m000000");
    assert_eq!(online[99_999], "m099999");
    assert_eq!(p.count("big").await.unwrap(), 100_000);
    sup.shutdown().await;
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_gone_heartbeats_skip_and_reads_are_unavailable_within_the_deadline() {
    let mut srv = server().await;
    let deadline = Duration::from_millis(300);
    let recorder = prometheus_builder().build_recorder();
    let prometheus: PrometheusHandle = recorder.handle();
    let cfg = config(&srv, |b| b.name("prgone").command_timeout(deadline));
    let sup = Supervisor::start_with_recorder(cfg, Arc::new(recorder))
        .await
        .unwrap();
    sup.wait_until_up(SOON).await.unwrap();
    let skip = presence(&sup, Duration::from_secs(30));
    let fail = Presence::builder(sup.handle())
        .on_unavailable(OnUnavailable::Fail)
        .build()
        .unwrap();
    skip.heartbeat("r", "m").await.unwrap();
    let _events = kill_until_down(&mut srv, &sup).await;
    let slack = deadline + Duration::from_millis(500);
    let t = Instant::now();
    skip.heartbeat("r", "m").await.unwrap();
    assert!(!skip.leave("r", "m").await.unwrap());
    assert!(t.elapsed() < slack * 2, "{:?}", t.elapsed());
    for e in [
        fail.heartbeat("r", "m").await.unwrap_err(),
        fail.leave("r", "m").await.map(|_| ()).unwrap_err(),
        skip.online("r").await.map(|_| ()).unwrap_err(),
        skip.count("r").await.map(|_| ()).unwrap_err(),
        skip.last_seen("r", "m").await.map(|_| ()).unwrap_err(),
    ] {
        assert!(e.is_unavailable(), "{e}");
    }
    let text = prometheus.render();
    let op = |o: &str| {
        sample(
            &text,
            &format!("redis_client_degraded_ops_total{{client=\"prgone\",op=\"{o}\"}}"),
        )
    };
    assert_eq!((op("presence_heartbeat"), op("presence_leave")), (1.0, 1.0));

    // Settings and arguments.
    let e = Presence::builder(sup.handle())
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(
        matches!(&e, Error::Config(c) if c.setting == "presence.timeout"),
        "{e}"
    );
    let e = Presence::builder(sup.handle())
        .namespace("a\nb")
        .build()
        .unwrap_err();
    assert!(
        matches!(&e, Error::Config(c) if c.setting == "presence.namespace"),
        "{e}"
    );
    let max = Presence::builder(sup.handle())
        .timeout(Duration::MAX)
        .build()
        .unwrap();
    assert_eq!(max.timeout(), redis_supervisor::cache::MAX_TTL);
    assert!(matches!(
        skip.heartbeat("r", "").await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        skip.online(&"s".repeat(70_000)).await,
        Err(Error::InvalidArgument(_))
    ));
    sup.shutdown().await;
}
