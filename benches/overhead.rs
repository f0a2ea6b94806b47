//! What each per-command extra of `RedisHandle` costs on its own, measured side by side in one
//! run on the bench runtime (2 workers, 64 tasks hammering the same shared state, so every
//! atomic operation pays for the cache line moving between the cores): the route read
//! (`ArcSwap` load, and the `watch` borrow it replaced), the admission gate (one shared
//! counter up and down, and the per-thread stripe that replaced it), the lane clone (a
//! `MultiplexedConnection` clone and drop, and the per-thread spare clone a lease now takes and
//! puts back), and the caller's deadline timer (`tokio::time::timeout_at` around a future that is pending once).
//!
//! ```text
//! cargo bench --bench overhead             # 5 rounds, writes benches/results/overhead.md
//! cargo bench --bench overhead -- --quick  # 2 short rounds, writes nothing
//! ```
//!
//! Numbers are ns per operation, medians over rounds. Contention makes them vary a lot with what
//! else the machine runs; compare the rows of one run with each other, not across runs.

#[path = "support/common.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Options, Table};
use redis_supervisor::testing::RedisServer;

const TASKS: usize = 64;

fn main() {
    let opts = Options::from_args();
    common::run_bench("overhead", || run(opts));
}

/// Runs `op` on a task's clone of `state`, `n / TASKS` times in each of [`TASKS`] tasks; ns per
/// operation.
async fn per_op<S: Clone + Send + Sync + 'static>(n: usize, state: S, op: fn(&S)) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let state = state.clone();
            tokio::spawn(async move {
                for i in 0..n / TASKS {
                    op(&state);
                    // Let the other tasks in, as commands waiting for replies do.
                    if i % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// ns per iteration of a task loop that yields once, with or without a deadline timer around
/// the yield (the timer is registered, because the yield is pending once, then cancelled).
async fn per_yield(n: usize, timed: bool) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            tokio::spawn(async move {
                for _ in 0..n / TASKS {
                    if timed {
                        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
                        let _ = tokio::time::timeout_at(deadline, tokio::task::yield_now()).await;
                    } else {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// One value per thread stripe, each on its own cache lines: the shape of the handle's
/// admission gate and of a lane's spare connection clones (`src/sync.rs`), rebuilt here from
/// the outside to time it alone.
struct Stripes<T>([Padded<T>; 16]);

#[repr(align(128))]
struct Padded<T>(T);

impl<T> Stripes<T> {
    fn new(mut init: impl FnMut() -> T) -> Self {
        Stripes(std::array::from_fn(|_| Padded(init())))
    }

    fn mine(&self) -> &T {
        use std::cell::Cell;
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
        }
        let i = STRIPE.with(|s| {
            if s.get() == usize::MAX {
                s.set(NEXT.fetch_add(1, Ordering::Relaxed) % 16);
            }
            s.get()
        });
        &self.0[i].0
    }
}

/// A connection and per-thread spare clones of it (empty: the first leases clone).
type Spares = Arc<(
    redis::aio::MultiplexedConnection,
    Stripes<std::sync::Mutex<Vec<redis::aio::MultiplexedConnection>>>,
)>;

fn spares(conn: &redis::aio::MultiplexedConnection) -> Spares {
    Arc::new((
        conn.clone(),
        Stripes::new(|| std::sync::Mutex::new(Vec::new())),
    ))
}

async fn run(opts: Options) -> Result<(), String> {
    let server = RedisServer::start().await.map_err(|e| e.to_string())?;
    let client = redis::Client::open(server.url()).map_err(|e| e.to_string())?;
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let (rounds, n) = if opts.quick {
        (2, 200_000)
    } else {
        (5, 2_000_000)
    };
    let names = [
        "baseline (empty loop)",
        "route read: ArcSwap load (now)",
        "route read: watch borrow (before)",
        "admission gate: shared counter up + down (before)",
        "admission gate: this thread's stripe up + down (now)",
        "lane clone: MultiplexedConnection clone + drop (before)",
        "lane lease: lane Arc + this thread's spare clone, pop + push (now)",
        "deadline timer: timeout_at, pending once",
        "yield only (the timer row's baseline)",
    ];
    let mut samples = vec![Vec::new(); names.len()];
    for _ in 0..rounds {
        let swap = Arc::new(arc_swap::ArcSwap::from_pointee(5u64));
        let (tx, rx) = tokio::sync::watch::channel(5u64);
        let counter = Arc::new(AtomicUsize::new(0));
        let row = [
            per_op(n, (), |()| {}).await,
            per_op(n, swap.clone(), |s| {
                std::hint::black_box(**s.load());
            })
            .await,
            per_op(n, rx.clone(), |r| {
                std::hint::black_box(*r.borrow());
            })
            .await,
            per_op(n, counter.clone(), |c| {
                c.fetch_add(2, Ordering::AcqRel);
                c.fetch_sub(2, Ordering::AcqRel);
            })
            .await,
            per_op(n, Arc::new(Stripes::new(|| AtomicUsize::new(0))), |g| {
                let word = g.mine();
                word.fetch_add(2, Ordering::AcqRel);
                word.fetch_sub(2, Ordering::AcqRel);
            })
            .await,
            per_op(n, conn.clone(), |c| drop(std::hint::black_box(c.clone()))).await,
            per_op(n, spares(&conn), |s| {
                // A lease holds the lane's shared state (one `Arc`) besides the clone.
                let shared = std::hint::black_box(s.clone());
                let lease = s.1.mine().lock().unwrap().pop();
                let lease = lease.unwrap_or_else(|| s.0.clone());
                let spares = s.1.mine();
                let mut spares = spares.lock().unwrap();
                if spares.len() < 256 {
                    spares.push(std::hint::black_box(lease));
                }
                drop(shared);
            })
            .await,
            per_yield(n / 10, true).await,
            per_yield(n / 10, false).await,
        ];
        drop(tx);
        for (s, v) in samples.iter_mut().zip(row) {
            s.push(v);
        }
    }
    let mut table = Table::new(&["per-command extra", "ns/op (median)"], &[false, true]);
    for (name, s) in names.iter().zip(&samples) {
        table.row(vec![
            name.to_string(),
            format!("{:.1}", common::median_f64(s)),
        ]);
    }
    let report = format!(
        "## Per-command extras, {TASKS} tasks on 2 workers\n\n{}; load average before: {}.\n\n{}",
        common::machine(),
        common::loadavg(),
        table.render()
    );
    println!("{report}");
    common::write_result(&opts, "overhead.md", &report);
    Ok(())
}
