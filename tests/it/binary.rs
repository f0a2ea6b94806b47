//! The service binary, run as a user runs it: zero config against a dead address it keeps running
//! and reports 503; once Redis answers, 200; SIGTERM exits 0; bad config exits 2 naming the
//! variable; secrets never reach its output.

use crate::support::helpers::*;
use crate::support::process::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degrades_without_redis_recovers_and_exits_cleanly() {
    const PASSWORD: &str = "Bin4ry-distinctive-secret";
    let mut srv = server_with(&["--requirepass", PASSWORD]).await;
    srv.kill().await.unwrap();
    let addr = listen_addr();
    let mut child = binary("info", &[])
        .env("REDIS_URL", srv.url())
        .env("REDIS_PASSWORD", PASSWORD)
        .env("REDIS_BACKOFF_MAX_MS", "300")
        .env("LISTEN_ADDR", addr.to_string())
        .spawn()
        .unwrap();

    let body = wait_status(addr, "/health", 503, "", &mut child).await;
    assert!(body.contains("\"status\":\"down\""), "{body}");
    wait_status(addr, "/health/live", 200, "", &mut child).await;

    srv.restart().await.unwrap();
    let body = wait_status(addr, "/health", 200, "", &mut child).await;
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
    let addr = listen_addr();
    let mut child = binary("info", &[])
        .env("REDIS_URL", srv.url())
        .arg("--listen")
        .arg(addr.to_string())
        .spawn()
        .unwrap();
    wait_status(addr, "/health", 200, "", &mut child).await;
    signal(&child, libc::SIGINT);
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
        let child = binary("info", &[]).env(var, value).spawn().unwrap();
        let (code, output) = exit_output(child).await;
        assert_eq!(code, Some(2), "{var}={value}: {output}");
        assert!(output.contains(var), "{var}: {output}");
        assert!(!output.contains("hunter2-secret"), "{output}");
    }
}

/// With `REDIS_SENTINELS`, the binary finds the master through the sentinels and serves
/// `/health*` and `/metrics` through a `SENTINEL FAILOVER`: `/health` names the new master, the
/// failover is counted and logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_sentinel_failover() {
    let topo = redis_supervisor::testing::SentinelTopology::start()
        .await
        .expect("sentinel topology");
    let old = topo.master_addr().await.unwrap();
    let sentinels: Vec<String> = topo
        .sentinel_addrs()
        .iter()
        .map(|a| a.to_string())
        .collect();
    let addr = listen_addr();
    let mut child = binary("info", &[])
        .env("REDIS_SENTINELS", sentinels.join(","))
        .env("REDIS_SENTINEL_MASTER", topo.master_name())
        .env("LISTEN_ADDR", addr.to_string())
        .spawn()
        .unwrap();
    let body = wait_status(
        addr,
        "/health",
        200,
        &format!("\"address\":\"{old}\""),
        &mut child,
    )
    .await;
    assert!(body.contains("\"state\":\"up\""), "{body}");
    let report = wait_status(
        addr,
        "/health/redis",
        200,
        "\"kind\":\"sentinel\"",
        &mut child,
    )
    .await;
    for s in &sentinels {
        assert!(report.contains(s.as_str()), "{report}");
    }

    topo.failover().await.unwrap();
    let new = topo
        .wait_for_master_change(old, std::time::Duration::from_secs(20))
        .await
        .unwrap();
    wait_status(
        addr,
        "/health",
        200,
        &format!("\"address\":\"{new}\""),
        &mut child,
    )
    .await;
    wait_status(
        addr,
        "/health/redis",
        200,
        &format!("\"master\":\"{new}\""),
        &mut child,
    )
    .await;
    wait_status(addr, "/health/ready", 200, "", &mut child).await;
    let metrics = wait_status(
        addr,
        "/metrics",
        200,
        "redis_client_failovers_total",
        &mut child,
    )
    .await;
    assert!(
        metrics.contains("redis_client_failovers_total{client=\"default\"} 1"),
        "{metrics}"
    );

    sigterm(&child);
    let (code, output) = exit_output(child).await;
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("redis failover"), "{output}");
}
