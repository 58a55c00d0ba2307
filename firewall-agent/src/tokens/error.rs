//! Why a token was rejected.

use std::fmt;

/// Reason a token was rejected. The label is a metric label value; the description goes into
/// the `error_description` of the `WWW-Authenticate` header, so it names the rule that failed
/// and nothing from the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenError {
    /// Longer than `tokens.max_token_bytes`.
    TooLarge,
    /// Not three base64url segments separated by two dots, or a segment that does not decode.
    Malformed,
    /// The header or the claims are not a JSON object, or repeat a member.
    InvalidJson,
    /// The header's `alg` is missing, `none`, an HMAC algorithm or unknown.
    UnsupportedAlgorithm,
    /// The header's `alg` is not the algorithm of the key that `kid` selects, or not in the
    /// issuer's allowlist.
    AlgorithmMismatch,
    /// The header carries `jku`, `x5u`, `jwk` or `x5c`, which are never trusted.
    UntrustedKeyHeader,
    /// The header has a `crit` member: no extension is understood.
    CriticalHeader,
    /// The header's `typ` is not `at+jwt` (or `JWT` where the issuer allows it).
    InvalidType,
    /// The header has no `kid`, or no key of the issuer has that `kid`.
    UnknownKey,
    /// The issuer's keys could not be fetched and none were fetched before.
    KeysUnavailable,
    /// The signature does not verify.
    InvalidSignature,
    /// `iss` is missing or not a configured issuer.
    UntrustedIssuer,
    /// The issuer is trusted but not accepted on this route.
    IssuerNotAccepted,
    /// `aud` is missing or names none of this API's audiences.
    InvalidAudience,
    /// `exp` is missing.
    MissingExpiry,
    /// `exp` lies in the past by more than the leeway.
    Expired,
    /// `nbf` or `iat` lies in the future by more than the leeway.
    NotYetValid,
    /// A registered claim has the wrong JSON type.
    InvalidClaim,
    /// The token's `jti` was revoked.
    Revoked,
    /// The revocation check failed, so the token is rejected.
    RevocationUnavailable,
}

impl TokenError {
    /// Every reason, in label order.
    pub const ALL: [TokenError; 20] = [
        TokenError::TooLarge,
        TokenError::Malformed,
        TokenError::InvalidJson,
        TokenError::UnsupportedAlgorithm,
        TokenError::AlgorithmMismatch,
        TokenError::UntrustedKeyHeader,
        TokenError::CriticalHeader,
        TokenError::InvalidType,
        TokenError::UnknownKey,
        TokenError::KeysUnavailable,
        TokenError::InvalidSignature,
        TokenError::UntrustedIssuer,
        TokenError::IssuerNotAccepted,
        TokenError::InvalidAudience,
        TokenError::MissingExpiry,
        TokenError::Expired,
        TokenError::NotYetValid,
        TokenError::InvalidClaim,
        TokenError::Revoked,
        TokenError::RevocationUnavailable,
    ];

    /// Label used in metrics, logs and events.
    pub const fn label(self) -> &'static str {
        match self {
            TokenError::TooLarge => "too_large",
            TokenError::Malformed => "malformed",
            TokenError::InvalidJson => "invalid_json",
            TokenError::UnsupportedAlgorithm => "unsupported_algorithm",
            TokenError::AlgorithmMismatch => "algorithm_mismatch",
            TokenError::UntrustedKeyHeader => "untrusted_key_header",
            TokenError::CriticalHeader => "critical_header",
            TokenError::InvalidType => "invalid_type",
            TokenError::UnknownKey => "unknown_key",
            TokenError::KeysUnavailable => "keys_unavailable",
            TokenError::InvalidSignature => "invalid_signature",
            TokenError::UntrustedIssuer => "untrusted_issuer",
            TokenError::IssuerNotAccepted => "issuer_not_accepted",
            TokenError::InvalidAudience => "invalid_audience",
            TokenError::MissingExpiry => "missing_expiry",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::InvalidClaim => "invalid_claim",
            TokenError::Revoked => "revoked",
            TokenError::RevocationUnavailable => "revocation_unavailable",
        }
    }

    /// Text for `error_description`: plain ASCII without quotes or backslashes, as RFC 6750
    /// section 3 allows.
    pub const fn description(self) -> &'static str {
        match self {
            TokenError::TooLarge => "the token is too large",
            TokenError::Malformed => "the token is not a compact JWS",
            TokenError::InvalidJson => "the token header or claims are not a valid JSON object",
            TokenError::UnsupportedAlgorithm => "the signature algorithm is not supported",
            TokenError::AlgorithmMismatch => "the signature algorithm does not match the key",
            TokenError::UntrustedKeyHeader => "key references in the token header are not accepted",
            TokenError::CriticalHeader => "the token has critical header parameters",
            TokenError::InvalidType => "the token type is not at+jwt",
            TokenError::UnknownKey => "the signing key is unknown",
            TokenError::KeysUnavailable => "the issuer keys are unavailable",
            TokenError::InvalidSignature => "the signature is invalid",
            TokenError::UntrustedIssuer => "the issuer is not trusted",
            TokenError::IssuerNotAccepted => "the issuer is not accepted for this resource",
            TokenError::InvalidAudience => "the audience is not this resource",
            TokenError::MissingExpiry => "the token has no expiry",
            TokenError::Expired => "the token has expired",
            TokenError::NotYetValid => "the token is not valid yet",
            TokenError::InvalidClaim => "a claim has an invalid type or value",
            TokenError::Revoked => "the token has been revoked",
            TokenError::RevocationUnavailable => "the revocation status is unavailable",
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

impl std::error::Error for TokenError {}
