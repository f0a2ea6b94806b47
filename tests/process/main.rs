//! The integration tests that cannot share a process with the rest (`tests/it`): each of them
//! changes something process-wide for good, or measures or loads the whole process. Apart from
//! that they are tests like those in `tests/it`, and use its `support` code.
//!
//! - `secrets`, `secrets_sweep`: search everything the process logs, through a global tracing
//!   subscriber at TRACE (`capture`) that, once installed, stays for the rest of the process.
//! - `service`: sends SIGTERM to its own process; tokio's SIGTERM and SIGINT handlers then stay
//!   installed for the rest of the process (a test binary sharing it would no longer stop on
//!   Ctrl-C).
//! - `outage`: its memory bound is on this process's resident set size (RSS).
//! - `busy`: 48 tasks fetching 1 MiB values, a load that would disturb the timing of tests beside
//!   it.
//!
//! The last two take the process whole ([`alone`]); every other test here holds a [`shared`]
//! guard, so that they run in parallel with each other but never beside those two.

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

#[path = "../it/support"]
#[allow(dead_code)] // Each binary uses its own part of the shared support code.
mod support {
    pub mod clients;
    pub mod helpers;
    pub mod pki;
    pub mod process;
    pub mod readiness_helpers;
}

mod capture;

mod busy;
mod outage;
mod secrets;
mod secrets_sweep;
mod service;

/// Who has the process now: one test [`alone`], or any number [`shared`].
static PROCESS: RwLock<()> = RwLock::const_new(());

/// Waits until no other test of this binary runs, and keeps them out while the guard lives.
pub async fn alone() -> RwLockWriteGuard<'static, ()> {
    PROCESS.write().await
}

/// Waits until no test has the process [`alone`], and keeps such tests out while the guard
/// lives.
pub async fn shared() -> RwLockReadGuard<'static, ()> {
    PROCESS.read().await
}
