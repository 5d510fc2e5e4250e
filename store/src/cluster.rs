//! Cluster membership: which storage nodes exist, where they are, and whether they are up.
//!
//! Nodes are known by their persistent id, learnt from `GET /v1/info` (which also proves
//! that the node holds the cluster secret). A heartbeat probes every known address, on
//! connections of its own (never queued behind data transfers). A node is marked down
//! when nothing listens at its address (connection refused), when it refuses the probe,
//! after [`PROBE_FAILURES_TO_DOWN`] probes in a row that fail otherwise (a timeout may
//! just be a busy gateway or node) with no answer to any other call meanwhile, or when a
//! transfer to it fails; it is up again once a probe succeeds.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cairn_common::ids::NodeId;
use cairn_common::placement::Candidate;
use cairn_common::protocol::{NodeInfo, ShardRef};

use super::node_client::{NodeCallError, NodeClient};

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
    /// It refused a shard for lack of room: no new shards until then, whatever free
    /// space it reports (a node may report wrongly).
    pub full_until: Option<Instant>,
    /// Shard bytes placed on it since its last reported free space.
    pub placed_bytes: u64,
    /// Probes in a row that failed without proving anything (timeouts, broken
    /// connections) while the node answered nothing else.
    pub probe_failures: u32,
}

/// Probes in a row that must fail, with no other sign of life from the node in between,
/// before it is marked down (unless a failure is unambiguous, see [`ProbeFailure`]).
pub const PROBE_FAILURES_TO_DOWN: u32 = 3;

/// How a failed probe reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeFailure {
    /// Nothing listens at the address, or the node refused the probe (bad credential or
    /// proof, an error other than "busy"): down at once.
    Unambiguous,
    /// A timeout, a broken connection or a "busy" answer (429, 503): the node may be
    /// dead, or it or the gateway just busy. Counts towards [`PROBE_FAILURES_TO_DOWN`].
    Doubtful,
    /// The gateway could not send the probe (out of its own file descriptors or ports):
    /// says nothing about the node.
    Local,
}

impl ProbeFailure {
    /// How `e`, the error of a probe, reads.
    pub fn of(e: &NodeCallError) -> Self {
        match e {
            // A node shedding load answers "busy": alive, like a timeout at worst.
            NodeCallError::Refused {
                status: 429 | 503, ..
            } => Self::Doubtful,
            NodeCallError::Unreachable(_) | NodeCallError::Refused { .. } => Self::Unambiguous,
            NodeCallError::Local(_) => Self::Local,
            NodeCallError::Transport(_) => Self::Doubtful,
        }
    }
}

/// Records a failed probe of an up node; true if it must now go down. `answered_since`:
/// the node answered another call since this probe was sent (proof of life).
fn probe_failed(failures: &mut u32, failure: ProbeFailure, answered_since: bool) -> bool {
    match failure {
        ProbeFailure::Unambiguous => true,
        ProbeFailure::Local => false,
        ProbeFailure::Doubtful if answered_since => {
            *failures = 0;
            false
        }
        ProbeFailure::Doubtful => {
            *failures = failures.saturating_add(1);
            *failures >= PROBE_FAILURES_TO_DOWN
        }
    }
}

/// Free space a node keeps: it gets no new shard that would leave it less than the larger
/// of `bytes` and `percent` of its capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reserve {
    /// Absolute reserve in bytes.
    pub bytes: u64,
    /// Reserve as a percentage of the node's capacity.
    pub percent: u8,
}

impl Default for Reserve {
    /// The larger of 1 GiB and 5%.
    fn default() -> Self {
        Self {
            bytes: 1 << 30,
            percent: 5,
        }
    }
}

impl Reserve {
    /// The bytes a node of `capacity` keeps free.
    pub fn of(&self, capacity: u64) -> u64 {
        self.bytes
            .max((capacity as u128 * self.percent as u128 / 100) as u64)
    }
}

/// Times a node went from up to down (probe or transfer), per node: flaps show here.
fn down_events(id: &NodeId) -> metrics::Counter {
    metrics::counter!("cairn_node_down_events_total", "node" => id.to_string())
}

/// How long a node that refused a shard for lack of room gets no new shards.
const FULL_BACKOFF: Duration = Duration::from_secs(60);

/// Nodes that can take a new shard, and how many are live at all.
#[derive(Clone, Debug, Default)]
pub struct Candidates {
    /// Live nodes with room, weighted by capacity.
    pub with_room: Vec<Candidate>,
    /// Live nodes (with room or not).
    pub live: usize,
}

/// Live view of the cluster.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<RwLock<Inner>>,
    client: NodeClient,
    repair_wanted: Arc<tokio::sync::Notify>,
    /// One probe round at a time (heartbeat and discovery both start them), so one bad
    /// moment counts as one failed probe.
    probing: Arc<tokio::sync::Mutex<()>>,
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
    /// Free space each node keeps.
    reserve: Reserve,
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
            reserve: Reserve::default(),
        };
        Self {
            inner: Arc::new(RwLock::new(inner)),
            client,
            repair_wanted: Arc::new(tokio::sync::Notify::new()),
            probing: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the free space every node keeps (default: [`Reserve::default`]).
    pub fn set_reserve(&self, reserve: Reserve) {
        self.write().reserve = reserve;
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
        let _round = self.probing.lock().await;
        let asked = Instant::now();
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
                        full_until: None,
                        placed_bytes: 0,
                        probe_failures: 0,
                    });
                    if st.last_seen.is_none() {
                        // Exported from the start, so operators see 0 rather than nothing.
                        down_events(&info.node_id).increment(0);
                    }
                    if !st.up {
                        tracing::info!(node = %info.node_id, %addr, "storage node up");
                    }
                    st.addr = addr;
                    st.up = true;
                    st.down_since = None;
                    st.replaced = false;
                    st.probe_failures = 0;
                    st.last_seen = Some(Instant::now());
                    let newly_bad = info
                        .bad_shards
                        .iter()
                        .any(|b| !st.info.as_ref().is_some_and(|i| i.bad_shards.contains(b)));
                    if newly_bad {
                        self.repair_wanted.notify_one();
                    }
                    let node = info.node_id.to_string();
                    metrics::gauge!("cairn_node_capacity_bytes", "node" => node.clone())
                        .set(info.capacity_bytes as f64);
                    metrics::gauge!("cairn_node_free_bytes", "node" => node)
                        .set(info.free_bytes as f64);
                    st.placed_bytes = 0;
                    st.info = Some(info);
                }
                Err(e) => {
                    let failure = ProbeFailure::of(&e);
                    let answered_since = self.client.last_answer(&addr).is_some_and(|t| t >= asked);
                    for n in g.nodes.values_mut() {
                        if n.addr != addr || !n.up {
                            continue;
                        }
                        if probe_failed(&mut n.probe_failures, failure, answered_since) {
                            cairn_common::log_limited!(warn, key = n.id; node = %n.id, %addr, error = %e, failed_probes = n.probe_failures, "storage node down");
                            n.up = false;
                            n.down_since = Some(Instant::now());
                            n.probe_failures = 0;
                            down_events(&n.id).increment(1);
                        } else {
                            tracing::debug!(node = %n.id, %addr, error = %e, ?failure, answered_since, failed_probes = n.probe_failures, "a probe failed; the node stays up");
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

    /// Live nodes that can take a new shard of `shard_len` bytes and keep their reserve,
    /// weighted by capacity for placement. Live nodes in `holding` (they already hold
    /// the shard in question) count whatever their room.
    pub fn candidates(&self, shard_len: u64, holding: &[NodeId]) -> Candidates {
        let g = self.read();
        let now = Instant::now();
        let mut out = Candidates::default();
        let mut ids: Vec<&NodeState> = g
            .nodes
            .values()
            .filter(|n| n.up && !g.gone.contains(&n.id))
            .collect();
        ids.sort_by_key(|n| n.id);
        for n in ids {
            out.live += 1;
            let Some(info) = &n.info else { continue };
            let free = info.free_bytes.saturating_sub(n.placed_bytes);
            let room = n.full_until.is_none_or(|t| t <= now)
                && free.saturating_sub(shard_len) >= g.reserve.of(info.capacity_bytes);
            if !room && !holding.contains(&n.id) {
                continue;
            }
            out.with_room.push(Candidate {
                id: n.id,
                weight: info.capacity_bytes,
            });
        }
        out
    }

    /// Counts `bytes` against a node's reported free space until its next probe.
    pub fn debit(&self, id: &NodeId, bytes: u64) {
        if let Some(n) = self.write().nodes.get_mut(id) {
            n.placed_bytes = n.placed_bytes.saturating_add(bytes);
        }
    }

    /// A node refused a shard for lack of room: it gets no new shards for a while.
    pub fn mark_full(&self, id: &NodeId) {
        let mut g = self.write();
        if let Some(n) = g.nodes.get_mut(id) {
            if n.full_until.is_none_or(|t| t <= Instant::now()) {
                cairn_common::log_limited!(warn, key = id; node = %id, addr = %n.addr, "storage node is full: no new shards for it for a while");
                metrics::counter!("cairn_node_full_refusals_total", "node" => id.to_string())
                    .increment(1);
            }
            n.full_until = Some(Instant::now() + FULL_BACKOFF);
        }
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
                n.probe_failures = 0;
                metrics::gauge!("cairn_node_up", "node" => id.to_string()).set(0.0);
                down_events(id).increment(1);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubtful_failures_take_several_probes_in_a_row() {
        let mut failures = 0;
        for _ in 1..PROBE_FAILURES_TO_DOWN {
            assert!(!probe_failed(&mut failures, ProbeFailure::Doubtful, false));
        }
        assert!(probe_failed(&mut failures, ProbeFailure::Doubtful, false));
    }

    #[test]
    fn an_answer_to_other_traffic_is_proof_of_life() {
        let mut failures = 0;
        for _ in 0..10 {
            assert!(!probe_failed(&mut failures, ProbeFailure::Doubtful, false));
            assert!(!probe_failed(&mut failures, ProbeFailure::Doubtful, true));
            assert_eq!(failures, 0);
        }
    }

    #[test]
    fn a_refused_connection_or_probe_is_down_at_once() {
        let mut failures = 0;
        assert!(probe_failed(&mut failures, ProbeFailure::Unambiguous, true));
        let gone = NodeCallError::Unreachable("connection refused".into());
        assert_eq!(ProbeFailure::of(&gone), ProbeFailure::Unambiguous);
        let refused = NodeCallError::Refused {
            status: 403,
            kind: "bad-proof".into(),
        };
        assert_eq!(ProbeFailure::of(&refused), ProbeFailure::Unambiguous);
        let timeout = NodeCallError::Transport("operation timed out".into());
        assert_eq!(ProbeFailure::of(&timeout), ProbeFailure::Doubtful);
    }

    #[test]
    fn the_gateway_short_of_resources_counts_nothing() {
        let mut failures = 0;
        for _ in 0..10 {
            assert!(!probe_failed(&mut failures, ProbeFailure::Local, false));
        }
        assert_eq!(failures, 0);
        let local = NodeCallError::Local("Too many open files".into());
        assert_eq!(ProbeFailure::of(&local), ProbeFailure::Local);
    }

    #[test]
    fn a_success_between_failures_starts_the_count_again() {
        let mut failures = 0;
        assert!(!probe_failed(&mut failures, ProbeFailure::Doubtful, false));
        assert!(!probe_failed(&mut failures, ProbeFailure::Doubtful, false));
        // what probe_all does on a successful probe
        failures = 0;
        assert!(!probe_failed(&mut failures, ProbeFailure::Doubtful, false));
        assert!(!probe_failed(&mut failures, ProbeFailure::Doubtful, false));
        assert!(probe_failed(&mut failures, ProbeFailure::Doubtful, false));
    }
}
