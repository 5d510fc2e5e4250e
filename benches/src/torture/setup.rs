//! The run's work dir and cluster.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cairn_benches::cluster::{Cluster, ClusterSpec, Extra};
use cairn_benches::s3ops::{Bench, ChecksumMode};

use crate::args::Args;
use crate::clients::BUCKET;
use crate::model::Shared;

/// Where cairn-node and cairn-gateway are: `--bin-dir`, or next to this binary.
pub fn bin_dir(args: &Args) -> Result<PathBuf> {
    if let Some(d) = &args.bin_dir {
        return Ok(d.clone());
    }
    let exe = std::env::current_exe().context("locating this binary")?;
    exe.parent()
        .map(PathBuf::from)
        .context("this binary has no parent directory")
}

/// The run's temp dir (node data, catalog, logs).
pub fn work_dir(args: &Args) -> Result<tempfile::TempDir> {
    if args.writers == 0 || args.keys < args.writers {
        bail!("need at least one writer and as many keys as writers");
    }
    match &args.data_dir {
        Some(d) => tempfile::Builder::new()
            .prefix("cairn-torture-")
            .tempdir_in(d),
        None => tempfile::Builder::new().prefix("cairn-torture-").tempdir(),
    }
    .context("creating the work dir")
}

/// Starts a cluster in `work`, creates the bucket, and returns it with the clients' state.
pub async fn start(
    args: &Args,
    work: &Path,
    node_extra: Vec<Extra>,
    gateway_extra: Extra,
) -> Result<(Cluster, Arc<Shared>)> {
    let spec = ClusterSpec {
        bin_dir: bin_dir(args)?,
        work_dir: work.to_path_buf(),
        nodes: args.nodes,
        ec: args.ec.clone(),
        ready_timeout: Duration::from_secs(args.ready_timeout),
        node_extra,
        gateway_extra,
        layout: None,
    };
    let cluster = Cluster::start(&spec).await?;
    let bench = Bench::new(
        &cluster.endpoint(),
        &cluster.access_key,
        &cluster.secret_key,
        BUCKET,
        ChecksumMode::WhenRequired,
    );
    bench.create_bucket().await?;
    let shared = Arc::new(Shared::new(
        bench.client().clone(),
        Duration::from_secs(args.op_timeout),
    ));
    Ok((cluster, shared))
}

/// Removes the work dir after a clean run (unless `keep`); otherwise keeps it and says
/// where it is.
pub fn finish(tmp: tempfile::TempDir, clean: bool, keep: bool) -> Result<()> {
    if clean && !keep {
        tmp.close().context("removing the work dir")?;
    } else {
        println!("work dir kept: {}", tmp.keep().display());
    }
    Ok(())
}
