//! `spike-bootstrap renew --loop` stops cleanly on SIGTERM, as a service manager sends it,
//! and on SIGINT. The identity is valid for decades, so the loop only waits and never
//! dials the loopback address it is given.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Time the loop gets to exit after the signal.
const EXIT_DEADLINE: Duration = Duration::from_secs(10);

fn write_identity(dir: &Path) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["node-a".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2090, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
    let key_path = dir.join("key.pem");
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Starts the loop and returns once it logged that it waits, which is after its signal
/// handlers are installed.
fn start_loop(dir: &Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_spike-bootstrap"))
        .args(["renew", "--loop", "--server", "127.0.0.1:9", "--dir"])
        .arg(dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("waiting to renew") => break,
            Some(Ok(_)) => {}
            other => {
                let _ = child.kill();
                panic!("the loop ended before waiting: {other:?}");
            }
        }
    }
    // Keep draining standard error so that the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

fn stop_with(signal: &str) -> Option<i32> {
    let dir = tempfile::tempdir().unwrap();
    write_identity(dir.path());
    let mut child = start_loop(dir.path());
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());

    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if started.elapsed() > EXIT_DEADLINE {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("renew --loop still running {EXIT_DEADLINE:?} after {signal}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_ends_loop_with_status_0() {
    assert_eq!(stop_with("-TERM"), Some(0));
}

#[test]
fn sigint_ends_loop_with_status_0() {
    assert_eq!(stop_with("-INT"), Some(0));
}
