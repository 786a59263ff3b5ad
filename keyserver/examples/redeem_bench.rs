//! Measures token redemptions per second and their latency against an in-process keyserver
//! on loopback, with its database in a temporary directory.
//!
//! Each redemption is a fresh TCP connection and TLS 1.3 handshake without a client
//! certificate, one Redeem request with a CSR for a key generated beforehand, and the
//! response. Every commit is fsynced (WAL, synchronous=FULL), so the figures include
//! the disk's flush latency.
//!
//! Usage: `cargo run --release -p spike-keyserver --example redeem_bench -- [TOKENS] [CLIENTS]`
//! (defaults 2000 and 8).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{CertificateParams, KeyPair};
use spike_keyproto::tls::{self, ClientIdentity};
use spike_keyproto::{call, Request, Response};
use spike_keyserver::{local, ServeConfig};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let tokens: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let clients: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);

    let dir = tempfile::tempdir().expect("temporary directory");
    let state = dir.path().join("state");
    spike_keyserver::local::init(&state, None).expect("create the CA");
    let mut config = ServeConfig::new(state.clone());
    config.listen = "127.0.0.1:0".parse().expect("address");
    let server = spike_keyserver::start(config)
        .await
        .expect("keyserver start");
    let addr = server.local_addr.to_string();
    let ca_der = tls::certs_from_pem(&server.ca_pem, "ca")
        .expect("CA")
        .remove(0);

    let admin_files = local::issue_admin_cert(
        &state,
        "bench",
        Duration::from_secs(3600),
        &dir.path().join("admin"),
    )
    .expect("admin certificate");
    let identity = ClientIdentity {
        chain: tls::certs_from_pem(
            &std::fs::read_to_string(&admin_files.cert).expect("cert"),
            "cert",
        )
        .expect("cert"),
        key: tls::key_from_pem(
            &std::fs::read_to_string(&admin_files.key).expect("key"),
            "key",
        )
        .expect("key"),
    };
    let admin = Arc::new(tls::client_config(ca_der.clone(), Some(identity)).expect("admin TLS"));

    eprintln!("creating {tokens} tokens and CSRs");
    let mut work = Vec::with_capacity(tokens);
    for i in 0..tokens {
        let request = Request::CreateToken {
            principal: format!("bench-{i}"),
            source_cidr: None,
            lifetime_secs: None,
            dns_names: Vec::new(),
        };
        let Ok(Response::TokenCreated(created)) = call(
            admin.clone(),
            &addr,
            "127.0.0.1",
            &request,
            Duration::from_secs(30),
        )
        .await
        else {
            panic!("token creation failed");
        };
        let key = KeyPair::generate().expect("key");
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .expect("CSR")
            .pem()
            .expect("PEM");
        work.push((created.token, csr));
    }

    let work = Arc::new(work);
    let anonymous = Arc::new(tls::client_config(ca_der, None).expect("client TLS"));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (work, next, anonymous, addr) =
            (work.clone(), next.clone(), anonymous.clone(), addr.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while let Some((token, csr)) = work.get(next.fetch_add(1, Ordering::Relaxed)) {
                let request = Request::Redeem {
                    token: token.clone(),
                    csr_pem: csr.clone(),
                };
                let begin = Instant::now();
                let response = call(
                    anonymous.clone(),
                    &addr,
                    "127.0.0.1",
                    &request,
                    Duration::from_secs(30),
                )
                .await;
                assert!(
                    matches!(response, Ok(Response::Issued(_))),
                    "redemption failed: {response:?}"
                );
                latencies.push(begin.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(tokens);
    for task in tasks {
        latencies.extend(task.await.expect("client task"));
    }
    let elapsed = started.elapsed();
    latencies.sort();

    let percentile =
        |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    println!(
        "redemptions: {tokens}, clients: {clients}, wall time: {:.2} s",
        elapsed.as_secs_f64()
    );
    println!(
        "throughput: {:.0} redemptions/s",
        tokens as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(0.50).as_secs_f64() * 1e3,
        percentile(0.99).as_secs_f64() * 1e3,
        latencies[latencies.len() - 1].as_secs_f64() * 1e3
    );
    server.stop().await;
}
