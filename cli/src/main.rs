//! `cairn`: the user's tool.
//!
//! `cairn dev` runs a whole cluster on this machine; `cairn node` and `cairn gateway`
//! run the storage-node and gateway daemons (the same code as `cairn-node` and
//! `cairn-gateway`), which is how `cairn dev` starts its child processes.
//!
//! `cairn watch`, `push`, `pull` and `ls` move training checkpoints to and from any S3
//! endpoint: only finished checkpoints are uploaded, and only committed ones (with a
//! manifest) are listed, restored or counted for retention.

mod completeness;
mod detect;
mod dev;
mod error;
mod manifest;
mod metrics;
mod progress;
mod pull;
mod push;
mod retention;
mod s3client;
mod state;
mod sync;
mod upload;
mod watch;

use std::future::Future;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Cairn: S3-compatible checkpoint storage"
)]
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
    /// Watch a training directory; upload and commit each checkpoint once it is finished.
    Watch(watch::WatchArgs),
    /// Upload and commit one checkpoint directory or file.
    Push(push::PushArgs),
    /// Download a committed checkpoint (the latest by default), verifying every checksum.
    Pull(pull::PullArgs),
    /// List committed checkpoints.
    Ls(pull::LsArgs),
    /// Print the version, the git commit and the target this binary was built for.
    Version,
}

/// Runs one checkpoint command on its own runtime. Its error is printed as one line
/// (never with a backtrace, whatever RUST_BACKTRACE says) and the exit code is 1.
fn run<F: Future<Output = error::Result<()>>>(fut: F) -> anyhow::Result<()> {
    // CAIRN_LOG as for the daemons (RUST_LOG still works); the SDK's chatter is kept down.
    let filter = std::env::var("CAIRN_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| {
            tracing_subscriber::EnvFilter::new(
                "info,aws=warn,aws_smithy_runtime=warn,aws_config=warn",
            )
        });
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Err(e) = rt.block_on(fut) {
        drop(rt);
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    Ok(())
}

/// Parses the command line; usage errors are printed as one line (exit code 2).
fn parse_cli() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.render().to_string();
            let head = text
                .split("\n\nUsage:")
                .next()
                .and_then(|t| t.split("\n\nFor more information").next())
                .unwrap_or(&text);
            eprintln!("{}", head.split_whitespace().collect::<Vec<_>>().join(" "));
            std::process::exit(2);
        }
    }
}

/// `cairn version`: set at build time by `build.rs` (the commit is `unknown` when the
/// source had no git metadata).
fn version_text() -> String {
    let version = env!("CARGO_PKG_VERSION");
    // CARGO_PKG_VERSION carries "(commit target)" for `--version`; the bare number first.
    let number = version.split_whitespace().next().unwrap_or(version);
    format!(
        "cairn {number}\ncommit {}\ntarget {}\n",
        env!("CAIRN_BUILD_COMMIT"),
        env!("CAIRN_BUILD_TARGET")
    )
}

fn main() -> anyhow::Result<()> {
    let cli = parse_cli();
    match cli.command {
        Command::Dev(args) => dev::run(args),
        Command::Node(args) => cairn_node::main_with(args),
        Command::Gateway(args) => cairn_gateway::main_with(args),
        Command::Watch(args) => run(watch::run(args)),
        Command::Push(args) => run(push::run(args)),
        Command::Pull(args) => run(pull::pull(args)),
        Command::Ls(args) => run(pull::ls(args)),
        Command::Version => {
            print!("{}", version_text());
            Ok(())
        }
    }
}
