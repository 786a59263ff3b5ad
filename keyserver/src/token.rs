//! One-time tokens: generation, parsing and constant-time verification.
//!
//! A token reads `spk1.<id>.<secret>`: 12 random bytes of identifier and 32 random bytes
//! of secret, both in hex. The identifier is a public handle used to find, list and
//! revoke the token; on its own it cannot be redeemed. The keyserver stores only the
//! SHA-256 of the secret and compares it in constant time.

use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use spike_keyproto::tls::{sha256, to_hex};

const PREFIX: &str = "spk1";
const ID_BYTES: usize = 12;
const SECRET_BYTES: usize = 32;

/// A token split into its identifier and the hash of its secret.
pub struct ParsedToken {
    pub id: String,
    pub secret_hash: [u8; 32],
}

impl std::fmt::Debug for ParsedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A new token: the text handed to the admin once, and what the keyserver stores.
pub struct NewToken {
    pub text: String,
    pub id: String,
    pub secret_hash: [u8; 32],
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The system random generator failed.
#[derive(Debug, thiserror::Error)]
#[error("system random number generator failed; check that the kernel entropy source is available")]
pub struct RandomError;

/// Fills `out` with random bytes from the operating system.
///
/// # Errors
///
/// [`RandomError`] if the system generator fails.
pub fn random_bytes(out: &mut [u8]) -> Result<(), RandomError> {
    SystemRandom::new().fill(out).map_err(|_| RandomError)
}

/// Generates a new token.
///
/// # Errors
///
/// [`RandomError`] if the system generator fails.
pub fn generate() -> Result<NewToken, RandomError> {
    let mut id = [0u8; ID_BYTES];
    let mut secret = [0u8; SECRET_BYTES];
    random_bytes(&mut id)?;
    random_bytes(&mut secret)?;

    let id = to_hex(&id);
    let secret_hex = to_hex(&secret);
    Ok(NewToken {
        text: format!("{PREFIX}.{id}.{secret_hex}"),
        secret_hash: sha256(secret_hex.as_bytes()),
        id,
    })
}

/// Splits a token into identifier and secret hash. Returns `None` for anything that is not
/// a token of this format; callers report that exactly like an unknown token.
pub fn parse(text: &str) -> Option<ParsedToken> {
    let mut parts = text.trim().split('.');
    let (prefix, id, secret) = (parts.next()?, parts.next()?, parts.next()?);
    let well_formed = prefix == PREFIX
        && parts.next().is_none()
        && id.len() == ID_BYTES * 2
        && secret.len() == SECRET_BYTES * 2
        && is_lower_hex(id)
        && is_lower_hex(secret);
    if !well_formed {
        return None;
    }

    Some(ParsedToken {
        id: id.to_string(),
        secret_hash: sha256(secret.as_bytes()),
    })
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Compares a presented secret hash with the stored one in constant time. With no stored
/// hash (unknown identifier) it compares against a fixed value, so the time taken does
/// not reveal whether the identifier exists.
pub fn secret_matches(presented: &[u8; 32], stored: Option<&[u8]>) -> bool {
    const ABSENT: [u8; 32] = [0u8; 32];
    let (stored, exists) = match stored {
        Some(hash) if hash.len() == 32 => (hash, true),
        _ => (&ABSENT[..], false),
    };
    let equal: bool = presented.ct_eq(stored).into();
    equal && exists
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_token_parses() {
        let token = generate().unwrap();
        let parsed = parse(&token.text).unwrap();
        assert_eq!(parsed.id, token.id);
        assert!(secret_matches(
            &parsed.secret_hash,
            Some(&token.secret_hash)
        ));
    }

    #[test]
    fn wrong_secret_does_not_match() {
        let token = generate().unwrap();
        let other = generate().unwrap();
        let forged = format!(
            "spk1.{}.{}",
            token.id,
            other.text.rsplit('.').next().unwrap()
        );
        let parsed = parse(&forged).unwrap();
        assert!(!secret_matches(
            &parsed.secret_hash,
            Some(&token.secret_hash)
        ));
        assert!(!secret_matches(&parsed.secret_hash, None));
    }

    #[test]
    fn malformed_tokens_rejected() {
        let token = generate().unwrap().text;
        let cases = [
            String::new(),
            token.replacen("spk1", "spk2", 1),
            format!("{token}.extra"),
            token.to_uppercase(),
            token[..token.len() - 1].to_string(),
        ];
        for case in cases {
            assert!(parse(&case).is_none(), "{case}");
        }
    }

    #[test]
    fn debug_hides_token_text() {
        let token = generate().unwrap();
        let secret = token.text.rsplit('.').next().unwrap().to_string();
        assert!(!format!("{token:?}").contains(&secret));
    }
}
