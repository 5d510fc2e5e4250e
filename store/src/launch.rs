//! Starting the object service: the catalog, the cluster of storage nodes, node
//! discovery, and the background loops that keep stored data whole.

use std::path::PathBuf;
use std::time::Duration;

use cairn_common::auth::ClusterKey;
use cairn_common::protocol::MdnsScope;
use cairn_common::request_id::{self, RequestId};
use mdns_sd::ServiceDaemon;

use crate::catalog::Catalog;
use crate::cluster::{Cluster, Reserve};
use crate::node_client::NodeClient;
use crate::service::{Geometry, ObjectService};
use crate::{gc, rebalance, rebuild, repair, stats, RebuildReport, StoreError};

/// Everything the object service is started with.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Directory of the catalog (sled); created if missing.
    pub meta: PathBuf,
    /// Storage node addresses (`host:port`) known from the start.
    pub nodes: Vec<String>,
    /// Also find nodes over mDNS.
    pub mdns: MdnsScope,
    /// With mDNS scope `all`: the only interfaces browsed (all when empty).
    pub mdns_interfaces: Vec<String>,
    /// Secret shared by the gateway and all storage nodes.
    pub cluster_secret: String,
    /// Erasure geometry of new writes.
    pub geometry: Geometry,
    /// A node that stalls for this long has failed.
    pub node_timeout: Duration,
    /// Time between node health probes.
    pub heartbeat: Duration,
    /// Free space every node keeps.
    pub reserve: Reserve,
    /// Multipart uploads older than this are aborted.
    pub abandoned_upload_age: Duration,
    /// A node down for this long is lost: its shards are rebuilt elsewhere.
    pub repair_after: Duration,
    /// Unreferenced shards older than this are deleted.
    pub gc_grace: Duration,
    /// Bytes per second rebalancing may move (0: off).
    pub rebalance_rate: u64,
    /// Multipart uploads a bucket may have open at once.
    pub max_uploads_per_bucket: usize,
}

/// A started object service. Dropping it stops node discovery; the service handle and
/// the background loops live on with the runtime.
pub struct Running {
    /// The service.
    pub service: ObjectService,
    _mdns: Option<ServiceDaemon>,
}

impl Running {
    /// Storage nodes currently up.
    pub fn live_nodes(&self) -> usize {
        self.service.cluster.live_nodes().len()
    }
}

fn open_catalog(meta: &std::path::Path) -> Result<Catalog, StoreError> {
    std::fs::create_dir_all(meta)
        .map_err(|e| StoreError::Unavailable(format!("creating {}: {e}", meta.display())))?;
    Catalog::open(meta)
}

/// Opens the catalog, finds the nodes, and starts the background loops (health probes,
/// upload expiry, repair, garbage collection, rebalancing, statistics).
pub async fn start(config: StoreConfig) -> Result<Running, StoreError> {
    let catalog = open_catalog(&config.meta)?;
    let client = NodeClient::new(ClusterKey::new(&config.cluster_secret), config.node_timeout);
    let cluster = Cluster::new(client, config.nodes.clone());
    cluster.set_reserve(config.reserve);
    for id in catalog.gone_nodes()? {
        cluster.declare_gone(id);
    }
    let mdns = crate::discovery::start(config.mdns, &config.mdns_interfaces, cluster.clone())
        .map_err(|e| StoreError::Unavailable(format!("starting mDNS discovery: {e}")))?;
    cluster.probe_all().await;
    tokio::spawn(
        cluster
            .clone()
            .heartbeat(config.heartbeat.max(Duration::from_millis(50))),
    );
    let service = ObjectService::new(
        catalog,
        cluster,
        config.geometry,
        config.max_uploads_per_bucket,
    );
    spawn_background(&service, &config);
    Ok(Running {
        service,
        _mdns: mdns,
    })
}

fn spawn_background(service: &ObjectService, config: &StoreConfig) {
    tokio::spawn(expire_uploads(service.clone(), config.abandoned_upload_age));
    tokio::spawn(repair::run(
        service.clone(),
        repair::RepairConfig {
            after: config.repair_after,
            every: (config.repair_after / 2).clamp(Duration::from_secs(1), Duration::from_secs(30)),
        },
    ));
    tokio::spawn(gc::run(
        service.clone(),
        config.gc_grace,
        (config.gc_grace / 2).clamp(Duration::from_secs(1), Duration::from_secs(600)),
    ));
    tokio::spawn(rebalance::run(service.clone(), config.rebalance_rate));
    tokio::spawn(stats::publish_forever(
        service.clone(),
        Duration::from_secs(10),
    ));
}

/// Periodically aborts multipart uploads abandoned for longer than `age`.
async fn expire_uploads(service: ObjectService, age: Duration) {
    let every = (age / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        // Its own request id, so the node calls of each round (deletes) can be found.
        let round = RequestId::generate();
        let span = tracing::info_span!("expire_uploads", request_id = %round);
        let expired = tracing::Instrument::instrument(
            request_id::scope(round, service.expire_uploads(age.as_millis() as i64)),
            span,
        );
        if let Err(e) = expired.await {
            cairn_common::log_limited!(warn, key = (); error = %e, "expiring abandoned uploads failed");
        }
    }
}

/// What rebuilding a lost catalog is started with.
#[derive(Clone, Debug)]
pub struct RebuildConfig {
    /// Directory of the new catalog (must not hold objects or buckets).
    pub meta: PathBuf,
    /// Storage node addresses.
    pub nodes: Vec<String>,
    /// Also find nodes over mDNS.
    pub mdns: MdnsScope,
    /// With mDNS scope `all`: the only interfaces browsed (all when empty).
    pub mdns_interfaces: Vec<String>,
    /// How long to wait for nodes to answer (and mDNS announcements to arrive).
    pub wait: Duration,
    /// Secret shared by the gateway and all storage nodes.
    pub cluster_secret: String,
    /// How long a node may stall before it counts as failed.
    pub node_timeout: Duration,
}

/// Rebuilds a lost catalog from the manifests and shards on the storage nodes.
pub async fn rebuild_catalog(config: RebuildConfig) -> Result<RebuildReport, StoreError> {
    let catalog = open_catalog(&config.meta)?;
    if !catalog.is_empty() {
        return Err(StoreError::Unavailable(format!(
            "{} already holds a catalog; rebuild into an empty directory",
            config.meta.display()
        )));
    }
    let client = NodeClient::new(ClusterKey::new(&config.cluster_secret), config.node_timeout);
    let cluster = Cluster::new(client, config.nodes.clone());
    let _mdns = crate::discovery::start(config.mdns, &config.mdns_interfaces, cluster.clone())
        .map_err(|e| StoreError::Unavailable(format!("starting mDNS discovery: {e}")))?;
    // Probe until the wait is over: nodes found by mDNS join meanwhile.
    let deadline = tokio::time::Instant::now() + config.wait;
    loop {
        cluster.probe_all().await;
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if cluster.live_nodes().is_empty() {
        return Err(StoreError::NotEnoughNodes(
            "no storage node answered".into(),
        ));
    }
    rebuild::rebuild(&cluster, &catalog).await
}
