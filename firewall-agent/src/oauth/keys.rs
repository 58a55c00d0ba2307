//! The authorization server's ES256 signing keys, their rotation and the published JWKS.
//!
//! Keys move through three states. A `next` key is published in the JWKS but signs nothing, so
//! that verifiers learn it before the first token it signs. Rotation makes the `next` key the
//! `active` one, creates a fresh `next` key, and retires the previous `active` key. A retired
//! key stays published until every token it signed has expired, and is then pruned.
//!
//! [`SigningKeys`] is shared: the token endpoint signs with it, the resource-server side of the
//! proxy verifies with [`SigningKeys::verifying_keys`], and the admin API rotates it. Every
//! change replaces the whole key list atomically.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};

/// JOSE name of the only signing algorithm: ECDSA on P-256 with SHA-256.
pub const ALGORITHM: &str = "ES256";

/// Length in bytes of an uncompressed P-256 point: `0x04`, then X and Y, 32 bytes each.
const UNCOMPRESSED_POINT_BYTES: usize = 65;

/// Role of a key in the rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// Published, not yet signing.
    Next,
    /// Signs new tokens. Exactly one key is active.
    Active,
    /// Published until `expires_at_ms`, no longer signing.
    Retired,
}

impl KeyStatus {
    /// Label used in the admin API and `fwctl keys list`.
    pub const fn label(self) -> &'static str {
        match self {
            KeyStatus::Next => "next",
            KeyStatus::Active => "active",
            KeyStatus::Retired => "retired",
        }
    }
}

/// One stored signing key, private part included. `Debug` leaves the private key out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Key identifier, the `kid` of the JWK and of every token header it signs.
    pub kid: String,
    /// The key pair as PKCS#8 v1 DER, base64url without padding.
    pub pkcs8: String,
    /// Role in the rotation.
    pub status: KeyStatus,
    /// Creation time in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// For a retired key, the time after which no token it signed is valid, in milliseconds
    /// since the Unix epoch; the key is pruned then.
    pub expires_at_ms: Option<u64>,
}

impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRecord")
            .field("kid", &self.kid)
            .field("status", &self.status)
            .field("created_at_ms", &self.created_at_ms)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}

/// Errors from loading, creating or using signing keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The system random generator failed.
    #[error("failed to generate an ES256 key pair")]
    Generate,
    /// A stored key does not decode as an ES256 PKCS#8 key pair.
    #[error("stored signing key `{kid}` is not a valid ES256 PKCS#8 key pair: {reason}")]
    InvalidKey { kid: String, reason: String },
    /// The stored keys contain no active key, or more than one.
    #[error("the stored signing keys contain {count} active keys, expected exactly 1")]
    ActiveCount { count: usize },
    /// Signing failed.
    #[error("failed to sign with key `{kid}`")]
    Sign { kid: String },
}

/// One loaded key.
struct LoadedKey {
    record: KeyRecord,
    pair: EcdsaKeyPair,
}

/// The current key list. Exactly one key is active.
struct KeySet {
    keys: Vec<LoadedKey>,
    active: usize,
}

/// The authorization server's signing keys, shared between the token endpoint, the verifier
/// and the admin API.
pub struct SigningKeys {
    current: ArcSwap<KeySet>,
    random: SystemRandom,
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let records = self.records();
        f.debug_struct("SigningKeys")
            .field("keys", &records)
            .finish()
    }
}

impl SigningKeys {
    /// Loads stored keys. Retired keys past their expiry at `now_ms` are dropped.
    ///
    /// # Errors
    ///
    /// [`KeyError::InvalidKey`] when a record does not decode, [`KeyError::ActiveCount`] when
    /// the records do not contain exactly one active key.
    pub fn from_records(records: Vec<KeyRecord>, now_ms: u64) -> Result<Self, KeyError> {
        let random = SystemRandom::new();
        let set = load_set(records, now_ms, &random)?;
        Ok(Self {
            current: ArcSwap::from_pointee(set),
            random,
        })
    }

    /// Creates a fresh key list: one active key and one next key, created at `now_ms`.
    ///
    /// # Errors
    ///
    /// [`KeyError::Generate`] when the random generator fails.
    pub fn generate(now_ms: u64) -> Result<Self, KeyError> {
        let random = SystemRandom::new();
        let records = vec![
            new_record(KeyStatus::Active, now_ms, &random)?,
            new_record(KeyStatus::Next, now_ms, &random)?,
        ];
        Self::from_records(records, now_ms)
    }

    /// Returns every key record, private parts included, for the store.
    pub fn records(&self) -> Vec<KeyRecord> {
        let set = self.current.load();
        set.keys.iter().map(|key| key.record.clone()).collect()
    }

    /// Returns the `kid` of the key that signs new tokens.
    pub fn active_kid(&self) -> String {
        let set = self.current.load();
        set.keys[set.active].record.kid.clone()
    }

    /// Signs `message` with the active key. Returns the key's `kid` and the 64-byte `R || S`
    /// signature that JWS uses for ES256.
    ///
    /// # Errors
    ///
    /// [`KeyError::Sign`] when ring fails to sign.
    pub fn sign(&self, message: &[u8]) -> Result<(String, Vec<u8>), KeyError> {
        let set = self.current.load();
        let key = &set.keys[set.active];
        let signature = key
            .pair
            .sign(&self.random, message)
            .map_err(|_| KeyError::Sign {
                kid: key.record.kid.clone(),
            })?;
        Ok((key.record.kid.clone(), signature.as_ref().to_vec()))
    }

    /// Returns the JWKS document of every published key (next, active and retired), public
    /// parts only.
    pub fn public_jwks(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .verifying_keys()
            .into_iter()
            .map(|(kid, point)| public_jwk(&kid, &point))
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// Returns the `kid` and the uncompressed P-256 public point (65 bytes, starting with
    /// `0x04`) of every published key. A token whose header names one of these `kid`s is
    /// verified with ES256 and that point.
    pub fn verifying_keys(&self) -> Vec<(String, Vec<u8>)> {
        let set = self.current.load();
        set.keys
            .iter()
            .map(|key| {
                (
                    key.record.kid.clone(),
                    key.pair.public_key().as_ref().to_vec(),
                )
            })
            .collect()
    }

    /// Rotates at `now_ms`: the next key becomes active, a new next key is created, and the
    /// previously active key is retired until `now_ms + retain_ms`, which must cover the
    /// lifetime of every token it signed. Expired retired keys are pruned. Returns the new
    /// records, which the caller stores; the keys in use change only when it calls
    /// [`SigningKeys::replace`].
    ///
    /// # Errors
    ///
    /// [`KeyError::Generate`] when the random generator fails.
    pub fn rotated_records(&self, now_ms: u64, retain_ms: u64) -> Result<Vec<KeyRecord>, KeyError> {
        let mut records: Vec<KeyRecord> = self
            .records()
            .into_iter()
            .filter(|record| !is_expired(record, now_ms))
            .collect();
        for record in &mut records {
            match record.status {
                KeyStatus::Active => {
                    record.status = KeyStatus::Retired;
                    record.expires_at_ms = Some(now_ms.saturating_add(retain_ms));
                }
                KeyStatus::Next => record.status = KeyStatus::Active,
                KeyStatus::Retired => {}
            }
        }
        records.push(new_record(KeyStatus::Next, now_ms, &self.random)?);
        Ok(records)
    }

    /// Replaces the keys in use with `records`, once they are stored.
    ///
    /// # Errors
    ///
    /// [`KeyError`] as for [`SigningKeys::from_records`]; the keys in use are then unchanged.
    pub fn replace(&self, records: Vec<KeyRecord>, now_ms: u64) -> Result<(), KeyError> {
        let set = load_set(records, now_ms, &self.random)?;
        self.current.store(Arc::new(set));
        Ok(())
    }
}

/// Returns the public JWK of an ES256 key from its uncompressed point.
fn public_jwk(kid: &str, point: &[u8]) -> serde_json::Value {
    let (x, y) = if point.len() == UNCOMPRESSED_POINT_BYTES {
        (&point[1..33], &point[33..65])
    } else {
        (&[][..], &[][..])
    };
    serde_json::json!({
        "kty": "EC",
        "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(x),
        "y": URL_SAFE_NO_PAD.encode(y),
        "kid": kid,
        "alg": ALGORITHM,
        "use": "sig",
    })
}

fn is_expired(record: &KeyRecord, now_ms: u64) -> bool {
    record.status == KeyStatus::Retired && record.expires_at_ms.is_some_and(|at| at <= now_ms)
}

fn load_set(
    records: Vec<KeyRecord>,
    now_ms: u64,
    random: &SystemRandom,
) -> Result<KeySet, KeyError> {
    // A stable order, oldest first, so that listings match across restarts.
    let mut records = records;
    records.sort_by(|left, right| {
        (left.created_at_ms, &left.kid).cmp(&(right.created_at_ms, &right.kid))
    });
    let mut keys = Vec::with_capacity(records.len());
    for record in records
        .into_iter()
        .filter(|record| !is_expired(record, now_ms))
    {
        let invalid = |reason: String| KeyError::InvalidKey {
            kid: record.kid.clone(),
            reason,
        };
        let der = URL_SAFE_NO_PAD
            .decode(&record.pkcs8)
            .map_err(|error| invalid(error.to_string()))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, random)
            .map_err(|error| invalid(error.to_string()))?;
        keys.push(LoadedKey { record, pair });
    }

    let active: Vec<usize> = keys
        .iter()
        .enumerate()
        .filter(|(_, key)| key.record.status == KeyStatus::Active)
        .map(|(index, _)| index)
        .collect();
    match active.as_slice() {
        [index] => Ok(KeySet {
            active: *index,
            keys,
        }),
        _ => Err(KeyError::ActiveCount {
            count: active.len(),
        }),
    }
}

fn new_record(
    status: KeyStatus,
    now_ms: u64,
    random: &SystemRandom,
) -> Result<KeyRecord, KeyError> {
    let document = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, random)
        .map_err(|_| KeyError::Generate)?;
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, document.as_ref(), random)
            .map_err(|_| KeyError::Generate)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, pair.public_key().as_ref());
    // The kid is derived from the public key, so it is unique per key and reveals nothing.
    let kid = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]);
    Ok(KeyRecord {
        kid,
        pkcs8: URL_SAFE_NO_PAD.encode(document.as_ref()),
        status,
        created_at_ms: now_ms,
        expires_at_ms: None,
    })
}

#[cfg(test)]
mod tests {
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    use super::*;

    const NOW_MS: u64 = 1_700_000_000_000;

    fn verify(keys: &SigningKeys, kid: &str, message: &[u8], signature: &[u8]) -> bool {
        keys.verifying_keys()
            .into_iter()
            .find(|(candidate, _)| candidate == kid)
            .is_some_and(|(_, point)| {
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
                    .is_ok()
            })
    }

    #[test]
    fn generated_keys_sign_with_active_key() {
        let keys = SigningKeys::generate(NOW_MS).expect("generate");
        let (kid, signature) = keys.sign(b"header.payload").expect("sign");

        assert_eq!(kid, keys.active_kid());
        assert_eq!(signature.len(), 64);
        assert!(verify(&keys, &kid, b"header.payload", &signature));
        assert!(!verify(&keys, &kid, b"header.other", &signature));
    }

    #[test]
    fn jwks_publishes_next_key_without_private_parts() {
        let keys = SigningKeys::generate(NOW_MS).expect("generate");
        let jwks = keys.public_jwks();
        let published = jwks["keys"].as_array().expect("keys array");

        assert_eq!(published.len(), 2);
        for jwk in published {
            assert_eq!(jwk["kty"], "EC");
            assert_eq!(jwk["crv"], "P-256");
            assert_eq!(jwk["alg"], "ES256");
            assert_eq!(jwk["x"].as_str().map(str::len), Some(43));
            assert_eq!(jwk["y"].as_str().map(str::len), Some(43));
            assert!(jwk.get("d").is_none());
        }
    }

    #[test]
    fn rotation_signs_with_previously_published_key() {
        let keys = SigningKeys::generate(NOW_MS).expect("generate");
        let old_active = keys.active_kid();
        let next = keys
            .records()
            .into_iter()
            .find(|record| record.status == KeyStatus::Next)
            .expect("next key");

        let records = keys.rotated_records(NOW_MS + 1, 60_000).expect("rotate");
        keys.replace(records, NOW_MS + 1).expect("replace");

        assert_eq!(keys.active_kid(), next.kid);
        let published: Vec<String> = keys
            .verifying_keys()
            .into_iter()
            .map(|(kid, _)| kid)
            .collect();
        assert_eq!(published.len(), 3);
        assert!(published.contains(&old_active));
    }

    #[test]
    fn retired_key_pruned_after_retention() {
        let keys = SigningKeys::generate(NOW_MS).expect("generate");
        let old_active = keys.active_kid();
        let records = keys.rotated_records(NOW_MS, 60_000).expect("rotate");
        keys.replace(records, NOW_MS).expect("replace");

        let records = keys
            .rotated_records(NOW_MS + 60_000, 60_000)
            .expect("rotate again");
        keys.replace(records, NOW_MS + 60_000).expect("replace");

        let published: Vec<String> = keys
            .verifying_keys()
            .into_iter()
            .map(|(kid, _)| kid)
            .collect();
        assert!(!published.contains(&old_active));
        assert_eq!(published.len(), 3);
    }

    #[test]
    fn stored_records_reload_to_same_keys() {
        let keys = SigningKeys::generate(NOW_MS).expect("generate");
        let reloaded = SigningKeys::from_records(keys.records(), NOW_MS).expect("reload");
        let (kid, signature) = reloaded.sign(b"message").expect("sign");

        assert_eq!(keys.verifying_keys(), reloaded.verifying_keys());
        assert!(verify(&keys, &kid, b"message", &signature));
    }

    #[test]
    fn records_without_active_key_rejected() {
        let keys = SigningKeys::generate(NOW_MS).expect("generate");
        let records: Vec<KeyRecord> = keys
            .records()
            .into_iter()
            .filter(|record| record.status != KeyStatus::Active)
            .collect();

        let error = SigningKeys::from_records(records, NOW_MS).expect_err("no active key");
        assert!(matches!(error, KeyError::ActiveCount { count: 0 }));
    }

    #[test]
    fn corrupt_record_rejected() {
        let keys = SigningKeys::generate(NOW_MS).expect("generate");
        let mut records = keys.records();
        records[0].pkcs8 = "bm90IGEga2V5".to_owned();

        let error = SigningKeys::from_records(records, NOW_MS).expect_err("corrupt key");
        assert!(matches!(error, KeyError::InvalidKey { .. }));
    }

    #[test]
    fn debug_omits_private_key() {
        let keys = SigningKeys::generate(NOW_MS).expect("generate");
        let record = &keys.records()[0];
        let debug = format!("{keys:?} {record:?}");
        assert!(!debug.contains(&record.pkcs8));
    }
}
