//! The patterns services build on Redis, each a thin type over a [`RedisHandle`](crate::RedisHandle)
//! (public API only, plus the handle's pattern metrics): it owns a namespace, its scripts and its
//! degradation policy (ARCHITECTURE.md promise 6), and never reaches into the actors.
//!
//! - [`cache`]: JSON values with a TTL, single-flight `get_or_load`, SCAN-based invalidation.
//! - [`ratelimit`]: a GCRA rate limiter in one server-side script, and a tower layer for axum.
//! - [`session`]: login sessions with random ids, a per-user index, sliding expiry, `revoke_all`
//!   (and a tower-sessions store behind the `tower-sessions` feature).
//! - [`presence`]: "who is online" per scope, on the server's clock, expiring by itself.
//! - [`lock`]: single-instance locks with fencing tokens, released by compare-and-delete.
//!
//! Keys are `<REDIS_KEY_PREFIX><namespace>:<key>` in every pattern.

pub mod cache;
mod keys;
mod layer;
pub mod lock;
pub mod presence;
pub mod ratelimit;
mod script;
pub mod session;
mod singleflight;
#[cfg(feature = "tower-sessions")]
mod tower;
