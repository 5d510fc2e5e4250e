//! `cairn push`: one-shot upload and commit of a checkpoint, with the watcher's checks.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::detect;
use crate::error::{Error, Result};
use crate::manifest::Committed;
use crate::progress::Progress;
use crate::pull::human;
use crate::s3client::{self, S3Opts, S3Url};
use crate::state::StateStore;
use crate::sync::{sync_checkpoint, Ctx, Outcome};
use crate::upload::{TransferOpts, Uploader};

/// Arguments of `cairn push`.
#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// The checkpoint: a directory (e.g. checkpoint-500) or a single file.
    pub path: PathBuf,
    /// Destination, s3://BUCKET/PREFIX.
    pub dest: String,
    /// Name in the bucket (default: the directory or file name).
    #[arg(long)]
    pub name: Option<String>,
    /// Training step (default: the last number in the name).
    #[arg(long)]
    pub step: Option<u64>,
    /// After committing, keep only the N latest checkpoints.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<usize>,
    /// Files of unknown format must be unmodified this long (seconds).
    #[arg(long, default_value_t = 0)]
    pub quiet_period: u64,
    /// No progress bars.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub transfer: TransferOpts,
    #[command(flatten)]
    pub s3: S3Opts,
}

/// Runs `cairn push`.
pub async fn run(args: PushArgs) -> Result<()> {
    if !args.path.exists() {
        return Err(Error::NoSuchPath(args.path));
    }
    let url = S3Url::parse(&args.dest)?;
    let mut cand = detect::classify(&args.path).map_err(|e| Error::io(&args.path, e))?;
    if let Some(n) = args.name {
        if n.is_empty() || n.contains('/') || n.starts_with('.') {
            return Err(Error::BadArg(format!(
                "bad --name {n:?}: no '/', not empty, not hidden"
            )));
        }
        cand.name = n;
    }
    if args.step.is_some() {
        cand.step = args.step;
    }
    if args.keep_last == Some(0) {
        return Err(Error::BadArg("--keep-last must be at least 1".into()));
    }
    let client = s3client::connect(&args.s3).await?;
    s3client::check_bucket(&client, &url.bucket).await?;
    let uploader = Uploader::new(
        client.clone(),
        &url.bucket,
        args.transfer,
        Progress::new(!args.quiet),
    )?;
    let ctx = Ctx {
        client: client.clone(),
        url: url.clone(),
        uploader,
        store: Arc::new(StateStore::memory()),
        quiet: Duration::from_secs(args.quiet_period),
        settle: Duration::ZERO,
    };
    match sync_checkpoint(&ctx, &cand).await? {
        Outcome::Committed(m, how) => {
            let what = if how == Committed::Already {
                "already committed"
            } else {
                "committed"
            };
            eprintln!(
                "{what} {} (generation {}, {} files, {}) to {url}",
                m.name,
                m.generation,
                m.files.len(),
                human(m.total_size)
            );
        }
        Outcome::Incomplete(reason) => {
            return Err(Error::Incomplete {
                name: cand.name,
                reason,
            })
        }
        Outcome::Vanished => return Err(Error::NoSuchPath(cand.path)),
        Outcome::Unchanged | Outcome::Retired => {}
    }
    if let Some(n) = args.keep_last {
        crate::retention::apply(&client, &url, n, None).await?;
    }
    Ok(())
}
