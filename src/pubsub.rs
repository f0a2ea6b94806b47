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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use ractor::{ActorRef, DerivedActorRef, rpc::CallResult};
use redis::{PushInfo, PushKind, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{Config, OfflinePolicy};
use crate::error::{Error, FailureKind};
use crate::handle::RedisHandle;
use crate::metrics::PubSubMetrics;
use crate::sync::lock;

mod subscriber;
mod subscription;

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

/// A subscription in the registry.
struct Entry {
    id: u64,
    queue: Arc<Queue>,
}

/// Which subscriptions want which channels and patterns: what the subscriber connection must be
/// subscribed to, and where the push callback delivers.
#[derive(Default)]
struct Registry {
    /// Every live subscription by id: what it wants and its queue (one entry each, however
    /// many targets it has).
    subscriptions: HashMap<u64, (TargetKind, Targets, Arc<Queue>)>,
    channels: HashMap<Vec<u8>, Vec<Entry>>,
    patterns: HashMap<Vec<u8>, Vec<Entry>>,
    /// Targets whose last subscription went away since the subscriber connection last looked:
    /// what it may have to unsubscribe from (checked against what is wanted by then).
    released: [Vec<Vec<u8>>; 2],
    next_id: u64,
}

impl Registry {
    fn targets(&mut self, kind: TargetKind) -> &mut HashMap<Vec<u8>, Vec<Entry>> {
        match kind {
            TargetKind::Channel => &mut self.channels,
            TargetKind::Pattern => &mut self.patterns,
        }
    }

    fn released(&mut self, kind: TargetKind) -> &mut Vec<Vec<u8>> {
        &mut self.released[kind as usize]
    }

    fn queues(&self) -> impl Iterator<Item = &Arc<Queue>> {
        self.subscriptions.values().map(|(_, _, queue)| queue)
    }
}

/// Why the subscriber connection is not up, for `Unavailable`.
#[derive(Clone)]
struct Down {
    since: SystemTime,
    reason: String,
    kind: FailureKind,
}

/// What the public [`PubSub`], the subscriptions, the subscriber actor (and its push callback)
/// and the supervisor share.
pub(crate) struct PubSubShared {
    config: Arc<Config>,
    metrics: PubSubMetrics,
    registry: Mutex<Registry>,
    /// The subscriber actor, while its connection is up with every subscription restored.
    live: watch::Sender<Option<ActorRef<SubscriberMsg>>>,
    /// Why it is not, when it is not.
    down: Mutex<Down>,
    /// Set once the first subscription asked for the subscriber actor.
    wanted: AtomicBool,
    /// Where that request goes (the supervisor; set once it runs).
    starter: OnceLock<DerivedActorRef<SubscriberWanted>>,
    /// Set at shutdown: no new subscription, every stream ends.
    closed: AtomicBool,
    /// Set once a subscriber connection came up: the next one is a restoration.
    connected_before: AtomicBool,
    /// Set while a probe waits; the push callback then records that something came.
    watching: AtomicBool,
    heard: AtomicBool,
}

impl PubSubShared {
    pub(crate) fn new(config: Arc<Config>, metrics: PubSubMetrics) -> Arc<Self> {
        Arc::new(PubSubShared {
            config,
            metrics,
            registry: Mutex::default(),
            live: watch::Sender::new(None),
            down: Mutex::new(Down {
                since: SystemTime::now(),
                reason: "the subscriber connection is not open yet".into(),
                kind: FailureKind::Closed,
            }),
            wanted: AtomicBool::new(false),
            starter: OnceLock::new(),
            closed: AtomicBool::new(false),
            connected_before: AtomicBool::new(false),
            watching: AtomicBool::new(false),
            heard: AtomicBool::new(false),
        })
    }

    /// Where [`SubscriberWanted`] goes (set by the supervisor once it runs).
    pub(crate) fn set_starter(&self, starter: DerivedActorRef<SubscriberWanted>) {
        let _ = self.starter.set(starter);
    }

    fn want_connection(&self) {
        if !self.wanted.swap(true, Ordering::AcqRel)
            && let Some(starter) = self.starter.get()
        {
            // A gone supervisor means shutdown: `subscribe` then answers ShuttingDown.
            let _ = starter.send_message(SubscriberWanted);
        }
    }

    /// The subscriber connection was lost (or could not be opened): every confirmed
    /// subscription now has a gap, and `subscribe` waits for the next connection.
    pub(crate) fn lost(&self, reason: &str, kind: FailureKind) {
        let was_live = self.live.send_replace(None).is_some();
        self.metrics.set_up(false);
        if was_live {
            *lock(&self.down) = Down {
                since: SystemTime::now(),
                reason: reason.to_string(),
                kind,
            };
        } else {
            let mut down = lock(&self.down);
            down.reason = reason.to_string();
            down.kind = kind;
        }
        let now = std::time::Instant::now();
        for queue in lock(&self.registry).queues() {
            queue.lost(now);
        }
    }

    /// Shutdown: no new subscription; every subscription's stream ends once read.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.live.send_replace(None);
        self.metrics.set_up(false);
        for queue in lock(&self.registry).queues() {
            queue.close();
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether the subscriber connection is up (and confirmed), and how many subscriptions live.
    pub(crate) fn report(&self) -> (bool, usize) {
        let up = self.live.borrow().is_some();
        (up, lock(&self.registry).subscriptions.len())
    }

    /// Adds a subscription to the registry, [`CHUNK`] targets at a time; its events start
    /// arriving at once for targets the connection is already subscribed to. Dropping the
    /// future part way leaves nothing behind (the subscription, made first, unregisters).
    async fn register(
        self: &Arc<Self>,
        kind: TargetKind,
        targets: Targets,
        capacity: usize,
    ) -> Subscription {
        let queue = Queue::new(capacity);
        let id = {
            let mut registry = lock(&self.registry);
            registry.next_id += 1;
            let id = registry.next_id;
            registry
                .subscriptions
                .insert(id, (kind, targets.clone(), queue.clone()));
            // Grown once here, not by doubling (a rehash of every entry) part way.
            registry.targets(kind).reserve(targets.len());
            id
        };
        self.metrics.subscription(true);
        let sub = Subscription {
            id,
            kind,
            targets: targets.clone(),
            queue: queue.clone(),
            shared: self.clone(),
            registered: true,
        };
        for chunk in targets.chunks(CHUNK) {
            {
                let mut registry = lock(&self.registry);
                let map = registry.targets(kind);
                for t in chunk {
                    map.entry(t.clone()).or_default().push(Entry {
                        id,
                        queue: queue.clone(),
                    });
                }
            }
            if targets.len() > CHUNK {
                tokio::task::yield_now().await;
            }
        }
        sub
    }

    /// Takes `targets` of subscription `id` out of the registry.
    fn unregister_targets(&self, kind: TargetKind, id: u64, targets: &[Vec<u8>]) {
        let mut registry = lock(&self.registry);
        let mut released = Vec::new();
        let map = registry.targets(kind);
        for t in targets {
            if let Some(entries) = map.get_mut(t) {
                entries.retain(|e| e.id != id);
                if entries.is_empty() {
                    map.remove(t);
                    released.push(t.clone());
                }
            }
        }
        registry.released(kind).extend(released);
    }

    /// Up to `n` released targets of `kind` that no subscription wants any more (taken out of
    /// the released list).
    fn take_released(&self, kind: TargetKind, n: usize) -> Vec<Vec<u8>> {
        let mut registry = lock(&self.registry);
        let released = registry.released(kind);
        let at = released.len().saturating_sub(n);
        let mut taken = released.split_off(at);
        let wanted = registry.targets(kind);
        taken.retain(|t| !wanted.contains_key(t));
        taken
    }

    /// Whether any released target waits to be looked at.
    fn any_released(&self, kind: TargetKind) -> bool {
        !lock(&self.registry).released(kind).is_empty()
    }

    /// Forgets the released targets (a new connection subscribes only to what is wanted).
    fn clear_released(&self) {
        let mut registry = lock(&self.registry);
        for kind in [TargetKind::Channel, TargetKind::Pattern] {
            registry.released(kind).clear();
        }
    }

    /// Takes a subscription out of the registry (its queue gets nothing more), [`CHUNK`]
    /// targets at a time.
    async fn unregister(&self, kind: TargetKind, id: u64, targets: &[Vec<u8>]) {
        lock(&self.registry).subscriptions.remove(&id);
        for chunk in targets.chunks(CHUNK) {
            self.unregister_targets(kind, id, chunk);
            if targets.len() > CHUNK {
                tokio::task::yield_now().await;
            }
        }
        self.metrics.subscription(false);
    }

    /// [`unregister`](Self::unregister) from a dropped subscription: at once for a few
    /// targets; for many, in a task of its own (never holding the dropping thread long), or at
    /// once outside a runtime.
    fn unregister_dropped(self: &Arc<Self>, kind: TargetKind, id: u64, targets: Targets) {
        lock(&self.registry).subscriptions.remove(&id);
        if targets.len() > CHUNK
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let shared = self.clone();
            runtime.spawn(async move {
                shared.unregister(kind, id, &targets).await;
                shared.reconcile_later();
            });
            return;
        }
        self.unregister_targets(kind, id, &targets);
        self.metrics.subscription(false);
        self.reconcile_later();
    }

    /// Every live subscription: what it wants, and its queue (to restore them on a new
    /// connection). Linear in the subscriptions, not in their targets.
    fn all_subscriptions(&self) -> Vec<(TargetKind, Targets, Arc<Queue>)> {
        lock(&self.registry)
            .subscriptions
            .values()
            .cloned()
            .collect()
    }

    /// Ends the subscriptions to `target` (the server refused to restore it).
    fn close_target(&self, kind: TargetKind, target: &[u8]) {
        if let Some(entries) = lock(&self.registry).targets(kind).remove(target) {
            for e in entries {
                e.queue.close();
            }
        }
    }

    /// The push callback: delivers a message to every subscription it is for (never blocks).
    fn dispatch(&self, info: PushInfo) {
        if self.watching.load(Ordering::Acquire) {
            self.heard.store(true, Ordering::Release);
        }
        let (kind, mut data) = match info.kind {
            PushKind::Message => (TargetKind::Channel, info.data.into_iter()),
            PushKind::PMessage => (TargetKind::Pattern, info.data.into_iter()),
            _ => return,
        };
        let pattern = match kind {
            TargetKind::Pattern => data.next().and_then(bytes),
            TargetKind::Channel => None,
        };
        let (Some(channel), Some(payload)) = (data.next().and_then(bytes), data.next()) else {
            return;
        };
        let Some(payload) = bytes(payload) else {
            return;
        };
        let key = pattern.as_deref().unwrap_or(&channel);
        let mut registry = lock(&self.registry);
        let Some(entries) = registry.targets(kind).get(key) else {
            return;
        };
        let message = Message {
            channel: String::from_utf8_lossy(&channel).into_owned(),
            pattern: pattern.map(|p| String::from_utf8_lossy(&p).into_owned()),
            payload,
        };
        let mut delivered = 0;
        if let Some((last, others)) = entries.split_last() {
            for e in others {
                delivered += u64::from(e.queue.deliver(message.clone(), &self.metrics));
            }
            delivered += u64::from(last.queue.deliver(message, &self.metrics));
        }
        drop(registry);
        self.metrics.delivered(delivered);
    }

    /// Waits for the live subscriber actor per the offline policy until `deadline`, then asks it
    /// for `msg`'s answer within the rest of the time.
    async fn ask(
        &self,
        command: &str,
        timeout: Duration,
        deadline: Instant,
        msg: impl Fn(ractor::RpcReplyPort<Result<(), Error>>) -> SubscriberMsg,
    ) -> Result<(), Error> {
        let mut rx = self.live.subscribe();
        loop {
            if self.is_closed() {
                return Err(Error::ShuttingDown);
            }
            let actor = rx.borrow_and_update().clone();
            if let Some(actor) = actor {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(timed_out(command, timeout, false));
                }
                match actor.call(&msg, Some(left)).await {
                    Ok(CallResult::Success(result)) => return result,
                    Ok(CallResult::Timeout) => return Err(timed_out(command, timeout, true)),
                    // The actor went away with it: wait for the next connection.
                    Ok(CallResult::SenderError) | Err(_) => {}
                }
            } else if self.config.offline_policy() == OfflinePolicy::FailFast {
                return Err(self.unavailable());
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Error::ShuttingDown),
                Err(_) => return Err(self.unavailable()),
            }
        }
    }

    fn unavailable(&self) -> Error {
        if self.is_closed() {
            return Error::ShuttingDown;
        }
        let down = lock(&self.down).clone();
        Error::Unavailable {
            since: down.since,
            reason: format!("pub/sub: {}", down.reason),
            kind: down.kind,
        }
    }

    /// Unsubscribes the connection from what no subscription wants any more, and waits for it
    /// (if the connection is up: otherwise the next one simply does not subscribe to it).
    async fn reconcile(&self, kind: TargetKind) -> Result<(), Error> {
        let Some(actor) = self.live.borrow().clone() else {
            return Ok(());
        };
        let timeout = self.config.command_timeout();
        let command = match kind {
            TargetKind::Channel => "UNSUBSCRIBE",
            TargetKind::Pattern => "PUNSUBSCRIBE",
        };
        match actor
            .call(|reply| SubscriberMsg::Reconcile(Some(reply)), Some(timeout))
            .await
        {
            Ok(CallResult::Success(result)) => result,
            Ok(CallResult::Timeout) => Err(timed_out(command, timeout, true)),
            // Gone: the next connection subscribes only to what is wanted.
            Ok(CallResult::SenderError) | Err(_) => Ok(()),
        }
    }

    /// Like [`reconcile`](Self::reconcile), in the background (a dropped subscription).
    fn reconcile_later(&self) {
        if let Some(actor) = self.live.borrow().as_ref() {
            let _ = actor.cast(SubscriberMsg::Reconcile(None));
        }
    }
}

fn bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

fn timed_out(command: &str, after: Duration, sent: bool) -> Error {
    Error::Timeout {
        command: command.to_string(),
        after,
        sent,
    }
}

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
    /// [`Config::pubsub_buffer`]: a bigger one for a reader that must see every message of a
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
