//! Running a pattern's Lua script: by its SHA (`EVALSHA`), and once more with its body (`EVAL`)
//! when the server does not have it (`NOSCRIPT`: after a restart or `SCRIPT FLUSH`; it did not
//! run, so sending it again is safe for any script).
//!
//! Why scripts and not `MULTI`/`WATCH`: a script runs atomically on the server in one round trip
//! and can branch on what it reads (compare-and-delete, "set only if absent, then count"); a
//! `WATCH` transaction needs two or more round trips and a retry loop under contention, and a
//! lost connection between its steps leaves the caller unable to tell what happened.
//!
//! Delivery: a script that writes is sent with [`RedisHandle::cmd`] (never replayed; a lost
//! connection is [`Error::Ambiguous`]); a read-only script may be sent replay-safe.

use redis::FromRedisValue;

use crate::error::Error;
use crate::handle::RedisHandle;

/// A Lua script and its SHA1, computed once.
pub(crate) struct Lua {
    source: &'static str,
    hash: String,
}

impl Lua {
    pub(crate) fn new(source: &'static str) -> Self {
        Lua {
            source,
            hash: redis::Script::new(source).get_hash().to_string(),
        }
    }

    /// The script's SHA1 (for `EVALSHA`).
    pub(crate) fn hash(&self) -> &str {
        &self.hash
    }

    /// The script's body (for `EVAL`).
    pub(crate) fn source(&self) -> &'static str {
        self.source
    }

    /// Runs the script with the `numkeys`, keys and arguments `args` appends. `replay_safe`
    /// only for scripts that do not write.
    pub(crate) async fn run<RV: FromRedisValue>(
        &self,
        handle: &RedisHandle,
        replay_safe: bool,
        args: impl Fn(&mut redis::Cmd),
    ) -> Result<RV, Error> {
        let cmd = |name: &str, script: &str| {
            let mut cmd = redis::cmd(name);
            cmd.arg(script);
            args(&mut cmd);
            cmd
        };
        match send(handle, replay_safe, cmd("EVALSHA", &self.hash)).await {
            Err(e) if e.server_code() == Some("NOSCRIPT") => {
                send(handle, replay_safe, cmd("EVAL", self.source)).await
            }
            other => other,
        }
    }
}

async fn send<RV: FromRedisValue>(
    handle: &RedisHandle,
    replay_safe: bool,
    cmd: redis::Cmd,
) -> Result<RV, Error> {
    if replay_safe {
        handle.cmd_idempotent(cmd).await
    } else {
        handle.cmd(cmd).await
    }
}
