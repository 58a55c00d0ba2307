//! The admin API's OAuth endpoints: users of the login page and signing keys.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::{ApiError, blocking, json_response, read_body};
use crate::admin::oauth_api::{AddUserRequest, KeyList, KeyView, UserList, UserView};
use crate::oauth::keys::KeyRecord;
use crate::oauth::{AuthorizationServer, OAuthError};
use crate::telemetry::ErrorChain;

/// Path prefix of the OAuth endpoints.
pub(super) const PREFIX: &str = "/v1/oauth/";

impl From<OAuthError> for ApiError {
    fn from(error: OAuthError) -> Self {
        match error {
            OAuthError::InvalidUsername { .. } | OAuthError::InvalidPassword => {
                Self::bad_request(error.to_string())
            }
            OAuthError::Storage(_) | OAuthError::Keys(_) | OAuthError::Secret(_) => {
                let message = ErrorChain(&error).to_string();
                tracing::error!(error = %message, "admin oauth request failed");
                Self::internal(message)
            }
        }
    }
}

/// Routes a request under [`PREFIX`].
pub(super) async fn route(
    server: Option<&Arc<AuthorizationServer>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let Some(server) = server else {
        return Err(ApiError::not_found(
            "the authorization server is not enabled: set enabled = true in [oauth]".into(),
        ));
    };
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let server = Arc::clone(server);

    match (method.clone(), &path[PREFIX.len()..]) {
        (Method::GET, "users") => {
            let users = blocking(move || server.list_users()).await??;
            let users = users
                .into_iter()
                .map(|(username, created_at_ms)| UserView {
                    username,
                    created_at_ms,
                })
                .collect();
            Ok(json_response(StatusCode::OK, &UserList { users }))
        }
        (Method::POST, "users") => {
            let body = read_body(request).await?;
            let add: AddUserRequest = serde_json::from_slice(&body).map_err(|error| {
                ApiError::bad_request(format!(
                    "invalid request body: {error}; expected {{\"username\": \"alice\", \"password\": \"...\"}}"
                ))
            })?;
            let username = add.username.clone();
            blocking(move || server.add_user(&add.username, &add.password)).await??;
            tracing::info!(username = %username, "oauth user added");
            let created_at_ms = crate::bans::unix_ms(std::time::SystemTime::now());
            Ok(json_response(
                StatusCode::CREATED,
                &UserView {
                    username,
                    created_at_ms,
                },
            ))
        }
        (Method::DELETE, target) if target.starts_with("users/") => {
            // fwctl percent-encodes the name; `+` never occurs in a valid one.
            let encoded = format!("name={}", &target["users/".len()..]);
            let username = form_urlencoded::parse(encoded.as_bytes())
                .next()
                .map(|(_, name)| name.into_owned())
                .unwrap_or_default();
            let name = username.clone();
            if blocking(move || server.remove_user(&name)).await?? {
                tracing::info!(username = %username, "oauth user removed");
                Ok(json_response(
                    StatusCode::OK,
                    &UserView {
                        username,
                        created_at_ms: 0,
                    },
                ))
            } else {
                Err(ApiError::not_found(format!("no user named `{username}`")))
            }
        }
        (Method::GET, "keys") => Ok(json_response(
            StatusCode::OK,
            &key_list(&server.list_keys()),
        )),
        (Method::POST, "keys/rotate") => {
            let records = blocking(move || server.rotate_keys()).await??;
            Ok(json_response(StatusCode::OK, &key_list(&records)))
        }
        (_, "users" | "keys" | "keys/rotate") => Err(ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: format!("method {method} is not allowed on {path}"),
        }),
        _ => Err(ApiError::not_found(format!(
            "no such endpoint: {method} {path}"
        ))),
    }
}

fn key_list(records: &[KeyRecord]) -> KeyList {
    KeyList {
        keys: records
            .iter()
            .map(|record| KeyView {
                kid: record.kid.clone(),
                status: record.status.label().to_owned(),
                created_at_ms: record.created_at_ms,
                expires_at_ms: record.expires_at_ms,
            })
            .collect(),
    }
}
