//! The authorization server: its state, request routing and the operations of the admin API.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode};

use super::OAuthConfig;
use super::authorize::PendingRequests;
use super::http::{OAuthRequest, OAuthResponse};
use super::keys::{KeyError, KeyRecord, SigningKeys};
use super::secrets::{self, SecretError};
use super::storage::{OAuthStorage, StorageError, UserRecord};
use crate::events::{EventSinks, SecurityEvent};

/// Interval between two purges of expired codes, tokens and revocations, in milliseconds.
const PURGE_INTERVAL_MS: u64 = 60_000;

/// Maximum user name length in bytes.
pub const MAX_USERNAME_BYTES: usize = 128;
/// Maximum password length in bytes. Argon2 accepts longer passwords, but they only add
/// hashing time.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Time added to the access-token lifetime before a retired signing key is pruned, so that a
/// verifier with clock skew still finds the key of a token it accepts.
const KEY_RETENTION_LEEWAY_MS: u64 = 5 * 60 * 1000;

/// Errors from starting the authorization server or from its admin operations.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The signing keys could not be loaded or created.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// A password could not be hashed.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A user name is empty, too long or not printable.
    #[error(
        "invalid user name `{username}`: use 1 to {MAX_USERNAME_BYTES} printable characters \
         without spaces"
    )]
    InvalidUsername { username: String },
    /// A password is empty or too long.
    #[error("invalid password: use 1 to {MAX_PASSWORD_BYTES} bytes")]
    InvalidPassword,
}

/// The built-in authorization server.
#[derive(Debug)]
pub struct AuthorizationServer {
    pub(super) config: OAuthConfig,
    pub(super) storage: Arc<dyn OAuthStorage>,
    pub(super) keys: Arc<SigningKeys>,
    pub(super) pending: PendingRequests,
    pub(super) events: EventSinks,
    last_purge_ms: AtomicU64,
}

/// Returns the current time in milliseconds since the Unix epoch.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

impl AuthorizationServer {
    /// Loads the signing keys from `storage`, creating and storing a first pair when there are
    /// none, and writes the clients declared in `config` to the storage.
    ///
    /// # Errors
    ///
    /// [`OAuthError`] when the storage fails or the stored keys are invalid.
    pub fn start(
        config: OAuthConfig,
        storage: Arc<dyn OAuthStorage>,
        events: EventSinks,
    ) -> Result<Self, OAuthError> {
        let now = now_ms();
        let records = storage.load_keys()?;
        let keys = if records.is_empty() {
            let keys = SigningKeys::generate(now)?;
            storage.replace_keys(&keys.records())?;
            tracing::info!(kid = %keys.active_kid(), "created the first oauth signing keys");
            keys
        } else {
            SigningKeys::from_records(records, now)?
        };

        for client in &config.clients {
            storage.put_client(&client.to_record())?;
        }
        Ok(Self {
            pending: PendingRequests::new(config.login_seconds.saturating_mul(1000)),
            config,
            storage,
            keys: Arc::new(keys),
            events,
            last_purge_ms: AtomicU64::new(now),
        })
    }

    /// Returns the signing keys, for the verifier of access tokens.
    pub fn keys(&self) -> &Arc<SigningKeys> {
        &self.keys
    }

    /// Returns the config.
    pub fn config(&self) -> &OAuthConfig {
        &self.config
    }

    /// Returns whether the access token `jti` was revoked. A storage failure counts as
    /// revoked, so verification fails closed.
    pub fn is_access_token_revoked(&self, jti: &str) -> bool {
        self.storage.is_access_revoked(jti).unwrap_or_else(|error| {
            tracing::error!(error = %crate::telemetry::ErrorChain(&error), "failed to read a revocation");
            true
        })
    }

    /// Returns whether `path` belongs to the authorization server.
    pub fn serves(&self, path: &str) -> bool {
        path.starts_with(&self.config.path_prefix) || path == self.metadata_path()
    }

    /// Path of the RFC 8414 metadata document: the well-known prefix, then the issuer's path.
    pub fn metadata_path(&self) -> String {
        let issuer = self.config.issuer_base();
        let after_scheme = issuer.split_once("://").map_or(issuer, |(_, rest)| rest);
        let issuer_path = after_scheme
            .find('/')
            .map_or("", |index| &after_scheme[index..]);
        format!("/.well-known/oauth-authorization-server{issuer_path}")
    }

    /// Returns the URL of the endpoint `name` under the prefix.
    pub(super) fn endpoint_url(&self, name: &str) -> String {
        format!(
            "{}{}{name}",
            self.config.issuer_base(),
            self.config.path_prefix
        )
    }

    /// Handles one request to the authorization server. Blocking: runs Argon2 and store
    /// transactions, so async callers use `spawn_blocking`.
    pub fn handle(&self, request: &OAuthRequest) -> OAuthResponse {
        self.purge_if_due();

        if request.path == self.metadata_path() {
            return self.only_get(request, Self::metadata);
        }
        let Some(endpoint) = request.path.strip_prefix(&self.config.path_prefix) else {
            return OAuthResponse::oauth_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint",
            );
        };
        match endpoint {
            "authorize" => self.only_get(request, Self::authorize),
            "login" => self.only_post(request, Self::login),
            "token" => self.only_post(request, Self::token),
            "revoke" => self.only_post(request, Self::revoke),
            "introspect" => self.only_post(request, Self::introspect),
            "jwks" => self.only_get(request, |server, _| {
                let mut response = OAuthResponse::json(StatusCode::OK, &server.keys.public_jwks());
                response.headers.insert(
                    http::header::CACHE_CONTROL,
                    http::HeaderValue::from_static("max-age=60"),
                );
                response
            }),
            _ => OAuthResponse::oauth_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
        }
    }

    fn only_get(
        &self,
        request: &OAuthRequest,
        handler: impl FnOnce(&Self, &OAuthRequest) -> OAuthResponse,
    ) -> OAuthResponse {
        if request.method == Method::GET || request.method == Method::HEAD {
            handler(self, request)
        } else {
            OAuthResponse::method_not_allowed("GET")
        }
    }

    fn only_post(
        &self,
        request: &OAuthRequest,
        handler: impl FnOnce(&Self, &OAuthRequest) -> OAuthResponse,
    ) -> OAuthResponse {
        if request.method == Method::POST {
            handler(self, request)
        } else {
            OAuthResponse::method_not_allowed("POST")
        }
    }

    fn metadata(&self, _request: &OAuthRequest) -> OAuthResponse {
        let document = serde_json::json!({
            "issuer": self.config.issuer,
            "authorization_endpoint": self.endpoint_url("authorize"),
            "token_endpoint": self.endpoint_url("token"),
            "jwks_uri": self.endpoint_url("jwks"),
            "revocation_endpoint": self.endpoint_url("revoke"),
            "introspection_endpoint": self.endpoint_url("introspect"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": super::config::GRANT_TYPES,
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported":
                ["client_secret_basic", "client_secret_post", "none"],
            "revocation_endpoint_auth_methods_supported":
                ["client_secret_basic", "client_secret_post", "none"],
            "introspection_endpoint_auth_methods_supported":
                ["client_secret_basic", "client_secret_post"],
            "authorization_response_iss_parameter_supported": true,
        });
        OAuthResponse::json(StatusCode::OK, &document)
    }

    pub(super) fn emit(&self, event: SecurityEvent) {
        if !self.events.is_empty() {
            self.events.emit(&event);
        }
    }

    fn purge_if_due(&self) {
        let now = now_ms();
        let last = self.last_purge_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < PURGE_INTERVAL_MS
            || self
                .last_purge_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.pending.purge(now);
        match self.storage.purge_expired(now) {
            Ok(removed) if removed > 0 => tracing::debug!(removed, "expired oauth records purged"),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(error = %crate::telemetry::ErrorChain(&error), "failed to purge expired oauth records")
            }
        }
    }

    /// Adds a user, or replaces the password of an existing one.
    ///
    /// # Errors
    ///
    /// [`OAuthError`] when the name or password is invalid or the storage fails.
    pub fn add_user(&self, username: &str, password: &str) -> Result<(), OAuthError> {
        if !is_valid_username(username) {
            return Err(OAuthError::InvalidUsername {
                username: username.chars().take(MAX_USERNAME_BYTES).collect(),
            });
        }
        if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
            return Err(OAuthError::InvalidPassword);
        }
        let user = UserRecord {
            username: username.to_owned(),
            password_hash: secrets::hash_password(password)?,
            created_at_ms: now_ms(),
        };
        self.storage.put_user(&user)?;
        Ok(())
    }

    /// Removes a user. Returns whether there was one.
    ///
    /// # Errors
    ///
    /// [`OAuthError::Storage`] when the storage fails.
    pub fn remove_user(&self, username: &str) -> Result<bool, OAuthError> {
        Ok(self.storage.remove_user(username)?)
    }

    /// Returns every user name with its creation time in milliseconds since the Unix epoch.
    ///
    /// # Errors
    ///
    /// [`OAuthError::Storage`] when the storage fails.
    pub fn list_users(&self) -> Result<Vec<(String, u64)>, OAuthError> {
        Ok(self
            .storage
            .list_users()?
            .into_iter()
            .map(|user| (user.username, user.created_at_ms))
            .collect())
    }

    /// Returns the signing keys, private parts included: callers show only public fields.
    pub fn list_keys(&self) -> Vec<KeyRecord> {
        self.keys.records()
    }

    /// Rotates the signing keys: the published next key starts signing, a new next key is
    /// published, and the previous key stays published until its tokens have expired. The new
    /// keys are stored before they are used.
    ///
    /// # Errors
    ///
    /// [`OAuthError`] when a key cannot be created or the storage fails; the keys in use are
    /// then unchanged.
    pub fn rotate_keys(&self) -> Result<Vec<KeyRecord>, OAuthError> {
        let now = now_ms();
        let retain_ms = self
            .config
            .access_token_seconds
            .saturating_mul(1000)
            .saturating_add(KEY_RETENTION_LEEWAY_MS);
        let records = self.keys.rotated_records(now, retain_ms)?;
        self.storage.replace_keys(&records)?;
        self.keys.replace(records, now)?;
        tracing::info!(kid = %self.keys.active_kid(), "oauth signing keys rotated");
        Ok(self.keys.records())
    }
}

/// Returns whether `username` is 1 to [`MAX_USERNAME_BYTES`] printable characters without
/// whitespace or control characters.
pub fn is_valid_username(username: &str) -> bool {
    !username.is_empty()
        && username.len() <= MAX_USERNAME_BYTES
        && username
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control())
}
