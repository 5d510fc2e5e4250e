//! Cluster membership: which storage nodes exist, where they are, and whether they are up.
//!
//! Nodes are known by their persistent id, learnt from `GET /v1/info` (which also proves
//! that the node holds the cluster secret). A heartbeat probes every known address; a node
//! that fails a probe or a transfer is marked down until a probe succeeds again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cairn_common::ids::NodeId;
use cairn_common::protocol::{NodeInfo, ShardRef};

use super::node_client::NodeClient;

/// What the gateway knows of one node.
#[derive(Clone, Debug)]
pub struct NodeState {
    /// Persistent node id.
    pub id: NodeId,
    /// `host:port` of its API.
    pub addr: String,
    /// Whether the last probe or transfer succeeded.
    pub up: bool,
    /// Last successful probe.
    pub last_seen: Option<Instant>,
    /// Last reported info.
    pub info: Option<NodeInfo>,
    /// When the node was last seen going down (None while up).
    pub down_since: Option<Instant>,
    /// Its address now answers with another id: the disk was replaced or the node moved.
    /// Its shards count as lost until it shows up again.
    pub replaced: bool,
    /// An operator declared it gone: it gets no new shards, and its shards are rebuilt
    /// elsewhere at once (read from it meanwhile if it is still up).
    pub gone: bool,
}

/// Live view of the cluster.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<RwLock<Inner>>,
    client: NodeClient,
    repair_wanted: Arc<tokio::sync::Notify>,
}

struct Inner {
    /// Addresses to probe (static `--nodes`, and later discovered ones).
    addrs: Vec<String>,
    nodes: HashMap<NodeId, NodeState>,
    /// Shards a read found corrupt, kept until repair rewrites them.
    suspects: HashSet<ShardRef>,
    /// Nodes declared gone (kept in the catalog across restarts).
    gone: HashSet<NodeId>,
    /// When this gateway started: nodes never seen since count as down from then.
    started: Instant,
}

impl Cluster {
    /// A cluster seeded with static node addresses.
    pub fn new(client: NodeClient, addrs: Vec<String>) -> Self {
        let inner = Inner {
            addrs,
            nodes: HashMap::new(),
            suspects: HashSet::new(),
            gone: HashSet::new(),
            started: Instant::now(),
        };
        Self {
            inner: Arc::new(RwLock::new(inner)),
            client,
            repair_wanted: Arc::new(tokio::sync::Notify::new()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The client used to talk to nodes.
    pub fn client(&self) -> &NodeClient {
        &self.client
    }

    /// Adds an address to probe (no-op if known).
    pub fn add_addr(&self, addr: String) {
        let mut g = self.write();
        if !g.addrs.contains(&addr) {
            g.addrs.push(addr);
        }
    }

    /// Probes every known address once, concurrently.
    pub async fn probe_all(&self) {
        let addrs = self.read().addrs.clone();
        let probes = addrs.into_iter().map(|addr| {
            let client = self.client.clone();
            async move {
                let r = client.info(&addr).await;
                (addr, r)
            }
        });
        let results = futures::future::join_all(probes).await;
        let mut g = self.write();
        for (addr, r) in results {
            match r {
                Ok(info) => {
                    // A node id seen at a new address moves there; an address now
                    // answering with a new id belongs to the new node.
                    for n in g.nodes.values_mut() {
                        if n.addr == addr && n.id != info.node_id && !n.replaced {
                            self.repair_wanted.notify_one();
                            tracing::warn!(node = %n.id, new_node = %info.node_id, %addr, "address now answers with another node id: old node replaced");
                            n.up = false;
                            n.addr = String::new();
                            n.replaced = true;
                            n.down_since.get_or_insert_with(Instant::now);
                        }
                    }
                    let st = g.nodes.entry(info.node_id).or_insert_with(|| NodeState {
                        id: info.node_id,
                        addr: addr.clone(),
                        up: false,
                        last_seen: None,
                        info: None,
                        down_since: None,
                        replaced: false,
                        gone: false,
                    });
                    if !st.up {
                        tracing::info!(node = %info.node_id, %addr, "storage node up");
                    }
                    st.addr = addr;
                    st.up = true;
                    st.down_since = None;
                    st.replaced = false;
                    st.last_seen = Some(Instant::now());
                    let newly_bad = info
                        .bad_shards
                        .iter()
                        .any(|b| !st.info.as_ref().is_some_and(|i| i.bad_shards.contains(b)));
                    if newly_bad {
                        self.repair_wanted.notify_one();
                    }
                    st.info = Some(info);
                }
                Err(e) => {
                    for n in g.nodes.values_mut() {
                        if n.addr == addr && n.up {
                            cairn_common::log_limited!(warn, key = n.id; node = %n.id, %addr, error = %e, "storage node down");
                            n.up = false;
                            n.down_since = Some(Instant::now());
                        }
                    }
                }
            }
        }
        let up = g.nodes.values().filter(|n| n.up).count();
        metrics::gauge!("cairn_nodes_up").set(up as f64);
        metrics::gauge!("cairn_nodes_known").set(g.nodes.len() as f64);
        for n in g.nodes.values() {
            metrics::gauge!("cairn_node_up", "node" => n.id.to_string()).set(if n.up {
                1.0
            } else {
                0.0
            });
        }
    }

    /// Runs the heartbeat forever.
    pub async fn heartbeat(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.probe_all().await;
        }
    }

    /// Ids of the nodes that are up and in service (not declared gone): where new shards go.
    pub fn live_nodes(&self) -> Vec<NodeId> {
        let g = self.read();
        let mut v: Vec<NodeId> = g
            .nodes
            .values()
            .filter(|n| n.up && !g.gone.contains(&n.id))
            .map(|n| n.id)
            .collect();
        v.sort();
        v
    }

    /// Address of an up node.
    pub fn addr_if_up(&self, id: &NodeId) -> Option<String> {
        let g = self.read();
        g.nodes
            .get(id)
            .filter(|n| n.up && !n.addr.is_empty())
            .map(|n| n.addr.clone())
    }

    /// Address of a node whatever its state (for best-effort deletes).
    pub fn addr(&self, id: &NodeId) -> Option<String> {
        let g = self.read();
        g.nodes
            .get(id)
            .filter(|n| !n.addr.is_empty())
            .map(|n| n.addr.clone())
    }

    /// Marks a node down after a failed transfer; the heartbeat brings it back.
    pub fn mark_down(&self, id: &NodeId) {
        let mut g = self.write();
        if let Some(n) = g.nodes.get_mut(id) {
            if n.up {
                cairn_common::log_limited!(warn, key = id; node = %id, addr = %n.addr, "storage node marked down after a failed transfer");
                n.up = false;
                n.down_since = Some(Instant::now());
                metrics::gauge!("cairn_node_up", "node" => id.to_string()).set(0.0);
            }
        }
    }

    /// Whether a node's shards should be rebuilt elsewhere: it was declared gone, it has
    /// been down for at least `after`, or its address now belongs to another node. A node this gateway has never
    /// seen counts as down since the gateway started.
    pub fn is_lost(&self, id: &NodeId, after: Duration) -> bool {
        let g = self.read();
        if g.gone.contains(id) {
            return true;
        }
        match g.nodes.get(id) {
            Some(n) if n.up => false,
            Some(n) => n.replaced || n.down_since.is_none_or(|t| t.elapsed() >= after),
            None => g.started.elapsed() >= after,
        }
    }

    /// Takes a node out of service for good (an operator declared it gone, or the catalog
    /// says so at startup): no new shards, and repair moves its shards now.
    pub fn declare_gone(&self, id: NodeId) {
        if self.write().gone.insert(id) {
            tracing::warn!(node = %id, "storage node declared gone: its shards will be rebuilt elsewhere");
            self.repair_wanted.notify_one();
        }
    }

    /// Records a shard that failed its checksum on a read, for repair.
    pub fn report_corrupt(&self, shard: ShardRef) {
        if self.write().suspects.insert(shard) {
            self.repair_wanted.notify_one();
        }
    }

    /// Completes when something asks for a repair pass now (a node replaced, a corrupt
    /// shard found) rather than at the next periodic pass.
    pub async fn repair_wanted(&self) {
        self.repair_wanted.notified().await
    }

    /// Shards known corrupt: found by reads, or reported by the nodes' scrubs.
    pub fn corrupt_shards(&self) -> HashSet<ShardRef> {
        let g = self.read();
        let mut all = g.suspects.clone();
        for n in g.nodes.values().filter(|n| n.up) {
            if let Some(info) = &n.info {
                all.extend(info.bad_shards.iter().copied());
            }
        }
        all
    }

    /// Forgets read-found suspects of a segment that was rewritten.
    pub fn clear_corrupt(&self, object: &cairn_common::ids::ObjectId, segment: u32) {
        self.write()
            .suspects
            .retain(|s| !(s.object == *object && s.segment == segment));
    }

    /// Runs `op(client, addr)` on each of `nodes` that is up, concurrently (small calls:
    /// manifests, bucket markers).
    pub async fn on_up_nodes<F, Fut>(
        &self,
        nodes: &[NodeId],
        op: F,
    ) -> Vec<Result<(), super::node_client::NodeCallError>>
    where
        F: Fn(NodeClient, String) -> Fut,
        Fut: std::future::Future<Output = Result<(), super::node_client::NodeCallError>>,
    {
        let calls = nodes
            .iter()
            .filter_map(|n| Some(op(self.client.clone(), self.addr_if_up(n)?)));
        futures::future::join_all(calls).await
    }

    /// Snapshot of all nodes.
    pub fn snapshot(&self) -> Vec<NodeState> {
        let g = self.read();
        let mut v: Vec<NodeState> = g
            .nodes
            .values()
            .map(|n| NodeState {
                gone: g.gone.contains(&n.id),
                ..n.clone()
            })
            .collect();
        v.sort_by_key(|n| n.id);
        v
    }
}
