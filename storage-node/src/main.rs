fn main() -> anyhow::Result<()> {
    cairn_node::main_with(<cairn_node::Args as clap::Parser>::parse())
}
