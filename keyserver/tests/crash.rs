//! kill -9 of the real keyserver binary during a stream of redemptions: after a restart,
//! every acknowledged certificate is in the database and the audit log, and no token has
//! been redeemed twice.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{identity_config, rejection, TIMEOUT};
use spike_keyproto::wire::CreatedToken;
use spike_keyproto::{call, ErrorCode, Request, Response};
use spike_keyserver::local;
use spike_keyserver::store::Store;

const TOKENS: usize = 80;
const ACKS_BEFORE_KILL: usize = 20;
const WORKERS: usize = 4;

/// The keyserver child process, killed (SIGKILL, by its own handle) when dropped.
struct Keyserver {
    child: Child,
    addr: String,
}

impl Keyserver {
    fn spawn(state_dir: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_spike-keyserver"))
            .arg("serve")
            .arg("--state-dir")
            .arg(state_dir)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--max-failed-redemptions",
                "100000",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();

        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = receiver
            .recv_timeout(Duration::from_secs(30))
            .expect("keyserver did not start within 30 s");
        let addr = line
            .split_whitespace()
            .nth(1)
            .expect("no address in the start line")
            .to_string();
        Self { child, addr }
    }

    fn kill_9(&mut self) {
        // Child::kill sends SIGKILL on Unix: no shutdown code of the keyserver runs.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Keyserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn redeem(
    ca_pem: &str,
    addr: &str,
    token: &str,
) -> Result<String, spike_keyproto::ClientError> {
    let config =
        Arc::new(spike_keyproto::tls::client_config(common::ca_der(ca_pem), None).unwrap());
    let key = rcgen::KeyPair::generate().unwrap();
    let request = Request::Redeem {
        token: token.into(),
        csr_pem: common::csr_for(&key),
    };
    match call(config, addr, "127.0.0.1", &request, Duration::from_secs(5)).await? {
        Response::Issued(issued) => Ok(issued.serial),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_cert() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (ca, _) = local::init(&state, None).unwrap();
    let ca_pem = ca.cert_pem().to_string();
    let admin_files = local::issue_admin_cert(
        &state,
        "alice",
        Duration::from_secs(3600),
        &dir.path().join("admin"),
    )
    .unwrap();
    let admin = identity_config(&ca_pem, &admin_files.cert, &admin_files.key);

    let mut server = Keyserver::spawn(&state);
    let mut tokens: Vec<CreatedToken> = Vec::new();
    for i in 0..TOKENS {
        let request = Request::CreateToken {
            principal: format!("node-{i}"),
            source_cidr: None,
            lifetime_secs: None,
            dns_names: Vec::new(),
        };
        match call(admin.clone(), &server.addr, "127.0.0.1", &request, TIMEOUT)
            .await
            .unwrap()
        {
            Response::TokenCreated(created) => tokens.push(created),
            other => panic!("unexpected {other:?}"),
        }
    }
    let tokens = Arc::new(tokens);

    // Workers redeem tokens in order and record each acknowledged (token id, serial).
    let next = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (next, acked, tokens) = (next.clone(), acked.clone(), tokens.clone());
        let (ca_pem, addr) = (ca_pem.clone(), server.addr.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(token) = tokens.get(i) else { return };
                if let Ok(serial) = redeem(&ca_pem, &addr, &token.token).await {
                    acked.lock().unwrap().push((token.token_id.clone(), serial));
                }
            }
        }));
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < ACKS_BEFORE_KILL {
        assert!(
            Instant::now() < deadline,
            "too few redemptions before the deadline"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill_9();
    for worker in workers {
        worker.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= ACKS_BEFORE_KILL);
    assert!(acked.len() < TOKENS, "the kill came after the stream ended");

    let restarted = Keyserver::spawn(&state);
    let store = Store::open(&state).unwrap();
    let audit = store.audit_log().unwrap();
    for (token_id, serial) in &acked {
        let stored_token: String = store
            .connection()
            .query_row(
                "SELECT token_id FROM certs WHERE serial = ?1",
                [serial],
                |row| row.get(0),
            )
            .unwrap_or_else(|e| panic!("acknowledged certificate {serial} missing: {e}"));
        assert_eq!(&stored_token, token_id);
        let logged = audit.iter().any(|e| {
            e.operation == "redeem"
                && e.result == "ok"
                && e.detail.as_deref().unwrap_or("").contains(serial.as_str())
        });
        assert!(
            logged,
            "acknowledged certificate {serial} missing from the audit log"
        );
    }

    let reused: i64 = store
        .connection()
        .query_row(
            "SELECT COUNT(*) FROM (SELECT token_id FROM certs WHERE token_id IS NOT NULL GROUP BY token_id HAVING COUNT(*) > 1)",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(reused, 0);
    let (used, issued): (i64, i64) = store
        .connection()
        .query_row(
            "SELECT (SELECT COUNT(*) FROM tokens WHERE used_at IS NOT NULL), (SELECT COUNT(*) FROM certs WHERE token_id IS NOT NULL)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!(used, issued);

    // Every acknowledged token stays used after the restart.
    for (token_id, _) in &acked {
        let token = tokens.iter().find(|t| &t.token_id == token_id).unwrap();
        let (code, _) = rejection(redeem(&ca_pem, &restarted.addr, &token.token).await);
        assert_eq!(code, ErrorCode::TokenUsed);
    }

    // Every token ends with at most one certificate, whatever the kill interrupted.
    for token in tokens.iter() {
        let _ = redeem(&ca_pem, &restarted.addr, &token.token).await;
    }
    let max_per_token: i64 = store
        .connection()
        .query_row(
            "SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM certs WHERE token_id IS NOT NULL GROUP BY token_id)",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(max_per_token, 1);
    let certified: i64 = store
        .connection()
        .query_row(
            "SELECT COUNT(DISTINCT token_id) FROM certs WHERE token_id IS NOT NULL",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(certified, TOKENS as i64);

    // The admin command line works against the restarted keyserver.
    let output = Command::new(env!("CARGO_BIN_EXE_spike-keyserver"))
        .args(["token", "list", "--all", "--server", &restarted.addr])
        .arg("--ca-cert")
        .arg(state.join("ca.pem"))
        .arg("--cert")
        .arg(&admin_files.cert)
        .arg("--key")
        .arg(&admin_files.key)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(listed.len(), TOKENS);
}
