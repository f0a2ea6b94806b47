//! [`FaultProxy`]: an in-process TCP proxy on loopback that sits between a client and a fixture server and
//! injects network faults (blackhole, reset, latency, early close) on live and new connections.
//!
//! One accept-loop task owns the listener and a [`JoinSet`] with one task per proxied connection. Each
//! connection task copies bytes both ways with a `tokio::select!` over the readiness of both sockets, the
//! release time of delayed data, and a [`watch`] channel that carries the current [`Fault`], so
//! [`FaultProxy::set_fault`] takes effect at once on every live connection as well as on new ones.
//! Dropping the [`FaultProxy`] aborts the accept loop, which drops its `JoinSet` and so aborts every
//! connection task.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep, sleep_until};

/// Most bytes taken from a socket by one read.
const READ_CHUNK: usize = 16 * 1024;
/// Bytes held by the proxy per direction (read but not yet delivered) before it stops reading that side,
/// so a slow or frozen receiver pushes back on the sender as a direct link would.
const QUEUE_LIMIT: usize = 256 * 1024;
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// Longest delay or close deadline honoured; longer ones are cut to this (one year: "never").
const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// How many ports [`FaultProxy::start`] binds at most to find one no fixture server has reserved.
const BIND_ATTEMPTS: usize = 20;

/// The fault a [`FaultProxy`] applies, to live connections and new ones alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Forward bytes both ways unchanged.
    Pass,
    /// Accept connections and keep them open but never forward anything in either direction; existing
    /// connections go silent too (a half-open, blackholed link).
    ///
    /// The proxy stops reading both sockets (it does not drain them), so a peer's sends back up once the
    /// kernel buffers are full. Bytes already read by the proxy, and bytes waiting in the kernel, are
    /// delivered when the fault is lifted. A connection accepted during a blackhole connects to the
    /// upstream only once the fault is lifted.
    Blackhole,
    /// Reset every existing connection, on both sides (`SO_LINGER` 0, then close: the peers see RST,
    /// `ECONNRESET`), and reset new connections right after accepting them.
    Reset,
    /// Forward, delaying each chunk by this much in each direction: a request/reply round trip takes at
    /// least twice this long. Changing the fault also changes the delay of data already held by the proxy.
    /// (Delays are capped at one year.)
    Latency(Duration),
    /// Forward until this many bytes (both directions together, per connection) have passed, then close
    /// that connection (FIN on both sides). Bytes beyond the budget are not forwarded.
    ///
    /// The budget of a connection starts when it is accepted, or, for a connection that already exists,
    /// when the fault is set (each [`FaultProxy::set_fault`] call starts a fresh budget for every live
    /// connection). Later connections get the same budget.
    CloseAfterBytes(u64),
    /// Accept and forward, but close each connection (FIN on both sides) this long after the proxy accepted
    /// it: a server that accepts and then drops every connection. Existing connections older than this are
    /// closed at once. (Deadlines beyond one year are cut to one year.)
    CloseAfter(Duration),
    /// Forward, but on each connection open when this fault is set, leave out the next whole reply
    /// the server sends (RESP push messages pass): from then on every reply reaches the client one
    /// command early, as on a connection that has lost the order of its replies (what a stray
    /// `CLIENT REPLY SKIP` does behind a client's back). Connections accepted later pass unchanged.
    DropReply,
}

/// An in-process TCP proxy on `127.0.0.1` between clients and one upstream server (typically a
/// [`RedisServer`](super::RedisServer)), for fault injection.
///
/// Clients connect to [`addr`](Self::addr) (or [`url`](Self::url)); each accepted connection gets its own
/// connection to the upstream. [`set_fault`](Self::set_fault) switches the [`Fault`] for live and new
/// connections at once. When the upstream refuses the connection (the server is down), the client's
/// connection is closed right away.
///
/// Dropping the proxy stops the accept loop and every connection task: the listener closes and proxied
/// connections are closed (FIN on both sides) as soon as the runtime runs the cancellations, which happens
/// shortly after the drop, not during it. No task outlives that.
///
/// # Example
///
/// ```
/// use std::net::{Ipv4Addr, SocketAddr};
/// use std::time::Duration;
///
/// use redis_supervisor::testing::{Fault, FaultProxy, RedisServer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = RedisServer::start().await?;
/// let proxy = FaultProxy::start(SocketAddr::from((Ipv4Addr::LOCALHOST, server.port()))).await?;
///
/// let client = redis::Client::open(proxy.url())?;
/// let mut conn = client.get_multiplexed_async_connection().await?;
/// let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
/// assert_eq!(pong, "PONG");
/// assert_eq!(proxy.connections_accepted(), 1);
///
/// // Cut the link silently: the next command gets no reply.
/// proxy.set_fault(Fault::Blackhole);
/// let ping = redis::cmd("PING");
/// let reply = tokio::time::timeout(Duration::from_millis(100), ping.query_async::<String>(&mut conn));
/// assert!(reply.await.is_err(), "no reply in time");
///
/// // Heal it: the next command goes through.
/// proxy.set_fault(Fault::Pass);
/// let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
/// assert_eq!(pong, "PONG");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct FaultProxy {
    /// Where clients connect: `127.0.0.1` and a port chosen by the OS.
    addr: SocketAddr,
    /// The server every connection is forwarded to.
    upstream: SocketAddr,
    /// The current fault; every connection task holds a receiver.
    fault: watch::Sender<Fault>,
    /// Connection counters, shared with the accept loop and the connection tasks.
    counters: Arc<Counters>,
    /// The accept loop; it owns the `JoinSet` of connection tasks, so aborting it aborts them all.
    accept_task: JoinHandle<()>,
}

/// Connection counters of one proxy.
#[derive(Debug, Default)]
struct Counters {
    /// Connections accepted so far, including ones reset on accept.
    accepted: AtomicU64,
    /// Connection tasks alive now.
    active: AtomicUsize,
}

impl FaultProxy {
    /// Listens on `127.0.0.1` (a free port chosen by the OS) and forwards every connection to `upstream`,
    /// e.g. a fixture server's `127.0.0.1:PORT`. The proxy starts with [`Fault::Pass`].
    ///
    /// Must be called inside a tokio runtime (it spawns the accept loop).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] if `upstream` is not a loopback address (the proxy only ever works
    /// on loopback); otherwise the error of binding the listener.
    pub async fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        if !upstream.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("FaultProxy forwards to loopback addresses only, not {upstream}"),
            ));
        }
        let listener = bind_loopback().await?;
        let addr = listener.local_addr()?;
        let (fault, fault_rx) = watch::channel(Fault::Pass);
        let counters = Arc::new(Counters::default());
        let accept_task = tokio::spawn(accept_loop(
            listener,
            upstream,
            fault_rx,
            Arc::clone(&counters),
        ));
        Ok(FaultProxy {
            addr,
            upstream,
            fault,
            counters,
            accept_task,
        })
    }

    /// Where clients connect: `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's URL without credentials: `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// The server every connection is forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Switches to `fault`, for existing and new connections at once: [`Fault::Blackhole`] freezes live
    /// connections, [`Fault::Reset`] kills them, [`Fault::Pass`] heals them.
    pub fn set_fault(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// The current fault.
    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }

    /// How many connections the proxy has accepted so far (including those reset on accept); useful to
    /// count a client's reconnect attempts.
    ///
    /// The proxy accepts a connection shortly after the client's `connect` has returned (the kernel
    /// completes the handshake first), so poll this with a deadline right after a connect.
    pub fn connections_accepted(&self) -> u64 {
        self.counters.accepted.load(Ordering::SeqCst)
    }

    /// How many proxied connections are open now: counted from when a connection's task first runs (just
    /// after the accept) until it ends, so poll this with a deadline too.
    pub fn active_connections(&self) -> usize {
        self.counters.active.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The accept loop owns the listener and the JoinSet of connection tasks: cancelling it drops both,
        // and dropping a JoinSet aborts its tasks.
        self.accept_task.abort();
    }
}

/// Binds a listener on `127.0.0.1` on a port chosen by the OS that no fixture server of this process has
/// reserved (a killed fixture server keeps its port reserved for its restart).
async fn bind_loopback() -> io::Result<TcpListener> {
    for _ in 0..BIND_ATTEMPTS {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = listener.local_addr()?.port();
        let reserved = super::RESERVED_PORTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&port);
        if !reserved {
            return Ok(listener);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("{BIND_ATTEMPTS} ports drawn, all reserved by fixture servers"),
    ))
}

/// Decrements the active-connection count when a connection task ends or is aborted.
struct ActiveGuard(Arc<Counters>);

impl ActiveGuard {
    /// Counts one more active connection.
    fn new(counters: Arc<Counters>) -> Self {
        counters.active.fetch_add(1, Ordering::SeqCst);
        ActiveGuard(counters)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accepts connections until the task is aborted, spawning one connection task each into a `JoinSet` that
/// is dropped (aborting them all) with this future.
async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    fault: watch::Receiver<Fault>,
    counters: Arc<Counters>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _peer)) => {
                    counters.accepted.fetch_add(1, Ordering::SeqCst);
                    let accepted_at = Instant::now();
                    if *fault.borrow() == Fault::Reset {
                        reset_on_close(&client);
                        drop(client);
                        continue;
                    }
                    let fault = fault.clone();
                    let counters = Arc::clone(&counters);
                    connections.spawn(async move {
                        // Counted from inside the task, so that a counted connection's task surely exists.
                        let _active = ActiveGuard::new(counters);
                        serve(client, upstream, fault, accepted_at).await;
                    });
                }
                Err(err) => {
                    tracing::debug!(%err, "fault proxy: accept failed");
                    sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            Some(joined) = connections.join_next() => {
                if let Err(err) = joined {
                    if err.is_panic() {
                        tracing::warn!(%err, "fault proxy: connection task panicked");
                    }
                }
            }
        }
    }
}

/// Sets `SO_LINGER` to zero, so that closing the socket sends RST instead of FIN.
#[allow(deprecated)] // Deprecated since tokio 1.49 because a non-zero linger blocks on close; zero does not.
fn reset_on_close(stream: &TcpStream) {
    if let Err(err) = stream.set_linger(Some(Duration::ZERO)) {
        tracing::debug!(%err, "fault proxy: could not set SO_LINGER 0");
    }
}

/// `at + after`, with `after` capped at [`MAX_DELAY`] (and `at` itself if even that overflows).
fn later(at: Instant, after: Duration) -> Instant {
    at.checked_add(after.min(MAX_DELAY)).unwrap_or(at)
}

/// Proxies one accepted connection until it is closed, reset, or the task is aborted.
async fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    mut fault: watch::Receiver<Fault>,
    accepted_at: Instant,
) {
    // Best effort: small RESP frames must not wait for Nagle's algorithm.
    let _ = client.set_nodelay(true);
    let Some(server) = connect_upstream(&client, upstream, &mut fault, accepted_at).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    if let Err(err) = forward(client, server, &mut fault, accepted_at).await {
        tracing::debug!(%err, "fault proxy: connection ended with an error");
    }
}

/// Connects to the upstream for `client`, honouring faults meanwhile (no upstream connection during a
/// blackhole). `None` when the connection is to end instead: the upstream refused, the fault reset or
/// closed it, or the proxy is gone.
async fn connect_upstream(
    client: &TcpStream,
    upstream: SocketAddr,
    fault: &mut watch::Receiver<Fault>,
    accepted_at: Instant,
) -> Option<TcpStream> {
    loop {
        let current = *fault.borrow_and_update();
        let close_at = match current {
            Fault::Reset => {
                reset_on_close(client);
                return None;
            }
            Fault::Blackhole => {
                fault.changed().await.ok()?;
                continue;
            }
            Fault::CloseAfter(after) => Some(later(accepted_at, after)),
            Fault::Pass | Fault::Latency(_) | Fault::CloseAfterBytes(_) | Fault::DropReply => None,
        };
        tokio::select! {
            connected = TcpStream::connect(upstream) => {
                return connected
                    .map_err(|err| tracing::debug!(%err, %upstream, "fault proxy: upstream connect failed"))
                    .ok();
            }
            changed = fault.changed() => changed.ok()?,
            () = sleep_until(close_at.unwrap_or(accepted_at)), if close_at.is_some() => return None,
        }
    }
}

/// Bytes read from one side and not yet written to the other, plus that direction's end-of-stream state.
#[derive(Default)]
struct Pipe {
    /// Chunks in arrival order; the front one may be partly written.
    queue: VecDeque<Chunk>,
    /// Unwritten bytes in `queue`.
    queued: usize,
    /// The source side has sent FIN.
    eof: bool,
    /// The FIN has been passed on (the destination's write half is shut down).
    shut: bool,
}

/// One read's worth of bytes.
struct Chunk {
    /// When the proxy read it (the start of its latency).
    read_at: Instant,
    /// The bytes read.
    bytes: Vec<u8>,
    /// How many of them have been written already.
    sent: usize,
}

impl Pipe {
    /// Whether the source may be read now (not at its end, and the queue not full).
    fn can_read(&self) -> bool {
        !self.eof && self.queued < QUEUE_LIMIT
    }

    /// When the front chunk may be written, given the current delay; `None` when nothing is queued.
    fn next_due(&self, delay: Duration) -> Option<Instant> {
        self.queue.front().map(|chunk| later(chunk.read_at, delay))
    }

    /// Reads once from `src` (if it has data) into the queue, leaving out what `frames` drops.
    fn fill(
        &mut self,
        src: &TcpStream,
        scratch: &mut [u8],
        frames: Option<&mut Frames>,
    ) -> io::Result<()> {
        match src.try_read(scratch) {
            Ok(0) => self.eof = true,
            Ok(n) => {
                let read = scratch.get(..n).unwrap_or(scratch);
                let bytes = match frames {
                    Some(frames) => frames.filter(read),
                    None => read.to_vec(),
                };
                if bytes.is_empty() {
                    return Ok(());
                }
                self.queued += bytes.len();
                self.queue.push_back(Chunk {
                    read_at: Instant::now(),
                    bytes,
                    sent: 0,
                });
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
        Ok(())
    }

    /// Writes the due chunks to `dst` until it would block, writing at most `budget` bytes if set.
    /// Returns how many bytes were written.
    fn drain(&mut self, dst: &TcpStream, delay: Duration, budget: Option<u64>) -> io::Result<u64> {
        let now = Instant::now();
        let mut written: u64 = 0;
        while let Some(chunk) = self.queue.front_mut() {
            if later(chunk.read_at, delay) > now {
                break;
            }
            let mut pending = chunk.bytes.get(chunk.sent..).unwrap_or_default();
            if let Some(budget) = budget {
                let left = usize::try_from(budget.saturating_sub(written)).unwrap_or(usize::MAX);
                if left == 0 {
                    break;
                }
                pending = pending.get(..left).unwrap_or(pending);
            }
            if pending.is_empty() {
                self.queue.pop_front();
                continue;
            }
            match dst.try_write(pending) {
                Ok(n) => {
                    chunk.sent += n;
                    self.queued = self.queued.saturating_sub(n);
                    written += n as u64;
                    if chunk.sent >= chunk.bytes.len() {
                        self.queue.pop_front();
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => return Err(err),
            }
        }
        Ok(written)
    }
}

/// Copies bytes between `client` and `server` under the current fault until both directions have ended,
/// the fault closes or resets the connection, or the proxy is gone. Both sockets are closed on return.
///
/// # Errors
///
/// An I/O error of either socket (a peer reset, ...); the connection is then closed.
async fn forward(
    mut client: TcpStream,
    mut server: TcpStream,
    fault: &mut watch::Receiver<Fault>,
    accepted_at: Instant,
) -> io::Result<()> {
    // client → server
    let mut up = Pipe::default();
    // server → client
    let mut down = Pipe::default();
    // Bytes forwarded since the connection was accepted or the fault last changed.
    let mut passed: u64 = 0;
    // The server's replies, frame by frame (for `Fault::DropReply`).
    let mut frames = Frames::default();
    let mut scratch = vec![0_u8; READ_CHUNK];
    loop {
        // A fault set while this loop was busy (not waiting in `changed()` below) is noticed
        // here: `borrow_and_update` alone would mark it seen and lose the change.
        let Ok(changed) = fault.has_changed() else {
            // The proxy is gone.
            return Ok(());
        };
        let current = *fault.borrow_and_update();
        if changed {
            passed = 0;
            frames.drop_next |= current == Fault::DropReply;
        }
        let mut flowing = true;
        let mut delay = Duration::ZERO;
        let mut close_at = None;
        let mut budget = None;
        match current {
            Fault::Pass | Fault::DropReply => {}
            Fault::Blackhole => flowing = false,
            Fault::Reset => {
                reset_on_close(&client);
                reset_on_close(&server);
                return Ok(());
            }
            Fault::Latency(latency) => delay = latency,
            Fault::CloseAfterBytes(limit) => {
                if passed >= limit {
                    return Ok(());
                }
                budget = Some(limit - passed);
            }
            Fault::CloseAfter(after) => close_at = Some(later(accepted_at, after)),
        }

        if flowing {
            // Pass a FIN on once everything sent before it has been delivered.
            if up.eof && up.queue.is_empty() && !up.shut {
                server.shutdown().await?;
                up.shut = true;
            }
            if down.eof && down.queue.is_empty() && !down.shut {
                client.shutdown().await?;
                down.shut = true;
            }
        }
        if up.shut && down.shut {
            return Ok(());
        }

        let now = Instant::now();
        let up_due = up.next_due(delay).filter(|_| flowing);
        let down_due = down.next_due(delay).filter(|_| flowing);
        let write_up = up_due.is_some_and(|due| due <= now);
        let write_down = down_due.is_some_and(|due| due <= now);
        let wake = [up_due, down_due]
            .into_iter()
            .flatten()
            .filter(|due| *due > now)
            .min();

        tokio::select! {
            ready = client.readable(), if flowing && up.can_read() => {
                ready?;
                up.fill(&client, &mut scratch, None)?;
            }
            ready = server.readable(), if flowing && down.can_read() => {
                ready?;
                down.fill(&server, &mut scratch, Some(&mut frames))?;
            }
            ready = server.writable(), if write_up => {
                ready?;
                passed = passed.saturating_add(up.drain(&server, delay, budget)?);
            }
            ready = client.writable(), if write_down => {
                ready?;
                passed = passed.saturating_add(down.drain(&client, delay, budget)?);
            }
            () = sleep_until(wake.unwrap_or(now)), if wake.is_some() => {}
            () = sleep_until(close_at.unwrap_or(now)), if close_at.is_some() => return Ok(()),
            changed = fault.changed() => {
                if changed.is_err() {
                    // The proxy is gone.
                    return Ok(());
                }
                passed = 0;
                frames.drop_next |= *fault.borrow() == Fault::DropReply;
            }
        }
    }
}

/// Follows the RESP frames of the server's byte stream (RESP2 and RESP3), to leave out one whole
/// reply for [`Fault::DropReply`]. Bulk payloads are skipped by length, not scanned.
#[derive(Default)]
struct Frames {
    /// Elements still due in each open aggregate, innermost last (empty between frames).
    open: Vec<u64>,
    /// The header line read so far (type byte to CRLF).
    line: Vec<u8>,
    /// Bytes of a bulk payload (and its CRLF) still to come.
    bulk_left: u64,
    /// Leave out the next reply that starts.
    drop_next: bool,
    /// The frame being read is left out.
    dropping: bool,
}

impl Frames {
    /// `bytes` without the bytes of the frames being left out.
    fn filter(&mut self, mut bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        while !bytes.is_empty() {
            if self.bulk_left > 0 {
                let n = usize::try_from(self.bulk_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.keep(&mut out, &bytes[..n]);
                self.bulk_left -= n as u64;
                bytes = &bytes[n..];
                if self.bulk_left == 0 {
                    self.element_done();
                }
                continue;
            }
            let b = bytes[0];
            bytes = &bytes[1..];
            if self.line.is_empty() && self.open.is_empty() && self.drop_next && b != b'>' {
                // A reply (not a push) starts here: leave it out.
                self.drop_next = false;
                self.dropping = true;
            }
            self.keep(&mut out, &[b]);
            self.line.push(b);
            if self.line.ends_with(b"\r\n") {
                self.header();
            }
        }
        out
    }

    fn keep(&self, out: &mut Vec<u8>, bytes: &[u8]) {
        if !self.dropping {
            out.extend_from_slice(bytes);
        }
    }

    /// A complete header line: a simple element, or the start of a bulk or an aggregate.
    fn header(&mut self) {
        let line = std::mem::take(&mut self.line);
        let kind = line.first().copied().unwrap_or(b'+');
        let count = std::str::from_utf8(&line[1..line.len() - 2])
            .ok()
            .and_then(|n| n.trim().parse::<i64>().ok())
            .unwrap_or(0);
        match kind {
            b'$' | b'!' | b'=' if count >= 0 => self.bulk_left = count as u64 + 2,
            b'*' | b'~' | b'>' if count > 0 => self.open.push(count as u64),
            b'%' | b'|' if count > 0 => self.open.push(count as u64 * 2),
            _ => self.element_done(),
        }
    }

    /// One element ended: the aggregates it completes close; at the top level the frame ends.
    fn element_done(&mut self) {
        while let Some(left) = self.open.last_mut() {
            *left -= 1;
            if *left > 0 {
                return;
            }
            self.open.pop();
        }
        self.dropping = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reply_leaves_out_one_whole_reply_however_it_is_cut() {
        let stream: &[u8] = b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n\
            *2\r\n$1\r\na\r\n$1\r\nb\r\n%1\r\n+k\r\n:1\r\n+OK\r\n$-1\r\n";
        let expected: &[u8] = b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n\
            %1\r\n+k\r\n:1\r\n+OK\r\n$-1\r\n";
        for cut in 1..stream.len() {
            let mut frames = Frames {
                drop_next: true,
                ..Frames::default()
            };
            let mut out = frames.filter(&stream[..cut]);
            out.extend(frames.filter(&stream[cut..]));
            assert_eq!(out, expected, "cut at {cut}");
        }
        // Not armed: everything passes.
        assert_eq!(Frames::default().filter(stream), stream);
    }
}
