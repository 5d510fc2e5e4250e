//! `cairn dev` (being written).
use clap::Args;

/// Arguments of `cairn dev`.
#[derive(Args, Debug)]
pub struct DevArgs {}

/// Runs the local cluster.
pub fn run(_args: DevArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
