//! Token revocation (RFC 7009) and introspection (RFC 7662).

use http::StatusCode;

use super::http::{OAuthRequest, OAuthResponse, Params, is_form};
use super::jwt::verify_own_token;
use super::secrets;
use super::server::{AuthorizationServer, now_ms};
use super::storage::IssuedAccessToken;
use super::token::{invalid_client, server_error};

impl AuthorizationServer {
    /// Parses the form of a revocation or introspection request and authenticates its client.
    fn token_request(
        &self,
        request: &OAuthRequest,
    ) -> Result<(Params, super::token::AuthenticatedClient, String), OAuthResponse> {
        let bad_request = |description: &str| {
            OAuthResponse::oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description)
        };
        if !is_form(&request.headers) {
            return Err(bad_request(
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        let params = Params::parse(&request.body);
        if let Some(name) = params.first_repeated() {
            return Err(bad_request(&format!("parameter {name} is repeated")));
        }
        let client = self.authenticate_client(request, &params)?;
        let Some(token) = params.get("token").map(str::to_owned) else {
            return Err(bad_request("token is missing"));
        };
        Ok((params, client, token))
    }

    /// Handles `POST {prefix}revoke`. A refresh token revokes its whole family; an access
    /// token is revoked by `jti` until it expires. Tokens of other clients and unknown tokens
    /// are left alone, with the same `200` response (RFC 7009 section 2.2).
    pub(super) fn revoke(&self, request: &OAuthRequest) -> OAuthResponse {
        let (_, client, token) = match self.token_request(request) {
            Ok(parts) => parts,
            Err(response) => return response,
        };
        let client_id = &client.record.client_id;
        let now = now_ms();

        match self.storage.find_refresh(&secrets::sha256_hex(&token), now) {
            Ok(Some((_, family))) if family.client_id == *client_id => {
                if let Err(error) = self.storage.revoke_family(&family.family_id) {
                    return server_error("revoke a refresh token family", &error);
                }
                tracing::info!(client_id = %client_id, "refresh token family revoked");
                return OAuthResponse::new(StatusCode::OK, "application/json", "{}");
            }
            Ok(_) => {}
            Err(error) => return server_error("read a refresh token", &error),
        }

        if let Some(claims) = verify_own_token(&self.keys, &token)
            && claims.client_id == *client_id
        {
            let access = IssuedAccessToken {
                jti: claims.jti,
                expires_at_ms: claims.exp.saturating_mul(1000),
            };
            if let Err(error) = self.storage.revoke_access(&access) {
                return server_error("revoke an access token", &error);
            }
            tracing::info!(client_id = %client_id, "access token revoked");
        }
        OAuthResponse::new(StatusCode::OK, "application/json", "{}")
    }

    /// Handles `POST {prefix}introspect`, for confidential clients only.
    pub(super) fn introspect(&self, request: &OAuthRequest) -> OAuthResponse {
        let (_, client, token) = match self.token_request(request) {
            Ok(parts) => parts,
            Err(response) => return response,
        };
        if !client.confidential {
            return invalid_client();
        }
        let now = now_ms();
        let inactive =
            || OAuthResponse::json(StatusCode::OK, &serde_json::json!({ "active": false }));

        match self.storage.find_refresh(&secrets::sha256_hex(&token), now) {
            Ok(Some((refresh, family))) => {
                return OAuthResponse::json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "active": true,
                        "token_type": "refresh_token",
                        "client_id": family.client_id,
                        "sub": family.subject,
                        "scope": family.scope,
                        "iss": self.config.issuer,
                        "exp": refresh.expires_at_ms / 1000,
                    }),
                );
            }
            Ok(None) => {}
            Err(error) => return server_error("read a refresh token", &error),
        }

        let Some(claims) = verify_own_token(&self.keys, &token) else {
            return inactive();
        };
        if claims.exp.saturating_mul(1000) <= now {
            return inactive();
        }
        match self.storage.is_access_revoked(&claims.jti) {
            Ok(false) => {}
            Ok(true) => return inactive(),
            Err(error) => return server_error("read a revocation", &error),
        }
        OAuthResponse::json(
            StatusCode::OK,
            &serde_json::json!({
                "active": true,
                "token_type": "Bearer",
                "client_id": claims.client_id,
                "sub": claims.sub,
                "aud": claims.aud,
                "scope": claims.scope,
                "iss": claims.iss,
                "iat": claims.iat,
                "exp": claims.exp,
                "jti": claims.jti,
            }),
        )
    }
}
