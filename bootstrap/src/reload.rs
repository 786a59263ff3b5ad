//! A rustls server certificate resolver that follows the identity files, so a server picks
//! up a renewed certificate without restarting.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use spike_keyproto::files;
use spike_keyproto::tls::{self, provider};
use tracing::{info, warn};

use crate::node::{BootstrapError, IdentityPaths};

/// How often a handshake may trigger a look at the files.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// One version of `cert.pem`. The modification time alone misses a replacement written
/// within the same timestamp tick (Linux file systems usually stamp files from a clock that
/// advances every few milliseconds), so the inode, which each atomic rename changes, and
/// the length count too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    inode: u64,
    len: u64,
}

impl FileStamp {
    /// Returns the stamp of `path`, or `None` if its metadata cannot be read.
    fn of(path: &Path) -> Option<FileStamp> {
        let metadata = fs::metadata(path).ok()?;
        Some(FileStamp {
            modified: metadata.modified().ok(),
            inode: metadata.ino(),
            len: metadata.len(),
        })
    }
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    cert_stamp: Option<FileStamp>,
    checked: Instant,
}

/// Server certificate resolver over `cert.pem` and `key.pem`. At most once a second a
/// handshake checks the modification time, inode and length of `cert.pem`, and reloads
/// both files when one of them changed. A reload that fails (a half-written file from some other tool, a key that
/// does not match) keeps the previous certificate and logs a warning.
#[derive(Debug)]
pub struct ReloadingIdentity {
    paths: IdentityPaths,
    loaded: Mutex<Loaded>,
}

impl ReloadingIdentity {
    /// Loads the identity in `paths`.
    ///
    /// # Errors
    ///
    /// [`BootstrapError`] if the files cannot be read or do not match.
    pub fn load(paths: IdentityPaths) -> Result<Self, BootstrapError> {
        let (key, cert_stamp) = load_certified_key(&paths)?;
        Ok(Self {
            paths,
            loaded: Mutex::new(Loaded {
                key,
                cert_stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// Returns the current certificate and key, reloading them first if `cert.pem`
    /// changed and the last check is older than a second.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.checked.elapsed() < CHECK_INTERVAL {
            return loaded.key.clone();
        }
        loaded.checked = Instant::now();

        if FileStamp::of(&self.paths.cert()) != loaded.cert_stamp {
            match load_certified_key(&self.paths) {
                Ok((key, cert_stamp)) => {
                    info!(dir = %self.paths.dir.display(), "reloaded the TLS identity");
                    loaded.key = key;
                    loaded.cert_stamp = cert_stamp;
                }
                Err(e) => {
                    warn!(error = %e, "reloading the TLS identity failed; keeping the previous one")
                }
            }
        }
        loaded.key.clone()
    }
}

impl ResolvesServerCert for ReloadingIdentity {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn load_certified_key(
    paths: &IdentityPaths,
) -> Result<(Arc<CertifiedKey>, Option<FileStamp>), BootstrapError> {
    // Stamped before reading: a replacement in between is loaded again at the next check.
    let cert_stamp = FileStamp::of(&paths.cert());
    let cert_pem = files::read_text(&paths.cert())?;
    let key_pem = files::read_secret(&paths.key())?;
    let mut chain = tls::certs_from_pem(&cert_pem, &paths.cert().display().to_string())?;
    // Serve the CA after the leaf when it is at hand, as the keyserver does.
    if let Ok(ca_pem) = files::read_text(&paths.ca()) {
        chain.extend(tls::certs_from_pem(&ca_pem, "ca.pem").unwrap_or_default());
    }
    let key = tls::key_from_pem(&key_pem, &paths.key().display().to_string())?;
    let certified =
        CertifiedKey::from_der(chain, key, &provider()).map_err(tls::TlsSetupError::from)?;
    Ok((Arc::new(certified), cert_stamp))
}
