//! Throughput and latency: GET and SET of 64-byte values over 10 000 keys, C tasks sharing one
//! client, against one fixture `redis-server`. Compares `RedisHandle` with raw redis-rs
//! `MultiplexedConnection`, redis-rs `ConnectionManager` and fred 10.
//!
//! ```text
//! cargo bench --bench throughput                        # full: 9 rounds × 1 s, writes benches/results/
//! cargo bench --bench throughput -- --quick             # 2 rounds × 0.15 s, writes nothing
//! cargo bench --bench throughput -- --with-recorder     # adds RedisHandle with a Prometheus recorder
//! cargo bench --bench throughput -- --only handle,raw --ops get --conc 256 --secs 10  # writes nothing
//! ```
//!
//! Method: the clients take turns within each round. At each (op, C) a round spawns C tasks per
//! client on a 2-worker multi-thread runtime; every task runs one command after another on its
//! clone of its client, but only during that client's turn (the others' tasks are parked). After
//! a warm-up turn each, the clients alternate in slices of 100 ms (each after a 10 ms settle that
//! is not counted; the order rotates at every pass) until each has had its measured time (1 s a
//! round). The machine's speed drifts by more than the differences measured here (seen: ×2 within
//! a minute), so turns this short put every client on the same machine. Counted: the commands
//! that complete during the client's own measured slices (as many are in flight when a slice
//! begins as when it ends); each task records per-op latency in an HDR histogram; client CPU per
//! op is `getrusage(RUSAGE_SELF)` user+sys over the client's slices divided by its ops (the
//! server is another process). Reported: medians over rounds, and the median of the per-round
//! ratios to the raw `MultiplexedConnection`.
//!
//! Every client speaks RESP3 (as `RedisHandle` does). The raw connection has no response timeout
//! (like the one the connection actor owns: deadlines are the handle's); `ConnectionManager` and
//! fred run with their defaults; fred is one client (no pool).

#[path = "support/common.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{Options, Table, parse_list, si};
use fred::bytes::Bytes;
use fred::prelude::{ClientLike, KeysInterface};
use hdrhistogram::Histogram;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis_supervisor::testing::RedisServer;
use redis_supervisor::{Config, RedisHandle, Supervisor};
use tokio::sync::Notify;

const KEYS: usize = 10_000;
const VALUE_LEN: usize = 64;
const CONCURRENCY: [usize; 4] = [1, 16, 64, 256];
/// Step between the keys a task uses (prime, so tasks walk the whole key space).
const STRIDE: usize = 7919;

/// A slice: the clients take turns of this length within a round, each after a short settle.
const SLICE: Duration = Duration::from_millis(100);
/// Between turns: the previous client's commands in flight finish, the next one's tasks start.
/// Not counted.
const SETTLE: Duration = Duration::from_millis(10);

/// The turn, shared with every task of a round: `phase << 8 | client`, where `client` is the
/// index (in the round's client list) of the one client whose tasks run now.
const WARMUP: u32 = 0;
const MEASURE: u32 = 1;
const STOP: u32 = 2;

fn turn(phase: u32, client: usize) -> u32 {
    phase << 8 | client as u32
}

/// `(phase, client)` of a turn made by [`turn`].
fn parts(turn: u32) -> (u32, usize) {
    (turn >> 8, (turn & 0xff) as usize)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Get,
    Set,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Get => "GET",
            Op::Set => "SET",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Raw,
    Handle,
    HandleRecorder,
    Manager,
    Fred,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Raw => "raw MultiplexedConnection",
            Kind::Handle => "RedisHandle",
            Kind::HandleRecorder => "RedisHandle + Prometheus recorder",
            Kind::Manager => "redis-rs ConnectionManager",
            Kind::Fred => "fred 10",
        }
    }
    fn short(self) -> &'static str {
        match self {
            Kind::Raw => "raw",
            Kind::Handle => "handle",
            Kind::HandleRecorder => "handle-recorder",
            Kind::Manager => "manager",
            Kind::Fred => "fred",
        }
    }
}

/// One client of each kind, cloned into every task.
#[derive(Clone)]
enum Client {
    Handle(RedisHandle),
    Raw(MultiplexedConnection),
    Manager(ConnectionManager),
    Fred(fred::clients::Client),
}

impl Client {
    async fn exec(&mut self, op: Op, key: &str, value: &Bytes) -> Result<(), String> {
        match (self, op) {
            (Client::Handle(h), Op::Get) => h
                .get::<_, Option<Vec<u8>>>(key)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            (Client::Handle(h), Op::Set) => h.set(key, &value[..]).await.map_err(|e| e.to_string()),
            (Client::Raw(c), Op::Get) => redis::cmd("GET")
                .arg(key)
                .query_async::<Option<Vec<u8>>>(c)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            (Client::Raw(c), Op::Set) => redis::cmd("SET")
                .arg(key)
                .arg(&value[..])
                .query_async::<()>(c)
                .await
                .map_err(|e| e.to_string()),
            (Client::Manager(c), Op::Get) => redis::cmd("GET")
                .arg(key)
                .query_async::<Option<Vec<u8>>>(c)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            (Client::Manager(c), Op::Set) => redis::cmd("SET")
                .arg(key)
                .arg(&value[..])
                .query_async::<()>(c)
                .await
                .map_err(|e| e.to_string()),
            (Client::Fred(c), Op::Get) => c
                .get::<Option<Bytes>, _>(key)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            (Client::Fred(c), Op::Set) => c
                .set::<(), _, _>(key, value.clone(), None, None, false)
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

/// One measurement of one client at one (op, C).
#[derive(Debug, Clone, Copy)]
struct Sample {
    ops: u64,
    ops_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_op: f64,
}

struct TaskResult {
    hist: Histogram<u64>,
    ops: u64,
    errors: u64,
    first_error: Option<String>,
}

/// The turn-taking shared by one round's tasks: the turn, and a wake-up per client.
struct Turns {
    now: AtomicU32,
    wake: Vec<Notify>,
}

impl Turns {
    fn set(&self, phase: u32, client: usize) {
        self.now.store(turn(phase, client), Ordering::SeqCst);
        if phase == STOP {
            self.wake.iter().for_each(Notify::notify_waiters);
        } else {
            self.wake[client].notify_waiters();
        }
    }
}

/// One task of client `me`: while it is `me`'s turn, one command after another; otherwise
/// parked. Counts the commands that complete during `me`'s measured turns.
async fn worker(
    mut client: Client,
    me: usize,
    op: Op,
    keys: Arc<Vec<String>>,
    value: Bytes,
    mut i: usize,
    turns: Arc<Turns>,
) -> TaskResult {
    // Nanoseconds, 1 ns .. 10 s, 2 significant digits (1 % resolution).
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 2).expect("histogram");
    let (mut ops, mut errors, mut first_error) = (0u64, 0u64, None);
    let measuring = turn(MEASURE, me);
    loop {
        let (phase, whose) = parts(turns.now.load(Ordering::Relaxed));
        if phase == STOP {
            break;
        }
        if whose != me {
            // Parked until our turn (registered before the second look, so no wake is missed).
            let woken = turns.wake[me].notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let (phase, whose) = parts(turns.now.load(Ordering::SeqCst));
            if phase != STOP && whose != me {
                woken.await;
            }
            continue;
        }
        let key = &keys[i % KEYS];
        i = i.wrapping_add(STRIDE);
        let start = Instant::now();
        let result = client.exec(op, key, &value).await;
        let ns = start.elapsed().as_nanos() as u64;
        if let Err(e) = result {
            errors += 1;
            first_error.get_or_insert(e);
        }
        // Counted when it completes inside a measured turn of ours: as many commands are in
        // flight when a turn begins (counted) as when it ends (not counted).
        if turns.now.load(Ordering::Relaxed) == measuring {
            ops += 1;
            hist.saturating_record(ns.max(1));
        }
    }
    TaskResult {
        hist,
        ops,
        errors,
        first_error,
    }
}

struct Timing {
    warmup: Duration,
    measure: Duration,
}

/// How many slices of about [`SLICE`] each client's measured time is cut into.
fn slices(timing: &Timing) -> u32 {
    (timing.measure.as_secs_f64() / SLICE.as_secs_f64())
        .round()
        .clamp(1.0, 1e6) as u32
}

/// One round at one (op, C): C tasks per client, all spawned for the round; the clients take
/// turns in slices of about [`SLICE`] (order rotated at every pass) until each has had
/// `timing.measure` in all, after a warm-up turn each. One sample per client, in `clients`' order.
async fn measure_round(
    clients: &[(Kind, Client)],
    op: Op,
    c: usize,
    keys: &Arc<Vec<String>>,
    value: &Bytes,
    timing: &Timing,
) -> Result<Vec<Sample>, String> {
    let n = clients.len();
    let turns = Arc::new(Turns {
        now: AtomicU32::new(turn(WARMUP, 0)),
        wake: (0..n).map(|_| Notify::new()).collect(),
    });
    let tasks: Vec<Vec<_>> = clients
        .iter()
        .enumerate()
        .map(|(me, (_, client))| {
            (0..c)
                .map(|t| {
                    tokio::spawn(worker(
                        client.clone(),
                        me,
                        op,
                        keys.clone(),
                        value.clone(),
                        t * (KEYS / c.max(1)),
                        turns.clone(),
                    ))
                })
                .collect()
        })
        .collect();
    for me in 0..n {
        turns.set(WARMUP, me);
        tokio::time::sleep(timing.warmup).await;
    }
    let slices = slices(timing);
    let slice = timing.measure / slices;
    let mut elapsed = vec![Duration::ZERO; n];
    let mut cpu = vec![Duration::ZERO; n];
    for pass in 0..slices as usize {
        for k in 0..n {
            let me = (k + pass) % n;
            turns.set(WARMUP, me);
            tokio::time::sleep(SETTLE).await;
            let cpu0 = common::cpu_time();
            let t0 = Instant::now();
            turns.set(MEASURE, me);
            tokio::time::sleep(slice).await;
            turns.set(WARMUP, me);
            elapsed[me] += t0.elapsed();
            cpu[me] += common::cpu_time().saturating_sub(cpu0);
        }
    }
    turns.set(STOP, 0);
    let mut samples = Vec::with_capacity(n);
    for (me, client_tasks) in tasks.into_iter().enumerate() {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 2).expect("histogram");
        let (mut ops, mut errors, mut first_error) = (0u64, 0u64, None);
        for t in client_tasks {
            let r = t.await.map_err(|e| format!("task panicked: {e}"))?;
            hist.add(&r.hist).map_err(|e| e.to_string())?;
            ops += r.ops;
            errors += r.errors;
            if first_error.is_none() {
                first_error = r.first_error;
            }
        }
        let kind = clients[me].0;
        if errors > 0 {
            return Err(format!(
                "{}: {errors} errors, first: {}",
                kind.name(),
                first_error.unwrap_or_default()
            ));
        }
        if ops == 0 {
            return Err(format!("{}: no operation completed", kind.name()));
        }
        samples.push(Sample {
            ops,
            ops_per_s: ops as f64 / elapsed[me].as_secs_f64(),
            p50_us: hist.value_at_quantile(0.50) as f64 / 1e3,
            p99_us: hist.value_at_quantile(0.99) as f64 / 1e3,
            cpu_us_per_op: cpu[me].as_secs_f64() * 1e6 / ops as f64,
        });
    }
    Ok(samples)
}

fn main() {
    let opts = Options::from_args();
    common::run_bench("throughput", || run(&opts));
}

type Results = BTreeMap<(Op, usize, Kind), Vec<Sample>>;

async fn run(opts: &Options) -> Result<(), String> {
    let rounds = if opts.quick { 2 } else { 9 };
    let mut timing = if opts.quick {
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
    let rounds = parse_list(opts, "--rounds", |s| s.parse().ok())
        .and_then(|v| v.first().copied())
        .unwrap_or(rounds);
    if let Some(secs) = parse_list(opts, "--secs", |s| s.parse::<f64>().ok()) {
        timing.measure = Duration::from_secs_f64(secs[0]);
    }
    let ops = parse_list(opts, "--ops", |s| match s {
        "get" => Some(Op::Get),
        "set" => Some(Op::Set),
        _ => None,
    })
    .unwrap_or(vec![Op::Get, Op::Set]);
    let concurrency =
        parse_list(opts, "--conc", |s| s.parse().ok()).unwrap_or(CONCURRENCY.to_vec());
    let mut kinds = vec![Kind::Raw, Kind::Handle, Kind::Manager, Kind::Fred];
    if opts.has("--with-recorder") {
        kinds.push(Kind::HandleRecorder);
    }
    if let Some(only) = parse_list(opts, "--only", |s| {
        [
            Kind::Raw,
            Kind::Handle,
            Kind::HandleRecorder,
            Kind::Manager,
            Kind::Fred,
        ]
        .into_iter()
        .find(|k| k.short() == s)
    }) {
        kinds = only;
    }

    let server = RedisServer::start().await.map_err(|e| e.to_string())?;
    let url = server.url();
    let resp3_url = format!("{url}/?protocol=resp3");

    // The four clients (one each), connected once.
    let mut clients: BTreeMap<Kind, Client> = BTreeMap::new();
    let mut supervisors = Vec::new();
    let redis_client = redis::Client::open(resp3_url.as_str()).map_err(|e| e.to_string())?;
    let raw = redis_client
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new().set_response_timeout(None),
        )
        .await
        .map_err(|e| e.to_string())?;
    for &kind in &kinds {
        let client = match kind {
            Kind::Raw => Client::Raw(raw.clone()),
            Kind::Handle | Kind::HandleRecorder => {
                let config = Config::builder()
                    .url(url.clone())
                    .name(kind.short())
                    .build()
                    .map_err(|e| e.to_string())?;
                let supervisor = if kind == Kind::HandleRecorder {
                    let recorder = redis_supervisor::metrics::prometheus_builder().build_recorder();
                    Supervisor::start_with_recorder(config, Arc::new(recorder)).await
                } else {
                    Supervisor::start(config).await
                }
                .map_err(|e| e.to_string())?;
                supervisor
                    .wait_until_up(Duration::from_secs(10))
                    .await
                    .map_err(|e| e.to_string())?;
                let handle = supervisor.handle();
                supervisors.push(supervisor);
                Client::Handle(handle)
            }
            Kind::Manager => Client::Manager(
                ConnectionManager::new_with_config(
                    redis_client.clone(),
                    ConnectionManagerConfig::new(),
                )
                .await
                .map_err(|e| e.to_string())?,
            ),
            Kind::Fred => {
                let mut config =
                    fred::prelude::Config::from_url(&url).map_err(|e| e.to_string())?;
                config.version = fred::types::RespVersion::RESP3;
                let client = fred::prelude::Builder::from_config(config)
                    .build()
                    .map_err(|e| e.to_string())?;
                client.init().await.map_err(|e| e.to_string())?;
                Client::Fred(client)
            }
        };
        clients.insert(kind, client);
    }

    // 10 000 keys holding 64-byte values, so every GET hits.
    let keys: Arc<Vec<String>> = Arc::new((0..KEYS).map(|i| format!("bench:key:{i:05}")).collect());
    let value = Bytes::from(vec![b'v'; VALUE_LEN]);
    {
        let mut conn = raw.clone();
        for chunk in keys.chunks(1000) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.set(k, &value[..]).ignore();
            }
            pipe.query_async::<()>(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
        }
    }

    eprintln!(
        "throughput: {} rounds × {} ops × {} C × {} clients, {:?} warm-up + {:?} each{}",
        rounds,
        ops.len(),
        concurrency.len(),
        kinds.len(),
        timing.warmup,
        timing.measure,
        if opts.quick { " (quick)" } else { "" }
    );
    let load_before = common::loadavg();
    let mut results: Results = BTreeMap::new();
    let round_clients: Vec<(Kind, Client)> =
        kinds.iter().map(|&k| (k, clients[&k].clone())).collect();
    for round in 0..rounds {
        for &op in &ops {
            for &c in &concurrency {
                let samples = measure_round(&round_clients, op, c, &keys, &value, &timing)
                    .await
                    .map_err(|e| format!("{} C={c}: {e}", op.name()))?;
                for (&(kind, _), sample) in round_clients.iter().zip(samples) {
                    eprintln!(
                        "round {} {} C={:<3} {:<34} {:>10} ops/s  p50 {:>7.1} µs  p99 {:>7.1} µs  cpu {:>5.2} µs/op  ({} ops)",
                        round + 1,
                        op.name(),
                        c,
                        kind.name(),
                        si(sample.ops_per_s),
                        sample.p50_us,
                        sample.p99_us,
                        sample.cpu_us_per_op,
                        sample.ops
                    );
                    results.entry((op, c, kind)).or_default().push(sample);
                }
            }
        }
    }

    for s in &supervisors {
        s.shutdown().await;
    }
    if let Some(Client::Fred(f)) = clients.get(&Kind::Fred) {
        let _ = f.quit().await;
    }
    drop(server);

    let load = format!("{load_before} / {}", common::loadavg());
    let report = report(
        &load,
        &results,
        &ops,
        &concurrency,
        &kinds,
        rounds,
        &timing,
        opts,
    );
    println!("{report}");
    // A partial run (some clients, ops, C or another length) would replace the full tables
    // with a subset of them: only a full run writes benches/results.
    let partial = [
        "--only",
        "--ops",
        "--conc",
        "--rounds",
        "--secs",
        "--warmup-ms",
    ]
    .iter()
    .any(|flag| opts.has(flag));
    if partial {
        eprintln!("partial run: benches/results left as they are");
        return Ok(());
    }
    common::write_result(opts, "throughput.md", &report);
    if common::writes_results(opts) && ops.contains(&Op::Get) {
        plot(&results, &concurrency, &kinds)?;
    }
    Ok(())
}

/// Median over rounds of `f(sample)`.
fn med(results: &Results, key: (Op, usize, Kind), f: impl Fn(&Sample) -> f64) -> f64 {
    let v: Vec<f64> = results
        .get(&key)
        .map(|s| s.iter().map(&f).collect())
        .unwrap_or_default();
    common::median_f64(&v)
}

/// Median over rounds of `f(sample) / f(raw sample of the same round)`.
fn med_ratio(results: &Results, key: (Op, usize, Kind), f: impl Fn(&Sample) -> f64) -> f64 {
    let (op, c, _) = key;
    let (Some(s), Some(raw)) = (results.get(&key), results.get(&(op, c, Kind::Raw))) else {
        return f64::NAN;
    };
    let ratios: Vec<f64> = s.iter().zip(raw).map(|(a, b)| f(a) / f(b)).collect();
    common::median_f64(&ratios)
}

#[allow(clippy::too_many_arguments)]
fn report(
    load: &str,
    results: &Results,
    ops: &[Op],
    concurrency: &[usize],
    kinds: &[Kind],
    rounds: usize,
    timing: &Timing,
    opts: &Options,
) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "## Throughput and latency{}\n\nMachine: {}; load average before/after the run: {}. `redis-server` from the test fixture on loopback; \
         tokio multi-thread runtime with 2 workers; 64-byte values over {KEYS} keys; medians of {rounds} \
         rounds; in each, the clients take turns in slices of {} ms until each has had {:.2} s \
         (after a {:.2} s warm-up turn each). \
         \"× raw\" is the median of the per-round ratios to raw `MultiplexedConnection`. \
         CPU is this process's user+sys time per op (the server is another process).\n\n",
        if opts.quick { " (quick mode)" } else { "" },
        common::machine(),
        load,
        (timing.measure / slices(timing)).as_millis(),
        timing.measure.as_secs_f64(),
        timing.warmup.as_secs_f64()
    ));
    let show_kinds: Vec<Kind> = kinds.iter().copied().filter(|k| *k != Kind::Raw).collect();
    for &op in ops {
        out.push_str(&format!(
            "### {} — throughput relative to raw\n\n",
            op.name()
        ));
        let mut header = vec!["client".to_string()];
        header.extend(concurrency.iter().map(|c| format!("C={c}")));
        let mut right = vec![false];
        right.extend(concurrency.iter().map(|_| true));
        let mut t = Table::new(&header, &right);
        if kinds.contains(&Kind::Raw) {
            let mut row = vec![format!("{} (ops/s)", Kind::Raw.name())];
            row.extend(
                concurrency
                    .iter()
                    .map(|&c| si(med(results, (op, c, Kind::Raw), |s| s.ops_per_s))),
            );
            t.row(row);
        }
        for &k in &show_kinds {
            let mut row = vec![k.name().to_string()];
            row.extend(
                concurrency
                    .iter()
                    .map(|&c| format!("{:.2}", med_ratio(results, (op, c, k), |s| s.ops_per_s))),
            );
            t.row(row);
        }
        out.push_str(&t.render());
        out.push('\n');

        out.push_str(&format!("### {} — details\n\n", op.name()));
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
        for &c in concurrency {
            for &k in kinds {
                let key = (op, c, k);
                t.row(vec![
                    k.name().to_string(),
                    c.to_string(),
                    si(med(results, key, |s| s.ops_per_s)),
                    format!("{:.2}", med_ratio(results, key, |s| s.ops_per_s)),
                    format!("{:.1}", med(results, key, |s| s.p50_us)),
                    format!("{:.1}", med(results, key, |s| s.p99_us)),
                    format!("{:.2}", med_ratio(results, key, |s| s.p99_us)),
                    format!("{:.2}", med(results, key, |s| s.cpu_us_per_op)),
                ]);
            }
        }
        out.push_str(&t.render());
        out.push('\n');
    }
    out
}

/// GET throughput against concurrency, one line per client: benches/results/throughput.svg.
fn plot(results: &Results, concurrency: &[usize], kinds: &[Kind]) -> Result<(), String> {
    use plotters::prelude::*;
    let path = common::results_dir().join("throughput.svg");
    let root = SVGBackend::new(&path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let ymax = kinds
        .iter()
        .flat_map(|&k| {
            concurrency
                .iter()
                .map(move |&c| med(results, (Op::Get, c, k), |s| s.ops_per_s))
        })
        .fold(0.0f64, f64::max)
        / 1e3
        * 1.15;
    let xmax = concurrency
        .iter()
        .map(|&c| (c as f64).log2())
        .fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "GET 64 B, C tasks sharing one client (2 cores shared with redis-server)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.3f64..xmax + 0.3, 0f64..ymax.max(1.0))
        .map_err(|e| e.to_string())?;
    let ticks: Vec<f64> = concurrency.iter().map(|&c| (c as f64).log2()).collect();
    chart
        .configure_mesh()
        .x_desc("concurrent tasks C (log scale)")
        .y_desc("thousand GET/s")
        .x_labels(xmax as usize + 1)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .light_line_style(TRANSPARENT)
        .x_label_formatter(&|x| {
            if ticks.iter().any(|t| (t - x).abs() < 1e-6) {
                format!("{}", 2f64.powf(*x).round())
            } else {
                String::new()
            }
        })
        .disable_x_mesh()
        .draw()
        .map_err(|e| e.to_string())?;
    let palette = [
        RGBColor(0x33, 0x33, 0x33),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0x94, 0x67, 0xbd),
    ];
    for (i, &k) in kinds.iter().enumerate() {
        let color = palette[i % palette.len()];
        let points: Vec<(f64, f64)> = concurrency
            .iter()
            .map(|&c| {
                (
                    (c as f64).log2(),
                    med(results, (Op::Get, c, k), |s| s.ops_per_s) / 1e3,
                )
            })
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(k.name())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(PointSeries::of_element(points, 4, color, &|c, s, st| {
                Circle::new(c, s, st.filled())
            }))
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
