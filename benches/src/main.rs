//! `cairn-bench`: end-to-end throughput and server cost of a Cairn cluster on loopback.
//!
//! Starts 4 `cairn-node` processes and a `cairn-gateway` (EC 3+1) on free 127.0.0.1 ports,
//! PUTs a 1 GiB pseudo-random object with aws-sdk-s3 (single PUT, or `--multipart` with 8
//! concurrent parts), GETs it back and checks it, and prints: throughput (MiB/s, wall
//! clock), server CPU-seconds per GiB (utime + stime of the gateway and all nodes from
//! `/proc`, measured around each phase) and every server's peak RSS (`VmHWM`; on macOS both
//! come from `proc_pid_rusage`, the peak being the physical footprint), next to the
//! targets of issue #2. `--json` adds a one-line JSON summary on stdout (the table then
//! goes to stderr). Exit status: 0 ok, 1 data did not verify, 2 error.
//!
//! `cairn-bench pisim` is a separate bench: checkpoint save and restore on a simulated
//! home lab (Linux only; see `cairn_benches::pisim`).

use cairn_benches::{cluster, procfs, s3ops, source};

use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};

use cluster::{Cluster, ClusterSpec};
use s3ops::{Bench, ChecksumMode, SentHeaders};
use source::SourceDigests;

const MIB: u64 = 1 << 20;
const GIB: f64 = (1u64 << 30) as f64;
/// Issue #2 targets (this 2-core box).
const TARGET_PUT_CPU_PER_GIB: f64 = 5.0;
const TARGET_GET_CPU_PER_GIB: f64 = 3.0;
const TARGET_GATEWAY_RSS: u64 = 128_000_000;
const TARGET_NODE_RSS: u64 = 64_000_000;

/// Command line: the loopback bench (no subcommand) or `pisim`.
#[derive(Parser, Debug)]
#[command(
    name = "cairn-bench",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    args: Args,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Checkpoint save/restore on a simulated home lab (network namespaces, tc, CPU
    /// quotas, throttled loop-device cards), against the physical bound. Linux, root.
    Pisim(cairn_benches::pisim::PisimArgs),
}

/// Options of the loopback bench.
#[derive(clap::Args, Debug)]
struct Args {
    /// Object size in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Request checksums: the SDK default (CRC32, aws-chunked) or only when required.
    #[arg(long, value_enum, default_value_t = ChecksumMode::WhenSupported)]
    checksum: ChecksumMode,
    /// Upload with CreateMultipartUpload + concurrent UploadPart + Complete.
    #[arg(long)]
    multipart: bool,
    /// Multipart part size in MiB.
    #[arg(long, default_value_t = 64)]
    part_size_mib: u64,
    /// Multipart parts in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Parent directory of the bench's temp dir (source file, node data, catalog, logs).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Directory with cairn-node and cairn-gateway (default: next to this binary).
    #[arg(long, env = "CAIRN_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Storage nodes to start.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Erasure geometry K+M.
    #[arg(long, default_value = "3+1")]
    ec: String,
    /// Seconds each process may take to become healthy.
    #[arg(long, default_value_t = 30)]
    ready_timeout: u64,
    /// Print a one-line JSON summary on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// Keep the temp dir (data, logs) instead of deleting it.
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Cmd::Pisim(a)) = cli.cmd {
        return cairn_benches::pisim::main(a);
    }
    match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(loopback_main(cli.args)),
        Err(e) => {
            eprintln!("cairn-bench: error: starting the runtime: {e}");
            ExitCode::from(2)
        }
    }
}

async fn loopback_main(args: Args) -> ExitCode {
    // Dropping `run` (on a signal) drops its Cluster, which stops the children, and its
    // TempDir. `run` is polled on this (the main) thread, which spawns the children, so
    // their PR_SET_PDEATHSIG (Linux) stays tied to a thread that lives as long as the bench.
    let outcome = tokio::select! {
        r = run(&args) => r,
        () = cairn_common::daemon::shutdown_signal() => Err(anyhow!("interrupted (SIGINT or SIGTERM); cluster stopped")),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("cairn-bench: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// CPU seconds so far of each server process and of the bench itself.
struct CpuSnap {
    gateway: f64,
    nodes: Vec<f64>,
    client: f64,
}

fn cpu_snap(c: &Cluster) -> Result<CpuSnap> {
    Ok(CpuSnap {
        gateway: procfs::cpu_seconds(&c.gateway.pid())?,
        nodes: c
            .nodes
            .iter()
            .map(|n| procfs::cpu_seconds(&n.pid()))
            .collect::<Result<_>>()?,
        client: procfs::cpu_seconds("self")?,
    })
}

/// Peak RSS of the gateway and of each node.
struct RssSnap {
    gateway: u64,
    nodes: Vec<u64>,
}

fn rss_snap(c: &Cluster) -> Result<RssSnap> {
    Ok(RssSnap {
        gateway: procfs::peak_rss_bytes(&c.gateway.pid())?,
        nodes: c
            .nodes
            .iter()
            .map(|n| procfs::peak_rss_bytes(&n.pid()))
            .collect::<Result<_>>()?,
    })
}

/// Cost of one timed phase.
struct Phase {
    bytes: u64,
    wall: f64,
    gateway_cpu: f64,
    node_cpu: Vec<f64>,
    client_cpu: f64,
}

impl Phase {
    fn between(bytes: u64, wall: Duration, a: &CpuSnap, b: &CpuSnap) -> Self {
        Self {
            bytes,
            wall: wall.as_secs_f64(),
            gateway_cpu: b.gateway - a.gateway,
            node_cpu: b.nodes.iter().zip(&a.nodes).map(|(y, x)| y - x).collect(),
            client_cpu: b.client - a.client,
        }
    }
    fn gib(&self) -> f64 {
        (self.bytes as f64 / GIB).max(f64::MIN_POSITIVE)
    }
    fn mib_s(&self) -> f64 {
        self.bytes as f64 / MIB as f64 / self.wall.max(1e-9)
    }
    fn nodes_cpu(&self) -> f64 {
        self.node_cpu.iter().sum()
    }
    fn server_per_gib(&self) -> f64 {
        (self.gateway_cpu + self.nodes_cpu()) / self.gib()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "bytes": self.bytes,
            "wall_s": round3(self.wall),
            "mib_s": round3(self.mib_s()),
            "server_cpu_s_per_gib": round3(self.server_per_gib()),
            "gateway_cpu_s_per_gib": round3(self.gateway_cpu / self.gib()),
            "nodes_cpu_s_per_gib": round3(self.nodes_cpu() / self.gib()),
            "client_cpu_s_per_gib": round3(self.client_cpu / self.gib()),
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn bin_dir(args: &Args) -> Result<PathBuf> {
    if let Some(d) = &args.bin_dir {
        return Ok(d.clone());
    }
    let exe = std::env::current_exe().context("locating the cairn-bench binary")?;
    let here = exe.parent().map(PathBuf::from).unwrap_or_default();
    if here.join("cairn-node").is_file() {
        return Ok(here);
    }
    Ok(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release"))
}

/// The whole bench; `Ok(false)` when the data did not verify.
async fn run(args: &Args) -> Result<bool> {
    if args.size_mib == 0 || args.part_size_mib == 0 {
        bail!("--size-mib and --part-size-mib must be at least 1");
    }
    let bins = bin_dir(args)?;
    let work = work_dir(args)?;
    let source = Source::generate(args, work.path()).await?;
    // Declared after `work` (as is `session`, which takes it over), so it is dropped
    // (children stopped) before the dir is removed.
    let cluster = start_cluster(args, bins, work.path()).await?;
    let idle_server_pct = idle_server_pct(&cluster).await?;
    let mut session = Session::open(args, source, cluster).await?;
    let what = upload_kind(args);
    let put = session.put(&what).await?;
    let get = session.get().await?;
    Report {
        args,
        what: &what,
        sent: &put.sent,
        put: &put.phase,
        get: &get.phase,
        idle_server_pct,
        rss_put: &put.rss,
        rss_end: &get.rss,
        problems: &session.problems,
    }
    .print();
    Ok(session.problems.is_empty())
}

/// The bench's temp dir (source file, node data, catalog, logs), in `--data-dir` or the
/// system's temp dir; kept with `--keep`.
fn work_dir(args: &Args) -> Result<tempfile::TempDir> {
    let base = match &args.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let mut work = tempfile::Builder::new()
        .prefix("cairn-bench-")
        .tempdir_in(&base)
        .with_context(|| format!("creating a temp dir in {}", base.display()))?;
    if args.keep {
        work.disable_cleanup(true);
        eprintln!("keeping {}", work.path().display());
    }
    Ok(work)
}

/// The object uploaded: a file of pseudo-random bytes, and its digests.
struct Source {
    path: PathBuf,
    size: u64,
    part_size: u64,
    digests: SourceDigests,
}

impl Source {
    /// Writes `--size-mib` of pseudo-random bytes to `work/source.bin`.
    async fn generate(args: &Args, work: &Path) -> Result<Self> {
        let (size, part_size) = (args.size_mib * MIB, args.part_size_mib * MIB);
        let path = work.join("source.bin");
        eprintln!("generating {} MiB of pseudo-random data...", args.size_mib);
        let t = Instant::now();
        let digests = {
            let (path, seed) = (path.clone(), rand::random::<u64>());
            tokio::task::spawn_blocking(move || source::generate(&path, size, part_size, seed))
                .await??
        };
        eprintln!("  done in {:.1} s", t.elapsed().as_secs_f64());
        Ok(Self {
            path,
            size,
            part_size,
            digests,
        })
    }

    /// The ETag S3 gives the object: of a single PUT or of a multipart upload.
    fn etag(&self, multipart: bool) -> &str {
        if multipart {
            &self.digests.multipart_etag
        } else {
            &self.digests.md5
        }
    }
}

async fn start_cluster(args: &Args, bins: PathBuf, work: &Path) -> Result<Cluster> {
    eprintln!(
        "starting {} nodes + gateway (EC {}) from {}",
        args.nodes,
        args.ec,
        bins.display()
    );
    let spec = ClusterSpec {
        bin_dir: bins,
        work_dir: work.to_path_buf(),
        nodes: args.nodes,
        ec: args.ec.clone(),
        ready_timeout: Duration::from_secs(args.ready_timeout),
        node_extra: Vec::new(),
        gateway_extra: cluster::Extra::default(),
        layout: None,
    };
    let cluster = Cluster::start(&spec).await?;
    eprintln!("  gateway {} ready", cluster.endpoint());
    Ok(cluster)
}

/// Background cost of an idle cluster, for reference: the servers' CPU over two seconds,
/// in percent of one core.
async fn idle_server_pct(cluster: &Cluster) -> Result<f64> {
    let a = cpu_snap(cluster)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b = cpu_snap(cluster)?;
    let idle = Phase::between(0, Duration::from_secs(2), &a, &b);
    Ok((idle.gateway_cpu + idle.nodes_cpu()) / 2.0 * 100.0)
}

/// How the object is uploaded, for the report.
fn upload_kind(args: &Args) -> String {
    if args.multipart {
        format!(
            "multipart PUT ({} MiB parts, {} in flight)",
            args.part_size_mib, args.concurrency
        )
    } else {
        "PUT".to_string()
    }
}

/// The key of the object.
const KEY: &str = "bench/object.bin";

/// The cluster with its bucket, the object to send, and what did not verify so far.
struct Session<'a> {
    args: &'a Args,
    source: Source,
    cluster: Cluster,
    s3: Bench,
    problems: Vec<String>,
}

/// What a timed phase measured.
struct Measured {
    phase: Phase,
    /// Every server's peak RSS at the end of the phase.
    rss: RssSnap,
}

/// The upload phase: what it measured and what the client sent.
struct Upload {
    phase: Phase,
    rss: RssSnap,
    sent: SentHeaders,
}

impl<'a> Session<'a> {
    /// Creates the bench's bucket on `cluster`.
    async fn open(args: &'a Args, source: Source, cluster: Cluster) -> Result<Self> {
        let s3 = Bench::new(
            &cluster.endpoint(),
            &cluster.access_key,
            &cluster.secret_key,
            "cairn-bench",
            args.checksum,
        );
        s3.create_bucket().await?;
        Ok(Self {
            args,
            source,
            cluster,
            s3,
            problems: Vec::new(),
        })
    }

    /// Uploads the object (`what` says how) and checks the ETag.
    async fn put(&mut self, what: &str) -> Result<Upload> {
        let (args, src) = (self.args, &self.source);
        eprintln!("{what} of {} MiB...", args.size_mib);
        let s3 = &self.s3;
        let put = timed(&mut self.cluster, async {
            if args.multipart {
                s3.put_multipart(KEY, &src.path, src.size, src.part_size, args.concurrency)
                    .await
            } else {
                s3.put(KEY, &src.path).await
            }
        })
        .await?;
        let (phase, etag) = (put.phase(src.size), put.value);
        let sent = s3.sent_headers();
        let rss = end_phase(&mut self.cluster)?;
        let want = src.etag(args.multipart);
        if etag != want {
            self.problems
                .push(format!("PUT ETag {etag:?}, expected {want:?}"));
        }
        Ok(Upload { phase, rss, sent })
    }

    /// Downloads the object and checks its length, SHA-256 and ETag.
    async fn get(&mut self) -> Result<Measured> {
        eprintln!("GET...");
        let s3 = &self.s3;
        let get = timed(&mut self.cluster, s3.get(KEY)).await?;
        let phase = get.phase(get.value.0);
        let (got_len, got_sha, etag) = get.value;
        let rss = end_phase(&mut self.cluster)?;
        let (size, want_sha) = (self.source.size, &self.source.digests.sha256);
        let want_etag = self.source.etag(self.args.multipart);
        if got_len != size {
            self.problems
                .push(format!("GET returned {got_len} bytes, expected {size}"));
        }
        if got_sha != *want_sha {
            self.problems
                .push(format!("GET body SHA-256 {got_sha}, expected {want_sha}"));
        }
        if etag != want_etag {
            self.problems
                .push(format!("GET ETag {etag:?}, expected {want_etag:?}"));
        }
        Ok(Measured { phase, rss })
    }
}

/// After a phase: every process must still be running; their peak RSS so far.
fn end_phase(cluster: &mut Cluster) -> Result<RssSnap> {
    cluster.check_alive()?;
    rss_snap(cluster)
}

/// A request's value, with the wall time and the cluster's CPU snapshots around it.
struct Timed<T> {
    value: T,
    wall: Duration,
    before: CpuSnap,
    after: CpuSnap,
}

impl<T> Timed<T> {
    /// The cost of the request, which moved `bytes`.
    fn phase(&self, bytes: u64) -> Phase {
        Phase::between(bytes, self.wall, &self.before, &self.after)
    }
}

/// Runs `op` between two CPU snapshots of the cluster. When it fails, a server that died
/// is the error reported (with its log).
async fn timed<T>(cluster: &mut Cluster, op: impl Future<Output = Result<T>>) -> Result<Timed<T>> {
    let a = cpu_snap(cluster)?;
    let t = Instant::now();
    let res = op.await;
    let wall = t.elapsed();
    let b = cpu_snap(cluster)?;
    match res {
        Ok(value) => Ok(Timed {
            value,
            wall,
            before: a,
            after: b,
        }),
        Err(e) => {
            cluster.check_alive()?;
            Err(e)
        }
    }
}

/// Everything printed at the end.
struct Report<'a> {
    args: &'a Args,
    what: &'a str,
    sent: &'a SentHeaders,
    put: &'a Phase,
    get: &'a Phase,
    idle_server_pct: f64,
    rss_put: &'a RssSnap,
    rss_end: &'a RssSnap,
    problems: &'a [String],
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}

impl Report<'_> {
    /// The table (on stderr with `--json`, which puts a JSON line on stdout).
    fn print(&self) {
        let table = self.table();
        if self.args.json {
            eprint!("{table}");
            println!("{}", self.json());
        } else {
            print!("{table}");
        }
    }

    fn table(&self) -> String {
        let mut s = String::new();
        self.write_setup(&mut s);
        self.write_phases(&mut s);
        self.write_rss(&mut s);
        self.write_verdict(&mut s);
        s
    }

    /// What ran: object, cluster, upload kind, the headers the client sent, idle cost.
    fn write_setup(&self, s: &mut String) {
        let a = self.args;
        let _ = writeln!(
            s,
            "\ncairn-bench: {} MiB object, {} nodes, EC {}, {}, checksum {:?}",
            a.size_mib, a.nodes, a.ec, self.what, a.checksum
        );
        let _ = writeln!(
            s,
            "  upload sent: x-amz-content-sha256={} content-encoding={} x-amz-trailer={}",
            self.sent.content_sha256.as_deref().unwrap_or("-"),
            self.sent.content_encoding.as_deref().unwrap_or("-"),
            self.sent.trailer.as_deref().unwrap_or("-"),
        );
        let _ = writeln!(
            s,
            "  idle cluster CPU: {:.2}% of one core\n",
            self.idle_server_pct
        );
    }

    /// Throughput and CPU per GiB of each phase, against the targets.
    fn write_phases(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "  phase   wall s    MiB/s  | server CPU-s/GiB: gateway  nodes  total  target    | client CPU-s/GiB"
        );
        for (name, p, target) in [
            ("PUT", self.put, TARGET_PUT_CPU_PER_GIB),
            ("GET", self.get, TARGET_GET_CPU_PER_GIB),
        ] {
            let total = p.server_per_gib();
            let _ = writeln!(
                s,
                "  {name:<5} {:>7.2} {:>8.1}  |                   {:>6.2} {:>6.2} {:>6.2}  <= {target:<3} {:<6} | {:>6.2}",
                p.wall,
                p.mib_s(),
                p.gateway_cpu / p.gib(),
                p.nodes_cpu() / p.gib(),
                total,
                verdict(total <= target),
                p.client_cpu / p.gib(),
            );
        }
    }

    /// Every server's peak RSS after the PUT and at the end, against the targets.
    fn write_rss(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "\n  peak RSS (VmHWM, MB = 10^6 B)   after PUT    at end   target"
        );
        let gw_ok = self.rss_end.gateway < TARGET_GATEWAY_RSS;
        let _ = writeln!(
            s,
            "  {:<30} {:>9.1} {:>9.1}   < {:<4} {}",
            "gateway",
            mb(self.rss_put.gateway),
            mb(self.rss_end.gateway),
            TARGET_GATEWAY_RSS / 1_000_000,
            verdict(gw_ok),
        );
        for (i, (p, e)) in self
            .rss_put
            .nodes
            .iter()
            .zip(&self.rss_end.nodes)
            .enumerate()
        {
            let _ = writeln!(
                s,
                "  {:<30} {:>9.1} {:>9.1}   < {:<4} {}",
                format!("node{i}"),
                mb(*p),
                mb(*e),
                TARGET_NODE_RSS / 1_000_000,
                verdict(*e < TARGET_NODE_RSS),
            );
        }
    }

    /// Each node's CPU seconds per phase, and whether the data verified.
    fn write_verdict(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "\n  per-node CPU-s  PUT: {}   GET: {}",
            fmt_list(&self.put.node_cpu),
            fmt_list(&self.get.node_cpu)
        );
        if self.problems.is_empty() {
            let _ = writeln!(s, "  verify: OK (SHA-256 of GET body and ETags match)");
        } else {
            for p in self.problems {
                let _ = writeln!(s, "  verify: FAILED: {p}");
            }
        }
    }

    fn json(&self) -> String {
        let a = self.args;
        let v = serde_json::json!({
            "size_mib": a.size_mib,
            "nodes": a.nodes,
            "ec": a.ec,
            "mode": if a.multipart { "multipart" } else { "single" },
            "part_size_mib": a.multipart.then_some(a.part_size_mib),
            "concurrency": a.multipart.then_some(a.concurrency),
            "checksum": format!("{:?}", a.checksum),
            "x_amz_content_sha256": self.sent.content_sha256,
            "put": self.put.json(),
            "get": self.get.json(),
            "idle_server_cpu_pct": round3(self.idle_server_pct),
            "peak_rss_bytes": {
                "gateway": self.rss_end.gateway,
                "nodes": self.rss_end.nodes,
            },
            "peak_rss_after_put_bytes": {
                "gateway": self.rss_put.gateway,
                "nodes": self.rss_put.nodes,
            },
            "targets": {
                "put_cpu_s_per_gib": TARGET_PUT_CPU_PER_GIB,
                "get_cpu_s_per_gib": TARGET_GET_CPU_PER_GIB,
                "gateway_rss_bytes": TARGET_GATEWAY_RSS,
                "node_rss_bytes": TARGET_NODE_RSS,
            },
            "verified": self.problems.is_empty(),
            "problems": self.problems,
        });
        v.to_string()
    }
}

fn fmt_list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.2}"))
        .collect::<Vec<_>>()
        .join(" ")
}
