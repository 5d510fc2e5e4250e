fn main() -> anyhow::Result<()> {
    cairn_gateway::main_with(<cairn_gateway::Args as clap::Parser>::parse())
}
