//! Memory: the resident set of the idle `redis-supervisor` binary, and how this process's RSS
//! moves while 10 000 commands wait through an outage.
//!
//! ```text
//! cargo bench --bench memory              # 10 s outage
//! cargo bench --bench memory -- --quick   # 2 s outage
//! ```
//!
//! 1. Idle binary: the `redis-supervisor` binary cargo built for this bench (bench profile under
//!    `cargo bench`, `CARGO_BIN_EXE_redis-supervisor`) is started against a fixture server with
//!    the HTTP listener on a free loopback port; once `/health` answers 200 it is left idle for
//!    2 s, then `VmRSS` and `VmHWM` are read from `/proc/PID/status`; then it gets SIGTERM.
//! 2. Outage: a supervisor (command timeout 30 s, longer than the outage) is up; the server is
//!    killed; once `Down` is published, 10 000 GETs are spawned as tasks and wait for the
//!    connection (offline policy `wait`). This process's `VmRSS` is sampled every 50 ms through the
//!    outage; then the server is restarted and every command must complete successfully.

#[path = "support/common.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{Options, Table, err, rss_kb};
use redis_supervisor::testing::RedisServer;
use redis_supervisor::{Availability, Config, Supervisor};

const WAITING: usize = 10_000;

fn main() {
    let opts = Options::from_args();
    common::run_bench("memory", || run(&opts));
}

async fn run(opts: &Options) -> Result<(), String> {
    let outage = if opts.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(10)
    };
    let mut server = RedisServer::start().await.map_err(err)?;
    let idle = idle_binary(&server).await?;
    eprintln!(
        "idle binary: VmRSS {} kB, VmHWM {} kB, {} threads",
        idle.rss_kb, idle.hwm_kb, idle.threads
    );
    let o = outage_growth(&mut server, outage).await?;
    eprintln!(
        "outage: before {} kB, after spawning {} kB, peak {} kB, end of outage {} kB, after {} kB",
        o.before_kb, o.spawned_kb, o.peak_kb, o.end_kb, o.after_kb
    );

    let report = report(opts, &idle, &o, outage);
    println!("{report}");
    common::write_result(opts, "memory.md", &report);
    if o.ok != WAITING {
        return Err(format!(
            "only {} of {WAITING} waiting commands succeeded after the restart (first error: {})",
            o.ok,
            o.first_error.as_deref().unwrap_or("-")
        ));
    }
    Ok(())
}

struct Idle {
    rss_kb: u64,
    hwm_kb: u64,
    threads: u64,
    exit: String,
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(err)?;
    Ok(l.local_addr().map_err(err)?.port())
}

/// The HTTP status of `GET path`, or `None` if nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let line = std::str::from_utf8(&buf[..n]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn idle_binary(server: &RedisServer) -> Result<Idle, String> {
    let bin = env!("CARGO_BIN_EXE_redis-supervisor");
    let port = free_port()?;
    let mut child = std::process::Command::new(bin)
        .env("REDIS_URL", server.url())
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn {bin}: {e}"))?;
    let pid = child.id();
    let result = async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().map_err(err)? {
                return Err(format!("{bin} exited at start: {status}"));
            }
            let p = port;
            let status = tokio::task::spawn_blocking(move || http_status(p, "/health"))
                .await
                .map_err(err)?;
            if status == Some(200) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{bin}: /health not 200 within 20 s ({status:?})"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(Idle {
            rss_kb: rss_kb(Some(pid)),
            hwm_kb: common::proc_status_kb(Some(pid), "VmHWM").unwrap_or(0),
            threads: common::proc_status_kb_raw(Some(pid), "Threads").unwrap_or(0),
            exit: String::new(),
        })
    }
    .await;
    // Stop our own child: SIGTERM (graceful), SIGKILL if it lingers.
    // SAFETY: kill(2) on the pid of the child we spawned and have not reaped yet.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(status) = child.try_wait().map_err(err)? {
            break status.to_string();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break "killed after SIGTERM timeout".to_string();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    result.map(|i| Idle { exit, ..i })
}

struct Outage {
    before_kb: u64,
    spawned_kb: u64,
    peak_kb: u64,
    end_kb: u64,
    after_kb: u64,
    max_waiting_seen: usize,
    cpu_during: Duration,
    completed_in: Duration,
    ok: usize,
    first_error: Option<String>,
    future_bytes: usize,
}

async fn outage_growth(server: &mut RedisServer, outage: Duration) -> Result<Outage, String> {
    let config = Config::builder()
        .url(server.url())
        .name("memory")
        .command_timeout(Duration::from_secs(30))
        .max_waiting(WAITING * 2)
        .build()
        .map_err(err)?;
    let supervisor = Supervisor::start(config).await.map_err(err)?;
    supervisor
        .wait_until_up(Duration::from_secs(10))
        .await
        .map_err(err)?;
    let handle = supervisor.handle();
    let future_bytes = std::mem::size_of_val(&handle.get::<_, Option<Vec<u8>>>("k"));
    // A little traffic first, so the connection's buffers exist before "before".
    for i in 0..1000 {
        handle.set(format!("memory:{i}"), "v").await.map_err(err)?;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before_kb = rss_kb(None);

    let mut watch = supervisor.watch();
    server.kill().await.map_err(err)?;
    tokio::time::timeout(
        Duration::from_secs(10),
        watch.wait_for(|a| matches!(a, Availability::Down { .. })),
    )
    .await
    .map_err(|_| "no Down within 10 s of kill")?
    .map_err(err)?;

    let outage_start = Instant::now();
    let cpu0 = common::cpu_time();
    let tasks: Vec<_> = (0..WAITING)
        .map(|i| {
            let h = handle.clone();
            tokio::spawn(async move {
                h.get::<_, Option<Vec<u8>>>(format!("memory:{}", i % 1000))
                    .await
                    .map(drop)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let spawned_kb = rss_kb(None);
    let mut peak_kb = spawned_kb;
    let mut max_waiting_seen = supervisor.offline_waiting();
    while outage_start.elapsed() < outage {
        tokio::time::sleep(Duration::from_millis(50)).await;
        peak_kb = peak_kb.max(rss_kb(None));
        max_waiting_seen = max_waiting_seen.max(supervisor.offline_waiting());
    }
    let end_kb = rss_kb(None);
    let cpu_during = common::cpu_time().saturating_sub(cpu0);

    server.restart().await.map_err(err)?;
    let t0 = Instant::now();
    let (mut ok, mut first_error) = (0, None);
    for t in tasks {
        match t.await.map_err(err)? {
            Ok(()) => ok += 1,
            Err(e) => {
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    let completed_in = t0.elapsed();
    let after_kb = rss_kb(None);
    supervisor.shutdown().await;
    Ok(Outage {
        before_kb,
        spawned_kb,
        peak_kb,
        end_kb,
        after_kb,
        max_waiting_seen,
        cpu_during,
        completed_in,
        ok,
        first_error,
        future_bytes,
    })
}

fn mib(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

fn report(opts: &Options, idle: &Idle, o: &Outage, outage: Duration) -> String {
    let mut out = format!(
        "## Memory{}\n\nMachine: {}; load average at the end: {}.\n\n### Idle binary\n\n",
        if opts.quick { " (quick mode)" } else { "" },
        common::machine(),
        common::loadavg()
    );
    let mut t = Table::new(
        &[
            "process",
            "VmRSS MiB",
            "VmHWM MiB",
            "threads",
            "exit on SIGTERM",
        ],
        &[false, true, true, true, false],
    );
    t.row(vec![
        format!(
            "`redis-supervisor` ({} profile), up, idle 2 s",
            if common::UNOPTIMIZED { "test" } else { "bench" }
        ),
        mib(idle.rss_kb),
        mib(idle.hwm_kb),
        idle.threads.to_string(),
        idle.exit.clone(),
    ]);
    out.push_str(&t.render());
    out.push_str(&format!(
        "\n### {WAITING} commands waiting through a {} s outage (this process's VmRSS)\n\n",
        outage.as_secs()
    ));
    let mut t = Table::new(
        &["moment", "VmRSS MiB", "Δ from before MiB"],
        &[false, true, true],
    );
    let delta = |kb: u64| format!("{:+.1}", (kb as f64 - o.before_kb as f64) / 1024.0);
    for (name, kb) in [
        ("before (up, idle)", o.before_kb),
        ("100 ms after spawning the waiting GETs", o.spawned_kb),
        ("peak during the outage (sampled every 50 ms)", o.peak_kb),
        ("end of the outage", o.end_kb),
        ("after the restart, all completed", o.after_kb),
    ] {
        t.row(vec![name.into(), mib(kb), delta(kb)]);
    }
    out.push_str(&t.render());
    let per_cmd = (o.spawned_kb as f64 - o.before_kb as f64) * 1024.0 / WAITING as f64;
    out.push_str(&format!(
        "\nGrowth during the outage itself (end − 100 ms after spawning): {:+.1} MiB. \
         About {:.0} bytes per waiting command (task + future; a `get` future is {} bytes). \
         Most waiting seen by `offline_waiting()`: {}. Client CPU during the outage: {:.0} ms \
         ({:.1} % of one core). After the restart all {} commands completed {} ({} failed) in {:.0} ms.\n",
        (o.end_kb as f64 - o.spawned_kb as f64) / 1024.0,
        per_cmd,
        o.future_bytes,
        o.max_waiting_seen,
        o.cpu_during.as_secs_f64() * 1e3,
        o.cpu_during.as_secs_f64() / outage.as_secs_f64() * 100.0,
        WAITING,
        if o.ok == WAITING { "successfully" } else { "" },
        WAITING - o.ok,
        o.completed_in.as_secs_f64() * 1e3,
    ));
    out
}
