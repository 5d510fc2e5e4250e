//! Cairn S3 gateway (being written).
use clap::Parser;

/// Command-line arguments of `cairn-gateway`.
#[derive(Parser, Debug)]
pub struct Args {}

/// Runs the gateway.
pub fn main_with(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
