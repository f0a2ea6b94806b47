//! A connection busy delivering big replies is not silent (ARCHITECTURE.md promise 10): the health
//! actor's probe that waits behind them is "slow", never a failure. It runs with the process to
//! itself (`crate::alone`): its load (48 tasks fetching 1 MiB values) would disturb the timing of
//! other tests run beside it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis_supervisor::{Availability, Supervisor};

use crate::support::helpers::*;
use crate::support::readiness_helpers::*;

/// A connection busy delivering big replies is not silent: a probe that times out behind them
/// (while those replies keep arriving) is "slow", never a failure, so K such probes in a row
/// replace nothing. Only a probe that hears nothing at all counts towards K.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_behind_big_replies_is_slow_not_a_failure() {
    let _process = crate::alone().await;
    let srv = server().await;
    let recorder = redis_supervisor::metrics::prometheus_builder().build_recorder();
    let prometheus = recorder.handle();
    let sup = Supervisor::start_with_recorder(
        config(&srv, |b| {
            b.name("busy")
                .health_interval(Duration::from_millis(100))
                .health_timeout(Duration::from_millis(30))
                .health_slow(Duration::from_millis(5))
                .health_failures(2)
                .command_timeout(Duration::from_secs(20))
        }),
        Arc::new(recorder),
    )
    .await
    .unwrap();
    sup.wait_until_up(SOON).await.unwrap();
    let r = sup.handle();
    r.set("big", vec![b'x'; 1 << 20]).await.unwrap();
    let log = EventLog::start(&sup);
    let stop = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = (0..48)
        .map(|_| {
            let (r, stop) = (r.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let v: Vec<u8> = r.get("big").await.expect("big GET answered");
                    assert_eq!(v.len(), 1 << 20);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let probes = |outcome: &str| {
        sample(
            &prometheus.render(),
            "redis_client_probes_total",
            &[("client", "busy"), ("outcome", outcome)],
        )
    };
    let slow_before = probes("slow");
    // Dozens of probes, each queued behind megabytes of replies.
    let all = || probes("ok") + probes("slow") + probes("failed");
    let before = all();
    poll_until("30 probes", SOON, async || all() >= before + 30.0).await;
    stop.store(true, Ordering::Relaxed);
    let mut gets = 0;
    for l in loaders {
        gets += l.await.unwrap();
    }
    let counts = format!(
        "probes ok {} slow {} failed {}, {gets} big GETs",
        probes("ok"),
        probes("slow"),
        probes("failed")
    );
    assert_eq!(
        sup.restarts(),
        0,
        "a busy connection was replaced ({counts}): {:#?}",
        log.events()
    );
    let lost: Vec<_> = log
        .events()
        .into_iter()
        .filter(|e| {
            matches!(
                e.state,
                Availability::Down { .. } | Availability::Connecting { .. }
            )
        })
        .collect();
    assert!(lost.is_empty(), "{counts}: {lost:#?}");
    let slow = probes("slow") - slow_before;
    assert!(
        gets > 0 && slow >= 3.0,
        "the case was exercised: {gets} GETs, {slow} probes late behind them"
    );
    sup.shutdown().await;
}
