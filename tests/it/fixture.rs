//! Integration tests of the `redis-server` process fixture itself (`redis_supervisor::testing`).

use std::error::Error;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis_supervisor::testing::{FixtureError, RedisServer};

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;

/// Connects to `url` (a refused connection fails fast).
async fn connect(url: &str) -> redis::RedisResult<MultiplexedConnection> {
    redis::Client::open(url)?
        .get_multiplexed_async_connection()
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

/// The URL of `server` with a password.
fn url_with_password(server: &RedisServer, password: &str) -> String {
    format!("redis://:{password}@{}:{}", server.host(), server.port())
}

/// Whether a process with this pid exists (a zombie still counts).
fn process_exists(pid: u32) -> bool {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    assert!(pid > 0);
    // SAFETY: signal 0 only checks for existence; `pid` is positive (never a group).
    let rc = unsafe { libc::kill(pid, 0) };
    if rc == 0 {
        return true;
    }
    let err = std::io::Error::last_os_error();
    assert_eq!(err.raw_os_error(), Some(libc::ESRCH), "kill(pid, 0): {err}");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_answers_ping() -> TestResult {
    let server = RedisServer::start().await?;
    assert_eq!(server.host(), "127.0.0.1");
    assert_ne!(server.port(), 6379);
    assert_eq!(server.url(), format!("redis://127.0.0.1:{}", server.port()));
    assert!(server.pid().is_some());
    assert!(server.dir().is_dir());
    assert_eq!(connect_and_ping(&server.url()).await?, "PONG");
    let log = server.log_tail();
    assert!(log.contains("Ready to accept connections"), "{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_get_different_ports_and_dirs() -> TestResult {
    let (a, b) = tokio::join!(RedisServer::start(), RedisServer::start());
    let (a, b) = (a?, b?);
    assert_ne!(a.port(), b.port());
    assert_ne!(a.dir(), b.dir());
    assert_ne!(a.pid(), b.pid());

    let mut conn_a = connect(&a.url()).await?;
    let mut conn_b = connect(&b.url()).await?;
    redis::cmd("SET")
        .arg("who")
        .arg("a")
        .query_async::<()>(&mut conn_a)
        .await?;
    let in_b: Option<String> = redis::cmd("GET")
        .arg("who")
        .query_async(&mut conn_b)
        .await?;
    assert_eq!(in_b, None, "the two servers share data");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_stops_the_server() -> TestResult {
    let mut server = RedisServer::start().await?;
    let pid = server.pid().ok_or("no pid after start")?;
    server.kill().await?;
    assert_eq!(server.pid(), None);
    assert!(!process_exists(pid), "pid {pid} still exists after kill");
    assert!(
        connect(&server.url()).await.is_err(),
        "connecting to a killed server succeeded"
    );
    // Killing twice is harmless; pausing a killed server is an error.
    server.kill().await?;
    assert!(matches!(server.pause(), Err(FixtureError::NotRunning)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_comes_back_on_the_same_port_without_data() -> TestResult {
    let mut server = RedisServer::start().await?;
    let port = server.port();
    let dir = server.dir().to_owned();
    let old_pid = server.pid();

    let mut conn = connect(&server.url()).await?;
    redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async::<()>(&mut conn)
        .await?;
    server.kill().await?;
    assert!(connect(&server.url()).await.is_err());

    server.restart().await?;
    assert_eq!(server.port(), port);
    assert_eq!(server.dir(), dir);
    assert!(server.pid().is_some());
    assert_ne!(server.pid(), old_pid);

    let mut conn = connect(&server.url()).await?;
    assert_eq!(ping(&mut conn).await?, "PONG");
    let value: Option<String> = redis::cmd("GET").arg("k").query_async(&mut conn).await?;
    assert_eq!(value, None, "data survived kill -9 although save is off");

    // Restarting a running server kills it first.
    let pid = server.pid();
    server.restart().await?;
    assert_ne!(server.pid(), pid);
    assert_eq!(server.port(), port);
    assert_eq!(connect_and_ping(&server.url()).await?, "PONG");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_the_directory_so_aof_data_survives() -> TestResult {
    let mut server =
        RedisServer::start_with_args(["--appendonly", "yes", "--appendfsync", "always"]).await?;
    let mut conn = connect(&server.url()).await?;
    redis::cmd("SET")
        .arg("k")
        .arg("kept")
        .query_async::<()>(&mut conn)
        .await?;
    server.kill().await?;
    server.restart().await?;
    let mut conn = connect(&server.url()).await?;
    let value: Option<String> = redis::cmd("GET").arg("k").query_async(&mut conn).await?;
    assert_eq!(value.as_deref(), Some("kept"), "{}", server.log_tail());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_freezes_and_resume_thaws() -> TestResult {
    let server = RedisServer::start().await?;
    let mut conn = connect(&server.url()).await?;
    assert_eq!(ping(&mut conn).await?, "PONG");

    server.pause()?;
    let frozen = tokio::time::timeout(Duration::from_millis(300), ping(&mut conn)).await;
    assert!(frozen.is_err(), "a paused server answered: {frozen:?}");

    server.resume()?;
    let thawed = tokio::time::timeout(Duration::from_secs(5), ping(&mut conn)).await;
    assert_eq!(thawed?.ok().as_deref(), Some("PONG"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_args_are_applied() -> TestResult {
    let server = RedisServer::start_with_args(["--requirepass", "secret-pw"]).await?;

    // Without the password: refused, either at connect time or at the first command.
    let unauthenticated = async {
        let mut conn = connect(&server.url()).await?;
        redis::cmd("GET")
            .arg("k")
            .query_async::<Option<String>>(&mut conn)
            .await
    }
    .await;
    let err = unauthenticated.expect_err("GET without AUTH succeeded");
    assert!(
        err.code() == Some("NOAUTH") || err.to_string().contains("NOAUTH"),
        "unexpected error: {err:?}"
    );

    // With AUTH on a plain connection.
    let client = redis::Client::open(server.url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("AUTH")
        .arg("secret-pw")
        .query_async::<()>(&mut conn)
        .await?;
    assert_eq!(ping(&mut conn).await?, "PONG");

    // And with the password in the URL.
    let url = url_with_password(&server, "secret-pw");
    assert_eq!(connect_and_ping(&url).await?, "PONG");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_args_changes_the_password() -> TestResult {
    let mut server = RedisServer::start_with_args(["--requirepass", "old-pw"]).await?;
    let port = server.port();
    assert_eq!(
        connect_and_ping(&url_with_password(&server, "old-pw")).await?,
        "PONG"
    );

    server
        .restart_with_args(["--requirepass", "new-pw"])
        .await?;
    assert_eq!(server.port(), port);
    assert!(
        connect_and_ping(&url_with_password(&server, "old-pw"))
            .await
            .is_err()
    );
    assert_eq!(
        connect_and_ping(&url_with_password(&server, "new-pw")).await?,
        "PONG"
    );

    // The new arguments stick across a plain restart.
    server.restart().await?;
    assert_eq!(
        connect_and_ping(&url_with_password(&server, "new-pw")).await?,
        "PONG"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_kills_and_reaps_the_process_and_removes_the_dir() -> TestResult {
    let server = RedisServer::start().await?;
    let pid = server.pid().ok_or("no pid after start")?;
    let dir = server.dir().to_owned();
    let url = server.url();
    assert!(process_exists(pid));

    drop(server);
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_exists(pid) {
        assert!(
            Instant::now() < deadline,
            "pid {pid} still exists after drop"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!dir.exists(), "{} still exists after drop", dir.display());
    assert!(connect(&url).await.is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_kills_a_paused_server() -> TestResult {
    let server = RedisServer::start().await?;
    let pid = server.pid().ok_or("no pid after start")?;
    server.pause()?;
    drop(server);
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_exists(pid) {
        assert!(Instant::now() < deadline, "paused pid {pid} survived drop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_args_fail_fast_with_the_reason() -> TestResult {
    let started = Instant::now();
    let result = RedisServer::start_with_args(["--no-such-directive", "x"]).await;
    let elapsed = started.elapsed();
    match result {
        Err(FixtureError::Exited { log_tail, .. }) => {
            assert!(log_tail.contains("no-such-directive"), "{log_tail}");
        }
        other => panic!("expected Exited, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(5), "failing took {elapsed:?}");
    Ok(())
}

/// A blocking `PING` with real-time timeouts (redis-rs's own timers would fire early on a paused clock).
fn blocking_ping(port: u16) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"PING\r\n")?;
    let mut buf = [0_u8; 64];
    let n = stream.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test(start_paused = true)]
async fn works_with_a_paused_clock() -> TestResult {
    let mut server = RedisServer::start().await?;
    assert_eq!(blocking_ping(server.port())?, "+PONG\r\n");
    server.restart().await?;
    assert_eq!(blocking_ping(server.port())?, "+PONG\r\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_owned_by_the_fixture_are_refused() -> TestResult {
    let result = RedisServer::start_with_args(["--port", "6379"]).await;
    assert!(
        matches!(result, Err(FixtureError::ReservedArg(ref arg)) if arg == "--port"),
        "{result:?}"
    );

    let mut server = RedisServer::start().await?;
    let pid = server.pid();
    let result = server.restart_with_args(["--dir", "/tmp"]).await;
    assert!(
        matches!(result, Err(FixtureError::ReservedArg(_))),
        "{result:?}"
    );
    // The refused restart left the running server alone.
    assert_eq!(server.pid(), pid);
    assert_eq!(connect_and_ping(&server.url()).await?, "PONG");
    Ok(())
}
