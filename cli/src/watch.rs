//! `cairn watch`: the daemon. Watches a directory (inotify via `notify`, plus periodic
//! rescans), and brings every finished checkpoint to a committed manifest, then applies
//! retention. Failures are retried with backoff forever; the state file makes restarts
//! cheap and commits happen once.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_s3::Client;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::detect::{self, Candidate};
use crate::error::{Error, Result};
use crate::manifest::{Committed, Manifest};
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
    let url = check_args(&args)?;
    let dest = url.to_string();
    let state_path = args
        .state_file
        .clone()
        .unwrap_or_else(|| default_state_path(&args.dir, &dest));
    let _lock = crate::state::lock_exclusive(&state_path.with_extension("lock"))?;
    let store = Arc::new(StateStore::load(&state_path, &dest)?);
    let client = s3client::connect(&args.s3).await?;
    if let Some(addr) = args.metrics_listen {
        m::serve(addr).await?;
    }
    wait_for_bucket(&client, &url.bucket, args.max_backoff).await?;
    let mut w = Watch::new(&args, client, url, store)?;
    let ignore = state_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let (_watcher, events) = watch_dir(&args.dir, ignore);
    tracing::info!("watching {} → {}", args.dir.display(), w.ctx.url);
    w.serve(&args, events).await
}

/// Checks the arguments; returns the destination.
fn check_args(args: &WatchArgs) -> Result<S3Url> {
    if !args.dir.is_dir() {
        return Err(if args.dir.exists() {
            Error::BadArg(format!("{} is not a directory", args.dir.display()))
        } else {
            Error::NoSuchPath(args.dir.clone())
        });
    }
    let url = S3Url::parse(&args.to)?;
    if args.keep_last == Some(0) {
        return Err(Error::BadArg("--keep-last must be at least 1".into()));
    }
    Ok(url)
}

/// `DIR/.cairn/watch-<hash of destination>.json`: one state file per destination.
fn default_state_path(dir: &Path, dest: &str) -> PathBuf {
    let h = hex::encode(&Sha256::digest(dest.as_bytes())[..4]);
    dir.join(".cairn").join(format!("watch-{h}.json"))
}

/// Waits between retries: from one second, doubling up to a maximum.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Backoff {
            next: Duration::from_secs(1),
            max,
        }
    }

    /// The wait before this retry; the next one waits twice as long.
    fn wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    fn reset(&mut self) {
        self.next = Duration::from_secs(1);
    }
}

/// Waits until the bucket answers; only a permanent failure (missing bucket, refused
/// credentials) ends the wait with an error.
async fn wait_for_bucket(client: &Client, bucket: &str, max_backoff: Duration) -> Result<()> {
    let mut backoff = Backoff::new(max_backoff);
    loop {
        match s3client::check_bucket(client, bucket).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_permanent() => return Err(e),
            Err(e) => {
                let wait = backoff.wait();
                tracing::warn!("{e}; retrying in {}s", wait.as_secs());
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Watches `dir` recursively; each relevant event sends a `()`. Without notifications
/// (none available, or the watch refused) the daemon relies on rescans.
fn watch_dir(dir: &Path, ignore: PathBuf) -> (Option<RecommendedWatcher>, UnboundedReceiver<()>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if is_relevant(&ev) && ev.paths.iter().any(|p| !p.starts_with(&ignore)) {
                let _ = tx.send(());
            }
        }
    });
    let watcher = match watcher {
        Ok(mut wt) => match wt.watch(dir, RecursiveMode::Recursive) {
            Ok(()) => Some(wt),
            Err(e) => {
                tracing::warn!("cannot watch {} ({e}); relying on rescans", dir.display());
                None
            }
        },
        Err(e) => {
            tracing::warn!("no file notifications ({e}); relying on rescans");
            None
        }
    };
    (watcher, rx)
}

/// Whether an event may mean a checkpoint changed: any event but a file access, except
/// the close of a file opened for writing.
fn is_relevant(ev: &notify::Event) -> bool {
    match ev.kind {
        EventKind::Access(notify::event::AccessKind::Close(notify::event::AccessMode::Write)) => {
            true
        }
        EventKind::Access(_) => false,
        _ => true,
    }
}

impl Watch {
    /// A watcher that has seen nothing yet, with its uploader.
    fn new(args: &WatchArgs, client: Client, url: S3Url, store: Arc<StateStore>) -> Result<Self> {
        let uploader = Uploader::new(
            client.clone(),
            &url.bucket,
            args.transfer.clone(),
            Progress::new(false),
        )?;
        Ok(Watch {
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
        })
    }

    /// Passes until a signal (or after one pass with `--once`). After a pass, waits for
    /// file events or the rescan interval; after a failure, for the backoff.
    async fn serve(&mut self, args: &WatchArgs, mut events: UnboundedReceiver<()>) -> Result<()> {
        let mut backoff = Backoff::new(args.max_backoff);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Error::BadArg(format!("cannot install SIGTERM handler: {e}")))?;
        loop {
            // A signal stops the watcher even mid-upload: the state file already has every
            // finished part, so the next start resumes where this one stopped.
            let result = tokio::select! {
                r = self.pass() => r,
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = term.recv() => return Ok(()),
            };
            let wait = match result {
                Ok(any_pending) => {
                    backoff.reset();
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
                Err(e) => failed_pass(&e, &mut backoff),
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                Some(()) = events.recv() => {
                    // Let a burst of writes settle, then coalesce the events.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    while events.try_recv().is_ok() {}
                }
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = term.recv() => return Ok(()),
            }
        }
    }

    /// One scan: sync every checkpoint. Returns whether some are still incomplete.
    async fn pass(&mut self) -> Result<bool> {
        let cands = detect::scan(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        self.forget_vanished(&cands).await?;
        let mut any_pending = false;
        for c in &cands {
            if self.seen.insert(c.name.clone()) {
                metrics::counter!(m::SEEN).increment(1);
            }
            any_pending |= self.sync(c).await?;
        }
        Ok(any_pending)
    }

    /// Syncs one checkpoint. Returns whether it is still pending.
    async fn sync(&mut self, c: &Candidate) -> Result<bool> {
        let outcome = match sync_checkpoint(&self.ctx, c).await {
            Ok(o) => o,
            Err(Error::Changed(p)) => {
                tracing::info!(
                    "{} changed during upload; will upload it again",
                    p.display()
                );
                return Ok(true);
            }
            // Another writer committed this name differently: leave it, keep the others going.
            Err(e @ (Error::CommitConflict(_) | Error::BadManifest { .. })) => {
                if self.seen_failed.insert(c.name.clone()) {
                    metrics::counter!(m::FAILED).increment(1);
                    tracing::error!("not committing {}: {e}", c.name);
                }
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        match outcome {
            Outcome::Committed(man, how) => {
                self.pending.remove(&c.name);
                self.committed(c, &man, how).await?;
                Ok(false)
            }
            Outcome::Incomplete(reason) => {
                self.still_incomplete(c, &reason);
                Ok(true)
            }
            Outcome::Unchanged | Outcome::Retired | Outcome::Vanished => {
                self.pending.remove(&c.name);
                Ok(false)
            }
        }
    }

    /// Counts and logs a commit, then applies retention.
    async fn committed(&self, c: &Candidate, man: &Manifest, how: Committed) -> Result<()> {
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
            crate::retention::apply(&self.ctx.client, &self.ctx.url, n, Some(&self.ctx.store))
                .await?;
        }
        Ok(())
    }

    /// Notes an incomplete checkpoint; warns once when it stays incomplete too long.
    fn still_incomplete(&mut self, c: &Candidate, reason: &str) {
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

/// Counts and logs a failed pass; returns the wait before the next.
///
/// The daemon never gives up: even a missing bucket or refused credentials may be a
/// gateway that is still starting, so they are logged loudly and retried.
fn failed_pass(e: &Error, backoff: &mut Backoff) -> Duration {
    metrics::counter!(m::RETRIES).increment(1);
    let wait = backoff.wait();
    if e.is_permanent() {
        tracing::error!("{e}; retrying in {:.0}s", wait.as_secs_f64());
    } else {
        tracing::warn!("{e}; retrying in {:.0}s", wait.as_secs_f64());
    }
    wait
}

fn last_write_age(c: &Candidate) -> Option<Duration> {
    let files = detect::list_files(&c.path).ok()?;
    let last = files.iter().map(|f| f.mtime).max()?;
    SystemTime::now().duration_since(last).ok()
}
