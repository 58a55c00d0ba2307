//! Hostile and malformed requests against the authorization server, one test per rule, on an
//! in-process server with a temporary store.

use std::sync::Arc;

use firewall_agent::events::SecurityEvent;
use firewall_agent::oauth::secrets::s256_challenge;
use http::{HeaderMap, Method, StatusCode, header};
use integration_tests::oauth::{
    BROWSER, CONFIDENTIAL_CLIENT, CONFIDENTIAL_REDIRECT, CONFIDENTIAL_SECRET, ISSUER, PASSWORD,
    PUBLIC_CLIENT, PUBLIC_REDIRECT, TestServer, USERNAME, VERIFIER, body_text, error_code,
    hidden_fields, json, jwt_claims, location_params,
};

/// Authorization parameters of a valid request from the public client, with `overrides`
/// replacing or adding parameters; an override with an empty name removes nothing.
fn authorize_params(overrides: &[(&'static str, &'static str)]) -> Vec<(&'static str, String)> {
    let mut params: Vec<(&'static str, String)> = vec![
        ("response_type", "code".to_owned()),
        ("client_id", PUBLIC_CLIENT.to_owned()),
        ("redirect_uri", PUBLIC_REDIRECT.to_owned()),
        ("code_challenge", s256_challenge(VERIFIER)),
        ("code_challenge_method", "S256".to_owned()),
        ("state", "state-123".to_owned()),
    ];
    for (name, value) in overrides {
        params.retain(|(existing, _)| existing != name);
        params.push((name, (*value).to_owned()));
    }
    params
}

fn authorize(
    server: &TestServer,
    params: &[(&'static str, String)],
) -> firewall_agent::oauth::http::OAuthResponse {
    let borrowed: Vec<(&str, &str)> = params
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    server.authorize(&borrowed)
}

fn without(params: Vec<(&'static str, String)>, name: &str) -> Vec<(&'static str, String)> {
    params
        .into_iter()
        .filter(|(existing, _)| *existing != name)
        .collect()
}

/// Asserts a redirect to the public client's URI carrying `error`, the state and the issuer.
fn assert_redirect_error(response: &firewall_agent::oauth::http::OAuthResponse, error: &str) {
    assert_eq!(
        response.status,
        StatusCode::SEE_OTHER,
        "{}",
        body_text(response)
    );
    let location = response.headers[header::LOCATION]
        .to_str()
        .expect("location");
    assert!(location.starts_with(PUBLIC_REDIRECT), "{location}");
    let params = location_params(response);
    assert_eq!(params["error"], error);
    assert_eq!(params["state"], "state-123");
    assert_eq!(params["iss"], ISSUER);
    assert!(!params.contains_key("code"));
}

/// Asserts an error page: HTML, no redirect.
fn assert_error_page(response: &firewall_agent::oauth::http::OAuthResponse) {
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert!(response.headers.get(header::LOCATION).is_none());
    assert!(
        response.headers[header::CONTENT_TYPE]
            .to_str()
            .expect("type")
            .starts_with("text/html")
    );
}

fn tokens(server: &TestServer) -> serde_json::Value {
    let code = server.code_for(PUBLIC_CLIENT, PUBLIC_REDIRECT);
    let response = server.redeem_public(&code);
    assert_eq!(response.status, StatusCode::OK, "{}", body_text(&response));
    json(&response)
}

fn refresh(
    server: &TestServer,
    refresh_token: &str,
    scope: Option<&str>,
) -> firewall_agent::oauth::http::OAuthResponse {
    let mut params = vec![
        ("grant_type", "refresh_token"),
        ("client_id", PUBLIC_CLIENT),
        ("refresh_token", refresh_token),
    ];
    if let Some(scope) = scope {
        params.push(("scope", scope));
    }
    server.post_form("/oauth2/token", &params, None)
}

#[test]
fn pkce_missing_challenge_rejected() {
    let server = TestServer::start();
    let response = authorize(&server, &without(authorize_params(&[]), "code_challenge"));
    assert_redirect_error(&response, "invalid_request");
}

#[test]
fn pkce_plain_method_rejected() {
    let server = TestServer::start();
    let response = authorize(
        &server,
        &authorize_params(&[("code_challenge_method", "plain")]),
    );
    assert_redirect_error(&response, "invalid_request");
}

#[test]
fn pkce_missing_method_rejected() {
    let server = TestServer::start();
    let response = authorize(
        &server,
        &without(authorize_params(&[]), "code_challenge_method"),
    );
    assert_redirect_error(&response, "invalid_request");
}

#[test]
fn pkce_unknown_method_rejected() {
    let server = TestServer::start();
    for method in ["S512", "s256", "S256 ", "none"] {
        let params = authorize_params(&[]);
        let mut params = without(params, "code_challenge_method");
        params.push(("code_challenge_method", method.to_owned()));
        let response = authorize(&server, &params);
        assert_redirect_error(&response, "invalid_request");
    }
}

#[test]
fn pkce_malformed_challenge_rejected() {
    let server = TestServer::start();
    for challenge in [
        "short",
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM=",
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM",
        VERIFIER.trim_end_matches('k'),
    ] {
        let mut params = without(authorize_params(&[]), "code_challenge");
        params.push(("code_challenge", challenge.to_owned()));
        let response = authorize(&server, &params);
        assert_redirect_error(&response, "invalid_request");
    }
}

#[test]
fn pkce_wrong_verifier_rejected() {
    let server = TestServer::start();
    let code = server.code_for(PUBLIC_CLIENT, PUBLIC_REDIRECT);
    let response = server.post_form(
        "/oauth2/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", PUBLIC_CLIENT),
            ("code", &code),
            ("redirect_uri", PUBLIC_REDIRECT),
            ("code_verifier", &"x".repeat(43)),
        ],
        None,
    );
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&response), "invalid_grant");
}

#[test]
fn redirect_near_misses_get_error_page() {
    let server = TestServer::start();
    let near_misses = [
        "https://app.example/callback/",
        "https://app.example/callback?next=1",
        "https://app.example/Callback",
        "https://app.example:443/callback",
        "http://app.example/callback",
        "https://app.example.attacker.example/callback",
        "https://attacker.example/callback",
        "https://app.example/callback#fragment",
    ];
    for uri in near_misses {
        let mut params = without(authorize_params(&[]), "redirect_uri");
        params.push(("redirect_uri", uri.to_owned()));
        let response = authorize(&server, &params);
        assert_error_page(&response);
    }
}

#[test]
fn missing_redirect_uri_gets_error_page() {
    let server = TestServer::start();
    let response = authorize(&server, &without(authorize_params(&[]), "redirect_uri"));
    assert_error_page(&response);
}

#[test]
fn unknown_client_gets_error_page() {
    let server = TestServer::start();
    let response = authorize(&server, &authorize_params(&[("client_id", "intruder")]));
    assert_error_page(&response);
    let response = authorize(&server, &without(authorize_params(&[]), "client_id"));
    assert_error_page(&response);
}

#[test]
fn loopback_redirect_port_may_vary() {
    let server = TestServer::start();
    let code = server.code_for(CONFIDENTIAL_CLIENT, "http://127.0.0.1:54321/cb");
    assert!(!code.is_empty());

    let mut params = authorize_params(&[("client_id", CONFIDENTIAL_CLIENT)]);
    params.retain(|(name, _)| *name != "redirect_uri");
    params.push(("redirect_uri", "http://localhost:54321/cb".to_owned()));
    assert_error_page(&authorize(&server, &params));
    let _ = CONFIDENTIAL_REDIRECT;
}

#[test]
fn repeated_parameter_rejected() {
    let server = TestServer::start();
    let mut params = authorize_params(&[]);
    params.push(("scope", "read".to_owned()));
    params.push(("scope", "write".to_owned()));
    assert_redirect_error(&authorize(&server, &params), "invalid_request");

    let mut params = authorize_params(&[]);
    params.push(("client_id", PUBLIC_CLIENT.to_owned()));
    let borrowed: Vec<(&str, &str)> = params.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let doubled_client = server.authorize(&borrowed);
    assert_error_page(&doubled_client);

    let mut params = authorize_params(&[]);
    params.push(("redirect_uri", PUBLIC_REDIRECT.to_owned()));
    let borrowed: Vec<(&str, &str)> = params.iter().map(|(n, v)| (*n, v.as_str())).collect();
    assert_error_page(&server.authorize(&borrowed));
}

#[test]
fn repeated_token_parameter_rejected() {
    let server = TestServer::start();
    let code = server.code_for(PUBLIC_CLIENT, PUBLIC_REDIRECT);
    let response = server.post_form(
        "/oauth2/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", PUBLIC_CLIENT),
            ("code", &code),
            ("code", "other"),
            ("redirect_uri", PUBLIC_REDIRECT),
            ("code_verifier", VERIFIER),
        ],
        None,
    );
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&response), "invalid_request");
}

#[test]
fn unsupported_response_type_rejected() {
    let server = TestServer::start();
    let response = authorize(&server, &authorize_params(&[("response_type", "token")]));
    assert_redirect_error(&response, "unsupported_response_type");
}

#[test]
fn wider_scope_at_authorization_rejected() {
    let server = TestServer::start();
    let response = authorize(&server, &authorize_params(&[("scope", "read admin")]));
    assert_redirect_error(&response, "invalid_scope");
}

#[test]
fn success_redirect_echoes_state_and_iss() {
    let server = TestServer::start();
    let page = authorize(&server, &authorize_params(&[]));
    let form = hidden_fields(&page);
    let response = server.post_form(
        "/oauth2/login",
        &[
            ("request_id", &form["request_id"]),
            ("csrf_token", &form["csrf_token"]),
            ("username", USERNAME),
            ("password", PASSWORD),
        ],
        None,
    );

    assert_eq!(response.status, StatusCode::SEE_OTHER);
    let params = location_params(&response);
    assert_eq!(params["state"], "state-123");
    assert_eq!(params["iss"], ISSUER);
    assert_eq!(params["code"].len(), 43);
}

#[test]
fn login_csrf_missing_or_wrong_rejected() {
    let server = TestServer::start();
    let page = authorize(&server, &authorize_params(&[]));
    let form = hidden_fields(&page);

    let missing = server.post_form(
        "/oauth2/login",
        &[
            ("request_id", &form["request_id"]),
            ("username", USERNAME),
            ("password", PASSWORD),
        ],
        None,
    );
    let wrong = server.post_form(
        "/oauth2/login",
        &[
            ("request_id", &form["request_id"]),
            ("csrf_token", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            ("username", USERNAME),
            ("password", PASSWORD),
        ],
        None,
    );
    let other_page = authorize(&server, &authorize_params(&[]));
    let other_form = hidden_fields(&other_page);
    let swapped = server.post_form(
        "/oauth2/login",
        &[
            ("request_id", &form["request_id"]),
            ("csrf_token", &other_form["csrf_token"]),
            ("username", USERNAME),
            ("password", PASSWORD),
        ],
        None,
    );

    for response in [&missing, &wrong, &swapped] {
        assert_eq!(response.status, StatusCode::FORBIDDEN);
        assert!(response.headers.get(header::LOCATION).is_none());
    }
}

#[test]
fn login_without_csrf_cookie_rejected() {
    let server = TestServer::start();
    let page = authorize(&server, &authorize_params(&[]));
    let form = hidden_fields(&page);
    let set_cookie = page.headers[header::SET_COOKIE]
        .to_str()
        .expect("cookie")
        .to_owned();
    *server.cookie.lock().expect("jar") = None;

    let response = server.post_form(
        "/oauth2/login",
        &[
            ("request_id", &form["request_id"]),
            ("csrf_token", &form["csrf_token"]),
            ("username", USERNAME),
            ("password", PASSWORD),
        ],
        None,
    );

    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert_eq!(response.status, StatusCode::FORBIDDEN);
    assert!(response.headers.get(header::LOCATION).is_none());
}

#[test]
fn login_failure_and_success_emit_events() {
    let server = TestServer::start();
    let page = authorize(&server, &authorize_params(&[]));
    let form = hidden_fields(&page);
    let failed = server.post_form(
        "/oauth2/login",
        &[
            ("request_id", &form["request_id"]),
            ("csrf_token", &form["csrf_token"]),
            ("username", USERNAME),
            ("password", "wrong password"),
        ],
        None,
    );
    let retry_form = hidden_fields(&failed);
    let succeeded = server.post_form(
        "/oauth2/login",
        &[
            ("request_id", &retry_form["request_id"]),
            ("csrf_token", &retry_form["csrf_token"]),
            ("username", USERNAME),
            ("password", PASSWORD),
        ],
        None,
    );

    assert_eq!(failed.status, StatusCode::UNAUTHORIZED);
    assert_eq!(succeeded.status, StatusCode::SEE_OTHER);
    let events = server.events.0.lock().expect("events").clone();
    assert_eq!(
        events,
        vec![
            SecurityEvent::LoginFailed {
                client: BROWSER,
                username: USERNAME.to_owned()
            },
            SecurityEvent::LoginSucceeded {
                client: BROWSER,
                username: USERNAME.to_owned()
            },
        ]
    );
}

#[test]
fn login_attempts_limited_per_request() {
    let server = TestServer::start();
    let page = authorize(&server, &authorize_params(&[]));
    let form = hidden_fields(&page);
    let mut last = None;
    for _ in 0..5 {
        last = Some(server.post_form(
            "/oauth2/login",
            &[
                ("request_id", &form["request_id"]),
                ("csrf_token", &form["csrf_token"]),
                ("username", USERNAME),
                ("password", "guess"),
            ],
            None,
        ));
    }
    let after = server.post_form(
        "/oauth2/login",
        &[
            ("request_id", &form["request_id"]),
            ("csrf_token", &form["csrf_token"]),
            ("username", USERNAME),
            ("password", PASSWORD),
        ],
        None,
    );

    assert_eq!(last.expect("attempts").status, StatusCode::UNAUTHORIZED);
    assert_eq!(after.status, StatusCode::BAD_REQUEST);
    assert!(after.headers.get(header::LOCATION).is_none());
}

#[test]
fn code_replay_revokes_issued_tokens() {
    let server = TestServer::start();
    let code = server.code_for(PUBLIC_CLIENT, PUBLIC_REDIRECT);
    let first = server.redeem_public(&code);
    assert_eq!(first.status, StatusCode::OK);
    let issued = json(&first);
    let access = issued["access_token"].as_str().expect("access token");
    let refresh_token = issued["refresh_token"].as_str().expect("refresh token");
    assert_eq!(server.introspect(access)["active"], true);

    let replay = server.redeem_public(&code);

    assert_eq!(replay.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&replay), "invalid_grant");
    assert_eq!(server.introspect(access)["active"], false);
    assert_eq!(server.introspect(refresh_token)["active"], false);
    assert_eq!(
        error_code(&refresh(&server, refresh_token, None)),
        "invalid_grant"
    );
}

#[test]
fn code_replay_failing_pkce_revokes_nothing() {
    let server = TestServer::start();
    let code = server.code_for(PUBLIC_CLIENT, PUBLIC_REDIRECT);
    let issued = json(&server.redeem_public(&code));
    let access = issued["access_token"].as_str().expect("access token");

    let replay = server.post_form(
        "/oauth2/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", PUBLIC_CLIENT),
            ("code", &code),
            ("redirect_uri", PUBLIC_REDIRECT),
            ("code_verifier", &"y".repeat(43)),
        ],
        None,
    );

    assert_eq!(error_code(&replay), "invalid_grant");
    assert_eq!(server.introspect(access)["active"], true);
}

#[test]
fn code_replay_failing_client_auth_revokes_nothing() {
    let server = TestServer::start();
    let code = server.code_for(CONFIDENTIAL_CLIENT, CONFIDENTIAL_REDIRECT);
    let redeem = |secret: &str| {
        server.post_form(
            "/oauth2/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", CONFIDENTIAL_REDIRECT),
                ("code_verifier", VERIFIER),
            ],
            Some((CONFIDENTIAL_CLIENT, secret)),
        )
    };
    let first = redeem(CONFIDENTIAL_SECRET);
    assert_eq!(first.status, StatusCode::OK, "{}", body_text(&first));
    let access = json(&first)["access_token"]
        .as_str()
        .expect("access")
        .to_owned();

    let replay = redeem("wrong-secret");

    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    assert_eq!(server.introspect(&access)["active"], true);
}

#[test]
fn concurrent_redemption_has_one_winner() {
    let server = Arc::new(TestServer::start());
    let code = server.code_for(PUBLIC_CLIENT, PUBLIC_REDIRECT);

    let threads: Vec<_> = (0..12)
        .map(|_| {
            let server = Arc::clone(&server);
            let code = code.clone();
            std::thread::spawn(move || server.redeem_public(&code))
        })
        .collect();
    let responses: Vec<_> = threads
        .into_iter()
        .map(|thread| thread.join().expect("thread"))
        .collect();

    let winners = responses
        .iter()
        .filter(|response| response.status == StatusCode::OK)
        .count();
    let losers = responses
        .iter()
        .filter(|response| {
            response.status == StatusCode::BAD_REQUEST && error_code(response) == "invalid_grant"
        })
        .count();
    assert_eq!(winners, 1);
    assert_eq!(losers, 11);
}

#[test]
fn code_bound_to_redirect_uri_and_client() {
    let server = TestServer::start();
    let code = server.code_for(PUBLIC_CLIENT, PUBLIC_REDIRECT);
    let other_redirect = server.post_form(
        "/oauth2/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", PUBLIC_CLIENT),
            ("code", &code),
            ("redirect_uri", "https://app.example/other"),
            ("code_verifier", VERIFIER),
        ],
        None,
    );
    assert_eq!(error_code(&other_redirect), "invalid_grant");

    let code = server.code_for(PUBLIC_CLIENT, PUBLIC_REDIRECT);
    let other_client = server.post_form(
        "/oauth2/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", PUBLIC_REDIRECT),
            ("code_verifier", VERIFIER),
        ],
        Some((CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET)),
    );
    assert_eq!(error_code(&other_client), "invalid_grant");
}

#[test]
fn refresh_rotates_and_replay_revokes_family() {
    let server = TestServer::start();
    let issued = tokens(&server);
    let first = issued["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();

    let rotated = refresh(&server, &first, None);
    assert_eq!(rotated.status, StatusCode::OK, "{}", body_text(&rotated));
    let second = json(&rotated)["refresh_token"]
        .as_str()
        .expect("new refresh")
        .to_owned();
    let second_access = json(&rotated)["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    assert_ne!(first, second);

    let replay = refresh(&server, &first, None);
    assert_eq!(error_code(&replay), "invalid_grant");
    assert_eq!(
        error_code(&refresh(&server, &second, None)),
        "invalid_grant"
    );
    assert_eq!(server.introspect(&second_access)["active"], false);
}

#[test]
fn refresh_wider_scope_rejected() {
    let server = TestServer::start();
    let code = {
        let params = authorize_params(&[("scope", "read")]);
        let page = authorize(&server, &params);
        let form = hidden_fields(&page);
        let redirect = server.post_form(
            "/oauth2/login",
            &[
                ("request_id", &form["request_id"]),
                ("csrf_token", &form["csrf_token"]),
                ("username", USERNAME),
                ("password", PASSWORD),
            ],
            None,
        );
        location_params(&redirect)["code"].clone()
    };
    let issued = json(&server.redeem_public(&code));
    let refresh_token = issued["refresh_token"].as_str().expect("refresh");

    let wider = refresh(&server, refresh_token, Some("read write"));
    assert_eq!(wider.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&wider), "invalid_scope");

    let same = refresh(&server, refresh_token, Some("read"));
    assert_eq!(
        same.status,
        StatusCode::OK,
        "the token survives a rejected request"
    );
}

#[test]
fn refresh_narrower_scope_granted() {
    let server = TestServer::start();
    let issued = tokens(&server);
    let response = refresh(
        &server,
        issued["refresh_token"].as_str().expect("refresh"),
        Some("read"),
    );

    assert_eq!(response.status, StatusCode::OK);
    let body = json(&response);
    assert_eq!(body["scope"], "read");
    assert_eq!(
        jwt_claims(body["access_token"].as_str().expect("access"))["scope"],
        "read"
    );
}

#[test]
fn client_credentials_refused_for_public_client() {
    let server = TestServer::start();
    let response = server.post_form(
        "/oauth2/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", PUBLIC_CLIENT),
        ],
        None,
    );
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&response), "unauthorized_client");
}

#[test]
fn client_credentials_for_confidential_client() {
    let server = TestServer::start();
    let response = server.post_form(
        "/oauth2/token",
        &[("grant_type", "client_credentials"), ("scope", "read")],
        Some((CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET)),
    );
    assert_eq!(response.status, StatusCode::OK, "{}", body_text(&response));
    let body = json(&response);
    assert!(body.get("refresh_token").is_none());
    assert_eq!(
        jwt_claims(body["access_token"].as_str().expect("access"))["sub"],
        CONFIDENTIAL_CLIENT
    );
}

#[test]
fn client_secret_post_accepted() {
    let server = TestServer::start();
    let response = server.post_form(
        "/oauth2/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CONFIDENTIAL_CLIENT),
            ("client_secret", CONFIDENTIAL_SECRET),
        ],
        None,
    );
    assert_eq!(response.status, StatusCode::OK, "{}", body_text(&response));
}

#[test]
fn wrong_secret_rejected() {
    let server = TestServer::start();
    let basic = server.post_form(
        "/oauth2/token",
        &[("grant_type", "client_credentials")],
        Some((CONFIDENTIAL_CLIENT, "backend-secret-0123456789abcdeF")),
    );
    let post = server.post_form(
        "/oauth2/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CONFIDENTIAL_CLIENT),
            ("client_secret", "nope"),
        ],
        None,
    );
    let missing = server.post_form(
        "/oauth2/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CONFIDENTIAL_CLIENT),
        ],
        None,
    );

    for response in [&basic, &post, &missing] {
        assert_eq!(response.status, StatusCode::UNAUTHORIZED);
        assert_eq!(error_code(response), "invalid_client");
        assert!(response.headers.contains_key(header::WWW_AUTHENTICATE));
    }
}

#[test]
fn two_auth_methods_rejected() {
    let server = TestServer::start();
    let response = server.post_form(
        "/oauth2/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_secret", CONFIDENTIAL_SECRET),
        ],
        Some((CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET)),
    );
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&response), "invalid_request");
}

#[test]
fn token_endpoint_get_refused() {
    let server = TestServer::start();
    let response = server.send(
        Method::GET,
        "/oauth2/token",
        Some("grant_type=client_credentials&client_id=backend&client_secret=x"),
        HeaderMap::new(),
        "",
    );
    assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers[header::ALLOW], "POST");
}

#[test]
fn token_responses_carry_no_store() {
    let server = TestServer::start();
    let code = server.code_for(PUBLIC_CLIENT, PUBLIC_REDIRECT);
    let success = server.redeem_public(&code);
    let failure = server.redeem_public(&code);
    let unauthenticated = server.post_form(
        "/oauth2/token",
        &[("grant_type", "client_credentials")],
        None,
    );

    for response in [&success, &failure, &unauthenticated] {
        assert_eq!(response.headers[header::CACHE_CONTROL], "no-store");
    }
    assert_eq!(success.status, StatusCode::OK);
}

#[test]
fn access_token_claims_follow_rfc9068() {
    let server = TestServer::start();
    let issued = tokens(&server);
    let token = issued["access_token"].as_str().expect("access");
    let header_b64 = token.split('.').next().expect("header");
    let header: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            header_b64,
        )
        .expect("b64"),
    )
    .expect("json");
    let claims = jwt_claims(token);

    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    assert!(header["kid"].is_string());
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["sub"], USERNAME);
    assert_eq!(claims["aud"], ISSUER);
    assert_eq!(claims["client_id"], PUBLIC_CLIENT);
    assert_eq!(claims["scope"], "read write");
    assert!(claims["jti"].is_string());
    let lifetime = claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat");
    assert_eq!(lifetime, 900);
    assert_eq!(issued["expires_in"], 900);
    assert_eq!(issued["token_type"], "Bearer");
}

#[test]
fn resource_parameter_sets_audience() {
    let server = TestServer::start();
    let response = server.post_form(
        "/oauth2/token",
        &[
            ("grant_type", "client_credentials"),
            ("resource", "https://api.example/orders"),
        ],
        Some((CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET)),
    );
    let claims = jwt_claims(json(&response)["access_token"].as_str().expect("access"));
    assert_eq!(claims["aud"], "https://api.example/orders");

    let bad = server.post_form(
        "/oauth2/token",
        &[
            ("grant_type", "client_credentials"),
            ("resource", "not a uri"),
        ],
        Some((CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET)),
    );
    assert_eq!(error_code(&bad), "invalid_target");
}

#[test]
fn revoked_access_token_inactive() {
    let server = TestServer::start();
    let issued = tokens(&server);
    let access = issued["access_token"].as_str().expect("access");
    let jti = jwt_claims(access)["jti"].as_str().expect("jti").to_owned();

    let response = server.post_form(
        "/oauth2/revoke",
        &[("token", access), ("client_id", PUBLIC_CLIENT)],
        None,
    );

    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(server.introspect(access)["active"], false);
    assert!(server.server.is_access_token_revoked(&jti));
}

#[test]
fn revoked_refresh_token_revokes_family() {
    let server = TestServer::start();
    let issued = tokens(&server);
    let refresh_token = issued["refresh_token"].as_str().expect("refresh");
    let access = issued["access_token"].as_str().expect("access");

    let response = server.post_form(
        "/oauth2/revoke",
        &[
            ("token", refresh_token),
            ("token_type_hint", "refresh_token"),
            ("client_id", PUBLIC_CLIENT),
        ],
        None,
    );

    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        error_code(&refresh(&server, refresh_token, None)),
        "invalid_grant"
    );
    assert_eq!(server.introspect(access)["active"], false);
}

#[test]
fn revocation_by_other_client_ignored() {
    let server = TestServer::start();
    let issued = tokens(&server);
    let access = issued["access_token"].as_str().expect("access");

    let response = server.post_form(
        "/oauth2/revoke",
        &[("token", access)],
        Some((CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET)),
    );

    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(server.introspect(access)["active"], true);
}

#[test]
fn introspection_requires_client_authentication() {
    let server = TestServer::start();
    let issued = tokens(&server);
    let access = issued["access_token"].as_str().expect("access");

    let public = server.post_form(
        "/oauth2/introspect",
        &[("token", access), ("client_id", PUBLIC_CLIENT)],
        None,
    );
    let anonymous = server.post_form("/oauth2/introspect", &[("token", access)], None);

    assert_eq!(public.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let active = server.introspect(access);
    assert_eq!(active["active"], true);
    assert_eq!(active["sub"], USERNAME);
    assert_eq!(active["client_id"], PUBLIC_CLIENT);
}

#[test]
fn introspection_of_garbage_inactive() {
    let server = TestServer::start();
    for token in ["garbage", "a.b.c", &"x".repeat(20_000)] {
        assert_eq!(server.introspect(token)["active"], false);
    }
}

#[test]
fn metadata_describes_endpoints() {
    let server = TestServer::start();
    let response = server.send(
        Method::GET,
        "/.well-known/oauth-authorization-server",
        None,
        HeaderMap::new(),
        "",
    );
    let metadata = json(&response);

    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(metadata["issuer"], ISSUER);
    assert_eq!(metadata["token_endpoint"], format!("{ISSUER}/oauth2/token"));
    assert_eq!(metadata["jwks_uri"], format!("{ISSUER}/oauth2/jwks"));
    assert_eq!(
        metadata["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(
        metadata["response_types_supported"],
        serde_json::json!(["code"])
    );
    assert_eq!(
        metadata["authorization_response_iss_parameter_supported"],
        true
    );
}

#[test]
fn jwks_publishes_public_keys_only() {
    let server = TestServer::start();
    let response = server.send(Method::GET, "/oauth2/jwks", None, HeaderMap::new(), "");
    let jwks = json(&response);
    let keys = jwks["keys"].as_array().expect("keys");

    assert_eq!(keys.len(), 2, "the active and the next key");
    for key in keys {
        assert_eq!(key["kty"], "EC");
        assert!(key.get("d").is_none());
    }
}

#[test]
fn rotation_keeps_old_tokens_verifiable() {
    let server = TestServer::start();
    let before = tokens(&server);
    let old_kid = server.server.keys().active_kid();
    let published_next: Vec<String> = server
        .server
        .list_keys()
        .into_iter()
        .filter(|key| key.status.label() == "next")
        .map(|key| key.kid)
        .collect();

    server.server.rotate_keys().expect("rotate");
    let after = tokens(&server);

    let new_kid = server.server.keys().active_kid();
    assert_eq!(published_next, vec![new_kid.clone()]);
    assert_ne!(old_kid, new_kid);
    assert_eq!(
        server.introspect(before["access_token"].as_str().expect("old"))["active"],
        true
    );
    assert_eq!(
        server.introspect(after["access_token"].as_str().expect("new"))["active"],
        true
    );
    let published: Vec<String> = server
        .server
        .keys()
        .verifying_keys()
        .into_iter()
        .map(|(kid, _)| kid)
        .collect();
    assert!(published.contains(&old_kid));
}

#[test]
fn unknown_grant_type_rejected() {
    let server = TestServer::start();
    let response = server.post_form(
        "/oauth2/token",
        &[
            ("grant_type", "password"),
            ("username", USERNAME),
            ("password", PASSWORD),
        ],
        Some((CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET)),
    );
    assert_eq!(error_code(&response), "unsupported_grant_type");
}
