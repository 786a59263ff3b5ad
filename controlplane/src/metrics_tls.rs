//! TLS of the metrics endpoint, with the node identity that `spike-bootstrap` writes.
//!
//! The server certificate comes from [`ReloadingIdentity`], which rereads `cert.pem` and
//! `key.pem` at most once a second after `cert.pem` changes, so a renewed certificate is
//! served to new connections without a restart. With `require_client_cert`, clients must
//! present a certificate signed by the identity's `ca.pem`, which is read once at start.
//! The crypto provider is ring, passed explicitly like everywhere in the workspace.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use spike_bootstrap::{BootstrapError, IdentityPaths, ReloadingIdentity};
use spike_keyproto::files::{self, FileError};
use spike_keyproto::tls::{self, provider};
use spike_keyproto::utc::rfc3339;
use thiserror::Error;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::config::MetricsTls;

/// A failure to set up TLS for the metrics endpoint, naming the file and the fix.
#[derive(Debug, Error)]
pub enum MetricsTlsError {
    /// The key or certificate is missing, unreadable or mismatched.
    #[error(
        "cannot load the metrics TLS identity from {dir}: {source}; write it with \
         `spike-bootstrap redeem`, or point controlplane.metrics_tls.identity_dir at the \
         directory that holds key.pem and cert.pem"
    )]
    Identity {
        dir: PathBuf,
        // Boxed because the bootstrap error, with the file names it carries, would make
        // every result of this module that large.
        source: Box<BootstrapError>,
    },
    /// `ca.pem` is missing or unreadable while client certificates are required.
    #[error(
        "cannot read the CA certificate {path} that verifies metrics clients: {source}; \
         `spike-bootstrap redeem` writes it, or set \
         controlplane.metrics_tls.require_client_cert = false"
    )]
    ClientCaRead { path: PathBuf, source: FileError },
    /// `ca.pem` contains no certificate that rustls accepts as a trust anchor.
    #[error(
        "invalid CA certificate {path} for verifying metrics clients: {reason}; replace it \
         with the keyserver's CA certificate in PEM"
    )]
    ClientCaInvalid { path: PathBuf, reason: String },
}

/// Builds the TLS acceptor of the metrics endpoint from `settings`.
///
/// # Errors
///
/// [`MetricsTlsError`] naming the identity file that cannot be used.
pub fn acceptor(settings: &MetricsTls) -> Result<TlsAcceptor, MetricsTlsError> {
    let paths = IdentityPaths::new(&settings.identity_dir);
    let identity_error = |source| MetricsTlsError::Identity {
        dir: settings.identity_dir.clone(),
        source: Box::new(source),
    };
    let identity = ReloadingIdentity::load(paths.clone()).map_err(identity_error)?;
    log_validity(&paths);

    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| identity_error(tls::TlsSetupError::from(e).into()))?;
    let builder = if settings.require_client_cert {
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(client_roots(&paths)?),
            provider(),
        )
        .build()
        .map_err(|e| MetricsTlsError::ClientCaInvalid {
            path: paths.ca(),
            reason: e.to_string(),
        })?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder.with_cert_resolver(Arc::new(identity));

    info!(
        identity_dir = %settings.identity_dir.display(),
        require_client_cert = settings.require_client_cert,
        "the metrics endpoint serves HTTPS"
    );
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Reads the trust anchors for client certificates from `ca.pem`.
fn client_roots(paths: &IdentityPaths) -> Result<RootCertStore, MetricsTlsError> {
    let path = paths.ca();
    let pem = files::read_text(&path).map_err(|source| MetricsTlsError::ClientCaRead {
        path: path.clone(),
        source,
    })?;
    let invalid = |reason: String| MetricsTlsError::ClientCaInvalid {
        path: path.clone(),
        reason,
    };
    let certs = tls::certs_from_pem(&pem, &path.display().to_string())
        .map_err(|e| invalid(e.to_string()))?;

    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| invalid(e.to_string()))?;
    }
    Ok(roots)
}

/// Logs the validity of the certificate served first, and warns when it has expired,
/// because clients then reject every connection until a renewal replaces it.
fn log_validity(paths: &IdentityPaths) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    match spike_bootstrap::read_validity(&paths.cert()) {
        Ok((_, not_after)) if not_after <= now => warn!(
            cert = %paths.cert().display(),
            not_after = %rfc3339(not_after),
            "the metrics TLS certificate has expired; renew it with `spike-bootstrap renew` \
             or redeem a new token"
        ),
        Ok((_, not_after)) => info!(
            cert = %paths.cert().display(),
            not_after = %rfc3339(not_after),
            "loaded the metrics TLS certificate"
        ),
        Err(error) => warn!(%error, "cannot read the validity of the metrics TLS certificate"),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;
    use std::time::Duration;

    use prometheus_client::registry::Registry;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, SerialNumber,
    };
    use rustls::pki_types::{CertificateDer, ServerName};
    use spike_keyproto::tls::ClientIdentity;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;
    use tokio_rustls::TlsConnector;

    use super::*;
    use crate::http;

    /// Upper bound of one client exchange with the test server.
    const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

    /// A test CA that issues server and client certificates.
    struct TestCa {
        issuer: Issuer<'static, KeyPair>,
        der: CertificateDer<'static>,
        pem: String,
    }

    impl TestCa {
        fn new(name: &str) -> TestCa {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            let cert = params.self_signed(&key).unwrap();
            TestCa {
                der: cert.der().clone(),
                pem: cert.pem(),
                issuer: Issuer::new(params, key),
            }
        }

        /// Issues a certificate for `localhost` with `serial` and `usage`.
        fn issue(&self, key: &KeyPair, serial: u64, usage: ExtendedKeyUsagePurpose) -> String {
            let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            params.serial_number = Some(SerialNumber::from(serial));
            params.extended_key_usages = vec![usage];
            params.signed_by(key, &self.issuer).unwrap().pem()
        }

        fn client_identity(&self) -> ClientIdentity {
            let key = KeyPair::generate().unwrap();
            let pem = self.issue(&key, 900, ExtendedKeyUsagePurpose::ClientAuth);
            ClientIdentity {
                chain: tls::certs_from_pem(&pem, "client cert").unwrap(),
                key: tls::key_from_pem(&key.serialize_pem(), "client key").unwrap(),
            }
        }
    }

    /// Writes an identity directory as spike-bootstrap does, with `serial` on the
    /// certificate.
    fn write_identity(dir: &Path, ca: &TestCa, key: &KeyPair, serial: u64) {
        let cert = ca.issue(key, serial, ExtendedKeyUsagePurpose::ServerAuth);
        let paths = IdentityPaths::new(dir);
        files::write_atomic(&paths.key(), key.serialize_pem().as_bytes(), 0o600).unwrap();
        files::write_atomic(&paths.ca(), ca.pem.as_bytes(), 0o644).unwrap();
        files::write_atomic(&paths.cert(), cert.as_bytes(), 0o644).unwrap();
    }

    async fn start_server(settings: &MetricsTls) -> (SocketAddr, JoinHandle<()>) {
        let acceptor = acceptor(settings).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let ready: http::Readiness = Arc::new(|| Ok(()));
        let server = tokio::spawn(http::serve(
            listener,
            Arc::new(Registry::default()),
            ready,
            Some(acceptor),
        ));
        (address, server)
    }

    /// Sends `GET /metrics` and returns the response and the serial of the server's
    /// certificate.
    async fn get_metrics(
        address: SocketAddr,
        ca: &TestCa,
        identity: Option<ClientIdentity>,
    ) -> std::io::Result<(String, Vec<u8>)> {
        let config = tls::client_config(ca.der.clone(), identity).unwrap();
        let connector = TlsConnector::from(Arc::new(config));
        let exchange = async {
            let tcp = TcpStream::connect(address).await?;
            let name = ServerName::try_from("localhost").unwrap();
            let mut stream = connector.connect(name, tcp).await?;
            let served = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
            let (_, parsed) = x509_parser::parse_x509_certificate(&served).unwrap();
            let serial = parsed.raw_serial().to_vec();

            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await?;
            let mut response = String::new();
            stream.read_to_string(&mut response).await?;
            Ok((response, serial))
        };
        tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
            .await
            .expect("the TLS exchange with the metrics endpoint timed out")
    }

    #[tokio::test]
    async fn serves_metrics_and_renewed_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("test CA");
        let key = KeyPair::generate().unwrap();
        write_identity(dir.path(), &ca, &key, 1);
        let settings = MetricsTls {
            identity_dir: dir.path().to_path_buf(),
            require_client_cert: false,
        };
        let (address, server) = start_server(&settings).await;

        let (response, serial) = get_metrics(address, &ca, None).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(response.contains("text/plain; version=0.0.4"), "{response}");
        assert_eq!(serial, [1]);

        // Renewal keeps the key and replaces cert.pem alone. The resolver looks at the
        // file at most once a second, so the first handshake after that gets the new one.
        let renewed = ca.issue(&key, 2, ExtendedKeyUsagePurpose::ServerAuth);
        let cert_path = IdentityPaths::new(dir.path()).cert();
        files::write_atomic(&cert_path, renewed.as_bytes(), 0o644).unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;

        let (response, serial) = get_metrics(address, &ca, None).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert_eq!(serial, [2], "the renewed certificate was not served");
        server.abort();
    }

    #[tokio::test]
    async fn client_cert_required_rejects_others() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("test CA");
        write_identity(dir.path(), &ca, &KeyPair::generate().unwrap(), 1);
        let settings = MetricsTls {
            identity_dir: dir.path().to_path_buf(),
            require_client_cert: true,
        };
        let (address, server) = start_server(&settings).await;

        let (response, _) = get_metrics(address, &ca, Some(ca.client_identity()))
            .await
            .unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");

        let anonymous = get_metrics(address, &ca, None).await;
        assert!(anonymous.is_err(), "{anonymous:?}");

        let other_ca = TestCa::new("other CA");
        let foreign = get_metrics(address, &ca, Some(other_ca.client_identity())).await;
        assert!(foreign.is_err(), "{foreign:?}");
        server.abort();
    }

    #[test]
    fn missing_identity_names_file_and_fix() {
        let dir = tempfile::tempdir().unwrap();
        let settings = MetricsTls {
            identity_dir: dir.path().to_path_buf(),
            require_client_cert: false,
        };
        let error = acceptor(&settings)
            .err()
            .expect("acceptor must fail")
            .to_string();
        assert!(error.contains("cert.pem"), "{error}");
        assert!(error.contains("spike-bootstrap redeem"), "{error}");
    }

    #[test]
    fn open_key_mode_names_chmod() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("test CA");
        write_identity(dir.path(), &ca, &KeyPair::generate().unwrap(), 1);
        let key_path = IdentityPaths::new(dir.path()).key();
        let pem = std::fs::read(&key_path).unwrap();
        files::write_atomic(&key_path, &pem, 0o644).unwrap();
        let settings = MetricsTls {
            identity_dir: dir.path().to_path_buf(),
            require_client_cert: false,
        };

        let error = acceptor(&settings)
            .err()
            .expect("acceptor must fail")
            .to_string();
        assert!(error.contains("chmod 600"), "{error}");
    }

    #[test]
    fn client_auth_without_ca_names_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("test CA");
        write_identity(dir.path(), &ca, &KeyPair::generate().unwrap(), 1);
        let ca_path = IdentityPaths::new(dir.path()).ca();
        std::fs::remove_file(&ca_path).unwrap();
        let mut settings = MetricsTls {
            identity_dir: dir.path().to_path_buf(),
            require_client_cert: true,
        };

        let error = acceptor(&settings)
            .err()
            .expect("acceptor must fail")
            .to_string();
        assert!(error.contains(&ca_path.display().to_string()), "{error}");
        assert!(error.contains("require_client_cert = false"), "{error}");

        settings.require_client_cert = false;
        assert!(acceptor(&settings).is_ok());
    }
}
