//! The link between the authorization server and the proxy's token check: the server's own
//! signing keys as a key source, read in process, and its revocations as the revocation check.

use std::sync::Arc;

use super::keys::SigningKeys;
use super::server::AuthorizationServer;
use crate::tokens::jwks::FetchFuture;
use crate::tokens::{JwksError, KeySet, KeySource, RevocationCheck, RevocationError};

/// The authorization server's published keys. Every fetch reads the current keys, so a
/// rotation is seen at the verifier's next refresh.
#[derive(Debug)]
pub struct OwnKeySource {
    keys: Arc<SigningKeys>,
}

impl OwnKeySource {
    /// Creates the source.
    pub fn new(keys: Arc<SigningKeys>) -> Self {
        Self { keys }
    }
}

impl KeySource for OwnKeySource {
    fn fetch(&self) -> FetchFuture<'_> {
        let document = self.keys.public_jwks().to_string();
        let keys = KeySet::parse(document.as_bytes()).map_err(|source| JwksError::Parse {
            origin: "the agent's own signing keys".into(),
            source,
        });
        Box::pin(std::future::ready(keys))
    }
}

/// Revocations of the authorization server's access tokens. Tokens of other issuers are never
/// revoked here.
#[derive(Debug)]
pub struct OwnRevocation {
    server: Arc<AuthorizationServer>,
}

impl OwnRevocation {
    /// Creates the check.
    pub fn new(server: Arc<AuthorizationServer>) -> Self {
        Self { server }
    }
}

impl RevocationCheck for OwnRevocation {
    fn is_revoked(&self, issuer: &str, jti: &str) -> Result<bool, RevocationError> {
        if issuer != self.server.config().issuer {
            return Ok(false);
        }
        self.server
            .storage
            .is_access_revoked(jti)
            .map_err(|error| RevocationError {
                issuer: issuer.to_owned(),
                problem: crate::telemetry::ErrorChain(&error).to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn own_key_source_follows_rotation() {
        let keys = Arc::new(SigningKeys::generate(1).expect("keys"));
        let source = OwnKeySource::new(Arc::clone(&keys));
        let before = source.fetch().await.expect("fetch");
        let records = keys.rotated_records(2, 1000).expect("rotate");
        keys.replace(records, 2).expect("replace");

        let after = source.fetch().await.expect("fetch after rotation");

        assert_eq!(before.len(), 2);
        assert_eq!(after.len(), 3);
    }
}
