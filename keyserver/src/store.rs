//! SQLite state: principals, token hashes, issued certificates, revocations and the
//! append-only audit log.
//!
//! Durability: the database runs in WAL mode with `synchronous=FULL`, so every commit is
//! fsynced before it returns, and the keyserver sends a response only after the commit.
//! A kill -9 (or power loss) therefore never loses an acknowledged certificate, and a
//! token marked used stays used. A redemption checks the token, marks it used, signs the
//! certificate, stores it and appends the audit entry inside one `BEGIN IMMEDIATE`
//! transaction, which takes SQLite's write lock first: of concurrent redemptions of one
//! token (from any number of tasks or processes) exactly one commits.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::PublicKeyData;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use spike_keyproto::tls::sha256;
use spike_keyproto::utc::rfc3339;
use spike_keyproto::wire::{CertInfo, CertKind, Revocation, TokenInfo, TokenStatus};
use time::OffsetDateTime;

use crate::ca::{CertAuthority, Profile, SignedCert};
use crate::error::OpError;
use crate::policy::{self, SourceNet};
use crate::token::{self, NewToken, ParsedToken};

/// File name of the database in the state directory.
pub const DB_FILE: &str = "state.db";

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS principals (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    dns_names TEXT NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    secret_hash BLOB NOT NULL,
    principal TEXT NOT NULL REFERENCES principals(name),
    source_cidr TEXT,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER,
    used_from TEXT,
    cert_serial TEXT,
    revoked_at INTEGER
);
CREATE TABLE IF NOT EXISTS certs (
    serial TEXT PRIMARY KEY,
    fingerprint BLOB NOT NULL UNIQUE,
    principal TEXT NOT NULL,
    kind TEXT NOT NULL,
    not_before INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    issued_at INTEGER NOT NULL,
    token_id TEXT,
    renewed_from TEXT,
    der BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS certs_by_principal ON certs(principal);
CREATE TABLE IF NOT EXISTS revocations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    target_kind TEXT NOT NULL,
    target TEXT NOT NULL,
    revoked_at INTEGER NOT NULL,
    revoked_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    operation TEXT NOT NULL,
    actor TEXT,
    principal TEXT,
    source TEXT,
    result TEXT NOT NULL,
    detail TEXT
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
";

/// A database failure, with the database path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database {path} has schema version {found}, this keyserver expects {SCHEMA_VERSION}; use the keyserver release that created it")]
    SchemaVersion { path: PathBuf, found: i64 },
    #[error("setting mode 0600 on {path} failed: {source}")]
    Permissions {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One entry of the audit log.
#[derive(Debug, Clone, Default)]
pub struct AuditEntry {
    pub operation: String,
    /// Actor of the operation: an admin name, a node principal, or `local` for the
    /// command line.
    pub actor: Option<String>,
    /// The principal the operation concerns.
    pub principal: Option<String>,
    /// The client's IP address, or `local`.
    pub source: Option<String>,
    /// `ok` or the error code.
    pub result: String,
    /// Serial, token id or error message; never a token or key.
    pub detail: Option<String>,
}

/// Database record of the holder of a client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    pub serial: String,
    pub principal: String,
    pub kind: CertKind,
    pub not_after: i64,
    pub principal_revoked: bool,
}

/// Settings of certificate issuance that come from the keyserver's configuration.
#[derive(Debug, Clone)]
pub struct IssuePolicy {
    pub dns_suffix: Option<String>,
    pub cert_lifetime: Duration,
}

/// A request to create a token.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub principal: String,
    pub source_net: Option<SourceNet>,
    pub lifetime: Duration,
    pub dns_names: Vec<String>,
    pub created_by: String,
    /// The admin's IP address, for the audit log.
    pub source: String,
}

/// The database connection. One connection serves the whole keyserver; callers serialise
/// access (the server keeps it behind a mutex).
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

fn now_ms() -> i64 {
    let now = OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

fn kind_name(kind: CertKind) -> &'static str {
    match kind {
        CertKind::Node => "node",
        CertKind::Admin => "admin",
        CertKind::Server => "server",
    }
}

fn kind_from_name(name: &str) -> CertKind {
    match name {
        "admin" => CertKind::Admin,
        "server" => CertKind::Server,
        _ => CertKind::Node,
    }
}

impl Store {
    /// Opens (creating if needed) the database in `state_dir`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the file cannot be opened, configured or migrated.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let path = state_dir.join(DB_FILE);
        let sqlite = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(sqlite)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| StoreError::Permissions {
                path: path.clone(),
                source,
            },
        )?;

        // WAL lets the admin-cert command write while the server runs; FULL fsyncs the WAL
        // at every commit, which is what makes an acknowledgement durable.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sqlite)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(sqlite)?;

        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(sqlite)?;
        if version != 0 && version != SCHEMA_VERSION {
            return Err(StoreError::SchemaVersion {
                path,
                found: version,
            });
        }
        conn.execute_batch(SCHEMA).map_err(sqlite)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(sqlite)?;
        Ok(Self { conn, path })
    }

    fn sqlite_error(&self) -> impl Fn(rusqlite::Error) -> StoreError {
        let path = self.path.clone();
        move |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        }
    }

    /// Appends one entry to the audit log in its own transaction.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the insert fails.
    pub fn audit(&mut self, entry: &AuditEntry) -> Result<(), StoreError> {
        insert_audit(&self.conn, entry).map_err(self.sqlite_error())
    }

    /// Creates a token for a node principal, creating the principal on first use. Non-empty
    /// `dns_names` replace the extra names stored for the principal.
    ///
    /// # Errors
    ///
    /// [`OpError::PrincipalRevoked`] or [`OpError::KindConflict`] for an unusable
    /// principal, [`OpError::Store`] for database failures.
    pub fn create_token(&mut self, request: &TokenRequest, now: i64) -> Result<NewToken, OpError> {
        let new = token::generate().map_err(crate::ca::CaError::from)?;
        let error = self.sqlite_error();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&error)?;

        let existing: Option<(String, Option<i64>)> = tx
            .query_row(
                "SELECT kind, revoked_at FROM principals WHERE name = ?1",
                [&request.principal],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(&error)?;
        match existing {
            Some((_, Some(_))) => {
                return Err(OpError::PrincipalRevoked {
                    principal: request.principal.clone(),
                })
            }
            Some((kind, None)) if kind != "node" => {
                return Err(OpError::KindConflict {
                    principal: request.principal.clone(),
                    existing: kind,
                    requested: "node",
                })
            }
            Some(_) => {}
            None => {
                tx.execute(
                    "INSERT INTO principals (name, kind, created_at) VALUES (?1, 'node', ?2)",
                    params![request.principal, now],
                )
                .map_err(&error)?;
            }
        }
        if !request.dns_names.is_empty() {
            let names = serde_json::to_string(&request.dns_names).unwrap_or_else(|_| "[]".into());
            tx.execute(
                "UPDATE principals SET dns_names = ?1 WHERE name = ?2",
                params![names, request.principal],
            )
            .map_err(&error)?;
        }

        let expires_at = expiry(now, request.lifetime);
        tx.execute(
            "INSERT INTO tokens (id, secret_hash, principal, source_cidr, created_by, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                new.id,
                &new.secret_hash[..],
                request.principal,
                request.source_net.map(|s| s.to_string()),
                request.created_by,
                now,
                expires_at
            ],
        )
        .map_err(&error)?;
        insert_audit(
            &tx,
            &AuditEntry {
                operation: "create_token".into(),
                actor: Some(request.created_by.clone()),
                principal: Some(request.principal.clone()),
                source: Some(request.source.clone()),
                result: "ok".into(),
                detail: Some(format!(
                    "token_id={} expires_at={}",
                    new.id,
                    rfc3339(expires_at)
                )),
            },
        )
        .map_err(&error)?;
        tx.commit().map_err(&error)?;
        Ok(new)
    }

    /// Redeems `token` from `source`: in one transaction, checks the token, marks it used,
    /// signs a certificate for `public_key` with the principal's policy names, stores the
    /// certificate and appends the audit entry.
    ///
    /// # Errors
    ///
    /// The token's [`OpError`] (unknown, revoked, used, expired, address not allowed), or
    /// [`OpError::PrincipalRevoked`]. Nothing is written on error.
    pub fn redeem(
        &mut self,
        ca: &CertAuthority,
        token: &ParsedToken,
        public_key: &impl PublicKeyData,
        source: IpAddr,
        policy: &IssuePolicy,
        now: OffsetDateTime,
    ) -> Result<(String, SignedCert), OpError> {
        let error = self.sqlite_error();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&error)?;

        let row: Option<TokenRow> = tx
            .query_row(
                "SELECT secret_hash, principal, source_cidr, expires_at, used_at, revoked_at
                 FROM tokens WHERE id = ?1",
                [&token.id],
                |row| {
                    Ok(TokenRow {
                        secret_hash: row.get(0)?,
                        principal: row.get(1)?,
                        source_cidr: row.get(2)?,
                        expires_at: row.get(3)?,
                        used_at: row.get(4)?,
                        revoked_at: row.get(5)?,
                    })
                },
            )
            .optional()
            .map_err(&error)?;
        let stored_hash = row.as_ref().map(|r| r.secret_hash.as_slice());
        let row = match row {
            Some(row) if token::secret_matches(&token.secret_hash, stored_hash) => row,
            _ => return Err(OpError::TokenUnknown),
        };
        check_token(&row, source, now.unix_timestamp())?;

        let (dns_names, principal_revoked) =
            principal_policy(&tx, &row.principal).map_err(&error)?;
        if principal_revoked {
            return Err(OpError::PrincipalRevoked {
                principal: row.principal,
            });
        }

        let profile = Profile::Node {
            principal: row.principal.clone(),
            dns_names: policy::certificate_names(
                &row.principal,
                policy.dns_suffix.as_deref(),
                &dns_names,
            ),
        };
        let signed = ca.sign(public_key, &profile, now, policy.cert_lifetime)?;

        let marked = tx
            .execute(
                "UPDATE tokens SET used_at = ?1, used_from = ?2, cert_serial = ?3
                 WHERE id = ?4 AND used_at IS NULL AND revoked_at IS NULL",
                params![
                    now.unix_timestamp(),
                    source.to_string(),
                    signed.serial,
                    token.id
                ],
            )
            .map_err(&error)?;
        if marked != 1 {
            // Unreachable while the write lock is held; kept so a schema change cannot
            // silently allow a second use.
            return Err(OpError::TokenUsed {
                used_at: now.unix_timestamp(),
            });
        }
        insert_cert(
            &tx,
            &signed,
            &profile,
            now.unix_timestamp(),
            Some(&token.id),
            None,
        )
        .map_err(&error)?;
        insert_audit(
            &tx,
            &AuditEntry {
                operation: "redeem".into(),
                actor: Some(row.principal.clone()),
                principal: Some(row.principal.clone()),
                source: Some(source.to_string()),
                result: "ok".into(),
                detail: Some(format!("serial={} token_id={}", signed.serial, token.id)),
            },
        )
        .map_err(&error)?;
        tx.commit().map_err(&error)?;
        Ok((row.principal, signed))
    }

    /// Issues a new certificate to the holder of the node certificate `peer`, in one
    /// transaction with its audit entry.
    ///
    /// # Errors
    ///
    /// [`OpError::PrincipalRevoked`] for a revoked principal, [`OpError::NotAuthorized`]
    /// for an expired or non-node certificate, [`OpError::Store`] for database failures.
    pub fn renew(
        &mut self,
        ca: &CertAuthority,
        peer: &PeerRecord,
        public_key: &impl PublicKeyData,
        source: IpAddr,
        policy: &IssuePolicy,
        now: OffsetDateTime,
    ) -> Result<SignedCert, OpError> {
        let not_authorized = OpError::NotAuthorized {
            operation: "renew",
            needed: "an unexpired node certificate issued by this keyserver",
        };
        if peer.kind != CertKind::Node || peer.not_after <= now.unix_timestamp() {
            return Err(not_authorized);
        }

        let error = self.sqlite_error();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&error)?;
        // Read inside the transaction, so a revocation committed a moment ago wins.
        let (dns_names, revoked) = principal_policy(&tx, &peer.principal).map_err(&error)?;
        if revoked {
            return Err(OpError::PrincipalRevoked {
                principal: peer.principal.clone(),
            });
        }

        let profile = Profile::Node {
            principal: peer.principal.clone(),
            dns_names: policy::certificate_names(
                &peer.principal,
                policy.dns_suffix.as_deref(),
                &dns_names,
            ),
        };
        let signed = ca.sign(public_key, &profile, now, policy.cert_lifetime)?;
        insert_cert(
            &tx,
            &signed,
            &profile,
            now.unix_timestamp(),
            None,
            Some(&peer.serial),
        )
        .map_err(&error)?;
        insert_audit(
            &tx,
            &AuditEntry {
                operation: "renew".into(),
                actor: Some(peer.principal.clone()),
                principal: Some(peer.principal.clone()),
                source: Some(source.to_string()),
                result: "ok".into(),
                detail: Some(format!(
                    "serial={} renewed_from={}",
                    signed.serial, peer.serial
                )),
            },
        )
        .map_err(&error)?;
        tx.commit().map_err(&error)?;
        Ok(signed)
    }

    /// Records a certificate issued outside a redemption (admin or server certificates),
    /// creating an admin principal on first use.
    ///
    /// # Errors
    ///
    /// [`OpError::KindConflict`] when an admin name is already a node principal,
    /// [`OpError::PrincipalRevoked`] for a revoked admin, [`OpError::Store`] otherwise.
    pub fn record_issued(
        &mut self,
        signed: &SignedCert,
        profile: &Profile,
        actor: &str,
    ) -> Result<(), OpError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let error = self.sqlite_error();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&error)?;

        if let Profile::Admin { name } = profile {
            let existing: Option<(String, Option<i64>)> = tx
                .query_row(
                    "SELECT kind, revoked_at FROM principals WHERE name = ?1",
                    [name],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(&error)?;
            match existing {
                None => {
                    tx.execute(
                        "INSERT INTO principals (name, kind, created_at) VALUES (?1, 'admin', ?2)",
                        params![name, now],
                    )
                    .map_err(&error)?;
                }
                Some((_, Some(_))) => {
                    return Err(OpError::PrincipalRevoked {
                        principal: name.clone(),
                    })
                }
                Some((kind, None)) if kind != "admin" => {
                    return Err(OpError::KindConflict {
                        principal: name.clone(),
                        existing: kind,
                        requested: "admin",
                    })
                }
                Some(_) => {}
            }
        }

        insert_cert(&tx, signed, profile, now, None, None).map_err(&error)?;
        insert_audit(
            &tx,
            &AuditEntry {
                operation: format!("issue_{}", kind_name(profile.kind())),
                actor: Some(actor.to_string()),
                principal: Some(profile.principal().to_string()),
                source: Some("local".into()),
                result: "ok".into(),
                detail: Some(format!("serial={}", signed.serial)),
            },
        )
        .map_err(&error)?;
        tx.commit().map_err(&error)?;
        Ok(())
    }

    /// Looks up the holder of a client certificate by its DER encoding.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the query fails.
    pub fn identify(&self, cert_der: &[u8]) -> Result<Option<PeerRecord>, StoreError> {
        let fingerprint = sha256(cert_der);
        self.conn
            .query_row(
                "SELECT c.serial, c.principal, c.kind, c.not_after, p.revoked_at
                 FROM certs c LEFT JOIN principals p ON p.name = c.principal
                 WHERE c.fingerprint = ?1",
                [&fingerprint[..]],
                |row| {
                    Ok(PeerRecord {
                        serial: row.get(0)?,
                        principal: row.get(1)?,
                        kind: kind_from_name(&row.get::<_, String>(2)?),
                        not_after: row.get(3)?,
                        principal_revoked: row.get::<_, Option<i64>>(4)?.is_some(),
                    })
                },
            )
            .optional()
            .map_err(self.sqlite_error())
    }

    /// Lists tokens: only those still redeemable, or all of them with `all`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the query fails.
    pub fn list_tokens(&self, all: bool, now: i64) -> Result<Vec<TokenInfo>, StoreError> {
        let error = self.sqlite_error();
        let mut statement = self
            .conn
            .prepare(
                "SELECT id, principal, source_cidr, created_at, expires_at, used_at, revoked_at
                 FROM tokens ORDER BY created_at, id",
            )
            .map_err(&error)?;
        let rows = statement
            .query_map([], |row| {
                let expires_at: i64 = row.get(4)?;
                let status = if row.get::<_, Option<i64>>(6)?.is_some() {
                    TokenStatus::Revoked
                } else if row.get::<_, Option<i64>>(5)?.is_some() {
                    TokenStatus::Used
                } else if expires_at <= now {
                    TokenStatus::Expired
                } else {
                    TokenStatus::Outstanding
                };
                Ok(TokenInfo {
                    token_id: row.get(0)?,
                    principal: row.get(1)?,
                    source_cidr: row.get(2)?,
                    created_at: row.get(3)?,
                    expires_at,
                    status,
                })
            })
            .map_err(&error)?;

        let mut tokens = Vec::new();
        for token in rows {
            let token = token.map_err(&error)?;
            if all || token.status == TokenStatus::Outstanding {
                tokens.push(token);
            }
        }
        Ok(tokens)
    }

    /// Revokes an unused token. Revoking a revoked token again changes nothing and returns
    /// the earlier revocation, marked as such, so that a retried command still succeeds.
    ///
    /// # Errors
    ///
    /// [`OpError::TokenNotFound`] if no unused token has this id.
    pub fn revoke_token(
        &mut self,
        token_id: &str,
        actor: &str,
        source: &str,
        now: i64,
    ) -> Result<Revocation, OpError> {
        let error = self.sqlite_error();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&error)?;
        let principal: Option<String> = tx
            .query_row(
                "UPDATE tokens SET revoked_at = ?1
                 WHERE id = ?2 AND used_at IS NULL AND revoked_at IS NULL
                 RETURNING principal",
                params![now, token_id],
                |row| row.get(0),
            )
            .optional()
            .map_err(&error)?;
        let Some(principal) = principal else {
            return earlier_token_revocation(&tx, token_id)
                .map_err(&error)?
                .ok_or_else(|| OpError::TokenNotFound {
                    token_id: token_id.to_string(),
                });
        };

        tx.execute(
            "INSERT INTO revocations (target_kind, target, revoked_at, revoked_by) VALUES ('token', ?1, ?2, ?3)",
            params![token_id, now, actor],
        )
        .map_err(&error)?;
        insert_audit(
            &tx,
            &AuditEntry {
                operation: "revoke_token".into(),
                actor: Some(actor.to_string()),
                principal: Some(principal.clone()),
                source: Some(source.to_string()),
                result: "ok".into(),
                detail: Some(format!("token_id={token_id}")),
            },
        )
        .map_err(&error)?;
        tx.commit().map_err(&error)?;
        Ok(Revocation {
            token_id: Some(token_id.to_string()),
            principal,
            revoked_at: now,
            already_revoked: false,
            tokens_revoked: 0,
        })
    }

    /// Revokes a principal and its outstanding tokens. Revoking a revoked principal again
    /// changes nothing and returns the earlier revocation, marked as such.
    ///
    /// # Errors
    ///
    /// [`OpError::PrincipalNotFound`] for an unknown principal,
    /// [`OpError::ReservedPrincipal`] for the keyserver's own name.
    pub fn revoke_principal(
        &mut self,
        principal: &str,
        actor: &str,
        source: &str,
        now: i64,
    ) -> Result<Revocation, OpError> {
        let error = self.sqlite_error();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&error)?;
        let revoked_at: Option<Option<i64>> = tx
            .query_row(
                "SELECT revoked_at FROM principals WHERE name = ?1",
                [principal],
                |row| row.get(0),
            )
            .optional()
            .map_err(&error)?;
        match revoked_at {
            // A database made before the name was reserved may hold a node of that name,
            // hence the lookup first.
            None if policy::is_reserved(principal) => {
                return Err(OpError::ReservedPrincipal {
                    principal: principal.to_string(),
                })
            }
            None => {
                return Err(OpError::PrincipalNotFound {
                    principal: principal.to_string(),
                })
            }
            Some(Some(revoked_at)) => {
                return Ok(Revocation {
                    token_id: None,
                    principal: principal.to_string(),
                    revoked_at,
                    already_revoked: true,
                    tokens_revoked: 0,
                })
            }
            Some(None) => {}
        }

        tx.execute(
            "UPDATE principals SET revoked_at = ?1 WHERE name = ?2",
            params![now, principal],
        )
        .map_err(&error)?;
        let tokens = tx
            .execute(
                "UPDATE tokens SET revoked_at = ?1
                 WHERE principal = ?2 AND used_at IS NULL AND revoked_at IS NULL",
                params![now, principal],
            )
            .map_err(&error)?;
        tx.execute(
            "INSERT INTO revocations (target_kind, target, revoked_at, revoked_by) VALUES ('principal', ?1, ?2, ?3)",
            params![principal, now, actor],
        )
        .map_err(&error)?;
        insert_audit(
            &tx,
            &AuditEntry {
                operation: "revoke_principal".into(),
                actor: Some(actor.to_string()),
                principal: Some(principal.to_string()),
                source: Some(source.to_string()),
                result: "ok".into(),
                detail: Some(format!("tokens_revoked={tokens}")),
            },
        )
        .map_err(&error)?;
        tx.commit().map_err(&error)?;
        Ok(Revocation {
            token_id: None,
            principal: principal.to_string(),
            revoked_at: now,
            already_revoked: false,
            tokens_revoked: tokens as u64,
        })
    }

    /// Lists issued certificates, of one principal or of all, oldest first.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the query fails.
    pub fn list_certs(&self, principal: Option<&str>) -> Result<Vec<CertInfo>, StoreError> {
        let error = self.sqlite_error();
        let mut statement = self
            .conn
            .prepare(
                "SELECT c.serial, c.principal, c.kind, c.not_before, c.not_after, c.issued_at, p.revoked_at
                 FROM certs c LEFT JOIN principals p ON p.name = c.principal
                 WHERE ?1 IS NULL OR c.principal = ?1
                 ORDER BY c.issued_at, c.rowid",
            )
            .map_err(&error)?;
        let rows = statement
            .query_map([principal], |row| {
                Ok(CertInfo {
                    serial: row.get(0)?,
                    principal: row.get(1)?,
                    kind: kind_from_name(&row.get::<_, String>(2)?),
                    not_before: row.get(3)?,
                    not_after: row.get(4)?,
                    issued_at: row.get(5)?,
                    principal_revoked: row.get::<_, Option<i64>>(6)?.is_some(),
                })
            })
            .map_err(&error)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(&error)
    }

    /// Reads the whole audit log, oldest first, for tests and inspection.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the query fails.
    pub fn audit_log(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let error = self.sqlite_error();
        let mut statement = self
            .conn
            .prepare("SELECT operation, actor, principal, source, result, detail FROM audit ORDER BY seq")
            .map_err(&error)?;
        let rows = statement
            .query_map([], |row| {
                Ok(AuditEntry {
                    operation: row.get(0)?,
                    actor: row.get(1)?,
                    principal: row.get(2)?,
                    source: row.get(3)?,
                    result: row.get(4)?,
                    detail: row.get(5)?,
                })
            })
            .map_err(&error)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(&error)
    }

    /// Returns the raw connection, for tests that inspect tables directly.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

struct TokenRow {
    secret_hash: Vec<u8>,
    principal: String,
    source_cidr: Option<String>,
    expires_at: i64,
    used_at: Option<i64>,
    revoked_at: Option<i64>,
}

/// Checks a token whose secret matched. Revocation and use come before expiry, so the
/// message names the first reason an administrator would act on.
fn check_token(row: &TokenRow, source: IpAddr, now: i64) -> Result<(), OpError> {
    if row.revoked_at.is_some() {
        return Err(OpError::TokenRevoked);
    }
    if let Some(used_at) = row.used_at {
        return Err(OpError::TokenUsed { used_at });
    }
    if now >= row.expires_at {
        return Err(OpError::TokenExpired {
            expired_at: row.expires_at,
        });
    }
    if let Some(cidr) = &row.source_cidr {
        let allowed = cidr.parse::<SourceNet>().map(|net| net.contains(source));
        if !matches!(allowed, Ok(true)) {
            return Err(OpError::AddressNotAllowed {
                address: policy::canonical_ip(source),
                allowed: cidr.clone(),
            });
        }
    }
    Ok(())
}

/// Returns the extra DNS names and the revocation state of a principal.
/// Returns the earlier revocation of a token that is revoked already, by itself or with
/// its principal.
fn earlier_token_revocation(
    conn: &Connection,
    token_id: &str,
) -> rusqlite::Result<Option<Revocation>> {
    conn.query_row(
        "SELECT principal, revoked_at FROM tokens WHERE id = ?1 AND revoked_at IS NOT NULL",
        [token_id],
        |row| {
            Ok(Revocation {
                token_id: Some(token_id.to_string()),
                principal: row.get(0)?,
                revoked_at: row.get(1)?,
                already_revoked: true,
                tokens_revoked: 0,
            })
        },
    )
    .optional()
}

fn principal_policy(conn: &Connection, principal: &str) -> rusqlite::Result<(Vec<String>, bool)> {
    let row: Option<(String, Option<i64>)> = conn
        .query_row(
            "SELECT dns_names, revoked_at FROM principals WHERE name = ?1",
            [principal],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    // A missing principal row cannot happen through the API (tokens reference it), and is
    // treated as revoked so that nothing is issued for it.
    let Some((names, revoked_at)) = row else {
        return Ok((Vec::new(), true));
    };
    let names: Vec<String> = serde_json::from_str(&names).unwrap_or_default();
    Ok((names, revoked_at.is_some()))
}

fn insert_cert(
    conn: &Connection,
    signed: &SignedCert,
    profile: &Profile,
    issued_at: i64,
    token_id: Option<&str>,
    renewed_from: Option<&str>,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO certs (serial, fingerprint, principal, kind, not_before, not_after, issued_at, token_id, renewed_from, der)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            signed.serial,
            &sha256(&signed.der)[..],
            profile.principal(),
            kind_name(profile.kind()),
            signed.not_before,
            signed.not_after,
            issued_at,
            token_id,
            renewed_from,
            signed.der
        ],
    )?;
    Ok(())
}

fn insert_audit(conn: &Connection, entry: &AuditEntry) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO audit (at_ms, operation, actor, principal, source, result, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            now_ms(),
            entry.operation,
            entry.actor,
            entry.principal,
            entry.source,
            entry.result,
            entry.detail
        ],
    )?;
    Ok(())
}

/// Returns the Unix time `lifetime` after `now`. It saturates instead of overflowing: such
/// a time means "never" in practice, and the server bounds lifetimes far below it.
pub fn expiry(now: i64, lifetime: Duration) -> i64 {
    now.saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_log_is_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store
            .audit(&AuditEntry {
                operation: "test".into(),
                result: "ok".into(),
                ..AuditEntry::default()
            })
            .unwrap();

        let update = store
            .connection()
            .execute("UPDATE audit SET result = 'changed'", []);
        assert!(update.is_err());
        let delete = store.connection().execute("DELETE FROM audit", []);
        assert!(delete.is_err());
        assert_eq!(store.audit_log().unwrap().len(), 1);
    }

    #[test]
    fn database_file_is_private_and_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(DB_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let journal: String = store
            .connection()
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        assert_eq!(journal, "wal");
        // 2 is FULL.
        let synchronous: i64 = store
            .connection()
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .unwrap();
        assert_eq!(synchronous, 2);
    }
}
