//! End-to-end flows over real TLS on loopback, with the database in a temporary directory.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{dns_names, rejection, Harness};
use spike_bootstrap::{
    redeem, renew_loop, renew_once, Backoff, BootstrapError, IdentityPaths, ReloadingIdentity,
};
use spike_keyproto::wire::{CertKind, TokenStatus};
use spike_keyproto::{ClientError, ErrorCode, Request, Response};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_flow_redeem_renew_revoke() {
    let harness = Harness::start().await;
    let created = harness.create_token("node-1", None, None).await;
    let node_dir = harness.dir.path().join("node");

    let first = redeem(&harness.redeem_options(&created.token, &node_dir))
        .await
        .unwrap();
    assert_eq!(first.principal, "node-1");
    let paths = IdentityPaths::new(&node_dir);
    let key_mode = std::fs::metadata(paths.key()).unwrap().permissions().mode() & 0o777;
    assert_eq!(key_mode, 0o600);
    let cert_pem = std::fs::read_to_string(paths.cert()).unwrap();
    assert_eq!(dns_names(&cert_pem), ["node-1", "node-1.spike.test"]);
    assert_eq!(
        std::fs::read_to_string(paths.ca()).unwrap(),
        harness.server.ca_pem
    );
    let key_before = std::fs::read_to_string(paths.key()).unwrap();

    let renewed = renew_once(&harness.renew_options(&node_dir)).await.unwrap();
    assert_ne!(renewed.serial, first.serial);
    assert_eq!(std::fs::read_to_string(paths.key()).unwrap(), key_before);

    let certs = match harness
        .call_as(
            &harness.admin,
            Request::ListCerts {
                principal: Some("node-1".into()),
            },
        )
        .await
        .unwrap()
    {
        Response::Certs { certs } => certs,
        other => panic!("unexpected {other:?}"),
    };
    let serials: Vec<_> = certs.iter().map(|c| c.serial.clone()).collect();
    assert_eq!(serials, [first.serial.clone(), renewed.serial.clone()]);
    assert!(certs.iter().all(|c| c.kind == CertKind::Node));

    let revoke = Request::RevokePrincipal {
        principal: "node-1".into(),
    };
    let Response::Done {
        revocation: Some(revocation),
    } = harness.call_as(&harness.admin, revoke).await.unwrap()
    else {
        panic!("expected the revocation");
    };
    assert_eq!(revocation.principal, "node-1");
    assert!(!revocation.already_revoked);
    let rejected = renew_once(&harness.renew_options(&node_dir))
        .await
        .unwrap_err();
    let BootstrapError::Client(client_error) = rejected else {
        panic!("expected a keyserver rejection, got {rejected:?}");
    };
    assert_eq!(client_error.code(), Some(ErrorCode::PrincipalRevoked));

    let retoken = Request::CreateToken {
        principal: "node-1".into(),
        source_cidr: None,
        lifetime_secs: None,
        dns_names: Vec::new(),
    };
    let (code, _) = rejection(harness.call_as(&harness.admin, retoken).await);
    assert_eq!(code, ErrorCode::PrincipalRevoked);

    let audit = harness.store().audit_log().unwrap();
    let operations: Vec<_> = audit
        .iter()
        .map(|e| (e.operation.as_str(), e.result.as_str()))
        .collect();
    assert!(operations.contains(&("create_token", "ok")));
    assert!(operations.contains(&("redeem", "ok")));
    assert!(operations.contains(&("renew", "ok")));
    assert!(operations.contains(&("revoke_principal", "ok")));
    assert!(operations.contains(&("renew", "PrincipalRevoked")));
    let redeem_entry = audit.iter().find(|e| e.operation == "redeem").unwrap();
    assert_eq!(redeem_entry.source.as_deref(), Some("127.0.0.1"));
    assert_eq!(redeem_entry.principal.as_deref(), Some("node-1"));
    let secret = created.token.rsplit('.').next().unwrap();
    assert!(audit.iter().all(|e| !format!("{e:?}").contains(secret)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redemptions_issue_one_cert() {
    let harness = std::sync::Arc::new(Harness::start().await);
    let created = harness.create_token("node-race", None, None).await;

    let mut tasks = Vec::new();
    for _ in 0..50 {
        let harness = harness.clone();
        let token = created.token.clone();
        tasks.push(tokio::spawn(async move { harness.redeem(&token).await }));
    }
    let mut issued = 0;
    let mut used = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => issued += 1,
            Err(ClientError::Rejected {
                code: ErrorCode::TokenUsed,
                ..
            }) => used += 1,
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(issued, 1);
    assert_eq!(used, 49);

    let store = harness.store();
    let certs: i64 = store
        .connection()
        .query_row(
            "SELECT COUNT(*) FROM certs WHERE principal = 'node-race'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(certs, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_rejections_name_the_reason() {
    let harness = Harness::start().await;

    let expiring = harness.create_token("node-exp", None, Some(1)).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (code, message) = rejection(harness.redeem(&expiring.token).await);
    assert_eq!(code, ErrorCode::TokenExpired);
    assert!(message.contains("expired"), "{message}");

    let reused = harness.create_token("node-reuse", None, None).await;
    harness.redeem(&reused.token).await.unwrap();
    let (code, message) = rejection(harness.redeem(&reused.token).await);
    assert_eq!(code, ErrorCode::TokenUsed);
    assert!(message.contains("already used"), "{message}");

    let unknown = spike_keyserver::token::generate().unwrap();
    let (code, _) = rejection(harness.redeem(&unknown.text).await);
    assert_eq!(code, ErrorCode::TokenUnknown);

    let forged = format!(
        "spk1.{}.{}",
        reused.token_id,
        unknown.text.rsplit('.').next().unwrap()
    );
    let (forged_code, forged_message) = rejection(harness.redeem(&forged).await);
    assert_eq!(forged_code, ErrorCode::TokenUnknown);
    let (_, unknown_message) = rejection(harness.redeem(&unknown.text).await);
    assert_eq!(
        forged_message, unknown_message,
        "a wrong secret must look like an unknown id"
    );

    let (code, _) = rejection(harness.redeem("not-a-token").await);
    assert_eq!(code, ErrorCode::TokenUnknown);

    let pinned = harness
        .create_token("node-pinned", Some("10.0.0.0/8"), None)
        .await;
    let (code, message) = rejection(harness.redeem(&pinned.token).await);
    assert_eq!(code, ErrorCode::AddressNotAllowed);
    assert!(message.contains("127.0.0.1"), "{message}");

    let loopback = harness
        .create_token("node-loopback", Some("127.0.0.0/8"), None)
        .await;
    harness.redeem(&loopback.token).await.unwrap();

    let revoked = harness.create_token("node-revoked-token", None, None).await;
    let revoke = Request::RevokeToken {
        token_id: revoked.token_id.clone(),
    };
    let Response::Done {
        revocation: Some(revocation),
    } = harness.call_as(&harness.admin, revoke).await.unwrap()
    else {
        panic!("expected the revocation");
    };
    assert_eq!(revocation.token_id, Some(revoked.token_id.clone()));
    assert_eq!(revocation.principal, "node-revoked-token");
    let (code, _) = rejection(harness.redeem(&revoked.token).await);
    assert_eq!(code, ErrorCode::TokenRevoked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_with_bad_signature_rejected() {
    let harness = Harness::start().await;
    let created = harness.create_token("node-csr", None, None).await;

    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let mut der = csr.der().to_vec();
    // The signature BIT STRING ends the DER encoding; flipping its last byte breaks it.
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));

    let (code, message) = rejection(harness.redeem_csr(&created.token, tampered).await);
    assert_eq!(code, ErrorCode::CsrSignatureInvalid);
    assert!(message.contains("signature"), "{message}");

    let (code, _) = rejection(harness.redeem_csr(&created.token, "garbage".into()).await);
    assert_eq!(code, ErrorCode::CsrInvalid);

    // A rejected CSR leaves the token unused.
    harness.redeem(&created.token).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_names_replaced_by_policy() {
    let harness = Harness::start().await;
    let request = Request::CreateToken {
        principal: "node-names".into(),
        source_cidr: None,
        lifetime_secs: None,
        dns_names: vec!["lb-a.spike.test".into()],
    };
    let Response::TokenCreated(created) = harness.call_as(&harness.admin, request).await.unwrap()
    else {
        panic!("expected a token");
    };

    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["evil.example".to_string(), "keyserver".to_string()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "root");
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();

    let issued = harness.redeem_csr(&created.token, csr).await.unwrap();
    assert_eq!(
        dns_names(&issued.cert_pem),
        ["node-names", "node-names.spike.test", "lb-a.spike.test"]
    );
    assert_eq!(common::common_name(&issued.cert_pem), "node-names");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_operations_need_admin_cert() {
    let harness = Harness::start().await;
    let created = harness.create_token("node-plain", None, None).await;
    let node_dir = harness.dir.path().join("node");
    redeem(&harness.redeem_options(&created.token, &node_dir))
        .await
        .unwrap();
    let paths = IdentityPaths::new(&node_dir);
    let node = common::identity_config(&harness.server.ca_pem, &paths.cert(), &paths.key());

    let admin_requests = [
        Request::CreateToken {
            principal: "node-x".into(),
            source_cidr: None,
            lifetime_secs: None,
            dns_names: Vec::new(),
        },
        Request::ListTokens { all: true },
        Request::RevokeToken {
            token_id: created.token_id.clone(),
        },
        Request::RevokePrincipal {
            principal: "node-plain".into(),
        },
        Request::ListCerts { principal: None },
    ];
    for request in admin_requests {
        for (who, config) in [("anonymous", &harness.anonymous), ("node", &node)] {
            let (code, message) = rejection(harness.call_as(config, request.clone()).await);
            assert_eq!(code, ErrorCode::NotAuthorized, "{who} {request:?}");
            assert!(message.contains("admin client certificate"), "{message}");
        }
    }

    // An admin certificate cannot renew, and a client with none cannot either.
    let key = rcgen::KeyPair::generate().unwrap();
    let renew = Request::Renew {
        csr_pem: common::csr_for(&key),
    };
    let (code, _) = rejection(harness.call_as(&harness.admin, renew.clone()).await);
    assert_eq!(code, ErrorCode::NotAuthorized);
    let (code, _) = rejection(harness.call_as(&harness.anonymous, renew).await);
    assert_eq!(code, ErrorCode::NotAuthorized);

    // The principal is still usable: nothing above was applied.
    renew_once(&harness.renew_options(&node_dir)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_ca_client_cert_rejected() {
    let harness = Harness::start().await;
    let other = Harness::start().await;
    let admin_dir = other.dir.path().join("admin");
    // An admin certificate of another keyserver's CA fails the TLS handshake.
    let foreign = common::identity_config(
        &harness.server.ca_pem,
        &admin_dir.join("alice.pem"),
        &admin_dir.join("alice.key"),
    );
    let result = harness
        .call_as(&foreign, Request::ListTokens { all: false })
        .await;
    assert!(!matches!(result, Ok(Response::Tokens { .. })), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_fingerprint_fails_first_connection() {
    let harness = Harness::start().await;
    let created = harness.create_token("node-pin", None, None).await;
    let mut options = harness.redeem_options(&created.token, &harness.dir.path().join("node"));
    options.ca_fingerprint[0] ^= 0xff;

    let error = redeem(&options).await.unwrap_err();
    assert!(error.to_string().contains("pinned"), "{error}");
    // The token was never sent to the impostor, so it still works.
    harness.redeem(&created.token).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_redemptions_rate_limited() {
    let harness = Harness::start_with(|config| config.max_failed_redemptions = 3).await;
    let created = harness.create_token("node-limited", None, None).await;
    for _ in 0..3 {
        let unknown = spike_keyserver::token::generate().unwrap();
        let (code, _) = rejection(harness.redeem(&unknown.text).await);
        assert_eq!(code, ErrorCode::TokenUnknown);
    }

    let (code, message) = rejection(harness.redeem(&created.token).await);
    assert_eq!(code, ErrorCode::RateLimited);
    assert!(message.contains("retry in"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_tokens_shows_outstanding_only() {
    let harness = Harness::start().await;
    let open = harness
        .create_token("node-a", Some("192.0.2.0/24"), None)
        .await;
    let spent = harness.create_token("node-b", None, None).await;
    harness.redeem(&spent.token).await.unwrap();

    let Response::Tokens { tokens } = harness
        .call_as(&harness.admin, Request::ListTokens { all: false })
        .await
        .unwrap()
    else {
        panic!("expected tokens");
    };
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].token_id, open.token_id);
    assert_eq!(tokens[0].source_cidr.as_deref(), Some("192.0.2.0/24"));

    let Response::Tokens { tokens } = harness
        .call_as(&harness.admin, Request::ListTokens { all: true })
        .await
        .unwrap()
    else {
        panic!("expected tokens");
    };
    let spent_info = tokens
        .iter()
        .find(|t| t.token_id == spent.token_id)
        .unwrap();
    assert_eq!(spent_info.status, TokenStatus::Used);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_rejected_after_expiry() {
    let harness = Harness::start_with(|config| config.cert_lifetime = Duration::from_secs(2)).await;
    let created = harness.create_token("node-short", None, None).await;
    let node_dir = harness.dir.path().join("node");
    redeem(&harness.redeem_options(&created.token, &node_dir))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let local = renew_once(&harness.renew_options(&node_dir))
        .await
        .unwrap_err();
    assert!(matches!(local, BootstrapError::Expired { .. }), "{local}");

    // Presenting the expired certificate anyway fails the TLS handshake on the server.
    let paths = IdentityPaths::new(&node_dir);
    let expired = common::identity_config(&harness.server.ca_pem, &paths.cert(), &paths.key());
    let key = rcgen::KeyPair::generate().unwrap();
    let result = harness
        .call_as(
            &expired,
            Request::Renew {
                csr_pem: common::csr_for(&key),
            },
        )
        .await;
    assert!(!matches!(result, Ok(Response::Issued(_))), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_loop_renews_and_server_reloads() {
    let harness = Harness::start_with(|config| config.cert_lifetime = Duration::from_secs(3)).await;
    let created = harness.create_token("node-loop", None, None).await;
    let node_dir = harness.dir.path().join("node");
    let first = redeem(&harness.redeem_options(&created.token, &node_dir))
        .await
        .unwrap();
    let reloading = ReloadingIdentity::load(IdentityPaths::new(&node_dir)).unwrap();
    let served_before = reloading.current().cert[0].to_vec();

    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let renewals = renew_loop(
        &harness.renew_options(&node_dir),
        backoff,
        Some(2),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(renewals, 2);

    let store = harness.store();
    let count: i64 = store
        .connection()
        .query_row(
            "SELECT COUNT(*) FROM certs WHERE principal = 'node-loop'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(count, 3);
    let (not_before, _) =
        spike_bootstrap::read_validity(&IdentityPaths::new(&node_dir).cert()).unwrap();
    assert!(not_before > first.not_before);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let served_after = reloading.current().cert[0].to_vec();
    assert_ne!(served_before, served_after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_cannot_revoke_itself() {
    let harness = Harness::start().await;
    let revoke = Request::RevokePrincipal {
        principal: "alice".into(),
    };
    let (code, message) = rejection(harness.call_as(&harness.admin, revoke).await);
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(
        message.contains("\"alice\" is the admin making this request"),
        "{message}"
    );
    assert!(message.contains("another admin"), "{message}");

    // Still an admin.
    let listed = harness
        .call_as(&harness.admin, Request::ListTokens { all: true })
        .await
        .unwrap();
    assert!(matches!(listed, Response::Tokens { .. }), "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyserver_principal_is_reserved() {
    let harness = Harness::start().await;
    let revoke = Request::RevokePrincipal {
        principal: "keyserver".into(),
    };
    let (code, message) = rejection(harness.call_as(&harness.admin, revoke).await);
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("reserved"), "{message}");
    assert!(!message.contains("not found"), "{message}");

    let create = Request::CreateToken {
        principal: "keyserver".into(),
        source_cidr: None,
        lifetime_secs: None,
        dns_names: Vec::new(),
    };
    let (code, message) = rejection(harness.call_as(&harness.admin, create).await);
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("reserved"), "{message}");

    let unknown = Request::RevokePrincipal {
        principal: "node-never".into(),
    };
    let (_, message) = rejection(harness.call_as(&harness.admin, unknown).await);
    assert!(message.contains("not found"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_end_with_the_ca() {
    // The CA lasts 3650 days from its creation, so a 3650-day certificate issued later
    // would outlive it.
    let harness = Harness::start_with(|config| {
        config.cert_lifetime = Duration::from_secs(3650 * 86_400);
    })
    .await;
    let created = harness.create_token("node-long", None, None).await;
    let issued = harness.redeem(&created.token).await.unwrap();

    let ca = spike_keyserver::ca::CertAuthority::load(&harness.state_dir()).unwrap();
    assert!(issued.shortened_to_ca_expiry);
    assert_eq!(issued.not_after, ca.not_after());
}
