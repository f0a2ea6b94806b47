//! Code the integration tests share (also compiled into `tests/process`, which includes these
//! files by path).

pub mod clients;
pub mod helpers;
pub mod locks;
pub mod pki;
pub mod process;
pub mod readiness_helpers;
