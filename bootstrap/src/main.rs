//! Command line of the node bootstrap: redeem a one-time token for the node's first
//! certificate, then renew it once (for a systemd timer) or in a loop.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use spike_bootstrap::{
    redeem, renew_loop, renew_once, Backoff, BootstrapError, Identity, IdentityPaths,
    RedeemOptions, RenewOptions,
};
use spike_keyproto::client::server_address;
use spike_keyproto::duration::{format_duration, parse_duration_at_most, BoundedDurationError};
use spike_keyproto::files;
use spike_keyproto::tls::parse_fingerprint;
use spike_keyproto::utc::rfc3339;
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;
use tracing_subscriber::EnvFilter;

/// Environment variable that may carry the token instead of a file.
const TOKEN_ENV: &str = "SPIKE_BOOTSTRAP_TOKEN";

/// Maximum size of a token file. A token is about 100 bytes, so a bigger file is the wrong
/// file, and it is rejected before reading rather than sent to the keyserver.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// Maximum --timeout: a keyserver call that takes longer has failed.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Maximum retry delay: a day, the keyserver's default certificate lifetime, because a
/// longer wait between renewal attempts would let such a certificate expire.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(86_400);

/// Exit statuses, shown under `--help`.
const EXIT_CODES: &str = "Durations need a unit: s, m, h or d, such as 90s, 15m, 24h or 30d.

Exit status: 0 on success; 2 for invalid arguments, \
contradictory options or a --dir that is a file (fix the command line); 1 when the command fails while running \
(files, network, the keyserver rejecting the request).";

/// Signals of `renew --loop`, shown under `renew --help`.
const RENEW_SIGNALS: &str = "\
Signals (with --loop):
  SIGINT, SIGTERM  stop; a renewal attempt in progress ends first, then exit 0

Logs go to stderr. RUST_LOG sets the filter (default: info), e.g. RUST_LOG=debug.";

#[derive(Debug, Parser)]
#[command(
    name = "spike-bootstrap",
    version,
    about = "Obtain and renew a Spike node's TLS identity",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Common {
    /// Keyserver address, HOST:PORT.
    #[arg(long, value_parser = server_address)]
    server: String,
    /// Name the keyserver's certificate must carry; defaults to the host of --server.
    #[arg(long)]
    server_name: Option<String>,
    /// Directory of key.pem, cert.pem and ca.pem.
    #[arg(long)]
    dir: PathBuf,
    /// Time limit of one keyserver call, such as 30s or 2m (at most 1h).
    #[arg(long, default_value = "30s", value_parser = timeout)]
    timeout: Duration,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Redeem a one-time token: generate the key, get the first certificate.
    Redeem {
        #[command(flatten)]
        common: Common,
        /// SHA-256 fingerprint of the keyserver's CA certificate (64 hex digits), as
        /// printed by `spike-keyserver fingerprint`.
        #[arg(long, value_parser = parse_fingerprint)]
        ca_fingerprint: [u8; 32],
        /// File holding the token. Without it, the token is read from $SPIKE_BOOTSTRAP_TOKEN;
        /// it is never taken from the command line, where other users could see it.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Renew the certificate, once or (with --loop) at two thirds of each lifetime.
    #[command(after_help = RENEW_SIGNALS)]
    Renew {
        #[command(flatten)]
        common: Common,
        /// Keep running and renew whenever due.
        #[arg(long = "loop")]
        run_loop: bool,
        /// First retry delay after a failed renewal, such as 5s; it doubles up to
        /// --max-retry-delay. Needs --loop.
        #[arg(long, default_value = "5s", value_parser = retry_delay, requires = "run_loop")]
        retry_delay: Duration,
        /// Maximum retry delay, such as 5m (at most 1d). Needs --loop.
        #[arg(long, default_value = "5m", value_parser = retry_delay, requires = "run_loop")]
        max_retry_delay: Duration,
        /// Stop the loop after this many renewals; needs --loop.
        #[arg(long, requires = "run_loop")]
        max_renewals: Option<u64>,
    },
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    #[error(transparent)]
    File(#[from] files::FileError),
    #[error("no token given: pass --token-file FILE or set {TOKEN_ENV}")]
    NoToken,
    #[error("token file {} does not exist; create it from the token that `spike-keyserver token create` prints, readable by its owner only (chmod 600), or set {TOKEN_ENV} instead", .0.display())]
    TokenFileMissing(PathBuf),
    #[error("token file {} is empty; write the token printed by `spike-keyserver token create` into it", .0.display())]
    EmptyTokenFile(PathBuf),
    #[error("token file {} has {size} bytes, more than the limit of {MAX_TOKEN_FILE_BYTES}; a token is one line of about 100 bytes, so check that this is the token file", path.display())]
    TokenFileTooBig { path: PathBuf, size: u64 },
    #[error("--dir {} is a file, not a directory; pass the directory of key.pem, cert.pem and ca.pem (redeem creates it when missing)", .0.display())]
    DirIsFile(PathBuf),
    #[error("--retry-delay {retry} is longer than --max-retry-delay {max}; lower the first or raise the second")]
    RetryDelayAboveMax { retry: String, max: String },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot listen for SIGINT and SIGTERM: {0}")]
    Signals(std::io::Error),
    #[error(
        "the identity files are in place, but writing the summary to standard output failed: {0}"
    )]
    Stdout(std::io::Error),
}

/// Prints the principal, serial and expiry of `identity` on one line. A closed pipe or a
/// full disk comes back as an error, where `println!` would panic.
fn print_identity(identity: &Identity) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "{} {} {}",
        identity.principal,
        identity.serial,
        rfc3339(identity.not_after)
    )
    .and_then(|()| stdout.flush())
    .map_err(CliError::Stdout)
}

impl CliError {
    /// Returns whether the command line itself is at fault, which exits with status 2 as
    /// clap does for invalid arguments.
    fn is_usage(&self) -> bool {
        matches!(
            self,
            CliError::NoToken | CliError::DirIsFile(_) | CliError::RetryDelayAboveMax { .. }
        )
    }
}

/// Parses --timeout, at most [`MAX_TIMEOUT`].
fn timeout(input: &str) -> Result<Duration, BoundedDurationError> {
    parse_duration_at_most(input, MAX_TIMEOUT)
}

/// Parses a retry delay, at most [`MAX_RETRY_DELAY`].
fn retry_delay(input: &str) -> Result<Duration, BoundedDurationError> {
    parse_duration_at_most(input, MAX_RETRY_DELAY)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal; a log file or journal gets plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spike-bootstrap: {e}");
            if e.is_usage() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Returns a future that completes at the first SIGINT or SIGTERM. Both handlers are
/// installed before it returns, so a service manager's SIGTERM during a renewal attempt
/// no longer kills the process. The loop stops once the attempt ends.
fn stop_signal() -> std::io::Result<impl Future<Output = ()>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        info!(signal = name, "stop signal received");
    })
}

/// Reads the token from `path`, rejecting an empty or oversized file locally.
fn read_token_file(path: &Path) -> Result<String, CliError> {
    // The size comes from the metadata, so a large file is never read into memory.
    // read_secret reports a directory or an unreadable file with its own message.
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CliError::TokenFileMissing(path.to_path_buf()));
        }
        Ok(metadata) if metadata.is_file() && metadata.len() > MAX_TOKEN_FILE_BYTES => {
            return Err(CliError::TokenFileTooBig {
                path: path.to_path_buf(),
                size: metadata.len(),
            });
        }
        _ => {}
    }
    let token = files::read_secret(path)?.trim().to_string();
    if token.is_empty() {
        return Err(CliError::EmptyTokenFile(path.to_path_buf()));
    }
    Ok(token)
}

/// Checks that --dir is a directory or missing. A file there would fail later with an
/// error about key.pem or cert.pem inside it, which hides the cause.
fn check_dir(dir: &Path) -> Result<(), CliError> {
    match std::fs::metadata(dir) {
        Ok(metadata) if !metadata.is_dir() => Err(CliError::DirIsFile(dir.to_path_buf())),
        _ => Ok(()),
    }
}

fn run(command: Command) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    match command {
        Command::Redeem {
            common,
            ca_fingerprint,
            token_file,
        } => {
            check_dir(&common.dir)?;
            let token = match token_file {
                Some(path) => read_token_file(&path)?,
                None => std::env::var(TOKEN_ENV).map_err(|_| CliError::NoToken)?,
            };
            let options = RedeemOptions {
                server: common.server,
                server_name: common.server_name,
                ca_fingerprint,
                token,
                paths: IdentityPaths::new(common.dir),
                timeout: common.timeout,
            };
            let identity = runtime.block_on(redeem(&options))?;
            print_identity(&identity)
        }
        Command::Renew {
            common,
            run_loop,
            retry_delay,
            max_retry_delay,
            max_renewals,
        } => {
            check_dir(&common.dir)?;
            let options = RenewOptions {
                server: common.server,
                server_name: common.server_name,
                paths: IdentityPaths::new(common.dir),
                timeout: common.timeout,
            };
            if !run_loop {
                let identity = runtime.block_on(renew_once(&options))?;
                return print_identity(&identity);
            }
            if retry_delay > max_retry_delay {
                return Err(CliError::RetryDelayAboveMax {
                    retry: format_duration(retry_delay),
                    max: format_duration(max_retry_delay),
                });
            }
            let backoff = Backoff::new(retry_delay, max_retry_delay);
            let renewals = runtime.block_on(async {
                let stop = stop_signal().map_err(CliError::Signals)?;
                Ok::<_, CliError>(renew_loop(&options, backoff, max_renewals, stop).await?)
            })?;
            info!(renewals, "renewal loop ended");
            Ok(())
        }
    }
}
