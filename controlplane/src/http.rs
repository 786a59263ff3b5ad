//! The metrics, liveness and readiness endpoints: a minimal HTTP/1.1 server that reads
//! one request head per connection and closes the connection after the response.
//!
//! - `GET /metrics`: Prometheus text exposition.
//! - `GET /healthz`: 200 while the process runs.
//! - `GET /readyz`: 200 once the dataplane runs the latest published snapshot, else 503.
//!
//! `HEAD` gets the status and headers of `GET` without the body, for probes that only
//! look at the status. Other methods get 405.
//!
//! With a TLS acceptor (see `metrics_tls`) every connection starts with a TLS handshake,
//! which has the same time limit as the request head.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::metrics;

/// Largest request head accepted.
const MAX_REQUEST_BYTES: usize = 8192;
/// Time a client has to send its request head, and, over TLS, to finish the handshake.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the control plane is ready, computed per request.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Serves connections until the task is dropped: over TLS when `tls` is set, else plain
/// HTTP.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    ready: Readiness,
    tls: Option<TlsAcceptor>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "cannot accept a metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = Arc::clone(&registry);
        let ready = Arc::clone(&ready);
        let tls = tls.clone();
        tokio::spawn(async move {
            let result = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(REQUEST_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => handle(stream, &registry, &ready).await,
                        Ok(Err(error)) => Err(error),
                        Err(_) => Ok(()),
                    }
                }
                None => handle(stream, &registry, &ready).await,
            };
            if let Err(error) = result {
                debug!(%peer, %error, "metrics connection failed");
            }
        });
    }
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    registry: &Registry,
    ready: &Readiness,
) -> std::io::Result<()> {
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    let request = parse_request(&head);
    let (status, content_type, body) = match &request {
        Some((Method::Other, _)) => (
            "405 Method Not Allowed",
            "text/plain",
            "use GET or HEAD\n".to_owned(),
        ),
        Some((_, path)) => respond(path, registry, ready),
        None => ("400 Bad Request", "text/plain", "bad request\n".to_owned()),
    };
    // A HEAD response announces the length of the body a GET would get, and sends none.
    let sent_body = match request {
        Some((Method::Head, _)) => "",
        _ => body.as_str(),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{sent_body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Status, content type and body of a GET for `path`.
fn respond(
    path: &str,
    registry: &Registry,
    ready: &Readiness,
) -> (&'static str, &'static str, String) {
    match path {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics::encode(registry),
        ),
        "/healthz" => ("200 OK", "text/plain", "ok\n".to_owned()),
        "/readyz" => match ready() {
            Ok(()) => ("200 OK", "text/plain", "ready\n".to_owned()),
            Err(reason) => ("503 Service Unavailable", "text/plain", reason + "\n"),
        },
        _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
    }
}

async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") && head.len() < MAX_REQUEST_BYTES {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    Ok(head)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Other,
}

/// Returns the method and the path without its query, or `None` when the request line
/// is not `METHOD TARGET VERSION`.
fn parse_request(head: &[u8]) -> Option<(Method, String)> {
    let line = head.split(|&byte| byte == b'\r').next()?;
    let mut parts = std::str::from_utf8(line).ok()?.split(' ');
    let method = match parts.next()? {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "" => return None,
        _ => Method::Other,
    };
    let target = parts.next()?;
    parts.next()?.starts_with("HTTP/").then_some(())?;
    Some((method, target.split('?').next()?.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_request_reads_method_and_path() {
        assert_eq!(
            parse_request(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some((Method::Get, "/metrics".to_owned()))
        );
        assert_eq!(
            parse_request(b"HEAD /healthz HTTP/1.1\r\n\r\n"),
            Some((Method::Head, "/healthz".to_owned()))
        );
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Some((Method::Other, "/metrics".to_owned()))
        );
        assert_eq!(parse_request(b"GET /metrics\r\n\r\n"), None);
        assert_eq!(parse_request(b""), None);
    }
}
