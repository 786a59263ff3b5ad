//! The command line of `spike-keyserver`, run as the real binary: argument checks happen
//! before anything is written, messages name the option and the fix, and exit statuses
//! are 2 for a bad command line and 1 for failures while running.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use spike_keyproto::{Request, Response};

/// Time a command gets to exit. Every command here exits on its own within a second, so
/// one still running (a `serve` that should have been rejected) is killed and fails.
const COMMAND_DEADLINE: Duration = Duration::from_secs(30);

fn keyserver(args: &[&str]) -> Output {
    keyserver_with_stdout(args, StdoutTo::Pipe)
}

/// Where a command's standard output goes.
enum StdoutTo {
    /// A pipe read to the end.
    Pipe,
    /// A pipe whose reading end is closed at once, as `| true` does.
    ClosedPipe,
    /// /dev/full, where every write fails with ENOSPC.
    Full,
}

fn keyserver_with_stdout(args: &[&str], to: StdoutTo) -> Output {
    let stdout = match to {
        StdoutTo::Pipe | StdoutTo::ClosedPipe => Stdio::piped(),
        StdoutTo::Full => std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
            .into(),
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_spike-keyserver"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take();
    if matches!(to, StdoutTo::ClosedPipe) {
        drop(stdout.take());
    }
    let mut stderr = child.stderr.take().unwrap();
    let stdout_reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(stdout) = stdout.as_mut() {
            let _ = stdout.read_to_end(&mut text);
        }
        text
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > COMMAND_DEADLINE {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("spike-keyserver {args:?} still running after {COMMAND_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout_reader.join().unwrap(),
        stderr: stderr_reader.join().unwrap(),
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn init_with_admin(state: &Path, admin_out: &Path) -> Output {
    keyserver(&[
        "init",
        "--state-dir",
        path(state),
        "--admin",
        "alice",
        "--admin-out",
        path(admin_out),
    ])
}

#[test]
fn oversized_admin_lifetime_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let output = keyserver(&[
        "init",
        "--state-dir",
        path(&state),
        "--admin",
        "alice",
        "--admin-out",
        path(&dir.path().join("admin")),
        "--admin-lifetime",
        "99999999999d",
    ]);

    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains("--admin-lifetime"), "{message}");
    assert!(message.contains("99999999999d"), "{message}");
    assert!(message.contains("maximum of 3650d"), "{message}");
    assert!(!message.contains("panicked"), "{message}");
    assert!(
        !state.exists(),
        "a rejected init created the state directory"
    );
}

#[test]
fn bad_admin_name_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let output = keyserver(&[
        "init",
        "--state-dir",
        path(&state),
        "--admin",
        "Not A Name",
        "--admin-out",
        path(&dir.path().join("admin")),
    ]);

    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains("Not A Name"), "{message}");
    assert!(
        !state.exists(),
        "a rejected init created the state directory"
    );
    assert!(!dir.path().join("admin").exists());
}

#[test]
fn rerun_init_keeps_admin_files() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let admin = dir.path().join("admin");
    let first = init_with_admin(&state, &admin);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let key_before = std::fs::read(admin.join("alice.key")).unwrap();
    let cert_before = std::fs::read(admin.join("alice.pem")).unwrap();

    let second = init_with_admin(&state, &admin);
    let message = stderr(&second);
    assert_eq!(second.status.code(), Some(2), "{message}");
    assert!(
        message.contains(&format!(
            "{} already exists",
            admin.join("alice.pem").display()
        )),
        "{message}"
    );
    assert!(message.contains("move or remove it"), "{message}");
    assert_eq!(std::fs::read(admin.join("alice.key")).unwrap(), key_before);
    assert_eq!(std::fs::read(admin.join("alice.pem")).unwrap(), cert_before);
}

#[test]
fn contradictory_token_limits_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let init = keyserver(&["init", "--state-dir", path(&state)]);
    assert_eq!(init.status.code(), Some(0), "{}", stderr(&init));

    let output = keyserver(&[
        "serve",
        "--state-dir",
        path(&state),
        "--listen",
        "127.0.0.1:0",
        "--token-lifetime",
        "8d",
        "--max-token-lifetime",
        "7d",
    ]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(
        message.contains("(--token-lifetime) 8d is longer than the maximum token lifetime"),
        "{message}"
    );
    assert!(!message.contains("listening"), "{message}");
}

#[test]
fn host_name_listen_address_explained() {
    let dir = tempfile::tempdir().unwrap();
    let output = keyserver(&[
        "serve",
        "--state-dir",
        path(dir.path()),
        "--listen",
        "localhost:17443",
    ]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains("--listen"), "{message}");
    assert!(message.contains("127.0.0.1:7443"), "{message}");
    assert!(message.contains("[::1]:7443"), "{message}");
    assert!(
        !message.contains("invalid socket address syntax"),
        "{message}"
    );
}

#[test]
fn fingerprint_missing_state_dir_matches_serve() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let fingerprint = keyserver(&["fingerprint", "--state-dir", path(&missing)]);
    let serve = keyserver(&[
        "serve",
        "--state-dir",
        path(&missing),
        "--listen",
        "127.0.0.1:0",
    ]);

    assert_eq!(
        fingerprint.status.code(),
        Some(2),
        "{}",
        stderr(&fingerprint)
    );
    assert_eq!(fingerprint.status.code(), serve.status.code());
    assert!(
        stderr(&fingerprint).contains("does not exist"),
        "{}",
        stderr(&fingerprint)
    );
}

#[test]
fn help_documents_exit_statuses() {
    let output = keyserver(&["--help"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("Exit status: 0 on success; 2"), "{text}");
}

#[test]
fn principal_revoke_takes_flag() {
    let output = keyserver(&["principal", "revoke", "--help"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("--principal <PRINCIPAL>"), "{text}");
}

#[test]
fn revoke_help_documents_repeat_exit_status() {
    for command in ["token", "principal"] {
        let output = keyserver(&[command, "revoke", "--help"]);
        let text = String::from_utf8_lossy(&output.stdout).replace('\n', " ");
        assert!(
            text.contains("revoked before is reported as such"),
            "{text}"
        );
        assert!(text.contains("the command exits 0"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_admin_key_names_files() {
    let harness = common::Harness::start().await;
    let admin = harness.dir.path().join("admin");
    let bob = tempfile::tempdir().unwrap();
    let state = harness.state_dir();
    let issued = tokio::task::spawn_blocking(move || {
        keyserver(&[
            "admin-cert",
            "--state-dir",
            path(&state),
            "--name",
            "bob",
            "--out-dir",
            path(bob.path()),
        ]);
        bob
    })
    .await
    .unwrap();

    let cert = admin.join("alice.pem");
    let key = issued.path().join("bob.key");
    let ca = harness.state_dir().join("ca.pem");
    let addr = harness.addr();
    let output = tokio::task::spawn_blocking(move || {
        keyserver(&[
            "token",
            "create",
            "--server",
            &addr,
            "--ca-cert",
            path(&ca),
            "--cert",
            path(&cert),
            "--key",
            path(&key),
            "--principal",
            "node-a",
        ])
    })
    .await
    .unwrap();

    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains(&format!(
            "--cert {} and key --key {} do not belong together",
            admin.join("alice.pem").display(),
            issued.path().join("bob.key").display()
        )),
        "{message}"
    );
    assert!(!message.contains("KeyMismatch"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_printed_as_rfc3339() {
    let harness = common::Harness::start().await;
    let admin = harness.dir.path().join("admin");
    let ca = harness.state_dir().join("ca.pem");
    let addr = harness.addr();
    let output = tokio::task::spawn_blocking(move || {
        keyserver(&[
            "token",
            "create",
            "--server",
            &addr,
            "--ca-cert",
            path(&ca),
            "--cert",
            path(&admin.join("alice.pem")),
            "--key",
            path(&admin.join("alice.key")),
            "--principal",
            "node-a",
        ])
    })
    .await
    .unwrap();

    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{message}");
    let expiry = message
        .split(" expires at ")
        .nth(1)
        .unwrap_or_else(|| panic!("no expiry in {message}"));
    // 2026-12-04T22:27:11Z: a date, a T, a time and a Z before the Unix value.
    let stamp = expiry.split(' ').next().unwrap();
    assert_eq!(stamp.len(), 20, "{message}");
    assert_eq!(&stamp[10..11], "T", "{message}");
    assert!(stamp.ends_with('Z'), "{message}");
    assert!(expiry.contains("(Unix "), "{message}");
}

#[test]
fn bare_number_duration_needs_unit() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let output = keyserver(&[
        "init",
        "--state-dir",
        path(&state),
        "--admin",
        "alice",
        "--admin-out",
        path(&dir.path().join("admin")),
        "--admin-lifetime",
        "90",
    ]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(message.contains("--admin-lifetime"), "{message}");
    assert!(message.contains("\"90\" has no unit"), "{message}");
    assert!(message.contains("90s or 90m"), "{message}");
    assert!(!state.exists());

    let help = keyserver(&["--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("Durations need a unit"), "{text}");
}

#[test]
fn bad_state_dir_is_usage_error_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let out = dir.path().join("out");
    // Missing, and a path through a file, which the system cannot even look up.
    for state in [dir.path().join("missing"), file.join("state")] {
        let state = path(&state);
        let commands: [&[&str]; 3] = [
            &["serve", "--state-dir", state, "--listen", "127.0.0.1:0"],
            &["fingerprint", "--state-dir", state],
            &[
                "admin-cert",
                "--state-dir",
                state,
                "--name",
                "bob",
                "--out-dir",
                path(&out),
            ],
        ];
        for args in commands {
            let output = keyserver(args);
            let message = stderr(&output);
            assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
            assert!(
                message.contains(&format!("state directory {state}")),
                "{args:?}: {message}"
            );
        }
    }
    assert!(!out.exists(), "admin-cert created its output directory");
}

#[test]
fn serve_help_lists_signals_exit_codes_and_logging() {
    let output = keyserver(&["serve", "--help"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{text}");
    for expected in ["Signals:", "SIGTERM", "SIGINT", "Exit codes:", "RUST_LOG"] {
        assert!(text.contains(expected), "{expected} missing from {text}");
    }
}

#[test]
fn non_ca_import_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let leaf = rcgen::generate_simple_self_signed(vec!["leaf.example".into()]).unwrap();
    let cert = dir.path().join("leaf.pem");
    let key = dir.path().join("leaf.key");
    std::fs::write(&cert, leaf.cert.pem()).unwrap();
    std::fs::write(&key, leaf.signing_key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let state = dir.path().join("state");

    let output = keyserver(&[
        "init",
        "--state-dir",
        path(&state),
        "--import-ca-cert",
        path(&cert),
        "--import-ca-key",
        path(&key),
    ]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(
        message.contains(&format!("{} is not a CA certificate", cert.display())),
        "{message}"
    );
    assert!(message.contains("basicConstraints CA:TRUE"), "{message}");
    assert!(message.contains("keyCertSign"), "{message}");
    assert!(
        !state.exists(),
        "a rejected import created the state directory"
    );
}

#[test]
fn unwritable_admin_out_checked_before_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // /proc refuses new entries, even for root.
    let output = init_with_admin(&state, Path::new("/proc/nope"));
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(
        message.contains("--admin-out /proc/nope cannot be created or written"),
        "{message}"
    );
    assert!(
        !state.exists(),
        "a rejected init created the state directory"
    );
}

#[test]
fn failed_init_removes_what_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let admin = dir.path().join("admin");
    // A directory where the key's temporary file goes passes every check but makes the
    // key write fail after the CA exists.
    let blocker = admin.join(".alice.key.tmp");
    std::fs::create_dir_all(&blocker).unwrap();

    let output = init_with_admin(&state, &admin);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains(".alice.key.tmp"), "{message}");
    assert!(!state.exists(), "the failed init left {}", state.display());
    assert!(
        blocker.is_dir(),
        "a directory that existed before was removed"
    );
    let left: Vec<_> = std::fs::read_dir(&admin)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, [".alice.key.tmp"]);

    // With the obstacle gone, the same command succeeds.
    std::fs::remove_dir(&blocker).unwrap();
    let retry = init_with_admin(&state, &admin);
    assert_eq!(retry.status.code(), Some(0), "{}", stderr(&retry));
}

/// Runs an admin command against the harness's keyserver as alice.
async fn admin_command(harness: &common::Harness, args: &[&str], to: StdoutTo) -> Output {
    let admin = harness.dir.path().join("admin");
    let ca = harness.state_dir().join("ca.pem");
    let mut full: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    full.extend(["--server".into(), harness.addr()]);
    for (flag, file) in [
        ("--ca-cert", ca),
        ("--cert", admin.join("alice.pem")),
        ("--key", admin.join("alice.key")),
    ] {
        full.extend([flag.to_string(), path(&file).to_string()]);
    }
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = full.iter().map(String::as_str).collect();
        keyserver_with_stdout(&args, to)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_stdout_is_an_error_not_a_panic() {
    let harness = common::Harness::start().await;
    harness.create_token("node-a", None, None).await;
    for (args, to) in [
        (&["token", "list"][..], StdoutTo::ClosedPipe),
        (&["cert", "list"][..], StdoutTo::Full),
    ] {
        let output = admin_command(&harness, args, to).await;
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {message}");
        assert!(
            message.contains("writing to standard output failed"),
            "{args:?}: {message}"
        );
        assert!(!message.contains("panicked"), "{args:?}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprinted_token_named_for_revocation() {
    let harness = common::Harness::start().await;
    let output = admin_command(
        &harness,
        &["token", "create", "--principal", "node-a"],
        StdoutTo::Full,
    )
    .await;
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(!message.contains("panicked"), "{message}");

    let Response::Tokens { tokens } = harness
        .call_as(&harness.admin, Request::ListTokens { all: false })
        .await
        .unwrap()
    else {
        panic!("expected tokens");
    };
    let [token] = &tokens[..] else {
        panic!("expected one token, got {tokens:?}");
    };
    assert!(
        message.contains(&format!(
            "token {} for node-a was created, but writing it to standard output failed",
            token.token_id
        )),
        "{message}"
    );
    assert!(
        message.contains(&format!("token revoke --token-id {}", token.token_id)),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_show_rfc3339_times() {
    let harness = common::Harness::start().await;
    harness.create_token("node-a", None, None).await;
    let is_rfc3339 = |value: &serde_json::Value| {
        value
            .as_str()
            .is_some_and(|text| text.len() == 20 && &text[10..11] == "T" && text.ends_with('Z'))
    };

    let tokens = admin_command(&harness, &["token", "list"], StdoutTo::Pipe).await;
    assert_eq!(tokens.status.code(), Some(0), "{}", stderr(&tokens));
    let tokens: serde_json::Value = serde_json::from_slice(&tokens.stdout).unwrap();
    for field in ["created_at", "expires_at"] {
        assert!(is_rfc3339(&tokens[0][field]), "{field}: {tokens}");
    }

    let certs = admin_command(&harness, &["cert", "list"], StdoutTo::Pipe).await;
    assert_eq!(certs.status.code(), Some(0), "{}", stderr(&certs));
    let certs: serde_json::Value = serde_json::from_slice(&certs.stdout).unwrap();
    for field in ["not_before", "not_after", "issued_at"] {
        assert!(is_rfc3339(&certs[0][field]), "{field}: {certs}");
    }
}

#[test]
fn serve_logs_server_certificate_expiry_as_rfc3339() {
    let dir = tempfile::tempdir().unwrap();
    let init = keyserver(&["init", "--state-dir", path(dir.path())]);
    assert_eq!(init.status.code(), Some(0), "{}", stderr(&init));
    let mut child = Command::new(env!("CARGO_BIN_EXE_spike-keyserver"))
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let line = std::io::BufRead::lines(stderr)
        .map_while(Result::ok)
        .find(|line| line.contains("issued keyserver server certificate"));
    child.kill().unwrap();
    child.wait().unwrap();

    let line = line.expect("no server certificate line in the log");
    let not_after = line
        .split("not_after=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no not_after in {line}"));
    assert_eq!(not_after.len(), 20, "{line}");
    assert!(not_after.ends_with('Z'), "{line}");
}

/// Returns the RFC 3339 time after `marker` in `line`, such as `2026-12-04T22:27:11Z`.
fn time_after<'a>(line: &'a str, marker: &str) -> &'a str {
    let rest = line
        .split(marker)
        .nth(1)
        .unwrap_or_else(|| panic!("no {marker:?} in {line}"));
    let stamp = rest
        .get(..20)
        .unwrap_or_else(|| panic!("no time in {line}"));
    assert_eq!(&stamp[10..11], "T", "{line}");
    assert!(stamp.ends_with('Z'), "{line}");
    stamp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_printed_and_repeats_named() {
    let harness = common::Harness::start().await;
    let token = harness.create_token("node-a", None, None).await;
    harness.create_token("node-b", None, None).await;
    harness.create_token("node-b", None, None).await;
    let revoke_token = ["token", "revoke", "--token-id", &token.token_id];
    let revoke_principal = ["principal", "revoke", "--principal", "node-b"];

    let mut first_times = Vec::new();
    for (args, expected) in [
        (
            &revoke_token[..],
            format!("token {} of principal node-a revoked at ", token.token_id),
        ),
        (&revoke_principal[..], "principal node-b revoked at ".into()),
    ] {
        let output = admin_command(&harness, args, StdoutTo::Pipe).await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            stderr(&output)
        );
        let line = String::from_utf8(output.stdout).unwrap();
        assert!(line.starts_with(&expected), "{args:?}: {line}");
        first_times.push(time_after(&line, " revoked at ").to_string());
        if args == revoke_principal {
            assert!(line.ends_with(", with its 2 unused tokens\n"), "{line}");
        }
    }
    // Repeats exit 0, say that nothing changed and keep the first time.
    for (args, first) in [&revoke_token[..], &revoke_principal[..]]
        .into_iter()
        .zip(&first_times)
    {
        let output = admin_command(&harness, args, StdoutTo::Pipe).await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            stderr(&output)
        );
        let line = String::from_utf8(output.stdout).unwrap();
        assert!(
            line.contains(" was already revoked at "),
            "{args:?}: {line}"
        );
        assert!(line.trim_end().ends_with("; nothing changed"), "{line}");
        assert_eq!(time_after(&line, " already revoked at "), first, "{line}");
    }
}
