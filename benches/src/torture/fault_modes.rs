//! The fault modes of `--faults`: each on a fresh cluster, writing while the fault is on,
//! then reading everything back, waiting for full redundancy and reading again with each
//! node down.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cairn_benches::cluster::{self, Cluster, Extra};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use crate::args::{Args, Fault};
use crate::check::{verify, verify_with_node_down};
use crate::clients::{Mix, Writers};
use crate::corrupt::{corrupt_one, Corrupted};
use crate::model::{Findings, RoundStats, Shared};
use crate::redundancy::{node_view, repair_counts, wait_full_redundancy};
use crate::setup::{bin_dir, finish, start, work_dir};

/// Runs each `--faults` mode once on a fresh cluster and prints a report line per mode;
/// `Ok(false)` when a mode was not clean ([`FaultReport::clean`]).
pub async fn run(args: &Args) -> Result<bool> {
    if args.self_check {
        bail!("--self-check goes with the kill -9 rounds, not with --faults");
    }
    let modes = args.fault_modes();
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
        let r = run_mode(args, mode, rng.next_u64(), &work)
            .await
            .with_context(|| format!("fault mode {}", mode.name()))?;
        r.print_line();
        reports.push(r);
    }
    print_table(&reports);
    let ok = reports.iter().all(FaultReport::clean);
    finish(tmp, ok, args.keep)?;
    Ok(ok)
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
    /// Nothing lost or unreadable, no request hung, and full redundancy in time.
    fn clean(&self) -> bool {
        self.lost == 0
            && self.unreadable == 0
            && self.stats.hung == 0
            && self.redundancy_secs.is_some()
    }

    /// The line printed as soon as the mode is done.
    fn print_line(&self) {
        println!(
            "{}: acked {} ({} multipart), lost {}, unreadable {}, full redundancy after {}",
            self.mode.name(),
            self.stats.puts_acked,
            self.stats.multipart_acked,
            self.lost,
            self.unreadable,
            self.redundancy_secs
                .map_or_else(|| "NEVER (timed out)".to_string(), |s| format!("{s:.1} s"))
        );
    }
}

/// The closing table: a row per mode, then every mode's notes.
fn print_table(reports: &[FaultReport]) {
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
    for r in reports {
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
    for r in reports {
        for n in &r.notes {
            println!("  {}: {n}", r.mode.name());
        }
    }
}

/// One fault mode on a fresh cluster in `work`: write with the fault on, read everything
/// back, wait for full redundancy, read everything with each node down in turn.
async fn run_mode(args: &Args, mode: Fault, seed: u64, work: &Path) -> Result<FaultReport> {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut notes = Vec::new();
    let gateway = gateway_extra(args, &mut notes)?;
    let gateway_reserve = gateway.args.iter().any(|a| a == "--reserve-bytes");
    let victim = rng.random_range(0..args.nodes.max(1));
    let node_extra = node_extras(args, mode, victim, gateway_reserve, &mut notes)?;
    let (mut cluster, shared) = start(args, work, node_extra, gateway).await?;
    let multipart_percent = if mode == Fault::KillMidPart { 60 } else { 30 };
    let mix = Mix::faults(args, multipart_percent);
    let writers = Writers::spawn(args, &shared, &mut rng, mix);
    let mut injected = inject(args, mode, &mut cluster, &shared, &mut rng).await?;
    let stats = writers.stop().await?;
    if mode == Fault::Corrupt {
        injected.corrupt_more(&cluster, args.corrupt_shards, &mut rng, &mut notes)?;
    }
    if mode == Fault::KillMidPart {
        notes.push(format!(
            "{} nodes SIGKILLed, {} of them with a part in flight",
            injected.kills, injected.kills_mid_part
        ));
    }
    let recovery = recover(args, &mut cluster, &shared, &injected.corrupted).await?;
    victim_notes(&cluster, mode, victim, &mut notes).await;
    let ready = Duration::from_secs(args.ready_timeout);
    let degraded = verify_each_node_down(&mut cluster, &shared, ready).await?;
    cluster.check_alive()?;
    drop(cluster);
    let f = recovery.found;
    Ok(FaultReport {
        mode,
        stats,
        lost: f.bad() - f.unreadable + degraded.bad() - degraded.unreadable,
        unreadable: f.unreadable + degraded.unreadable,
        redundancy_secs: recovery.redundancy_secs,
        repaired: recovery.repaired,
        notes,
        secs: t0.elapsed().as_secs_f64(),
    })
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

/// Each node's options and environment for `mode`: the victim's capacity (disk-full) or
/// its failing writes (write-fail), every node's scrub interval (corrupt).
fn node_extras(
    args: &Args,
    mode: Fault,
    victim: usize,
    gateway_reserve: bool,
    notes: &mut Vec<String>,
) -> Result<Vec<Extra>> {
    let node_bin = cluster::find_bin(&bin_dir(args)?, "cairn-node")?;
    let mut node_extra = vec![Extra::default(); args.nodes];
    match mode {
        Fault::DiskFull => {
            if cluster::help_lists(&node_bin, "--capacity") {
                node_extra[victim] = disk_full_extra(args, victim, gateway_reserve, notes);
            } else {
                notes.push(
                    "cairn-node has no --capacity: its disk never fills, so this mode injects \
                     nothing"
                        .into(),
                );
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
    Ok(node_extra)
}

/// The options of the disk-full victim: `--capacity`, and where the gateway's reserve
/// cannot be lowered, a lie about its free space.
fn disk_full_extra(
    args: &Args,
    victim: usize,
    gateway_reserve: bool,
    notes: &mut Vec<String>,
) -> Extra {
    let mut extra = Extra {
        args: vec!["--capacity".into(), args.full_capacity.clone()],
        env: Vec::new(),
    };
    notes.push(format!("node{victim} capped at {}", args.full_capacity));
    if !gateway_reserve {
        // The gateway's default reserve (GiBs) would keep every shard off a node this
        // small, and nothing would fill: the node claims room it does not have instead,
        // so it is chosen until its writes fail.
        extra.env = vec![(
            "CAIRN_NODE_FAULTS".into(),
            format!("report-free={}", 1u64 << 40),
        )];
        notes.push(format!(
            "node{victim} reports 1 TiB free (CAIRN_NODE_FAULTS=report-free), as the \
             gateway's reserve cannot be lowered"
        ));
    }
    extra
}

/// Whether the file at `path` contains `needle` (an environment variable a binary reads
/// but its `--help` does not list).
fn binary_mentions(path: &Path, needle: &str) -> bool {
    std::fs::read(path)
        .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .unwrap_or(false)
}

/// What the fault did while the clients wrote.
#[derive(Default)]
struct Injected {
    /// Shards flipped on disk (corrupt).
    corrupted: Vec<Corrupted>,
    /// Nodes SIGKILLed (kill-mid-part), and how many of them with a part in flight.
    kills: u32,
    kills_mid_part: u32,
}

/// Keeps `mode`'s fault going for `--fault-secs`: kills nodes mid-part or corrupts shards
/// over and over (disk-full and write-fail are the nodes' own state: it only waits).
async fn inject(
    args: &Args,
    mode: Fault,
    cluster: &mut Cluster,
    shared: &Shared,
    rng: &mut StdRng,
) -> Result<Injected> {
    let deadline = Instant::now() + Duration::from_secs(args.fault_secs);
    let ready = Duration::from_secs(args.ready_timeout);
    let mut done = Injected::default();
    while Instant::now() < deadline {
        match mode {
            Fault::KillMidPart => done.kill_mid_part(cluster, shared, rng, ready).await?,
            Fault::Corrupt => {
                sleep_ms(rng, 800, 2000).await;
                if let Some(c) = corrupt_one(cluster, &done.corrupted, rng)? {
                    done.corrupted.push(c);
                }
            }
            _ => tokio::time::sleep(deadline.saturating_duration_since(Instant::now())).await,
        }
        cluster.check_alive()?;
    }
    Ok(done)
}

impl Injected {
    /// Waits (3 s at most) for a multipart part in flight, SIGKILLs a random node, leaves
    /// it down 0.5-2.5 s while the clients retry, and starts it again.
    async fn kill_mid_part(
        &mut self,
        cluster: &mut Cluster,
        shared: &Shared,
        rng: &mut StdRng,
        ready: Duration,
    ) -> Result<()> {
        sleep_ms(rng, 300, 1200).await;
        let wait_part = Instant::now() + Duration::from_secs(3);
        while shared.parts_in_flight.load(Ordering::Relaxed) == 0 && Instant::now() < wait_part {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.kills_mid_part += (shared.parts_in_flight.load(Ordering::Relaxed) > 0) as u32;
        let n = rng.random_range(0..cluster.nodes.len());
        cluster.nodes[n].kill()?;
        self.kills += 1;
        sleep_ms(rng, 500, 2500).await;
        cluster.nodes[n].restart(ready).await
    }

    /// Corrupts up to `more` shards once the clients have stopped (fewer when no segment
    /// is left to corrupt), and notes every corrupted shard.
    fn corrupt_more(
        &mut self,
        cluster: &Cluster,
        more: usize,
        rng: &mut StdRng,
        notes: &mut Vec<String>,
    ) -> Result<()> {
        let during = self.corrupted.len();
        while self.corrupted.len() < during + more {
            match corrupt_one(cluster, &self.corrupted, rng)? {
                Some(c) => self.corrupted.push(c),
                None => break,
            }
        }
        notes.push(format!(
            "{} shards corrupted ({during} while writing): {}",
            self.corrupted.len(),
            self.corrupted
                .iter()
                .map(|c| c.describe())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(())
    }
}

/// How the cluster came back once the fault was over.
struct Recovery {
    /// What reading everything back (every node up) found.
    found: Findings,
    /// Seconds to full redundancy (`None`: not within `--redundancy-timeout`).
    redundancy_secs: Option<f64>,
    /// Segments repair re-striped meanwhile.
    repaired: u64,
}

/// Starts the nodes left down, then reads everything back while waiting for full
/// redundancy.
async fn recover(
    args: &Args,
    cluster: &mut Cluster,
    shared: &Shared,
    corrupted: &[Corrupted],
) -> Result<Recovery> {
    let ready = Duration::from_secs(args.ready_timeout);
    // The fault is over (write-fail and disk-full stay on: they are the node's state).
    for n in &mut cluster.nodes {
        if !n.is_running() {
            n.restart(ready).await?;
        }
    }
    cluster.wait_nodes_up(ready).await?;
    let recovering = Instant::now();
    let repaired_before = repair_counts(cluster).await.unwrap_or_default();
    // Read everything back while waiting for full redundancy, so the wait counts from the
    // end of the fault and not from the end of the reads (which may themselves find
    // corrupt blocks and queue repairs).
    let (found, redundancy_secs) = tokio::join!(
        verify(shared, None),
        wait_full_redundancy(
            cluster,
            args,
            corrupted,
            recovering,
            Duration::from_secs(args.redundancy_timeout),
        )
    );
    let (found, redundancy_secs) = (found?, redundancy_secs?);
    let repaired_after = repair_counts(cluster).await.unwrap_or_default();
    Ok(Recovery {
        found,
        redundancy_secs,
        repaired: repaired_after.0.saturating_sub(repaired_before.0),
    })
}

/// Notes how the faulty node ended: its space as the gateway sees it (disk-full), the
/// faults it injected (write-fail).
async fn victim_notes(cluster: &Cluster, mode: Fault, victim: usize, notes: &mut Vec<String>) {
    if mode == Fault::DiskFull {
        if let Some(n) = node_view(cluster, victim).await {
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
}

/// Full redundancy means any one node may go: reads everything with each node down in
/// turn, and adds up the problems found.
async fn verify_each_node_down(
    cluster: &mut Cluster,
    shared: &Shared,
    ready: Duration,
) -> Result<Findings> {
    let mut degraded = Findings::default();
    for n in 0..cluster.nodes.len() {
        degraded.add_problems(&verify_with_node_down(cluster, shared, n, ready).await?);
    }
    Ok(degraded)
}

async fn sleep_ms(rng: &mut StdRng, lo: u64, hi: u64) {
    tokio::time::sleep(Duration::from_millis(rng.random_range(lo..hi))).await;
}
