//! Restart intensity, giving up, and bounded waiting, against real servers (and the fault proxy
//! for a server that accepts and then drops every connection).

use std::time::Duration;

use redis_supervisor::testing::{Fault, FaultProxy};
use redis_supervisor::{Availability, Config, Error, EventKind, EventsError, Supervisor};
use tokio::time::Instant;

use crate::support::helpers::*;

/// A server that accepts and then drops every connection after ~50 ms: the delays grow to the
/// cap and stay there, connect attempts per minute stay bounded, and a RestartStorm is raised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_then_drop_raises_a_restart_storm() {
    let srv = server().await;
    let upstream = format!("127.0.0.1:{}", srv.port()).parse().unwrap();
    let proxy = FaultProxy::start(upstream).await.unwrap();
    let cap = Duration::from_millis(300);
    let config = Config::builder()
        .url(proxy.url())
        .backoff_base(Duration::from_millis(10))
        .backoff_max(cap)
        .restart_intensity(3)
        .restart_window(Duration::from_secs(60))
        .stable_period(Duration::from_secs(2))
        .build()
        .unwrap();
    let sup = Supervisor::start(config).await.unwrap();
    sup.wait_until_up(SOON).await.unwrap();
    let mut events = sup.subscribe();
    proxy.set_fault(Fault::CloseAfter(Duration::from_millis(50)));
    let accepted_before = proxy.connections_accepted();
    let start = Instant::now();

    let mut delays = Vec::new();
    let mut storm = None;
    let mut degraded_while_storming = false;
    while start.elapsed() < Duration::from_secs(4) {
        let e = match tokio::time::timeout(SOON, events.recv()).await {
            Ok(Ok(e)) => e,
            Ok(Err(EventsError::Lagged { .. })) => continue,
            other => panic!("{other:?}"),
        };
        match (&e.kind, &e.state) {
            (
                EventKind::RestartStorm {
                    restarts,
                    window_ms,
                },
                _,
            ) => {
                assert!(*restarts > 3 && *window_ms == 60_000, "{e:?}");
                storm.get_or_insert(delays.len());
            }
            (_, Availability::Down { retry_in, .. }) => delays.push(*retry_in),
            (_, Availability::Degraded { reason }) if storm.is_some() => {
                assert!(reason.contains("restart storm"), "{reason}");
                degraded_while_storming = true;
            }
            (_, Availability::Up { .. }) => {
                assert!(
                    storm.is_none(),
                    "a flapping connection is never plain Up during a storm"
                )
            }
            _ => {}
        }
    }
    let elapsed = start.elapsed();
    let storm_at = storm.expect("a RestartStorm event was raised");
    assert!(
        degraded_while_storming,
        "a connection that comes up in a storm is Degraded"
    );
    // Once storming, every delay is at the cap (± 20 % jitter).
    for d in &delays[storm_at..] {
        assert!(
            *d >= cap.mul_f64(0.79),
            "delay below the cap during the storm: {delays:?}"
        );
    }
    for d in &delays {
        assert!(
            *d <= cap.mul_f64(1.21),
            "delay above cap + jitter: {delays:?}"
        );
    }
    // Bounded attempts: at most one per 0.8 × cap after the storm began, plus the ramp-up.
    let attempts = proxy.connections_accepted() - accepted_before;
    let per_minute = attempts as f64 * 60.0 / elapsed.as_secs_f64();
    let ceiling = 60.0 / (cap.as_secs_f64() * 0.8) + 60.0 / elapsed.as_secs_f64() * 10.0;
    assert!(
        per_minute <= ceiling,
        "{attempts} attempts in {elapsed:?} = {per_minute:.0}/min (ceiling {ceiling:.0})"
    );

    // Healed: once stable for the stable period, the storm is over and the state is Up.
    proxy.set_fault(Fault::Pass);
    let seen = events_until(&mut events, |s| matches!(s, Availability::Up { .. })).await;
    assert!(
        seen.last().unwrap().reason.contains("stable again"),
        "{:?}",
        seen.last()
    );
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gives_up_after_max_attempts_and_fails_waiting_commands() {
    let mut srv = server().await;
    let sup = supervisor_with(&srv, |b| {
        b.max_attempts(Some(3))
            .command_timeout(Duration::from_secs(30))
    })
    .await;
    let r = sup.handle();
    let mut events = kill_until_down(&mut srv, &sup).await;
    // Commands waiting with a 30 s deadline are failed at once when the supervisor gives up.
    let waiting = spawn_gets(&r, 5);
    let start = Instant::now();
    let seen = events_until(&mut events, |s| matches!(s, Availability::GaveUp { .. })).await;
    let Availability::GaveUp { attempts, error } = &seen.last().unwrap().state else {
        unreachable!()
    };
    assert_eq!(*attempts, 3);
    assert!(error.contains("refused"), "{error}");
    for w in waiting {
        match w.await.unwrap() {
            Err(Error::Unavailable { reason, .. }) => {
                assert!(reason.contains("gave up"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(start.elapsed() < Duration::from_secs(10));
    // Final: a server coming back is not retried; new commands fail at once.
    srv.restart().await.unwrap();
    let t = Instant::now();
    assert!(r.ping().await.unwrap_err().is_unavailable());
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(matches!(sup.availability(), Availability::GaveUp { .. }));
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_is_bounded_and_the_rest_is_overloaded() {
    let mut srv = server().await;
    let sup = supervisor_with(&srv, |b| {
        b.max_waiting(10).command_timeout(Duration::from_secs(30))
    })
    .await;
    let r = sup.handle();
    let _events = kill_until_down(&mut srv, &sup).await;
    let waiting = spawn_gets(&r, 10);
    wait_offline_waiting(&sup, 10).await;
    let t = Instant::now();
    let e = r.get::<_, Option<String>>("k").await.unwrap_err();
    assert!(matches!(e, Error::Overloaded { limit: 10 }), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(1), "at once");
    assert!(e.is_unavailable() && e.is_retryable());
    srv.restart().await.unwrap();
    for w in waiting {
        assert_eq!(w.await.unwrap().unwrap(), None);
    }
    sup.shutdown().await;
}
