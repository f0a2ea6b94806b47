//! The service binary, run as a user runs it: zero config against a dead address it keeps running
//! and reports 503; once Redis answers, 200; SIGTERM exits 0; bad config exits 2 naming the
//! variable; secrets never reach its output.

#[path = "support/helpers.rs"]
mod helpers;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use helpers::*;
use tokio::process::{Child, Command};
use tokio::time::Instant;

fn binary() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_redis-supervisor"));
    c.env_clear()
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// Polls `path` until it answers with `want` (or panics after `SOON`).
async fn wait_status(addr: SocketAddr, path: &str, want: u16, child: &mut Child) -> String {
    let deadline = Instant::now() + SOON;
    loop {
        if let Ok((status, body)) = http_get(addr, path).await
            && status == want
        {
            return body;
        }
        assert!(child.try_wait().unwrap().is_none(), "binary exited early");
        assert!(Instant::now() < deadline, "{path} never answered {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sigterm(child: &Child) {
    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

async fn exit_output(child: Child) -> (Option<i32>, String) {
    let out = tokio::time::timeout(SOON, child.wait_with_output())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degrades_without_redis_recovers_and_exits_cleanly() {
    const PASSWORD: &str = "Bin4ry-distinctive-secret";
    let mut srv = server_with(&["--requirepass", PASSWORD]).await;
    srv.kill().await.unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = binary()
        .env("REDIS_URL", srv.url())
        .env("REDIS_PASSWORD", PASSWORD)
        .env("REDIS_BACKOFF_MAX_MS", "300")
        .env("LISTEN_ADDR", addr.to_string())
        .spawn()
        .unwrap();

    let body = wait_status(addr, "/health", 503, &mut child).await;
    assert!(body.contains("\"status\":\"down\""), "{body}");
    wait_status(addr, "/health/live", 200, &mut child).await;

    srv.restart().await.unwrap();
    let body = wait_status(addr, "/health", 200, &mut child).await;
    assert!(body.contains("\"state\":\"up\""), "{body}");

    sigterm(&child);
    let (code, output) = exit_output(child).await;
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains("redis down"),
        "logs each transition: {output}"
    );
    assert!(output.contains("redis up"), "{output}");
    assert!(!output.contains(PASSWORD), "password leaked: {output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_flag_and_sigint() {
    let srv = server().await;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = binary()
        .env("REDIS_URL", srv.url())
        .arg("--listen")
        .arg(addr.to_string())
        .spawn()
        .unwrap();
    wait_status(addr, "/health", 200, &mut child).await;
    let pid = child.id().unwrap() as libc::pid_t;
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let (code, output) = exit_output(child).await;
    assert_eq!(code, Some(0), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_exits_2_naming_the_variable() {
    for (var, value) in [
        ("REDIS_PORT", "70000"),
        ("REDIS_URL", "redis://:hunter2-secret@:6379"),
        ("REDIS_OFFLINE_POLICY", "sometimes"),
        ("LISTEN_ADDR", "not-an-address"),
    ] {
        let child = binary().env(var, value).spawn().unwrap();
        let (code, output) = exit_output(child).await;
        assert_eq!(code, Some(2), "{var}={value}: {output}");
        assert!(output.contains(var), "{var}: {output}");
        assert!(!output.contains("hunter2-secret"), "{output}");
    }
}
