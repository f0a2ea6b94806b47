//! Shared helpers for the integration tests: supervisors on fixture servers, waiting on events
//! or polling with deadlines, the HTTP routes served on loopback and a minimal HTTP GET.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use redis_supervisor::testing::RedisServer;
use redis_supervisor::{
    Availability, AvailabilityEvent, AvailabilityEvents, Config, ConfigBuilder, Error, EventsError,
    RedisHandle, Supervisor,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Generous deadline for anything that should happen "soon".
pub const SOON: Duration = Duration::from_secs(10);

pub async fn server() -> RedisServer {
    RedisServer::start().await.expect("start redis-server")
}

pub async fn server_with(args: &[&str]) -> RedisServer {
    RedisServer::start_with_args(args)
        .await
        .expect("start redis-server")
}

/// A config for `server` with fast backoff, tweaked by `f`.
pub fn config(server: &RedisServer, f: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> Config {
    let b = Config::builder()
        .url(server.url())
        .backoff_base(Duration::from_millis(20))
        .backoff_max(Duration::from_millis(400));
    f(b).build().expect("valid config")
}

/// A supervisor on `server`, up before it is returned.
pub async fn supervisor(server: &RedisServer) -> Supervisor {
    supervisor_with(server, |b| b).await
}

pub async fn supervisor_with(
    server: &RedisServer,
    f: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
) -> Supervisor {
    let s = Supervisor::start(config(server, f)).await.expect("start");
    s.wait_until_up(SOON).await.expect("supervisor up");
    s
}

/// Receives events until one satisfies `pred`, returning every event seen (in order).
/// Panics after `SOON`.
pub async fn events_until(
    events: &mut AvailabilityEvents,
    mut pred: impl FnMut(&Availability) -> bool,
) -> Vec<AvailabilityEvent> {
    let mut seen = Vec::new();
    let result = tokio::time::timeout(SOON, async {
        loop {
            match events.recv().await {
                Ok(e) => {
                    // Promise 5: the current state is never older than the last event received.
                    let done = pred(&e.state);
                    seen.push(e);
                    if done {
                        return;
                    }
                }
                Err(EventsError::Lagged { missed }) => panic!("lagged by {missed}"),
                Err(EventsError::Closed) => panic!("event stream closed"),
            }
        }
    })
    .await;
    if result.is_err() {
        panic!("no matching event within {SOON:?}; saw {seen:#?}");
    }
    seen
}

/// Subscribes to `sup`'s events, kills `server` and waits (up to `SOON`) for `Down`; returns the
/// subscription, for the events after that.
pub async fn kill_until_down(server: &mut RedisServer, sup: &Supervisor) -> AvailabilityEvents {
    let mut events = sup.subscribe();
    server.kill().await.unwrap();
    events_until(&mut events, |s| matches!(s, Availability::Down { .. })).await;
    events
}

/// Spawns `n` tasks that each `GET k` through `r` (to wait offline while the server is down).
pub fn spawn_gets(r: &RedisHandle, n: usize) -> Vec<JoinHandle<Result<Option<String>, Error>>> {
    (0..n)
        .map(|_| {
            let r = r.clone();
            tokio::spawn(async move { r.get::<_, Option<String>>("k").await })
        })
        .collect()
}

/// Polls until at least `n` commands are waiting offline in `sup` (panics after `SOON`).
pub async fn wait_offline_waiting(sup: &Supervisor, n: usize) {
    let deadline = Instant::now() + SOON;
    while sup.offline_waiting() < n {
        assert!(Instant::now() < deadline, "commands never started waiting");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls `condition` every 10 ms until it holds; panics naming `what` once `within` has passed.
pub async fn poll_until(what: &str, within: Duration, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Serves `app` on a loopback port until the returned task is aborted (or the test ends).
pub async fn serve_app(app: axum::Router) -> (SocketAddr, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

/// Serves the supervisor's routes (`redis_supervisor::http::router`) on a loopback port.
pub async fn serve(sup: &Supervisor) -> (SocketAddr, JoinHandle<()>) {
    serve_app(redis_supervisor::http::router(sup)).await
}

/// `GET path` from the supervisor's routes, served just for this one request: (status, body).
pub async fn serve_get(sup: &Supervisor, path: &str) -> (u16, String) {
    let (addr, task) = serve(sup).await;
    let got = http_get(addr, path).await.unwrap();
    task.abort();
    got
}

/// `GET path` over HTTP/1.0 on loopback: (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A raw redis-rs connection to the fixture, for checking what the server saw.
pub async fn admin(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("admin connection")
}

/// `INFO commandstats` of the fixture, over an admin connection of its own.
pub async fn command_stats(server: &RedisServer) -> String {
    let mut admin = admin(server).await;
    redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut admin)
        .await
        .unwrap()
}

/// How many times the fixture handled `command` (lower case, e.g. `"ping"`): its calls, the
/// ones it rejected (`-MASTERDOWN`, ...) and the ones that failed, from `INFO commandstats`.
pub async fn command_calls(server: &RedisServer, command: &str) -> u64 {
    let stats = command_stats(server).await;
    let Some(line) = stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:")))
    else {
        return 0;
    };
    line.split(',')
        .filter_map(|field| field.split_once('='))
        .filter(|(name, _)| matches!(*name, "calls" | "rejected_calls" | "failed_calls"))
        .filter_map(|(_, n)| n.parse::<u64>().ok())
        .sum()
}

/// `blocked_clients` in `INFO clients`, over `admin`.
pub async fn blocked_clients(admin: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query_async(admin)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.trim().strip_prefix("blocked_clients:"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Polls (up to `SOON`) until the server behind `admin` has at least `n` clients blocked (in
/// `BLPOP`, `XREAD BLOCK`, `WAIT`, ...): the blocking commands sent before are there.
pub async fn wait_blocked_clients(admin: &mut redis::aio::MultiplexedConnection, n: u64) {
    let deadline = Instant::now() + SOON;
    loop {
        let blocked = blocked_clients(admin).await;
        if blocked >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{n} clients never blocked ({blocked} are)"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A loopback port nobody listens on (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every availability event of a supervisor, with when it was received (a task collects them).
#[derive(Clone)]
pub struct Timeline(Arc<tokio::sync::Mutex<Vec<(Instant, AvailabilityEvent)>>>);

impl Timeline {
    pub fn start(sup: &Supervisor) -> Timeline {
        let log = Timeline(Arc::default());
        let mut events = sup.subscribe();
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(e) = events.recv().await {
                sink.0.lock().await.push((Instant::now(), e));
            }
        });
        log
    }

    /// The events so far.
    pub async fn events(&self) -> Vec<(Instant, AvailabilityEvent)> {
        self.0.lock().await.clone()
    }
}
