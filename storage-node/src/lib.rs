//! Cairn storage node (being written).
use clap::Parser;

/// Command-line arguments of `cairn-node`.
#[derive(Parser, Debug)]
pub struct Args {}

/// Runs the node.
pub fn main_with(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
