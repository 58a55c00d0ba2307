//! JWT access-token checks on proxied requests (RFC 9068 profile, RFC 8725 practices).
//!
//! A token is checked in this order, and the first failure rejects it:
//!
//! 1. size and character set, before anything is decoded ([`jose::split_compact`]);
//! 2. header: `alg` one of ES256, RS256, PS256 and EdDSA; no `jku`, `x5u`, `jwk` or `x5c`; no
//!    `crit`; a `kid`;
//! 3. `iss` names a configured issuer, whose `typ` rule and algorithm allowlist apply;
//! 4. the key with `kid` from that issuer's JWKS, which must permit the header's algorithm;
//! 5. the signature;
//! 6. claims: `iss`, `aud`, `exp`, `nbf`, `iat` and the types of `sub`, `client_id`, `scope`
//!    and `jti`;
//! 7. revocation of the `jti`.
//!
//! A verified token is cached under the hash of its bytes. A cached token skips steps 1 to 6
//! but is checked again for expiry, for its key still being in the issuer's set, and for
//! revocation.

pub mod cache;
pub mod claims;
pub mod config;
pub mod downstream;
pub mod error;
pub mod jose;
pub mod jwk;
pub mod jwks;
pub mod metrics;
pub mod revocation;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use cache::{TokenHash, VerifiedCache, token_hash};
pub use claims::{ClaimRules, VerifiedToken};
pub use config::{Algorithm, IssuerConfig, RouteAuthConfig, TokensConfig};
pub use error::TokenError;
pub use jwk::{KeySet, VerifyingKey};
pub use jwks::{HttpKeySource, IssuerKeys, JwksError, KeyLookup, KeySource, StaticKeySource};
pub use metrics::{TokenMetrics, TokenResult};
pub use revocation::{NoRevocation, RevocationCheck, RevocationError};

use crate::shutdown::ShutdownListener;
use crate::telemetry::ErrorChain;
use jose::CompactJws;

/// Maximum time the refresh task sleeps between two checks of the issuers' key sets.
const MAX_REFRESH_SLEEP: Duration = Duration::from_secs(60);

/// One trusted issuer: its rules and its keys.
#[derive(Debug)]
struct Issuer {
    config: IssuerConfig,
    keys: IssuerKeys,
}

/// Checks tokens against the configured issuers.
#[derive(Debug)]
pub struct TokenVerifier {
    issuers: HashMap<String, Issuer>,
    max_token_bytes: usize,
    cache: VerifiedCache,
    revocation: Arc<dyn RevocationCheck>,
    metrics: TokenMetrics,
}

impl TokenVerifier {
    /// Creates a verifier that fetches each issuer's keys from its `jwks_url`, except for the
    /// issuers in `sources`, whose keys come from the given source (such as the agent's own
    /// signing keys).
    ///
    /// # Errors
    ///
    /// [`JwksError`] when the HTTPS client cannot be built or a JWKS URL is invalid.
    pub fn new(
        config: &TokensConfig,
        mut sources: HashMap<String, Arc<dyn KeySource>>,
        revocation: Arc<dyn RevocationCheck>,
        metrics: TokenMetrics,
    ) -> Result<Self, JwksError> {
        let mut client = None;
        let mut issuers = HashMap::new();
        for issuer in &config.issuers {
            let source = match sources.remove(&issuer.issuer) {
                Some(source) => source,
                None => {
                    let client = match &client {
                        Some(client) => Clone::clone(client),
                        None => {
                            let built = jwks::jwks_client().map_err(|error| {
                                JwksError::InvalidUrl {
                                    url: issuer.jwks_url.clone(),
                                    problem: format!(
                                        "failed to load the system root certificates: {error}"
                                    ),
                                }
                            })?;
                            client.insert(built).clone()
                        }
                    };
                    Arc::new(HttpKeySource::new(&issuer.jwks_url, client)?) as Arc<dyn KeySource>
                }
            };
            let keys = IssuerKeys::new(
                issuer.issuer.clone(),
                source,
                issuer.jwks_ttl(),
                issuer.jwks_cooldown(),
            );
            issuers.insert(
                issuer.issuer.clone(),
                Issuer {
                    config: issuer.clone(),
                    keys,
                },
            );
        }

        Ok(Self {
            issuers,
            max_token_bytes: config.max_token_bytes,
            cache: VerifiedCache::new(config.cache_entries),
            revocation,
            metrics,
        })
    }

    /// Returns the metrics.
    pub fn metrics(&self) -> &TokenMetrics {
        &self.metrics
    }

    /// Returns the number of cached tokens.
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    /// Verifies `token` now.
    ///
    /// # Errors
    ///
    /// The [`TokenError`] of the first check that fails.
    pub async fn verify(&self, token: &str) -> Result<Arc<VerifiedToken>, TokenError> {
        self.verify_at(token, unix_now()).await
    }

    /// Verifies `token` at `now`, in seconds since the Unix epoch.
    ///
    /// # Errors
    ///
    /// The [`TokenError`] of the first check that fails.
    pub async fn verify_at(&self, token: &str, now: f64) -> Result<Arc<VerifiedToken>, TokenError> {
        let jws = jose::split_compact(token, self.max_token_bytes)?;

        let hash = token_hash(token);
        if let Some(cached) = self.cache.get(&hash) {
            match self.recheck(&cached, now) {
                Ok(true) => {
                    self.metrics.record_cache_hit();
                    return Ok(cached);
                }
                // The key left the issuer's set: verify from scratch, which fails unless the
                // key came back.
                Ok(false) => self.cache.remove(&hash),
                Err(error) => {
                    self.cache.remove(&hash);
                    return Err(error);
                }
            }
        }

        let verified = Arc::new(self.verify_uncached(&jws, now).await?);
        self.check_revocation(&verified)?;
        self.cache.insert(hash, Arc::clone(&verified));
        Ok(verified)
    }

    /// Checks a cached token again. Returns `Ok(false)` when its key is no longer published.
    fn recheck(&self, token: &VerifiedToken, now: f64) -> Result<bool, TokenError> {
        if token.is_expired_at(now) {
            return Err(TokenError::Expired);
        }
        let key_published = self
            .issuers
            .get(&token.issuer)
            .is_some_and(|issuer| issuer.keys.contains(&token.kid));
        if !key_published {
            return Ok(false);
        }
        self.check_revocation(token)?;
        Ok(true)
    }

    async fn verify_uncached(
        &self,
        jws: &CompactJws<'_>,
        now: f64,
    ) -> Result<VerifiedToken, TokenError> {
        let header = jose::parse_object(&jose::decode_segment(jws.header)?)?;
        let checked = jose::check_header(&header)?;
        let claims = jose::parse_object(&jose::decode_segment(jws.payload)?)?;

        // `iss` only selects the issuer here; it is compared again after the signature check.
        let issuer = match claims.get("iss") {
            Some(serde_json::Value::String(name)) => self.issuers.get(name),
            Some(_) => return Err(TokenError::InvalidClaim),
            None => None,
        }
        .ok_or(TokenError::UntrustedIssuer)?;
        jose::check_type(&header, issuer.config.accept_typ_jwt)?;
        if !issuer.config.algorithms.contains(&checked.algorithm) {
            return Err(TokenError::UnsupportedAlgorithm);
        }

        let key = match issuer.keys.key(&checked.kid).await {
            KeyLookup::Found(key) => key,
            KeyLookup::Unknown => return Err(TokenError::UnknownKey),
            KeyLookup::Unavailable => return Err(TokenError::KeysUnavailable),
        };
        if !key.permits(checked.algorithm) {
            return Err(TokenError::AlgorithmMismatch);
        }
        let signature = jose::decode_segment(jws.signature)?;
        if !key.verify(checked.algorithm, jws.signing_input.as_bytes(), &signature) {
            return Err(TokenError::InvalidSignature);
        }

        let rules = ClaimRules {
            issuer: &issuer.config.issuer,
            audiences: &issuer.config.audiences,
            leeway_seconds: issuer.config.leeway_seconds,
        };
        claims::check_claims(&claims, rules, &checked.kid, now)
    }

    fn check_revocation(&self, token: &VerifiedToken) -> Result<(), TokenError> {
        let Some(jti) = &token.jti else {
            return Ok(());
        };
        match self.revocation.is_revoked(&token.issuer, jti) {
            Ok(false) => Ok(()),
            Ok(true) => Err(TokenError::Revoked),
            Err(error) => {
                tracing::warn!(error = %ErrorChain(&error), "token rejected: revocation check failed");
                Err(TokenError::RevocationUnavailable)
            }
        }
    }

    /// Fetches every issuer's keys whose time to live ended, until shutdown. The first pass
    /// runs at once, so keys are usually in place before the first token arrives.
    pub async fn run_refresh(self: Arc<Self>, mut shutdown: ShutdownListener) {
        loop {
            let now = Instant::now();
            let mut next = now + MAX_REFRESH_SLEEP;
            for issuer in self.issuers.values() {
                next = next.min(issuer.keys.refresh_if_due(now).await);
            }
            let sleep = next.saturating_duration_since(Instant::now());
            tokio::select! {
                () = tokio::time::sleep(sleep.max(Duration::from_millis(100))) => {}
                () = shutdown.wait() => return,
            }
        }
    }
}

/// Returns the current time in seconds since the Unix epoch.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

#[cfg(test)]
mod tests;
