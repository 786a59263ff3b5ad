//! The certificate authority: its key and certificate on disk, and the certificate
//! profiles it signs (node, admin, keyserver server).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use spike_keyproto::tls::{fingerprint, to_hex};
use spike_keyproto::utc::rfc3339;
use spike_keyproto::wire::CertKind;
use time::OffsetDateTime;

use crate::files::{self, FileError};
use crate::token::{random_bytes, RandomError};

/// File name of the CA certificate in the state directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key in the state directory (mode 0600).
pub const CA_KEY_FILE: &str = "ca.key";

/// How long a CA created by the keyserver is valid.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Maximum lifetime accepted for a certificate or token: that of a CA the keyserver
/// creates, since nothing it signs can be trusted for longer than the CA itself.
pub const MAX_LIFETIME: Duration = CA_LIFETIME;

/// Errors of loading, creating or using the CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(transparent)]
    File(#[from] FileError),
    /// Only one of the two CA files exists.
    #[error("found only one of {cert} and {key}; restore the missing file or remove both to create a new CA")]
    HalfPresent { cert: PathBuf, key: PathBuf },
    /// The CA files exist but do not parse or do not belong together.
    #[error("CA material in {dir} is unusable: {reason}")]
    Invalid { dir: PathBuf, reason: String },
    /// rcgen failed to build or sign a certificate.
    #[error("signing a certificate failed: {0}")]
    Sign(#[from] rcgen::Error),
    #[error(transparent)]
    Random(#[from] RandomError),
    /// An imported certificate that may not sign others.
    #[error("{} is not a CA certificate: it lacks {missing}; import the certificate of a CA, or run init without --import-ca-cert to create one", cert.display())]
    NotACa { cert: PathBuf, missing: String },
    /// The CA certificate's validity has ended.
    #[error("the CA certificate expired at {}; no client would trust what it signs, so import or create a new CA", rfc3339(*.not_after))]
    CaExpired { not_after: i64 },
    /// A lifetime that reaches past the last date a certificate can carry.
    #[error("a lifetime of {lifetime_secs} s from now is past the last representable date; use at most {max_secs} s", max_secs = MAX_LIFETIME.as_secs())]
    LifetimeTooLong { lifetime_secs: u64 },
}

/// An existing CA to import, with the certificate's path for messages.
#[derive(Debug, Clone, Copy)]
pub struct CaImport<'a> {
    pub cert_path: &'a Path,
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
}

/// Purpose of a signed certificate, with the names it carries.
#[derive(Debug, Clone)]
pub enum Profile {
    /// A node: client and server authentication under DNS names set by policy.
    Node {
        principal: String,
        dns_names: Vec<String>,
    },
    /// An administrator: client authentication only.
    Admin { name: String },
    /// The keyserver's TLS server certificate, for DNS names and IP addresses.
    Server { names: Vec<String> },
}

impl Profile {
    /// Returns the certificate kind stored for this profile.
    pub fn kind(&self) -> CertKind {
        match self {
            Profile::Node { .. } => CertKind::Node,
            Profile::Admin { .. } => CertKind::Admin,
            Profile::Server { .. } => CertKind::Server,
        }
    }

    /// Returns the principal recorded for certificates of this profile.
    pub fn principal(&self) -> &str {
        match self {
            Profile::Node { principal, .. } => principal,
            Profile::Admin { name } => name,
            Profile::Server { .. } => crate::policy::KEYSERVER_PRINCIPAL,
        }
    }
}

/// A certificate just signed by the CA.
#[derive(Debug, Clone)]
pub struct SignedCert {
    pub der: Vec<u8>,
    pub pem: String,
    /// Serial number in lower-case hex.
    pub serial: String,
    /// Hex SHA-256 of the DER encoding.
    pub fingerprint: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// Whether `not_after` was cut to the CA certificate's expiry, so that the certificate
    /// is valid for less than the requested lifetime.
    pub shortened_to_ca_expiry: bool,
}

/// The CA certificate and the issuer built from its key.
pub struct CertAuthority {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    /// End of the CA certificate's validity; nothing signed lasts longer.
    not_after: OffsetDateTime,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAuthority")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl CertAuthority {
    /// Loads the CA from `state_dir`, or creates one there when neither file exists.
    /// Returns whether it was created.
    ///
    /// # Errors
    ///
    /// [`CaError::HalfPresent`] when one file is missing, [`CaError::File`] when the key
    /// is readable by others or a file cannot be read or written.
    pub fn load_or_create(state_dir: &Path) -> Result<(Self, bool), CaError> {
        let cert_path = state_dir.join(CA_CERT_FILE);
        let key_path = state_dir.join(CA_KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Ok((Self::load(state_dir)?, false)),
            (false, false) => Ok((Self::create(state_dir)?, true)),
            _ => Err(CaError::HalfPresent {
                cert: cert_path,
                key: key_path,
            }),
        }
    }

    /// Loads the CA from `state_dir`.
    ///
    /// # Errors
    ///
    /// As [`CertAuthority::load_or_create`], plus [`CaError::Invalid`] for bad material.
    pub fn load(state_dir: &Path) -> Result<Self, CaError> {
        let cert_pem = files::read_text(&state_dir.join(CA_CERT_FILE))?;
        let key_pem = files::read_secret(&state_dir.join(CA_KEY_FILE))?;
        Self::from_pem(state_dir, &cert_pem, &key_pem)
    }

    /// Stores an existing CA certificate and key in `state_dir` and loads them.
    ///
    /// # Errors
    ///
    /// [`CaError::Invalid`] if they do not parse or the key does not match the certificate,
    /// [`CaError::NotACa`] if the certificate may not sign others. Nothing is written then.
    pub fn import(state_dir: &Path, import: &CaImport<'_>) -> Result<Self, CaError> {
        let CaImport {
            cert_path,
            cert_pem,
            key_pem,
        } = *import;
        let ca = Self::from_pem(state_dir, cert_pem, key_pem)?;
        check_can_sign(&ca.cert_der, cert_path)?;
        files::create_private_dir(state_dir)?;
        files::write_atomic(&state_dir.join(CA_KEY_FILE), key_pem.as_bytes(), 0o600)?;
        files::write_atomic(&state_dir.join(CA_CERT_FILE), cert_pem.as_bytes(), 0o644)?;
        Ok(ca)
    }

    fn create(state_dir: &Path) -> Result<Self, CaError> {
        let key = KeyPair::generate()?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Spike");
        params
            .distinguished_name
            .push(DnType::CommonName, "Spike keyserver CA");
        // Path length 0: the CA signs end-entity certificates only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + CA_LIFETIME;
        params.serial_number = Some(random_serial()?.0);
        let cert = params.self_signed(&key)?;

        // The key goes to disk first: a crash in between leaves a key without a
        // certificate, which load_or_create reports instead of silently making a new CA.
        files::create_private_dir(state_dir)?;
        files::write_atomic(
            &state_dir.join(CA_KEY_FILE),
            key.serialize_pem().as_bytes(),
            0o600,
        )?;
        files::write_atomic(&state_dir.join(CA_CERT_FILE), cert.pem().as_bytes(), 0o644)?;
        Self::from_pem(state_dir, &cert.pem(), &key.serialize_pem())
    }

    fn from_pem(state_dir: &Path, cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let invalid = |reason: String| CaError::Invalid {
            dir: state_dir.to_path_buf(),
            reason,
        };
        let cert_der = spike_keyproto::tls::certs_from_pem(cert_pem, CA_CERT_FILE)
            .map_err(|e| invalid(e.to_string()))?
            .remove(0);
        let key = KeyPair::from_pem(key_pem).map_err(|e| invalid(format!("CA key: {e}")))?;

        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| invalid(format!("CA certificate: {e}")))?;
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(invalid(
                "the CA key does not match the CA certificate".into(),
            ));
        }

        let not_after = parsed.validity().not_after.to_datetime();
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| invalid(format!("CA certificate: {e}")))?;
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            cert_der,
            not_after,
            issuer,
        })
    }

    /// Returns the CA certificate in DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Returns the CA certificate in PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Hex SHA-256 of the CA certificate's DER encoding: the value nodes pin.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    /// Returns the end of the CA certificate's validity, Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after.unix_timestamp()
    }

    /// Signs a certificate of `profile` for `public_key`, valid from shortly before `now`
    /// for `lifetime`, but never past the CA certificate's own expiry.
    ///
    /// The validity starts up to one minute early (a tenth of the lifetime at most) so that
    /// peers whose clocks lag slightly still accept a fresh certificate. A validity that
    /// would outlast the CA is cut to end with it and marked
    /// [`SignedCert::shortened_to_ca_expiry`]. Verifiers reject a chain once its CA has
    /// expired, so the later part could never be used. A node near the CA's end thus still
    /// gets a working certificate rather than an error.
    ///
    /// # Errors
    ///
    /// [`CaError::CaExpired`] once the CA certificate has expired,
    /// [`CaError::LifetimeTooLong`] if `now + lifetime` is not a representable date,
    /// [`CaError::Sign`] if a name is not encodable or signing fails.
    pub fn sign(
        &self,
        public_key: &impl PublicKeyData,
        profile: &Profile,
        now: OffsetDateTime,
        lifetime: Duration,
    ) -> Result<SignedCert, CaError> {
        let (serial, serial_hex) = random_serial()?;
        let backdate = (lifetime / 10).min(Duration::from_secs(60));
        let not_before = now - backdate;
        let requested_end = time::Duration::try_from(lifetime)
            .ok()
            .and_then(|lifetime| now.checked_add(lifetime))
            .ok_or(CaError::LifetimeTooLong {
                lifetime_secs: lifetime.as_secs(),
            })?;
        if self.not_after <= now {
            return Err(CaError::CaExpired {
                not_after: self.not_after(),
            });
        }
        let shortened_to_ca_expiry = requested_end > self.not_after;
        let not_after = requested_end.min(self.not_after);

        let mut params = profile_params(profile)?;
        params.serial_number = Some(serial);
        params.not_before = not_before;
        params.not_after = not_after;
        params.use_authority_key_identifier_extension = true;

        let cert = params.signed_by(public_key, &self.issuer)?;
        Ok(SignedCert {
            fingerprint: fingerprint(cert.der()),
            der: cert.der().to_vec(),
            pem: cert.pem(),
            serial: serial_hex,
            not_before: not_before.unix_timestamp(),
            not_after: not_after.unix_timestamp(),
            shortened_to_ca_expiry,
        })
    }
}

/// Checks that a CA certificate has basicConstraints CA:TRUE and the keyCertSign key
/// usage, without which verifiers reject what it signs.
fn check_can_sign(cert_der: &[u8], cert_path: &Path) -> Result<(), CaError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|e| CaError::Invalid {
            dir: cert_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let mut missing = Vec::new();
    if !matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca) {
        missing.push("basicConstraints CA:TRUE");
    }
    if !matches!(cert.key_usage(), Ok(Some(usage)) if usage.value.key_cert_sign()) {
        missing.push("the keyCertSign key usage");
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(CaError::NotACa {
        cert: cert_path.to_path_buf(),
        missing: missing.join(" and "),
    })
}

fn profile_params(profile: &Profile) -> Result<CertificateParams, CaError> {
    let (names, usages): (&[String], _) = match profile {
        Profile::Node { dns_names, .. } => (
            dns_names,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        ),
        Profile::Admin { .. } => (&[], vec![ExtendedKeyUsagePurpose::ClientAuth]),
        Profile::Server { names } => (names, vec![ExtendedKeyUsagePurpose::ServerAuth]),
    };

    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, profile.principal());
    if matches!(profile, Profile::Admin { .. }) {
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, "spike-admin");
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = usages;
    Ok(params)
}

/// Returns a random positive 128-bit serial number and its hex form.
fn random_serial() -> Result<(SerialNumber, String), RandomError> {
    let mut bytes = [0u8; 16];
    random_bytes(&mut bytes)?;
    // DER integers are signed: clearing the top bit keeps the serial positive, and setting
    // the next one keeps its encoding at the full 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok((SerialNumber::from_slice(&bytes), to_hex(&bytes)))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn ca_created_once_with_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let (first, created) = CertAuthority::load_or_create(dir.path()).unwrap();
        assert!(created);
        let (second, created_again) = CertAuthority::load_or_create(dir.path()).unwrap();
        assert!(!created_again);
        assert_eq!(first.fingerprint(), second.fingerprint());

        let key_mode = std::fs::metadata(dir.path().join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
    }

    #[test]
    fn half_present_ca_rejected() {
        let dir = tempfile::tempdir().unwrap();
        CertAuthority::load_or_create(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join(CA_CERT_FILE)).unwrap();
        let result = CertAuthority::load_or_create(dir.path());
        assert!(matches!(result, Err(CaError::HalfPresent { .. })));
    }

    #[test]
    fn import_rejects_mismatched_key() {
        let source = tempfile::tempdir().unwrap();
        let (ca, _) = CertAuthority::load_or_create(source.path()).unwrap();
        let other_key = KeyPair::generate().unwrap().serialize_pem();
        let target = tempfile::tempdir().unwrap();
        let import = CaImport {
            cert_path: Path::new("ca.pem"),
            cert_pem: ca.cert_pem(),
            key_pem: &other_key,
        };
        let result = CertAuthority::import(target.path(), &import);
        assert!(matches!(result, Err(CaError::Invalid { .. })));
    }

    #[test]
    fn import_keeps_existing_ca() {
        let source = tempfile::tempdir().unwrap();
        let (ca, _) = CertAuthority::load_or_create(source.path()).unwrap();
        let key_pem = std::fs::read_to_string(source.path().join(CA_KEY_FILE)).unwrap();
        let target = tempfile::tempdir().unwrap();

        let import = CaImport {
            cert_path: Path::new("ca.pem"),
            cert_pem: ca.cert_pem(),
            key_pem: &key_pem,
        };
        let imported = CertAuthority::import(target.path(), &import).unwrap();
        assert_eq!(imported.fingerprint(), ca.fingerprint());
        let reloaded = CertAuthority::load(target.path()).unwrap();
        assert_eq!(reloaded.fingerprint(), ca.fingerprint());
        let key_mode = std::fs::metadata(target.path().join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600, "the imported key is private");

        let node_key = KeyPair::generate().unwrap();
        let profile = Profile::Node {
            principal: "node-1".into(),
            dns_names: vec!["node-1".into()],
        };
        let signed = reloaded.sign(
            &node_key,
            &profile,
            OffsetDateTime::now_utc(),
            Duration::from_secs(3600),
        );
        assert!(signed.is_ok(), "the imported CA signs");
    }

    /// Imports a self-signed certificate made by `params` and returns the error.
    fn import_self_signed(params: CertificateParams) -> (tempfile::TempDir, CaError) {
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let target = tempfile::tempdir().unwrap();
        let import = CaImport {
            cert_path: Path::new("/import/leaf.pem"),
            cert_pem: &cert.pem(),
            key_pem: &key.serialize_pem(),
        };
        let error = CertAuthority::import(&target.path().join("state"), &import).unwrap_err();
        (target, error)
    }

    #[test]
    fn import_rejects_certificate_that_is_not_a_ca() {
        let leaf = CertificateParams::new(vec!["leaf.example".to_string()]).unwrap();
        let (target, error) = import_self_signed(leaf);
        assert_eq!(
            error.to_string(),
            "/import/leaf.pem is not a CA certificate: it lacks basicConstraints CA:TRUE and \
             the keyCertSign key usage; import the certificate of a CA, or run init without \
             --import-ca-cert to create one"
        );
        assert!(!target.path().join("state").exists(), "nothing is written");

        let mut no_cert_sign = CertificateParams::default();
        no_cert_sign.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        no_cert_sign.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let (_, error) = import_self_signed(no_cert_sign);
        assert!(
            matches!(&error, CaError::NotACa { missing, .. } if missing == "the keyCertSign key usage"),
            "{error}"
        );
    }

    #[test]
    fn validity_cut_to_ca_expiry() {
        let now = OffsetDateTime::now_utc();
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::hours(1);
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let import = CaImport {
            cert_path: Path::new("ca.pem"),
            cert_pem: &ca_cert.pem(),
            key_pem: &ca_key.serialize_pem(),
        };
        let ca = CertAuthority::import(dir.path(), &import).unwrap();
        let key = KeyPair::generate().unwrap();
        let profile = Profile::Admin {
            name: "admin".into(),
        };

        let long = ca
            .sign(&key, &profile, now, Duration::from_secs(2 * 3600))
            .unwrap();
        assert!(long.shortened_to_ca_expiry);
        assert_eq!(long.not_after, ca.not_after());
        let (_, parsed) = x509_parser::parse_x509_certificate(&long.der).unwrap();
        assert_eq!(parsed.validity().not_after.timestamp(), ca.not_after());

        let short = ca
            .sign(&key, &profile, now, Duration::from_secs(1800))
            .unwrap();
        assert!(!short.shortened_to_ca_expiry);
        assert_eq!(short.not_after, now.unix_timestamp() + 1800);

        let later = now + time::Duration::hours(2);
        let expired = ca.sign(&key, &profile, later, Duration::from_secs(60));
        assert!(
            matches!(expired, Err(CaError::CaExpired { not_after }) if not_after == ca.not_after()),
            "{expired:?}"
        );
    }

    #[test]
    fn oversized_lifetime_returns_error() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = CertAuthority::load_or_create(dir.path()).unwrap();
        let key = KeyPair::generate().unwrap();
        let profile = Profile::Admin {
            name: "admin".into(),
        };
        let lifetime = Duration::from_secs(99_999_999_999 * 86_400);
        let result = ca.sign(&key, &profile, OffsetDateTime::now_utc(), lifetime);
        assert!(
            matches!(result, Err(CaError::LifetimeTooLong { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn node_certificate_carries_policy_names() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = CertAuthority::load_or_create(dir.path()).unwrap();
        let key = KeyPair::generate().unwrap();
        let profile = Profile::Node {
            principal: "node-1".into(),
            dns_names: vec!["node-1".into(), "node-1.spike.internal".into()],
        };
        let now = OffsetDateTime::now_utc();
        let signed = ca
            .sign(&key, &profile, now, Duration::from_secs(3600))
            .unwrap();

        let (_, cert) = x509_parser::parse_x509_certificate(&signed.der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, ["DNSName(node-1)", "DNSName(node-1.spike.internal)"]);
        assert_eq!(signed.not_after - now.unix_timestamp(), 3600);
        assert_eq!(signed.serial.len(), 32);
    }
}
