//! The authorization endpoint and the login page.
//!
//! A valid authorization request is kept in memory as a pending sign-in, and the login page
//! carries its identifier and a CSRF token bound to it. A successful sign-in turns the pending
//! request into a single-use code and redirects to the client.

use std::collections::HashMap;
use std::sync::Mutex;

use http::StatusCode;

use super::config::is_absolute_uri;
use super::http::{OAuthRequest, OAuthResponse, Params, append_query, escape_html, is_form};
use super::secrets;
use super::server::{AuthorizationServer, MAX_PASSWORD_BYTES, is_valid_username, now_ms};
use super::storage::{ClientRecord, CodeRecord};
use crate::events::SecurityEvent;
use crate::telemetry::ErrorChain;

/// Maximum number of sign-ins in progress. Beyond it, new authorization requests get 503 until
/// older ones expire, so that a flood of requests cannot exhaust memory.
const MAX_PENDING_REQUESTS: usize = 10_000;

/// Cookie that carries the CSRF token of the login form, so that a form posted from another
/// site, which does not send this `SameSite=Strict` cookie, fails the check.
const CSRF_COOKIE: &str = "oauth_login_csrf";

/// Wrong passwords accepted for one pending sign-in before it is dropped.
const MAX_LOGIN_ATTEMPTS: u32 = 5;

/// A validated authorization request waiting for the user to sign in.
#[derive(Clone, Debug)]
pub(super) struct PendingRequest {
    csrf_token: String,
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    scope: String,
    state: Option<String>,
    resource: Option<String>,
    expires_at_ms: u64,
    failed_attempts: u32,
}

/// The sign-ins in progress, by request identifier.
#[derive(Debug)]
pub(super) struct PendingRequests {
    requests: Mutex<HashMap<String, PendingRequest>>,
    lifetime_ms: u64,
}

impl PendingRequests {
    pub(super) fn new(lifetime_ms: u64) -> Self {
        Self {
            requests: Mutex::new(HashMap::new()),
            lifetime_ms,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PendingRequest>> {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drops the sign-ins that expired before `now`.
    pub(super) fn purge(&self, now: u64) {
        self.lock().retain(|_, request| request.expires_at_ms > now);
    }

    fn insert(&self, id: String, request: PendingRequest, now: u64) -> bool {
        let mut requests = self.lock();
        if requests.len() >= MAX_PENDING_REQUESTS {
            requests.retain(|_, request| request.expires_at_ms > now);
            if requests.len() >= MAX_PENDING_REQUESTS {
                return false;
            }
        }
        requests.insert(id, request);
        true
    }
}

/// Reason a sign-in attempt did not produce a code.
enum LoginFailure {
    /// The pending request is unknown or expired.
    Expired,
    /// The CSRF token is missing or does not belong to the pending request.
    Csrf,
    /// Wrong user name or password; the form is shown again.
    Credentials {
        request_id: String,
        csrf_token: String,
        client_id: String,
    },
    /// Too many wrong passwords: the pending request was dropped.
    TooManyAttempts,
}

impl AuthorizationServer {
    /// Handles `GET {prefix}authorize`.
    pub(super) fn authorize(&self, request: &OAuthRequest) -> OAuthResponse {
        let params = Params::parse(request.query.as_deref().unwrap_or_default().as_bytes());

        // Until the client and its redirect URI are known to be valid, errors are shown here
        // and never sent to a redirect URI.
        let client = match self.trusted_client(&params) {
            Ok(client) => client,
            Err(response) => return response,
        };
        let Some(redirect_uri) = params.get("redirect_uri").map(str::to_owned) else {
            return OAuthResponse::error_page(StatusCode::BAD_REQUEST, "redirect_uri is missing");
        };
        if params.is_repeated("redirect_uri") || !redirect_uri_registered(&client, &redirect_uri) {
            return OAuthResponse::error_page(
                StatusCode::BAD_REQUEST,
                "redirect_uri is not registered for this client",
            );
        }

        let state = params.get("state").map(str::to_owned);
        let redirect_error = |error: &str, description: &str| {
            let mut query = vec![("error", error), ("error_description", description)];
            if let Some(state) = &state {
                query.push(("state", state.as_str()));
            }
            query.push(("iss", self.config.issuer.as_str()));
            OAuthResponse::redirect(&append_query(&redirect_uri, &query))
        };

        if let Some(name) = params.first_repeated() {
            return redirect_error("invalid_request", &format!("parameter {name} is repeated"));
        }
        if params.get("response_type") != Some("code") {
            return redirect_error("unsupported_response_type", "response_type must be code");
        }
        if !client.allows_grant("authorization_code") {
            return redirect_error(
                "unauthorized_client",
                "the client may not use authorization_code",
            );
        }
        let code_challenge = match check_pkce(&params) {
            Ok(challenge) => challenge,
            Err(description) => return redirect_error("invalid_request", description),
        };
        let scope = match granted_scope(params.get("scope"), &client.scopes) {
            Some(scope) => scope,
            None => {
                return redirect_error(
                    "invalid_scope",
                    "the requested scope is not allowed for this client",
                );
            }
        };
        let resource = params.get("resource").map(str::to_owned);
        if let Some(resource) = &resource
            && !self.resource_allowed(resource)
        {
            return redirect_error(
                "invalid_target",
                "the resource is not accepted by this server",
            );
        }

        let now = now_ms();
        let (request_id, csrf_token) = match (secrets::random_token(), secrets::random_token()) {
            (Ok(id), Ok(csrf)) => (id, csrf),
            _ => {
                return OAuthResponse::error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the server failed to start the sign-in",
                );
            }
        };
        let pending = PendingRequest {
            csrf_token: csrf_token.clone(),
            client_id: client.client_id.clone(),
            redirect_uri,
            code_challenge,
            scope,
            state,
            resource,
            expires_at_ms: now.saturating_add(self.pending.lifetime_ms),
            failed_attempts: 0,
        };
        if !self.pending.insert(request_id.clone(), pending, now) {
            tracing::warn!(
                limit = MAX_PENDING_REQUESTS,
                "too many sign-ins in progress"
            );
            return OAuthResponse::error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many sign-ins are in progress; try again in a few minutes",
            );
        }
        self.login_page(
            StatusCode::OK,
            &request_id,
            &csrf_token,
            &client.client_id,
            None,
        )
    }

    /// Returns the client named by `client_id` when it exists and was sent once, or the error
    /// page.
    fn trusted_client(&self, params: &Params) -> Result<ClientRecord, OAuthResponse> {
        let Some(client_id) = params.get("client_id") else {
            return Err(OAuthResponse::error_page(
                StatusCode::BAD_REQUEST,
                "client_id is missing",
            ));
        };
        if params.is_repeated("client_id") {
            return Err(OAuthResponse::error_page(
                StatusCode::BAD_REQUEST,
                "client_id is repeated",
            ));
        }
        match self.storage.get_client(client_id) {
            Ok(Some(client)) => Ok(client),
            Ok(None) => Err(OAuthResponse::error_page(
                StatusCode::BAD_REQUEST,
                "unknown client_id",
            )),
            Err(error) => {
                tracing::error!(error = %ErrorChain(&error), "failed to read an oauth client");
                Err(OAuthResponse::error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the authorization server cannot read its clients; try again later",
                ))
            }
        }
    }

    /// Returns whether `resource` may be the audience of a token.
    pub(super) fn resource_allowed(&self, resource: &str) -> bool {
        is_absolute_uri(resource)
            && (self.config.resources.is_empty()
                || self
                    .config
                    .resources
                    .iter()
                    .any(|allowed| allowed == resource))
    }

    /// Handles `POST {prefix}login`.
    pub(super) fn login(&self, request: &OAuthRequest) -> OAuthResponse {
        if !is_form(&request.headers) {
            return OAuthResponse::error_page(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the sign-in form must be sent as a form",
            );
        }
        let params = Params::parse(&request.body);
        if let Some(name) = params.first_repeated() {
            return OAuthResponse::error_page(
                StatusCode::BAD_REQUEST,
                &format!("parameter {name} is repeated"),
            );
        }
        let username = params.get("username").unwrap_or_default();

        match self.check_login(
            &params,
            cookie_value(&request.headers, CSRF_COOKIE),
            username,
        ) {
            Ok(pending) => {
                tracing::info!(client = %request.client, username, client_id = %pending.client_id, "sign-in succeeded");
                self.emit(SecurityEvent::LoginSucceeded {
                    client: request.client,
                    username: username.to_owned(),
                });
                self.issue_code(pending, username)
            }
            Err(LoginFailure::Expired) => OAuthResponse::error_page(
                StatusCode::BAD_REQUEST,
                "this sign-in request is unknown or expired; start again from the application",
            ),
            Err(LoginFailure::Csrf) => {
                tracing::info!(client = %request.client, "sign-in rejected: missing or wrong CSRF token");
                OAuthResponse::error_page(
                    StatusCode::FORBIDDEN,
                    "the sign-in form is invalid; start again from the application",
                )
            }
            Err(LoginFailure::Credentials {
                request_id,
                csrf_token,
                client_id,
            }) => {
                self.login_failed(request, username);
                self.login_page(
                    StatusCode::UNAUTHORIZED,
                    &request_id,
                    &csrf_token,
                    &client_id,
                    Some("Invalid user name or password."),
                )
            }
            Err(LoginFailure::TooManyAttempts) => {
                self.login_failed(request, username);
                OAuthResponse::error_page(
                    StatusCode::UNAUTHORIZED,
                    "too many failed sign-ins; start again from the application",
                )
            }
        }
    }

    fn login_failed(&self, request: &OAuthRequest, username: &str) {
        let username: String = username
            .chars()
            .take(super::server::MAX_USERNAME_BYTES)
            .collect();
        tracing::info!(client = %request.client, username = %username, "sign-in failed");
        self.emit(SecurityEvent::LoginFailed {
            client: request.client,
            username,
        });
    }

    /// Checks the CSRF token and the credentials. On success the pending request is removed
    /// and returned, so it can produce one code only.
    fn check_login(
        &self,
        params: &Params,
        cookie: Option<&str>,
        username: &str,
    ) -> Result<PendingRequest, LoginFailure> {
        let now = now_ms();
        let request_id = params.get("request_id").ok_or(LoginFailure::Expired)?;
        let pending = self
            .pending
            .lock()
            .get(request_id)
            .filter(|pending| pending.expires_at_ms > now)
            .cloned()
            .ok_or(LoginFailure::Expired)?;
        let csrf_token = params.get("csrf_token").unwrap_or_default();
        let cookie = cookie.unwrap_or_default();
        // Both comparisons always run, so the time taken does not tell which one failed.
        let form_matches = secrets::tokens_equal(csrf_token, &pending.csrf_token);
        let cookie_matches = secrets::tokens_equal(cookie, &pending.csrf_token);
        if !(form_matches & cookie_matches) {
            return Err(LoginFailure::Csrf);
        }

        let password = params.get("password").unwrap_or_default();
        if self.credentials_valid(username, password) {
            return self
                .pending
                .lock()
                .remove(request_id)
                .ok_or(LoginFailure::Expired);
        }

        let mut requests = self.pending.lock();
        let Some(pending) = requests.get_mut(request_id) else {
            return Err(LoginFailure::Expired);
        };
        pending.failed_attempts += 1;
        if pending.failed_attempts >= MAX_LOGIN_ATTEMPTS {
            requests.remove(request_id);
            return Err(LoginFailure::TooManyAttempts);
        }
        Err(LoginFailure::Credentials {
            request_id: request_id.to_owned(),
            csrf_token: pending.csrf_token.clone(),
            client_id: pending.client_id.clone(),
        })
    }

    fn credentials_valid(&self, username: &str, password: &str) -> bool {
        if !is_valid_username(username)
            || password.is_empty()
            || password.len() > MAX_PASSWORD_BYTES
        {
            secrets::verify_password_decoy(password);
            return false;
        }
        match self.storage.get_user(username) {
            Ok(Some(user)) => secrets::verify_password(&user.password_hash, password),
            Ok(None) => {
                secrets::verify_password_decoy(password);
                false
            }
            Err(error) => {
                tracing::error!(error = %ErrorChain(&error), "failed to read a user");
                false
            }
        }
    }

    /// Stores a code for the signed-in user and redirects to the client with it.
    fn issue_code(&self, pending: PendingRequest, username: &str) -> OAuthResponse {
        let Ok(code) = secrets::random_token() else {
            return OAuthResponse::error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the server failed to create a code",
            );
        };
        let record = CodeRecord {
            client_id: pending.client_id,
            redirect_uri: pending.redirect_uri.clone(),
            code_challenge: pending.code_challenge,
            subject: username.to_owned(),
            scope: pending.scope,
            resource: pending.resource,
            expires_at_ms: now_ms().saturating_add(self.config.code_seconds.saturating_mul(1000)),
            consumed: false,
            grant: None,
            replayed: false,
        };
        if let Err(error) = self.storage.put_code(&secrets::sha256_hex(&code), &record) {
            tracing::error!(error = %ErrorChain(&error), "failed to store an authorization code");
            return OAuthResponse::error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server failed to store the code; try again",
            );
        }

        let mut query = vec![("code", code.as_str())];
        if let Some(state) = &pending.state {
            query.push(("state", state.as_str()));
        }
        query.push(("iss", self.config.issuer.as_str()));
        OAuthResponse::redirect(&append_query(&pending.redirect_uri, &query))
    }

    fn login_page(
        &self,
        status: StatusCode,
        request_id: &str,
        csrf_token: &str,
        client_id: &str,
        error: Option<&str>,
    ) -> OAuthResponse {
        let error = error.map_or_else(String::new, |error| {
            format!("<p role=\"alert\">{}</p>", escape_html(error))
        });
        let html = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign in</title>\
             <style>body{{font-family:sans-serif;max-width:24em;margin:4em auto}}\
             label,input,button{{display:block;width:100%;margin:.4em 0}}</style></head><body>\
             <h1>Sign in</h1><p>to continue to <b>{client}</b></p>{error}\
             <form method=\"post\" action=\"{action}\">\
             <input type=\"hidden\" name=\"request_id\" value=\"{request_id}\">\
             <input type=\"hidden\" name=\"csrf_token\" value=\"{csrf_token}\">\
             <label for=\"username\">User name</label>\
             <input id=\"username\" name=\"username\" autocomplete=\"username\" required>\
             <label for=\"password\">Password</label>\
             <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
             <button type=\"submit\">Sign in</button></form></body></html>",
            client = escape_html(client_id),
            action = escape_html(&format!("{}login", self.config.path_prefix)),
            request_id = escape_html(request_id),
            csrf_token = escape_html(csrf_token),
        );
        let mut response = OAuthResponse::html(status, html);
        let secure = if self.config.issuer.starts_with("https://") {
            "; Secure"
        } else {
            ""
        };
        let cookie = format!(
            "{CSRF_COOKIE}={csrf_token}; Path={}; HttpOnly; SameSite=Strict{secure}",
            self.config.path_prefix
        );
        if let Ok(value) = http::HeaderValue::from_str(&cookie) {
            response.headers.insert(http::header::SET_COOKIE, value);
        }
        response
    }
}

/// Returns the value of the cookie `name` in the request's `Cookie` headers.
fn cookie_value<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(cookie, _)| *cookie == name)
        .map(|(_, value)| value)
}

/// Returns the S256 challenge, or why the PKCE parameters are rejected. Only S256 is
/// accepted: a missing method would mean `plain` (RFC 7636 section 4.3).
fn check_pkce(params: &Params) -> Result<String, &'static str> {
    let Some(challenge) = params.get("code_challenge") else {
        return Err("code_challenge is required");
    };
    match params.get("code_challenge_method") {
        Some("S256") => {}
        None => return Err("code_challenge_method is required and must be S256"),
        Some("plain") => return Err("code_challenge_method plain is not allowed, use S256"),
        Some(_) => return Err("code_challenge_method must be S256"),
    }
    if !secrets::is_s256_challenge(challenge) {
        return Err(
            "code_challenge must be the base64url SHA-256 of the code_verifier, 43 characters",
        );
    }
    Ok(challenge.to_owned())
}

/// Returns the scope to grant: the requested scopes when the client may have all of them, or
/// every scope of the client when none is requested. `None` when a requested scope is not
/// allowed.
pub(super) fn granted_scope(requested: Option<&str>, allowed: &[String]) -> Option<String> {
    match requested {
        None => Some(allowed.join(" ")),
        Some(requested) => {
            let scopes: Vec<&str> = requested
                .split(' ')
                .filter(|scope| !scope.is_empty())
                .collect();
            scopes
                .iter()
                .all(|scope| allowed.iter().any(|allowed| allowed == scope))
                .then(|| scopes.join(" "))
        }
    }
}

/// Returns whether `uri` is one of the client's redirect URIs: equal as strings, or, for a
/// loopback IP redirect (`http://127.0.0.1` or `http://[::1]`), equal apart from the port
/// (RFC 8252 section 7.3).
pub fn redirect_uri_registered(client: &ClientRecord, uri: &str) -> bool {
    client.redirect_uris.iter().any(|registered| {
        registered == uri
            || loopback_without_port(registered)
                .zip(loopback_without_port(uri))
                .is_some_and(|(registered, presented)| registered == presented)
    })
}

/// For `http://127.0.0.1[:port]/rest` or `http://[::1][:port]/rest`, returns the URI without
/// its port. `None` for any other URI, including `localhost`.
fn loopback_without_port(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("http://")?;
    let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(host_end);
    let host = if let Some(v6) = authority.strip_prefix("[::1]") {
        (v6.is_empty() || is_port(v6)).then_some("[::1]")?
    } else if let Some(v4) = authority.strip_prefix("127.0.0.1") {
        (v4.is_empty() || is_port(v4)).then_some("127.0.0.1")?
    } else {
        return None;
    };
    Some(format!("http://{host}{path}"))
}

fn is_port(text: &str) -> bool {
    text.strip_prefix(':').is_some_and(|port| {
        !port.is_empty() && port.len() <= 5 && port.chars().all(|c| c.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(uris: &[&str]) -> ClientRecord {
        ClientRecord {
            client_id: "app".to_owned(),
            secret_sha256: None,
            redirect_uris: uris.iter().map(|uri| (*uri).to_owned()).collect(),
            grant_types: vec!["authorization_code".to_owned()],
            scopes: vec!["read".to_owned(), "write".to_owned()],
        }
    }

    #[test]
    fn redirect_near_misses_rejected() {
        let client = client(&["https://app.example/callback"]);
        let near_misses = [
            "https://app.example/callback/",
            "https://app.example/Callback",
            "https://app.example/callback?x=1",
            "https://app.example/callback#frag",
            "https://app.example:443/callback",
            "http://app.example/callback",
            "https://app.example.evil.example/callback",
            "https://evil.example/callback",
            "https://app.example/callback/../callback",
            "https://app.example/callback%2F",
            "HTTPS://app.example/callback",
        ];

        assert!(redirect_uri_registered(
            &client,
            "https://app.example/callback"
        ));
        for uri in near_misses {
            assert!(
                !redirect_uri_registered(&client, uri),
                "{uri} must not match"
            );
        }
    }

    #[test]
    fn loopback_redirect_port_may_vary() {
        let client = client(&["http://127.0.0.1/cb", "http://[::1]:8000/cb"]);

        assert!(redirect_uri_registered(
            &client,
            "http://127.0.0.1:49152/cb"
        ));
        assert!(redirect_uri_registered(&client, "http://127.0.0.1/cb"));
        assert!(redirect_uri_registered(&client, "http://[::1]:1234/cb"));
        assert!(!redirect_uri_registered(
            &client,
            "http://127.0.0.1:49152/other"
        ));
        assert!(!redirect_uri_registered(
            &client,
            "http://localhost:49152/cb"
        ));
        assert!(!redirect_uri_registered(
            &client,
            "http://127.0.0.1:49152@evil.example/cb"
        ));
        assert!(!redirect_uri_registered(
            &client,
            "http://127.0.0.1.evil.example/cb"
        ));
        assert!(!redirect_uri_registered(
            &client,
            "https://127.0.0.1:49152/cb"
        ));
    }

    #[test]
    fn scope_subset_granted() {
        let allowed = vec!["read".to_owned(), "write".to_owned()];

        assert_eq!(
            granted_scope(Some("read"), &allowed).as_deref(),
            Some("read")
        );
        assert_eq!(granted_scope(None, &allowed).as_deref(), Some("read write"));
        assert_eq!(granted_scope(Some("read admin"), &allowed), None);
    }
}
