//! `cairn-torture`: kill -9 the gateway and storage nodes at random moments while clients
//! upload, then check every acknowledged object (issue #4). Not part of the test suite.
//!
//! Each round: `--writers` clients PUT random-size objects (some multipart) and delete some
//! over a small key space, so keys get overwritten; after a random delay the gateway, a
//! random node or both are SIGKILLed; the killed processes are restarted on the same ports
//! and data; then every key is read back and its sha256 compared with what the clients know.
//! Every few rounds (`--degraded-check-every`) everything is read again with a random node
//! down: an acknowledged object must survive the loss of any one node.
//!
//! Each key is written by one client only, one request at a time, so its history is a
//! sequence. After a request that broke without an answer (the gateway died under it), the
//! key may hold that request's result or the last acknowledged one; after an error answer
//! it must hold the last acknowledged one. Anything else is counted:
//! * lost: an acknowledged object is gone, unreadable, or reads back wrong;
//! * corrupt: a key holds bytes no client ever sent for it;
//! * partial visible: a key holds something that was never acknowledged (an error was
//!   answered) or that was acknowledged and then overwritten or deleted.
//!
//! Fault injection (`--faults MODE,...`, an alternative to the kill -9 rounds): each mode
//! runs once on a fresh cluster for `--fault-secs` while the clients write, and retry as S3
//! clients do (5xx and broken connections, `--retries` times, one multipart part at a time,
//! parts of 5-8 MiB):
//! * `disk-full`: one node runs with `--capacity --full-capacity` (default 32 MiB) and fills
//!   up; a write beyond it gets 507, like ENOSPC. The gateway gets `--reserve-bytes`,
//!   `--reserve-percent` and `--rebalance-rate` when its `--help` lists them.
//! * `write-fail`: one node runs with `CAIRN_NODE_FAULTS=write-fail=P` (`--write-fail-rate`):
//!   each shard PUT fails with probability P (507, 500 or a connection reset).
//! * `kill-mid-part`: over and over, once a multipart part is in flight, a random node is
//!   SIGKILLed, left down 0.5-2.5 s while the clients retry, and restarted.
//! * `corrupt`: bytes in the middle of a block in the middle of committed shard files are
//!   flipped on disk (at most one shard per segment) while the clients write, and
//!   `--corrupt-shards` more once they stop; nodes scrub every `--scrub-every`, since
//!   corrupt parity shards are never touched by a read.
//!
//! Then: every key is read back and checked (sha256) against what the clients were told;
//! the bench waits until the cluster is back to full redundancy (every node up, no corrupt
//! shard still referenced, `cairn_repair_queue_segments` 0 and no repair activity for two
//! repair intervals) and reads everything again with each node down in turn. One report
//! line per mode: acked / lost / unreadable / seconds to full redundancy.
//!
//! Exit status: 0 all clean, 1 any lost, corrupt, partial visible or unreadable object (or,
//! with `--faults`, a cluster not back to full redundancy in time), 2 error.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use bytes::Bytes;
use cairn_benches::cluster::{self, Cluster, ClusterSpec, Extra};
use cairn_benches::s3ops::{Bench, ChecksumMode};
use cairn_common::shard::ShardHeader;
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;
/// S3's smallest part (except the last); the part size of the kill -9 rounds.
const PART_SIZE: u64 = 5 * MIB;
/// Largest part in fault modes (each multipart upload picks a size in PART_SIZE..=this).
const FAULT_PART_MAX: u64 = 8 * MIB;
const BUCKET: &str = "torture";

/// Command line.
#[derive(Parser, Debug)]
#[command(name = "cairn-torture", version, about)]
struct Args {
    /// Rounds of upload, kill -9, restart, verify.
    #[arg(long, default_value_t = 10)]
    rounds: u32,
    /// Seed of every random choice (printed; default: random).
    #[arg(long)]
    seed: Option<u64>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Distinct keys (shared out among the clients; reused, so objects get overwritten).
    #[arg(long, default_value_t = 32)]
    keys: usize,
    /// Largest object in MiB.
    #[arg(long, default_value_t = 20)]
    max_size_mib: u64,
    /// Percent of writes done as multipart uploads (5 MiB parts).
    #[arg(long, default_value_t = 25)]
    multipart_percent: u32,
    /// Percent of operations that are deletes.
    #[arg(long, default_value_t = 10)]
    delete_percent: u32,
    /// Longest time clients upload before the kill, in milliseconds.
    #[arg(long, default_value_t = 2500)]
    max_kill_delay_ms: u64,
    /// Every N rounds, also read everything back with a random node down (0: never).
    #[arg(long, default_value_t = 5)]
    degraded_check_every: u32,
    /// Seconds one S3 request may take before it counts as hung.
    #[arg(long, default_value_t = 60)]
    op_timeout: u64,
    /// Storage nodes to start.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Erasure geometry K+M.
    #[arg(long, default_value = "3+1")]
    ec: String,
    /// Parent directory of the run's temp dir (node data, catalog, logs).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Directory with cairn-node and cairn-gateway (default: next to this binary).
    #[arg(long, env = "CAIRN_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Seconds each process may take to become healthy.
    #[arg(long, default_value_t = 30)]
    ready_timeout: u64,
    /// Keep the temp dir even when everything verified (it is always kept on a failure).
    #[arg(long)]
    keep: bool,
    /// At the end, prove the checker can fail: delete one acknowledged object and write one
    /// unacknowledged version behind the clients' backs; both must be caught.
    #[arg(long)]
    self_check: bool,
    /// Fault-injection modes to run instead of the kill -9 rounds, comma-separated
    /// (disk-full, write-fail, kill-mid-part, corrupt, or all); each once, on a fresh
    /// cluster.
    #[arg(long, value_enum, value_delimiter = ',')]
    faults: Vec<Fault>,
    /// Fault modes: seconds the clients write while the fault is on.
    #[arg(long, default_value_t = 12)]
    fault_secs: u64,
    /// Fault modes: attempts after a 500/502/503/504 or a broken connection, per request
    /// (and per multipart part).
    #[arg(long, default_value_t = 5)]
    retries: u32,
    /// disk-full: capacity of the node that fills up (its `--capacity`).
    #[arg(long, default_value = "32MiB")]
    full_capacity: String,
    /// write-fail: probability that the faulty node fails a shard PUT.
    #[arg(long, default_value_t = 0.2)]
    write_fail_rate: f64,
    /// corrupt: shards corrupted after the clients stop (more are corrupted every second or
    /// two while they write), one per segment, in the middle of a middle block.
    #[arg(long, default_value_t = 4)]
    corrupt_shards: usize,
    /// corrupt: the nodes' `--scrub-every` (scrub is what finds corrupt parity shards).
    #[arg(long, default_value = "3s")]
    scrub_every: String,
    /// Fault modes: the gateway's `--repair-after` (repair passes run every half of it).
    #[arg(long, default_value = "8s", value_parser = cairn_common::daemon::parse_duration)]
    repair_after: Duration,
    /// Fault modes: the gateway's `--reserve-bytes` (if its --help lists the option).
    #[arg(long, default_value = "1MiB")]
    reserve_bytes: String,
    /// Fault modes: the gateway's `--reserve-percent` (if its --help lists the option).
    #[arg(long, default_value_t = 0)]
    reserve_percent: u32,
    /// Fault modes: the gateway's `--rebalance-rate`, 0 for off (if its --help lists it).
    #[arg(long, default_value = "64MiB")]
    rebalance_rate: String,
    /// Fault modes: seconds to wait for full redundancy once the fault is over.
    #[arg(long, default_value_t = 90)]
    redundancy_timeout: u64,
}

/// A fault-injection mode of `--faults`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
enum Fault {
    /// A node whose disk fills up (507 beyond `--full-capacity`).
    DiskFull,
    /// A node failing shard writes at random.
    WriteFail,
    /// A node SIGKILLed while multipart parts are in flight, restarted later.
    KillMidPart,
    /// Flipped bytes in the middle of committed shards on disk.
    Corrupt,
    /// Every mode above, one after the other.
    All,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::DiskFull => "disk-full",
            Fault::WriteFail => "write-fail",
            Fault::KillMidPart => "kill-mid-part",
            Fault::Corrupt => "corrupt",
            Fault::All => "all",
        }
    }
}

/// What an object holds: its size and sha256.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Content {
    size: u64,
    sha: [u8; 32],
}

impl std::fmt::Display for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} B sha256 {}", self.size, &hex::encode(self.sha)[..16])
    }
}

/// `None` is "no such key".
type State = Option<Content>;

fn show(s: &State) -> String {
    s.map_or_else(|| "absent".to_string(), |c| c.to_string())
}

/// What the clients know about one key.
#[derive(Default, Debug)]
struct KeyModel {
    /// The last acknowledged state.
    acked: State,
    /// Results of requests that broke without an answer since then: each may have landed.
    maybe: Vec<State>,
    /// Everything ever sent for this key, to tell an unacknowledged version from garbage.
    sent: Vec<Content>,
    /// When the acknowledged state was acknowledged (round, seconds into the run).
    acked_at: Option<(u32, f64)>,
}

impl KeyModel {
    fn allows(&self, s: &State) -> bool {
        self.acked == *s || self.maybe.contains(s)
    }
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// A 2xx answer: acknowledged.
    Acked,
    /// An error answer (or never sent): it must not have taken effect.
    Refused,
    /// No answer (connection broke, timeout): it may or may not have taken effect.
    Unknown,
}

fn outcome_of<E>(e: &SdkError<E, HttpResponse>) -> Outcome {
    match e {
        SdkError::ConstructionFailure(_) => Outcome::Refused,
        _ => match e.raw_response() {
            Some(r) if !r.status().is_success() => Outcome::Refused,
            _ => Outcome::Unknown,
        },
    }
}

/// Counters of one round.
#[derive(Default, Debug, Clone)]
struct RoundStats {
    puts_acked: u64,
    /// Of `puts_acked`: multipart uploads.
    multipart_acked: u64,
    deletes_acked: u64,
    refused: u64,
    unknown: u64,
    hung: u64,
}

impl RoundStats {
    fn add(&mut self, o: &RoundStats) {
        self.puts_acked += o.puts_acked;
        self.multipart_acked += o.multipart_acked;
        self.deletes_acked += o.deletes_acked;
        self.refused += o.refused;
        self.unknown += o.unknown;
        self.hung += o.hung;
    }
}

/// Problems found by a verification.
#[derive(Default, Debug, Clone, Copy)]
struct Findings {
    checked: u64,
    lost: u64,
    corrupt: u64,
    partial: u64,
    /// Reads that failed (503...) although every node was up, then succeeded on a retry:
    /// not a loss, but the gateway refused to serve intact data for a while.
    unavailable: u64,
    /// Keys whose broken request turned out to have landed.
    resolved_landed: u64,
    /// Of `lost`: reads that kept failing (the bytes may exist but could not be served).
    unreadable: u64,
}

impl Findings {
    fn bad(&self) -> u64 {
        self.lost + self.corrupt + self.partial
    }
}

struct Shared {
    client: Client,
    model: Mutex<HashMap<String, KeyModel>>,
    started: Instant,
    round: std::sync::atomic::AtomicU32,
    op_timeout: Duration,
    /// UploadPart requests in flight (kill-mid-part waits for one).
    parts_in_flight: AtomicUsize,
}

impl Shared {
    fn with_key<T>(&self, key: &str, f: impl FnOnce(&mut KeyModel) -> T) -> T {
        let mut m = self.model.lock().unwrap_or_else(|p| p.into_inner());
        f(m.entry(key.to_string()).or_default())
    }

    fn record(&self, key: &str, result: State, outcome: Outcome) {
        let at = (
            self.round.load(Ordering::Relaxed),
            self.started.elapsed().as_secs_f64(),
        );
        self.with_key(key, |k| match outcome {
            Outcome::Acked => {
                k.acked = result;
                k.maybe.clear();
                k.acked_at = Some(at);
            }
            Outcome::Unknown => k.maybe.push(result),
            Outcome::Refused => {}
        });
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // As in cairn-bench: `run` is polled on the main thread, which spawns (and respawns) the
    // children, so their PR_SET_PDEATHSIG stays tied to a thread that lives as long as we do.
    let outcome = tokio::select! {
        r = async {
            if args.faults.is_empty() {
                run(&args).await
            } else {
                run_faults(&args).await
            }
        } => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted; cluster stopped")),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("cairn-torture: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn bin_dir(args: &Args) -> Result<PathBuf> {
    if let Some(d) = &args.bin_dir {
        return Ok(d.clone());
    }
    let exe = std::env::current_exe().context("locating this binary")?;
    exe.parent()
        .map(PathBuf::from)
        .context("this binary has no parent directory")
}

/// The run's temp dir (node data, catalog, logs).
fn work_dir(args: &Args) -> Result<tempfile::TempDir> {
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
async fn start(
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
    let shared = Arc::new(Shared {
        client: bench.client().clone(),
        model: Mutex::new(HashMap::new()),
        started: Instant::now(),
        round: 0.into(),
        op_timeout: Duration::from_secs(args.op_timeout),
        parts_in_flight: AtomicUsize::new(0),
    });
    Ok((cluster, shared))
}

/// Starts `args.writers` clients, each over its own share of the keys.
fn spawn_writers(
    args: &Args,
    shared: &Arc<Shared>,
    stop: &Arc<AtomicBool>,
    rng: &mut StdRng,
    mix: Mix,
) -> tokio::task::JoinSet<RoundStats> {
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..args.writers {
        let keys: Vec<String> = (w..args.keys)
            .step_by(args.writers)
            .map(|i| format!("k{i:03}"))
            .collect();
        let wseed = rng.next_u64();
        workers.spawn(writer(shared.clone(), stop.clone(), keys, wseed, mix));
    }
    workers
}

async fn run(args: &Args) -> Result<bool> {
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let tmp = work_dir(args)?;
    println!(
        "cairn-torture: seed {seed}, {} rounds, {} nodes EC {}, {} writers over {} keys, work dir {}",
        args.rounds,
        args.nodes,
        args.ec,
        args.writers,
        args.keys,
        tmp.path().display()
    );
    let (mut cluster, shared) = start(args, tmp.path(), Vec::new(), Extra::default()).await?;

    let mut total = RoundStats::default();
    let mut found = Findings::default();
    let mut victims: BTreeMap<&'static str, u32> = BTreeMap::new();
    println!(
        "{:>5}  {:<14} {:>6} {:>6} {:>6} {:>6} {:>5}  {:>7} {:>5} {:>7} {:>7} {:>7} {:>6}",
        "round",
        "killed",
        "put ok",
        "del ok",
        "refus",
        "broken",
        "hung",
        "checked",
        "lost",
        "corrupt",
        "partial",
        "unavail",
        "secs"
    );
    for round in 1..=args.rounds {
        let t0 = Instant::now();
        shared.round.store(round, Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = spawn_writers(args, &shared, &stop, &mut rng, Mix::of(args));
        tokio::time::sleep(Duration::from_millis(
            rng.random_range(100..args.max_kill_delay_ms.max(101)),
        ))
        .await;
        let node = rng.random_range(0..cluster.nodes.len());
        let (kill_gateway, kill_node) = match rng.random_range(0..10) {
            0..=3 => (true, None),
            4..=7 => (false, Some(node)),
            _ => (true, Some(node)),
        };
        if let Some(n) = kill_node {
            cluster.nodes[n].kill()?;
        }
        if kill_gateway {
            cluster.gateway.kill()?;
        } else {
            // the gateway carries on without the node for a while
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..1000))).await;
        }
        let what = match (kill_gateway, kill_node) {
            (true, Some(n)) => format!("gateway+node{n}"),
            (true, None) => "gateway".to_string(),
            (false, Some(n)) => format!("node{n}"),
            (false, None) => unreachable!("something is always killed"),
        };
        *victims
            .entry(match (kill_gateway, kill_node) {
                (true, Some(_)) => "gateway+node",
                (true, None) => "gateway",
                _ => "node",
            })
            .or_default() += 1;
        stop.store(true, Ordering::Relaxed);
        let mut stats = RoundStats::default();
        while let Some(done) = workers.join_next().await {
            stats.add(&done.context("writer task")?);
        }
        let ready = Duration::from_secs(args.ready_timeout);
        if let Some(n) = kill_node {
            cluster.nodes[n].restart(ready).await?;
        }
        if kill_gateway {
            cluster.gateway.restart(ready).await?;
        }
        cluster.wait_nodes_up(ready).await?;

        let mut f = verify(&shared, None).await?;
        if args.degraded_check_every > 0 && round % args.degraded_check_every == 0 {
            let n = rng.random_range(0..cluster.nodes.len());
            cluster.nodes[n].kill()?;
            let d = verify(&shared, Some(n)).await?;
            cluster.nodes[n].restart(ready).await?;
            cluster.wait_nodes_up(ready).await?;
            f.lost += d.lost;
            f.corrupt += d.corrupt;
            f.partial += d.partial;
            f.unavailable += d.unavailable;
        }
        total.add(&stats);
        found.checked += f.checked;
        found.lost += f.lost;
        found.corrupt += f.corrupt;
        found.partial += f.partial;
        found.unavailable += f.unavailable;
        found.resolved_landed += f.resolved_landed;
        println!(
            "{:>5}  {:<14} {:>6} {:>6} {:>6} {:>6} {:>5}  {:>7} {:>5} {:>7} {:>7} {:>7} {:>6.1}",
            round,
            what,
            stats.puts_acked,
            stats.deletes_acked,
            stats.refused,
            stats.unknown,
            stats.hung,
            f.checked,
            f.lost,
            f.corrupt,
            f.partial,
            f.unavailable,
            t0.elapsed().as_secs_f64()
        );
        cluster.check_alive()?;
    }
    if args.self_check {
        self_check(&shared).await?;
    }
    let live = shared
        .model
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .filter(|k| k.acked.is_some())
        .count();
    println!();
    println!("rounds:               {}", args.rounds);
    println!(
        "kills:                {}",
        victims
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("objects acked:        {}", total.puts_acked);
    println!("deletes acked:        {}", total.deletes_acked);
    println!(
        "requests refused:     {} (error answer, or multipart cut before Complete)",
        total.refused
    );
    println!(
        "requests broken:      {} (no answer; {} of them had landed)",
        total.unknown, found.resolved_landed
    );
    println!("requests hung:        {}", total.hung);
    println!("objects at the end:   {live}");
    println!("reads verified:       {}", found.checked);
    println!("lost:                 {}", found.lost);
    println!("corrupt:              {}", found.corrupt);
    println!("partial visible:      {}", found.partial);
    println!(
        "unavailable:          {} (intact objects refused for a while with every node up)",
        found.unavailable
    );
    let ok = found.bad() == 0 && total.hung == 0;
    drop(cluster);
    if ok && !args.keep {
        tmp.close().context("removing the work dir")?;
    } else {
        let kept = tmp.keep();
        println!("work dir kept: {}", kept.display());
    }
    Ok(ok)
}

/// What the writers do.
#[derive(Clone, Copy)]
struct Mix {
    max_size: u64,
    multipart_percent: u32,
    delete_percent: u32,
    /// Each multipart upload picks its part size in `part_min..=part_max`.
    part_min: u64,
    part_max: u64,
    /// Attempts after a retryable failure (0: every request is sent once).
    retries: u32,
    /// Multipart objects have at least two parts (fault modes: a failed part attempt must
    /// not take earlier parts with it).
    multi_part: bool,
}

impl Mix {
    fn of(args: &Args) -> Self {
        Self {
            max_size: args.max_size_mib.max(1) * MIB,
            multipart_percent: args.multipart_percent,
            delete_percent: args.delete_percent,
            part_min: PART_SIZE,
            part_max: PART_SIZE,
            retries: 0,
            multi_part: false,
        }
    }

    /// The mix of fault modes: retrying clients, parts of 5-8 MiB, multipart objects of two
    /// parts or more, and at least `multipart_percent` of the writes multipart.
    fn faults(args: &Args, multipart_percent: u32) -> Self {
        Self {
            multipart_percent: args.multipart_percent.max(multipart_percent),
            part_max: FAULT_PART_MAX,
            retries: args.retries,
            multi_part: true,
            ..Self::of(args)
        }
    }

    /// Mostly small objects, some up to `max_size`.
    fn size(&self, rng: &mut StdRng) -> u64 {
        match rng.random_range(0..10) {
            0 => rng.random_range(0..16),
            1..=4 => rng.random_range(16..256 * 1024),
            5..=7 => rng.random_range(256 * 1024..4 * MIB),
            _ => rng.random_range(4 * MIB..=self.max_size.max(4 * MIB + 1)),
        }
    }
}

/// One client: random PUTs, multipart uploads and deletes over its own keys until `stop`.
async fn writer(
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    keys: Vec<String>,
    seed: u64,
    mix: Mix,
) -> RoundStats {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stats = RoundStats::default();
    while !stop.load(Ordering::Relaxed) {
        let key = &keys[rng.random_range(0..keys.len())];
        let mut multipart = false;
        let (result, op): (State, BoxedOp) = if rng.random_range(0..100) < mix.delete_percent {
            (
                None,
                delete(shared.client.clone(), key.clone(), mix.retries),
            )
        } else {
            multipart = rng.random_range(0..100) < mix.multipart_percent;
            let part_size = rng.random_range(mix.part_min..=mix.part_max.max(mix.part_min));
            let size = if multipart && mix.multi_part {
                rng.random_range(part_size + 1..=mix.max_size.max(2 * part_size))
            } else {
                mix.size(&mut rng)
            };
            multipart &= size > 0;
            let mut data = vec![0u8; size as usize];
            rng.fill_bytes(&mut data);
            let content = Content {
                size,
                sha: Sha256::digest(&data).into(),
            };
            shared.with_key(key, |k| k.sent.push(content));
            let data = Bytes::from(data);
            let op: BoxedOp = if multipart {
                Box::pin(put_multipart(
                    shared.clone(),
                    key.clone(),
                    data,
                    part_size,
                    mix.retries,
                ))
            } else {
                Box::pin(put(shared.client.clone(), key.clone(), data, mix.retries))
            };
            (Some(content), op)
        };
        let op = tokio::time::timeout(shared.op_timeout, op);
        let outcome = match op.await {
            Ok(o) => o,
            Err(_) => {
                stats.hung += 1;
                eprintln!("request on {key} hung for {:?}", shared.op_timeout);
                Outcome::Unknown
            }
        };
        shared.record(key, result, outcome);
        match (outcome, result) {
            (Outcome::Acked, Some(_)) => {
                stats.puts_acked += 1;
                stats.multipart_acked += multipart as u64;
            }
            (Outcome::Acked, None) => stats.deletes_acked += 1,
            (Outcome::Refused, _) => stats.refused += 1,
            (Outcome::Unknown, _) => stats.unknown += 1,
        }
        if outcome != Outcome::Acked {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stats
}

type BoxedOp = std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>;

/// How a request ended after its retries.
struct Tried<T> {
    /// The answer of the attempt that succeeded.
    value: Option<T>,
    /// Some attempt broke without an answer, so it may have taken effect.
    unknown: bool,
}

impl<T> Tried<T> {
    fn outcome(&self) -> Outcome {
        match (&self.value, self.unknown) {
            (Some(_), _) => Outcome::Acked,
            (None, true) => Outcome::Unknown,
            (None, false) => Outcome::Refused,
        }
    }
}

/// Sends a request, and again up to `retries` times (with backoff) after an answer an S3
/// client retries (500, 502, 503, 504) or a broken connection.
async fn retrying<T, E, F, Fut>(retries: u32, mut attempt: F) -> Tried<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>>,
{
    let mut unknown = false;
    let mut tries = 0u32;
    loop {
        match attempt().await {
            Ok(v) => {
                return Tried {
                    value: Some(v),
                    unknown,
                }
            }
            Err(e) => {
                let o = outcome_of(&e);
                unknown |= o == Outcome::Unknown;
                let again = match e.raw_response() {
                    Some(r) => matches!(r.status().as_u16(), 500 | 502 | 503 | 504),
                    None => o == Outcome::Unknown,
                };
                if !again || tries >= retries {
                    return Tried {
                        value: None,
                        unknown,
                    };
                }
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100 << tries.min(4))).await;
            }
        }
    }
}

fn delete(client: Client, key: String, retries: u32) -> BoxedOp {
    Box::pin(async move {
        retrying(retries, || {
            client.delete_object().bucket(BUCKET).key(&key).send()
        })
        .await
        .outcome()
    })
}

async fn put(client: Client, key: String, data: Bytes, retries: u32) -> Outcome {
    retrying(retries, || {
        client
            .put_object()
            .bucket(BUCKET)
            .key(&key)
            .body(ByteStream::from(data.clone()))
            .send()
    })
    .await
    .outcome()
}

/// Aborts an upload that will not be completed (best effort: GC collects what remains).
async fn abort_upload(client: &Client, key: &str, id: &str) {
    let _ = client
        .abort_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .upload_id(id)
        .send()
        .await;
}

/// Counts an UploadPart in flight for as long as it lives (also when its future is dropped).
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Self(n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Create, parts of `part_size` one after the other (each retried on its own), Complete.
/// A failure before Complete was sent cannot make anything visible (the upload is aborted,
/// best effort).
async fn put_multipart(
    shared: Arc<Shared>,
    key: String,
    data: Bytes,
    part_size: u64,
    retries: u32,
) -> Outcome {
    let client = &shared.client;
    let created = retrying(retries, || {
        client
            .create_multipart_upload()
            .bucket(BUCKET)
            .key(&key)
            .send()
    })
    .await;
    let Some(id) = created
        .value
        .as_ref()
        .and_then(|c| c.upload_id())
        .map(str::to_string)
    else {
        return Outcome::Refused;
    };
    let mut parts = Vec::new();
    for (i, chunk) in data.chunks(part_size as usize).enumerate() {
        let number = i as i32 + 1;
        let body = data.slice_ref(chunk);
        let r = retrying(retries, || {
            let send = client
                .upload_part()
                .bucket(BUCKET)
                .key(&key)
                .upload_id(&id)
                .part_number(number)
                .body(ByteStream::from(body.clone()))
                .send();
            let counter = &shared.parts_in_flight;
            async move {
                let _in_flight = InFlight::new(counter);
                send.await
            }
        })
        .await;
        match r.value {
            Some(out) => parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build(),
            ),
            None => {
                abort_upload(client, &key, &id).await;
                return Outcome::Refused;
            }
        }
    }
    let done = retrying(retries, || {
        client
            .complete_multipart_upload()
            .bucket(BUCKET)
            .key(&key)
            .upload_id(&id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts.clone()))
                    .build(),
            )
            .send()
    })
    .await;
    let o = done.outcome();
    if o == Outcome::Refused {
        abort_upload(client, &key, &id).await;
    }
    o
}

/// Tampers with two keys without telling the model and checks that `verify` reports
/// exactly one lost and one partial visible object.
async fn self_check(shared: &Shared) -> Result<()> {
    let (lose, sneak) = {
        let m = shared.model.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = m.iter().filter(|(_, k)| k.acked.is_some()).map(|(n, _)| n);
        let lose = present.next().cloned();
        let sneak = m
            .iter()
            .find(|(n, k)| Some(*n) != lose.as_ref() && !k.sent.is_empty())
            .map(|(n, k)| (n.clone(), k.sent[0]));
        (lose, sneak)
    };
    let (Some(lose), Some((sneak, _))) = (lose, sneak) else {
        bail!("self-check: not enough objects to tamper with");
    };
    shared
        .client
        .delete_object()
        .bucket(BUCKET)
        .key(&lose)
        .send()
        .await
        .map_err(|e| anyhow!("self-check delete: {e}"))?;
    // A version "sent but never acknowledged": recorded as sent, written behind the model.
    let data = b"self-check: never acknowledged".to_vec();
    let content = Content {
        size: data.len() as u64,
        sha: Sha256::digest(&data).into(),
    };
    shared.with_key(&sneak, |k| k.sent.push(content));
    if put(shared.client.clone(), sneak.clone(), Bytes::from(data), 0).await != Outcome::Acked {
        bail!("self-check: PUT of {sneak} failed");
    }
    println!(
        "self-check: deleted {lose} and wrote an unacknowledged version of {sneak} behind the \
         clients' backs; the checker must report both"
    );
    let f = verify(shared, None).await?;
    if (f.lost, f.partial, f.corrupt) != (1, 1, 0) {
        bail!("self-check: the checker missed tampering: {f:?}");
    }
    println!(
        "self-check: a deleted acknowledged object and an unacknowledged version were both caught"
    );
    Ok(())
}

/// What a key holds now, read in full.
enum Seen {
    State(State),
    /// The read failed (not a 404).
    Unreadable(String),
}

async fn read_key(client: &Client, key: &str) -> Seen {
    let out = match client.get_object().bucket(BUCKET).key(key).send().await {
        Ok(o) => o,
        Err(e) => {
            if e.raw_response().map(|r| r.status().as_u16()) == Some(404) {
                return Seen::State(None);
            }
            return Seen::Unreadable(format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)));
        }
    };
    let mut body = out.body;
    let mut sha = Sha256::new();
    let mut size = 0u64;
    loop {
        match body.next().await {
            None => break,
            Some(Ok(b)) => {
                size += b.len() as u64;
                sha.update(&b);
            }
            Some(Err(e)) => return Seen::Unreadable(format!("body broke after {size} B: {e}")),
        }
    }
    Seen::State(Some(Content {
        size,
        sha: sha.finalize().into(),
    }))
}

/// An SDK error's first line (their Display can run to kilobytes).
fn first_line(e: &str) -> &str {
    let end = e.find(" (ServiceError").unwrap_or(e.len()).min(300);
    e.get(..end).unwrap_or(e)
}

/// Every key in the listing, with its size.
async fn list_all(client: &Client) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(BUCKET)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            anyhow!(
                "ListObjectsV2: {}",
                aws_sdk_s3::error::DisplayErrorContext(&e)
            )
        })?;
        for o in page.contents() {
            if let Some(k) = o.key() {
                out.insert(k.to_string(), o.size().unwrap_or(0) as u64);
            }
        }
    }
    Ok(out)
}

/// Reads every key back and compares it with the model, then settles the model on what is
/// there. With `node_down` (a second pass, the model already settled) any failure means an
/// object was acknowledged with less redundancy than promised.
async fn verify(shared: &Shared, node_down: Option<usize>) -> Result<Findings> {
    let listed = list_all(&shared.client).await?;
    let keys: Vec<String> = {
        let m = shared.model.lock().unwrap_or_else(|p| p.into_inner());
        let mut k: Vec<String> = m.keys().cloned().collect();
        k.extend(listed.keys().filter(|l| !m.contains_key(*l)).cloned());
        k.sort();
        k.dedup();
        k
    };
    let mut f = Findings::default();
    let tag = node_down.map_or(String::new(), |n| format!(" (node{n} down)"));
    for key in keys {
        let mut seen = read_key(&shared.client, &key).await;
        if let Seen::Unreadable(e) = &seen {
            // Give the gateway a few heartbeats to notice nodes are back before calling
            // the object lost.
            eprintln!("UNAVAILABLE{tag}: {key}: {}", first_line(e));
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(250)).await;
                seen = read_key(&shared.client, &key).await;
                if matches!(seen, Seen::State(_)) {
                    f.unavailable += 1;
                    break;
                }
            }
        }
        f.checked += 1;
        let mut m = shared.model.lock().unwrap_or_else(|p| p.into_inner());
        let k = m.entry(key.clone()).or_default();
        let state = match seen {
            Seen::Unreadable(e) => {
                f.lost += 1;
                f.unreadable += 1;
                eprintln!(
                    "LOST{tag}: {key} unreadable: {}; acknowledged: {} at {:?}",
                    first_line(&e),
                    show(&k.acked),
                    k.acked_at
                );
                continue;
            }
            Seen::State(s) => s,
        };
        let listed_as = listed.get(&key).copied();
        if listed_as != state.map(|c| c.size) {
            f.partial += 1;
            eprintln!(
                "LISTING{tag}: {key} listed as {listed_as:?} but reads as {}",
                show(&state)
            );
        }
        if k.allows(&state) {
            if state != k.acked {
                f.resolved_landed += 1;
            }
            k.acked = state;
            k.maybe.clear();
            continue;
        }
        match state {
            None => {
                f.lost += 1;
                eprintln!(
                    "LOST{tag}: {key} is gone; acknowledged: {} at {:?} (round, s)",
                    show(&k.acked),
                    k.acked_at
                );
            }
            Some(c) if k.sent.contains(&c) => {
                f.partial += 1;
                eprintln!(
                    "PARTIAL VISIBLE{tag}: {key} holds {c}, which was not acknowledged or was \
                     replaced; acknowledged: {}, in doubt: {:?}",
                    show(&k.acked),
                    k.maybe.iter().map(show).collect::<Vec<_>>()
                );
            }
            Some(c) => {
                f.corrupt += 1;
                eprintln!(
                    "CORRUPT{tag}: {key} holds {c}, which no client sent; acknowledged: {}",
                    show(&k.acked)
                );
            }
        }
        // Count each problem once: carry on from what is there now.
        k.acked = state;
        k.maybe.clear();
    }
    Ok(f)
}

/// What one fault mode found.
struct FaultReport {
    mode: Fault,
    stats: RoundStats,
    /// Acknowledged objects gone, wrong or replaced by something never acknowledged.
    lost: u64,
    /// Objects that could not be read (with every node up, or with one node down after
    /// repair).
    unreadable: u64,
    /// Seconds from the end of the fault until the cluster was back to full redundancy;
    /// `None` if it was not within `--redundancy-timeout`.
    redundancy_secs: Option<f64>,
    /// Segments repair re-striped in that time.
    repaired: u64,
    /// What the mode did (kills, corrupted shards, options the binaries lack).
    notes: Vec<String>,
    secs: f64,
}

impl FaultReport {
    fn clean(&self) -> bool {
        self.lost == 0
            && self.unreadable == 0
            && self.stats.hung == 0
            && self.redundancy_secs.is_some()
    }
}

/// Runs each `--faults` mode once on a fresh cluster and prints a report line per mode.
async fn run_faults(args: &Args) -> Result<bool> {
    if args.self_check {
        bail!("--self-check goes with the kill -9 rounds, not with --faults");
    }
    let mut modes: BTreeSet<Fault> = args.faults.iter().copied().collect();
    if modes.remove(&Fault::All) {
        modes.extend([
            Fault::DiskFull,
            Fault::WriteFail,
            Fault::KillMidPart,
            Fault::Corrupt,
        ]);
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let tmp = work_dir(args)?;
    println!(
        "cairn-torture: seed {seed}, faults {}, {} s each, {} nodes EC {}, {} writers over {} \
         keys, work dir {}",
        modes.iter().map(|m| m.name()).collect::<Vec<_>>().join(","),
        args.fault_secs,
        args.nodes,
        args.ec,
        args.writers,
        args.keys,
        tmp.path().display()
    );
    let mut reports = Vec::new();
    for mode in modes {
        let work = tmp.path().join(mode.name());
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let r = run_fault(args, mode, rng.next_u64(), &work)
            .await
            .with_context(|| format!("fault mode {}", mode.name()))?;
        println!(
            "{}: acked {} ({} multipart), lost {}, unreadable {}, full redundancy after {}",
            mode.name(),
            r.stats.puts_acked,
            r.stats.multipart_acked,
            r.lost,
            r.unreadable,
            r.redundancy_secs
                .map_or_else(|| "NEVER (timed out)".to_string(), |s| format!("{s:.1} s"))
        );
        reports.push(r);
    }
    println!();
    println!(
        "{:<14} {:>6} {:>6} {:>6} {:>6} {:>5} {:>5} {:>10} {:>12} {:>8} {:>6}",
        "mode",
        "acked",
        "multi",
        "refus",
        "broken",
        "hung",
        "lost",
        "unreadable",
        "s-to-full-rd",
        "repaired",
        "secs"
    );
    for r in &reports {
        println!(
            "{:<14} {:>6} {:>6} {:>6} {:>6} {:>5} {:>5} {:>10} {:>12} {:>8} {:>6.1}",
            r.mode.name(),
            r.stats.puts_acked,
            r.stats.multipart_acked,
            r.stats.refused,
            r.stats.unknown,
            r.stats.hung,
            r.lost,
            r.unreadable,
            r.redundancy_secs
                .map_or_else(|| "never".to_string(), |s| format!("{s:.1}")),
            r.repaired,
            r.secs
        );
    }
    for r in &reports {
        for n in &r.notes {
            println!("  {}: {n}", r.mode.name());
        }
    }
    let ok = reports.iter().all(FaultReport::clean);
    if ok && !args.keep {
        tmp.close().context("removing the work dir")?;
    } else {
        println!("work dir kept: {}", tmp.keep().display());
    }
    Ok(ok)
}

/// The gateway's options for the fault modes, each only if its `--help` lists it.
fn gateway_extra(args: &Args, notes: &mut Vec<String>) -> Result<Extra> {
    let gw = cluster::find_bin(&bin_dir(args)?, "cairn-gateway")?;
    let mut extra = Extra {
        args: vec![
            "--repair-after".into(),
            format!("{}ms", args.repair_after.as_millis()),
        ],
        env: Vec::new(),
    };
    for (flag, value) in [
        ("--reserve-bytes", args.reserve_bytes.clone()),
        ("--reserve-percent", args.reserve_percent.to_string()),
        ("--rebalance-rate", args.rebalance_rate.clone()),
    ] {
        if cluster::help_lists(&gw, flag) {
            extra.args.extend([flag.to_string(), value]);
        } else {
            notes.push(format!("cairn-gateway has no {flag}: not passed"));
        }
    }
    Ok(extra)
}

/// Whether the file at `path` contains `needle` (an environment variable a binary reads
/// but its `--help` does not list).
fn binary_mentions(path: &Path, needle: &str) -> bool {
    std::fs::read(path)
        .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .unwrap_or(false)
}

/// One fault mode on a fresh cluster in `work`: write with the fault on, read everything
/// back, wait for full redundancy, read everything with each node down in turn.
async fn run_fault(args: &Args, mode: Fault, seed: u64, work: &Path) -> Result<FaultReport> {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut notes = Vec::new();
    let gateway = gateway_extra(args, &mut notes)?;
    let gateway_reserve = gateway.args.iter().any(|a| a == "--reserve-bytes");
    let node_bin = cluster::find_bin(&bin_dir(args)?, "cairn-node")?;
    let victim = rng.random_range(0..args.nodes.max(1));
    let mut node_extra = vec![Extra::default(); args.nodes];
    match mode {
        Fault::DiskFull => {
            if !cluster::help_lists(&node_bin, "--capacity") {
                notes.push(
                    "cairn-node has no --capacity: its disk never fills, so this mode injects \
                     nothing"
                        .into(),
                );
            } else {
                node_extra[victim].args = vec!["--capacity".into(), args.full_capacity.clone()];
                notes.push(format!("node{victim} capped at {}", args.full_capacity));
                if !gateway_reserve {
                    // The gateway's default reserve (GiBs) would keep every shard off a
                    // node this small, and nothing would fill: the node claims room it
                    // does not have instead, so it is chosen until its writes fail.
                    node_extra[victim].env = vec![(
                        "CAIRN_NODE_FAULTS".into(),
                        format!("report-free={}", 1u64 << 40),
                    )];
                    notes.push(format!(
                        "node{victim} reports 1 TiB free (CAIRN_NODE_FAULTS=report-free), as \
                         the gateway's reserve cannot be lowered"
                    ));
                }
            }
        }
        Fault::WriteFail => {
            if !binary_mentions(&node_bin, "CAIRN_NODE_FAULTS") {
                notes.push(
                    "cairn-node does not read CAIRN_NODE_FAULTS: no write fails, so this mode \
                     injects nothing"
                        .into(),
                );
            }
            node_extra[victim].env = vec![(
                "CAIRN_NODE_FAULTS".into(),
                format!("write-fail={}", args.write_fail_rate),
            )];
            notes.push(format!(
                "node{victim} fails shard PUTs with probability {}",
                args.write_fail_rate
            ));
        }
        Fault::Corrupt => {
            for e in &mut node_extra {
                e.args = vec!["--scrub-every".into(), args.scrub_every.clone()];
            }
        }
        Fault::KillMidPart | Fault::All => {}
    }
    let (mut cluster, shared) = start(args, work, node_extra, gateway).await?;
    let multipart_percent = if mode == Fault::KillMidPart { 60 } else { 30 };
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = spawn_writers(
        args,
        &shared,
        &stop,
        &mut rng,
        Mix::faults(args, multipart_percent),
    );
    let deadline = Instant::now() + Duration::from_secs(args.fault_secs);
    let ready = Duration::from_secs(args.ready_timeout);
    let mut corrupted: Vec<Corrupted> = Vec::new();
    let mut kills = 0u32;
    let mut kills_mid_part = 0u32;
    while Instant::now() < deadline {
        match mode {
            Fault::KillMidPart => {
                sleep_ms(&mut rng, 300, 1200).await;
                let wait_part = Instant::now() + Duration::from_secs(3);
                while shared.parts_in_flight.load(Ordering::Relaxed) == 0
                    && Instant::now() < wait_part
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                kills_mid_part += (shared.parts_in_flight.load(Ordering::Relaxed) > 0) as u32;
                let n = rng.random_range(0..cluster.nodes.len());
                cluster.nodes[n].kill()?;
                kills += 1;
                sleep_ms(&mut rng, 500, 2500).await;
                cluster.nodes[n].restart(ready).await?;
            }
            Fault::Corrupt => {
                sleep_ms(&mut rng, 800, 2000).await;
                if let Some(c) = corrupt_one(&cluster, &corrupted, &mut rng)? {
                    corrupted.push(c);
                }
            }
            _ => tokio::time::sleep(deadline.saturating_duration_since(Instant::now())).await,
        }
        cluster.check_alive()?;
    }
    stop.store(true, Ordering::Relaxed);
    let mut stats = RoundStats::default();
    while let Some(done) = workers.join_next().await {
        stats.add(&done.context("writer task")?);
    }
    if mode == Fault::Corrupt {
        let during = corrupted.len();
        while corrupted.len() < during + args.corrupt_shards {
            match corrupt_one(&cluster, &corrupted, &mut rng)? {
                Some(c) => corrupted.push(c),
                None => break,
            }
        }
        notes.push(format!(
            "{} shards corrupted ({during} while writing): {}",
            corrupted.len(),
            corrupted
                .iter()
                .map(|c| c.describe())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if mode == Fault::KillMidPart {
        notes.push(format!(
            "{kills} nodes SIGKILLed, {kills_mid_part} of them with a part in flight"
        ));
    }
    // The fault is over (write-fail and disk-full stay on: they are the node's state).
    for n in &mut cluster.nodes {
        if !n.is_running() {
            n.restart(ready).await?;
        }
    }
    cluster.wait_nodes_up(ready).await?;
    let recovering = Instant::now();
    let repaired_before = repair_counts(&cluster).await.unwrap_or_default();
    // Read everything back while waiting for full redundancy, so the wait counts from the
    // end of the fault and not from the end of the reads (which may themselves find
    // corrupt blocks and queue repairs).
    let (f, redundancy_secs) = tokio::join!(
        verify(&shared, None),
        wait_full_redundancy(
            &mut cluster,
            args,
            &corrupted,
            recovering,
            Duration::from_secs(args.redundancy_timeout),
        )
    );
    let (f, redundancy_secs) = (f?, redundancy_secs?);
    let repaired_after = repair_counts(&cluster).await.unwrap_or_default();
    if mode == Fault::DiskFull {
        if let Some(n) = node_view(&cluster, victim).await {
            notes.push(format!("node{victim} at the end: {n}"));
        }
    }
    if mode == Fault::WriteFail {
        let token = Some(cluster.admin_token.as_str());
        if let Ok((200, text)) = cluster.nodes[victim].http_get("/metrics", token).await {
            let injected: f64 = text
                .lines()
                .filter(|l| l.starts_with("cairn_node_injected_faults_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            notes.push(format!("node{victim} injected {injected} faults"));
        }
    }
    // Full redundancy means any one node may go now: read everything with each one down.
    let mut degraded = Findings::default();
    for n in 0..cluster.nodes.len() {
        cluster.nodes[n].kill()?;
        let d = verify(&shared, Some(n)).await?;
        cluster.nodes[n].restart(ready).await?;
        cluster.wait_nodes_up(ready).await?;
        degraded.lost += d.lost;
        degraded.unreadable += d.unreadable;
        degraded.corrupt += d.corrupt;
        degraded.partial += d.partial;
    }
    cluster.check_alive()?;
    drop(cluster);
    Ok(FaultReport {
        mode,
        stats,
        lost: f.bad() - f.unreadable + degraded.bad() - degraded.unreadable,
        unreadable: f.unreadable + degraded.unreadable,
        redundancy_secs,
        repaired: repaired_after.0.saturating_sub(repaired_before.0),
        notes,
        secs: t0.elapsed().as_secs_f64(),
    })
}

async fn sleep_ms(rng: &mut StdRng, lo: u64, hi: u64) {
    tokio::time::sleep(Duration::from_millis(rng.random_range(lo..hi))).await;
}

/// The value of an unlabelled sample `name` in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Segments repair re-striped (`cairn_repair_segments_total{result="ok"}`) and repair
/// attempts of any result, from the gateway's `/_cairn/metrics`.
async fn repair_counts(cluster: &Cluster) -> Option<(u64, u64)> {
    let (200, text) = cluster.gateway_get("/_cairn/metrics").await.ok()? else {
        return None;
    };
    let mut ok = 0.0;
    let mut all = 0.0;
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("cairn_repair_segments_total{") {
            let v: f64 = rest
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            all += v;
            if rest.contains("result=\"ok\"") {
                ok += v;
            }
        }
    }
    Some((ok as u64, all as u64))
}

/// Node `i` as the gateway sees it (`/_cairn/nodes`), for the report.
async fn node_view(cluster: &Cluster, i: usize) -> Option<String> {
    let (200, text) = cluster.gateway_get("/_cairn/nodes").await.ok()? else {
        return None;
    };
    let nodes: serde_json::Value = serde_json::from_str(&text).ok()?;
    let addr = cluster.nodes.get(i)?.addr.to_string();
    let n = nodes
        .as_array()?
        .iter()
        .find(|n| n["addr"].as_str() == Some(&addr))?;
    let mib = |v: &serde_json::Value| {
        v.as_u64().map_or_else(
            || "?".to_string(),
            |b| format!("{:.1} MiB", b as f64 / MIB as f64),
        )
    };
    Some(format!(
        "{}, capacity {}, free {}, {} shards",
        n["state"].as_str().unwrap_or("?"),
        mib(&n["capacity_bytes"]),
        mib(&n["free_bytes"]),
        n["shards"].as_u64().map_or("?".into(), |s| s.to_string())
    ))
}

/// Waits until the cluster is back to full redundancy: every node up, no corrupted shard
/// still referenced, `cairn_repair_queue_segments` 0, and no repair attempt for two repair
/// intervals (so at least one whole pass found nothing to do). Returns the seconds from
/// `since` to the start of that quiet time, or `None` after `timeout`.
async fn wait_full_redundancy(
    cluster: &mut Cluster,
    args: &Args,
    corrupted: &[Corrupted],
    since: Instant,
    timeout: Duration,
) -> Result<Option<f64>> {
    // The gateway runs a repair pass every --repair-after / 2, within 1 s..30 s.
    let every = (args.repair_after / 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
    let quiet_needed = every * 2 + Duration::from_millis(500);
    let want_up = cluster.nodes.len() as f64;
    let mut quiet: Option<(Instant, u64)> = None;
    loop {
        cluster.check_alive()?;
        let text = match cluster.gateway_get("/_cairn/metrics").await {
            Ok((200, t)) => t,
            _ => String::new(),
        };
        let up = metric(&text, "cairn_nodes_up");
        let any_down = text.lines().any(|l| {
            l.starts_with("cairn_node_up{")
                && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) == Some(0.0)
        });
        let queue = metric(&text, "cairn_repair_queue_segments");
        let attempts = repair_counts(cluster).await.map(|c| c.1);
        let unrepaired = corrupted
            .iter()
            .filter(|c| c.still_referenced(cluster))
            .count();
        let full = up == Some(want_up) && !any_down && queue == Some(0.0) && unrepaired == 0;
        let state = format!(
            "nodes up {up:?} (any down: {any_down}), repair queue {queue:?}, corrupt shards \
             still referenced {unrepaired}, repair attempts {attempts:?}"
        );
        match (full, attempts, quiet) {
            (true, Some(a), Some((start, seen))) if a == seen => {
                if start.elapsed() >= quiet_needed {
                    return Ok(Some(start.duration_since(since).as_secs_f64()));
                }
            }
            (true, Some(a), _) => quiet = Some((Instant::now(), a)),
            _ => quiet = None,
        }
        if since.elapsed() >= timeout {
            eprintln!("NOT BACK TO FULL REDUNDANCY after {timeout:?}: {state}");
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A shard whose bytes the bench flipped on disk.
struct Corrupted {
    node: usize,
    path: PathBuf,
    /// The object directory's name (the object id in hex).
    object: String,
    segment: u32,
    index: u8,
    block: u64,
    blocks: u64,
}

impl Corrupted {
    fn describe(&self) -> String {
        format!(
            "node{} {}.. seg {} shard {} block {}/{}",
            self.node,
            self.object.get(..8).unwrap_or(&self.object),
            self.segment,
            self.index,
            self.block,
            self.blocks
        )
    }

    /// Whether the flipped shard is still on disk and its segment is still part of the
    /// object (a manifest on some node lists it): not yet repaired, overwritten or deleted.
    fn still_referenced(&self, cluster: &Cluster) -> bool {
        self.path.exists()
            && committed_segments(cluster, &self.object)
                .map(|s| s.contains(&self.segment))
                .unwrap_or(false)
    }
}

/// Where node data keeps an object's shards and manifest.
fn object_dir(data: &Path, object: &str) -> PathBuf {
    data.join("shards")
        .join(object.get(..2).unwrap_or(object))
        .join(object)
}

/// Segments listed by the newest manifest of `object` found on any node (`None`: no
/// manifest, the object is not committed or was deleted).
fn committed_segments(cluster: &Cluster, object: &str) -> Option<BTreeSet<u32>> {
    let mut best: Option<(u64, BTreeSet<u32>)> = None;
    for data in &cluster.node_data {
        let Ok(text) = std::fs::read_to_string(object_dir(data, object).join("manifest")) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let written = v["written_ms"].as_u64().unwrap_or(0);
        let segs: BTreeSet<u32> = v["record"]["segments"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["segment"].as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect();
        if best.as_ref().is_none_or(|(w, _)| written >= *w) {
            best = Some((written, segs));
        }
    }
    best.map(|(_, s)| s)
}

/// Flips 16 bytes in the middle of a middle block of one committed shard, on a random
/// node, in a segment none of `done` is in (so every segment keeps k sound shards). Prefers
/// shards of three blocks or more, so the block is neither the first nor the last.
fn corrupt_one(
    cluster: &Cluster,
    done: &[Corrupted],
    rng: &mut StdRng,
) -> Result<Option<Corrupted>> {
    let taken: BTreeSet<(String, u32)> =
        done.iter().map(|c| (c.object.clone(), c.segment)).collect();
    // (node, path, object, header, header length)
    let mut candidates: Vec<(usize, PathBuf, String, ShardHeader, u64)> = Vec::new();
    for (node, data) in cluster.node_data.iter().enumerate() {
        let Ok(prefixes) = std::fs::read_dir(data.join("shards")) else {
            continue;
        };
        for dir in prefixes
            .flatten()
            .flat_map(|p| std::fs::read_dir(p.path()))
            .flatten()
        {
            let Ok(dir) = dir else { continue };
            let object = dir.file_name().to_string_lossy().into_owned();
            let Some(segments) = committed_segments(cluster, &object) else {
                continue;
            };
            let Ok(files) = std::fs::read_dir(dir.path()) else {
                continue;
            };
            for file in files.flatten() {
                let name = file.file_name().to_string_lossy().into_owned();
                let Some(segment) = name
                    .split_once('.')
                    .and_then(|(s, _)| s.parse::<u32>().ok())
                else {
                    continue;
                };
                if !segments.contains(&segment) || taken.contains(&(object.clone(), segment)) {
                    continue;
                }
                if let Some((header, len)) = read_header(&file.path()) {
                    candidates.push((node, file.path(), object.clone(), header, len));
                }
            }
        }
    }
    let best = candidates
        .iter()
        .map(|c| c.3.layout.stripes().min(3))
        .max()
        .unwrap_or(0);
    candidates.retain(|c| c.3.layout.stripes().min(3) == best);
    if candidates.is_empty() {
        return Ok(None);
    }
    let (node, path, object, header, header_len) =
        candidates.swap_remove(rng.random_range(0..candidates.len()));
    let layout = header.layout;
    let block = layout.stripes() / 2;
    let block_len = layout.block_len(block) as u64;
    let at = header_len + layout.block_file_offset(block) + block_len / 2;
    let n = block_len.clamp(1, 16) as usize;
    match flip(&path, at, n) {
        Ok(()) => {}
        // Deleted since it was listed (an overwrite, repair or rebalance moved it): no
        // shard was corrupted this time.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("corrupting {}", path.display())),
    }
    Ok(Some(Corrupted {
        node,
        path,
        object,
        segment: header.segment,
        index: header.shard_index,
        block,
        blocks: layout.stripes(),
    }))
}

/// The header of a complete shard file and its length.
fn read_header(path: &Path) -> Option<(ShardHeader, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let size = f.metadata().ok()?.len();
    let mut prefix = [0u8; 8];
    f.read_exact(&mut prefix).ok()?;
    let len = ShardHeader::peek_len(&prefix).ok()?;
    let mut buf = vec![0u8; len];
    buf[..8].copy_from_slice(&prefix);
    f.read_exact(&mut buf[8..]).ok()?;
    let header = ShardHeader::decode(&buf).ok()?;
    (header.file_len() == size).then_some((header, len as u64))
}

/// Inverts `n` bytes at `at` and flushes them to disk (the node reads with O_DIRECT).
fn flip(path: &Path, at: u64, n: usize) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut buf = vec![0u8; n];
    f.read_exact_at(&mut buf, at)?;
    for b in &mut buf {
        *b = !*b;
    }
    f.write_all_at(&buf, at)?;
    f.sync_data()
}
