//! Secrets never appear in logs, errors, Debug output, events or /health: a distinctive password
//! is driven through connect failures, authentication failures and a normal session while all
//! tracing output is captured, then everything is searched for it.

use std::time::Duration;

use redis_supervisor::{Availability, Config, Supervisor};

use crate::capture::Capture;
use crate::support::helpers::*;

const PASSWORD: &str = "Xy9-distinctive-Pa55word";
const WRONG: &str = "Wr0ng-distinctive-Pa55word";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_appears_nowhere() {
    let _process = crate::shared().await;
    let capture = Capture::install();

    let mut seen: Vec<String> = Vec::new();
    let srv = server_with(&["--requirepass", PASSWORD]).await;

    // 1. Wrong password: Down with an authentication reason, and every error redacted.
    let wrong_url = format!("redis://default:{WRONG}@127.0.0.1:{}/0", srv.port());
    let cfg = Config::builder()
        .url(&wrong_url)
        .backoff_base(Duration::from_millis(20))
        .backoff_max(Duration::from_millis(100))
        .command_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    seen.push(format!("{cfg:?} {cfg}"));
    let sup = Supervisor::start(cfg).await.unwrap();
    let mut events = sup.subscribe();
    let evs = events_until(&mut events, |s| matches!(s, Availability::Down { .. })).await;
    let down = evs.last().unwrap();
    match &down.state {
        Availability::Down { error, .. } => assert!(error.contains("authentication"), "{error}"),
        other => panic!("{other:?}"),
    }
    seen.push(format!("{evs:?}"));
    let e = sup
        .handle()
        .get::<_, Option<String>>("k")
        .await
        .unwrap_err();
    seen.push(format!("{e} {e:?}"));
    let e = sup
        .wait_until_up(Duration::from_millis(50))
        .await
        .unwrap_err();
    seen.push(format!("{e} {e:?} {sup:?} {:?}", sup.handle()));
    let (status, body) = serve_get(&sup, "/health").await;
    assert_eq!(status, 503);
    seen.push(body);
    sup.shutdown().await;

    // 2. Nothing listening: connection refused, password in config.
    let refused = format!("redis://:{PASSWORD}@127.0.0.1:{}/0", free_port());
    let sup = Supervisor::start(Config::from_url(&refused).unwrap())
        .await
        .unwrap();
    let e = sup
        .wait_until_up(Duration::from_millis(200))
        .await
        .unwrap_err();
    seen.push(format!("{e} {e:?} {sup:?}"));
    sup.shutdown().await;

    // 3. A normal session with the right password.
    let url = format!("redis://default:{PASSWORD}@127.0.0.1:{}/0", srv.port());
    let sup = Supervisor::start(Config::from_url(&url).unwrap())
        .await
        .unwrap();
    sup.wait_until_up(SOON).await.unwrap();
    sup.handle().set("k", PASSWORD.len()).await.unwrap();
    let e = sup.handle().incr_by("k", i64::MAX).await.unwrap_err();
    seen.push(format!("{e} {e:?} {sup:?}"));
    let (status, body) = serve_get(&sup, "/health").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("default:***@"), "{body}");
    seen.push(body);
    sup.shutdown().await;

    // 4. Config errors about malformed URLs holding the password.
    for bad in [
        format!("redis://u:{PASSWORD}@h:99999"),
        format!("redis://u:{PASSWORD}@:1"),
        format!("redis://u:{PASSWORD}@h:1/db"),
    ] {
        let e = Config::from_url(&bad).unwrap_err();
        seen.push(format!("{e} {e:?}"));
    }

    let logs = capture.text();
    assert!(
        logs.contains("redis"),
        "the capture saw the supervisor's logs: {logs}"
    );
    seen.push(logs);
    for (i, text) in seen.iter().enumerate() {
        assert!(
            !text.contains(PASSWORD),
            "password leaked in item {i}: {text}"
        );
        assert!(
            !text.contains(WRONG),
            "wrong password leaked in item {i}: {text}"
        );
    }
}
