//! Active health checks: TCP connect and HTTP GET, with rise and fall counts.
//!
//! A backend's first result sets its state directly, so a control plane that starts
//! (or restarts) publishes after one round of checks instead of after `rise` rounds.
//! After that a down backend needs `rise` consecutive successes and an up backend
//! `fall` consecutive failures to change state. Only changes are logged.

use std::net::{IpAddr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{CheckKind, HealthCheck};

/// Largest HTTP response head read while looking for the status line.
const MAX_STATUS_LINE_BYTES: usize = 1024;

/// Returns what makes `path` unfit as the request-target of an HTTP check's `GET` line,
/// or `None` for a valid one. The request-target must be in origin form (RFC 9112,
/// section 3.2.1): a '/', then path characters, and optionally '?' and a query. Each
/// byte outside RFC 3986's `pchar` set, `/` and `?` must be percent-encoded. A CR or LF
/// would end the request line and start a header line, and servers reject a request
/// whose target contains a space or a non-ASCII character.
pub fn request_target_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some("it does not start with '/'".to_owned());
    }
    let bytes = path.as_bytes();
    for (index, c) in path.char_indices() {
        let allowed = c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/?".contains(c);
        if allowed {
            continue;
        }
        if c == '%' {
            let digits = bytes.get(index + 1..index + 3);
            if digits.is_some_and(|digits| digits.iter().all(u8::is_ascii_hexdigit)) {
                continue;
            }
            return Some(format!(
                "'%' at byte {index} is not followed by two hexadecimal digits"
            ));
        }
        let kind = if c.is_control() {
            "the control character"
        } else {
            "the character"
        };
        let mut encoded = [0u8; 4];
        let percent: String = c
            .encode_utf8(&mut encoded)
            .bytes()
            .map(|byte| format!("%{byte:02X}"))
            .collect();
        return Some(format!(
            "{kind} {:?} at byte {index} must be percent-encoded, as {percent}",
            c
        ));
    }
    None
}

/// Runs one check against `address`; `Err` carries the reason for the log.
pub async fn check(check: &HealthCheck, address: IpAddr) -> Result<(), String> {
    let target = SocketAddr::new(address, check.port);
    match tokio::time::timeout(check.timeout, run_check(&check.kind, target)).await {
        Ok(result) => result,
        Err(_) => Err(format!("timed out after {} ms", check.timeout.as_millis())),
    }
}

async fn run_check(kind: &CheckKind, target: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect(target)
        .await
        .map_err(|error| format!("connect to {target} failed: {error}"))?;
    let CheckKind::Http {
        path,
        expected_status,
    } = kind
    else {
        return Ok(());
    };

    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: spike-controlplane\r\n\
         Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|error| format!("sending GET {path} to {target} failed: {error}"))?;
    let status = read_status(&mut stream)
        .await
        .map_err(|error| format!("GET {path} on {target}: {error}"))?;
    if status != *expected_status {
        return Err(format!(
            "GET {path} on {target} returned status {status}, expected {expected_status}"
        ));
    }
    Ok(())
}

async fn read_status(stream: &mut TcpStream) -> Result<u16, String> {
    let mut head = Vec::with_capacity(128);
    let mut buffer = [0u8; 256];
    while !head.windows(2).any(|pair| pair == b"\r\n") {
        if head.len() >= MAX_STATUS_LINE_BYTES {
            return Err("no status line in the first 1024 bytes".to_owned());
        }
        let read = stream
            .read(&mut buffer)
            .await
            .map_err(|error| format!("reading the response failed: {error}"))?;
        if read == 0 {
            return Err("connection closed before the status line".to_owned());
        }
        head.extend_from_slice(&buffer[..read]);
    }
    parse_status_line(&head).ok_or_else(|| "invalid HTTP status line".to_owned())
}

/// Parses `HTTP/1.x NNN ...` at the start of `head`.
fn parse_status_line(head: &[u8]) -> Option<u16> {
    let line = head.split(|&byte| byte == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?;
    (status.len() == 3).then(|| status.parse().ok()).flatten()
}

/// A backend's health with its run of consecutive results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// `None` until the first result.
    pub up: Option<bool>,
    successes: u32,
    failures: u32,
}

impl Health {
    pub fn known(up: bool) -> Health {
        Health {
            up: Some(up),
            ..Health::default()
        }
    }

    /// Records a result and returns whether the state changed (the first result counts
    /// as a change).
    pub fn record(&mut self, success: bool, check: &HealthCheck) -> bool {
        if success {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
        }
        let next = match self.up {
            None => success,
            Some(false) if self.successes >= check.rise => true,
            Some(true) if self.failures >= check.fall => false,
            Some(up) => up,
        };
        let changed = self.up != Some(next);
        self.up = Some(next);
        changed
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn http(rise: u32, fall: u32) -> HealthCheck {
        HealthCheck {
            kind: CheckKind::Http {
                path: "/".into(),
                expected_status: 200,
            },
            port: 1,
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(50),
            rise,
            fall,
        }
    }

    #[test]
    fn first_result_sets_the_state() {
        let mut health = Health::default();
        assert!(health.record(false, &http(2, 3)));
        assert_eq!(health.up, Some(false));
    }

    #[test]
    fn rise_and_fall_need_consecutive_results() {
        let check = http(2, 3);
        let mut health = Health::known(true);
        let results = [false, false, true, false, false, false, true, true];
        let expected = [true, true, true, true, true, false, false, true];
        for (result, up) in results.into_iter().zip(expected) {
            health.record(result, &check);
            assert_eq!(health.up, Some(up), "after {result}");
        }
    }

    #[test]
    fn status_line_parses() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 503 Busy\r\n"), Some(503));
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 20 OK\r\n"), None);
    }

    #[tokio::test]
    async fn checks_against_a_loopback_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = [0u8; 512];
                let _ = socket.read(&mut request).await.unwrap();
                let response = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                socket.write_all(response.as_bytes()).await.unwrap();
            }
        });
        let mut check = http(1, 1);
        check.port = port;
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();

        assert_eq!(super::check(&check, loopback).await, Ok(()));
        let error = super::check(&check, loopback).await.unwrap_err();
        assert!(error.contains("status 503"), "{error}");
        server.await.unwrap();

        check.kind = CheckKind::Tcp;
        let error = super::check(&check, loopback).await.unwrap_err();
        assert!(error.contains("connect"), "{error}");
    }
}
