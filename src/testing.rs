//! A real `redis-server` process fixture for tests (feature `test-util`): start, kill, restart, pause.
//!
//! [`RedisServer`] runs its own `redis-server` child on a free port of `127.0.0.1`, with persistence
//! off (`--save "" --appendonly no`), a private temporary working directory and a log file in it. It
//! returns only once the server answers a `PING` (an error reply such as `-NOAUTH` also counts: the server
//! is up). Fault tests drive it with [`kill`](RedisServer::kill) (SIGKILL), [`restart`](RedisServer::restart)
//! (same port, same directory), and [`pause`](RedisServer::pause) / [`resume`](RedisServer::resume)
//! (SIGSTOP / SIGCONT). [`restart_answering`](RedisServer::restart_answering) returns as soon as the
//! process answers at all, `-LOADING` included, for tests of a server that is still loading its dataset.
//!
//! The fixture only ever signals the process it spawned itself, by that child's own pid: never a process
//! group, never "whatever listens on the port". Port 6379 is never used. Dropping a [`RedisServer`] kills
//! and reaps its child and removes its directory.
//!
//! [`FaultProxy`] sits between a client and a fixture server on loopback and injects network faults
//! ([`Fault`]: blackhole, reset, latency, early close) on live and new connections.
//!
//! [`SentinelTopology`] (a master, a replica and three sentinels) and [`ClusterTopology`] (three
//! primaries, three replicas) build on the same processes and the same kill-only-your-own-child rule,
//! with helpers to fail nodes over and to wait until the topology has settled again.
//!
//! `redis-server` must be on `PATH`; `scripts/test.sh` installs it when it is missing.
//!
//! The fixture waits with real time (blocking socket timeouts, [`std::time::Instant`] deadlines), so it
//! also works in a runtime whose clock is paused with `tokio::time::pause`.
//!
//! # Example
//!
//! ```
//! use redis_supervisor::testing::RedisServer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut server = RedisServer::start_with_args(["--requirepass", "pw"]).await?;
//! assert_eq!(server.host(), "127.0.0.1");
//!
//! let url = format!("redis://:pw@{}:{}", server.host(), server.port());
//! let client = redis::Client::open(url)?;
//! let mut conn = client.get_multiplexed_async_connection().await?;
//! let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
//! assert_eq!(pong, "PONG");
//!
//! // Crash it, then bring it back on the same port (its data is gone: persistence is off).
//! server.kill().await?;
//! assert_eq!(server.pid(), None);
//! server.restart().await?;
//! assert!(server.pid().is_some());
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

mod cluster;
mod proxy;
mod sentinel;
pub use cluster::{ClusterNode, ClusterTopology, ClusterTopologyBuilder};
pub use proxy::{Fault, FaultProxy};
pub use sentinel::{Credentials, SentinelTopology, SentinelTopologyBuilder};

/// The address every fixture server binds to.
const HOST: &str = "127.0.0.1";
/// The program spawned, looked up on `PATH`.
const PROGRAM: &str = "redis-server";
/// A port that belongs to somebody else's Redis on developer machines: never used.
const FOREIGN_PORT: u16 = 6379;
/// How long one start (or restart) may take until the server answers `PING`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(15);
/// Connect / read / write timeout of one readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How many fresh ports [`RedisServer::start_with_args`] tries when it loses a port race.
const PORT_ATTEMPTS: usize = 5;
/// How many ports are drawn from the OS to find one not reserved by another fixture of this process.
const PORT_DRAWS: usize = 50;
/// Lines of each log file in [`RedisServer::log_tail`].
const LOG_TAIL_LINES: usize = 30;
/// Longest wait for the killed child to be reaped in `Drop` (it normally takes a millisecond).
const REAP_TIMEOUT: Duration = Duration::from_secs(5);
/// The server's log file, inside its directory.
const LOG_FILE: &str = "redis.log";
/// The server's standard error (configuration errors are printed there, not to the log file).
const STDERR_FILE: &str = "stderr.log";
/// What `redis-server` logs when its port is taken.
const ADDR_IN_USE: &str = "Address already in use";
/// Options the fixture owns: overriding them would make it wait on (or leave) the wrong port or directory.
const RESERVED_OPTIONS: [&str; 5] = ["--port", "--bind", "--dir", "--logfile", "--daemonize"];

/// Ports held by live fixtures of this process, so that two fixtures never race for the same port.
static RESERVED_PORTS: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Why the fixture could not start, stop or signal its `redis-server`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FixtureError {
    /// `redis-server` is not on `PATH`.
    #[error(
        "redis-server not found on PATH: install it with `apt-get install -y redis-server` (Debian/Ubuntu) \
         or run scripts/test.sh, which installs it"
    )]
    NotInstalled,
    /// The fixture's temporary working directory could not be created.
    #[error("could not create the fixture's temporary directory: {0}")]
    TempDir(#[source] io::Error),
    /// No free port could be found on `127.0.0.1`.
    #[error("could not find a free port on 127.0.0.1: {0}")]
    Port(#[source] io::Error),
    /// `redis-server` could not be spawned (or its stderr file not opened).
    #[error("could not spawn redis-server: {0}")]
    Spawn(#[source] io::Error),
    /// `redis-server` exited before it answered `PING` (bad arguments, port taken, ...).
    #[error("redis-server on port {port} exited during startup ({status}); log tail:\n{log_tail}")]
    Exited {
        /// The port it was started on.
        port: u16,
        /// Its exit status.
        status: ExitStatus,
        /// The end of its log file and standard error.
        log_tail: String,
    },
    /// `redis-server` kept running but did not answer `PING` in time; it has been killed.
    #[error("redis-server on port {port} not ready after {waited:?}; log tail:\n{log_tail}")]
    NotReady {
        /// The port it was started on.
        port: u16,
        /// How long the fixture waited.
        waited: Duration,
        /// The end of its log file and standard error.
        log_tail: String,
    },
    /// An extra argument would override an option the fixture owns (`--port`, `--bind`, `--dir`,
    /// `--logfile`, `--daemonize`).
    #[error("redis-server argument {0:?} is managed by the fixture and cannot be overridden")]
    ReservedArg(String),
    /// The operation needs a running server, but it was killed (or its start failed).
    #[error("redis-server is not running (it was killed, or its restart failed)")]
    NotRunning,
    /// Killing or reaping the child failed.
    #[error("could not kill or reap redis-server: {0}")]
    Kill(#[source] io::Error),
    /// Sending SIGSTOP / SIGCONT to the child failed.
    #[error("could not signal redis-server: {0}")]
    Signal(#[source] io::Error),
    /// A topology option, node address or index is invalid (e.g. quorum 0, an address of no node).
    #[error("invalid topology argument: {0}")]
    InvalidArg(String),
    /// A command to a topology node, or a `redis-cli` run, failed or got an unexpected reply.
    #[error("{node}: {detail}")]
    Command {
        /// The node's address, or the program that failed.
        node: String,
        /// What failed (never a password).
        detail: String,
    },
    /// A topology did not reach the awaited state in time.
    #[error("{what}: not reached after {waited:?}; last seen: {last}")]
    Timeout {
        /// The awaited state.
        what: String,
        /// How long the fixture waited.
        waited: Duration,
        /// Why the last check failed.
        last: String,
    },
}

/// A `redis-server` child process on `127.0.0.1` with its own port and temporary directory.
///
/// Dropping it sends SIGKILL to its child (even a paused one), reaps it, and removes the directory.
#[derive(Debug)]
pub struct RedisServer {
    /// The running child; `None` once killed, or after a failed restart.
    child: Option<Child>,
    /// The port, reserved in [`RESERVED_PORTS`] for the fixture's whole life (restarts reuse it).
    port: u16,
    /// Extra arguments appended after the fixture's own (later arguments win in `redis-server`).
    args: Vec<String>,
    /// Working directory (`--dir`) holding `redis.log` and `stderr.log`. Dropped after the child is reaped.
    dir: tempfile::TempDir,
}

/// What a start or restart waits for before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaited {
    /// A reply to `PING` other than `-LOADING`: the server can serve (or asks for credentials).
    Serving,
    /// Any reply to `PING`, `-LOADING` included: the process accepts connections and answers.
    Answering,
}

/// How one spawn attempt ended, when it did not fail for good.
enum Launch {
    /// The child answers `PING`.
    Ready,
    /// The child exited because its port was taken; trying again (on another port) may work.
    AddrInUse(FixtureError),
}

impl RedisServer {
    /// Starts a `redis-server` on a free port with the fixture's default arguments only.
    ///
    /// # Errors
    ///
    /// [`FixtureError::NotInstalled`] without `redis-server` on `PATH`; otherwise see
    /// [`start_with_args`](Self::start_with_args).
    pub async fn start() -> Result<RedisServer, FixtureError> {
        Self::start_with_args(std::iter::empty::<&str>()).await
    }

    /// Starts a `redis-server` on a free port, appending `args` to the fixture's own arguments
    /// (e.g. `["--requirepass", "pw"]` or `["--appendonly", "yes"]`; later arguments override earlier ones).
    ///
    /// The fixture runs `redis-server --port P --bind 127.0.0.1 --save "" --appendonly no --dir D
    /// --logfile D/redis.log --daemonize no ARGS...` and waits (up to 10 s) until it answers `PING`.
    /// If the port was taken in the meantime it tries again with a new port (up to 5 ports).
    ///
    /// # Errors
    ///
    /// [`FixtureError::ReservedArg`] if `args` sets `--port`, `--bind`, `--dir`, `--logfile` or
    /// `--daemonize`; [`FixtureError::NotInstalled`], [`FixtureError::TempDir`], [`FixtureError::Port`],
    /// [`FixtureError::Spawn`], [`FixtureError::Exited`] (e.g. an invalid argument; the log tail says
    /// why) or [`FixtureError::NotReady`].
    pub async fn start_with_args<I, S>(args: I) -> Result<RedisServer, FixtureError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let args = owned_args(args)?;
        let dir = tempfile::Builder::new()
            .prefix("redis-supervisor-fixture-")
            .tempdir()
            .map_err(FixtureError::TempDir)?;
        let mut server = RedisServer {
            child: None,
            port: reserve_port()?,
            args,
            dir,
        };
        let mut attempt = 1;
        loop {
            let deadline = Instant::now() + READY_TIMEOUT;
            match server.launch(deadline, Awaited::Serving).await? {
                Launch::Ready => return Ok(server),
                Launch::AddrInUse(err) if attempt >= PORT_ATTEMPTS => return Err(err),
                Launch::AddrInUse(_) => {
                    let old = server.port;
                    server.port = reserve_port()?;
                    release_port(old);
                    attempt += 1;
                }
            }
        }
    }

    /// The port the server listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address the server binds to: always `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The server's URL without credentials: `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{HOST}:{}", self.port)
    }

    /// The pid of the running child; `None` once it was killed (or a restart failed).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The server's temporary working directory (`--dir`), which also holds its log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the child with SIGKILL (it works on a paused child too) and waits until it is reaped.
    ///
    /// Does nothing when the server is not running.
    ///
    /// # Errors
    ///
    /// [`FixtureError::Kill`] if the signal cannot be sent or the child cannot be reaped.
    pub async fn kill(&mut self) -> Result<(), FixtureError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let exited = match child.try_wait() {
            Ok(status) => status.is_some(),
            Err(err) => {
                self.child = Some(child);
                return Err(FixtureError::Kill(err));
            }
        };
        if !exited {
            if let Err(err) = child.start_kill() {
                self.child = Some(child);
                return Err(FixtureError::Kill(err));
            }
            // On error the child is dropped: `kill_on_drop` and tokio's orphan reaper finish the job.
            child.wait().await.map_err(FixtureError::Kill)?;
        }
        Ok(())
    }

    /// Starts the server again on the same port, with the same arguments and directory, killing it first
    /// if it is running; waits until it answers `PING`.
    ///
    /// # Errors
    ///
    /// As [`kill`](Self::kill), then [`FixtureError::Exited`] or [`FixtureError::NotReady`] (also when the
    /// port stayed taken for the whole 10 s), [`FixtureError::Spawn`] or [`FixtureError::NotInstalled`].
    pub async fn restart(&mut self) -> Result<(), FixtureError> {
        self.relaunch(Awaited::Serving).await
    }

    /// Like [`restart`](Self::restart), but returns as soon as the new process answers `PING` with any
    /// reply, `-LOADING` included: the server may still be loading its dataset (e.g. a large `dump.rdb`
    /// in its directory, loaded slowly with `--key-load-delay`), and refuses commands until it is done.
    ///
    /// # Errors
    ///
    /// As [`restart`](Self::restart).
    pub async fn restart_answering(&mut self) -> Result<(), FixtureError> {
        self.relaunch(Awaited::Answering).await
    }

    /// Kills the child if it runs, then launches it again on the same port until it is `awaited`.
    async fn relaunch(&mut self, awaited: Awaited) -> Result<(), FixtureError> {
        self.kill().await?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.launch(deadline, awaited).await? {
                Launch::Ready => return Ok(()),
                Launch::AddrInUse(err) if Instant::now() >= deadline => return Err(err),
                Launch::AddrInUse(_) => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
    }

    /// Like [`restart`](Self::restart), but replaces the extra arguments with `args` (e.g. a different
    /// `--requirepass`); later restarts keep the new ones.
    ///
    /// # Errors
    ///
    /// [`FixtureError::ReservedArg`] (the server is left as it was), else as [`restart`](Self::restart).
    pub async fn restart_with_args<I, S>(&mut self, args: I) -> Result<(), FixtureError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args = owned_args(args)?;
        self.restart().await
    }

    /// Freezes the server with SIGSTOP: it keeps its port and connections but answers nothing.
    ///
    /// # Errors
    ///
    /// [`FixtureError::NotRunning`] after a kill, [`FixtureError::Signal`] if `kill(2)` fails.
    pub fn pause(&self) -> Result<(), FixtureError> {
        self.signal(libc::SIGSTOP)
    }

    /// Lets a paused server run again with SIGCONT.
    ///
    /// # Errors
    ///
    /// [`FixtureError::NotRunning`] after a kill, [`FixtureError::Signal`] if `kill(2)` fails.
    pub fn resume(&self) -> Result<(), FixtureError> {
        self.signal(libc::SIGCONT)
    }

    /// The last ~30 lines of the server's log file, followed by its standard error if that is not empty;
    /// meant for failure messages.
    pub fn log_tail(&self) -> String {
        let mut out = tail(&self.dir.path().join(LOG_FILE), LOG_TAIL_LINES)
            .unwrap_or_else(|| format!("(no {LOG_FILE})"));
        if let Some(stderr) = tail(&self.dir.path().join(STDERR_FILE), LOG_TAIL_LINES) {
            if !stderr.trim().is_empty() {
                out.push_str("\n--- stderr ---\n");
                out.push_str(&stderr);
            }
        }
        out
    }

    /// Spawns the child on `self.port` and waits until it answers `PING` as `awaited` says, or
    /// `deadline` passes.
    ///
    /// On `Ok(Launch::Ready)` the child is in `self.child`; in every other case `self.child` is `None`.
    async fn launch(
        &mut self,
        deadline: Instant,
        awaited: Awaited,
    ) -> Result<Launch, FixtureError> {
        let log_path = self.dir.path().join(LOG_FILE);
        // Lines written before this offset belong to earlier runs.
        let log_offset = std::fs::metadata(&log_path).map_or(0, |meta| meta.len());
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(STDERR_FILE))
            .map_err(FixtureError::Spawn)?;

        let mut command = Command::new(PROGRAM);
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", HOST, "--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log_path)
            .args(["--daemonize", "no"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        let child = command.spawn().map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => FixtureError::NotInstalled,
            _ => FixtureError::Spawn(err),
        })?;
        self.child = Some(child);

        let started = Instant::now();
        let mut delay = Duration::ZERO;
        loop {
            if let Some(status) = self.try_reap()? {
                let log_tail = self.log_tail();
                let err = FixtureError::Exited {
                    port: self.port,
                    status,
                    log_tail,
                };
                return if read_from(&log_path, log_offset).contains(ADDR_IN_USE) {
                    Ok(Launch::AddrInUse(err))
                } else {
                    Err(err)
                };
            }
            if Instant::now() >= deadline {
                let log_tail = self.log_tail();
                // The NotReady error is the one worth reporting; a failed kill leaves the child to
                // `kill_on_drop`.
                let _ = self.kill().await;
                self.child = None;
                return Err(FixtureError::NotReady {
                    port: self.port,
                    waited: started.elapsed(),
                    log_tail,
                });
            }
            // A blocking probe on real time, so a paused tokio clock cannot time it out early.
            let port = self.port;
            let ready = tokio::task::spawn_blocking(move || {
                std::thread::sleep(delay);
                probe(port, awaited)
            })
            .await
            .unwrap_or(false);
            delay = POLL_INTERVAL;
            // The answer must come from our own child: if it has exited meanwhile, the port was taken
            // by someone else, and the next turn reports the exit.
            if ready && self.try_reap()?.is_none() {
                return Ok(Launch::Ready);
            }
        }
    }

    /// Reaps the child if it has exited, returning its status (`self.child` is then `None`).
    fn try_reap(&mut self) -> Result<Option<ExitStatus>, FixtureError> {
        let Some(child) = self.child.as_mut() else {
            return Err(FixtureError::NotRunning);
        };
        let status = child.try_wait().map_err(FixtureError::Kill)?;
        if status.is_some() {
            self.child = None;
        }
        Ok(status)
    }

    /// Sends `signal` to the child's own pid (never to a group).
    fn signal(&self, signal: libc::c_int) -> Result<(), FixtureError> {
        signal_child(self.pid(), signal)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                // If this fails, `kill_on_drop` tries again and tokio's orphan reaper reaps the child.
                let _ = child.start_kill();
                let deadline = Instant::now() + REAP_TIMEOUT;
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        release_port(self.port);
        // `self.dir` is removed when the fields drop, after the child is gone.
    }
}

/// Copies the extra arguments, refusing options the fixture owns (redis matches option names
/// case-insensitively).
fn owned_args<I, S>(args: I) -> Result<Vec<String>, FixtureError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    args.into_iter()
        .map(|arg| {
            let arg = arg.as_ref();
            if RESERVED_OPTIONS
                .iter()
                .any(|option| option.eq_ignore_ascii_case(arg))
            {
                Err(FixtureError::ReservedArg(arg.to_owned()))
            } else {
                Ok(arg.to_owned())
            }
        })
        .collect()
}

/// Finds a free port on `127.0.0.1` that no other fixture of this process holds, and reserves it.
fn reserve_port() -> Result<u16, FixtureError> {
    for _ in 0..PORT_DRAWS {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(FixtureError::Port)?;
        let port = listener.local_addr().map_err(FixtureError::Port)?.port();
        drop(listener);
        if port == FOREIGN_PORT {
            continue;
        }
        let mut reserved = RESERVED_PORTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if reserved.insert(port) {
            return Ok(port);
        }
    }
    Err(FixtureError::Port(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("{PORT_DRAWS} ports drawn, all held by other fixtures"),
    )))
}

/// Gives a reserved port back.
fn release_port(port: u16) {
    RESERVED_PORTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&port);
}

/// One blocking readiness probe: sends `PING` and reads one RESP line.
///
/// Any simple-string or error reply means the server is up (`-NOAUTH` included), except `-LOADING`
/// (the server is still loading its data set), which counts only when `awaited` is
/// [`Awaited::Answering`].
fn probe(port: u16, awaited: Awaited) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) else {
        return false;
    };
    if stream.set_read_timeout(Some(PROBE_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(PROBE_TIMEOUT)).is_err()
        || stream.write_all(b"PING\r\n").is_err()
    {
        return false;
    }
    let mut reply = Vec::new();
    let mut buf = [0_u8; 256];
    while !reply.contains(&b'\n') && reply.len() < 4096 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
        }
    }
    let loading = reply.starts_with(b"-LOADING");
    let ok = reply.starts_with(b"+")
        || (reply.starts_with(b"-") && (!loading || awaited == Awaited::Answering));
    ok && reply.contains(&b'\n')
}

/// The last `lines` lines of a text file, or `None` if it cannot be read.
fn tail(path: &Path, lines: usize) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    Some(all[all.len().saturating_sub(lines)..].join("\n"))
}

/// The text of a file from byte `offset` on (empty if it cannot be read).
fn read_from(path: &Path, offset: u64) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let start = usize::try_from(offset).map_or(bytes.len(), |o| o.min(bytes.len()));
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// Sends `signal` to our own unreaped child `pid` (never to a group): the one place the fixtures
/// signal a process.
pub(crate) fn signal_child(pid: Option<u32>, signal: libc::c_int) -> Result<(), FixtureError> {
    let pid = pid.ok_or(FixtureError::NotRunning)?;
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|pid| *pid > 0)
        .ok_or_else(|| {
            FixtureError::Signal(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("refusing to signal pid {pid}"),
            ))
        })?;
    // SAFETY: kill(2) has no memory-safety preconditions. `pid` is positive (a single process, never
    // a group) and belongs to our own child, which is not reaped yet, so it cannot have been reused.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(FixtureError::Signal(io::Error::last_os_error()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_installed_message_says_how_to_install() {
        let message = FixtureError::NotInstalled.to_string();
        assert!(
            message.contains("redis-server not found on PATH"),
            "{message}"
        );
        assert!(
            message.contains("apt-get install -y redis-server"),
            "{message}"
        );
        assert!(message.contains("scripts/test.sh"), "{message}");
    }

    #[test]
    fn reserved_ports_are_distinct_and_never_6379() {
        let ports: Vec<u16> = (0..20).map(|_| reserve_port().unwrap()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        assert!(!distinct.contains(&FOREIGN_PORT));
        for port in ports {
            release_port(port);
        }
    }

    #[test]
    fn reserved_options_are_refused() {
        assert!(matches!(
            owned_args(["--requirepass", "pw", "--PORT", "6379"]),
            Err(FixtureError::ReservedArg(arg)) if arg == "--PORT"
        ));
        assert!(owned_args(["--dir", "/"]).is_err());
        // Options that merely start like a reserved one are fine.
        assert_eq!(
            owned_args(["--appendonly", "yes", "--bind-source-addr", "127.0.0.1"]).unwrap(),
            ["--appendonly", "yes", "--bind-source-addr", "127.0.0.1"]
        );
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let text: String = (1..=40).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        let tail = tail(&path, 30).unwrap();
        assert!(tail.starts_with("line 11\n"), "{tail}");
        assert!(tail.ends_with("line 40"), "{tail}");
        assert_eq!(read_from(&path, 0).lines().count(), 40);
        assert_eq!(read_from(&path, 10_000), "");
    }

    #[test]
    fn probe_of_a_closed_port_is_not_ready() {
        let port = reserve_port().unwrap();
        assert!(!probe(port, Awaited::Serving));
        assert!(!probe(port, Awaited::Answering));
        release_port(port);
    }
}
