//! The renewal loop logs one line per renewal with the new expiry and the next planned
//! renewal, both in RFC 3339. This is the only test of its binary because tracing caches
//! whether a log statement is enabled. A test on another thread that reaches the same
//! statement first, with no subscriber, can leave it cached as disabled.

mod common;

use std::time::Duration;

use common::Harness;
use spike_bootstrap::{redeem, renew_loop, Backoff};

/// Log output captured in memory.
#[derive(Clone, Default)]
struct CapturedLog(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_loop_logs_each_renewal() {
    let harness = Harness::start_with(|config| config.cert_lifetime = Duration::from_secs(3)).await;
    let created = harness.create_token("node-log", None, None).await;
    let node_dir = harness.dir.path().join("node");
    redeem(&harness.redeem_options(&created.token, &node_dir))
        .await
        .unwrap();

    // The loop runs on this thread, so a thread-local subscriber receives its events and
    // none of the keyserver's, which run on the runtime's workers.
    let log = CapturedLog::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let renewals = renew_loop(
        &harness.renew_options(&node_dir),
        backoff,
        Some(1),
        std::future::pending(),
    )
    .await
    .unwrap();
    drop(guard);
    assert_eq!(renewals, 1);

    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let renewed: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("certificate renewed"))
        .collect();
    let [line] = renewed[..] else {
        panic!("expected one renewal line in {text}");
    };
    for field in ["not_after=", "next_renewal="] {
        let value = line
            .split(field)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {field} in {line}"));
        assert_eq!(value.len(), 20, "{field} {line}");
        assert!(value.ends_with('Z'), "{field} {line}");
    }
}
