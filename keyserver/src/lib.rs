//! Spike's keyserver: a small certificate authority that gives every Spike node its TLS
//! identity.
//!
//! An administrator, authenticated by an admin client certificate, creates a one-time
//! token for a principal (a node name). The node redeems the token once with a CSR and
//! gets its first certificate, whose names come from the keyserver's policy for the
//! principal. Afterwards it renews over mutual TLS with that certificate until it expires
//! or the principal is revoked. State lives in SQLite ([`store`]), and the wire protocol
//! is in the `spike-keyproto` crate.
//!
//! State directory layout: `ca.pem` (CA certificate), `ca.key` (CA key, mode 0600),
//! `state.db` with its WAL files (mode 0600).

pub mod ca;
pub mod error;
pub use spike_keyproto::files;
pub mod local;
pub mod policy;
pub mod ratelimit;
pub mod server;
pub mod store;
pub mod token;

pub use server::{start, RunningKeyserver, ServeConfig, StartError};
