//! What the crate knows about a Redis command from its name and arguments (pure; no I/O): the one
//! reader of a command's arguments. Every other module asks here:
//!
//! - [`args`] / [`name`]: the arguments as sent, the name first.
//! - [`key`]: the argument that decides a command's hash slot on a cluster.
//! - [`is_read_only`]: whether it only reads (a replica may serve it).
//! - [`blocking_time`], [`with_block_time`]: whether it blocks the connection, and for how long.
//! - [`shared_refusal`]: whether it would change the state of a connection that many callers
//!   share (the table below), and so must never be written on one.
//!
//! The table of commands refused on a shared connection, with what to use instead, is public:
//! the `handle` module's docs ("Commands that change the connection's state"). Both change
//! together.

use std::time::Duration;

use crate::error::Error;

/// A command's arguments as sent, its name first (cursor placeholders left out).
pub(crate) fn args(cmd: &redis::Cmd) -> impl Iterator<Item = &[u8]> {
    cmd.args_iter().filter_map(|a| match a {
        redis::Arg::Simple(b) => Some(b),
        _ => None,
    })
}

/// The name of a command: its first argument, as sent.
pub(crate) fn name(cmd: &redis::Cmd) -> Option<&[u8]> {
    args(cmd).next()
}

/// Why a command must not be written on a shared connection: `Some` with the advice, `None` for
/// a command that may (see the `handle` module's docs).
fn state_change(cmd: &redis::Cmd) -> Option<&'static str> {
    let mut args = args(cmd);
    let name = args.next()?;
    // Most commands are none of these: told apart by their first letter, without comparing names.
    if !matches!(
        name.first().map(u8::to_ascii_uppercase),
        Some(b'A' | b'C' | b'D' | b'E' | b'H' | b'M' | b'P' | b'Q' | b'R' | b'S' | b'U' | b'W')
    ) {
        return None;
    }
    let is = |names: &[&[u8]]| names.iter().any(|n| name.eq_ignore_ascii_case(n));
    if is(&[b"SELECT"]) {
        return Some(
            "choose the database with Config::db (REDIS_DB), or run a second supervisor for another database",
        );
    }
    if is(&[b"AUTH", b"HELLO"]) {
        return Some(
            "the connection authenticates with the Config's credentials (REDIS_USERNAME, REDIS_PASSWORD) and speaks RESP3; run a second supervisor for another user",
        );
    }
    if is(&[b"RESET", b"QUIT"]) {
        return Some("the supervisor owns the connection: Supervisor::shutdown closes it");
    }
    if is(&[b"MULTI", b"EXEC", b"DISCARD"]) {
        return Some(
            "send the commands as pipeline(redis::pipe().atomic()...), or use RedisHandle::transaction for check-and-set",
        );
    }
    if is(&[b"WATCH", b"UNWATCH"]) {
        return Some("use RedisHandle::transaction, which WATCHes on a connection of its own");
    }
    if is(&[
        b"SUBSCRIBE",
        b"PSUBSCRIBE",
        b"SSUBSCRIBE",
        b"UNSUBSCRIBE",
        b"PUNSUBSCRIBE",
        b"SUNSUBSCRIBE",
    ]) {
        return Some("subscribe with Supervisor::pubsub(), on the subscriber connection");
    }
    if is(&[b"MONITOR", b"SYNC", b"PSYNC", b"REPLCONF"]) {
        return Some("it turns the connection into a stream; run it from redis-cli");
    }
    if is(&[b"READONLY", b"READWRITE", b"ASKING"]) {
        return Some("cluster routing and ASK redirects are the crate's own");
    }
    if is(&[b"CLIENT"]) {
        let sub = args.next()?;
        let sub_is = |names: &[&[u8]]| names.iter().any(|n| sub.eq_ignore_ascii_case(n));
        if sub_is(&[b"SETNAME", b"SETINFO"]) {
            return Some("the crate names its connections after Config::name (REDIS_CLIENT_NAME)");
        }
        if sub_is(&[b"REPLY", b"TRACKING", b"CACHING", b"NO-EVICT", b"NO-TOUCH"]) {
            return Some("it changes what the connection does for every caller");
        }
    }
    None
}

/// The error for a command that would change the state of a connection every caller shares
/// (see the `handle` module's docs); `None` when it may be written on one. An empty command is
/// refused too (it has no name to send).
pub(crate) fn shared_refusal(cmd: &redis::Cmd) -> Option<Error> {
    let Some(name) = name(cmd) else {
        return Some(Error::InvalidArgument(
            "empty command: redis::cmd(name) needs a command name".into(),
        ));
    };
    let advice = state_change(cmd)?;
    let mut shown = String::from_utf8_lossy(name).to_ascii_uppercase();
    if shown == "CLIENT"
        && let Some(sub) = args(cmd).nth(1)
    {
        shown.push(' ');
        shown.push_str(&String::from_utf8_lossy(sub).to_ascii_uppercase());
    }
    Some(Error::InvalidArgument(format!(
        "{shown} changes the state of the connection that every caller of this supervisor shares, so it is never sent on it: {advice}"
    )))
}

/// [`shared_refusal`] for each command of a pipeline (an empty pipeline is refused too).
pub(crate) fn pipeline_refusal(pipe: &redis::Pipeline) -> Option<Error> {
    let mut any = false;
    for (i, cmd) in pipe.cmd_iter().enumerate() {
        any = true;
        if let Some(Error::InvalidArgument(why)) = shared_refusal(cmd) {
            return Some(Error::InvalidArgument(format!(
                "command {} of the pipeline: {why}",
                i + 1
            )));
        }
    }
    (!any).then(|| Error::InvalidArgument("empty pipeline: add at least one command".into()))
}

/// The argument that decides a command's slot (its first key), or `None` for a command
/// without arguments (it may run on any primary). Commands whose key is not their first
/// argument are listed; every other is taken to have its key first — for a keyless command such
/// as `CONFIG GET` that only picks some primary, and a wrong guess costs one `MOVED`, which is
/// followed: routing corrects itself.
pub(crate) fn key(cmd: &redis::Cmd) -> Option<&[u8]> {
    let mut args = args(cmd);
    let name = args.next()?;
    // Most commands (GET, SET, HGET, …) are none of the listed ones: told apart by their first
    // letter, without comparing names.
    if !matches!(
        name.first().map(u8::to_ascii_uppercase),
        Some(b'B' | b'E' | b'F' | b'L' | b'M' | b'O' | b'S' | b'W' | b'X' | b'Z')
    ) {
        return args.next();
    }
    let is = |names: &[&[u8]]| names.iter().any(|n| name.eq_ignore_ascii_case(n));
    if is(&[
        b"EVAL",
        b"EVALSHA",
        b"EVAL_RO",
        b"EVALSHA_RO",
        b"FCALL",
        b"FCALL_RO",
    ]) {
        let _script = args.next()?;
        let numkeys = std::str::from_utf8(args.next()?)
            .ok()?
            .parse::<usize>()
            .ok()?;
        return (numkeys > 0).then(|| args.next()).flatten();
    }
    if is(&[b"XREAD", b"XREADGROUP"]) {
        args.position(|a| a.eq_ignore_ascii_case(b"STREAMS"))?;
        return args.next();
    }
    // No key at all.
    if is(&[b"WAIT", b"WAITAOF"]) {
        return None;
    }
    // The key after a timeout and a key count.
    if is(&[b"BLMPOP", b"BZMPOP"]) {
        return args.nth(2);
    }
    // The key after a key count, or after a subcommand or operation.
    if is(&[
        b"LMPOP",
        b"ZMPOP",
        b"SINTERCARD",
        b"ZINTERCARD",
        b"ZDIFF",
        b"ZINTER",
        b"ZUNION",
        b"BITOP",
        b"OBJECT",
        b"XINFO",
        b"XGROUP",
        b"MEMORY",
    ]) {
        return args.nth(1);
    }
    args.next()
}

/// Whether a command only reads, so that a replica may serve it.
pub(crate) fn is_read_only(cmd: &redis::Cmd) -> bool {
    let Some(name) = name(cmd) else {
        return false;
    };
    [
        &b"GET"[..],
        b"MGET",
        b"EXISTS",
        b"PTTL",
        b"TTL",
        b"STRLEN",
        b"GETRANGE",
        b"HGET",
        b"HMGET",
        b"HGETALL",
        b"HEXISTS",
        b"HLEN",
        b"HKEYS",
        b"HVALS",
        b"LRANGE",
        b"LLEN",
        b"LINDEX",
        b"SMEMBERS",
        b"SISMEMBER",
        b"SCARD",
        b"ZRANGE",
        b"ZSCORE",
        b"ZCARD",
        b"ZRANK",
        b"ZCOUNT",
        b"TYPE",
        b"XRANGE",
        b"XLEN",
    ]
    .iter()
    .any(|n| name.eq_ignore_ascii_case(n))
}

/// How a command blocks, from its name and arguments: `Some(Ok(block))` for a blocking command
/// that blocks up to `block`, `Some(Err(_))` for one that would block forever (timeout 0) or
/// whose timeout is not a number, `None` for a command that does not block.
pub(crate) fn blocking_time(cmd: &redis::Cmd) -> Option<Result<Duration, Error>> {
    let mut args = args(cmd);
    let name = args.next()?;
    // Most commands are rejected on their first letter, without an allocation.
    if !matches!(name.first(), Some(b'B' | b'b' | b'W' | b'w' | b'X' | b'x')) {
        return None;
    }
    let upper = name.to_ascii_uppercase();
    let args: Vec<&[u8]> = args.collect();
    let (arg, unit) = match upper.as_slice() {
        b"BLPOP" | b"BRPOP" | b"BZPOPMIN" | b"BZPOPMAX" | b"BLMOVE" | b"BRPOPLPUSH" => {
            (args.last().copied(), Unit::Seconds)
        }
        b"BLMPOP" | b"BZMPOP" => (args.first().copied(), Unit::Seconds),
        b"WAIT" | b"WAITAOF" => (args.last().copied(), Unit::Millis),
        b"XREAD" | b"XREADGROUP" => {
            let at = args.iter().position(|a| a.eq_ignore_ascii_case(b"BLOCK"))?;
            (args.get(at + 1).copied(), Unit::Millis)
        }
        _ => return None,
    };
    let name = String::from_utf8_lossy(&upper).into_owned();
    Some(parse_block(&name, arg, unit))
}

/// `cmd` with its block time set to `block` (at least 10 ms: 0 would block forever), for a
/// command that waited for a connection and has less of its deadline left than it would block;
/// `None` when `cmd` is not a blocking command whose block time this knows.
pub(crate) fn with_block_time(cmd: &redis::Cmd, block: Duration) -> Option<redis::Cmd> {
    let args: Vec<&[u8]> = args(cmd).collect();
    let name = args.first()?.to_ascii_uppercase();
    let last = args.len().checked_sub(1)?;
    let (at, unit) = match name.as_slice() {
        b"BLPOP" | b"BRPOP" | b"BZPOPMIN" | b"BZPOPMAX" | b"BLMOVE" | b"BRPOPLPUSH" => {
            (last, Unit::Seconds)
        }
        b"BLMPOP" | b"BZMPOP" => (1, Unit::Seconds),
        b"WAIT" | b"WAITAOF" => (last, Unit::Millis),
        b"XREAD" | b"XREADGROUP" => (
            args.iter().position(|a| a.eq_ignore_ascii_case(b"BLOCK"))? + 1,
            Unit::Millis,
        ),
        _ => return None,
    };
    if at == 0 || at > last {
        return None;
    }
    let block = block.max(Duration::from_millis(10));
    let value = match unit {
        Unit::Seconds => format!("{:.3}", block.as_secs_f64()),
        Unit::Millis => block.as_millis().to_string(),
    };
    let mut out = redis::cmd(std::str::from_utf8(args[0]).ok()?);
    for (i, a) in args.iter().enumerate().skip(1) {
        if i == at {
            out.arg(value.as_str());
        } else {
            out.arg(*a);
        }
    }
    Some(out)
}

#[derive(Clone, Copy)]
enum Unit {
    Seconds,
    Millis,
}

fn parse_block(name: &str, arg: Option<&[u8]>, unit: Unit) -> Result<Duration, Error> {
    let text = arg.map(String::from_utf8_lossy).unwrap_or_default();
    let secs = text.trim().parse::<f64>().ok().map(|n| match unit {
        Unit::Seconds => n,
        Unit::Millis => n / 1000.0,
    });
    match secs {
        Some(s) if s > 0.0 && s.is_finite() && s <= crate::config::MAX_DURATION.as_secs_f64() => {
            Ok(Duration::from_secs_f64(s))
        }
        Some(0.0) => Err(Error::InvalidArgument(format!(
            "{name} with timeout 0 would block forever; give it a finite timeout (every command \
             here is answered by a deadline)"
        ))),
        _ => Err(Error::InvalidArgument(format!(
            "{name} timeout {text:?} is not a number of {} from just above 0 to 24 h",
            match unit {
                Unit::Seconds => "seconds",
                Unit::Millis => "milliseconds",
            }
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> redis::Cmd {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd
    }

    #[test]
    fn connection_state_changes_are_refused_with_advice() {
        for (args, needle) in [
            (&["select", "5"][..], "Config::db"),
            (&["CLIENT", "reply", "SKIP"], "CLIENT REPLY"),
            (&["CLIENT", "TRACKING", "on"], "CLIENT TRACKING"),
            (&["client", "setname", "x"], "REDIS_CLIENT_NAME"),
            (&["HELLO", "2"], "RESP3"),
            (&["AUTH", "user", "secret-pw"], "REDIS_PASSWORD"),
            (&["RESET"], "shutdown"),
            (&["MULTI"], "atomic"),
            (&["WATCH", "k"], "transaction"),
            (&["MONITOR"], "stream"),
            (&["SUBSCRIBE", "a"], "pubsub"),
            (&["ssubscribe", "a"], "pubsub"),
            (&["READONLY"], "routing"),
            (&["QUIT"], "shutdown"),
        ] {
            let e = shared_refusal(&cmd(args)).map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains(needle)),
                "{args:?}: {e:?}"
            );
        }
        let e = shared_refusal(&cmd(&["AUTH", "user", "secret-pw"])).unwrap();
        assert!(!e.to_string().contains("secret-pw"), "{e}");
        for ok in [
            &["GET", "k"][..],
            &["SET", "k", "v"],
            &["CLIENT", "LIST"],
            &["CLIENT", "KILL", "ID", "7"],
            &["CONFIG", "GET", "port"],
            &["SCAN", "0"],
            &["SUNION", "a", "b"],
            &["EXISTS", "k"],
        ] {
            assert!(shared_refusal(&cmd(ok)).is_none(), "{ok:?}");
        }
        assert!(matches!(
            shared_refusal(&redis::Cmd::new()),
            Some(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn pipelines_are_checked_command_by_command() {
        let mut pipe = redis::pipe();
        pipe.set("k", "v").cmd("SELECT").arg(2).get("k");
        let e = pipeline_refusal(&pipe).map(|e| e.to_string()).unwrap();
        assert!(e.contains("command 2") && e.contains("SELECT"), "{e}");
        assert!(pipeline_refusal(&redis::pipe()).is_some());
        let mut ok = redis::pipe();
        ok.atomic().incr("k", 1).get("k");
        assert!(pipeline_refusal(&ok).is_none());
    }

    #[test]
    fn the_key_is_found_where_each_command_keeps_it() {
        let key = |args: &[&str]| key(&cmd(args)).map(|k| String::from_utf8_lossy(k).into_owned());
        assert_eq!(key(&["GET", "k"]).as_deref(), Some("k"));
        assert_eq!(key(&["set", "k", "v"]).as_deref(), Some("k"));
        assert_eq!(
            key(&["EVALSHA", "abc", "2", "k1", "k2", "a"]).as_deref(),
            Some("k1")
        );
        assert_eq!(key(&["EVAL", "return 1", "0"]), None);
        assert_eq!(
            key(&["XREAD", "COUNT", "1", "STREAMS", "s", "0"]).as_deref(),
            Some("s")
        );
        assert_eq!(
            key(&["BLMPOP", "1", "1", "l", "LEFT"]).as_deref(),
            Some("l")
        );
        assert_eq!(key(&["BLPOP", "l", "m", "1"]).as_deref(), Some("l"));
        assert_eq!(key(&["LMPOP", "1", "l", "LEFT"]).as_deref(), Some("l"));
        assert_eq!(key(&["BITOP", "AND", "dest", "a"]).as_deref(), Some("dest"));
        assert_eq!(key(&["OBJECT", "ENCODING", "k"]).as_deref(), Some("k"));
        assert_eq!(key(&["SADD", "s", "m"]).as_deref(), Some("s"));
        assert_eq!(key(&["WAIT", "1", "100"]), None);
        assert_eq!(key(&["PING"]), None);
    }

    #[test]
    fn blocking_commands_are_found_with_their_block_time() {
        let block = |args: &[&str]| blocking_time(&cmd(args));
        let ok = |args: &[&str]| block(args).and_then(Result::ok);
        assert_eq!(ok(&["blpop", "a", "b", "2"]), Some(Duration::from_secs(2)));
        assert_eq!(ok(&["BRPOP", "a", "0.5"]), Some(Duration::from_millis(500)));
        assert_eq!(
            ok(&["BLMPOP", "3", "1", "a", "LEFT"]),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            ok(&["XREAD", "COUNT", "1", "block", "250", "STREAMS", "s", "$"]),
            Some(Duration::from_millis(250))
        );
        assert_eq!(ok(&["WAIT", "1", "100"]), Some(Duration::from_millis(100)));
        assert!(block(&["XREAD", "STREAMS", "s", "0"]).is_none(), "no BLOCK");
        assert!(block(&["GET", "k"]).is_none());
        let forever = block(&["BLPOP", "a", "0"]).and_then(Result::err);
        assert!(forever.is_some_and(|e| e.to_string().contains("forever")));
        let nan = block(&["BLPOP", "a", "soon"]).and_then(Result::err);
        assert!(nan.is_some_and(|e| e.to_string().contains("\"soon\"")));
        assert!(block(&["BLPOP", "a", "1e12"]).is_some_and(|r| r.is_err()));
    }

    #[test]
    fn block_times_are_shortened_in_place() {
        let short = |args: &[&str], ms: u64| {
            with_block_time(&cmd(args), Duration::from_millis(ms)).map(|c| args_of(&c).join(" "))
        };
        assert_eq!(
            short(&["BLPOP", "a", "b", "5"], 1250).as_deref(),
            Some("BLPOP a b 1.250")
        );
        assert_eq!(
            short(&["BLMPOP", "5", "1", "a", "LEFT"], 300).as_deref(),
            Some("BLMPOP 0.300 1 a LEFT")
        );
        assert_eq!(
            short(&["XREAD", "BLOCK", "5000", "STREAMS", "s", "$"], 700).as_deref(),
            Some("XREAD BLOCK 700 STREAMS s $")
        );
        // Never 0 (forever).
        assert_eq!(
            short(&["BRPOP", "a", "5"], 0).as_deref(),
            Some("BRPOP a 0.010")
        );
        assert_eq!(short(&["GET", "a"], 10), None);
    }

    fn args_of(c: &redis::Cmd) -> Vec<String> {
        args(c)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }
}
