//! Test harness: a keyserver on a loopback port with its state in a temporary directory,
//! an admin identity, and helpers to create tokens and redeem them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair};
use rustls::ClientConfig;
use spike_bootstrap::{IdentityPaths, RedeemOptions, RenewOptions};
use spike_keyproto::tls::{self, ClientIdentity};
use spike_keyproto::wire::{CreatedToken, IssuedCert};
use spike_keyproto::{call, ClientError, ErrorCode, Request, Response};
use spike_keyserver::store::Store;
use spike_keyserver::{local, RunningKeyserver, ServeConfig};
use tempfile::TempDir;

pub const TIMEOUT: Duration = Duration::from_secs(20);

pub struct Harness {
    pub dir: TempDir,
    pub server: RunningKeyserver,
    pub admin: Arc<ClientConfig>,
    pub anonymous: Arc<ClientConfig>,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut ServeConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        local::init(&dir.path().join("state"), None).unwrap();
        let mut config = ServeConfig::new(dir.path().join("state"));
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.dns_suffix = Some("spike.test".into());
        config.max_failed_redemptions = 1000;
        adjust(&mut config);
        let server = spike_keyserver::start(config).await.unwrap();

        let admin_dir = dir.path().join("admin");
        let files = local::issue_admin_cert(
            &dir.path().join("state"),
            "alice",
            Duration::from_secs(3600),
            &admin_dir,
        )
        .unwrap();
        let admin = identity_config(&server.ca_pem, &files.cert, &files.key);
        let anonymous = Arc::new(tls::client_config(ca_der(&server.ca_pem), None).unwrap());
        Self {
            dir,
            server,
            admin,
            anonymous,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn addr(&self) -> String {
        self.server.local_addr.to_string()
    }

    pub fn store(&self) -> Store {
        Store::open(&self.state_dir()).unwrap()
    }

    pub async fn call_as(
        &self,
        config: &Arc<ClientConfig>,
        request: Request,
    ) -> Result<Response, ClientError> {
        call(config.clone(), &self.addr(), "127.0.0.1", &request, TIMEOUT).await
    }

    pub async fn create_token(
        &self,
        principal: &str,
        source_cidr: Option<&str>,
        lifetime_secs: Option<u64>,
    ) -> CreatedToken {
        let request = Request::CreateToken {
            principal: principal.into(),
            source_cidr: source_cidr.map(str::to_string),
            lifetime_secs,
            dns_names: Vec::new(),
        };
        match self.call_as(&self.admin, request).await.unwrap() {
            Response::TokenCreated(created) => created,
            other => panic!("expected a token, got {other:?}"),
        }
    }

    pub async fn redeem_csr(
        &self,
        token: &str,
        csr_pem: String,
    ) -> Result<IssuedCert, ClientError> {
        let request = Request::Redeem {
            token: token.into(),
            csr_pem,
        };
        match self.call_as(&self.anonymous, request).await? {
            Response::Issued(issued) => Ok(issued),
            other => panic!("expected a certificate, got {other:?}"),
        }
    }

    pub async fn redeem(&self, token: &str) -> Result<IssuedCert, ClientError> {
        self.redeem_csr(token, csr_for(&KeyPair::generate().unwrap()))
            .await
    }

    pub fn redeem_options(&self, token: &str, dir: &Path) -> RedeemOptions {
        RedeemOptions {
            server: self.addr(),
            server_name: None,
            ca_fingerprint: tls::parse_fingerprint(&self.server.ca_fingerprint).unwrap(),
            token: token.into(),
            paths: IdentityPaths::new(dir),
            timeout: TIMEOUT,
        }
    }

    pub fn renew_options(&self, dir: &Path) -> RenewOptions {
        RenewOptions {
            server: self.addr(),
            server_name: None,
            paths: IdentityPaths::new(dir),
            timeout: TIMEOUT,
        }
    }
}

pub fn ca_der(ca_pem: &str) -> rustls::pki_types::CertificateDer<'static> {
    tls::certs_from_pem(ca_pem, "ca").unwrap().remove(0)
}

pub fn identity_config(ca_pem: &str, cert: &Path, key: &Path) -> Arc<ClientConfig> {
    let identity = ClientIdentity {
        chain: tls::certs_from_pem(&std::fs::read_to_string(cert).unwrap(), "cert").unwrap(),
        key: tls::key_from_pem(&std::fs::read_to_string(key).unwrap(), "key").unwrap(),
    };
    Arc::new(tls::client_config(ca_der(ca_pem), Some(identity)).unwrap())
}

pub fn csr_for(key: &KeyPair) -> String {
    CertificateParams::default()
        .serialize_request(key)
        .unwrap()
        .pem()
        .unwrap()
}

pub fn rejection(result: Result<impl std::fmt::Debug, ClientError>) -> (ErrorCode, String) {
    match result {
        Err(ClientError::Rejected { code, message }) => (code, message),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// DNS names in the subject alternative name extension of a PEM certificate.
pub fn dns_names(cert_pem: &str) -> Vec<String> {
    let der = tls::certs_from_pem(cert_pem, "cert").unwrap().remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let Some(san) = cert.subject_alternative_name().unwrap() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_string()),
            _ => None,
        })
        .collect()
}

pub fn common_name(cert_pem: &str) -> String {
    let der = tls::certs_from_pem(cert_pem, "cert").unwrap().remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    name
}
