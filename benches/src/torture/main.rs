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

mod args;
mod check;
mod clients;
mod corrupt;
mod fault_modes;
mod kill_rounds;
mod model;
mod redundancy;
mod setup;

use std::process::ExitCode;

use anyhow::anyhow;
use clap::Parser;

use crate::args::Args;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // As in cairn-bench: `run` is polled on the main thread, which spawns (and respawns) the
    // children, so their PR_SET_PDEATHSIG stays tied to a thread that lives as long as we do.
    let outcome = tokio::select! {
        r = async {
            if args.faults.is_empty() {
                kill_rounds::run(&args).await
            } else {
                fault_modes::run(&args).await
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
