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

use cairn_benches::{cluster, procfs, s3ops, source};

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;

use cluster::{Cluster, ClusterSpec};
use s3ops::{Bench, ChecksumMode, SentHeaders};

const MIB: u64 = 1 << 20;
const GIB: f64 = (1u64 << 30) as f64;
/// Issue #2 targets (this 2-core box).
const TARGET_PUT_CPU_PER_GIB: f64 = 5.0;
const TARGET_GET_CPU_PER_GIB: f64 = 3.0;
const TARGET_GATEWAY_RSS: u64 = 128_000_000;
const TARGET_NODE_RSS: u64 = 64_000_000;

/// Command line.
#[derive(Parser, Debug)]
#[command(name = "cairn-bench", version, about)]
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

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // Dropping `run` (on a signal) drops its Cluster, which stops the children, and its
    // TempDir. `run` is polled on this (the main) thread, which spawns the children, so
    // their PR_SET_PDEATHSIG (Linux) stays tied to a thread that lives as long as the bench.
    let outcome = tokio::select! {
        r = run(&args) => r,
        s = signal() => Err(anyhow!("interrupted by {s}; cluster stopped")),
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

async fn signal() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
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
    let size = args.size_mib * MIB;
    let part_size = args.part_size_mib * MIB;
    let bins = bin_dir(args)?;
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

    let src = work.path().join("source.bin");
    eprintln!("generating {} MiB of pseudo-random data...", args.size_mib);
    let t = Instant::now();
    let digests = {
        let (src, seed) = (src.clone(), rand::random::<u64>());
        tokio::task::spawn_blocking(move || source::generate(&src, size, part_size, seed)).await??
    };
    eprintln!("  done in {:.1} s", t.elapsed().as_secs_f64());

    eprintln!(
        "starting {} nodes + gateway (EC {}) from {}",
        args.nodes,
        args.ec,
        bins.display()
    );
    let spec = ClusterSpec {
        bin_dir: bins,
        work_dir: work.path().to_path_buf(),
        nodes: args.nodes,
        ec: args.ec.clone(),
        ready_timeout: Duration::from_secs(args.ready_timeout),
        node_extra: Vec::new(),
        gateway_extra: cluster::Extra::default(),
    };
    // Declared after `work`, so it is dropped (children stopped) before the dir is removed.
    let mut cluster = Cluster::start(&spec).await?;
    eprintln!("  gateway {} ready", cluster.endpoint());

    // Background cost of an idle cluster, for reference.
    let idle_a = cpu_snap(&cluster)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_b = cpu_snap(&cluster)?;
    let idle = Phase::between(0, Duration::from_secs(2), &idle_a, &idle_b);
    let idle_server_pct = (idle.gateway_cpu + idle.nodes_cpu()) / 2.0 * 100.0;

    let s3 = Bench::new(
        &cluster.endpoint(),
        &cluster.access_key,
        &cluster.secret_key,
        "cairn-bench",
        args.checksum,
    );
    s3.create_bucket().await?;
    let key = "bench/object.bin";
    let mut problems = Vec::new();

    let what = if args.multipart {
        format!(
            "multipart PUT ({} MiB parts, {} in flight)",
            args.part_size_mib, args.concurrency
        )
    } else {
        "PUT".to_string()
    };
    eprintln!("{what} of {} MiB...", args.size_mib);
    let a = cpu_snap(&cluster)?;
    let t = Instant::now();
    let put_res = if args.multipart {
        s3.put_multipart(key, &src, size, part_size, args.concurrency)
            .await
    } else {
        s3.put(key, &src).await
    };
    let put_wall = t.elapsed();
    let b = cpu_snap(&cluster)?;
    let put_etag = match put_res {
        Ok(e) => e,
        Err(e) => {
            cluster.check_alive()?;
            return Err(e);
        }
    };
    let put = Phase::between(size, put_wall, &a, &b);
    let sent = s3.sent_headers();
    cluster.check_alive()?;
    let rss_put = rss_snap(&cluster)?;
    let want_etag = if args.multipart {
        &digests.multipart_etag
    } else {
        &digests.md5
    };
    if &put_etag != want_etag {
        problems.push(format!("PUT ETag {put_etag:?}, expected {want_etag:?}"));
    }

    eprintln!("GET...");
    let a = cpu_snap(&cluster)?;
    let t = Instant::now();
    let got = s3.get(key).await;
    let get_wall = t.elapsed();
    let b = cpu_snap(&cluster)?;
    let (got_len, got_sha, get_etag) = match got {
        Ok(g) => g,
        Err(e) => {
            cluster.check_alive()?;
            return Err(e);
        }
    };
    let get = Phase::between(got_len, get_wall, &a, &b);
    cluster.check_alive()?;
    let rss_end = rss_snap(&cluster)?;
    if got_len != size {
        problems.push(format!("GET returned {got_len} bytes, expected {size}"));
    }
    if got_sha != digests.sha256 {
        problems.push(format!(
            "GET body SHA-256 {got_sha}, expected {}",
            digests.sha256
        ));
    }
    if get_etag != *want_etag {
        problems.push(format!("GET ETag {get_etag:?}, expected {want_etag:?}"));
    }

    let r = Report {
        args,
        what: &what,
        sent: &sent,
        put: &put,
        get: &get,
        idle_server_pct,
        rss_put: &rss_put,
        rss_end: &rss_end,
        problems: &problems,
    };
    let table = r.table();
    if args.json {
        eprint!("{table}");
        println!("{}", r.json());
    } else {
        print!("{table}");
    }
    Ok(problems.is_empty())
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
    fn table(&self) -> String {
        use std::fmt::Write as _;
        let a = self.args;
        let mut s = String::new();
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
        s
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
