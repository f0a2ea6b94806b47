//! Fault tests against real redis-server processes: kill -9 and restart, backoff growth and reset,
//! offline behaviour (wait and fail-fast), and 64 tasks issuing commands through a crash.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis_supervisor::{Availability, Error, OfflinePolicy, Supervisor};
use tokio::time::Instant;

use crate::support::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_restart_recovers_with_ordered_events() {
    let mut srv = server().await;
    let sup = supervisor(&srv).await;
    let r = sup.handle();
    r.set("before", "1").await.unwrap();
    let mut events = sup.subscribe();

    srv.kill().await.unwrap();
    let mut down = events_until(&mut events, |s| matches!(s, Availability::Down { .. })).await;
    // The Up that wait_until_up saw may still be in flight to this fresh subscriber.
    down.retain(|e| !matches!(e.state, Availability::Up { .. }));
    // Let a few reconnect attempts fail, then bring the server back on the same port.
    let retrying = events_until(&mut events, |s| {
        matches!(s, Availability::Connecting { .. })
    })
    .await;
    srv.restart().await.unwrap();
    let seen = events_until(&mut events, |s| matches!(s, Availability::Up { .. })).await;

    // The whole sequence: Down, then (Connecting, Down)*, Connecting, Up; seq without gaps.
    let all: Vec<_> = down.iter().chain(&retrying).chain(&seen).collect();
    let names: Vec<&str> = all.iter().map(|e| e.state.name()).collect();
    assert_eq!(names.first(), Some(&"down"), "{names:?}");
    assert_eq!(&names[names.len() - 2..], ["connecting", "up"], "{names:?}");
    for pair in names.windows(2) {
        let ok = matches!(
            (pair[0], pair[1]),
            ("down", "connecting") | ("connecting", "down") | ("connecting", "up")
        );
        assert!(ok, "unexpected transition {pair:?} in {names:?}");
    }
    for pair in all.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "gap in event sequence");
        assert!(pair[1].at >= pair[0].at);
    }
    // The current state equals the last event.
    assert_eq!(sup.availability(), all.last().unwrap().state);
    assert!(sup.restarts() >= 1);

    // Commands work again without any action by the caller (the data is gone: no persistence).
    let v: Option<String> = r.get("before").await.unwrap();
    assert_eq!(v, None);
    r.set("after", "2").await.unwrap();
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_delays_grow_to_the_cap() {
    let mut srv = server().await;
    let base = Duration::from_millis(20);
    let cap = Duration::from_millis(320);
    let sup = supervisor_with(&srv, |b| b.backoff_base(base).backoff_max(cap)).await;
    let policy = sup.config().backoff();
    let mut events = sup.subscribe();
    srv.kill().await.unwrap();

    // Collect 9 failed attempts: each Down says how long until the next attempt.
    let mut delays = Vec::new();
    let mut down_at = None;
    let mut gaps = Vec::new();
    while delays.len() < 9 {
        let e = events_until(&mut events, |_| true).await.pop().unwrap();
        match e.state {
            Availability::Down { retry_in, .. } => {
                delays.push(retry_in);
                down_at = Some((e.at, retry_in));
            }
            Availability::Connecting { .. } => {
                // Timed by the events' own stamps: when this test received them would add
                // the jitter of its scheduling.
                if let Some((at, retry_in)) = down_at.take() {
                    gaps.push((e.at.duration_since(at).expect("stamped in order"), retry_in));
                }
            }
            // The Up that wait_until_up saw may still be in flight to this fresh subscriber.
            Availability::Up { .. } if delays.is_empty() => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // Nominal delays 20, 40, 80, 160, 320, 320, … each within ±jitter.
    for (i, d) in delays.iter().enumerate() {
        let nominal = policy.nominal(i as u32);
        assert!(
            *d >= nominal.mul_f64(1.0 - policy.jitter)
                && *d <= nominal.mul_f64(1.0 + policy.jitter),
            "attempt {i}: {d:?} vs nominal {nominal:?} ({delays:?})"
        );
        assert!(*d <= policy.ceiling());
    }
    for w in delays[..5].windows(2) {
        assert!(w[1] > w[0], "delays must grow until the cap: {delays:?}");
    }
    // The supervisor really waits (never retries early).
    for (gap, retry_in) in gaps {
        assert!(
            gap + Duration::from_millis(5) >= retry_in,
            "retried after {gap:?}, promised {retry_in:?}"
        );
    }
    sup.shutdown().await;
}

/// A server that comes back is served again long before the backoff step ends: while its port
/// refuses connections the lane watches it, and attempts once it accepts (after a pause of at
/// most 50 ms). With a 3 s step, recovery (from the server answering PING to the first GET
/// answered) measured 30–80 ms; without the watch it would be the rest of the step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_server_is_served_before_the_backoff_step_ends() {
    let mut srv = server().await;
    let step = Duration::from_secs(3);
    let sup = supervisor_with(&srv, |b| b.backoff_base(step).backoff_max(step)).await;
    let r = sup.handle().with_timeout(Duration::from_millis(20));
    let mut events = sup.subscribe();
    srv.kill().await.unwrap();
    // An attempt refused: the next full attempt is due a whole step later.
    let refused = events_until(&mut events, |s| {
        matches!(
            s,
            Availability::Down {
                kind: redis_supervisor::FailureKind::Refused,
                ..
            }
        )
    })
    .await;
    let Some(Availability::Down { retry_in, .. }) = refused.last().map(|e| e.state.clone()) else {
        unreachable!()
    };
    assert!(retry_in >= step.mul_f64(0.5), "{retry_in:?}");
    srv.restart().await.unwrap();
    let back = Instant::now();
    loop {
        if r.get::<_, Option<String>>("k").await.is_ok() {
            break;
        }
        assert!(back.elapsed() < step, "not served before the step ended");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = back.elapsed();
    eprintln!(
        "served again {} ms after the server answered PING (step {retry_in:?})",
        took.as_millis()
    );
    assert!(took < Duration::from_millis(800), "{took:?}");
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_resets_only_after_the_stable_period() {
    let mut srv = server().await;
    let stable = Duration::from_millis(1500);
    let sup = supervisor_with(&srv, |b| {
        b.backoff_base(Duration::from_millis(20))
            .backoff_max(Duration::from_secs(2))
            .stable_period(stable)
    })
    .await;
    let mut events = sup.subscribe();

    let down_delay = |e: &redis_supervisor::AvailabilityEvent| match e.state {
        Availability::Down { retry_in, .. } => retry_in,
        _ => panic!("not down: {e:?}"),
    };

    // Three quick failures in a row (server down across them): 20, 40, 80 ms nominal.
    srv.kill().await.unwrap();
    for _ in 0..3 {
        events_until(&mut events, |s| matches!(s, Availability::Down { .. })).await;
    }
    srv.restart().await.unwrap();
    events_until(&mut events, |s| matches!(s, Availability::Up { .. })).await;

    // Dropped again right away (well inside the stable period): the delay keeps growing.
    srv.kill().await.unwrap();
    let d = events_until(&mut events, |s| matches!(s, Availability::Down { .. })).await;
    let unstable = down_delay(d.last().unwrap());
    assert!(
        unstable >= Duration::from_millis(128),
        "expected >= 160 ms nominal, got {unstable:?}"
    );

    // Up for longer than the stable period: the next failure starts from the base delay.
    srv.restart().await.unwrap();
    events_until(&mut events, |s| matches!(s, Availability::Up { .. })).await;
    tokio::time::sleep(stable + Duration::from_millis(300)).await; // the condition under test
    srv.kill().await.unwrap();
    let d = events_until(&mut events, |s| matches!(s, Availability::Down { .. })).await;
    let after_stable = down_delay(d.last().unwrap());
    assert!(
        after_stable <= Duration::from_millis(24),
        "expected the 20 ms base, got {after_stable:?}"
    );
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_while_down_fail_unavailable_by_their_deadline() {
    let mut srv = server().await;
    let deadline = Duration::from_millis(300);
    let sup = supervisor_with(&srv, |b| b.command_timeout(deadline)).await;
    let r = sup.handle();
    let _events = kill_until_down(&mut srv, &sup).await;

    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let r = r.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                let res = if i % 2 == 0 {
                    r.get::<_, Option<String>>("k").await.map(drop)
                } else {
                    r.incr("n").await.map(drop)
                };
                (res, start.elapsed())
            })
        })
        .collect();
    for t in tasks {
        let (res, took) = t.await.unwrap();
        match res {
            Err(Error::Unavailable { reason, .. }) => {
                assert!(!reason.is_empty());
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert!(
            took >= deadline - Duration::from_millis(5),
            "gave up early: {took:?}"
        );
        assert!(
            took < deadline + Duration::from_millis(500),
            "too late: {took:?}"
        );
    }
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fast_policy_answers_at_once() {
    let mut srv = server().await;
    let sup = supervisor_with(&srv, |b| {
        b.offline_policy(OfflinePolicy::FailFast)
            .command_timeout(Duration::from_secs(5))
    })
    .await;
    let r = sup.handle();
    let _events = kill_until_down(&mut srv, &sup).await;
    let start = Instant::now();
    let e = r.get::<_, Option<String>>("k").await.unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    // "At once": far below the 5 s deadline.
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    srv.restart().await.unwrap();
    sup.wait_until_up(SOON).await.unwrap();
    r.set("k", "v").await.unwrap();
    sup.shutdown().await;
}

/// `with_offline_policy` overrides the configured policy for one handle (and what is built on
/// it), both ways; `with_timeout` keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_policy_per_handle() {
    let mut srv = server().await;
    let sup = supervisor_with(&srv, |b| b.command_timeout(Duration::from_millis(1500))).await;
    let waits = sup.handle();
    assert_eq!(waits.offline_policy(), OfflinePolicy::Wait);
    let fast = waits
        .with_offline_policy(OfflinePolicy::FailFast)
        .with_timeout(Duration::from_secs(5));
    assert_eq!(fast.offline_policy(), OfflinePolicy::FailFast);
    let limiter = redis_supervisor::ratelimit::RateLimiter::builder(fast.clone())
        .rate(redis_supervisor::ratelimit::Rate::per_second(10))
        .on_unavailable(redis_supervisor::ratelimit::OnUnavailable::Deny)
        .build()
        .unwrap();
    let _events = kill_until_down(&mut srv, &sup).await;

    let start = Instant::now();
    let e = fast.get::<_, Option<String>>("k").await.unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    let e = limiter.check("client").await.unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "fail-fast handle waited: {:?}",
        start.elapsed()
    );

    // The configured `wait` handle still waits out its deadline.
    let start = Instant::now();
    let e = waits.get::<_, Option<String>>("k").await.unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    assert!(
        start.elapsed() >= Duration::from_millis(1400),
        "the wait handle did not wait: {:?}",
        start.elapsed()
    );
    // Set back to `wait`, a handle waits (within its deadline) for the restart.
    let waiting = fast
        .with_offline_policy(OfflinePolicy::Wait)
        .with_timeout(Duration::from_secs(20));
    let pending = tokio::spawn(async move { waiting.set("k", "v").await });
    wait_offline_waiting(&sup, 1).await;
    assert!(!pending.is_finished(), "a waiting handle failed at once");
    srv.restart().await.unwrap();
    pending.await.unwrap().unwrap();
    assert_eq!(
        fast.get::<_, Option<String>>("k").await.unwrap().as_deref(),
        Some("v")
    );
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_starts_before_the_server() {
    // Reserve a port by starting and killing a fixture; nothing listens there now.
    let mut srv = server().await;
    srv.kill().await.unwrap();
    let sup = Supervisor::start(config(&srv, |b| b)).await.unwrap();
    let mut events = sup.subscribe();
    events_until(&mut events, |s| matches!(s, Availability::Down { .. })).await;
    let e = sup
        .wait_until_up(Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Unavailable { ref reason, .. } if reason.contains("refused")),
        "{e:?}"
    );
    srv.restart().await.unwrap();
    sup.wait_until_up(SOON).await.unwrap();
    sup.handle().set("k", "v").await.unwrap();
    sup.shutdown().await;
}

/// 64 tasks issue commands in a loop while the server is killed and restarted: every command
/// gets exactly one result no later than its deadline plus a margin, nothing panics, and service
/// resumes by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_through_a_crash() {
    let mut srv = server().await;
    let deadline = Duration::from_millis(500);
    let margin = Duration::from_millis(500);
    let sup = supervisor_with(&srv, |b| b.command_timeout(deadline)).await;
    let r = sup.handle();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let ok_after_restart = Arc::new(AtomicU64::new(0));
    let restarted = Arc::new(AtomicBool::new(false));

    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let (r, stop, ok, ok2, restarted) = (
                r.clone(),
                stop.clone(),
                ok.clone(),
                ok_after_restart.clone(),
                restarted.clone(),
            );
            tokio::spawn(async move {
                let mut answers = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let res = match i % 3 {
                        0 => r.get::<_, Option<String>>(format!("k{i}")).await.map(drop),
                        1 => r.set(format!("k{i}"), i).await,
                        _ => r.incr(format!("n{i}")).await.map(drop),
                    };
                    let took = start.elapsed();
                    assert!(took <= deadline + margin, "command took {took:?}: {res:?}");
                    answers += 1;
                    match res {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            if restarted.load(Ordering::Relaxed) {
                                ok2.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => assert!(
                            e.is_unavailable() || e.is_ambiguous(),
                            "unexpected error kind: {e:?}"
                        ),
                    }
                }
                answers
            })
        })
        .collect();

    let mut events = sup.subscribe();
    tokio::time::sleep(Duration::from_millis(200)).await; // let load build up
    srv.kill().await.unwrap();
    events_until(&mut events, |s| matches!(s, Availability::Down { .. })).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // commands pile up while down
    srv.restart().await.unwrap();
    events_until(&mut events, |s| matches!(s, Availability::Up { .. })).await;
    restarted.store(true, Ordering::Relaxed);
    let resume_deadline = Instant::now() + SOON;
    while ok_after_restart.load(Ordering::Relaxed) < 64 {
        assert!(Instant::now() < resume_deadline, "service did not resume");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut answers = 0;
    for t in tasks {
        answers += t.await.expect("no task panicked");
    }
    assert!(answers > 0 && ok.load(Ordering::Relaxed) > 0);
    assert!(sup.restarts() >= 1);
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolvable_host_is_down_with_a_dns_reason() {
    let config = redis_supervisor::Config::builder()
        .url("redis://nonexistent.invalid:6379")
        .backoff_base(Duration::from_millis(20))
        .backoff_max(Duration::from_millis(200))
        .build()
        .unwrap();
    let sup = Supervisor::start(config).await.unwrap();
    let mut events = sup.subscribe();
    let seen = events_until(&mut events, |s| matches!(s, Availability::Down { .. })).await;
    match &seen.last().unwrap().state {
        Availability::Down { kind, error, .. } => {
            assert_eq!(*kind, redis_supervisor::FailureKind::Dns, "{error}");
            assert!(
                error.contains("nonexistent") || error.contains("resolve"),
                "{error}"
            );
        }
        other => panic!("{other:?}"),
    }
    let e = sup
        .handle()
        .with_timeout(Duration::from_millis(100))
        .ping()
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Unavailable {
                kind: redis_supervisor::FailureKind::Dns,
                ..
            }
        ),
        "{e:?}"
    );
    sup.shutdown().await;
}
