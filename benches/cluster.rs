//! Redis Cluster: GET throughput through `RedisHandle` on a cluster (`Config::cluster_nodes`:
//! the crate's router over one redis-rs `MultiplexedConnection` per node) beside redis-rs's
//! cluster-async client used directly (`ClusterClient`, its defaults, RESP3), side by side in
//! one run on one fixture cluster (`testing::ClusterTopology`: 3 primaries, 3 replicas on
//! loopback).
//!
//! GET of 64-byte values over 10 000 keys (spread over every slot) at C = 1/16/64/256 tasks
//! sharing one client. Target (issue 15): `RedisHandle` ≥ 0.9 × redis-rs's cluster client at
//! every C.
//!
//! ```text
//! cargo bench --bench cluster                 # full: 5 rounds, writes benches/results/cluster.md
//! cargo bench --bench cluster -- --quick      # 2 short rounds, writes nothing
//! cargo bench --bench cluster -- --conc 16,256 --rounds 3
//! ```
//!
//! Method: per round and C, both clients in the round's order (alternating), each measurement
//! spawning C tasks, warming up, then counting GETs over a fixed time; per-GET latency in an HDR
//! histogram; CPU per op is this process's `getrusage` user+sys over the measurement divided by
//! the ops. Ratios are medians of the per-round ratios (range in parentheses). The cluster's six
//! servers share the machine's 2 cores with the client.

#[path = "support/common.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use common::{Options, Table, err, parse_list, si};
use hdrhistogram::Histogram;
use redis::cluster_async::ClusterConnection;
use redis_supervisor::testing::ClusterTopology;
use redis_supervisor::{Config, RedisHandle, Supervisor};

const KEYS: usize = 10_000;
const VALUE_LEN: usize = 64;
const CONCURRENCY: [usize; 4] = [1, 16, 64, 256];
/// Step between the keys a task uses (prime, so tasks walk the whole key space).
const STRIDE: usize = 7919;
/// The issue's target: `RedisHandle` ≥ this × redis-rs's cluster client.
const TARGET: f64 = 0.9;

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Direct,
    Handle,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Direct => "redis-rs cluster-async, direct",
            Kind::Handle => "RedisHandle on the cluster",
        }
    }
}

#[derive(Clone)]
enum Client {
    Direct(ClusterConnection),
    Handle(RedisHandle),
}

impl Client {
    async fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
        match self {
            Client::Direct(c) => redis::cmd("GET").arg(key).query_async(c).await.map_err(err),
            Client::Handle(h) => h.get(key).await.map_err(err),
        }
    }
}

struct Sample {
    ops_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_op: f64,
}

struct TaskResult {
    hist: Histogram<u64>,
    ops: u64,
    first_error: Option<String>,
}

async fn worker(
    mut client: Client,
    keys: Arc<Vec<String>>,
    mut i: usize,
    phase: Arc<AtomicU8>,
) -> TaskResult {
    let mut r = TaskResult {
        hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds"),
        ops: 0,
        first_error: None,
    };
    loop {
        let p = phase.load(Ordering::Relaxed);
        if p == STOP {
            return r;
        }
        let key = &keys[i % KEYS];
        i = i.wrapping_add(STRIDE);
        let start = Instant::now();
        let result = client.get(key).await;
        let ns = start.elapsed().as_nanos() as u64;
        match result {
            Ok(Some(v)) if v.len() == VALUE_LEN => {}
            Ok(v) => {
                r.first_error.get_or_insert(format!(
                    "GET {key}: {:?} bytes, {VALUE_LEN} expected",
                    v.map(|v| v.len())
                ));
            }
            Err(e) => {
                r.first_error.get_or_insert(e);
            }
        }
        if p == MEASURE {
            r.ops += 1;
            r.hist.saturating_record(ns.max(1));
        }
    }
}

async fn measure(
    client: &Client,
    c: usize,
    keys: &Arc<Vec<String>>,
    warmup: Duration,
    length: Duration,
) -> Result<Sample, String> {
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let tasks: Vec<_> = (0..c)
        .map(|t| {
            tokio::spawn(worker(
                client.clone(),
                keys.clone(),
                t * (KEYS / c.max(1)),
                phase.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(warmup).await;
    let cpu0 = common::cpu_time();
    let t0 = Instant::now();
    phase.store(MEASURE, Ordering::Relaxed);
    tokio::time::sleep(length).await;
    phase.store(STOP, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    let cpu = common::cpu_time().saturating_sub(cpu0);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(err)?;
    let mut ops = 0;
    for t in tasks {
        let r = t.await.map_err(err)?;
        if let Some(e) = r.first_error {
            return Err(e);
        }
        hist.add(&r.hist).map_err(err)?;
        ops += r.ops;
    }
    if ops == 0 {
        return Err(format!("no GET completed at C={c}"));
    }
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
    Ok(Sample {
        ops_per_s: ops as f64 / elapsed.as_secs_f64(),
        p50_us: us(0.50),
        p99_us: us(0.99),
        cpu_us_per_op: cpu.as_secs_f64() * 1e6 / ops as f64,
    })
}

fn med(v: &[f64]) -> f64 {
    common::median_f64(v)
}

fn main() {
    let opts = Options::from_args();
    common::run_bench("cluster", || run(&opts));
}

async fn run(opts: &Options) -> Result<(), String> {
    let rounds = parse_list(opts, "--rounds", |s| s.parse::<usize>().ok())
        .and_then(|v| v.first().copied())
        .unwrap_or(if opts.quick { 2 } else { 5 });
    let concurrency =
        parse_list(opts, "--conc", |s| s.parse::<usize>().ok()).unwrap_or(CONCURRENCY.to_vec());
    let (warmup, length) = if opts.quick {
        (Duration::from_millis(200), Duration::from_millis(500))
    } else {
        (Duration::from_millis(500), Duration::from_secs(2))
    };
    let load_before = common::loadavg();

    let cluster = ClusterTopology::start().await.map_err(err)?;
    let seeds: Vec<String> = cluster.seed_nodes().iter().map(|a| a.to_string()).collect();
    let direct_client = redis::cluster::ClusterClientBuilder::new(
        seeds.iter().map(|s| format!("redis://{s}/?protocol=resp3")),
    )
    .build()
    .map_err(err)?;
    let mut direct = direct_client.get_async_connection().await.map_err(err)?;
    let config = Config::builder()
        .name("bench-cluster")
        .cluster_nodes(seeds.clone())
        .build()
        .map_err(err)?;
    let sup = Supervisor::start(config).await.map_err(err)?;
    sup.wait_until_up(Duration::from_secs(10))
        .await
        .map_err(err)?;

    let keys: Arc<Vec<String>> = Arc::new((0..KEYS).map(|i| format!("bench:{i}")).collect());
    let value = vec![b'x'; VALUE_LEN];
    for chunk in keys.chunks(500) {
        // One SET per key (MSET across slots would be split anyway).
        let sets = chunk.iter().map(|k| {
            let mut direct = direct.clone();
            let (k, v) = (k.clone(), value.clone());
            async move {
                redis::cmd("SET")
                    .arg(&k)
                    .arg(&v)
                    .query_async::<()>(&mut direct)
                    .await
            }
        });
        for r in futures_join(sets).await {
            r.map_err(err)?;
        }
    }
    let _: () = redis::cmd("PING")
        .query_async(&mut direct)
        .await
        .map_err(err)?;

    let clients = [
        (Kind::Direct, Client::Direct(direct.clone())),
        (Kind::Handle, Client::Handle(sup.handle())),
    ];
    let mut results: BTreeMap<(usize, Kind), Vec<Sample>> = BTreeMap::new();
    for round in 0..rounds {
        for &c in &concurrency {
            let order: Vec<usize> = if (round + c) % 2 == 0 {
                vec![0, 1]
            } else {
                vec![1, 0]
            };
            for i in order {
                let (kind, client) = &clients[i];
                let s = measure(client, c, &keys, warmup, length).await?;
                eprintln!(
                    "round {round} C={c} {}: {} ops/s, p50 {:.1} µs",
                    kind.name(),
                    si(s.ops_per_s),
                    s.p50_us
                );
                results.entry((c, *kind)).or_default().push(s);
            }
        }
    }
    sup.shutdown().await;
    drop(cluster);
    let load_after = common::loadavg();

    let ratio = |c: usize, f: fn(&Sample) -> f64| -> Vec<f64> {
        let (Some(h), Some(d)) = (
            results.get(&(c, Kind::Handle)),
            results.get(&(c, Kind::Direct)),
        ) else {
            return Vec::new();
        };
        h.iter().zip(d).map(|(a, b)| f(a) / f(b)).collect()
    };
    let cell = |r: &[f64]| {
        let (lo, hi) = r
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
                (lo.min(x), hi.max(x))
            });
        format!("{:.2} × ({lo:.2}–{hi:.2})", med(r))
    };
    let mut out = format!(
        "## Redis Cluster: GET throughput, RedisHandle vs redis-rs's cluster client{}\n\n\
         Produced by `cargo bench --bench cluster{}`. Machine: {}; load average before/after: \
         {load_before} / {load_after}. One fixture cluster (3 primaries + 3 replicas on \
         loopback, `testing::ClusterTopology`); GET of {VALUE_LEN}-byte values over {KEYS} keys \
         spread over every slot; C tasks share one client; {rounds} interleaved rounds of \
         {} s after {} s warm-up per client and C. \"direct\" is redis-rs's \
         `cluster_async::ClusterConnection` with its defaults (RESP3), whose requests pass \
         through one task that routes them; `RedisHandle` routes in the caller's task over one \
         `MultiplexedConnection` per node, with the crate's deadlines, redirect following and \
         replay rule. Ratios are medians of the per-round ratios (range in \
         parentheses).\n\n",
        if opts.quick { " (quick mode)" } else { "" },
        if opts.quick { " -- --quick" } else { "" },
        common::machine(),
        length.as_secs_f64(),
        warmup.as_secs_f64(),
    );
    let mut t = Table::new(
        &[
            "C",
            "direct ops/s",
            "RedisHandle ops/s",
            "throughput ÷ direct",
            "p50 µs direct / handle",
            "p99 µs direct / handle",
            "CPU µs/op direct / handle",
        ],
        &[true, true, true, true, true, true, true],
    );
    let mut worst = f64::INFINITY;
    for &c in &concurrency {
        let of = |k: Kind, f: fn(&Sample) -> f64| {
            med(&results
                .get(&(c, k))
                .map(|s| s.iter().map(f).collect::<Vec<_>>())
                .unwrap_or_default())
        };
        let r = ratio(c, |s| s.ops_per_s);
        worst = worst.min(med(&r));
        t.row(vec![
            c.to_string(),
            si(of(Kind::Direct, |s| s.ops_per_s)),
            si(of(Kind::Handle, |s| s.ops_per_s)),
            cell(&r),
            format!(
                "{:.1} / {:.1}",
                of(Kind::Direct, |s| s.p50_us),
                of(Kind::Handle, |s| s.p50_us)
            ),
            format!(
                "{:.1} / {:.1}",
                of(Kind::Direct, |s| s.p99_us),
                of(Kind::Handle, |s| s.p99_us)
            ),
            format!(
                "{:.2} / {:.2}",
                of(Kind::Direct, |s| s.cpu_us_per_op),
                of(Kind::Handle, |s| s.cpu_us_per_op)
            ),
        ]);
    }
    out.push_str(&t.render());
    out.push_str(&format!(
        "\nTarget (RedisHandle ≥ {TARGET} × direct at every C): worst {worst:.2} × — {}.\n",
        if worst >= TARGET {
            "met"
        } else {
            "**not met**"
        }
    ));
    println!("{out}");
    common::write_result(opts, "cluster.md", &out);
    Ok(())
}

/// Runs the futures at once and collects their outputs in order.
async fn futures_join<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}
