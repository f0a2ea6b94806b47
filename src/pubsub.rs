//! Pub/sub that survives reconnects: [`PubSub`] (from
//! [`Supervisor::pubsub`](crate::Supervisor::pubsub)) opens [`Subscription`]s to channels or
//! patterns; [`RedisHandle::publish`](crate::RedisHandle::publish) publishes.
//!
//! ```no_run
//! use redis_supervisor::pubsub::PubSubEvent;
//! # async fn run(supervisor: redis_supervisor::Supervisor) -> Result<(), redis_supervisor::Error> {
//! let redis = supervisor.handle();
//! let mut orders = supervisor.pubsub().subscribe(&["orders"]).await?;
//! let reached: u64 = redis.publish("orders", "order 42 shipped").await?;
//! while let Some(event) = orders.recv().await {
//!     match event {
//!         PubSubEvent::Message(m) => println!("{}: {:?}", m.channel, m.payload_str()),
//!         PubSubEvent::Resubscribed { downtime } => {
//!             // Reconnected: whatever was published during `downtime` was missed. Reload.
//!             println!("missed up to {downtime:?} of messages");
//!         }
//!         PubSubEvent::Lagged { dropped } => println!("too slow: {dropped} dropped"),
//!     }
//! }
//! # let _ = reached; Ok(()) }
//! ```
//!
//! # How it works
//!
//! - **One subscriber connection per supervisor** (RESP3, opened by the first subscription),
//!   owned by the subscriber actor under the supervisor, which restarts it with backoff when it
//!   is lost, like the command connection. Channels are reference-counted: two subscriptions to
//!   one channel send one `SUBSCRIBE`; the last one dropped sends `UNSUBSCRIBE`.
//! - **Nothing is lost silently.** After a lost connection every live subscription is restored
//!   on the new one, and only then does each read [`PubSubEvent::Resubscribed`] (messages that
//!   arrive on the new connection meanwhile are held back and follow it). Redis keeps nothing
//!   for absent subscribers, so what was published during the downtime is gone: the event says
//!   so, and for how long.
//! - **A slow reader slows nobody.** Each subscription buffers up to
//!   [`Config::pubsub_buffer`](crate::Config::pubsub_buffer) messages (default
//!   [`DEFAULT_PUBSUB_BUFFER`](crate::config::DEFAULT_PUBSUB_BUFFER)); beyond it messages are
//!   dropped for that subscription alone and it reads one [`PubSubEvent::Lagged`] with the count
//!   at the point of the gap (`redis_client_pubsub_lagged_total` counts them). The connection's
//!   push callback never waits for a reader.
//! - **Health.** The subscriber connection is probed with `PING` (it works on a subscribed
//!   RESP3 connection) on the command connection's schedule and rule: after
//!   [`health_failures`](crate::Config::health_failures) probes in a row time out with nothing
//!   at all heard on the connection, it is replaced, so a hung subscriber connection is found
//!   within `health_interval × health_failures + health_timeout` (3.5 s by default).
//! - **Deadlines.** `subscribe` waits for the subscriber connection per the offline policy and
//!   for the server's confirmation, both within the command timeout (or
//!   [`with_timeout`](PubSub::with_timeout)).
//!
//! Channel names are sent as given: the key prefix ([`Config::key_prefix`](crate::Config::key_prefix))
//! applies to keys, not channels — except in [`keyspace_events`](PubSub::keyspace_events), whose
//! argument is a key pattern.
//!
//! # On a Redis Cluster
//!
//! Pub/sub is the classic kind: a `PUBLISH` reaches the subscribers on every node, so the
//! subscriber connection goes to the first seed node that answers. Keyspace notifications are per
//! node, so [`keyspace_events`](PubSub::keyspace_events) is refused on a cluster
//! ([`Error::InvalidArgument`] saying so) rather than delivering a third of them. Sharded pub/sub
//! (`SSUBSCRIBE`) is not offered.
//!
//! # Metrics
//!
//! Each at 0 from the start: `redis_client_pubsub_up` (1 while the subscriber connection is up
//! with every subscription confirmed), `redis_client_pubsub_subscriptions` (live subscriptions),
//! `redis_client_pubsub_messages_total` (messages buffered for subscriptions),
//! `redis_client_pubsub_lagged_total` (dropped for full buffers), and
//! `redis_client_pubsub_resubscribes_total` (subscriber connections restored after a loss).
//! [`RedisHandle::publish`](crate::RedisHandle::publish) counts in `redis_client_commands_total`
//! under `publish`. The alerts `RedisPubSubSubscriberLagging` and `RedisPubSubDisconnected` watch
//! them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;
use crate::handle::RedisHandle;

mod shared;
mod subscriber;
mod subscription;

pub(crate) use shared::PubSubShared;
use shared::timed_out;

pub(crate) use subscriber::{SubscriberActor, SubscriberArgs, SubscriberMsg, SubscriberReport};
use subscription::Queue;
pub use subscription::{Message, PubSubEvent, Subscription};

/// Channels (or patterns) handled per step of a large subscribe or unsubscribe: between steps
/// the task yields (and the registry's lock is let go), and each step is one command to the
/// server, so a request for 100 000 channels never holds a runtime worker for long.
pub(crate) const CHUNK: usize = 256;

/// The channels or patterns of one subscription, as given (deduplicated), shared with the
/// messages that carry them.
pub(crate) type Targets = Arc<Vec<Vec<u8>>>;

/// Channels or patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum TargetKind {
    Channel = 0,
    Pattern = 1,
}

impl TargetKind {
    fn subscribe_command(self) -> &'static str {
        match self {
            TargetKind::Channel => "SUBSCRIBE",
            TargetKind::Pattern => "PSUBSCRIBE",
        }
    }
}

/// The supervisor is asked to start the subscriber actor (sent by the first subscription).
#[derive(Debug)]
pub(crate) struct SubscriberWanted;

/// Opens pub/sub [`Subscription`]s on the supervisor's subscriber connection. Cheap to clone;
/// get it from [`Supervisor::pubsub`](crate::Supervisor::pubsub). See the [module docs](self).
#[derive(Clone)]
pub struct PubSub {
    shared: Arc<PubSubShared>,
    handle: RedisHandle,
    timeout: Duration,
    buffer: usize,
}

impl std::fmt::Debug for PubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSub")
            .field("client", &self.shared.config.name())
            .field("timeout", &self.timeout)
            .field("buffer", &self.buffer)
            .finish_non_exhaustive()
    }
}

impl PubSub {
    pub(crate) fn new(shared: Arc<PubSubShared>, handle: RedisHandle) -> Self {
        let timeout = shared.config.command_timeout();
        let buffer = shared.config.pubsub_buffer();
        PubSub {
            shared,
            handle,
            timeout,
            buffer,
        }
    }

    /// A copy whose subscriptions buffer up to `messages` messages each (at least 1, at most
    /// [`MAX_PUBSUB_BUFFER`](crate::config::MAX_PUBSUB_BUFFER)) instead of
    /// [`Config::pubsub_buffer`](crate::Config::pubsub_buffer): a bigger one for a reader that must see every message of a
    /// burst, a smaller one where only the latest matter.
    pub fn with_buffer(&self, messages: usize) -> PubSub {
        PubSub {
            buffer: messages.clamp(1, crate::config::MAX_PUBSUB_BUFFER),
            ..self.clone()
        }
    }

    /// A copy whose `subscribe` calls wait at most `timeout` (instead of the command timeout)
    /// for the subscriber connection and the server's confirmation.
    pub fn with_timeout(&self, timeout: Duration) -> PubSub {
        PubSub {
            timeout,
            handle: self.handle.with_timeout(timeout),
            ..self.clone()
        }
    }

    /// `SUBSCRIBE` to `channels`: returns once the server has confirmed every one.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty list; [`Error::Unavailable`] if the subscriber
    /// connection is not up in time (or at once under the fail-fast policy);
    /// [`Error::Timeout`] if the server does not confirm in time; [`Error::Server`] if it
    /// refuses (e.g. `NOPERM` for a channel the ACL user may not read);
    /// [`Error::ShuttingDown`].
    pub async fn subscribe<S: AsRef<str>>(&self, channels: &[S]) -> Result<Subscription, Error> {
        self.open(TargetKind::Channel, channels).await
    }

    /// `PSUBSCRIBE` to glob-style `patterns` (`user:*`); each [`Message`] names the pattern it
    /// matched.
    ///
    /// # Errors
    /// As [`subscribe`](Self::subscribe).
    pub async fn psubscribe<S: AsRef<str>>(&self, patterns: &[S]) -> Result<Subscription, Error> {
        self.open(TargetKind::Pattern, patterns).await
    }

    /// Keyspace notifications for the keys matching `key_pattern` (with the configured key
    /// prefix in front, as the typed commands store them): a pattern subscription to
    /// `__keyspace@<db>__:<prefix><key_pattern>`, whose messages carry the key in the channel
    /// ([`Message::keyspace_key`]) and the event (`set`, `del`, `expired`, …) as payload.
    ///
    /// The server must have keyspace notifications on (`notify-keyspace-events` containing `K`
    /// and the event classes wanted, e.g. `CONFIG SET notify-keyspace-events KA`): they are off
    /// by default. This checks with `CONFIG GET` first and says so in the error when they are
    /// off; where `CONFIG` is not allowed (managed services, restricted ACL users) it subscribes
    /// without checking.
    ///
    /// On a Redis Cluster keyspace notifications are per node (each primary announces only its
    /// own keys), while the subscriber connection reaches one node: this is refused there
    /// rather than delivering a third of the events.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the setting when keyspace notifications are off, or
    /// on a cluster; otherwise as [`subscribe`](Self::subscribe).
    pub async fn keyspace_events(&self, key_pattern: &str) -> Result<Subscription, Error> {
        if self.handle.topology().slotted() {
            return Err(Error::InvalidArgument(format!(
                "keyspace notifications for {key_pattern:?}: on a Redis Cluster each node \
                 announces only its own keys, and the subscriber reaches one node; subscribe \
                 to each primary yourself, or publish the changes you need"
            )));
        }
        let reply: Result<HashMap<String, String>, Error> = self
            .handle
            .cmd(
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("notify-keyspace-events")
                    .clone(),
            )
            .await;
        match reply {
            Ok(setting) => check_keyspace_setting(
                setting
                    .get("notify-keyspace-events")
                    .map_or("", String::as_str),
            )?,
            Err(Error::Server { .. } | Error::ReplyType(_)) => {}
            Err(other) => return Err(other),
        }
        let config = &self.shared.config;
        let pattern = format!(
            "__keyspace@{}__:{}{key_pattern}",
            config.db(),
            config.key_prefix()
        );
        self.open(TargetKind::Pattern, &[pattern]).await
    }

    async fn open<S: AsRef<str>>(
        &self,
        kind: TargetKind,
        names: &[S],
    ) -> Result<Subscription, Error> {
        let command = kind.subscribe_command();
        if names.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{command} needs at least one {}",
                match kind {
                    TargetKind::Channel => "channel",
                    TargetKind::Pattern => "pattern",
                }
            )));
        }
        let shared = &self.shared;
        if shared.is_closed() {
            return Err(Error::ShuttingDown);
        }
        let deadline = crate::deadline::deadline_after(Instant::now(), self.timeout);
        let within = async {
            let targets: Targets = Arc::new(distinct(names).await);
            shared.register(kind, targets, self.buffer).await
        };
        let Ok(sub) = tokio::time::timeout_at(deadline, within).await else {
            return Err(timed_out(command, self.timeout, false));
        };
        let targets = sub.targets.clone();
        shared.want_connection();
        let queue = sub.queue.clone();
        let confirmed = shared
            .ask(command, self.timeout, deadline, |reply| {
                SubscriberMsg::Confirm {
                    kind,
                    targets: targets.clone(),
                    queue: queue.clone(),
                    reply,
                }
            })
            .await;
        // On an error the subscription is dropped: unregistered and unsubscribed.
        confirmed.map(|()| sub)
    }
}

/// `names` as bytes, each once, in their first order: linear, yielding between [`CHUNK`]s.
async fn distinct<S: AsRef<str>>(names: &[S]) -> Vec<Vec<u8>> {
    let mut seen: HashSet<&[u8]> = HashSet::with_capacity(names.len());
    let mut out = Vec::with_capacity(names.len());
    for chunk in names.chunks(CHUNK) {
        for name in chunk {
            let bytes = name.as_ref().as_bytes();
            if seen.insert(bytes) {
                out.push(bytes.to_vec());
            }
        }
        if names.len() > CHUNK {
            tokio::task::yield_now().await;
        }
    }
    out
}

/// Keyspace notifications need `K` (keyspace channel) and at least one event class.
fn check_keyspace_setting(value: &str) -> Result<(), Error> {
    let has = |c: char| value.contains(c);
    let classes = "g$lshzxetdmA";
    if has('K') && value.chars().any(|c| classes.contains(c)) {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "keyspace notifications are off on the server: notify-keyspace-events is {value:?}, it \
         needs K and the event classes wanted (e.g. `CONFIG SET notify-keyspace-events KA`, or \
         `notify-keyspace-events KA` in redis.conf)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_setting() {
        assert!(check_keyspace_setting("KA").is_ok());
        assert!(check_keyspace_setting("Kg$").is_ok());
        let off = check_keyspace_setting("").unwrap_err().to_string();
        assert!(off.contains("notify-keyspace-events"), "{off}");
        assert!(check_keyspace_setting("EA").is_err(), "keyevent only");
        assert!(check_keyspace_setting("K").is_err(), "no class");
    }
}
