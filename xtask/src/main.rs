//! `cargo xtask`: the project's one entry point for setting up a machine, building, running the
//! demo and running every test. Each command does its own set-up and is quick when all is there.
mod attack;
mod bench;
mod cachebench;
mod charts;
mod fleetbench;
mod fuzz;
mod l7bench;
mod membench;
mod protobench;
mod run;
mod setup;
mod util;
mod xdpbench;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run and test the proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what is missing: Debian's Rust 1.96 with library source, bpf-linker, bpffs.
    Setup,
    /// Build the kernel programs and the proxy (runs setup first when something is missing).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Run the proxy on examples/demo.toml in front of a demo origin, until Ctrl-C.
    Run {
        #[arg(long)]
        release: bool,
        /// Stop by itself after this long (e.g. 10s); for scripted checks of the demo.
        #[arg(long, value_parser = util::parse_duration)]
        duration: Option<std::time::Duration>,
    },
    /// Run every test: unit tests, short fuzz runs, BPF packet tests, end-to-end tests in
    /// network namespaces.
    Test,
    /// Run the fuzz targets in proxy/fuzz (default: all), each for --time seconds; fails naming
    /// the target and the crash input if one crashes.
    Fuzz {
        /// Targets to run (default: all): the files in proxy/fuzz/fuzz_targets/.
        #[expect(
            clippy::doc_markdown,
            reason = "clap prints this doc comment as --help text, where backticks would show"
        )]
        targets: Vec<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        time: u64,
    },
    /// Run benchmarks (default: all implemented scenarios) and write docs/benchmarks.md.
    Bench {
        /// Scenarios to run (default: all): l7, h2, tls, cache, xdp, attack, spread, memory;
        /// `charts` only redraws the charts from the stored results.
        scenarios: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::setup(),
        Command::Build { release } => setup::setup().and_then(|()| run::build(release)),
        Command::Run { release, duration } => run::demo(release, duration),
        Command::Test => run::test(),
        Command::Fuzz { targets, time } => fuzz::fuzz(&targets, time),
        Command::Bench { scenarios } => bench::bench(&scenarios),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
