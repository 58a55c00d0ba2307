//! Rate-limit rules keyed on the token subject and the client id, through the whole proxy with
//! real signed tokens: the rate-limit stage verifies the token before the token stage runs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use firewall_agent::bans::memory::MemoryBlocklist;
use firewall_agent::config::Config;
use firewall_agent::daemon::{Agent, RunningAgent};
use firewall_agent::store::Store;
use integration_tests::tokens::{ES_KID, EchoUpstream, JwksServer, TestKeys, claims, header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "orders-api";
/// Requests per hour for one token subject.
const SUBJECT_LIMIT: usize = 3;
/// Requests per hour for one client id.
const CLIENT_ID_LIMIT: usize = 5;
/// Second loopback address that clients connect from. Linux routes all of 127.0.0.0/8 to `lo`.
const SECOND_CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("fw-limits-tokens-{}-{name}", std::process::id()));
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

fn config_text(dir: &Path, upstream: SocketAddr, jwks_url: &str) -> String {
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
upstream = "http://{upstream}"

[xdp]
interfaces = ["lo"]

[admin]
socket_path = "{dir}/admin.sock"

[metrics]
listen = "127.0.0.1:0"

[store]
path = "{dir}/state.redb"

[[tokens.issuers]]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
jwks_url = "{jwks_url}"

[[routes]]
name = "orders"
path = "/orders/{{*rest}}"
[routes.auth]
scopes = ["orders:read"]

[[limits.rules]]
name = "per-subject"
key = ["token_subject"]
routes = ["/orders/*"]
tiers = [{{ requests = {SUBJECT_LIMIT}, window_seconds = 3600 }}]

[[limits.rules]]
name = "per-client-id"
key = ["client_id"]
routes = ["/orders/*"]
tiers = [{{ requests = {CLIENT_ID_LIMIT}, window_seconds = 3600 }}]
"#,
        dir = dir.display()
    )
}

/// An agent in this process in front of an echo upstream, trusting one issuer.
struct Proxy {
    keys: TestKeys,
    _jwks: JwksServer,
    _upstream: EchoUpstream,
    agent: Option<RunningAgent>,
    _dir: TempDir,
}

impl Proxy {
    async fn start(name: &str) -> Self {
        let dir = TempDir::new(name);
        let keys = TestKeys::generate();
        let jwks = JwksServer::start(&keys.jwks());
        let upstream = EchoUpstream::start();
        let text = config_text(&dir.0, upstream.addr, &jwks.url());
        let config_path = dir.0.join("agent.toml");
        let config = Config::parse(&text, &config_path).expect("parse the config");
        config
            .validate(&firewall_agent::config::ConfigOrigin::File(config_path))
            .expect("a valid config");
        let store = Store::open(&dir.0.join("state.redb")).expect("open the store");
        let blocklist = Arc::new(MemoryBlocklist::new());
        let agent = Agent::new(config, store, blocklist as _)
            .bind()
            .await
            .expect("bind the agent")
            .start();
        Self {
            keys,
            _jwks: jwks,
            _upstream: upstream,
            agent: Some(agent),
            _dir: dir,
        }
    }

    fn agent(&self) -> &RunningAgent {
        self.agent.as_ref().expect("running")
    }

    /// Mints a valid token for `subject` issued to `client_id`.
    fn token(&self, subject: &str, client_id: &str) -> String {
        let mut claims: Value = claims(ISSUER, AUDIENCE);
        claims["sub"] = json!(subject);
        claims["client_id"] = json!(client_id);
        self.keys.mint(&header("ES256", ES_KID), &claims)
    }

    /// Sends `GET /orders/1` with `token` from the local address `from` and returns the status.
    async fn order(&self, from: Ipv4Addr, token: &str) -> u16 {
        get_status(from, self.agent().proxy_addr(), "/orders/1", Some(token)).await
    }

    async fn metrics(&self) -> String {
        let addr = self.agent().metrics_addr();
        let response = get(Ipv4Addr::LOCALHOST, addr, "/metrics", None).await;
        response
            .split_once("\r\n\r\n")
            .map_or(response.clone(), |(_, body)| body.to_owned())
    }

    async fn stop(mut self) {
        if let Some(agent) = self.agent.take() {
            agent.stop().await;
        }
    }
}

/// Sends one HTTP/1.1 GET from the local address `from` and returns the raw response.
async fn get(from: Ipv4Addr, to: SocketAddr, target: &str, token: Option<&str>) -> String {
    let socket = tokio::net::TcpSocket::new_v4().expect("create a socket");
    socket
        .bind(SocketAddr::new(IpAddr::V4(from), 0))
        .expect("bind the client address");
    let mut stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(to))
        .await
        .expect("connect in time")
        .expect("connect to the agent");

    let mut request = format!("GET {target} HTTP/1.1\r\nhost: {to}\r\nconnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");

    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read the response");
    String::from_utf8_lossy(&raw).into_owned()
}

async fn get_status(from: Ipv4Addr, to: SocketAddr, target: &str, token: Option<&str>) -> u16 {
    let response = get(from, to, target, token).await;
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_subjects_from_one_address_get_separate_quotas() {
    let proxy = Proxy::start("subjects").await;
    let alice = proxy.token("alice", "app-a");
    let bob = proxy.token("bob", "app-b");

    assert_eq!(proxy.order(Ipv4Addr::LOCALHOST, &alice).await, 200);
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("firewall_tokens_cache_hits_total 0"),
        "the token was verified twice for one request: {metrics}"
    );
    for _ in 1..SUBJECT_LIMIT {
        assert_eq!(proxy.order(Ipv4Addr::LOCALHOST, &alice).await, 200);
    }
    assert_eq!(proxy.order(Ipv4Addr::LOCALHOST, &alice).await, 429);

    for request in 0..SUBJECT_LIMIT {
        assert_eq!(
            proxy.order(Ipv4Addr::LOCALHOST, &bob).await,
            200,
            "bob's request {request} after alice used her quota"
        );
    }
    assert_eq!(proxy.order(Ipv4Addr::LOCALHOST, &bob).await, 429);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_subject_from_two_addresses_shares_one_quota() {
    let proxy = Proxy::start("addresses").await;
    let alice = proxy.token("alice", "app-a");

    assert_eq!(proxy.order(Ipv4Addr::LOCALHOST, &alice).await, 200);
    assert_eq!(proxy.order(SECOND_CLIENT, &alice).await, 200);
    assert_eq!(proxy.order(Ipv4Addr::LOCALHOST, &alice).await, 200);

    assert_eq!(proxy.order(SECOND_CLIENT, &alice).await, 429);
    assert_eq!(proxy.order(Ipv4Addr::LOCALHOST, &alice).await, 429);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subjects_of_one_client_id_share_its_quota() {
    let proxy = Proxy::start("client-id").await;

    for user in 0..CLIENT_ID_LIMIT {
        let token = proxy.token(&format!("user-{user}"), "shared-app");
        assert_eq!(
            proxy.order(Ipv4Addr::LOCALHOST, &token).await,
            200,
            "user {user}"
        );
    }
    let token = proxy.token("one-more-user", "shared-app");
    assert_eq!(proxy.order(Ipv4Addr::LOCALHOST, &token).await, 429);

    let token = proxy.token("one-more-user", "other-app");
    assert_eq!(proxy.order(Ipv4Addr::LOCALHOST, &token).await, 200);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tokens_share_one_anonymous_bucket() {
    let proxy = Proxy::start("anonymous").await;
    let mut wrong_audience = claims(ISSUER, AUDIENCE);
    wrong_audience["aud"] = json!("billing-api");
    let invalid = proxy.keys.mint(&header("ES256", ES_KID), &wrong_audience);

    // The subject and client id parts are empty, so every invalid token counts in the one
    // anonymous bucket of each rule. The token stage still rejects the admitted ones with 401.
    for request in 0..SUBJECT_LIMIT {
        let status = proxy.order(SECOND_CLIENT, &invalid).await;
        assert_eq!(status, 401, "invalid token {request}");
    }
    assert_eq!(proxy.order(Ipv4Addr::LOCALHOST, &invalid).await, 429);
    let status = get_status(
        Ipv4Addr::LOCALHOST,
        proxy.agent().proxy_addr(),
        "/orders/1",
        None,
    )
    .await;
    assert_eq!(
        status, 429,
        "a request without a token is in the same bucket"
    );

    let alice = proxy.token("alice", "app-a");
    assert_eq!(proxy.order(Ipv4Addr::LOCALHOST, &alice).await, 200);
    proxy.stop().await;
}
