//! Redemption of a one-time token and renewal of the node's certificate.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, DistinguishedName, KeyPair, PublicKeyData};
use ring::rand::{SecureRandom, SystemRandom};
use spike_keyproto::client::host_of;
use spike_keyproto::files::{self, FileError};
use spike_keyproto::tls::{self, ClientIdentity, IdentityFiles, TlsSetupError};
use spike_keyproto::utc::{rfc3339, rfc3339_and_unix};
use spike_keyproto::wire::IssuedCert;
use spike_keyproto::{call, ClientError, ErrorCode, Request, Response};
use tracing::{info, warn};

use crate::schedule::{renewal_delay, Backoff};

/// Errors of redeeming or renewing.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("generating the key or CSR failed: {0}")]
    Key(#[from] rcgen::Error),
    #[error("an identity already exists in {dir}; renew it instead, or remove cert.pem to redeem a new token")]
    IdentityExists { dir: PathBuf },
    #[error("no identity to renew in {dir}: it has no cert.pem; redeem a token first with `spike-bootstrap redeem --dir {dir}`")]
    NoIdentity { dir: PathBuf },
    #[error("the keyserver returned a CA certificate with fingerprint {got}, not the pinned {expected}; do not trust this keyserver")]
    CaMismatch { expected: String, got: String },
    #[error("the keyserver returned a certificate for a different public key than the CSR's; not storing it")]
    KeyMismatch,
    #[error("certificate {path} cannot be read: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("certificate {path} expired at {}; renewal needs a valid one, so redeem a new token", rfc3339_and_unix(*.not_after))]
    Expired { path: PathBuf, not_after: i64 },
    #[error("unexpected response from the keyserver: {0}")]
    Unexpected(String),
    #[error("the system random number generator failed")]
    Random,
}

impl BootstrapError {
    /// Returns whether retrying cannot help: the certificate expired, or the keyserver rejected
    /// the principal or the certificate.
    pub fn is_permanent(&self) -> bool {
        match self {
            BootstrapError::Expired { .. }
            | BootstrapError::KeyMismatch
            | BootstrapError::CaMismatch { .. } => true,
            BootstrapError::Client(e) => matches!(
                e.code(),
                Some(ErrorCode::PrincipalRevoked | ErrorCode::NotAuthorized)
            ),
            _ => false,
        }
    }
}

/// Files of a node identity in one directory.
#[derive(Debug, Clone)]
pub struct IdentityPaths {
    pub dir: PathBuf,
}

impl IdentityPaths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Private key, mode 0600.
    pub fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// Node certificate.
    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    /// CA certificate, pinned at redemption.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

/// A certificate the node holds.
#[derive(Debug, Clone)]
pub struct Identity {
    pub principal: String,
    pub serial: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
}

impl From<&IssuedCert> for Identity {
    fn from(issued: &IssuedCert) -> Self {
        Self {
            principal: issued.principal.clone(),
            serial: issued.serial.clone(),
            not_before: issued.not_before,
            not_after: issued.not_after,
        }
    }
}

/// Settings of a redemption.
#[derive(Clone)]
pub struct RedeemOptions {
    /// Keyserver address, HOST:PORT.
    pub server: String,
    /// Name the keyserver's certificate must carry; the host of `server` when `None`.
    pub server_name: Option<String>,
    /// SHA-256 of the CA certificate's DER encoding.
    pub ca_fingerprint: [u8; 32],
    /// The one-time token.
    pub token: String,
    pub paths: IdentityPaths,
    pub timeout: Duration,
}

impl fmt::Debug for RedeemOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedeemOptions")
            .field("server", &self.server)
            .field("server_name", &self.server_name)
            .field("ca_fingerprint", &tls::to_hex(&self.ca_fingerprint))
            .field("token", &"<redacted>")
            .field("paths", &self.paths)
            .finish()
    }
}

/// Settings of a renewal.
#[derive(Debug, Clone)]
pub struct RenewOptions {
    pub server: String,
    pub server_name: Option<String>,
    pub paths: IdentityPaths,
    pub timeout: Duration,
}

fn server_name(server: &str, configured: &Option<String>) -> String {
    configured
        .clone()
        .unwrap_or_else(|| host_of(server).to_string())
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn csr_pem(key: &KeyPair) -> Result<String, rcgen::Error> {
    // The CSR names nothing: the keyserver takes the names from its policy.
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.serialize_request(key)?.pem()
}

/// Redeems the token: generates the key, stores it, obtains the certificate and stores it
/// with the CA certificate. When it fails, the files and directories it created are
/// removed again (files that existed before stay), so that a failed redemption leaves no
/// key behind that the next attempt would have to explain.
///
/// # Errors
///
/// [`BootstrapError::IdentityExists`] when `cert.pem` is already there; otherwise the
/// failing step, including the keyserver's rejection as [`BootstrapError::Client`].
pub async fn redeem(options: &RedeemOptions) -> Result<Identity, BootstrapError> {
    let paths = &options.paths;
    if paths.cert().exists() {
        return Err(BootstrapError::IdentityExists {
            dir: paths.dir.clone(),
        });
    }
    let created = NewPaths::before(paths);
    let result = redeem_into(options).await;
    if result.is_err() {
        created.remove();
    }
    result
}

/// Identity files and directories that do not exist before a redemption.
struct NewPaths {
    files: Vec<PathBuf>,
    /// Deepest first, so that each is empty by the time it is removed.
    dirs: Vec<PathBuf>,
}

impl NewPaths {
    fn before(paths: &IdentityPaths) -> Self {
        let missing = |path: &Path| path.symlink_metadata().is_err();
        let mut files = vec![paths.key(), paths.cert(), paths.ca()];
        files.retain(|path| missing(path));
        let dirs = paths
            .dir
            .ancestors()
            .filter(|dir| !dir.as_os_str().is_empty())
            .take_while(|dir| missing(dir))
            .map(Path::to_path_buf)
            .collect();
        Self { files, dirs }
    }

    fn remove(self) {
        for path in self.files.iter().filter(|p| p.symlink_metadata().is_ok()) {
            if let Err(e) = std::fs::remove_file(path) {
                warn!(path = %path.display(), error = %e, "cannot remove a file of the failed redemption");
            }
        }
        // remove_dir leaves a directory that something else wrote into meanwhile.
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

async fn redeem_into(options: &RedeemOptions) -> Result<Identity, BootstrapError> {
    let paths = &options.paths;
    files::create_private_dir(&paths.dir)?;

    // The key is stored before the request, so a certificate the keyserver issues always
    // has its key on disk.
    let key = KeyPair::generate()?;
    files::write_atomic(&paths.key(), key.serialize_pem().as_bytes(), 0o600)?;

    let (config, verifier) = tls::pinned_client_config(options.ca_fingerprint)?;
    let request = Request::Redeem {
        token: options.token.clone(),
        csr_pem: csr_pem(&key)?,
    };
    let name = server_name(&options.server, &options.server_name);
    let response = call(
        Arc::new(config),
        &options.server,
        &name,
        &request,
        options.timeout,
    )
    .await?;
    let Response::Issued(issued) = response else {
        return Err(BootstrapError::Unexpected(format!("{response:?}")));
    };

    let ca_der = tls::certs_from_pem(&issued.ca_pem, "the issued CA certificate")?.remove(0);
    let got = tls::sha256(&ca_der);
    if got != options.ca_fingerprint || verifier.matched_ca().as_deref() != Some(ca_der.as_ref()) {
        return Err(BootstrapError::CaMismatch {
            expected: tls::to_hex(&options.ca_fingerprint),
            got: tls::to_hex(&got),
        });
    }
    check_public_key(&issued.cert_pem, &key)?;

    files::write_atomic(&paths.ca(), issued.ca_pem.as_bytes(), 0o644)?;
    files::write_atomic(&paths.cert(), issued.cert_pem.as_bytes(), 0o644)?;
    warn_if_shortened(&issued);
    info!(principal = %issued.principal, serial = %issued.serial, not_after = %rfc3339(issued.not_after), "identity issued");
    Ok(Identity::from(&issued))
}

/// Warns when the keyserver cut the certificate's validity to its CA's expiry: renewals
/// stop working then, until the keyserver has a new CA and the node a new token.
fn warn_if_shortened(issued: &IssuedCert) {
    if issued.shortened_to_ca_expiry {
        warn!(
            not_after = %rfc3339(issued.not_after),
            "the certificate ends with the keyserver's CA certificate; renewal fails after that \
             until the keyserver has a new CA and this node redeems a new token"
        );
    }
}

fn check_public_key(cert_pem: &str, key: &KeyPair) -> Result<(), BootstrapError> {
    let der = tls::certs_from_pem(cert_pem, "the issued certificate")?.remove(0);
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| BootstrapError::BadCertificate {
            path: PathBuf::from("<response>"),
            reason: e.to_string(),
        })?;
    if cert.public_key().raw == key.subject_public_key_info().as_slice() {
        Ok(())
    } else {
        Err(BootstrapError::KeyMismatch)
    }
}

/// Reads the validity of the certificate at `path`: `(not_before, not_after)` in Unix
/// seconds.
///
/// # Errors
///
/// [`BootstrapError::BadCertificate`] if it cannot be read or parsed.
pub fn read_validity(path: &Path) -> Result<(i64, i64), BootstrapError> {
    let bad = |reason: String| BootstrapError::BadCertificate {
        path: path.to_path_buf(),
        reason,
    };
    let pem = files::read_text(path)?;
    let der = tls::certs_from_pem(&pem, &path.display().to_string())
        .map_err(|e| bad(e.to_string()))?
        .remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| bad(e.to_string()))?;
    let validity = cert.validity();
    Ok((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

/// Renews the certificate once over mutual TLS with the current one, keeping the key, and
/// replaces `cert.pem`.
///
/// # Errors
///
/// [`BootstrapError::Expired`] when the current certificate has expired (only a new token
/// helps then); otherwise the failing step.
pub async fn renew_once(options: &RenewOptions) -> Result<Identity, BootstrapError> {
    let paths = &options.paths;
    if !paths.cert().exists() {
        return Err(BootstrapError::NoIdentity {
            dir: paths.dir.clone(),
        });
    }
    let (_, not_after) = read_validity(&paths.cert())?;
    if now_unix() >= not_after {
        return Err(BootstrapError::Expired {
            path: paths.cert(),
            not_after,
        });
    }

    let ca_pem = files::read_text(&paths.ca())?;
    let cert_pem = files::read_text(&paths.cert())?;
    let key_pem = files::read_secret(&paths.key())?;
    let key = KeyPair::from_pem(&key_pem)?;
    let ca_name = paths.ca().display().to_string();
    let cert_name = paths.cert().display().to_string();
    let key_name = paths.key().display().to_string();
    let identity = ClientIdentity {
        chain: tls::certs_from_pem(&cert_pem, &cert_name)?,
        key: tls::key_from_pem(&key_pem, &key_name)?,
    };
    let ca_der = tls::certs_from_pem(&ca_pem, &ca_name)?.remove(0);
    let files = IdentityFiles {
        ca: &ca_name,
        cert: &cert_name,
        key: &key_name,
    };
    let config = tls::client_config_from_files(ca_der, identity, files)?;

    let request = Request::Renew {
        csr_pem: csr_pem(&key)?,
    };
    let name = server_name(&options.server, &options.server_name);
    let response = call(
        Arc::new(config),
        &options.server,
        &name,
        &request,
        options.timeout,
    )
    .await?;
    let Response::Issued(issued) = response else {
        return Err(BootstrapError::Unexpected(format!("{response:?}")));
    };
    check_public_key(&issued.cert_pem, &key)?;

    files::write_atomic(&paths.cert(), issued.cert_pem.as_bytes(), 0o644)?;
    warn_if_shortened(&issued);
    // No log line here: `renew` prints the result, and the loop logs each renewal with its
    // next planned time.
    Ok(Identity::from(&issued))
}

fn random_fraction() -> Result<f64, BootstrapError> {
    let mut bytes = [0u8; 8];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| BootstrapError::Random)?;
    // 53 random bits give a uniform f64 in [0, 1).
    Ok((u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64)
}

/// Renews at two thirds of each certificate's validity until `stop` completes, or until
/// `max_renewals` renewals when given. Failed attempts are retried with `backoff`, never
/// past the certificate's expiry. Each renewal logs one line with the new expiry and the
/// next planned renewal. Returns the number of renewals.
///
/// # Errors
///
/// A permanent failure ([`BootstrapError::is_permanent`]), or the last error once the
/// certificate has expired.
pub async fn renew_loop(
    options: &RenewOptions,
    mut backoff: Backoff,
    max_renewals: Option<u64>,
    stop: impl Future<Output = ()>,
) -> Result<u64, BootstrapError> {
    tokio::pin!(stop);
    let (not_before, mut not_after) = read_validity(&options.paths.cert())?;
    let mut delay = renewal_delay(not_before, not_after, now_unix(), random_fraction()?);
    info!(
        renew_at = %planned_time(delay),
        not_after = %rfc3339(not_after),
        "waiting to renew"
    );
    let mut renewals = 0u64;
    while max_renewals.is_none_or(|max| renewals < max) {
        tokio::select! {
            // Biased: a stop that came during the previous attempt wins over a due renewal.
            biased;
            _ = &mut stop => return Ok(renewals),
            _ = tokio::time::sleep(delay) => {}
        }

        backoff.reset();
        let renewed = renew_with_retries(options, &mut backoff, not_after, stop.as_mut()).await?;
        let Some(identity) = renewed else {
            return Ok(renewals);
        };
        renewals += 1;
        not_after = identity.not_after;
        delay = renewal_delay(
            identity.not_before,
            identity.not_after,
            now_unix(),
            random_fraction()?,
        );
        info!(
            principal = %identity.principal,
            serial = %identity.serial,
            not_after = %rfc3339(identity.not_after),
            next_renewal = %planned_time(delay),
            "certificate renewed"
        );
    }
    Ok(renewals)
}

/// Renews once, retrying failures with `backoff` until the certificate that ends at
/// `not_after` expires. Returns `None` when `stop` completes first.
async fn renew_with_retries(
    options: &RenewOptions,
    backoff: &mut Backoff,
    not_after: i64,
    mut stop: Pin<&mut impl Future<Output = ()>>,
) -> Result<Option<Identity>, BootstrapError> {
    loop {
        let error = match renew_once(options).await {
            Ok(identity) => return Ok(Some(identity)),
            Err(e) if e.is_permanent() => return Err(e),
            Err(e) => e,
        };
        let left = not_after - now_unix();
        if left <= 0 {
            return Err(error);
        }
        let retry = backoff
            .next_delay(random_fraction()?)
            .min(Duration::from_secs(left as u64));
        warn!(error = %error, retry_in_ms = retry.as_millis() as u64, "renewal failed");
        tokio::select! {
            biased;
            _ = &mut stop => return Ok(None),
            _ = tokio::time::sleep(retry) => {}
        }
    }
}

/// Returns the time `delay` from now in RFC 3339.
fn planned_time(delay: Duration) -> String {
    let delay_secs = i64::try_from(delay.as_secs()).unwrap_or(i64::MAX);
    rfc3339(now_unix().saturating_add(delay_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_time_shown_as_rfc3339() {
        let error = BootstrapError::Expired {
            path: PathBuf::from("/identity/cert.pem"),
            not_after: 1_796_423_231,
        };
        assert_eq!(
            error.to_string(),
            "certificate /identity/cert.pem expired at 2026-12-04T22:27:11Z (Unix 1796423231); \
             renewal needs a valid one, so redeem a new token"
        );
    }
}
