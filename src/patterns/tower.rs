//! [`TowerSessionStore`]: a `tower_sessions::SessionStore` (tower-sessions 0.15) on a
//! [`RedisHandle`], behind the `tower-sessions` feature.

use std::time::Duration;

use async_trait::async_trait;
use tower_sessions::cookie::time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

use super::keys::{Namespace, TOKEN_BYTES};
use crate::error::Error;
use crate::handle::{RedisHandle, SetOptions};

/// The namespace of [`TowerSessionStore::new`].
pub const DEFAULT_TOWER_NAMESPACE: &str = "tower-session";

/// A tower-sessions store on the handle: each record is one JSON string
/// `<REDIS_KEY_PREFIX><namespace>:<id>` expiring (`PX`) at the record's `expiry_date`.
///
/// - `create` draws the id from the OS CSPRNG (128 bits; the id tower-sessions proposed is
///   replaced) and writes with `SET NX`, drawing again on a collision;
/// - `save` writes with `SET PX` (a record already past its expiry is deleted instead);
/// - `load` answers `None` for a missing, expired or undecodable-as-missing key;
/// - `delete` is `DEL`.
///
/// Errors of the handle reach tower-sessions as `session_store::Error::Backend` with the
/// handle's message (no session data or id in it); undecodable data is `Decode`. No
/// degradation: when Redis is down the session layer answers 500.
///
/// ```no_run
/// use tower_sessions::{Expiry, SessionManagerLayer};
/// use redis_supervisor::session::TowerSessionStore;
///
/// # fn run(handle: redis_supervisor::RedisHandle) {
/// let layer = SessionManagerLayer::new(TowerSessionStore::new(handle))
///     .with_expiry(Expiry::OnInactivity(tower_sessions::cookie::time::Duration::minutes(30)));
/// let app: axum::Router = axum::Router::new().layer(layer);
/// # let _ = app; }
/// ```
#[derive(Clone)]
pub struct TowerSessionStore {
    handle: RedisHandle,
    ns: Namespace,
}

impl std::fmt::Debug for TowerSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TowerSessionStore")
            .field("namespace", &self.ns)
            .finish()
    }
}

impl TowerSessionStore {
    /// A store over `handle` in the namespace [`DEFAULT_TOWER_NAMESPACE`].
    pub fn new(handle: RedisHandle) -> Self {
        // Cannot fail: the default namespace is short, non-empty and has no control characters.
        Self::with_namespace(handle, DEFAULT_TOWER_NAMESPACE).expect("valid default namespace")
    }

    /// A store in `namespace`.
    ///
    /// # Errors
    /// [`Error::Config`] naming `session.namespace` for an empty, over-long or
    /// control-character namespace.
    pub fn with_namespace(handle: RedisHandle, namespace: &str) -> Result<Self, Error> {
        let ns = Namespace::new(&handle, "session.namespace", namespace)?;
        Ok(TowerSessionStore { handle, ns })
    }

    /// The Redis key of session `id` (a secret: do not log it).
    pub fn redis_key(&self, id: &Id) -> String {
        self.ns.full(&id.to_string())
    }

    fn key(&self, id: &Id) -> String {
        self.ns.local(&id.to_string())
    }
}

/// Time left until `expiry`, if any.
fn left(expiry: OffsetDateTime) -> Option<Duration> {
    let d = expiry - OffsetDateTime::now_utc();
    Duration::try_from(d)
        .ok()
        .filter(|d| *d >= Duration::from_millis(1))
}

fn backend(e: Error) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

fn encode(record: &Record) -> session_store::Result<Vec<u8>> {
    serde_json::to_vec(record).map_err(|e| session_store::Error::Encode(e.to_string()))
}

fn random_id() -> session_store::Result<Id> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| session_store::Error::Backend(e.to_string()))?;
    Ok(Id(i128::from_le_bytes(bytes)))
}

#[async_trait]
impl SessionStore for TowerSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let Some(ttl) = left(record.expiry_date) else {
            return Ok(()); // Expired at birth: nothing to keep.
        };
        for _ in 0..4 {
            record.id = random_id()?;
            let json = encode(record)?;
            let opts = SetOptions::new().ttl(ttl).nx();
            let set = self.handle.set_with(self.key(&record.id), json, opts);
            if set.await.map_err(backend)? {
                self.handle.pattern_metrics().session_created();
                return Ok(());
            }
        }
        Err(session_store::Error::Backend(
            "no free session id after 4 tries".into(),
        ))
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        match left(record.expiry_date) {
            Some(ttl) => self
                .handle
                .set_ex(self.key(&record.id), encode(record)?, ttl)
                .await
                .map_err(backend),
            None => self.delete(&record.id).await,
        }
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let json: Option<Vec<u8>> = self.handle.get(self.key(id)).await.map_err(backend)?;
        let Some(json) = json else { return Ok(None) };
        let record: Record = serde_json::from_slice(&json)
            .map_err(|e| session_store::Error::Decode(e.to_string()))?;
        Ok(left(record.expiry_date).map(|_| record))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        let n = self.handle.del([self.key(id)]).await.map_err(backend)?;
        self.handle.pattern_metrics().sessions_revoked(n);
        Ok(())
    }
}
