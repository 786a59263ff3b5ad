//! Command line of the Spike keyserver: run the service, set up its state directory, and
//! administer tokens, principals and certificates over mutual TLS.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use spike_keyproto::client::{host_of, server_address};
use spike_keyproto::duration::{parse_duration_at_most, BoundedDurationError};
use spike_keyproto::tls::{self, ClientIdentity, IdentityFiles};
use spike_keyproto::utc::{rfc3339, rfc3339_and_unix};
use spike_keyproto::wire::{CertInfo, CertKind, Revocation, TokenInfo, TokenStatus};
use spike_keyproto::{call, Request, Response};
use spike_keyserver::ca::{CaError, CaImport, MAX_LIFETIME};
use spike_keyserver::server::{check_state_dir, StateDirError, MAX_FAILURE_WINDOW};
use spike_keyserver::{local, ServeConfig, StartError};
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "spike-keyserver",
    version,
    about = "Spike's certificate authority for node identities",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Exit statuses, shown under every `--help`.
const EXIT_CODES: &str = "Durations need a unit: s, m, h or d, such as 90s, 15m, 24h or 30d.

Exit status: 0 on success; 2 for invalid arguments, or a state \
directory or output file that does not fit the command (fix the command line); 1 when the \
command fails while running (files, network, the keyserver rejecting a request).";

/// Signals, exit codes and logging of `serve`, shown after its options in `--help`.
const SERVE_HELP: &str = "\
Signals:
  SIGINT, SIGTERM  stop accepting connections and exit

Exit codes:
  0  clean stop after a signal
  1  runtime failure: the address is in use, CA files or the database fail
  2  invalid command line, or a state directory that is missing, unreadable, a file or
     holds no CA

Durations need a unit: s, m, h or d, such as 90s, 15m, 24h or 30d.

Logs go to stderr. RUST_LOG sets the filter (default: info), e.g. RUST_LOG=debug.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the CA (or import one) and the database in the state directory.
    Init {
        /// Directory for the CA and the database; created when missing.
        #[arg(long)]
        state_dir: PathBuf,
        /// PEM file of an existing CA certificate to import instead of creating a CA.
        #[arg(long, requires = "import_ca_key")]
        import_ca_cert: Option<PathBuf>,
        /// PEM file of the key of the imported CA certificate.
        #[arg(long, requires = "import_ca_cert")]
        import_ca_key: Option<PathBuf>,
        /// Also issue an admin certificate for this name.
        #[arg(long, requires = "admin_out")]
        admin: Option<String>,
        /// Directory for the admin's NAME.pem and NAME.key; existing files are never
        /// replaced.
        #[arg(long, requires = "admin")]
        admin_out: Option<PathBuf>,
        /// Validity of the admin certificate, such as 30d or 12h (at most 3650d).
        #[arg(long, default_value = "30d", value_parser = lifetime)]
        admin_lifetime: Duration,
    },
    /// Issue an admin client certificate (writes NAME.pem and NAME.key).
    AdminCert {
        /// State directory made by `spike-keyserver init`.
        #[arg(long)]
        state_dir: PathBuf,
        /// Admin name: a lower-case DNS label, such as alice.
        #[arg(long)]
        name: String,
        /// Directory for NAME.pem and NAME.key; existing files are never replaced.
        #[arg(long)]
        out_dir: PathBuf,
        /// Validity, such as 30d or 12h (at most 3650d).
        #[arg(long, default_value = "30d", value_parser = lifetime)]
        lifetime: Duration,
    },
    /// Print the SHA-256 fingerprint of the CA certificate, which nodes pin.
    Fingerprint {
        /// State directory made by `spike-keyserver init`.
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Run the keyserver.
    #[command(after_help = SERVE_HELP)]
    Serve(ServeArgs),
    /// Manage one-time tokens (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage principals (admin).
    #[command(subcommand)]
    Principal(PrincipalCommand),
    /// Inspect issued certificates (admin).
    #[command(subcommand)]
    Cert(CertCommand),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// State directory made by `spike-keyserver init`. serve never creates a CA: it exits
    /// with status 2 when the directory is missing, unreadable, a file or has no CA.
    #[arg(long)]
    state_dir: PathBuf,
    /// IP address and port to listen on, such as 127.0.0.1:7443 or [::1]:7443.
    #[arg(long, default_value = "127.0.0.1:7443", value_parser = socket_addr)]
    listen: SocketAddr,
    /// DNS name or IP address in the keyserver's server certificate; repeatable. Defaults
    /// to localhost, 127.0.0.1 and ::1.
    #[arg(long = "server-name")]
    server_names: Vec<String>,
    /// Domain appended to a principal for a second DNS name in its certificates.
    #[arg(long)]
    dns_suffix: Option<String>,
    /// Validity of node certificates, such as 24h or 30d (at most 3650d).
    #[arg(long, default_value = "24h", value_parser = lifetime)]
    cert_lifetime: Duration,
    /// Token lifetime when the admin gives none, such as 15m or 1h; at most
    /// --max-token-lifetime.
    #[arg(long, default_value = "1h", value_parser = lifetime)]
    token_lifetime: Duration,
    /// Maximum token lifetime an admin may request, such as 7d (at most 3650d).
    #[arg(long, default_value = "7d", value_parser = lifetime)]
    max_token_lifetime: Duration,
    /// Failed redemptions allowed per source address (IPv6: per /64) in each window.
    #[arg(long, default_value_t = 10)]
    max_failed_redemptions: u32,
    /// Length of the failed-redemption window, such as 90s or 5m (at most 1d).
    #[arg(long, default_value = "1m", value_parser = failure_window)]
    failure_window: Duration,
}

#[derive(Debug, Args)]
struct AdminArgs {
    /// Keyserver address, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:7443", value_parser = server_address)]
    server: String,
    /// Name to verify the keyserver's certificate against; defaults to the host of --server.
    #[arg(long)]
    server_name: Option<String>,
    /// CA certificate (ca.pem of the keyserver's state directory).
    #[arg(long)]
    ca_cert: PathBuf,
    /// Admin certificate, from `spike-keyserver admin-cert`.
    #[arg(long)]
    cert: PathBuf,
    /// Key of the admin certificate.
    #[arg(long)]
    key: PathBuf,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token; prints it once on standard output.
    Create {
        #[command(flatten)]
        admin: AdminArgs,
        /// Node name the token is for.
        #[arg(long)]
        principal: String,
        /// Address or CIDR the node must redeem from.
        #[arg(long)]
        source: Option<String>,
        /// Token lifetime, such as 15m or 2h (default: the keyserver's, one hour unless
        /// configured). The keyserver rejects values above its --max-token-lifetime.
        #[arg(long, value_parser = lifetime)]
        lifetime: Option<Duration>,
        /// Extra DNS name for the principal's certificates; repeatable. Replaces the
        /// names stored for the principal.
        #[arg(long = "dns-name")]
        dns_names: Vec<String>,
    },
    /// List outstanding tokens as JSON.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        /// Include used, expired and revoked tokens.
        #[arg(long)]
        all: bool,
    },
    /// Revoke an unused token by its id.
    ///
    /// Prints the token, its principal and the time of the revocation. A token revoked
    /// before is reported as such, with the earlier time, and the command exits 0, so
    /// that a retried revocation succeeds.
    Revoke {
        #[command(flatten)]
        admin: AdminArgs,
        /// Id of the token, as printed by `token create` and `token list`.
        #[arg(long)]
        token_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum PrincipalCommand {
    /// Revoke a principal: its tokens and renewals are rejected from then on.
    ///
    /// Prints the principal, the time of the revocation and how many unused tokens were
    /// revoked with it. A principal revoked before is reported as such, with the earlier
    /// time, and the command exits 0, so that a retried revocation succeeds.
    Revoke {
        #[command(flatten)]
        admin: AdminArgs,
        /// Name of the principal to revoke.
        #[arg(long)]
        principal: String,
    },
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// List issued certificates as JSON.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        /// Only the certificates of this principal.
        #[arg(long)]
        principal: Option<String>,
    },
}

/// Errors of the command line, each shown as one line on standard error.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Local(#[from] local::LocalError),
    #[error(transparent)]
    Start(#[from] spike_keyserver::StartError),
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    #[error(transparent)]
    Client(#[from] spike_keyproto::ClientError),
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
    #[error(transparent)]
    File(#[from] spike_keyserver::files::FileError),
    #[error("unexpected response from the keyserver: {0:?}")]
    Unexpected(Box<Response>),
    #[error("writing to standard output failed: {0}")]
    Stdout(std::io::Error),
    /// The keyserver keeps only a hash of a token, so one that could not be printed is lost
    /// and must be revoked.
    #[error("token {token_id} for {principal} was created, but writing it to standard output failed ({source}); it cannot be shown again, so revoke it with `spike-keyserver token revoke --token-id {token_id}` and the same --server, --ca-cert, --cert and --key, then create a new one")]
    TokenNotPrinted {
        token_id: String,
        principal: String,
        source: std::io::Error,
    },
}

/// Writes `text` and a newline to standard output and flushes it. A closed pipe or a full
/// disk comes back as an error, where `println!` would panic.
fn print_line(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")?;
    stdout.flush()
}

impl CliError {
    /// Returns whether the command line itself is at fault: invalid arguments, or a state
    /// directory or output file that does not fit the command. Rerunning the same command
    /// fails the same way, so a service manager should not restart it. Such errors exit
    /// with status 2, as clap does for invalid arguments.
    fn is_usage(&self) -> bool {
        matches!(
            self,
            CliError::Start(
                StartError::StateDir(_)
                    | StartError::OutOfRange { .. }
                    | StartError::DefaultTokenLifetimeAboveMax { .. }
            ) | CliError::StateDir(_)
                | CliError::Local(
                    local::LocalError::StateDir(_)
                        | local::LocalError::Policy(_)
                        | local::LocalError::NotADirectory { .. }
                        | local::LocalError::NotWritable { .. }
                        | local::LocalError::AdminFileExists { .. }
                        | local::LocalError::CaExists { .. }
                        | local::LocalError::Ca(CaError::NotACa { .. })
                )
        )
    }
}

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Parses a certificate or token lifetime, at most [`MAX_LIFETIME`].
fn lifetime(input: &str) -> Result<Duration, BoundedDurationError> {
    parse_duration_at_most(input, MAX_LIFETIME)
}

/// Parses the failed-redemption window, at most [`MAX_FAILURE_WINDOW`].
fn failure_window(input: &str) -> Result<Duration, BoundedDurationError> {
    parse_duration_at_most(input, MAX_FAILURE_WINDOW)
}

/// Parses an IP socket address. Its error explains that a host name is not accepted.
fn socket_addr(input: &str) -> Result<SocketAddr, String> {
    input.parse().map_err(|_| {
        format!(
            "{input:?} is not an IP address and port; pass an IP:PORT such as 127.0.0.1:7443 \
             or [::1]:7443 (host names are not resolved here)"
        )
    })
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

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("spike-keyserver: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spike-keyserver: {e}");
            if e.is_usage() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Init {
            state_dir,
            import_ca_cert,
            import_ca_key,
            admin,
            admin_out,
            admin_lifetime,
        } => {
            let import = match (import_ca_cert, import_ca_key) {
                (Some(cert), Some(key)) => Some((
                    spike_keyserver::files::read_text(&cert)?,
                    spike_keyserver::files::read_secret(&key)?,
                    cert,
                )),
                _ => None,
            };
            let import_refs = import
                .as_ref()
                .map(|(cert_pem, key_pem, cert_path)| CaImport {
                    cert_path,
                    cert_pem,
                    key_pem,
                });
            let admin_request =
                admin
                    .as_deref()
                    .zip(admin_out.as_deref())
                    .map(|(name, out_dir)| local::AdminRequest {
                        name,
                        out_dir,
                        lifetime: admin_lifetime,
                    });
            // Every output location is checked before the first write, and a later failure
            // removes what this run wrote, so a failed init leaves no half-made state.
            let done =
                local::init_with_admin(&state_dir, import_refs.as_ref(), admin_request.as_ref())?;
            let state = if done.created {
                "created"
            } else {
                "already present"
            };
            eprintln!("CA {state} in {}", state_dir.display());
            print_line(&done.ca.fingerprint()).map_err(CliError::Stdout)?;
            if let Some(files) = &done.admin {
                print_admin_files(files);
            }
            Ok(())
        }
        Command::AdminCert {
            state_dir,
            name,
            out_dir,
            lifetime,
        } => {
            print_admin_files(&local::issue_admin_cert(
                &state_dir, &name, lifetime, &out_dir,
            )?);
            Ok(())
        }
        Command::Fingerprint { state_dir } => {
            check_state_dir(&state_dir)?;
            let ca = spike_keyserver::ca::CertAuthority::load(&state_dir)
                .map_err(local::LocalError::from)?;
            print_line(&ca.fingerprint()).map_err(CliError::Stdout)?;
            Ok(())
        }
        Command::Serve(args) => serve(args).await,
        Command::Token(command) => token_command(command).await,
        Command::Principal(PrincipalCommand::Revoke { admin, principal }) => {
            let target = format!("principal {principal}");
            let response = admin_call(&admin, Request::RevokePrincipal { principal }).await?;
            print_revocation(&target, response)
        }
        Command::Cert(CertCommand::List { admin, principal }) => {
            match admin_call(&admin, Request::ListCerts { principal }).await? {
                Response::Certs { certs } => {
                    print_json(&certs.iter().map(CertRow::from).collect::<Vec<_>>())
                }
                other => Err(CliError::Unexpected(Box::new(other))),
            }
        }
    }
}

fn print_admin_files(files: &local::AdminFiles) {
    eprintln!(
        "admin certificate {} (serial {}) and key {} written",
        files.cert.display(),
        files.serial,
        files.key.display()
    );
    if files.shortened_to_ca_expiry {
        eprintln!(
            "the admin certificate ends at {}, when the CA certificate expires, before the \
             requested lifetime; replace the CA before then",
            rfc3339(files.not_after)
        );
    }
}

async fn serve(args: ServeArgs) -> Result<(), CliError> {
    let mut config = ServeConfig::new(args.state_dir);
    config.listen = args.listen;
    if !args.server_names.is_empty() {
        config.server_names = args.server_names;
    }
    config.dns_suffix = args.dns_suffix;
    config.cert_lifetime = args.cert_lifetime;
    config.default_token_lifetime = args.token_lifetime;
    config.max_token_lifetime = args.max_token_lifetime;
    config.max_failed_redemptions = args.max_failed_redemptions;
    config.failure_window = args.failure_window;

    let mut running = spike_keyserver::start(config).await?;
    // Scripts and tests read this line to learn the bound port and the CA fingerprint. A
    // service whose standard output is closed still serves, because the log has the same
    // facts.
    let listening = format!(
        "listening {} fingerprint {}",
        running.local_addr, running.ca_fingerprint
    );
    if let Err(e) = print_line(&listening) {
        warn!(error = %e, "cannot write the listening line to standard output");
    }

    let shutdown = running.shutdown_handle();
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        info!("stop signal received");
        let _ = shutdown.send(true);
    });
    running.wait().await;
    Ok(())
}

async fn wait_for_stop_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(e) => {
                error!(error = %e, "cannot listen for SIGTERM; stop the keyserver with Ctrl-C");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn token_command(command: TokenCommand) -> Result<(), CliError> {
    match command {
        TokenCommand::Create {
            admin,
            principal,
            source,
            lifetime,
            dns_names,
        } => {
            let request = Request::CreateToken {
                principal,
                source_cidr: source,
                lifetime_secs: lifetime.map(|d| d.as_secs()),
                dns_names,
            };
            match admin_call(&admin, request).await? {
                Response::TokenCreated(created) => {
                    eprintln!(
                        "token {} for {} expires at {}; it is shown only now",
                        created.token_id,
                        created.principal,
                        rfc3339_and_unix(created.expires_at)
                    );
                    print_line(&created.token).map_err(|source| CliError::TokenNotPrinted {
                        token_id: created.token_id.clone(),
                        principal: created.principal.clone(),
                        source,
                    })
                }
                other => Err(CliError::Unexpected(Box::new(other))),
            }
        }
        TokenCommand::List { admin, all } => {
            match admin_call(&admin, Request::ListTokens { all }).await? {
                Response::Tokens { tokens } => {
                    print_json(&tokens.iter().map(TokenRow::from).collect::<Vec<_>>())
                }
                other => Err(CliError::Unexpected(Box::new(other))),
            }
        }
        TokenCommand::Revoke { admin, token_id } => {
            let target = format!("token {token_id}");
            let response = admin_call(&admin, Request::RevokeToken { token_id }).await?;
            print_revocation(&target, response)
        }
    }
}

/// Prints one line on what a revoke command did to `target` (such as `token ID`).
fn print_revocation(target: &str, response: Response) -> Result<(), CliError> {
    let revocation = match response {
        Response::Done { revocation } => revocation,
        other => return Err(CliError::Unexpected(Box::new(other))),
    };
    print_line(&revocation_line(target, revocation.as_ref())).map_err(CliError::Stdout)
}

/// Returns the line that [`print_revocation`] prints. A keyserver that predates revocation
/// details reports success only, hence the `None` case.
fn revocation_line(target: &str, revocation: Option<&Revocation>) -> String {
    let Some(revocation) = revocation else {
        return format!("{target} revoked (the keyserver does not report when)");
    };
    let at = rfc3339(revocation.revoked_at);
    let owner = match &revocation.token_id {
        Some(_) => format!(" of principal {}", revocation.principal),
        None => String::new(),
    };
    if revocation.already_revoked {
        return format!("{target}{owner} was already revoked at {at}; nothing changed");
    }
    match revocation.tokens_revoked {
        0 => format!("{target}{owner} revoked at {at}"),
        1 => format!("{target} revoked at {at}, with its 1 unused token"),
        n => format!("{target} revoked at {at}, with its {n} unused tokens"),
    }
}

/// A token as `token list` prints it: times in RFC 3339 UTC, which operators read and
/// which sort as text (jq's `fromdate` parses them), instead of the wire's Unix seconds.
#[derive(Debug, serde::Serialize)]
struct TokenRow<'a> {
    token_id: &'a str,
    principal: &'a str,
    source_cidr: Option<&'a str>,
    created_at: String,
    expires_at: String,
    status: TokenStatus,
}

impl<'a> From<&'a TokenInfo> for TokenRow<'a> {
    fn from(token: &'a TokenInfo) -> Self {
        Self {
            token_id: &token.token_id,
            principal: &token.principal,
            source_cidr: token.source_cidr.as_deref(),
            created_at: rfc3339(token.created_at),
            expires_at: rfc3339(token.expires_at),
            status: token.status,
        }
    }
}

/// A certificate as `cert list` prints it, with times in RFC 3339 UTC.
#[derive(Debug, serde::Serialize)]
struct CertRow<'a> {
    serial: &'a str,
    principal: &'a str,
    kind: CertKind,
    not_before: String,
    not_after: String,
    issued_at: String,
    principal_revoked: bool,
}

impl<'a> From<&'a CertInfo> for CertRow<'a> {
    fn from(cert: &'a CertInfo) -> Self {
        Self {
            serial: &cert.serial,
            principal: &cert.principal,
            kind: cert.kind,
            not_before: rfc3339(cert.not_before),
            not_after: rfc3339(cert.not_after),
            issued_at: rfc3339(cert.issued_at),
            principal_revoked: cert.principal_revoked,
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let text =
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("\"cannot encode: {e}\""));
    print_line(&text).map_err(CliError::Stdout)
}

async fn admin_call(admin: &AdminArgs, request: Request) -> Result<Response, CliError> {
    let config = admin_tls_config(&admin.ca_cert, &admin.cert, &admin.key)?;
    let server_name = admin
        .server_name
        .clone()
        .unwrap_or_else(|| host_of(&admin.server).to_string());
    Ok(call(
        Arc::new(config),
        &admin.server,
        &server_name,
        &request,
        CALL_TIMEOUT,
    )
    .await?)
}

fn admin_tls_config(ca: &Path, cert: &Path, key: &Path) -> Result<rustls::ClientConfig, CliError> {
    let ca_pem = spike_keyserver::files::read_text(ca)?;
    let cert_pem = spike_keyserver::files::read_text(cert)?;
    let key_pem = spike_keyserver::files::read_secret(key)?;
    let ca_name = format!("--ca-cert {}", ca.display());
    let cert_name = format!("--cert {}", cert.display());
    let key_name = format!("--key {}", key.display());
    let ca_der = tls::certs_from_pem(&ca_pem, &ca_name)?.remove(0);
    let identity = ClientIdentity {
        chain: tls::certs_from_pem(&cert_pem, &cert_name)?,
        key: tls::key_from_pem(&key_pem, &key_name)?,
    };
    let files = IdentityFiles {
        ca: &ca_name,
        cert: &cert_name,
        key: &key_name,
    };
    Ok(tls::client_config_from_files(ca_der, identity, files)?)
}
