//! A private Redis Cluster for tests: six `redis-server` processes in cluster mode (three
//! masters, three replicas) on free ports, a temporary directory for their `nodes-*.conf`, and
//! `redis-cli` for everything administrative (which node owns a slot, killing a master, waiting
//! for the failover). Every process is killed, and the directory removed, on drop. The shared
//! Redis on 6379 is never touched.
//!
//! When `redis-server` or `redis-cli` is missing, or the cluster does not form, the helper
//! prints `SKIPPED: <why>` and returns `None` (see [`crate::services`]), unless
//! `ACCEL_REQUIRE_SERVICES=1`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::services::absent;

/// Nodes: three masters with one replica each.
const NODES: usize = 6;

/// A running six-node Redis Cluster of this test's own.
#[derive(Debug)]
pub struct PrivateCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

#[derive(Debug)]
struct Node {
    port: u16,
    child: Option<Child>,
}

/// One line of `CLUSTER NODES`, as far as tests care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    pub port: u16,
    pub master: bool,
    /// Failed (`fail` or `fail?` flag) or disconnected.
    pub failed: bool,
    /// Slot ranges served, inclusive (masters only).
    pub slots: Vec<(u16, u16)>,
}

/// Starts a six-node cluster (node timeout 1 s, no persistence) and waits until every node
/// reports `cluster_state:ok`; `None` (after printing why) when it cannot.
pub async fn private_cluster() -> Option<PrivateCluster> {
    if let Err(e) = Command::new("redis-cli").arg("--version").stdout(Stdio::null()).status() {
        return absent(&format!("cannot run redis-cli: {e}"));
    }
    let dir = std::env::temp_dir().join(format!("accel-cluster-{}-{}", std::process::id(), unique()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return absent(&format!("cannot create {}: {e}", dir.display()));
    }
    let mut cluster = PrivateCluster { nodes: Vec::with_capacity(NODES), dir };
    for port in cluster_ports(NODES) {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-config-file", &format!("nodes-{port}.conf")])
            .args(["--cluster-node-timeout", "1000", "--save", "", "--appendonly", "no"])
            // A replica may take over however long it was cut off: tests kill masters early.
            .args(["--cluster-replica-validity-factor", "0"])
            .arg("--dir")
            .arg(&cluster.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(child) => cluster.nodes.push(Node { port, child: Some(child) }),
            Err(e) => return absent(&format!("cannot start redis-server: {e}")),
        }
    }
    for port in cluster.ports() {
        let deadline = tokio::time::Instant::now() + crate::DEADLINE;
        while cli(port, &["PING"]).await.as_deref() != Some("PONG") {
            if tokio::time::Instant::now() > deadline {
                return absent(&format!("cluster node on port {port} did not start"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut create = tokio::process::Command::new("redis-cli");
    create.arg("--cluster").arg("create");
    for port in cluster.ports() {
        create.arg(format!("127.0.0.1:{port}"));
    }
    create.args(["--cluster-replicas", "1", "--cluster-yes"]).stdin(Stdio::null());
    match create.output().await {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            let why = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_owned();
            return absent(&format!("redis-cli --cluster create failed: {why}"));
        }
        Err(e) => return absent(&format!("cannot run redis-cli --cluster create: {e}")),
    }
    if !cluster.wait_ok(crate::DEADLINE).await {
        return absent("the private Redis Cluster never reached cluster_state:ok");
    }
    if !cluster.wait_replicas_synced(crate::DEADLINE).await {
        return absent("the private Redis Cluster's replicas never synchronised");
    }
    Some(cluster)
}

impl PrivateCluster {
    /// Every node's port, started or killed.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// `redis://127.0.0.1:<port>` of every node, for `[redis] cluster = [...]`.
    pub fn urls(&self) -> Vec<String> {
        self.ports().into_iter().map(|p| format!("redis://127.0.0.1:{p}")).collect()
    }

    /// `[redis]` with `cluster = [every node]`, then `extra` lines.
    pub fn redis_section(&self, extra: &str) -> String {
        self.redis_section_from(self.nodes[0].port, extra)
    }

    /// [`redis_section`](Self::redis_section) with the node on `first` listed first: the
    /// sidecars subscribe to purges there.
    pub fn redis_section_from(&self, first: u16, extra: &str) -> String {
        let mut ports = self.ports();
        ports.sort_by_key(|&p| p != first);
        let nodes: Vec<String> = ports.iter().map(|p| format!("\"redis://127.0.0.1:{p}\"")).collect();
        format!("[redis]\ncluster = [{}]\n{extra}\n", nodes.join(", "))
    }

    /// Runs `redis-cli -p <port> <args...>`; its trimmed output, or `None` when it did not run
    /// or the node did not answer.
    pub async fn cli(&self, port: u16, args: &[&str]) -> Option<String> {
        cli(port, args).await
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`, asked of a live node).
    pub async fn slot(&self, key: &str) -> u16 {
        for port in self.live_ports() {
            if let Some(slot) = cli(port, &["CLUSTER", "KEYSLOT", key]).await.and_then(|s| s.parse().ok()) {
                return slot;
            }
        }
        panic!("no live cluster node answered CLUSTER KEYSLOT");
    }

    /// The cluster's view (`CLUSTER NODES` of a live node).
    pub async fn topology(&self) -> Vec<ClusterNode> {
        for port in self.live_ports() {
            if let Some(text) = cli(port, &["CLUSTER", "NODES"]).await {
                let nodes: Vec<ClusterNode> = text.lines().filter_map(parse_node).collect();
                if !nodes.is_empty() {
                    return nodes;
                }
            }
        }
        panic!("no live cluster node answered CLUSTER NODES");
    }

    /// The port of the live master serving `key`'s slot, if the cluster has one now.
    pub async fn master_of(&self, key: &str) -> Option<u16> {
        let slot = self.slot(key).await;
        self.topology()
            .await
            .into_iter()
            .find(|n| n.master && !n.failed && n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .map(|n| n.port)
    }

    /// Kills the node on `port` (SIGKILL: connections drop, nothing is handed over).
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port)
            && let Some(mut child) = node.child.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until every live node reports `cluster_state:ok`; false after `within`.
    pub async fn wait_ok(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut all_ok = true;
            for port in self.live_ports() {
                let info = cli(port, &["CLUSTER", "INFO"]).await.unwrap_or_default();
                all_ok &= info.lines().any(|l| l.trim() == "cluster_state:ok");
            }
            if all_ok {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every live replica's link to its master is up (`master_link_status:up`),
    /// so that it has the data and may be promoted; false after `within`.
    pub async fn wait_replicas_synced(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut synced = 0;
            for port in self.live_ports() {
                let info = cli(port, &["INFO", "replication"]).await.unwrap_or_default();
                synced += usize::from(info.lines().any(|l| l.trim() == "master_link_status:up"));
            }
            if synced >= NODES / 2 {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `key`'s slot is served by a live master other than `old`: the replica was
    /// promoted. Returns the new master's port; panics after [`crate::DEADLINE`].
    pub async fn wait_failover(&self, key: &str, old: u16) -> u16 {
        let deadline = tokio::time::Instant::now() + crate::DEADLINE;
        loop {
            if let Some(port) = self.master_of(key).await
                && port != old
                && self.wait_ok(Duration::ZERO).await
            {
                return port;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("no replica took over {key}'s slot from the master on port {old}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes.iter().filter(|n| n.child.is_some()).map(|n| n.port).collect()
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn cli(port: u16, args: &[&str]) -> Option<String> {
    let run = tokio::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(2), run).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.starts_with("Could not connect")).then_some(text)
}

/// `<id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link> <slot>...`
fn parse_node(line: &str) -> Option<ClusterNode> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let port = fields.get(1)?.split('@').next()?.rsplit(':').next()?.parse().ok()?;
    let flags: Vec<&str> = fields.get(2)?.split(',').collect();
    let failed = flags.iter().any(|f| f.starts_with("fail")) || fields.get(7) == Some(&"disconnected");
    let slots = fields
        .iter()
        .skip(8)
        .filter(|s| !s.starts_with('['))
        .filter_map(|s| match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => s.parse().ok().map(|n| (n, n)),
        })
        .collect();
    Some(ClusterNode { port, master: flags.contains(&"master"), failed, slots })
}

/// `count` distinct free ports whose cluster bus port (`port + 10000`) is free too.
fn cluster_ports(count: usize) -> Vec<u16> {
    let mut ports: Vec<u16> = Vec::with_capacity(count);
    // Keep the listeners until all are chosen, so no port is picked twice.
    let mut held = Vec::new();
    while ports.len() < count {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("a local address").port();
        let Some(bus) = port.checked_add(10_000) else { continue };
        if ports.iter().any(|&p| p == bus || p + 10_000 == port) {
            continue;
        }
        if let Ok(bus_listener) = TcpListener::bind(("127.0.0.1", bus)) {
            ports.push(port);
            held.push(listener);
            held.push(bus_listener);
        }
    }
    ports
}

fn unique() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines_are_read() {
        let master = "07c3 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 7000 [93->-e1]";
        assert_eq!(
            parse_node(master),
            Some(ClusterNode {
                port: 30001,
                master: true,
                failed: false,
                slots: vec![(0, 5460), (7000, 7000)]
            })
        );
        let failed = "e1f2 127.0.0.1:30002@40002 master,fail - 1 1 2 disconnected";
        assert_eq!(parse_node(failed).map(|n| (n.port, n.master, n.failed)), Some((30002, true, true)));
        let replica = "a9b8 127.0.0.1:30004@40004 slave 07c3 0 1 4 connected";
        assert_eq!(parse_node(replica).map(|n| n.master), Some(false));
    }
}
