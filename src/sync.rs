//! Locking the crate's few `std::sync::Mutex`es. Every critical section behind them is one
//! lookup, insert, remove, push, pop or assignment, so a panic elsewhere can never leave the data
//! half changed: a poisoned lock is taken as it is rather than turned into a second panic.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// The guard of `m`, poisoned or not.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One `T` per stripe, each on cache lines of its own, so that threads working at once touch
/// different lines: a thread uses its own stripe ([`mine`](Striped::mine)), and a value that
/// every thread writes (a counter, a free list) stops bouncing between the cores.
pub(crate) struct Striped<T> {
    stripes: [Padded<T>; STRIPES],
}

/// Stripes per [`Striped`] value: threads beyond this many share stripes.
const STRIPES: usize = 16;

/// A value alone on its cache lines (128 bytes: two lines, as adjacent-line prefetch pairs them).
#[repr(align(128))]
struct Padded<T>(T);

impl<T> Striped<T> {
    /// Each stripe from `init`.
    pub(crate) fn new(mut init: impl FnMut() -> T) -> Self {
        Striped {
            stripes: std::array::from_fn(|_| Padded(init())),
        }
    }

    /// This thread's stripe, and its index (for [`get`](Self::get) later, from any thread).
    #[inline]
    pub(crate) fn mine(&self) -> (usize, &T) {
        let i = thread_stripe() % STRIPES;
        (i, self.get(i))
    }

    /// Stripe `i` (taken modulo the stripe count).
    #[inline]
    pub(crate) fn get(&self, i: usize) -> &T {
        &self.stripes[i % STRIPES].0
    }

    /// Every stripe.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.stripes.iter().map(|p| &p.0)
    }
}

/// This thread's stripe number: handed out in turn the first time a thread asks (0 where
/// thread-locals are gone, at thread exit).
#[inline]
fn thread_stripe() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE
        .try_with(|s| {
            let mut i = s.get();
            if i == usize::MAX {
                i = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
                s.set(i);
            }
            i
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn threads_get_different_stripes_and_each_is_on_its_own_lines() {
        let s = Striped::new(|| AtomicUsize::new(0));
        let mine = std::thread::scope(|scope| {
            let a = scope.spawn(|| s.mine().0);
            let b = scope.spawn(|| s.mine().0);
            (a.join().unwrap(), b.join().unwrap())
        });
        assert_ne!(mine.0, mine.1, "two new threads share a stripe");
        s.get(mine.0).fetch_add(1, Ordering::Relaxed);
        assert_eq!(
            s.iter().map(|a| a.load(Ordering::Relaxed)).sum::<usize>(),
            1
        );
        let a = s.get(0) as *const _ as usize;
        let b = s.get(1) as *const _ as usize;
        assert!(b - a >= 128, "stripes {a:#x} and {b:#x} share cache lines");
    }
}
