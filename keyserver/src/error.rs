//! Reasons an operation fails, in words a client can act on.

use std::net::IpAddr;

use spike_keyproto::utc::rfc3339_and_unix;
use spike_keyproto::wire::ErrorCode;

use crate::ca::CaError;
use crate::policy::PolicyError;
use crate::store::StoreError;

/// A rejected or failed keyserver operation. The message goes back to the client, except
/// for internal failures, whose detail stays in the keyserver's log.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// Unknown identifier or wrong secret; one variant so that clients cannot probe ids.
    #[error("token not recognised: check that it was copied whole, or ask an administrator for a new one")]
    TokenUnknown,
    #[error("token expired at {}; ask an administrator for a new token", rfc3339_and_unix(*.expired_at))]
    TokenExpired { expired_at: i64 },
    #[error("token already used at {}; a token is redeemed once, ask an administrator for a new one", rfc3339_and_unix(*.used_at))]
    TokenUsed { used_at: i64 },
    #[error("token revoked; ask an administrator for a new token")]
    TokenRevoked,
    #[error("source address {address} is not allowed for this token (allowed: {allowed}); redeem from that network or ask for a new token")]
    AddressNotAllowed { address: IpAddr, allowed: String },
    #[error("invalid CSR: {reason}")]
    CsrInvalid { reason: String },
    #[error("CSR signature invalid: the request was not signed by the key it contains")]
    CsrSignatureInvalid,
    #[error("principal {principal:?} is revoked; it can get no token or certificate")]
    PrincipalRevoked { principal: String },
    #[error("{operation} needs {needed}; connect with that client certificate")]
    NotAuthorized {
        operation: &'static str,
        needed: &'static str,
    },
    #[error("too many failed redemptions from {address}; retry in {retry_after_secs} s")]
    RateLimited {
        address: IpAddr,
        retry_after_secs: u64,
    },
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("token lifetime of {requested_secs} s is outside 1 s to {max_secs} s; request one in that range")]
    BadLifetime { requested_secs: u64, max_secs: u64 },
    #[error("no unused token has id {token_id:?}: it is unknown or was redeemed already; `token list --all` shows every token and its status")]
    TokenNotFound { token_id: String },
    #[error("principal {principal:?} not found; it has no token or certificate yet")]
    PrincipalNotFound { principal: String },
    #[error("principal {principal:?} is reserved for the keyserver's own server certificate and cannot be revoked; the keyserver issues itself a new one at every start")]
    ReservedPrincipal { principal: String },
    /// Revoking the caller's own principal would cut off the admin that sends the request,
    /// and with a single admin everyone.
    #[error("principal {principal:?} is the admin making this request and cannot revoke itself; revoke it with another admin's certificate")]
    RevokeSelf { principal: String },
    #[error("principal {principal:?} is an {existing} principal and cannot also be a {requested} principal; pick another name")]
    KindConflict {
        principal: String,
        existing: String,
        requested: &'static str,
    },
    #[error("internal error: {0}")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Ca(#[from] CaError),
}

impl OpError {
    /// Returns the wire code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            OpError::TokenUnknown => ErrorCode::TokenUnknown,
            OpError::TokenExpired { .. } => ErrorCode::TokenExpired,
            OpError::TokenUsed { .. } => ErrorCode::TokenUsed,
            OpError::TokenRevoked => ErrorCode::TokenRevoked,
            OpError::AddressNotAllowed { .. } => ErrorCode::AddressNotAllowed,
            OpError::CsrInvalid { .. } => ErrorCode::CsrInvalid,
            OpError::CsrSignatureInvalid => ErrorCode::CsrSignatureInvalid,
            OpError::PrincipalRevoked { .. } => ErrorCode::PrincipalRevoked,
            OpError::NotAuthorized { .. } => ErrorCode::NotAuthorized,
            OpError::RateLimited { .. } => ErrorCode::RateLimited,
            OpError::Policy(_)
            | OpError::BadLifetime { .. }
            | OpError::TokenNotFound { .. }
            | OpError::PrincipalNotFound { .. }
            | OpError::ReservedPrincipal { .. }
            | OpError::RevokeSelf { .. }
            | OpError::KindConflict { .. } => ErrorCode::BadRequest,
            OpError::Store(_) | OpError::Ca(_) => ErrorCode::Internal,
        }
    }

    /// Returns the message sent to the client. Internal detail (paths, SQL errors) stays in the
    /// keyserver's log.
    pub fn client_message(&self) -> String {
        match self.code() {
            ErrorCode::Internal => {
                "internal keyserver error; the keyserver log has the details".to_string()
            }
            _ => self.to_string(),
        }
    }

    /// Returns whether this failure counts toward the per-address limit of failed redemptions.
    /// Internal failures and rate limiting itself do not.
    pub fn counts_as_failed_redemption(&self) -> bool {
        !matches!(
            self.code(),
            ErrorCode::Internal | ErrorCode::RateLimited | ErrorCode::NotAuthorized
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_times_shown_as_rfc3339() {
        let expired = OpError::TokenExpired {
            expired_at: 1_796_423_231,
        };
        assert_eq!(
            expired.to_string(),
            "token expired at 2026-12-04T22:27:11Z (Unix 1796423231); ask an administrator \
             for a new token"
        );
        let used = OpError::TokenUsed { used_at: 0 };
        assert!(
            used.to_string()
                .starts_with("token already used at 1970-01-01T00:00:00Z (Unix 0);"),
            "{used}"
        );
    }
}
