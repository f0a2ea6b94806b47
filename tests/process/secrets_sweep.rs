//! The redaction sweep of issue 5 (ARCHITECTURE.md promise 8): with a distinctive password (and
//! username), drive connect failures, authentication failures, TLS failures and a normal session
//! over TLS with an ACL user; capture all tracing output, every error's Display and Debug, the
//! config's Debug and Display, every availability event, `/health`, `/health/redis` and
//! `/metrics`, and the service binary's whole output: the password appears nowhere, in plain or
//! percent-encoded form.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use redis_supervisor::metrics::prometheus_builder;
use redis_supervisor::{
    Availability, AvailabilityEvents, Config, ConfigBuilder, FailureKind, Supervisor,
};
use tokio::process::Command;

use crate::capture::Capture;
use crate::support::helpers::*;
use crate::support::pki::{Leaf, TlsRedis};
use crate::support::process::{exit_output, listen_addr, sigterm, wait_status};
use crate::support::{pki, process};

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
// The server: TLS with a CA-signed certificate for localhost (tests/support/pki.rs)
// ---------------------------------------------------------------------------------------------

/// A fixture server with a TLS port (no client certificates required), and two ACL users:
/// `sweepuser` (everything but FLUSHALL) and `specialuser` (the URL-special password).
async fn sweep_server() -> TlsRedis {
    let srv = pki::start_tls_server(&[Leaf::LOCALHOST], Leaf::LOCALHOST.name, false, &[]).await;
    let mut admin = admin(&srv.server).await;
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
    srv
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

        let (addr, task) = serve_with_metrics(&sup, self.recorder_handle.clone()).await;
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

/// Serves the supervisor's routes and `/metrics` from `metrics` on a loopback port.
async fn serve_with_metrics(
    sup: &Supervisor,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    serve_app(
        redis_supervisor::http::router(sup).merge(redis_supervisor::http::metrics_router(metrics)),
    )
    .await
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
    let _process = crate::shared().await;
    let capture = Capture::install();

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
                let (status, body) = serve_get(sup, "/health").await;
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
                .tls_cert_file(pki.cert(Leaf::LOCALHOST.name))
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

    let logs = capture.text();
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

/// The service binary (see [`process::binary`]) at RUST_LOG=trace, retries capped at 200 ms: as
/// much output as it can show.
fn binary() -> Command {
    process::binary("trace", &[("REDIS_BACKOFF_MAX_MS", "200")])
}

/// Runs the binary with `env` until `/health` answers `want` with `marker` in its body, collects every route, stops it with
/// SIGTERM and returns everything it showed.
async fn run_binary(what: &str, env: &[(&str, String)], want: u16, marker: &str) -> String {
    let addr = listen_addr();
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
    sigterm(&child);
    let (code, output) = exit_output(child).await;
    assert_eq!(code, Some(0), "{what}: {output}");
    assert!(output.contains("redis"), "{what}: the output was captured");
    shown.push_str(&output);
    shown
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_never_shows_the_password() {
    let _process = crate::shared().await;
    let srv = sweep_server().await;
    let pki = &srv.pki;
    let pw_file = srv.server.dir().join("bin-password");
    std::fs::write(&pw_file, format!("{PASSWORD}\n")).unwrap();
    let tls = srv.url();
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
        cmd.env("LISTEN_ADDR", listen_addr().to_string());
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
