//! `spike-controlplane`: discovers services and backends, checks their health, builds
//! snapshots (one Maglev table per distinct backend set) and publishes them to the
//! dataplane through the shared-memory snapshot ring. It serves Prometheus metrics and
//! liveness and readiness endpoints, over TLS with the node identity when configured.
//!
//! The dataplane keeps forwarding with its last snapshot while this process is down.
//! On start it attaches to the ring, and when the snapshot it builds equals the one
//! published, it continues with that generation instead of publishing again.
//!
//! SIGHUP reloads the config (an invalid file keeps the running config and logs why);
//! SIGINT and SIGTERM stop the process. With a `[bgp]` section the VIPs are announced
//! through BIRD: SIGTERM leaves them announced (for a restart), SIGUSR1 withdraws them,
//! waits `bgp.drain_s` and stops (see `bgp`). Exit codes: 0 after a stop, 2 for an
//! invalid config, 1 for other failures, including a planned stop whose withdrawal
//! failed. `--check-config FILE` (or `--check-config --config FILE`) validates the file
//! without binding sockets or opening the ring and exits 0 or 2. `--withdraw` writes the routes file without VIPs and reloads
//! BIRD, touching nothing of a running control plane. The dataplane's unit runs it
//! after every stop of the dataplane, because a stopped control plane cannot withdraw.

mod bgp;
mod config;
mod discovery;
mod health;
mod http;
mod kubernetes;
mod metrics;
mod metrics_tls;
mod nexthop;
mod publish;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Runs Spike's control plane with the given config.
#[derive(Parser, Debug)]
#[command(version, about, after_help = AFTER_HELP)]
pub struct Args {
    /// Control plane config file (TOML).
    #[arg(short, long, required_unless_present = "check_config")]
    config: Option<PathBuf>,

    /// Check FILE, or the file of --config, and exit without binding sockets or opening
    /// the ring: print warnings and "FILE: ok" (exit 0), or the error (exit 2, or 1 when
    /// the TLS identity cannot be read). Run it before a reload or an upgrade.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    check_config: Option<Option<PathBuf>>,

    /// Withdraw every VIP from BGP and exit. With [bgp], write bgp.routes_file with the
    /// sessions and no VIP routes, then reload BIRD (exit 1 when the file cannot be
    /// written or BIRD fails the reload). Without [bgp], do nothing. Opens no ring and
    /// no socket other than BIRD's. spike-dataplane.service runs it after every stop of
    /// the dataplane.
    #[arg(long, conflicts_with = "check_config")]
    withdraw: bool,
}

/// Signals, exit codes and logging, shown after the options in `--help`.
const AFTER_HELP: &str = "\
Signals:
  SIGHUP           reload the config file; an invalid file keeps the running config
  SIGINT, SIGTERM  stop; with [bgp], the VIPs stay announced for a restart
  SIGUSR1          with [bgp], withdraw the VIPs, wait bgp.drain_s and stop

Exit codes:
  0  clean stop, --check-config found the file valid, or --withdraw is done
  1  runtime failure, a failed withdrawal on SIGUSR1 or --withdraw, or an unreadable
     TLS identity
  2  invalid config or command line

Logs go to stderr. RUST_LOG sets the filter (default: info), e.g. RUST_LOG=debug.";

fn main() -> ExitCode {
    let args = Args::parse();
    let path = config_path(args.config, args.check_config.clone().flatten());
    if args.check_config.is_some() {
        return check_config(&path);
    }
    if args.withdraw {
        return withdraw(&path);
    }
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("spike-controlplane: cannot start the tokio runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(publish::run(&path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("spike-controlplane: {error}");
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

/// Validates the config as a start would before it binds the metrics socket, the TLS
/// identity included, and prints the warnings and `FILE: ok`, or the error.
fn check_config(path: &std::path::Path) -> ExitCode {
    let config = match config::ControlConfig::load(path) {
        Ok(config) => config,
        Err(error) => return check_failed(&publish::RunError::from(error)),
    };
    if let Some(tls) = &config.metrics_tls {
        if let Err(error) = metrics_tls::acceptor(tls) {
            return check_failed(&publish::RunError::from(error));
        }
    }
    // Builds the tables of the static services with every backend up, as the dataplane's
    // check does, to find the weighted backends that would get no slot.
    let snapshot = match spike_core::Snapshot::build(&config.base, 1) {
        Ok(snapshot) => snapshot,
        Err(error) => {
            eprintln!("spike-controlplane: {}: {error}", path.display());
            return ExitCode::from(2);
        }
    };
    // Encodes the static services as a publication does, to find a snapshot that the
    // ring's slots cannot hold. Kubernetes services come on top at run time.
    let encoded = match spike_snapring::payload::encode(&config.base) {
        Ok(encoded) => encoded,
        Err(error) => {
            eprintln!("spike-controlplane: {}: {error}", path.display());
            return ExitCode::from(2);
        }
    };
    if let Some(reason) = publish::slot_too_small(encoded.bytes.len(), config.slot_size_bytes) {
        eprintln!("spike-controlplane: {}: {reason}", path.display());
        return ExitCode::from(2);
    }
    let unslotted = snapshot.unslotted_backends();
    let warnings = config.base.warnings().into_iter();
    for warning in warnings.chain(unslotted.iter().map(ToString::to_string)) {
        println!("{}: warning: {warning}", path.display());
    }
    println!("{}: ok", path.display());
    ExitCode::SUCCESS
}

/// Withdraws every VIP through BIRD without a running control plane, and prints the
/// result or the error.
fn withdraw(path: &std::path::Path) -> ExitCode {
    let config = match config::ControlConfig::load(path) {
        Ok(config) => config,
        Err(error) => return check_failed(&publish::RunError::from(error)),
    };
    let Some(bgp) = config.bgp else {
        println!("{}: no [bgp] section, nothing to withdraw", path.display());
        return ExitCode::SUCCESS;
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("spike-controlplane: cannot start the tokio runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(bgp::withdraw(&bgp)) {
        Ok(()) => {
            println!(
                "{}: every VIP withdrawn; BIRD reloaded {}",
                path.display(),
                bgp.routes_file.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("spike-controlplane: withdrawing the VIPs failed: {error}");
            ExitCode::from(1)
        }
    }
}

fn check_failed(error: &publish::RunError) -> ExitCode {
    eprintln!("spike-controlplane: {error}");
    ExitCode::from(error.exit_code())
}

fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
