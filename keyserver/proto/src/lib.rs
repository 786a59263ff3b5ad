//! Wire protocol, TLS set-up and client of the Spike keyserver, shared by the keyserver,
//! its admin commands and the node-side bootstrap.
//!
//! # Protocol
//!
//! TLS 1.3 over TCP, then frames: a 4-byte big-endian length followed by that many bytes of
//! JSON. The client sends one [`Request`] frame and reads one [`Response`] frame, and may
//! repeat this on the same connection. A plain framed protocol keeps the dependency set
//! small: the keyserver has seven operations and no need for HTTP routing or proxies.
//!
//! Authentication comes from TLS alone. A redemption needs no client certificate, because
//! the one-time token is the credential. Renewal and admin operations need a client
//! certificate issued by the keyserver's CA, and the keyserver looks its role up by the
//! certificate's SHA-256 fingerprint.

pub mod client;
pub mod duration;
pub mod files;
pub mod tls;
pub mod utc;
pub mod wire;

pub use client::{call, ClientError};
pub use wire::{ErrorCode, Request, Response};
