//! Request and response types and their length-prefixed JSON framing.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame either side accepts. A CSR or certificate in PEM is about 1 KiB, and a
/// list of a few hundred tokens or certificates stays well below this.
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// One operation sent by a client.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Redeems a one-time token for a first certificate. Needs no client certificate.
    Redeem { token: String, csr_pem: String },
    /// Issues a new certificate for the principal of the client certificate.
    Renew { csr_pem: String },
    /// Creates a one-time token (admin).
    CreateToken {
        principal: String,
        /// Address or CIDR the redemption must come from; any address when absent.
        source_cidr: Option<String>,
        /// Token lifetime in seconds; the keyserver's default (one hour) when absent.
        lifetime_secs: Option<u64>,
        /// DNS names the principal's certificates carry besides its own name. When not
        /// empty, they replace the names stored for the principal.
        dns_names: Vec<String>,
    },
    /// Lists the tokens that can still be redeemed, or every token with `all` (admin).
    ListTokens {
        #[serde(default)]
        all: bool,
    },
    /// Revokes an unused token (admin).
    RevokeToken { token_id: String },
    /// Revokes a principal: its tokens and renewals are rejected from then on (admin).
    RevokePrincipal { principal: String },
    /// Lists issued certificates, of one principal or of all (admin).
    ListCerts { principal: Option<String> },
}

// The token is a credential, so Debug output (and any log built from it) leaves it out.
impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Redeem { .. } => f.write_str("Redeem { token: <redacted>, .. }"),
            Request::Renew { .. } => f.write_str("Renew { .. }"),
            Request::CreateToken {
                principal,
                source_cidr,
                lifetime_secs,
                dns_names,
            } => f
                .debug_struct("CreateToken")
                .field("principal", principal)
                .field("source_cidr", source_cidr)
                .field("lifetime_secs", lifetime_secs)
                .field("dns_names", dns_names)
                .finish(),
            Request::ListTokens { all } => f.debug_struct("ListTokens").field("all", all).finish(),
            Request::RevokeToken { token_id } => f
                .debug_struct("RevokeToken")
                .field("token_id", token_id)
                .finish(),
            Request::RevokePrincipal { principal } => f
                .debug_struct("RevokePrincipal")
                .field("principal", principal)
                .finish(),
            Request::ListCerts { principal } => f
                .debug_struct("ListCerts")
                .field("principal", principal)
                .finish(),
        }
    }
}

impl Request {
    /// Name of the operation, as written to the audit log.
    pub fn operation(&self) -> &'static str {
        match self {
            Request::Redeem { .. } => "redeem",
            Request::Renew { .. } => "renew",
            Request::CreateToken { .. } => "create_token",
            Request::ListTokens { .. } => "list_tokens",
            Request::RevokeToken { .. } => "revoke_token",
            Request::RevokePrincipal { .. } => "revoke_principal",
            Request::ListCerts { .. } => "list_certs",
        }
    }
}

/// The keyserver's reply to one [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Issued(IssuedCert),
    TokenCreated(CreatedToken),
    Tokens {
        tokens: Vec<TokenInfo>,
    },
    Certs {
        certs: Vec<CertInfo>,
    },
    /// An admin operation succeeded. A revocation describes what a revoke request revoked. Keyservers that
    /// predate the field send none, and clients that predate it ignore it, so both mixes
    /// of versions still agree on success.
    Done {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revocation: Option<Revocation>,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// A certificate signed for a redemption or a renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCert {
    pub principal: String,
    /// Serial number in lower-case hex.
    pub serial: String,
    pub cert_pem: String,
    /// The CA certificate, so that a node stores the chain it was issued under.
    pub ca_pem: String,
    /// Validity start, Unix seconds.
    pub not_before: i64,
    /// Validity end, Unix seconds.
    pub not_after: i64,
    /// Whether `not_after` was cut to the CA certificate's expiry, so the certificate is
    /// valid for less than the keyserver's configured lifetime. Absent (false) from
    /// keyservers that predate the field.
    #[serde(default)]
    pub shortened_to_ca_expiry: bool,
}

/// The outcome of a revoke request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Id of the revoked token; `None` when a principal was revoked.
    pub token_id: Option<String>,
    /// The revoked principal, or the principal of the revoked token.
    pub principal: String,
    /// When the revocation took effect, Unix seconds. For a target revoked before, this
    /// is the time of that earlier revocation.
    pub revoked_at: i64,
    /// Whether the target was revoked before this request, which then changed nothing.
    pub already_revoked: bool,
    /// Unused tokens of a principal revoked along with it; 0 for a token.
    #[serde(default)]
    pub tokens_revoked: u64,
}

/// A newly created token. The keyserver keeps only a hash of it, so this response is the
/// only place the token ever appears.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    pub token: String,
    /// Public identifier of the token, used to list and revoke it. It cannot be redeemed.
    pub token_id: String,
    pub principal: String,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
}

impl fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedToken")
            .field("token", &"<redacted>")
            .field("token_id", &self.token_id)
            .field("principal", &self.principal)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// State of a token as listed to admins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    Outstanding,
    Used,
    Expired,
    Revoked,
}

/// One token as listed to admins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub token_id: String,
    pub principal: String,
    pub source_cidr: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    pub status: TokenStatus,
}

/// Role of a certificate holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertKind {
    /// A Spike node or control plane: renews its own certificate.
    Node,
    /// An administrator: manages tokens and principals.
    Admin,
    /// The keyserver's own TLS server certificate.
    Server,
}

/// One issued certificate as listed to admins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertInfo {
    pub serial: String,
    pub principal: String,
    pub kind: CertKind,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// Unix seconds.
    pub issued_at: i64,
    /// Whether the principal has been revoked since.
    pub principal_revoked: bool,
}

/// Reason code of a rejected request. The message sent with it explains the reason in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No token matches: the identifier is unknown or the secret is wrong. The two cases
    /// share one code so that a client cannot probe which tokens exist.
    TokenUnknown,
    TokenExpired,
    TokenUsed,
    TokenRevoked,
    AddressNotAllowed,
    CsrInvalid,
    CsrSignatureInvalid,
    PrincipalRevoked,
    /// The operation needs a different client certificate (none, or a node one for an
    /// admin operation).
    NotAuthorized,
    /// Too many failed redemptions from this source address; retry later.
    RateLimited,
    /// The request is malformed or names an invalid value.
    BadRequest,
    /// The keyserver failed internally, and its log contains the cause.
    Internal,
}

/// Errors of reading or writing one frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// I/O on the connection failed.
    #[error("connection i/o failed: {0}")]
    Io(#[from] std::io::Error),
    /// The peer announced a frame larger than [`MAX_FRAME_BYTES`].
    #[error("frame of {len} bytes exceeds the limit of {MAX_FRAME_BYTES} bytes")]
    TooLarge { len: usize },
    /// The frame is not the JSON of the expected message.
    #[error("frame is not a valid message: {0}")]
    Json(#[from] serde_json::Error),
}

/// Writes `message` as one frame and flushes it.
///
/// # Errors
///
/// [`FrameError::TooLarge`] if the encoded message exceeds [`MAX_FRAME_BYTES`], or
/// [`FrameError::Io`] if the write fails.
pub async fn write_frame<W, T>(writer: &mut W, message: &T) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let body = serde_json::to_vec(message)?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge { len: body.len() });
    }

    // The length fits in u32 because MAX_FRAME_BYTES does.
    let len = body.len() as u32;
    writer.write_all(&len.to_be_bytes()).await?;
    writer.write_all(&body).await?;
    writer.flush().await?;
    Ok(())
}

/// Reads one frame. Returns `None` when the peer closed the connection before a new frame.
///
/// # Errors
///
/// [`FrameError::TooLarge`] for an oversized length, [`FrameError::Io`] when the
/// connection ends inside a frame, [`FrameError::Json`] for a body that does not decode.
pub async fn read_frame<R, T>(reader: &mut R) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut len_bytes = [0u8; 4];
    match reader.read_exact(&mut len_bytes).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }

    let len = u32::from_be_bytes(len_bytes) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge { len });
    }

    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await?;
    Ok(Some(serde_json::from_slice(&body)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frame_round_trip() {
        let request = Request::Redeem {
            token: "secret".into(),
            csr_pem: "csr".into(),
        };
        let mut buffer = Vec::new();
        write_frame(&mut buffer, &request).await.unwrap();

        let mut reader = buffer.as_slice();
        let decoded: Option<Request> = read_frame(&mut reader).await.unwrap();
        assert_eq!(decoded, Some(request));
        let end: Option<Request> = read_frame(&mut reader).await.unwrap();
        assert_eq!(end, None);
    }

    #[tokio::test]
    async fn oversized_frame_rejected() {
        let mut buffer = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes().to_vec();
        buffer.extend_from_slice(b"{}");
        let result: Result<Option<Request>, _> = read_frame(&mut buffer.as_slice()).await;
        assert!(matches!(result, Err(FrameError::TooLarge { .. })));
    }

    #[tokio::test]
    async fn truncated_frame_is_io_error() {
        let mut buffer = 10u32.to_be_bytes().to_vec();
        buffer.extend_from_slice(b"{}");
        let result: Result<Option<Request>, _> = read_frame(&mut buffer.as_slice()).await;
        assert!(matches!(result, Err(FrameError::Io(_))));
    }

    /// `Done` as it was before it carried a revocation.
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(tag = "result", rename_all = "snake_case")]
    enum UnitDone {
        Done,
    }

    #[test]
    fn done_decodes_across_versions() {
        let revocation = Revocation {
            token_id: None,
            principal: "node-1".into(),
            revoked_at: 1_796_423_231,
            already_revoked: false,
            tokens_revoked: 2,
        };
        let with = serde_json::to_string(&Response::Done {
            revocation: Some(revocation),
        })
        .unwrap();
        let old_client: UnitDone = serde_json::from_str(&with).unwrap();
        assert_eq!(old_client, UnitDone::Done);

        let old_server: Response = serde_json::from_str(r#"{"result":"done"}"#).unwrap();
        assert_eq!(old_server, Response::Done { revocation: None });
    }

    #[test]
    fn debug_redacts_token() {
        let request = Request::Redeem {
            token: "spk1.aaaa.bbbb".into(),
            csr_pem: String::new(),
        };
        assert!(!format!("{request:?}").contains("bbbb"));

        let created = CreatedToken {
            token: "spk1.aaaa.bbbb".into(),
            token_id: "aaaa".into(),
            principal: "node-1".into(),
            expires_at: 0,
        };
        assert!(!format!("{created:?}").contains("bbbb"));
    }
}
