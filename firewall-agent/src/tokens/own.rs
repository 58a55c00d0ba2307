//! The agent's own authorization server as a trusted issuer: its signing keys as a key source,
//! and its revoked access tokens in the revocation check.

use std::sync::Arc;

use super::jwk::{KeySet, VerifyingKey};
use super::jwks::{FetchFuture, KeySource};
use super::revocation::{RevocationCheck, RevocationError};
use crate::oauth::AuthorizationServer;
use crate::oauth::keys::SigningKeys;

/// The published keys of the agent's signing key list (next, active and retired), read on
/// every fetch, so a rotation shows up at the next refresh or at the first unknown `kid`.
#[derive(Debug)]
pub struct SigningKeysSource {
    keys: Arc<SigningKeys>,
}

impl SigningKeysSource {
    /// Creates a source over `keys`.
    pub fn new(keys: Arc<SigningKeys>) -> Self {
        Self { keys }
    }
}

impl KeySource for SigningKeysSource {
    fn fetch(&self) -> FetchFuture<'_> {
        let keys = self
            .keys
            .verifying_keys()
            .into_iter()
            .map(|(kid, point)| (kid, VerifyingKey::p256(point)));
        Box::pin(std::future::ready(Ok(KeySet::from_keys(keys))))
    }
}

/// Revocation check for tokens of the agent's own authorization server, which keeps revoked
/// `jti` values in its store. Tokens from other issuers go to `others`.
#[derive(Debug)]
pub struct OwnIssuerRevocations {
    server: Arc<AuthorizationServer>,
    others: Arc<dyn RevocationCheck>,
}

impl OwnIssuerRevocations {
    /// Creates a check that asks `server` about its own tokens and `others` about the rest.
    pub fn new(server: Arc<AuthorizationServer>, others: Arc<dyn RevocationCheck>) -> Self {
        Self { server, others }
    }
}

impl RevocationCheck for OwnIssuerRevocations {
    fn is_revoked(&self, issuer: &str, jti: &str) -> Result<bool, RevocationError> {
        if issuer == self.server.config().issuer {
            // The server logs a store failure and reports the token as revoked, so this fails
            // closed too.
            return Ok(self.server.is_access_token_revoked(jti));
        }
        self.others.is_revoked(issuer, jti)
    }
}
