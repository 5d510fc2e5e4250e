fn main() -> anyhow::Result<()> {
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "rebuild-catalog") {
        argv.remove(1);
        return cairn_gateway::rebuild_catalog(
            <cairn_gateway::RebuildArgs as clap::Parser>::parse_from(argv),
        );
    }
    cairn_gateway::main_with(<cairn_gateway::Args as clap::Parser>::parse_from(argv))
}
