//! Lanes (`Config::lanes(n)`, `REDIS_LANES`): n supervised connections behind one
//! `RedisHandle`, each command on the open lane with the fewest commands outstanding. Side by
//! side in one run against one fixture `redis-server`:
//!
//! 1. **Head of line**: 16 tasks GET 64-byte values through one client (per-GET latency in an
//!    HDR histogram), (a) alone and (b) while 2 more tasks loop `GET` of a 4 MiB value through
//!    the same client. Clients: `RedisHandle` with lanes = 1, 2, 4; raw redis-rs with one
//!    `MultiplexedConnection` shared by all 18 tasks; and the ideal, raw with the big GETs on a
//!    second `MultiplexedConnection`. Reported: the small GETs' p50/p99 alone and with the big
//!    ones, and with ÷ alone. Target: with 2 lanes, p50 with the big GETs ≤ 3 × p50 alone.
//! 2. **Throughput**: GET of 64-byte values over 10 000 keys at C = 1/16/64/256 tasks sharing
//!    one client, `RedisHandle` with lanes = 1, 2, 4 beside a raw `MultiplexedConnection` and
//!    the peers, redis-rs `ConnectionManager` and fred 10 (one client, defaults, RESP3) (ratios
//!    to raw, as `benches/throughput.rs` reports them).
//!
//! ```text
//! cargo bench --bench lanes                      # full: 7 + 5 rounds, writes benches/results/lanes.md
//! cargo bench --bench lanes -- --quick           # 2 short rounds each, writes nothing
//! cargo bench --bench lanes -- --lanes 1,2 --conc 16,256 --rounds 3 --part hol,throughput
//! cargo bench --bench lanes -- --part hol --big 1   # one big-GET task instead of 2
//! ```
//!
//! Method: the clients are interleaved in rounds (A B C …, then B C … A) so machine noise hits
//! all alike. Head of line: per client and round, alone, with the big GETs (twice as long),
//! alone again (symmetric around the loaded variant; the two alone slices are merged); reported
//! are medians over rounds and the medians of the per-round ratios, with their range over the
//! rounds. Throughput: per round, per C, every client in the round's order; each measurement
//! spawns C tasks, warms up, then counts ops over a fixed time; CPU per op is this process's
//! `getrusage` user+sys over the measurement divided by the ops. Every client speaks RESP3 (as
//! `RedisHandle` does); the raw connections have no response timeout. The bench checks with
//! `CLIENT LIST` that each handle runs as many connections as it has lanes.

#[path = "support/common.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use common::{Options, Table, err, parse_list, si};
use fred::bytes::Bytes;
use fred::prelude::{ClientLike, KeysInterface};
use hdrhistogram::Histogram;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis_supervisor::testing::RedisServer;
use redis_supervisor::{Config, RedisHandle, Supervisor};

const KEYS: usize = 10_000;
const SMALL_LEN: usize = 64;
const BIG_LEN: usize = 4 << 20;
const BIG_KEY: &str = "bench:big";
/// The small-GET tasks and the big-GET tasks of part 1.
const SMALL_TASKS: usize = 16;
const BIG_TASKS: usize = 2;
const LANES: [usize; 3] = [1, 2, 4];
const CONCURRENCY: [usize; 4] = [1, 16, 64, 256];
/// Step between the keys a task uses (prime, so tasks walk the whole key space).
const STRIDE: usize = 7919;
/// The issue's target: with 2 lanes, the small GETs' p50 with the big ones ≤ this × alone.
const TARGET: f64 = 3.0;

/// Phases of a measurement, shared with the tasks: warm-up (not counted), measured, stop.
const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// Nanoseconds, 1 ns .. 10 s, 2 significant digits (1 % resolution).
fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 2).expect("histogram")
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e3
}

/// A client of part 1 (head of line): where the small GETs go, and the big ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Hol {
    /// Raw redis-rs, one `MultiplexedConnection` for all.
    RawShared,
    /// Raw redis-rs, the big GETs on a second connection: the ideal.
    RawSplit,
    /// `RedisHandle` with this many lanes.
    Lanes(usize),
}

impl Hol {
    fn name(self) -> String {
        match self {
            Hol::RawShared => "raw, one MultiplexedConnection for all".to_string(),
            Hol::RawSplit => "raw, big GETs on a second connection (ideal)".to_string(),
            Hol::Lanes(n) => format!("RedisHandle, lanes = {n}"),
        }
    }
}

/// A client of part 2 (throughput).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Raw,
    Lanes(usize),
    Manager,
    Fred,
}

impl Kind {
    fn name(self) -> String {
        match self {
            Kind::Raw => "raw MultiplexedConnection".to_string(),
            Kind::Lanes(n) => format!("RedisHandle, lanes = {n}"),
            Kind::Manager => "redis-rs ConnectionManager".to_string(),
            Kind::Fred => "fred 10".to_string(),
        }
    }
}

/// One client, cloned into every task.
#[derive(Clone)]
enum Client {
    Handle(RedisHandle),
    Raw(MultiplexedConnection),
    Manager(ConnectionManager),
    Fred(fred::clients::Client),
}

impl Client {
    async fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
        match self {
            Client::Handle(h) => h.get(key).await.map_err(err),
            Client::Raw(c) => redis::cmd("GET").arg(key).query_async(c).await.map_err(err),
            Client::Manager(c) => redis::cmd("GET").arg(key).query_async(c).await.map_err(err),
            Client::Fred(c) => c
                .get::<Option<Bytes>, _>(key)
                .await
                .map(|v| v.map(|b| b.to_vec()))
                .map_err(err),
        }
    }
}

struct Timing {
    warmup: Duration,
    measure: Duration,
}

/// What one task measured.
struct TaskResult {
    hist: Histogram<u64>,
    ops: u64,
    errors: u64,
    first_error: Option<String>,
}

impl TaskResult {
    fn new() -> Self {
        TaskResult {
            hist: histogram(),
            ops: 0,
            errors: 0,
            first_error: None,
        }
    }
}

/// GETs `key_of(i)` one after another (expecting `len` bytes) until the phase says stop;
/// latency is recorded while measuring.
async fn worker(
    mut client: Client,
    keys: Arc<Vec<String>>,
    big: bool,
    mut i: usize,
    phase: Arc<AtomicU8>,
) -> TaskResult {
    let mut r = TaskResult::new();
    let want = if big { BIG_LEN } else { SMALL_LEN };
    loop {
        let p = phase.load(Ordering::Relaxed);
        if p == STOP {
            return r;
        }
        let key = if big { BIG_KEY } else { &keys[i % KEYS] };
        i = i.wrapping_add(STRIDE);
        let start = Instant::now();
        let result = client.get(key).await;
        let ns = start.elapsed().as_nanos() as u64;
        let result = match result {
            Ok(Some(v)) if v.len() == want => Ok(()),
            Ok(v) => Err(format!(
                "GET {key}: {:?} bytes, {want} expected",
                v.map(|v| v.len())
            )),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            r.errors += 1;
            r.first_error.get_or_insert(e);
        }
        if p == MEASURE {
            r.ops += 1;
            r.hist.saturating_record(ns.max(1));
        }
    }
}

/// The tasks' results merged, or their first error; with `need_one`, no GET completing while
/// measured is an error too.
async fn collect(
    tasks: Vec<tokio::task::JoinHandle<TaskResult>>,
    need_one: bool,
) -> Result<TaskResult, String> {
    let mut all = TaskResult::new();
    for t in tasks {
        let r = t.await.map_err(|e| format!("task panicked: {e}"))?;
        all.hist.add(&r.hist).map_err(err)?;
        all.ops += r.ops;
        all.errors += r.errors;
        if all.first_error.is_none() {
            all.first_error = r.first_error;
        }
    }
    if all.errors > 0 {
        return Err(format!(
            "{} errors, first: {}",
            all.errors,
            all.first_error.unwrap_or_default()
        ));
    }
    if need_one && all.ops == 0 {
        return Err("no GET completed".into());
    }
    Ok(all)
}

// ---------------------------------------------------------------------------------------------
// Part 1: head of line.

/// One head-of-line slice (or several of one variant, merged).
struct HolSample {
    secs: f64,
    small: Histogram<u64>,
    small_ops: u64,
    big: Histogram<u64>,
    big_ops: u64,
}

impl HolSample {
    fn merge(samples: &[HolSample]) -> Result<HolSample, String> {
        let (mut small, mut big) = (histogram(), histogram());
        for s in samples {
            small.add(&s.small).map_err(err)?;
            big.add(&s.big).map_err(err)?;
        }
        Ok(HolSample {
            secs: samples.iter().map(|s| s.secs).sum(),
            small,
            small_ops: samples.iter().map(|s| s.small_ops).sum(),
            big,
            big_ops: samples.iter().map(|s| s.big_ops).sum(),
        })
    }
}

/// The 16 small-GET tasks on `small`, and with `big` the 2 big-GET tasks on it.
async fn hol_slice(
    small: &Client,
    big: Option<&Client>,
    big_tasks: usize,
    keys: &Arc<Vec<String>>,
    timing: &Timing,
) -> Result<HolSample, String> {
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let small_tasks: Vec<_> = (0..SMALL_TASKS)
        .map(|t| {
            tokio::spawn(worker(
                small.clone(),
                keys.clone(),
                false,
                t * (KEYS / SMALL_TASKS),
                phase.clone(),
            ))
        })
        .collect();
    let big_tasks: Vec<_> = big
        .into_iter()
        .flat_map(|b| std::iter::repeat_n(b, big_tasks))
        .map(|b| tokio::spawn(worker(b.clone(), keys.clone(), true, 0, phase.clone())))
        .collect();
    tokio::time::sleep(timing.warmup).await;
    let t0 = Instant::now();
    phase.store(MEASURE, Ordering::Relaxed);
    tokio::time::sleep(timing.measure).await;
    phase.store(STOP, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let small = collect(small_tasks, true)
        .await
        .map_err(|e| format!("small GETs: {e}"))?;
    let big = if big_tasks.is_empty() {
        TaskResult::new()
    } else {
        collect(big_tasks, false)
            .await
            .map_err(|e| format!("big GETs: {e}"))?
    };
    Ok(HolSample {
        secs,
        small: small.hist,
        small_ops: small.ops,
        big: big.hist,
        big_ops: big.ops,
    })
}

/// Per client, one value per round.
#[derive(Default)]
struct HolSeries {
    alone_p50: Vec<f64>,
    alone_p99: Vec<f64>,
    alone_ops: Vec<f64>,
    with_p50: Vec<f64>,
    with_p99: Vec<f64>,
    with_ops: Vec<f64>,
    big_ops: Vec<f64>,
    big_p50: Vec<f64>,
}

// ---------------------------------------------------------------------------------------------
// Part 2: throughput.

#[derive(Debug, Clone, Copy)]
struct Sample {
    ops_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_op: f64,
}

async fn measure(
    client: &Client,
    c: usize,
    keys: &Arc<Vec<String>>,
    timing: &Timing,
) -> Result<Sample, String> {
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let tasks: Vec<_> = (0..c)
        .map(|t| {
            tokio::spawn(worker(
                client.clone(),
                keys.clone(),
                false,
                t * (KEYS / c.max(1)),
                phase.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(timing.warmup).await;
    let cpu0 = common::cpu_time();
    let t0 = Instant::now();
    phase.store(MEASURE, Ordering::Relaxed);
    tokio::time::sleep(timing.measure).await;
    phase.store(STOP, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    let cpu = common::cpu_time().saturating_sub(cpu0);
    let r = collect(tasks, true).await?;
    Ok(Sample {
        ops_per_s: r.ops as f64 / elapsed.as_secs_f64(),
        p50_us: us(&r.hist, 0.50),
        p99_us: us(&r.hist, 0.99),
        cpu_us_per_op: cpu.as_secs_f64() * 1e6 / r.ops as f64,
    })
}

type Results = BTreeMap<(usize, Kind), Vec<Sample>>;

// ---------------------------------------------------------------------------------------------

/// Names of the server's clients (`CLIENT LIST`).
async fn client_names(raw: &mut MultiplexedConnection) -> Result<Vec<String>, String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(raw)
        .await
        .map_err(err)?;
    Ok(list
        .lines()
        .filter_map(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("name="))
                .map(str::to_string)
        })
        .collect())
}

/// Checks that the handle named `name` runs `lanes` connections.
async fn check_lanes(
    raw: &mut MultiplexedConnection,
    name: &str,
    lanes: usize,
) -> Result<(), String> {
    let names = client_names(raw).await?;
    let got = if lanes == 1 {
        let me = format!("redis-supervisor:{name}");
        names.iter().filter(|n| **n == me).count()
    } else {
        let prefix = format!("redis-supervisor:{name}:lane");
        names.iter().filter(|n| n.starts_with(&prefix)).count()
    };
    if got != lanes {
        return Err(format!(
            "{name}: {got} connections on the server, {lanes} lanes configured (clients: {names:?})"
        ));
    }
    Ok(())
}

fn main() {
    let opts = Options::from_args();
    common::run_bench("lanes", || run(&opts));
}

fn med(v: &[f64]) -> f64 {
    common::median_f64(v)
}

fn ratio(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x / y).collect()
}

/// The median of the per-round ratios `a ÷ b` (bold if `bold`), then their range over rounds.
fn ratio_cell(a: &[f64], b: &[f64], bold: bool) -> String {
    let r = ratio(a, b);
    let (lo, hi) = r
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
    let m = format!("{:.2} ×", med(&r));
    let m = if bold { format!("**{m}**") } else { m };
    format!("{m} ({lo:.2}–{hi:.2})")
}

async fn run(opts: &Options) -> Result<(), String> {
    let default_rounds = if opts.quick { (2, 2) } else { (7, 5) };
    let rounds =
        parse_list(opts, "--rounds", |s| s.parse::<usize>().ok()).and_then(|v| v.first().copied());
    let hol_rounds = rounds.unwrap_or(default_rounds.0);
    let tp_rounds = rounds.unwrap_or(default_rounds.1);
    let lanes = parse_list(opts, "--lanes", |s| {
        s.parse::<usize>().ok().filter(|n| (1..=16).contains(n))
    })
    .unwrap_or(LANES.to_vec());
    let concurrency =
        parse_list(opts, "--conc", |s| s.parse().ok()).unwrap_or(CONCURRENCY.to_vec());
    let parts = parse_list(opts, "--part", |s| match s {
        "hol" | "throughput" => Some(s.to_string()),
        _ => None,
    })
    .unwrap_or(vec!["hol".to_string(), "throughput".to_string()]);
    let big_tasks = parse_list(opts, "--big", |s| s.parse::<usize>().ok())
        .and_then(|v| v.first().copied())
        .unwrap_or(BIG_TASKS);
    let (do_hol, do_tp) = (
        parts.iter().any(|p| p == "hol"),
        parts.iter().any(|p| p == "throughput"),
    );
    // Head of line: alone `measure`, with the big GETs 2 × `measure`, alone `measure`.
    let hol_timing = if opts.quick {
        Timing {
            warmup: Duration::from_millis(100),
            measure: Duration::from_millis(200),
        }
    } else {
        Timing {
            warmup: Duration::from_millis(300),
            measure: Duration::from_millis(500),
        }
    };
    let hol_with = Timing {
        warmup: hol_timing.warmup,
        measure: 2 * hol_timing.measure,
    };
    let tp_timing = if opts.quick {
        Timing {
            warmup: Duration::from_millis(50),
            measure: Duration::from_millis(150),
        }
    } else {
        Timing {
            warmup: Duration::from_millis(200),
            measure: Duration::from_secs(1),
        }
    };

    let server = RedisServer::start().await.map_err(err)?;
    let url = server.url();
    let resp3 = format!("{url}/?protocol=resp3");
    let client = redis::Client::open(resp3.as_str()).map_err(err)?;
    let plain = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    // The raw clients' two connections, and one for the bench's own commands.
    let raw_a = client
        .get_multiplexed_async_connection_with_config(&plain)
        .await
        .map_err(err)?;
    let raw_b = client
        .get_multiplexed_async_connection_with_config(&plain)
        .await
        .map_err(err)?;
    let mut control = client
        .get_multiplexed_async_connection_with_config(&plain)
        .await
        .map_err(err)?;

    // One supervisor per lanes value, each checked to run that many connections.
    let mut supervisors = Vec::new();
    let mut handles: BTreeMap<usize, RedisHandle> = BTreeMap::new();
    for &n in &lanes {
        let name = format!("lanes{n}");
        let config = Config::builder()
            .url(url.clone())
            .name(name.clone())
            .lanes(n)
            .build()
            .map_err(err)?;
        let supervisor = Supervisor::start(config).await.map_err(err)?;
        supervisor
            .wait_until_up(Duration::from_secs(10))
            .await
            .map_err(err)?;
        handles.insert(n, supervisor.handle());
        supervisors.push(supervisor);
        // Every lane connects on its own: wait (briefly) until all are there.
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            match check_lanes(&mut control, &name, n).await {
                Ok(()) => break,
                Err(e) if Instant::now() > until => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    // 10 000 keys holding 64-byte values, so every GET hits; and the 4 MiB value.
    let keys: Arc<Vec<String>> = Arc::new((0..KEYS).map(|i| format!("bench:key:{i:05}")).collect());
    let small_value = [b'v'; SMALL_LEN];
    for chunk in keys.chunks(1000) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.set(k, &small_value[..]).ignore();
        }
        pipe.query_async::<()>(&mut control).await.map_err(err)?;
    }
    let _: () = redis::cmd("SET")
        .arg(BIG_KEY)
        .arg(vec![b'B'; BIG_LEN])
        .query_async(&mut control)
        .await
        .map_err(err)?;

    eprintln!(
        "lanes: lanes {lanes:?}; head of line {hol_rounds} rounds × {} clients ({:?} alone, {:?} with \
         the big GETs, {:?} alone); throughput {tp_rounds} rounds × {} C × {} clients, {:?} warm-up + {:?}{}",
        lanes.len() + 2,
        hol_timing.measure,
        hol_with.measure,
        hol_timing.measure,
        concurrency.len(),
        lanes.len() + 1,
        tp_timing.warmup,
        tp_timing.measure,
        if opts.quick { " (quick)" } else { "" }
    );
    let load_before = common::loadavg();

    // Part 1.
    let mut hol_clients = vec![Hol::RawShared, Hol::RawSplit];
    hol_clients.extend(lanes.iter().map(|&n| Hol::Lanes(n)));
    let mut hol: BTreeMap<Hol, HolSeries> = BTreeMap::new();
    for round in 0..if do_hol { hol_rounds } else { 0 } {
        let mut order = hol_clients.clone();
        order.rotate_left(round % hol_clients.len());
        for &c in &order {
            let (small, big) = match c {
                Hol::RawShared => (Client::Raw(raw_a.clone()), Client::Raw(raw_a.clone())),
                Hol::RawSplit => (Client::Raw(raw_a.clone()), Client::Raw(raw_b.clone())),
                Hol::Lanes(n) => (
                    Client::Handle(handles[&n].clone()),
                    Client::Handle(handles[&n].clone()),
                ),
            };
            let mut alone = Vec::new();
            let mut with = None;
            for with_big in [false, true, false] {
                let (b, timing) = if with_big {
                    (Some(&big), &hol_with)
                } else {
                    (None, &hol_timing)
                };
                let s = hol_slice(&small, b, big_tasks, &keys, timing)
                    .await
                    .map_err(|e| format!("{} (big GETs: {with_big}): {e}", c.name()))?;
                eprintln!(
                    "round {} head of line {:<46} {:<10} small {:>9} GET/s  p50 {:>8.1} µs  p99 {:>8.1} µs{}",
                    round + 1,
                    c.name(),
                    if with_big { "+ big GETs" } else { "alone" },
                    si(s.small_ops as f64 / s.secs),
                    us(&s.small, 0.50),
                    us(&s.small, 0.99),
                    if with_big {
                        format!(
                            "  big {:.0} GET/s p50 {:.2} ms",
                            s.big_ops as f64 / s.secs,
                            us(&s.big, 0.50) / 1e3
                        )
                    } else {
                        String::new()
                    }
                );
                if with_big {
                    with = Some(s);
                } else {
                    alone.push(s);
                }
            }
            let alone = HolSample::merge(&alone)?;
            let with = with.ok_or("no loaded slice")?;
            let e = hol.entry(c).or_default();
            e.alone_p50.push(us(&alone.small, 0.50));
            e.alone_p99.push(us(&alone.small, 0.99));
            e.alone_ops.push(alone.small_ops as f64 / alone.secs);
            e.with_p50.push(us(&with.small, 0.50));
            e.with_p99.push(us(&with.small, 0.99));
            e.with_ops.push(with.small_ops as f64 / with.secs);
            e.big_ops.push(with.big_ops as f64 / with.secs);
            e.big_p50.push(us(&with.big, 0.50));
        }
    }

    // Part 2, with the peers.
    let manager =
        ConnectionManager::new_with_config(client.clone(), ConnectionManagerConfig::new())
            .await
            .map_err(err)?;
    let fred = {
        let mut config = fred::prelude::Config::from_url(&url).map_err(err)?;
        config.version = fred::types::RespVersion::RESP3;
        let fred = fred::prelude::Builder::from_config(config)
            .build()
            .map_err(err)?;
        fred.init().await.map_err(err)?;
        fred
    };
    let mut kinds = vec![Kind::Raw];
    kinds.extend(lanes.iter().map(|&n| Kind::Lanes(n)));
    kinds.extend([Kind::Manager, Kind::Fred]);
    let mut results: Results = BTreeMap::new();
    for round in 0..if do_tp { tp_rounds } else { 0 } {
        let mut order = kinds.clone();
        order.rotate_left(round % kinds.len());
        for &c in &concurrency {
            for &kind in &order {
                let client = match kind {
                    Kind::Raw => Client::Raw(raw_a.clone()),
                    Kind::Lanes(n) => Client::Handle(handles[&n].clone()),
                    Kind::Manager => Client::Manager(manager.clone()),
                    Kind::Fred => Client::Fred(fred.clone()),
                };
                let s = measure(&client, c, &keys, &tp_timing)
                    .await
                    .map_err(|e| format!("{} C={c}: {e}", kind.name()))?;
                eprintln!(
                    "round {} GET C={:<3} {:<26} {:>10} ops/s  p50 {:>7.1} µs  p99 {:>7.1} µs  cpu {:>5.2} µs/op",
                    round + 1,
                    c,
                    kind.name(),
                    si(s.ops_per_s),
                    s.p50_us,
                    s.p99_us,
                    s.cpu_us_per_op,
                );
                results.entry((c, kind)).or_default().push(s);
            }
        }
    }
    let load_after = common::loadavg();

    // Still one connection per lane after all that (no lane was lost and replaced silently
    // into a different count).
    for &n in &lanes {
        check_lanes(&mut control, &format!("lanes{n}"), n).await?;
    }
    for s in &supervisors {
        s.shutdown().await;
    }
    drop(server);

    let mut out = String::new();
    out.push_str(&format!(
        "## Lanes: head-of-line blocking and throughput{}\n\n\
         Produced by `cargo bench --bench lanes{}`. Machine: {}; load average before/after: \
         {load_before} / {load_after}. One fixture `redis-server` on loopback; tokio \
         multi-thread runtime with 2 workers; every client speaks RESP3; one supervisor per \
         lanes value (`Config::lanes(n)`), checked with `CLIENT LIST` to run n connections. \
         Ratios are the medians of the per-round ratios (range over the rounds in \
         parentheses).\n\n",
        if opts.quick { " (quick mode)" } else { "" },
        if opts.quick { " -- --quick" } else { "" },
        common::machine(),
    ));

    if do_hol {
        out.push_str(&format!(
            "### Head of line: {SMALL_TASKS} tasks GET {SMALL_LEN}-byte values, alone and beside \
             {big_tasks} tasks looping GET of a {} MiB value\n\n\
             All {} tasks go through one client. Each round, per client (in rotated order): \
             the small GETs alone {} s, with the big GETs {} s, alone {} s again (after \
             {} s warm-up each; the alone slices merged); per-GET latency of the small GETs \
             in an HDR histogram; medians over {hol_rounds} rounds. \"raw, one \
             MultiplexedConnection\" is what one connection gives; \"big GETs on a second \
             connection\" is the ideal a perfect split would reach (the big GETs still take \
             CPU from the same 2 cores). \"p50 with ÷ ideal\" is the small GETs' p50 with the \
             big ones over the ideal's in the same round. Target: with 2 lanes, p50 with ÷ \
             alone ≤ {TARGET} ×.\n\n",
            BIG_LEN >> 20,
            SMALL_TASKS + big_tasks,
            hol_timing.measure.as_secs_f64(),
            hol_with.measure.as_secs_f64(),
            hol_timing.measure.as_secs_f64(),
            hol_timing.warmup.as_secs_f64(),
        ));
        let mut t = Table::new(
            &[
                "client",
                "alone p50 µs",
                "alone p99 µs",
                "with big p50 µs",
                "with big p99 µs",
                "p50 with ÷ alone",
                "p99 with ÷ alone",
                "p50 with ÷ ideal",
            ],
            &[false, true, true, true, true, true, true, true],
        );
        let ideal = hol.get(&Hol::RawSplit);
        for c in &hol_clients {
            let Some(s) = hol.get(c) else { continue };
            t.row(vec![
                c.name(),
                format!("{:.1}", med(&s.alone_p50)),
                format!("{:.1}", med(&s.alone_p99)),
                format!("{:.1}", med(&s.with_p50)),
                format!("{:.1}", med(&s.with_p99)),
                ratio_cell(&s.with_p50, &s.alone_p50, *c == Hol::Lanes(2)),
                ratio_cell(&s.with_p99, &s.alone_p99, false),
                ideal.map_or("–".to_string(), |i| {
                    ratio_cell(&s.with_p50, &i.with_p50, false)
                }),
            ]);
        }
        out.push_str(&t.render());
        out.push('\n');
        let mut t = Table::new(
            &[
                "client",
                "small GET/s alone",
                "small GET/s with big",
                "big GET/s",
                "big GET p50 ms",
            ],
            &[false, true, true, true, true],
        );
        for c in &hol_clients {
            let Some(s) = hol.get(c) else { continue };
            t.row(vec![
                c.name(),
                si(med(&s.alone_ops)),
                si(med(&s.with_ops)),
                format!("{:.0}", med(&s.big_ops)),
                format!("{:.2}", med(&s.big_p50) / 1e3),
            ]);
        }
        out.push_str(&t.render());
        if let Some(s) = hol.get(&Hol::Lanes(2)) {
            let r = med(&ratio(&s.with_p50, &s.alone_p50));
            out.push_str(&format!(
                "\nTarget (lanes = 2: small-GET p50 with the big GETs ≤ {TARGET} × alone): \
                 {:.2} × — {}.\n",
                r,
                if r <= TARGET { "met" } else { "**not met**" }
            ));
        }
        out.push('\n');
    }

    if do_tp {
        let med_of = |key: (usize, Kind), f: fn(&Sample) -> f64| {
            med(&results
                .get(&key)
                .map(|s| s.iter().map(f).collect::<Vec<_>>())
                .unwrap_or_default())
        };
        let med_ratio = |key: (usize, Kind), f: fn(&Sample) -> f64| {
            let (Some(s), Some(raw)) = (results.get(&key), results.get(&(key.0, Kind::Raw))) else {
                return f64::NAN;
            };
            med(&s
                .iter()
                .zip(raw)
                .map(|(a, b)| f(a) / f(b))
                .collect::<Vec<_>>())
        };
        out.push_str(&format!(
            "### Throughput: GET of {SMALL_LEN}-byte values over {KEYS} keys, C tasks sharing \
             one client — relative to raw\n\n\
             Medians of {tp_rounds} interleaved rounds of {} s (after {} s warm-up) per \
             client and C; \"× raw\" is the median of the per-round ratios to the raw \
             `MultiplexedConnection` measured in the same round (as in `throughput.md`). CPU is \
             this process's user+sys time per op (the server is another process).\n\n",
            tp_timing.measure.as_secs_f64(),
            tp_timing.warmup.as_secs_f64(),
        ));
        let mut header = vec!["client".to_string()];
        header.extend(concurrency.iter().map(|c| format!("C={c}")));
        let mut right = vec![false];
        right.extend(concurrency.iter().map(|_| true));
        let mut t = Table::new(&header, &right);
        let mut row = vec![format!("{} (ops/s)", Kind::Raw.name())];
        row.extend(
            concurrency
                .iter()
                .map(|&c| si(med_of((c, Kind::Raw), |s| s.ops_per_s))),
        );
        t.row(row);
        for &k in kinds.iter().filter(|k| **k != Kind::Raw) {
            let mut row = vec![k.name()];
            row.extend(
                concurrency
                    .iter()
                    .map(|&c| format!("{:.2}", med_ratio((c, k), |s| s.ops_per_s))),
            );
            t.row(row);
        }
        out.push_str(&t.render());
        out.push_str("\n### Throughput — details\n\n");
        let mut t = Table::new(
            &[
                "client",
                "C",
                "ops/s",
                "× raw",
                "p50 µs",
                "p99 µs",
                "p99 × raw",
                "CPU µs/op",
            ],
            &[false, true, true, true, true, true, true, true],
        );
        for &c in &concurrency {
            for &k in &kinds {
                let key = (c, k);
                t.row(vec![
                    k.name(),
                    c.to_string(),
                    si(med_of(key, |s| s.ops_per_s)),
                    format!("{:.2}", med_ratio(key, |s| s.ops_per_s)),
                    format!("{:.1}", med_of(key, |s| s.p50_us)),
                    format!("{:.1}", med_of(key, |s| s.p99_us)),
                    format!("{:.2}", med_ratio(key, |s| s.p99_us)),
                    format!("{:.2}", med_of(key, |s| s.cpu_us_per_op)),
                ]);
            }
        }
        out.push_str(&t.render());
    }
    println!("{out}");
    common::write_result(opts, "lanes.md", &out);
    Ok(())
}
