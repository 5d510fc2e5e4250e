//! Cairn storage node: stores erasure-coded shards as checksummed files and serves
//! verified range reads over the authenticated HTTP API of [`cairn_common::protocol`].
//!
//! - [`store`]: shard files on disk, node id, durability (fsync + rename),
//! - [`write`]: streaming PUT with per-block crc32c checks,
//! - [`read`]: streaming verified range reads,
//! - [`block_reader`]: a stored shard file's header and blocks, read and verified,
//! - [`scrub`]: background re-verification at a bounded rate,
//! - [`api`]: routes and the cluster-credential check,
//! - [`error`]: the error enum and its one HTTP mapping,
//! - [`faults`]: faults injected for tests (`CAIRN_NODE_FAULTS`),
//! - [`metrics`]: Prometheus metrics,
//! - [`space`]: capacity and free space,
//! - [`direct_io`]: aligned buffers and `O_DIRECT` files,
//! - [`announce`]: mDNS announcement.

pub mod announce;
pub mod api;
pub mod block_reader;
pub mod direct_io;
pub mod error;
pub mod faults;
pub mod metrics;
pub mod read;
pub mod scrub;
pub mod space;
pub mod store;
pub mod write;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use anyhow::Context;
use cairn_common::auth::{ClusterKey, ReplayGuard};
use cairn_common::ids::NodeId;
use clap::Parser;

use crate::faults::Faults;
use crate::scrub::{ScrubConfig, ScrubState};
use crate::store::{Store, StoreOptions};

/// Command-line arguments of `cairn-node`.
#[derive(Parser, Debug, Clone)]
#[command(name = "cairn-node", version, about = "Cairn storage node")]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub listen: SocketAddr,
    /// Data directory (shards, temp files, node id).
    #[arg(long)]
    pub data: PathBuf,
    /// Cluster secret shared by the gateway and all nodes.
    #[arg(long, env = "CAIRN_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: String,
    /// Most bytes per second the background scrub reads (e.g. `4MiB`; `0` turns it off).
    #[arg(long, default_value = "4MiB", value_parser = scrub::parse_rate)]
    pub scrub_rate: u64,
    /// Pause after startup and between scrub passes (e.g. `90s`, `15m`, `24h`).
    #[arg(long, default_value = "24h", value_parser = cairn_common::daemon::parse_duration)]
    pub scrub_every: Duration,
    /// Announce this node over mDNS: `off`, `loopback` (one-box clusters) or `all`.
    #[arg(long, default_value = "off")]
    pub mdns: cairn_common::protocol::MdnsScope,
    /// IP address to announce (default: the --listen address).
    #[arg(long)]
    pub advertise: Option<std::net::IpAddr>,
    /// A shard upload that receives no byte for this long is dropped and its temp file
    /// removed: its sender died without closing the connection (power cut, cable pulled).
    /// Keep it above the gateway's `--client-timeout`, the longest the gateway itself
    /// waits for its client (e.g. `60s`).
    #[arg(long, default_value = "60s", value_parser = cairn_common::daemon::parse_duration)]
    pub idle_timeout: Duration,
    /// Most bytes of shards to hold (e.g. `40MiB`, `64GiB`, `64G`; binary units); shard
    /// writes beyond it are refused as disk-full. Default: the whole filesystem.
    #[arg(long, env = "CAIRN_NODE_CAPACITY", value_parser = parse_capacity)]
    pub capacity: Option<u64>,
    /// Bearer token `/metrics` requires (default: derived from the cluster secret, the
    /// same as the gateway's default).
    #[arg(long, env = "CAIRN_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Faults to inject, for tests only (see the `faults` module).
    #[arg(long, env = "CAIRN_NODE_FAULTS", hide = true, default_value = "", value_parser = parse_faults)]
    pub faults: Faults,
}

pub use cairn_common::daemon::parse_size;

fn parse_capacity(s: &str) -> Result<u64, String> {
    match parse_size(s)? {
        0 => Err("a capacity of 0 bytes could store nothing".into()),
        n => Ok(n),
    }
}

fn parse_faults(s: &str) -> Result<Faults, String> {
    Faults::parse(s).map_err(|e| e.to_string())
}

/// What a node needs to run.
#[derive(Clone)]
pub struct NodeConfig {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Cluster secret.
    pub key: ClusterKey,
    /// Background scrub settings.
    pub scrub: ScrubConfig,
    /// How long an upload may go without a byte before it is dropped.
    pub idle_timeout: Duration,
    /// Most bytes of shards and manifests to hold (`None`: the whole filesystem).
    pub capacity: Option<u64>,
    /// Injected faults (tests and the torture bench).
    pub faults: Faults,
    /// Bearer token `/metrics` requires (`None`: the cluster key's default).
    pub admin_token: Option<String>,
}

impl NodeConfig {
    /// A config with scrub off (what tests usually want).
    pub fn new(data_dir: impl Into<PathBuf>, key: ClusterKey) -> Self {
        Self {
            data_dir: data_dir.into(),
            key,
            scrub: ScrubConfig {
                rate: 0,
                every: Duration::from_secs(86400),
            },
            idle_timeout: Duration::from_secs(60),
            capacity: None,
            faults: Faults::default(),
            admin_token: None,
        }
    }
}

/// After a shutdown signal, requests in flight get this long to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// An opened node: its store is ready (temp files cleaned, node id loaded).
pub struct Node {
    state: api::AppState,
    scrub: ScrubConfig,
}

impl Node {
    /// Opens the data directory (blocking work runs off the async threads).
    pub async fn open(cfg: NodeConfig) -> anyhow::Result<Self> {
        let dir = cfg.data_dir.clone();
        let opts = StoreOptions {
            capacity: cfg.capacity,
            faults: cfg.faults.clone(),
        };
        if cfg.faults.any() {
            tracing::warn!(faults = ?cfg.faults, "injecting faults (CAIRN_NODE_FAULTS): for tests only");
        }
        let store = tokio::task::spawn_blocking(move || Store::open_with(&dir, opts))
            .await?
            .with_context(|| format!("opening data dir {}", cfg.data_dir.display()))?;
        let handle = metrics::init();
        metrics::shards(store.shard_count());
        store.publish_space();
        Ok(Self {
            state: api::AppState {
                store: Arc::new(store),
                shard_key: cfg.key.shard_key(),
                admin_token: Arc::new(
                    cfg.admin_token
                        .clone()
                        .filter(|t| !t.is_empty())
                        .unwrap_or_else(|| cfg.key.admin_token()),
                ),
                replays: Arc::new(ReplayGuard::new(ReplayGuard::DEFAULT_CAP)),
                key: cfg.key,
                metrics: handle,
                scrub: Arc::new(ScrubState::default()),
                uploads: TaskTracker::new(),
                idle_timeout: cfg.idle_timeout,
            },
            scrub: cfg.scrub,
        })
    }

    /// This node's persistent id.
    pub fn id(&self) -> NodeId {
        self.state.store.node_id()
    }

    /// Bytes this node offers: the filesystem's size, or `--capacity` if smaller (0 if
    /// unknown).
    pub fn capacity_bytes(&self) -> u64 {
        self.state.store.space().map(|d| d.capacity).unwrap_or(0)
    }

    /// The HTTP router of this node.
    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone())
    }
}

/// Serves `node` on `listener` until `shutdown` resolves, then gives requests in flight
/// (raw uploads included) [`SHUTDOWN_GRACE`] to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    node: Node,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let upkeep = tokio::spawn(metrics::upkeep(node.state.metrics.clone()));
    let disk = tokio::spawn(refresh_disk_gauges(node.state.store.clone()));
    let scrub = tokio::spawn(scrub::run(
        node.state.store.clone(),
        node.state.shard_key.clone(),
        node.state.scrub.clone(),
        node.scrub,
    ));
    let signalled = Arc::new(Notify::new());
    let notify = signalled.clone();
    let listener = api::NodelayListener(listener);
    let app = node
        .router()
        .into_make_service_with_connect_info::<api::LocalAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        notify.notify_one();
    });
    // Raw uploads run on their own once their connection is upgraded: wait for them too.
    let uploads = node.state.uploads.clone();
    let result = tokio::select! {
        r = async move {
            let r = server.await;
            uploads.close();
            uploads.wait().await;
            r
        } => r.context("serving"),
        _ = async {
            signalled.notified().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("requests still running after the shutdown grace period; stopping anyway");
            Ok(())
        }
    };
    node.state.scrub.stop();
    upkeep.abort();
    disk.abort();
    scrub.abort();
    result
}

async fn refresh_disk_gauges(store: Arc<Store>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
    loop {
        tick.tick().await;
        let s = store.clone();
        let _ = tokio::task::spawn_blocking(move || s.publish_space()).await;
    }
}

/// Runs a node from command-line arguments: logging, runtime, serve until SIGTERM/SIGINT.
pub fn main_with(args: Args) -> anyhow::Result<()> {
    // No allocator tuning here (unlike the gateway): with 8 shard writes in flight, heaps
    // that keep freed memory would take a node well past its 64 MB budget, and the budget
    // wins over the CPU saved.
    cairn_common::daemon::init_tracing();
    cairn_common::daemon::raise_fd_limit();
    // One async thread: a node's own work per byte is a crc32c and one copy, so a single
    // thread keeps up with several gigabit links, and a second one only adds wakeups
    // between threads (CPU time spent for nothing). Disk reads, writes and fsyncs run on
    // the blocking pool.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("cairn-node")
        .build()
        .context("building tokio runtime")?;
    rt.block_on(async move {
        let node = Node::open(NodeConfig {
            data_dir: args.data.clone(),
            key: ClusterKey::new(&args.cluster_secret),
            scrub: ScrubConfig {
                rate: args.scrub_rate,
                every: args.scrub_every,
            },
            idle_timeout: args.idle_timeout,
            capacity: args.capacity,
            faults: args.faults.clone(),
            admin_token: args.admin_token.clone(),
        })
        .await?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let addr = listener.local_addr()?;
        tracing::info!(node_id = %node.id(), listen = %addr, data = %args.data.display(), capacity = ?args.capacity, "cairn-node listening");
        let capacity = node.capacity_bytes();
        let _mdns = announce::announce(args.mdns, node.id(), addr, args.advertise, capacity)?;
        serve(listener, node, cairn_common::daemon::shutdown_signal()).await?;
        tracing::info!("cairn-node stopped");
        Ok(())
    })
}
