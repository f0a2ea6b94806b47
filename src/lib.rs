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
//! blocks nothing else. One server, the master a set of sentinels names
//! ([`Config::sentinels`]), or a Redis Cluster ([`Config::cluster_nodes`]: routed by slot, with
//! `MOVED`/`ASK` followed under the same delivery rules) are all configured the same way.
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
//! **Start from the example service:** `examples/service/` (`cargo run --example service`) is
//! a complete axum app built on every part below — sessions, a cached API, rate limits,
//! presence, Server-Sent Events from pub/sub, a job queue, health and metrics, graceful shutdown
//! — that keeps serving while Redis is away; `docs/service.md` in the repository walks through
//! it with `curl`. The repository's other guides: `docs/operations.md` (running the binary, HTTP
//! routes, metrics, dashboards and alerts), `docs/testing.md` and `docs/performance.md`.
//!
//! # Modules
//!
//! Each public module, with a short example (the ones that talk to Redis compile but do not
//! run here: they need a server).
//!
//! [`supervisor`] — [`Supervisor`]: starts the actors, hands out handles, shuts down; its
//! module docs are the guide to [lanes](supervisor#lanes), [Sentinel](supervisor#sentinel) and
//! [Redis Cluster](supervisor#redis-cluster).
//! ```no_run
//! # async fn run() -> Result<(), redis_supervisor::Error> {
//! use std::time::Duration;
//! let supervisor = redis_supervisor::Supervisor::start(redis_supervisor::Config::from_env()?).await?;
//! supervisor.wait_until_up(Duration::from_secs(2)).await?; // optional: start serving anyway
//! supervisor.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! [`handle`] — [`RedisHandle`]: typed commands, each answered by its deadline.
//! ```no_run
//! # async fn run(redis: redis_supervisor::RedisHandle) -> Result<(), redis_supervisor::Error> {
//! use std::time::Duration;
//! use redis_supervisor::OfflinePolicy;
//! redis.set_ex("greeting", "hello", Duration::from_secs(60)).await?;
//! let hits: i64 = redis.incr("hits").await?;
//! let fast = redis.with_timeout(Duration::from_millis(50)).with_offline_policy(OfflinePolicy::FailFast);
//! let cached: Option<String> = fast.get("greeting").await.unwrap_or(None); // never waits while down
//! # let _ = (hits, cached); Ok(()) }
//! ```
//!
//! [`config`] — [`Config`]: one settings table, from the environment, a URL or a builder.
//! ```
//! use std::time::Duration;
//! let config = redis_supervisor::Config::builder()
//!     .url("redis://127.0.0.1:6379/0")
//!     .command_timeout(Duration::from_millis(500))
//!     .build()?;
//! assert_eq!(config.command_timeout(), Duration::from_millis(500));
//! # Ok::<(), redis_supervisor::Error>(())
//! ```
//!
//! [`error`] — [`Error`] and its classification.
//! ```
//! use redis_supervisor::Error;
//! let e = Error::ShuttingDown;
//! assert!(e.is_unavailable() && !e.is_ambiguous());
//! ```
//!
//! [`availability`] — [`Availability`] and the ordered [`AvailabilityEvent`] stream.
//! ```no_run
//! # async fn run(supervisor: redis_supervisor::Supervisor) {
//! let mut events = supervisor.subscribe();
//! while let Ok(event) = events.recv().await {
//!     println!("#{} {} ({})", event.seq, event.state, event.reason);
//! }
//! # }
//! ```
//!
//! [`cache`] — a JSON cache with single-flight loads and SCAN invalidation.
//! ```no_run
//! # async fn run(redis: redis_supervisor::RedisHandle) -> Result<(), redis_supervisor::Error> {
//! # async fn load_from_db() -> Result<u64, std::io::Error> { Ok(7) }
//! let cache = redis_supervisor::cache::Cache::builder(redis).namespace("api").build()?;
//! let n: u64 = cache.get_or_load("user:7:orders", load_from_db).await?;
//! cache.invalidate("user:7:*").await?;
//! # let _ = n; Ok(()) }
//! ```
//!
//! [`ratelimit`] — a GCRA rate limiter, and its tower layer for axum.
//! ```no_run
//! # async fn run(redis: redis_supervisor::RedisHandle) -> Result<(), redis_supervisor::Error> {
//! use redis_supervisor::ratelimit::{Rate, RateLimiter};
//! let limiter = RateLimiter::builder(redis).rate(Rate::per_minute(60)).burst(30).build()?;
//! if !limiter.check("client:203.0.113.7").await?.allowed { /* 429 */ }
//! # Ok(()) }
//! ```
//!
//! [`session`] — login sessions with a per-user index and an atomic `revoke_all`.
//! ```no_run
//! # async fn run(redis: redis_supervisor::RedisHandle) -> Result<(), redis_supervisor::Error> {
//! let sessions = redis_supervisor::session::SessionStore::builder(redis).build()?;
//! let s = sessions.create("alice", &()).await?;   // s.id goes into a cookie
//! sessions.revoke_all("alice").await?;            // "log out everywhere"
//! # let _ = s; Ok(()) }
//! ```
//!
//! [`presence`] — who is online, on the server's clock.
//! ```no_run
//! # async fn run(redis: redis_supervisor::RedisHandle) -> Result<(), redis_supervisor::Error> {
//! let presence = redis_supervisor::presence::Presence::builder(redis).build()?;
//! presence.heartbeat("room:1", "alice").await?;
//! let online: Vec<String> = presence.online("room:1").await?;
//! # let _ = online; Ok(()) }
//! ```
//!
//! [`lock`] — single-instance locks with fencing tokens.
//! ```no_run
//! # async fn run(redis: redis_supervisor::RedisHandle) -> Result<(), redis_supervisor::Error> {
//! use std::time::Duration;
//! let locks = redis_supervisor::lock::LockManager::new(redis);
//! let guard = locks.acquire("invoice:42", Duration::from_secs(10), Duration::from_secs(2)).await?;
//! let fence = guard.token(); // pass it to the resource you protect
//! guard.release().await?;
//! # let _ = fence; Ok(()) }
//! ```
//!
//! [`pubsub`] — subscriptions that survive reconnects and report the gap.
//! ```no_run
//! # async fn run(supervisor: redis_supervisor::Supervisor) -> Result<(), redis_supervisor::Error> {
//! use redis_supervisor::pubsub::PubSubEvent;
//! let mut news = supervisor.pubsub().subscribe(&["news"]).await?;
//! while let Some(event) = news.recv().await {
//!     if let PubSubEvent::Resubscribed { downtime } = event { println!("missed {downtime:?}") }
//! }
//! # Ok(()) }
//! ```
//!
//! [`http`] — the health routes and `/metrics`, to merge into an axum app.
//! ```no_run
//! # fn run(supervisor: &redis_supervisor::Supervisor) {
//! let prometheus = redis_supervisor::metrics::prometheus_builder().build_recorder().handle();
//! let app: axum::Router = axum::Router::new()
//!     .merge(redis_supervisor::http::router(supervisor))
//!     .merge(redis_supervisor::http::metrics_router(prometheus));
//! # let _ = app; }
//! ```
//!
//! [`metrics`] — metric names (the Grafana dashboard's, in `grafana/`) and the exporter setup.
//! ```
//! assert_eq!(redis_supervisor::metrics::CLIENT_UP, "redis_client_up");
//! let recorder = redis_supervisor::metrics::prometheus_builder().build_recorder();
//! # let _ = recorder;
//! ```
//!
//! [`backoff`] — the reconnect delay, a pure function of the attempt.
//! ```
//! use std::time::Duration;
//! let policy = redis_supervisor::BackoffPolicy::default(); // 50 ms → 2 s, ±20 %
//! assert_eq!(policy.nominal(0), Duration::from_millis(50));
//! assert_eq!(policy.nominal(10), Duration::from_secs(2));
//! ```
//!
//! [`info`] (and [`health`], which reads it) — `INFO` parsed into [`ServerStats`](info::ServerStats).
//! ```
//! let stats = redis_supervisor::info::ServerStats::parse("redis_version:7.0.15\r\nrole:master\r\n");
//! assert_eq!((stats.version.as_str(), stats.role.as_str()), ("7.0.15", "master"));
//! ```
//!
#![cfg_attr(
    feature = "test-util",
    doc = r#"[`testing`] (feature `test-util`) — real `redis-server` processes for your tests.
```no_run
# async fn run() -> Result<(), Box<dyn std::error::Error>> {
let mut server = redis_supervisor::testing::RedisServer::start().await?; // a free loopback port
let config = redis_supervisor::Config::from_url(&server.url())?;
server.kill().await?;    // kill -9
server.restart().await?; // same port
# let _ = config; Ok(()) }
```
"#
)]
#![cfg_attr(
    not(feature = "test-util"),
    doc = "`testing` (feature `test-util`) — real `redis-server` processes for your tests.\n"
)]
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
//! | patterns | [`cache`], [`ratelimit`] (`patterns/`) | built only on [`RedisHandle`]: the JSON cache (single-flight loads, SCAN invalidation; its builder in `patterns/cache/builder.rs`) and the GCRA rate limiter with its tower layer (`patterns/layer.rs`), each with its namespace (`patterns/keys.rs`) and degradation policy |
//! | patterns | [`session`], [`presence`], [`lock`] (`patterns/`) | built only on [`RedisHandle`], one Lua script per operation (`patterns/script.rs`): sessions with CSPRNG ids, a per-user index and atomic `revoke_all` (and a tower-sessions store behind the feature, `patterns/tower.rs`); presence on the server's clock; single-instance locks with fencing tokens |
//! | supervisor | [`supervisor`] | the public [`Supervisor`]; the supervisor actor (`supervisor/actor.rs`: one connection actor per lane, each restarted alone with its own backoff), its restart policy (`supervisor/restart.rs`), the one state the lanes together publish (`supervisor/lanes.rs`), its dedicated children and failovers (`supervisor/dedicated.rs`), what the actor and the public type share and the one place a state is published (`supervisor/core.rs`), what the HTTP routes read (`supervisor/status.rs`) |
//! | child actors | `connection`, [`health`] | the connection actor (one connection's life: connect, ready check, QUIT) and the health actor (PING/INFO probes, their verdicts, `redis_up`, the server gauges; on a cluster, `health/cluster.rs`: the slot map and every node's PING) |
//! | sentinel | `sentinel` | the sentinel watcher (with Sentinel): watches one sentinel at a time, listens to the events of every sentinel and follows the promotion (`+failover-state-send-slaveof-noone` / `+promoted-slave`), then `+switch-master` and each periodic check; the supervisor moves every connection on a change (`supervisor/dedicated.rs`) |
//! | dedicated connections | [`pubsub`] | the public [`PubSub`](pubsub::PubSub); the subscriber actor (`pubsub/subscriber.rs`: the pub/sub connection, restoration, probes; supervised from `supervisor/dedicated.rs`); the registry and the subscriber connection's state they share (`pubsub/shared.rs`); each subscription's bounded buffer (`pubsub/subscription.rs`) |
//! | commands | [`handle`] | [`RedisHandle`]: the typed and raw commands (`handle/commands.rs`), the blocking commands (`handle/blocking.rs`), optimistic transactions (`handle/transaction.rs`), and their delivery semantics |
//! | delivery | `delivery` | the one delivery loop every command goes through — typed commands, raw ones, pipelines, blocking commands, durable writes, single- and multi-key commands on a cluster: one attempt (`delivery/attempt.rs`), multi-key commands split across slots (`delivery/split.rs`), admission and the bound on waiting commands (`delivery/gate.rs`), big replies kept on the bulk lane (`delivery/bulk.rs`) |
//! | pools | `pool` | dedicated connection pools: blocking (one connection per blocking command, `CLIENT UNBLOCK` at shutdown) and leased (transactions, durable writes, lock acquires), each connection given back only clean |
//! | route | `route` | the published route: the serving lanes (a command takes the one with the fewest outstanding), or why there are none (written by the supervisor only) |
//! | lane | `lane` | one live connection as callers see it: redis-rs's queue (or the cluster router), open state, reply evidence |
//! | topology | `topology` | the one seam for how Redis is deployed, where every connection finds its server: standalone, the master the sentinels name (`topology/sentinel.rs`, checked with `ROLE`; a promotion under way), or a Redis Cluster (`topology/cluster.rs`: the crate's own router, its slot map and one connection per node) |
//! | requests | `request` | a command or pipeline with its metric label |
//! | command knowledge | `command` | what the crate knows about a command from its name and arguments (the one reader of them): its name, its key (and so its slot), whether it only reads, how long it blocks, and the refusal of commands that would change a shared connection's state |
//! | deadlines | `deadline` | commands' deadlines, coalesced per 10 ms tick and worker thread (one timer task per group, never late) |
//! | locks | `sync` | taking a `std::sync::Mutex` whether or not a panic poisoned it (every critical section is one step) |
//! | observability | [`metrics`] | metric names, each once with its kind, unit and HELP text (`metrics/names.rs`); the label sets (`metrics/labels.rs`); the handles, by the one module that writes each (`metrics/handles.rs`, `metrics/dedicated.rs`, `metrics/patterns.rs`) |
//! | state | [`availability`] | [`Availability`], [`AvailabilityEvent`], the watch/broadcast pair |
//! | pure | [`info`], [`backoff`], [`config`], [`error`] | INFO parsing; backoff and restart intensity; [`Config`] (one settings table; env, URL, node lists, values and TLS files under `config/`); [`Error`] and its classification |
//! | fixture | `testing` | (feature `test-util`) real `redis-server` processes, a fault proxy, Sentinel and Cluster topologies (`testing/`) |
//!
//! Where things happen, for a newcomer:
//! - **Where a command goes:** [`RedisHandle`]'s typed method builds a request and hands it to
//!   the one delivery loop (`delivery.rs`), which reads the route, writes into a serving lane
//!   (redis-rs's pipeline queue; on a cluster, the connection to the key's node; for a blocking
//!   command or a durable write, a pool's connection) and applies the delivery semantics. A new
//!   typed command is one method in `handle/commands.rs` (plus a label in `metrics/labels.rs`'
//!   `command` set, [`metrics::COMMANDS`], if it deserves its own).
//! - **Who restarts the connection:** the supervisor actor (`supervisor/actor.rs`, its policy in
//!   `supervisor/restart.rs`): on a connection actor's failure, or on the health actor's
//!   "unhealthy" verdict, it publishes `Down`, waits the backoff delay ([`backoff`]) and starts
//!   a new connection actor.
//! - **Where a new setting goes:** one row of the `settings!` table in `config.rs`; field,
//!   getter, builder setter, env variable, validation, `Debug` and docs follow from it.

#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod availability;
pub mod backoff;
mod command;
pub mod config;
mod connection;
mod deadline;
mod delivery;
pub mod error;
pub mod handle;
pub mod health;
pub mod http;
pub mod info;
mod lane;
pub mod metrics;
mod patterns;
mod pool;
pub mod pubsub;
mod request;
mod route;
mod sentinel;
pub mod supervisor;
mod sync;
mod topology;

#[cfg(feature = "test-util")]
pub mod testing;

pub use availability::{
    Availability, AvailabilityEvent, AvailabilityEvents, EventKind, EventsError,
};
pub use backoff::BackoffPolicy;
pub use config::{Config, ConfigBuilder, ConfigError, OfflinePolicy, Secret};
pub use error::{Error, FailureKind};
pub use handle::{KeyTtl, RedisHandle, SetOptions, Transaction};
pub use patterns::{cache, lock, presence, ratelimit, session};
pub use supervisor::Supervisor;

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The examples of `docs/service.md`, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/service.md")]
pub struct ServiceGuideDoctests;

/// The examples of `docs/operations.md`, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/operations.md")]
pub struct OperationsGuideDoctests;

/// The examples of `docs/testing.md`, compiled as doctests (they use the `testing` fixture).
#[cfg(all(doctest, feature = "test-util"))]
#[doc = include_str!("../docs/testing.md")]
pub struct TestingGuideDoctests;

/// The examples of `docs/performance.md`, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/performance.md")]
pub struct PerformanceGuideDoctests;

/// The redis-rs crate this crate is built on, for [`RedisHandle::cmd`] and
/// [`RedisHandle::pipeline`].
pub use redis;
