//! Key and certificate files of the keyserver and the nodes: written with an explicit mode
//! and replaced by atomic renames, so a crash leaves either the old or the new content.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A file operation that failed, with the path involved.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Reading, writing or renaming failed.
    #[error("{action} {path} failed: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A secret file is readable or writable by other users.
    #[error("{path} has mode {mode:o}, so users other than the owner can access it; run chmod 600 {path}")]
    TooOpen { path: PathBuf, mode: u32 },
    /// A path that must name a file names a directory.
    #[error("{path} is a directory, expected a file; pass the path of the file inside it")]
    IsDirectory { path: PathBuf },
    /// A directory to create, or one of its parents, exists as a file.
    #[error(
        "{path} is a file, not a directory; pass a directory, or a path where one can be created"
    )]
    NotADirectory { path: PathBuf },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FileError {
    let path = path.to_path_buf();
    move |source| FileError::Io {
        action,
        path,
        source,
    }
}

/// Creates `dir` (and its parents) with mode 0700 if it does not exist.
///
/// # Errors
///
/// [`FileError::NotADirectory`] naming `dir` or the parent that is a file, or
/// [`FileError::Io`] if the directory cannot be created.
pub fn create_private_dir(dir: &Path) -> Result<(), FileError> {
    if dir.is_dir() {
        return Ok(());
    }
    // create_dir_all reports a file in the way as "File exists" or "Not a directory",
    // without saying which path is the file.
    let existing = dir.ancestors().find(|a| fs::metadata(a).is_ok());
    if let Some(file) = existing.filter(|a| !a.is_dir()) {
        return Err(FileError::NotADirectory {
            path: file.to_path_buf(),
        });
    }
    fs::create_dir_all(dir).map_err(io_error("creating directory", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(io_error("setting mode 0700 on", dir))
}

/// Writes `contents` to `path` with `mode` through a temporary file in the same directory,
/// fsyncs it, renames it over `path` and fsyncs the directory.
///
/// # Errors
///
/// [`FileError::Io`] naming the step that failed.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), FileError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let temp = dir.join(format!(".{file_name}.tmp"));

    // A leftover temporary file from a crash would keep its old mode, so start afresh.
    let _ = fs::remove_file(&temp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp)
        .map_err(io_error("creating", &temp))?;
    // From here on a failure removes the temporary file, which would otherwise stay behind
    // with part of a key in it.
    let written = file
        .write_all(contents)
        .map_err(io_error("writing", &temp))
        .and_then(|()| file.sync_all().map_err(io_error("syncing", &temp)))
        .and_then(|()| fs::rename(&temp, path).map_err(io_error("renaming into place", path)));
    drop(file);
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("syncing directory", dir))
}

/// Reads a secret file after checking that only its owner can access it.
///
/// # Errors
///
/// [`FileError::IsDirectory`] for a directory, [`FileError::TooOpen`] if group or others
/// have any permission, [`FileError::Io`] if the file cannot be read.
pub fn read_secret(path: &Path) -> Result<String, FileError> {
    let metadata = fs::metadata(path).map_err(io_error("reading metadata of", path))?;
    // Checked before the mode, whose chmod advice would be wrong for a directory.
    if metadata.is_dir() {
        return Err(FileError::IsDirectory {
            path: path.to_path_buf(),
        });
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(FileError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    fs::read_to_string(path).map_err(io_error("reading", path))
}

/// Reads a non-secret text file.
///
/// # Errors
///
/// [`FileError::Io`] if the file cannot be read.
pub fn read_text(path: &Path) -> Result<String, FileError> {
    fs::read_to_string(path).map_err(io_error("reading", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_sets_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.pem");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();

        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_secret(&path).unwrap(), "two");
    }

    #[test]
    fn failed_write_atomic_removes_its_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // Renaming a file over a directory fails after the temporary file is written.
        let target = dir.path().join("key.pem");
        fs::create_dir(&target).unwrap();
        assert!(write_atomic(&target, b"secret", 0o600).is_err());
        assert!(!dir.path().join(".key.pem.tmp").exists());
    }

    #[test]
    fn file_in_the_way_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("identity");
        fs::write(&file, b"not a directory").unwrap();

        for target in [file.clone(), file.join("node")] {
            let error = create_private_dir(&target).unwrap_err();
            assert!(
                matches!(&error, FileError::NotADirectory { path } if *path == file),
                "{target:?}: {error:?}"
            );
            assert!(
                error
                    .to_string()
                    .starts_with(&format!("{} is a file, not a directory;", file.display())),
                "{error}"
            );
        }
        assert_eq!(fs::read(&file).unwrap(), b"not a directory");
    }

    #[test]
    fn read_secret_rejects_open_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.pem");
        write_atomic(&path, b"key", 0o644).unwrap();
        assert!(matches!(read_secret(&path), Err(FileError::TooOpen { .. })));
    }

    #[test]
    fn read_secret_names_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        // A world-writable directory such as /tmp must not get the chmod 600 advice.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let error = read_secret(dir.path()).unwrap_err();
        assert!(matches!(&error, FileError::IsDirectory { path } if path == dir.path()));
        assert_eq!(
            error.to_string(),
            format!(
                "{} is a directory, expected a file; pass the path of the file inside it",
                dir.path().display()
            )
        );
    }
}
