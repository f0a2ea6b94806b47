//! The example service (`examples/service/`) end to end: its own router, served on a loopback
//! port against a fixture `redis-server`, every route exercised over real HTTP — and through a
//! kill -9 and restart of Redis: items still served from the database, the rate limit failing
//! open, login answering 503 with a JSON error, `/health/ready` saying why, and an open event
//! stream that reports the gap (`resubscribed`) and keeps receiving. Then the graceful shutdown:
//! open event streams end and `serve` returns, also on a real SIGTERM.
//!
//! The HTTP client is a few lines of raw HTTP/1.0 over tokio TCP (no client crate): each
//! request may come from its own loopback address (`127.0.0.N`), because the rate limit keys on
//! the client address.

// The example's application, exactly as `cargo run --example service` runs it.
#[allow(dead_code)]
#[path = "../../examples/service/app.rs"]
mod app;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use redis_supervisor::Supervisor;
use redis_supervisor::testing::RedisServer;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::support::helpers;
use crate::support::helpers::SOON;

// ---- a minimal HTTP client --------------------------------------------------------------------

/// One answer: status, headers (names in lower case), body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn num_header(&self, name: &str) -> u64 {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name} header in {self:?}"))
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number in {self:?}"))
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// The session cookie's value from `Set-Cookie`.
    fn cookie(&self) -> String {
        let set = self
            .header("set-cookie")
            .unwrap_or_else(|| panic!("no cookie in {self:?}"));
        let pair = set.split(';').next().unwrap();
        pair.strip_prefix("sid=").unwrap().to_string()
    }
}

/// A connection to the app from loopback address `127.0.0.<client>`.
async fn connect(addr: SocketAddr, client: u8) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, client), 0)))
        .unwrap();
    socket.connect(addr).await.unwrap()
}

/// The app under test: where it listens.
#[derive(Clone, Copy)]
struct Http {
    addr: SocketAddr,
}

impl Http {
    /// `method path` from `127.0.0.<client>`, with the session cookie and a JSON body if given.
    async fn send(
        self,
        client: u8,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        let mut s = connect(self.addr, client).await;
        let mut req = format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\n");
        if let Some(c) = cookie {
            req.push_str(&format!("Cookie: sid={c}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(SOON, s.read_to_end(&mut raw))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer within {SOON:?}"))
            .unwrap();
        parse(&String::from_utf8_lossy(&raw))
    }

    async fn get(self, client: u8, path: &str) -> Reply {
        self.send(client, "GET", path, None, None).await
    }

    async fn post(self, client: u8, path: &str, body: &str) -> Reply {
        self.send(client, "POST", path, None, Some(body)).await
    }

    async fn login(self, user: &str) -> String {
        let r = self
            .post(1, "/login", &json!({ "user": user }).to_string())
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["user"], user);
        r.cookie()
    }

    async fn me(self, cookie: &str) -> Reply {
        self.send(1, "GET", "/me", Some(cookie), None).await
    }

    /// Polls `path` until it answers `status` (panics after `SOON`).
    async fn wait_status(self, path: &str, status: u16) -> Reply {
        let deadline = Instant::now() + SOON;
        loop {
            let r = self.get(1, path).await;
            if r.status == status {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never answered {status}: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn parse(text: &str) -> Reply {
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// An open `GET /events/{channel}` stream.
struct EventStream {
    reader: BufReader<TcpStream>,
}

impl EventStream {
    /// Opens it and reads the `subscribed` event.
    async fn open(http: Http, channel: &str) -> EventStream {
        let mut s = connect(http.addr, 1).await;
        let req = format!("GET /events/{channel} HTTP/1.0\r\nHost: localhost\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut reader = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(SOON, reader.read_line(&mut line))
                .await
                .expect("event stream headers")
                .unwrap();
            assert!(n > 0, "event stream closed before its headers: {head}");
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase().contains("text/event-stream"),
            "{head}"
        );
        let mut stream = EventStream { reader };
        let (name, data) = stream.next().await.expect("the subscribed event");
        assert_eq!(name, "subscribed");
        assert_eq!(data["channel"], channel);
        stream
    }

    /// The next event (comments — keep-alives — skipped): `(event, data)`; `None` at the end
    /// of the stream. Panics if none comes within `SOON`.
    async fn next(&mut self) -> Option<(String, Value)> {
        let (mut name, mut data) = (String::new(), String::new());
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(SOON, self.reader.read_line(&mut line))
                .await
                .expect("an event within the deadline")
                .unwrap();
            if n == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if name.is_empty() && data.is_empty() {
                    continue; // the end of a comment
                }
                let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                return Some((name, data));
            }
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
    }

    /// Expects a `message` with `payload` next.
    async fn expect_message(&mut self, payload: &str) {
        let event = self.next().await;
        let Some((name, data)) = event else {
            panic!("stream ended, expected {payload:?}");
        };
        assert_eq!(name, "message", "{data}");
        assert_eq!(data["payload"], payload);
    }

    /// Expects `shutdown`, then the end of the stream.
    async fn expect_end(&mut self) {
        let event = self.next().await;
        assert!(
            matches!(&event, Some((n, _)) if n == "shutdown"),
            "{event:?}"
        );
        assert!(self.next().await.is_none(), "the stream did not end");
    }
}

// ---- the app on a fixture ------------------------------------------------------------------

struct Running {
    server: RedisServer,
    supervisor: Supervisor,
    app: app::App,
    http: Http,
    served: JoinHandle<std::io::Result<()>>,
    worker: JoinHandle<()>,
}

/// The example's app on a fresh fixture server (fast reconnect backoff), served on a loopback
/// port until `shutdown` resolves, with its job worker running.
async fn start(shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> Running {
    start_with(helpers::server().await, &app::Settings::default(), shutdown).await
}

/// As [`start`], on `server` with `settings`.
async fn start_with(
    server: RedisServer,
    settings: &app::Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Running {
    let config = helpers::config(&server, |b| b.key_prefix("service:"));
    let recorder = redis_supervisor::metrics::prometheus_builder().build_recorder();
    let prometheus = recorder.handle();
    let supervisor = Supervisor::start_with_recorder(config, Arc::new(recorder))
        .await
        .unwrap();
    supervisor.wait_until_up(SOON).await.unwrap();
    let app = app::App::new(&supervisor, settings, prometheus).unwrap();
    let worker = app.spawn_worker();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = Http {
        addr: listener.local_addr().unwrap(),
    };
    let served = tokio::spawn(app.clone().serve(listener, shutdown));
    Running {
        server,
        supervisor,
        app,
        http,
        served,
        worker,
    }
}

impl Running {
    /// After the shutdown signal: `serve` returns, the supervisor and the worker stop.
    async fn finish(self) {
        tokio::time::timeout(SOON, self.served)
            .await
            .expect("serve returned after the shutdown signal")
            .unwrap()
            .unwrap();
        self.supervisor.shutdown().await;
        tokio::time::timeout(SOON, self.worker)
            .await
            .expect("the worker stopped")
            .unwrap();
        drop(self.server);
    }
}

// ---- the routes ----------------------------------------------------------------------------

/// Login, `/me`, logout and `revoke_all` ending the user's other sessions (not another user's).
async fn sessions(http: Http) -> String {
    assert_eq!(http.get(1, "/me").await.status, 401);
    let bad = http.post(1, "/login", r#"{"user":""}"#).await;
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.json()["error"].is_string());
    assert_eq!(http.post(1, "/login", "not json").await.status, 400);

    let a1 = http.login("alice").await;
    let me = http.me(&a1).await;
    assert_eq!(me.status, 200, "{me:?}");
    assert_eq!(me.json()["user"], "alice");
    assert_eq!(me.json()["sessions"], 1);
    let a2 = http.login("alice").await;
    assert_eq!(http.me(&a2).await.json()["sessions"], 2);
    let bob = http.login("bob").await;

    let out = http.send(1, "POST", "/logout", Some(&a1), None).await;
    assert_eq!(out.json()["logged_out"], true, "{out:?}");
    assert_eq!(http.me(&a1).await.status, 401);

    let a3 = http.login("alice").await;
    let all = http
        .send(1, "POST", "/logout-everywhere", Some(&a2), None)
        .await;
    assert_eq!(all.status, 200, "{all:?}");
    assert_eq!(all.json(), json!({ "user": "alice", "revoked": 2 }));
    assert_eq!(http.me(&a2).await.status, 401);
    assert_eq!(http.me(&a3).await.status, 401, "revoke_all left a session");
    assert_eq!(http.me(&bob).await.json()["user"], "bob");
    bob
}

/// Cache-aside with single-flight: 20 concurrent GETs of a cold item load it once; a PUT
/// invalidates it and the next GET loads it again.
async fn items(http: Http, app: &app::App) {
    let loads = app.database().loads();
    let gets: Vec<_> = (0..20)
        .map(|_| tokio::spawn(http.get(2, "/api/items/7")))
        .collect();
    for get in gets {
        let r = get.await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.json()["item"],
            json!({ "id": 7, "name": "Item 7", "version": 1 })
        );
        assert_eq!(r.json()["db_loads"], loads + 1, "not single-flight: {r:?}");
    }
    assert_eq!(app.database().loads(), loads + 1, "not single-flight");
    let hit = http.get(2, "/api/items/7").await;
    assert_eq!(hit.json()["db_loads"], loads + 1, "not cached: {hit:?}");

    let put = http
        .send(2, "PUT", "/api/items/7", None, Some(r#"{"name":"Seven"}"#))
        .await;
    assert_eq!(put.status, 200, "{put:?}");
    assert_eq!(put.json()["invalidated"], true);
    assert_eq!(put.json()["item"]["version"], 2);
    let reloaded = http.get(2, "/api/items/7").await;
    assert_eq!(
        reloaded.json(),
        json!({ "item": { "id": 7, "name": "Seven", "version": 2 }, "db_loads": loads + 2 })
    );
    assert_eq!(
        http.get(2, "/api/items/7").await.json()["db_loads"],
        loads + 2
    );

    let missing = http.get(2, "/api/items/1000").await;
    assert_eq!(missing.status, 404, "{missing:?}");
    assert_eq!(missing.json()["error"], "no item 1000");
    assert_eq!(http.get(2, "/api/items/seven").await.status, 400);
}

/// The default limit (60 per minute, burst 30) per client address: a burst of 30, then 429 with
/// the headers; another address is not limited by it.
async fn rate_limit(http: Http) {
    let start = Instant::now();
    let mut allowed = 0;
    let denied = loop {
        let r = http.get(3, "/api/items/7").await;
        assert_eq!(r.num_header("ratelimit-limit"), 30, "{r:?}");
        if r.status == 429 {
            break r;
        }
        assert_eq!(r.status, 200, "{r:?}");
        allowed += 1;
        if allowed == 1 {
            assert_eq!(r.num_header("ratelimit-remaining"), 29);
        }
        assert!(allowed <= 200, "never limited");
    };
    // One more token per second since the start (the rate), on top of the burst.
    let refilled = start.elapsed().as_secs() + 1;
    assert!(
        (30..=30 + refilled).contains(&allowed),
        "{allowed} allowed in {:?}",
        start.elapsed()
    );
    assert!(denied.num_header("retry-after") >= 1, "{denied:?}");
    assert_eq!(denied.num_header("ratelimit-remaining"), 0);
    assert!(denied.header("ratelimit-reset").is_some());
    assert_eq!(
        http.get(4, "/api/items/7").await.status,
        200,
        "not per client"
    );
}

/// Heartbeats of logged-in users, and who is online.
async fn presence(http: Http, bob: &str) {
    assert_eq!(http.post(1, "/presence/lobby", "").await.status, 401);
    let carol = http.login("carol").await;
    for cookie in [bob, carol.as_str()] {
        let r = http
            .send(1, "POST", "/presence/lobby", Some(cookie), None)
            .await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    let online = http.get(1, "/presence/lobby").await;
    assert_eq!(
        online.json(),
        json!({ "room": "lobby", "online": ["bob", "carol"] })
    );
    assert_eq!(
        http.get(1, "/presence/empty").await.json()["online"],
        json!([])
    );
}

/// Publishes `payload` on `channel`; how many subscribers got it.
async fn publish(http: Http, channel: &str, payload: &str) -> u64 {
    let r = http
        .send(
            1,
            "POST",
            &format!("/events/{channel}"),
            None,
            Some(payload),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["receivers"].as_u64().unwrap()
}

/// Queues jobs `from..=to` and waits until the worker has processed `to` in all.
async fn jobs(http: Http, from: u64, to: u64) {
    for n in from..=to {
        let r = http.post(1, "/jobs", &json!({ "n": n }).to_string()).await;
        assert_eq!(r.status, 202, "{r:?}");
    }
    let deadline = Instant::now() + SOON;
    loop {
        let r = http.get(1, "/jobs").await.json();
        if r["processed"] == to {
            assert_eq!(r["last"], json!({ "n": to }));
            assert_eq!(r["waiting"], 0);
            return;
        }
        assert!(Instant::now() < deadline, "jobs not processed: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the first `/metrics` line that starts with `series`.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

/// While Redis is down: what can be served is, the rest is a JSON 503, and readiness says why.
async fn outage(http: Http, app: &app::App, bob: &str) {
    let ready = http.wait_status("/health/ready", 503).await;
    // The state and its reason ("connection closed by server", then "connection refused").
    assert!(
        ready.body.starts_with("not ready: down: connection "),
        "{ready:?}"
    );
    assert_eq!(http.get(1, "/health").await.json()["status"], "down");

    // Items straight from the database (no cache: every GET loads), at once.
    let loads = app.database().loads();
    for n in 1..=2 {
        let start = Instant::now();
        let r = http.get(5, "/api/items/8").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["item"]["id"], 8);
        assert_eq!(r.json()["db_loads"], loads + n);
        assert!(
            start.elapsed() < Duration::from_millis(1500),
            "waited for Redis"
        );
    }
    // The rate limit fails open: the address limited before is let through.
    let open = http.get(3, "/api/items/8").await;
    assert_eq!(open.status, 200, "rate limit not fail-open: {open:?}");

    let login = http.post(1, "/login", r#"{"user":"alice"}"#).await;
    assert_eq!(login.status, 503, "{login:?}");
    assert_eq!(login.header("content-type"), Some("application/json"));
    assert!(
        login.json()["error"]
            .as_str()
            .unwrap()
            .contains("unavailable")
    );
    let reason = login.json()["reason"].as_str().unwrap().to_string();
    assert!(reason.starts_with("redis unavailable since "), "{reason}");
    assert!(login.header("retry-after").is_some());
    for r in [
        http.me(bob).await,
        http.get(1, "/presence/lobby").await,
        http.post(1, "/events/news", "lost").await,
        http.post(1, "/jobs", r#"{"n":0}"#).await,
    ] {
        assert_eq!(r.status, 503, "{r:?}");
        assert!(r.json()["error"].is_string(), "{r:?}");
    }
    assert_eq!(http.get(1, "/jobs").await.json()["waiting"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_a_redis_restart() {
    let _process = crate::shared().await;
    let (stop, stopped) = oneshot::channel::<()>();
    let mut run = start(async {
        let _ = stopped.await;
    })
    .await;
    let http = run.http;
    assert_eq!(http.get(1, "/health/ready").await.body, "ready\n");

    let bob = sessions(http).await;
    items(http, &run.app).await;
    rate_limit(http).await;
    presence(http, &bob).await;

    let mut news = EventStream::open(http, "news").await;
    let mut also = EventStream::open(http, "news").await;
    assert_eq!(
        publish(http, "news", "hello 1").await,
        1,
        "one subscription"
    );
    news.expect_message("hello 1").await;
    also.expect_message("hello 1").await;
    drop(also);
    jobs(http, 1, 3).await;

    let metrics = http.get(1, "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert_eq!(metric(&metrics.body, "redis_client_up{"), 1.0);
    let denied = r#"redis_client_ratelimit_checks_total{client="default",decision="denied"}"#;
    assert!(metric(&metrics.body, denied) >= 1.0);

    // kill -9: keeps serving what it can.
    run.server.kill().await.unwrap();
    outage(http, &run.app, &bob).await;

    // Back on the same port (empty: the fixture keeps no data).
    run.server.restart().await.unwrap();
    http.wait_status("/health/ready", 200).await;
    let (gap, data) = news.next().await.expect("the stream survived the outage");
    assert_eq!(gap, "resubscribed", "{data}");
    assert!(data["downtime_ms"].as_u64().unwrap() > 0, "{data}");
    assert_eq!(publish(http, "news", "hello 2").await, 1);
    news.expect_message("hello 2").await;

    let loads = run.app.database().loads();
    assert_eq!(
        http.get(6, "/api/items/8").await.json()["db_loads"],
        loads + 1
    );
    assert_eq!(
        http.get(6, "/api/items/8").await.json()["db_loads"],
        loads + 1,
        "the cache is not written again after the restart"
    );
    assert_eq!(
        http.me(&bob).await.status,
        401,
        "sessions died with the fixture's data"
    );
    http.login("alice").await;
    jobs(http, 4, 5).await;
    assert_eq!(run.app.jobs().processed(), 5);

    // Graceful shutdown: the open stream ends, serve returns.
    stop.send(()).unwrap();
    news.expect_end().await;
    run.finish().await;
}

/// The signal path of `main.rs`: a real SIGTERM ends the open event streams and `serve`
/// returns; the supervisor and the worker then stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_event_streams_and_serve_returns() {
    let _process = crate::shared().await;
    // Installs the SIGTERM handler now, so the signal below cannot kill the test process.
    let signal = app::shutdown_signal().unwrap();
    let run = start(signal).await;
    let mut first = EventStream::open(run.http, "a").await;
    let mut second = EventStream::open(run.http, "b").await;
    // SAFETY: kill(2) on our own pid, with a signal that has a handler installed.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGTERM) }, 0);
    first.expect_end().await;
    second.expect_end().await;
    let start = Instant::now();
    run.finish().await;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

/// `LOGIN_WAIT_REPLICAS=1`: a login is answered once a replica has the session; with the
/// replica gone, a login is 503 ("try again"), saying the session may not survive a failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_waits_for_a_replica_when_asked() {
    let _process = crate::shared().await;
    let err = app::Settings::from_lookup(|k| (k == "LOGIN_WAIT_REPLICAS").then(|| "two".into()))
        .unwrap_err();
    assert!(
        err.contains("LOGIN_WAIT_REPLICAS") && err.contains("\"two\""),
        "{err}"
    );
    let master = helpers::server().await;
    let mut replica =
        helpers::server_with(&["--replicaof", master.host(), &master.port().to_string()]).await;
    let settings = app::Settings {
        login_replicas: 1,
        ..app::Settings::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let run = start_with(master, &settings, async {
        let _ = stopped.await;
    })
    .await;
    let http = run.http;
    // The replica is linked once a login is confirmed by it.
    let deadline = Instant::now() + SOON;
    let cookie = loop {
        let reply = http.post(1, "/login", r#"{"user":"carol"}"#).await;
        if reply.status == 200 {
            break reply.cookie();
        }
        assert_eq!(reply.status, 503, "{reply:?}");
        assert!(Instant::now() < deadline, "no login confirmed: {reply:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(http.me(&cookie).await.status, 200);
    replica.kill().await.unwrap();
    let refused = http.post(1, "/login", r#"{"user":"dave"}"#).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    let reason = refused.json()["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("replicas") && reason.contains("failover"),
        "{reason}"
    );
    stop.send(()).unwrap();
    run.finish().await;
}
