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
//! Exit status: 0 all clean, 1 any lost, corrupt or partial visible object, 2 error.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use cairn_benches::cluster::{Cluster, ClusterSpec};
use cairn_benches::s3ops::{Bench, ChecksumMode};
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;
/// S3's smallest part (except the last).
const PART_SIZE: u64 = 5 * MIB;
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
    deletes_acked: u64,
    refused: u64,
    unknown: u64,
    hung: u64,
}

impl RoundStats {
    fn add(&mut self, o: &RoundStats) {
        self.puts_acked += o.puts_acked;
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
        r = run(&args) => r,
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

async fn run(args: &Args) -> Result<bool> {
    if args.writers == 0 || args.keys < args.writers {
        bail!("need at least one writer and as many keys as writers");
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let tmp = match &args.data_dir {
        Some(d) => tempfile::Builder::new()
            .prefix("cairn-torture-")
            .tempdir_in(d),
        None => tempfile::Builder::new().prefix("cairn-torture-").tempdir(),
    }
    .context("creating the work dir")?;
    let spec = ClusterSpec {
        bin_dir: bin_dir(args)?,
        work_dir: tmp.path().to_path_buf(),
        nodes: args.nodes,
        ec: args.ec.clone(),
        ready_timeout: Duration::from_secs(args.ready_timeout),
    };
    println!(
        "cairn-torture: seed {seed}, {} rounds, {} nodes EC {}, {} writers over {} keys, work dir {}",
        args.rounds,
        args.nodes,
        args.ec,
        args.writers,
        args.keys,
        tmp.path().display()
    );
    let mut cluster = Cluster::start(&spec).await?;
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
    });

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
        let mut workers = tokio::task::JoinSet::new();
        for w in 0..args.writers {
            let keys: Vec<String> = (w..args.keys)
                .step_by(args.writers)
                .map(|i| format!("k{i:03}"))
                .collect();
            let wseed = rng.next_u64();
            workers.spawn(writer(
                shared.clone(),
                stop.clone(),
                keys,
                wseed,
                Mix::of(args),
            ));
        }
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
}

impl Mix {
    fn of(args: &Args) -> Self {
        Self {
            max_size: args.max_size_mib.max(1) * MIB,
            multipart_percent: args.multipart_percent,
            delete_percent: args.delete_percent,
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
        let (result, op): (State, BoxedOp) = if rng.random_range(0..100) < mix.delete_percent {
            (None, delete(&shared.client, key))
        } else {
            let size = mix.size(&mut rng);
            let mut data = vec![0u8; size as usize];
            rng.fill_bytes(&mut data);
            let content = Content {
                size,
                sha: Sha256::digest(&data).into(),
            };
            shared.with_key(key, |k| k.sent.push(content));
            let op: BoxedOp = if size > 0 && rng.random_range(0..100) < mix.multipart_percent {
                Box::pin(put_multipart(shared.client.clone(), key.clone(), data))
            } else {
                Box::pin(put(shared.client.clone(), key.clone(), data))
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
            (Outcome::Acked, Some(_)) => stats.puts_acked += 1,
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

fn delete(client: &Client, key: &str) -> BoxedOp {
    let req = client.delete_object().bucket(BUCKET).key(key);
    Box::pin(async move {
        match req.send().await {
            Ok(_) => Outcome::Acked,
            Err(e) => outcome_of(&e),
        }
    })
}

async fn put(client: Client, key: String, data: Vec<u8>) -> Outcome {
    let r = client
        .put_object()
        .bucket(BUCKET)
        .key(key)
        .body(ByteStream::from(data))
        .send()
        .await;
    match r {
        Ok(_) => Outcome::Acked,
        Err(e) => outcome_of(&e),
    }
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

/// Create, 5 MiB parts one after the other, Complete. A failure before Complete was sent
/// cannot make anything visible (the upload is aborted, best effort).
async fn put_multipart(client: Client, key: String, data: Vec<u8>) -> Outcome {
    let created = match client
        .create_multipart_upload()
        .bucket(BUCKET)
        .key(&key)
        .send()
        .await
    {
        Ok(c) => c,
        Err(_) => return Outcome::Refused,
    };
    let Some(id) = created.upload_id().map(str::to_string) else {
        return Outcome::Refused;
    };
    let data = bytes::Bytes::from(data);
    let mut parts = Vec::new();
    for (i, chunk) in data.chunks(PART_SIZE as usize).enumerate() {
        let number = i as i32 + 1;
        let r = client
            .upload_part()
            .bucket(BUCKET)
            .key(&key)
            .upload_id(&id)
            .part_number(number)
            .body(ByteStream::from(data.slice_ref(chunk)))
            .send()
            .await;
        match r {
            Ok(out) => parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build(),
            ),
            Err(_) => {
                abort_upload(&client, &key, &id).await;
                return Outcome::Refused;
            }
        }
    }
    let r = client
        .complete_multipart_upload()
        .bucket(BUCKET)
        .key(&key)
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await;
    match r {
        Ok(_) => Outcome::Acked,
        Err(e) => {
            let o = outcome_of(&e);
            if o == Outcome::Refused {
                abort_upload(&client, &key, &id).await;
            }
            o
        }
    }
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
    if put(shared.client.clone(), sneak.clone(), data).await != Outcome::Acked {
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
