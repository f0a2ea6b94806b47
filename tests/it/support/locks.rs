//! Tasks taking one lock in turn through a failover, and what they saw: each fencing token in
//! hand-out order, and when two of them held the lock at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use redis_supervisor::lock::LockManager;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// 8 tasks taking one lock in turn (acquire with a 500 ms TTL, waiting up to 1 s; hold; release),
/// recording every grant.
pub struct LockGrants {
    stop: Arc<AtomicBool>,
    handed: Arc<Mutex<Vec<(Instant, u64)>>>,
    overlaps: Arc<Mutex<Vec<Instant>>>,
    tasks: Vec<JoinHandle<()>>,
}

/// What the tasks saw, once stopped.
pub struct Granted {
    /// The fencing tokens, in hand-out order.
    pub tokens: Vec<u64>,
    /// When a task was granted the lock while another still held it.
    pub overlaps: Vec<Instant>,
}

impl LockGrants {
    /// Starts the tasks on `key`, each holding the lock for `hold`.
    pub fn start(locks: &LockManager, key: &str, hold: Duration) -> LockGrants {
        let stop = Arc::new(AtomicBool::new(false));
        let handed: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
        let holders = Arc::new(AtomicU32::new(0));
        let overlaps: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let tasks = (0..8)
            .map(|_| {
                let (locks, key) = (locks.clone(), key.to_string());
                let (stop, handed) = (stop.clone(), handed.clone());
                let (holders, overlaps) = (holders.clone(), overlaps.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let ttl = Duration::from_millis(500);
                        let Ok(guard) = locks.acquire(&key, ttl, Duration::from_secs(1)).await
                        else {
                            // Busy, or Redis failing over: try again.
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            continue;
                        };
                        let at = Instant::now();
                        if holders.fetch_add(1, Ordering::SeqCst) > 0 {
                            overlaps.lock().await.push(at);
                        }
                        handed.lock().await.push((at, guard.token()));
                        tokio::time::sleep(hold).await;
                        holders.fetch_sub(1, Ordering::SeqCst);
                        let _ = guard.release().await;
                    }
                })
            })
            .collect();
        LockGrants {
            stop,
            handed,
            overlaps,
            tasks,
        }
    }

    /// When the first grant after `t` was handed out, if there was one yet.
    pub async fn first_after(&self, t: Instant) -> Option<Instant> {
        let handed = self.handed.lock().await;
        handed.iter().map(|(at, _)| *at).filter(|at| *at > t).min()
    }

    /// The token of the first grant after `t`, if there was one yet.
    pub async fn first_token_after(&self, t: Instant) -> Option<u64> {
        let handed = self.handed.lock().await;
        handed
            .iter()
            .filter(|(at, _)| *at > t)
            .min_by_key(|(at, _)| *at)
            .map(|(_, token)| *token)
    }

    /// Waits (up to `within`) for the first grant after `t`.
    pub async fn wait_first_after(&self, t: Instant, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        loop {
            if let Some(at) = self.first_after(t).await {
                return at;
            }
            assert!(
                Instant::now() < deadline,
                "no lock granted within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the tasks (each finishes its turn).
    pub async fn stop(self) -> Granted {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("a lock task panicked");
        }
        let mut handed = self.handed.lock().await.clone();
        handed.sort_by_key(|(at, _)| *at);
        Granted {
            tokens: handed.into_iter().map(|(_, token)| token).collect(),
            overlaps: self.overlaps.lock().await.clone(),
        }
    }
}

impl Granted {
    /// Asserts that at least `min` tokens were handed out, each higher than the one before.
    pub fn assert_strictly_increasing(&self, min: usize) {
        let tokens = &self.tokens;
        assert!(tokens.len() >= min, "the lock tasks ran: {}", tokens.len());
        for pair in tokens.windows(2) {
            assert!(
                pair[1] > pair[0],
                "token {} handed out after {}: {tokens:?}",
                pair[1],
                pair[0]
            );
        }
    }

    /// Asserts that two tasks held the lock at once only within one of `windows`.
    pub fn assert_overlaps_within(&self, windows: &[(Instant, Instant)]) {
        for at in &self.overlaps {
            assert!(
                windows.iter().any(|(from, to)| at >= from && at <= to),
                "two holders at once outside a failover"
            );
        }
    }
}
