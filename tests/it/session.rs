//! Sessions against real redis-servers: 10 000 distinct URL-safe ids, round trips and foreign
//! ids, sliding TTL seen with PTTL, the index pruned, revoke_all under concurrent creates, the
//! server gone, builder errors, and the tower-sessions store behind axum.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis_supervisor::session::{Session, SessionStore};
use redis_supervisor::{Error, KeyTtl, RedisHandle};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::support::helpers::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Data {
    cart: Vec<u64>,
}

fn store(h: RedisHandle, ns: &str, ttl: Duration, sliding: bool) -> SessionStore {
    SessionStore::builder(h)
        .namespace(ns)
        .ttl(ttl)
        .sliding(sliding)
        .build()
        .unwrap()
}

async fn pttl(r: &RedisHandle, key: &str) -> Duration {
    match r.ttl(key).await.unwrap() {
        KeyTtl::Expires(t) => t,
        other => panic!("{key}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_ids_are_distinct_and_sessions_round_trip() {
    let srv = server().await;
    let sup = supervisor_with(&srv, |b| b.key_prefix("app:")).await;
    let sessions = store(sup.handle(), "sess", Duration::from_secs(60), false);
    let tasks: Vec<_> = (0..50)
        .map(|t| {
            let s = sessions.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..200 {
                    ids.push(s.create(&format!("user:{t}"), &1u8).await.unwrap().id);
                }
                ids
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for t in tasks {
        for id in t.await.unwrap() {
            assert!(id.len() >= 22, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{id}"
            );
            ids.insert(id);
        }
    }
    assert_eq!(ids.len(), 10_000);

    let data = Data { cart: vec![1, 2] };
    let s = sessions.create("ada", &data).await.unwrap();
    assert_eq!((s.user.as_str(), &s.data), ("ada", &data));
    assert!(!format!("{s:?}").contains(&s.id), "Debug hides the id");
    let got: Session<Data> = sessions.get(&s.id).await.unwrap().unwrap();
    assert_eq!((got.user.as_str(), got.data), ("ada", data));
    assert!(got.expires_at > std::time::SystemTime::now() + Duration::from_secs(50));
    let r = sup.handle();
    assert!(matches!(
        r.ttl(format!("sess:s:{}", s.id)).await.unwrap(),
        KeyTtl::Expires(_)
    ));
    assert!(
        sessions
            .update(&s.id, &Data { cart: vec![9] })
            .await
            .unwrap()
    );
    let got: Session<Data> = sessions.get(&s.id).await.unwrap().unwrap();
    assert_eq!(got.data.cart, vec![9]);
    assert_eq!(sessions.list("ada").await.unwrap(), vec![s.id.clone()]);
    assert!(sessions.revoke(&s.id).await.unwrap());
    assert!(!sessions.revoke(&s.id).await.unwrap());
    assert!(sessions.get::<Data>(&s.id).await.unwrap().is_none());
    assert!(!sessions.update(&s.id, &1).await.unwrap());
    assert!(sessions.list("ada").await.unwrap().is_empty());
    // Ids that are not ours are no session, never an error.
    for foreign in [
        "",
        "x",
        "../../etc",
        &"A".repeat(22),
        &"é".repeat(70_000),
        "*",
    ] {
        assert!(
            sessions.get::<Data>(foreign).await.unwrap().is_none(),
            "{foreign:.20}"
        );
        assert!(!sessions.revoke(foreign).await.unwrap());
        assert!(!sessions.update(foreign, &1).await.unwrap());
    }
    // Bad users are typed errors; corrupt data names the key without the id.
    assert!(matches!(
        sessions.create("", &1).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        sessions.revoke_all(&"u".repeat(70_000)).await,
        Err(Error::InvalidArgument(_))
    ));
    let s = sessions.create("user:8", &1u8).await.unwrap();
    let e = sessions.get::<Data>(&s.id).await.unwrap_err();
    assert!(
        matches!(&e, Error::Corrupt { .. }) && !e.to_string().contains(&s.id),
        "{e}"
    );
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sliding_ttl_is_seen_with_pttl_and_the_index_is_pruned() {
    let srv = server().await;
    let sup = supervisor(&srv).await;
    let r = sup.handle();
    let sliding = store(sup.handle(), "slide", Duration::from_secs(2), true);
    let fixed = store(sup.handle(), "fixed", Duration::from_secs(2), false);
    let (a, b) = (
        sliding.create("u", &1u8).await.unwrap(),
        fixed.create("u", &1u8).await.unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (ka, kb) = (sliding.redis_key(&a.id), fixed.redis_key(&b.id));
    assert!(pttl(&r, &ka).await < Duration::from_millis(1500));
    sliding.get::<u8>(&a.id).await.unwrap().unwrap();
    fixed.get::<u8>(&b.id).await.unwrap().unwrap();
    assert!(
        pttl(&r, &ka).await > Duration::from_millis(1900),
        "get slides"
    );
    assert!(
        pttl(&r, &kb).await < Duration::from_millis(1500),
        "fixed does not slide"
    );
    assert!(pttl(&r, &sliding.index_key("u")).await > Duration::from_millis(1900));
    tokio::time::sleep(Duration::from_millis(600)).await;
    sliding.update(&a.id, &2u8).await.unwrap();
    assert!(
        pttl(&r, &ka).await > Duration::from_millis(1900),
        "update slides"
    );

    // Expired sessions leave the index on the next write and read.
    let short = store(sup.handle(), "short", Duration::from_millis(50), false);
    for _ in 0..20 {
        short.create("v", &1u8).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(80)).await;
    let live = short.create("v", &1u8).await.unwrap();
    let card: u64 = r
        .cmd(redis::cmd("ZCARD").arg(short.index_key("v")).clone())
        .await
        .unwrap();
    assert_eq!(card, 1, "create prunes expired sessions from the index");
    assert_eq!(short.list("v").await.unwrap(), vec![live.id]);
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(short.list("v").await.unwrap().is_empty());
    let exists: u64 = r.exists([short.index_key("v")]).await.unwrap();
    assert_eq!(exists, 0, "the index expires with its last session");
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoke_all_under_concurrent_creates_misses_nothing() {
    let srv = server().await;
    let sup = supervisor(&srv).await;
    let sessions = store(sup.handle(), "sess", Duration::from_secs(60), false);
    let revoking = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let creators: Vec<_> = (0..16)
        .map(|_| {
            let (s, revoking, stop) = (sessions.clone(), revoking.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut before, mut all) = (Vec::new(), Vec::new());
                while !stop.load(Ordering::SeqCst) {
                    let id = s.create("u", &0u8).await.unwrap().id;
                    // Returned before revoke_all was called: must be revoked by it.
                    if !revoking.load(Ordering::SeqCst) {
                        before.push(id.clone());
                    }
                    all.push(id);
                }
                (before, all)
            })
        })
        .collect();
    // revoke_all comes once more than 100 sessions are in the user's index: more than 50 of
    // them returned to their creators (at most 16 creates are in flight).
    let r = sup.handle();
    let index = sessions.index_key("u");
    poll_until("sessions created", SOON, async || {
        r.cmd::<u64>(redis::cmd("ZCARD").arg(&index).clone())
            .await
            .unwrap()
            > 100
    })
    .await;
    revoking.store(true, Ordering::SeqCst);
    let first = sessions.revoke_all("u").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::SeqCst);
    let (mut before, mut all) = (Vec::new(), Vec::new());
    for c in creators {
        let (b, a) = c.await.unwrap();
        before.extend(b);
        all.extend(a);
    }
    assert!(
        before.len() > 50 && first as usize >= before.len(),
        "{first} < {}",
        before.len()
    );
    for id in &before {
        assert!(
            sessions.get::<u8>(id).await.unwrap().is_none(),
            "survived revoke_all"
        );
    }
    // Every live session is in the index, so a second revoke_all finds them all.
    let mut alive = Vec::new();
    for id in &all {
        if sessions.get::<u8>(id).await.unwrap().is_some() {
            alive.push(id.clone());
        }
    }
    let mut listed = sessions.list("u").await.unwrap();
    listed.sort();
    alive.sort();
    assert_eq!(listed, alive, "a live session missing from the index");
    let second = sessions.revoke_all("u").await.unwrap();
    assert_eq!(first + second, all.len() as u64);
    for id in &all {
        assert!(sessions.get::<u8>(id).await.unwrap().is_none());
    }
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_gone_every_call_is_unavailable_within_the_deadline_and_settings_are_checked() {
    let mut srv = server().await;
    let deadline = Duration::from_millis(300);
    let sup = supervisor_with(&srv, |b| b.command_timeout(deadline)).await;
    let sessions = store(sup.handle(), "sess", Duration::from_secs(60), true);
    let s = sessions.create("u", &1u8).await.unwrap();
    let _events = kill_until_down(&mut srv, &sup).await;
    let slack = deadline + Duration::from_millis(500);
    let t = Instant::now();
    let results = [
        sessions.create("u", &1u8).await.map(|_| ()),
        sessions.get::<u8>(&s.id).await.map(|_| ()),
        sessions.update(&s.id, &2u8).await.map(|_| ()),
        sessions.revoke(&s.id).await.map(|_| ()),
        sessions.revoke_all("u").await.map(|_| ()),
        sessions.list("u").await.map(|_| ()),
    ];
    for r in results {
        let e = r.unwrap_err();
        assert!(e.is_unavailable(), "{e}");
    }
    assert!(t.elapsed() < slack * 6, "{:?}", t.elapsed());

    let e = SessionStore::builder(sup.handle())
        .ttl(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(
        matches!(&e, Error::Config(c) if c.setting == "session.ttl"),
        "{e}"
    );
    let e = SessionStore::builder(sup.handle())
        .namespace("")
        .build()
        .unwrap_err();
    assert!(
        matches!(&e, Error::Config(c) if c.setting == "session.namespace"),
        "{e}"
    );
    let max = SessionStore::builder(sup.handle())
        .ttl(Duration::MAX)
        .build()
        .unwrap();
    assert_eq!(max.ttl(), redis_supervisor::cache::MAX_TTL);
    sup.shutdown().await;
}

#[cfg(feature = "tower-sessions")]
mod tower {
    use super::*;
    use redis_supervisor::session::TowerSessionStore;
    use tower_sessions::{Session as TowerSession, SessionManagerLayer};

    /// One HTTP/1.0 request: (status, set-cookie header, body).
    async fn request(
        addr: std::net::SocketAddr,
        path: &str,
        cookie: Option<&str>,
    ) -> (u16, Option<String>, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let c = cookie
            .map(|c| format!("cookie: {c}\r\n"))
            .unwrap_or_default();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n{c}\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let set_cookie = head.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie:")
                .then(|| l[11..].trim().to_string())
        });
        (status, set_cookie, body.to_string())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn login_sets_a_cookie_the_next_request_sees_the_session_and_logout_deletes_it() {
        use axum::routing::get;
        let srv = server().await;
        let sup = supervisor_with(&srv, |b| b.key_prefix("app:")).await;
        let store = TowerSessionStore::new(sup.handle());
        let app = axum::Router::new()
            .route(
                "/login",
                get(|s: TowerSession| async move {
                    s.insert("user", "ada").await.unwrap();
                    "in"
                }),
            )
            .route(
                "/me",
                get(|s: TowerSession| async move {
                    s.get::<String>("user")
                        .await
                        .unwrap()
                        .unwrap_or_else(|| "nobody".into())
                }),
            )
            .route(
                "/logout",
                get(|s: TowerSession| async move {
                    s.delete().await.unwrap();
                    "out"
                }),
            )
            .layer(
                SessionManagerLayer::new(store.clone())
                    .with_secure(false)
                    .with_expiry(tower_sessions::Expiry::OnInactivity(
                        tower_sessions::cookie::time::Duration::seconds(60),
                    )),
            );
        let (addr, _task) = serve_app(app).await;
        let (status, cookie, _) = request(addr, "/login", None).await;
        assert_eq!(status, 200);
        let cookie = cookie.expect("login sets a cookie");
        let pair = cookie.split(';').next().unwrap().to_string();
        let id: tower_sessions::session::Id = pair.split_once('=').unwrap().1.parse().unwrap();
        let r = sup.handle();
        let key = format!("tower-session:{id}");
        assert!(store.redis_key(&id).starts_with("app:tower-session:"));
        let t = pttl(&r, &key).await;
        assert!(
            t > Duration::from_secs(50) && t <= Duration::from_secs(60),
            "{t:?}"
        );
        let (_, _, body) = request(addr, "/me", Some(&pair)).await;
        assert_eq!(body, "ada");
        let (_, _, body) = request(addr, "/logout", Some(&pair)).await;
        assert_eq!(body, "out");
        let exists: u64 = r.exists([key.as_str()]).await.unwrap();
        assert_eq!(exists, 0, "logout deletes the record");
        let (_, _, body) = request(addr, "/me", Some(&pair)).await;
        assert_eq!(body, "nobody");
        sup.shutdown().await;
    }
}
