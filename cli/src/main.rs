//! `cairn`: the user's tool.
//!
//! `cairn dev` runs a whole cluster on this machine; `cairn node` and `cairn gateway`
//! run the storage-node and gateway daemons (the same code as `cairn-node` and
//! `cairn-gateway`), which is how `cairn dev` starts its child processes.

mod dev;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cairn", version, about = "Cairn: S3-compatible checkpoint storage")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a local cluster: a gateway and several storage nodes on this machine.
    Dev(dev::DevArgs),
    /// Run a storage node (same as `cairn-node`).
    #[command(hide = true)]
    Node(cairn_node::Args),
    /// Run the S3 gateway (same as `cairn-gateway`).
    #[command(hide = true)]
    Gateway(cairn_gateway::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Dev(args) => dev::run(args),
        Command::Node(args) => cairn_node::main_with(args),
        Command::Gateway(args) => cairn_gateway::main_with(args),
    }
}
