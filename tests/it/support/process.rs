//! Running the service binary (`redis-supervisor`) as a user runs it: a child process with a
//! cleared environment, polled over HTTP, stopped with a signal, its exit code and output
//! collected — every wait with a deadline.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::helpers::{SOON, free_port, http_get};

/// The service binary with a cleared environment but `RUST_LOG=rust_log` and `env`; stdin
/// closed, stdout and stderr piped (see [`exit_output`]), killed if the test drops it.
pub fn binary(rust_log: &str, env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_redis-supervisor"));
    c.env_clear()
        .env("RUST_LOG", rust_log)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// A loopback address nobody listens on, for `LISTEN_ADDR` / `--listen`.
pub fn listen_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// Polls `path` on `addr` every 50 ms until it answers `want` with a body containing `marker`
/// (`""` for any body), and returns that body. Panics if `child` exits first, or after `SOON`.
pub async fn wait_status(
    addr: SocketAddr,
    path: &str,
    want: u16,
    marker: &str,
    child: &mut Child,
) -> String {
    let deadline = Instant::now() + SOON;
    let mut last = None;
    loop {
        match http_get(addr, path).await {
            Ok((status, body)) if status == want && body.contains(marker) => return body,
            Ok(other) => last = Some(other),
            Err(_) => {}
        }
        assert!(child.try_wait().unwrap().is_none(), "binary exited early");
        assert!(
            Instant::now() < deadline,
            "{path} never answered {want} with {marker:?}; last {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `signal` (e.g. `libc::SIGINT`) to `child`, which must still be running.
pub fn signal(child: &Child, signal: libc::c_int) {
    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

/// Sends SIGTERM to `child`.
pub fn sigterm(child: &Child) {
    signal(child, libc::SIGTERM);
}

/// Waits (up to `SOON`) for `child` to exit: its exit code, and its stdout followed by its
/// stderr.
pub async fn exit_output(child: Child) -> (Option<i32>, String) {
    let out = tokio::time::timeout(SOON, child.wait_with_output())
        .await
        .expect("exits within SOON")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}
