//! [`ClusterTopology`]: a Redis Cluster of three primaries and three replicas on loopback, for cluster tests.
//!
//! Each node is a [`RedisServer`] started with `cluster-enabled yes` (its `nodes.conf` lives in the
//! server's own directory, so a restarted node keeps its id), then `redis-cli --cluster create ...
//! --cluster-replicas 1 --cluster-yes` joins them. The cluster bus port is not left to the default
//! `port + 10000` (which may be taken, or above 65535): every node gets a second reserved free port as
//! its `cluster-port`, so all ports come from the fixture's one reservation. Nodes announce `127.0.0.1`
//! and run with `repl-diskless-sync-delay 0`, so a replica syncs at once instead of after 5 s.
//!
//! The fixture only signals its own children, by pid, like [`RedisServer`]; `redis-cli` runs are its own
//! children too, killed if they overrun their deadline. [`ClusterTopology::wait_until_ok`] is the check to
//! call after a fault, before asserting on the cluster's shape.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{Read, Seek};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::sentinel::{
    Endpoint, QueryError, addr_of, connect, millis, parse_info, poll_until, query, run_blocking,
};
use super::{ADDR_IN_USE, FixtureError, RedisServer};

/// Default `cluster-node-timeout`: how long a node may be silent before the others flag it as failing.
const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_millis(1000);
/// How many nodes a cluster runs: three primaries, each with one replica.
const NODES: usize = 6;
/// Hash slots of a Redis Cluster.
const SLOTS: usize = 16384;
/// The program that creates and reshards the cluster, looked up on `PATH`.
const CLI: &str = "redis-cli";
/// Longest `redis-cli --cluster` run before the fixture kills it.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two checks whether a `redis-cli` run has finished.
const CLI_POLL: Duration = Duration::from_millis(10);
/// Lines of `redis-cli` output kept in an error.
const CLI_TAIL_LINES: usize = 20;
/// How long [`ClusterTopologyBuilder::start`] waits for the new cluster to be ok.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many bus ports a node start tries when its bus port was taken meanwhile.
const BUS_PORT_ATTEMPTS: usize = 3;

/// Options of a [`ClusterTopology`]; [`start`](Self::start) launches it.
///
/// Made by [`ClusterTopology::builder`]; every option has a default suited to tests.
#[derive(Debug, Clone)]
pub struct ClusterTopologyBuilder {
    /// `cluster-node-timeout`; default 1 s.
    node_timeout: Duration,
}

impl Default for ClusterTopologyBuilder {
    fn default() -> Self {
        ClusterTopologyBuilder {
            node_timeout: DEFAULT_NODE_TIMEOUT,
        }
    }
}

impl ClusterTopologyBuilder {
    /// `cluster-node-timeout`: how long a node may be silent before it is flagged as failing and its
    /// replica may take over (default 1 s; whole milliseconds, 1 ms to 24 h).
    pub fn node_timeout(mut self, node_timeout: Duration) -> Self {
        self.node_timeout = node_timeout;
        self
    }

    /// Starts six cluster-enabled nodes, joins them with `redis-cli --cluster create ...
    /// --cluster-replicas 1 --cluster-yes`, and waits (up to 30 s) until
    /// [`wait_until_ok`](ClusterTopology::wait_until_ok) holds.
    ///
    /// # Errors
    ///
    /// [`FixtureError::InvalidArg`] for an option out of range; what [`RedisServer::start_with_args`]
    /// returns; [`FixtureError::Command`] if `redis-cli` is missing, fails or overruns 60 s;
    /// [`FixtureError::TempDir`] if its output file cannot be made; [`FixtureError::Timeout`] if the
    /// cluster does not become ok.
    pub async fn start(self) -> Result<ClusterTopology, FixtureError> {
        let timeout_ms = millis("node_timeout", self.node_timeout)?;
        let mut members = Vec::with_capacity(NODES);
        for _ in 0..NODES {
            members.push(Member::start(timeout_ms).await?);
        }
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(members.iter().map(|m| addr_of(&m.server).to_string()));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"].map(String::from));
        run_blocking(move || run_cli(&args)).await??;
        let topology = ClusterTopology {
            members,
            options: self,
        };
        topology.wait_until_ok(START_TIMEOUT).await?;
        Ok(topology)
    }
}

/// One node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterNode {
    /// The node's id (40 hex characters; it survives restarts).
    pub id: String,
    /// The node's client address.
    pub addr: SocketAddr,
    /// The id of the primary it replicates, for a replica; `None` for a primary.
    pub primary_id: Option<String>,
    /// Its flags as listed: `myself`, `master`, `slave`, `fail?`, `fail`, `handshake`, `noaddr`, ...
    pub flags: Vec<String>,
    /// The slot ranges it serves, inclusive (empty for a replica).
    pub slots: Vec<RangeInclusive<u16>>,
}

impl ClusterNode {
    /// Whether it is flagged `master`.
    pub fn is_primary(&self) -> bool {
        self.has_flag("master")
    }

    /// Whether it is flagged `slave`.
    pub fn is_replica(&self) -> bool {
        self.has_flag("slave")
    }

    /// Whether it is flagged `fail` or `fail?`.
    pub fn is_failed(&self) -> bool {
        self.has_flag("fail") || self.has_flag("fail?")
    }

    /// How many slots it serves.
    pub fn slot_count(&self) -> usize {
        self.slots.iter().map(|r| r.clone().count()).sum()
    }

    /// Whether `flag` is among its flags.
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// Six `redis-server` cluster nodes (three primaries, three replicas), each a child process of this
/// fixture on `127.0.0.1`.
///
/// Nodes are named by address; roles change with failovers, so ask [`primaries`](Self::primaries) or
/// [`primary_for_slot`](Self::primary_for_slot) rather than remembering. Dropping the topology kills
/// and reaps every node (paused ones too) and removes their directories.
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use redis_supervisor::testing::ClusterTopology;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut cluster = ClusterTopology::start().await?;
/// let seeds = cluster.seed_nodes(); // what a cluster client is configured with
/// assert_eq!(seeds.len(), 6);
///
/// // Kill the primary of slot 0: its replica takes over.
/// let old = cluster.primary_for_slot(0).await?;
/// cluster.kill_node(old).await?;
/// cluster.wait_until_ok(Duration::from_secs(20)).await?;
/// assert_ne!(cluster.primary_for_slot(0).await?, old);
///
/// // Move 100 slots between two primaries.
/// let primaries = cluster.primaries().await?;
/// cluster.reshard(primaries[0], primaries[1], 100).await?;
/// cluster.wait_until_ok(Duration::from_secs(20)).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ClusterTopology {
    /// The six nodes, in the order given to `redis-cli --cluster create`.
    members: Vec<Member>,
    /// The options it was started with.
    options: ClusterTopologyBuilder,
}

impl ClusterTopology {
    /// Starts a cluster with the default options (see [`ClusterTopologyBuilder::start`]).
    ///
    /// # Errors
    ///
    /// As [`ClusterTopologyBuilder::start`].
    pub async fn start() -> Result<ClusterTopology, FixtureError> {
        Self::builder().start().await
    }

    /// Options to start a cluster with.
    pub fn builder() -> ClusterTopologyBuilder {
        ClusterTopologyBuilder::default()
    }

    /// The `cluster-node-timeout` the nodes run with.
    pub fn node_timeout(&self) -> Duration {
        self.options.node_timeout
    }

    /// Every node's address (killed ones included; their ports stay reserved), for a cluster client's
    /// seed list.
    pub fn seed_nodes(&self) -> Vec<SocketAddr> {
        self.members.iter().map(|m| addr_of(&m.server)).collect()
    }

    /// The nodes' fixtures, in the order of [`seed_nodes`](Self::seed_nodes), for their pids,
    /// directories and logs.
    pub fn servers(&self) -> impl Iterator<Item = &RedisServer> {
        self.members.iter().map(|m| &m.server)
    }

    /// The pids of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.servers().filter_map(RedisServer::pid).collect()
    }

    /// Every node as the first node that answers lists it (`CLUSTER NODES`), failed ones included.
    ///
    /// # Errors
    ///
    /// [`FixtureError::Command`] if no node answers, or one answers with an error.
    pub async fn cluster_nodes(&self) -> Result<Vec<ClusterNode>, FixtureError> {
        let endpoints = self.endpoints();
        let view = run_blocking(move || first_view(&endpoints)).await??;
        Ok(view.nodes)
    }

    /// The primaries (flagged `master`, not failed), as the first node that answers lists them.
    ///
    /// # Errors
    ///
    /// As [`cluster_nodes`](Self::cluster_nodes).
    pub async fn primaries(&self) -> Result<Vec<SocketAddr>, FixtureError> {
        let nodes = self.cluster_nodes().await?;
        let primaries = nodes.iter().filter(|n| n.is_primary() && !n.is_failed());
        Ok(primaries.map(|n| n.addr).collect())
    }

    /// The replicas (flagged `slave`, not failed), as the first node that answers lists them.
    ///
    /// # Errors
    ///
    /// As [`cluster_nodes`](Self::cluster_nodes).
    pub async fn replicas(&self) -> Result<Vec<SocketAddr>, FixtureError> {
        let nodes = self.cluster_nodes().await?;
        let replicas = nodes.iter().filter(|n| n.is_replica() && !n.is_failed());
        Ok(replicas.map(|n| n.addr).collect())
    }

    /// The node serving `slot`, as the first node that answers says.
    ///
    /// # Errors
    ///
    /// [`FixtureError::InvalidArg`] if `slot` is 16384 or more; as [`cluster_nodes`](Self::cluster_nodes);
    /// [`FixtureError::Command`] if no node serves it.
    pub async fn primary_for_slot(&self, slot: u16) -> Result<SocketAddr, FixtureError> {
        if usize::from(slot) >= SLOTS {
            return Err(FixtureError::InvalidArg(format!(
                "slot {slot}: slots are 0 to 16383"
            )));
        }
        let nodes = self.cluster_nodes().await?;
        nodes
            .iter()
            .find(|n| n.slots.iter().any(|r| r.contains(&slot)))
            .map(|n| n.addr)
            .ok_or_else(|| FixtureError::Command {
                node: "cluster".to_owned(),
                detail: format!("no node serves slot {slot}"),
            })
    }

    /// Kills the node at `addr` with SIGKILL and reaps it.
    ///
    /// # Errors
    ///
    /// [`FixtureError::InvalidArg`] if `addr` is no node of this cluster; as [`RedisServer::kill`].
    pub async fn kill_node(&mut self, addr: SocketAddr) -> Result<(), FixtureError> {
        let i = self.find(addr)?;
        self.members[i].server.kill().await
    }

    /// Freezes the node at `addr` with SIGSTOP; [`resume_node`](Self::resume_node) undoes it.
    ///
    /// # Errors
    ///
    /// [`FixtureError::InvalidArg`] if `addr` is no node of this cluster; as [`RedisServer::pause`].
    pub fn pause_node(&self, addr: SocketAddr) -> Result<(), FixtureError> {
        self.members[self.find(addr)?].server.pause()
    }

    /// Lets the paused node at `addr` run again with SIGCONT.
    ///
    /// # Errors
    ///
    /// [`FixtureError::InvalidArg`] if `addr` is no node of this cluster; as [`RedisServer::resume`].
    pub fn resume_node(&self, addr: SocketAddr) -> Result<(), FixtureError> {
        self.members[self.find(addr)?].server.resume()
    }

    /// Starts the node at `addr` again on the same ports and directory (killing it first if it runs),
    /// and waits until it answers `PING`. It keeps its id; a primary that was replaced meanwhile rejoins
    /// as a replica of its successor.
    ///
    /// # Errors
    ///
    /// [`FixtureError::InvalidArg`] if `addr` is no node of this cluster; as [`RedisServer::restart`].
    pub async fn restart_node(&mut self, addr: SocketAddr) -> Result<(), FixtureError> {
        let i = self.find(addr)?;
        self.members[i].server.restart().await
    }

    /// Waits until the cluster has settled. For the nodes that answer (killed and paused ones are left
    /// out), every one:
    ///
    /// - reports `cluster_state:ok` and `cluster_slots_assigned:16384`;
    /// - lists every answering node without `fail`, `fail?`, `handshake` or `noaddr`, and every node
    ///   that does not answer as `fail`;
    /// - has the same slot map, all 16384 slots served by answering primaries, and no answering primary
    ///   without slots;
    /// - as a replica, has `master_link_status:up`.
    ///
    /// # Errors
    ///
    /// [`FixtureError::Timeout`] after `timeout`, saying which condition failed last.
    pub async fn wait_until_ok(&self, timeout: Duration) -> Result<(), FixtureError> {
        let endpoints = self.endpoints();
        poll_until("a settled cluster", timeout, move || settled(&endpoints)).await
    }

    /// Moves `n_slots` slots from the primary at `from` to the primary at `to` with
    /// `redis-cli --cluster reshard ... --cluster-yes`, and returns when it has finished. The other nodes
    /// learn the new owners by gossip: [`wait_until_ok`](Self::wait_until_ok) waits for that. `redis-cli`
    /// refuses to run while nodes disagree about the slots, so wait until ok first.
    ///
    /// # Errors
    ///
    /// [`FixtureError::InvalidArg`] if `n_slots` is 0 or more than 16384, or `from` or `to` is no node of
    /// this cluster; [`FixtureError::Command`] if either does not answer `CLUSTER MYID`, or `redis-cli`
    /// fails or overruns 60 s; [`FixtureError::TempDir`] if its output file cannot be made.
    pub async fn reshard(
        &self,
        from: SocketAddr,
        to: SocketAddr,
        n_slots: u16,
    ) -> Result<(), FixtureError> {
        if n_slots == 0 || usize::from(n_slots) > SLOTS {
            return Err(FixtureError::InvalidArg(format!(
                "reshard of {n_slots} slots: must be 1 to {SLOTS}"
            )));
        }
        self.find(from)?;
        self.find(to)?;
        run_blocking(move || {
            let from_id = node_id(from)?;
            let to_id = node_id(to)?;
            let args: Vec<String> = vec![
                "--cluster".into(),
                "reshard".into(),
                from.to_string(),
                "--cluster-from".into(),
                from_id,
                "--cluster-to".into(),
                to_id,
                "--cluster-slots".into(),
                n_slots.to_string(),
                "--cluster-yes".into(),
            ];
            run_cli(&args).map(drop)
        })
        .await?
    }

    /// The last lines of every node's log (and standard error), each under a header; for failure
    /// messages.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for member in &self.members {
            let server = &member.server;
            let (addr, bus) = (addr_of(server), member.bus_port.0);
            let _ = writeln!(
                out,
                "--- node {addr} (bus port {bus}) ---\n{}",
                server.log_tail()
            );
        }
        out
    }

    /// The index of the node at `addr`.
    fn find(&self, addr: SocketAddr) -> Result<usize, FixtureError> {
        self.members
            .iter()
            .position(|m| addr_of(&m.server) == addr)
            .ok_or_else(|| FixtureError::InvalidArg(format!("{addr} is no node of this cluster")))
    }

    /// The running nodes, for the blocking checks.
    fn endpoints(&self) -> Vec<Endpoint> {
        self.servers()
            .filter(|s| s.pid().is_some())
            .map(|s| Endpoint {
                addr: addr_of(s),
                auth: None,
            })
            .collect()
    }
}

/// A cluster node: its server and its reserved cluster bus port.
#[derive(Debug)]
struct Member {
    /// The server (dropped, so killed, before the bus port is released).
    server: RedisServer,
    /// The `cluster-port` reservation.
    bus_port: PortReservation,
}

impl Member {
    /// Starts a cluster-enabled node on a free port with a free bus port, trying another bus port if
    /// that one was taken meanwhile.
    async fn start(timeout_ms: u64) -> Result<Member, FixtureError> {
        let mut attempt = 1;
        loop {
            let bus_port = PortReservation(super::reserve_port()?);
            let args = [
                "--cluster-enabled".to_owned(),
                "yes".to_owned(),
                "--cluster-config-file".to_owned(),
                "nodes.conf".to_owned(),
                "--cluster-node-timeout".to_owned(),
                timeout_ms.to_string(),
                "--cluster-port".to_owned(),
                bus_port.0.to_string(),
                "--cluster-announce-ip".to_owned(),
                super::HOST.to_owned(),
                // A file-based sync: after a diskless one Redis 7.0 can leave a linked
                // replica unfed for up to a second (see the Sentinel fixture).
                "--repl-diskless-sync".to_owned(),
                "no".to_owned(),
                "--rdb-del-sync-files".to_owned(),
                "yes".to_owned(),
            ];
            match RedisServer::start_with_args(args).await {
                Ok(server) => return Ok(Member { server, bus_port }),
                Err(FixtureError::Exited { log_tail, .. })
                    if attempt < BUS_PORT_ATTEMPTS && log_tail.contains(ADDR_IN_USE) =>
                {
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

/// A port held in the fixture's reservation until dropped.
#[derive(Debug)]
struct PortReservation(u16);

impl Drop for PortReservation {
    fn drop(&mut self) {
        super::release_port(self.0);
    }
}

/// One node's view of the cluster.
#[derive(Debug)]
struct View {
    /// The node asked.
    addr: SocketAddr,
    /// Its own id (the `myself` line).
    myself: String,
    /// Whether it is a replica (its `myself` line says `slave`).
    is_replica: bool,
    /// The nodes it lists (those with an address).
    nodes: Vec<ClusterNode>,
    /// How many listed nodes had no usable address (`noaddr`, handshakes).
    unaddressed: usize,
    /// `CLUSTER INFO`.
    cluster_info: std::collections::HashMap<String, String>,
    /// `INFO replication`.
    replication: std::collections::HashMap<String, String>,
}

/// Asks `endpoint` for `CLUSTER NODES`, `CLUSTER INFO` and `INFO replication` in one round trip.
fn view(endpoint: &Endpoint) -> Result<View, QueryError> {
    let mut conn = connect(endpoint)?;
    let (nodes, info, replication): (String, String, String) = redis::pipe()
        .cmd("CLUSTER")
        .arg("NODES")
        .cmd("CLUSTER")
        .arg("INFO")
        .cmd("INFO")
        .arg("replication")
        .query(&mut conn)?;
    let (nodes, unaddressed, myself) = parse_nodes(&nodes);
    let myself = myself
        .ok_or_else(|| QueryError::Failed("CLUSTER NODES has no `myself` line".to_owned()))?;
    let is_replica = (nodes.iter())
        .find(|n| n.id == myself)
        .is_some_and(ClusterNode::is_replica);
    Ok(View {
        addr: endpoint.addr,
        myself,
        is_replica,
        nodes,
        unaddressed,
        cluster_info: parse_info(&info),
        replication: parse_info(&replication),
    })
}

/// The view of the first node that answers.
fn first_view(endpoints: &[Endpoint]) -> Result<View, FixtureError> {
    let mut last = String::from("no node is running");
    for endpoint in endpoints {
        match view(endpoint) {
            Ok(view) => return Ok(view),
            Err(QueryError::Unreachable(why)) => last = format!("{}: {why}", endpoint.addr),
            Err(QueryError::Failed(detail)) => {
                return Err(FixtureError::Command {
                    node: endpoint.addr.to_string(),
                    detail,
                });
            }
        }
    }
    Err(FixtureError::Command {
        node: "cluster".to_owned(),
        detail: format!("no node answers ({last})"),
    })
}

/// The id of the node at `addr` (`CLUSTER MYID`).
fn node_id(addr: SocketAddr) -> Result<String, FixtureError> {
    let endpoint = Endpoint { addr, auth: None };
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("MYID");
    query(&endpoint, &cmd).map_err(|err| FixtureError::Command {
        node: addr.to_string(),
        detail: format!("CLUSTER MYID: {err}"),
    })
}

/// One round of [`ClusterTopology::wait_until_ok`]: `Ok`, or why the cluster has not settled yet.
fn settled(endpoints: &[Endpoint]) -> Result<(), String> {
    let mut views = Vec::with_capacity(endpoints.len());
    for endpoint in endpoints {
        match view(endpoint) {
            Ok(view) => views.push(view),
            Err(QueryError::Unreachable(_)) => {}
            Err(QueryError::Failed(why)) => return Err(format!("{}: {why}", endpoint.addr)),
        }
    }
    if views.is_empty() {
        return Err("no node answers".to_owned());
    }
    let live: BTreeSet<&str> = views.iter().map(|v| v.myself.as_str()).collect();
    let mut agreed_map: Option<(SocketAddr, Vec<Option<&str>>)> = None;
    for view in &views {
        check_view(view, &live)?;
        let owners = slot_owners(&view.nodes);
        if let Some(slot) = owners
            .iter()
            .position(|o| !o.is_some_and(|id| live.contains(id)))
        {
            return Err(format!(
                "{}: slot {slot} is not served by a node that answers",
                view.addr
            ));
        }
        match &agreed_map {
            None => agreed_map = Some((view.addr, owners)),
            Some((first, map)) if *map != owners => {
                return Err(format!(
                    "{first} and {} disagree on the slot map",
                    view.addr
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Checks one node's own state and how it sees the others (`live`: the ids of the nodes that answer).
fn check_view(view: &View, live: &BTreeSet<&str>) -> Result<(), String> {
    let at = view.addr;
    let info = |key: &str| view.cluster_info.get(key).map_or("?", String::as_str);
    if info("cluster_state") != "ok" || info("cluster_slots_assigned") != "16384" {
        return Err(format!(
            "{at}: cluster_state {}, {} slots assigned",
            info("cluster_state"),
            info("cluster_slots_assigned")
        ));
    }
    if view.unaddressed > 0 {
        return Err(format!("{at}: lists nodes without an address"));
    }
    for node in &view.nodes {
        let flags = node.flags.join(",");
        if live.contains(node.id.as_str()) {
            let unsettled = ["fail", "fail?", "handshake", "noaddr"];
            if node.flags.iter().any(|f| unsettled.contains(&f.as_str())) {
                return Err(format!("{at}: sees {} as {flags}", node.addr));
            }
            if node.is_primary() && node.slots.is_empty() {
                return Err(format!(
                    "{at}: sees {} as a primary without slots",
                    node.addr
                ));
            }
        } else if !node.has_flag("fail") {
            return Err(format!(
                "{at}: sees {}, which does not answer, as {flags}",
                node.addr
            ));
        }
    }
    if let Some(missing) = live
        .iter()
        .find(|id| !view.nodes.iter().any(|n| n.id == **id))
    {
        return Err(format!("{at}: does not know node {missing}"));
    }
    let link = view.replication.get("master_link_status");
    if view.is_replica && link.map(String::as_str) != Some("up") {
        return Err(format!("{at}: replica with master link {link:?}"));
    }
    Ok(())
}

/// Which node id serves each slot (`None`: unassigned).
fn slot_owners(nodes: &[ClusterNode]) -> Vec<Option<&str>> {
    let mut owners = vec![None; SLOTS];
    for node in nodes {
        for range in &node.slots {
            for slot in range.clone() {
                if let Some(owner) = owners.get_mut(usize::from(slot)) {
                    *owner = Some(node.id.as_str());
                }
            }
        }
    }
    owners
}

/// Parses `CLUSTER NODES`: the nodes with an address, how many had none, and the `myself` id.
fn parse_nodes(text: &str) -> (Vec<ClusterNode>, usize, Option<String>) {
    let mut nodes = Vec::new();
    let mut unaddressed = 0;
    let mut myself = None;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [
            id,
            addr,
            flags,
            primary,
            _ping,
            _pong,
            _epoch,
            _link,
            slots @ ..,
        ] = fields.as_slice()
        else {
            continue;
        };
        let flags: Vec<String> = flags.split(',').map(str::to_owned).collect();
        if flags.iter().any(|f| f == "myself") {
            myself = Some((*id).to_owned());
        }
        // `ip:port@cport[,hostname]`; a node in handshake or without an address has none usable.
        let Some(addr) = addr
            .split('@')
            .next()
            .and_then(|a| a.parse::<SocketAddr>().ok())
        else {
            unaddressed += 1;
            continue;
        };
        nodes.push(ClusterNode {
            id: (*id).to_owned(),
            addr,
            primary_id: (*primary != "-").then(|| (*primary).to_owned()),
            flags,
            slots: slots.iter().filter_map(|s| parse_slots(s)).collect(),
        });
    }
    (nodes, unaddressed, myself)
}

/// One slot entry of `CLUSTER NODES`: `5` or `0-5460`; migrating / importing entries (`[...]`) and
/// anything out of range give `None`.
fn parse_slots(entry: &str) -> Option<RangeInclusive<u16>> {
    let (start, end) = entry.split_once('-').unwrap_or((entry, entry));
    let start: u16 = start.parse().ok()?;
    let end: u16 = end.parse().ok()?;
    (start <= end && usize::from(end) < SLOTS).then_some(start..=end)
}

/// Runs `redis-cli ARGS` as a child of its own, with stdout and stderr in an anonymous temporary file,
/// killing it (by its own pid) if it overruns [`CLI_TIMEOUT`]; returns its output.
fn run_cli(args: &[String]) -> Result<String, FixtureError> {
    let what = format!(
        "{CLI} {}",
        args.iter().take(2).cloned().collect::<Vec<_>>().join(" ")
    );
    let mut output = tempfile::tempfile().map_err(FixtureError::TempDir)?;
    let stdout = output.try_clone().map_err(FixtureError::TempDir)?;
    let stderr = output.try_clone().map_err(FixtureError::TempDir)?;
    let mut child = Command::new(CLI)
        .args(args)
        .env_remove("REDISCLI_AUTH")
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .spawn()
        .map_err(|err| FixtureError::Command {
            node: what.clone(),
            detail: format!("could not start it (is redis-cli on PATH?): {err}"),
        })?;
    let deadline = Instant::now() + CLI_TIMEOUT;
    let status: Result<ExitStatus, String> = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(CLI_POLL),
            Ok(None) => break Err(format!("still running after {CLI_TIMEOUT:?}; killed it")),
            Err(err) => break Err(format!("could not wait for it: {err}")),
        }
    };
    if status.is_err() {
        // Our own child, not reaped yet: kill(2) cannot hit another process.
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut text = Vec::new();
    let read = output.rewind().and_then(|()| output.read_to_end(&mut text));
    let text = strip_ansi(&String::from_utf8_lossy(&text));
    if let Err(err) = read {
        return Err(FixtureError::Command {
            node: what,
            detail: format!("could not read its output: {err}"),
        });
    }
    match status {
        Ok(status) if status.success() => Ok(text),
        Ok(status) => Err(FixtureError::Command {
            node: what,
            detail: format!("{status}; output tail:\n{}", last_lines(&text)),
        }),
        Err(why) => Err(FixtureError::Command {
            node: what,
            detail: format!("{why}; output tail:\n{}", last_lines(&text)),
        }),
    }
}

/// The last [`CLI_TAIL_LINES`] lines of `text`.
fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(CLI_TAIL_LINES)..].join("\n")
}

/// `text` without ANSI colour sequences (`redis-cli --cluster` colours its output even into a file).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip `ESC [ ... final-byte`.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES_TEXT: &str = "\
07c3 127.0.0.1:30004@31004,host slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
e7d1 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 [5461->-67ed]
6ec2 :0@0 master,fail,noaddr - 1 2 3 disconnected
";

    #[test]
    fn cluster_nodes_are_parsed() {
        let (nodes, unaddressed, myself) = parse_nodes(NODES_TEXT);
        assert_eq!(myself.as_deref(), Some("e7d1"));
        assert_eq!(unaddressed, 1);
        assert_eq!(nodes.len(), 3);
        assert!(nodes[0].is_replica() && !nodes[0].is_primary());
        assert_eq!(nodes[0].primary_id.as_deref(), Some("e7d1"));
        assert_eq!(nodes[0].addr.to_string(), "127.0.0.1:30004");
        assert_eq!(nodes[1].slots, [5461..=10922]);
        assert_eq!(nodes[2].slots, [0..=5460]);
        assert_eq!(nodes[2].slot_count(), 5461);
        let owners = slot_owners(&nodes);
        assert_eq!(owners[0], Some("e7d1"));
        assert_eq!(owners[10922], Some("67ed"));
        assert_eq!(owners[16383], None);
    }

    #[test]
    fn slot_entries_out_of_range_are_ignored() {
        assert_eq!(parse_slots("7"), Some(7..=7));
        assert_eq!(parse_slots("16383"), Some(16383..=16383));
        assert_eq!(parse_slots("16384"), None);
        assert_eq!(parse_slots("9-3"), None);
        assert_eq!(parse_slots("[5->-ab]"), None);
    }

    #[test]
    fn ansi_colours_are_stripped() {
        assert_eq!(
            strip_ansi("\u{1b}[32;1m[OK] done\n\u{1b}[0m>>> next"),
            "[OK] done\n>>> next"
        );
    }
}
