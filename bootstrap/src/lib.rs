//! Node side of the Spike keyserver.
//!
//! [`redeem`] gives a new node its first certificate. It generates the private key
//! locally, so the key never leaves the node. It authenticates the keyserver by the pinned
//! SHA-256 fingerprint of the CA certificate, redeems the one-time token with a CSR, and
//! writes the identity files. [`renew_once`] and [`renew_loop`] keep the certificate
//! fresh over mutual TLS. [`ReloadingIdentity`] lets a TLS server pick up renewed files
//! without a restart.
//!
//! Identity directory: `key.pem` (mode 0600), `cert.pem` and `ca.pem` (mode 0644), each
//! replaced by an atomic rename. Renewal keeps the key, so a renewal changes only
//! `cert.pem` and the pair on disk always matches, even after a crash mid-write.

mod node;
mod reload;
mod schedule;

pub use node::{
    read_validity, redeem, renew_loop, renew_once, BootstrapError, Identity, IdentityPaths,
    RedeemOptions, RenewOptions,
};
pub use reload::ReloadingIdentity;
pub use schedule::{renewal_delay, Backoff};
