//! The revocation hook: checks whether a token's `jti` was revoked.

use std::fmt;

/// Error of a revocation check. The token is rejected when the check fails.
#[derive(Debug, thiserror::Error)]
#[error("failed to check the revocation of a token from {issuer}: {problem}")]
pub struct RevocationError {
    /// The token's issuer.
    pub issuer: String,
    /// What failed.
    pub problem: String,
}

/// Source of truth for revoked access tokens, such as the store where the authorization
/// server records revoked `jti` values. Called for every request with a token that has a `jti`,
/// cached or not, so implementations must be fast.
pub trait RevocationCheck: Send + Sync + fmt::Debug {
    /// Returns whether the token `jti` from `issuer` was revoked.
    ///
    /// # Errors
    ///
    /// [`RevocationError`] when the revocation status cannot be determined.
    fn is_revoked(&self, issuer: &str, jti: &str) -> Result<bool, RevocationError>;
}

/// A check for deployments where no revocation list exists: nothing is revoked.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRevocation;

impl RevocationCheck for NoRevocation {
    fn is_revoked(&self, _issuer: &str, _jti: &str) -> Result<bool, RevocationError> {
        Ok(false)
    }
}
