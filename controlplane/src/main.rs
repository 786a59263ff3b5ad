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
//! failed.

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
#[command(version, about)]
pub struct Args {
    /// Control plane config file (TOML).
    #[arg(short, long)]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
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
    match runtime.block_on(publish::run(&args.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("spike-controlplane: {error}");
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
