//! The integration tests, in one binary (`cargo test --test it`; one module per area, e.g.
//! `./scripts/test.sh --test it chaos::` or `--test it -- hardening::del_in_flight`). They run
//! against real `redis-server` processes that the fixture (`redis_supervisor::testing`) starts on
//! ports of their own, two tests at a time (one thread per core) in this one process: nothing here
//! changes process-wide state — no global tracing subscriber or metrics recorder, no signal to
//! the process itself, no environment variable — and no test measures the whole process. The few
//! tests that do live in `tests/process` (its docs say why).
//!
//! `support` holds what the areas share: supervisors on fixture servers and waits with
//! deadlines (`helpers`), the refusal and readiness checks (`readiness_helpers`), certificates
//! and TLS servers (`pki`), and the service binary run as a child process (`process`).

mod support;

mod binary;
mod blocking;
mod cache;
mod chaos;
mod cluster;
mod commands;
mod config_env;
mod delivery;
mod delivery_cluster;
mod fixture;
mod hardening;
mod health;
mod intensity;
mod lanes;
mod lock;
mod metrics;
mod presence;
mod proxy;
mod pubsub;
mod ratelimit;
mod readiness;
mod reconnect;
mod sentinel;
mod session;
mod shared_connection;
mod shutdown;
mod soak;
mod tls;
mod topologies;
