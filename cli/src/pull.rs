//! `cairn pull` and `cairn ls`: read committed checkpoints.
//!
//! A pull downloads every file of a committed manifest into a temporary directory beside
//! the destination, verifies size and SHA-256 of each, and only then renames it into place.

use std::path::{Path, PathBuf};

use aws_sdk_s3::Client;
use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{s3_error, Error, Result};
use crate::manifest::{self, FileEntry, Manifest};
use crate::progress::Progress;
use crate::s3client::{self, S3Opts, S3Url};

/// Arguments of `cairn pull`.
#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// Where the checkpoints are, s3://BUCKET/PREFIX.
    pub src: String,
    /// Destination: a new directory, or an existing one to create the checkpoint in.
    pub dest: PathBuf,
    /// The latest committed checkpoint (the default).
    #[arg(long, conflicts_with_all = ["step", "name"])]
    pub latest: bool,
    /// The committed checkpoint of this training step.
    #[arg(long)]
    pub step: Option<u64>,
    /// The committed checkpoint of this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Files downloaded in parallel.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// No progress bars.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub s3: S3Opts,
}

/// Arguments of `cairn ls`.
#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// Where the checkpoints are, s3://BUCKET/PREFIX.
    pub src: String,
    /// Print JSON (one array of objects) instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub s3: S3Opts,
}

/// Chooses the checkpoint to pull from the committed ones (sorted oldest to latest).
pub fn choose<'a>(
    committed: &'a [Manifest],
    step: Option<u64>,
    name: Option<&str>,
) -> Option<&'a Manifest> {
    committed
        .iter()
        .filter(|m| step.is_none_or(|s| m.step == Some(s)))
        .filter(|m| name.is_none_or(|n| m.name == n))
        .max_by_key(|m| m.order_key())
}

/// Runs `cairn ls`.
pub async fn ls(args: LsArgs) -> Result<()> {
    let url = S3Url::parse(&args.src)?;
    let client = s3client::connect(&args.s3).await?;
    s3client::check_bucket(&client, &url.bucket).await?;
    let list = manifest::list_committed(&client, &url).await?;
    if args.json {
        let rows: Vec<_> = list
            .iter()
            .map(|m| {
                serde_json::json!({
                    "name": m.name, "step": m.step, "generation": m.generation,
                    "files": m.files.len(), "size": m.total_size, "created": m.created,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    println!(
        "{:<32} {:>10} {:>6} {:>12}  COMMITTED",
        "NAME", "STEP", "FILES", "SIZE"
    );
    for m in &list {
        let step = m.step.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "{:<32} {:>10} {:>6} {:>12}  {}",
            m.name,
            step,
            m.files.len(),
            human(m.total_size),
            m.created
        );
    }
    Ok(())
}

/// Bytes in a human unit.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Runs `cairn pull`.
pub async fn pull(args: PullArgs) -> Result<()> {
    let url = S3Url::parse(&args.src)?;
    if args.concurrency == 0 {
        return Err(Error::BadArg("--concurrency must be at least 1".into()));
    }
    let client = s3client::connect(&args.s3).await?;
    s3client::check_bucket(&client, &url.bucket).await?;
    let list = manifest::list_committed(&client, &url).await?;
    let m = choose(&list, args.step, args.name.as_deref()).ok_or_else(|| {
        let which = match (&args.step, &args.name) {
            (Some(s), _) => format!("with step {s} "),
            (_, Some(n)) => format!("named {n} "),
            _ => String::new(),
        };
        Error::NoCheckpoint(format!("{which}under {url}"))
    })?;
    let target = if args.dest.is_dir() {
        args.dest.join(&m.name)
    } else {
        args.dest.clone()
    };
    if target.exists() {
        return Err(Error::DestExists(target));
    }
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(Error::NoSuchPath(parent));
    }
    let leaf = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| m.name.clone());
    let tmp = parent.join(format!(".{leaf}.cairn-pull-{}", std::process::id()));
    let res = download_all(
        &client,
        &url.bucket,
        m,
        &tmp,
        args.concurrency,
        Progress::new(!args.quiet),
    )
    .await;
    let res = match res {
        Ok(()) => std::fs::rename(&tmp, &target).map_err(|e| Error::io(&target, e)),
        Err(e) => Err(e),
    };
    if res.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    res?;
    eprintln!(
        "pulled {} (step {}, {} files, {}) into {}",
        m.name,
        m.step.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
        m.files.len(),
        human(m.total_size),
        target.display()
    );
    Ok(())
}

async fn download_all(
    client: &Client,
    bucket: &str,
    m: &Manifest,
    tmp: &Path,
    concurrency: usize,
    progress: Progress,
) -> Result<()> {
    std::fs::create_dir_all(tmp).map_err(|e| Error::io(tmp, e))?;
    futures::stream::iter(m.files.iter().map(Ok))
        .try_for_each_concurrent(concurrency, |f| {
            let progress = progress.clone();
            async move { download(client, bucket, f, tmp, &progress).await }
        })
        .await?;
    // Make the files durable before the rename publishes them.
    for f in &m.files {
        let p = tmp.join(&f.path);
        std::fs::File::open(&p)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&p, e))?;
    }
    Ok(())
}

async fn download(
    client: &Client,
    bucket: &str,
    f: &FileEntry,
    tmp: &Path,
    progress: &crate::progress::Progress,
) -> Result<()> {
    let path = tmp.join(&f.path);
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| Error::io(dir, e))?;
    }
    let resp = client
        .get_object()
        .bucket(bucket)
        .key(&f.key)
        .send()
        .await
        .map_err(|e| s3_error("GetObject", bucket, &f.key, e))?;
    let bar = progress.bar(&f.path, f.size);
    let mut out = tokio::fs::File::create(&path)
        .await
        .map_err(|e| Error::io(&path, e))?;
    let mut body = resp.body;
    let mut sha = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Error::S3 {
            op: "GetObject",
            key: format!("{bucket}/{}", f.key),
            message: e.to_string(),
        })?;
        sha.update(&chunk);
        n += chunk.len() as u64;
        if n > f.size {
            break;
        }
        out.write_all(&chunk)
            .await
            .map_err(|e| Error::io(&path, e))?;
        bar.inc(chunk.len() as u64);
    }
    out.flush().await.map_err(|e| Error::io(&path, e))?;
    if n != f.size {
        return Err(Error::ChecksumMismatch {
            what: format!("{} (size)", f.path),
            expected: f.size.to_string(),
            actual: n.to_string(),
        });
    }
    let got = hex::encode(sha.finalize());
    if got != f.sha256 {
        return Err(Error::ChecksumMismatch {
            what: f.path.clone(),
            expected: f.sha256.clone(),
            actual: got,
        });
    }
    bar.finish();
    Ok(())
}
