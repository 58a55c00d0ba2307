//! Helpers for the in-process tests: an echo upstream, an agent over a memory blocklist, and an
//! HTTP client. Every server listens on 127.0.0.1 with a port the kernel picks.

#![allow(
    dead_code,
    reason = "each test file uses a different subset of the helpers"
)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use firewall_agent::bans::memory::MemoryBlocklist;
use firewall_agent::config::{Config, Overrides};
use firewall_agent::daemon::{Agent, RunningAgent};
use firewall_agent::store::Store;

/// What the echo upstream saw of a request, returned as its JSON response body.
#[derive(Debug, serde::Deserialize)]
pub struct Echo {
    pub method: String,
    pub uri: String,
    pub headers: BTreeMap<String, Vec<String>>,
    pub body: String,
}

impl Echo {
    /// Returns the values of header `name`.
    pub fn header(&self, name: &str) -> Vec<String> {
        self.headers.get(name).cloned().unwrap_or_default()
    }
}

/// An upstream that responds 200 with an [`Echo`] of each request, and adds a hop-by-hop
/// `Keep-Alive` header that the proxy must remove.
pub struct EchoUpstream {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn start_echo_upstream() -> EchoUpstream {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("upstream binds");
    let addr = listener.local_addr().expect("upstream address");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(|request: Request<Incoming>| async move {
                    Ok::<_, Infallible>(echo(request).await)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    EchoUpstream { addr, task }
}

async fn echo(request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();

    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &parts.headers {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(value.to_str().unwrap_or("<binary>").to_owned());
    }
    let echo = serde_json::json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });

    Response::builder()
        .header("content-type", "application/json")
        .header("keep-alive", "timeout=5")
        .header("x-upstream", "echo")
        .body(Full::new(Bytes::from(echo.to_string())))
        .expect("valid response")
}

/// An agent running in this process over a memory blocklist, with its files in a temp dir.
pub struct TestAgent {
    pub running: Option<RunningAgent>,
    pub blocklist: Arc<MemoryBlocklist>,
    pub proxy_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub socket_path: PathBuf,
    pub store_path: PathBuf,
    pub dir: tempfile::TempDir,
}

impl TestAgent {
    /// Stops the agent and waits for its tasks.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }

    pub fn running(&self) -> &RunningAgent {
        self.running.as_ref().expect("agent is running")
    }

    pub fn proxy_url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy_addr, path)
    }
}

/// Returns a config for an agent in `dir`, in front of `upstream`, with every listener on an
/// ephemeral loopback port.
pub fn test_config(dir: &std::path::Path, upstream: SocketAddr) -> Config {
    let mut config = Config::default();
    config.apply(Overrides {
        upstream: Some(format!("http://{upstream}").parse().expect("valid URL")),
        listen: Some("127.0.0.1:0".parse().expect("valid address")),
        interfaces: vec!["lo".into()],
        admin_socket: Some(dir.join("admin.sock")),
        metrics_listen: Some("127.0.0.1:0".parse().expect("valid address")),
        store_path: Some(dir.join("state.redb")),
        ..Overrides::default()
    });
    config.proxy.request_timeout_seconds = 5;
    // Attack excerpts in the test output would look like failures.
    config.audit.path = Some(dir.join("audit.jsonl"));
    // Every test client connects from loopback, which the default config allowlists.
    config.bans.allow_loopback = false;
    config
}

/// Starts an agent with `config`; `change` adjusts it first.
pub async fn start_agent(upstream: SocketAddr, change: impl FnOnce(&mut Config)) -> TestAgent {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(dir.path(), upstream);
    change(&mut config);
    config
        .validate(&firewall_agent::config::ConfigOrigin::Flags)
        .expect("test config is valid");

    let blocklist = Arc::new(MemoryBlocklist::new());
    let store = Store::open(&config.store.path).expect("store opens");
    let agent = Agent::new(config.clone(), store, blocklist.clone());
    agent.restore_bans().expect("bans restore");
    let bound = agent.bind().await.expect("listeners bind");
    let proxy_addr = bound.proxy_addr();
    let metrics_addr = bound.metrics_addr();

    TestAgent {
        running: Some(bound.start()),
        blocklist,
        proxy_addr,
        metrics_addr,
        socket_path: config.admin.socket_path.clone(),
        store_path: config.store.path.clone(),
        dir,
    }
}

/// A response with its body read.
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "body is not the expected JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

/// Creates an HTTP/1.1 client that opens a new connection per request, so that each request
/// is independent of the others.
pub fn http_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(HttpConnector::new())
}

pub async fn send(client: &TestClient, request: Request<Full<Bytes>>) -> Reply {
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .expect("response within 10 s")
        .expect("request succeeds");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body reads").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(client: &TestClient, url: &str) -> Reply {
    let request = Request::get(url)
        .body(Full::new(Bytes::new()))
        .expect("valid request");
    send(client, request).await
}
