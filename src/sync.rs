//! Locking the crate's few `std::sync::Mutex`es. Every critical section behind them is one
//! lookup, insert, remove, push, pop or assignment, so a panic elsewhere can never leave the data
//! half changed: a poisoned lock is taken as it is rather than turned into a second panic.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// The guard of `m`, poisoned or not.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
