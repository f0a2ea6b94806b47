//! Admission of commands (the gate that shutdown closes) and the count of commands waiting for
//! a connection (bounded by [`Config::max_waiting`](crate::Config::max_waiting), exported as a
//! gauge).

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use super::HandleCore;
use crate::sync::Striped;

/// Admission of commands: counts those between entry and answer, and refuses new ones once
/// shutdown has begun. One atomic word per stripe (`in_flight × 2 + closed`): a command counts
/// itself in its thread's stripe, so the threads running commands do not fight over one line.
pub(super) struct Gate {
    words: Striped<AtomicUsize>,
    /// Notified when the last in-flight command of a stripe leaves after closing.
    pub(super) idle: Notify,
}

/// One admitted command (in stripe `1`); leaving is counted when it drops, however the command
/// ends, and on whichever thread it ends.
pub(super) struct Entry<'a>(&'a Gate, usize);

impl Gate {
    pub(super) fn new() -> Self {
        Gate {
            words: Striped::new(|| AtomicUsize::new(0)),
            idle: Notify::new(),
        }
    }

    pub(super) fn enter(&self) -> Option<Entry<'_>> {
        let (stripe, word) = self.words.mine();
        let before = word.fetch_add(2, Ordering::AcqRel);
        let entry = Entry(self, stripe);
        (before & 1 == 0).then_some(entry)
    }

    /// Closes every stripe: a command that enters afterwards sees it closed.
    pub(super) fn close(&self) {
        for word in self.words.iter() {
            word.fetch_or(1, Ordering::AcqRel);
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.words.get(0).load(Ordering::Acquire) & 1 == 1
    }

    pub(super) fn in_flight(&self) -> usize {
        self.words
            .iter()
            .map(|w| w.load(Ordering::Acquire) >> 1)
            .sum()
    }
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        // The last one out of a stripe after closing (its word goes from 2 + 1 to 0 + 1) wakes
        // the drain, which counts the other stripes again.
        if self.0.words.get(self.1).fetch_sub(2, Ordering::AcqRel) == 3 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Counts a command waiting for the connection while it waits.
pub(super) struct Waiting<'a>(&'a HandleCore);

impl<'a> Waiting<'a> {
    /// Counts one more waiting command, or `None` when the limit is reached.
    pub(super) fn enter(core: &'a HandleCore) -> Option<Self> {
        let before = core.waiting.fetch_add(1, Ordering::Relaxed);
        if before >= core.config.max_waiting() {
            core.waiting.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        core.metrics.waiting(true);
        Some(Waiting(core))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.waiting(false);
    }
}
