//! The delivery loop's rules on a Redis Cluster (one cluster for the file: it takes seconds to
//! form), kind by kind — a single-key typed command, a pipeline (one slot), a blocking command,
//! a multi-key command split across slots:
//!
//! 1. **a refusal is waited out**: a Lua script keeps a primary busy past `lua-time-limit`
//!    (`BUSY` to everything); each kind sent to it then is answered once the script ends;
//! 2. **a lost connection**: `CLIENT PAUSE … WRITE` holds the write on its node, `CLIENT KILL`
//!    drops the connection: `Ambiguous` unless replay-safe, a replay-safe one sent again once;
//! 3. **redirects are followed**: a slot moved behind the router's back (`MOVED`), a slot being
//!    migrated (`ASK`); a non-idempotent command follows them (they are not replays), and a
//!    redirected command whose connection is then lost is still sent again (the redirect spent
//!    no replay budget);
//! 4. **a redirect storm ends**: two primaries each naming the other as a slot's owner, every
//!    kind ends in `TooManyRedirects`, within its deadline.
//!
//! The supervisor probes every 30 s only, so that the router's slot map is read when a command
//! asks for it, not behind the test's back.

use std::net::SocketAddr;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis_supervisor::testing::ClusterTopology;
use redis_supervisor::{Config, Error, RedisHandle, Supervisor};
use tokio::time::Instant;

use crate::support::clients::{self, held};
use crate::support::helpers::{SOON, poll_until};

const NAME: &str = "dlvc";
const SHARED: &str = "redis-supervisor:dlvc";
const BLOCKING: &str = "redis-supervisor:dlvc:blocking";
const DEADLINE: Duration = Duration::from_secs(8);

struct Cluster {
    topology: ClusterTopology,
    redis: RedisHandle,
}

impl Cluster {
    /// A raw connection to `node` with no reply timeout.
    async fn admin(&self, node: SocketAddr) -> MultiplexedConnection {
        clients::admin_at(node).await
    }

    async fn slot(&self, key: &str) -> u16 {
        let nodes = self.topology.primaries().await.unwrap();
        let mut admin = self.admin(nodes[0]).await;
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut admin)
            .await
            .unwrap()
    }

    async fn owner(&self, key: &str) -> SocketAddr {
        let slot = self.slot(key).await;
        self.topology.primary_for_slot(slot).await.unwrap()
    }

    /// A key (with hash tag `{tag}`) whose slot is served by `node`, and is empty.
    async fn key_on(&self, node: SocketAddr, prefix: &str) -> String {
        for i in 0.. {
            let key = format!("{{{prefix}{i}}}");
            if self.owner(&key).await == node {
                return key;
            }
        }
        unreachable!()
    }

    async fn id(&self, node: SocketAddr) -> String {
        let mut admin = self.admin(node).await;
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query_async(&mut admin)
            .await
            .unwrap()
    }

    /// `CLUSTER SETSLOT slot <how…>` on `node`.
    async fn setslot(&self, node: SocketAddr, slot: u16, how: &[&str]) {
        let mut admin = self.admin(node).await;
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SETSLOT").arg(slot);
        for a in how {
            cmd.arg(*a);
        }
        let _: () = cmd.query_async(&mut admin).await.unwrap_or_else(|e| {
            panic!("CLUSTER SETSLOT {slot} {how:?} on {node}: {e}");
        });
    }

    /// Moves the (empty) slot of `key` from `from` to `to` on every primary, behind the
    /// router's back.
    async fn move_slot(&self, key: &str, from: SocketAddr, to: SocketAddr) {
        let slot = self.slot(key).await;
        let (from_id, to_id) = (self.id(from).await, self.id(to).await);
        self.setslot(to, slot, &["IMPORTING", &from_id]).await;
        self.setslot(from, slot, &["MIGRATING", &to_id]).await;
        self.finish_move(slot, to, &to_id).await;
    }

    /// Ends a migration of `slot` to `to`: every primary names it the owner.
    async fn finish_move(&self, slot: u16, to: SocketAddr, to_id: &str) {
        self.setslot(to, slot, &["NODE", to_id]).await;
        for node in self.topology.primaries().await.unwrap() {
            if node != to {
                self.setslot(node, slot, &["NODE", to_id]).await;
            }
        }
    }

    /// The number of error replies with `code` that `node` has sent (`INFO errorstats`).
    async fn errors(&self, node: SocketAddr, code: &str) -> u64 {
        let mut admin = self.admin(node).await;
        let info: String = redis::cmd("INFO")
            .arg("errorstats")
            .query_async(&mut admin)
            .await
            .unwrap();
        let prefix = format!("errorstat_{code}:count=");
        info.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map_or(0, |n| n.trim().parse().unwrap())
    }

    async fn get(&self, key: &str) -> Option<String> {
        self.redis.get(key).await.unwrap()
    }
}

/// With writes paused on `node`, runs `command` and kills its connection (`conn`, held in
/// `held_in`) `times` times; its answer.
async fn lost<T: Send + 'static>(
    c: &Cluster,
    node: SocketAddr,
    conn: &str,
    held_in: &str,
    times: usize,
    command: impl std::future::Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    clients::lost(&mut c.admin(node).await, conn, held_in, times, command).await
}

fn ambiguous<T: std::fmt::Debug>(what: &str, result: &Result<T, Error>) {
    assert!(
        matches!(result, Err(Error::Ambiguous { .. })),
        "{what}: lost in flight, not replay-safe: must be Ambiguous, got {result:?}"
    );
}

fn storm<T: std::fmt::Debug>(what: &str, result: &Result<T, Error>) {
    assert!(
        matches!(result, Err(Error::TooManyRedirects { .. })),
        "{what}: a redirect storm must end in TooManyRedirects, got {result:?}"
    );
}

async fn busy_for(node: SocketAddr, ms: u64) -> tokio::task::JoinHandle<()> {
    clients::busy_for(node, ms).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_follows_the_delivery_rules_on_a_cluster() {
    let topology = ClusterTopology::start().await.expect("cluster");
    topology
        .wait_until_ok(Duration::from_secs(30))
        .await
        .unwrap();
    let seeds: Vec<String> = topology
        .seed_nodes()
        .iter()
        .map(|a| a.to_string())
        .collect();
    let config = Config::builder()
        .name(NAME)
        .cluster_nodes(seeds)
        .backoff_base(Duration::from_millis(20))
        .backoff_max(Duration::from_millis(400))
        .health_interval(Duration::from_secs(30))
        .health_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let sup = Supervisor::start(config).await.unwrap();
    sup.wait_until_up(SOON).await.unwrap();
    let c = Cluster {
        topology,
        redis: sup.handle().with_timeout(DEADLINE),
    };
    let primaries = c.topology.primaries().await.unwrap();
    let (a, b, other) = (primaries[0], primaries[1], primaries[2]);

    refusals(&c, a, other).await;
    losses(&c, b, other).await;
    redirects(&c, a, b, other).await;
    storms(&c, a, b, other).await;
    pipelines_per_slot(&c).await;
    sup.shutdown().await;
}

/// 1. BUSY on `a`: each kind waits and is answered once the script ends.
async fn refusals(c: &Cluster, a: SocketAddr, other: SocketAddr) {
    let k = c.key_on(a, "busy").await;
    let elsewhere = c.key_on(other, "calm").await;
    let before = c.errors(a, "BUSY").await;
    let script = busy_for(a, 700).await;
    let r = &c.redis;
    let typed = tokio::spawn({
        let (r, k) = (r.clone(), k.clone());
        async move { r.incr(format!("{k}:n")).await }
    });
    let pipeline = tokio::spawn({
        let (r, k) = (r.clone(), k.clone());
        async move {
            let pipe = redis::pipe()
                .incr(format!("{k}:p"), 1)
                .incr(format!("{k}:p"), 1)
                .clone();
            r.pipeline::<(i64, i64)>(pipe).await
        }
    });
    let split = tokio::spawn({
        let (r, k, e) = (r.clone(), k.clone(), elsewhere.clone());
        async move {
            r.mset([(format!("{k}:m"), "1"), (format!("{e}:m"), "2")])
                .await
        }
    });
    let blocking = tokio::spawn({
        let (r, k) = (r.clone(), k.clone());
        async move {
            r.blpop::<_, Option<(String, String)>>(&[format!("{k}:q")], Duration::from_secs(6))
                .await
        }
    });
    script.await.unwrap();
    assert_eq!(typed.await.unwrap().expect("INCR after BUSY"), 1);
    assert_eq!(
        pipeline.await.unwrap().expect("pipeline after BUSY"),
        (1, 2)
    );
    split.await.unwrap().expect("split MSET after BUSY");
    assert_eq!(c.get(&format!("{k}:m")).await.as_deref(), Some("1"));
    assert_eq!(c.get(&format!("{elsewhere}:m")).await.as_deref(), Some("2"));
    let mut admin = c.admin(a).await;
    held(&mut admin, BLOCKING, "blpop").await;
    let _: i64 = c
        .redis
        .cmd(redis::cmd("RPUSH").arg(format!("{k}:q")).arg("job").clone())
        .await
        .unwrap();
    let popped = blocking.await.unwrap().expect("BLPOP after BUSY");
    assert_eq!(popped.map(|(_, v)| v).as_deref(), Some("job"));
    let refused = c.errors(a, "BUSY").await - before;
    assert!(
        refused >= 4,
        "every kind was refused at least once ({refused} BUSY replies)"
    );
}

/// 2. Connections to `b` lost with commands in flight.
async fn losses(c: &Cluster, b: SocketAddr, other: SocketAddr) {
    let k = c.key_on(b, "lost").await;
    let elsewhere = c.key_on(other, "safe").await;
    let r = c.redis.clone();

    let (r2, key) = (r.clone(), format!("{k}:n"));
    ambiguous(
        "INCR",
        &lost(c, b, SHARED, "incr", 1, async move { r2.incr(key).await }).await,
    );
    let (r2, key) = (r.clone(), format!("{k}:s"));
    lost(
        c,
        b,
        SHARED,
        "set",
        1,
        async move { r2.set(key, "v").await },
    )
    .await
    .expect("SET sent again after a loss");
    assert_eq!(c.get(&format!("{k}:s")).await.as_deref(), Some("v"));
    let (r2, key) = (r.clone(), format!("{k}:s2"));
    ambiguous(
        "SET lost twice",
        &lost(
            c,
            b,
            SHARED,
            "set",
            2,
            async move { r2.set(key, "v").await },
        )
        .await,
    );

    let pipe = redis::pipe()
        .incr(format!("{k}:p"), 1)
        .incr(format!("{k}:p"), 1)
        .clone();
    let (r2, p2) = (r.clone(), pipe.clone());
    ambiguous(
        "pipeline",
        &lost(c, b, SHARED, "incrby", 1, async move {
            r2.pipeline::<(i64, i64)>(p2).await
        })
        .await,
    );
    let r2 = r.clone();
    let replies = lost(c, b, SHARED, "incrby", 1, async move {
        r2.pipeline_idempotent::<(i64, i64)>(pipe).await
    })
    .await;
    assert_eq!(replies.expect("replay-safe pipeline sent again"), (1, 2));

    let (r2, key) = (r.clone(), format!("{k}:q"));
    ambiguous(
        "BLPOP",
        &lost(c, b, BLOCKING, "blpop", 1, async move {
            r2.blpop::<_, Option<(String, String)>>(&[key], Duration::from_secs(6))
                .await
        })
        .await,
    );

    // Split: DEL's part on `b` lost (not replay-safe); MSET's part on `b` sent again.
    let (r2, keys) = (r.clone(), [format!("{k}:s"), format!("{elsewhere}:x")]);
    ambiguous(
        "split DEL",
        &lost(c, b, SHARED, "del", 1, async move { r2.del(keys).await }).await,
    );
    let (r2, pairs) = (
        r.clone(),
        [(format!("{k}:m"), "1"), (format!("{elsewhere}:m"), "2")],
    );
    lost(c, b, SHARED, "mset", 1, async move { r2.mset(pairs).await })
        .await
        .expect("split MSET sent again");
    assert_eq!(c.get(&format!("{k}:m")).await.as_deref(), Some("1"));
}

/// 3. MOVED and ASK followed by every kind.
async fn redirects(c: &Cluster, a: SocketAddr, b: SocketAddr, other: SocketAddr) {
    let r = &c.redis;
    let moved_before = c.errors(a, "MOVED").await;

    // A non-idempotent command follows a MOVED: not a replay.
    let k = c.key_on(a, "mv-typed").await;
    c.move_slot(&k, a, b).await;
    assert_eq!(r.incr(format!("{k}:n")).await.expect("INCR after MOVED"), 1);

    let k = c.key_on(a, "mv-pipe").await;
    c.move_slot(&k, a, b).await;
    let pipe = redis::pipe()
        .incr(format!("{k}:p"), 1)
        .incr(format!("{k}:p"), 1)
        .clone();
    assert_eq!(
        r.pipeline::<(i64, i64)>(pipe)
            .await
            .expect("pipeline after MOVED"),
        (1, 2)
    );

    let k = c.key_on(a, "mv-block").await;
    c.move_slot(&k, a, b).await;
    // Pushed on `b` directly: the router still sends the list's commands to `a`.
    let _: i64 = redis::cmd("RPUSH")
        .arg(format!("{k}:q"))
        .arg("job")
        .query_async(&mut c.admin(b).await)
        .await
        .unwrap();
    let popped = r
        .blpop::<_, Option<(String, String)>>(&[format!("{k}:q")], Duration::from_secs(2))
        .await
        .expect("BLPOP after MOVED");
    assert_eq!(popped.map(|(_, v)| v).as_deref(), Some("job"));

    let k = c.key_on(a, "mv-split").await;
    let e = c.key_on(other, "mv-split-other").await;
    c.move_slot(&k, a, b).await;
    assert_eq!(
        r.del([format!("{k}:x"), format!("{e}:x")])
            .await
            .expect("split DEL after MOVED"),
        0
    );
    assert!(
        c.errors(a, "MOVED").await > moved_before || c.errors(b, "MOVED").await > 0,
        "the commands met MOVED replies"
    );

    // Redirected, then lost: still sent again (the redirect spent no replay budget).
    let k = c.key_on(a, "mv-lost").await;
    c.move_slot(&k, a, b).await;
    let (r2, key) = (r.clone(), format!("{k}:s"));
    lost(
        c,
        b,
        SHARED,
        "set",
        1,
        async move { r2.set(key, "v").await },
    )
    .await
    .expect("SET redirected then lost: sent again");

    // ASK: the slot is migrating from `a` to `b` and the key is not on `a`.
    let k = c.key_on(a, "ask").await;
    let slot = c.slot(&k).await;
    let (a_id, b_id) = (c.id(a).await, c.id(b).await);
    c.setslot(b, slot, &["IMPORTING", &a_id]).await;
    c.setslot(a, slot, &["MIGRATING", &b_id]).await;
    let asked_before = c.errors(a, "ASK").await;
    assert_eq!(r.incr(format!("{k}:n")).await.expect("INCR after ASK"), 1);
    assert!(c.errors(a, "ASK").await > asked_before, "INCR met an ASK");
    // A pipeline's ASK waits for the migration to end (it is not sent behind ASKING).
    let asked_before = c.errors(a, "ASK").await;
    let pipeline = tokio::spawn({
        let (r, k) = (r.clone(), k.clone());
        async move {
            let pipe = redis::pipe()
                .incr(format!("{k}:p"), 1)
                .incr(format!("{k}:p"), 1)
                .clone();
            r.pipeline::<(i64, i64)>(pipe).await
        }
    });
    poll_until("the pipeline met the ASK", SOON, async || {
        c.errors(a, "ASK").await > asked_before
    })
    .await;
    c.finish_move(slot, b, &b_id).await;
    assert_eq!(pipeline.await.unwrap().expect("pipeline after ASK"), (1, 2));
    assert_eq!(c.get(&format!("{k}:n")).await.as_deref(), Some("1"));
}

/// 4. A slot that `a` says is `b`'s and `b` says is `a`'s.
async fn storms(c: &Cluster, a: SocketAddr, b: SocketAddr, other: SocketAddr) {
    let k = c.key_on(a, "storm").await;
    let e = c.key_on(other, "storm-other").await;
    let slot = c.slot(&k).await;
    let (a_id, b_id) = (c.id(a).await, c.id(b).await);
    c.setslot(a, slot, &["NODE", &b_id]).await;
    let r = &c.redis;
    let start = Instant::now();
    storm("INCR", &r.incr(format!("{k}:n")).await);
    let pipe = redis::pipe().incr(format!("{k}:p"), 1).clone();
    storm("pipeline", &r.pipeline::<(i64,)>(pipe).await);
    storm(
        "BLPOP",
        &r.blpop::<_, Option<(String, String)>>(&[format!("{k}:q")], Duration::from_secs(1))
            .await,
    );
    storm(
        "split MGET",
        &r.mget::<_, String>([format!("{k}:x"), format!("{e}:x")])
            .await,
    );
    assert!(
        start.elapsed() < 4 * DEADLINE,
        "each storm ended within its deadline ({:?} for four)",
        start.elapsed()
    );
    c.setslot(a, slot, &["NODE", &a_id]).await;
    assert_eq!(r.incr(format!("{k}:n")).await.expect("served again"), 1);
}

/// A pattern's pipeline over keys of many slots goes one pipeline per slot: the loop never
/// splits a pipeline, so whoever builds one over many keys groups them.
async fn pipelines_per_slot(c: &Cluster) {
    let cache = redis_supervisor::cache::Cache::builder(c.redis.clone())
        .namespace("dlv")
        .on_unavailable(redis_supervisor::cache::Degrade::Fail)
        .build()
        .unwrap();
    let items: Vec<(String, u32)> = (0..50).map(|i| (format!("item:{i}"), i)).collect();
    cache.set_many(&items).await.expect("set_many across slots");
    let keys: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
    let got: Vec<Option<u32>> = cache.get_many(&keys).await.unwrap();
    assert_eq!(got, (0..50).map(Some).collect::<Vec<_>>());
}
