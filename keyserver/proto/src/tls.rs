//! TLS configuration of keyserver clients, PEM helpers and CA fingerprints.
//!
//! Every configuration is built from [`provider`] (ring) and allows TLS 1.3 only, so no
//! code depends on a process-wide default crypto provider.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Errors of building a TLS configuration from PEM material.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The PEM text contains no certificate.
    #[error("no certificate found in the PEM input of {what}; expected a CERTIFICATE block")]
    NoCertificate { what: String },
    /// The PEM text contains no private key, or one in an unknown format.
    #[error("no private key found in the PEM input of {what}; expected a PKCS#8, SEC1 or PKCS#1 key block")]
    NoKey { what: String },
    /// A fingerprint is not 64 hex digits.
    #[error("invalid SHA-256 fingerprint {input:?}: expected 64 hex digits, optionally separated by colons")]
    BadFingerprint { input: String },
    /// rustls rejected the material.
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    /// A CA certificate, read from a file, that rustls rejected.
    #[error("CA certificate {ca} rejected: {source}; pass the CA certificate of the keyserver")]
    CaRejected { ca: String, source: rustls::Error },
    /// A private key that does not belong to the client certificate.
    #[error("certificate {cert} and key {key} do not belong together: the key is not the private key of that certificate; pass the key file written together with the certificate")]
    KeyMismatch { cert: String, key: String },
    /// A client certificate or key that rustls rejected for another reason.
    #[error("client certificate {cert} with key {key} rejected: {source}")]
    ClientIdentityRejected {
        cert: String,
        key: String,
        source: rustls::Error,
    },
}

/// Returns the crypto provider (ring) of every keyserver and bootstrap TLS configuration.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Returns the SHA-256 digest of `der`.
pub fn sha256(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Formats bytes as lower-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Returns the fingerprint of a certificate: the hex SHA-256 of its DER encoding.
pub fn fingerprint(der: &[u8]) -> String {
    to_hex(&sha256(der))
}

/// Parses a SHA-256 fingerprint of 64 hex digits, with or without colons between bytes.
///
/// # Errors
///
/// [`TlsSetupError::BadFingerprint`] for any other input.
pub fn parse_fingerprint(input: &str) -> Result<[u8; 32], TlsSetupError> {
    let error = || TlsSetupError::BadFingerprint {
        input: input.to_string(),
    };
    let digits: String = input.trim().chars().filter(|c| *c != ':').collect();
    if digits.len() != 64 || !digits.is_ascii() {
        return Err(error());
    }

    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|_| error())?;
    }
    Ok(out)
}

/// Parses every certificate in `pem`.
///
/// # Errors
///
/// [`TlsSetupError::NoCertificate`] if there is none; `what` names the input in the message.
pub fn certs_from_pem(
    pem: &str,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate {
            what: what.to_string(),
        });
    }
    Ok(certs)
}

/// Parses the first private key in `pem`.
///
/// # Errors
///
/// [`TlsSetupError::NoKey`] if there is none; `what` names the input in the message.
pub fn key_from_pem(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| TlsSetupError::NoKey {
        what: what.to_string(),
    })
}

/// A client certificate chain and its key.
#[derive(Debug)]
pub struct ClientIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// Builds a client configuration that trusts `ca` alone and, when `identity` is given,
/// presents it as the client certificate.
///
/// # Errors
///
/// [`TlsSetupError::Rustls`] if rustls rejects the CA or the key.
pub fn client_config(
    ca: CertificateDer<'static>,
    identity: Option<ClientIdentity>,
) -> Result<ClientConfig, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);

    let config = match identity {
        Some(identity) => builder.with_client_auth_cert(identity.chain, identity.key)?,
        None => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// Names of the files a client configuration is read from, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct IdentityFiles<'a> {
    pub ca: &'a str,
    pub cert: &'a str,
    pub key: &'a str,
}

/// Builds a client configuration as [`client_config`] does, from material read from
/// `files`, and names those files when rustls rejects the material.
///
/// # Errors
///
/// [`TlsSetupError::CaRejected`] for the CA certificate, [`TlsSetupError::KeyMismatch`]
/// when the key does not belong to the certificate, [`TlsSetupError::ClientIdentityRejected`]
/// for other faults of the certificate or key.
pub fn client_config_from_files(
    ca: CertificateDer<'static>,
    identity: ClientIdentity,
    files: IdentityFiles<'_>,
) -> Result<ClientConfig, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca).map_err(|source| TlsSetupError::CaRejected {
        ca: files.ca.to_string(),
        source,
    })?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);

    builder
        .with_client_auth_cert(identity.chain, identity.key)
        .map_err(|source| match source {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsSetupError::KeyMismatch {
                    cert: files.cert.to_string(),
                    key: files.key.to_string(),
                }
            }
            source => TlsSetupError::ClientIdentityRejected {
                cert: files.cert.to_string(),
                key: files.key.to_string(),
                source,
            },
        })
}

/// Builds a client configuration for a first connection, when the node has no CA
/// certificate yet, only its fingerprint. Returns the verifier too, which keeps the CA
/// certificate it matched so that the caller can store it.
///
/// # Errors
///
/// [`TlsSetupError::Rustls`] if rustls rejects the configuration.
pub fn pinned_client_config(
    ca_fingerprint: [u8; 32],
) -> Result<(ClientConfig, Arc<PinnedCaVerifier>), TlsSetupError> {
    let verifier = Arc::new(PinnedCaVerifier::new(ca_fingerprint));
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    Ok((config, verifier))
}

/// Server certificate verifier that trusts the one CA certificate of the server's chain
/// whose SHA-256 fingerprint equals a pinned value.
///
/// The server sends its CA certificate after its leaf. The verifier picks the chain entry
/// with the pinned fingerprint, then verifies the leaf against it as the only trust anchor
/// with the usual webpki checks (signature, validity, server name), so a server that does
/// not hold a key certified by the pinned CA cannot pass.
#[derive(Debug)]
pub struct PinnedCaVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
    matched_ca: Mutex<Option<CertificateDer<'static>>>,
}

impl PinnedCaVerifier {
    /// Creates a verifier pinned to `ca_fingerprint`.
    pub fn new(ca_fingerprint: [u8; 32]) -> Self {
        Self {
            pin: ca_fingerprint,
            provider: provider(),
            matched_ca: Mutex::new(None),
        }
    }

    /// Returns the CA certificate that matched the pin in the last successful verification.
    pub fn matched_ca(&self) -> Option<CertificateDer<'static>> {
        self.matched_ca
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|cert| sha256(cert) == self.pin)
            .ok_or_else(|| {
                rustls::Error::General(format!(
                    "the server's certificate chain has no CA certificate with the pinned \
                     SHA-256 fingerprint {}; check the fingerprint and the server address",
                    to_hex(&self.pin)
                ))
            })?
            .clone()
            .into_owned();

        let mut roots = RootCertStore::empty();
        roots.add(ca.clone())?;
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| {
                    rustls::Error::General(format!("cannot build verifier for the pinned CA: {e}"))
                })?;
        webpki.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)?;

        *self
            .matched_ca
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(ca);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatched_key_names_both_files() {
        let first = rcgen::generate_simple_self_signed(vec!["a".into()]).unwrap();
        let second = rcgen::generate_simple_self_signed(vec!["b".into()]).unwrap();
        let identity = ClientIdentity {
            chain: vec![first.cert.der().clone()],
            key: key_from_pem(&second.signing_key.serialize_pem(), "b.key").unwrap(),
        };
        let files = IdentityFiles {
            ca: "ca.pem",
            cert: "a.pem",
            key: "b.key",
        };

        let error =
            client_config_from_files(first.cert.der().clone(), identity, files).unwrap_err();
        assert!(
            matches!(error, TlsSetupError::KeyMismatch { .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains("certificate a.pem and key b.key do not belong together"),
            "{message}"
        );
    }

    #[test]
    fn fingerprint_parses_with_and_without_colons() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let with_colons: String = hex
            .as_bytes()
            .chunks(2)
            .map(|pair| std::str::from_utf8(pair).unwrap())
            .collect::<Vec<_>>()
            .join(":");

        let plain = parse_fingerprint(hex).unwrap();
        assert_eq!(to_hex(&plain), hex);
        assert_eq!(parse_fingerprint(&with_colons).unwrap(), plain);
        assert_eq!(parse_fingerprint(&hex.to_uppercase()).unwrap(), plain);
    }

    #[test]
    fn fingerprint_rejects_bad_input() {
        for input in ["", "0011", &"zz".repeat(32), &"0".repeat(66)] {
            assert!(parse_fingerprint(input).is_err(), "{input}");
        }
    }
}
