//! Response headers, CORS and the client address behind trusted proxies, through the real
//! proxy on loopback.

use std::collections::BTreeMap;
use std::time::Duration;

use firewall_agent::proxy::headers::{CorsConfig, CorsPolicy, HeaderRules, HeadersConfig};
use firewall_agent::routes::RouteConfig;
use firewall_agent::store::BanOrigin;
use integration_tests::edge::{EdgeAgent, RawExchange, RecordingUpstream, send_raw};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Sends one request with `extra` header lines and `Connection: close`.
fn request(agent: &EdgeAgent, method: &str, path: &str, extra: &str) -> RawExchange {
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nhost: api.example\r\n{extra}connection: close\r\n\r\n"
    );
    send_raw(agent.addr, raw.as_bytes(), TIMEOUT)
}

/// Returns the value of response header `name` (lowercase), if present.
fn header<'a>(exchange: &'a RawExchange, name: &str) -> Option<&'a str> {
    let head = exchange.response.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[test]
fn forwarded_response_gets_security_headers() {
    let upstream = RecordingUpstream::start();
    let agent = EdgeAgent::start("headers-default", upstream.addr, |_| {});

    let exchange = request(&agent, "GET", "/items", "");

    assert_eq!(exchange.statuses(), [200], "{}", exchange.response);
    assert_eq!(header(&exchange, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&exchange, "cache-control"), Some("no-store"));
    assert_eq!(header(&exchange, "x-frame-options"), Some("DENY"));
    assert_eq!(header(&exchange, "x-xss-protection"), Some("0"));
    assert_eq!(header(&exchange, "referrer-policy"), Some("no-referrer"));
    assert_eq!(
        header(&exchange, "content-security-policy"),
        Some("default-src 'none'; frame-ancestors 'none'")
    );
    assert!(header(&exchange, "cross-origin-resource-policy").is_some());
    assert!(header(&exchange, "permissions-policy").is_some());
    assert_eq!(
        header(&exchange, "server"),
        None,
        "upstream software leaked"
    );
    assert_eq!(
        header(&exchange, "x-powered-by"),
        None,
        "upstream software leaked"
    );
    assert_eq!(
        header(&exchange, "strict-transport-security"),
        None,
        "HSTS without TLS"
    );
}

#[test]
fn generated_response_gets_security_headers() {
    let upstream = RecordingUpstream::start();
    let agent = EdgeAgent::start("headers-generated", upstream.addr, |config| {
        config.proxy.max_body_bytes = 4;
    });

    let raw = "POST /items HTTP/1.1\r\nhost: api.example\r\ncontent-length: 10\r\nconnection: close\r\n\r\n0123456789";
    let exchange = send_raw(agent.addr, raw.as_bytes(), TIMEOUT);

    assert_eq!(exchange.statuses(), [413], "{}", exchange.response);
    assert_eq!(header(&exchange, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&exchange, "cache-control"), Some("no-store"));
}

#[test]
fn route_overrides_and_removes_headers() {
    let upstream = RecordingUpstream::start();
    let agent = EdgeAgent::start("headers-route", upstream.addr, |config| {
        let rules = HeaderRules::new(&HeadersConfig {
            set: BTreeMap::from([("cache-control".into(), "public, max-age=60".into())]),
            remove: vec!["x-frame-options".into()],
        })
        .expect("valid header rules");
        config.routes.push(RouteConfig {
            path: "/public/{*rest}".into(),
            headers: Some(rules),
            ..RouteConfig::default()
        });
    });

    let public = request(&agent, "GET", "/public/logo", "");
    let other = request(&agent, "GET", "/private", "");

    assert_eq!(header(&public, "cache-control"), Some("public, max-age=60"));
    assert_eq!(header(&public, "x-frame-options"), None);
    assert_eq!(header(&public, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&other, "cache-control"), Some("no-store"));
    assert_eq!(header(&other, "x-frame-options"), Some("DENY"));
}

fn start_cors_agent(name: &str, upstream: &RecordingUpstream) -> EdgeAgent {
    EdgeAgent::start(name, upstream.addr, |config| {
        let policy = CorsPolicy::new(&CorsConfig {
            allowed_origins: vec!["https://app.example".into()],
            allowed_methods: vec!["GET".into(), "PUT".into()],
            allowed_headers: vec!["authorization".into(), "content-type".into()],
            exposed_headers: vec!["x-request-id".into()],
            allow_credentials: true,
            max_age_seconds: 300,
        })
        .expect("valid CORS policy");
        config.routes.push(RouteConfig {
            path: "/api/{*rest}".into(),
            cors: Some(policy),
            ..RouteConfig::default()
        });
    })
}

#[test]
fn cors_preflight_is_answered_locally() {
    let upstream = RecordingUpstream::start();
    let agent = start_cors_agent("cors-preflight", &upstream);

    let allowed = request(
        &agent,
        "OPTIONS",
        "/api/items",
        "origin: https://app.example\r\naccess-control-request-method: PUT\r\naccess-control-request-headers: content-type\r\n",
    );
    let denied = request(
        &agent,
        "OPTIONS",
        "/api/items",
        "origin: https://evil.example\r\naccess-control-request-method: PUT\r\n",
    );

    assert_eq!(allowed.statuses(), [204], "{}", allowed.response);
    assert_eq!(
        header(&allowed, "access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        header(&allowed, "access-control-allow-methods"),
        Some("GET, PUT")
    );
    assert_eq!(
        header(&allowed, "access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(header(&allowed, "access-control-max-age"), Some("300"));
    assert_eq!(denied.statuses(), [403], "{}", denied.response);
    assert_eq!(header(&denied, "access-control-allow-origin"), None);
    assert!(
        upstream.requests().is_empty(),
        "preflights were forwarded: {:?}",
        upstream.requests()
    );
}

#[test]
fn cors_headers_only_for_allowed_origin() {
    let upstream = RecordingUpstream::start();
    let agent = start_cors_agent("cors-actual", &upstream);

    let allowed = request(
        &agent,
        "GET",
        "/api/items",
        "origin: https://app.example\r\n",
    );
    let denied = request(
        &agent,
        "GET",
        "/api/items",
        "origin: https://evil.example\r\n",
    );

    assert_eq!(allowed.statuses(), [200]);
    assert_eq!(
        header(&allowed, "access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        header(&allowed, "access-control-expose-headers"),
        Some("x-request-id")
    );
    assert_eq!(denied.statuses(), [200]);
    assert_eq!(header(&denied, "access-control-allow-origin"), None);
    assert_eq!(header(&denied, "access-control-allow-credentials"), None);
}

#[test]
fn client_behind_trusted_proxy_is_banned() {
    let upstream = RecordingUpstream::start();
    let agent = EdgeAgent::start("forwarded-trusted", upstream.addr, |config| {
        config.proxy.trusted_proxies = vec!["127.0.0.1/32".parse().expect("valid range")];
    });
    agent
        .running()
        .bans()
        .apply(
            "203.0.113.7"
                .parse::<std::net::IpAddr>()
                .expect("valid address"),
            Some(Duration::from_secs(60)),
            BanOrigin::Manual,
            "edge test",
        )
        .expect("ban the client");

    let banned = request(&agent, "GET", "/a", "x-forwarded-for: 203.0.113.7\r\n");
    let spoofed_left = request(
        &agent,
        "GET",
        "/b",
        "x-forwarded-for: 203.0.113.7, 203.0.113.8\r\n",
    );

    assert_eq!(banned.statuses(), [403], "{}", banned.response);
    assert_eq!(spoofed_left.statuses(), [200], "{}", spoofed_left.response);
    let recorded = upstream.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        recorded[0].header("x-forwarded-for"),
        Some("203.0.113.7, 203.0.113.8, 127.0.0.1")
    );
}

#[test]
fn untrusted_forwarding_headers_are_replaced() {
    let upstream = RecordingUpstream::start();
    let agent = EdgeAgent::start("forwarded-untrusted", upstream.addr, |_| {});
    agent
        .running()
        .bans()
        .apply(
            "203.0.113.7"
                .parse::<std::net::IpAddr>()
                .expect("valid address"),
            Some(Duration::from_secs(60)),
            BanOrigin::Manual,
            "edge test",
        )
        .expect("ban the client");

    let exchange = request(
        &agent,
        "GET",
        "/a",
        "x-forwarded-for: 203.0.113.7\r\nx-forwarded-proto: https\r\nforwarded: for=203.0.113.7\r\n",
    );

    assert_eq!(exchange.statuses(), [200], "{}", exchange.response);
    let recorded = upstream.requests();
    assert_eq!(recorded[0].header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(recorded[0].header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        recorded[0].header("forwarded"),
        Some("for=127.0.0.1;proto=http;host=\"api.example\"")
    );
}

#[test]
fn unknown_client_from_trusted_proxy_is_rejected() {
    let upstream = RecordingUpstream::start();
    let agent = EdgeAgent::start("forwarded-unknown", upstream.addr, |config| {
        config.proxy.trusted_proxies = vec!["127.0.0.1/32".parse().expect("valid range")];
    });

    let exchange = request(&agent, "GET", "/a", "forwarded: for=unknown\r\n");

    assert_eq!(exchange.statuses(), [400], "{}", exchange.response);
    assert!(upstream.requests().is_empty());
}
