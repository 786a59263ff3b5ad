//! Operations run on the keyserver's host with direct access to its state directory:
//! creating the CA and issuing admin certificates. They need the CA key file, so only the
//! keyserver's service account can run them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::KeyPair;
use time::OffsetDateTime;

use crate::ca::{CaError, CertAuthority, Profile};
use crate::error::OpError;
use crate::files::{self, FileError};
use crate::policy::{self, PolicyError};
use crate::store::{Store, StoreError};

/// Errors of the local commands.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Op(#[from] OpError),
    #[error("a CA already exists in {dir}; remove ca.pem and ca.key first to import another one")]
    CaExists { dir: PathBuf },
}

/// Paths of an admin's certificate and key.
#[derive(Debug, Clone)]
pub struct AdminFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub serial: String,
}

/// Creates the CA in `state_dir` (or imports the given one) and the database. Returns the
/// CA and whether it is new.
///
/// # Errors
///
/// [`LocalError::CaExists`] when importing over an existing CA, or the failing step.
pub fn init(
    state_dir: &Path,
    import: Option<(&str, &str)>,
) -> Result<(CertAuthority, bool), LocalError> {
    let (ca, created) = match import {
        Some((cert_pem, key_pem)) => {
            if state_dir.join(crate::ca::CA_CERT_FILE).exists()
                || state_dir.join(crate::ca::CA_KEY_FILE).exists()
            {
                return Err(LocalError::CaExists {
                    dir: state_dir.to_path_buf(),
                });
            }
            (CertAuthority::import(state_dir, cert_pem, key_pem)?, true)
        }
        None => CertAuthority::load_or_create(state_dir)?,
    };
    Store::open(state_dir)?;
    Ok((ca, created))
}

/// Issues an admin client certificate for `name`, valid for `lifetime`, and writes
/// `NAME.pem` (0644) and `NAME.key` (0600) into `out_dir`.
///
/// # Errors
///
/// [`LocalError::Policy`] for an invalid name, [`LocalError::Op`] when the name belongs
/// to a node or a revoked admin, or the failing file or database step.
pub fn issue_admin_cert(
    state_dir: &Path,
    name: &str,
    lifetime: Duration,
    out_dir: &Path,
) -> Result<AdminFiles, LocalError> {
    policy::validate_principal(name)?;
    let ca = CertAuthority::load(state_dir)?;
    let mut store = Store::open(state_dir)?;

    let key = KeyPair::generate().map_err(CaError::from)?;
    let profile = Profile::Admin {
        name: name.to_string(),
    };
    let signed = ca.sign(&key, &profile, OffsetDateTime::now_utc(), lifetime)?;

    // The key is written before the certificate is recorded: a failure afterwards leaves
    // an unused key file, never a recorded certificate whose key is lost.
    files::create_private_dir(out_dir)?;
    let key_path = out_dir.join(format!("{name}.key"));
    let cert_path = out_dir.join(format!("{name}.pem"));
    files::write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    store.record_issued(&signed, &profile, "local")?;
    files::write_atomic(&cert_path, signed.pem.as_bytes(), 0o644)?;
    Ok(AdminFiles {
        cert: cert_path,
        key: key_path,
        serial: signed.serial,
    })
}
