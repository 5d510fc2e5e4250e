//! Cairn's S3 gateway.
//!
//! Data flows one way: request → [`s3`] (SigV4 auth, routing, body decoding and checks)
//! → [`cairn_store::ObjectService`] (the object service: catalog, stripes, shards,
//! storage nodes). [`error`] is the one place where failures become S3 error XML.

pub mod admin;
pub mod error;
pub mod listener;
pub mod metrics_export;
pub mod s3;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use cairn_common::auth::ClusterKey;
use cairn_common::shard::DEFAULT_BLOCK_SIZE;
use clap::Parser;

use cairn_store::{Geometry, ObjectService, RebuildConfig, Reserve, StoreConfig};
use s3::sigv4::Keys;

/// Command-line arguments of `cairn-gateway`.
#[derive(Parser, Debug, Clone)]
#[command(name = "cairn-gateway", version, about = "Cairn S3 gateway")]
pub struct Args {
    /// Address to serve S3 on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// Directory of the metadata catalog (sled).
    #[arg(long)]
    pub meta: PathBuf,
    /// Storage node addresses (host:port), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// Erasure geometry K+M: K data and M parity shards per stripe.
    #[arg(long, default_value = "3+1", value_parser = parse_ec)]
    pub ec: (u8, u8),
    /// Bytes per erasure block.
    #[arg(long, default_value_t = DEFAULT_BLOCK_SIZE)]
    pub block_size: u32,
    /// Region reported to clients.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// S3 access key id.
    #[arg(long, env = "CAIRN_ACCESS_KEY", hide_env_values = true)]
    pub access_key: String,
    /// S3 secret key.
    #[arg(long, env = "CAIRN_SECRET_KEY", hide_env_values = true)]
    pub secret_key: String,
    /// Secret shared by the gateway and all storage nodes.
    #[arg(long, env = "CAIRN_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: String,
    /// Milliseconds between node health probes.
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// Multipart uploads older than this are aborted and their parts freed
    /// (e.g. `90s`, `30m`, `24h`, `7d`).
    #[arg(long, default_value = "24h", value_parser = cairn_common::daemon::parse_duration)]
    pub abandoned_upload_age: Duration,
    /// Discover storage nodes over mDNS: `off`, `loopback` (one-box clusters) or `all`.
    #[arg(long, default_value = "off")]
    pub mdns: cairn_common::protocol::MdnsScope,
    /// With `--mdns all`: browse only these network interfaces, comma-separated (e.g.
    /// `en0` on a Mac that also has Wi-Fi and a VPN); default: every interface.
    #[arg(long, value_delimiter = ',')]
    pub mdns_interface: Vec<String>,
    /// A node down for this long is lost: its shards are rebuilt on the other nodes
    /// (e.g. `5s`, `15m`). A node whose address answers with a new id (disk replaced) is
    /// lost at once.
    #[arg(long, default_value = "10m", value_parser = cairn_common::daemon::parse_duration)]
    pub repair_after: Duration,
    /// Shards no object refers to are deleted once older than this (it must exceed the
    /// longest single shard write).
    #[arg(long, default_value = "1h", value_parser = cairn_common::daemon::parse_duration)]
    pub gc_grace: Duration,
    /// A client that sends no byte of a request body for this long, while the gateway
    /// waits for one, gets `400 RequestTimeout` and its upload is dropped (S3 allows
    /// about 20 s). A connection must also deliver each request's headers within this
    /// long (from accept, or from their first byte), and take response bytes no slower.
    #[arg(long, default_value = "20s", value_parser = cairn_common::daemon::parse_duration)]
    pub client_timeout: Duration,
    /// A storage node that takes no byte it is sent, sends no byte it owes, or leaves a
    /// whole request unanswered for this long has failed (a powered-off node sends no
    /// reset): an upload to it fails with a 503 that clients retry onto the nodes still
    /// up, and a read rebuilds its shard from parity.
    #[arg(long, default_value = "30s", value_parser = cairn_common::daemon::parse_duration)]
    pub node_timeout: Duration,
    /// Free space every node keeps: no new shard goes to a node it would leave with
    /// less than the larger of this and `--reserve-percent` of its capacity (e.g. `1GiB`).
    #[arg(long, default_value = "1GiB", value_parser = cairn_common::daemon::parse_size)]
    pub reserve_bytes: u64,
    /// Free space every node keeps, in percent of its capacity (see `--reserve-bytes`).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(0..=50))]
    pub reserve_percent: u8,
    /// Bytes per second the background rebalance may move (after a node joins or
    /// capacities change, shards move to where placement wants them); `0` turns it off.
    #[arg(long, default_value = "8MiB", value_parser = cairn_common::daemon::parse_size)]
    pub rebalance_rate: u64,
    /// Multipart uploads a bucket may have open at once; CreateMultipartUpload beyond it
    /// is refused until uploads complete, abort or expire.
    #[arg(long, default_value_t = 1000)]
    pub max_uploads_per_bucket: usize,
    /// Client connections held at once. A new one beyond it closes the oldest connection
    /// with no request in progress, or is answered `503 SlowDown` when all are busy.
    /// Default: half the open-files limit, between 64 and 16384.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// A kept-alive client connection with no new request for this long is closed.
    #[arg(long, default_value = "60s", value_parser = cairn_common::daemon::parse_duration)]
    pub keepalive_timeout: Duration,
    /// Bearer token for `/_cairn/metrics`, `/_cairn/sd/prometheus` and `/_cairn/nodes`
    /// (SigV4 with the S3 credentials works too). Default: derived from the cluster
    /// secret, so the nodes know the same token (`cairn dev` prints it).
    #[arg(long, env = "CAIRN_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

/// How long `rebuild-catalog` waits on a node that stopped answering.
const REBUILD_NODE_TIMEOUT: Duration = Duration::from_secs(30);

/// Arguments of `cairn-gateway rebuild-catalog`.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "cairn-gateway rebuild-catalog",
    about = "Rebuild a lost catalog from the manifests and shards on the storage nodes"
)]
pub struct RebuildArgs {
    /// Directory of the new catalog (must not hold objects or buckets).
    #[arg(long)]
    pub meta: PathBuf,
    /// Storage node addresses (host:port), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// Also find nodes over mDNS: `off`, `loopback` or `all`.
    #[arg(long, default_value = "off")]
    pub mdns: cairn_common::protocol::MdnsScope,
    /// With `--mdns all`: browse only these network interfaces, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub mdns_interface: Vec<String>,
    /// How long to wait for nodes to answer (and mDNS announcements to arrive).
    #[arg(long, default_value = "5s", value_parser = cairn_common::daemon::parse_duration)]
    pub wait: Duration,
    /// Secret shared by the gateway and all storage nodes.
    #[arg(long, env = "CAIRN_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: String,
}

/// Rebuilds a catalog from the nodes, printing what it restored.
pub fn rebuild_catalog(args: RebuildArgs) -> anyhow::Result<()> {
    cairn_common::daemon::init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let meta = args.meta.clone();
    let report = rt.block_on(cairn_store::rebuild_catalog(RebuildConfig {
        meta: args.meta,
        nodes: args.nodes,
        mdns: args.mdns,
        mdns_interfaces: args.mdns_interface,
        wait: args.wait,
        cluster_secret: args.cluster_secret,
        node_timeout: REBUILD_NODE_TIMEOUT,
    }))?;
    println!(
        "rebuilt catalog in {}: {} nodes read, {} manifests, {} buckets, {} objects restored, {} keys unrecoverable",
        meta.display(),
        report.nodes,
        report.manifests,
        report.buckets,
        report.objects,
        report.unrecoverable.len()
    );
    for key in &report.unrecoverable {
        println!("  unrecoverable: {key}");
    }
    Ok(())
}

fn parse_ec(s: &str) -> Result<(u8, u8), String> {
    let (k, m) = s.split_once('+').ok_or("expected K+M, e.g. 3+1")?;
    let k: u8 = k.trim().parse().map_err(|_| "K must be a number")?;
    let m: u8 = m.trim().parse().map_err(|_| "M must be a number")?;
    if k == 0 || m == 0 || k as usize + m as usize > 255 {
        return Err("need K >= 1, M >= 1 and K+M <= 255".into());
    }
    Ok((k, m))
}

/// State shared by all requests.
#[derive(Clone)]
pub struct AppState {
    /// The object service.
    pub service: ObjectService,
    /// S3 credentials.
    pub keys: Arc<Keys>,
    /// Region reported to clients.
    pub region: String,
    /// Address the gateway listens on.
    pub listen: std::net::SocketAddr,
    /// Opens the read-only admin routes.
    pub admin_token: Arc<admin::AdminToken>,
    /// The Prometheus exposition (`/_cairn/metrics`).
    pub metrics: metrics_export::Exporter,
}

/// Runs the gateway until SIGINT/SIGTERM (what `cairn-gateway` and `cairn gateway` do).
pub fn main_with(args: Args) -> anyhow::Result<()> {
    cairn_common::daemon::tune_allocator();
    cairn_common::daemon::init_tracing();
    cairn_common::daemon::raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        serve(args, listener, cairn_common::daemon::shutdown_signal()).await
    })
}

/// Serves S3 on `listener` until `shutdown` completes.
pub async fn serve(
    args: Args,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = metrics_export::install();
    let store = cairn_store::start(StoreConfig {
        meta: args.meta.clone(),
        nodes: args.nodes.clone(),
        mdns: args.mdns,
        mdns_interfaces: args.mdns_interface.clone(),
        cluster_secret: args.cluster_secret.clone(),
        geometry: Geometry {
            k: args.ec.0,
            m: args.ec.1,
            block_size: args.block_size,
        },
        node_timeout: args.node_timeout,
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        reserve: Reserve {
            bytes: args.reserve_bytes,
            percent: args.reserve_percent,
        },
        abandoned_upload_age: args.abandoned_upload_age,
        repair_after: args.repair_after,
        gc_grace: args.gc_grace,
        rebalance_rate: args.rebalance_rate,
        max_uploads_per_bucket: args.max_uploads_per_bucket,
    })
    .await
    .with_context(|| {
        format!(
            "starting the object service (catalog in {})",
            args.meta.display()
        )
    })?;
    let client_timeout = args.client_timeout;
    let cluster_key = ClusterKey::new(&args.cluster_secret);
    let admin_token = match &args.admin_token {
        Some(t) if !t.is_empty() => t.clone(),
        _ => cluster_key.admin_token(),
    };
    let state = AppState {
        service: store.service.clone(),
        keys: Arc::new(Keys::new(args.access_key.clone(), args.secret_key.clone())),
        region: args.region.clone(),
        listen: listener.local_addr()?,
        admin_token: Arc::new(admin::AdminToken::new(&admin_token)),
        metrics,
    };
    // Internal routes live under `/_cairn/` (no bucket name contains `_`); every other
    // path, `/metrics` and `/health` included, is S3.
    let app = Router::new()
        .route("/_cairn/health", get(admin::health))
        .route("/_cairn/metrics", get(admin::metrics))
        .route("/_cairn/sd/prometheus", get(admin::prometheus_sd))
        .route("/_cairn/nodes", get(admin::nodes))
        .route(
            "/_cairn/nodes/{id}",
            axum::routing::delete(admin::declare_gone),
        )
        .fallback(s3::handle)
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::map_request(move |req| {
            std::future::ready(s3::idle::limit_idle(req, client_timeout))
        }))
        .with_state(state);
    let addr = listener.local_addr()?;
    let limits = listener::Limits {
        max_connections: args.max_connections.unwrap_or_else(|| {
            listener::default_max_connections(cairn_common::daemon::fd_soft_limit())
        }),
        header_timeout: args.client_timeout,
        keepalive_timeout: args.keepalive_timeout,
        write_timeout: args.client_timeout,
    };
    tracing::info!(
        %addr,
        nodes = store.live_nodes(),
        ec = ?args.ec,
        max_connections = limits.max_connections,
        "gateway listening"
    );
    listener::serve(listener, app, limits, shutdown).await?;
    Ok(())
}
