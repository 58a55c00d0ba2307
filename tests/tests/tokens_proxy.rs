//! Token checks through the whole proxy, run in-process with a memory blocklist: route rules,
//! RFC 6750 challenges, identity headers to the upstream, strikes and metrics.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use firewall_agent::bans::memory::MemoryBlocklist;
use firewall_agent::config::Config;
use firewall_agent::daemon::{Agent, RunningAgent};
use firewall_agent::store::Store;
use integration_tests::tokens::{
    ES_KID, EchoUpstream, HttpResponse, JwksServer, TestKeys, claims, header, http_get,
};
use serde_json::{Value, json};

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "orders-api";

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("fw-tokens-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An agent in this process in front of an echo upstream, trusting one issuer.
struct Proxy {
    keys: TestKeys,
    _jwks: JwksServer,
    _upstream: EchoUpstream,
    blocklist: Arc<MemoryBlocklist>,
    agent: Option<RunningAgent>,
    _dir: TempDir,
}

fn config_text(dir: &Path, upstream: SocketAddr, jwks_url: &str, strikes: u32) -> String {
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
upstream = "http://{upstream}"

[xdp]
interfaces = ["lo"]

[bans]
strikes = {strikes}
allow_loopback = false

[admin]
socket_path = "{dir}/admin.sock"

[metrics]
listen = "127.0.0.1:0"

[store]
path = "{dir}/state.redb"

[audit]
path = "{dir}/audit.jsonl"

[[tokens.issuers]]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
jwks_url = "{jwks_url}"

[[routes]]
name = "orders"
path = "/orders/{{*rest}}"
[routes.auth]
scopes = ["orders:read"]

[[routes]]
name = "admin"
path = "/admin"
[routes.auth]
scopes = ["orders:read", "admin"]

[[routes]]
name = "optional"
path = "/optional"
[routes.auth]
required = false

[[routes]]
name = "other-issuer"
path = "/partners"
[routes.auth]
issuers = ["{ISSUER}"]
"#,
        dir = dir.display()
    )
}

impl Proxy {
    async fn start(name: &str, strikes: u32) -> Self {
        let dir = TempDir::new(name);
        let keys = TestKeys::generate();
        let jwks = JwksServer::start(&keys.jwks());
        let upstream = EchoUpstream::start();
        let text = config_text(&dir.0, upstream.addr, &jwks.url(), strikes);
        let config_path = dir.0.join("agent.toml");
        let config = Config::parse(&text, &config_path).expect("parse the config");
        config
            .validate(&firewall_agent::config::ConfigOrigin::File(config_path))
            .expect("a valid config");
        let store = Store::open(&dir.0.join("state.redb")).expect("open the store");
        let blocklist = Arc::new(MemoryBlocklist::new());
        let agent = Agent::new(config, store, Arc::clone(&blocklist) as _)
            .bind()
            .await
            .expect("bind the agent")
            .start();
        Self {
            keys,
            _jwks: jwks,
            _upstream: upstream,
            blocklist,
            agent: Some(agent),
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.agent.as_ref().expect("running").proxy_addr()
    }

    fn token(&self, claims: &Value) -> String {
        self.keys.mint(&header("ES256", ES_KID), claims)
    }

    async fn get(&self, target: &str, headers: &[(&str, &str)]) -> HttpResponse {
        let addr = self.addr();
        let target = target.to_owned();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let borrowed: Vec<(&str, &str)> = headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            http_get(addr, &target, &borrowed)
        })
        .await
        .expect("request thread")
    }

    async fn get_with_token(&self, target: &str, token: &str) -> HttpResponse {
        let authorization = format!("Bearer {token}");
        self.get(target, &[("authorization", &authorization)]).await
    }

    async fn metrics(&self) -> String {
        let addr = self.agent.as_ref().expect("running").metrics_addr();
        tokio::task::spawn_blocking(move || http_get(addr, "/metrics", &[]).body)
            .await
            .expect("metrics thread")
    }

    async fn stop(mut self) {
        if let Some(agent) = self.agent.take() {
            agent.stop().await;
        }
    }
}

fn valid_claims() -> Value {
    claims(ISSUER, AUDIENCE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_token_gets_bare_challenge() {
    let proxy = Proxy::start("missing", 100).await;

    let response = proxy.get("/orders/1", &[]).await;

    assert_eq!(response.status, 401);
    assert_eq!(response.header("www-authenticate"), Some("Bearer"));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_token_gets_invalid_token_challenge() {
    let proxy = Proxy::start("invalid", 100).await;
    let mut claims = valid_claims();
    claims["aud"] = json!("billing-api");
    let token = proxy.token(&claims);

    let response = proxy.get_with_token("/orders/1", &token).await;

    assert_eq!(response.status, 401);
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\", error_description=\"the audience is not this resource\"")
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_scope_gets_403_with_scope() {
    let proxy = Proxy::start("scope", 100).await;
    let token = proxy.token(&valid_claims());

    let response = proxy.get_with_token("/admin", &token).await;

    assert_eq!(response.status, 403);
    let challenge = response.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer error=\"insufficient_scope\""), "{challenge}");
    assert!(challenge.ends_with("scope=\"orders:read admin\""), "{challenge}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_token_forwards_identity_headers() {
    let proxy = Proxy::start("identity", 100).await;
    let token = proxy.token(&valid_claims());
    let authorization = format!("Bearer {token}");

    let response = proxy
        .get(
            "/orders/1",
            &[
                ("authorization", &authorization),
                ("x-auth-subject", "admin"),
                ("x-auth-scopes", "everything"),
            ],
        )
        .await;

    assert_eq!(response.status, 200, "{}", response.body);
    let forwarded = response.body.to_ascii_lowercase();
    assert!(forwarded.contains("x-auth-subject: user-42\r\n"), "{forwarded}");
    assert!(!forwarded.contains("x-auth-subject: admin"), "{forwarded}");
    assert!(
        forwarded.contains("x-auth-scopes: orders:read orders:write\r\n"),
        "{forwarded}"
    );
    assert!(!forwarded.contains("everything"), "{forwarded}");
    assert!(forwarded.contains("x-auth-client-id: client-7\r\n"), "{forwarded}");
    assert!(
        forwarded.contains(&format!("x-auth-issuer: {ISSUER}\r\n")),
        "{forwarded}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_stripped_on_public_route() {
    let proxy = Proxy::start("public", 100).await;

    let response = proxy
        .get("/public", &[("x-auth-subject", "admin"), ("x-auth-issuer", ISSUER)])
        .await;

    assert_eq!(response.status, 200);
    let forwarded = response.body.to_ascii_lowercase();
    assert!(!forwarded.contains("x-auth-"), "{forwarded}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_token_ignored() {
    let proxy = Proxy::start("query", 100).await;
    let token = proxy.token(&valid_claims());

    let response = proxy
        .get(&format!("/orders/1?access_token={token}"), &[])
        .await;

    assert_eq!(response.status, 401);
    assert_eq!(response.header("www-authenticate"), Some("Bearer"));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_route_passes_without_token_but_checks_one() {
    let proxy = Proxy::start("optional", 100).await;
    let mut expired = valid_claims();
    expired["exp"] = json!(integration_tests::tokens::now() - 3600);
    let token = proxy.token(&expired);

    let without = proxy.get("/optional", &[]).await;
    let with_bad = proxy.get_with_token("/optional", &token).await;

    assert_eq!(without.status, 200);
    assert!(!without.body.to_ascii_lowercase().contains("x-auth-"));
    assert_eq!(with_bad.status, 401);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_authorization_header_is_bad_request() {
    let proxy = Proxy::start("repeated", 100).await;
    let token = proxy.token(&valid_claims());
    let authorization = format!("Bearer {token}");

    let response = proxy
        .get(
            "/orders/1",
            &[("authorization", &authorization), ("authorization", &authorization)],
        )
        .await;

    assert_eq!(response.status, 400);
    assert!(
        response
            .header("www-authenticate")
            .is_some_and(|value| value.starts_with("Bearer error=\"invalid_request\"")),
        "{:?}",
        response.headers
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_failures_strike_toward_ban() {
    let proxy = Proxy::start("strikes", 3).await;
    let client = IpAddr::V4(Ipv4Addr::LOCALHOST);

    for _ in 0..3 {
        let response = proxy.get_with_token("/orders/1", "not-a-token").await;
        assert_eq!(response.status, 401);
    }

    assert!(
        proxy.blocklist.ban_of(client).is_some(),
        "three token failures did not ban the client"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_token_is_no_strike() {
    let proxy = Proxy::start("no-strike", 2).await;

    for _ in 0..4 {
        assert_eq!(proxy.get("/orders/1", &[]).await.status, 401);
    }

    assert!(proxy.blocklist.banned_addresses().is_empty());
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_results_by_reason() {
    let proxy = Proxy::start("metrics", 100).await;
    let good = proxy.token(&valid_claims());
    let mut expired = valid_claims();
    expired["exp"] = json!(integration_tests::tokens::now() - 3600);
    let expired = proxy.token(&expired);

    assert_eq!(proxy.get_with_token("/orders/1", &good).await.status, 200);
    assert_eq!(proxy.get_with_token("/orders/2", &good).await.status, 200);
    assert_eq!(proxy.get_with_token("/orders/1", &expired).await.status, 401);
    let metrics = proxy.metrics().await;

    assert!(
        metrics.contains("firewall_tokens_checks_total{result=\"accepted\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("firewall_tokens_checks_total{result=\"expired\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("firewall_tokens_cache_hits_total 1"), "{metrics}");
    assert!(
        metrics.contains("firewall_http_requests_total{outcome=\"token_rejected\"} 1"),
        "{metrics}"
    );
    proxy.stop().await;
}
