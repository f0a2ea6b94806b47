//! The typed commands of [`RedisHandle`] (`GET`, `SET`, `INCR`, …) and its raw ones (`cmd`,
//! `pipeline`), each built into a request with its label and replay rule, then delivered by the
//! one delivery loop (`delivery.rs`).

use std::time::Duration;

use redis::{FromRedisValue, ToRedisArgs, Value};
use tokio::time::Instant;

use super::{KeyTtl, RedisHandle, SetCondition, SetOptions, never, safe, ttl_ms};
use crate::command::blocking_time;
use crate::error::Error;
use crate::metrics::{CommandLabel, Outcome};
use crate::request::Request;

impl RedisHandle {
    /// `GET key`.
    ///
    /// # Errors
    /// See the [module docs](super); [`Error::ReplyType`] if the value does not convert to `RV`.
    pub async fn get<K: AsRef<[u8]>, RV: FromRedisValue>(&self, key: K) -> Result<RV, Error> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key(key));
        self.query(cmd, safe(CommandLabel::Get)).await
    }

    /// `SET key value`.
    ///
    /// # Errors
    /// See the [module docs](super).
    pub async fn set<K: AsRef<[u8]>, V: ToRedisArgs>(&self, key: K, value: V) -> Result<(), Error> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(value);
        self.query::<Value>(cmd, safe(CommandLabel::Set))
            .await
            .map(drop)
    }

    /// `SET key value PX ttl`: the key expires after `ttl` (millisecond precision).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `ttl` is under 1 ms; otherwise see the [module docs](super).
    pub async fn set_ex<K: AsRef<[u8]>, V: ToRedisArgs>(
        &self,
        key: K,
        value: V,
        ttl: Duration,
    ) -> Result<(), Error> {
        self.set_with(key, value, SetOptions::new().ttl(ttl))
            .await
            .map(drop)
    }

    /// `SET` with options (TTL, `NX`, `XX`). Returns whether the value was set (`NX`/`XX` may
    /// refuse). `NX`/`XX` make the command non-idempotent.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the TTL is under 1 ms; otherwise see the [module docs](super).
    pub async fn set_with<K: AsRef<[u8]>, V: ToRedisArgs>(
        &self,
        key: K,
        value: V,
        options: SetOptions,
    ) -> Result<bool, Error> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(value);
        if let Some(ttl) = options.ttl {
            cmd.arg("PX").arg(ttl_ms("ttl", ttl)?);
        }
        let spec = match options.condition {
            None => safe(CommandLabel::Set),
            Some(SetCondition::Nx) => {
                cmd.arg("NX");
                never(CommandLabel::Set)
            }
            Some(SetCondition::Xx) => {
                cmd.arg("XX");
                never(CommandLabel::Set)
            }
        };
        let v: Value = self.query(cmd, spec).await?;
        Ok(!matches!(v, Value::Nil))
    }

    /// `DEL key [key …]`: returns how many keys were removed. Pass one key as `["k"]`.
    ///
    /// Never replayed: a replay after a lost connection would report 0 removed for a delete
    /// that happened, so a lost connection with it in flight gives [`Error::Ambiguous`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty key list; otherwise see the [module docs](super).
    pub async fn del<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<u64, Error> {
        let cmd = self.cmd_with_keys("DEL", keys)?;
        self.query(cmd, never(CommandLabel::Del)).await
    }

    /// `EXISTS key [key …]`: how many of the keys exist.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty key list; otherwise see the [module docs](super).
    pub async fn exists<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<u64, Error> {
        let cmd = self.cmd_with_keys("EXISTS", keys)?;
        self.query(cmd, safe(CommandLabel::Exists)).await
    }

    /// `PEXPIRE key ttl`: returns whether the key exists (and now expires).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `ttl` is under 1 ms; otherwise see the [module docs](super).
    pub async fn expire<K: AsRef<[u8]>>(&self, key: K, ttl: Duration) -> Result<bool, Error> {
        let mut cmd = redis::cmd("PEXPIRE");
        cmd.arg(self.key(key)).arg(ttl_ms("ttl", ttl)?);
        self.query(cmd, safe(CommandLabel::Expire)).await
    }

    /// `PTTL key`.
    ///
    /// # Errors
    /// See the [module docs](super).
    pub async fn ttl<K: AsRef<[u8]>>(&self, key: K) -> Result<KeyTtl, Error> {
        let mut cmd = redis::cmd("PTTL");
        cmd.arg(self.key(key));
        let ms: i64 = self.query(cmd, safe(CommandLabel::Ttl)).await?;
        Ok(match ms {
            -2 => KeyTtl::Missing,
            ms if ms < 0 => KeyTtl::Persistent,
            ms => KeyTtl::Expires(Duration::from_millis(ms as u64)),
        })
    }

    /// `INCR key`. Not idempotent: never replayed after an ambiguous failure.
    ///
    /// # Errors
    /// [`Error::Server`] (`ERR value is not an integer`) for a non-integer value; otherwise see
    /// the [module docs](super).
    pub async fn incr<K: AsRef<[u8]>>(&self, key: K) -> Result<i64, Error> {
        let mut cmd = redis::cmd("INCR");
        cmd.arg(self.key(key));
        self.query(cmd, never(CommandLabel::Incr)).await
    }

    /// `INCRBY key delta`. Not idempotent.
    ///
    /// # Errors
    /// As [`incr`](Self::incr).
    pub async fn incr_by<K: AsRef<[u8]>>(&self, key: K, delta: i64) -> Result<i64, Error> {
        let mut cmd = redis::cmd("INCRBY");
        cmd.arg(self.key(key)).arg(delta);
        self.query(cmd, never(CommandLabel::IncrBy)).await
    }

    /// `MGET key [key …]`: one `Option` per key, in order.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty key list; otherwise see the [module docs](super).
    pub async fn mget<K: AsRef<[u8]>, RV: FromRedisValue>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Option<RV>>, Error> {
        let cmd = self.cmd_with_keys("MGET", keys)?;
        self.query(cmd, safe(CommandLabel::Mget)).await
    }

    /// `MSET key value [key value …]`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no pairs; otherwise see the [module docs](super).
    pub async fn mset<K: AsRef<[u8]>, V: ToRedisArgs>(
        &self,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<(), Error> {
        let mut cmd = redis::cmd("MSET");
        let mut n = 0;
        for (k, v) in pairs {
            cmd.arg(self.key(k)).arg(v);
            n += 1;
        }
        if n == 0 {
            return Err(Error::InvalidArgument(
                "MSET needs at least one pair".into(),
            ));
        }
        self.query::<Value>(cmd, safe(CommandLabel::Mset))
            .await
            .map(drop)
    }

    /// `PING`: returns the round-trip time.
    ///
    /// # Errors
    /// See the [module docs](super).
    pub async fn ping(&self) -> Result<Duration, Error> {
        let start = Instant::now();
        let _: Value = self
            .query(redis::cmd("PING"), safe(CommandLabel::Ping))
            .await?;
        Ok(start.elapsed())
    }

    /// `PUBLISH channel payload`: returns how many subscribers received it (on this server).
    /// The channel is sent as given (no key prefix). Never replayed: a replay would deliver the
    /// message twice. Subscribe with [`Supervisor::pubsub`](crate::Supervisor::pubsub).
    ///
    /// # Errors
    /// See the [module docs](super).
    pub async fn publish<C: AsRef<[u8]>, P: ToRedisArgs>(
        &self,
        channel: C,
        payload: P,
    ) -> Result<u64, Error> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel.as_ref()).arg(payload);
        self.query(cmd, never(CommandLabel::Publish)).await
    }

    /// Any command that does not change the connection's own state, as a [`redis::Cmd`]. Keys
    /// are sent as given (no key prefix). Treated as non-idempotent: never replayed after an
    /// ambiguous failure.
    ///
    /// The connection is shared by every caller of the supervisor, so a command that would change
    /// what it is for all of them — `SELECT`, `CLIENT REPLY`, `MULTI`/`WATCH`, `SUBSCRIBE`,
    /// `MONITOR`, `HELLO`, `AUTH`, `RESET`, … — is refused with [`Error::InvalidArgument`] naming
    /// the API to use instead, and never sent (the table is in the
    /// [module docs](super#commands-that-change-the-connections-state)).
    ///
    /// A blocking command (`BLPOP`, `BRPOP`, `BLMOVE`, `BRPOPLPUSH`, `BLMPOP`, `BZPOPMIN`,
    /// `BZPOPMAX`, `BZMPOP`, `XREAD`/`XREADGROUP` with `BLOCK`, `WAIT`, `WAITAOF`) is found by
    /// name and runs on the blocking pool, as the typed [`blpop`](Self::blpop) & co. do, with its
    /// own block time (read from its arguments) plus this handle's timeout as its deadline. One
    /// whose timeout is 0 (block forever) or not a number is refused with
    /// [`Error::InvalidArgument`]: every command here is answered by a deadline. (Inside a
    /// pipeline or `MULTI` they do not block, and run as they are.)
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty command or one that changes the connection's
    /// state; otherwise see the [module docs](super).
    pub async fn cmd<RV: FromRedisValue>(&self, cmd: redis::Cmd) -> Result<RV, Error> {
        if let Some(refused) = crate::command::shared_refusal(&cmd) {
            return Err(self.refuse(&Request::raw(cmd), refused));
        }
        if let Some(block) = blocking_time(&cmd) {
            return self.raw_blocking(cmd, block, false).await;
        }
        self.run(Request::raw(cmd), false).await
    }

    /// Like [`cmd`](Self::cmd), for a command you know is safe to run twice *and whose reply
    /// means the same when it runs twice*: it is retried once on a new connection if the
    /// connection is lost before its reply.
    ///
    /// # Errors
    /// As [`cmd`](Self::cmd).
    pub async fn cmd_idempotent<RV: FromRedisValue>(&self, cmd: redis::Cmd) -> Result<RV, Error> {
        if let Some(refused) = crate::command::shared_refusal(&cmd) {
            return Err(self.refuse(&Request::raw(cmd), refused));
        }
        if let Some(block) = blocking_time(&cmd) {
            return self.raw_blocking(cmd, block, true).await;
        }
        self.run(Request::raw(cmd), true).await
    }

    /// Runs a [`redis::Pipeline`] in one round trip; `redis::pipe().atomic()` wraps it in
    /// `MULTI`/`EXEC`. Treated as non-idempotent. No key prefix is applied. Each command is
    /// checked as [`cmd`](Self::cmd) checks one: none may change the connection's state (a
    /// `MULTI` of your own among them included: use `.atomic()`).
    ///
    /// ```no_run
    /// # async fn run(redis: redis_supervisor::RedisHandle) -> Result<(), redis_supervisor::Error> {
    /// let (n, v): (i64, String) = redis
    ///     .pipeline(redis::pipe().atomic().incr("hits", 1).get("name").clone())
    ///     .await?;
    /// # let _ = (n, v); Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty pipeline or one holding a command that changes
    /// the connection's state; [`Error::Server`] for the first failing command; otherwise see
    /// the [module docs](super).
    pub async fn pipeline<RV: FromRedisValue>(&self, pipe: redis::Pipeline) -> Result<RV, Error> {
        self.run_pipeline(pipe, false).await
    }

    /// Like [`pipeline`](Self::pipeline), for pipelines that are safe to run twice.
    ///
    /// # Errors
    /// As [`pipeline`](Self::pipeline).
    pub async fn pipeline_idempotent<RV: FromRedisValue>(
        &self,
        pipe: redis::Pipeline,
    ) -> Result<RV, Error> {
        self.run_pipeline(pipe, true).await
    }

    async fn run_pipeline<RV: FromRedisValue>(
        &self,
        pipe: redis::Pipeline,
        replay_safe: bool,
    ) -> Result<RV, Error> {
        if let Some(refused) = crate::command::pipeline_refusal(&pipe) {
            return Err(self.refuse(&Request::pipeline(pipe), refused));
        }
        self.run(Request::pipeline(pipe), replay_safe).await
    }

    /// A command refused before it was sent (a caller's mistake): counted, and answered `error`.
    fn refuse(&self, request: &Request, error: Error) -> Error {
        let label = request.label();
        self.core
            .metrics()
            .command(label, Outcome::Error, Duration::ZERO);
        error
    }
}
