//! Recovery: how fast `RedisHandle` serves again after the server is killed (-9) and restarted,
//! and how fast a frozen server (SIGSTOP) is detected — beside redis-rs `ConnectionManager` on the
//! same faults.
//!
//! ```text
//! cargo bench --bench recovery              # 5 trials of each (defaults of both clients)
//! cargo bench --bench recovery -- --quick   # 3 trials, shorter outages, faster health probes
//! ```
//!
//! Every trial uses a fresh client (a new `Supervisor`, a new `ConnectionManager`), so no backoff
//! or restart-intensity state carries over from one trial to the next.
//!
//! (a) kill -9 + restart, for outages of 0.2, 1, 5 and 30 s (quick: 0.2 and 1 s). A poller sends
//! `GET`s in a tight loop, each with a 20 ms timeout (`handle.with_timeout(..)`,
//! `tokio::time::timeout` around the manager), sleeping 1 ms only after a failure that came back
//! in under 1 ms (connection refused). The server is killed, stays down for the outage, and is
//! restarted; `restart()` returns once it answers PING. Recovery is the time from then to the
//! poller's first successful GET; the target is ≤ 150 ms whatever the backoff step (the `retry_in`
//! of the last `Down` before that success, also shown): the lane watches the refused port.
//!
//! (b) freeze (SIGSTOP). Idle detection: the supervisor with no traffic, time from SIGSTOP until it
//! publishes `Down` (and `Degraded`), against `config.detection_bound()` (= health interval ×
//! failures + probe timeout). Under traffic: a poller sends GETs with each client's default timeout
//! (handle: command timeout; manager: its 500 ms response timeout) for the whole freeze (the
//! detection bound + 1 s, + 0.3 s in quick mode); reported are the time to the first failed command, the failures, and
//! whether the client is on a new connection after SIGCONT (`CLIENT ID` before vs after).

#[path = "support/common.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Options, Table, err, median_duration, ms};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis_supervisor::testing::{Fault, FaultProxy, RedisServer};
use redis_supervisor::{Availability, Config, RedisHandle, Supervisor};

/// Per-call timeout of the recovery poller.
const POLL_TIMEOUT: Duration = Duration::from_millis(20);
/// The recovery target: serving again within this long of the server answering PING, whatever
/// the backoff step at that moment (the lane watches a refused port).
const TARGET: Duration = Duration::from_millis(150);

struct Settings {
    trials: usize,
    /// The outages of the kill -9 trials, each `trials` times.
    outages: Vec<Duration>,
    /// How long the loaded freeze lasts beyond the detection bound.
    freeze_extra: Duration,
    quick: bool,
}

fn main() {
    let opts = Options::from_args();
    common::run_bench("recovery", || run(&opts));
}

/// The supervisor's configuration: defaults, except faster health probes in quick mode.
fn supervisor_config(url: &str, s: &Settings) -> Result<Config, String> {
    let mut b = Config::builder().url(url).name("recovery");
    if s.quick {
        b = b
            .health_interval(Duration::from_millis(200))
            .health_timeout(Duration::from_millis(100))
            .health_slow(Duration::from_millis(50));
    }
    b.build().map_err(err)
}

async fn run(opts: &Options) -> Result<(), String> {
    let s = Settings {
        trials: if opts.quick { 3 } else { 5 },
        outages: if opts.quick {
            vec![Duration::from_millis(200), Duration::from_secs(1)]
        } else {
            [200, 1_000, 5_000, 30_000]
                .map(Duration::from_millis)
                .to_vec()
        },
        freeze_extra: if opts.quick {
            Duration::from_millis(300)
        } else {
            Duration::from_secs(1)
        },
        quick: opts.quick,
    };
    let mut server = RedisServer::start().await.map_err(err)?;
    let url = server.url();
    let bound = supervisor_config(&url, &s)?.detection_bound();

    // (a) kill -9 + restart, alternating the two clients, for each outage.
    let mut kills = Vec::new();
    for &outage in &s.outages {
        let mut row = KillRow {
            outage,
            handle: Vec::new(),
            manager: Vec::new(),
        };
        for trial in 0..s.trials {
            let h = kill_trial_handle(&mut server, &s, outage).await?;
            eprintln!(
                "kill trial {} ({} ms outage): RedisHandle recovered {} ms after restart (backoff step {} ms, Down {} ms after kill)",
                trial + 1,
                ms(outage),
                ms(h.recovery),
                ms(h.step),
                ms(h.detect)
            );
            row.handle.push(h);
            let m = kill_trial_manager(&mut server, outage).await?;
            eprintln!(
                "kill trial {} ({} ms outage): ConnectionManager recovered {} ms after restart",
                trial + 1,
                ms(outage),
                ms(m)
            );
            row.manager.push(m);
        }
        kills.push(row);
    }

    // (b) frozen server.
    let mut idle = Vec::new();
    let mut handle_frozen = Vec::new();
    let mut manager_frozen = Vec::new();
    for trial in 0..s.trials {
        let i = freeze_trial_idle(&server, &s).await?;
        eprintln!(
            "freeze trial {}: idle supervisor Down after {} ms (Degraded after {}; bound {} ms)",
            trial + 1,
            ms(i.down),
            i.degraded.map(ms).unwrap_or_else(|| "-".into()),
            ms(bound)
        );
        idle.push(i);
        let h = freeze_trial_loaded(&server, &s, Client::Handle, bound).await?;
        eprintln!(
            "freeze trial {}: RedisHandle under load: first error after {} ms, {} errors, Down after {}, new connection: {}",
            trial + 1,
            h.first_error.map(ms).unwrap_or_else(|| "-".into()),
            h.errors,
            h.down.map(ms).unwrap_or_else(|| "-".into()),
            h.reconnected
        );
        handle_frozen.push(h);
        let m = freeze_trial_loaded(&server, &s, Client::Manager, bound).await?;
        eprintln!(
            "freeze trial {}: ConnectionManager under load: first error after {} ms, {} errors, new connection: {}",
            trial + 1,
            m.first_error.map(ms).unwrap_or_else(|| "-".into()),
            m.errors,
            m.reconnected
        );
        manager_frozen.push(m);
    }

    // (c) persistent failures, and (d) many clients coming back at once.
    let persistent = persistent_failures(&s).await?;
    let crowd = crowd_trial(&mut server).await?;

    let mut report = report(&s, bound, &kills, &idle, &handle_frozen, &manager_frozen);
    report.push('\n');
    report.push_str(&persistent_table(&persistent));
    report.push_str(&crowd_table(&crowd));
    println!("{report}");
    common::write_result(opts, "recovery.md", &report);

    // What the bench promises to check: fail CI if the handle never recovered or detected.
    if idle.iter().any(|i| i.down > bound * 2) {
        return Err("the supervisor took over twice its detection bound to publish Down".into());
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Client {
    Handle,
    Manager,
}

/// Something that can run a GET and report `CLIENT ID`.
#[derive(Clone)]
enum Conn {
    Handle(RedisHandle),
    Manager(ConnectionManager),
}

impl Conn {
    /// One GET with `timeout` (`None`: the client's own default timeout).
    async fn get(&mut self, timeout: Option<Duration>) -> Result<(), String> {
        match self {
            Conn::Handle(h) => {
                let h = match timeout {
                    Some(t) => h.with_timeout(t),
                    None => h.clone(),
                };
                h.get::<_, Option<Vec<u8>>>("recovery:key")
                    .await
                    .map(drop)
                    .map_err(err)
            }
            Conn::Manager(m) => {
                let mut cmd = redis::cmd("GET");
                cmd.arg("recovery:key");
                let fut = cmd.query_async::<Option<Vec<u8>>>(m);
                match timeout {
                    Some(t) => match tokio::time::timeout(t, fut).await {
                        Ok(r) => r.map(drop).map_err(err),
                        Err(_) => Err("timed out".into()),
                    },
                    None => fut.await.map(drop).map_err(err),
                }
            }
        }
    }

    async fn client_id(&mut self) -> Result<i64, String> {
        match self {
            Conn::Handle(h) => h
                .cmd(redis::cmd("CLIENT").arg("ID").clone())
                .await
                .map_err(err),
            Conn::Manager(m) => redis::cmd("CLIENT")
                .arg("ID")
                .query_async(m)
                .await
                .map_err(err),
        }
    }
}

/// Sends GETs until `stop`; once `restarted` is set, the first success ends it and its completion
/// time is returned.
fn spawn_recovery_poller(
    mut conn: Conn,
    restarted: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Option<Instant>> {
    tokio::spawn(async move {
        let give_up = Instant::now() + Duration::from_secs(60);
        while Instant::now() < give_up {
            let after_restart = restarted.load(Ordering::SeqCst);
            let start = Instant::now();
            match conn.get(Some(POLL_TIMEOUT)).await {
                Ok(()) if after_restart => return Some(Instant::now()),
                Ok(()) => {}
                Err(_) if start.elapsed() < Duration::from_millis(1) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(_) => {}
            }
        }
        None
    })
}

/// Records every availability event with the instant it was received.
/// Availability events with the instant each was received.
type EventLog = Arc<Mutex<Vec<(Instant, Availability)>>>;

fn spawn_event_log(supervisor: &Supervisor) -> (EventLog, tokio::task::JoinHandle<()>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut events = supervisor.subscribe();
    let sink = log.clone();
    let task = tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            sink.lock().unwrap().push((Instant::now(), e.state));
        }
    });
    (log, task)
}

struct KillTrial {
    /// From `restart()` returning to the first successful GET.
    recovery: Duration,
    /// `retry_in` of the last `Down` before that success.
    step: Duration,
    /// From `kill()` returning to the first `Down`.
    detect: Duration,
}

/// The kill -9 trials of one outage length.
struct KillRow {
    outage: Duration,
    handle: Vec<KillTrial>,
    manager: Vec<Duration>,
}

async fn kill_trial_handle(
    server: &mut RedisServer,
    s: &Settings,
    outage: Duration,
) -> Result<KillTrial, String> {
    let supervisor = Supervisor::start(supervisor_config(&server.url(), s)?)
        .await
        .map_err(err)?;
    supervisor
        .wait_until_up(Duration::from_secs(10))
        .await
        .map_err(err)?;
    let (log, log_task) = spawn_event_log(&supervisor);
    let restarted = Arc::new(AtomicBool::new(false));
    let poller = spawn_recovery_poller(Conn::Handle(supervisor.handle()), restarted.clone());
    tokio::time::sleep(Duration::from_millis(50)).await;

    server.kill().await.map_err(err)?;
    let killed = Instant::now();
    tokio::time::sleep(outage).await;
    server.restart().await.map_err(err)?;
    let t0 = Instant::now();
    restarted.store(true, Ordering::SeqCst);
    let done = poller
        .await
        .map_err(err)?
        .ok_or("RedisHandle did not recover within 60 s")?;
    supervisor.shutdown().await;
    log_task.abort();

    let log = log.lock().unwrap();
    let downs: Vec<&(Instant, Availability)> = log
        .iter()
        .filter(|(_, a)| matches!(a, Availability::Down { .. }))
        .collect();
    let detect = downs
        .first()
        .map(|(t, _)| t.saturating_duration_since(killed))
        .unwrap_or_default();
    let step = downs
        .iter()
        .rev()
        .find(|(t, _)| *t <= done)
        .and_then(|(_, a)| match a {
            Availability::Down { retry_in, .. } => Some(*retry_in),
            _ => None,
        })
        .unwrap_or_default();
    Ok(KillTrial {
        recovery: done.saturating_duration_since(t0),
        step,
        detect,
    })
}

async fn kill_trial_manager(
    server: &mut RedisServer,
    outage: Duration,
) -> Result<Duration, String> {
    let client = redis::Client::open(format!("{}/?protocol=resp3", server.url())).map_err(err)?;
    let manager = ConnectionManager::new_with_config(client, ConnectionManagerConfig::new())
        .await
        .map_err(err)?;
    let restarted = Arc::new(AtomicBool::new(false));
    let poller = spawn_recovery_poller(Conn::Manager(manager), restarted.clone());
    tokio::time::sleep(Duration::from_millis(50)).await;

    server.kill().await.map_err(err)?;
    tokio::time::sleep(outage).await;
    server.restart().await.map_err(err)?;
    let t0 = Instant::now();
    restarted.store(true, Ordering::SeqCst);
    let done = poller
        .await
        .map_err(err)?
        .ok_or("ConnectionManager did not recover within 60 s")?;
    Ok(done.saturating_duration_since(t0))
}

struct IdleFreeze {
    down: Duration,
    degraded: Option<Duration>,
}

/// Freezes the server under an idle supervisor: time to `Degraded` and to `Down`.
async fn freeze_trial_idle(server: &RedisServer, s: &Settings) -> Result<IdleFreeze, String> {
    let config = supervisor_config(&server.url(), s)?;
    let bound = config.detection_bound();
    let supervisor = Supervisor::start(config).await.map_err(err)?;
    supervisor
        .wait_until_up(Duration::from_secs(10))
        .await
        .map_err(err)?;
    let mut events = supervisor.subscribe();
    // Let the health actor's timer run a little, like a service that has been up a while.
    tokio::time::sleep(Duration::from_millis(120)).await;
    server.pause().map_err(err)?;
    let t0 = Instant::now();
    let mut degraded = None;
    let wait = async {
        loop {
            match events.recv().await {
                Ok(e) => match e.state {
                    Availability::Degraded { .. } => {
                        degraded.get_or_insert(t0.elapsed());
                    }
                    Availability::Down { .. } => return Ok(t0.elapsed()),
                    _ => {}
                },
                Err(e) => return Err(err(e)),
            }
        }
    };
    let down = tokio::time::timeout(bound * 3 + Duration::from_secs(1), wait).await;
    server.resume().map_err(err)?;
    supervisor.shutdown().await;
    let down = down.map_err(|_| format!("no Down within 3× the detection bound {bound:?}"))??;
    Ok(IdleFreeze { down, degraded })
}

struct LoadedFreeze {
    first_error: Option<Duration>,
    errors: u64,
    /// Supervisor only: time to `Down`.
    down: Option<Duration>,
    /// On a different connection (`CLIENT ID`) after SIGCONT than before SIGSTOP.
    reconnected: bool,
}

/// Freezes the server for the detection bound + 1 s while a poller sends GETs with the client's
/// default timeout.
async fn freeze_trial_loaded(
    server: &RedisServer,
    s: &Settings,
    which: Client,
    bound: Duration,
) -> Result<LoadedFreeze, String> {
    let mut supervisor = None;
    let mut conn = match which {
        Client::Handle => {
            let sup = Supervisor::start(supervisor_config(&server.url(), s)?)
                .await
                .map_err(err)?;
            sup.wait_until_up(Duration::from_secs(10))
                .await
                .map_err(err)?;
            let h = sup.handle();
            supervisor = Some(sup);
            Conn::Handle(h)
        }
        Client::Manager => {
            let client =
                redis::Client::open(format!("{}/?protocol=resp3", server.url())).map_err(err)?;
            Conn::Manager(
                ConnectionManager::new_with_config(client, ConnectionManagerConfig::new())
                    .await
                    .map_err(err)?,
            )
        }
    };
    let events = supervisor.as_ref().map(|s| s.subscribe());
    let id_before = conn.client_id().await?;

    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let poller = {
        let (mut conn, stop, errors, first_error) = (
            conn.clone(),
            stop.clone(),
            errors.clone(),
            first_error.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let start = Instant::now();
                if conn.get(None).await.is_err() {
                    errors.fetch_add(1, Ordering::SeqCst);
                    first_error.lock().unwrap().get_or_insert(Instant::now());
                    if start.elapsed() < Duration::from_millis(1) {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(120)).await;

    server.pause().map_err(err)?;
    let t0 = Instant::now();
    let freeze = bound + s.freeze_extra;
    let down = match events {
        Some(mut events) => {
            let wait = async {
                loop {
                    match events.recv().await {
                        Ok(e) if matches!(e.state, Availability::Down { .. }) => {
                            return Some(t0.elapsed());
                        }
                        Ok(_) => {}
                        Err(_) => return None,
                    }
                }
            };
            let down = tokio::time::timeout(freeze, wait).await.ok().flatten();
            tokio::time::sleep(freeze.saturating_sub(t0.elapsed())).await;
            down
        }
        None => {
            tokio::time::sleep(freeze).await;
            None
        }
    };
    server.resume().map_err(err)?;
    let errors_during = errors.load(Ordering::SeqCst);
    let first = first_error
        .lock()
        .unwrap()
        .map(|t| t.saturating_duration_since(t0));
    stop.store(true, Ordering::SeqCst);
    let _ = tokio::time::timeout(Duration::from_secs(5), poller).await;

    // The connection in use after SIGCONT (retry for a while: it may be reconnecting).
    let deadline = Instant::now() + Duration::from_secs(10);
    let id_after = loop {
        match conn.client_id().await {
            Ok(id) => break id,
            Err(e) if Instant::now() > deadline => {
                return Err(format!("no CLIENT ID after SIGCONT: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    if let Some(sup) = supervisor {
        sup.shutdown().await;
    }
    Ok(LoadedFreeze {
        first_error: first,
        errors: errors_during,
        down,
        reconnected: id_after != id_before,
    })
}

fn report(
    s: &Settings,
    bound: Duration,
    kills: &[KillRow],
    idle: &[IdleFreeze],
    handle_frozen: &[LoadedFreeze],
    manager_frozen: &[LoadedFreeze],
) -> String {
    let n = s.trials;
    let mut out = format!(
        "## Recovery{}\n\nMachine: {}; load average at the end: {}. {n} trials of each, a fresh client per trial, clients on \
         their defaults{}.\n\n",
        if s.quick { " (quick mode)" } else { "" },
        common::machine(),
        common::loadavg(),
        if s.quick {
            " (quick mode: supervisor health probes every 200 ms, 100 ms timeout)"
        } else {
            ""
        }
    );

    out.push_str(&kill_table(kills, n));
    out.push_str(&format!(
        "### Frozen server (SIGSTOP): detection (bound = health interval × failures + probe \
         timeout = {} ms)\n\n",
        bound.as_millis()
    ));
    let downs: Vec<Duration> = idle.iter().map(|i| i.down).collect();
    let degr: Vec<Duration> = idle.iter().filter_map(|i| i.degraded).collect();
    let within = idle.iter().filter(|i| i.down <= bound).count();
    let mut t = Table::new(
        &[
            "supervisor, no traffic",
            "median ms",
            "min ms",
            "max ms",
            "within bound",
        ],
        &[false, true, true, true, true],
    );
    t.row(vec![
        "SIGSTOP → `Down` published".into(),
        ms(median_duration(&downs)),
        ms(common::min_duration(&downs)),
        ms(common::max_duration(&downs)),
        format!("{within}/{n}"),
    ]);
    if !degr.is_empty() {
        t.row(vec![
            format!(
                "SIGSTOP → `Degraded` published ({} of {n} trials)",
                degr.len()
            ),
            ms(median_duration(&degr)),
            ms(common::min_duration(&degr)),
            ms(common::max_duration(&degr)),
            "—".into(),
        ]);
    }
    out.push_str(&t.render());
    out.push('\n');

    out.push_str(&format!(
        "### Frozen server under traffic: a poller sends GETs with the client's default timeout \
         for {} ms (bound + {} ms), then SIGCONT\n\n",
        (bound + s.freeze_extra).as_millis(),
        s.freeze_extra.as_millis()
    ));
    let mut t = Table::new(
        &[
            "client",
            "first failed GET (median ms)",
            "failed GETs while frozen (median)",
            "`Down` published (median ms)",
            "on a new connection after SIGCONT",
        ],
        &[false, true, true, true, true],
    );
    for (name, trials) in [
        ("RedisHandle (1 s command timeout)", handle_frozen),
        (
            "redis-rs ConnectionManager (500 ms response timeout)",
            manager_frozen,
        ),
    ] {
        let firsts: Vec<Duration> = trials.iter().filter_map(|t| t.first_error).collect();
        let errs: Vec<f64> = trials.iter().map(|t| t.errors as f64).collect();
        let downs: Vec<Duration> = trials.iter().filter_map(|t| t.down).collect();
        t.row(vec![
            name.into(),
            if firsts.is_empty() {
                "never".into()
            } else {
                ms(median_duration(&firsts))
            },
            format!("{:.0}", common::median_f64(&errs)),
            if downs.is_empty() {
                "—".into()
            } else {
                ms(median_duration(&downs))
            },
            format!(
                "{}/{}",
                trials.iter().filter(|t| t.reconnected).count(),
                trials.len()
            ),
        ]);
    }
    out.push_str(&t.render());
    out
}

/// The kill -9 table: per outage, each client's recovery.
fn kill_table(kills: &[KillRow], n: usize) -> String {
    let mut out = format!(
        "### kill -9, outage, restart: time from the server answering PING again to the first \
         successful GET (poller: GETs with a {} ms timeout)\n\n",
        POLL_TIMEOUT.as_millis()
    );
    let mut t = Table::new(
        &[
            "outage",
            "client",
            "median ms",
            "min ms",
            "max ms",
            "backoff step at restart (median ms)",
            "≤ 150 ms",
            "Down published after kill (median ms)",
        ],
        &[true, false, true, true, true, true, true, true],
    );
    for row in kills {
        let rec: Vec<Duration> = row.handle.iter().map(|k| k.recovery).collect();
        let steps: Vec<Duration> = row.handle.iter().map(|k| k.step).collect();
        let detect: Vec<Duration> = row.handle.iter().map(|k| k.detect).collect();
        let within = rec.iter().filter(|r| **r <= TARGET).count();
        let m_within = row.manager.iter().filter(|r| **r <= TARGET).count();
        t.row(vec![
            format!("{} s", row.outage.as_secs_f64()),
            "RedisHandle (backoff 50 ms → 2 s, ±20 % jitter)".into(),
            ms(median_duration(&rec)),
            ms(common::min_duration(&rec)),
            ms(common::max_duration(&rec)),
            ms(median_duration(&steps)),
            format!("{within}/{n}"),
            ms(median_duration(&detect)),
        ]);
        t.row(vec![
            format!("{} s", row.outage.as_secs_f64()),
            "redis-rs ConnectionManager (defaults)".into(),
            ms(median_duration(&row.manager)),
            ms(common::min_duration(&row.manager)),
            ms(common::max_duration(&row.manager)),
            "—".into(),
            format!("{m_within}/{n}"),
            "—".into(),
        ]);
    }
    out.push_str(&t.render());
    out.push('\n');
    out
}

/// How long each persistent failure lasts.
fn persistent_secs(s: &Settings) -> Duration {
    if s.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(10)
    }
}

/// One supervisor against a server that keeps failing one way.
struct Persistent {
    case: &'static str,
    /// Full connect attempts (the first one included).
    attempts: u64,
    /// This process's CPU time meanwhile.
    cpu: Duration,
    secs: Duration,
}

/// (c) A wrong password, a server that accepts and drops at once, and a refused port: each for
/// `persistent_secs`, with a supervisor on its defaults.
async fn persistent_failures(s: &Settings) -> Result<Vec<Persistent>, String> {
    let secs = persistent_secs(s);
    let mut out = Vec::new();
    let guarded = RedisServer::start_with_args(["--requirepass", "right-password"])
        .await
        .map_err(err)?;
    let url = format!("redis://:wrong-password@127.0.0.1:{}", guarded.port());
    out.push(persistent("wrong password", &url, secs).await?);
    let upstream = format!("127.0.0.1:{}", guarded.port())
        .parse()
        .map_err(err)?;
    let proxy = FaultProxy::start(upstream).await.map_err(err)?;
    proxy.set_fault(Fault::CloseAfter(Duration::ZERO));
    out.push(persistent("accepts, then closes at once", &proxy.url(), secs).await?);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(err)?
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    out.push(persistent("connection refused (nothing listens)", &url, secs).await?);
    Ok(out)
}

async fn persistent(case: &'static str, url: &str, secs: Duration) -> Result<Persistent, String> {
    let config = Config::builder()
        .url(url)
        .name("persistent")
        .build()
        .map_err(err)?;
    let cpu = common::cpu_time();
    let supervisor = Supervisor::start(config).await.map_err(err)?;
    tokio::time::sleep(secs).await;
    let attempts = supervisor.restarts() + 1;
    let cpu = common::cpu_time().saturating_sub(cpu);
    supervisor.shutdown().await;
    eprintln!(
        "persistent, {case}: {attempts} attempts in {} s, CPU {} ms",
        secs.as_secs(),
        ms(cpu)
    );
    Ok(Persistent {
        case,
        attempts,
        cpu,
        secs,
    })
}

fn persistent_table(rows: &[Persistent]) -> String {
    let mut out = String::from(
        "### Persistent failure: full connect attempts and this process's CPU (one supervisor on \
         its defaults)\n\n",
    );
    let mut t = Table::new(
        &[
            "failure",
            "seconds",
            "full attempts",
            "attempts / s",
            "CPU % of a core",
        ],
        &[false, true, true, true, true],
    );
    for r in rows {
        let secs = r.secs.as_secs_f64();
        t.row(vec![
            r.case.into(),
            format!("{secs:.0}"),
            r.attempts.to_string(),
            format!("{:.1}", r.attempts as f64 / secs),
            format!("{:.2}", 100.0 * r.cpu.as_secs_f64() / secs),
        ]);
    }
    out.push_str(&t.render());
    out.push('\n');
    out
}

/// How many supervisors come back together in (d).
const CROWD: usize = 64;

/// (d) `CROWD` supervisors (defaults) on one server, killed for 1 s and restarted: when each is
/// `Up` again, from the server answering PING (sorted).
async fn crowd_trial(server: &mut RedisServer) -> Result<Vec<Duration>, String> {
    let mut supervisors = Vec::new();
    for i in 0..CROWD {
        let config = Config::builder()
            .url(server.url())
            .name(format!("crowd-{i}"))
            .build()
            .map_err(err)?;
        let supervisor = Supervisor::start(config).await.map_err(err)?;
        supervisor
            .wait_until_up(Duration::from_secs(10))
            .await
            .map_err(err)?;
        supervisors.push(supervisor);
    }
    let (back_tx, back_rx) = tokio::sync::watch::channel(None::<Instant>);
    // One task per supervisor, waiting from now on: each notes when it is Up again.
    let waits: Vec<_> = supervisors
        .iter()
        .map(|supervisor| {
            let (mut state, mut back) = (supervisor.watch(), back_rx.clone());
            tokio::spawn(async move {
                let down = state
                    .wait_for(|a| !matches!(a, Availability::Up { .. }))
                    .await;
                down.map_err(err)?;
                state
                    .wait_for(|a| matches!(a, Availability::Up { .. }))
                    .await
                    .map_err(err)?;
                let up = Instant::now();
                let back = *back.wait_for(Option::is_some).await.map_err(err)?;
                Ok::<_, String>(up.saturating_duration_since(back.unwrap_or(up)))
            })
        })
        .collect();
    server.kill().await.map_err(err)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.restart().await.map_err(err)?;
    back_tx.send_replace(Some(Instant::now()));
    let mut times = Vec::new();
    for wait in waits {
        times.push(wait.await.map_err(err)??);
    }
    for supervisor in supervisors {
        supervisor.shutdown().await;
    }
    times.sort();
    eprintln!(
        "crowd: {CROWD} supervisors Up again {} to {} ms after the server answered PING",
        ms(times[0]),
        ms(times[times.len() - 1])
    );
    Ok(times)
}

fn crowd_table(times: &[Duration]) -> String {
    let mut out = format!(
        "### {CROWD} supervisors in one process, kill -9, 1 s outage, restart: when each is `Up` \
         again, from the server answering PING\n\n"
    );
    let mut t = Table::new(
        &["first ms", "median ms", "last ms", "spread ms"],
        &[true, true, true, true],
    );
    let (first, last) = (times[0], times[times.len() - 1]);
    t.row(vec![
        ms(first),
        ms(median_duration(times)),
        ms(last),
        ms(last.saturating_sub(first)),
    ]);
    out.push_str(&t.render());
    out.push_str(
        "\nEach lane watches the refused port (a bare TCP connect every 25 ms) and attempts after a \
         random pause of up to 50 ms once it accepts: the spread is that pause plus the poll phase.\n\n",
    );
    out
}
