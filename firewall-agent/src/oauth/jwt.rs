//! Access tokens: ES256 JWTs in the RFC 9068 profile (`typ: at+jwt`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use super::keys::{ALGORITHM, KeyError, SigningKeys};

/// `typ` header of access tokens (RFC 9068 section 2.1).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// Maximum length in bytes of a token that [`verify_own_token`] decodes. The agent's own
/// tokens are under 1 KiB.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Claims of an access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Subject: the user, or the client for `client_credentials`.
    pub sub: String,
    /// Audience: the RFC 8707 resource, or the configured default.
    pub aud: String,
    /// Client the token was issued to.
    pub client_id: String,
    /// Granted scope, space-separated.
    pub scope: String,
    /// Issue time in seconds since the Unix epoch.
    pub iat: u64,
    /// Expiry in seconds since the Unix epoch.
    pub exp: u64,
    /// Unique token identifier, the key of revocations.
    pub jti: String,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

/// Signs `claims` with the active key. Returns the compact JWS.
///
/// # Errors
///
/// [`KeyError::Sign`] when signing fails.
pub fn sign_access_token(keys: &SigningKeys, claims: &AccessClaims) -> Result<String, KeyError> {
    let header = Header {
        alg: ALGORITHM.to_owned(),
        typ: ACCESS_TOKEN_TYPE.to_owned(),
        kid: keys.active_kid(),
    };
    // serde_json fails only on maps with non-string keys or on failing `Serialize` impls, and
    // these structs contain neither.
    let header_json = serde_json::to_vec(&header).unwrap_or_default();
    let claims_json = serde_json::to_vec(claims).unwrap_or_default();
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header_json),
        URL_SAFE_NO_PAD.encode(claims_json)
    );

    let (kid, signature) = keys.sign(signing_input.as_bytes())?;
    if kid != header.kid {
        // A rotation happened between reading the kid and signing: the header would name the
        // wrong key, so sign again under the new one.
        return sign_access_token(keys, claims);
    }
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

/// Returns the claims of `token` when it is an access token that one of `keys` signed,
/// whatever its expiry. Anything else, including a token of another issuer, returns `None`.
pub fn verify_own_token(keys: &SigningKeys, token: &str) -> Option<AccessClaims> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };

    let header: Header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header_b64).ok()?).ok()?;
    if header.alg != ALGORITHM || header.typ != ACCESS_TOKEN_TYPE {
        return None;
    }
    let (_, point) = keys
        .verifying_keys()
        .into_iter()
        .find(|(kid, _)| *kid == header.kid)?;
    let signature = URL_SAFE_NO_PAD.decode(signature_b64).ok()?;
    let signing_input = &token[..header_b64.len() + 1 + claims_b64.len()];
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
        .verify(signing_input.as_bytes(), &signature)
        .ok()?;

    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims_b64).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> AccessClaims {
        AccessClaims {
            iss: "https://issuer.example".to_owned(),
            sub: "alice".to_owned(),
            aud: "https://api.example".to_owned(),
            client_id: "app".to_owned(),
            scope: "read".to_owned(),
            iat: 1_700_000_000,
            exp: 1_700_000_900,
            jti: "jti-1".to_owned(),
        }
    }

    #[test]
    fn signed_token_verifies() {
        let keys = SigningKeys::generate(1).expect("keys");
        let token = sign_access_token(&keys, &claims()).expect("sign");

        assert_eq!(verify_own_token(&keys, &token), Some(claims()));
    }

    #[test]
    fn header_names_type_and_key() {
        let keys = SigningKeys::generate(1).expect("keys");
        let token = sign_access_token(&keys, &claims()).expect("sign");
        let header_b64 = token.split('.').next().expect("header");
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header_b64).expect("base64"))
                .expect("json");

        assert_eq!(header["typ"], "at+jwt");
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], keys.active_kid().as_str());
    }

    #[test]
    fn tampered_token_rejected() {
        let keys = SigningKeys::generate(1).expect("keys");
        let token = sign_access_token(&keys, &claims()).expect("sign");
        let mut other = claims();
        other.sub = "mallory".to_owned();
        let forged_claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).expect("json"));
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);

        assert_eq!(verify_own_token(&keys, &forged), None);
    }

    #[test]
    fn token_of_other_keys_rejected() {
        let keys = SigningKeys::generate(1).expect("keys");
        let other_keys = SigningKeys::generate(1).expect("other keys");
        let token = sign_access_token(&other_keys, &claims()).expect("sign");

        assert_eq!(verify_own_token(&keys, &token), None);
    }
}
