//! "Up means the server can serve now" (promise 5), against real servers that answer but refuse:
//! a server loading its dataset (at connect, and mid-connection with `DEBUG RELOAD`), a replica
//! without its master (`replica-serve-stale-data no`), and a server busy in a long script.
//!
//! In each case the supervisor reports `NotReady` with the right kind (never `Up`), the readiness
//! route answers 503, commands wait within their deadline instead of receiving the refusal (one
//! that was refused is sent again: the refusal means it did not run), and the state turns `Up`
//! once the server can serve. No caller is ever handed `LOADING`, `MASTERDOWN` or `BUSY`.
//!
//! A slow load: the fixture's hidden Redis 7 configs `key-load-delay` (µs per key) and
//! `loading-process-events-interval-bytes` (so that the server answers `-LOADING` while it
//! loads) make 30 000 keys take a few seconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis_supervisor::testing::RedisServer;
use redis_supervisor::{
    Availability, AvailabilityEvent, Error, FailureKind, RedisHandle, Supervisor,
};
use tokio::task::JoinHandle;

use crate::support::helpers::*;
use crate::support::readiness_helpers::*;

/// Keys of the slowly loaded dataset.
const KEYS: u64 = 30_000;
/// Microseconds of delay per key while loading.
const KEY_LOAD_DELAY_US: &str = "50";
/// A deadline that outlasts any of the refusals here.
const LONG: Duration = Duration::from_secs(30);
/// How long a refusal may last at most in these tests (a slow load on a loaded machine).
const REFUSAL_BOUND: Duration = Duration::from_secs(40);

fn is_not_ready(kind: FailureKind) -> impl Fn(&Availability) -> bool {
    move |a| matches!(a, Availability::NotReady { kind: k, .. } if *k == kind)
}

fn is_up(a: &Availability) -> bool {
    matches!(a, Availability::Up { .. })
}

/// `INFO persistence` says the server is loading.
async fn loading(admin: &mut MultiplexedConnection) -> bool {
    let info: String = redis::cmd("INFO")
        .arg("persistence")
        .query_async(admin)
        .await
        .unwrap();
    info.lines().any(|l| l.trim() == "loading:1")
}

/// Fills the server with `KEYS` keys plus `k = v`.
async fn populate(admin: &mut MultiplexedConnection) {
    let _: () = redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(KEYS)
        .query_async(admin)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(admin)
        .await
        .unwrap();
}

/// A supervisor on `server` that probes every 200 ms, not waited for.
async fn start(server: &RedisServer) -> Supervisor {
    Supervisor::start(config(server, |b| {
        b.health_interval(Duration::from_millis(200))
            .command_timeout(LONG)
    }))
    .await
    .unwrap()
}

/// The deadline of the commands held back by a busy script.
const SHORT_WAIT: Duration = Duration::from_secs(5);

fn spawn_get(r: &RedisHandle) -> JoinHandle<Result<Option<String>, Error>> {
    spawn_get_within(r, LONG)
}

fn spawn_get_within(r: &RedisHandle, t: Duration) -> JoinHandle<Result<Option<String>, Error>> {
    let r = r.with_timeout(t);
    tokio::spawn(async move { r.get::<_, Option<String>>("k").await })
}

fn spawn_incr(r: &RedisHandle, key: &'static str) -> JoinHandle<Result<i64, Error>> {
    spawn_incr_within(r, key, LONG)
}

fn spawn_incr_within(
    r: &RedisHandle,
    key: &'static str,
    t: Duration,
) -> JoinHandle<Result<i64, Error>> {
    let r = r.with_timeout(t);
    tokio::spawn(async move { r.incr(key).await })
}

/// A spawned GET of `k`.
type GetTask = JoinHandle<Result<Option<String>, Error>>;

/// The commands held back while the server could not serve got their answers once it could:
/// each GET (`what`, task) the value `v`, the INCR 1, and counter `n` says it ran once.
async fn assert_held_commands_served(
    admin: &mut redis::aio::MultiplexedConnection,
    gets: [(&str, GetTask); 2],
    incr: (&str, JoinHandle<Result<i64, Error>>),
) {
    for (what, get) in gets {
        assert_eq!(join(what, get).await.as_deref(), Some("v"));
    }
    assert_eq!(join(incr.0, incr.1).await, 1);
    let n: i64 = redis::cmd("GET").arg("n").query_async(admin).await.unwrap();
    assert_eq!(n, 1, "the held INCR ran once");
}

/// Asserts that the readiness routes say "not ready" while `sup` is `NotReady`.
async fn assert_not_ready_routes(sup: &Supervisor) {
    let (status, body) = serve_get(sup, "/health/ready").await;
    assert_eq!(status, 503, "/health/ready while not ready: {body}");
    let (status, body) = serve_get(sup, "/health").await;
    assert_eq!(status, 503, "/health while not ready: {body}");
    assert!(body.contains("not_ready"), "{body}");
    assert!(!sup.availability().is_serving());
}

/// Waits until `log` holds a `NotReady` followed by an `Up` (the watch turns before the event
/// is sent, so the log may lag the state a little); returns every event, after checking that
/// the connection was never lost meanwhile.
async fn not_ready_then_up(log: &EventLog) -> Vec<AvailabilityEvent> {
    let mut seen_not_ready = false;
    let events = log
        .wait_for(SOON, |a| {
            seen_not_ready |= a.name() == "not_ready";
            seen_not_ready && is_up(a)
        })
        .await;
    assert!(
        events
            .iter()
            .all(|e| !matches!(e.state, Availability::Down { .. })),
        "the connection was not lost: {events:#?}"
    );
    events
}

async fn join<T: std::fmt::Debug>(what: &str, task: JoinHandle<Result<T, Error>>) -> T {
    let result = tokio::time::timeout(REFUSAL_BOUND, task)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer"))
        .unwrap();
    assert_not_refused(what, &result);
    result.unwrap_or_else(|e| panic!("{what}: {e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_at_connect_is_not_ready() {
    let mut srv = server_with(&[
        "--enable-debug-command",
        "yes",
        "--key-load-delay",
        KEY_LOAD_DELAY_US,
        "--loading-process-events-interval-bytes",
        "1024",
    ])
    .await;
    {
        let mut admin = admin_unbounded(&srv).await;
        populate(&mut admin).await;
        let _: () = redis::cmd("SAVE").query_async(&mut admin).await.unwrap();
    }
    // The restarted server loads dump.rdb slowly; the fixture returns once it answers at all.
    srv.restart_answering().await.unwrap();
    let mut admin = admin_unbounded(&srv).await;
    assert!(loading(&mut admin).await, "setup: the server is loading");

    let sup = start(&srv).await;
    let log = EventLog::start(&sup);
    let redis = sup.handle();
    // Issued while the first connection is being made.
    let early_get = spawn_get(&redis);
    let early_incr = spawn_incr(&redis, "n");

    let state = wait_state(
        &sup,
        SOON,
        "not ready (loading)",
        is_not_ready(FailureKind::Loading),
    )
    .await;
    assert!(
        loading(&mut admin).await,
        "setup: still loading when NotReady was seen"
    );
    let Availability::NotReady { reason, .. } = &state else {
        unreachable!()
    };
    assert!(reason.contains("LOADING"), "{reason}");
    assert_not_ready_routes(&sup).await;
    // Issued while the state is NotReady: it waits.
    let get = spawn_get(&redis);
    wait_offline_waiting(&sup, 1).await;

    wait_state(&sup, REFUSAL_BOUND, "up", is_up).await;
    assert!(
        !loading(&mut admin).await,
        "Up was published while the server was still loading"
    );
    assert_held_commands_served(
        &mut admin,
        [
            ("GET issued at connect", early_get),
            ("GET issued while loading", get),
        ],
        ("INCR issued at connect", early_incr),
    )
    .await;

    not_ready_then_up(&log).await;
    let (status, _) = serve_get(&sup, "/health/ready").await;
    assert_eq!(status, 200);
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_mid_connection() {
    let srv = server_with(&[
        "--enable-debug-command",
        "yes",
        "--loading-process-events-interval-bytes",
        "1024",
    ])
    .await;
    let mut admin = admin_unbounded(&srv).await;
    populate(&mut admin).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("key-load-delay")
        .arg(KEY_LOAD_DELAY_US)
        .query_async(&mut admin)
        .await
        .unwrap();
    let sup = start(&srv).await;
    sup.wait_until_up(SOON).await.unwrap();
    let log = EventLog::start(&sup);
    let redis = sup.handle();

    // Callers keep reading and counting through the reload.
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<JoinHandle<(u64, Vec<String>)>> = (0..8)
        .map(|i| {
            let (r, stop) = (redis.with_timeout(LONG), stop.clone());
            tokio::spawn(async move {
                let (mut incr_ok, mut errors) = (0, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    if i % 2 == 0 {
                        match r.get::<_, Option<String>>("k").await {
                            Ok(Some(v)) if v == "v" => {}
                            other => errors.push(format!("GET: {other:?}")),
                        }
                    } else {
                        match r.incr("counter").await {
                            Ok(_) => incr_ok += 1,
                            Err(e) => errors.push(format!("INCR: {e:?}")),
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (incr_ok, errors)
            })
        })
        .collect();

    let mut reloader = admin_unbounded(&srv).await;
    let reload = tokio::spawn(async move {
        redis::cmd("DEBUG")
            .arg("RELOAD")
            .query_async::<()>(&mut reloader)
            .await
    });
    let state = wait_state(
        &sup,
        SOON,
        "not ready (loading)",
        is_not_ready(FailureKind::Loading),
    )
    .await;
    assert!(state.to_string().contains("LOADING"), "{state}");
    assert_not_ready_routes(&sup).await;
    tokio::time::timeout(REFUSAL_BOUND, reload)
        .await
        .expect("DEBUG RELOAD finishes")
        .unwrap()
        .expect("DEBUG RELOAD");
    wait_state(&sup, SOON, "up", is_up).await;
    // A few more rounds on the reloaded server, then stop.
    redis.set("after", "1").await.unwrap();
    stop.store(true, Ordering::Relaxed);

    let mut incr_ok = 0;
    let mut errors = Vec::new();
    for c in callers {
        let (ok, errs) = c.await.unwrap();
        incr_ok += ok;
        errors.extend(errs);
    }
    assert!(
        errors.is_empty(),
        "callers never see LOADING, nor any other error: {errors:#?}"
    );
    let counter: u64 = redis::cmd("GET")
        .arg("counter")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(counter, incr_ok, "every INCR ran exactly once");
    not_ready_then_up(&log).await;
    assert_eq!(sup.restarts(), 0);
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_without_master_is_not_ready() {
    // The master's data is saved, so that it comes back (on its same port) with `k`.
    let mut master = server_with(&["--repl-diskless-sync-delay", "0"]).await;
    {
        let mut admin = admin(&master).await;
        let _: () = redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query_async(&mut admin)
            .await
            .unwrap();
        let _: () = redis::cmd("SAVE").query_async(&mut admin).await.unwrap();
    }
    master.kill().await.unwrap();
    let port = master.port().to_string();
    let replica = server_with(&[
        "--replicaof",
        "127.0.0.1",
        &port,
        "--replica-serve-stale-data",
        "no",
    ])
    .await;

    let sup = start(&replica).await;
    let log = EventLog::start(&sup);
    let redis = sup.handle();
    let state = wait_state(
        &sup,
        SOON,
        "not ready (master down)",
        is_not_ready(FailureKind::MasterDown),
    )
    .await;
    assert!(state.to_string().contains("MASTERDOWN"), "{state}");
    assert_not_ready_routes(&sup).await;
    let get = spawn_get(&redis);
    wait_offline_waiting(&sup, 1).await;
    // Still waiting after two more probes were refused (`MASTERDOWN`): not handed the refusal.
    let probed = command_calls(&replica, "ping").await;
    poll_until("two more probes refused", SOON, async || {
        command_calls(&replica, "ping").await >= probed + 2
    })
    .await;
    assert!(!get.is_finished(), "the GET waits for the master");

    master.restart().await.unwrap();
    let state = wait_state(&sup, REFUSAL_BOUND, "up", is_up).await;
    let Availability::Up { role, .. } = &state else {
        unreachable!()
    };
    assert_eq!(role, "slave");
    assert_eq!(
        join("GET waiting for the master", get).await.as_deref(),
        Some("v")
    );
    not_ready_then_up(&log).await;
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_script_is_not_ready() {
    let srv = server_with(&["--busy-reply-threshold", "100"]).await;
    let sup = start(&srv).await;
    sup.wait_until_up(SOON).await.unwrap();
    let redis = sup.handle();
    redis.set("k", "v").await.unwrap();
    let log = EventLog::start(&sup);
    let mut killer = admin_unbounded(&srv).await;
    let mut runner = admin_unbounded(&srv).await;

    let script = tokio::spawn(async move {
        redis::cmd("EVAL")
            .arg("while true do end")
            .arg(0)
            .query_async::<()>(&mut runner)
            .await
    });
    // Sent while the state is still Up: queued behind the script, they are refused with BUSY
    // once it passes the threshold, and sent again after it. (Should they overtake the EVAL,
    // they are simply served before it: the assertions hold either way.)
    tokio::time::sleep(Duration::from_millis(20)).await;
    let early_get = spawn_get_within(&redis, SHORT_WAIT);
    let early_incr = spawn_incr_within(&redis, "n", SHORT_WAIT);
    let state = wait_state(
        &sup,
        SOON,
        "not ready (busy)",
        is_not_ready(FailureKind::Busy),
    )
    .await;
    assert!(state.to_string().contains("BUSY"), "{state}");
    assert_not_ready_routes(&sup).await;
    // Sent while NotReady: it waits.
    let get = spawn_get_within(&redis, SHORT_WAIT);
    wait_offline_waiting(&sup, 1).await;

    let _: () = redis::cmd("SCRIPT")
        .arg("KILL")
        .query_async(&mut killer)
        .await
        .unwrap();
    let killed = tokio::time::timeout(SOON, script).await.unwrap().unwrap();
    assert!(killed.is_err(), "the script was killed: {killed:?}");
    wait_state(&sup, SOON, "up", is_up).await;

    assert_held_commands_served(
        &mut killer,
        [
            ("GET sent before BUSY", early_get),
            ("GET sent while NotReady", get),
        ],
        ("INCR sent before BUSY", early_incr),
    )
    .await;
    not_ready_then_up(&log).await;
    assert_eq!(sup.restarts(), 0);
    sup.shutdown().await;
}
