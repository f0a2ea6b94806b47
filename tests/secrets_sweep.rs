//! The redaction sweep of issue 5 (DESIGN.md promise 8): with a distinctive password (and
//! username), drive connect failures, authentication failures, TLS failures and a normal session
//! over TLS with an ACL user; capture all tracing output, every error's Display and Debug, the
//! config's Debug and Display, every availability event, `/health`, `/health/redis` and
//! `/metrics`, and the service binary's whole output: the password appears nowhere, in plain or
//! percent-encoded form.

#[path = "support/helpers.rs"]
mod helpers;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use helpers::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use redis_supervisor::metrics::prometheus_builder;
use redis_supervisor::testing::RedisServer;
use redis_supervisor::{
    Availability, AvailabilityEvents, Config, ConfigBuilder, FailureKind, Supervisor,
};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The ACL user's password: must never be shown.
const PASSWORD: &str = "Sw33p-distinctive-Pa55word";
/// A wrong password that is just as secret.
const WRONG: &str = "Wr0ng-sweep-distinctive-Pa55";
/// The ACL user (may be shown).
const USER: &str = "sweepuser";
/// A password with URL-special characters, and its percent-encoded form.
const SPECIAL: &str = "p@ss:w/rd#1?";
const SPECIAL_ENCODED: &str = "p%40ss%3Aw%2Frd%231%3F";
const SPECIAL_USER: &str = "specialuser";

/// Every form a secret could leak in.
const FORBIDDEN: [&str; 7] = [
    PASSWORD,
    WRONG,
    SPECIAL,
    SPECIAL_ENCODED,
    // Partial forms of the special password: decoded up to the first special character, or
    // encoded in lower case.
    "p@ss:w",
    "p%40ss",
    "Pa55word",
];

fn assert_clean(what: &str, text: &str) {
    for secret in FORBIDDEN {
        assert!(
            !text.contains(secret),
            "{secret:?} leaked in {what}:\n{text}"
        );
    }
    assert!(
        !text
            .to_lowercase()
            .contains(&SPECIAL_ENCODED.to_lowercase()),
        "encoded special password leaked in {what}:\n{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Captured tracing output
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates (the same shapes as tests/tls.rs: a CA, a server cert for localhost, a wrong CA)
// ---------------------------------------------------------------------------------------------

struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    fn wrong_ca(&self) -> PathBuf {
        self.dir.join("wrong-ca.pem")
    }
    fn cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    fn generate(dir: &Path) -> Pki {
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        let (ca, ca_pem) = make_ca("sweep test CA");
        std::fs::write(pki.ca(), ca_pem).unwrap();
        let (_, wrong_pem) = make_ca("unrelated sweep CA");
        std::fs::write(pki.wrong_ca(), wrong_pem).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(pki.cert(), cert.pem()).unwrap();
        std::fs::write(pki.key(), key.serialize_pem()).unwrap();
        pki
    }
}

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

/// A fixture server with a TLS port (no client certificates required), and two ACL users:
/// `sweepuser` (everything but FLUSHALL) and `specialuser` (the URL-special password).
struct SweepServer {
    server: RedisServer,
    tls_port: u16,
    pki: Pki,
}

async fn sweep_server() -> SweepServer {
    let mut server = server().await;
    let pki = Pki::generate(server.dir());
    let (cert, key, ca) = (
        pki.cert().display().to_string(),
        pki.key().display().to_string(),
        pki.ca().display().to_string(),
    );
    let mut started = None;
    for _ in 0..3 {
        let tls_port = free_port();
        let port = tls_port.to_string();
        let args = [
            "--tls-port",
            &port,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
        ];
        match server.restart_with_args(args).await {
            Ok(()) => {
                started = Some(tls_port);
                break;
            }
            Err(e) => eprintln!("TLS port {tls_port}: {e}"),
        }
    }
    let tls_port = started.expect("redis-server with TLS did not start");
    let mut admin = admin(&server).await;
    for (user, pw, rules) in [
        (USER, PASSWORD, &["~*", "+@all", "-flushall"][..]),
        (SPECIAL_USER, SPECIAL, &["~*", "+@all"][..]),
    ] {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER")
            .arg(user)
            .arg("on")
            .arg(format!(">{pw}"))
            .arg(rules);
        let _: () = cmd.query_async(&mut admin).await.unwrap();
    }
    SweepServer {
        server,
        tls_port,
        pki,
    }
}

// ---------------------------------------------------------------------------------------------
// One scenario: a supervisor driven until `until`, everything it shows collected
// ---------------------------------------------------------------------------------------------

struct Sweep {
    seen: Vec<(String, String)>,
    recorder_handle: metrics_exporter_prometheus::PrometheusHandle,
    recorder: Arc<metrics_exporter_prometheus::PrometheusRecorder>,
}

impl Sweep {
    fn push(&mut self, what: impl Into<String>, text: impl Into<String>) {
        self.seen.push((what.into(), text.into()));
    }

    fn config(&mut self, what: &str, b: ConfigBuilder) -> Config {
        let cfg = b
            .name(what)
            .backoff_base(Duration::from_millis(20))
            .backoff_max(Duration::from_millis(200))
            .command_timeout(Duration::from_millis(300))
            .health_interval(Duration::from_millis(100))
            .build()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        self.push(
            format!("{what}: config"),
            format!("{cfg:?}\n{cfg:#?}\n{cfg}"),
        );
        cfg
    }

    /// Runs a supervisor for `cfg` until its state satisfies `until`, then exercises commands,
    /// the HTTP routes and shutdown, collecting everything shown.
    async fn scenario(
        &mut self,
        what: &str,
        cfg: Config,
        until: impl Fn(&Availability) -> bool,
        session: impl AsyncFnOnce(&Supervisor, &mut Vec<String>),
    ) -> Availability {
        let sup = Supervisor::start_with_recorder(cfg, self.recorder.clone())
            .await
            .unwrap();
        let mut events = sup.subscribe();
        self.push(format!("{what}: supervisor"), format!("{sup:?}"));
        if !until(&sup.availability()) {
            let seen = events_until(&mut events, &until).await;
            self.push_events(what, &seen);
        }
        let state = sup.availability();
        self.push(
            format!("{what}: state"),
            format!(
                "{state:?} {state} {}",
                serde_json::to_string(&state).unwrap()
            ),
        );

        let mut texts = Vec::new();
        let r = sup.handle().with_timeout(Duration::from_millis(300));
        match r.get::<_, Option<String>>("sweep:k").await {
            Ok(v) => texts.push(format!("{v:?}")),
            Err(e) => texts.push(format!("{e} {e:?}")),
        }
        match sup.wait_until_up(Duration::from_millis(50)).await {
            Ok(()) => {}
            Err(e) => texts.push(format!("{e} {e:?}")),
        }
        texts.push(format!("{sup:?} {:?} {:?}", sup.handle(), sup.config()));
        session(&sup, &mut texts).await;
        for (i, t) in texts.into_iter().enumerate() {
            self.push(format!("{what}: item {i}"), t);
        }

        let (addr, task) = serve(&sup, self.recorder_handle.clone()).await;
        for path in [
            "/health",
            "/health/live",
            "/health/ready",
            "/health/redis",
            "/metrics",
        ] {
            let (status, body) = http_get(addr, path).await.unwrap();
            self.push(format!("{what}: {path} ({status})"), body);
        }
        task.abort();

        sup.shutdown().await;
        // Everything the stream still holds, to its end.
        let rest = drain(&mut events).await;
        self.push_events(what, &rest);
        state
    }

    fn push_events(&mut self, what: &str, events: &[redis_supervisor::AvailabilityEvent]) {
        for e in events {
            self.push(
                format!("{what}: event {}", e.seq),
                format!(
                    "{e:?} {} {} {}",
                    e.state,
                    e.reason,
                    serde_json::to_string(e).unwrap()
                ),
            );
        }
    }
}

/// Every event left in the stream, up to `Stopped` (after `shutdown`).
async fn drain(events: &mut AvailabilityEvents) -> Vec<redis_supervisor::AvailabilityEvent> {
    let mut out = Vec::new();
    while let Ok(Ok(e)) = tokio::time::timeout(SOON, events.recv()).await {
        let stopped = matches!(e.state, Availability::Stopped);
        out.push(e);
        if stopped {
            return out;
        }
    }
    panic!("no Stopped event after shutdown: {out:?}");
}

async fn serve(
    sup: &Supervisor,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app =
        redis_supervisor::http::router(sup).merge(redis_supervisor::http::metrics_router(metrics));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

fn is_down(s: &Availability) -> bool {
    matches!(s, Availability::Down { .. })
}

fn down_kind(s: &Availability) -> (String, FailureKind) {
    match s {
        Availability::Down { error, kind, .. } => (error.clone(), *kind),
        other => panic!("expected Down, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The library
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_never_shows_the_password() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .unwrap();

    let srv = sweep_server().await;
    let pki = &srv.pki;
    let recorder = prometheus_builder().build_recorder();
    let mut sweep = Sweep {
        seen: Vec::new(),
        recorder_handle: recorder.handle(),
        recorder: Arc::new(recorder),
    };
    let tls_url = |user: &str, pw: &str| format!("rediss://{user}:{pw}@localhost:{}", srv.tls_port);

    // 1. Nothing listening, password in the URL and in the builder.
    let dead = free_port();
    let cfg = sweep.config(
        "refused_url",
        Config::builder().url(format!("redis://{USER}:{PASSWORD}@127.0.0.1:{dead}/0")),
    );
    let state = sweep
        .scenario("refused_url", cfg, is_down, async |_, _| {})
        .await;
    let (error, kind) = down_kind(&state);
    assert!(matches!(kind, FailureKind::Refused), "{kind:?} {error}");
    let cfg = sweep.config(
        "refused_builder",
        Config::builder()
            .host("127.0.0.1")
            .port(dead)
            .username(USER)
            .password(PASSWORD),
    );
    sweep
        .scenario("refused_builder", cfg, is_down, async |_, _| {})
        .await;

    // 2. Wrong password (plain and over TLS): an authentication failure.
    let cfg = sweep.config(
        "auth_plain",
        Config::builder().url(format!(
            "redis://{USER}:{WRONG}@127.0.0.1:{}",
            srv.server.port()
        )),
    );
    let state = sweep
        .scenario("auth_plain", cfg, is_down, async |_, _| {})
        .await;
    let (error, kind) = down_kind(&state);
    assert!(
        matches!(kind, FailureKind::Authentication),
        "{kind:?} {error}"
    );
    assert!(error.contains("authentication failed"), "{error}");
    let cfg = sweep.config(
        "auth_tls",
        Config::builder()
            .url(tls_url(USER, WRONG))
            .tls_ca_file(pki.ca()),
    );
    let state = sweep
        .scenario("auth_tls", cfg, is_down, async |_, _| {})
        .await;
    let (error, kind) = down_kind(&state);
    assert!(
        matches!(kind, FailureKind::Authentication),
        "{kind:?} {error}"
    );

    // 3. TLS failure (wrong CA) with the right password configured.
    let cfg = sweep.config(
        "tls_wrong_ca",
        Config::builder()
            .url(tls_url(USER, PASSWORD))
            .tls_ca_file(pki.wrong_ca()),
    );
    let state = sweep
        .scenario("tls_wrong_ca", cfg, is_down, async |_, _| {})
        .await;
    let (error, kind) = down_kind(&state);
    assert!(matches!(kind, FailureKind::Tls), "{kind:?} {error}");

    // 4. A normal session over TLS as the ACL user, password from a file: commands, a server
    //    error, a forbidden command.
    let pw_file = srv.server.dir().join("sweep-password");
    std::fs::write(&pw_file, format!("{PASSWORD}\n")).unwrap();
    let cfg = sweep.config(
        "session",
        Config::builder()
            .url(format!("rediss://{USER}@localhost:{}", srv.tls_port))
            .password_file(&pw_file)
            .tls_ca_file(pki.ca()),
    );
    let state = sweep
        .scenario(
            "session",
            cfg,
            |s| s.is_serving(),
            async |sup, texts| {
                let r = sup.handle();
                r.set("sweep:n", "1").await.unwrap();
                let _: i64 = r.incr("sweep:n").await.unwrap();
                let e = r.incr_by("sweep:n", i64::MAX).await.unwrap_err();
                texts.push(format!("{e} {e:?}"));
                let e = r.cmd::<()>(redis::cmd("FLUSHALL")).await.unwrap_err();
                assert_eq!(e.server_code(), Some("NOPERM"), "{e:?}");
                texts.push(format!("{e} {e:?}"));
                let e = r
                    .cmd::<()>(redis::cmd("AUTH").arg(USER).arg(WRONG).clone())
                    .await
                    .unwrap_err();
                texts.push(format!("{e} {e:?}"));
                let e = r.get::<_, i64>("sweep:none-such-int-key").await;
                texts.push(format!("{e:?}"));
                let e = r.with_timeout(Duration::from_millis(1)).ping().await;
                texts.push(format!("{e:?}"));
                // The health routes say who is connected, with the password redacted.
                let (addr, task) = serve(sup, prometheus_builder().build_recorder().handle()).await;
                let (status, body) = http_get(addr, "/health").await.unwrap();
                task.abort();
                assert_eq!(status, 200, "{body}");
                assert!(body.contains("rediss://"), "{body}");
                assert!(body.contains(&format!("{USER}:***@")), "{body}");
                texts.push(body);
            },
        )
        .await;
    assert!(state.is_serving(), "{state:?}");

    // 5. A password with URL-special characters, percent-encoded in the URL: it must work (so it
    //    was decoded), and appear in neither form.
    let cfg = sweep.config(
        "special_session",
        Config::builder()
            .url(tls_url(SPECIAL_USER, SPECIAL_ENCODED))
            .tls_ca_file(pki.ca()),
    );
    sweep
        .scenario("special_session", cfg, |s| s.is_serving(), async |_, _| {})
        .await;
    let cfg = sweep.config(
        "special_wrong_ca",
        Config::builder()
            .url(tls_url(SPECIAL_USER, SPECIAL_ENCODED))
            .tls_ca_file(pki.wrong_ca()),
    );
    sweep
        .scenario("special_wrong_ca", cfg, is_down, async |_, _| {})
        .await;
    let cfg = sweep.config(
        "special_refused",
        Config::builder().url(format!(
            "redis://{SPECIAL_USER}:{SPECIAL_ENCODED}@127.0.0.1:{dead}"
        )),
    );
    sweep
        .scenario("special_refused", cfg, is_down, async |_, _| {})
        .await;
    let cfg = sweep.config(
        "special_builder_auth",
        Config::builder()
            .url(srv.server.url())
            .username(SPECIAL_USER)
            .password(format!("{SPECIAL}x")),
    );
    sweep
        .scenario("special_builder_auth", cfg, is_down, async |_, _| {})
        .await;

    // 6. Configuration errors around secrets.
    for (what, b) in [
        (
            "bad_port",
            Config::builder().url(format!("rediss://{USER}:{PASSWORD}@localhost:99999")),
        ),
        (
            "bad_db",
            Config::builder().url(format!("redis://{USER}:{SPECIAL_ENCODED}@h:1/db")),
        ),
        (
            "no_host",
            Config::builder().url(format!("redis://{USER}:{SPECIAL_ENCODED}@:1")),
        ),
        (
            "missing_ca",
            Config::builder()
                .url(tls_url(USER, PASSWORD))
                .tls_ca_file("/nonexistent/ca.pem"),
        ),
        (
            "missing_password_file",
            Config::builder()
                .url(tls_url(USER, PASSWORD))
                .password_file("/nonexistent/password"),
        ),
        (
            "ca_is_the_password_file",
            Config::builder()
                .url(format!("rediss://{USER}@localhost:{}", srv.tls_port))
                .password_file(&pw_file)
                .tls_ca_file(&pw_file),
        ),
        (
            "key_is_the_password_file",
            Config::builder()
                .url(format!("rediss://{USER}@localhost:{}", srv.tls_port))
                .password(PASSWORD)
                .tls_ca_file(pki.ca())
                .tls_cert_file(pki.cert())
                .tls_key_file(&pw_file),
        ),
    ] {
        match b.build() {
            Err(e) => sweep.push(format!("config error {what}"), format!("{e} {e:?} {e:#?}")),
            Ok(cfg) => {
                // Some of these may only fail when connecting: drive them too.
                sweep.push(format!("config {what}"), format!("{cfg:?} {cfg}"));
                sweep.scenario(what, cfg, is_down, async |_, _| {}).await;
            }
        }
    }

    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    assert!(logs.contains("redis"), "the capture saw the logs: {logs}");
    assert!(
        logs.contains("client=session") && logs.contains("client=tls_wrong_ca"),
        "the capture saw every scenario: {logs}"
    );
    let metrics = sweep.recorder_handle.render();
    assert!(metrics.contains("redis_client_"), "{metrics}");
    sweep.push("metrics render", metrics);
    sweep.push("tracing output", logs);
    let total: usize = sweep.seen.iter().map(|(_, t)| t.len()).sum();
    eprintln!("swept {} items, {total} bytes", sweep.seen.len());
    // SWEEP_DUMP=1 prints everything swept except the logs (with --nocapture), to see what was
    // checked.
    if std::env::var_os("SWEEP_DUMP").is_some() {
        for (what, text) in &sweep.seen {
            if !what.starts_with("tracing") {
                eprintln!("=== {what}\n{text}");
            }
        }
    }
    for (what, text) in &sweep.seen {
        assert_clean(what, text);
    }
}

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

fn binary() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_redis-supervisor"));
    c.env_clear()
        .env("RUST_LOG", "trace")
        .env("REDIS_BACKOFF_MAX_MS", "200")
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

/// Runs the binary with `env` until `/health` answers `want` with `marker` in its body, collects every route, stops it with
/// SIGTERM and returns everything it showed.
async fn run_binary(what: &str, env: &[(&str, String)], want: u16, marker: &str) -> String {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = binary();
    cmd.env("LISTEN_ADDR", addr.to_string());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut shown = String::new();
    let body = wait_status(addr, "/health", want, marker, &mut child).await;
    shown.push_str(&body);
    for path in ["/health/redis", "/health/ready", "/metrics"] {
        let (_, body) = http_get(addr, path).await.unwrap();
        shown.push_str(&body);
    }
    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let (code, output) = exit_output(child).await;
    assert_eq!(code, Some(0), "{what}: {output}");
    assert!(output.contains("redis"), "{what}: the output was captured");
    shown.push_str(&output);
    shown
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_never_shows_the_password() {
    let srv = sweep_server().await;
    let pki = &srv.pki;
    let pw_file = srv.server.dir().join("bin-password");
    std::fs::write(&pw_file, format!("{PASSWORD}\n")).unwrap();
    let tls = format!("rediss://localhost:{}", srv.tls_port);
    let ca = pki.ca().display().to_string();
    let mut shown = Vec::new();

    // A normal session: REDIS_USERNAME + REDIS_PASSWORD, and the password from a file.
    let out = run_binary(
        "session_env",
        &[
            ("REDIS_URL", tls.clone()),
            ("REDIS_TLS_CA_FILE", ca.clone()),
            ("REDIS_USERNAME", USER.into()),
            ("REDIS_PASSWORD", PASSWORD.into()),
        ],
        200,
        "\"state\":\"up\"",
    )
    .await;
    assert!(out.contains(&format!("{USER}:***@")), "{out}");
    shown.push(("session_env", out));
    let out = run_binary(
        "session_file",
        &[
            ("REDIS_URL", tls.clone()),
            ("REDIS_TLS_CA_FILE", ca.clone()),
            ("REDIS_USERNAME", USER.into()),
            ("REDIS_PASSWORD_FILE", pw_file.display().to_string()),
        ],
        200,
        "\"state\":\"up\"",
    )
    .await;
    shown.push(("session_file", out));
    // The URL-special password, percent-encoded in REDIS_URL.
    let out = run_binary(
        "special_url",
        &[
            (
                "REDIS_URL",
                format!(
                    "rediss://{SPECIAL_USER}:{SPECIAL_ENCODED}@localhost:{}",
                    srv.tls_port
                ),
            ),
            ("REDIS_TLS_CA_FILE", ca.clone()),
        ],
        200,
        "\"state\":\"up\"",
    )
    .await;
    shown.push(("special_url", out));

    // Failures: wrong password, wrong CA, nothing listening.
    let out = run_binary(
        "auth",
        &[
            ("REDIS_URL", tls.clone()),
            ("REDIS_TLS_CA_FILE", ca.clone()),
            ("REDIS_USERNAME", USER.into()),
            ("REDIS_PASSWORD", WRONG.into()),
        ],
        503,
        "authentication failed",
    )
    .await;
    assert!(out.contains("authentication failed"), "{out}");
    shown.push(("auth", out));
    let out = run_binary(
        "wrong_ca",
        &[
            ("REDIS_URL", tls.clone()),
            ("REDIS_TLS_CA_FILE", pki.wrong_ca().display().to_string()),
            ("REDIS_USERNAME", USER.into()),
            ("REDIS_PASSWORD_FILE", pw_file.display().to_string()),
        ],
        503,
        "unknown issuer",
    )
    .await;
    assert!(out.contains("unknown issuer"), "{out}");
    shown.push(("wrong_ca", out));
    let out = run_binary(
        "refused",
        &[(
            "REDIS_URL",
            format!("redis://{USER}:{PASSWORD}@127.0.0.1:{}", free_port()),
        )],
        503,
        "\"state\":\"down\"",
    )
    .await;
    shown.push(("refused", out));

    // Bad configuration holding secrets: exits 2 without showing them.
    for (var, value, extra) in [
        (
            "REDIS_URL",
            format!("rediss://{USER}:{PASSWORD}@localhost:99999"),
            None,
        ),
        (
            "REDIS_URL",
            format!("redis://{USER}:{SPECIAL_ENCODED}@:1"),
            None,
        ),
        (
            "REDIS_TLS_CA_FILE",
            "/nonexistent/ca.pem".to_string(),
            Some(("REDIS_PASSWORD", PASSWORD)),
        ),
        (
            "REDIS_TLS_CA_FILE",
            pw_file.display().to_string(),
            Some(("REDIS_PASSWORD", PASSWORD)),
        ),
    ] {
        let mut cmd = binary();
        cmd.env("LISTEN_ADDR", format!("127.0.0.1:{}", free_port()));
        if var != "REDIS_URL" {
            cmd.env("REDIS_URL", &tls);
        }
        cmd.env(var, &value);
        if let Some((k, v)) = extra {
            cmd.env(k, v);
        }
        let (code, output) = exit_output(cmd.spawn().unwrap()).await;
        assert_eq!(code, Some(2), "{var}={value}: {output}");
        assert!(output.contains(var), "{var}: {output}");
        shown.push(("bad config", output));
    }

    for (what, text) in &shown {
        assert_clean(&format!("binary {what}"), text);
    }
}
