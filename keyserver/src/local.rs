//! Operations run on the keyserver's host with direct access to its state directory:
//! creating the CA and issuing admin certificates. They need the CA key file, so only the
//! keyserver's service account can run them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::KeyPair;
use time::OffsetDateTime;

use crate::ca::{CaError, CaImport, CertAuthority, Profile};
use crate::error::OpError;
use crate::files::{self, FileError};
use crate::policy::{self, PolicyError};
use crate::server::{check_state_dir, StateDirError};
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
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    #[error("a CA already exists in {dir}; remove ca.pem and ca.key first to import another one")]
    CaExists { dir: PathBuf },
    #[error("{} already exists; move or remove it first, or write to another output directory (an admin's certificate and key are never overwritten)", path.display())]
    AdminFileExists { path: PathBuf },
    #[error("{} is a file, not a directory; pass a directory path for {option}", path.display())]
    NotADirectory { path: PathBuf, option: &'static str },
}

/// Paths of an admin's certificate and key.
#[derive(Debug, Clone)]
pub struct AdminFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub serial: String,
    /// End of the certificate's validity, Unix seconds.
    pub not_after: i64,
    /// Whether the validity was cut to the CA certificate's expiry.
    pub shortened_to_ca_expiry: bool,
}

/// Checks the arguments of `init` before it writes anything, so that a rejected `init`
/// leaves no half-made state directory. Neither the state directory nor the admin output
/// directory may be a file, and the admin name must be valid, with no `NAME.pem` or
/// `NAME.key` in `out_dir` yet.
///
/// # Errors
///
/// [`LocalError::NotADirectory`], or those of [`check_admin_target`].
pub fn check_init(state_dir: &Path, admin: Option<(&str, &Path)>) -> Result<(), LocalError> {
    check_not_a_file(state_dir, "--state-dir")?;
    if let Some((name, out_dir)) = admin {
        check_not_a_file(out_dir, "--admin-out")?;
        check_admin_target(name, out_dir)?;
    }
    Ok(())
}

/// Checks that `name` is a valid principal and that `out_dir` contains neither `NAME.pem` nor
/// `NAME.key`, so that issuing never replaces an admin's existing identity.
///
/// # Errors
///
/// [`LocalError::Policy`] for an invalid name, [`LocalError::AdminFileExists`] naming the
/// first file that exists.
pub fn check_admin_target(name: &str, out_dir: &Path) -> Result<(), LocalError> {
    policy::validate_principal(name)?;
    for path in [
        admin_cert_path(out_dir, name),
        admin_key_path(out_dir, name),
    ] {
        // symlink_metadata: a dangling link is still a file that writing would replace.
        if path.symlink_metadata().is_ok() {
            return Err(LocalError::AdminFileExists { path });
        }
    }
    Ok(())
}

fn check_not_a_file(path: &Path, option: &'static str) -> Result<(), LocalError> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_dir() => Err(LocalError::NotADirectory {
            path: path.to_path_buf(),
            option,
        }),
        _ => Ok(()),
    }
}

fn admin_cert_path(out_dir: &Path, name: &str) -> PathBuf {
    out_dir.join(format!("{name}.pem"))
}

fn admin_key_path(out_dir: &Path, name: &str) -> PathBuf {
    out_dir.join(format!("{name}.key"))
}

/// Creates the CA in `state_dir` (or imports the given one) and the database. Returns the
/// CA and whether it is new.
///
/// # Errors
///
/// [`LocalError::CaExists`] when importing over an existing CA, or the failing step.
pub fn init(
    state_dir: &Path,
    import: Option<&CaImport<'_>>,
) -> Result<(CertAuthority, bool), LocalError> {
    let (ca, created) = match import {
        Some(import) => {
            if state_dir.join(crate::ca::CA_CERT_FILE).exists()
                || state_dir.join(crate::ca::CA_KEY_FILE).exists()
            {
                return Err(LocalError::CaExists {
                    dir: state_dir.to_path_buf(),
                });
            }
            (CertAuthority::import(state_dir, import)?, true)
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
/// [`LocalError::StateDir`] when `state_dir` is missing, unreadable or holds no CA,
/// [`LocalError::Policy`] for an invalid name, [`LocalError::AdminFileExists`] when
/// `NAME.pem` or `NAME.key` is already in `out_dir`, [`LocalError::Op`] when the name
/// belongs to a node or a revoked admin, or the failing file or database step.
pub fn issue_admin_cert(
    state_dir: &Path,
    name: &str,
    lifetime: Duration,
    out_dir: &Path,
) -> Result<AdminFiles, LocalError> {
    check_state_dir(state_dir)?;
    check_not_a_file(out_dir, "--out-dir")?;
    check_admin_target(name, out_dir)?;
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
    let key_path = admin_key_path(out_dir, name);
    let cert_path = admin_cert_path(out_dir, name);
    files::write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    store.record_issued(&signed, &profile, "local")?;
    files::write_atomic(&cert_path, signed.pem.as_bytes(), 0o644)?;
    Ok(AdminFiles {
        cert: cert_path,
        key: key_path,
        serial: signed.serial,
        not_after: signed.not_after,
        shortened_to_ca_expiry: signed.shortened_to_ca_expiry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_files_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let out = dir.path().join("admin");
        init(&state, None).unwrap();
        let lifetime = Duration::from_secs(3600);
        let first = issue_admin_cert(&state, "alice", lifetime, &out).unwrap();
        let key_before = std::fs::read(&first.key).unwrap();

        let result = issue_admin_cert(&state, "alice", lifetime, &out);
        match result {
            Err(LocalError::AdminFileExists { path }) => assert_eq!(path, first.cert),
            other => panic!("expected AdminFileExists, got {other:?}"),
        }
        assert_eq!(std::fs::read(&first.key).unwrap(), key_before);
    }

    #[test]
    fn init_checks_reject_bad_name_and_file_paths() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let bad_name = check_init(&state, Some(("bad name!", dir.path())));
        assert!(
            matches!(bad_name, Err(LocalError::Policy(_))),
            "{bad_name:?}"
        );

        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let file_state = check_init(&file, None);
        assert!(
            matches!(
                file_state,
                Err(LocalError::NotADirectory {
                    option: "--state-dir",
                    ..
                })
            ),
            "{file_state:?}"
        );
        assert!(!state.exists());
    }
}
