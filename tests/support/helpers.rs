//! Shared helpers for the integration tests: supervisors on fixture servers, waiting on events
//! with deadlines, and a minimal HTTP GET.
#![allow(dead_code)]

use std::time::Duration;

use redis_supervisor::testing::RedisServer;
use redis_supervisor::{
    Availability, AvailabilityEvent, AvailabilityEvents, Config, ConfigBuilder, EventsError,
    Supervisor,
};

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

/// A loopback port nobody listens on (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
