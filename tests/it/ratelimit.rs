//! The GCRA rate limiter against real redis-servers: exactly the burst under 1000 concurrent
//! checks, redis_rate-like sequential answers with retry_after to the millisecond, costs 0 and
//! above the burst, the script lost from the server (NOSCRIPT), the policies with the server
//! gone, builder errors, and the axum layer's 429 and headers.

use std::sync::Arc;
use std::time::Duration;

use redis_supervisor::metrics::prometheus_builder;
use redis_supervisor::ratelimit::{
    Decision, OnUnavailable, Rate, RateLimitLayer, RateLimiter, RateLimiterBuilder,
};
use redis_supervisor::{Error, KeyTtl, Supervisor};
use tokio::time::Instant;

use crate::support::helpers::*;

/// The value of the sample `series` (name plus its exact label set) in a rendered exposition.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

async fn with_recorder(
    srv: &redis_supervisor::testing::RedisServer,
    name: &str,
    f: impl FnOnce(redis_supervisor::ConfigBuilder) -> redis_supervisor::ConfigBuilder,
) -> (Supervisor, metrics_exporter_prometheus::PrometheusHandle) {
    let recorder = prometheus_builder().build_recorder();
    let prometheus = recorder.handle();
    let cfg = config(srv, |b| f(b.name(name)));
    let sup = Supervisor::start_with_recorder(cfg, Arc::new(recorder))
        .await
        .unwrap();
    sup.wait_until_up(SOON).await.unwrap();
    (sup, prometheus)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_concurrent_checks_allow_exactly_the_burst() {
    let srv = server().await;
    let (sup, prometheus) = with_recorder(&srv, "burst", |b| b.command_timeout(SOON)).await;
    let limiter = RateLimiter::builder(sup.handle())
        .rate(Rate::per_hour(1))
        .burst(100)
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let l = limiter.clone();
            tokio::spawn(async move { l.check("user:7").await })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        let d = t.await.unwrap().unwrap();
        if d.allowed {
            allowed += 1;
        } else {
            assert!(
                d.retry_after.is_some_and(|r| r > Duration::from_secs(30)),
                "{d:?}"
            );
        }
    }
    assert_eq!(allowed, 100);
    let text = prometheus.render();
    let c = |d: &str| {
        sample(
            &text,
            &format!("redis_client_ratelimit_checks_total{{client=\"burst\",decision=\"{d}\"}}"),
        )
    };
    assert_eq!(
        (c("allowed"), c("denied"), c("degraded")),
        (100.0, 900.0, 0.0)
    );
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_answers_match_redis_rate() {
    let srv = server().await;
    let sup = supervisor_with(&srv, |b| b.key_prefix("app:")).await;
    let r = sup.handle();
    let limiter = RateLimiter::builder(sup.handle())
        .namespace("rl")
        .rate(Rate::per_second(10))
        .build()
        .unwrap();
    assert_eq!(limiter.burst(), 10, "the default burst is the rate's n");

    let start = Instant::now();
    let d = limiter.check("k").await.unwrap();
    assert_eq!((d.allowed, d.remaining, d.retry_after), (true, 9, None));
    assert!(
        near(d.reset_after, Duration::from_millis(100), start),
        "{d:?}"
    );
    let d = limiter.check_n("k", 2).await.unwrap();
    assert_eq!((d.allowed, d.remaining), (true, 7));
    // Cost 0 reads without taking.
    let d = limiter.check_n("k", 0).await.unwrap();
    assert_eq!((d.allowed, d.remaining), (true, 7));
    let d = limiter.check_n("k", 7).await.unwrap();
    assert_eq!((d.allowed, d.remaining), (true, 0));
    assert!(near(d.reset_after, Duration::from_secs(1), start), "{d:?}");
    let d = limiter.check("k").await.unwrap();
    let elapsed = start.elapsed();
    assert!(!d.allowed && d.remaining == 0, "{d:?}");
    let retry = d.retry_after.expect("a retry_after");
    // The next token is due 100 ms after the first check reached the server.
    assert!(
        retry <= Duration::from_millis(100)
            && retry + elapsed + Duration::from_millis(3) >= Duration::from_millis(100),
        "retry_after {retry:?} after {elapsed:?}"
    );
    // A cost above the burst can never pass.
    let d = limiter.check_n("k", 11).await.unwrap();
    assert_eq!((d.allowed, d.retry_after), (false, None));
    // The key lives under the prefix and namespace, and expires when the bucket is full again.
    match r.ttl("rl:k").await.unwrap() {
        KeyTtl::Expires(t) => assert!(t <= Duration::from_secs(1), "{t:?}"),
        other => panic!("{other:?}"),
    }
    // After retry_after, one more passes (and only one).
    tokio::time::sleep(retry + Duration::from_millis(5)).await;
    let d = limiter.check("k").await.unwrap();
    assert_eq!((d.allowed, d.remaining), (true, 0), "{d:?}");
    assert!(!limiter.check("k").await.unwrap().allowed);
    // Another key has its own bucket.
    assert_eq!(limiter.check("other").await.unwrap().remaining, 9);
    sup.shutdown().await;
}

/// `d` is within a few ms of `expected`, allowing for the time spent since `start`.
fn near(d: Duration, expected: Duration, start: Instant) -> bool {
    d <= expected && d + start.elapsed() + Duration::from_millis(3) >= expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_or_restarted_server_gets_the_script_again() {
    let mut srv = server().await;
    let sup = supervisor(&srv).await;
    let r = sup.handle();
    let limiter = RateLimiter::builder(sup.handle())
        .rate(Rate::per_minute(5))
        .on_unavailable(OnUnavailable::Deny) // errors while the server restarts stay errors
        .build()
        .unwrap();
    assert_eq!(limiter.check("k").await.unwrap().remaining, 4);
    let _: () = r
        .cmd(redis::cmd("SCRIPT").arg("FLUSH").clone())
        .await
        .unwrap();
    assert_eq!(
        limiter.check("k").await.unwrap().remaining,
        3,
        "NOSCRIPT handled"
    );
    assert_eq!(
        limiter.check("k").await.unwrap().remaining,
        2,
        "loaded again"
    );
    srv.restart().await.unwrap();
    sup.wait_until_up(SOON).await.unwrap();
    // The restarted server (no persistence) has neither the script nor the key.
    let mut d = limiter.check("k").await;
    let deadline = Instant::now() + SOON;
    while d.is_err() && Instant::now() < deadline {
        d = limiter.check("k").await;
    }
    assert_eq!(d.unwrap().remaining, 4);
    // Foreign data under the key is the server's error, not a decision.
    let _: i64 = r
        .cmd(redis::cmd("RPUSH").arg("ratelimit:list").arg("x").clone())
        .await
        .unwrap();
    let e = limiter.check("list").await.unwrap_err();
    assert_eq!(e.server_code(), Some("WRONGTYPE"), "{e}");
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_gone_allow_fails_open_and_deny_errors_within_the_deadline() {
    let mut srv = server().await;
    let deadline = Duration::from_millis(300);
    let (sup, prometheus) = with_recorder(&srv, "rlgone", |b| b.command_timeout(deadline)).await;
    let build = |p| {
        RateLimiter::builder(sup.handle())
            .rate(Rate::per_second(10))
            .on_unavailable(p)
            .build()
            .unwrap()
    };
    let (allow, deny) = (build(OnUnavailable::Allow), build(OnUnavailable::Deny));
    assert!(allow.check("k").await.unwrap().allowed);
    let _events = kill_until_down(&mut srv, &sup).await;
    let slack = deadline + Duration::from_millis(500);
    for _ in 0..3 {
        let t = Instant::now();
        let d = allow.check("k").await.unwrap();
        assert!(t.elapsed() < slack, "{:?}", t.elapsed());
        assert_eq!(
            d,
            Decision {
                allowed: true,
                remaining: 0,
                retry_after: None,
                reset_after: Duration::ZERO
            }
        );
    }
    let t = Instant::now();
    let e = deny.check("k").await.unwrap_err();
    assert!(
        t.elapsed() < slack && e.is_unavailable(),
        "{e} after {:?}",
        t.elapsed()
    );
    let text = prometheus.render();
    let series =
        |name: &str, labels: &str| sample(&text, &format!("{name}{{client=\"rlgone\",{labels}}}"));
    let checks = "redis_client_ratelimit_checks_total";
    assert_eq!(series(checks, "decision=\"degraded\""), 3.0);
    assert_eq!(series(checks, "decision=\"error\""), 1.0);
    assert_eq!(series(checks, "decision=\"allowed\""), 1.0);
    assert_eq!(
        series("redis_client_degraded_ops_total", "op=\"ratelimit_check\""),
        3.0
    );
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_rejects_bad_rates_by_name() {
    let srv = server().await;
    let sup = supervisor(&srv).await;
    let b = || RateLimiter::builder(sup.handle());
    let err = |b: RateLimiterBuilder| match b.build() {
        Err(Error::Config(c)) => (c.setting, c.value),
        other => panic!("expected a config error, got {other:?}"),
    };
    assert_eq!(err(b()).0, "ratelimit.rate");
    assert_eq!(
        err(b().rate(Rate::per_second(0))),
        ("ratelimit.rate".to_string(), "0 per 1s".to_string())
    );
    assert_eq!(
        err(b().rate(Rate::new(5, Duration::ZERO))).0,
        "ratelimit.rate"
    );
    assert_eq!(
        err(b().rate(Rate::per_second(5)).burst(0)).0,
        "ratelimit.burst"
    );
    assert_eq!(
        err(b().rate(Rate::per_second(5)).namespace("")).0,
        "ratelimit.namespace"
    );
    // Extreme but valid settings give decisions, not panics.
    for (rate, burst) in [
        (Rate::new(u64::MAX, Duration::from_nanos(1)), u64::MAX),
        (Rate::new(1, Duration::MAX), 1),
        (Rate::per_second(1), u64::MAX),
    ] {
        let l = b()
            .rate(rate)
            .burst(burst)
            .namespace("x*[")
            .build()
            .unwrap();
        let d = l.check_n("", u64::MAX).await.unwrap();
        assert!(d.allowed == (burst == u64::MAX), "{rate} {burst}: {d:?}");
        assert!(l.check("k").await.is_ok());
    }
    sup.shutdown().await;
}

/// `GET /` with an optional `x-client` header over HTTP/1.0: (status, lower-cased headers).
async fn get_with(
    addr: std::net::SocketAddr,
    client: Option<&str>,
) -> (u16, Vec<(String, String)>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let header = client
        .map(|c| format!("x-client: {c}\r\n"))
        .unwrap_or_default();
    s.write_all(format!("GET / HTTP/1.0\r\nHost: localhost\r\n{header}\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_answers_429_with_headers() {
    let mut srv = server().await;
    let sup = supervisor_with(&srv, |b| b.command_timeout(Duration::from_millis(300))).await;
    let limiter = RateLimiter::builder(sup.handle())
        .rate(Rate::per_minute(2))
        .on_unavailable(OnUnavailable::Deny)
        .build()
        .unwrap();
    let key_fn = |req: &axum::extract::Request| {
        req.headers()
            .get("x-client")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "hello" }))
        .layer(RateLimitLayer::new(limiter, key_fn));
    let (addr, task) = serve_app(app).await;

    let (status, h) = get_with(addr, Some("a")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "ratelimit-limit"), Some("2"));
    assert_eq!(header(&h, "ratelimit-remaining"), Some("1"));
    assert_eq!(header(&h, "ratelimit-reset"), Some("30"));
    assert_eq!(header(&h, "retry-after"), None);
    let (status, h) = get_with(addr, Some("a")).await;
    assert_eq!(
        (status, header(&h, "ratelimit-remaining")),
        (200, Some("0"))
    );
    assert_eq!(header(&h, "ratelimit-reset"), Some("60"));
    let (status, h) = get_with(addr, Some("a")).await;
    assert_eq!(status, 429);
    assert_eq!(header(&h, "ratelimit-limit"), Some("2"));
    assert_eq!(header(&h, "ratelimit-remaining"), Some("0"));
    assert_eq!(header(&h, "retry-after"), Some("30"), "rounded up: {h:?}");
    assert_eq!(header(&h, "ratelimit-reset"), Some("60"));
    // Another client has its own bucket; no key: not limited, no headers.
    assert_eq!(get_with(addr, Some("b")).await.0, 200);
    for _ in 0..3 {
        let (status, h) = get_with(addr, None).await;
        assert_eq!((status, header(&h, "ratelimit-limit")), (200, None));
    }
    // Redis gone under Deny: 503.
    let _events = kill_until_down(&mut srv, &sup).await;
    let (status, h) = get_with(addr, Some("a")).await;
    assert_eq!((status, header(&h, "ratelimit-limit")), (503, Some("2")));
    task.abort();
    sup.shutdown().await;
}
