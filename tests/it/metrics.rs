//! Metrics recorded by a known workload, read from a local (non-global) Prometheus recorder.

use std::sync::Arc;
use std::time::Duration;

use redis_supervisor::metrics::prometheus_builder;
use redis_supervisor::{Error, Supervisor};

use crate::support::helpers::*;

/// The value of the sample `series` (name plus its exact label set) in a rendered exposition.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_workload_gives_known_counts() {
    let mut srv = server().await;
    let recorder = prometheus_builder().build_recorder();
    let prometheus = recorder.handle();
    let config = config(&srv, |b| {
        b.name("workload")
            .command_timeout(Duration::from_millis(300))
            // No health probes during the workload: the ping counts below are exact.
            .health_interval(Duration::from_secs(3600))
            .info_interval(Duration::from_secs(3600))
    });
    let sup = Supervisor::start_with_recorder(config, Arc::new(recorder))
        .await
        .unwrap();
    sup.wait_until_up(SOON).await.unwrap();
    let r = sup.handle();

    r.set("k", "v").await.unwrap();
    for _ in 0..100 {
        let _: Option<String> = r.get("k").await.unwrap();
    }
    let _: () = r
        .cmd(redis::cmd("RPUSH").arg("list").arg("x").clone())
        .await
        .map(|_: i64| ())
        .unwrap();
    for _ in 0..3 {
        let e = r.get::<_, Option<String>>("list").await.unwrap_err();
        assert_eq!(e.server_code(), Some("WRONGTYPE"));
    }
    let _: i64 = r
        .cmd(redis::cmd("GET").arg("nope").clone())
        .await
        .map(|_: Option<i64>| 0)
        .unwrap();

    let text = prometheus.render();
    let c = |cmd: &str, outcome: &str| {
        sample(
            &text,
            &format!(
                "redis_client_commands_total{{client=\"workload\",command=\"{cmd}\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    // 100 + the raw GET (raw commands with a known name get their own label).
    assert_eq!(c("get", "ok"), 101.0);
    assert_eq!(c("get", "error"), 3.0);
    assert_eq!(c("get", "timeout"), 0.0);
    assert_eq!(c("set", "ok"), 1.0);
    assert_eq!(
        c("other", "ok"),
        1.0,
        "RPUSH is outside the fixed command set"
    );
    assert_eq!(
        sample(
            &text,
            "redis_client_command_duration_seconds_count{client=\"workload\",command=\"get\"}"
        ),
        104.0
    );
    let sum = sample(
        &text,
        "redis_client_command_duration_seconds_sum{client=\"workload\",command=\"get\"}",
    );
    assert!(sum > 0.0 && sum < 104.0 * 0.3, "{sum}");
    // The +Inf bucket holds every observation; the 5 s bucket too (all under the 300 ms deadline).
    assert_eq!(
        sample(
            &text,
            "redis_client_command_duration_seconds_bucket{client=\"workload\",command=\"get\",le=\"+Inf\"}"
        ),
        104.0
    );
    assert_eq!(
        sample(
            &text,
            "redis_client_command_duration_seconds_bucket{client=\"workload\",command=\"get\",le=\"5\"}"
        ),
        104.0
    );
    assert_eq!(sample(&text, "redis_client_up{client=\"workload\"}"), 1.0);
    assert_eq!(
        sample(
            &text,
            "redis_client_state{client=\"workload\",state=\"up\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "redis_client_state{client=\"workload\",state=\"down\"}"
        ),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            "redis_client_connect_attempts_total{client=\"workload\",outcome=\"success\"}"
        ),
        1.0
    );
    assert_eq!(sample(&text, "redis_up{client=\"workload\"}"), 1.0);
    // Server gauges come from the INFO read at connect, not only from the periodic schedule.
    assert!(sample(&text, "redis_memory_used_bytes{client=\"workload\"}") > 0.0);
    assert!(
        text.contains("redis_instance_info{client=\"workload\",redis_version=\""),
        "{text}"
    );

    // An outage: commands time out as unavailable, the gauges follow the state.
    let _events = kill_until_down(&mut srv, &sup).await;
    for _ in 0..2 {
        let e = r.get::<_, Option<String>>("k").await.unwrap_err();
        assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    }
    let text = prometheus.render();
    assert_eq!(c_from(&text, "get", "unavailable"), 2.0);
    assert_eq!(sample(&text, "redis_client_up{client=\"workload\"}"), 0.0);
    assert_eq!(sample(&text, "redis_up{client=\"workload\"}"), 0.0);
    assert!(
        sample(
            &text,
            "redis_client_state{client=\"workload\",state=\"down\"}"
        ) + sample(
            &text,
            "redis_client_state{client=\"workload\",state=\"connecting\"}"
        ) == 1.0
    );
    assert!(
        sample(
            &text,
            "redis_client_connect_attempts_total{client=\"workload\",outcome=\"failure\"}"
        ) >= 1.0
    );
    assert_eq!(
        sample(&text, "redis_client_offline_waiting{client=\"workload\"}"),
        0.0
    );

    srv.restart().await.unwrap();
    sup.wait_until_up(SOON).await.unwrap();
    let text = prometheus.render();
    assert!(sample(&text, "redis_client_restarts_total{client=\"workload\"}") >= 1.0);
    assert_eq!(
        sample(
            &text,
            "redis_client_connect_attempts_total{client=\"workload\",outcome=\"success\"}"
        ),
        2.0
    );
    sup.shutdown().await;
    let text = prometheus.render();
    assert_eq!(
        sample(
            &text,
            "redis_client_state{client=\"workload\",state=\"stopped\"}"
        ),
        1.0
    );
}

fn c_from(text: &str, cmd: &str, outcome: &str) -> f64 {
    sample(
        text,
        &format!(
            "redis_client_commands_total{{client=\"workload\",command=\"{cmd}\",outcome=\"{outcome}\"}}"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_waiting_gauge_follows_waiting_commands() {
    let mut srv = server().await;
    let recorder = prometheus_builder().build_recorder();
    let prometheus = recorder.handle();
    let config = config(&srv, |b| {
        b.name("waiting").command_timeout(Duration::from_secs(30))
    });
    let sup = Supervisor::start_with_recorder(config, Arc::new(recorder))
        .await
        .unwrap();
    sup.wait_until_up(SOON).await.unwrap();
    let _events = kill_until_down(&mut srv, &sup).await;
    let r = sup.handle();
    let waiting = spawn_gets(&r, 7);
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let v = sample(
            &prometheus.render(),
            "redis_client_offline_waiting{client=\"waiting\"}",
        );
        if v == 7.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "gauge stuck at {v}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    srv.restart().await.unwrap();
    for w in waiting {
        assert_eq!(
            w.await.unwrap().unwrap(),
            None,
            "waiting commands run once it is back"
        );
    }
    assert_eq!(
        sample(
            &prometheus.render(),
            "redis_client_offline_waiting{client=\"waiting\"}"
        ),
        0.0
    );
    sup.shutdown().await;
}
