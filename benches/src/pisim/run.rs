//! The pisim run: lab, limit checks, checkpoint, cluster, each client's scenarios, table.

use std::fmt::Write as _;
use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use super::clients::{ClientEnv, FILE_NAME};
use super::lab::Lab;
use super::{checks, ClientKind, NetProfile, PisimArgs, Scenario};
use crate::cluster::{self, Cluster, ClusterSpec, Layout};
use crate::procfs;
use crate::s3ops::{Bench, ChecksumMode};

/// The user's previous system on 100 Mbit/s for the 942 MB checkpoint (2 replicas,
/// SHA-256 per shard): store with 8 parallel sends, gather in parallel.
const OLD_STORE_S: f64 = 321.0;
const OLD_GATHER_S: f64 = 95.0;
const OLD_SIZE_MB: u64 = 942;

const BUCKET: &str = "pisim";

pub fn main(args: PisimArgs) -> ExitCode {
    // One thread: the namespace switch (setns) applies to the calling thread only, and
    // every thread or child made after it inherits the coordinator's namespace.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn-bench pisim: error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    // Dropping `run` on a signal drops its cluster (children stopped) and then its lab
    // (namespaces, mounts, loop devices, cgroups removed).
    let outcome = rt.block_on(async {
        // Signal handlers first: `run` blocks in its setup and limit checks (no await), and
        // a signal that arrives then must still reach this select at its next await.
        tokio::select! {
            biased;
            () = cairn_common::daemon::shutdown_signal() => Err(anyhow!("interrupted (SIGINT or SIGTERM); lab removed")),
            r = run(&args) => r,
        }
    });
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("cairn-bench pisim: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `K+M` as numbers.
fn geometry(ec: &str) -> Result<(u64, u64)> {
    let (k, m) = ec.split_once('+').context("--ec must look like 3+1")?;
    let k: u64 = k.trim().parse().context("--ec: K")?;
    let m: u64 = m.trim().parse().context("--ec: M")?;
    if k == 0 {
        bail!("--ec: K must be at least 1");
    }
    Ok((k, m))
}

fn bin_dir(args: &PisimArgs) -> Result<PathBuf> {
    if let Some(d) = &args.bin_dir {
        return Ok(d.clone());
    }
    let exe = std::env::current_exe().context("locating the cairn-bench binary")?;
    Ok(exe.parent().map(PathBuf::from).unwrap_or_default())
}

/// What the wire and the cards allow.
struct Bounds {
    save: f64,
    restore: f64,
    restore_degraded: f64,
}

impl Bounds {
    /// Save: the coordinator sends (K+M)/K of the checkpoint over its link, and each of the
    /// N cards writes its share of that. Restore: the coordinator takes in the checkpoint
    /// (K shards of every stripe) and the nodes up read it from their cards.
    fn new(args: &PisimArgs, k: u64, m: u64) -> Self {
        let size = (args.size * 1_000_000) as f64;
        let link = args.net.payload_bytes_per_s();
        let (w, r) = args.disk.rates();
        let n = args.nodes as f64;
        let stored = size * (k + m) as f64 / k as f64;
        let save = (stored / link).max(stored / n / w as f64);
        let restore_with = |up: f64| (size / link).max(size / up.max(1.0) / r as f64);
        Self {
            save,
            restore: restore_with(n),
            restore_degraded: restore_with(n - 1.0),
        }
    }
}

/// Server cost of one timed phase.
#[derive(Default)]
struct Cost {
    gateway_cpu: f64,
    nodes_cpu: f64,
    gateway_rss: u64,
    node_rss: u64,
}

/// One line of the table.
struct Row {
    client: ClientKind,
    scenario: Scenario,
    phase: &'static str,
    seconds: f64,
    bound: f64,
    cost: Cost,
    verified: Option<bool>,
}

async fn run(args: &PisimArgs) -> Result<bool> {
    let (k, m) = geometry(&args.ec)?;
    if args.size == 0 {
        bail!("--size must be at least 1 (MB)");
    }
    let bins = bin_dir(args)?;
    let cairn = cluster::find_bin(&bins, "cairn")?;
    cluster::find_bin(&bins, "cairn-node")?;
    cluster::find_bin(&bins, "cairn-gateway")?;
    let size = args.size * 1_000_000;
    // Each card holds its share of every client's save, plus the gateway's reserve
    // (1 GiB or 5%) and room for ext4.
    let per_node = size * (k + m) / k / args.nodes.max(1) as u64;
    let card = (per_node * args.clients.len() as u64 * 11 / 10 + (3 << 30)).max(4 << 30);

    eprintln!(
        "pisim: {} nodes (EC {}), net {}, disk {:?}, node CPU {} cores, {} MB checkpoint",
        args.nodes,
        args.ec,
        args.net.tc_rate(),
        args.disk,
        args.node_cpu,
        args.size
    );
    eprintln!("building the lab in {} ...", args.work_dir.display());
    let lab = Lab::build(
        &args.work_dir,
        &args.card_dir,
        args.nodes,
        args.net,
        args.disk,
        args.node_cpu,
        card,
    )?;
    lab.enter_coordinator()?;
    eprintln!("measuring every limit ...");
    let checks = checks::run_all(&lab, args.node_cpu, args.check_seconds.max(0.5))?;
    let check_table = checks::table(&checks);
    eprint!("{check_table}");
    if args.node_cpu > 0.0 {
        eprintln!(
            "  note: this machine has {} cores for all {} nodes and the gateway together",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            args.nodes
        );
    }
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.what.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "limit checks failed (figures would be wrong): {}",
            failed.join(", ")
        );
    }

    let ckpt_dir = lab.work.join("checkpoint");
    std::fs::create_dir_all(&ckpt_dir).context("creating the checkpoint directory")?;
    let src = ckpt_dir.join(FILE_NAME);
    eprintln!("writing a {} MB checkpoint ...", args.size);
    let digest = write_checkpoint(&src, size)?;

    let layout = Layout {
        gateway: Some(lab.gateway_addr()),
        nodes: lab.nodes.iter().map(|n| n.addr).collect(),
        node_data: lab.nodes.iter().map(|n| n.data.clone()).collect(),
        node_prefix: lab.nodes.iter().map(|n| n.prefix(true)).collect(),
    };
    let spec = ClusterSpec {
        bin_dir: bins,
        work_dir: lab.work.join("cluster"),
        nodes: args.nodes,
        ec: args.ec.clone(),
        ready_timeout: Duration::from_secs(args.ready_timeout),
        node_extra: Vec::new(),
        gateway_extra: cluster::Extra::default(),
        layout: Some(layout),
    };
    eprintln!("starting the cluster ...");
    let mut cluster = Cluster::start(&spec).await?;
    Bench::new(
        &cluster.endpoint(),
        &cluster.access_key,
        &cluster.secret_key,
        BUCKET,
        ChecksumMode::WhenRequired,
    )
    .create_bucket()
    .await?;
    let env = ClientEnv {
        endpoint: cluster.endpoint(),
        access_key: cluster.access_key.clone(),
        secret_key: cluster.secret_key.clone(),
        bucket: BUCKET.into(),
        cairn,
        dir: lab.work.join("clients"),
    };
    env.prepare()?;

    let bounds = Bounds::new(args, k, m);
    let mut rows = Vec::new();
    for &client in &args.clients {
        run_client(
            args,
            &lab,
            &mut cluster,
            &env,
            client,
            &src,
            &digest,
            &bounds,
            &mut rows,
        )
        .await?;
    }
    let table = report(args, &bounds, &rows);
    let verified = rows.iter().all(|r| r.verified != Some(false));
    if args.json {
        eprint!("{table}");
        println!("{}", json(args, &bounds, &checks, &rows, verified));
    } else {
        print!("{table}");
    }
    // Stop the servers before the lab (their cards) goes.
    drop(cluster);
    drop(lab);
    Ok(verified)
}

/// One client: save; a clean restore; a restore with the last node killed (restarted
/// afterwards), as `--scenarios` asks. Restored bytes are checked against the checkpoint.
#[allow(clippy::too_many_arguments)]
async fn run_client(
    args: &PisimArgs,
    lab: &Lab,
    cluster: &mut Cluster,
    env: &ClientEnv,
    client: ClientKind,
    src: &Path,
    digest: &str,
    bounds: &Bounds,
    rows: &mut Vec<Row>,
) -> Result<()> {
    eprintln!("{}: save ...", client.name());
    let (seconds, cost) = measured(cluster, env.save(client, src)).await?;
    rows.push(Row {
        client,
        scenario: Scenario::Clean,
        phase: "save",
        seconds,
        bound: bounds.save,
        cost,
        verified: None,
    });
    let restores = lab.work.join("restored");
    for &scenario in &args.scenarios {
        let (tag, bound) = match scenario {
            Scenario::Clean => ("clean", bounds.restore),
            Scenario::NodeDown => ("node-down", bounds.restore_degraded),
        };
        let down = args.nodes - 1;
        if scenario == Scenario::NodeDown {
            eprintln!("{}: killing node{down}", client.name());
            cluster.nodes[down].kill()?;
        }
        eprintln!("{}: restore ({tag}) ...", client.name());
        let dest = restores.join(format!("{}-{tag}", client.name()));
        let ((seconds, file), cost) = measured(cluster, env.restore(client, &dest, tag)).await?;
        let ok = sha256_file(&file)? == digest;
        if !ok {
            eprintln!(
                "{}: restored bytes ({tag}) differ from the checkpoint",
                client.name()
            );
        }
        std::fs::remove_dir_all(&dest).with_context(|| format!("removing {}", dest.display()))?;
        rows.push(Row {
            client,
            scenario,
            phase: "restore",
            seconds,
            bound,
            cost,
            verified: Some(ok),
        });
        if scenario == Scenario::NodeDown {
            let t = Duration::from_secs(args.ready_timeout);
            cluster.nodes[down].restart(t).await?;
            cluster.wait_nodes_up(t).await?;
        }
        cluster.check_alive()?;
    }
    Ok(())
}

/// Runs `op` (a client) and measures the servers around it: CPU seconds, and peak RSS
/// within the phase (each server's high-water mark is reset first). A node that is not
/// running is left out.
async fn measured<T>(
    cluster: &mut Cluster,
    op: impl Future<Output = Result<T>>,
) -> Result<(T, Cost)> {
    let mut pids = vec![cluster.gateway.pid()];
    for n in &mut cluster.nodes {
        if n.is_running() {
            pids.push(n.pid());
        }
    }
    for p in &pids {
        // "5" resets the peak RSS (VmHWM) to the current RSS.
        let _ = std::fs::write(format!("/proc/{p}/clear_refs"), "5");
    }
    let before: Vec<f64> = pids
        .iter()
        .map(|p| procfs::cpu_seconds(p).unwrap_or(0.0))
        .collect();
    let value = match op.await {
        Ok(v) => v,
        Err(e) => {
            cluster.gateway.check_alive()?;
            return Err(e);
        }
    };
    let after: Vec<f64> = pids
        .iter()
        .map(|p| procfs::cpu_seconds(p).unwrap_or(0.0))
        .collect();
    let rss: Vec<u64> = pids
        .iter()
        .map(|p| procfs::peak_rss_bytes(p).unwrap_or(0))
        .collect();
    let cpu: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    Ok((
        value,
        Cost {
            gateway_cpu: cpu[0],
            nodes_cpu: cpu[1..].iter().sum(),
            gateway_rss: rss[0],
            node_rss: rss[1..].iter().copied().max().unwrap_or(0),
        },
    ))
}

/// A safetensors file of `size` bytes (`cairn push` checks the format): the 8-byte header
/// length, a JSON header naming one U8 tensor, then pseudo-random bytes. Its SHA-256.
fn write_checkpoint(path: &Path, size: u64) -> Result<String> {
    use std::io::{Seek, SeekFrom, Write};
    crate::source::generate(path, size, 8 << 20, rand::random::<u64>())?;
    // The header holds the data length, which depends on the header's own length.
    let mut header = String::new();
    for _ in 0..3 {
        let data = size.saturating_sub(8 + header.len() as u64);
        header = format!(
            r#"{{"__metadata__":{{"format":"pt"}},"weight":{{"dtype":"U8","shape":[{data}],"data_offsets":[0,{data}]}}}}"#
        );
        // Padded with spaces to a multiple of 8, as writers align the data.
        while !header.len().is_multiple_of(8) {
            header.push(' ');
        }
    }
    if 8 + header.len() as u64 > size {
        bail!("--size is too small for a safetensors header");
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.seek(SeekFrom::Start(0))
        .and_then(|_| f.write_all(&(header.len() as u64).to_le_bytes()))
        .and_then(|_| f.write_all(header.as_bytes()))
        .with_context(|| format!("writing the header of {}", path.display()))?;
    drop(f);
    sha256_file(path)
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn scenario_name(s: Scenario) -> &'static str {
    match s {
        Scenario::Clean => "clean",
        Scenario::NodeDown => "node down",
    }
}

fn report(args: &PisimArgs, bounds: &Bounds, rows: &[Row]) -> String {
    let size_mb = args.size as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\ncairn-bench pisim: {} MB checkpoint, {} nodes, EC {}, net {}, disk {:?}, node CPU {} cores",
        args.size,
        args.nodes,
        args.ec,
        args.net.tc_rate(),
        args.disk,
        args.node_cpu
    );
    let _ = writeln!(
        s,
        "  bound: save {:.1} s, restore {:.1} s, restore with a node down {:.1} s",
        bounds.save, bounds.restore, bounds.restore_degraded
    );
    let _ = writeln!(
        s,
        "  (boto3: seconds of the upload_file/download_file call; CLIs: the process's wall time)\n"
    );
    let _ = writeln!(
        s,
        "  client   scenario   phase     seconds    MB/s   bound s  ratio | gw CPU-s  nodes CPU-s  gw peak MB  node peak MB | bytes"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "  {:<8} {:<10} {:<8} {:>8.1} {:>7.1} {:>9.1} {:>6.2} | {:>8.2} {:>12.2} {:>11.1} {:>13.1} | {}",
            r.client.name(),
            scenario_name(r.scenario),
            r.phase,
            r.seconds,
            size_mb / r.seconds.max(1e-9),
            r.bound,
            r.seconds / r.bound,
            r.cost.gateway_cpu,
            r.cost.nodes_cpu,
            r.cost.gateway_rss as f64 / 1e6,
            r.cost.node_rss as f64 / 1e6,
            match r.verified {
                None => "-",
                Some(true) => "ok",
                Some(false) => "DIFFER",
            }
        );
    }
    let old_applies = args.net == NetProfile::Mbit100 && args.size == OLD_SIZE_MB;
    let _ = writeln!(
        s,
        "\n  old system (Python, 2 replicas, 100 Mbit/s, {OLD_SIZE_MB} MB): store {OLD_STORE_S:.0} s, gather {OLD_GATHER_S:.0} s{}",
        if old_applies {
            format!(
                " = {:.2}x and {:.2}x the bound above",
                OLD_STORE_S / bounds.save,
                OLD_GATHER_S / bounds.restore
            )
        } else {
            " (measured at 100mbit with 942 MB; not comparable to this run)".into()
        }
    );
    s
}

fn json(
    args: &PisimArgs,
    bounds: &Bounds,
    checks: &[checks::Check],
    rows: &[Row],
    verified: bool,
) -> String {
    serde_json::json!({
        "size_mb": args.size,
        "nodes": args.nodes,
        "ec": args.ec,
        "net": args.net.tc_rate(),
        "disk": format!("{:?}", args.disk).to_lowercase(),
        "node_cpu": args.node_cpu,
        "bounds_s": {
            "save": bounds.save,
            "restore": bounds.restore,
            "restore_node_down": bounds.restore_degraded,
        },
        "checks": checks.iter().map(|c| serde_json::json!({
            "what": c.what, "expected": c.expected, "measured": c.measured,
            "unit": c.unit, "ok": c.ok,
        })).collect::<Vec<_>>(),
        "runs": rows.iter().map(|r| serde_json::json!({
            "client": r.client.name(),
            "scenario": scenario_name(r.scenario),
            "phase": r.phase,
            "seconds": r.seconds,
            "bound_s": r.bound,
            "ratio": r.seconds / r.bound,
            "gateway_cpu_s": r.cost.gateway_cpu,
            "nodes_cpu_s": r.cost.nodes_cpu,
            "gateway_peak_rss_bytes": r.cost.gateway_rss,
            "node_peak_rss_bytes": r.cost.node_rss,
            "verified": r.verified,
        })).collect::<Vec<_>>(),
        "verified": verified,
    })
    .to_string()
}
