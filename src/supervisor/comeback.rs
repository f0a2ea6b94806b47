//! Noticing a server's return quickly without hammering it. While the server's port refuses
//! connections (nothing listens: a restart, a crash), asking again costs nobody anything, so a
//! lane whose attempt was refused watches the port with a bare TCP connect every
//! [`POLL`] — no handshake, no `HELLO`, no `AUTH` — and, once something accepts, makes its
//! next full attempt after a random pause of up to [`JITTER`] (so that many clients do not
//! all arrive in the same millisecond), instead of waiting out the rest of its backoff step.
//! Every other failure (a server that accepts and drops, refuses the credentials, is loading,
//! times out) keeps its backoff: those are what the backoff spares. During a restart storm
//! there is no watch either. The backoff step stays the latest the attempt comes.

use std::net::SocketAddr;
use std::time::Duration;

use ractor::{ActorRef, ActorStatus};
use tokio::task::JoinHandle;

use super::actor::SupervisorMsg;
use crate::config::NodeAddr;

/// How often a refused port is tried again.
pub(super) const POLL: Duration = Duration::from_millis(25);
/// The longest random pause between the port accepting and the full attempt.
pub(super) const JITTER: Duration = Duration::from_millis(50);
/// How long one bare connect may take (a host that drops packets rather than refusing).
const CONNECT_LIMIT: Duration = Duration::from_millis(250);

/// A lane's watch, if any: stopped when the lane's next attempt starts, when another replaces
/// it, and when it is dropped.
#[derive(Default)]
pub(super) struct Watch(Option<JoinHandle<()>>);

impl Watch {
    /// Stops the watch (if any).
    pub(super) fn stop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Watches `address` until it accepts a TCP connection, then asks for lane `lane`'s attempt of
/// `generation` (ignored if it is stale by then). Ends when the address does not resolve.
pub(super) fn watch(
    address: NodeAddr,
    supervisor: ActorRef<SupervisorMsg>,
    lane: usize,
    generation: u64,
) -> Watch {
    Watch(Some(tokio::spawn(async move {
        let Ok(resolved) = tokio::net::lookup_host((address.host.as_str(), address.port)).await
        else {
            return;
        };
        let addrs: Vec<SocketAddr> = resolved.collect();
        if addrs.is_empty() {
            return;
        }
        loop {
            tokio::time::sleep(POLL).await;
            // Normally aborted with the lane's next attempt or at shutdown; a supervisor that
            // ended any other way ends the watch too.
            if matches!(
                supervisor.get_status(),
                ActorStatus::Stopping | ActorStatus::Stopped
            ) {
                return;
            }
            let connect = tokio::net::TcpStream::connect(addrs.as_slice());
            if let Ok(Ok(stream)) = tokio::time::timeout(CONNECT_LIMIT, connect).await {
                drop(stream);
                break;
            }
        }
        tokio::time::sleep(JITTER.mul_f64(fastrand::f64())).await;
        // A supervisor that is gone has no lane to reconnect.
        let _ = supervisor.send_message(SupervisorMsg::Reconnect { lane, generation });
    })))
}
