//! Operations run on the keyserver's host with direct access to its state directory:
//! creating the CA and issuing admin certificates. They need the CA key file, so only the
//! keyserver's service account can run them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::KeyPair;
use time::OffsetDateTime;
use tracing::warn;

use crate::ca::{CaError, CaImport, CertAuthority, Profile, CA_CERT_FILE, CA_KEY_FILE};
use crate::error::OpError;
use crate::files::{self, FileError};
use crate::policy::{self, PolicyError};
use crate::server::{check_state_dir, StateDirError};
use crate::store::{Store, StoreError, DB_FILE};

/// The database and the WAL files SQLite keeps next to it.
const DB_FILES: [&str; 3] = [DB_FILE, "state.db-wal", "state.db-shm"];

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
    #[error("{option} {} cannot be created or written ({source}); pass a directory this user can write to", path.display())]
    NotWritable {
        path: PathBuf,
        option: &'static str,
        source: std::io::Error,
    },
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

/// An admin certificate that `init` issues along with the CA.
#[derive(Debug, Clone, Copy)]
pub struct AdminRequest<'a> {
    pub name: &'a str,
    pub out_dir: &'a Path,
    pub lifetime: Duration,
}

/// Result of [`init_with_admin`]: the CA, whether it is new, and the admin files.
#[derive(Debug)]
pub struct Initialized {
    pub ca: CertAuthority,
    /// Whether the CA is new.
    pub created: bool,
    pub admin: Option<AdminFiles>,
}

/// Checks the arguments of `init` before it writes anything, so that a rejected `init`
/// leaves no half-made state directory. The state directory and the admin output
/// directory must be directories this user can create or write, and the admin name must
/// be valid, with no `NAME.pem` or `NAME.key` in `out_dir` yet.
///
/// # Errors
///
/// [`LocalError::NotADirectory`], [`LocalError::NotWritable`], or those of
/// [`check_admin_target`].
pub fn check_init(state_dir: &Path, admin: Option<(&str, &Path)>) -> Result<(), LocalError> {
    check_output_dir(state_dir, "--state-dir")?;
    if let Some((name, out_dir)) = admin {
        check_output_dir(out_dir, "--admin-out")?;
        check_admin_target(name, out_dir)?;
    }
    Ok(())
}

/// Runs `init`: checks every output location, creates (or imports) the CA and the
/// database, and issues the admin certificate when asked. When a step fails after the
/// checks, the files and directories this run created are removed again, so that a rerun
/// starts from the same state. Files that existed before are never touched.
///
/// # Errors
///
/// Those of [`check_init`], [`init`] and [`issue_admin_cert`].
pub fn init_with_admin(
    state_dir: &Path,
    import: Option<&CaImport<'_>>,
    admin: Option<&AdminRequest<'_>>,
) -> Result<Initialized, LocalError> {
    check_init(state_dir, admin.map(|a| (a.name, a.out_dir)))?;
    let undo = Undo::before(state_dir, admin);
    let result = init(state_dir, import).and_then(|(ca, created)| {
        let admin = admin
            .map(|a| issue_admin_cert(state_dir, a.name, a.lifetime, a.out_dir))
            .transpose()?;
        Ok(Initialized { ca, created, admin })
    });
    if result.is_err() {
        undo.run();
    }
    result
}

/// Paths that did not exist before `init`, to be removed again if it fails.
struct Undo {
    files: Vec<PathBuf>,
    /// Deepest first, so that each is empty by the time it is removed.
    dirs: Vec<PathBuf>,
}

impl Undo {
    fn before(state_dir: &Path, admin: Option<&AdminRequest<'_>>) -> Self {
        let mut files: Vec<PathBuf> = [CA_CERT_FILE, CA_KEY_FILE]
            .into_iter()
            .chain(DB_FILES)
            .map(|name| state_dir.join(name))
            .collect();
        let mut dirs = missing_dirs(state_dir);
        if let Some(admin) = admin {
            files.push(admin_key_path(admin.out_dir, admin.name));
            files.push(admin_cert_path(admin.out_dir, admin.name));
            dirs.extend(missing_dirs(admin.out_dir));
        }
        files.retain(|path| path.symlink_metadata().is_err());
        Self { files, dirs }
    }

    fn run(self) {
        for path in self.files.iter().filter(|p| p.symlink_metadata().is_ok()) {
            match std::fs::remove_file(path) {
                Ok(()) => warn!(path = %path.display(), "removed a file of the failed init"),
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "cannot remove a file of the failed init")
                }
            }
        }
        // remove_dir leaves a directory that something else wrote into meanwhile.
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Returns `path` and those of its ancestors that do not exist, deepest first.
fn missing_dirs(path: &Path) -> Vec<PathBuf> {
    path.ancestors()
        .filter(|dir| !dir.as_os_str().is_empty())
        .take_while(|dir| dir.symlink_metadata().is_err())
        .map(Path::to_path_buf)
        .collect()
}

/// Checks that `dir` is a directory, or can be created as one, and that this user can
/// write there. The check creates and removes a probe file in `dir` or in its deepest
/// existing ancestor. Permissions, read-only mounts and pseudo file systems such as /proc
/// each reject writes in their own way, and trying one covers them all.
fn check_output_dir(dir: &Path, option: &'static str) -> Result<(), LocalError> {
    check_not_a_file(dir, option)?;
    let not_writable = |source| LocalError::NotWritable {
        path: dir.to_path_buf(),
        option,
        source,
    };
    let existing = dir
        .ancestors()
        .map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
        .find(|a| a.symlink_metadata().is_ok())
        .unwrap_or(Path::new("/"));
    if !existing.is_dir() {
        return Err(not_writable(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            format!("{} is not a directory", existing.display()),
        )));
    }
    let probe = existing.join(format!(".spike-keyserver-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(not_writable)?;
    let _ = std::fs::remove_file(&probe);
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
/// [`LocalError::StateDir`] when `state_dir` is missing, unreadable or contains no CA,
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
    check_output_dir(out_dir, "--out-dir")?;
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
