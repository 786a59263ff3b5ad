//! A rustls server certificate resolver that follows the identity files, so a server picks
//! up a renewed certificate without restarting.

use std::fs;
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

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    cert_modified: Option<SystemTime>,
    checked: Instant,
}

/// Server certificate resolver over `cert.pem` and `key.pem`. At most once a second a
/// handshake checks the modification time of `cert.pem`, and reloads both files when it
/// changed. A reload that fails (a half-written file from some other tool, a key that
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
        let (key, cert_modified) = load_certified_key(&paths)?;
        Ok(Self {
            paths,
            loaded: Mutex::new(Loaded {
                key,
                cert_modified,
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

        let modified = fs::metadata(self.paths.cert())
            .and_then(|m| m.modified())
            .ok();
        if modified != loaded.cert_modified {
            match load_certified_key(&self.paths) {
                Ok((key, cert_modified)) => {
                    info!(dir = %self.paths.dir.display(), "reloaded the TLS identity");
                    loaded.key = key;
                    loaded.cert_modified = cert_modified;
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
) -> Result<(Arc<CertifiedKey>, Option<SystemTime>), BootstrapError> {
    let cert_modified = fs::metadata(paths.cert()).and_then(|m| m.modified()).ok();
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
    Ok((Arc::new(certified), cert_modified))
}
