//! Checks of the registered claims, and the verified token they yield.

use serde_json::{Map, Value};

use super::error::TokenError;

/// What the proxy needs from an issuer to check claims.
#[derive(Clone, Copy, Debug)]
pub struct ClaimRules<'a> {
    /// The exact `iss` value.
    pub issuer: &'a str,
    /// This API's names; `aud` must contain one.
    pub audiences: &'a [String],
    /// Clock leeway in seconds.
    pub leeway_seconds: u64,
}

/// A token whose signature and claims were checked.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedToken {
    /// `iss`.
    pub issuer: String,
    /// `sub`, if present.
    pub subject: Option<String>,
    /// `client_id` (RFC 9068), if present.
    pub client_id: Option<String>,
    /// The space-separated `scope` claim, split.
    pub scopes: Vec<String>,
    /// `jti`, if present: the key of revocation checks.
    pub jti: Option<String>,
    /// `exp` in seconds since the Unix epoch.
    pub expires_at: f64,
    /// The issuer's leeway, applied again when the token is served from the cache.
    pub leeway_seconds: u64,
    /// The `kid` of the key that verified the token, so a cached token dies with its key.
    pub kid: String,
}

impl VerifiedToken {
    /// Returns whether the token is expired at `now` (seconds since the Unix epoch), leeway
    /// included.
    pub fn is_expired_at(&self, now: f64) -> bool {
        now > self.expires_at + self.leeway_seconds as f64
    }

    /// Returns whether the token carries every scope in `required`.
    pub fn has_scopes(&self, required: &[String]) -> bool {
        required
            .iter()
            .all(|scope| self.scopes.iter().any(|granted| granted == scope))
    }
}

/// Checks the claims of a token whose signature verified, at `now` seconds since the Unix
/// epoch.
///
/// # Errors
///
/// The [`TokenError`] of the first rule that fails: `iss` exact, `aud` present and naming this
/// API, `exp` present and not past, `nbf` and `iat` not in the future, and each registered claim
/// of its JSON type.
pub fn check_claims(
    claims: &Map<String, Value>,
    rules: ClaimRules<'_>,
    kid: &str,
    now: f64,
) -> Result<VerifiedToken, TokenError> {
    match claims.get("iss") {
        Some(Value::String(issuer)) if issuer == rules.issuer => {}
        Some(Value::String(_)) | None => return Err(TokenError::UntrustedIssuer),
        Some(_) => return Err(TokenError::InvalidClaim),
    }
    check_audience(claims.get("aud"), rules.audiences)?;

    let leeway = rules.leeway_seconds as f64;
    let expires_at = match claims.get("exp") {
        None => return Err(TokenError::MissingExpiry),
        Some(value) => numeric_date(value)?,
    };
    if now > expires_at + leeway {
        return Err(TokenError::Expired);
    }
    for name in ["nbf", "iat"] {
        if let Some(value) = claims.get(name)
            && numeric_date(value)? > now + leeway
        {
            return Err(TokenError::NotYetValid);
        }
    }

    let scopes = match optional_string(claims, "scope")? {
        Some(scope) => scope.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        None => Vec::new(),
    };
    Ok(VerifiedToken {
        issuer: rules.issuer.to_owned(),
        subject: optional_string(claims, "sub")?.map(str::to_owned),
        client_id: optional_string(claims, "client_id")?.map(str::to_owned),
        scopes,
        jti: optional_string(claims, "jti")?.map(str::to_owned),
        expires_at,
        leeway_seconds: rules.leeway_seconds,
        kid: kid.to_owned(),
    })
}

fn check_audience(aud: Option<&Value>, accepted: &[String]) -> Result<(), TokenError> {
    let names_this_api = |name: &str| accepted.iter().any(|audience| audience == name);
    match aud {
        None => Err(TokenError::InvalidAudience),
        Some(Value::String(name)) if names_this_api(name) => Ok(()),
        Some(Value::String(_)) => Err(TokenError::InvalidAudience),
        Some(Value::Array(names)) => {
            let mut matched = false;
            for name in names {
                let Value::String(name) = name else {
                    return Err(TokenError::InvalidClaim);
                };
                matched |= names_this_api(name);
            }
            if matched {
                Ok(())
            } else {
                Err(TokenError::InvalidAudience)
            }
        }
        Some(_) => Err(TokenError::InvalidClaim),
    }
}

/// Reads a NumericDate (RFC 7519 section 2): a JSON number of seconds, not negative.
fn numeric_date(value: &Value) -> Result<f64, TokenError> {
    match value.as_f64() {
        Some(seconds) if seconds >= 0.0 => Ok(seconds),
        _ => Err(TokenError::InvalidClaim),
    }
}

fn optional_string<'a>(
    claims: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value)),
        Some(_) => Err(TokenError::InvalidClaim),
    }
}
