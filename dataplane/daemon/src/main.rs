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
//! `--check-config FILE` (or `--check-config --config FILE`) validates the file without
//! DPDK and exits 0 or 2.

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
    #[arg(
        short = 'c',
        long = "config",
        value_name = "CONFIG",
        required_unless_present = "check_config"
    )]
    config_arg: Option<PathBuf>,

    /// The config file of --config or --check-config FILE.
    #[arg(skip)]
    config: PathBuf,

    /// JSON file that the counters are written to, replaced atomically every interval.
    #[arg(long)]
    counters_file: Option<PathBuf>,

    /// Interval between writes of --counters-file, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    counters_interval_ms: u64,

    /// Check FILE, or the file of --config, and exit without starting DPDK: print
    /// warnings and "FILE: ok" (exit 0), or the error (exit 2). Run it before a reload or
    /// an upgrade.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    check_config: Option<Option<PathBuf>>,
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
    let mut args = Args::parse();
    let checked = args.check_config.clone().flatten();
    args.config = config_path(args.config_arg.take(), checked);
    if args.check_config.is_some() {
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

/// Returns the config file that `--config` and `--check-config FILE` name, or exits
/// with a command line error (status 2) when they name different files or neither
/// names one.
fn config_path(config: Option<PathBuf>, checked: Option<PathBuf>) -> PathBuf {
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    let error = |kind, message: String| Args::command().error(kind, message).exit();
    match (config, checked) {
        (Some(config), Some(checked)) if !same_file(&config, &checked) => error(
            ErrorKind::ArgumentConflict,
            format!(
                "--check-config {} and --config {} name different files; give the file once",
                checked.display(),
                config.display()
            ),
        ),
        (Some(path), _) | (None, Some(path)) => path,
        (None, None) => error(
            ErrorKind::MissingRequiredArgument,
            "--check-config needs the file: --check-config FILE or --config FILE".to_owned(),
        ),
    }
}

/// Returns whether `a` and `b` name the same file: equal as written or once resolved.
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    a == b
        || matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(a), Ok(b)) if a == b
        )
}

fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
