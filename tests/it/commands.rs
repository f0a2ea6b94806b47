//! Every typed command against a real redis-server: values, TTL expiry, pipelines, MULTI, typed
//! errors, key prefix, per-call deadlines, and proof that concurrent commands pipeline.

use std::time::Duration;

use redis_supervisor::{Error, KeyTtl, SetOptions};

use crate::support::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_commands_round_trip() {
    let srv = server().await;
    let sup = supervisor(&srv).await;
    let r = sup.handle();

    assert!(r.ping().await.unwrap() < SOON);
    r.set("a", "1").await.unwrap();
    let v: Option<String> = r.get("a").await.unwrap();
    assert_eq!(v.as_deref(), Some("1"));
    let missing: Option<String> = r.get("nope").await.unwrap();
    assert_eq!(missing, None);
    let bytes: Vec<u8> = r.get("a").await.unwrap();
    assert_eq!(bytes, b"1");

    assert_eq!(r.incr("n").await.unwrap(), 1);
    assert_eq!(r.incr_by("n", 41).await.unwrap(), 42);
    assert_eq!(r.incr_by("n", -2).await.unwrap(), 40);

    r.mset([("m1", "x"), ("m2", "y")]).await.unwrap();
    let got: Vec<Option<String>> = r.mget(["m1", "zz", "m2"]).await.unwrap();
    assert_eq!(got, [Some("x".into()), None, Some("y".into())]);

    assert_eq!(r.exists(["m1", "m2", "zz"]).await.unwrap(), 2);
    assert_eq!(r.del(["m1"]).await.unwrap(), 1);
    assert_eq!(r.del(vec!["m2", "a", "zz"]).await.unwrap(), 2);
    assert_eq!(r.exists(["m1", "m2", "a"]).await.unwrap(), 0);

    // SET options: NX refuses an existing key, XX refuses a missing one.
    assert!(r.set_with("o", "1", SetOptions::new().nx()).await.unwrap());
    assert!(!r.set_with("o", "2", SetOptions::new().nx()).await.unwrap());
    assert!(!r.set_with("o2", "2", SetOptions::new().xx()).await.unwrap());
    assert!(r.set_with("o", "3", SetOptions::new().xx()).await.unwrap());
    let o: String = r.get("o").await.unwrap();
    assert_eq!(o, "3");

    // Raw commands.
    let len: usize = r.cmd(redis::cmd("STRLEN").arg("o").clone()).await.unwrap();
    assert_eq!(len, 1);
    let echoed: String = r
        .cmd_idempotent(redis::cmd("ECHO").arg("hi").clone())
        .await
        .unwrap();
    assert_eq!(echoed, "hi");
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_expiry_removes_the_key() {
    let srv = server().await;
    let sup = supervisor(&srv).await;
    let r = sup.handle();

    assert_eq!(r.ttl("none").await.unwrap(), KeyTtl::Missing);
    r.set("p", "v").await.unwrap();
    assert_eq!(r.ttl("p").await.unwrap(), KeyTtl::Persistent);

    r.set_ex("t", "v", Duration::from_millis(300))
        .await
        .unwrap();
    match r.ttl("t").await.unwrap() {
        KeyTtl::Expires(d) => assert!(d <= Duration::from_millis(300) && !d.is_zero()),
        other => panic!("expected an expiry, got {other:?}"),
    }
    assert!(r.expire("p", Duration::from_millis(300)).await.unwrap());
    assert!(!r.expire("none", Duration::from_secs(1)).await.unwrap());
    r.set_with("w", "v", SetOptions::new().ttl(Duration::from_millis(300)))
        .await
        .unwrap();

    // Poll (with a deadline) until Redis has expired all three.
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let n = r.exists(["t", "p", "w"]).await.unwrap();
        if n == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "keys never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone: Option<String> = r.get("t").await.unwrap();
    assert_eq!(gone, None);

    // A zero TTL is refused before anything is sent, naming the argument.
    let e = r.set_ex("t", "v", Duration::ZERO).await.unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument(ref m) if m.contains("ttl")),
        "{e}"
    );
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_and_transactions() {
    let srv = server().await;
    let sup = supervisor(&srv).await;
    let r = sup.handle();

    let (a, b, c): (String, i64, Option<String>) = r
        .pipeline(
            redis::pipe()
                .set("k", "v")
                .ignore()
                .get("k")
                .incr("c", 5)
                .get("missing")
                .clone(),
        )
        .await
        .unwrap();
    assert_eq!((a.as_str(), b, c), ("v", 5, None));

    let (n, v): (i64, String) = r
        .pipeline(redis::pipe().atomic().incr("c", 1).get("k").clone())
        .await
        .unwrap();
    assert_eq!((n, v.as_str()), (6, "v"));

    // A failing command inside MULTI is reported as a typed server error.
    let e = r
        .pipeline::<(String, i64)>(redis::pipe().atomic().get("k").incr("k", 1).clone())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Server { .. }), "{e:?}");

    let (x,): (i64,) = r
        .pipeline_idempotent(redis::pipe().exists("k").clone())
        .await
        .unwrap();
    assert_eq!(x, 1);
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_typed_and_keep_the_connection() {
    let srv = server().await;
    let sup = supervisor(&srv).await;
    let r = sup.handle();

    r.set("s", "text").await.unwrap();
    let e = r.incr("s").await.unwrap_err();
    assert_eq!(e.server_code(), Some("ERR"), "{e:?}");
    let e = r
        .cmd::<i64>(redis::cmd("LPUSH").arg("s").arg("x").clone())
        .await
        .unwrap_err();
    assert_eq!(e.server_code(), Some("WRONGTYPE"), "{e:?}");
    let e = r.get::<_, i64>("s").await.unwrap_err();
    assert!(matches!(e, Error::ReplyType(_)), "{e:?}");
    let e = r
        .cmd::<String>(redis::cmd("NOSUCHCOMMAND").clone())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Server { .. }), "{e:?}");
    let e = r.del(Vec::<&str>::new()).await.unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");

    // None of that dropped the connection.
    assert_eq!(sup.restarts(), 0);
    assert!(sup.availability().is_serving());
    let v: String = r.get("s").await.unwrap();
    assert_eq!(v, "text");
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_prefix_applies_to_typed_commands_only() {
    let srv = server().await;
    let sup = supervisor_with(&srv, |b| b.key_prefix("app:")).await;
    let r = sup.handle();
    r.set("k", "v").await.unwrap();
    r.mset([("a", 1), ("b", 2)]).await.unwrap();
    let raw: Option<String> = r.cmd(redis::cmd("GET").arg("app:k").clone()).await.unwrap();
    assert_eq!(raw.as_deref(), Some("v"));
    let unprefixed: Option<String> = r.cmd(redis::cmd("GET").arg("k").clone()).await.unwrap();
    assert_eq!(unprefixed, None);
    assert_eq!(r.exists(["a", "b", "k"]).await.unwrap(), 3);
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_call_deadline_overrides_the_default() {
    let srv = server().await;
    let sup = supervisor_with(&srv, |b| b.command_timeout(Duration::from_millis(200))).await;
    let r = sup.handle();
    let mut admin = admin(&srv).await;
    let set = || redis::cmd("SET").arg("k").arg("v").clone();
    // Writes paused server-side for 1 s: the default 200 ms deadline cuts a SET off...
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1000)
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    let e = r.cmd::<()>(set()).await.unwrap_err();
    // A raw command that may have run is Ambiguous, not a plain timeout.
    assert!(matches!(e, Error::Ambiguous { .. }), "{e:?}");
    assert!(start.elapsed() < Duration::from_millis(200) + Duration::from_millis(500));
    // An idempotent command that gets no reply in time is a plain Timeout.
    let e = r.cmd_idempotent::<()>(set()).await.unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    // ...while a per-call deadline lets it finish once the pause ends.
    r.with_timeout(Duration::from_secs(5))
        .cmd::<()>(set())
        .await
        .unwrap();
    // A blocking command's deadline is its own block time plus the handle's: BLPOP's 1 s
    // timeout answers nil although the handle's deadline is 200 ms.
    let start = tokio::time::Instant::now();
    let v: Option<(String, String)> = r
        .cmd(redis::cmd("BLPOP").arg("q").arg(1).clone())
        .await
        .unwrap();
    assert_eq!(v, None);
    assert!(start.elapsed() >= Duration::from_millis(900));
    sup.shutdown().await;
}

/// Concurrent commands must pipeline on the one connection, not wait for each other in the
/// actor. While writes are paused server-side (`CLIENT PAUSE WRITE`), the first SET blocks the
/// client; if the others were pipelined behind it they sit in the server's query buffer
/// (`qbuf > 0` in `CLIENT LIST`). An actor that awaited each command would have sent only one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_pipeline_on_one_connection() {
    let srv = server().await;
    let sup = supervisor_with(&srv, |b| {
        b.name("pipelining-probe")
            .command_timeout(Duration::from_secs(10))
    })
    .await;
    let r = sup.handle();
    let mut admin = admin(&srv).await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(5000)
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let r = r.clone();
            tokio::spawn(async move { r.set(format!("k{i}"), i).await })
        })
        .collect();

    let deadline = tokio::time::Instant::now() + SOON;
    let qbuf = loop {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut admin)
            .await
            .unwrap();
        let line = list
            .lines()
            .find(|l| l.contains("name=redis-supervisor:pipelining-probe"))
            .expect("our client is listed")
            .to_string();
        let qbuf: u64 = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("qbuf="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if qbuf > 0 {
            break qbuf;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "later commands never reached the server while the first was blocked: {line}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(qbuf > 0);
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut admin)
        .await
        .unwrap();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        r.exists((0..20).map(|i| format!("k{i}"))).await.unwrap(),
        20
    );
    sup.shutdown().await;
}
