use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;
use proxy::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

/// mimalloc: the request path allocates a couple of dozen small objects per request, and
/// glibc's malloc spent about a sixth of the proxy's instructions on them. Measured under
/// callgrind (docs/benchmarks.md): 45 500 -> 40 900 instructions per request; RSS per idle
/// keep-alive connection 7.8 -> 5.6 KiB. Built without transparent huge pages (`no_thp`):
/// with them the idle figure was 9.1 KiB. A `bench-counters` build wraps it in the counting
/// allocator of `proxy::counters` instead.
#[cfg(not(feature = "bench-counters"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(&args),
        other => {
            // A management command piped into `head` ends quietly when the reader goes away,
            // like other command-line tools (Rust ignores SIGPIPE, and println! would panic).
            // SAFETY: setting a signal disposition to the default before any thread starts.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            proxy::cli::manage(other)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &proxy::cli::RunArgs) -> anyhow::Result<()> {
    let config = proxy::cli::run_config(args)?;
    // RUST_LOG wins over log_level from the config (validated there).
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    proxy::daemon::check_not_running(&config.instance)?;
    let result = proxy::daemon::run(config, &args.config, args.keep_kernel_state);
    if let Err(e) = &result {
        tracing::error!("{e:#}");
    }
    result
}
