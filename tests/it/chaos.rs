//! The chaos suite: 64 tasks of mixed reads and writes while one fault at a time hits the server
//! or the link. After each fault the service must resume by itself within the stated bound,
//! every command must have had exactly one answer by its deadline (plus a margin), nothing may
//! panic, and INCR must never have run twice: with `--appendonly yes --appendfsync always` the
//! server's counter satisfies `ok ≤ counter ≤ ok + ambiguous`.
//!
//! Stated recovery bound, from the moment the fault is healed to the first successful command:
//! the backoff ceiling (cap × (1 + jitter)) + the detection bound (probe interval × K + probe
//! timeout) + the connect timeout + 1 s of scheduling margin on a loaded 2-core machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis_supervisor::testing::{Fault, FaultProxy, RedisServer};
use redis_supervisor::{
    Availability, Config, ConfigBuilder, Error, FailureKind, RedisHandle, Supervisor,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::support::helpers::*;

const DEADLINE: Duration = Duration::from_millis(500);
/// How late an answer may be, beyond its deadline, on a loaded machine.
const MARGIN: Duration = Duration::from_millis(750);
const TASKS: usize = 64;
const AOF: [&str; 4] = ["--appendonly", "yes", "--appendfsync", "always"];

fn chaos_config(b: ConfigBuilder) -> ConfigBuilder {
    b.command_timeout(DEADLINE)
        .connect_timeout(Duration::from_millis(500))
        .backoff_base(Duration::from_millis(20))
        .backoff_max(Duration::from_millis(400))
        .health_interval(Duration::from_millis(200))
        .health_timeout(Duration::from_millis(150))
        .health_failures(3)
        .stable_period(Duration::from_secs(1))
}

fn resume_bound(config: &Config) -> Duration {
    config.backoff().ceiling()
        + config.detection_bound()
        + config.connect_timeout()
        + Duration::from_secs(1)
}

#[derive(Debug, Default)]
struct Tally {
    answers: u64,
    ok: u64,
    incr_ok: u64,
    incr_ambiguous: u64,
    unavailable: u64,
    timeouts: u64,
    ambiguous: u64,
}

/// 64 tasks issuing GET / SET / INCR / EXISTS in a loop until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Tally>>,
}

impl Load {
    fn start(redis: &RedisHandle) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..TASKS)
            .map(|i| {
                let (r, stop) = (redis.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut t = Tally::default();
                    while !stop.load(Ordering::Relaxed) {
                        let start = Instant::now();
                        let is_incr = i % 4 == 2;
                        let res: Result<(), Error> = match i % 4 {
                            0 => r.get::<_, Option<String>>(format!("k{i}")).await.map(drop),
                            1 => r.set(format!("k{i}"), i).await,
                            2 => r.incr("counter").await.map(drop),
                            _ => r.exists([format!("k{i}")]).await.map(drop),
                        };
                        let took = start.elapsed();
                        assert!(
                            took <= DEADLINE + MARGIN,
                            "an answer took {took:?} (deadline {DEADLINE:?}): {res:?}"
                        );
                        t.answers += 1;
                        match res {
                            Ok(()) => {
                                t.ok += 1;
                                t.incr_ok += u64::from(is_incr);
                            }
                            Err(Error::Ambiguous { .. }) => {
                                t.ambiguous += 1;
                                t.incr_ambiguous += u64::from(is_incr);
                            }
                            Err(Error::Timeout { sent, .. }) => {
                                assert!(
                                    !(is_incr && sent),
                                    "a sent INCR must be Ambiguous, not Timeout"
                                );
                                t.timeouts += 1;
                            }
                            Err(e) if e.is_unavailable() => t.unavailable += 1,
                            // A server restarted with AOF answers LOADING while it replays it.
                            Err(ref e) if e.server_code() == Some("LOADING") => t.unavailable += 1,
                            Err(e) => panic!("unexpected error under faults: {e:?}"),
                        }
                        // An error can come back at once: let the other tasks run.
                        tokio::task::yield_now().await;
                    }
                    t
                })
            })
            .collect();
        Load { stop, tasks }
    }

    async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Tally::default();
        for t in self.tasks {
            let t = t.await.expect("no load task panicked");
            all.answers += t.answers;
            all.ok += t.ok;
            all.incr_ok += t.incr_ok;
            all.incr_ambiguous += t.incr_ambiguous;
            all.unavailable += t.unavailable;
            all.timeouts += t.timeouts;
            all.ambiguous += t.ambiguous;
        }
        all
    }
}

/// Waits until a command succeeds, returning how long that took; panics past `bound`.
async fn resumed_within(redis: &RedisHandle, bound: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if redis.ping().await.is_ok() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() <= bound,
            "service did not resume within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn counter(server: &RedisServer, password: Option<&str>) -> u64 {
    let url = match password {
        Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", server.port()),
        None => server.url(),
    };
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let v: Option<u64> = redis::cmd("GET")
        .arg("counter")
        .query_async(&mut conn)
        .await
        .unwrap();
    v.unwrap_or(0)
}

/// The invariants every scenario ends with.
async fn check(tally: &Tally, server: &RedisServer, password: Option<&str>, label: &str) {
    assert!(tally.answers > 0 && tally.ok > 0, "{label}: {tally:?}");
    let c = counter(server, password).await;
    assert!(
        tally.incr_ok <= c && c <= tally.incr_ok + tally.incr_ambiguous,
        "{label}: INCR ran a wrong number of times: counter {c}, ok {}, ambiguous {} ({tally:?})",
        tally.incr_ok,
        tally.incr_ambiguous
    );
    eprintln!("{label}: counter {c}, {tally:?}");
}

async fn aof_server(extra: &[&str]) -> RedisServer {
    let mut args: Vec<&str> = AOF.to_vec();
    args.extend_from_slice(extra);
    server_with(&args).await
}

async fn chaos_supervisor(url: String) -> Supervisor {
    let config = chaos_config(Config::builder().url(url)).build().unwrap();
    let s = Supervisor::start(config).await.unwrap();
    s.wait_until_up(SOON).await.unwrap();
    s
}

async fn wait_for(sup: &Supervisor, mut pred: impl FnMut(&Availability) -> bool) {
    let mut events = sup.subscribe();
    if !pred(&sup.availability()) {
        events_until(&mut events, pred).await;
    }
}

/// One scenario: load on, `fault`, wait for the supervisor to notice (when `leaves_up`), a short
/// outage, `heal`, then: resumed within the bound, every answer in time, INCR exactly once.
async fn scenario(
    label: &str,
    srv: &mut RedisServer,
    sup: &Supervisor,
    password: Option<&str>,
    leaves_up: bool,
    fault: impl AsyncFnOnce(&mut RedisServer),
    heal: impl AsyncFnOnce(&mut RedisServer),
) -> Tally {
    let r = sup.handle();
    let load = Load::start(&r);
    tokio::time::sleep(Duration::from_millis(300)).await; // let load build up
    fault(srv).await;
    if leaves_up {
        wait_for(sup, |s| matches!(s, Availability::Down { .. })).await;
        tokio::time::sleep(Duration::from_millis(400)).await; // an outage, not a blip
    }
    heal(srv).await;
    let took = resumed_within(&r, resume_bound(sup.config())).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // load on the new connection
    let tally = load.finish().await;
    check(
        &tally,
        srv,
        password,
        &format!("{label} (resumed in {took:?})"),
    )
    .await;
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_restart() {
    let mut srv = aof_server(&[]).await;
    let sup = chaos_supervisor(srv.url()).await;
    let kill = async |s: &mut RedisServer| s.kill().await.unwrap();
    let restart = async |s: &mut RedisServer| s.restart().await.unwrap();
    scenario("kill -9", &mut srv, &sup, None, true, kill, restart).await;
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_then_sigcont() {
    let mut srv = aof_server(&[]).await;
    let sup = chaos_supervisor(srv.url()).await;
    let stop = async |s: &mut RedisServer| s.pause().unwrap();
    let cont = async |s: &mut RedisServer| s.resume().unwrap();
    scenario("SIGSTOP", &mut srv, &sup, None, true, stop, cont).await;
    sup.shutdown().await;
}

async fn proxy_fault(fault: Fault, label: &str) {
    let mut srv = aof_server(&[]).await;
    let upstream = format!("127.0.0.1:{}", srv.port()).parse().unwrap();
    let proxy = FaultProxy::start(upstream).await.unwrap();
    let sup = chaos_supervisor(proxy.url()).await;
    let (p1, p2) = (&proxy, &proxy);
    let break_link = async move |_: &mut RedisServer| p1.set_fault(fault);
    let heal = async move |_: &mut RedisServer| p2.set_fault(Fault::Pass);
    scenario(label, &mut srv, &sup, None, true, break_link, heal).await;
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_blackhole_then_heal() {
    proxy_fault(Fault::Blackhole, "blackhole").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_reset() {
    proxy_fault(Fault::Reset, "reset").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_type_normal() {
    let mut srv = aof_server(&[]).await;
    let sup = chaos_supervisor(srv.url()).await;
    let restarts = sup.restarts();
    let kill_clients = async |s: &mut RedisServer| {
        let mut admin = admin(s).await;
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .query_async(&mut admin)
            .await
            .unwrap();
        assert!(killed >= 1);
    };
    let replaced = async |_: &mut RedisServer| {
        let start = Instant::now();
        while sup.restarts() == restarts {
            assert!(
                start.elapsed() < SOON,
                "the killed connection was never replaced"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let label = "CLIENT KILL";
    scenario(label, &mut srv, &sup, None, false, kill_clients, replaced).await;
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_sleep_longer_than_the_command_timeout() {
    let mut srv = aof_server(&["--enable-debug-command", "yes"]).await;
    let sup = chaos_supervisor(srv.url()).await;
    let sleep = async |s: &mut RedisServer| {
        // An admin connection without redis-rs's 500 ms response timeout.
        let mut admin = redis::Client::open(s.url())
            .unwrap()
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new().set_response_timeout(None),
            )
            .await
            .unwrap();
        let _: () = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(1.5)
            .query_async(&mut admin)
            .await
            .unwrap();
    };
    let nothing = async |_: &mut RedisServer| {};
    let tally = scenario("DEBUG SLEEP", &mut srv, &sup, None, false, sleep, nothing).await;
    assert!(
        tally.timeouts + tally.ambiguous > 0,
        "the sleep was felt: {tally:?}"
    );
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_changed_then_restored() {
    const OLD: &str = "chaos-old-pw";
    const NEW: &str = "chaos-new-pw";
    let mut srv = aof_server(&["--requirepass", OLD]).await;
    let url = format!("redis://:{OLD}@127.0.0.1:{}", srv.port());
    let sup = chaos_supervisor(url).await;
    let with_password = |pw: &'static str| {
        let mut args: Vec<&str> = AOF.to_vec();
        args.extend_from_slice(&["--requirepass", pw]);
        args
    };
    let change = async |s: &mut RedisServer| {
        let mut events = sup.subscribe();
        s.restart_with_args(with_password(NEW)).await.unwrap();
        events_until(&mut events, |a| {
            matches!(a, Availability::Down { kind: FailureKind::Authentication, error, .. }
                if error.contains("authentication failed"))
        })
        .await;
        // Wrong password for 2 s: backoff, not a hot loop.
        let before = sup.restarts();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let attempts = sup.restarts() - before;
        let floor = sup.config().backoff().ceiling().mul_f64(0.8 / 1.2);
        let most = 2_000 / floor.as_millis() as u64 + 3;
        assert!(
            attempts <= most,
            "{attempts} attempts in 2 s (at most {most})"
        );
        assert!(!sup.availability().is_serving());
    };
    let restore =
        async |s: &mut RedisServer| s.restart_with_args(with_password(OLD)).await.unwrap();
    let label = "password change";
    scenario(label, &mut srv, &sup, Some(OLD), false, change, restore).await;
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_started_after_the_supervisor() {
    let mut srv = aof_server(&[]).await;
    srv.kill().await.unwrap();
    let config = chaos_config(Config::builder().url(srv.url()))
        .build()
        .unwrap();
    let sup = Supervisor::start(config).await.unwrap();
    let nothing = async |_: &mut RedisServer| {};
    let start = async |s: &mut RedisServer| {
        tokio::time::sleep(Duration::from_millis(400)).await;
        s.restart().await.unwrap()
    };
    let tally = scenario("late server", &mut srv, &sup, None, false, nothing, start).await;
    assert!(
        tally.unavailable > 0,
        "commands before the server existed: {tally:?}"
    );
    sup.shutdown().await;
}
