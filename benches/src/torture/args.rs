//! The command line: kill -9 rounds, or fault modes (`--faults`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Bytes in a MiB.
pub const MIB: u64 = 1 << 20;

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "cairn-torture",
    version,
    about = "Cairn torture test: kill -9 rounds and injected faults under concurrent S3 clients; every acknowledged object must read back"
)]
pub struct Args {
    /// Rounds of upload, kill -9, restart, verify.
    #[arg(long, default_value_t = 10)]
    pub rounds: u32,
    /// Seed of every random choice (printed; default: random).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Distinct keys (shared out among the clients; reused, so objects get overwritten).
    #[arg(long, default_value_t = 32)]
    pub keys: usize,
    /// Largest object in MiB.
    #[arg(long, default_value_t = 20)]
    pub max_size_mib: u64,
    /// Percent of writes done as multipart uploads (5 MiB parts).
    #[arg(long, default_value_t = 25)]
    pub multipart_percent: u32,
    /// Percent of operations that are deletes.
    #[arg(long, default_value_t = 10)]
    pub delete_percent: u32,
    /// Longest time clients upload before the kill, in milliseconds.
    #[arg(long, default_value_t = 2500)]
    pub max_kill_delay_ms: u64,
    /// Every N rounds, also read everything back with a random node down (0: never).
    #[arg(long, default_value_t = 5)]
    pub degraded_check_every: u32,
    /// Seconds one S3 request may take before it counts as hung.
    #[arg(long, default_value_t = 60)]
    pub op_timeout: u64,
    /// Storage nodes to start.
    #[arg(long, default_value_t = 4)]
    pub nodes: usize,
    /// Erasure geometry K+M.
    #[arg(long, default_value = "3+1")]
    pub ec: String,
    /// Parent directory of the run's temp dir (node data, catalog, logs).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Directory with cairn-node and cairn-gateway (default: next to this binary).
    #[arg(long, env = "CAIRN_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Seconds each process may take to become healthy.
    #[arg(long, default_value_t = 30)]
    pub ready_timeout: u64,
    /// Keep the temp dir even when everything verified (it is always kept on a failure).
    #[arg(long)]
    pub keep: bool,
    /// At the end, prove the checker can fail: delete one acknowledged object and write one
    /// unacknowledged version behind the clients' backs; both must be caught.
    #[arg(long)]
    pub self_check: bool,
    /// Fault-injection modes to run instead of the kill -9 rounds, comma-separated
    /// (disk-full, write-fail, kill-mid-part, corrupt, or all); each once, on a fresh
    /// cluster.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub faults: Vec<Fault>,
    /// Fault modes: seconds the clients write while the fault is on.
    #[arg(long, default_value_t = 12)]
    pub fault_secs: u64,
    /// Fault modes: attempts after a 500/502/503/504 or a broken connection, per request
    /// (and per multipart part).
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// disk-full: capacity of the node that fills up (its `--capacity`).
    #[arg(long, default_value = "32MiB")]
    pub full_capacity: String,
    /// write-fail: probability that the faulty node fails a shard PUT.
    #[arg(long, default_value_t = 0.2)]
    pub write_fail_rate: f64,
    /// corrupt: shards corrupted after the clients stop (more are corrupted every second or
    /// two while they write), one per segment, in the middle of a middle block.
    #[arg(long, default_value_t = 4)]
    pub corrupt_shards: usize,
    /// corrupt: the nodes' `--scrub-every` (scrub is what finds corrupt parity shards).
    #[arg(long, default_value = "3s")]
    pub scrub_every: String,
    /// Fault modes: the gateway's `--repair-after` (repair passes run every half of it).
    #[arg(long, default_value = "8s", value_parser = cairn_common::daemon::parse_duration)]
    pub repair_after: Duration,
    /// Fault modes: the gateway's `--reserve-bytes` (if its --help lists the option).
    #[arg(long, default_value = "1MiB")]
    pub reserve_bytes: String,
    /// Fault modes: the gateway's `--reserve-percent` (if its --help lists the option).
    #[arg(long, default_value_t = 0)]
    pub reserve_percent: u32,
    /// Fault modes: the gateway's `--rebalance-rate`, 0 for off (if its --help lists it).
    #[arg(long, default_value = "64MiB")]
    pub rebalance_rate: String,
    /// Fault modes: seconds to wait for full redundancy once the fault is over.
    #[arg(long, default_value_t = 90)]
    pub redundancy_timeout: u64,
}

/// A fault-injection mode of `--faults`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Fault {
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

impl Args {
    /// The modes of `--faults`, `all` expanded, each once.
    pub fn fault_modes(&self) -> BTreeSet<Fault> {
        let mut modes: BTreeSet<Fault> = self.faults.iter().copied().collect();
        if modes.remove(&Fault::All) {
            modes.extend([
                Fault::DiskFull,
                Fault::WriteFail,
                Fault::KillMidPart,
                Fault::Corrupt,
            ]);
        }
        modes
    }
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::DiskFull => "disk-full",
            Fault::WriteFail => "write-fail",
            Fault::KillMidPart => "kill-mid-part",
            Fault::Corrupt => "corrupt",
            Fault::All => "all",
        }
    }
}
