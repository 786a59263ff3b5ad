//! `spike-bootstrap redeem --token-file` rejects a directory, an empty file and an
//! oversized file before contacting the keyserver.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// Runs the real binary's `redeem` with `token_file` and returns its exit code and
/// standard error. The server address is never dialled because the token check fails
/// first; it is loopback so that nothing leaves the host if that ever changes.
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
