//! Pub/sub on real `redis-server` processes: messages and patterns, reference-counted channels,
//! subscriptions restored after a kill -9 and restart (with `Resubscribed` before any later
//! message), a reader that never reads (`Lagged` with the exact count, nobody else slowed), a
//! hung subscriber connection found by its own probes, keyspace notifications, deadlines while
//! Redis is down, and shutdown ending every stream.

use std::sync::Arc;
use std::time::Duration;

use redis_supervisor::pubsub::{Message, PubSubEvent, Subscription};
use redis_supervisor::{Error, Supervisor};
use tokio::time::Instant;

use crate::support::helpers::*;
use crate::support::readiness_helpers::sample;

/// The next event, or a panic naming `what` after `SOON`.
async fn next(sub: &mut Subscription, what: &str) -> PubSubEvent {
    tokio::time::timeout(SOON, sub.recv())
        .await
        .unwrap_or_else(|_| panic!("no event for {what} within {SOON:?}"))
        .unwrap_or_else(|| panic!("stream of {what} ended"))
}

async fn next_message(sub: &mut Subscription, what: &str) -> Message {
    match next(sub, what).await {
        PubSubEvent::Message(m) => m,
        other => panic!("{what}: expected a message, got {other:?}"),
    }
}

async fn numsub(server: &redis_supervisor::testing::RedisServer, channel: &str) -> i64 {
    let mut admin = admin(server).await;
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut admin)
        .await
        .unwrap();
    n
}

/// `cmdstat_<name>` calls in INFO commandstats.
fn calls(stats: &str, name: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Polls `check` until it holds, or panics with `what` after `SOON`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < SOON, "{what} not within {SOON:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn channels_and_patterns_receive_what_is_published() {
    let srv = server().await;
    let sup = supervisor(&srv).await;
    let redis = sup.handle();
    let mut sub = sup.pubsub().subscribe(&["orders", "users"]).await.unwrap();
    let mut psub = sup.pubsub().psubscribe(&["user:*"]).await.unwrap();
    assert_eq!(sub.names(), ["orders", "users"]);
    assert!(psub.is_pattern());

    assert_eq!(redis.publish("orders", "o1").await.unwrap(), 1);
    assert_eq!(redis.publish("users", b"u1".as_slice()).await.unwrap(), 1);
    assert_eq!(redis.publish("user:7", "joined").await.unwrap(), 1);
    assert_eq!(redis.publish("nobody", "x").await.unwrap(), 0);

    let m = next_message(&mut sub, "orders").await;
    assert_eq!(
        (m.channel.as_str(), m.payload_str()),
        ("orders", Some("o1"))
    );
    assert_eq!(m.pattern, None);
    let m = next_message(&mut sub, "users").await;
    assert_eq!(
        (m.channel.as_str(), m.payload.as_slice()),
        ("users", b"u1".as_slice())
    );
    let m = next_message(&mut psub, "user:*").await;
    assert_eq!(m.channel, "user:7");
    assert_eq!(m.pattern.as_deref(), Some("user:*"));
    assert_eq!(m.payload_str(), Some("joined"));
    assert!(sub.try_recv().is_none(), "nothing else arrived");
    let (code, body) = serve_get(&sup, "/health/redis").await;
    assert_eq!(code, 200);
    assert!(
        body.contains(r#""pubsub":{"up":true,"subscriptions":2}"#),
        "{body}"
    );
    assert!(
        body.contains(r#""blocking":{"connections":0,"in_use":0,"limit":16}"#),
        "{body}"
    );

    // Empty lists are refused before anything is sent.
    let empty: [&str; 0] = [];
    assert!(matches!(
        sup.pubsub().subscribe(&empty).await,
        Err(Error::InvalidArgument(_))
    ));
    sup.shutdown().await;
}

/// Two subscriptions to one channel share one server subscription: one SUBSCRIBE; dropping one
/// keeps the other receiving; the last one gone sends UNSUBSCRIBE.
#[tokio::test]
async fn channels_are_reference_counted() {
    let srv = server().await;
    let sup = supervisor(&srv).await;
    let redis = sup.handle();
    let mut a = sup.pubsub().subscribe(&["shared"]).await.unwrap();
    let b = sup.pubsub().subscribe(&["shared"]).await.unwrap();
    let stats = command_stats(&srv).await;
    assert_eq!(calls(&stats, "subscribe"), 1, "{stats}");
    assert_eq!(numsub(&srv, "shared").await, 1);

    // Both get each message.
    assert_eq!(redis.publish("shared", "m1").await.unwrap(), 1);
    assert_eq!(next_message(&mut a, "a").await.payload_str(), Some("m1"));
    drop(b);
    assert_eq!(redis.publish("shared", "m2").await.unwrap(), 1);
    assert_eq!(
        next_message(&mut a, "a after b dropped")
            .await
            .payload_str(),
        Some("m2")
    );
    assert_eq!(numsub(&srv, "shared").await, 1, "still subscribed for a");

    a.unsubscribe().await.unwrap();
    assert_eq!(
        numsub(&srv, "shared").await,
        0,
        "unsubscribe waits for the server"
    );

    // A dropped last subscription unsubscribes in the background.
    let c = sup.pubsub().subscribe(&["dropped"]).await.unwrap();
    assert_eq!(numsub(&srv, "dropped").await, 1);
    drop(c);
    eventually("UNSUBSCRIBE after drop", || async {
        numsub(&srv, "dropped").await == 0
    })
    .await;
    sup.shutdown().await;
}

/// kill -9 and restart with four live subscriptions: what was published before the kill all
/// arrived; each subscription then reads `Resubscribed` (before any later message) and receives
/// what is published after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_restored_after_kill_and_restart() {
    let mut srv = server().await;
    let sup = supervisor(&srv).await;
    let redis = sup.handle();
    let pubsub = sup.pubsub();
    let mut subs = [
        pubsub.subscribe(&["a"]).await.unwrap(),
        pubsub.subscribe(&["a", "b"]).await.unwrap(),
        pubsub.subscribe(&["b"]).await.unwrap(),
        pubsub.psubscribe(&["p:*"]).await.unwrap(),
    ];
    for i in 0..50 {
        redis.publish("a", format!("a{i}")).await.unwrap();
        redis.publish("b", format!("b{i}")).await.unwrap();
        redis.publish("p:1", format!("p{i}")).await.unwrap();
    }
    let expected = [50, 100, 50, 50];
    for (sub, n) in subs.iter_mut().zip(expected) {
        for _ in 0..n {
            next_message(sub, "before the kill").await;
        }
        assert!(sub.try_recv().is_none());
    }

    srv.kill().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    srv.restart().await.unwrap();
    sup.wait_until_up(SOON).await.unwrap();

    for (i, sub) in subs.iter_mut().enumerate() {
        match next(sub, "the restoration").await {
            PubSubEvent::Resubscribed { downtime } => {
                assert!(
                    downtime >= Duration::from_millis(150),
                    "sub {i}: {downtime:?}"
                );
                assert!(downtime < SOON, "sub {i}: {downtime:?}");
            }
            other => panic!("sub {i}: expected Resubscribed first, got {other:?}"),
        }
    }
    // Every subscription is live on the new connection.
    assert_eq!(numsub(&srv, "a").await, 1);
    redis.publish("a", "after").await.unwrap();
    redis.publish("b", "after").await.unwrap();
    redis.publish("p:2", "after").await.unwrap();
    let expected = [1, 2, 1, 1];
    for (i, (sub, n)) in subs.iter_mut().zip(expected).enumerate() {
        for _ in 0..n {
            let m = next_message(sub, "after the restart").await;
            assert_eq!(m.payload_str(), Some("after"), "sub {i}");
        }
    }
    sup.shutdown().await;
}

/// A subscriber that never reads while 100 000 messages are published: the others get every
/// one, it keeps its buffer and reads one `Lagged` with exactly the rest; the drops are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_lags_alone() {
    const TOTAL: u64 = 100_000;
    const SLOW_BUFFER: usize = 1_000;
    let srv = server().await;
    let recorder = redis_supervisor::metrics::prometheus_builder().build_recorder();
    let prometheus = recorder.handle();
    let sup = Supervisor::start_with_recorder(
        config(&srv, |b| {
            b.name("lag").command_timeout(Duration::from_secs(5))
        }),
        Arc::new(recorder),
    )
    .await
    .unwrap();
    sup.wait_until_up(SOON).await.unwrap();
    let redis = sup.handle();
    let fast_pubsub = sup.pubsub().with_buffer(TOTAL as usize);
    let mut slow = sup
        .pubsub()
        .with_buffer(SLOW_BUFFER)
        .subscribe(&["firehose"])
        .await
        .unwrap();
    let readers: Vec<_> = futures_like_join(2, |_| {
        let pubsub = fast_pubsub.clone();
        async move { pubsub.subscribe(&["firehose"]).await.unwrap() }
    })
    .await
    .into_iter()
    .map(|mut sub| {
        tokio::spawn(async move {
            let mut n = 0u64;
            while n < TOTAL {
                match sub.recv().await {
                    Some(PubSubEvent::Message(m)) => {
                        assert_eq!(m.payload_str(), Some(n.to_string().as_str()), "in order");
                        n += 1;
                    }
                    other => panic!("a fast reader got {other:?} after {n}"),
                }
            }
            n
        })
    })
    .collect();
    // One publisher keeps the order; pipelines of 500 keep it quick.
    for chunk in 0..(TOTAL / 500) {
        let mut pipe = redis::pipe();
        for i in chunk * 500..(chunk + 1) * 500 {
            pipe.cmd("PUBLISH")
                .arg("firehose")
                .arg(i.to_string())
                .ignore();
        }
        redis.pipeline::<()>(pipe).await.unwrap();
    }
    for r in readers {
        assert_eq!(tokio::time::timeout(SOON, r).await.unwrap().unwrap(), TOTAL);
    }
    let mut messages = 0u64;
    let mut dropped = 0u64;
    while let Some(event) = slow.try_recv() {
        match event {
            PubSubEvent::Message(m) => {
                assert_eq!(m.payload_str(), Some(messages.to_string().as_str()));
                messages += 1;
            }
            PubSubEvent::Lagged { dropped: d } => dropped += d,
            other => panic!("slow reader got {other:?}"),
        }
    }
    assert_eq!(messages, SLOW_BUFFER as u64, "its buffer, and no more");
    assert_eq!(dropped, TOTAL - SLOW_BUFFER as u64);
    let lagged = sample(
        &prometheus.render(),
        "redis_client_pubsub_lagged_total",
        &[("client", "lag")],
    );
    assert_eq!(lagged as u64, TOTAL - SLOW_BUFFER as u64);
    sup.shutdown().await;
}

/// Runs `n` futures made by `f` concurrently, in order.
async fn futures_like_join<T, Fut: std::future::Future<Output = T> + Send + 'static>(
    n: usize,
    f: impl Fn(usize) -> Fut,
) -> Vec<T>
where
    T: Send + 'static,
{
    let handles: Vec<_> = (0..n).map(|i| tokio::spawn(f(i))).collect();
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// A hung subscriber connection (SIGSTOP) is found by its own probes within the command
/// connection's bound, replaced once the server answers again, and the subscription restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_subscriber_connection_is_replaced() {
    let srv = server().await;
    let recorder = redis_supervisor::metrics::prometheus_builder().build_recorder();
    let prometheus = recorder.handle();
    let sup = Supervisor::start_with_recorder(
        config(&srv, |b| {
            b.name("hung")
                .health_interval(Duration::from_millis(100))
                .health_timeout(Duration::from_millis(50))
                .health_failures(3)
        }),
        Arc::new(recorder),
    )
    .await
    .unwrap();
    sup.wait_until_up(SOON).await.unwrap();
    let mut sub = sup.pubsub().subscribe(&["h"]).await.unwrap();
    let up = || {
        sample(
            &prometheus.render(),
            "redis_client_pubsub_up",
            &[("client", "hung")],
        )
    };
    assert_eq!(up(), 1.0);
    srv.pause().unwrap();
    let paused = Instant::now();
    // Bound: 100 ms × 3 + 50 ms; generous slack for a loaded machine.
    eventually("subscriber connection found hung", || async { up() == 0.0 }).await;
    let found = paused.elapsed();
    srv.resume().unwrap();
    assert!(found < Duration::from_secs(3), "found after {found:?}");
    match next(&mut sub, "the restoration").await {
        PubSubEvent::Resubscribed { .. } => {}
        other => panic!("expected Resubscribed, got {other:?}"),
    }
    sup.handle().publish("h", "back").await.unwrap();
    assert_eq!(
        next_message(&mut sub, "after resume").await.payload_str(),
        Some("back")
    );
    sup.shutdown().await;
}

#[tokio::test]
async fn keyspace_events_need_the_server_setting_and_name_the_key() {
    let srv = server_with(&["--notify-keyspace-events", "KA"]).await;
    let sup = supervisor_with(&srv, |b| b.key_prefix("app:")).await;
    let mut events = sup.pubsub().keyspace_events("user:*").await.unwrap();
    sup.handle().set("user:1", "x").await.unwrap();
    sup.handle().set("other", "x").await.unwrap();
    sup.handle().del(["user:1"]).await.unwrap();
    let m = next_message(&mut events, "set").await;
    assert_eq!(m.keyspace_key(), Some("app:user:1"));
    assert_eq!(m.payload_str(), Some("set"));
    let m = next_message(&mut events, "del").await;
    assert_eq!(m.payload_str(), Some("del"));
    sup.shutdown().await;

    let off = server().await;
    let sup = supervisor(&off).await;
    let err = sup.pubsub().keyspace_events("user:*").await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("notify-keyspace-events")),
        "{err}"
    );
    sup.shutdown().await;
}

/// With Redis down, `subscribe` answers `Unavailable` by its deadline (at once under
/// fail-fast); once Redis is back it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_while_down_answers_by_its_deadline() {
    let mut srv = server().await;
    let sup = supervisor(&srv).await;
    srv.kill().await.unwrap();
    let pubsub = sup.pubsub().with_timeout(Duration::from_millis(300));
    let start = Instant::now();
    let err = pubsub.subscribe(&["later"]).await.unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(err.to_string().contains("pub/sub"), "{err}");
    srv.restart().await.unwrap();
    sup.wait_until_up(SOON).await.unwrap();
    let mut sub = sup
        .pubsub()
        .with_timeout(SOON)
        .subscribe(&["later"])
        .await
        .unwrap();
    sup.handle().publish("later", "now").await.unwrap();
    assert_eq!(
        next_message(&mut sub, "after restart").await.payload_str(),
        Some("now")
    );
    sup.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_every_stream_after_what_was_buffered() {
    let srv = server().await;
    let sup = supervisor(&srv).await;
    let mut sub = sup.pubsub().subscribe(&["end"]).await.unwrap();
    let mut witness = sup.pubsub().subscribe(&["end"]).await.unwrap();
    sup.handle().publish("end", "last").await.unwrap();
    // Delivered to both in one push callback: once the witness has it, so has `sub`.
    next_message(&mut witness, "witness").await;
    sup.shutdown().await;
    assert_eq!(
        next_message(&mut sub, "buffered").await.payload_str(),
        Some("last")
    );
    assert!(
        tokio::time::timeout(SOON, sub.recv())
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        sup.pubsub().subscribe(&["x"]).await,
        Err(Error::ShuttingDown)
    ));
}

/// A subscription is a `Stream` too.
#[tokio::test]
async fn a_subscription_is_a_stream() {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    let srv = server().await;
    let sup = supervisor(&srv).await;
    let mut sub = sup.pubsub().subscribe(&["s"]).await.unwrap();
    sup.handle().publish("s", "x").await.unwrap();
    let event = tokio::time::timeout(
        SOON,
        std::future::poll_fn(|cx: &mut Context<'_>| -> Poll<Option<PubSubEvent>> {
            futures_core::Stream::poll_next(Pin::new(&mut sub), cx)
        }),
    )
    .await
    .unwrap();
    assert!(matches!(event, Some(PubSubEvent::Message(m)) if m.payload == b"x"));
    sup.shutdown().await;
}
