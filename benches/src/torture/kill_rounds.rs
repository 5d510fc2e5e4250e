//! The kill -9 rounds: clients write, the gateway and/or a node are SIGKILLed and
//! restarted, everything is read back.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Result;
use cairn_benches::cluster::{Cluster, Extra};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::args::Args;
use crate::check::{self_check, verify, verify_with_node_down};
use crate::clients::{Mix, Writers};
use crate::model::{Findings, RoundStats, Shared};
use crate::setup::{finish, start, work_dir};

/// Runs `--rounds` rounds on one cluster, a line each, then a summary; `Ok(false)` when
/// an object was lost, corrupt or partially visible, or a request hung.
pub async fn run(args: &Args) -> Result<bool> {
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
    let mut totals = Totals::default();
    print_round_header();
    for round in 1..=args.rounds {
        let r = run_round(args, round, &mut cluster, &shared, &mut rng).await?;
        totals.add(&r);
        r.print(round);
        cluster.check_alive()?;
    }
    if args.self_check {
        self_check(&shared).await?;
    }
    totals.print(args.rounds, shared.live_keys());
    let ok = totals.clean();
    drop(cluster);
    finish(tmp, ok, args.keep)?;
    Ok(ok)
}

/// What a round SIGKILLs: the gateway, a node, or both.
#[derive(Clone, Copy)]
struct Kill {
    gateway: bool,
    node: Option<usize>,
}

impl Kill {
    fn pick(rng: &mut StdRng, nodes: usize) -> Self {
        let node = rng.random_range(0..nodes);
        match rng.random_range(0..10) {
            0..=3 => Self {
                gateway: true,
                node: None,
            },
            4..=7 => Self {
                gateway: false,
                node: Some(node),
            },
            _ => Self {
                gateway: true,
                node: Some(node),
            },
        }
    }

    /// The processes killed, for the round's line.
    fn describe(&self) -> String {
        match (self.gateway, self.node) {
            (true, Some(n)) => format!("gateway+node{n}"),
            (true, None) => "gateway".to_string(),
            (false, Some(n)) => format!("node{n}"),
            (false, None) => unreachable!("something is always killed"),
        }
    }

    /// The kind of kill, for the summary.
    fn kind(&self) -> &'static str {
        match (self.gateway, self.node) {
            (true, Some(_)) => "gateway+node",
            (true, None) => "gateway",
            _ => "node",
        }
    }

    /// SIGKILLs the victims (a node alone is down a while before the round ends).
    async fn strike(&self, cluster: &mut Cluster, rng: &mut StdRng) -> Result<()> {
        if let Some(n) = self.node {
            cluster.nodes[n].kill()?;
        }
        if self.gateway {
            cluster.gateway.kill()?;
        } else {
            // the gateway carries on without the node for a while
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..1000))).await;
        }
        Ok(())
    }

    /// Starts the victims again and waits until the gateway sees every node up.
    async fn restart(&self, cluster: &mut Cluster, ready: Duration) -> Result<()> {
        if let Some(n) = self.node {
            cluster.nodes[n].restart(ready).await?;
        }
        if self.gateway {
            cluster.gateway.restart(ready).await?;
        }
        cluster.wait_nodes_up(ready).await
    }
}

/// What one round did and found.
struct Round {
    kill: Kill,
    stats: RoundStats,
    found: Findings,
    secs: f64,
}

/// One round: clients write, a random moment later the victims are SIGKILLed; once the
/// clients stop, the victims restart and everything is read back (every
/// `--degraded-check-every` rounds also with a random node down).
async fn run_round(
    args: &Args,
    round: u32,
    cluster: &mut Cluster,
    shared: &std::sync::Arc<Shared>,
    rng: &mut StdRng,
) -> Result<Round> {
    let t0 = Instant::now();
    shared.round.store(round, Ordering::Relaxed);
    let writers = Writers::spawn(args, shared, rng, Mix::of(args));
    tokio::time::sleep(Duration::from_millis(
        rng.random_range(100..args.max_kill_delay_ms.max(101)),
    ))
    .await;
    let kill = Kill::pick(rng, cluster.nodes.len());
    kill.strike(cluster, rng).await?;
    let stats = writers.stop().await?;
    let ready = Duration::from_secs(args.ready_timeout);
    kill.restart(cluster, ready).await?;
    let mut found = verify(shared, None).await?;
    if args.degraded_check_every > 0 && round.is_multiple_of(args.degraded_check_every) {
        let n = rng.random_range(0..cluster.nodes.len());
        found.add_problems(&verify_with_node_down(cluster, shared, n, ready).await?);
    }
    Ok(Round {
        kill,
        stats,
        found,
        secs: t0.elapsed().as_secs_f64(),
    })
}

fn print_round_header() {
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
}

impl Round {
    fn print(&self, round: u32) {
        let (stats, f) = (&self.stats, &self.found);
        println!(
            "{:>5}  {:<14} {:>6} {:>6} {:>6} {:>6} {:>5}  {:>7} {:>5} {:>7} {:>7} {:>7} {:>6.1}",
            round,
            self.kill.describe(),
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
            self.secs
        );
    }
}

/// The rounds added up.
#[derive(Default)]
struct Totals {
    stats: RoundStats,
    found: Findings,
    /// Rounds per kind of kill.
    kills: BTreeMap<&'static str, u32>,
}

impl Totals {
    fn add(&mut self, r: &Round) {
        self.stats.add(&r.stats);
        self.found.add(&r.found);
        *self.kills.entry(r.kill.kind()).or_default() += 1;
    }

    /// Nothing lost, corrupt or partially visible, and no request hung.
    fn clean(&self) -> bool {
        self.found.bad() == 0 && self.stats.hung == 0
    }

    fn print(&self, rounds: u32, live: usize) {
        let (total, found) = (&self.stats, &self.found);
        println!();
        println!("rounds:               {rounds}");
        println!(
            "kills:                {}",
            self.kills
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
    }
}
