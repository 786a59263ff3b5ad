//! One request to the keyserver over a fresh TLS connection.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::wire::{read_frame, write_frame, ErrorCode, FrameError, Request, Response};

/// Errors of one call to the keyserver.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server name is neither a DNS name nor an IP address.
    #[error("invalid server name {name:?}: expected a DNS name or an IP address")]
    InvalidServerName { name: String },
    /// The TCP connection failed.
    #[error("cannot connect to keyserver {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    /// The TLS handshake failed, for example because the certificate was not trusted.
    #[error("TLS handshake with keyserver {addr} failed: {source}")]
    Handshake {
        addr: String,
        source: std::io::Error,
    },
    /// The whole call took longer than its timeout.
    #[error("keyserver {addr} did not answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    /// Sending the request or reading the response failed.
    #[error("exchange with keyserver {addr} failed: {source}")]
    Frame { addr: String, source: FrameError },
    /// The keyserver closed the connection without a response.
    #[error("keyserver {addr} closed the connection without a response")]
    NoResponse { addr: String },
    /// The keyserver rejected the request.
    #[error("keyserver rejected the request ({code:?}): {message}")]
    Rejected { code: ErrorCode, message: String },
}

impl ClientError {
    /// Returns the keyserver's error code when it rejected the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Rejected { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Connects to `addr`, verifies the server as `server_name`, sends `request` and returns
/// the response. A [`Response::Error`] becomes [`ClientError::Rejected`].
///
/// # Errors
///
/// Any [`ClientError`]; the whole call is bounded by `timeout`.
pub async fn call(
    config: Arc<ClientConfig>,
    addr: &str,
    server_name: &str,
    request: &Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let name = ServerName::try_from(server_name.to_string()).map_err(|_| {
        ClientError::InvalidServerName {
            name: server_name.to_string(),
        }
    })?;

    let exchange = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let mut tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|source| ClientError::Handshake {
                addr: addr.to_string(),
                source,
            })?;

        let frame_error = |source| ClientError::Frame {
            addr: addr.to_string(),
            source,
        };
        write_frame(&mut tls, request).await.map_err(frame_error)?;
        let response: Option<Response> = read_frame(&mut tls).await.map_err(frame_error)?;
        response.ok_or_else(|| ClientError::NoResponse {
            addr: addr.to_string(),
        })
    };

    let response = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ClientError::Timeout {
            addr: addr.to_string(),
            timeout,
        })??;

    match response {
        Response::Error { code, message } => Err(ClientError::Rejected { code, message }),
        other => Ok(other),
    }
}

/// Returns the host part of `host:port` (without brackets for IPv6), the default name a
/// client verifies the keyserver's certificate against.
pub fn host_of(addr: &str) -> &str {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => addr,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Checks a `--server` value: a host name or address, then `:` and a port from 1 to
/// 65535, with an IPv6 address in brackets. Returns it unchanged, or a message that
/// shows the expected form.
///
/// # Errors
///
/// The message for a value without a port, with an empty host or with a bad port.
pub fn server_address(input: &str) -> Result<String, String> {
    let expected = "expected HOST:PORT, such as keyserver.example:7443, 192.0.2.5:7443 or \
                    [2001:db8::5]:7443";
    let Some((host, port)) = input.rsplit_once(':') else {
        return Err(format!("{input:?} has no port: {expected}"));
    };
    let bare_ipv6 = host.contains(':') && !(host.starts_with('[') && host.ends_with(']'));
    if host.is_empty() || host == "[]" || bare_ipv6 {
        return Err(format!("{input:?} has no valid host: {expected}"));
    }
    match port.parse::<u16>() {
        Ok(1..) => Ok(input.to_owned()),
        _ => Err(format!("{input:?} has no port from 1 to 65535: {expected}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_address_needs_host_and_port() {
        for good in [
            "127.0.0.1:7443",
            "[::1]:7443",
            "keyserver.spike:1",
            "ks:65535",
        ] {
            assert_eq!(server_address(good).as_deref(), Ok(good));
        }
        let cases = [
            ("127.0.0.1", "has no port"),
            ("keyserver", "has no port"),
            (":7443", "has no valid host"),
            ("[]:7443", "has no valid host"),
            ("::1:7443", "has no valid host"),
            ("ks:0", "no port from 1 to 65535"),
            ("ks:65536", "no port from 1 to 65535"),
            ("ks:https", "no port from 1 to 65535"),
        ];
        for (bad, reason) in cases {
            let error = server_address(bad).expect_err(bad);
            assert!(error.contains(reason), "{bad}: {error}");
            assert!(error.contains("expected HOST:PORT"), "{bad}: {error}");
        }
    }

    #[test]
    fn host_of_strips_port_and_brackets() {
        assert_eq!(host_of("127.0.0.1:7443"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7443"), "::1");
        assert_eq!(host_of("keyserver.spike:7443"), "keyserver.spike");
        assert_eq!(host_of("keyserver"), "keyserver");
    }
}
