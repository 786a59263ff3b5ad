//! Arguments and exit statuses of `spike-bootstrap`, run as the real binary: 2 for a bad
//! command line, 1 for failures while running, and TLS errors that name the files. The
//! server address is loopback and is never dialled, because every case fails first.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn bootstrap(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spike-bootstrap"))
        .args(args)
        .args(["--server", "127.0.0.1:9", "--timeout", "1s", "--dir"])
        .arg(dir)
        .env_remove("SPIKE_BOOTSTRAP_TOKEN")
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn bad_fingerprint_is_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let identity = dir.path().join("identity");
    let output = bootstrap(&["redeem", "--ca-fingerprint", "abc"], &identity);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains("--ca-fingerprint"), "{message}");
    assert!(!identity.exists());
}

#[test]
fn renew_without_identity_says_to_redeem() {
    let dir = tempfile::tempdir().unwrap();
    let identity = dir.path().join("identity");
    let output = bootstrap(&["renew"], &identity);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains("no identity to renew"), "{message}");
    assert!(message.contains("spike-bootstrap redeem"), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
}

#[test]
fn server_without_port_is_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_spike-bootstrap"))
        .args(["renew", "--server", "127.0.0.1", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains("has no port"), "{message}");
    assert!(message.contains("expected HOST:PORT"), "{message}");
}

#[test]
fn missing_token_is_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let fingerprint = "ab".repeat(32);
    let output = bootstrap(
        &["redeem", "--ca-fingerprint", &fingerprint],
        &dir.path().join("identity"),
    );
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains("--token-file"), "{message}");
}

#[test]
fn oversized_retry_delay_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let output = bootstrap(
        &["renew", "--loop", "--retry-delay", "18446744073709551615s"],
        dir.path(),
    );
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains("--retry-delay"), "{message}");
    assert!(message.contains("maximum of 1d"), "{message}");
}

#[test]
fn retry_delay_above_maximum_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let output = bootstrap(
        &[
            "renew",
            "--loop",
            "--retry-delay",
            "1h",
            "--max-retry-delay",
            "5m",
        ],
        dir.path(),
    );
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(
        message.contains("--retry-delay 1h is longer than --max-retry-delay 5m"),
        "{message}"
    );
}

#[test]
fn mismatched_key_names_files() {
    let dir = tempfile::tempdir().unwrap();
    let first = rcgen::generate_simple_self_signed(vec!["node-a".into()]).unwrap();
    let second = rcgen::generate_simple_self_signed(vec!["node-b".into()]).unwrap();
    std::fs::write(dir.path().join("ca.pem"), first.cert.pem()).unwrap();
    std::fs::write(dir.path().join("cert.pem"), first.cert.pem()).unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, second.signing_key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    let output = bootstrap(&["renew"], dir.path());
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains(&format!(
            "certificate {} and key {} do not belong together",
            dir.path().join("cert.pem").display(),
            key.display()
        )),
        "{message}"
    );
    assert!(!message.contains("KeyMismatch"), "{message}");
}

#[test]
fn file_as_dir_is_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("identity");
    std::fs::write(&file, b"kept").unwrap();
    let fingerprint = "ab".repeat(32);
    for args in [
        &["redeem", "--ca-fingerprint", &fingerprint][..],
        &["renew"],
    ] {
        let output = bootstrap(args, &file);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
        assert!(
            message.contains(&format!(
                "--dir {} is a file, not a directory",
                file.display()
            )),
            "{args:?}: {message}"
        );
        assert!(!message.contains("File exists"), "{args:?}: {message}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"kept");
}

#[test]
fn file_above_dir_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("identity");
    std::fs::write(&file, b"kept").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_spike-bootstrap"))
        .args(["redeem", "--ca-fingerprint", &"ab".repeat(32)])
        .args(["--server", "127.0.0.1:9", "--timeout", "1s", "--dir"])
        .arg(file.join("node"))
        .env(
            "SPIKE_BOOTSTRAP_TOKEN",
            "spk1.0123456789abcdef01234567.secret",
        )
        .output()
        .unwrap();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains(&format!("{} is a file, not a directory", file.display())),
        "{message}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"kept");
}

#[test]
fn help_documents_exit_statuses() {
    let output = Command::new(env!("CARGO_BIN_EXE_spike-bootstrap"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("Exit status: 0 on success; 2"), "{text}");
}

#[test]
fn loop_options_need_loop() {
    let dir = tempfile::tempdir().unwrap();
    for option in [
        ["--max-renewals", "3"],
        ["--retry-delay", "10s"],
        ["--max-retry-delay", "10m"],
    ] {
        let output = bootstrap(&["renew", option[0], option[1]], dir.path());
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{option:?}: {message}");
        assert!(message.contains(option[0]), "{message}");
        assert!(message.contains("--loop"), "{message}");
    }
}
