//! The cache against real redis-servers: JSON round trips under the key prefix and namespace,
//! TTLs, batches, single-flight `get_or_load` (one loader run for 100 callers, shared errors, a
//! dropped leader, the load timeout), corrupt data, the degradation policies with the server
//! gone, and `invalidate` over 100 000 keys in two namespaces.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis_supervisor::cache::{Cache, Degrade, LoadTimeout, MAX_TTL};
use redis_supervisor::metrics::prometheus_builder;
use redis_supervisor::{Error, KeyTtl, Supervisor};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::support::helpers::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

fn ada() -> User {
    User {
        id: 7,
        name: "Ada".into(),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("database said no ({0})")]
struct DbError(u32);

fn buggy_loader() -> Result<u8, DbError> {
    panic!("loader bug")
}

/// The value of the sample `series` (name plus its exact label set) in a rendered exposition.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

fn cache(sup: &Supervisor, ns: &str, degrade: Degrade) -> Cache {
    Cache::builder(sup.handle())
        .namespace(ns)
        .ttl(Duration::from_secs(60))
        .on_unavailable(degrade)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_round_trip_under_prefix_and_namespace() {
    let srv = server().await;
    let sup = supervisor_with(&srv, |b| b.key_prefix("app:")).await;
    let r = sup.handle();
    let c = cache(&sup, "api", Degrade::Fail);

    c.set("user:7", &ada()).await.unwrap();
    assert_eq!(c.get::<User>("user:7").await.unwrap(), Some(ada()));
    assert_eq!(c.get::<User>("user:8").await.unwrap(), None);
    // Stored as JSON under "<prefix><namespace>:<key>", with the default TTL.
    let raw: String = r
        .cmd(redis::cmd("GET").arg("app:api:user:7").clone())
        .await
        .unwrap();
    assert_eq!(raw, r#"{"id":7,"name":"Ada"}"#);
    assert_eq!(c.redis_key("user:7"), "app:api:user:7");
    match c.ttl("user:7").await.unwrap() {
        KeyTtl::Expires(d) => assert!(d <= Duration::from_secs(60) && d > Duration::from_secs(50)),
        other => panic!("expected the default TTL, got {other:?}"),
    }
    assert_eq!(c.ttl("user:8").await.unwrap(), KeyTtl::Missing);

    // Per-call TTL; a huge one saturates at MAX_TTL; a zero one is a typed error.
    c.set_with_ttl("short", "x", Duration::from_millis(200))
        .await
        .unwrap();
    c.set_with_ttl("long", "x", Duration::MAX).await.unwrap();
    match c.ttl("long").await.unwrap() {
        KeyTtl::Expires(d) => assert!(d <= MAX_TTL && d > MAX_TTL - Duration::from_secs(60)),
        other => panic!("{other:?}"),
    }
    let e = c.set_with_ttl("z", "x", Duration::ZERO).await.unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(m) if m.contains("ttl") && m.contains("\"z\"")),
        "{e}"
    );
    let deadline = Instant::now() + SOON;
    while c.get::<String>("short").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Empty and odd keys are keys like any other.
    c.set("", &1u8).await.unwrap();
    c.set("a*b?[c]", &2u8).await.unwrap();
    assert_eq!(c.get::<u8>("").await.unwrap(), Some(1));
    assert_eq!(c.get::<u8>("a*b?[c]").await.unwrap(), Some(2));

    // Batches: one MGET, one pipeline.
    c.set_many(&[("m1", 1u32), ("m2", 2)]).await.unwrap();
    let got: Vec<Option<u32>> = c.get_many(&["m1", "nope", "m2"]).await.unwrap();
    assert_eq!(got, [Some(1), None, Some(2)]);
    assert!(c.get_many::<&str, u32>(&[]).await.unwrap().is_empty());
    c.set_many::<&str, u32>(&[]).await.unwrap();
    assert!(matches!(c.ttl("m2").await.unwrap(), KeyTtl::Expires(_)));

    assert!(c.delete("user:7").await.unwrap());
    assert!(!c.delete("user:7").await.unwrap());
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_rejects_bad_settings_by_name() {
    let srv = server().await;
    let sup = supervisor(&srv).await;
    let err = |b: redis_supervisor::cache::CacheBuilder| match b.build() {
        Err(Error::Config(c)) => c,
        other => panic!("expected a config error, got {other:?}"),
    };
    let b = || Cache::builder(sup.handle());
    assert_eq!(err(b().namespace("")).setting, "cache.namespace");
    assert_eq!(
        err(b().namespace("x".repeat(300))).setting,
        "cache.namespace"
    );
    assert_eq!(err(b().namespace("a\nb")).setting, "cache.namespace");
    let ttl = err(b().ttl(Duration::ZERO));
    assert_eq!(
        (ttl.setting.as_str(), ttl.value.as_str()),
        ("cache.ttl", "0ns")
    );
    assert_eq!(
        err(b().ttl(Duration::from_micros(999))).setting,
        "cache.ttl"
    );
    assert_eq!(
        err(b().load_timeout(Duration::ZERO)).setting,
        "cache.load_timeout"
    );
    // Glob characters and colons are fine in a namespace; Duration::MAX is a TTL.
    b().namespace("a*:[b]").ttl(Duration::MAX).build().unwrap();
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_callers_of_a_cold_key_run_the_loader_once() {
    let srv = server().await;
    let sup = supervisor(&srv).await;
    let c = cache(&sup, "sf", Degrade::Fail);
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (c, calls) = (c.clone(), calls.clone());
            tokio::spawn(async move {
                c.get_or_load("user:7", move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok::<_, DbError>(ada())
                })
                .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), ada());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the loader ran once");
    // Written back: the next call is a hit and never calls its loader.
    let v: User = c
        .get_or_load("user:7", || async { Err::<User, _>(DbError(0)) })
        .await
        .unwrap();
    assert_eq!(v, ada());
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_loader_fails_every_waiter_and_the_next_call_retries() {
    let srv = server().await;
    let sup = supervisor(&srv).await;
    let c = cache(&sup, "sf", Degrade::Fail);
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (c, calls) = (c.clone(), calls.clone());
            tokio::spawn(async move {
                c.get_or_load("k", move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Err::<User, _>(DbError(42))
                })
                .await
            })
        })
        .collect();
    for t in tasks {
        match t.await.unwrap() {
            Err(Error::Loader { key, source }) => {
                assert_eq!(key, "sf:k");
                let db = source
                    .downcast_ref::<DbError>()
                    .expect("the loader's own error");
                assert_eq!(db.0, 42);
            }
            other => panic!("expected the loader's error, got {other:?}"),
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Nothing failed is remembered: the next call runs its loader.
    let v: User = c
        .get_or_load("k", || async { Ok::<_, DbError>(ada()) })
        .await
        .unwrap();
    assert_eq!(v, ada());
    assert_eq!(c.get::<User>("k").await.unwrap(), Some(ada()));
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_leader_does_not_strand_the_others() {
    let srv = server().await;
    let recorder = prometheus_builder().build_recorder();
    let prometheus = recorder.handle();
    let sup =
        Supervisor::start_with_recorder(config(&srv, |b| b.name("leader")), Arc::new(recorder))
            .await
            .unwrap();
    sup.wait_until_up(SOON).await.unwrap();
    let c = cache(&sup, "sf", Degrade::Fail);
    let calls = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(Notify::new());
    let loader = {
        let (calls, started) = (calls.clone(), started.clone());
        move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            started.notify_one();
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, DbError>(ada())
        }
    };
    let leader = {
        let (c, loader) = (c.clone(), loader.clone());
        tokio::spawn(async move { c.get_or_load("k", loader).await })
    };
    started.notified().await;
    let followers: Vec<_> = (0..20)
        .map(|_| {
            let (c, loader) = (c.clone(), loader.clone());
            tokio::spawn(async move { c.get_or_load("k", loader).await })
        })
        .collect();
    // Abort the leader only once every follower has joined its flight.
    let deadline = Instant::now() + SOON;
    while sample(
        &prometheus.render(),
        "redis_client_cache_coalesced_total{client=\"leader\"}",
    ) < 20.0
    {
        assert!(
            Instant::now() < deadline,
            "the followers never joined the flight"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    for f in followers {
        assert_eq!(f.await.unwrap().unwrap(), ada());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_loader_times_out_for_everyone() {
    let srv = server().await;
    let sup = supervisor(&srv).await;
    let c = Cache::builder(sup.handle())
        .namespace("slow")
        .load_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let start = Instant::now();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                c.get_or_load("k", || async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok::<_, DbError>(1u8)
                })
                .await
            })
        })
        .collect();
    for t in tasks {
        match t.await.unwrap() {
            Err(Error::Loader { source, .. }) => {
                let t = source.downcast_ref::<LoadTimeout>().expect("a LoadTimeout");
                assert_eq!(t.after, Duration::from_millis(200));
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // A panicking loader is an error too, never a hang or a panic in the caller.
    let e = c
        .get_or_load("p", || async { buggy_loader() })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Loader { .. }), "{e}");
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_data_is_a_typed_error_or_a_reported_miss() {
    let srv = server().await;
    let recorder = prometheus_builder().build_recorder();
    let prometheus = recorder.handle();
    let sup =
        Supervisor::start_with_recorder(config(&srv, |b| b.name("corrupt")), Arc::new(recorder))
            .await
            .unwrap();
    sup.wait_until_up(SOON).await.unwrap();
    let r = sup.handle();
    r.set("c:notjson", "{oops").await.unwrap();
    r.set("c:shape", r#"{"id":"seven"}"#).await.unwrap();
    let _: i64 = r
        .cmd(redis::cmd("RPUSH").arg("c:list").arg("x").clone())
        .await
        .unwrap();
    let fail = cache(&sup, "c", Degrade::Fail);
    for key in ["notjson", "shape", "list"] {
        match fail.get::<User>(key).await {
            Err(Error::Corrupt { key: k, reason }) => {
                assert_eq!(k, format!("c:{key}"));
                assert!(!reason.contains("oops"), "never the value: {reason}");
            }
            other => panic!("{key}: expected Corrupt, got {other:?}"),
        }
    }
    let e = fail.get_many::<_, User>(&["notjson"]).await.unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");

    let miss = cache(&sup, "c", Degrade::Miss);
    assert_eq!(miss.get::<User>("notjson").await.unwrap(), None);
    assert_eq!(miss.get::<User>("list").await.unwrap(), None);
    let got = miss.get_many::<_, User>(&["shape", "nope"]).await.unwrap();
    assert_eq!(got, [None, None]);
    // get_or_load overwrites corrupt data with the loaded value.
    let v = miss
        .get_or_load("notjson", || async { Ok::<_, DbError>(ada()) })
        .await
        .unwrap();
    assert_eq!(v, ada());
    assert_eq!(miss.get::<User>("notjson").await.unwrap(), Some(ada()));
    let text = prometheus.render();
    assert_eq!(
        sample(
            &text,
            "redis_client_cache_corrupt_total{client=\"corrupt\"}"
        ),
        8.0
    );
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_gone_miss_degrades_within_the_deadline_and_fail_errors() {
    let mut srv = server().await;
    let recorder = prometheus_builder().build_recorder();
    let prometheus = recorder.handle();
    let deadline = Duration::from_millis(300);
    let cfg = config(&srv, |b| b.name("gone").command_timeout(deadline));
    let sup = Supervisor::start_with_recorder(cfg, Arc::new(recorder))
        .await
        .unwrap();
    sup.wait_until_up(SOON).await.unwrap();
    let miss = cache(&sup, "d", Degrade::Miss);
    let fail = cache(&sup, "d", Degrade::Fail);
    miss.set("k", &1u8).await.unwrap();
    let _events = kill_until_down(&mut srv, &sup).await;

    let within = |start: Instant, what: &str| {
        let took = start.elapsed();
        assert!(
            took < deadline + Duration::from_millis(500),
            "{what} took {took:?}"
        );
    };
    let t = Instant::now();
    assert_eq!(miss.get::<u8>("k").await.unwrap(), None);
    within(t, "get");
    let t = Instant::now();
    miss.set("k", &2u8).await.unwrap();
    within(t, "set");
    let t = Instant::now();
    assert!(!miss.delete("k").await.unwrap());
    within(t, "delete");
    assert_eq!(
        miss.get_many::<_, u8>(&["a", "b"]).await.unwrap(),
        [None, None]
    );
    miss.set_many(&[("a", 1u8)]).await.unwrap();
    assert_eq!(miss.ttl("k").await.unwrap(), KeyTtl::Missing);
    assert_eq!(miss.invalidate("*").await.unwrap(), 0);
    let t = Instant::now();
    let loaded = miss
        .get_or_load("k", || async { Ok::<_, DbError>(5u8) })
        .await
        .unwrap();
    assert_eq!(loaded, 5);
    within(t, "get_or_load");

    let t = Instant::now();
    assert!(fail.get::<u8>("k").await.unwrap_err().is_unavailable());
    within(t, "get (fail)");
    assert!(fail.set("k", &1u8).await.unwrap_err().is_unavailable());
    assert!(fail.delete("k").await.unwrap_err().is_unavailable());
    let e = fail
        .get_or_load("k", || async { Ok::<_, DbError>(5u8) })
        .await
        .unwrap_err();
    assert!(e.is_unavailable(), "{e}");

    let text = prometheus.render();
    let degraded = |op: &str| {
        sample(
            &text,
            &format!("redis_client_degraded_ops_total{{client=\"gone\",op=\"{op}\"}}"),
        )
    };
    assert_eq!(degraded("cache_get"), 3.0, "get, get_many, ttl");
    assert_eq!(degraded("cache_set"), 2.0, "set, set_many");
    assert_eq!(degraded("cache_delete"), 1.0);
    assert_eq!(degraded("cache_invalidate"), 1.0);
    assert_eq!(degraded("cache_get_or_load"), 1.0);
    assert_eq!(degraded("ratelimit_check"), 0.0);
    assert_eq!(
        sample(
            &text,
            "redis_client_cache_loads_total{client=\"gone\",outcome=\"ok\"}"
        ),
        1.0
    );
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_removes_exactly_one_namespace_of_100k_keys() {
    let srv = server().await;
    let sup = supervisor_with(&srv, |b| b.key_prefix("p[1]:").command_timeout(SOON)).await;
    let r = sup.handle();
    // Two namespaces where a glob of one would match the other if it were not escaped.
    let star = cache(&sup, "n*", Degrade::Fail);
    let other = cache(&sup, "nx", Degrade::Fail);
    const N: usize = 100_000;
    for ns in ["n*", "nx"] {
        for chunk in 0..N / 10_000 {
            let mut pipe = redis::pipe();
            for i in chunk * 10_000..(chunk + 1) * 10_000 {
                pipe.cmd("SET")
                    .arg(format!("p[1]:{ns}:user:{i}"))
                    .arg("1")
                    .ignore();
            }
            r.pipeline::<()>(pipe).await.unwrap();
        }
    }
    star.set("keep-me-not", &1u8).await.unwrap();
    let dbsize = || async { r.cmd::<u64>(redis::cmd("DBSIZE")).await.unwrap() };
    assert_eq!(dbsize().await, 2 * N as u64 + 1);

    let start = Instant::now();
    assert_eq!(star.invalidate("user:*").await.unwrap(), N as u64);
    let took = start.elapsed();
    assert_eq!(dbsize().await, N as u64 + 1, "only n*'s user keys went");
    assert_eq!(star.get::<u8>("keep-me-not").await.unwrap(), Some(1));
    assert_eq!(other.get::<u8>("user:0").await.unwrap(), Some(1));
    assert_eq!(star.invalidate("*").await.unwrap(), 1);
    assert_eq!(dbsize().await, N as u64);
    assert!(took < Duration::from_secs(15), "invalidate took {took:?}");
    sup.shutdown().await;
}
