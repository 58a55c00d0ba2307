//! The `[oauth]` config section: the built-in authorization server.

use std::fmt;

use serde::Deserialize;

use super::storage::ClientRecord;
use crate::config::MAX_DURATION_SECONDS;

/// Maximum lifetime of an authorization code: 10 minutes, as RFC 6749 section 4.1.2
/// recommends.
pub const MAX_CODE_SECONDS: u64 = 600;

/// Grant types the token endpoint supports.
pub const GRANT_TYPES: [&str; 3] = ["authorization_code", "refresh_token", "client_credentials"];

/// `[oauth]` section.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthConfig {
    /// Whether the agent serves the authorization server on the proxy listener.
    pub enabled: bool,
    /// Issuer identifier: the `https` (or, for loopback only, `http`) URL clients reach the
    /// proxy at, without query or fragment. Endpoint URLs are built from it. Required when
    /// `enabled` is true.
    pub issuer: String,
    /// Path prefix of the endpoints on the proxy listener, starting and ending with `/`.
    pub path_prefix: String,
    /// Audience of access tokens when the request has no RFC 8707 `resource` parameter.
    /// Defaults to the issuer.
    pub default_audience: Option<String>,
    /// Resource indicators (RFC 8707) a request may name. Empty accepts any absolute URI.
    pub resources: Vec<String>,
    /// Lifetime of access tokens in seconds.
    pub access_token_seconds: u64,
    /// Lifetime of authorization codes in seconds, at most 600.
    pub code_seconds: u64,
    /// Time in seconds after which an unused refresh token expires.
    pub refresh_idle_seconds: u64,
    /// Time in seconds after the grant after which every refresh token of the grant expires.
    pub refresh_absolute_seconds: u64,
    /// Time in seconds a user has to sign in after the authorization request.
    pub login_seconds: u64,
    /// Clients declared in the file. They are written to the store at start, replacing stored
    /// clients of the same `client_id`.
    pub clients: Vec<ClientConfig>,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            issuer: String::new(),
            path_prefix: "/oauth2/".to_owned(),
            default_audience: None,
            resources: Vec::new(),
            access_token_seconds: 15 * 60,
            code_seconds: 60,
            refresh_idle_seconds: 14 * 24 * 3600,
            refresh_absolute_seconds: 90 * 24 * 3600,
            login_seconds: 10 * 60,
            clients: Vec::new(),
        }
    }
}

/// One `[[oauth.clients]]` entry.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// `client_id`.
    pub client_id: String,
    /// SHA-256 of the client secret as 64 hex digits (`printf %s "$SECRET" | sha256sum`).
    /// Without it the client is public: it cannot authenticate and cannot use
    /// `client_credentials`.
    #[serde(default)]
    pub secret_sha256: Option<String>,
    /// Redirect URIs, compared by exact string. For a loopback IP redirect
    /// (`http://127.0.0.1/...` or `http://[::1]/...`) any port matches.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Allowed grant types; by default `authorization_code` and `refresh_token`.
    #[serde(default = "default_grant_types")]
    pub grant_types: Vec<String>,
    /// Scopes the client may request.
    #[serde(default)]
    pub scopes: Vec<String>,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("client_id", &self.client_id)
            .field("confidential", &self.secret_sha256.is_some())
            .field("redirect_uris", &self.redirect_uris)
            .field("grant_types", &self.grant_types)
            .field("scopes", &self.scopes)
            .finish()
    }
}

fn default_grant_types() -> Vec<String> {
    vec!["authorization_code".to_owned(), "refresh_token".to_owned()]
}

impl ClientConfig {
    /// Returns the record stored for this client.
    pub fn to_record(&self) -> ClientRecord {
        ClientRecord {
            client_id: self.client_id.clone(),
            secret_sha256: self
                .secret_sha256
                .as_ref()
                .map(|hex| hex.to_ascii_lowercase()),
            redirect_uris: self.redirect_uris.clone(),
            grant_types: self.grant_types.clone(),
            scopes: self.scopes.clone(),
        }
    }
}

impl OAuthConfig {
    /// Returns the issuer without a trailing `/`, the base of every endpoint URL.
    pub fn issuer_base(&self) -> &str {
        self.issuer.trim_end_matches('/')
    }

    /// Returns the audience of tokens requested without `resource`.
    pub fn default_audience(&self) -> &str {
        self.default_audience.as_deref().unwrap_or(&self.issuer)
    }

    /// Checks the section. Errors name the key.
    ///
    /// # Errors
    ///
    /// The dotted key name and the problem.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.enabled {
            return Ok(());
        }
        validate_issuer(&self.issuer)?;
        if !self.path_prefix.starts_with('/')
            || !self.path_prefix.ends_with('/')
            || self.path_prefix.len() < 3
        {
            return Err((
                "oauth.path_prefix",
                format!(
                    "must start and end with `/` and name a path, such as `/oauth2/`, got `{}`",
                    self.path_prefix
                ),
            ));
        }
        for (value, key) in [
            (self.access_token_seconds, "oauth.access_token_seconds"),
            (self.refresh_idle_seconds, "oauth.refresh_idle_seconds"),
            (
                self.refresh_absolute_seconds,
                "oauth.refresh_absolute_seconds",
            ),
            (self.login_seconds, "oauth.login_seconds"),
        ] {
            if value == 0 || value > MAX_DURATION_SECONDS {
                return Err((
                    key,
                    format!("must be between 1 and {MAX_DURATION_SECONDS}, got {value}"),
                ));
            }
        }
        if self.code_seconds == 0 || self.code_seconds > MAX_CODE_SECONDS {
            return Err((
                "oauth.code_seconds",
                format!(
                    "must be between 1 and {MAX_CODE_SECONDS}, got {}",
                    self.code_seconds
                ),
            ));
        }
        for resource in &self.resources {
            if !is_absolute_uri(resource) {
                return Err((
                    "oauth.resources",
                    format!("`{resource}` is not an absolute URI without a fragment"),
                ));
            }
        }

        let mut ids = std::collections::HashSet::new();
        for client in &self.clients {
            validate_client(client)?;
            if !ids.insert(client.client_id.as_str()) {
                return Err((
                    "oauth.clients",
                    format!("declares client `{}` twice", client.client_id),
                ));
            }
        }
        Ok(())
    }
}

fn validate_issuer(issuer: &str) -> Result<(), (&'static str, String)> {
    let problem = if issuer.is_empty() {
        Some(
            "is missing: set the URL clients reach the proxy at, such as `https://api.example.com`",
        )
    } else if issuer.contains(['?', '#']) {
        Some("must not contain a query or a fragment")
    } else if let Some(rest) = issuer.strip_prefix("http://") {
        let host = rest.split(['/', ':']).next().unwrap_or_default();
        let loopback = host == "localhost" || host.starts_with("127.") || rest.starts_with("[::1]");
        (!loopback).then_some("must use https, except on a loopback host")
    } else if issuer.starts_with("https://") {
        None
    } else {
        Some("must be an https URL")
    };
    match problem {
        Some(problem) => Err(("oauth.issuer", format!("{problem}, got `{issuer}`"))),
        None => Ok(()),
    }
}

fn validate_client(client: &ClientConfig) -> Result<(), (&'static str, String)> {
    let id = &client.client_id;
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_graphic()) {
        return Err((
            "oauth.clients.client_id",
            format!("`{id}` must be non-empty printable ASCII"),
        ));
    }
    if let Some(hash) = &client.secret_sha256
        && (hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return Err((
            "oauth.clients.secret_sha256",
            format!("of client `{id}` must be 64 hex digits (printf %s \"$SECRET\" | sha256sum)"),
        ));
    }
    for grant in &client.grant_types {
        if !GRANT_TYPES.contains(&grant.as_str()) {
            return Err((
                "oauth.clients.grant_types",
                format!(
                    "of client `{id}` names unknown grant type `{grant}`; known: {}",
                    GRANT_TYPES.join(", ")
                ),
            ));
        }
    }
    if client
        .grant_types
        .iter()
        .any(|grant| grant == "client_credentials")
        && client.secret_sha256.is_none()
    {
        return Err((
            "oauth.clients.grant_types",
            format!("of client `{id}` allows client_credentials, which needs secret_sha256"),
        ));
    }
    if client
        .grant_types
        .iter()
        .any(|grant| grant == "authorization_code")
        && client.redirect_uris.is_empty()
    {
        return Err((
            "oauth.clients.redirect_uris",
            format!("of client `{id}` is empty, but authorization_code needs at least one"),
        ));
    }
    for uri in &client.redirect_uris {
        if !is_absolute_uri(uri) {
            return Err((
                "oauth.clients.redirect_uris",
                format!(
                    "of client `{id}` contains `{uri}`, which is not an absolute URI without a fragment"
                ),
            ));
        }
    }
    Ok(())
}

/// Returns whether `value` is an absolute URI (`scheme:rest`) without a fragment or spaces.
pub fn is_absolute_uri(value: &str) -> bool {
    let Some((scheme, rest)) = value.split_once(':') else {
        return false;
    };
    let scheme_valid = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    scheme_valid
        && !rest.is_empty()
        && !value.contains('#')
        && value.chars().all(|c| c.is_ascii_graphic())
}
