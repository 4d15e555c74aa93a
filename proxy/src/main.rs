use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;
use proxy::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

/// mimalloc: the request path allocates a couple of dozen small objects per request, and
/// glibc's malloc spent about a sixth of the proxy's instructions on them. Measured under
/// callgrind (docs/benchmarks.md): 45 500 -> 40 900 instructions per request. Built without
/// transparent huge pages (`no_thp`: with them an idle connection cost 9.1 KiB of RSS instead
/// of 5.6 with the default purge delay) and with freed memory returned at once (`tune_allocator`). A `bench-counters`
/// build wraps it in the counting allocator of `proxy::counters` instead.
#[cfg(not(feature = "bench-counters"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its `mimalloc.h`, v3: the 16th option).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory goes back to the system at once instead of after mimalloc's delay (1 s),
/// which only runs out while the allocator is busy: an idle proxy kept 20 MiB more, and all
/// of the memory of closed connections (`bench memory`). It costs a madvise per ~16 requests under
/// load. `MIMALLOC_PURGE_DELAY` in the environment wins.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: reading and setting a mimalloc option has no preconditions; the index is
    // checked against the option's defaults (10 ms in mimalloc 2, 1000 ms in 3) before it is
    // set.
    unsafe {
        if matches!(
            libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
            10 | 1000
        ) {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        }
    }
}

fn main() -> ExitCode {
    tune_allocator();
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
