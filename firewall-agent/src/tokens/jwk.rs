//! Verification keys from a JWKS (RFC 7517), and signature checks with `ring`.
//!
//! A key's type decides which algorithm it verifies: an EC P-256 key verifies ES256, an
//! Ed25519 key EdDSA, and an RSA key the RS256 or PS256 named by its `alg` member, or either of
//! them when the JWK has no `alg`. The token header only picks among those.

use std::collections::HashMap;

use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;

use super::config::Algorithm;
use super::jose::decode_segment;

/// Public key material of one JWK.
#[derive(Clone, Debug, PartialEq, Eq)]
enum KeyMaterial {
    /// Uncompressed P-256 point: `0x04 || x || y`.
    P256(Vec<u8>),
    /// Ed25519 public key, 32 bytes.
    Ed25519(Vec<u8>),
    /// RSA modulus and public exponent, big-endian.
    Rsa { modulus: Vec<u8>, exponent: Vec<u8> },
}

/// One verification key and the algorithms it may verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyingKey {
    material: KeyMaterial,
    algorithms: &'static [Algorithm],
}

impl VerifyingKey {
    /// Creates an ES256 key from an uncompressed P-256 point (`0x04 || x || y`).
    pub fn p256(point: Vec<u8>) -> Self {
        Self {
            material: KeyMaterial::P256(point),
            algorithms: &[Algorithm::ES256],
        }
    }

    /// Returns whether this key verifies signatures made with `algorithm`.
    pub fn permits(&self, algorithm: Algorithm) -> bool {
        self.algorithms.contains(&algorithm)
    }

    /// Verifies `signature` over `message` with `algorithm`, which must be one the key permits.
    pub fn verify(&self, algorithm: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        if !self.permits(algorithm) {
            return false;
        }
        let result = match (&self.material, algorithm) {
            (KeyMaterial::P256(point), Algorithm::ES256) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
            }
            (KeyMaterial::Ed25519(public), Algorithm::EdDSA) => {
                UnparsedPublicKey::new(&signature::ED25519, public).verify(message, signature)
            }
            (KeyMaterial::Rsa { modulus, exponent }, Algorithm::RS256 | Algorithm::PS256) => {
                let parameters = if algorithm == Algorithm::RS256 {
                    &signature::RSA_PKCS1_2048_8192_SHA256
                } else {
                    &signature::RSA_PSS_2048_8192_SHA256
                };
                RsaPublicKeyComponents {
                    n: modulus,
                    e: exponent,
                }
                .verify(parameters, message, signature)
            }
            _ => return false,
        };
        result.is_ok()
    }
}

/// The keys of one issuer, by `kid`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: HashMap<String, VerifyingKey>,
}

/// Why a JWKS document was rejected as a whole.
#[derive(Debug, thiserror::Error)]
pub enum JwksParseError {
    /// The document is not a JSON object with a `keys` array.
    #[error("the JWKS is not a JSON object with a `keys` array")]
    NotAKeySet(#[source] serde_json::Error),
    /// No key in the document can verify signatures.
    #[error("the JWKS has no usable signature key ({skipped} keys skipped)")]
    NoUsableKey {
        /// Number of keys that were skipped.
        skipped: usize,
    },
}

impl KeySet {
    /// Creates a key set from `(kid, key)` pairs.
    pub fn from_keys(keys: impl IntoIterator<Item = (String, VerifyingKey)>) -> Self {
        Self {
            keys: keys.into_iter().collect(),
        }
    }

    /// Parses a JWKS document. Keys that are not for signatures, have no `kid`, repeat a `kid`,
    /// or are of an unsupported type or curve are skipped and logged.
    ///
    /// # Errors
    ///
    /// [`JwksParseError`] when the document does not parse or contains no usable key.
    pub fn parse(document: &[u8]) -> Result<Self, JwksParseError> {
        let set: JwkSetDocument =
            serde_json::from_slice(document).map_err(JwksParseError::NotAKeySet)?;
        let mut keys = HashMap::new();
        let mut repeated = Vec::new();
        let mut skipped = 0;
        for jwk in set.keys {
            match parse_jwk(jwk) {
                Ok((kid, key)) => {
                    if keys.insert(kid.clone(), key).is_some() {
                        repeated.push(kid);
                    }
                }
                Err(problem) => {
                    skipped += 1;
                    tracing::debug!(problem, "JWKS key skipped");
                }
            }
        }
        // Two keys under one `kid` make the choice ambiguous, so neither is used.
        for kid in repeated {
            keys.remove(&kid);
            skipped += 2;
            tracing::warn!(kid, "JWKS lists a key id twice, both keys skipped");
        }
        if keys.is_empty() {
            return Err(JwksParseError::NoUsableKey { skipped });
        }
        Ok(Self { keys })
    }

    /// Returns the key with `kid`.
    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid)
    }

    /// Returns the number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Returns whether the set has no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[derive(Deserialize)]
struct JwkSetDocument {
    keys: Vec<Jwk>,
}

/// The JWK members read here; others are ignored, as RFC 7517 section 4 asks.
#[derive(Deserialize)]
struct Jwk {
    kty: Option<String>,
    kid: Option<String>,
    #[serde(rename = "use")]
    public_key_use: Option<String>,
    key_ops: Option<Vec<String>>,
    alg: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
    d: Option<String>,
}

fn parse_jwk(jwk: Jwk) -> Result<(String, VerifyingKey), &'static str> {
    let kid = jwk.kid.clone().filter(|kid| !kid.is_empty()).ok_or("no kid")?;
    if jwk.public_key_use.as_deref().is_some_and(|value| value != "sig") {
        return Err("`use` is not `sig`");
    }
    if let Some(operations) = &jwk.key_ops
        && !operations.iter().any(|operation| operation == "verify")
    {
        return Err("`key_ops` does not contain `verify`");
    }
    if jwk.d.is_some() {
        // A published private key is compromised; refuse to trust it.
        return Err("private key material in a public JWKS");
    }
    let declared = match jwk.alg.as_deref() {
        None => None,
        Some(name) => Some(Algorithm::from_name(name).ok_or("unsupported `alg`")?),
    };

    let key = match jwk.kty.as_deref() {
        Some("EC") => parse_ec(&jwk, declared)?,
        Some("OKP") => parse_okp(&jwk, declared)?,
        Some("RSA") => parse_rsa(&jwk, declared)?,
        _ => return Err("unsupported `kty`"),
    };
    Ok((kid, key))
}

fn parse_ec(jwk: &Jwk, declared: Option<Algorithm>) -> Result<VerifyingKey, &'static str> {
    if jwk.crv.as_deref() != Some("P-256") {
        return Err("unsupported EC curve");
    }
    if declared.is_some_and(|algorithm| algorithm != Algorithm::ES256) {
        return Err("`alg` does not match a P-256 key");
    }
    let x = coordinate(jwk.x.as_deref())?;
    let y = coordinate(jwk.y.as_deref())?;
    let mut point = Vec::with_capacity(65);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Ok(VerifyingKey::p256(point))
}

fn coordinate(value: Option<&str>) -> Result<Vec<u8>, &'static str> {
    let bytes = decode_segment(value.ok_or("missing coordinate")?)
        .map_err(|_| "coordinate is not base64url")?;
    if bytes.len() != 32 {
        return Err("P-256 coordinate is not 32 bytes");
    }
    Ok(bytes)
}

fn parse_okp(jwk: &Jwk, declared: Option<Algorithm>) -> Result<VerifyingKey, &'static str> {
    if jwk.crv.as_deref() != Some("Ed25519") {
        return Err("unsupported OKP curve");
    }
    if declared.is_some_and(|algorithm| algorithm != Algorithm::EdDSA) {
        return Err("`alg` does not match an Ed25519 key");
    }
    let public = decode_segment(jwk.x.as_deref().ok_or("missing x")?)
        .map_err(|_| "x is not base64url")?;
    if public.len() != 32 {
        return Err("Ed25519 key is not 32 bytes");
    }
    Ok(VerifyingKey {
        material: KeyMaterial::Ed25519(public),
        algorithms: &[Algorithm::EdDSA],
    })
}

fn parse_rsa(jwk: &Jwk, declared: Option<Algorithm>) -> Result<VerifyingKey, &'static str> {
    let algorithms: &'static [Algorithm] = match declared {
        None => &[Algorithm::RS256, Algorithm::PS256],
        Some(Algorithm::RS256) => &[Algorithm::RS256],
        Some(Algorithm::PS256) => &[Algorithm::PS256],
        Some(_) => return Err("`alg` does not match an RSA key"),
    };
    let modulus = decode_segment(jwk.n.as_deref().ok_or("missing n")?)
        .map_err(|_| "n is not base64url")?;
    let exponent = decode_segment(jwk.e.as_deref().ok_or("missing e")?)
        .map_err(|_| "e is not base64url")?;
    // ring refuses moduli below 2048 bits when verifying; refusing them here keeps such a key
    // out of the set, so the failure is visible in the logs at fetch time.
    let significant = modulus.iter().skip_while(|&&b| b == 0).count();
    if significant < 256 {
        return Err("RSA modulus shorter than 2048 bits");
    }
    Ok(VerifyingKey {
        material: KeyMaterial::Rsa { modulus, exponent },
        algorithms,
    })
}
