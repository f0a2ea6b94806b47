//! Configuration from the environment, URLs and the builder, through the public API only:
//! every variable's errors name it exactly (with and without prefix) and show its value, the
//! precedence of passwords and user names, URL strictness (RESP3 only), bounds that keep every
//! duration and count from overflowing, and secrets never shown. (The original config unit
//! tests live here too, unchanged: they only ever used the public API.)

use std::time::Duration;

use redis_supervisor::config::{
    DEFAULT_COMMAND_TIMEOUT, DEFAULT_HEALTH_TIMEOUT, ENV_VARS, MAX_DURATION, redact_url,
};
use redis_supervisor::{Config, ConfigError, Error, OfflinePolicy};

fn env(vars: &[(&str, &str)]) -> Result<Config, Error> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup("", move |k| {
        vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
}

fn config_err(r: Result<Config, Error>) -> ConfigError {
    match r {
        Err(Error::Config(e)) => e,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn defaults() {
    let c = env(&[]).unwrap();
    assert_eq!(c.redacted_url(), "redis://127.0.0.1:6379/0");
    assert_eq!(c.command_timeout(), DEFAULT_COMMAND_TIMEOUT);
    assert_eq!(c.offline_policy(), OfflinePolicy::Wait);
    assert_eq!(c.name(), "default");
}

#[test]
fn url_parts() {
    let c = Config::from_url("redis://bob:s%40cret@example.com:7000/3").unwrap();
    assert_eq!(
        (c.host(), c.port(), c.db(), c.username()),
        ("example.com", 7000, 3, Some("bob"))
    );
    assert_eq!(c.password().unwrap().expose(), "s@cret");
    let c = Config::from_url("redis://[::1]:6380").unwrap();
    assert_eq!(c.host(), "::1");
    assert_eq!(c.redacted_url(), "redis://[::1]:6380/0");
}

#[test]
fn env_overrides_url_parts() {
    let c = env(&[
        ("REDIS_URL", "redis://:urlpw@h:1/1"),
        ("REDIS_PASSWORD", "envpw"),
        ("REDIS_DB", "4"),
    ])
    .unwrap();
    assert_eq!(c.password().unwrap().expose(), "envpw");
    assert_eq!((c.host(), c.port(), c.db()), ("h", 1, 4));
}

#[test]
fn prefixed_env() {
    let vars = [("CACHE_REDIS_PORT", "7001")];
    let c = Config::from_lookup("CACHE", |k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    })
    .unwrap();
    assert_eq!((c.port(), c.name()), (7001, "cache"));
}

/// Variables, the setting the error must name, and a piece of the value it must show.
type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);

#[test]
fn bad_values_name_setting_and_value() {
    let cases: &[Case] = &[
        (&[("REDIS_URL", "redis://h:70000")], "REDIS_URL", "70000"),
        (&[("REDIS_URL", "not a url")], "REDIS_URL", "not a url"),
        (&[("REDIS_URL", "http://h:1")], "REDIS_URL", "http"),
        (&[("REDIS_URL", "redis://h:1/x")], "REDIS_URL", "`x`"),
        (&[("REDIS_URL", "redis://:6379")], "REDIS_URL", "redis://"),
        (&[("REDIS_PORT", "70000")], "REDIS_PORT", "70000"),
        (&[("REDIS_PORT", "abc")], "REDIS_PORT", "abc"),
        (&[("REDIS_DB", "x")], "REDIS_DB", "\"x\""),
        (&[("REDIS_DB", "-1")], "REDIS_DB", "-1"),
        (
            &[("REDIS_COMMAND_TIMEOUT_MS", "0")],
            "REDIS_COMMAND_TIMEOUT_MS",
            "\"0\"",
        ),
        (
            &[("REDIS_COMMAND_TIMEOUT_MS", "-5")],
            "REDIS_COMMAND_TIMEOUT_MS",
            "-5",
        ),
        (
            &[("REDIS_CONNECT_TIMEOUT_MS", "1.5")],
            "REDIS_CONNECT_TIMEOUT_MS",
            "1.5",
        ),
        (&[("REDIS_HOST", "")], "host", "empty"),
        (
            &[("REDIS_OFFLINE_POLICY", "sometimes")],
            "REDIS_OFFLINE_POLICY",
            "sometimes",
        ),
        (&[("REDIS_TLS", "maybe")], "REDIS_TLS", "maybe"),
        (&[("REDIS_CLIENT_NAME", "a b")], "REDIS_CLIENT_NAME", "a b"),
        (&[("REDIS_MAX_WAITING", "0")], "REDIS_MAX_WAITING", "\"0\""),
        (
            &[("REDIS_MAX_WAITING", "lots")],
            "REDIS_MAX_WAITING",
            "lots",
        ),
        (
            &[("REDIS_RESTART_INTENSITY", "0")],
            "REDIS_RESTART_INTENSITY",
            "\"0\"",
        ),
        (&[("REDIS_MAX_ATTEMPTS", "-3")], "REDIS_MAX_ATTEMPTS", "-3"),
        (
            &[("REDIS_RESTART_WINDOW_MS", "0")],
            "REDIS_RESTART_WINDOW_MS",
            "\"0\"",
        ),
        (
            &[("REDIS_HEALTH_FAILURES", "0")],
            "REDIS_HEALTH_FAILURES",
            "\"0\"",
        ),
        (
            &[("REDIS_HEALTH_FAILURES", "-1")],
            "REDIS_HEALTH_FAILURES",
            "-1",
        ),
        (
            &[
                ("REDIS_HEALTH_INTERVAL_MS", "100"),
                ("REDIS_HEALTH_TIMEOUT_MS", "500"),
            ],
            "REDIS_HEALTH_TIMEOUT_MS",
            "500ms",
        ),
        (
            &[
                ("REDIS_BACKOFF_BASE_MS", "500"),
                ("REDIS_BACKOFF_MAX_MS", "100"),
            ],
            "REDIS_BACKOFF_MAX_MS",
            "100ms",
        ),
    ];
    for (vars, setting, needle) in cases {
        let e = config_err(env(vars));
        let msg = e.to_string();
        assert!(msg.contains(setting), "{vars:?}: {msg}");
        assert!(msg.contains(needle), "{vars:?}: {msg}");
    }
}

#[test]
fn probe_timeout_follows_a_short_interval_unless_set() {
    let c = env(&[("REDIS_HEALTH_INTERVAL_MS", "200")]).unwrap();
    assert_eq!(c.health_timeout(), Duration::from_millis(200));
    let c = env(&[("REDIS_HEALTH_INTERVAL_MS", "5000")]).unwrap();
    assert_eq!(c.health_timeout(), DEFAULT_HEALTH_TIMEOUT);
    assert_eq!(c.detection_bound(), Duration::from_millis(15_500));
}

#[test]
fn builder_rejects_zero_durations_by_name() {
    let e = config_err(Config::builder().command_timeout(Duration::ZERO).build());
    assert_eq!(e.setting, "command_timeout");
    let e = config_err(Config::builder().connect_timeout(Duration::ZERO).build());
    assert_eq!(e.setting, "connect_timeout");
    let e = config_err(Config::builder().backoff_factor(0.5).build());
    assert_eq!(e.setting, "backoff_factor");
}

#[test]
fn secrets_never_shown() {
    let secret = "Sup3r-S3cret-pw";
    let url = format!("redis://alice:{secret}@h:1/0");
    let c = Config::from_url(&url).unwrap();
    for s in [format!("{c:?}"), format!("{c}"), c.redacted_url()] {
        assert!(!s.contains(secret), "{s}");
    }
    assert_eq!(c.redacted_url(), "redis://alice:***@h:1/0");
    // Malformed URLs are redacted too, including passwords with URL syntax in them.
    for bad in [
        format!("redis://alice:{secret}@h:99999"),
        format!("redis://alice:{secret}/x@h:1/zz"),
        format!("redis://{secret}@h:1/zz"),
        format!("alice:{secret}@h"),
    ] {
        let e = config_err(Config::from_url(&bad));
        for s in [e.to_string(), format!("{e:?}")] {
            assert!(!s.contains(secret), "{s}");
        }
    }
    let e = config_err(env(&[("REDIS_PASSWORD", secret), ("REDIS_PORT", "nope")]));
    assert!(!format!("{e} {e:?}").contains(secret));
}

#[test]
fn tls_settings() {
    let c = Config::from_url("rediss://h:1").unwrap();
    assert!(c.tls() && !c.tls_insecure_skip_verify());
    assert_eq!(c.redacted_url(), "rediss://h:1/0");
    let e = config_err(env(&[("REDIS_TLS_CA_FILE", "/nonexistent/ca.pem")]));
    assert_eq!(e.setting, "REDIS_TLS_CA_FILE");
    assert!(e.reason.contains("TLS is off"), "{e}");
    let e = config_err(env(&[
        ("REDIS_TLS", "true"),
        ("REDIS_TLS_CA_FILE", "/nonexistent/ca.pem"),
    ]));
    assert_eq!(e.setting, "REDIS_TLS_CA_FILE");
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    let dir = std::env::temp_dir().join(format!("rs-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let e = config_err(
        Config::builder()
            .url("rediss://h:1")
            .tls_ca_file(&junk)
            .build(),
    );
    assert_eq!(e.setting, "tls_ca_file");
    assert!(e.reason.contains("no PEM certificate"), "{e}");
    let e = config_err(
        Config::builder()
            .url("rediss://h:1")
            .tls_cert_file(&junk)
            .build(),
    );
    assert!(e.reason.contains("both"), "{e}");
    let c = Config::builder()
        .url("rediss://h:1")
        .tls_insecure_skip_verify(true)
        .build()
        .unwrap();
    assert!(c.tls_insecure_skip_verify());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn password_file() {
    let dir = std::env::temp_dir().join(format!("rs-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("pw");
    std::fs::write(&f, "from-file-secret\n").unwrap();
    let path = f.display().to_string();
    let c = env(&[("REDIS_PASSWORD_FILE", &path)]).unwrap();
    assert_eq!(c.password().unwrap().expose(), "from-file-secret");
    // An explicit password wins over the file.
    let c = env(&[
        ("REDIS_PASSWORD_FILE", &path),
        ("REDIS_PASSWORD", "explicit"),
    ])
    .unwrap();
    assert_eq!(c.password().unwrap().expose(), "explicit");
    std::fs::write(&f, "\n").unwrap();
    let e = config_err(env(&[("REDIS_PASSWORD_FILE", &path)]));
    assert!(e.reason.contains("empty") && !format!("{e:?}").contains("from-file"));
    let e = config_err(env(&[("REDIS_PASSWORD_FILE", "/nonexistent/pw")]));
    assert_eq!(e.setting, "REDIS_PASSWORD_FILE");
    std::fs::remove_dir_all(&dir).ok();
}

/// Looks variables up in `vars`, each named with `prefix` (`CACHE_REDIS_PORT`) when non-empty.
fn env_prefixed(prefix: &str, vars: &[(&str, &str)]) -> Result<Config, Error> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (var_name(prefix, k), v.to_string()))
        .collect();
    Config::from_lookup(prefix, move |k| {
        vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
}

fn var_name(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}_{name}")
    }
}

const MS_BAD: &[&str] = &[
    "",
    "abc",
    "0",
    "-5",
    "1.5",
    "86400001",
    "18446744073709551615",
    "18446744073709551616",
];
const NO_FILE: &[&str] = &["/nonexistent/file.pem"];

/// Invalid values per variable. The variables that accept any text are listed with none.
fn bad_values(var: &str) -> &'static [&'static str] {
    match var {
        "REDIS_URL" => &[
            "",
            "not a url",
            "http://h:1",
            "redis://h:70000",
            "redis://h:0",
            "redis://:6379",
            "redis://h:1/x",
            "redis://h:1/-1",
            "redis://h:1/?protocol=resp2",
            "redis://h:1/?foo=bar",
            "redis://h:1/0#frag",
        ],
        "REDIS_CLIENT_NAME" => &["", "a b", "é"],
        "REDIS_HOST" => &["", "   "],
        "REDIS_PORT" => &["", "abc", "0", "70000", "-1", "18446744073709551616"],
        "REDIS_TLS" | "REDIS_TLS_INSECURE_SKIP_VERIFY" => &["maybe", "2"],
        "REDIS_DB" => &["", "abc", "-1", "1.5", "18446744073709551616"],
        "REDIS_PASSWORD_FILE"
        | "REDIS_TLS_CA_FILE"
        | "REDIS_TLS_CERT_FILE"
        | "REDIS_TLS_KEY_FILE" => NO_FILE,
        "REDIS_OFFLINE_POLICY" => &["", "sometimes"],
        "REDIS_HEALTH_FAILURES" => &["", "0", "-1", "abc", "1001", "18446744073709551616"],
        "REDIS_RESTART_INTENSITY" => &["0", "abc", "10001", "4294967296"],
        "REDIS_MAX_ATTEMPTS" => &["-3", "abc", "1000001", "18446744073709551616"],
        "REDIS_MAX_WAITING" => &["0", "lots", "1000001", "18446744073709551616"],
        "REDIS_LANES" => &["0", "two", "17", "18446744073709551616"],
        "REDIS_PUBSUB_BUFFER" => &["0", "lots", "1000001", "18446744073709551616"],
        "REDIS_BLOCKING_CONNECTIONS" | "REDIS_LEASED_CONNECTIONS" => {
            &["0", "many", "1025", "18446744073709551616"]
        }
        "REDIS_WAIT_REPLICAS" => &["-1", "one", "65", "4294967296"],
        // Each entry must be host:port; a bad one is named whatever else is set.
        "REDIS_SENTINELS" => &["a", "a:0", "a:70000", ":1", "::1:5", "a:1,b"],
        // A master name without the sentinels' addresses.
        "REDIS_SENTINEL_MASTER" => &["mymaster"],
        "REDIS_CLUSTER_NODES" => &["a", "a:0", "a:70000", ":1", "::1:5", "a:1,b"],
        // Not a boolean, or reads from replicas without any cluster seed node.
        "REDIS_CLUSTER_READ_FROM_REPLICAS" => &["maybe", "2", "true"],
        "REDIS_USERNAME"
        | "REDIS_PASSWORD"
        | "REDIS_KEY_PREFIX"
        | "REDIS_SENTINEL_USERNAME"
        | "REDIS_SENTINEL_PASSWORD" => &[],
        ms if ms.ends_with("_MS") => MS_BAD,
        other => panic!("no invalid values listed for {other}: add them here"),
    }
}

#[test]
fn every_variable_error_names_exactly_that_variable_and_its_value() {
    let mut checked = 0;
    for prefix in ["", "CACHE"] {
        for var in ENV_VARS {
            for value in bad_values(var) {
                let e = config_err(env_prefixed(prefix, &[(var, value)]));
                let name = var_name(prefix, var);
                assert_eq!(e.setting, name, "{name}={value:?}: {e}");
                assert_eq!(e.value, redact_url(value), "{name}={value:?}: {e}");
                assert!(e.to_string().contains(&name), "{e}");
                checked += 1;
            }
        }
    }
    assert!(checked > 150, "{checked}");
}

#[test]
fn variable_names_are_kept() {
    let mut want = vec![
        "REDIS_URL",
        "REDIS_CLIENT_NAME",
        "REDIS_HOST",
        "REDIS_PORT",
        "REDIS_TLS",
        "REDIS_USERNAME",
        "REDIS_PASSWORD",
        "REDIS_PASSWORD_FILE",
        "REDIS_DB",
        "REDIS_TLS_CA_FILE",
        "REDIS_TLS_CERT_FILE",
        "REDIS_TLS_KEY_FILE",
        "REDIS_TLS_INSECURE_SKIP_VERIFY",
        "REDIS_KEY_PREFIX",
        "REDIS_CONNECT_TIMEOUT_MS",
        "REDIS_COMMAND_TIMEOUT_MS",
        "REDIS_BACKOFF_BASE_MS",
        "REDIS_BACKOFF_MAX_MS",
        "REDIS_STABLE_PERIOD_MS",
        "REDIS_OFFLINE_POLICY",
        "REDIS_SHUTDOWN_TIMEOUT_MS",
        "REDIS_HEALTH_INTERVAL_MS",
        "REDIS_HEALTH_TIMEOUT_MS",
        "REDIS_HEALTH_FAILURES",
        "REDIS_HEALTH_SLOW_MS",
        "REDIS_INFO_INTERVAL_MS",
        "REDIS_RESTART_INTENSITY",
        "REDIS_RESTART_WINDOW_MS",
        "REDIS_MAX_ATTEMPTS",
        "REDIS_MAX_WAITING",
        "REDIS_LANES",
        "REDIS_PUBSUB_BUFFER",
        "REDIS_BLOCKING_CONNECTIONS",
        "REDIS_SENTINELS",
        "REDIS_SENTINEL_MASTER",
        "REDIS_SENTINEL_USERNAME",
        "REDIS_SENTINEL_PASSWORD",
        "REDIS_CLUSTER_NODES",
        "REDIS_CLUSTER_READ_FROM_REPLICAS",
        "REDIS_LEASED_CONNECTIONS",
        "REDIS_WAIT_REPLICAS",
        "REDIS_WAIT_TIMEOUT_MS",
    ];
    let mut got = ENV_VARS.to_vec();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want);
}

#[test]
fn too_long_durations_are_refused_by_name() {
    let e = config_err(env(&[("REDIS_COMMAND_TIMEOUT_MS", "18446744073709551615")]));
    assert_eq!(e.setting, "REDIS_COMMAND_TIMEOUT_MS");
    assert_eq!(e.value, "18446744073709551615");
    assert_eq!(e.reason, "must be at most 86400000 ms");
    let e = config_err(env_prefixed(
        "CACHE",
        &[("REDIS_COMMAND_TIMEOUT_MS", "18446744073709551616")],
    ));
    assert_eq!(e.setting, "CACHE_REDIS_COMMAND_TIMEOUT_MS");
    assert_eq!(e.reason, "must be at most 86400000 ms");
    type Set = fn(redis_supervisor::ConfigBuilder, Duration) -> redis_supervisor::ConfigBuilder;
    let setters: &[(&str, Set)] = &[
        ("connect_timeout", |b, d| b.connect_timeout(d)),
        ("command_timeout", |b, d| b.command_timeout(d)),
        ("backoff_base", |b, d| {
            b.backoff_base(d).backoff_max(MAX_DURATION)
        }),
        ("backoff_max", |b, d| b.backoff_max(d)),
        ("stable_period", |b, d| b.stable_period(d)),
        ("shutdown_timeout", |b, d| b.shutdown_timeout(d)),
        ("health_interval", |b, d| b.health_interval(d)),
        ("health_timeout", |b, d| {
            b.health_timeout(d).health_interval(MAX_DURATION)
        }),
        ("health_slow", |b, d| b.health_slow(d)),
        ("info_interval", |b, d| b.info_interval(d)),
        ("restart_window", |b, d| b.restart_window(d)),
    ];
    for (name, set) in setters {
        for d in [Duration::MAX, MAX_DURATION + Duration::from_nanos(1)] {
            let e = config_err(set(Config::builder(), d).build());
            assert_eq!(
                (e.setting.as_str(), e.reason.as_str()),
                (*name, "must be at most 86400000 ms")
            );
            assert_eq!(e.value, format!("{d:?}"));
        }
        let e = config_err(set(Config::builder(), Duration::ZERO).build());
        assert_eq!(e.setting, *name);
        set(Config::builder(), MAX_DURATION).build().unwrap();
    }
}

#[test]
fn counts_and_factors_are_bounded_by_name() {
    let b = Config::builder;
    let cases = [
        (b().health_failures(u32::MAX), "health_failures"),
        (b().health_failures(0), "health_failures"),
        (b().restart_intensity(u32::MAX), "restart_intensity"),
        (b().max_attempts(Some(u32::MAX)), "max_attempts"),
        (b().max_waiting(usize::MAX), "max_waiting"),
        (b().max_waiting(0), "max_waiting"),
        (b().port(0), "port"),
        (b().db(-1), "db"),
        (b().host(""), "host"),
        (b().name(""), "name"),
        (b().backoff_factor(f64::INFINITY), "backoff_factor"),
        (b().backoff_factor(f64::NAN), "backoff_factor"),
        (b().backoff_factor(0.0), "backoff_factor"),
        (b().backoff_jitter(1.0), "backoff_jitter"),
        (b().backoff_jitter(-0.1), "backoff_jitter"),
        (b().backoff_jitter(f64::NAN), "backoff_jitter"),
        (b().backoff_base(Duration::from_secs(5)), "backoff_base"),
        (
            b().backoff_base(Duration::from_secs(5))
                .backoff_max(Duration::from_secs(3)),
            "backoff_max",
        ),
        (b().url("redis://h:1/?protocol=resp2"), "url"),
    ];
    for (builder, setting) in cases {
        assert_eq!(config_err(builder.build()).setting, setting);
    }
    // The largest accepted values still give a finite detection bound.
    let c = b()
        .health_interval(MAX_DURATION)
        .health_timeout(MAX_DURATION)
        .health_failures(1_000)
        .max_attempts(Some(1_000_000))
        .build()
        .unwrap();
    assert_eq!(c.detection_bound(), MAX_DURATION * 1_001);
    assert_eq!(
        b().max_attempts(Some(0)).build().unwrap().max_attempts(),
        None
    );
    assert_eq!(
        env(&[("REDIS_MAX_ATTEMPTS", "0")]).unwrap().max_attempts(),
        None
    );
}

#[test]
fn empty_password_or_username_never_erases_another_source() {
    let dir = std::env::temp_dir().join(format!("rs-cfg-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("pw");
    std::fs::write(&f, "file-pw\n").unwrap();
    let file = f.display().to_string();
    let url = ("REDIS_URL", "redis://urluser:urlpw@h:1/0");
    let pw = |vars: &[(&str, &str)]| {
        env(vars)
            .unwrap()
            .password()
            .map(|p| p.expose().to_string())
    };
    assert_eq!(pw(&[url, ("REDIS_PASSWORD", "")]).as_deref(), Some("urlpw"));
    assert_eq!(
        pw(&[url, ("REDIS_PASSWORD_FILE", &file)]).as_deref(),
        Some("file-pw")
    );
    let all = [
        url,
        ("REDIS_PASSWORD_FILE", &file),
        ("REDIS_PASSWORD", "explicit"),
    ];
    assert_eq!(pw(&all).as_deref(), Some("explicit"));
    let empty = [url, ("REDIS_PASSWORD_FILE", &file), ("REDIS_PASSWORD", "")];
    assert_eq!(pw(&empty).as_deref(), Some("file-pw"));
    assert_eq!(
        pw(&[url, ("REDIS_PASSWORD_FILE", "")]).as_deref(),
        Some("urlpw")
    );
    let c = env(&[url, ("REDIS_USERNAME", "")]).unwrap();
    assert_eq!(c.username(), Some("urluser"));
    let c = env(&[url, ("REDIS_USERNAME", "envuser")]).unwrap();
    assert_eq!(c.username(), Some("envuser"));
    // The builder follows the same rule.
    let c = Config::builder()
        .url(url.1)
        .password("")
        .username("")
        .build()
        .unwrap();
    assert_eq!(
        (c.username(), c.password().map(|p| p.expose())),
        (Some("urluser"), Some("urlpw"))
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn url_protocol_query_and_fragment() {
    for ok in [
        "redis://h:1/?protocol=resp3",
        "redis://h:1?protocol=3",
        "redis://h:1/2?protocol=RESP3",
    ] {
        Config::from_url(ok).unwrap();
    }
    let e = config_err(Config::from_url("redis://h:1/?protocol=resp2"));
    assert_eq!(e.setting, "url");
    assert!(
        e.reason.contains("RESP3") && e.reason.contains("Redis >= 6"),
        "{e}"
    );
    let e = config_err(env(&[("REDIS_URL", "redis://h:1/?protocol=2")]));
    assert_eq!(e.setting, "REDIS_URL");
    assert!(e.reason.contains("RESP3"), "{e}");
    for (url, needle) in [
        ("redis://h:1/?foo=bar", "`foo`"),
        ("redis://h:1/?db=2", "`db`"),
        ("redis://h:1/0#frag", "fragment"),
        ("redis://h:1/0?protocol=resp3#x", "fragment"),
    ] {
        let e = config_err(Config::from_url(url));
        assert!(e.reason.contains(needle), "{url}: {e}");
    }
}

#[test]
fn errors_never_show_a_password() {
    let secret = "Sup3r-S3cret-pw";
    let bad_urls = [
        format!("redis://alice:{secret}@h:1/?protocol=resp2"),
        format!("redis://alice:{secret}@h:1/?foo=bar"),
        format!("redis://alice:{secret}@h:1/0#frag"),
        format!("redis://alice:{secret}@h:1/-1"),
        format!("redis://alice:{secret}@h:0"),
        format!("redis://h:1/?password={secret}"),
        format!("redis://:{secret}@"),
    ];
    for url in &bad_urls {
        for r in [Config::from_url(url), env(&[("REDIS_URL", url)])] {
            let e = config_err(r);
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(secret), "{shown}");
        }
    }
    let b = Config::builder().url(&bad_urls[0]).password(secret);
    assert!(!format!("{b:?}").contains(secret));
    let e = config_err(env(&[
        ("REDIS_PASSWORD", secret),
        ("REDIS_HEALTH_FAILURES", "0"),
    ]));
    assert!(!format!("{e} {e:?}").contains(secret));
}

#[test]
fn cluster_seed_nodes_exclude_sentinels_and_other_databases() {
    let e = config_err(env(&[
        ("REDIS_CLUSTER_NODES", "10.0.0.1:7000,10.0.0.2:7000"),
        ("REDIS_SENTINELS", "10.0.0.9:26379"),
        ("REDIS_SENTINEL_MASTER", "mymaster"),
    ]));
    assert_eq!(e.setting, "REDIS_CLUSTER_NODES");
    assert!(e.reason.contains("sentinels"), "{}", e.reason);
    let e = config_err(env(&[
        ("REDIS_CLUSTER_NODES", "10.0.0.1:7000"),
        ("REDIS_DB", "2"),
    ]));
    assert_eq!(e.setting, "REDIS_CLUSTER_NODES");
    assert!(e.reason.contains("database 2"), "{}", e.reason);
    let e = config_err(env(&[("REDIS_CLUSTER_READ_FROM_REPLICAS", "true")]));
    assert_eq!(e.setting, "REDIS_CLUSTER_READ_FROM_REPLICAS");
    assert!(e.reason.contains("seed nodes"), "{}", e.reason);
    let config = redis_supervisor::Config::builder()
        .cluster_nodes(["10.0.0.1:7000", "10.0.0.2:7001"])
        .cluster_read_from_replicas(true)
        .build()
        .expect("a cluster config");
    assert_eq!(
        config.cluster_nodes().to_string(),
        "10.0.0.1:7000,10.0.0.2:7001"
    );
    assert!(config.cluster_read_from_replicas());
}
