//! The server's side of a test: admin connections without a reply timeout, the clients
//! `CLIENT LIST` shows, a client held in a command and killed there, a script that keeps a
//! server busy.

use std::fmt::Display;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis_supervisor::Error;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Generous deadline for what should happen soon.
const SOON: Duration = Duration::from_secs(10);

/// A raw redis-rs connection to `addr` (`host:port`) with no response timeout (redis-rs's default
/// of 500 ms would cut a stall or a `DEBUG RELOAD` short).
pub async fn admin_at(addr: impl Display) -> MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(None)
        .set_connection_timeout(Some(Duration::from_secs(5)));
    redis::Client::open(format!("redis://{addr}"))
        .expect("admin URL")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("admin connection")
}

/// Keeps the server's only thread busy for `ms` milliseconds with a Lua loop on `TIME` (stock
/// Redis, no `DEBUG` needed): it answers nobody meanwhile (or `BUSY`, past the server's
/// `busy-reply-threshold`), then serves everything queued.
pub async fn stall(admin: &mut MultiplexedConnection, ms: u64) {
    const SPIN: &str = "local t = redis.call('TIME') \
        local stop = t[1] * 1000000 + t[2] + tonumber(ARGV[1]) * 1000 \
        repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= stop \
        return 1";
    let _: i64 = redis::cmd("EVAL")
        .arg(SPIN)
        .arg(0)
        .arg(ms)
        .query_async(admin)
        .await
        .expect("stall script");
}

/// Starts a script that keeps the server at `addr` busy for `ms` (its scripts counting as busy
/// after 100 ms) and returns once the server answers `BUSY` to others; the task ends with the
/// script.
pub async fn busy_for(addr: impl Display, ms: u64) -> JoinHandle<()> {
    let mut conn = admin_at(&addr).await;
    client_config(&mut conn, &["SET", "lua-time-limit", "100"]).await;
    let script = tokio::spawn(async move { stall(&mut conn, ms).await });
    let mut probe = admin_at(&addr).await;
    let start = Instant::now();
    loop {
        let reply: redis::RedisResult<redis::Value> =
            redis::cmd("PING").query_async(&mut probe).await;
        match reply {
            Err(e) if e.code() == Some("BUSY") => return script,
            _ if start.elapsed() > SOON => panic!("{addr} never answered BUSY"),
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// `CONFIG <args>` on `admin`.
async fn client_config(admin: &mut MultiplexedConnection, args: &[&str]) {
    let _: redis::Value = redis::cmd("CONFIG")
        .arg(args)
        .query_async(admin)
        .await
        .expect("CONFIG");
}

/// `CLIENT <args>` on `admin` (`PAUSE 30000 WRITE`, `UNPAUSE`, `KILL ID 7`, ...).
pub async fn client(admin: &mut MultiplexedConnection, args: &[&str]) {
    let _: redis::Value = redis::cmd("CLIENT")
        .arg(args)
        .query_async(admin)
        .await
        .expect("CLIENT");
}

/// One line of `CLIENT LIST`.
#[derive(Debug)]
pub struct Listed {
    line: String,
}

impl Listed {
    /// The value of `field` (`name`, `flags`, `cmd`, `qbuf`, ...); empty when absent.
    pub fn field(&self, field: &str) -> &str {
        self.line
            .split(' ')
            .find_map(|kv| kv.strip_prefix(field).and_then(|v| v.strip_prefix('=')))
            .unwrap_or("")
    }

    /// The client's id.
    pub fn id(&self) -> u64 {
        self.field("id").parse().expect("client id")
    }

    /// Whether the client is held in `cmd` (lower case): blocked (flag `b`) with that command
    /// last.
    pub fn held_in(&self, cmd: &str) -> bool {
        self.field("flags").contains('b') && self.field("cmd") == cmd
    }
}

/// The server's clients (`CLIENT LIST`).
pub async fn clients(admin: &mut MultiplexedConnection) -> Vec<Listed> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(admin)
        .await
        .expect("CLIENT LIST");
    list.lines()
        .map(|line| Listed {
            line: line.to_string(),
        })
        .collect()
}

/// Waits (up to 10 s) until a client named `name` is held in `cmd` (lower case); its id.
pub async fn held(admin: &mut MultiplexedConnection, name: &str, cmd: &str) -> u64 {
    let start = Instant::now();
    loop {
        let listed = clients(admin).await;
        let found = listed
            .iter()
            .find(|c| c.field("name") == name && c.held_in(cmd));
        if let Some(c) = found {
            return c.id();
        }
        assert!(
            start.elapsed() < SOON,
            "no client {name} held in {cmd}: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// With writes paused on `admin`'s server, runs `command` (spawned) and kills its connection,
/// named `conn`, `times` times, each time once it is held in `held_in` again; then lets writes
/// run. The command's answer.
pub async fn lost<T: Send + 'static>(
    admin: &mut MultiplexedConnection,
    conn: &str,
    held_in: &str,
    times: usize,
    command: impl Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    client(admin, &["PAUSE", "30000", "WRITE"]).await;
    let task = tokio::spawn(command);
    for _ in 0..times {
        let id = held(admin, conn, held_in).await;
        client(admin, &["KILL", "ID", &id.to_string()]).await;
    }
    client(admin, &["UNPAUSE"]).await;
    task.await.expect("the command's task")
}
