//! An in-process authorization server on a temporary store, with helpers that play the
//! browser and the client application.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use firewall_agent::events::{EventSink, EventSinks, SecurityEvent};
use firewall_agent::oauth::config::ClientConfig;
use firewall_agent::oauth::http::{OAuthRequest, OAuthResponse};
use firewall_agent::oauth::secrets::{s256_challenge, sha256_hex};
use firewall_agent::oauth::storage::RedbStorage;
use firewall_agent::oauth::{AuthorizationServer, OAuthConfig};
use firewall_agent::store::Store;
use http::{HeaderMap, HeaderValue, Method, header};

/// Issuer of the test server.
pub const ISSUER: &str = "http://127.0.0.1:8080";
/// Public client with a loopback redirect.
pub const PUBLIC_CLIENT: &str = "spa";
/// Registered redirect URI of [`PUBLIC_CLIENT`].
pub const PUBLIC_REDIRECT: &str = "https://app.example/callback";
/// Confidential client.
pub const CONFIDENTIAL_CLIENT: &str = "backend";
/// Secret of [`CONFIDENTIAL_CLIENT`].
pub const CONFIDENTIAL_SECRET: &str = "backend-secret-0123456789abcdef";
/// Registered redirect URI of [`CONFIDENTIAL_CLIENT`], a loopback one.
pub const CONFIDENTIAL_REDIRECT: &str = "http://127.0.0.1/cb";
/// The test user.
pub const USERNAME: &str = "alice";
/// Password of [`USERNAME`].
pub const PASSWORD: &str = "correct horse battery staple";
/// A valid code verifier.
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
/// Address of the browser in events.
pub const BROWSER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));

/// Records every event.
#[derive(Default)]
pub struct EventRecorder(pub std::sync::Mutex<Vec<SecurityEvent>>);

impl EventSink for EventRecorder {
    fn emit(&self, event: &SecurityEvent) {
        self.0.lock().expect("recorder lock").push(event.clone());
    }
}

/// The test server: two clients and one user. Like a browser, it keeps the last cookie a
/// response set and sends it with later requests.
pub struct TestServer {
    pub server: Arc<AuthorizationServer>,
    pub events: Arc<EventRecorder>,
    pub cookie: std::sync::Mutex<Option<String>>,
    _dir: tempfile::TempDir,
}

/// Returns the config of [`TestServer`].
pub fn test_config() -> OAuthConfig {
    OAuthConfig {
        enabled: true,
        issuer: ISSUER.to_owned(),
        clients: vec![
            ClientConfig {
                client_id: PUBLIC_CLIENT.to_owned(),
                secret_sha256: None,
                redirect_uris: vec![PUBLIC_REDIRECT.to_owned()],
                grant_types: vec!["authorization_code".to_owned(), "refresh_token".to_owned()],
                scopes: vec!["read".to_owned(), "write".to_owned()],
            },
            ClientConfig {
                client_id: CONFIDENTIAL_CLIENT.to_owned(),
                secret_sha256: Some(sha256_hex(CONFIDENTIAL_SECRET)),
                redirect_uris: vec![CONFIDENTIAL_REDIRECT.to_owned()],
                grant_types: vec![
                    "authorization_code".to_owned(),
                    "refresh_token".to_owned(),
                    "client_credentials".to_owned(),
                ],
                scopes: vec!["read".to_owned(), "write".to_owned()],
            },
        ],
        ..OAuthConfig::default()
    }
}

impl TestServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("state.redb")).expect("open store");
        let storage = RedbStorage::open(store).expect("open oauth tables");
        let events = Arc::new(EventRecorder::default());
        let mut sinks = EventSinks::new();
        sinks.push(events.clone());
        let server = AuthorizationServer::start(test_config(), Arc::new(storage), sinks)
            .expect("start the authorization server");
        server.add_user(USERNAME, PASSWORD).expect("add user");
        Self {
            server: Arc::new(server),
            events,
            cookie: std::sync::Mutex::new(None),
            _dir: dir,
        }
    }

    /// Sends a request.
    pub fn send(
        &self,
        method: Method,
        path: &str,
        query: Option<&str>,
        mut headers: HeaderMap,
        body: &str,
    ) -> OAuthResponse {
        // The jar is not locked while the request runs, so concurrent requests stay concurrent.
        let cookie = self.cookie.lock().expect("cookie jar").clone();
        if let Some(cookie) = cookie {
            headers.insert(
                header::COOKIE,
                HeaderValue::from_str(&cookie).expect("cookie header"),
            );
        }
        let response = self.server.handle(&OAuthRequest {
            client: BROWSER,
            method,
            path: path.to_owned(),
            query: query.map(str::to_owned),
            headers,
            body: body.to_owned().into(),
        });
        if let Some(set_cookie) = response.headers.get(header::SET_COOKIE) {
            let cookie = set_cookie.to_str().expect("cookie text");
            let pair = cookie.split(';').next().unwrap_or_default();
            *self.cookie.lock().expect("cookie jar") = Some(pair.to_owned());
        }
        response
    }

    /// `GET /oauth2/authorize` with `params`.
    pub fn authorize(&self, params: &[(&str, &str)]) -> OAuthResponse {
        let query = encode(params);
        self.send(
            Method::GET,
            "/oauth2/authorize",
            Some(&query),
            HeaderMap::new(),
            "",
        )
    }

    /// Posts a form to `path`, with `basic` credentials if given.
    pub fn post_form(
        &self,
        path: &str,
        params: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> OAuthResponse {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        if let Some((id, secret)) = basic {
            let value = format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")));
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&value).expect("header"),
            );
        }
        self.send(Method::POST, path, None, headers, &encode(params))
    }

    /// Runs the authorization request and the sign-in for `client` with `redirect_uri` and the
    /// S256 challenge of [`VERIFIER`]. Returns the code.
    pub fn code_for(&self, client: &str, redirect_uri: &str) -> String {
        let challenge = s256_challenge(VERIFIER);
        let page = self.authorize(&[
            ("response_type", "code"),
            ("client_id", client),
            ("redirect_uri", redirect_uri),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("state", "xyz"),
        ]);
        assert_eq!(
            page.status,
            200,
            "authorization request: {}",
            body_text(&page)
        );
        let form = hidden_fields(&page);
        let redirect = self.post_form(
            "/oauth2/login",
            &[
                ("request_id", &form["request_id"]),
                ("csrf_token", &form["csrf_token"]),
                ("username", USERNAME),
                ("password", PASSWORD),
            ],
            None,
        );
        assert_eq!(redirect.status, 303, "sign-in: {}", body_text(&redirect));
        location_params(&redirect)["code"].clone()
    }

    /// Redeems `code` as the public client with [`VERIFIER`].
    pub fn redeem_public(&self, code: &str) -> OAuthResponse {
        self.post_form(
            "/oauth2/token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", PUBLIC_CLIENT),
                ("code", code),
                ("redirect_uri", PUBLIC_REDIRECT),
                ("code_verifier", VERIFIER),
            ],
            None,
        )
    }

    /// Introspects `token` as the confidential client. Returns the JSON body.
    pub fn introspect(&self, token: &str) -> serde_json::Value {
        let response = self.post_form(
            "/oauth2/introspect",
            &[("token", token)],
            Some((CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET)),
        );
        assert_eq!(
            response.status,
            200,
            "introspection: {}",
            body_text(&response)
        );
        json(&response)
    }
}

/// Encodes `params` as a form.
pub fn encode(params: &[(&str, &str)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        serializer.append_pair(name, value);
    }
    serializer.finish()
}

/// Returns the body as text.
pub fn body_text(response: &OAuthResponse) -> String {
    String::from_utf8_lossy(&response.body).into_owned()
}

/// Parses the body as JSON.
pub fn json(response: &OAuthResponse) -> serde_json::Value {
    serde_json::from_slice(&response.body).expect("JSON body")
}

/// Returns the `error` of a JSON error body.
pub fn error_code(response: &OAuthResponse) -> String {
    json(response)["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Returns the values of the hidden inputs of the login form.
pub fn hidden_fields(page: &OAuthResponse) -> HashMap<String, String> {
    let html = body_text(page);
    let mut fields = HashMap::new();
    for input in html.split("<input type=\"hidden\" ").skip(1) {
        let name = input
            .split("name=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next());
        let value = input
            .split("value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next());
        if let (Some(name), Some(value)) = (name, value) {
            fields.insert(name.to_owned(), value.to_owned());
        }
    }
    fields
}

/// Returns the query parameters of the `Location` of a redirect.
pub fn location_params(response: &OAuthResponse) -> HashMap<String, String> {
    let location = response
        .headers
        .get(header::LOCATION)
        .and_then(|value| value.to_str().ok())
        .expect("Location header");
    let query = location.split_once('?').map_or("", |(_, query)| query);
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// Returns the decoded claims of a JWT, without checking the signature.
pub fn jwt_claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("JWT payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url"))
        .expect("JSON claims")
}
