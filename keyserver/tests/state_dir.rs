//! `spike-keyserver serve` refuses a state directory without a CA instead of creating one,
//! so that a mistyped path cannot leave the operator with a second CA.

use std::path::Path;
use std::process::{Command, Output};

use spike_keyserver::local;
use spike_keyserver::store::Store;

/// Runs the real binary's `serve` on `state_dir`; it must exit before listening.
fn serve(state_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spike-keyserver"))
        .arg("serve")
        .arg("--state-dir")
        .arg(state_dir)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn missing_state_dir_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("typo").join("state");
    let output = serve(&state);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains(&format!(
            "state directory {} does not exist",
            state.display()
        )),
        "{message}"
    );
    assert!(
        message.contains("spike-keyserver init --state-dir"),
        "{message}"
    );
    assert!(
        !dir.path().join("typo").exists(),
        "serve created the parent directory"
    );
    assert!(!message.contains("created a new CA"), "{message}");
}

#[test]
fn empty_state_dir_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let output = serve(dir.path());
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains(&format!(
            "state directory {} holds no CA",
            dir.path().display()
        )),
        "{message}"
    );
    assert!(!dir.path().join("ca.pem").exists());
    assert!(!dir.path().join("ca.key").exists());
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "serve wrote into the directory"
    );
}

#[test]
fn state_dir_file_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state");
    std::fs::write(&file, b"not a directory").unwrap();
    let output = serve(&file);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains(&format!(
            "state directory {} is a file, not a directory",
            file.display()
        )),
        "{message}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
}

#[test]
fn half_present_ca_reported() {
    let dir = tempfile::tempdir().unwrap();
    local::init(dir.path(), None).unwrap();
    std::fs::remove_file(dir.path().join("ca.key")).unwrap();
    let output = serve(dir.path());
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("ca.key"), "{message}");
    assert!(!dir.path().join("ca.key").exists());
}

#[test]
fn address_in_use_issues_no_server_cert() {
    let dir = tempfile::tempdir().unwrap();
    local::init(dir.path(), None).unwrap();
    let occupied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = occupied.local_addr().unwrap().to_string();

    let output = Command::new(env!("CARGO_BIN_EXE_spike-keyserver"))
        .arg("serve")
        .arg("--state-dir")
        .arg(dir.path())
        .args(["--listen", &addr])
        .output()
        .unwrap();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains(&format!("cannot listen on {addr}")),
        "{message}"
    );

    let store = Store::open(dir.path()).unwrap();
    let server_certs: i64 = store
        .connection()
        .query_row(
            "SELECT COUNT(*) FROM certs WHERE kind = 'server'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(
        server_certs, 0,
        "a failed start issued a server certificate"
    );
}
