//! The example service's application: every route, the job worker and the graceful-shutdown
//! path, built on one [`Supervisor`] so that `main.rs` (the binary) and `tests/process/service.rs` (the
//! integration test) run the very same app.
//!
//! | route | what it does | Redis part |
//! |---|---|---|
//! | `POST /login` `{"user":"alice"}` | a session and its `sid` cookie | [`SessionStore::create`] |
//! | `GET /me` | who the cookie belongs to, and how many sessions they have | [`SessionStore::get`], [`SessionStore::list`] |
//! | `POST /logout` | ends this session | [`SessionStore::revoke`] |
//! | `POST /logout-everywhere` | ends every session of the user | [`SessionStore::revoke_all`] |
//! | `GET /api/items/{id}` | an item of a slow simulated database, cache-aside, single-flight | [`Cache::get_or_load`] |
//! | `PUT /api/items/{id}` `{"name":"…"}` | changes an item and invalidates its cache entry | [`Cache::delete`] |
//! | `/api/*` | rate-limited per client address (429 with `Retry-After` and `RateLimit-*`) | [`RateLimitLayer`] |
//! | `POST /presence/{room}` | heartbeat of the logged-in user | [`Presence::heartbeat`] |
//! | `GET /presence/{room}` | who is online in the room | [`Presence::online`] |
//! | `GET /events/{channel}` | Server-Sent Events of a pub/sub channel (a reconnect shows as a `resubscribed` event) | [`PubSub::subscribe`] |
//! | `POST /events/{channel}` | publishes the body on the channel | [`RedisHandle::publish`] |
//! | `POST /jobs` `{…}` | queues a job (`RPUSH`) for the worker (`BLPOP`) | [`RedisHandle::blpop`] |
//! | `GET /jobs` | the worker's progress | `LLEN` |
//! | `/health`, `/health/live`, `/health/ready`, `/health/redis`, `/metrics` | the crate's own routes | [`redis_supervisor::http`] |
//!
//! **While Redis is down** the request paths never wait for it: their handle fails fast
//! ([`RedisHandle::with_offline_policy`]), so items come straight from the database (the cache
//! degrades to a miss), the rate limiter fails open, and what cannot work without Redis
//! (sessions, presence, publishing, queueing) answers 503 with a JSON error saying why; the job
//! worker retries every 500 ms. `/health/ready` says 503 and why. Live event streams stay open
//! and report the gap (`resubscribed`) once Redis is back.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use redis_supervisor::cache::{Cache, Degrade};
use redis_supervisor::presence::Presence;
use redis_supervisor::pubsub::{PubSub, PubSubEvent};
use redis_supervisor::ratelimit::{OnUnavailable, Rate, RateLimitLayer, RateLimiter};
use redis_supervisor::session::{Session, SessionStore};
use redis_supervisor::{Error, OfflinePolicy, RedisHandle, Supervisor};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

/// Default HTTP listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";
/// How long a session lives from its creation (fixed, not sliding): 30 minutes.
pub const SESSION_TTL: Duration = Duration::from_secs(1800);
/// How long a cached item lives: 5 minutes (a `PUT` invalidates it sooner).
pub const CACHE_TTL: Duration = Duration::from_secs(300);
/// How long a member counts as present after its last heartbeat: 30 s.
pub const PRESENCE_TIMEOUT: Duration = Duration::from_secs(30);
/// The list the jobs are queued on (under `REDIS_KEY_PREFIX`).
pub const JOBS_KEY: &str = "jobs";
/// How long one `BLPOP` of the worker blocks before it looks at the stop flag again.
pub const JOBS_BLOCK: Duration = Duration::from_secs(1);
/// Items `1..=ITEMS` exist in the simulated database.
pub const ITEMS: u64 = 100;
/// The session cookie's name.
pub const COOKIE: &str = "sid";

/// The service's own settings (the Redis ones are the crate's `REDIS_*` variables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `LISTEN_ADDR`: where the HTTP server listens. Default [`DEFAULT_LISTEN`].
    pub listen: SocketAddr,
    /// `API_RATE_LIMIT_PER_MIN`: requests per minute and client address on `/api/*`. Default 60.
    pub api_rate_per_min: u64,
    /// `API_RATE_LIMIT_BURST`: how many of them may come at once. Default 30.
    pub api_burst: u64,
    /// `ITEMS_DB_DELAY_MS`: how long one load from the simulated database takes. Default 100 ms.
    pub db_delay: Duration,
    /// `SHUTDOWN_TIMEOUT_MS`: after SIGTERM, how long open HTTP connections may take to finish
    /// before they are cut. Default 10 s.
    pub shutdown_timeout: Duration,
    /// `LOGIN_WAIT_REPLICAS`: a login is answered only once this many replicas have its session
    /// ([`RedisHandle::wait_replicas`]), so that a failover does not log the user out. Default 0
    /// (a single Redis has no replicas); 1 with Sentinel or a cluster.
    pub login_replicas: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: DEFAULT_LISTEN.parse().expect("a valid socket address"),
            api_rate_per_min: 60,
            api_burst: 30,
            db_delay: Duration::from_millis(100),
            shutdown_timeout: Duration::from_secs(10),
            login_replicas: 0,
        }
    }
}

impl Settings {
    /// Reads the variables above from the environment.
    ///
    /// # Errors
    /// A message naming the first invalid variable and its value.
    pub fn from_env() -> Result<Settings, String> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`from_env`](Self::from_env), through `lookup`.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
        let d = Settings::default();
        let listen = match lookup("LISTEN_ADDR") {
            Some(v) => v.parse().map_err(|e| {
                format!(
                    "invalid LISTEN_ADDR = {v:?}: {e} (expected HOST:PORT, e.g. {DEFAULT_LISTEN})"
                )
            })?,
            None => d.listen,
        };
        let positive = |name: &str, default: u64| -> Result<u64, String> {
            let Some(v) = lookup(name) else {
                return Ok(default);
            };
            match v.trim().parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!(
                    "invalid {name} = {v:?}: expected a whole number above 0"
                )),
            }
        };
        Ok(Settings {
            listen,
            api_rate_per_min: positive("API_RATE_LIMIT_PER_MIN", d.api_rate_per_min)?,
            api_burst: positive("API_RATE_LIMIT_BURST", d.api_burst)?,
            db_delay: Duration::from_millis(positive("ITEMS_DB_DELAY_MS", 100)?),
            shutdown_timeout: Duration::from_millis(positive("SHUTDOWN_TIMEOUT_MS", 10_000)?),
            login_replicas: match lookup("LOGIN_WAIT_REPLICAS") {
                None => d.login_replicas,
                Some(v) => v.trim().parse::<u32>().ok().filter(|n| *n <= 64).ok_or_else(|| {
                    format!("invalid LOGIN_WAIT_REPLICAS = {v:?}: expected a number of replicas, 0 to 64")
                })?,
            },
        })
    }
}

/// An item of the simulated database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Its id, `1..=ITEMS`.
    pub id: u64,
    /// Its name (`PUT` changes it).
    pub name: String,
    /// Starts at 1, one more with every change.
    pub version: u64,
}

/// Why the database could not load an item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbError {
    /// There is no such item.
    #[error("no item {0}")]
    NotFound(u64),
}

/// A slow database standing in for a real one: every load takes [`Settings::db_delay`] and is
/// counted, so the answers can show what the cache saved.
#[derive(Debug)]
pub struct Database {
    items: Mutex<HashMap<u64, Item>>,
    loads: AtomicU64,
    delay: Duration,
}

impl Database {
    /// Items `1..=ITEMS`, named `Item <id>`, each load taking `delay`.
    pub fn new(delay: Duration) -> Database {
        let items = (1..=ITEMS)
            .map(|id| {
                let name = format!("Item {id}");
                (
                    id,
                    Item {
                        id,
                        name,
                        version: 1,
                    },
                )
            })
            .collect();
        Database {
            items: Mutex::new(items),
            loads: AtomicU64::new(0),
            delay,
        }
    }

    /// Loads item `id`, slowly (counted when it starts).
    ///
    /// # Errors
    /// [`DbError::NotFound`] for an id outside `1..=ITEMS`.
    pub async fn load(&self, id: u64) -> Result<Item, DbError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let items = self.items.lock().unwrap_or_else(PoisonError::into_inner);
        items.get(&id).cloned().ok_or(DbError::NotFound(id))
    }

    /// Renames item `id`: the new version, or `None` if there is no such item.
    pub fn rename(&self, id: u64, name: &str) -> Option<Item> {
        let mut items = self.items.lock().unwrap_or_else(PoisonError::into_inner);
        let item = items.get_mut(&id)?;
        item.name = name.to_string();
        item.version += 1;
        Some(item.clone())
    }

    /// How many loads have started since the process started.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::SeqCst)
    }
}

/// What the job worker has done.
#[derive(Debug, Default)]
pub struct JobStats {
    processed: AtomicU64,
    last: Mutex<Option<Value>>,
}

impl JobStats {
    /// Jobs processed since the process started.
    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::SeqCst)
    }

    /// The last job processed.
    pub fn last(&self) -> Option<Value> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn record(&self, job: Value) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(job);
        self.processed.fetch_add(1, Ordering::SeqCst);
    }
}

/// What a session holds besides its user.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionData {
    /// When the user logged in, seconds since the Unix epoch.
    logged_in_at: u64,
}

/// What every handler shares.
struct Shared {
    /// Fails fast while Redis is down (never waits for the reconnect): the request paths and
    /// the job worker.
    redis: RedisHandle,
    pubsub: PubSub,
    cache: Cache,
    sessions: SessionStore,
    /// The same sessions, created only once `LOGIN_WAIT_REPLICAS` replicas have them.
    logins: SessionStore,
    presence: Presence,
    db: Arc<Database>,
    jobs: JobStats,
    /// `true` once shutdown began: open event streams end and the worker stops.
    stop: watch::Sender<bool>,
    shutdown_timeout: Duration,
}

/// The example service: its router, its job worker and its graceful shutdown. Cheap to clone.
#[derive(Clone)]
pub struct App {
    shared: Arc<Shared>,
    router: axum::Router,
}

impl App {
    /// Builds every part on `supervisor` (nothing is sent to Redis yet); `prometheus` serves
    /// `/metrics`.
    ///
    /// # Errors
    /// [`Error::Config`] if a pattern refuses a setting (e.g. a rate of 0).
    pub fn new(
        supervisor: &Supervisor,
        settings: &Settings,
        prometheus: PrometheusHandle,
    ) -> Result<App, Error> {
        let redis = supervisor
            .handle()
            .with_offline_policy(OfflinePolicy::FailFast);
        let cache = Cache::builder(redis.clone())
            .namespace("items")
            .ttl(CACHE_TTL)
            .on_unavailable(Degrade::Miss)
            .build()?;
        let sessions = SessionStore::builder(redis.clone())
            .namespace("session")
            .ttl(SESSION_TTL)
            .build()?;
        let durable = redis.wait_replicas(settings.login_replicas, Duration::from_millis(500));
        let logins = SessionStore::builder(durable)
            .namespace("session")
            .ttl(SESSION_TTL)
            .build()?;
        let presence = Presence::builder(redis.clone())
            .namespace("presence")
            .timeout(PRESENCE_TIMEOUT)
            .build()?;
        let limiter = RateLimiter::builder(redis.clone())
            .namespace("ratelimit:api")
            .rate(Rate::per_minute(settings.api_rate_per_min))
            .burst(settings.api_burst)
            .on_unavailable(OnUnavailable::Allow)
            .build()?;
        let shared = Arc::new(Shared {
            pubsub: supervisor.pubsub(),
            redis,
            cache,
            sessions,
            logins,
            presence,
            db: Arc::new(Database::new(settings.db_delay)),
            jobs: JobStats::default(),
            stop: watch::Sender::new(false),
            shutdown_timeout: settings.shutdown_timeout,
        });
        let router = routes(shared.clone(), limiter)
            .merge(redis_supervisor::http::router(supervisor))
            .merge(redis_supervisor::http::metrics_router(prometheus));
        Ok(App { shared, router })
    }

    /// The router with every route (serve it with
    /// `into_make_service_with_connect_info::<SocketAddr>()`: the rate limit keys on the peer
    /// address, and requests without one are not limited).
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// The simulated database (its load count).
    pub fn database(&self) -> &Database {
        &self.shared.db
    }

    /// The job worker's progress.
    pub fn jobs(&self) -> &JobStats {
        &self.shared.jobs
    }

    /// Empties the item cache: the simulated database starts afresh with every process, so
    /// entries a previous run left would be stale. (A service with a real database would not do
    /// this.) How many entries were removed.
    ///
    /// # Errors
    /// An error reply of the server; while Redis cannot answer the cache degrades instead (it
    /// removes what it can).
    pub async fn clear_cache(&self) -> Result<u64, Error> {
        self.shared.cache.invalidate("*").await
    }

    /// Starts the job worker: it pops jobs with `BLPOP` (blocking for [`JOBS_BLOCK`] at a time,
    /// on the blocking pool's own connection) until shutdown begins, and records each.
    pub fn spawn_worker(&self) -> tokio::task::JoinHandle<()> {
        let shared = self.shared.clone();
        tokio::spawn(async move { work(&shared).await })
    }

    /// Ends the open event streams and stops the worker after its current `BLPOP` (what
    /// [`serve`](Self::serve) does when its shutdown signal comes; the server itself is stopped
    /// by that signal only).
    pub fn stop(&self) {
        self.shared.stop.send_replace(true);
    }

    /// Serves the app on `listener` until `shutdown` resolves, then ends the open event streams
    /// ([`stop`](Self::stop)), stops accepting, and waits for the open connections to finish —
    /// at most [`Settings::shutdown_timeout`], then they are cut. Shut the supervisor down after
    /// it returns.
    ///
    /// # Errors
    /// The HTTP server's I/O error.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let shared = self.shared.clone();
        let (began, mut draining) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: ending event streams, draining connections");
            shared.stop.send_replace(true);
            let _ = began.send(());
        };
        let service = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(listener, service).with_graceful_shutdown(signal);
        let timeout = self.shared.shutdown_timeout;
        tokio::select! {
            served = server.into_future() => served,
            () = async {
                if (&mut draining).await.is_ok() {
                    tokio::time::sleep(timeout).await;
                } else {
                    std::future::pending::<()>().await; // the server ended by itself
                }
            } => {
                tracing::warn!(?timeout, "shutdown timeout: cutting the connections still open");
                Ok(())
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C). The signal handlers are installed by this call, not
/// when the future is first polled, so a signal that comes right after it is not missed.
///
/// # Errors
/// If a signal handler cannot be installed.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = interrupt.recv() => tracing::info!("SIGINT received"),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("interrupt received");
        })
    }
}

type AppState = State<Arc<Shared>>;

/// The service's own routes, `/api/*` behind the rate limit.
fn routes(shared: Arc<Shared>, limiter: RateLimiter) -> axum::Router {
    let api = axum::Router::new()
        .route("/api/items/{id}", get(get_item).put(put_item))
        .layer(RateLimitLayer::new(limiter, client_address));
    axum::Router::new()
        .route("/", get(index))
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/logout", post(logout))
        .route("/logout-everywhere", post(logout_everywhere))
        .route(
            "/presence/{room}",
            get(presence_list).post(presence_heartbeat),
        )
        .route("/events/{channel}", get(events).post(publish))
        .route("/jobs", get(jobs).post(queue_job))
        .merge(api)
        .with_state(shared)
}

/// The rate limit's key: the client's IP address (`None`, not limited, without `ConnectInfo`).
fn client_address(request: &Request) -> Option<String> {
    let ConnectInfo(peer) = request.extensions().get::<ConnectInfo<SocketAddr>>()?;
    Some(peer.ip().to_string())
}

async fn index() -> &'static str {
    "redis-supervisor example service. Routes: POST /login, GET /me, POST /logout, \
POST /logout-everywhere, GET|PUT /api/items/{id}, GET|POST /presence/{room}, \
GET|POST /events/{channel}, GET|POST /jobs, GET /health, /health/live, /health/ready, \
/health/redis, /metrics\n"
}

// ---- errors --------------------------------------------------------------------------------

/// A JSON error answer: `{"error": …}` (and `"reason"` when Redis is why, with `Retry-After`).
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({ "error": message.into() }),
        }
    }

    fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "not logged in")
    }

    /// For a Redis error in `what`: 503 when Redis could not answer, 500 otherwise (logged; the
    /// body names no internals).
    fn redis(what: &str, e: &Error) -> ApiError {
        if e.is_unavailable() || e.is_retryable() || e.is_ambiguous() {
            return ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                body: json!({
                    "error": format!("{what} unavailable: Redis is not answering, try again shortly"),
                    "reason": e.to_string(),
                }),
            };
        }
        tracing::error!(error = %e, "{what} failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{what} failed"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

type Answer = Result<Response, ApiError>;

/// A JSON body, or a 400 with a JSON error.
fn body<T>(parsed: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    parsed
        .map(|Json(v)| v)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))
}

// ---- sessions ------------------------------------------------------------------------------

#[derive(Deserialize)]
struct Login {
    user: String,
}

/// `1..=64` characters of `A-Z a-z 0-9 . _ -`.
fn valid_user(user: &str) -> bool {
    (1..=64).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn session_id(headers: &HeaderMap) -> Result<String, ApiError> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_string)
        })
        .ok_or_else(ApiError::unauthorized)
}

/// `Set-Cookie` for session `id` (add `Secure` when served over HTTPS).
fn cookie(id: &str, max_age: Duration) -> [(header::HeaderName, HeaderValue); 1] {
    let value = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}",
        max_age.as_secs()
    );
    let value = HeaderValue::from_str(&value).expect("session ids are cookie-safe");
    [(header::SET_COOKIE, value)]
}

/// The request's session (401 without one, 503 while Redis is down).
async fn current_session(
    s: &Shared,
    headers: &HeaderMap,
) -> Result<Session<SessionData>, ApiError> {
    let id = session_id(headers)?;
    s.sessions
        .get(&id)
        .await
        .map_err(|e| ApiError::redis("sessions", &e))?
        .ok_or_else(ApiError::unauthorized)
}

async fn login(State(s): AppState, parsed: Result<Json<Login>, JsonRejection>) -> Answer {
    let login = body(parsed)?;
    if !valid_user(&login.user) {
        let message = "user: 1 to 64 characters of A-Z a-z 0-9 . _ -";
        return Err(ApiError::new(StatusCode::BAD_REQUEST, message));
    }
    let data = SessionData {
        logged_in_at: unix_secs(SystemTime::now()),
    };
    let session = s
        .logins
        .create(&login.user, &data)
        .await
        .map_err(|e| ApiError::redis("login", &e))?;
    let body = json!({ "user": session.user, "expires_in_s": SESSION_TTL.as_secs() });
    Ok((cookie(&session.id, SESSION_TTL), Json(body)).into_response())
}

async fn me(State(s): AppState, headers: HeaderMap) -> Answer {
    let session = current_session(&s, &headers).await?;
    let ids = s
        .sessions
        .list(&session.user)
        .await
        .map_err(|e| ApiError::redis("sessions", &e))?;
    Ok(Json(json!({
        "user": session.user,
        "logged_in_at": session.data.logged_in_at,
        "sessions": ids.len(),
    }))
    .into_response())
}

async fn logout(State(s): AppState, headers: HeaderMap) -> Answer {
    let id = session_id(&headers)?;
    let was = s
        .sessions
        .revoke(&id)
        .await
        .map_err(|e| ApiError::redis("logout", &e))?;
    Ok((
        cookie("", Duration::ZERO),
        Json(json!({ "logged_out": was })),
    )
        .into_response())
}

async fn logout_everywhere(State(s): AppState, headers: HeaderMap) -> Answer {
    let user = current_session(&s, &headers).await?.user;
    let n = s
        .sessions
        .revoke_all(&user)
        .await
        .map_err(|e| ApiError::redis("logout", &e))?;
    let body = json!({ "user": user, "revoked": n });
    Ok((cookie("", Duration::ZERO), Json(body)).into_response())
}

// ---- items ---------------------------------------------------------------------------------

fn item_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, format!("not an item id: {raw:?}")))
}

fn item_key(id: u64) -> String {
    format!("item:{id}")
}

async fn get_item(State(s): AppState, Path(raw): Path<String>) -> Answer {
    let id = item_id(&raw)?;
    let db = s.db.clone();
    let loaded = s
        .cache
        .get_or_load(&item_key(id), move || async move { db.load(id).await })
        .await;
    match loaded {
        Ok(item) => Ok(Json(json!({ "item": item, "db_loads": s.db.loads() })).into_response()),
        Err(Error::Loader { source, .. }) if source.downcast_ref::<DbError>().is_some() => {
            Err(ApiError::new(StatusCode::NOT_FOUND, source.to_string()))
        }
        Err(e) => Err(ApiError::redis("items", &e)),
    }
}

#[derive(Deserialize)]
struct Rename {
    name: String,
}

async fn put_item(
    State(s): AppState,
    Path(raw): Path<String>,
    parsed: Result<Json<Rename>, JsonRejection>,
) -> Answer {
    let id = item_id(&raw)?;
    let rename = body(parsed)?;
    let item =
        s.db.rename(id, &rename.name)
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no item {id}")))?;
    // Degraded while Redis is down: `false`, and a stale entry may live until its TTL.
    let invalidated = s
        .cache
        .delete(&item_key(id))
        .await
        .map_err(|e| ApiError::redis("items", &e))?;
    Ok(Json(json!({ "item": item, "invalidated": invalidated })).into_response())
}

// ---- presence ------------------------------------------------------------------------------

async fn presence_heartbeat(
    State(s): AppState,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let user = current_session(&s, &headers).await?.user;
    s.presence
        .heartbeat(&room, &user)
        .await
        .map_err(|e| ApiError::redis("presence", &e))?;
    let body = json!({ "room": room, "user": user, "timeout_s": PRESENCE_TIMEOUT.as_secs() });
    Ok(Json(body).into_response())
}

async fn presence_list(State(s): AppState, Path(room): Path<String>) -> Answer {
    let online = s
        .presence
        .online(&room)
        .await
        .map_err(|e| ApiError::redis("presence", &e))?;
    Ok(Json(json!({ "room": room, "online": online })).into_response())
}

// ---- live updates (pub/sub as Server-Sent Events) ------------------------------------------

/// The events of one SSE response, fed by its forwarding task.
struct EventStream(mpsc::Receiver<Event>);

impl futures_core::Stream for EventStream {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|e| e.map(Ok))
    }
}

fn json_event(name: &str, data: Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

/// One SSE event for a subscription event.
fn sse_event(event: PubSubEvent) -> Event {
    match event {
        PubSubEvent::Message(m) => json_event(
            "message",
            json!({
                "channel": m.channel,
                "payload": String::from_utf8_lossy(&m.payload),
            }),
        ),
        PubSubEvent::Resubscribed { downtime } => json_event(
            "resubscribed",
            json!({
                "downtime_ms": u64::try_from(downtime.as_millis()).unwrap_or(u64::MAX),
                "note": "the connection to Redis was lost: messages published meanwhile were missed",
            }),
        ),
        PubSubEvent::Lagged { dropped } => json_event("lagged", json!({ "dropped": dropped })),
    }
}

/// `GET /events/{channel}`: subscribes (503 if it cannot), then streams `subscribed`, then
/// every `message`, `resubscribed` (a gap: Redis was away) and `lagged` event, until the client
/// goes away or shutdown begins (a last `shutdown` event).
async fn events(State(s): AppState, Path(channel): Path<String>) -> Answer {
    let mut subscription = s
        .pubsub
        .subscribe(&[&channel])
        .await
        .map_err(|e| ApiError::redis("events", &e))?;
    let (tx, rx) = mpsc::channel(64);
    let mut stop = s.stop.subscribe();
    let _ = tx.try_send(json_event("subscribed", json!({ "channel": channel })));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stopped(&mut stop) => {
                    let _ = tx.send(json_event("shutdown", json!({}))).await;
                    break;
                }
                () = tx.closed() => break,
                event = subscription.recv() => match event {
                    Some(event) => {
                        if tx.send(sse_event(event)).await.is_err() {
                            break;
                        }
                    }
                    None => break, // the supervisor shut down
                },
            }
        }
    });
    Ok(Sse::new(EventStream(rx))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `POST /events/{channel}`: publishes the body; how many subscribers (of any process) got it.
async fn publish(State(s): AppState, Path(channel): Path<String>, body: String) -> Answer {
    let n = s
        .redis
        .publish(&channel, body)
        .await
        .map_err(|e| ApiError::redis("events", &e))?;
    Ok(Json(json!({ "channel": channel, "receivers": n })).into_response())
}

// ---- jobs ----------------------------------------------------------------------------------

/// The jobs list's key as stored (`cmd` takes keys as given, without the prefix).
fn jobs_key(redis: &RedisHandle) -> String {
    format!("{}{JOBS_KEY}", redis.config().key_prefix())
}

/// `POST /jobs`: queues the JSON body at the tail of the list (`RPUSH`, so the worker's
/// `BLPOP` takes jobs in order); the queue's length after it.
async fn queue_job(State(s): AppState, parsed: Result<Json<Value>, JsonRejection>) -> Answer {
    let job = body(parsed)?;
    let mut push = redis::cmd("RPUSH");
    push.arg(jobs_key(&s.redis)).arg(job.to_string());
    let queued: u64 = s
        .redis
        .cmd(push)
        .await
        .map_err(|e| ApiError::redis("jobs", &e))?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "queued": queued }))).into_response())
}

/// `GET /jobs`: what the worker processed, and what waits (`null` while Redis is down).
async fn jobs(State(s): AppState) -> Response {
    let mut len = redis::cmd("LLEN");
    len.arg(jobs_key(&s.redis));
    let waiting: Option<u64> = s.redis.cmd_idempotent(len).await.ok();
    Json(json!({
        "processed": s.jobs.processed(),
        "waiting": waiting,
        "last": s.jobs.last(),
    }))
    .into_response()
}

/// The worker's loop: `BLPOP` until shutdown begins (or the supervisor shuts down, which
/// unblocks a `BLPOP` at once). Not cancelled mid-`BLPOP`: a pop whose reply was dropped would
/// lose the job. While Redis is down the `BLPOP` fails at once (fail-fast handle) and the
/// worker tries again every 500 ms: a `BLPOP` that waited for the reconnect would be sent with
/// its whole block time but only what is left of its deadline, and could come back
/// `Ambiguous`.
async fn work(s: &Shared) {
    let stop = s.stop.subscribe();
    while !*stop.borrow() {
        match s
            .redis
            .blpop::<_, Option<(String, String)>>(&[JOBS_KEY], JOBS_BLOCK)
            .await
        {
            Ok(Some((_, job))) => {
                let job = serde_json::from_str(&job).unwrap_or(Value::String(job));
                tracing::info!(%job, "job processed");
                s.jobs.record(job);
            }
            Ok(None) => {}
            Err(Error::ShuttingDown) => break,
            Err(e) => {
                if e.is_ambiguous() {
                    tracing::warn!(error = %e, "BLPOP interrupted: a job it may have popped is lost");
                } else {
                    tracing::debug!(error = %e, "job worker: redis not answering");
                }
                let mut stop = stop.clone();
                let pause = tokio::time::sleep(Duration::from_millis(500));
                tokio::select! {
                    () = pause => {}
                    () = stopped(&mut stop) => {}
                }
            }
        }
    }
    tracing::info!(processed = s.jobs.processed(), "job worker stopped");
}

/// Resolves once shutdown began (or the app is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
