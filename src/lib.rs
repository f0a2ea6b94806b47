//! # redis-supervisor
//!
//! A supervised, observable Redis connection for long-running Rust services. A supervisor actor
//! ([ractor]) owns the connection actor and restarts it with exponential backoff and jitter;
//! cheap [`RedisHandle`]s send typed commands that each get exactly one answer — a value or a
//! typed [`Error`] — by their deadline, whether Redis is up, reconnecting or gone; every
//! availability transition is published as an ordered [`AvailabilityEvent`] stream. On top,
//! the patterns services use Redis for: a JSON [`cache`], a [`ratelimit`]er, login
//! [`session`]s, [`presence`] and [`lock`]s, each with a stated policy for when Redis cannot
//! answer; and the jobs that need connections of their own: [`pubsub`] subscriptions that
//! survive reconnects, and blocking commands ([`RedisHandle::blpop`] & co.) on a pool that
//! blocks nothing else.
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
//! Layers, top to bottom; a module imports only modules below it (no cycles), and every fact
//! has one writing module.
//!
//! | layer | module | what it holds |
//! |---|---|---|
//! | service | `bin/redis-supervisor.rs` | the binary: env config, HTTP routes, event log, graceful shutdown |
//! | routes | [`http`] | the axum routers: `/metrics`, `/health`, `/health/live`, `/health/ready`, `/health/redis` |
//! | patterns | [`cache`], [`ratelimit`] (`patterns/`) | built only on [`RedisHandle`]: the JSON cache (single-flight loads, SCAN invalidation) and the GCRA rate limiter with its tower layer, each with its namespace and degradation policy |
//! | patterns | [`session`], [`presence`], [`lock`] (`patterns/`) | built only on [`RedisHandle`], one Lua script per operation (`patterns/script.rs`): sessions with CSPRNG ids, a per-user index and atomic `revoke_all` (and a tower-sessions store behind the feature); presence on the server's clock; single-instance locks with fencing tokens |
//! | supervisor | [`supervisor`] | the supervisor actor (one connection actor per lane, each restarted alone with its own backoff; availability of the lanes together, `supervisor/lanes.rs`: its one writer) and the public [`Supervisor`] |
//! | child actors | `connection`, [`health`] | the connection actor (one connection's life: connect, ready check, QUIT) and the health actor (PING/INFO probes, their verdicts, `redis_up`, the server gauges) |
//! | dedicated connections | [`pubsub`], `blocking` | the subscriber actor (`pubsub/subscriber.rs`: the pub/sub connection, its registry, restoration, probes; supervised from `supervisor/dedicated.rs`) and each subscription's bounded buffer; the blocking pool (one dedicated connection per blocking command, `CLIENT UNBLOCK` at shutdown), used by `handle/blocking.rs` |
//! | commands | [`handle`] | [`RedisHandle`], the typed commands and their delivery semantics |
//! | deadlines | `deadline` | commands' deadlines, coalesced per millisecond and worker thread (one timer task per group, never late) |
//! | topology | `topology` | how a connection finds its server: standalone, or the master the sentinels name (`topology/sentinel.rs`, checked with `ROLE`); Cluster plugs in here |
//! | sentinel | `sentinel` | the sentinel watcher (with Sentinel): follows `+switch-master` on one sentinel at a time and reports the master; the supervisor moves every connection on a change (`supervisor/dedicated.rs`) |
//! | route | `route` | the published route: the serving lanes (a command takes the one with the fewest outstanding), or why there are none (written by the supervisor only) |
//! | lane | `lane` | one live connection as callers see it: redis-rs's queue, open state, reply evidence |
//! | requests | `request` | a command or pipeline with its label: the one command-name decoder |
//! | observability | [`metrics`] | metric names, label sets, the handles (grouped by the one module that writes each) |
//! | state | [`availability`] | [`Availability`], [`AvailabilityEvent`], the watch/broadcast pair |
//! | pure | [`info`], [`backoff`], [`config`], [`error`] | INFO parsing; backoff and restart intensity; [`Config`] (one settings table; env, URL and TLS files under `config/`); [`Error`] and its classification |
//! | fixture | `testing` | (feature `test-util`) real `redis-server` processes, a fault proxy |
//!
//! Where things happen, for a newcomer:
//! - **Where a command goes:** [`RedisHandle`]'s typed method builds a request and calls
//!   `deliver` (in `handle.rs`), which reads the route, writes into the live lane (redis-rs's
//!   pipeline queue) and applies the delivery semantics. A new typed command is one method in
//!   `handle.rs` (plus a label in [`metrics`]' `COMMANDS` table if it deserves its own).
//! - **Who restarts the connection:** the supervisor actor (`supervisor.rs`): on a connection
//!   actor's failure, or on the health actor's "unhealthy" verdict, it publishes `Down`, waits
//!   the backoff delay ([`backoff`]) and starts a new connection actor.
//! - **Where a new setting goes:** one row of the `settings!` table in `config.rs`; field,
//!   getter, builder setter, env variable, validation, `Debug` and docs follow from it.

#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod availability;
pub mod backoff;
mod blocking;
pub mod config;
mod connection;
mod deadline;
pub mod error;
pub mod handle;
pub mod health;
pub mod http;
pub mod info;
mod lane;
pub mod metrics;
mod patterns;
pub mod pubsub;
mod request;
mod route;
mod sentinel;
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
pub use patterns::{cache, lock, presence, ratelimit, session};
pub use supervisor::Supervisor;

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The redis-rs crate this crate is built on, for [`RedisHandle::cmd`] and
/// [`RedisHandle::pipeline`].
pub use redis;
