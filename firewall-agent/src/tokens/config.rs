//! The `[tokens]` section (trusted issuers) and the `auth` table of a route.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::config::MAX_DURATION_SECONDS;

/// Default maximum length of a token, in bytes.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Default number of verified tokens the cache keeps.
pub const DEFAULT_CACHE_ENTRIES: usize = 10_000;
/// Default clock leeway for `exp`, `nbf` and `iat`, in seconds.
pub const DEFAULT_LEEWAY_SECONDS: u64 = 60;
/// Default time a fetched JWKS is used before the background task fetches it again.
pub const DEFAULT_JWKS_TTL_SECONDS: u64 = 300;
/// Default minimum time between two fetches of one JWKS that an unknown `kid` or a failed fetch
/// triggers.
pub const DEFAULT_JWKS_COOLDOWN_SECONDS: u64 = 30;

/// Largest accepted leeway: a larger one would make `exp` meaningless for short-lived tokens.
const MAX_LEEWAY_SECONDS: u64 = 600;

/// A JWS signature algorithm that the proxy can verify. HMAC algorithms and `none` are not
/// among them, so a token using them is rejected before any key is looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
pub enum Algorithm {
    /// ECDSA with P-256 and SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PSS with SHA-256 and MGF1 with SHA-256.
    PS256,
    /// Ed25519.
    EdDSA,
}

impl Algorithm {
    /// Every algorithm, in label order.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::ES256,
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::EdDSA,
    ];

    /// Returns the algorithm with the JOSE name `name`, if it is one of ours.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|algorithm| algorithm.name() == name)
    }

    /// Returns the JOSE name, such as `ES256`.
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::ES256 => "ES256",
            Algorithm::RS256 => "RS256",
            Algorithm::PS256 => "PS256",
            Algorithm::EdDSA => "EdDSA",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `[tokens]` section: how the proxy checks JWT access tokens.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokensConfig {
    /// Whether a route without an `auth` table needs a token.
    pub default_required: bool,
    /// Maximum length of a token in bytes, checked before anything is decoded.
    pub max_token_bytes: usize,
    /// Maximum number of verified tokens kept so that a repeated token is not verified again;
    /// 0 turns the cache off.
    pub cache_entries: usize,
    /// Trusted issuers, `[[tokens.issuers]]`.
    pub issuers: Vec<IssuerConfig>,
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            default_required: false,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            cache_entries: DEFAULT_CACHE_ENTRIES,
            issuers: Vec::new(),
        }
    }
}

/// One trusted issuer, `[[tokens.issuers]]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The `iss` value, compared byte for byte.
    pub issuer: String,
    /// Names of this API: a token's `aud` must contain one of them.
    pub audiences: Vec<String>,
    /// URL of the issuer's JWKS, `http://` or `https://`. Keys are fetched only from here, never
    /// from a URL in a token.
    pub jwks_url: String,
    /// Algorithms accepted from this issuer.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<Algorithm>,
    /// Whether `typ: JWT` is accepted besides `at+jwt`, for providers that do not send
    /// `at+jwt`.
    #[serde(default)]
    pub accept_typ_jwt: bool,
    /// Clock leeway in seconds for `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway_seconds")]
    pub leeway_seconds: u64,
    /// Time in seconds a fetched JWKS is used before it is fetched again in the background.
    #[serde(default = "default_jwks_ttl_seconds")]
    pub jwks_ttl_seconds: u64,
    /// Minimum time in seconds between two fetches triggered by an unknown `kid` or by a
    /// failed fetch.
    #[serde(default = "default_jwks_cooldown_seconds")]
    pub jwks_cooldown_seconds: u64,
}

fn default_algorithms() -> Vec<Algorithm> {
    vec![Algorithm::ES256]
}

fn default_leeway_seconds() -> u64 {
    DEFAULT_LEEWAY_SECONDS
}

fn default_jwks_ttl_seconds() -> u64 {
    DEFAULT_JWKS_TTL_SECONDS
}

fn default_jwks_cooldown_seconds() -> u64 {
    DEFAULT_JWKS_COOLDOWN_SECONDS
}

impl IssuerConfig {
    /// Returns the clock leeway.
    pub fn leeway(&self) -> Duration {
        Duration::from_secs(self.leeway_seconds)
    }

    /// Returns the JWKS time to live.
    pub fn jwks_ttl(&self) -> Duration {
        Duration::from_secs(self.jwks_ttl_seconds)
    }

    /// Returns the minimum time between two triggered JWKS fetches.
    pub fn jwks_cooldown(&self) -> Duration {
        Duration::from_secs(self.jwks_cooldown_seconds)
    }
}

/// `auth` table of a route: whether it needs a token and what the token must carry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAuthConfig {
    /// Whether a request without a token is rejected. A token that is sent is verified either
    /// way, so an invalid token is never passed on.
    #[serde(default = "default_required")]
    pub required: bool,
    /// Scopes the token's `scope` claim must all contain.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Issuers accepted on this route; empty accepts every issuer in `[tokens]`.
    #[serde(default)]
    pub issuers: Vec<String>,
}

fn default_required() -> bool {
    true
}

impl TokensConfig {
    /// Checks the section.
    ///
    /// # Errors
    ///
    /// The dotted key and the problem, for the first invalid value.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_token_bytes < 64 {
            return Err(("tokens.max_token_bytes", "must be at least 64".into()));
        }

        let mut seen = HashSet::new();
        for issuer in &self.issuers {
            validate_issuer(issuer)?;
            if !seen.insert(issuer.issuer.as_str()) {
                return Err((
                    "tokens.issuers.issuer",
                    format!("lists `{}` twice", issuer.issuer),
                ));
            }
        }
        Ok(())
    }

    /// Checks a route's `auth` table against the configured issuers.
    ///
    /// # Errors
    ///
    /// The dotted key and the problem when the table names an unknown issuer or an invalid
    /// scope, or requires a token while no issuer is configured.
    pub fn validate_route(&self, auth: &RouteAuthConfig) -> Result<(), (&'static str, String)> {
        for issuer in &auth.issuers {
            if !self.issuers.iter().any(|known| &known.issuer == issuer) {
                return Err((
                    "routes.auth.issuers",
                    format!("names `{issuer}`, which is not in [[tokens.issuers]]"),
                ));
            }
        }
        for scope in &auth.scopes {
            if !is_scope_token(scope) {
                return Err((
                    "routes.auth.scopes",
                    format!("contains `{scope}`, which is not a valid scope name"),
                ));
            }
        }
        if auth.required && self.issuers.is_empty() {
            return Err((
                "routes.auth.required",
                "needs at least one [[tokens.issuers]] entry".into(),
            ));
        }
        Ok(())
    }
}

fn validate_issuer(issuer: &IssuerConfig) -> Result<(), (&'static str, String)> {
    if issuer.issuer.is_empty() {
        return Err(("tokens.issuers.issuer", "must not be empty".into()));
    }
    if issuer.audiences.is_empty() || issuer.audiences.iter().any(String::is_empty) {
        return Err((
            "tokens.issuers.audiences",
            format!(
                "must list at least one non-empty audience for issuer `{}`",
                issuer.issuer
            ),
        ));
    }
    validate_jwks_url(&issuer.jwks_url)
        .map_err(|problem| ("tokens.issuers.jwks_url", problem))?;
    if issuer.algorithms.is_empty() {
        return Err((
            "tokens.issuers.algorithms",
            format!("must list at least one algorithm for issuer `{}`", issuer.issuer),
        ));
    }
    if issuer.leeway_seconds > MAX_LEEWAY_SECONDS {
        return Err((
            "tokens.issuers.leeway_seconds",
            format!("must be at most {MAX_LEEWAY_SECONDS}"),
        ));
    }
    for (value, key) in [
        (issuer.jwks_ttl_seconds, "tokens.issuers.jwks_ttl_seconds"),
        (
            issuer.jwks_cooldown_seconds,
            "tokens.issuers.jwks_cooldown_seconds",
        ),
    ] {
        if value == 0 || value > MAX_DURATION_SECONDS {
            return Err((key, format!("must be between 1 and {MAX_DURATION_SECONDS}")));
        }
    }
    Ok(())
}

/// Checks that `url` is an absolute `http` or `https` URL with a host.
pub(crate) fn validate_jwks_url(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|error| format!("`{url}` is not a valid URL: {error}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("`{url}` must start with http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{url}` has no host"));
    }
    Ok(uri)
}

/// Whether `scope` is a scope token as RFC 6749 section 3.3 defines it: printable ASCII
/// without space, `"` or `\`.
pub(crate) fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}
