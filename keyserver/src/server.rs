//! The TLS service: accepts connections, authenticates clients by certificate, and runs
//! each request against the store.
//!
//! Clients may connect without a certificate (redemption needs none). When they present
//! one it must chain to the keyserver's CA and be unexpired, which rustls checks during the handshake. The keyserver then looks its role up in the database by fingerprint, so
//! a revoked principal loses access at once even though its certificate is still valid.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use rcgen::{CertificateSigningRequestParams, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use spike_keyproto::duration::format_duration;
use spike_keyproto::tls::provider;
use spike_keyproto::utc::rfc3339;
use spike_keyproto::wire::{
    read_frame, write_frame, CertKind, CreatedToken, IssuedCert, Request, Response,
};
use time::OffsetDateTime;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::ca::{CaError, CertAuthority, Profile, CA_CERT_FILE, CA_KEY_FILE, MAX_LIFETIME};
use crate::error::OpError;
use crate::policy::{self, canonical_ip, SourceNet};
use crate::ratelimit::FailureLimiter;
use crate::store::{expiry, AuditEntry, IssuePolicy, PeerRecord, Store, StoreError, TokenRequest};
use crate::token;

/// Time a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a connection may stay idle between requests.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests served on one connection before the keyserver closes it.
const MAX_REQUESTS_PER_CONNECTION: usize = 64;
/// Connections served at once; further ones wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 1024;

/// Settings of a running keyserver.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Directory of the CA files and the database.
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    /// DNS names and IP addresses in the keyserver's own server certificate.
    pub server_names: Vec<String>,
    /// Domain appended to principal names for a second DNS name in node certificates.
    pub dns_suffix: Option<String>,
    /// Validity of node certificates.
    pub cert_lifetime: Duration,
    /// Token lifetime when the admin gives none.
    pub default_token_lifetime: Duration,
    /// Maximum token lifetime an admin may request.
    pub max_token_lifetime: Duration,
    /// Failed redemptions a source may make per `failure_window`.
    pub max_failed_redemptions: u32,
    pub failure_window: Duration,
    /// Validity of the keyserver's server certificate; it is re-issued at a third of it.
    pub server_cert_lifetime: Duration,
}

impl ServeConfig {
    /// Default settings for `state_dir`: listen on 127.0.0.1:7443, one-day node
    /// certificates, one-hour tokens (at most seven days), 10 failed redemptions per
    /// source and minute.
    pub fn new(state_dir: PathBuf) -> Self {
        Self {
            state_dir,
            listen: SocketAddr::from(([127, 0, 0, 1], 7443)),
            server_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            dns_suffix: None,
            cert_lifetime: Duration::from_secs(86_400),
            default_token_lifetime: Duration::from_secs(3600),
            max_token_lifetime: Duration::from_secs(7 * 86_400),
            max_failed_redemptions: 10,
            failure_window: Duration::from_secs(60),
            server_cert_lifetime: Duration::from_secs(30 * 86_400),
        }
    }
}

/// A state directory that `init` did not make, or that this user cannot read. Every
/// command reports it the same way, as a usage error.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("state directory {dir} does not exist; create the CA with `spike-keyserver init --state-dir {dir}` or pass the directory that holds ca.pem", dir = .0.display())]
    Missing(PathBuf),
    #[error("state directory {dir} is a file, not a directory; pass the directory that holds ca.pem and ca.key", dir = .0.display())]
    IsFile(PathBuf),
    #[error("state directory {dir} holds no CA (ca.pem and ca.key); create one with `spike-keyserver init --state-dir {dir}` or pass the directory that holds them", dir = .0.display())]
    NoCa(PathBuf),
    #[error("state directory {dir} cannot be read: {source}; run the command as the keyserver's user (the directory is mode 0700) or pass the directory that holds ca.pem", dir = .dir.display())]
    Unreadable {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Errors of starting the keyserver.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    #[error("{setting} of {value} is outside 1s to {max}; pass a value in that range")]
    OutOfRange {
        setting: &'static str,
        value: String,
        max: String,
    },
    #[error("default token lifetime (--token-lifetime) {default} is longer than the maximum token lifetime (--max-token-lifetime) {max}; lower the first or raise the second")]
    DefaultTokenLifetimeAboveMax { default: String, max: String },
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("issuing the keyserver's server certificate failed: {0}")]
    ServerCert(#[from] OpError),
    #[error("TLS configuration failed: {0}")]
    Tls(String),
    #[error("TLS configuration with the CA certificate {ca} failed: {reason}; check that it is a CA certificate or import another CA", ca = .ca.display())]
    CaTls { ca: PathBuf, reason: String },
    #[error("cannot listen on {addr}: {source}; pick a free address with --listen")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

struct Shared {
    ca: CertAuthority,
    store: Mutex<Store>,
    limiter: Mutex<FailureLimiter>,
    config: ServeConfig,
    issue: IssuePolicy,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave a transaction half-applied (SQLite
        // rolls it back when the Transaction drops), so the store stays usable.
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn limiter(&self) -> MutexGuard<'_, FailureLimiter> {
        self.limiter
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A keyserver serving on a socket, until [`RunningKeyserver::stop`].
#[derive(Debug)]
pub struct RunningKeyserver {
    pub local_addr: SocketAddr,
    /// Hex SHA-256 of the CA certificate, which nodes pin.
    pub ca_fingerprint: String,
    pub ca_pem: String,
    shutdown: watch::Sender<bool>,
    accept_task: JoinHandle<()>,
    refresh_task: JoinHandle<()>,
}

impl RunningKeyserver {
    /// Stops accepting connections. Requests already being served finish on their own.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.accept_task.await;
        self.refresh_task.abort();
    }

    /// Waits until the accept loop ends, which happens only after [`Self::stop`] or a
    /// fatal accept error.
    pub async fn wait(&mut self) {
        let _ = (&mut self.accept_task).await;
    }

    /// Returns a sender that stops the keyserver when sent `true`.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Holder of the current server certificate, swapped when it is re-issued.
#[derive(Debug)]
struct ServerCertSlot {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ServerCertSlot {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// Maximum failed-redemption window: a day. Longer windows would lock a source out for
/// days after a few typos, and the window is added to `Instant`s, which must not overflow.
pub const MAX_FAILURE_WINDOW: Duration = Duration::from_secs(86_400);

impl ServeConfig {
    /// Checks that every duration is in range and that the default token lifetime does not
    /// exceed the maximum one, so that a contradictory configuration fails at start
    /// rather than on the first token request.
    ///
    /// # Errors
    ///
    /// [`StartError::OutOfRange`] naming the setting, or
    /// [`StartError::DefaultTokenLifetimeAboveMax`].
    pub fn validate(&self) -> Result<(), StartError> {
        let limits = [
            (
                "certificate lifetime (--cert-lifetime)",
                self.cert_lifetime,
                MAX_LIFETIME,
            ),
            (
                "token lifetime (--token-lifetime)",
                self.default_token_lifetime,
                MAX_LIFETIME,
            ),
            (
                "maximum token lifetime (--max-token-lifetime)",
                self.max_token_lifetime,
                MAX_LIFETIME,
            ),
            (
                "failure window (--failure-window)",
                self.failure_window,
                MAX_FAILURE_WINDOW,
            ),
            (
                "server certificate lifetime",
                self.server_cert_lifetime,
                MAX_LIFETIME,
            ),
        ];
        for (setting, value, max) in limits {
            if value.is_zero() || value > max {
                return Err(StartError::OutOfRange {
                    setting,
                    value: format_duration(value),
                    max: format_duration(max),
                });
            }
        }
        if self.default_token_lifetime > self.max_token_lifetime {
            return Err(StartError::DefaultTokenLifetimeAboveMax {
                default: format_duration(self.default_token_lifetime),
                max: format_duration(self.max_token_lifetime),
            });
        }
        Ok(())
    }
}

/// Checks that `dir` is a readable directory holding at least one CA file, so that a
/// wrong path gets a message naming it rather than a file error about ca.pem.
///
/// # Errors
///
/// A [`StateDirError`] naming the directory.
pub fn check_state_dir(dir: &Path) -> Result<(), StateDirError> {
    let unreadable = |source| StateDirError::Unreadable {
        dir: dir.to_path_buf(),
        source,
    };
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StateDirError::Missing(dir.to_path_buf()));
        }
        Err(e) => return Err(unreadable(e)),
        Ok(meta) if !meta.is_dir() => return Err(StateDirError::IsFile(dir.to_path_buf())),
        Ok(_) => {}
    }
    // try_exists, unlike exists, reports an error for a directory this user may not
    // search, instead of calling it one without a CA.
    let cert = dir.join(CA_CERT_FILE).try_exists().map_err(unreadable)?;
    let key = dir.join(CA_KEY_FILE).try_exists().map_err(unreadable)?;
    if !cert && !key {
        return Err(StateDirError::NoCa(dir.to_path_buf()));
    }
    Ok(())
}

/// Loads the CA, opens the database and starts serving on `config.listen`.
///
/// The CA is never created here: a mistyped state directory would otherwise get a second
/// CA, and certificates issued under the first (admin certificates, pinned fingerprints)
/// would stop working. `spike-keyserver init` creates it.
///
/// # Errors
///
/// The errors of [`ServeConfig::validate`]. [`StartError::StateDir`] when the state
/// directory was not made by `init` or cannot be read. Other variants of [`StartError`]
/// when a later step fails.
pub async fn start(config: ServeConfig) -> Result<RunningKeyserver, StartError> {
    config.validate()?;
    check_state_dir(&config.state_dir)?;
    let ca = CertAuthority::load(&config.state_dir)?;
    let store = Store::open(&config.state_dir)?;

    let shared = Arc::new(Shared {
        issue: IssuePolicy {
            dns_suffix: config.dns_suffix.clone(),
            cert_lifetime: config.cert_lifetime,
        },
        limiter: Mutex::new(FailureLimiter::new(
            config.max_failed_redemptions,
            config.failure_window,
        )),
        store: Mutex::new(store),
        ca,
        config,
    });

    // The client verifier and the listener come before the server certificate is issued,
    // so a start that fails there (an address in use, say) records no certificate.
    let client_verifier = client_verifier(&shared)?;
    let listen = shared.config.listen;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: listen,
        source,
    })?;

    let slot = Arc::new(ServerCertSlot {
        current: RwLock::new(issue_server_cert(&shared)?),
    });
    let acceptor = TlsAcceptor::from(Arc::new(server_tls_config(client_verifier, slot.clone())?));
    info!(%local_addr, fingerprint = %shared.ca.fingerprint(), "keyserver listening");

    let (shutdown, shutdown_rx) = watch::channel(false);
    let refresh_task = tokio::spawn(refresh_server_cert(shared.clone(), slot));
    let ca_fingerprint = shared.ca.fingerprint();
    let ca_pem = shared.ca.cert_pem().to_string();
    let accept_task = tokio::spawn(accept_loop(shared, listener, acceptor, shutdown_rx));
    Ok(RunningKeyserver {
        local_addr,
        ca_fingerprint,
        ca_pem,
        shutdown,
        accept_task,
        refresh_task,
    })
}

/// Builds the verifier of client certificates: optional, and chaining to the CA.
fn client_verifier(shared: &Shared) -> Result<Arc<dyn ClientCertVerifier>, StartError> {
    let ca_error = |reason: String| StartError::CaTls {
        ca: shared.config.state_dir.join(CA_CERT_FILE),
        reason,
    };
    let mut roots = RootCertStore::empty();
    roots
        .add(shared.ca.cert_der().clone())
        .map_err(|e| ca_error(e.to_string()))?;
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| ca_error(e.to_string()))
}

fn server_tls_config(
    client_verifier: Arc<dyn ClientCertVerifier>,
    slot: Arc<ServerCertSlot>,
) -> Result<rustls::ServerConfig, StartError> {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_client_cert_verifier(client_verifier)
        .with_cert_resolver(slot);
    Ok(config)
}

/// Issues a server certificate under the CA with a fresh key, and records it.
fn issue_server_cert(shared: &Shared) -> Result<Arc<CertifiedKey>, StartError> {
    let key = KeyPair::generate().map_err(CaError::from)?;
    let profile = Profile::Server {
        names: shared.config.server_names.clone(),
    };
    let signed = shared.ca.sign(
        &key,
        &profile,
        OffsetDateTime::now_utc(),
        shared.config.server_cert_lifetime,
    )?;
    shared
        .store()
        .record_issued(&signed, &profile, "keyserver")?;

    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing_key = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| StartError::Tls(e.to_string()))?;
    // The CA certificate follows the leaf so that a node holding only the CA's
    // fingerprint can find and pin it.
    let chain = vec![
        CertificateDer::from(signed.der.clone()),
        shared.ca.cert_der().clone(),
    ];
    if signed.shortened_to_ca_expiry {
        warn!(
            serial = %signed.serial,
            not_after = %rfc3339(signed.not_after),
            "server certificate cut to end with the CA certificate; replace the CA before then"
        );
    }
    info!(serial = %signed.serial, not_after = %rfc3339(signed.not_after), "issued keyserver server certificate");
    Ok(Arc::new(CertifiedKey::new(chain, signing_key)))
}

async fn refresh_server_cert(shared: Arc<Shared>, slot: Arc<ServerCertSlot>) {
    let period = shared.config.server_cert_lifetime / 3;
    let retry = Duration::from_secs(60).min(period);
    let mut wait = period;
    loop {
        tokio::time::sleep(wait).await;
        let issued = {
            let shared = shared.clone();
            tokio::task::spawn_blocking(move || issue_server_cert(&shared)).await
        };
        match issued {
            Ok(Ok(key)) => {
                *slot.current.write().unwrap_or_else(|p| p.into_inner()) = key;
                wait = period;
            }
            Ok(Err(e)) => {
                warn!(error = %e, retry_in_secs = retry.as_secs(), "re-issuing the server certificate failed");
                wait = retry;
            }
            Err(e) => {
                warn!(error = %e, retry_in_secs = retry.as_secs(), "server certificate task failed");
                wait = retry;
            }
        }
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => {
                info!("keyserver stopped accepting connections");
                return;
            }
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Usually a transient shortage (file descriptors); back off briefly.
                warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };

        let shared = shared.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            serve_connection(shared, acceptor, tcp, peer).await;
            drop(permit);
        });
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
) {
    let _ = tcp.set_nodelay(true);
    let mut tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let peer_cert: Option<Vec<u8>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| cert.to_vec());
    let source = canonical_ip(peer.ip());

    for _ in 0..MAX_REQUESTS_PER_CONNECTION {
        let request: Request = match tokio::time::timeout(IDLE_TIMEOUT, read_frame(&mut tls)).await
        {
            Ok(Ok(Some(request))) => request,
            Ok(Ok(None)) | Err(_) => return,
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "unreadable request");
                let response = Response::Error {
                    code: spike_keyproto::ErrorCode::BadRequest,
                    message: format!("unreadable request: {e}"),
                };
                let _ = write_frame(&mut tls, &response).await;
                return;
            }
        };

        let worker = shared.clone();
        let cert = peer_cert.clone();
        let handled = tokio::task::spawn_blocking(move || {
            handle_request(&worker, request, source, cert.as_deref())
        })
        .await;
        let response = handled.unwrap_or_else(|e| {
            warn!(%peer, error = %e, "request handler panicked");
            Response::Error {
                code: spike_keyproto::ErrorCode::Internal,
                message: "internal keyserver error; the keyserver log has the details".into(),
            }
        });
        if let Err(e) = write_frame(&mut tls, &response).await {
            // The client is gone. An issued certificate stays recorded; the node can renew
            // or be given a new token.
            debug!(%peer, error = %e, "writing the response failed");
            return;
        }
    }
}

/// Runs one request to completion, logging and auditing failures.
fn handle_request(
    shared: &Shared,
    request: Request,
    source: IpAddr,
    peer_cert: Option<&[u8]>,
) -> Response {
    let operation = request.operation();
    let result = match request {
        Request::Redeem { token, csr_pem } => redeem(shared, &token, &csr_pem, source),
        Request::Renew { csr_pem } => renew(shared, &csr_pem, source, peer_cert),
        admin_request => admin(shared, admin_request, source, peer_cert),
    };

    match result {
        Ok(response) => response,
        Err(e) => {
            warn!(operation, %source, code = ?e.code(), error = %e, "request rejected");
            let entry = AuditEntry {
                operation: operation.to_string(),
                source: Some(source.to_string()),
                result: format!("{:?}", e.code()),
                detail: Some(e.to_string()),
                ..AuditEntry::default()
            };
            if let Err(audit_error) = shared.store().audit(&entry) {
                warn!(operation, error = %audit_error, "writing the audit entry of a rejection failed");
            }
            Response::Error {
                code: e.code(),
                message: e.client_message(),
            }
        }
    }
}

fn parse_csr(csr_pem: &str) -> Result<CertificateSigningRequestParams, OpError> {
    CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| match e {
        rcgen::Error::InvalidCertificationRequestSignature => OpError::CsrSignatureInvalid,
        other => OpError::CsrInvalid {
            reason: other.to_string(),
        },
    })
}

fn redeem(
    shared: &Shared,
    token_text: &str,
    csr_pem: &str,
    source: IpAddr,
) -> Result<Response, OpError> {
    let now = Instant::now();
    if let Err(retry_after) = shared.limiter().check(source, now) {
        return Err(OpError::RateLimited {
            address: source,
            retry_after_secs: retry_after.as_secs().max(1),
        });
    }

    let result = (|| {
        let parsed = token::parse(token_text).ok_or(OpError::TokenUnknown)?;
        let csr = parse_csr(csr_pem)?;
        shared.store().redeem(
            &shared.ca,
            &parsed,
            &csr.public_key,
            source,
            &shared.issue,
            OffsetDateTime::now_utc(),
        )
    })();

    match result {
        Ok((principal, signed)) => {
            info!(%principal, %source, serial = %signed.serial, "token redeemed");
            Ok(issued_response(shared, principal, signed))
        }
        Err(e) => {
            if e.counts_as_failed_redemption() {
                shared.limiter().record_failure(source, now);
            }
            Err(e)
        }
    }
}

fn renew(
    shared: &Shared,
    csr_pem: &str,
    source: IpAddr,
    peer_cert: Option<&[u8]>,
) -> Result<Response, OpError> {
    let peer = identify(shared, peer_cert, CertKind::Node, "renew")?;
    let csr = parse_csr(csr_pem)?;
    let signed = shared.store().renew(
        &shared.ca,
        &peer,
        &csr.public_key,
        source,
        &shared.issue,
        OffsetDateTime::now_utc(),
    )?;
    info!(principal = %peer.principal, %source, serial = %signed.serial, "certificate renewed");
    Ok(issued_response(shared, peer.principal, signed))
}

fn issued_response(shared: &Shared, principal: String, signed: crate::ca::SignedCert) -> Response {
    if signed.shortened_to_ca_expiry {
        warn!(
            %principal,
            serial = %signed.serial,
            not_after = %rfc3339(signed.not_after),
            "certificate cut to end with the CA certificate; replace the CA before then"
        );
    }
    Response::Issued(IssuedCert {
        principal,
        serial: signed.serial,
        cert_pem: signed.pem,
        ca_pem: shared.ca.cert_pem().to_string(),
        not_before: signed.not_before,
        not_after: signed.not_after,
        shortened_to_ca_expiry: signed.shortened_to_ca_expiry,
    })
}

/// Finds the holder of the client certificate and checks its kind and revocation.
fn identify(
    shared: &Shared,
    peer_cert: Option<&[u8]>,
    kind: CertKind,
    operation: &'static str,
) -> Result<PeerRecord, OpError> {
    let needed = match kind {
        CertKind::Admin => "an admin client certificate issued by this keyserver",
        _ => "a node client certificate issued by this keyserver",
    };
    let not_authorized = OpError::NotAuthorized { operation, needed };
    let Some(cert) = peer_cert else {
        return Err(not_authorized);
    };
    let Some(peer) = shared.store().identify(cert)? else {
        return Err(not_authorized);
    };
    if peer.kind != kind {
        return Err(not_authorized);
    }
    if peer.principal_revoked {
        return Err(OpError::PrincipalRevoked {
            principal: peer.principal,
        });
    }
    Ok(peer)
}

fn admin(
    shared: &Shared,
    request: Request,
    source: IpAddr,
    peer_cert: Option<&[u8]>,
) -> Result<Response, OpError> {
    let operation = request.operation();
    let admin = identify(shared, peer_cert, CertKind::Admin, operation)?.principal;
    let source_text = source.to_string();
    let now = OffsetDateTime::now_utc().unix_timestamp();

    let response = match request {
        Request::CreateToken {
            principal,
            source_cidr,
            lifetime_secs,
            dns_names,
        } => create_token(
            shared,
            &admin,
            &source_text,
            principal,
            source_cidr,
            lifetime_secs,
            dns_names,
        )?,
        Request::ListTokens { all } => Response::Tokens {
            tokens: shared.store().list_tokens(all, now)?,
        },
        Request::RevokeToken { token_id } => {
            let revocation = shared
                .store()
                .revoke_token(&token_id, &admin, &source_text, now)?;
            if !revocation.already_revoked {
                info!(%admin, principal = %revocation.principal, %token_id, "token revoked");
            }
            Response::Done {
                revocation: Some(revocation),
            }
        }
        Request::RevokePrincipal { principal } if principal == admin => {
            return Err(OpError::RevokeSelf { principal });
        }
        Request::RevokePrincipal { principal } => {
            let revocation =
                shared
                    .store()
                    .revoke_principal(&principal, &admin, &source_text, now)?;
            if !revocation.already_revoked {
                info!(%admin, %principal, tokens_revoked = revocation.tokens_revoked, "principal revoked");
            }
            Response::Done {
                revocation: Some(revocation),
            }
        }
        Request::ListCerts { principal } => Response::Certs {
            certs: shared.store().list_certs(principal.as_deref())?,
        },
        Request::Redeem { .. } | Request::Renew { .. } => unreachable!("dispatched before"),
    };

    if matches!(operation, "list_tokens" | "list_certs") {
        let entry = AuditEntry {
            operation: operation.to_string(),
            actor: Some(admin),
            source: Some(source_text),
            result: "ok".into(),
            ..AuditEntry::default()
        };
        shared.store().audit(&entry)?;
    }
    Ok(response)
}

fn create_token(
    shared: &Shared,
    admin: &str,
    source: &str,
    principal: String,
    source_cidr: Option<String>,
    lifetime_secs: Option<u64>,
    dns_names: Vec<String>,
) -> Result<Response, OpError> {
    policy::validate_principal(&principal)?;
    for name in &dns_names {
        policy::validate_dns_name(name)?;
    }
    let source_net = source_cidr
        .as_deref()
        .map(str::parse::<SourceNet>)
        .transpose()?;
    let lifetime = lifetime_secs
        .map(Duration::from_secs)
        .unwrap_or(shared.config.default_token_lifetime);
    if lifetime > shared.config.max_token_lifetime || lifetime.is_zero() {
        return Err(OpError::BadLifetime {
            requested_secs: lifetime.as_secs(),
            max_secs: shared.config.max_token_lifetime.as_secs(),
        });
    }

    let request = TokenRequest {
        principal,
        source_net,
        lifetime,
        dns_names,
        created_by: admin.to_string(),
        source: source.to_string(),
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let new = shared.store().create_token(&request, now)?;
    info!(%admin, principal = %request.principal, token_id = %new.id, "token created");
    Ok(Response::TokenCreated(CreatedToken {
        token: new.text,
        token_id: new.id,
        principal: request.principal,
        expires_at: expiry(now, lifetime),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_token_lifetime_above_maximum_rejected() {
        let mut config = ServeConfig::new(PathBuf::from("/nonexistent"));
        config.default_token_lifetime = Duration::from_secs(8 * 86_400);
        config.max_token_lifetime = Duration::from_secs(7 * 86_400);
        let error = config.validate().unwrap_err();
        assert_eq!(
            error.to_string(),
            "default token lifetime (--token-lifetime) 8d is longer than the maximum token \
             lifetime (--max-token-lifetime) 7d; lower the first or raise the second"
        );
    }

    #[test]
    fn oversized_durations_rejected() {
        let mut config = ServeConfig::new(PathBuf::from("/nonexistent"));
        config.cert_lifetime = Duration::from_secs(u64::MAX);
        assert!(matches!(
            config.validate(),
            Err(StartError::OutOfRange { setting, .. }) if setting.contains("--cert-lifetime")
        ));

        let mut config = ServeConfig::new(PathBuf::from("/nonexistent"));
        config.failure_window = Duration::from_secs(2 * 86_400);
        assert!(matches!(
            config.validate(),
            Err(StartError::OutOfRange { setting, .. }) if setting.contains("--failure-window")
        ));
    }

    #[test]
    fn default_config_is_valid() {
        assert!(ServeConfig::new(PathBuf::from("/nonexistent"))
            .validate()
            .is_ok());
    }
}
