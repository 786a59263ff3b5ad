//! `spike-dataplane`: Spike's DPDK poll-mode dataplane.
//!
//! It loads the config, initializes DPDK with the config's `[dpdk]` section, and runs
//! one poll loop per worker lcore that passes every received frame through
//! [`spike_core::Worker::process`] and acts on the verdict in place. The main lcore
//! handles signals: SIGHUP reloads the config, SIGINT and SIGTERM stop forwarding,
//! print the final counters and exit.
//!
//! Exit codes: 0 after a clean stop, 2 for an invalid config or command line, 1 for
//! DPDK and other runtime failures. Every failure is one `spike-dataplane: <error>` line
//! on stderr; logs also go to stderr (`RUST_LOG` sets the filter, `info` by default).
//! `--check-config` validates the file without DPDK and exits 0 or 2.

mod check;
mod config;
mod eal_options;
mod error;
mod poll;
mod reap;
mod reload;
mod report;
mod ring;
mod run;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Runs Spike's DPDK dataplane with the given config.
#[derive(Parser, Debug)]
#[command(version, about, after_help = AFTER_HELP)]
pub struct Args {
    /// Dataplane config file (TOML) with a [dpdk] section.
    #[arg(short, long)]
    config: PathBuf,

    /// JSON file that the counters are written to, replaced atomically every interval.
    #[arg(long)]
    counters_file: Option<PathBuf>,

    /// Interval between writes of --counters-file, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    counters_interval_ms: u64,

    /// Check the config file and exit, without starting DPDK: print warnings and
    /// "FILE: ok" (exit 0), or the error (exit 2). Run it before a reload or an upgrade.
    #[arg(long)]
    check_config: bool,
}

/// Signals, exit codes and logging, shown after the options in `--help`.
const AFTER_HELP: &str = "\
Signals:
  SIGHUP           reload the config file; an invalid file keeps the running config
  SIGINT, SIGTERM  stop forwarding, print the final counters on stdout and exit

Exit codes:
  0  clean stop, or --check-config found the file valid
  1  DPDK or another runtime failure
  2  invalid config or command line

Environment:
  RUNTIME_DIRECTORY  directory of the lock file that keeps a second dataplane off the
                     port (default: /run/spike); systemd sets it from RuntimeDirectory=

Logs go to stderr. RUST_LOG sets the filter (default: info), e.g. RUST_LOG=debug.";

fn main() -> ExitCode {
    let args = Args::parse();
    if args.check_config {
        return check::print(&args.config);
    }
    init_logging();
    check::log_warnings(&args.config);
    match run::run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("spike-dataplane: {}", error::one_line(&error.to_string()));
            ExitCode::from(error.exit_code())
        }
    }
}

fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
