//! [`SentinelTopology`]: a Redis master, one replica and three sentinels on loopback, for failover tests.
//!
//! The two data nodes are [`RedisServer`]s (the second one started with `--replicaof` the first). The
//! sentinels are `redis-server <conf> --sentinel` children of their own, run the same way: a reserved free
//! port of `127.0.0.1`, a private temporary directory holding a writable `sentinel.conf` (sentinels rewrite
//! it) and the log, readiness by `PING`, and only ever the fixture's own child pid signalled. Every node
//! announces `127.0.0.1`, so the addresses the sentinels report are the ones a test connects to.
//!
//! To keep tests short the sentinels run with small timers: `down-after-milliseconds` and
//! `failover-timeout` come from the [builder](SentinelTopologyBuilder) (1 s and 3 s by default), and after
//! every (re)start the fixture sends `SENTINEL DEBUG info-period 1000 ping-period 500 ask-period 500
//! publish-period 500 tilt-period 5000` (the defaults are 10 s, 1 s, 1 s, 2 s and 30 s).
//!
//! Data nodes sync replicas through a file (`repl-diskless-sync no`, which also starts the sync at once,
//! without the 5 s `repl-diskless-sync-delay`), and delete that file once it has served
//! (`rdb-del-sync-files yes`, so that persistence stays off). Redis 7's default diskless sync streams
//! the snapshot over the socket and then sends the replica nothing more until the replica's next
//! `REPLCONF ACK` after the master has reaped its fork child; the first ACK, sent right after loading,
//! often comes before that (the child is reaped by a 100 ms cron, later under CPU load), and the next
//! one only a second later. Meanwhile both sides look healthy (`master_link_status:up` on the replica,
//! `state=online` on the master) while the replica has none of the master's writes. With a file sync
//! the master streams as soon as the file is sent, so a replica whose link is up is fed.
//!
//! The `wait_*` helpers do not rely on that alone: a replica counts as settled only once it has
//! applied a message published on the master just before (see
//! [`wait_until_agreed`](SentinelTopology::wait_until_agreed)).
//!
//! Failover helpers drive the topology and the `wait_*` helpers poll it, with real-time deadlines, until
//! it has settled: [`wait_until_agreed`](SentinelTopology::wait_until_agreed) is the check to call before
//! asserting on a topology after a fault.
//!
//! Some helpers here (`Endpoint`, `query`, `poll_until`, ...) are shared with the cluster fixture.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::fs::OpenOptions;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{ConnectionAddr, FromRedisValue, IntoConnectionInfo, RedisConnectionInfo};
use tokio::process::{Child, Command};

use super::{
    ADDR_IN_USE, Awaited, FixtureError, HOST, LOG_FILE, LOG_TAIL_LINES, Launch, POLL_INTERVAL,
    PORT_ATTEMPTS, PROGRAM, READY_TIMEOUT, REAP_TIMEOUT, RedisServer, STDERR_FILE,
};

/// The master name the sentinels monitor unless the builder says otherwise.
const DEFAULT_MASTER_NAME: &str = "mymaster";
/// Default `down-after-milliseconds`: how long a node may be silent before a sentinel calls it down.
const DEFAULT_DOWN_AFTER: Duration = Duration::from_millis(1000);
/// Default `failover-timeout`. It also is how long sentinels wait before they demote a stale master
/// that came back, and half the pause between two failover attempts of the same sentinel.
const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_millis(3000);
/// Default quorum: sentinels that must agree the master is down before a failover.
const DEFAULT_QUORUM: u32 = 2;
/// How many sentinels a topology runs.
const SENTINELS: usize = 3;
/// How long [`SentinelTopologyBuilder::start`] waits for the sentinels to find each other and the replica.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`SentinelTopology::restart_node`] waits for a restarted replica to apply its master's stream.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one streaming check waits for the replica to apply the message just published on the master
/// (a fed replica takes well under a millisecond; the next round publishes again).
const STREAM_WAIT: Duration = Duration::from_millis(250);
/// Pause between two looks at the replica's offset within one streaming check.
const STREAM_POLL: Duration = Duration::from_millis(5);
/// The channel of the streaming check's message: `PUBLISH` is replicated but leaves no key behind.
const STREAM_CHANNEL: &str = "__redis_supervisor_fixture__:replication-check";
/// Longest accepted duration option (down-after, failover timeout, cluster node timeout).
const MAX_OPTION: Duration = Duration::from_secs(24 * 60 * 60);
/// Connect / read / write timeout of one query to a node; a node silent for longer counts as unreachable.
const QUERY_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause between two rounds of a `wait_*` poll.
const WAIT_INTERVAL: Duration = Duration::from_millis(50);
/// The sentinel's configuration file, inside its directory.
const CONF_FILE: &str = "sentinel.conf";
/// Shorter sentinel timers, sent with `SENTINEL DEBUG` after every start (they are not persisted).
const SENTINEL_DEBUG: [(&str, &str); 5] = [
    ("info-period", "1000"),
    ("ping-period", "500"),
    ("ask-period", "500"),
    ("publish-period", "500"),
    ("tilt-period", "5000"),
];

/// The credentials a topology's nodes require of their clients (and of each other).
///
/// Either a password alone (`requirepass`, clients send `AUTH password`) or an ACL user (the `default`
/// user is then switched off, so unauthenticated clients are refused). `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The ACL user; `None` for password-only authentication.
    username: Option<String>,
    /// The password.
    password: String,
}

impl Credentials {
    /// Password-only authentication: the nodes run with `requirepass password`.
    pub fn with_password(password: impl Into<String>) -> Credentials {
        Credentials {
            username: None,
            password: password.into(),
        }
    }

    /// An ACL user with every permission (`on >password ~* &* +@all`); the `default` user is turned off.
    pub fn with_user(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            username: Some(username.into()),
            password: password.into(),
        }
    }

    /// The ACL user name, `None` for password-only authentication.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A `redis://` URL for `addr` carrying these credentials (percent-encoded).
    pub fn url_for(&self, addr: SocketAddr) -> String {
        let encode = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let user = self.username.as_deref().map(encode).unwrap_or_default();
        format!("redis://{user}:{}@{addr}", encode(&self.password))
    }

    /// Checks that the values can be written into a config file and a command line unchanged.
    fn validate(&self, what: &str) -> Result<(), FixtureError> {
        if let Some(user) = &self.username {
            if user.is_empty()
                || user.starts_with('-')
                || !user.chars().all(|c| c.is_ascii_graphic())
            {
                return Err(FixtureError::InvalidArg(format!(
                    "{what}: a user name must be printable ASCII without spaces and not start with '-'"
                )));
            }
        }
        let password = &self.password;
        if password.is_empty()
            || password.starts_with('-')
            || password.chars().any(char::is_control)
        {
            return Err(FixtureError::InvalidArg(format!(
                "{what}: a password must be non-empty, without control characters, and not start with '-'"
            )));
        }
        Ok(())
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// Options of a [`SentinelTopology`]; [`start`](Self::start) launches it.
///
/// Made by [`SentinelTopology::builder`]; every option has a default suited to tests.
#[derive(Debug, Clone)]
pub struct SentinelTopologyBuilder {
    /// The monitored master's name; default `"mymaster"`.
    master_name: String,
    /// `down-after-milliseconds`; default 1 s.
    down_after: Duration,
    /// `failover-timeout`; default 3 s.
    failover_timeout: Duration,
    /// The quorum, 1 to 3; default 2.
    quorum: u32,
    /// Credentials of the master and the replica; default none.
    data_auth: Option<Credentials>,
    /// Credentials of the sentinels themselves; default none.
    sentinel_auth: Option<Credentials>,
}

impl Default for SentinelTopologyBuilder {
    fn default() -> Self {
        SentinelTopologyBuilder {
            master_name: DEFAULT_MASTER_NAME.to_owned(),
            down_after: DEFAULT_DOWN_AFTER,
            failover_timeout: DEFAULT_FAILOVER_TIMEOUT,
            quorum: DEFAULT_QUORUM,
            data_auth: None,
            sentinel_auth: None,
        }
    }
}

impl SentinelTopologyBuilder {
    /// The name the sentinels monitor the master under (default `"mymaster"`; letters, digits, `-`, `_`,
    /// `.`).
    pub fn master_name(mut self, name: impl Into<String>) -> Self {
        self.master_name = name.into();
        self
    }

    /// `down-after-milliseconds`: how long the master may stay silent before a sentinel considers it
    /// down (default 1 s; whole milliseconds, 1 ms to 24 h).
    pub fn down_after(mut self, down_after: Duration) -> Self {
        self.down_after = down_after;
        self
    }

    /// `failover-timeout` (default 3 s; whole milliseconds, 1 ms to 24 h). Sentinels also wait this long
    /// before they turn a stale master that came back into a replica, and twice this long between two
    /// failover attempts of one sentinel.
    pub fn failover_timeout(mut self, failover_timeout: Duration) -> Self {
        self.failover_timeout = failover_timeout;
        self
    }

    /// How many sentinels must agree that the master is down (default 2, of 3).
    pub fn quorum(mut self, quorum: u32) -> Self {
        self.quorum = quorum;
        self
    }

    /// Credentials for the master and the replica: the replica uses them to replicate (`masteruser`,
    /// `masterauth`), the sentinels to monitor (`sentinel auth-user`, `sentinel auth-pass`).
    pub fn data_auth(mut self, credentials: Credentials) -> Self {
        self.data_auth = Some(credentials);
        self
    }

    /// Credentials for the sentinels themselves (`requirepass`, or an ACL user); sentinels use them with
    /// each other too (`sentinel sentinel-user`, `sentinel sentinel-pass`).
    pub fn sentinel_auth(mut self, credentials: Credentials) -> Self {
        self.sentinel_auth = Some(credentials);
        self
    }

    /// Starts the master, the replica and the three sentinels, and waits (up to 30 s) until the topology
    /// is agreed (see [`SentinelTopology::wait_until_agreed`]): the sentinels know each other and the
    /// replica, the replica's link is up, and it applies the master's replication stream (what is
    /// written on the master from then on reaches it).
    ///
    /// # Errors
    ///
    /// [`FixtureError::InvalidArg`] for an option out of range; what [`RedisServer::start_with_args`]
    /// returns, for a data node or a sentinel; [`FixtureError::TempDir`] if a sentinel's configuration
    /// cannot be written; [`FixtureError::Command`] if a sentinel refuses its `SENTINEL DEBUG` timers;
    /// [`FixtureError::Timeout`] if the topology does not settle.
    pub async fn start(self) -> Result<SentinelTopology, FixtureError> {
        self.validate()?;
        let master = RedisServer::start_with_args(self.data_args(None)).await?;
        let master_addr = addr_of(&master);
        let replica = RedisServer::start_with_args(self.data_args(Some(master_addr))).await?;
        let mut sentinels = Vec::with_capacity(SENTINELS);
        for _ in 0..SENTINELS {
            sentinels.push(SentinelProcess::start(&self, master_addr).await?);
        }
        let topology = SentinelTopology {
            sentinels,
            data: vec![master, replica],
            options: self,
        };
        topology.wait_until_agreed(START_TIMEOUT).await?;
        Ok(topology)
    }

    /// Checks every option.
    fn validate(&self) -> Result<(), FixtureError> {
        let name = &self.master_name;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(FixtureError::InvalidArg(format!(
                "master name {name:?}: use letters, digits, '-', '_' or '.'"
            )));
        }
        millis("down_after", self.down_after)?;
        millis("failover_timeout", self.failover_timeout)?;
        if !(1..=3).contains(&self.quorum) {
            return Err(FixtureError::InvalidArg(format!(
                "quorum {}: must be 1 to {SENTINELS}",
                self.quorum
            )));
        }
        if let Some(auth) = &self.data_auth {
            auth.validate("data_auth")?;
        }
        if let Some(auth) = &self.sentinel_auth {
            auth.validate("sentinel_auth")?;
        }
        Ok(())
    }

    /// The extra `redis-server` arguments of a data node; `replica_of` adds `--replicaof`.
    fn data_args(&self, replica_of: Option<SocketAddr>) -> Vec<String> {
        // A file sync, not a diskless one: see the module documentation.
        let mut args: Vec<String> = [
            "--replica-announce-ip",
            HOST,
            "--repl-diskless-sync",
            "no",
            "--rdb-del-sync-files",
            "yes",
        ]
        .map(String::from)
        .into();
        if let Some(auth) = &self.data_auth {
            let password = auth.password.as_str();
            match auth.username.as_deref() {
                None => args.extend(
                    ["--requirepass", password, "--masterauth", password].map(String::from),
                ),
                Some(user) => {
                    let rule = format!(">{password}");
                    args.extend(["--user", "default", "off"].map(String::from));
                    args.extend(
                        ["--user", user, "on", rule.as_str(), "~*", "&*", "+@all"]
                            .map(String::from),
                    );
                    args.extend(["--masteruser", user, "--masterauth", password].map(String::from));
                }
            }
        }
        if let Some(master) = replica_of {
            args.extend([
                "--replicaof".to_owned(),
                HOST.to_owned(),
                master.port().to_string(),
            ]);
        }
        args
    }

    /// The text of a sentinel's `sentinel.conf`.
    fn sentinel_conf(
        &self,
        port: u16,
        dir: &Path,
        master: SocketAddr,
    ) -> Result<String, FixtureError> {
        let dir = dir.to_str().ok_or_else(|| {
            FixtureError::TempDir(io::Error::new(
                io::ErrorKind::InvalidData,
                "the temporary directory's path is not UTF-8",
            ))
        })?;
        let name = &self.master_name;
        let mut conf = String::new();
        let mut line = |text: String| {
            conf.push_str(&text);
            conf.push('\n');
        };
        line(format!("port {port}"));
        line(format!("bind {HOST}"));
        line("daemonize no".to_owned());
        line("protected-mode no".to_owned());
        line(format!("dir {}", quote(dir)));
        line(format!("logfile {}", quote(&format!("{dir}/{LOG_FILE}"))));
        line("sentinel resolve-hostnames no".to_owned());
        line("sentinel announce-hostnames no".to_owned());
        line(format!(
            "sentinel monitor {name} {HOST} {} {}",
            master.port(),
            self.quorum
        ));
        line(format!(
            "sentinel down-after-milliseconds {name} {}",
            millis("down_after", self.down_after)?
        ));
        line(format!(
            "sentinel failover-timeout {name} {}",
            millis("failover_timeout", self.failover_timeout)?
        ));
        line(format!("sentinel parallel-syncs {name} 1"));
        if let Some(auth) = &self.data_auth {
            if let Some(user) = &auth.username {
                line(format!("sentinel auth-user {name} {}", quote(user)));
            }
            line(format!(
                "sentinel auth-pass {name} {}",
                quote(&auth.password)
            ));
        }
        if let Some(auth) = &self.sentinel_auth {
            match &auth.username {
                None => line(format!("requirepass {}", quote(&auth.password))),
                Some(user) => {
                    line("user default off".to_owned());
                    line(format!(
                        "user {} on {} ~* &* +@all",
                        quote(user),
                        quote(&format!(">{}", auth.password))
                    ));
                    line(format!("sentinel sentinel-user {}", quote(user)));
                }
            }
            line(format!("sentinel sentinel-pass {}", quote(&auth.password)));
        }
        Ok(conf)
    }
}

/// A master, one replica and three sentinels, each a child process of this fixture on `127.0.0.1`.
///
/// Nodes are named by address; the data nodes' roles change with failovers, so ask
/// [`master_addr`](Self::master_addr) rather than remembering. Dropping the topology kills and reaps every
/// child (paused ones too) and removes their directories.
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use redis_supervisor::testing::SentinelTopology;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut topology = SentinelTopology::builder()
///     .master_name("cache")
///     .down_after(Duration::from_millis(500))
///     .start()
///     .await?;
/// let sentinels = topology.sentinel_addrs(); // what a Sentinel client is configured with
/// assert_eq!(sentinels.len(), 3);
///
/// let old = topology.master_addr().await?;
/// topology.kill_master().await?;
/// let new = topology.wait_for_master_change(old, Duration::from_secs(20)).await?;
/// assert_ne!(new, old);
/// // Bring the old master back: it rejoins as a replica of the new one.
/// topology.restart_node(old).await?;
/// assert_eq!(topology.wait_until_agreed(Duration::from_secs(20)).await?, new);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SentinelTopology {
    /// The three sentinels (dropped first, so they do not chase the data nodes going away).
    sentinels: Vec<SentinelProcess>,
    /// The two data nodes: started as master and replica, in that order.
    data: Vec<RedisServer>,
    /// The options it was started with.
    options: SentinelTopologyBuilder,
}

impl SentinelTopology {
    /// Starts a topology with the default options (see [`SentinelTopologyBuilder::start`]).
    ///
    /// # Errors
    ///
    /// As [`SentinelTopologyBuilder::start`].
    pub async fn start() -> Result<SentinelTopology, FixtureError> {
        Self::builder().start().await
    }

    /// Options to start a topology with.
    pub fn builder() -> SentinelTopologyBuilder {
        SentinelTopologyBuilder::default()
    }

    /// The name the sentinels monitor the master under.
    pub fn master_name(&self) -> &str {
        &self.options.master_name
    }

    /// The sentinels' addresses, killed ones included (their ports stay reserved).
    pub fn sentinel_addrs(&self) -> Vec<SocketAddr> {
        self.sentinels.iter().map(|s| loopback(s.port)).collect()
    }

    /// The data nodes' addresses (master and replica, in the order started).
    pub fn data_addrs(&self) -> Vec<SocketAddr> {
        self.data.iter().map(addr_of).collect()
    }

    /// The data nodes' fixtures, for their pids, directories and logs.
    pub fn data_nodes(&self) -> &[RedisServer] {
        &self.data
    }

    /// The pids of every running child (data nodes and sentinels).
    pub fn pids(&self) -> Vec<u32> {
        let data = self.data.iter().filter_map(RedisServer::pid);
        data.chain(self.sentinels.iter().filter_map(SentinelProcess::pid))
            .collect()
    }

    /// The master's address as the first sentinel that answers reports it
    /// (`SENTINEL GET-MASTER-ADDR-BY-NAME`).
    ///
    /// # Errors
    ///
    /// [`FixtureError::Command`] if no sentinel answers, or one answers with an error or without a master.
    pub async fn master_addr(&self) -> Result<SocketAddr, FixtureError> {
        let probe = self.probe();
        run_blocking(move || probe.first_sentinel(Probe::master_of)).await?
    }

    /// Asks the first sentinel that answers to fail over now (`SENTINEL FAILOVER`), without waiting for
    /// the other sentinels' agreement. Returns once the failover has started; follow it with
    /// [`wait_for_master_change`](Self::wait_for_master_change) and
    /// [`wait_until_agreed`](Self::wait_until_agreed).
    ///
    /// # Errors
    ///
    /// [`FixtureError::Command`] if no sentinel answers or it refuses (`-INPROG` while a failover runs,
    /// `-NOGOODSLAVE` while it knows no healthy replica: wait until agreed first).
    pub async fn failover(&self) -> Result<(), FixtureError> {
        let probe = self.probe();
        run_blocking(move || {
            probe.first_sentinel(|probe, sentinel| {
                let mut cmd = redis::cmd("SENTINEL");
                cmd.arg("FAILOVER").arg(&probe.name);
                query::<String>(sentinel, &cmd).map(drop)
            })
        })
        .await?
    }

    /// Kills the node the sentinels report as master with SIGKILL and returns its address.
    ///
    /// # Errors
    ///
    /// As [`master_addr`](Self::master_addr), [`FixtureError::InvalidArg`] if the reported master is not
    /// one of this topology's data nodes, then as [`RedisServer::kill`].
    pub async fn kill_master(&mut self) -> Result<SocketAddr, FixtureError> {
        let master = self.master_addr().await?;
        self.kill_node(master).await?;
        Ok(master)
    }

    /// Freezes the node the sentinels report as master with SIGSTOP and returns its address; undo it with
    /// [`resume`](Self::resume).
    ///
    /// # Errors
    ///
    /// As [`master_addr`](Self::master_addr), [`FixtureError::InvalidArg`] if the reported master is not
    /// one of this topology's data nodes, then as [`RedisServer::pause`].
    pub async fn pause_master(&self) -> Result<SocketAddr, FixtureError> {
        let master = self.master_addr().await?;
        self.pause_node(master)?;
        Ok(master)
    }

    /// Kills sentinel `index` (an index into [`sentinel_addrs`](Self::sentinel_addrs)) with SIGKILL and
    /// reaps it; [`restart_node`](Self::restart_node) brings it back.
    ///
    /// # Errors
    ///
    /// [`FixtureError::InvalidArg`] if there is no such sentinel, [`FixtureError::Kill`] if it cannot be
    /// killed or reaped.
    pub async fn kill_sentinel(&mut self, index: usize) -> Result<(), FixtureError> {
        let count = self.sentinels.len();
        let sentinel = self.sentinels.get_mut(index).ok_or_else(|| {
            FixtureError::InvalidArg(format!("sentinel index {index}: there are {count}"))
        })?;
        sentinel.kill().await
    }

    /// Kills the node (data node or sentinel) at `addr` with SIGKILL and reaps it.
    ///
    /// # Errors
    ///
    /// [`FixtureError::InvalidArg`] if `addr` is no node of this topology, [`FixtureError::Kill`] if the
    /// node cannot be killed or reaped.
    pub async fn kill_node(&mut self, addr: SocketAddr) -> Result<(), FixtureError> {
        match self.find(addr)? {
            Node::Data(i) => self.data[i].kill().await,
            Node::Sentinel(i) => self.sentinels[i].kill().await,
        }
    }

    /// Freezes the node (data node or sentinel) at `addr` with SIGSTOP.
    ///
    /// # Errors
    ///
    /// [`FixtureError::InvalidArg`] if `addr` is no node of this topology, [`FixtureError::NotRunning`]
    /// if it was killed, [`FixtureError::Signal`] if the signal cannot be sent.
    pub fn pause_node(&self, addr: SocketAddr) -> Result<(), FixtureError> {
        match self.find(addr)? {
            Node::Data(i) => self.data[i].pause(),
            Node::Sentinel(i) => self.sentinels[i].signal(libc::SIGSTOP),
        }
    }

    /// Lets the paused node (data node or sentinel) at `addr` run again with SIGCONT. A data node that was
    /// master comes back as a master; sentinels turn it into a replica once a failover has happened, after
    /// the failover timeout.
    ///
    /// # Errors
    ///
    /// As [`pause_node`](Self::pause_node).
    pub fn resume(&self, addr: SocketAddr) -> Result<(), FixtureError> {
        match self.find(addr)? {
            Node::Data(i) => self.data[i].resume(),
            Node::Sentinel(i) => self.sentinels[i].signal(libc::SIGCONT),
        }
    }

    /// Starts the node at `addr` again on its port, killing it first if it runs, and waits until it
    /// answers `PING`.
    ///
    /// A data node comes back as a replica of the master the sentinels report (or as a master, when they
    /// report this very node or none answers), so that it does not wait for the sentinels to reconfigure
    /// it. As a replica of a running data node of this topology, it is waited for (up to 30 s) until its
    /// link is up and it applies that master's replication stream, as in
    /// [`wait_until_agreed`](Self::wait_until_agreed) (the sentinels may not list it yet). A sentinel comes
    /// back with its rewritten `sentinel.conf` (its id, epochs and the nodes it knows) and gets its short
    /// timers again.
    ///
    /// # Errors
    ///
    /// [`FixtureError::InvalidArg`] if `addr` is no node of this topology; else as
    /// [`RedisServer::restart`], plus [`FixtureError::Command`] if a sentinel refuses its timers and
    /// [`FixtureError::Timeout`] if a restarted replica does not apply its master's stream in time (e.g.
    /// because that master is paused).
    pub async fn restart_node(&mut self, addr: SocketAddr) -> Result<(), FixtureError> {
        match self.find(addr)? {
            Node::Data(i) => {
                let master = self.master_addr().await.ok().filter(|m| *m != addr);
                let args = self.options.data_args(master);
                self.data[i].restart_with_args(args).await?;
                match master {
                    Some(master) => self.wait_until_replicating(addr, master).await,
                    None => Ok(()),
                }
            }
            Node::Sentinel(i) => {
                let auth = self.options.sentinel_auth.clone();
                self.sentinels[i].relaunch(auth).await
            }
        }
    }

    /// Waits until every sentinel that answers reports the same master and it is not `old`; returns it.
    ///
    /// Only the sentinels' report changes here: follow with [`wait_until_agreed`](Self::wait_until_agreed)
    /// for the nodes to have caught up.
    ///
    /// # Errors
    ///
    /// [`FixtureError::Timeout`] after `timeout`, saying what was seen last.
    pub async fn wait_for_master_change(
        &self,
        old: SocketAddr,
        timeout: Duration,
    ) -> Result<SocketAddr, FixtureError> {
        let probe = self.probe();
        let what = format!("sentinels reporting a master other than {old}");
        poll_until(&what, timeout, move || {
            let (master, _) = probe.reported_master()?;
            if master == old {
                Err(format!("the sentinels still report {old}"))
            } else {
                Ok(master)
            }
        })
        .await
    }

    /// Waits until the topology has settled, and returns the master. Settled means, for the nodes that
    /// answer (killed and paused ones are left out):
    ///
    /// - every sentinel reports the same master, with no flag but `master` (not down, no failover in
    ///   progress), and knows the other two sentinels;
    /// - that node is one of the data nodes and says `role:master` in `INFO replication`;
    /// - every other data node says `role:slave` of that master with `master_link_status:up`, and every
    ///   sentinel lists it as a healthy replica of that master (flags `slave`, link `ok`): a
    ///   [`failover`](Self::failover) can be asked for at once;
    /// - every such replica applies the master's replication stream: the fixture publishes a message on
    ///   the master (`PUBLISH` on a channel of its own, which is replicated and leaves no key behind) and
    ///   the replica reaches the master's replication offset after it, in the same replication history
    ///   (`master_replid`). A linked replica is not always fed: see the module documentation.
    ///
    /// # Errors
    ///
    /// [`FixtureError::Timeout`] after `timeout`, saying which condition failed last.
    pub async fn wait_until_agreed(&self, timeout: Duration) -> Result<SocketAddr, FixtureError> {
        let probe = self.probe();
        poll_until("an agreed sentinel topology", timeout, move || {
            probe.agreed()
        })
        .await
    }

    /// The last lines of every node's log (and standard error), each under a header; for failure
    /// messages.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for server in &self.data {
            let _ = writeln!(
                out,
                "--- data node {} ---\n{}",
                addr_of(server),
                server.log_tail()
            );
        }
        for sentinel in &self.sentinels {
            let _ = writeln!(
                out,
                "--- sentinel {} ---\n{}",
                loopback(sentinel.port),
                sentinel.log_tail()
            );
        }
        out
    }

    /// Waits (up to [`REJOIN_TIMEOUT`]) until the data node at `replica` is a linked replica of the data
    /// node at `master` and applies its replication stream; returns at once when either is not running.
    async fn wait_until_replicating(
        &self,
        replica: SocketAddr,
        master: SocketAddr,
    ) -> Result<(), FixtureError> {
        let probe = self.probe();
        let running = |addr: SocketAddr| probe.data.iter().find(|d| d.addr == addr).cloned();
        let (Some(replica), Some(master)) = (running(replica), running(master)) else {
            return Ok(());
        };
        let what = format!(
            "{} replicating from {} (link up, stream applied)",
            replica.addr, master.addr
        );
        poll_until(&what, REJOIN_TIMEOUT, move || {
            let info =
                info_replication(&replica).map_err(|err| format!("{}: {err}", replica.addr))?;
            check_linked(&info, replica.addr, master.addr)?;
            check_streaming(&master, &replica)
        })
        .await
    }

    /// Which node listens on `addr`.
    fn find(&self, addr: SocketAddr) -> Result<Node, FixtureError> {
        let is = |port: u16| loopback(port) == addr;
        if let Some(i) = self.data.iter().position(|s| is(s.port())) {
            return Ok(Node::Data(i));
        }
        if let Some(i) = self.sentinels.iter().position(|s| is(s.port)) {
            return Ok(Node::Sentinel(i));
        }
        Err(FixtureError::InvalidArg(format!(
            "{addr} is no node of this sentinel topology"
        )))
    }

    /// What the blocking checks need: the running nodes and the credentials.
    fn probe(&self) -> Arc<Probe> {
        let endpoint = |port: u16, auth: &Option<Credentials>| Endpoint {
            addr: loopback(port),
            auth: auth.clone(),
        };
        Arc::new(Probe {
            name: self.options.master_name.clone(),
            sentinels: (self.sentinels.iter())
                .filter(|s| s.pid().is_some())
                .map(|s| endpoint(s.port, &self.options.sentinel_auth))
                .collect(),
            data: (self.data.iter())
                .filter(|s| s.pid().is_some())
                .map(|s| endpoint(s.port(), &self.options.data_auth))
                .collect(),
        })
    }
}

/// A node of a [`SentinelTopology`], by index.
#[derive(Debug, Clone, Copy)]
enum Node {
    /// `data[i]`.
    Data(usize),
    /// `sentinels[i]`.
    Sentinel(usize),
}

/// A snapshot of a topology's running nodes, for the blocking checks.
#[derive(Debug)]
struct Probe {
    /// The monitored master's name.
    name: String,
    /// The running sentinels.
    sentinels: Vec<Endpoint>,
    /// The running data nodes.
    data: Vec<Endpoint>,
}

impl Probe {
    /// Runs `f` on the first sentinel that is reachable, returning its result.
    fn first_sentinel<T>(
        &self,
        f: impl Fn(&Probe, &Endpoint) -> Result<T, QueryError>,
    ) -> Result<T, FixtureError> {
        let mut last = String::from("no sentinel is running");
        for sentinel in &self.sentinels {
            match f(self, sentinel) {
                Ok(value) => return Ok(value),
                Err(QueryError::Unreachable(why)) => last = format!("{}: {why}", sentinel.addr),
                Err(QueryError::Failed(detail)) => {
                    return Err(FixtureError::Command {
                        node: sentinel.addr.to_string(),
                        detail,
                    });
                }
            }
        }
        Err(FixtureError::Command {
            node: "sentinels".to_owned(),
            detail: format!("none answers ({last})"),
        })
    }

    /// `SENTINEL GET-MASTER-ADDR-BY-NAME` on `sentinel`.
    fn master_of(&self, sentinel: &Endpoint) -> Result<SocketAddr, QueryError> {
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("GET-MASTER-ADDR-BY-NAME").arg(&self.name);
        let reply: Option<(String, u16)> = query(sentinel, &cmd)?;
        let (host, port) =
            reply.ok_or_else(|| QueryError::Failed(format!("no master named {:?}", self.name)))?;
        let ip = host.parse::<Ipv4Addr>().map_err(|_| {
            QueryError::Failed(format!("master host {host:?} is not an IPv4 address"))
        })?;
        Ok(SocketAddr::from((ip, port)))
    }

    /// The master every reachable sentinel reports, with the sentinels that answered.
    fn reported_master(&self) -> Result<(SocketAddr, Vec<&Endpoint>), String> {
        let mut master = None;
        let mut answered = Vec::new();
        for sentinel in &self.sentinels {
            let reported = match self.master_of(sentinel) {
                Ok(addr) => addr,
                Err(QueryError::Unreachable(_)) => continue,
                Err(QueryError::Failed(why)) => return Err(format!("{}: {why}", sentinel.addr)),
            };
            match master {
                None => master = Some(reported),
                Some(seen) if seen != reported => {
                    return Err(format!(
                        "sentinels disagree: {seen} and {reported} (by {})",
                        sentinel.addr
                    ));
                }
                Some(_) => {}
            }
            answered.push(sentinel);
        }
        master
            .map(|m| (m, answered))
            .ok_or_else(|| "no sentinel answers".to_owned())
    }

    /// One round of [`SentinelTopology::wait_until_agreed`]: the master, or why the topology is not
    /// settled yet.
    fn agreed(&self) -> Result<SocketAddr, String> {
        let (master, sentinels) = self.reported_master()?;
        let mut views = Vec::with_capacity(sentinels.len());
        for sentinel in sentinels {
            views.push(self.sentinel_view(sentinel, master)?);
        }
        let master_node = (self.data.iter())
            .find(|d| d.addr == master)
            .ok_or_else(|| format!("the sentinels report {master}, which is not running"))?;
        let info =
            info_replication(master_node).map_err(|err| format!("master {master}: {err}"))?;
        if info.get("role").map(String::as_str) != Some("master") {
            return Err(format!("{master} is reported as master but is not one"));
        }
        for node in self.data.iter().filter(|d| d.addr != master) {
            let info = match info_replication(node) {
                Ok(info) => info,
                Err(QueryError::Unreachable(_)) => continue,
                Err(QueryError::Failed(why)) => return Err(format!("{}: {why}", node.addr)),
            };
            check_linked(&info, node.addr, master)?;
            for (sentinel, replicas) in &views {
                check_replica_entry(replicas, node.addr, master)
                    .map_err(|why| format!("sentinel {sentinel}: {why}"))?;
            }
            check_streaming(master_node, node)?;
        }
        Ok(master)
    }

    /// Checks a sentinel's view of `master` (`SENTINEL MASTER`) and returns its replica table
    /// (`SENTINEL REPLICAS`).
    fn sentinel_view(
        &self,
        sentinel: &Endpoint,
        master: SocketAddr,
    ) -> Result<(SocketAddr, Vec<HashMap<String, String>>), String> {
        let at = |err: QueryError| format!("sentinel {}: {err}", sentinel.addr);
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("MASTER").arg(&self.name);
        let state: HashMap<String, String> = query(sentinel, &cmd).map_err(at)?;
        let field = |key: &str| state.get(key).map_or("?", String::as_str);
        if field("flags") != "master" {
            return Err(format!(
                "sentinel {} flags master {master} as {}",
                sentinel.addr,
                field("flags")
            ));
        }
        let others: usize = field("num-other-sentinels").parse().unwrap_or(0);
        if others < SENTINELS - 1 {
            return Err(format!(
                "sentinel {} knows {others} other sentinels",
                sentinel.addr
            ));
        }
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("REPLICAS").arg(&self.name);
        let replicas = query(sentinel, &cmd).map_err(at)?;
        Ok((sentinel.addr, replicas))
    }
}

/// Checks that `info` (the `INFO replication` of the data node at `node`) says it is a replica of
/// `master` with its link up.
fn check_linked(
    info: &HashMap<String, String>,
    node: SocketAddr,
    master: SocketAddr,
) -> Result<(), String> {
    let field = |key: &str| info.get(key).map_or("?", String::as_str);
    let port = master.port().to_string();
    if field("role") == "slave"
        && field("master_host") == HOST
        && field("master_port") == port
        && field("master_link_status") == "up"
    {
        Ok(())
    } else {
        Err(format!(
            "{node} is not a linked replica of {master} (role {}, master {}:{}, link {})",
            field("role"),
            field("master_host"),
            field("master_port"),
            field("master_link_status")
        ))
    }
}

/// Checks that `replica` applies the replication stream of `master` now: publishes a message on the
/// master, reads the master's replication id and offset after it, and waits (up to [`STREAM_WAIT`])
/// until the replica, in the same history, has processed (`slave_repl_offset`) that far.
///
/// A replica whose link is up may still get nothing (after a diskless sync, until its next ack), and
/// its offset then matches the master's until the master writes again: the message is that write.
fn check_streaming(master: &Endpoint, replica: &Endpoint) -> Result<(), String> {
    let on_master = |err: redis::RedisError| format!("master {}: {err}", master.addr);
    let mut conn = connect(master).map_err(|err| format!("master {}: {err}", master.addr))?;
    let mut publish = redis::cmd("PUBLISH");
    publish.arg(STREAM_CHANNEL).arg("is the replica fed?");
    publish.query::<i64>(&mut conn).map_err(on_master)?;
    let mut cmd = redis::cmd("INFO");
    cmd.arg("replication");
    let info = parse_info(&cmd.query::<String>(&mut conn).map_err(on_master)?);
    let replid = info
        .get("master_replid")
        .ok_or_else(|| format!("master {}: no master_replid in INFO", master.addr))?;
    let target = offset(&info, "master_repl_offset")
        .ok_or_else(|| format!("master {}: no master_repl_offset in INFO", master.addr))?;
    let deadline = Instant::now() + STREAM_WAIT;
    loop {
        let info = info_replication(replica).map_err(|err| format!("{}: {err}", replica.addr))?;
        let applied = offset(&info, "slave_repl_offset");
        if info.get("master_replid") == Some(replid) && applied.is_some_and(|o| o >= target) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let field = |key: &str| info.get(key).map_or("?", String::as_str);
            return Err(format!(
                "{} does not apply the replication stream of {}: after {STREAM_WAIT:?} it has read \
                 offset {} and applied {} of {target} (replication id {}, master's {replid}; link {})",
                replica.addr,
                master.addr,
                field("slave_read_repl_offset"),
                field("slave_repl_offset"),
                field("master_replid"),
                field("master_link_status"),
            ));
        }
        std::thread::sleep(STREAM_POLL);
    }
}

/// A replication offset field of an `INFO replication` reply.
fn offset(info: &HashMap<String, String>, key: &str) -> Option<i64> {
    info.get(key).and_then(|value| value.parse().ok())
}

/// Checks that a sentinel's replica table lists `replica` as a healthy replica of `master`.
fn check_replica_entry(
    replicas: &[HashMap<String, String>],
    replica: SocketAddr,
    master: SocketAddr,
) -> Result<(), String> {
    let port = replica.port().to_string();
    let entry = replicas
        .iter()
        .find(|r| r.get("ip").map(String::as_str) == Some(HOST) && r.get("port") == Some(&port))
        .ok_or_else(|| format!("does not know replica {replica} yet"))?;
    let field = |key: &str| entry.get(key).map_or("?", String::as_str);
    let master_port = master.port().to_string();
    if field("flags") == "slave"
        && field("master-link-status") == "ok"
        && field("master-port") == master_port
    {
        Ok(())
    } else {
        Err(format!(
            "sees replica {replica} with flags {}, link {}, master port {}",
            field("flags"),
            field("master-link-status"),
            field("master-port")
        ))
    }
}

/// `INFO replication` of `node`, as fields.
fn info_replication(node: &Endpoint) -> Result<HashMap<String, String>, QueryError> {
    let mut cmd = redis::cmd("INFO");
    cmd.arg("replication");
    let text: String = query(node, &cmd)?;
    Ok(parse_info(&text))
}

/// The `key:value` lines of an `INFO` reply.
pub(super) fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.trim_end().split_once(':'))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// A `redis-server --sentinel` child on `127.0.0.1`, with its own port and temporary directory.
///
/// Dropping it kills and reaps the child, releases the port and removes the directory.
#[derive(Debug)]
struct SentinelProcess {
    /// The running child; `None` once killed, or after a failed restart.
    child: Option<Child>,
    /// The port, reserved for the process's whole life (restarts reuse it).
    port: u16,
    /// Working directory holding `sentinel.conf`, `redis.log` and `stderr.log`.
    dir: tempfile::TempDir,
}

impl SentinelProcess {
    /// Writes the configuration and starts the sentinel on a free port, trying new ports when it loses
    /// a port race; then sends its short timers.
    async fn start(
        options: &SentinelTopologyBuilder,
        master: SocketAddr,
    ) -> Result<SentinelProcess, FixtureError> {
        let dir = tempfile::Builder::new()
            .prefix("redis-supervisor-sentinel-")
            .tempdir()
            .map_err(FixtureError::TempDir)?;
        let mut process = SentinelProcess {
            child: None,
            port: super::reserve_port()?,
            dir,
        };
        let mut attempt = 1;
        loop {
            let conf = options.sentinel_conf(process.port, process.dir.path(), master)?;
            std::fs::write(process.conf_path(), conf).map_err(FixtureError::TempDir)?;
            match process.launch(Instant::now() + READY_TIMEOUT).await? {
                Launch::Ready => break,
                Launch::AddrInUse(err) if attempt >= PORT_ATTEMPTS => return Err(err),
                Launch::AddrInUse(_) => {
                    let old = process.port;
                    process.port = super::reserve_port()?;
                    super::release_port(old);
                    attempt += 1;
                }
            }
        }
        process.set_timers(options.sentinel_auth.clone()).await?;
        Ok(process)
    }

    /// The configuration file (the sentinel rewrites it).
    fn conf_path(&self) -> PathBuf {
        self.dir.path().join(CONF_FILE)
    }

    /// The pid of the running child.
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Kills the child (if running) and starts it again on the same port, then sends its timers.
    async fn relaunch(&mut self, auth: Option<Credentials>) -> Result<(), FixtureError> {
        self.kill().await?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.launch(deadline).await? {
                Launch::Ready => break,
                Launch::AddrInUse(err) if Instant::now() >= deadline => return Err(err),
                Launch::AddrInUse(_) => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
        self.set_timers(auth).await
    }

    /// Sends the short timers of [`SENTINEL_DEBUG`].
    async fn set_timers(&self, auth: Option<Credentials>) -> Result<(), FixtureError> {
        // A sentinel that just started can be slow to answer on a loaded machine: retry until
        // the start-up deadline rather than failing the whole topology on one slow reply.
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let endpoint = Endpoint {
                addr: loopback(self.port),
                auth: auth.clone(),
            };
            let sent = run_blocking(move || {
                let mut cmd = redis::cmd("SENTINEL");
                cmd.arg("DEBUG");
                for (param, value) in SENTINEL_DEBUG {
                    cmd.arg(param).arg(value);
                }
                query::<String>(&endpoint, &cmd)
                    .map(drop)
                    .map_err(|err| FixtureError::Command {
                        node: endpoint.addr.to_string(),
                        detail: format!("SENTINEL DEBUG: {err}"),
                    })
            })
            .await?;
            match sent {
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    /// Spawns the sentinel and waits until it answers `PING` or `deadline` passes (as
    /// `RedisServer::launch` does for a data node).
    async fn launch(&mut self, deadline: Instant) -> Result<Launch, FixtureError> {
        let log_path = self.dir.path().join(LOG_FILE);
        let log_offset = std::fs::metadata(&log_path).map_or(0, |meta| meta.len());
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(STDERR_FILE))
            .map_err(FixtureError::Spawn)?;
        let child = Command::new(PROGRAM)
            .arg(self.conf_path())
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| match err.kind() {
                io::ErrorKind::NotFound => FixtureError::NotInstalled,
                _ => FixtureError::Spawn(err),
            })?;
        self.child = Some(child);

        let started = Instant::now();
        let mut delay = Duration::ZERO;
        loop {
            if let Some(status) = self.try_reap()? {
                let err = FixtureError::Exited {
                    port: self.port,
                    status,
                    log_tail: self.log_tail(),
                };
                return if super::read_from(&log_path, log_offset).contains(ADDR_IN_USE) {
                    Ok(Launch::AddrInUse(err))
                } else {
                    Err(err)
                };
            }
            if Instant::now() >= deadline {
                let log_tail = self.log_tail();
                let _ = self.kill().await;
                self.child = None;
                return Err(FixtureError::NotReady {
                    port: self.port,
                    waited: started.elapsed(),
                    log_tail,
                });
            }
            let port = self.port;
            let ready = run_blocking(move || {
                std::thread::sleep(delay);
                super::probe(port, Awaited::Serving)
            })
            .await
            .unwrap_or(false);
            delay = POLL_INTERVAL;
            if ready && self.try_reap()?.is_none() {
                return Ok(Launch::Ready);
            }
        }
    }

    /// Reaps the child if it has exited, returning its status (`self.child` is then `None`).
    fn try_reap(&mut self) -> Result<Option<std::process::ExitStatus>, FixtureError> {
        let child = self.child.as_mut().ok_or(FixtureError::NotRunning)?;
        let status = child.try_wait().map_err(FixtureError::Kill)?;
        if status.is_some() {
            self.child = None;
        }
        Ok(status)
    }

    /// SIGKILLs the child (if running) and waits until it is reaped.
    async fn kill(&mut self) -> Result<(), FixtureError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        match child.try_wait() {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {}
            Err(err) => {
                self.child = Some(child);
                return Err(FixtureError::Kill(err));
            }
        }
        if let Err(err) = child.start_kill() {
            self.child = Some(child);
            return Err(FixtureError::Kill(err));
        }
        child.wait().await.map(drop).map_err(FixtureError::Kill)
    }

    /// Sends `signal` to the child's own pid (never to a group).
    fn signal(&self, signal: libc::c_int) -> Result<(), FixtureError> {
        super::signal_child(self.pid(), signal)
    }

    /// The end of the log file and of standard error.
    fn log_tail(&self) -> String {
        let mut out = super::tail(&self.dir.path().join(LOG_FILE), LOG_TAIL_LINES)
            .unwrap_or_else(|| format!("(no {LOG_FILE})"));
        if let Some(stderr) = super::tail(&self.dir.path().join(STDERR_FILE), LOG_TAIL_LINES) {
            if !stderr.trim().is_empty() {
                out.push_str("\n--- stderr ---\n");
                out.push_str(&stderr);
            }
        }
        out
    }
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                // If this fails, `kill_on_drop` tries again and tokio's orphan reaper reaps the child.
                let _ = child.start_kill();
                let deadline = Instant::now() + REAP_TIMEOUT;
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        super::release_port(self.port);
        // `self.dir` is removed when the fields drop, after the child is gone.
    }
}

/// `127.0.0.1:port`.
pub(super) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// The address of a fixture server.
pub(super) fn addr_of(server: &RedisServer) -> SocketAddr {
    loopback(server.port())
}

/// A duration option in whole milliseconds, checked to be 1 ms to 24 h.
pub(super) fn millis(what: &str, duration: Duration) -> Result<u64, FixtureError> {
    u64::try_from(duration.as_millis())
        .ok()
        .filter(|ms| *ms >= 1 && duration <= MAX_OPTION)
        .ok_or_else(|| {
            FixtureError::InvalidArg(format!("{what} {duration:?}: must be 1 ms to 24 h"))
        })
}

/// A config-file value in double quotes, with every byte that is not printable ASCII escaped as `\xHH`.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for byte in value.bytes() {
        match byte {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(byte));
            }
            0x20..=0x7e => out.push(char::from(byte)),
            _ => {
                let _ = write!(out, "\\x{byte:02x}");
            }
        }
    }
    out.push('"');
    out
}

/// Where one query goes: a node's address and the credentials it wants.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    /// The node's address.
    pub(super) addr: SocketAddr,
    /// What to authenticate with, if anything.
    pub(super) auth: Option<Credentials>,
}

/// Why a query to a node has no answer.
#[derive(Debug)]
pub(super) enum QueryError {
    /// The node cannot be reached or does not answer in time (killed, paused, restarting).
    Unreachable(String),
    /// The node answered, with an error or a reply of an unexpected type.
    Failed(String),
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::Unreachable(why) => write!(f, "unreachable ({why})"),
            QueryError::Failed(why) => f.write_str(why),
        }
    }
}

impl From<redis::RedisError> for QueryError {
    fn from(err: redis::RedisError) -> Self {
        if err.is_io_error()
            || err.is_timeout()
            || err.is_connection_refusal()
            || err.is_connection_dropped()
        {
            QueryError::Unreachable(err.to_string())
        } else {
            QueryError::Failed(err.to_string())
        }
    }
}

/// A blocking connection to `endpoint`, authenticated, with [`QUERY_TIMEOUT`] on every step.
pub(super) fn connect(endpoint: &Endpoint) -> Result<redis::Connection, QueryError> {
    let mut settings = RedisConnectionInfo::default().set_skip_set_lib_name();
    if let Some(auth) = &endpoint.auth {
        if let Some(user) = &auth.username {
            settings = settings.set_username(user);
        }
        settings = settings.set_password(&auth.password);
    }
    let info = ConnectionAddr::Tcp(HOST.to_owned(), endpoint.addr.port())
        .into_connection_info()?
        .set_redis_settings(settings);
    let conn = redis::Client::open(info)?.get_connection_with_timeout(QUERY_TIMEOUT)?;
    conn.set_read_timeout(Some(QUERY_TIMEOUT))?;
    conn.set_write_timeout(Some(QUERY_TIMEOUT))?;
    Ok(conn)
}

/// Sends one command to `endpoint` on a fresh blocking connection.
pub(super) fn query<T: FromRedisValue>(
    endpoint: &Endpoint,
    cmd: &redis::Cmd,
) -> Result<T, QueryError> {
    let mut conn = connect(endpoint)?;
    Ok(cmd.query(&mut conn)?)
}

/// Runs blocking work (queries, `redis-cli`) off the runtime's worker threads.
pub(super) async fn run_blocking<T, F>(work: F) -> Result<T, FixtureError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| FixtureError::Command {
            node: "fixture".to_owned(),
            detail: format!("blocking task failed: {err}"),
        })
}

/// Runs `check` every [`WAIT_INTERVAL`] (on a blocking thread, in real time) until it returns `Ok`, or
/// fails with [`FixtureError::Timeout`] carrying its last `Err` once `timeout` has passed.
pub(super) async fn poll_until<T, F>(
    what: &str,
    timeout: Duration,
    check: F,
) -> Result<T, FixtureError>
where
    F: Fn() -> Result<T, String> + Send + Sync + 'static,
    T: Send + 'static,
{
    let check = Arc::new(check);
    let started = Instant::now();
    let mut delay = Duration::ZERO;
    loop {
        let round = Arc::clone(&check);
        let outcome = run_blocking(move || {
            std::thread::sleep(delay);
            round()
        })
        .await?;
        match outcome {
            Ok(value) => return Ok(value),
            Err(last) if started.elapsed() >= timeout => {
                return Err(FixtureError::Timeout {
                    what: what.to_owned(),
                    waited: started.elapsed(),
                    last,
                });
            }
            Err(_) => delay = WAIT_INTERVAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_what_the_config_parser_would_split_on() {
        assert_eq!(quote("plain"), r#""plain""#);
        assert_eq!(quote(r#"a "b" \c"#), r#""a \"b\" \\c""#);
        assert_eq!(quote("é\n"), r#""\xc3\xa9\x0a""#);
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let debug = format!("{:?}", Credentials::with_user("alice", "s3cret"));
        assert!(
            debug.contains("alice") && !debug.contains("s3cret"),
            "{debug}"
        );
        let url = Credentials::with_user("a b", "p@ss").url_for(loopback(7000));
        assert_eq!(url, "redis://a%20b:p%40ss@127.0.0.1:7000");
    }

    #[test]
    fn options_out_of_range_are_refused() {
        let bad = [
            SentinelTopology::builder().quorum(0),
            SentinelTopology::builder().quorum(4),
            SentinelTopology::builder().master_name("my master"),
            SentinelTopology::builder().down_after(Duration::from_micros(10)),
            SentinelTopology::builder().failover_timeout(Duration::from_secs(100_000)),
            SentinelTopology::builder().data_auth(Credentials::with_password("")),
            SentinelTopology::builder().sentinel_auth(Credentials::with_password("--x")),
            SentinelTopology::builder().sentinel_auth(Credentials::with_user("a b", "pw")),
        ];
        for builder in bad {
            assert!(
                matches!(builder.validate(), Err(FixtureError::InvalidArg(_))),
                "{builder:?}"
            );
        }
        assert!(SentinelTopology::builder().validate().is_ok());
    }

    #[test]
    fn a_linked_replica_has_the_role_the_master_and_the_link_up() {
        let master = loopback(7000);
        let info = |text: &str| parse_info(text);
        let linked =
            "role:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:7000\r\nmaster_link_status:up\r\n";
        assert!(check_linked(&info(linked), loopback(7001), master).is_ok());
        let down = linked.replace("status:up", "status:down");
        let why = check_linked(&info(&down), loopback(7001), master).unwrap_err();
        assert!(why.contains("link down"), "{why}");
        assert!(check_linked(&info(linked), loopback(7001), loopback(7002)).is_err());
        assert!(check_linked(&info("role:master\r\n"), loopback(7001), master).is_err());
        assert_eq!(
            offset(&info("slave_repl_offset:42\r\n"), "slave_repl_offset"),
            Some(42)
        );
        assert_eq!(
            offset(&info("slave_repl_offset:x\r\n"), "slave_repl_offset"),
            None
        );
    }

    #[test]
    fn info_fields_are_parsed() {
        let info = parse_info("# Replication\r\nrole:slave\r\nmaster_port:7000\r\n");
        assert_eq!(info.get("role").map(String::as_str), Some("slave"));
        assert_eq!(info.get("master_port").map(String::as_str), Some("7000"));
    }
}
