//! Helpers shared by the benches (included with `#[path]`, so each bench uses only part of it):
//! command-line options, CPU time and RSS readings, medians, Markdown tables, machine details.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// Command-line options common to every bench (`cargo bench --bench NAME -- [--quick] ...`).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--quick`: fewer rounds and shorter measurements; nothing is written to `benches/results`.
    pub quick: bool,
    /// Every other argument (cargo passes `--bench`; benches may define their own flags).
    pub rest: Vec<String>,
}

impl Options {
    pub fn from_args() -> Self {
        let mut o = Options::default();
        for a in std::env::args().skip(1) {
            match a.as_str() {
                "--quick" => o.quick = true,
                _ => o.rest.push(a),
            }
        }
        if std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1") {
            o.quick = true;
        }
        o
    }

    pub fn has(&self, flag: &str) -> bool {
        self.rest.iter().any(|a| a == flag)
    }
}

/// The comma-separated values after `flag` (`--conc 16,256`), each parsed by `parse`; `None`
/// when the flag is absent. Panics naming the flag on a value that does not parse.
pub fn parse_list<T>(
    opts: &Options,
    flag: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Option<Vec<T>> {
    let i = opts.rest.iter().position(|a| a == flag)?;
    let list = opts.rest.get(i + 1)?;
    Some(
        list.split(',')
            .map(|s| parse(s.trim()).unwrap_or_else(|| panic!("bad value {s:?} for {flag}")))
            .collect(),
    )
}

/// An error as the benches report it: its text.
pub fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The multi-thread runtime every bench uses: 2 workers (the machine has 2 cores, shared with
/// `redis-server`).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// User + system CPU time of this process so far.
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(rc, 0, "getrusage failed");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The text of a field of `/proc/PID/status`, for `pid` or this process.
fn proc_status_field(pid: Option<u32>, field: &str) -> Option<String> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_string(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        Some(rest.trim().to_string())
    })
}

/// A field of `/proc/PID/status` in kB (`VmRSS`, `VmHWM`, …), for `pid` or this process.
pub fn proc_status_kb(pid: Option<u32>, field: &str) -> Option<u64> {
    proc_status_field(pid, field)?
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// A numeric field of `/proc/PID/status` without unit (`Threads`, …).
pub fn proc_status_kb_raw(pid: Option<u32>, field: &str) -> Option<u64> {
    proc_status_field(pid, field)?.parse().ok()
}

/// Resident set size in kB (this process when `pid` is `None`).
pub fn rss_kb(pid: Option<u32>) -> u64 {
    proc_status_kb(pid, "VmRSS").unwrap_or(0)
}

pub fn median_f64(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn median_duration(values: &[Duration]) -> Duration {
    let secs: Vec<f64> = values.iter().map(Duration::as_secs_f64).collect();
    Duration::from_secs_f64(median_f64(&secs).max(0.0))
}

pub fn max_duration(values: &[Duration]) -> Duration {
    values.iter().copied().max().unwrap_or_default()
}

pub fn min_duration(values: &[Duration]) -> Duration {
    values.iter().copied().min().unwrap_or_default()
}

pub fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// `12.3 k`, `438 k`, `1.20 M`.
pub fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e5 {
        format!("{:.0} k", v / 1e3)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// A Markdown table: header, alignment (`true` = right-aligned), rows.
pub struct Table {
    header: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: AsRef<str>>(header: &[S], right: &[bool]) -> Self {
        Table {
            header: header.iter().map(|s| s.as_ref().to_string()).collect(),
            right: right.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "| {} |", self.header.join(" | "));
        let align: Vec<&str> = (0..self.header.len())
            .map(|i| {
                if self.right.get(i).copied().unwrap_or(false) {
                    "---:"
                } else {
                    "---"
                }
            })
            .collect();
        let _ = writeln!(out, "|{}|", align.join("|"));
        for r in &self.rows {
            let _ = writeln!(out, "| {} |", r.join(" | "));
        }
        out
    }
}

/// One line describing the machine: cores, CPU model, memory, kernel.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".to_string());
    let mem_gib = proc_meminfo_kb("MemTotal").map(|kb| kb as f64 / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let redis = std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.split_whitespace()
                .find_map(|w| w.strip_prefix("v=").map(str::to_string))
        })
        .unwrap_or_else(|| "?".to_string());
    format!(
        "{cores} cores ({model}), {:.0} GiB RAM, Linux {kernel}, redis-server {redis}; \
         client and server share the cores",
        mem_gib.unwrap_or(0.0)
    )
}

fn proc_meminfo_kb(field: &str) -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    info.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// The 1-minute load average (`/proc/loadavg`): other work on the machine skews every number.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

/// `benches/results/` (created if missing).
pub fn results_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    std::fs::create_dir_all(&dir).expect("create benches/results");
    dir
}

/// Whether this bench binary was built without optimizations (`cargo test --bench`, as
/// `scripts/bench-quick.sh` does): it runs, but what it measures is not the crate's speed.
pub const UNOPTIMIZED: bool = cfg!(debug_assertions);

/// Whether this run writes `benches/results/`: full mode from an optimized build.
pub fn writes_results(opts: &Options) -> bool {
    !opts.quick && !UNOPTIMIZED
}

/// Writes `benches/results/NAME` when [`writes_results`]; otherwise nothing is written.
pub fn write_result(opts: &Options, name: &str, contents: &str) {
    if !writes_results(opts) {
        if !opts.quick {
            eprintln!("unoptimized build: benches/results/{name} left as it is (use cargo bench)");
        }
        return;
    }
    let path = results_dir().join(name);
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    eprintln!("wrote {}", path.display());
}

/// Runs a bench's `run` on the bench runtime, prints how long it took, and exits non-zero with
/// the error if it failed.
pub fn run_bench<F, Fut>(name: &str, run: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    if UNOPTIMIZED {
        eprintln!(
            "{name}: unoptimized build (cargo test --bench): a smoke run; its numbers are not \
             measurements (cargo bench builds the optimized one)"
        );
    }
    let rt = runtime();
    let started = std::time::Instant::now();
    let result = rt.block_on(run());
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => eprintln!(
            "{name} bench finished in {:.1} s",
            started.elapsed().as_secs_f64()
        ),
        Err(e) => {
            eprintln!("{name} bench FAILED: {e}");
            std::process::exit(1);
        }
    }
}
