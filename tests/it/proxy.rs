//! Integration tests of the fault-injection proxy (`redis_supervisor::testing::FaultProxy`) against real
//! `redis-server` fixtures (and, for byte-exact checks, a plain TCP sink).

use std::error::Error;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use redis_supervisor::testing::{Fault, FaultProxy, RedisServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, sleep, timeout};

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;

/// Generous deadline for anything that should happen "soon".
const SOON: Duration = Duration::from_secs(10);
/// How long a reply must stay away to count as "no reply".
const SILENCE: Duration = Duration::from_millis(300);
/// Pause between two polls.
const POLL: Duration = Duration::from_millis(10);

/// A fixture server and a proxy in front of it.
async fn server_and_proxy() -> Result<(RedisServer, FaultProxy), Box<dyn Error + Send + Sync>> {
    let server = RedisServer::start().await?;
    let proxy = FaultProxy::start(upstream_of(&server)).await?;
    Ok((server, proxy))
}

/// The fixture server's address.
fn upstream_of(server: &RedisServer) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, server.port()))
}

/// A multiplexed connection to `url` without a response timeout (the tests time out themselves), so that
/// what is measured is the proxy, not redis-rs's 500 ms default.
async fn connect(url: &str) -> redis::RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(SOON))
        .set_response_timeout(None);
    redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Sends `PING` on `conn`.
async fn ping(conn: &mut MultiplexedConnection) -> redis::RedisResult<String> {
    redis::cmd("PING").query_async(conn).await
}

/// Connects to `url` and sends `PING`.
async fn connect_and_ping(url: &str) -> redis::RedisResult<String> {
    ping(&mut connect(url).await?).await
}

/// Whether `err` is what a client sees when its connection is dropped or reset.
fn is_connection_error(err: &redis::RedisError) -> bool {
    err.is_io_error() || err.is_connection_dropped() || err.is_unrecoverable_error()
}

/// Polls `check` every few milliseconds until it holds; panics with `what` after [`SOON`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + SOON;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        sleep(POLL).await;
    }
}

/// Reads from `stream` until EOF or an error, within [`SOON`]; returns the bytes and how it ended.
async fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, std::io::Result<()>) {
    let mut got = Vec::new();
    let ended = timeout(SOON, async {
        let mut buf = [0_u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(err) => return Err(err),
            }
        }
    })
    .await
    .expect("the connection should end soon");
    (got, ended)
}

#[tokio::test]
async fn pass_forwards_both_ways_and_counts_connections() -> TestResult {
    let (_server, proxy) = server_and_proxy().await?;
    assert_eq!(proxy.fault(), Fault::Pass);
    assert_eq!(proxy.connections_accepted(), 0);
    assert!(
        proxy.url().starts_with("redis://127.0.0.1:"),
        "{}",
        proxy.url()
    );
    assert_eq!(proxy.url(), format!("redis://{}", proxy.addr()));

    let mut conn = connect(&proxy.url()).await?;
    let value = "x".repeat(100_000);
    let () = redis::cmd("SET")
        .arg("key")
        .arg(&value)
        .query_async(&mut conn)
        .await?;
    let got: String = redis::cmd("GET").arg("key").query_async(&mut conn).await?;
    assert_eq!(got, value);
    assert_eq!(proxy.connections_accepted(), 1);
    assert_eq!(proxy.active_connections(), 1);

    let mut second = connect(&proxy.url()).await?;
    assert_eq!(ping(&mut second).await?, "PONG");
    assert_eq!(proxy.connections_accepted(), 2);
    assert_eq!(proxy.active_connections(), 2);

    drop(second);
    eventually("the closed connection is no longer active", || async {
        proxy.active_connections() == 1
    })
    .await;
    assert_eq!(ping(&mut conn).await?, "PONG");
    Ok(())
}

#[tokio::test]
async fn blackhole_freezes_live_and_new_connections_until_healed() -> TestResult {
    let (_server, proxy) = server_and_proxy().await?;
    let mut conn = connect(&proxy.url()).await?;
    assert_eq!(ping(&mut conn).await?, "PONG");

    proxy.set_fault(Fault::Blackhole);
    assert_eq!(proxy.fault(), Fault::Blackhole);
    assert!(
        timeout(SILENCE, ping(&mut conn)).await.is_err(),
        "a PING on a live connection was answered through a blackhole"
    );

    // A new connection is accepted but nothing comes back.
    let mut raw = timeout(SOON, TcpStream::connect(proxy.addr())).await??;
    raw.write_all(b"PING\r\n").await?;
    let mut buf = [0_u8; 64];
    assert!(
        timeout(SILENCE, raw.read(&mut buf)).await.is_err(),
        "a new connection got a reply (or was closed) through a blackhole"
    );
    eventually("the blackholed connection is accepted", || async {
        proxy.connections_accepted() == 2
    })
    .await;

    proxy.set_fault(Fault::Pass);
    // Healed: the frozen PING of the new connection goes through now, and so do new connections.
    let mut reply = Vec::new();
    while !reply.ends_with(b"\r\n") {
        let n = timeout(SOON, raw.read(&mut buf)).await??;
        assert_ne!(n, 0, "connection closed after healing");
        reply.extend_from_slice(&buf[..n]);
    }
    assert_eq!(reply, b"+PONG\r\n");
    assert_eq!(
        timeout(SOON, connect_and_ping(&proxy.url())).await??,
        "PONG"
    );
    assert_eq!(timeout(SOON, ping(&mut conn)).await??, "PONG");
    Ok(())
}

#[tokio::test]
async fn reset_kills_live_connections_and_new_ones() -> TestResult {
    let (_server, proxy) = server_and_proxy().await?;
    let mut conn = connect(&proxy.url()).await?;
    assert_eq!(ping(&mut conn).await?, "PONG");
    let mut raw = TcpStream::connect(proxy.addr()).await?;
    raw.write_all(b"PING\r\n").await?;
    let mut buf = [0_u8; 7];
    timeout(SOON, raw.read_exact(&mut buf)).await??;
    assert_eq!(&buf, b"+PONG\r\n");

    proxy.set_fault(Fault::Reset);
    let started = Instant::now();
    let err = timeout(Duration::from_secs(2), ping(&mut conn))
        .await
        .expect("a reset connection should fail fast, not hang")
        .expect_err("PING succeeded on a reset connection");
    assert!(is_connection_error(&err), "unexpected error kind: {err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // A reset, not a clean close.
    let (_, ended) = read_to_end(&mut raw).await;
    let err = ended.expect_err("live connection closed with FIN instead of RST");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    eventually("the reset connections are gone", || async {
        proxy.active_connections() == 0
    })
    .await;

    // New connections are reset on accept.
    let err = timeout(Duration::from_secs(2), connect_and_ping(&proxy.url()))
        .await
        .expect("a reset connection should fail fast, not hang")
        .expect_err("PING succeeded through a resetting proxy");
    assert!(is_connection_error(&err), "unexpected error kind: {err:?}");
    let mut raw = TcpStream::connect(proxy.addr()).await?;
    let (got, ended) = read_to_end(&mut raw).await;
    assert!(got.is_empty());
    let err = ended.expect_err("new connection closed with FIN instead of RST");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    eventually("reset connections are counted as accepted", || async {
        proxy.connections_accepted() >= 4
    })
    .await;
    assert_eq!(proxy.active_connections(), 0);

    proxy.set_fault(Fault::Pass);
    assert_eq!(
        timeout(SOON, connect_and_ping(&proxy.url())).await??,
        "PONG"
    );
    Ok(())
}

#[tokio::test]
async fn latency_delays_each_direction() -> TestResult {
    let (_server, proxy) = server_and_proxy().await?;
    let mut conn = connect(&proxy.url()).await?;
    assert_eq!(ping(&mut conn).await?, "PONG");

    let latency = Duration::from_millis(200);
    proxy.set_fault(Fault::Latency(latency));
    for _ in 0..2 {
        let started = Instant::now();
        assert_eq!(timeout(SOON, ping(&mut conn)).await??, "PONG");
        let round_trip = started.elapsed();
        // Delayed once on the way in and once on the way out.
        assert!(
            round_trip >= 2 * latency,
            "round trip took {round_trip:?} with {latency:?} each way"
        );
    }

    // New connections are delayed too (the connection handshake included).
    let started = Instant::now();
    assert_eq!(
        timeout(SOON, connect_and_ping(&proxy.url())).await??,
        "PONG"
    );
    assert!(started.elapsed() >= 2 * latency);

    proxy.set_fault(Fault::Pass);
    assert_eq!(timeout(SOON, ping(&mut conn)).await??, "PONG");
    Ok(())
}

/// Writes `request` (RESP) on `stream` and reads until `expected` bytes came back (within
/// [`SOON`]).
async fn round_trip(stream: &mut TcpStream, request: &[u8], expected: usize) -> Vec<u8> {
    stream.write_all(request).await.expect("write to the proxy");
    let mut got = vec![0_u8; expected];
    timeout(SOON, stream.read_exact(&mut got))
        .await
        .expect("a reply within SOON")
        .expect("read from the proxy");
    got
}

/// `DropReply` leaves out exactly the next reply on every connection open when it is set, even
/// when it is set the moment a reply has been forwarded (the proxy still busy with that
/// connection); a connection accepted later passes unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_reply_leaves_out_the_next_reply_of_open_connections() -> TestResult {
    let (_server, proxy) = server_and_proxy().await?;
    for round in 0..50 {
        let mut stream = TcpStream::connect(proxy.addr()).await?;
        stream.set_nodelay(true)?;
        assert_eq!(
            round_trip(&mut stream, b"ECHO a\r\n", 7).await,
            b"$1\r\na\r\n"
        );
        // Set right after the reply went through.
        proxy.set_fault(Fault::DropReply);
        let later = TcpStream::connect(proxy.addr()).await;
        // `b`'s reply is left out: `c`'s is the next to arrive.
        assert_eq!(
            round_trip(&mut stream, b"ECHO b\r\nECHO c\r\n", 7).await,
            b"$1\r\nc\r\n",
            "round {round}"
        );
        // Only one: `d`'s reply comes through.
        assert_eq!(
            round_trip(&mut stream, b"ECHO d\r\n", 7).await,
            b"$1\r\nd\r\n"
        );
        let mut later = later?;
        assert_eq!(
            round_trip(&mut later, b"ECHO e\r\n", 7).await,
            b"$1\r\ne\r\n"
        );
        proxy.set_fault(Fault::Pass);
    }
    Ok(())
}

#[tokio::test]
async fn close_after_bytes_closes_connections_over_budget() -> TestResult {
    let (_server, proxy) = server_and_proxy().await?;
    let mut conn = connect(&proxy.url()).await?;
    assert_eq!(ping(&mut conn).await?, "PONG");

    let budget = 1_000;
    proxy.set_fault(Fault::CloseAfterBytes(budget));
    // A PING (14 bytes in, 7 out) fits in the budget.
    assert_eq!(timeout(SOON, ping(&mut conn)).await??, "PONG");
    let big = "v".repeat(2 * usize::try_from(budget)?);
    let result: redis::RedisResult<()> = timeout(
        SOON,
        redis::cmd("SET")
            .arg("key")
            .arg(&big)
            .query_async(&mut conn),
    )
    .await?;
    let err = result.expect_err("a SET larger than the budget went through");
    assert!(is_connection_error(&err), "unexpected error kind: {err:?}");
    eventually("the closed connection is gone", || async {
        proxy.active_connections() == 0
    })
    .await;

    // A new connection has a fresh budget (its handshake and a PING fit in 1000 bytes)...
    let mut fresh = timeout(SOON, connect(&proxy.url())).await??;
    assert_eq!(timeout(SOON, ping(&mut fresh)).await??, "PONG");
    // ... and is closed once it is used up.
    let result: redis::RedisResult<()> = timeout(
        SOON,
        redis::cmd("SET")
            .arg("key")
            .arg(&big)
            .query_async(&mut fresh),
    )
    .await?;
    assert!(result.is_err(), "a SET larger than the budget went through");
    Ok(())
}

#[tokio::test]
async fn close_after_bytes_forwards_exactly_the_budget() -> TestResult {
    // A plain TCP sink as the upstream, counting what arrives until the proxy closes the connection.
    let sink = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let proxy = FaultProxy::start(sink.local_addr()?).await?;
    proxy.set_fault(Fault::CloseAfterBytes(1_000));

    for _ in 0..2 {
        let mut client = TcpStream::connect(proxy.addr()).await?;
        let (mut upstream, _) = timeout(SOON, sink.accept()).await??;
        // Ignore a write error: the proxy may close the connection before everything was written.
        let _ = client.write_all(&[b'x'; 5_000]).await;
        let (received, ended) = read_to_end(&mut upstream).await;
        assert!(ended.is_ok(), "upstream connection was reset: {ended:?}");
        assert_eq!(received.len(), 1_000, "bytes forwarded upstream");
        let (back, _) = read_to_end(&mut client).await;
        assert!(back.is_empty());
    }
    assert_eq!(proxy.connections_accepted(), 2);
    Ok(())
}

#[tokio::test]
async fn close_after_drops_idle_connections() -> TestResult {
    let (_server, proxy) = server_and_proxy().await?;

    let after = Duration::from_millis(50);
    proxy.set_fault(Fault::CloseAfter(after));
    let started = Instant::now();
    let mut raw = TcpStream::connect(proxy.addr()).await?;
    let (got, ended) = read_to_end(&mut raw).await;
    assert!(got.is_empty());
    assert!(ended.is_ok(), "expected a clean close, got {ended:?}");
    let lived = started.elapsed();
    assert!(lived >= after, "closed after {lived:?}, before {after:?}");

    // A redis connection works until its time is up, then its next command fails.
    proxy.set_fault(Fault::CloseAfter(Duration::from_secs(1)));
    let connecting = Instant::now();
    let mut conn = timeout(SOON, connect(&proxy.url())).await??;
    assert_eq!(timeout(SOON, ping(&mut conn)).await??, "PONG");
    let deadline = Instant::now() + SOON;
    loop {
        match timeout(SOON, ping(&mut conn)).await? {
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "connection still open after {SOON:?}"
                );
                sleep(Duration::from_millis(25)).await;
            }
            Err(err) => {
                assert!(is_connection_error(&err), "unexpected error kind: {err:?}");
                break;
            }
        }
    }
    assert!(connecting.elapsed() >= Duration::from_secs(1));
    eventually("the closed connections are gone", || async {
        proxy.active_connections() == 0
    })
    .await;
    Ok(())
}

#[tokio::test]
async fn a_down_upstream_closes_client_connections_at_once() -> TestResult {
    let (mut server, proxy) = server_and_proxy().await?;
    server.kill().await?;

    let mut raw = TcpStream::connect(proxy.addr()).await?;
    let started = Instant::now();
    let (got, _) = read_to_end(&mut raw).await;
    assert!(got.is_empty());
    assert!(started.elapsed() < Duration::from_secs(2));
    let err = timeout(SOON, connect_and_ping(&proxy.url()))
        .await?
        .expect_err("PING succeeded with the server down");
    assert!(is_connection_error(&err), "unexpected error kind: {err:?}");

    server.restart().await?;
    assert_eq!(
        timeout(SOON, connect_and_ping(&proxy.url())).await??,
        "PONG"
    );
    Ok(())
}

#[tokio::test]
async fn only_loopback_upstreams_are_accepted() {
    let err = FaultProxy::start(SocketAddr::from(([192, 0, 2, 1], 6380)))
        .await
        .expect_err("a non-loopback upstream was accepted");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

async fn drop_stops_everything() -> TestResult {
    let server = RedisServer::start().await?;
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();

    let proxy = FaultProxy::start(upstream_of(&server)).await?;
    let addr = proxy.addr();
    // One flowing connection, one frozen in a blackhole before it reached the upstream.
    let mut flowing = TcpStream::connect(addr).await?;
    flowing.write_all(b"PING\r\n").await?;
    let mut buf = [0_u8; 7];
    timeout(SOON, flowing.read_exact(&mut buf)).await??;
    assert_eq!(&buf, b"+PONG\r\n");
    proxy.set_fault(Fault::Blackhole);
    let mut frozen = TcpStream::connect(addr).await?;
    eventually("both connections are active", || async {
        proxy.active_connections() == 2
    })
    .await;
    // The accept loop and two connection tasks.
    assert!(metrics.num_alive_tasks() >= baseline + 3);

    drop(proxy);
    eventually("the listener is closed", || async {
        matches!(
            TcpStream::connect(addr).await,
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused
        )
    })
    .await;
    for stream in [&mut flowing, &mut frozen] {
        let (got, _) = read_to_end(stream).await;
        assert!(got.is_empty());
    }
    eventually("every proxy task has ended", || async {
        metrics.num_alive_tasks() <= baseline
    })
    .await;
    Ok(())
}

#[tokio::test]
async fn drop_stops_everything_current_thread() -> TestResult {
    drop_stops_everything().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_stops_everything_multi_thread() -> TestResult {
    drop_stops_everything().await
}
