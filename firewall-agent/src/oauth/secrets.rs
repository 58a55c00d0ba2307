//! Random values, hashes and comparisons: opaque tokens, client secrets, user passwords and
//! PKCE.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom as _, SystemRandom};
use subtle::ConstantTimeEq as _;

/// Bytes of randomness in codes, refresh tokens, CSRF tokens and identifiers: 256 bits.
const TOKEN_BYTES: usize = 32;

/// Error from the system random generator or the password hasher.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The system random generator failed.
    #[error("the system random generator failed")]
    Random,
    /// Argon2 failed to hash a password.
    #[error("failed to hash the password: {reason}")]
    Hash { reason: String },
}

/// Returns 256 random bits as base64url without padding (43 characters).
///
/// # Errors
///
/// [`SecretError::Random`] when the system random generator fails.
pub fn random_token() -> Result<String, SecretError> {
    let mut bytes = [0_u8; TOKEN_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SecretError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Returns the SHA-256 of `value` as lowercase hex, the key under which codes and refresh
/// tokens are stored and the form client secrets are registered in.
pub fn sha256_hex(value: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, value.as_bytes());
    digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Returns whether `presented` hashes to `stored_sha256_hex`. The comparison of the two
/// digests takes the same time wherever they differ.
pub fn secret_matches(stored_sha256_hex: &str, presented: &str) -> bool {
    let presented_hex = sha256_hex(presented);
    let stored = stored_sha256_hex.to_ascii_lowercase();
    presented_hex.as_bytes().ct_eq(stored.as_bytes()).into()
}

/// Returns whether two tokens are equal, in time that does not depend on where they differ.
pub fn tokens_equal(left: &str, right: &str) -> bool {
    left.as_bytes().ct_eq(right.as_bytes()).into()
}

/// Hashes a password with Argon2id (the argon2 crate's defaults: 19 MiB, 2 passes, 1 lane)
/// and a random salt. Returns the PHC string.
///
/// # Errors
///
/// [`SecretError`] when the random generator or the hasher fails.
pub fn hash_password(password: &str) -> Result<String, SecretError> {
    let mut salt = [0_u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| SecretError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(|error| SecretError::Hash {
        reason: error.to_string(),
    })?;
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|error| SecretError::Hash {
            reason: error.to_string(),
        })?;
    Ok(hash.to_string())
}

/// Returns whether `password` matches the PHC string `stored`. A malformed hash never
/// matches.
pub fn verify_password(stored: &str, password: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// Spends about the time of one password check, so that an unknown user name takes as long
/// to reject as a wrong password.
pub fn verify_password_decoy(password: &str) {
    let _ = verify_password(DECOY_HASH, password);
}

/// A well-formed Argon2id hash with the default parameters that no password matches.
const DECOY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$ZGVjb3lkZWNveWRlY295$\
                          0WA0jfOnX3ErtbG8w5gWOmaJj0EbqPMz5SYnDeUYw1I";

/// Returns whether `challenge` is a well-formed S256 `code_challenge`: the base64url encoding
/// without padding of a SHA-256 digest, 43 characters.
pub fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && URL_SAFE_NO_PAD
            .decode(challenge)
            .is_ok_and(|digest| digest.len() == 32)
}

/// Returns whether `verifier` is a well-formed `code_verifier` (RFC 7636 section 4.1):
/// 43 to 128 characters from `A-Z a-z 0-9 - . _ ~`.
pub fn is_code_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~'))
}

/// Returns the S256 `code_challenge` of `verifier`: base64url without padding of its
/// SHA-256.
pub fn s256_challenge(verifier: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// Returns whether `verifier` is well-formed and its S256 transform equals `challenge`.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    is_code_verifier(verifier) && tokens_equal(&s256_challenge(verifier), challenge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_matches_rfc7636_example() {
        // Appendix B of RFC 7636.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

        assert!(pkce_matches(verifier, challenge));
        assert!(is_s256_challenge(challenge));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK",
            challenge
        ));
    }

    #[test]
    fn code_verifier_length_bounds() {
        assert!(!is_code_verifier(&"a".repeat(42)));
        assert!(is_code_verifier(&"a".repeat(43)));
        assert!(is_code_verifier(&"a".repeat(128)));
        assert!(!is_code_verifier(&"a".repeat(129)));
        assert!(!is_code_verifier(&format!("{}+", "a".repeat(43))));
    }

    #[test]
    fn malformed_challenges_rejected() {
        assert!(!is_s256_challenge("plain-challenge"));
        assert!(!is_s256_challenge(&"A".repeat(44)));
        assert!(!is_s256_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c+"
        ));
    }

    #[test]
    fn secret_matches_only_its_hash() {
        let stored = sha256_hex("s3cret-value");

        assert!(secret_matches(&stored, "s3cret-value"));
        assert!(secret_matches(&stored.to_ascii_uppercase(), "s3cret-value"));
        assert!(!secret_matches(&stored, "s3cret-valuE"));
        assert!(!secret_matches("", "s3cret-value"));
    }

    #[test]
    fn password_hash_round_trip() {
        let hash = hash_password("correct horse").expect("hash");

        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "correct horsE"));
        assert!(!verify_password("not a hash", "correct horse"));
    }

    #[test]
    fn decoy_hash_parses() {
        assert!(PasswordHash::new(DECOY_HASH).is_ok());
    }

    #[test]
    fn random_tokens_differ() {
        let first = random_token().expect("token");
        let second = random_token().expect("token");

        assert_eq!(first.len(), 43);
        assert_ne!(first, second);
    }
}
