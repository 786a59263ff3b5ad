//! `spike-bootstrap redeem --token-file` rejects a missing file, a directory, an empty
//! file and an oversized file before contacting the keyserver, and a redemption that fails removes
//! the files it created.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// Runs the real binary's `redeem` with `token_file` and returns its exit code and
/// standard error. The server address is loopback, where nothing listens on port 9, so a
/// redemption that gets past the token checks fails there without leaving the host.
fn redeem(token_file: &Path, identity_dir: &Path) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_spike-bootstrap"))
        .args(["redeem", "--server", "127.0.0.1:9", "--timeout", "1s"])
        .args(["--ca-fingerprint", &"ab".repeat(32)])
        .arg("--dir")
        .arg(identity_dir)
        .arg("--token-file")
        .arg(token_file)
        .env_remove("SPIKE_BOOTSTRAP_TOKEN")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write_token(path: &Path, contents: &[u8]) {
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn directory_token_file_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, stderr) = redeem(&tokens, &dir.path().join("identity"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} is a directory, expected a file",
            tokens.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("chmod"), "{stderr}");
    assert!(!dir.path().join("identity").exists());
}

#[test]
fn missing_token_file_explained() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    let (code, stderr) = redeem(&token, &dir.path().join("identity"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("token file {} does not exist", token.display())),
        "{stderr}"
    );
    assert!(stderr.contains("spike-keyserver token create"), "{stderr}");
    assert!(!stderr.contains("reading metadata"), "{stderr}");
    assert!(!dir.path().join("identity").exists());
}

#[test]
fn empty_token_file_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    // Whitespace only counts as empty: the token is trimmed before use.
    write_token(&token, b" \n");
    let (code, stderr) = redeem(&token, &dir.path().join("identity"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("token file {} is empty", token.display())),
        "{stderr}"
    );
    assert!(!dir.path().join("identity").exists());
}

#[test]
fn oversized_token_file_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    write_token(&token, &vec![b'a'; 4097]);
    let (code, stderr) = redeem(&token, &dir.path().join("identity"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "token file {} has 4097 bytes, more than the limit of 4096",
            token.display()
        )),
        "{stderr}"
    );
    assert!(!dir.path().join("identity").exists());
}

#[test]
fn failed_redemption_removes_new_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    write_token(&token, b"spk1.0123456789abcdef01234567.secret\n");

    // Nothing listens on 127.0.0.1:9, so the call fails after the key is written.
    let fresh = dir.path().join("identity").join("node");
    let (code, stderr) = redeem(&token, &fresh);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        !dir.path().join("identity").exists(),
        "the failed redemption left its directories"
    );

    let existing = dir.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    std::fs::write(existing.join("notes.txt"), b"kept").unwrap();
    let (code, stderr) = redeem(&token, &existing);
    assert_eq!(code, Some(1), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(&existing)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["notes.txt"]);
}
