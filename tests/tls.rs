//! TLS, mutual TLS, ACL users and password files against real `redis-server` processes started with
//! TLS by the fixture (DESIGN.md promises 8 and 9, issue 5).
//!
//! Every certificate is made at test time with rcgen into the fixture's temporary directory: a CA, a
//! server certificate for `localhost` + 127.0.0.1 signed by it, one for `other.example` only, an
//! expired one, a client certificate signed by the CA, and a second, unrelated CA. The fixture keeps
//! its plain port (readiness, admin connections); the supervisors connect to the TLS port.

#[path = "support/helpers.rs"]
mod helpers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use helpers::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use redis_supervisor::testing::RedisServer;
use redis_supervisor::{
    Availability, AvailabilityEvents, Config, ConfigBuilder, Error, EventsError, FailureKind,
    Supervisor,
};
use tokio::process::{Child, Command};
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// The certificate files of one test, all in the fixture's directory.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// The CA that signed every server and client certificate.
    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    /// A CA that signed nothing the server uses.
    fn wrong_ca(&self) -> PathBuf {
        self.dir.join("wrong-ca.pem")
    }
    /// `NAME.pem` / `NAME.key` for `localhost`, `other`, `expired`, `client`.
    fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }
    fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }

    /// Makes every certificate into `dir`.
    fn generate(dir: &Path) -> Pki {
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        let (ca, ca_pem) = make_ca("redis-supervisor test CA");
        std::fs::write(pki.ca(), ca_pem).unwrap();
        // Another subject name, so that a verifier cannot even find a candidate issuer.
        let (_, wrong_pem) = make_ca("unrelated test CA");
        std::fs::write(pki.wrong_ca(), wrong_pem).unwrap();

        let valid = (
            rcgen::date_time_ymd(2000, 1, 1),
            rcgen::date_time_ymd(4000, 1, 1),
        );
        let leaves: [(&str, &[&str], ExtendedKeyUsagePurpose, _); 4] = [
            (
                "localhost",
                &["localhost", "127.0.0.1"],
                ExtendedKeyUsagePurpose::ServerAuth,
                valid,
            ),
            (
                "other",
                &["other.example"],
                ExtendedKeyUsagePurpose::ServerAuth,
                valid,
            ),
            (
                "expired",
                &["localhost", "127.0.0.1"],
                ExtendedKeyUsagePurpose::ServerAuth,
                (
                    rcgen::date_time_ymd(2020, 1, 1),
                    rcgen::date_time_ymd(2021, 1, 1),
                ),
            ),
            (
                "client",
                &["redis-supervisor-client"],
                ExtendedKeyUsagePurpose::ClientAuth,
                valid,
            ),
        ];
        for (name, sans, eku, (not_before, not_after)) in leaves {
            let key = KeyPair::generate().unwrap();
            let mut params =
                CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                    .unwrap();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params.distinguished_name.push(DnType::CommonName, sans[0]);
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![eku];
            params.not_before = not_before;
            params.not_after = not_after;
            let cert = params.signed_by(&key, &ca).unwrap();
            std::fs::write(pki.cert(name), cert.pem()).unwrap();
            std::fs::write(pki.key(name), key.serialize_pem()).unwrap();
        }
        pki
    }
}

/// A self-signed CA: the issuer to sign with, and its certificate as PEM.
fn make_ca(common_name: &str) -> (Issuer<'static, KeyPair>, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let pem = params.self_signed(&key).unwrap().pem();
    (Issuer::new(params, key), pem)
}

// ---------------------------------------------------------------------------------------------
// A redis-server with a TLS port
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

struct TlsRedis {
    server: RedisServer,
    tls_port: u16,
    pki: Pki,
}

impl TlsRedis {
    /// `rediss://localhost:TLS_PORT`.
    fn url(&self) -> String {
        format!("rediss://localhost:{}", self.tls_port)
    }
}

/// A fixture server with a TLS port as well as its plain one: started plain, the certificates made in
/// its directory, then restarted with the TLS arguments (`extra` appended).
async fn tls_server(cert: ServerCert, auth_clients: bool, extra: &[&str]) -> TlsRedis {
    let mut server = server().await;
    let pki = Pki::generate(server.dir());
    let name = match cert {
        ServerCert::Localhost => "localhost",
        ServerCert::OtherHost => "other",
        ServerCert::Expired => "expired",
    };
    let (cert_file, key_file, ca_file) = (
        pki.cert(name).display().to_string(),
        pki.key(name).display().to_string(),
        pki.ca().display().to_string(),
    );
    let mut last_error = None;
    // The TLS port is picked here; if somebody takes it in between, try another.
    for _ in 0..3 {
        let tls_port = free_port();
        let port = tls_port.to_string();
        let mut args = vec![
            "--tls-port",
            &port,
            "--tls-cert-file",
            &cert_file,
            "--tls-key-file",
            &key_file,
            "--tls-ca-cert-file",
            &ca_file,
            "--tls-auth-clients",
            if auth_clients { "yes" } else { "no" },
        ];
        args.extend_from_slice(extra);
        match server.restart_with_args(&args).await {
            Ok(()) => {
                return TlsRedis {
                    server,
                    tls_port,
                    pki,
                };
            }
            Err(e) => last_error = Some(e),
        }
    }
    panic!("redis-server with TLS did not start: {last_error:?}");
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

/// Serves `http::router(sup)` on a loopback port.
async fn serve(sup: &Supervisor) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = redis_supervisor::http::router(sup);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

async fn health_redis(sup: &Supervisor) -> serde_json::Value {
    let (addr, task) = serve(sup).await;
    let (status, body) = http_get(addr, "/health/redis").await.unwrap();
    task.abort();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_for_another_host_is_refused() {
    let srv = tls_server(ServerCert::OtherHost, false, &[]).await;
    let sup = Supervisor::start(tls_config(srv.url(), |b| b.tls_ca_file(srv.pki.ca())))
        .await
        .unwrap();
    let mut events = sup.subscribe();
    let (error, kind) = first_down(&sup, &mut events).await;
    assert_tls_reason(&error, &kind, "not valid for");
    assert!(sup.wait_until_up(Duration::from_millis(300)).await.is_err());
    sup.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 4. An expired certificate
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificate_is_refused() {
    let srv = tls_server(ServerCert::Expired, false, &[]).await;
    let sup = Supervisor::start(tls_config(srv.url(), |b| b.tls_ca_file(srv.pki.ca())))
        .await
        .unwrap();
    let mut events = sup.subscribe();
    let (error, kind) = first_down(&sup, &mut events).await;
    assert_tls_reason(&error, &kind, "expired");
    assert!(sup.wait_until_up(Duration::from_millis(300)).await.is_err());
    sup.shutdown().await;
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
    let (addr, task) = serve(&sup).await;
    let (_, body) = http_get(addr, "/health/redis").await.unwrap();
    task.abort();
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
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "limited",
            "on",
            ">limitedpw",
            "~*",
            "+get",
            "+set",
            "+ping",
            "+info",
            "+client|setname",
        ])
        .query_async(&mut admin)
        .await
        .unwrap();

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
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "minimal",
            "on",
            ">minimalpw",
            "~*",
            "+get",
            "+set",
        ])
        .query_async(&mut admin)
        .await
        .unwrap();

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

fn binary() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_redis-supervisor"));
    c.env_clear()
        .env("RUST_LOG", "info")
        .env("REDIS_BACKOFF_MAX_MS", "300")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// Polls `path` until it answers with `want` and a body containing `marker` (or panics after
/// `SOON`).
async fn wait_status(
    addr: SocketAddr,
    path: &str,
    want: u16,
    marker: &str,
    child: &mut Child,
) -> String {
    let deadline = Instant::now() + SOON;
    let mut last = None;
    loop {
        match http_get(addr, path).await {
            Ok((status, body)) if status == want && body.contains(marker) => return body,
            Ok(other) => last = Some(other),
            Err(_) => {}
        }
        assert!(child.try_wait().unwrap().is_none(), "binary exited early");
        assert!(
            Instant::now() < deadline,
            "{path} never answered {want} with {marker:?}; last {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sigterm(child: &Child) {
    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

async fn exit_output(child: Child) -> (Option<i32>, String) {
    let out = tokio::time::timeout(SOON, child.wait_with_output())
        .await
        .expect("exits")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn listen() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_over_mutual_tls_from_env() {
    let srv = tls_server(ServerCert::Localhost, true, &[]).await;
    let pki = &srv.pki;

    let addr = listen();
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
    let addr = listen();
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
    let addr = listen();
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
    let addr = listen();
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
    let pki = Pki::generate(srv.dir());
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
            .env("LISTEN_ADDR", listen().to_string())
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
