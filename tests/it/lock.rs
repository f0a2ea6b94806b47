//! Locks against real redis-servers: 64 tasks contending for one lock for 5 s (never two holders,
//! tokens strictly increasing), an expired holder that cannot touch the next holder's lock,
//! release in the background on drop, an ambiguous acquire cleaned up, bad inputs, and the
//! server gone.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis_supervisor::lock::LockManager;
use redis_supervisor::{Error, KeyTtl};
use tokio::time::Instant;

use crate::support::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_contenders_for_five_seconds_never_overlap() {
    let srv = server().await;
    let sup = supervisor_with(&srv, |b| b.key_prefix("app:")).await;
    let locks = LockManager::new(sup.handle());
    let holders = Arc::new(AtomicUsize::new(0));
    let last_token = Arc::new(Mutex::new(0u64));
    let acquisitions = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(5);
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (locks, holders, last_token, acquisitions) = (
                locks.clone(),
                holders.clone(),
                last_token.clone(),
                acquisitions.clone(),
            );
            tokio::spawn(async move {
                while Instant::now() < end {
                    let wait = Duration::from_millis(200);
                    let guard = match locks.acquire("one", Duration::from_secs(5), wait).await {
                        Ok(g) => g,
                        Err(Error::LockBusy { .. }) => continue,
                        Err(e) => panic!("acquire: {e}"),
                    };
                    assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                    {
                        let mut last = last_token.lock().unwrap();
                        assert!(guard.token() > *last, "{} after {}", guard.token(), *last);
                        *last = guard.token();
                    }
                    tokio::time::sleep(Duration::from_micros(fastrand::u64(0..500))).await;
                    assert_eq!(holders.fetch_sub(1, Ordering::SeqCst), 1, "two holders");
                    acquisitions.fetch_add(1, Ordering::Relaxed);
                    guard.release().await.expect("release");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let n = acquisitions.load(Ordering::Relaxed);
    assert!(n > 100, "only {n} acquisitions in 5 s");
    let r = sup.handle();
    let left: Option<String> = r.get("lock:one").await.unwrap();
    assert_eq!(left, None, "every holder released");
    let fence: Option<u64> = r.get("lock.fence:one").await.unwrap();
    assert!(fence >= Some(n), "{fence:?} < {n}");
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_holder_cannot_release_or_extend_the_next_holders_lock() {
    let srv = server().await;
    let sup = supervisor(&srv).await;
    let locks = LockManager::with_namespace(sup.handle(), "jobs").unwrap();
    let old = locks
        .try_acquire("invoice:42", Duration::from_millis(100))
        .await
        .unwrap()
        .expect("free");
    assert_eq!(old.key(), "jobs:invoice:42");
    // Its 100 ms are up once the server no longer has the key.
    let r = sup.handle();
    poll_until("the old holder's lock expired", SOON, async || {
        r.ttl("jobs:invoice:42").await.unwrap() == KeyTtl::Missing
    })
    .await;
    let new = locks
        .acquire(
            "invoice:42",
            Duration::from_secs(30),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    assert!(new.token() > old.token());
    let e = old.extend(Duration::from_secs(60)).await.unwrap_err();
    assert!(
        matches!(&e, Error::LockLost { key } if key == "jobs:invoice:42"),
        "{e}"
    );
    let e = old.release().await.unwrap_err();
    assert!(matches!(e, Error::LockLost { .. }), "{e}");
    // The new holder's lock is intact: still held, TTL untouched by the old extend.
    assert!(
        locks
            .try_acquire("invoice:42", Duration::from_secs(1))
            .await
            .unwrap()
            .is_none()
    );
    match sup.handle().ttl("jobs:invoice:42").await.unwrap() {
        KeyTtl::Expires(t) => assert!(t <= Duration::from_secs(30), "{t:?}"),
        other => panic!("{other:?}"),
    }
    new.extend(Duration::from_secs(60)).await.unwrap();
    match sup.handle().ttl("jobs:invoice:42").await.unwrap() {
        KeyTtl::Expires(t) => assert!(t > Duration::from_secs(30), "{t:?}"),
        other => panic!("{other:?}"),
    }
    new.release().await.unwrap();
    assert!(
        locks
            .try_acquire("invoice:42", Duration::from_secs(1))
            .await
            .unwrap()
            .is_some()
    );
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_guard_is_released_in_the_background_and_inputs_are_checked() {
    let srv = server().await;
    let sup = supervisor(&srv).await;
    let locks = LockManager::new(sup.handle());
    let guard = locks
        .try_acquire("k", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert!(
        locks
            .try_acquire("k", Duration::from_secs(60))
            .await
            .unwrap()
            .is_none()
    );
    let t = Instant::now();
    drop(guard);
    // Measured: 16 µs (beside the rest of the suite). A drop that waited for the release would
    // take a round trip to the server; the bound leaves room for a preempted thread.
    assert!(t.elapsed() < Duration::from_millis(250), "drop blocked");
    let deadline = Instant::now() + SOON;
    loop {
        if let Some(g) = locks
            .try_acquire("k", Duration::from_secs(60))
            .await
            .unwrap()
        {
            g.release().await.unwrap();
            break;
        }
        assert!(Instant::now() < deadline, "never released");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A zero wait is one try; Duration::MAX waits saturate; a TTL of Duration::MAX saturates.
    let held = locks
        .try_acquire("k", Duration::MAX)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(sup.handle().ttl("lock:k").await.unwrap(), KeyTtl::Expires(t) if t > Duration::from_secs(86400 * 365 * 50))
    );
    let e = locks
        .acquire("k", Duration::from_secs(1), Duration::ZERO)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::LockBusy { key, .. } if key == "lock:k"),
        "{e}"
    );
    held.release().await.unwrap();
    let g = locks
        .acquire("k", Duration::from_secs(1), Duration::MAX)
        .await
        .unwrap();
    g.release().await.unwrap();
    // Bad inputs are typed errors naming the argument; the empty key is a key like any other.
    let e = locks.try_acquire("k", Duration::ZERO).await.unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(m) if m.contains("ttl")),
        "{e}"
    );
    let huge = "x".repeat(70_000);
    let e = locks
        .try_acquire(&huge, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(m) if m.contains("key")),
        "{e}"
    );
    let g = locks
        .try_acquire("", Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    let e = g.extend(Duration::ZERO).await.unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    g.release().await.unwrap();
    assert!(LockManager::with_namespace(sup.handle(), "").is_err());
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_acquire_is_cleaned_up_and_a_gone_server_is_unavailable() {
    let mut srv = server().await;
    let deadline = Duration::from_millis(300);
    let sup = supervisor_with(&srv, |b| b.command_timeout(deadline)).await;
    let locks = LockManager::new(sup.handle());
    // Warm the scripts so the paused server gets the EVALSHA itself.
    let g = locks
        .try_acquire("amb", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    g.release().await.unwrap();
    srv.pause().unwrap();
    let short = LockManager::new(sup.handle().with_timeout(Duration::from_millis(100)));
    let e = short
        .try_acquire("amb", Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(e.is_ambiguous(), "{e}");
    srv.resume().unwrap();
    // The SET ran after the resume, and so did the cleanup queued behind it: the lock is free
    // (without the cleanup it would be held for 60 s).
    let deadline_free = Instant::now() + Duration::from_secs(2);
    loop {
        let got = locks
            .try_acquire("amb", Duration::from_secs(1))
            .await
            .unwrap();
        if let Some(g) = got {
            g.release().await.unwrap();
            break;
        }
        assert!(
            Instant::now() < deadline_free,
            "the ambiguous acquire left the lock held"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let held = locks
        .try_acquire("gone", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let _events = kill_until_down(&mut srv, &sup).await;
    let slack = deadline + Duration::from_millis(500);
    let t = Instant::now();
    let e = locks
        .acquire("gone", Duration::from_secs(1), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        e.is_unavailable() && t.elapsed() < slack,
        "{e} after {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let e = locks
        .try_acquire("gone", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(e.is_unavailable() && t.elapsed() < slack, "{e}");
    let e = held.extend(Duration::from_secs(1)).await.unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    let t = Instant::now();
    let e = held.release().await.unwrap_err();
    assert!(e.is_unavailable() && t.elapsed() < slack, "{e}");
    sup.shutdown().await;
}
