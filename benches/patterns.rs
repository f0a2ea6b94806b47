//! The patterns' cost, side by side in one run against one fixture `redis-server`:
//!
//! - `cache.get` (a hit, a 64-byte JSON value decoded into a struct) vs the same by hand:
//!   `RedisHandle::get` + `serde_json::from_slice` (target ≥ 0.95 ×);
//! - `limiter.check` vs the same GCRA script run with `redis::Script` on a raw redis-rs
//!   `MultiplexedConnection` (target ≥ 0.95 ×);
//! - `sessions.get` (a live session, 64-byte JSON data) vs the same `EVALSHA` through
//!   `RedisHandle::cmd` + `serde_json` (target ≥ 0.95 ×);
//! - `locks.try_acquire` + `release` vs the same two `EVALSHA`s through `RedisHandle::cmd`
//!   (target ≥ 0.95 ×);
//! - `get_or_load` of one cold key under 1000 concurrent callers: loader calls (must be 1) and
//!   the time until all 1000 have the value.
//!
//! ```text
//! cargo bench --bench patterns             # full: 5 rounds × 1 s per pair and C, writes benches/results/patterns.md
//! cargo bench --bench patterns -- --quick  # 2 rounds × 0.15 s, writes nothing
//! ```
//!
//! Method: the two sides of each pair are interleaved in short slices (A B A B …, B first in odd
//! rounds) so machine noise hits both alike; each slice runs C tasks on the bench's 2-worker
//! runtime for a fixed time (a fifth of the round's time per side) after a short warm-up. Reported: median ops/s over rounds and the median of the per-round
//! ratios (pattern ÷ by hand). The bench fails if a single-flight run calls its loader more than
//! once.

#[path = "support/common.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Options, Table, si};
use redis::aio::MultiplexedConnection;
use redis_supervisor::cache::Cache;
use redis_supervisor::lock::LockManager;
use redis_supervisor::ratelimit::{Rate, RateLimiter};
use redis_supervisor::session::SessionStore;
use redis_supervisor::testing::RedisServer;
use redis_supervisor::{Config, RedisHandle, Supervisor};
use serde::{Deserialize, Serialize};

const CONCURRENCY: [usize; 3] = [1, 16, 64];
const KEYS: usize = 1000;
const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;
/// Alternating slices per side, pair, C and round.
const SLICES: u32 = 5;
/// A rate so high that every check is allowed (both sides run the same script path).
const RATE: u64 = 1_000_000_000;

/// About 64 bytes of JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Payload {
    id: u64,
    name: String,
    tags: Vec<String>,
}

/// One side of a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    CacheGet,
    ByHandGet,
    LimiterCheck,
    RawScript,
    SessionGet,
    ByHandSessionGet,
    LockCycle,
    ByHandLockCycle,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::CacheGet => "cache.get (hit)",
            Side::ByHandGet => "RedisHandle::get + serde_json",
            Side::LimiterCheck => "limiter.check",
            Side::RawScript => "redis::Script on raw MultiplexedConnection",
            Side::SessionGet => "sessions.get",
            Side::ByHandSessionGet => "EVALSHA via RedisHandle::cmd + serde_json",
            Side::LockCycle => "locks.try_acquire + release",
            Side::ByHandLockCycle => "2 × EVALSHA via RedisHandle::cmd",
        }
    }
}

#[derive(Clone)]
struct Clients {
    cache: Cache,
    handle: RedisHandle,
    limiter: RateLimiter,
    raw: MultiplexedConnection,
    script: Arc<redis::Script>,
    keys: Arc<Vec<String>>,
    sessions: SessionStore,
    session_ids: Arc<Vec<String>>,
    locks: LockManager,
    /// SHA1 of the session get, lock acquire and lock release scripts.
    shas: Arc<[String; 3]>,
}

impl Clients {
    async fn exec(&mut self, side: Side, i: usize) -> Result<(), String> {
        let key = &self.keys[i % KEYS];
        match side {
            Side::CacheGet => match self.cache.get::<Payload>(key).await {
                Ok(Some(_)) => Ok(()),
                other => Err(format!("cache.get: {other:?}")),
            },
            Side::ByHandGet => {
                let full = format!("c:{key}");
                let raw: Option<Vec<u8>> =
                    self.handle.get(&full).await.map_err(|e| e.to_string())?;
                let raw = raw.ok_or("miss")?;
                serde_json::from_slice::<Payload>(&raw).map_err(|e| e.to_string())?;
                Ok(())
            }
            Side::LimiterCheck => {
                let d = self.limiter.check(key).await.map_err(|e| e.to_string())?;
                if d.allowed {
                    Ok(())
                } else {
                    Err("denied".into())
                }
            }
            Side::SessionGet => {
                let id = &self.session_ids[i % KEYS];
                match self.sessions.get::<Payload>(id).await {
                    Ok(Some(_)) => Ok(()),
                    other => Err(format!("sessions.get: {other:?}")),
                }
            }
            Side::ByHandSessionGet => self.session_by_hand(i).await,
            Side::LockCycle => match self.locks.try_acquire(key, Duration::from_secs(10)).await {
                Ok(Some(g)) => g.release().await.map_err(|e| e.to_string()),
                Ok(None) => Ok(()), // another task holds this key right now
                Err(e) => Err(e.to_string()),
            },
            Side::ByHandLockCycle => self.lock_by_hand(key, i).await,
            Side::RawScript => {
                let full = format!("rl:{key}");
                let (allowed, _, _, _): (i64, String, String, String) = self
                    .script
                    .key(full)
                    .arg(RATE)
                    .arg(1)
                    .arg(1)
                    .invoke_async(&mut self.raw)
                    .await
                    .map_err(|e| e.to_string())?;
                if allowed == 1 {
                    Ok(())
                } else {
                    Err("denied".into())
                }
            }
        }
    }
}

impl Clients {
    async fn session_by_hand(&self, i: usize) -> Result<(), String> {
        let id = &self.session_ids[i % KEYS];
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.shas[0])
            .arg(1)
            .arg(format!("sess:s:{id}"))
            .arg(0)
            .arg("sess:u:")
            .arg(id);
        let got: Option<(String, String, i64)> =
            self.handle.cmd(cmd).await.map_err(|e| e.to_string())?;
        let (_, json, _) = got.ok_or("no session")?;
        serde_json::from_str::<Payload>(&json).map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn lock_by_hand(&self, key: &str, i: usize) -> Result<(), String> {
        let (lock, value) = (format!("lock:{key}"), format!("v{i}"));
        let mut acquire = redis::cmd("EVALSHA");
        acquire
            .arg(&self.shas[1])
            .arg(2)
            .arg(&lock)
            .arg(format!("lock.fence:{key}"))
            .arg(&value)
            .arg(10_000);
        let (got, _): (i64, i64) = self.handle.cmd(acquire).await.map_err(|e| e.to_string())?;
        if got == 1 {
            let mut release = redis::cmd("EVALSHA");
            release.arg(&self.shas[2]).arg(1).arg(&lock).arg(&value);
            let _: i64 = self.handle.cmd(release).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

async fn worker(
    mut clients: Clients,
    side: Side,
    mut i: usize,
    phase: Arc<AtomicU8>,
) -> Result<u64, String> {
    let mut ops = 0;
    loop {
        let p = phase.load(Ordering::Relaxed);
        if p == STOP {
            return Ok(ops);
        }
        clients.exec(side, i).await?;
        i = i.wrapping_add(7);
        if p == MEASURE {
            ops += 1;
        }
    }
}

/// ops/s of `side` with `c` tasks.
async fn measure(
    clients: &Clients,
    side: Side,
    c: usize,
    warmup: Duration,
    secs: Duration,
) -> Result<f64, String> {
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let tasks: Vec<_> = (0..c)
        .map(|t| tokio::spawn(worker(clients.clone(), side, t * 13, phase.clone())))
        .collect();
    tokio::time::sleep(warmup).await;
    let t0 = Instant::now();
    phase.store(MEASURE, Ordering::Relaxed);
    tokio::time::sleep(secs).await;
    phase.store(STOP, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    let mut ops = 0;
    for t in tasks {
        ops += t.await.map_err(|e| e.to_string())??;
    }
    Ok(ops as f64 / elapsed.as_secs_f64())
}

/// One cold key, 1000 concurrent `get_or_load` callers, a loader taking 20 ms: (loader calls,
/// time until every caller has the value).
async fn cold_key(cache: &Cache, round: usize) -> Result<(u64, Duration), String> {
    let calls = Arc::new(AtomicU64::new(0));
    let key = format!("cold:{round}");
    let start = Instant::now();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (cache, calls, key) = (cache.clone(), calls.clone(), key.clone());
            tokio::spawn(async move {
                cache
                    .get_or_load(&key, move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok::<_, std::io::Error>(Payload {
                            id: 1,
                            name: "cold".into(),
                            tags: vec![],
                        })
                    })
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    Ok((calls.load(Ordering::SeqCst), start.elapsed()))
}

fn main() {
    let opts = Options::from_args();
    common::run_bench("patterns", || run(&opts));
}

async fn setup(server: &RedisServer) -> Result<(Supervisor, Clients), String> {
    let url = server.url();
    let config = Config::builder()
        .url(url.clone())
        .name("bench")
        .build()
        .map_err(|e| e.to_string())?;
    let supervisor = Supervisor::start(config).await.map_err(|e| e.to_string())?;
    supervisor
        .wait_until_up(Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    let handle = supervisor.handle();
    let cache = Cache::builder(handle.clone())
        .namespace("c")
        .build()
        .map_err(|e| e.to_string())?;
    let limiter = RateLimiter::builder(handle.clone())
        .namespace("rl")
        .rate(Rate::new(RATE, Duration::from_secs(1000)))
        .build()
        .map_err(|e| e.to_string())?;
    let raw = redis::Client::open(format!("{url}/?protocol=resp3").as_str())
        .map_err(|e| e.to_string())?
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new().set_response_timeout(None),
        )
        .await
        .map_err(|e| e.to_string())?;
    let keys: Arc<Vec<String>> = Arc::new((0..KEYS).map(|i| format!("key:{i:04}")).collect());
    let payload = Payload {
        id: 7,
        name: "Ada Lovelace".into(),
        tags: vec!["admin".into(), "math".into()],
    };
    let pairs: Vec<(&String, &Payload)> = keys.iter().map(|k| (k, &payload)).collect();
    cache.set_many(&pairs).await.map_err(|e| e.to_string())?;
    let sessions = SessionStore::builder(handle.clone())
        .namespace("sess")
        .build()
        .map_err(|e| e.to_string())?;
    let mut session_ids = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        let s = sessions
            .create(&format!("user:{i}"), &payload)
            .await
            .map_err(|e| e.to_string())?;
        session_ids.push(s.id);
    }
    let locks = LockManager::new(handle.clone());
    // Load every script (EVAL on NOSCRIPT) so both sides run EVALSHA from the start.
    sessions
        .get::<Payload>(&session_ids[0])
        .await
        .map_err(|e| e.to_string())?;
    if let Some(g) = locks
        .try_acquire("warm", Duration::from_secs(1))
        .await
        .map_err(|e| e.to_string())?
    {
        g.release().await.map_err(|e| e.to_string())?;
    }
    let sha = |src: &str| redis::Script::new(src).get_hash().to_string();
    let [acquire, release, _] = redis_supervisor::lock::script_sources();
    let shas = Arc::new([
        sha(redis_supervisor::session::get_script_source()),
        sha(acquire),
        sha(release),
    ]);
    let clients = Clients {
        sessions,
        session_ids: Arc::new(session_ids),
        locks,
        shas,
        cache,
        handle,
        limiter,
        raw,
        script: Arc::new(redis::Script::new(
            redis_supervisor::ratelimit::script_source(),
        )),
        keys,
    };
    Ok((supervisor, clients))
}

async fn run(opts: &Options) -> Result<(), String> {
    let (rounds, warmup, secs) = if opts.quick {
        (2, Duration::from_millis(20), Duration::from_millis(150))
    } else {
        (5, Duration::from_millis(50), Duration::from_secs(1))
    };
    let server = RedisServer::start().await.map_err(|e| e.to_string())?;
    let (supervisor, clients) = setup(&server).await?;
    let pairs = [
        (Side::CacheGet, Side::ByHandGet),
        (Side::LimiterCheck, Side::RawScript),
        (Side::SessionGet, Side::ByHandSessionGet),
        (Side::LockCycle, Side::ByHandLockCycle),
    ];
    let mut ops: BTreeMap<(Side, usize), Vec<f64>> = BTreeMap::new();
    let mut ratios: BTreeMap<(Side, usize), Vec<f64>> = BTreeMap::new();
    let mut cold = Vec::new();
    eprintln!(
        "patterns: {rounds} rounds × {secs:?} per side and C{}",
        if opts.quick { " (quick)" } else { "" }
    );
    for round in 0..rounds {
        for &(pattern, by_hand) in &pairs {
            for &c in &CONCURRENCY {
                // Short alternating slices (A B A B …, B first in odd rounds): drift in the
                // machine's load hits both sides alike.
                let order = if round % 2 == 0 {
                    [pattern, by_hand]
                } else {
                    [by_hand, pattern]
                };
                let mut got: BTreeMap<Side, f64> = BTreeMap::new();
                for _ in 0..SLICES {
                    for side in order {
                        let v = measure(&clients, side, c, warmup, secs / SLICES).await?;
                        *got.entry(side).or_default() += v / f64::from(SLICES);
                    }
                }
                ratios
                    .entry((pattern, c))
                    .or_default()
                    .push(got[&pattern] / got[&by_hand]);
                for (side, v) in got {
                    ops.entry((side, c)).or_default().push(v);
                }
            }
        }
        let (calls, took) = cold_key(&clients.cache, round).await?;
        if calls != 1 {
            return Err(format!(
                "single-flight: the loader ran {calls} times for 1000 callers"
            ));
        }
        cold.push(took);
    }

    let mut out = String::new();
    let header = |w: &str| {
        let mut h = vec![w.to_string()];
        h.extend(CONCURRENCY.iter().map(|c| format!("C={c}")));
        h
    };
    let right = [false, true, true, true];
    let mut t = Table::new(
        &header("operation (ops/s; ratio = pattern ÷ by hand)"),
        &right,
    );
    for &(pattern, by_hand) in &pairs {
        for side in [by_hand, pattern] {
            let cells = CONCURRENCY
                .iter()
                .map(|c| si(common::median_f64(&ops[&(side, *c)])));
            t.row(
                std::iter::once(side.name().to_string())
                    .chain(cells)
                    .collect(),
            );
        }
        let cells = CONCURRENCY
            .iter()
            .map(|c| format!("**{:.2} ×**", common::median_f64(&ratios[&(pattern, *c)])));
        t.row(
            std::iter::once(format!("ratio {}", pattern.name()))
                .chain(cells)
                .collect(),
        );
    }
    out.push_str("#### Cache, rate limiter, sessions and locks — throughput, pattern vs the same by hand\n\n");
    out.push_str(&t.render());
    let mut t = Table::new(
        &[
            "get_or_load, one cold key, 1000 callers, 20 ms loader",
            "value",
        ],
        &[false, true],
    );
    t.row(vec![
        "loader calls per round".into(),
        "1 (every round)".into(),
    ]);
    t.row(vec![
        "all 1000 callers answered, median".into(),
        format!("{} ms", common::ms(common::median_duration(&cold))),
    ]);
    t.row(vec![
        "slowest round".into(),
        format!("{} ms", common::ms(common::max_duration(&cold))),
    ]);
    out.push_str("\n#### Single-flight\n\n");
    out.push_str(&t.render());
    out.push_str(&format!(
        "\n{} rounds; {}; load average {}\n",
        rounds,
        common::machine(),
        common::loadavg()
    ));
    println!("{out}");
    common::write_result(opts, "patterns.md", &out);
    supervisor.shutdown().await;
    Ok(())
}
