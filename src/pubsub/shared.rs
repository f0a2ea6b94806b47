//! What the public [`PubSub`](super::PubSub), the subscriptions, the subscriber actor (and its
//! push callback) and the supervisor share: the registry of which subscription wants which
//! channels and patterns (what the subscriber connection must be subscribed to, and where a
//! pushed message is delivered), the subscriber connection's state, and asking the subscriber
//! actor for a confirmation within a deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use ractor::{ActorRef, DerivedActorRef, rpc::CallResult};
use redis::{PushInfo, PushKind, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::subscription::{Message, Queue, Subscription};
use super::{CHUNK, SubscriberMsg, SubscriberWanted, TargetKind, Targets};
use crate::config::{Config, OfflinePolicy};
use crate::error::{Error, FailureKind};
use crate::metrics::PubSubMetrics;
use crate::sync::lock;

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
    pub(super) fn targets(&mut self, kind: TargetKind) -> &mut HashMap<Vec<u8>, Vec<Entry>> {
        match kind {
            TargetKind::Channel => &mut self.channels,
            TargetKind::Pattern => &mut self.patterns,
        }
    }

    pub(super) fn released(&mut self, kind: TargetKind) -> &mut Vec<Vec<u8>> {
        &mut self.released[kind as usize]
    }

    pub(super) fn queues(&self) -> impl Iterator<Item = &Arc<Queue>> {
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
    pub(super) config: Arc<Config>,
    pub(super) metrics: PubSubMetrics,
    registry: Mutex<Registry>,
    /// The subscriber actor, while its connection is up with every subscription restored.
    pub(super) live: watch::Sender<Option<ActorRef<SubscriberMsg>>>,
    /// Why it is not, when it is not.
    down: Mutex<Down>,
    /// Set once the first subscription asked for the subscriber actor.
    pub(super) wanted: AtomicBool,
    /// Where that request goes (the supervisor; set once it runs).
    pub(super) starter: OnceLock<DerivedActorRef<SubscriberWanted>>,
    /// Set at shutdown: no new subscription, every stream ends.
    pub(super) closed: AtomicBool,
    /// Set once a subscriber connection came up: the next one is a restoration.
    pub(super) connected_before: AtomicBool,
    /// Set while a probe waits; the push callback then records that something came.
    pub(super) watching: AtomicBool,
    pub(super) heard: AtomicBool,
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

    pub(super) fn want_connection(&self) {
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

    pub(super) fn is_closed(&self) -> bool {
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
    pub(super) async fn register(
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
    pub(super) fn unregister_targets(&self, kind: TargetKind, id: u64, targets: &[Vec<u8>]) {
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
    pub(super) fn take_released(&self, kind: TargetKind, n: usize) -> Vec<Vec<u8>> {
        let mut registry = lock(&self.registry);
        let released = registry.released(kind);
        let at = released.len().saturating_sub(n);
        let mut taken = released.split_off(at);
        let wanted = registry.targets(kind);
        taken.retain(|t| !wanted.contains_key(t));
        taken
    }

    /// Whether any released target waits to be looked at.
    pub(super) fn any_released(&self, kind: TargetKind) -> bool {
        !lock(&self.registry).released(kind).is_empty()
    }

    /// Forgets the released targets (a new connection subscribes only to what is wanted).
    pub(super) fn clear_released(&self) {
        let mut registry = lock(&self.registry);
        for kind in [TargetKind::Channel, TargetKind::Pattern] {
            registry.released(kind).clear();
        }
    }

    /// Takes a subscription out of the registry (its queue gets nothing more), [`CHUNK`]
    /// targets at a time.
    pub(super) async fn unregister(&self, kind: TargetKind, id: u64, targets: &[Vec<u8>]) {
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
    pub(super) fn unregister_dropped(
        self: &Arc<Self>,
        kind: TargetKind,
        id: u64,
        targets: Targets,
    ) {
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
    pub(super) fn all_subscriptions(&self) -> Vec<(TargetKind, Targets, Arc<Queue>)> {
        lock(&self.registry)
            .subscriptions
            .values()
            .cloned()
            .collect()
    }

    /// Ends the subscriptions to `target` (the server refused to restore it).
    pub(super) fn close_target(&self, kind: TargetKind, target: &[u8]) {
        if let Some(entries) = lock(&self.registry).targets(kind).remove(target) {
            for e in entries {
                e.queue.close();
            }
        }
    }

    /// The push callback: delivers a message to every subscription it is for (never blocks).
    pub(super) fn dispatch(&self, info: PushInfo) {
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
    pub(super) async fn ask(
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

    pub(super) fn unavailable(&self) -> Error {
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
    pub(super) async fn reconcile(&self, kind: TargetKind) -> Result<(), Error> {
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
    pub(super) fn reconcile_later(&self) {
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

pub(super) fn timed_out(command: &str, after: Duration, sent: bool) -> Error {
    Error::Timeout {
        command: command.to_string(),
        after,
        sent,
    }
}
