//! Dedicated connections, side by side in one run against one fixture `redis-server`:
//!
//! 1. **Pub/sub publish → receive**: a `Subscription` (`supervisor.pubsub().with_buffer(…)`,
//!    read with `recv()`) vs raw redis-rs RESP3 push (a `MultiplexedConnection` opened with
//!    `AsyncConnectionConfig::set_push_sender(unbounded tokio mpsc)`, `subscribe("bench")`, a
//!    reader task on the receiver). Both are fed by the same publisher (a separate raw
//!    connection). Measured: (a) throughput — a burst of N 64-byte messages, published by 4
//!    tasks each sending pipelines of 256 `PUBLISH` one after another; messages received per
//!    second from the first publish to the last receive, plus client CPU per message (this
//!    process: publisher + subscriber); (b) latency — ping-pong: one message in flight at a
//!    time, from just before `PUBLISH` is sent to the reader task having the message (p50/p99
//!    over K messages). Budget: throughput ≥ 0.9 × raw.
//! 2. **Blocking commands leave the shared path alone**: 64 tasks GET a 64-byte value through
//!    one `RedisHandle` for a fixed time (per-GET latency in an HDR histogram), once alone and
//!    once while 16 tasks loop `blpop(&[empty list], 2 s)` on the same handle (they block on the
//!    pool's dedicated connections; the bench checks that the server counts 16 blocked
//!    clients; their starts are staggered so one times out and is sent again every 125 ms).
//!    Budget: p99 with blockers ≤ 1.2 × alone.
//!
//! ```text
//! cargo bench --bench dedicated             # full: 9 rounds, writes benches/results/dedicated.md
//! cargo bench --bench dedicated -- --quick  # 2 short rounds, writes nothing
//! ```
//!
//! Method: the two sides of each comparison alternate within every round so that drift in the
//! machine's load hits both alike — pub/sub A B B A (B A A B in odd rounds), GETs alone, with
//! the blockers (twice as long), alone — and reported are medians over rounds and the median of
//! the per-round ratios. In each pub/sub slice exactly one subscriber is on the channel (each
//! side subscribes at the start of its slice and unsubscribes at the end; every `PUBLISH` must
//! report 1 receiver), and a short unmeasured burst warms it up. The server runs with
//! `client-output-buffer-limit pubsub 0 0 0` so that a subscriber falling behind during a burst
//! can never be disconnected by the server's output-buffer limits (either side alike).

#[path = "support/common.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Options, Table, err, si};
use hdrhistogram::Histogram;
use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, Value};
use redis_supervisor::pubsub::{PubSub, PubSubEvent, Subscription};
use redis_supervisor::testing::RedisServer;
use redis_supervisor::{Config, RedisHandle, Supervisor};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const CHANNEL: &str = "bench";
const PAYLOAD_LEN: usize = 64;
/// `PUBLISH`es per pipeline, and publisher tasks (each sends its pipelines one after another).
const BATCH: usize = 256;
const PUBLISHERS: usize = 4;
/// The GET tasks and the blocking tasks of part 2.
const GETTERS: usize = 64;
const BLOCKERS: usize = 16;
const BLOCK: Duration = Duration::from_secs(2);
const EMPTY_LIST: &str = "bench:empty-list";
const GET_KEY: &str = "bench:get";
/// How long a burst may take before the bench gives up (messages lost).
const BURST_LIMIT: Duration = Duration::from_secs(60);

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Raw,
    Ours,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Raw => "raw redis-rs RESP3 push (set_push_sender → unbounded mpsc)",
            Side::Ours => "Subscription::recv (supervisor.pubsub())",
        }
    }
}

/// Where the messages go: the raw push receiver or our subscription (moved into the reader task
/// for one burst and handed back at its end).
enum Receiver {
    Raw(mpsc::UnboundedReceiver<PushInfo>),
    Ours(Subscription),
}

/// What a reader task saw.
struct Read {
    receiver: Receiver,
    /// When the last expected message arrived.
    last: Instant,
    bytes: u64,
}

impl Receiver {
    /// The next message's payload length (`None`: the stream ended). Non-message pushes of the
    /// raw connection (subscribe confirmations) are skipped; any event but a message on ours is
    /// an error (the buffer is big enough for the whole burst).
    async fn next_len(&mut self) -> Result<Option<usize>, String> {
        match self {
            Receiver::Raw(rx) => loop {
                let Some(push) = rx.recv().await else {
                    return Ok(None);
                };
                if push.kind != PushKind::Message {
                    continue;
                }
                return match push.data.get(1) {
                    Some(Value::BulkString(b)) => Ok(Some(b.len())),
                    other => Err(format!("raw push without a payload: {other:?}")),
                };
            },
            Receiver::Ours(sub) => match sub.recv().await {
                Some(PubSubEvent::Message(m)) => Ok(Some(m.payload.len())),
                Some(other) => Err(format!("subscription: unexpected {other:?}")),
                None => Ok(None),
            },
        }
    }
}

/// Reads `expected` messages, counting them in `seen`; with `notify`, sends the arrival time
/// of each one there (ping-pong).
async fn reader(
    mut receiver: Receiver,
    expected: u64,
    seen: Arc<AtomicU64>,
    notify: Option<mpsc::UnboundedSender<Instant>>,
) -> Result<Read, String> {
    let mut bytes = 0u64;
    let mut count = 0u64;
    while count < expected {
        let Some(len) = receiver.next_len().await? else {
            return Err(format!("stream ended after {count} of {expected} messages"));
        };
        let now = Instant::now();
        count += 1;
        bytes += len as u64;
        seen.store(count, Ordering::Relaxed);
        if let Some(n) = &notify {
            let _ = n.send(now);
        }
    }
    Ok(Read {
        receiver,
        last: Instant::now(),
        bytes,
    })
}

/// Waits for a reader task, failing after `limit` with how far it got.
async fn finish(
    task: JoinHandle<Result<Read, String>>,
    seen: &AtomicU64,
    expected: u64,
    limit: Duration,
) -> Result<Read, String> {
    let read = match tokio::time::timeout(limit, task).await {
        Ok(joined) => joined.map_err(err)??,
        Err(_) => {
            return Err(format!(
                "only {} of {expected} messages arrived within {limit:?}",
                seen.load(Ordering::Relaxed)
            ));
        }
    };
    let want = expected * PAYLOAD_LEN as u64;
    if read.bytes != want {
        return Err(format!(
            "{} payload bytes read, {want} expected",
            read.bytes
        ));
    }
    Ok(read)
}

/// Publishes `n` messages (`PUBLISHERS` tasks × pipelines of `BATCH`); every one must reach
/// exactly one subscriber. Returns when the last pipeline was answered.
async fn publish_burst(
    publisher: &MultiplexedConnection,
    pipe: &Arc<redis::Pipeline>,
    n: usize,
) -> Result<Instant, String> {
    let per_task = n / PUBLISHERS / BATCH;
    let tasks: Vec<_> = (0..PUBLISHERS)
        .map(|_| {
            let (mut conn, pipe) = (publisher.clone(), pipe.clone());
            tokio::spawn(async move {
                for _ in 0..per_task {
                    let reached: Vec<i64> = pipe.query_async(&mut conn).await.map_err(err)?;
                    if reached.iter().any(|&r| r != 1) {
                        return Err(format!("PUBLISH reached {reached:?} subscribers, not 1"));
                    }
                }
                Ok::<Instant, String>(Instant::now())
            })
        })
        .collect();
    let mut done = None;
    for t in tasks {
        let at = t.await.map_err(err)??;
        done = done.max(Some(at));
    }
    done.ok_or_else(|| "no publisher".to_string())
}

/// The pub/sub side of the bench: the subscriber-side clients and the publisher.
struct PubSubBench {
    pubsub: PubSub,
    raw_sub: MultiplexedConnection,
    /// The raw connection's push receiver, between slices.
    raw_rx: Option<mpsc::UnboundedReceiver<PushInfo>>,
    publisher: MultiplexedConnection,
    /// `BATCH` × `PUBLISH bench <64 bytes>`, built once.
    pipe: Arc<redis::Pipeline>,
    payload: Vec<u8>,
    burst: usize,
    warmup: usize,
    pings: usize,
}

/// One pub/sub slice of one side.
struct PubSubSample {
    msgs_per_s: f64,
    /// Publishing alone (first publish to the last pipeline's answer), messages per second.
    publish_per_s: f64,
    cpu_us_per_msg: f64,
    ping: Histogram<u64>,
}

impl PubSubBench {
    async fn subscribe(&mut self, side: Side) -> Result<Receiver, String> {
        match side {
            Side::Raw => {
                self.raw_sub.subscribe(CHANNEL).await.map_err(err)?;
                Ok(Receiver::Raw(self.raw_rx.take().ok_or("raw receiver")?))
            }
            Side::Ours => Ok(Receiver::Ours(
                self.pubsub.subscribe(&[CHANNEL]).await.map_err(err)?,
            )),
        }
    }

    async fn unsubscribe(&mut self, receiver: Receiver) -> Result<(), String> {
        match receiver {
            Receiver::Raw(rx) => {
                self.raw_sub.unsubscribe(CHANNEL).await.map_err(err)?;
                self.raw_rx = Some(rx);
                Ok(())
            }
            Receiver::Ours(sub) => sub.unsubscribe().await.map_err(err),
        }
    }

    /// One burst of `n` messages: (receiver back, msgs/s received, msgs/s published, CPU µs/msg).
    async fn burst(
        &self,
        receiver: Receiver,
        n: usize,
    ) -> Result<(Receiver, f64, f64, f64), String> {
        let seen = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(reader(receiver, n as u64, seen.clone(), None));
        // Let the reader reach its first wait before the clock starts.
        tokio::task::yield_now().await;
        let cpu0 = common::cpu_time();
        let t0 = Instant::now();
        let published = publish_burst(&self.publisher, &self.pipe, n).await?;
        let read = finish(task, &seen, n as u64, BURST_LIMIT).await?;
        let cpu = common::cpu_time().saturating_sub(cpu0);
        let received = read.last.saturating_duration_since(t0).as_secs_f64();
        let publishing = published.saturating_duration_since(t0).as_secs_f64();
        Ok((
            read.receiver,
            n as f64 / received,
            n as f64 / publishing,
            cpu.as_secs_f64() * 1e6 / n as f64,
        ))
    }

    /// `pings` messages one at a time: from just before `PUBLISH` to the reader having it.
    async fn ping_pong(&self, receiver: Receiver) -> Result<(Receiver, Histogram<u64>), String> {
        let seen = Arc::new(AtomicU64::new(0));
        let (tx, mut arrivals) = mpsc::unbounded_channel();
        let n = self.pings as u64;
        let task = tokio::spawn(reader(receiver, n, seen.clone(), Some(tx)));
        let mut conn = self.publisher.clone();
        let mut hist = histogram();
        for _ in 0..self.pings {
            let t0 = Instant::now();
            let reached: i64 = redis::cmd("PUBLISH")
                .arg(CHANNEL)
                .arg(&self.payload)
                .query_async(&mut conn)
                .await
                .map_err(err)?;
            if reached != 1 {
                return Err(format!("PUBLISH reached {reached} subscribers, not 1"));
            }
            let arrived = tokio::time::timeout(BURST_LIMIT, arrivals.recv())
                .await
                .map_err(|_| "a ping never arrived".to_string())?
                .ok_or("the reader ended early")?;
            let ns = arrived.saturating_duration_since(t0).as_nanos() as u64;
            hist.saturating_record(ns.max(1));
        }
        let read = finish(task, &seen, n, BURST_LIMIT).await?;
        Ok((read.receiver, hist))
    }

    /// One slice of one side: subscribe, warm up, burst, ping-pong, unsubscribe.
    async fn slice(&mut self, side: Side) -> Result<PubSubSample, String> {
        let receiver = self.subscribe(side).await?;
        let (receiver, ..) = self.burst(receiver, self.warmup).await?;
        let (receiver, msgs_per_s, publish_per_s, cpu_us_per_msg) =
            self.burst(receiver, self.burst).await?;
        let (receiver, ping) = self.ping_pong(receiver).await?;
        self.unsubscribe(receiver).await?;
        Ok(PubSubSample {
            msgs_per_s,
            publish_per_s,
            cpu_us_per_msg,
            ping,
        })
    }
}

async fn get_worker(
    handle: RedisHandle,
    phase: Arc<AtomicU8>,
) -> Result<(Histogram<u64>, u64), String> {
    let mut hist = histogram();
    let mut ops = 0u64;
    loop {
        let p = phase.load(Ordering::Relaxed);
        if p == STOP {
            return Ok((hist, ops));
        }
        let start = Instant::now();
        let v: Option<Vec<u8>> = handle.get(GET_KEY).await.map_err(err)?;
        let ns = start.elapsed().as_nanos() as u64;
        if v.map(|v| v.len()) != Some(PAYLOAD_LEN) {
            return Err("GET: wrong value".into());
        }
        if p == MEASURE {
            ops += 1;
            hist.saturating_record(ns.max(1));
        }
    }
}

/// One GET measurement: (GETs, seconds, merged latency histogram). The GETs warm up for
/// `warmup` and until `ready` is done, whichever is later.
async fn measure_gets(
    handle: &RedisHandle,
    ready: impl std::future::Future<Output = Result<(), String>>,
    warmup: Duration,
    secs: Duration,
) -> Result<(u64, f64, Histogram<u64>), String> {
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let tasks: Vec<_> = (0..GETTERS)
        .map(|_| tokio::spawn(get_worker(handle.clone(), phase.clone())))
        .collect();
    let (ready, ()) = tokio::join!(ready, tokio::time::sleep(warmup));
    if let Err(e) = ready {
        phase.store(STOP, Ordering::Relaxed);
        return Err(e);
    }
    let t0 = Instant::now();
    phase.store(MEASURE, Ordering::Relaxed);
    tokio::time::sleep(secs).await;
    phase.store(STOP, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    let mut hist = histogram();
    let mut ops = 0;
    for t in tasks {
        let (h, n) = t.await.map_err(err)??;
        hist.add(&h).map_err(err)?;
        ops += n;
    }
    if ops == 0 {
        return Err("no GET completed".into());
    }
    Ok((ops, elapsed.as_secs_f64(), hist))
}

/// The 16 tasks looping `BLPOP` on the empty list. Task `i` starts `i × 2 s ÷ 16` late, so
/// their timeouts (and the next `BLPOP`s) are spread evenly over time: one every 125 ms.
struct Blockers {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Result<u64, String>>>,
}

impl Blockers {
    fn start(handle: &RedisHandle) -> Blockers {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..BLOCKERS)
            .map(|i| {
                let (handle, stop) = (handle.clone(), stop.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(BLOCK * i as u32 / BLOCKERS as u32).await;
                    let mut timeouts = 0u64;
                    while !stop.load(Ordering::Acquire) {
                        let popped: Option<(String, String)> =
                            handle.blpop(&[EMPTY_LIST], BLOCK).await.map_err(err)?;
                        timeouts += u64::from(popped.is_none());
                    }
                    Ok(timeouts)
                })
            })
            .collect();
        Blockers { stop, tasks }
    }

    /// Stops them at once: the flag, then one element per task (each blocked `BLPOP` pops one
    /// and its task sees the flag); what is left over is deleted, so the list is empty again.
    /// Returns how many `BLPOP`s timed out (and were sent again) meanwhile.
    async fn stop(self, raw: &mut MultiplexedConnection) -> Result<u64, String> {
        self.stop.store(true, Ordering::Release);
        let mut push = redis::cmd("RPUSH");
        push.arg(EMPTY_LIST);
        for _ in 0..BLOCKERS {
            push.arg("x");
        }
        let _: i64 = push.query_async(raw).await.map_err(err)?;
        let mut timeouts = 0;
        for t in self.tasks {
            timeouts += t.await.map_err(err)??;
        }
        let _: i64 = redis::cmd("DEL")
            .arg(EMPTY_LIST)
            .query_async(raw)
            .await
            .map_err(err)?;
        Ok(timeouts)
    }
}

/// `blocked_clients` from `INFO clients`.
async fn blocked_clients(raw: &mut MultiplexedConnection) -> Result<u64, String> {
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query_async(raw)
        .await
        .map_err(err)?;
    info.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no blocked_clients in INFO: {info}"))
}

/// Waits until the server counts `want` blocked clients.
async fn wait_blocked(raw: &mut MultiplexedConnection, want: u64) -> Result<(), String> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let got = blocked_clients(raw).await?;
        if got == want {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(format!("{got} blocked clients, {want} expected"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One GET slice, with or without the blockers (or several of one variant, merged).
struct GetSample {
    ops: u64,
    secs: f64,
    hist: Histogram<u64>,
    /// `BLPOP`s that timed out and were sent again while the blockers ran (warm-up and
    /// measurement).
    reissued: u64,
}

impl GetSample {
    fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.secs
    }

    fn merge(samples: &[GetSample]) -> Result<GetSample, String> {
        let mut hist = histogram();
        for s in samples {
            hist.add(&s.hist).map_err(err)?;
        }
        Ok(GetSample {
            ops: samples.iter().map(|s| s.ops).sum(),
            secs: samples.iter().map(|s| s.secs).sum(),
            hist,
            reissued: samples.iter().map(|s| s.reissued).sum(),
        })
    }
}

async fn get_slice(
    handle: &RedisHandle,
    raw: &mut MultiplexedConnection,
    with_blockers: bool,
    warmup: Duration,
    secs: Duration,
) -> Result<GetSample, String> {
    let want = if with_blockers { BLOCKERS as u64 } else { 0 };
    // The GETs warm up while the blockers start (both variants warm up alike, `warmup` being
    // longer than the blockers' stagger).
    let blockers = with_blockers.then(|| Blockers::start(handle));
    let (ops, secs, hist) = measure_gets(handle, wait_blocked(raw, want), warmup, secs).await?;
    // Still blocked on their dedicated connections at the end of the measurement? (One may be
    // between a timeout and its next BLPOP: wait for it.)
    wait_blocked(raw, want).await?;
    let reissued = match blockers {
        Some(b) => b.stop(raw).await?,
        None => 0,
    };
    Ok(GetSample {
        ops,
        secs,
        hist,
        reissued,
    })
}

fn main() {
    let opts = Options::from_args();
    common::run_bench("dedicated", || run(&opts));
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

#[derive(Default)]
struct Series {
    msgs: Vec<f64>,
    publish: Vec<f64>,
    cpu: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
}

impl Series {
    /// One round's slices of one side: the means of the rates, the merged ping histogram.
    fn push(&mut self, slices: &[PubSubSample]) -> Result<(), String> {
        let mean =
            |f: fn(&PubSubSample) -> f64| slices.iter().map(f).sum::<f64>() / slices.len() as f64;
        self.msgs.push(mean(|s| s.msgs_per_s));
        self.publish.push(mean(|s| s.publish_per_s));
        self.cpu.push(mean(|s| s.cpu_us_per_msg));
        let mut ping = histogram();
        for s in slices {
            ping.add(&s.ping).map_err(err)?;
        }
        self.p50.push(us(&ping, 0.50));
        self.p99.push(us(&ping, 0.99));
        Ok(())
    }
}

#[derive(Default)]
struct GetSeries {
    ops: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    reissued: Vec<f64>,
}

async fn run(opts: &Options) -> Result<(), String> {
    let rounds = if opts.quick { 2 } else { 9 };
    let (burst, warmup_msgs, pings) = if opts.quick {
        (10 * PUBLISHERS * BATCH, PUBLISHERS * BATCH, 300)
    } else {
        (100 * PUBLISHERS * BATCH, 4 * PUBLISHERS * BATCH, 3000)
    };
    // Alone; with the blockers the GETs warm up for the block time (it covers the blockers'
    // stagger, 15/16 of it).
    let (get_warmup, get_secs) = if opts.quick {
        (Duration::from_millis(100), Duration::from_millis(200))
    } else {
        (Duration::from_millis(300), Duration::from_secs(1))
    };

    let server = RedisServer::start_with_args(["--client-output-buffer-limit", "pubsub 0 0 0"])
        .await
        .map_err(err)?;
    let url = server.url();
    let resp3 = format!("{url}/?protocol=resp3");
    let config = Config::builder()
        .url(url.clone())
        .name("bench")
        .build()
        .map_err(err)?;
    let supervisor = Supervisor::start(config).await.map_err(err)?;
    supervisor
        .wait_until_up(Duration::from_secs(10))
        .await
        .map_err(err)?;
    let handle = supervisor.handle();

    let client = redis::Client::open(resp3.as_str()).map_err(err)?;
    let plain = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let (tx, rx) = mpsc::unbounded_channel();
    let raw_sub = client
        .get_multiplexed_async_connection_with_config(&plain.clone().set_push_sender(tx))
        .await
        .map_err(err)?;
    let publisher = client
        .get_multiplexed_async_connection_with_config(&plain)
        .await
        .map_err(err)?;
    let mut control = client
        .get_multiplexed_async_connection_with_config(&plain)
        .await
        .map_err(err)?;

    let payload = vec![b'p'; PAYLOAD_LEN];
    let mut pipe = redis::pipe();
    for _ in 0..BATCH {
        pipe.cmd("PUBLISH").arg(CHANNEL).arg(&payload);
    }
    let mut ps = PubSubBench {
        pubsub: supervisor
            .pubsub()
            .with_buffer(burst + warmup_msgs + pings + 1024),
        raw_sub,
        raw_rx: Some(rx),
        publisher,
        pipe: Arc::new(pipe),
        payload: payload.clone(),
        burst,
        warmup: warmup_msgs,
        pings,
    };
    let _: () = redis::cmd("SET")
        .arg(GET_KEY)
        .arg(&payload)
        .query_async(&mut control)
        .await
        .map_err(err)?;
    let _: i64 = redis::cmd("DEL")
        .arg(EMPTY_LIST)
        .query_async(&mut control)
        .await
        .map_err(err)?;

    eprintln!(
        "dedicated: {rounds} rounds; pub/sub bursts of {burst} messages + {pings} pings per side; \
         GETs {get_secs:?} per variant{}",
        if opts.quick { " (quick)" } else { "" }
    );
    let load_before = common::loadavg();
    let (mut raw, mut ours) = (Series::default(), Series::default());
    let (mut alone, mut with) = (GetSeries::default(), GetSeries::default());
    for round in 0..rounds {
        // A B B A, then B A A B: drift in the machine's load within a round hits both alike.
        let order = if round % 2 == 0 {
            [Side::Raw, Side::Ours, Side::Ours, Side::Raw]
        } else {
            [Side::Ours, Side::Raw, Side::Raw, Side::Ours]
        };
        let (mut raw_slices, mut our_slices) = (Vec::new(), Vec::new());
        for side in order {
            let s = ps.slice(side).await.map_err(|e| format!("{side:?}: {e}"))?;
            eprintln!(
                "round {} pub/sub {:<5} {:>9} msg/s (published {:>9}/s)  cpu {:.2} µs/msg  ping p50 {:.1} µs p99 {:.1} µs",
                round + 1,
                format!("{side:?}"),
                si(s.msgs_per_s),
                si(s.publish_per_s),
                s.cpu_us_per_msg,
                us(&s.ping, 0.50),
                us(&s.ping, 0.99),
            );
            match side {
                Side::Raw => raw_slices.push(s),
                Side::Ours => our_slices.push(s),
            }
        }
        raw.push(&raw_slices)?;
        ours.push(&our_slices)?;
        // alone, with (twice as long), alone: symmetric around the blocked variant.
        let mut slices: [Vec<GetSample>; 2] = [Vec::new(), Vec::new()];
        for (with_blockers, secs) in [(false, get_secs), (true, 2 * get_secs), (false, get_secs)] {
            let warmup = if with_blockers { BLOCK } else { get_warmup };
            let g = get_slice(&handle, &mut control, with_blockers, warmup, secs)
                .await
                .map_err(|e| format!("GET (blockers: {with_blockers}): {e}"))?;
            eprintln!(
                "round {} GET ×{GETTERS} {:<16} {:>9} ops/s  p50 {:.1} µs  p99 {:.1} µs  ({} BLPOPs re-sent)",
                round + 1,
                if with_blockers {
                    "+ 16 × BLPOP"
                } else {
                    "alone"
                },
                si(g.ops_per_s()),
                us(&g.hist, 0.50),
                us(&g.hist, 0.99),
                g.reissued,
            );
            slices[usize::from(with_blockers)].push(g);
        }
        for (variant, s) in slices.iter().enumerate() {
            let g = GetSample::merge(s)?;
            let s = if variant == 1 { &mut with } else { &mut alone };
            s.ops.push(g.ops_per_s());
            s.p50.push(us(&g.hist, 0.50));
            s.p99.push(us(&g.hist, 0.99));
            s.reissued.push(g.reissued as f64);
        }
    }
    let load_after = common::loadavg();
    supervisor.shutdown().await;
    drop(server);

    let mut out = String::new();
    out.push_str(&format!(
        "## Dedicated connections: pub/sub and blocking commands{}\n\n\
         Produced by `cargo bench --bench dedicated{}`. Machine: {}; load average before/after: \
         {load_before} / {load_after}. One fixture `redis-server` on loopback (with \
         `client-output-buffer-limit pubsub 0 0 0`); tokio multi-thread runtime with 2 workers. \
         {rounds} rounds; medians over rounds, ratios are the medians of the per-round \
         ratios, with their range over the rounds in parentheses.\n\n",
        if opts.quick { " (quick mode)" } else { "" },
        if opts.quick { " -- --quick" } else { "" },
        common::machine(),
    ));

    out.push_str(&format!(
        "### Pub/sub throughput: bursts of {burst} × {PAYLOAD_LEN}-byte messages\n\n\
         {PUBLISHERS} publisher tasks on one separate raw connection, each sending pipelines of \
         {BATCH} `PUBLISH` one after another; one subscriber on the channel. \"received\" is \
         messages ÷ (last message read by the reader task − first publish); \"published\" is \
         the publishers' own rate (until the last pipeline was answered); CPU is this \
         process's user+sys time per message (publisher and subscriber both). Each round runs \
         raw, ours, ours, raw (ours, raw, raw, ours in odd rounds), each side subscribing at \
         the start of its slice and unsubscribing at its end (every `PUBLISH` must reach exactly \
         1 subscriber), after a {warmup_msgs}-message warm-up burst; a round's figure per side is \
         the mean of its two slices.\n\n"
    ));
    let mut t = Table::new(
        &[
            "subscriber",
            "received msg/s",
            "published msg/s",
            "client CPU µs/msg",
        ],
        &[false, true, true, true],
    );
    for (side, s) in [(Side::Raw, &raw), (Side::Ours, &ours)] {
        t.row(vec![
            side.name().to_string(),
            si(med(&s.msgs)),
            si(med(&s.publish)),
            format!("{:.2}", med(&s.cpu)),
        ]);
    }
    t.row(vec![
        "**ours ÷ raw** (budget: received ≥ 0.9 ×)".to_string(),
        ratio_cell(&ours.msgs, &raw.msgs, true),
        ratio_cell(&ours.publish, &raw.publish, false),
        ratio_cell(&ours.cpu, &raw.cpu, false),
    ]);
    out.push_str(&t.render());

    out.push_str(&format!(
        "\n### Pub/sub latency: ping-pong, {pings} messages one at a time\n\n\
         From just before `PUBLISH` is sent to the reader task having the message (it then \
         wakes the publisher through a channel, outside the timed span); p50/p99 over the \
         2 × {pings} messages of each side's two slices in a round, medians over rounds.\n\n"
    ));
    let mut t = Table::new(&["subscriber", "p50 µs", "p99 µs"], &[false, true, true]);
    for (side, s) in [(Side::Raw, &raw), (Side::Ours, &ours)] {
        t.row(vec![
            side.name().to_string(),
            format!("{:.1}", med(&s.p50)),
            format!("{:.1}", med(&s.p99)),
        ]);
    }
    t.row(vec![
        "**ours ÷ raw**".to_string(),
        ratio_cell(&ours.p50, &raw.p50, true),
        ratio_cell(&ours.p99, &raw.p99, true),
    ]);
    out.push_str(&t.render());

    out.push_str(&format!(
        "\n### Blocking commands leave the shared path alone: {GETTERS} tasks GET a \
         {PAYLOAD_LEN}-byte value through one `RedisHandle`\n\n\
         Each round: alone {:.1} s, then with the blockers {:.1} s, then alone {:.1} s again \
         (per-GET latency in an HDR histogram, merged per variant and round). \"+ {BLOCKERS} × \
         BLPOP\": {BLOCKERS} more tasks loop `blpop(&[empty list], {} s)` on the same handle, \
         blocked on the pool's dedicated connections; their starts are staggered by {} ms so \
         that one times out and is sent again every {} ms (median {:.0} re-sent per round). \
         The GETs warm up for {:.1} s alone and for {:.1} s with the blockers (while they \
         start); the server counted {BLOCKERS} blocked clients before and after every \
         measurement with them, 0 in the others.\n\n",
        get_secs.as_secs_f64(),
        2.0 * get_secs.as_secs_f64(),
        get_secs.as_secs_f64(),
        BLOCK.as_secs(),
        (BLOCK / BLOCKERS as u32).as_millis(),
        (BLOCK / BLOCKERS as u32).as_millis(),
        med(&with.reissued),
        get_warmup.as_secs_f64(),
        BLOCK.as_secs_f64(),
    ));
    let mut t = Table::new(
        &["GETs", "ops/s", "p50 µs", "p99 µs"],
        &[false, true, true, true],
    );
    t.row(vec![
        "alone".to_string(),
        si(med(&alone.ops)),
        format!("{:.1}", med(&alone.p50)),
        format!("{:.1}", med(&alone.p99)),
    ]);
    t.row(vec![
        format!("+ {BLOCKERS} × BLPOP"),
        si(med(&with.ops)),
        format!("{:.1}", med(&with.p50)),
        format!("{:.1}", med(&with.p99)),
    ]);
    t.row(vec![
        "**with ÷ alone** (budget: p99 ≤ 1.2 ×)".to_string(),
        ratio_cell(&with.ops, &alone.ops, false),
        ratio_cell(&with.p50, &alone.p50, false),
        ratio_cell(&with.p99, &alone.p99, true),
    ]);
    out.push_str(&t.render());
    println!("{out}");
    common::write_result(opts, "dedicated.md", &out);
    Ok(())
}
