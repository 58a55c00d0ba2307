//! The token endpoint: client authentication and the `authorization_code`, `refresh_token`
//! and `client_credentials` grants.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::StatusCode;
use http::header::{self, HeaderValue};

use super::authorize::granted_scope;
use super::http::{OAuthRequest, OAuthResponse, Params, is_form};
use super::jwt::{AccessClaims, sign_access_token};
use super::secrets;
use super::server::{AuthorizationServer, now_ms};
use super::storage::{
    ClientRecord, CodeGrant, CodeRedemption, FamilyRecord, IssuedAccessToken, RefreshRecord,
    RefreshRotation, StorageError,
};
use crate::telemetry::ErrorChain;

/// A client that made a request to the token, revocation or introspection endpoint.
pub(super) struct AuthenticatedClient {
    pub(super) record: ClientRecord,
    /// Whether the client proved a secret; false for a public client.
    pub(super) confidential: bool,
}

/// An access token and, for grants that have one, a refresh token, ready to send.
struct IssuedTokens {
    access_token: String,
    access: IssuedAccessToken,
    scope: String,
    refresh_token: Option<String>,
}

fn invalid_request(description: &str) -> OAuthResponse {
    OAuthResponse::oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

fn invalid_grant(description: &str) -> OAuthResponse {
    OAuthResponse::oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

/// `401 invalid_client` with the `WWW-Authenticate` challenge that RFC 6749 section 5.2 requires.
pub(super) fn invalid_client() -> OAuthResponse {
    let mut response = OAuthResponse::oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "client authentication failed",
    );
    response.headers.insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"oauth\""),
    );
    response
}

pub(super) fn server_error(action: &str, error: &StorageError) -> OAuthResponse {
    tracing::error!(error = %ErrorChain(error), "oauth store failed to {action}");
    OAuthResponse::oauth_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "the authorization server cannot reach its store; try again later",
    )
}

/// Decodes one `application/x-www-form-urlencoded` component, as RFC 6749 section 2.3.1
/// requires for the two halves of `client_secret_basic`.
fn form_decode(text: &str) -> String {
    let mut decoded = String::new();
    for (name, value) in form_urlencoded::parse(text.as_bytes()) {
        decoded.push_str(&name);
        if !value.is_empty() {
            decoded.push('=');
            decoded.push_str(&value);
        }
    }
    decoded
}

/// Returns the client id and secret of an `Authorization: Basic` header, `Ok(None)` without
/// one, or `Err` when the header is malformed.
fn basic_credentials(request: &OAuthRequest) -> Result<Option<(String, String)>, ()> {
    let Some(value) = request.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| ())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(());
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| ())?;
    let decoded = String::from_utf8(decoded).map_err(|_| ())?;
    let (id, secret) = decoded.split_once(':').ok_or(())?;
    Ok(Some((form_decode(id), form_decode(secret))))
}

impl AuthorizationServer {
    /// Authenticates the client of a request by `client_secret_basic` or `client_secret_post`,
    /// or identifies a public client by `client_id`. Using both methods at once, an unknown
    /// client, a wrong secret, or a confidential client without its secret fails.
    pub(super) fn authenticate_client(
        &self,
        request: &OAuthRequest,
        params: &Params,
    ) -> Result<AuthenticatedClient, OAuthResponse> {
        let basic = basic_credentials(request).map_err(|()| invalid_client())?;
        let (client_id, secret) = match (basic, params.get("client_secret")) {
            (Some(_), Some(_)) => {
                return Err(invalid_request(
                    "use one client authentication method, not two",
                ));
            }
            (Some((id, secret)), None) => {
                if params.get("client_id").is_some_and(|body_id| body_id != id) {
                    return Err(invalid_request(
                        "client_id differs from the authenticated client",
                    ));
                }
                (id, Some(secret))
            }
            (None, Some(secret)) => {
                let Some(id) = params.get("client_id") else {
                    return Err(invalid_request("client_id is missing"));
                };
                (id.to_owned(), Some(secret.to_owned()))
            }
            (None, None) => match params.get("client_id") {
                Some(id) => (id.to_owned(), None),
                None => return Err(invalid_client()),
            },
        };

        let client = match self.storage.get_client(&client_id) {
            Ok(client) => client,
            Err(error) => return Err(server_error("read a client", &error)),
        };
        match (client, secret) {
            (Some(client), Some(secret)) => match &client.secret_sha256 {
                Some(stored) if secrets::secret_matches(stored, &secret) => {
                    Ok(AuthenticatedClient {
                        record: client,
                        confidential: true,
                    })
                }
                _ => {
                    tracing::info!(client_id = %client_id, "client authentication failed");
                    Err(invalid_client())
                }
            },
            (Some(client), None) if !client.is_confidential() => Ok(AuthenticatedClient {
                record: client,
                confidential: false,
            }),
            _ => {
                tracing::info!(client_id = %client_id, "client authentication failed");
                Err(invalid_client())
            }
        }
    }

    /// Handles `POST {prefix}token`.
    pub(super) fn token(&self, request: &OAuthRequest) -> OAuthResponse {
        if !is_form(&request.headers) {
            return invalid_request("the body must be application/x-www-form-urlencoded");
        }
        if request.query.is_some() {
            return invalid_request("parameters must be sent in the body, not in the query");
        }
        let params = Params::parse(&request.body);
        if let Some(name) = params.first_repeated() {
            return invalid_request(&format!("parameter {name} is repeated"));
        }
        let client = match self.authenticate_client(request, &params) {
            Ok(client) => client,
            Err(response) => return response,
        };

        let grant_type = params.get("grant_type").unwrap_or_default();
        if !super::config::GRANT_TYPES.contains(&grant_type) {
            return OAuthResponse::oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant_type must be authorization_code, refresh_token or client_credentials",
            );
        }
        if !client.record.allows_grant(grant_type) {
            return OAuthResponse::oauth_error(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                &format!("the client may not use {grant_type}"),
            );
        }
        match grant_type {
            "authorization_code" => self.authorization_code_grant(&client, &params),
            "refresh_token" => self.refresh_token_grant(&client, &params),
            _ => self.client_credentials_grant(&client, &params),
        }
    }

    fn authorization_code_grant(
        &self,
        client: &AuthenticatedClient,
        params: &Params,
    ) -> OAuthResponse {
        let (Some(code), Some(redirect_uri), Some(verifier)) = (
            params.get("code"),
            params.get("redirect_uri"),
            params.get("code_verifier"),
        ) else {
            return invalid_request("code, redirect_uri and code_verifier are required");
        };
        let code_hash = secrets::sha256_hex(code);
        let now = now_ms();

        let record = match self.storage.consume_code(&code_hash, now) {
            Ok(CodeRedemption::Fresh(record)) => record,
            Ok(CodeRedemption::Replayed(record)) => {
                // The client authenticated above. A replay that also passes PKCE comes from
                // someone holding the code and its verifier, so the tokens already issued from
                // the code cannot be trusted.
                if record.client_id == client.record.client_id
                    && secrets::pkce_matches(verifier, &record.code_challenge)
                {
                    tracing::warn!(client_id = %record.client_id, "authorization code replayed: revoking its tokens");
                    match self.storage.mark_code_replayed(&code_hash) {
                        Ok(grant) => self.revoke_code_grant(grant.as_ref()),
                        Err(error) => return server_error("mark a code replayed", &error),
                    }
                }
                return invalid_grant("the code was already used");
            }
            Ok(CodeRedemption::Unknown) => return invalid_grant("the code is invalid or expired"),
            Err(error) => return server_error("consume a code", &error),
        };

        if record.client_id != client.record.client_id {
            return invalid_grant("the code was issued to another client");
        }
        if record.redirect_uri != redirect_uri {
            return invalid_grant("redirect_uri differs from the authorization request");
        }
        if !secrets::pkce_matches(verifier, &record.code_challenge) {
            return invalid_grant("code_verifier does not match the code_challenge");
        }
        if let Some(resource) = params.get("resource")
            && record.resource.as_deref() != Some(resource)
        {
            return OAuthResponse::oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                "resource differs from the authorization request",
            );
        }

        let with_refresh = client.record.allows_grant("refresh_token");
        let family = with_refresh.then(|| FamilyRecord {
            family_id: String::new(),
            client_id: record.client_id.clone(),
            subject: record.subject.clone(),
            scope: record.scope.clone(),
            resource: record.resource.clone(),
            expires_at_ms: now
                .saturating_add(self.config.refresh_absolute_seconds.saturating_mul(1000)),
            revoked: false,
            access_tokens: Vec::new(),
        });
        let (issued, family_id) = match self.issue(
            &record.subject,
            &record.client_id,
            &record.scope,
            record.resource.as_deref(),
            family,
        ) {
            Ok(issued) => issued,
            Err(response) => return response,
        };
        let grant = CodeGrant {
            family_id,
            access_jti: issued.access.jti.clone(),
            access_expires_at_ms: issued.access.expires_at_ms,
        };
        match self.storage.record_code_grant(&code_hash, &grant) {
            // A replay arrived while these tokens were issued: they are revoked before anyone
            // can use them, and the response still carries them, because the client did
            // redeem the code first.
            Ok(true) => self.revoke_code_grant(Some(&grant)),
            Ok(false) => {}
            Err(error) => return server_error("record the tokens of a code", &error),
        }
        self.token_response(&issued)
    }

    /// Revokes the tokens issued from a replayed code.
    fn revoke_code_grant(&self, grant: Option<&CodeGrant>) {
        let Some(grant) = grant else {
            return;
        };
        let access = IssuedAccessToken {
            jti: grant.access_jti.clone(),
            expires_at_ms: grant.access_expires_at_ms,
        };
        if let Err(error) = self.storage.revoke_access(&access) {
            tracing::error!(error = %ErrorChain(&error), "failed to revoke the access token of a replayed code");
        }
        if let Some(family_id) = &grant.family_id
            && let Err(error) = self.storage.revoke_family(family_id)
        {
            tracing::error!(error = %ErrorChain(&error), "failed to revoke the refresh tokens of a replayed code");
        }
    }

    fn refresh_token_grant(&self, client: &AuthenticatedClient, params: &Params) -> OAuthResponse {
        let Some(refresh_token) = params.get("refresh_token") else {
            return invalid_request("refresh_token is required");
        };
        let old_hash = secrets::sha256_hex(refresh_token);
        let now = now_ms();

        // Check the client and the scope before rotating, so that a request that fails them
        // leaves the token usable.
        match self.storage.find_refresh(&old_hash, now) {
            Ok(Some((_, family))) => {
                if family.client_id != client.record.client_id {
                    return invalid_grant("the refresh token was issued to another client");
                }
                if params
                    .get("resource")
                    .is_some_and(|resource| family.resource.as_deref() != Some(resource))
                {
                    return OAuthResponse::oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_target",
                        "resource differs from the grant",
                    );
                }
                let family_scopes: Vec<String> =
                    family.scope.split(' ').map(str::to_owned).collect();
                if params.get("scope").is_some()
                    && granted_scope(params.get("scope"), &family_scopes).is_none()
                {
                    return OAuthResponse::oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_scope",
                        "the requested scope is wider than the grant",
                    );
                }
            }
            Ok(None) => {}
            Err(error) => return server_error("read a refresh token", &error),
        }

        let Ok(new_token) = secrets::random_token() else {
            return OAuthResponse::oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "failed to create a token",
            );
        };
        let idle_expiry = now.saturating_add(self.config.refresh_idle_seconds.saturating_mul(1000));
        let family = match self.storage.rotate_refresh(
            &old_hash,
            &secrets::sha256_hex(&new_token),
            idle_expiry,
            now,
        ) {
            Ok(RefreshRotation::Rotated(family)) => family,
            Ok(RefreshRotation::Replayed { family_id }) => {
                tracing::warn!(client_id = %client.record.client_id, family_id = %family_id, "refresh token replayed: family revoked");
                return invalid_grant(
                    "the refresh token was already used; every token of its grant is revoked",
                );
            }
            Ok(RefreshRotation::Invalid) => {
                return invalid_grant("the refresh token is invalid, expired or revoked");
            }
            Err(error) => return server_error("rotate a refresh token", &error),
        };
        if family.client_id != client.record.client_id {
            // Only reachable when the token changed hands between the check and the rotation.
            return invalid_grant("the refresh token was issued to another client");
        }

        let family_scopes: Vec<String> = family.scope.split(' ').map(str::to_owned).collect();
        let scope = granted_scope(params.get("scope"), &family_scopes)
            .unwrap_or_else(|| family.scope.clone());
        let access = match self.issue_access(
            &family.subject,
            &family.client_id,
            &scope,
            family.resource.as_deref(),
        ) {
            Ok(access) => access,
            Err(response) => return response,
        };
        if let Err(error) = self
            .storage
            .record_family_access(&family.family_id, &access.1, now)
        {
            return server_error("record an access token", &error);
        }
        self.token_response(&IssuedTokens {
            access_token: access.0,
            access: access.1,
            scope,
            refresh_token: Some(new_token),
        })
    }

    fn client_credentials_grant(
        &self,
        client: &AuthenticatedClient,
        params: &Params,
    ) -> OAuthResponse {
        if !client.confidential {
            return OAuthResponse::oauth_error(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                "client_credentials needs a confidential client",
            );
        }
        let Some(scope) = granted_scope(params.get("scope"), &client.record.scopes) else {
            return OAuthResponse::oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                "the requested scope is not allowed for this client",
            );
        };
        let resource = params.get("resource");
        if let Some(resource) = resource
            && !self.resource_allowed(resource)
        {
            return OAuthResponse::oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                "the resource is not accepted by this server",
            );
        }
        let client_id = &client.record.client_id;
        match self.issue(client_id, client_id, &scope, resource, None) {
            Ok((issued, _)) => self.token_response(&issued),
            Err(response) => response,
        }
    }

    /// Signs an access token and, when `family` is given, starts that refresh-token family.
    /// Returns the tokens and the family's identifier.
    fn issue(
        &self,
        subject: &str,
        client_id: &str,
        scope: &str,
        resource: Option<&str>,
        family: Option<FamilyRecord>,
    ) -> Result<(IssuedTokens, Option<String>), OAuthResponse> {
        let (access_token, access) = self.issue_access(subject, client_id, scope, resource)?;
        let Some(mut family) = family else {
            let tokens = IssuedTokens {
                access_token,
                access,
                scope: scope.to_owned(),
                refresh_token: None,
            };
            return Ok((tokens, None));
        };

        let (Ok(family_id), Ok(refresh_token)) = (secrets::random_token(), secrets::random_token())
        else {
            return Err(OAuthResponse::oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "failed to create a token",
            ));
        };
        let now = now_ms();
        family.family_id = family_id.clone();
        family.access_tokens.push(access.clone());
        let token = RefreshRecord {
            family_id: family_id.clone(),
            expires_at_ms: now
                .saturating_add(self.config.refresh_idle_seconds.saturating_mul(1000))
                .min(family.expires_at_ms),
            rotated: false,
        };
        if let Err(error) =
            self.storage
                .create_family(&family, &secrets::sha256_hex(&refresh_token), &token)
        {
            return Err(server_error("store a refresh token", &error));
        }
        let tokens = IssuedTokens {
            access_token,
            access,
            scope: scope.to_owned(),
            refresh_token: Some(refresh_token),
        };
        Ok((tokens, Some(family_id)))
    }

    fn issue_access(
        &self,
        subject: &str,
        client_id: &str,
        scope: &str,
        resource: Option<&str>,
    ) -> Result<(String, IssuedAccessToken), OAuthResponse> {
        let failed = || {
            OAuthResponse::oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "failed to sign the access token",
            )
        };
        let jti = secrets::random_token().map_err(|_| failed())?;
        let iat = now_ms() / 1000;
        let exp = iat.saturating_add(self.config.access_token_seconds);
        let claims = AccessClaims {
            iss: self.config.issuer.clone(),
            sub: subject.to_owned(),
            aud: resource
                .unwrap_or(self.config.default_audience())
                .to_owned(),
            client_id: client_id.to_owned(),
            scope: scope.to_owned(),
            iat,
            exp,
            jti: jti.clone(),
        };
        let token = sign_access_token(&self.keys, &claims).map_err(|error| {
            tracing::error!(error = %ErrorChain(&error), "failed to sign an access token");
            failed()
        })?;
        Ok((
            token,
            IssuedAccessToken {
                jti,
                expires_at_ms: exp.saturating_mul(1000),
            },
        ))
    }

    fn token_response(&self, tokens: &IssuedTokens) -> OAuthResponse {
        let mut body = serde_json::json!({
            "access_token": tokens.access_token,
            "token_type": "Bearer",
            "expires_in": self.config.access_token_seconds,
            "scope": tokens.scope,
        });
        if let Some(refresh_token) = &tokens.refresh_token {
            body["refresh_token"] = serde_json::Value::String(refresh_token.clone());
        }
        OAuthResponse::json(StatusCode::OK, &body)
    }
}
