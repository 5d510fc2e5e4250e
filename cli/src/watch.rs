//! `cairn watch`: the daemon. Watches a directory (inotify via `notify`, plus periodic
//! rescans), and brings every finished checkpoint to a committed manifest, then applies
//! retention. Failures are retried with backoff forever; the state file makes restarts
//! cheap and commits happen once.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use notify::{EventKind, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};

use crate::detect::{self, Candidate};
use crate::error::{Error, Result};
use crate::manifest::Committed;
use crate::metrics as m;
use crate::progress::Progress;
use crate::pull::human;
use crate::s3client::{self, S3Opts, S3Url};
use crate::state::StateStore;
use crate::sync::{sync_checkpoint, Ctx, Outcome};
use crate::upload::{TransferOpts, Uploader};

pub use cairn_common::daemon::parse_duration;

/// Arguments of `cairn watch`.
#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    /// Directory the training job writes checkpoints into.
    pub dir: PathBuf,
    /// Destination, s3://BUCKET/PREFIX.
    #[arg(long)]
    pub to: String,
    /// Keep only the N latest committed checkpoints in the bucket.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<usize>,
    /// Files of unknown format must be unmodified this long before upload.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub quiet_period: Duration,
    /// Full rescan interval (events trigger scans sooner).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub rescan_interval: Duration,
    /// Warn about a checkpoint still incomplete after this long.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub report_incomplete_after: Duration,
    /// Longest wait between retries after failures.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub max_backoff: Duration,
    /// State file (default: DIR/.cairn/watch-<hash of destination>.json).
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    /// Upload what is finished now, then exit.
    #[arg(long)]
    pub once: bool,
    /// Serve Prometheus metrics on ADDR (e.g. 127.0.0.1:9464) at /metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub transfer: TransferOpts,
    #[command(flatten)]
    pub s3: S3Opts,
}

struct Pending {
    since: Instant,
    reported: bool,
}

struct Watch {
    ctx: Ctx,
    dir: PathBuf,
    keep_last: Option<usize>,
    report_after: Duration,
    pending: HashMap<String, Pending>,
    seen: HashSet<String>,
    seen_failed: HashSet<String>,
}

/// Runs `cairn watch` until interrupted (or after one pass with `--once`).
pub async fn run(args: WatchArgs) -> Result<()> {
    if !args.dir.is_dir() {
        return Err(if args.dir.exists() {
            Error::BadArg(format!("{} is not a directory", args.dir.display()))
        } else {
            Error::NoSuchPath(args.dir)
        });
    }
    let url = S3Url::parse(&args.to)?;
    if args.keep_last == Some(0) {
        return Err(Error::BadArg("--keep-last must be at least 1".into()));
    }
    let dest = url.to_string();
    let state_path = args.state_file.clone().unwrap_or_else(|| {
        let h = hex::encode(&Sha256::digest(dest.as_bytes())[..4]);
        args.dir.join(".cairn").join(format!("watch-{h}.json"))
    });
    let _lock = crate::state::lock_exclusive(&state_path.with_extension("lock"))?;
    let store = Arc::new(StateStore::load(&state_path, &dest)?);
    let client = s3client::connect(&args.s3).await?;
    if let Some(addr) = args.metrics_listen {
        m::serve(addr).await?;
    }
    let mut backoff = Duration::from_secs(1);
    loop {
        match s3client::check_bucket(&client, &url.bucket).await {
            Ok(()) => break,
            Err(e) if e.is_permanent() => return Err(e),
            Err(e) => {
                tracing::warn!("{e}; retrying in {}s", backoff.as_secs());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(args.max_backoff);
            }
        }
    }
    let uploader = Uploader::new(
        client.clone(),
        &url.bucket,
        args.transfer.clone(),
        Progress::new(false),
    )?;
    let mut w = Watch {
        ctx: Ctx {
            client,
            url,
            uploader,
            store,
            quiet: args.quiet_period,
            // A single pass (`--once`) is a push of what is there now.
            settle: if args.once {
                Duration::ZERO
            } else {
                args.quiet_period
            },
        },
        dir: args.dir.clone(),
        keep_last: args.keep_last,
        report_after: args.report_incomplete_after,
        pending: HashMap::new(),
        seen: HashSet::new(),
        seen_failed: HashSet::new(),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let ignore = state_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            let relevant = match ev.kind {
                EventKind::Access(notify::event::AccessKind::Close(
                    notify::event::AccessMode::Write,
                )) => true,
                EventKind::Access(_) => false,
                _ => true,
            };
            if relevant && ev.paths.iter().any(|p| !p.starts_with(&ignore)) {
                let _ = tx.send(());
            }
        }
    });
    let _watcher = match watcher {
        Ok(mut wt) => match wt.watch(&args.dir, RecursiveMode::Recursive) {
            Ok(()) => Some(wt),
            Err(e) => {
                tracing::warn!(
                    "cannot watch {} ({e}); relying on rescans",
                    args.dir.display()
                );
                None
            }
        },
        Err(e) => {
            tracing::warn!("no file notifications ({e}); relying on rescans");
            None
        }
    };
    tracing::info!("watching {} → {}", args.dir.display(), w.ctx.url);
    let mut backoff = Duration::from_secs(1);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::BadArg(format!("cannot install SIGTERM handler: {e}")))?;
    loop {
        // A signal stops the watcher even mid-upload: the state file already has every
        // finished part, so the next start resumes where this one stopped.
        let result = tokio::select! {
            r = w.pass() => r,
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
        };
        let wait = match result {
            Ok(any_pending) => {
                backoff = Duration::from_secs(1);
                if args.once {
                    return Ok(());
                }
                if any_pending {
                    args.rescan_interval.min(Duration::from_secs(1))
                } else {
                    args.rescan_interval
                }
            }
            Err(e) if args.once && e.is_permanent() => return Err(e),
            // The daemon never gives up: even a missing bucket or refused credentials may be
            // a gateway that is still starting, so they are logged loudly and retried.
            Err(e) => {
                metrics::counter!(m::RETRIES).increment(1);
                if e.is_permanent() {
                    tracing::error!("{e}; retrying in {:.0}s", backoff.as_secs_f64());
                } else {
                    tracing::warn!("{e}; retrying in {:.0}s", backoff.as_secs_f64());
                }
                let b = backoff;
                backoff = (backoff * 2).min(args.max_backoff);
                b
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            Some(()) = rx.recv() => {
                // Let a burst of writes settle, then coalesce the events.
                tokio::time::sleep(Duration::from_millis(200)).await;
                while rx.try_recv().is_ok() {}
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
        }
    }
}

impl Watch {
    /// One scan: sync every checkpoint. Returns whether some are still incomplete.
    async fn pass(&mut self) -> Result<bool> {
        let cands = detect::scan(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        self.forget_vanished(&cands).await?;
        let mut any_pending = false;
        for c in &cands {
            if self.seen.insert(c.name.clone()) {
                metrics::counter!(m::SEEN).increment(1);
            }
            let outcome = match sync_checkpoint(&self.ctx, c).await {
                Ok(o) => o,
                Err(Error::Changed(p)) => {
                    tracing::info!(
                        "{} changed during upload; will upload it again",
                        p.display()
                    );
                    any_pending = true;
                    continue;
                }
                // Another writer committed this name differently: leave it, keep the others going.
                Err(e @ (Error::CommitConflict(_) | Error::BadManifest { .. })) => {
                    if self.seen_failed.insert(c.name.clone()) {
                        metrics::counter!(m::FAILED).increment(1);
                        tracing::error!("not committing {}: {e}", c.name);
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            match outcome {
                Outcome::Committed(man, how) => {
                    self.pending.remove(&c.name);
                    if how == Committed::Now {
                        metrics::counter!(m::COMMITTED).increment(1);
                        if let Some(delay) = last_write_age(c) {
                            metrics::histogram!(m::COMMIT_DELAY).record(delay.as_secs_f64());
                        }
                    }
                    tracing::info!(
                        "{} {} (step {}, generation {}, {} files, {}) to {}",
                        if how == Committed::Now {
                            "committed"
                        } else {
                            "already committed:"
                        },
                        man.name,
                        man.step
                            .map(|s| s.to_string())
                            .unwrap_or_else(|| "-".into()),
                        man.generation,
                        man.files.len(),
                        human(man.total_size),
                        self.ctx.url
                    );
                    if let Some(n) = self.keep_last {
                        crate::retention::apply(
                            &self.ctx.client,
                            &self.ctx.url,
                            n,
                            Some(&self.ctx.store),
                        )
                        .await?;
                    }
                }
                Outcome::Incomplete(reason) => {
                    any_pending = true;
                    let p = self.pending.entry(c.name.clone()).or_insert(Pending {
                        since: Instant::now(),
                        reported: false,
                    });
                    if !p.reported && p.since.elapsed() >= self.report_after {
                        p.reported = true;
                        metrics::counter!(m::FAILED).increment(1);
                        tracing::warn!(
                            "checkpoint {} still incomplete after {}s, not committing it: {reason}",
                            c.name,
                            p.since.elapsed().as_secs()
                        );
                    } else {
                        tracing::debug!("{} not finished: {reason}", c.name);
                    }
                }
                Outcome::Unchanged | Outcome::Retired | Outcome::Vanished => {
                    self.pending.remove(&c.name);
                }
            }
        }
        Ok(any_pending)
    }

    /// Drops state of checkpoints no longer on disk, aborting their unfinished uploads.
    async fn forget_vanished(&mut self, cands: &[Candidate]) -> Result<()> {
        let present: HashSet<&str> = cands.iter().map(|c| c.name.as_str()).collect();
        for name in self.ctx.store.names() {
            if present.contains(name.as_str()) {
                continue;
            }
            let st = self.ctx.store.get(&name);
            if !st.committed {
                for fs in st.files.values() {
                    if let Some(mp) = &fs.multipart {
                        self.ctx.uploader.abort(&fs.key, &mp.upload_id).await;
                    }
                }
            }
            self.ctx.store.remove(&name)?;
            self.pending.remove(&name);
        }
        Ok(())
    }
}

fn last_write_age(c: &Candidate) -> Option<Duration> {
    let files = detect::list_files(&c.path).ok()?;
    let last = files.iter().map(|f| f.mtime).max()?;
    SystemTime::now().duration_since(last).ok()
}
