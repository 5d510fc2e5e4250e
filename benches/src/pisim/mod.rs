//! `cairn-bench pisim`: checkpoint save and restore on a simulated home lab, next to the
//! physical bound.
//!
//! One Linux box (root) plays the user's cluster: a coordinator network namespace (the
//! gateway, the clients and this bench) and one namespace per storage node, joined by a
//! bridge in a switch namespace. Every link is shaped with `tc tbf` in both directions
//! (`--net 100mbit|1gbit`); each node runs under a cgroup CPU quota (Pi-class CPU) and
//! keeps its data on its own loop-device ext4 filesystem whose reads and writes are
//! throttled with the blkio/io controller (`--disk sd|ssd`). Every limit is measured before
//! the workload and the bench stops if a measured figure is more than 20% off.
//!
//! Nothing leaves the namespaces it creates: the addresses are 10.77.0.0/24 inside them and
//! the root namespace gets no interface. Everything (namespaces, loop devices, mounts,
//! cgroups, throttle rules) is removed on exit, on error and on SIGINT/SIGTERM, and the
//! leftovers of a crashed run are removed at start.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;

#[cfg(target_os = "linux")]
mod checks;
#[cfg(target_os = "linux")]
mod clients;
#[cfg(target_os = "linux")]
mod lab;
#[cfg(target_os = "linux")]
mod run;

/// The link every host has to the switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NetProfile {
    /// 100 Mbit/s Ethernet (older setups).
    #[value(name = "100mbit")]
    Mbit100,
    /// 1 Gbit/s Ethernet.
    #[value(name = "1gbit")]
    Gbit1,
}

impl NetProfile {
    /// Line rate in bits per second.
    pub fn bits_per_s(self) -> u64 {
        match self {
            Self::Mbit100 => 100_000_000,
            Self::Gbit1 => 1_000_000_000,
        }
    }

    /// TCP payload bytes per second at line rate: 1448 payload bytes per 1514-byte frame
    /// (the 11.9 MB/s and 119 MB/s users see).
    pub fn payload_bytes_per_s(self) -> f64 {
        self.bits_per_s() as f64 / 8.0 * 1448.0 / 1514.0
    }

    /// The `tc` rate word.
    pub fn tc_rate(self) -> &'static str {
        match self {
            Self::Mbit100 => "100mbit",
            Self::Gbit1 => "1gbit",
        }
    }
}

/// The storage each node writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DiskProfile {
    /// A microSD card: sequential write 25 MB/s, read 45 MB/s.
    Sd,
    /// A USB 3 SSD: 300 MB/s both ways.
    Ssd,
}

impl DiskProfile {
    /// Sequential (write, read) bytes per second.
    pub fn rates(self) -> (u64, u64) {
        match self {
            Self::Sd => (25_000_000, 45_000_000),
            Self::Ssd => (300_000_000, 300_000_000),
        }
    }
}

/// The clients that save and restore the checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClientKind {
    /// boto3 `upload_file` / `download_file` with the default `TransferConfig`.
    Boto3,
    /// `cairn push` / `cairn pull` with their defaults.
    Cairn,
    /// `aws s3 cp` with aws-cli defaults.
    #[value(name = "aws-cli", alias = "awscli")]
    Awscli,
}

impl ClientKind {
    /// Short name for the table.
    pub fn name(self) -> &'static str {
        match self {
            Self::Boto3 => "boto3",
            Self::Cairn => "cairn",
            Self::Awscli => "aws-cli",
        }
    }
}

/// What happens around a save and restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Every node up: save, then restore.
    Clean,
    /// Restore (of the clean save) with the last node killed; it is restarted afterwards.
    NodeDown,
}

/// Options of `cairn-bench pisim`.
#[derive(clap::Args, Debug, Clone)]
pub struct PisimArgs {
    /// Link profile of every host (both directions).
    #[arg(long, value_enum, default_value_t = NetProfile::Mbit100)]
    pub net: NetProfile,
    /// Storage profile of every node.
    #[arg(long, value_enum, default_value_t = DiskProfile::Sd)]
    pub disk: DiskProfile,
    /// Checkpoint size in MB (10^6 bytes); 942 is the user's model.
    #[arg(long, default_value_t = 942)]
    pub size: u64,
    /// Storage nodes.
    #[arg(long, default_value_t = 4)]
    pub nodes: usize,
    /// Erasure geometry K+M.
    #[arg(long, default_value = "3+1")]
    pub ec: String,
    /// Clients to run, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [ClientKind::Boto3, ClientKind::Cairn, ClientKind::Awscli])]
    pub clients: Vec<ClientKind>,
    /// Scenarios to run for each client.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Scenario::Clean, Scenario::NodeDown])]
    pub scenarios: Vec<Scenario>,
    /// CPU quota of each node, in cores of this machine (a Pi 4B's four Cortex-A72 are
    /// about a third of an x86 core each); 0 = no quota.
    #[arg(long, default_value_t = 1.33)]
    pub node_cpu: f64,
    /// Where the card images, mounts, checkpoint and logs go (removed at start and exit).
    #[arg(long, default_value = "/var/tmp/cairn-pisim")]
    pub work_dir: PathBuf,
    /// Where the card images go. Default: /dev/shm/cairn-pisim (RAM: a sparse image holds
    /// only what is written), so the host's own disk, shared and uneven, never sets the
    /// cards' speed; the throttle alone does.
    #[arg(long, default_value = "/dev/shm/cairn-pisim")]
    pub card_dir: PathBuf,
    /// Directory with cairn-node, cairn-gateway and cairn (default: next to this binary).
    #[arg(long, env = "CAIRN_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Seconds each process may take to become healthy.
    #[arg(long, default_value_t = 30)]
    pub ready_timeout: u64,
    /// Seconds of traffic each limit measurement aims for.
    #[arg(long, default_value_t = 2.0)]
    pub check_seconds: f64,
    /// Print a one-line JSON summary on stdout (the tables go to stderr).
    #[arg(long)]
    pub json: bool,
}

/// Runs `cairn-bench pisim`. Exit status: 0 ok, 1 restored bytes differ, 2 error (a limit
/// check that failed included).
#[cfg(target_os = "linux")]
pub fn main(args: PisimArgs) -> ExitCode {
    run::main(args)
}

/// Network namespaces, tc, cgroups and loop devices are Linux features.
#[cfg(not(target_os = "linux"))]
pub fn main(_args: PisimArgs) -> ExitCode {
    eprintln!(
        "cairn-bench pisim needs Linux (network namespaces, tc, cgroups, loop devices) and root"
    );
    ExitCode::from(2)
}
