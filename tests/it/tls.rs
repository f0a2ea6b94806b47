//! TLS, mutual TLS, ACL users and password files against real `redis-server` processes started with
//! TLS by the fixture (ARCHITECTURE.md promises 8 and 9, issue 5).
//!
//! Every certificate is made at test time with rcgen into the fixture's temporary directory: a CA, a
//! server certificate for `localhost` + 127.0.0.1 signed by it, one for `other.example` only, an
//! expired one, a client certificate signed by the CA, and a second, unrelated CA. The fixture keeps
//! its plain port (readiness, admin connections); the supervisors connect to the TLS port.

use std::time::Duration;

use redis_supervisor::{
    Availability, AvailabilityEvents, Config, ConfigBuilder, Error, EventsError, FailureKind,
    Supervisor,
};
use tokio::process::Command;
use tokio::time::Instant;

use crate::support::helpers::*;
use crate::support::pki::{Leaf, Pki, TlsRedis};
use crate::support::process::{exit_output, listen_addr, sigterm, wait_status};
use crate::support::{pki, process};

// ---------------------------------------------------------------------------------------------
// A redis-server with a TLS port (certificates: tests/support/pki.rs)
// ---------------------------------------------------------------------------------------------

/// Which certificate the server presents.
#[derive(Clone, Copy)]
enum ServerCert {
    /// `localhost` + 127.0.0.1, signed by the CA.
    Localhost,
    /// `other.example` only, signed by the CA.
    OtherHost,
    /// `localhost`, signed by the CA, expired in 2021.
    Expired,
}

/// A fixture server with a TLS port presenting `cert`, with every certificate of [`Leaf::ALL`] in
/// its directory (see [`pki::start_tls_server`]).
async fn tls_server(cert: ServerCert, auth_clients: bool, extra: &[&str]) -> TlsRedis {
    let leaf = match cert {
        ServerCert::Localhost => Leaf::LOCALHOST,
        ServerCert::OtherHost => Leaf::OTHER_HOST,
        ServerCert::Expired => Leaf::EXPIRED,
    };
    pki::start_tls_server(Leaf::ALL, leaf.name, auth_clients, extra).await
}

/// A config for `url` with fast backoff (20 ms → 300 ms), tweaked by `f`.
fn tls_config(url: String, f: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> Config {
    let b = Config::builder()
        .url(url)
        .backoff_base(Duration::from_millis(20))
        .backoff_max(Duration::from_millis(300));
    f(b).build().expect("valid config")
}

/// The first `Down` state the supervisor reaches (the current one if it is down already).
async fn first_down(sup: &Supervisor, events: &mut AvailabilityEvents) -> (String, FailureKind) {
    if let Availability::Down { error, kind, .. } = sup.availability() {
        return (error, kind);
    }
    let seen = events_until(events, |s| matches!(s, Availability::Down { .. })).await;
    match &seen.last().unwrap().state {
        Availability::Down { error, kind, .. } => (error.clone(), *kind),
        other => panic!("{other:?}"),
    }
}

/// Asserts a TLS failure whose reason starts with "TLS: " and contains `phrase`.
fn assert_tls_reason(error: &str, kind: &FailureKind, phrase: &str) {
    assert!(
        matches!(kind, FailureKind::Tls),
        "kind {kind:?}, expected Tls; reason {error:?}"
    );
    assert!(error.starts_with("TLS: "), "{error:?}");
    assert!(error.contains(phrase), "{error:?} lacks {phrase:?}");
}

/// SET then GET through the supervisor.
async fn set_get(sup: &Supervisor, key: &str) {
    let r = sup.handle();
    r.set(key, "v").await.expect("SET");
    let v: Option<String> = r.get(key).await.expect("GET");
    assert_eq!(v.as_deref(), Some("v"));
}

/// `/health/redis` as JSON, which must answer 200.
async fn health_redis(sup: &Supervisor) -> serde_json::Value {
    let (status, body) = serve_get(sup, "/health/redis").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Receives events for `window`, failing on any of them for which `bad` holds; returns them.
async fn events_during(
    events: &mut AvailabilityEvents,
    window: Duration,
    mut bad: impl FnMut(&Availability) -> bool,
) -> Vec<Availability> {
    let deadline = Instant::now() + window;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => return seen,
            Ok(Ok(e)) => {
                assert!(!bad(&e.state), "unexpected {:?} after {seen:?}", e);
                seen.push(e.state);
            }
            Ok(Err(EventsError::Lagged { missed })) => panic!("lagged by {missed}: a hot loop?"),
            Ok(Err(EventsError::Closed)) => panic!("event stream closed"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The right CA
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_ca_connects_and_serves() {
    let srv = tls_server(ServerCert::Localhost, false, &[]).await;
    let ca = srv.pki.ca();

    // rediss:// URL.
    let sup = Supervisor::start(tls_config(srv.url(), |b| b.tls_ca_file(&ca)))
        .await
        .unwrap();
    sup.wait_until_up(SOON).await.expect("up over TLS");
    set_get(&sup, "tls:url").await;
    assert_eq!(sup.restarts(), 0);
    let json = health_redis(&sup).await;
    assert_eq!(json["tls"], true, "{json}");
    assert_eq!(json["tls_verify"], true, "{json}");
    assert!(
        json["url"].as_str().unwrap().starts_with("rediss://"),
        "{json}"
    );
    // The server really saw a TLS client on its TLS port: it is not using the plain port.
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut admin(&srv.server).await)
        .await
        .unwrap();
    assert!(
        clients.lines().any(|l| l.contains("name=redis-supervisor")
            && l.contains(&format!("laddr=127.0.0.1:{}", srv.tls_port))),
        "no supervisor connection on the TLS port {}: {clients}",
        srv.tls_port
    );
    sup.shutdown().await;

    // redis:// URL + tls(true).
    let plain_url = format!("redis://localhost:{}", srv.tls_port);
    let sup = Supervisor::start(tls_config(plain_url, |b| b.tls(true).tls_ca_file(&ca)))
        .await
        .unwrap();
    sup.wait_until_up(SOON).await.expect("up with tls(true)");
    set_get(&sup, "tls:flag").await;
    sup.shutdown().await;

    // host + port + tls(true), no URL.
    let cfg = Config::builder()
        .host("localhost")
        .port(srv.tls_port)
        .tls(true)
        .tls_ca_file(&ca)
        .build()
        .unwrap();
    let sup = Supervisor::start(cfg).await.unwrap();
    sup.wait_until_up(SOON)
        .await
        .expect("up with host/port/tls");
    set_get(&sup, "tls:hostport").await;
    sup.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 2. A wrong CA
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_stays_down_with_backoff() {
    let srv = tls_server(ServerCert::Localhost, false, &[]).await;
    let cap = Duration::from_millis(300);
    let sup = Supervisor::start(tls_config(srv.url(), |b| {
        b.tls_ca_file(srv.pki.wrong_ca()).backoff_max(cap)
    }))
    .await
    .unwrap();
    let mut events = sup.subscribe();
    let (error, kind) = first_down(&sup, &mut events).await;
    assert_tls_reason(&error, &kind, "unknown issuer");

    // Commands fail as unavailable, with the same typed kind.
    let e = sup
        .handle()
        .with_timeout(Duration::from_millis(100))
        .get::<_, Option<String>>("k")
        .await
        .unwrap_err();
    match &e {
        Error::Unavailable { reason, kind, .. } => {
            assert!(matches!(kind, FailureKind::Tls), "{e:?}");
            assert!(reason.contains("unknown issuer"), "{e:?}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }

    // Retries go on, with backoff: over 1.5 s with a 300 ms cap (and 20 ms base) that is about 8
    // attempts; a hot loop would make hundreds. It never comes up.
    let restarts_before = sup.restarts();
    let seen = events_during(&mut events, Duration::from_millis(1500), |s| s.is_serving()).await;
    let attempts = seen
        .iter()
        .filter(|s| matches!(s, Availability::Connecting { .. }))
        .count();
    let restarts = sup.restarts() - restarts_before;
    assert!(
        (2..=15).contains(&attempts),
        "{attempts} attempts in 1.5 s: {seen:?}"
    );
    assert!((2..=15).contains(&restarts), "{restarts} restarts in 1.5 s");
    let longest = seen
        .iter()
        .filter_map(|s| match s {
            Availability::Down { retry_in, .. } => Some(*retry_in),
            _ => None,
        })
        .max()
        .unwrap();
    assert!(
        longest >= Duration::from_millis(200) && longest <= cap + cap / 4,
        "the delay grows to the cap (±jitter): longest {longest:?} in {seen:?}"
    );
    for s in &seen {
        if let Availability::Down { error, kind, .. } = s {
            assert_tls_reason(error, kind, "unknown issuer");
        }
    }
    sup.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 3. A certificate for another host name
// ---------------------------------------------------------------------------------------------

/// A server certificate the client must refuse, with `phrase` in the reason.
async fn refused_with(cert: ServerCert, phrase: &str) {
    let srv = tls_server(cert, false, &[]).await;
    let sup = Supervisor::start(tls_config(srv.url(), |b| b.tls_ca_file(srv.pki.ca())))
        .await
        .unwrap();
    let mut events = sup.subscribe();
    let (error, kind) = first_down(&sup, &mut events).await;
    assert_tls_reason(&error, &kind, phrase);
    assert!(sup.wait_until_up(Duration::from_millis(300)).await.is_err());
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_for_another_host_is_refused() {
    refused_with(ServerCert::OtherHost, "not valid for").await;
}

// ---------------------------------------------------------------------------------------------
// 4. An expired certificate
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificate_is_refused() {
    refused_with(ServerCert::Expired, "expired").await;
}

// ---------------------------------------------------------------------------------------------
// 5. Mutual TLS
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_required() {
    let srv = tls_server(ServerCert::Localhost, true, &[]).await;
    let pki = &srv.pki;

    let sup = Supervisor::start(tls_config(srv.url(), |b| {
        b.tls_ca_file(pki.ca())
            .tls_cert_file(pki.cert("client"))
            .tls_key_file(pki.key("client"))
    }))
    .await
    .unwrap();
    sup.wait_until_up(SOON)
        .await
        .expect("up with a client cert");
    set_get(&sup, "mtls").await;
    assert_eq!(sup.restarts(), 0);
    sup.shutdown().await;

    let sup = Supervisor::start(tls_config(srv.url(), |b| b.tls_ca_file(pki.ca())))
        .await
        .unwrap();
    let mut events = sup.subscribe();
    let (error, kind) = first_down(&sup, &mut events).await;
    assert_tls_reason(&error, &kind, "client certificate");
    assert!(
        error.contains("client certificate required")
            || error.contains("requires a client certificate"),
        "{error:?}"
    );
    assert!(sup.wait_until_up(Duration::from_millis(300)).await.is_err());
    sup.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 6. Skipping verification
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_skip_verify_connects_and_says_so() {
    let srv = tls_server(ServerCert::Localhost, false, &[]).await;
    let sup = Supervisor::start(tls_config(srv.url(), |b| {
        b.tls_ca_file(srv.pki.wrong_ca())
            .tls_insecure_skip_verify(true)
    }))
    .await
    .unwrap();
    sup.wait_until_up(SOON)
        .await
        .expect("up without verification");
    set_get(&sup, "insecure").await;
    let json = health_redis(&sup).await;
    assert_eq!(json["tls"], true, "{json}");
    assert_eq!(json["tls_verify"], false, "{json}");
    // And as the raw body says it, for anyone grepping.
    let (_, body) = serve_get(&sup, "/health/redis").await;
    assert!(body.contains("\"tls_verify\":false"), "{body}");
    sup.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 7. kill -9 and restart over TLS
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_restart_over_tls_recovers() {
    let mut srv = tls_server(ServerCert::Localhost, false, &[]).await;
    let sup = Supervisor::start(tls_config(srv.url(), |b| b.tls_ca_file(srv.pki.ca())))
        .await
        .unwrap();
    sup.wait_until_up(SOON).await.expect("up over TLS");
    set_get(&sup, "before").await;
    let mut events = sup.subscribe();

    srv.server.kill().await.unwrap();
    let seen = events_until(&mut events, |s| matches!(s, Availability::Down { .. })).await;
    match &seen.last().unwrap().state {
        Availability::Down { error, kind, .. } => assert!(
            !matches!(kind, FailureKind::Tls),
            "a killed server is a lost connection, not a TLS failure: {kind:?} {error}"
        ),
        other => panic!("{other:?}"),
    }

    srv.server.restart().await.unwrap();
    let seen = events_until(&mut events, |s| matches!(s, Availability::Up { .. })).await;
    assert!(
        seen.iter()
            .any(|e| matches!(e.state, Availability::Connecting { .. })),
        "{seen:?}"
    );
    assert!(sup.restarts() >= 1);
    // Persistence is off: the key is gone, and the new connection serves commands.
    let v: Option<String> = sup.handle().get("before").await.unwrap();
    assert_eq!(v, None);
    set_get(&sup, "after").await;
    sup.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 8. ACL users
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_with_limited_rights() {
    let srv = tls_server(ServerCert::Localhost, false, &[]).await;
    let mut admin = admin(&srv.server).await;
    acl_user(
        &mut admin,
        "limited",
        "limitedpw",
        &["+get", "+set", "+ping", "+info", "+client|setname"],
    )
    .await;

    let sup = Supervisor::start(tls_config(srv.url(), |b| {
        b.tls_ca_file(srv.pki.ca())
            .username("limited")
            .password("limitedpw")
    }))
    .await
    .unwrap();
    sup.wait_until_up(SOON).await.expect("limited user up");
    let mut events = sup.subscribe();
    set_get(&sup, "acl:k").await;

    let r = sup.handle();
    let e = r.del(["acl:k"]).await.unwrap_err();
    assert_eq!(e.server_code(), Some("NOPERM"), "{e:?}");
    assert!(matches!(e, Error::Server { .. }), "{e:?}");
    let e = r.cmd::<()>(redis::cmd("FLUSHALL")).await.unwrap_err();
    assert_eq!(e.server_code(), Some("NOPERM"), "{e:?}");

    // The connection stays: no restart, no transition, and the next command works.
    let v: Option<String> = r.get("acl:k").await.unwrap();
    assert_eq!(v.as_deref(), Some("v"), "DEL did not run");
    assert_eq!(sup.restarts(), 0);
    assert!(matches!(sup.availability(), Availability::Up { .. }));
    // (The subscription may still see the `Up` it was made in: the state is published before
    // the event.)
    events_during(&mut events, Duration::from_millis(300), |s| {
        !matches!(s, Availability::Up { .. })
    })
    .await;
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_without_ping_info_or_client_stays_up() {
    let srv = tls_server(ServerCert::Localhost, false, &[]).await;
    let mut admin = admin(&srv.server).await;
    acl_user(&mut admin, "minimal", "minimalpw", &["+get", "+set"]).await;

    let interval = Duration::from_millis(100);
    let sup = Supervisor::start(tls_config(srv.url(), |b| {
        b.tls_ca_file(srv.pki.ca())
            .username("minimal")
            .password("minimalpw")
            .health_interval(interval)
            .info_interval(interval)
            // One failed probe would be enough to replace the connection.
            .health_failures(1)
    }))
    .await
    .unwrap();
    sup.wait_until_up(SOON).await.expect("minimal user up");
    let mut events = sup.subscribe();
    let denied_before = denied(&mut admin).await;
    // Every probe is answered NOPERM: the server is alive, the connection stays Up (not Degraded).
    // (The subscription may still see the `Up` it was made in.)
    events_during(&mut events, interval * 6, |s| {
        !matches!(s, Availability::Up { .. })
    })
    .await;
    let denied_after = denied(&mut admin).await;
    assert!(
        denied_after > denied_before,
        "no denied command in 6 health intervals ({denied_before} → {denied_after}): did the probes run?"
    );
    assert!(
        matches!(sup.availability(), Availability::Up { .. }),
        "{:?}",
        sup.availability()
    );
    assert_eq!(sup.restarts(), 0);
    set_get(&sup, "minimal").await;
    sup.shutdown().await;
}

/// How many commands the server has denied so far (`ACL LOG` merges repeats into `count`).
async fn denied(admin: &mut redis::aio::MultiplexedConnection) -> i64 {
    let log: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("ACL")
        .arg("LOG")
        .arg(128)
        .query_async(admin)
        .await
        .unwrap();
    log.iter()
        .map(|e| match e.get("count") {
            Some(redis::Value::Int(n)) => *n,
            other => panic!("ACL LOG entry without a count: {other:?}"),
        })
        .sum()
}

// ---------------------------------------------------------------------------------------------
// 9. Password from a file; authentication failures
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_file_and_authentication_failure() {
    let srv = server_with(&["--requirepass", "file-pw-7"]).await;
    let file = srv.dir().join("password");
    std::fs::write(&file, "file-pw-7\n").unwrap();
    let sup = supervisor_with(&srv, |b| b.password_file(&file)).await;
    set_get(&sup, "pwfile").await;
    sup.shutdown().await;

    // A wrong password is its own kind of failure.
    let wrong = srv.dir().join("wrong");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let sup = Supervisor::start(config(&srv, |b| b.password_file(&wrong)))
        .await
        .unwrap();
    let mut events = sup.subscribe();
    let (error, kind) = first_down(&sup, &mut events).await;
    assert!(
        matches!(kind, FailureKind::Authentication),
        "{kind:?}: {error}"
    );
    assert!(error.contains("authentication failed"), "{error}");
    sup.shutdown().await;

    // An unreadable file is refused when the config is built, naming the path.
    let e = Config::builder()
        .url(srv.url())
        .password_file("/nonexistent/redis-password")
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/redis-password"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// 10. The binary, configured by environment variables
// ---------------------------------------------------------------------------------------------

/// The service binary (see [`process::binary`]) at RUST_LOG=info, retries capped at 300 ms.
fn binary() -> Command {
    process::binary("info", &[("REDIS_BACKOFF_MAX_MS", "300")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_over_mutual_tls_from_env() {
    let srv = tls_server(ServerCert::Localhost, true, &[]).await;
    let pki = &srv.pki;

    let addr = listen_addr();
    let mut child = binary()
        .env("REDIS_URL", srv.url())
        .env("REDIS_TLS_CA_FILE", pki.ca())
        .env("REDIS_TLS_CERT_FILE", pki.cert("client"))
        .env("REDIS_TLS_KEY_FILE", pki.key("client"))
        .env("LISTEN_ADDR", addr.to_string())
        .spawn()
        .unwrap();
    let body = wait_status(addr, "/health", 200, "\"state\":\"up\"", &mut child).await;
    assert!(body.contains("\"state\":\"up\""), "{body}");
    sigterm(&child);
    let (code, output) = exit_output(child).await;
    assert_eq!(code, Some(0), "{output}");

    // REDIS_TLS=true with a redis:// URL.
    let addr = listen_addr();
    let mut child = binary()
        .env("REDIS_URL", format!("redis://localhost:{}", srv.tls_port))
        .env("REDIS_TLS", "true")
        .env("REDIS_TLS_CA_FILE", pki.ca())
        .env("REDIS_TLS_CERT_FILE", pki.cert("client"))
        .env("REDIS_TLS_KEY_FILE", pki.key("client"))
        .env("LISTEN_ADDR", addr.to_string())
        .spawn()
        .unwrap();
    wait_status(addr, "/health", 200, "", &mut child).await;
    sigterm(&child);
    let (code, output) = exit_output(child).await;
    assert_eq!(code, Some(0), "{output}");

    // Without a client certificate: up and running, 503, with the reason.
    let addr = listen_addr();
    let mut child = binary()
        .env("REDIS_URL", srv.url())
        .env("REDIS_TLS_CA_FILE", pki.ca())
        .env("LISTEN_ADDR", addr.to_string())
        .spawn()
        .unwrap();
    wait_status(
        addr,
        "/health",
        503,
        "requires a client certificate",
        &mut child,
    )
    .await;
    sigterm(&child);
    let (code, output) = exit_output(child).await;
    assert_eq!(code, Some(0), "{output}");

    // Skipping verification (with the wrong CA): up, and a warning at start.
    let addr = listen_addr();
    let mut child = binary()
        .env("REDIS_URL", srv.url())
        .env("REDIS_TLS_CA_FILE", pki.wrong_ca())
        .env("REDIS_TLS_CERT_FILE", pki.cert("client"))
        .env("REDIS_TLS_KEY_FILE", pki.key("client"))
        .env("REDIS_TLS_INSECURE_SKIP_VERIFY", "true")
        .env("LISTEN_ADDR", addr.to_string())
        .spawn()
        .unwrap();
    wait_status(addr, "/health", 200, "", &mut child).await;
    wait_status(
        addr,
        "/health/redis",
        200,
        "\"tls_verify\":false",
        &mut child,
    )
    .await;
    sigterm(&child);
    let (code, output) = exit_output(child).await;
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output
            .lines()
            .any(|l| l.contains("WARN") && l.to_lowercase().contains("verif")),
        "no warning about skipped verification: {output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_bad_tls_files_exit_2_naming_the_variable() {
    let srv = server().await;
    let pki = Pki::generate(srv.dir(), Leaf::ALL);
    let url = format!("rediss://localhost:{}", srv.port());
    let exists = srv.dir().join("exists.pem");
    std::fs::write(&exists, "not a certificate\n").unwrap();
    let exists = exists.display().to_string();
    for (var, value) in [
        ("REDIS_TLS_CA_FILE", "/nonexistent/ca.pem"),
        ("REDIS_TLS_CERT_FILE", "/nonexistent/client.pem"),
        ("REDIS_TLS_KEY_FILE", "/nonexistent/client.key"),
        ("REDIS_PASSWORD_FILE", "/nonexistent/password"),
        ("REDIS_TLS_CA_FILE", exists.as_str()),
    ] {
        let mut cmd = binary();
        cmd.env("REDIS_URL", &url)
            .env("LISTEN_ADDR", listen_addr().to_string())
            .env(var, value);
        // A client certificate needs its key and the other way round: give the (good) other half.
        if var == "REDIS_TLS_CERT_FILE" {
            cmd.env("REDIS_TLS_KEY_FILE", pki.key("client"));
        }
        if var == "REDIS_TLS_KEY_FILE" {
            cmd.env("REDIS_TLS_CERT_FILE", pki.cert("client"));
        }
        let child = cmd.spawn().unwrap();
        let (code, output) = exit_output(child).await;
        assert_eq!(code, Some(2), "{var}={value}: {output}");
        assert!(output.contains(var), "{var}={value}: {output}");
        assert!(output.contains(value), "{var}={value}: {output}");
    }
}

/// Creates (or resets) ACL user `name` with password `password`, all keys, and `rights`.
async fn acl_user(
    admin: &mut redis::aio::MultiplexedConnection,
    name: &str,
    password: &str,
    rights: &[&str],
) {
    let mut cmd = redis::cmd("ACL");
    cmd.arg("SETUSER")
        .arg(name)
        .arg("on")
        .arg(format!(">{password}"))
        .arg("~*")
        .arg(rights);
    let _: () = cmd.query_async(admin).await.unwrap();
}
