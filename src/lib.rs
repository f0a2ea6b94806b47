//! # redis-supervisor
//!
//! A supervised, observable Redis connection for long-running Rust services. A supervisor actor
//! ([ractor]) owns the connection actor and restarts it with exponential backoff and jitter;
//! cheap [`RedisHandle`]s send typed commands that each get exactly one answer — a value or a
//! typed [`Error`] — by their deadline, whether Redis is up, reconnecting or gone; every
//! availability transition is published as an ordered [`AvailabilityEvent`] stream.
//!
//! ```no_run
//! use std::time::Duration;
//! use redis_supervisor::{Config, Supervisor};
//!
//! # #[tokio::main] async fn main() -> Result<(), redis_supervisor::Error> {
//! let supervisor = Supervisor::start(Config::from_env()?).await?; // returns even if Redis is down
//! let redis = supervisor.handle();
//! redis.set_ex("session:42", "{\"user\":7}", Duration::from_secs(1800)).await?;
//! let v: Option<String> = redis.get("session:42").await?;
//! let mut events = supervisor.subscribe();
//! tokio::spawn(async move {
//!     while let Ok(event) = events.recv().await {
//!         println!("redis is now {}", event.state);
//!     }
//! });
//! supervisor.shutdown().await;
//! # let _ = v; Ok(()) }
//! ```
//!
//! # Layout
//!
//! | module | what it holds |
//! |---|---|
//! | [`config`] | [`Config`], its builder, env/URL parsing, validation, redaction |
//! | [`error`] | [`Error`] and its classification (`is_retryable`, `is_ambiguous`, `is_unavailable`) |
//! | [`backoff`] | pure backoff logic ([`BackoffPolicy`]), unit-tested without I/O |
//! | [`availability`] | [`Availability`], [`AvailabilityEvent`], the watch/broadcast pair |
//! | [`supervisor`] | the supervisor actor and the public [`Supervisor`] |
//! | `connection` | the connection actor (internal) |
//! | [`handle`] | [`RedisHandle`] and the typed commands, with their delivery semantics |
//! | [`health`] | the health actor (PING/INFO probes) and INFO parsing ([`health::ServerStats`]) |
//! | [`metrics`] | metric names, descriptions, the pre-registered handles, [`metrics::prometheus_builder`] |
//! | [`http`] | the axum routers: `/metrics`, `/health`, `/health/live`, `/health/ready`, `/health/redis` |
//! | `testing` | (feature `test-util`) a real `redis-server` process fixture |

#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod availability;
pub mod backoff;
pub mod config;
mod connection;
pub mod error;
pub mod handle;
pub mod health;
pub mod http;
pub mod info;
mod lane;
pub mod metrics;
mod request;
mod route;
pub mod supervisor;
mod topology;

#[cfg(feature = "test-util")]
pub mod testing;

pub use availability::{
    Availability, AvailabilityEvent, AvailabilityEvents, EventKind, EventsError,
};
pub use backoff::BackoffPolicy;
pub use config::{Config, ConfigBuilder, ConfigError, OfflinePolicy, Secret};
pub use error::{Error, FailureKind};
pub use handle::{KeyTtl, RedisHandle, SetOptions};
pub use supervisor::Supervisor;

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The redis-rs crate this crate is built on, for [`RedisHandle::cmd`] and
/// [`RedisHandle::pipeline`].
pub use redis;
