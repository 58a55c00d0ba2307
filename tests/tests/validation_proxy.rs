//! Request validation through a real proxy on loopback: raw HTTP/1.1 requests go to the
//! agent's proxy listener with the validation stage, which forwards what passes to a
//! recording upstream. Nothing here needs root.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use firewall_agent::bans::memory::MemoryBlocklist;
use firewall_agent::config::Config;
use firewall_agent::proxy::stages::ValidationStage;
use firewall_agent::proxy::{Pipeline, ProxyServer, ProxyState, Upstream};
use firewall_agent::routes::RouteTable;
use firewall_agent::shutdown::Shutdown;
use firewall_agent::telemetry::Metrics;

/// An HTTP/1.1 upstream on loopback that records every request body it receives and responds
/// 200. Stops accepting when dropped.
struct RecordingUpstream {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
}

impl RecordingUpstream {
    fn start() -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the upstream");
        let addr = listener.local_addr().expect("upstream address");
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (recorded, stop_flag) = (Arc::clone(&bodies), Arc::clone(&stop));
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stop_flag.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(stream) = stream {
                    let recorded = Arc::clone(&recorded);
                    thread::spawn(move || serve_recording(stream, &recorded));
                }
            }
        });
        Self { addr, bodies, stop }
    }

    fn bodies(&self) -> Vec<Vec<u8>> {
        self.bodies.lock().expect("bodies lock").clone()
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it reads the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Serves keep-alive requests on one connection until the peer closes it.
fn serve_recording(stream: TcpStream, recorded: &Mutex<Vec<Vec<u8>>>) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0;
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        recorded.lock().expect("bodies lock").push(body);
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .is_err()
        {
            return;
        }
    }
}

/// A proxy with only the validation stage, on an ephemeral loopback port, in its own runtime.
struct Proxy {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    fn start(config_text: &str, upstream: SocketAddr) -> Self {
        let config = Config::parse(config_text, Path::new("validation.toml")).expect("valid config");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let metrics = Arc::new(Metrics::new(Arc::new(MemoryBlocklist::new())));
        let stage = ValidationStage::from_config(&config, Arc::clone(metrics.validation()))
            .expect("validation compiles");
        let routes = RouteTable::new(&config.routes).expect("routes compile");
        let url = format!("http://{upstream}").parse().expect("upstream url");
        let state = ProxyState::new(
            Pipeline::new(vec![Arc::new(stage)]),
            Upstream::new(
                url,
                Duration::from_secs(5),
                firewall_agent::tls::client_config(rustls::RootCertStore::empty()).expect("client config"),
            ),
            Arc::clone(&metrics),
        )
        .with_routes(routes, config.proxy.max_body_bytes);

        let shutdown = Shutdown::new();
        let listener = shutdown.listener();
        let addr = runtime.block_on(async {
            let server = ProxyServer::bind((Ipv4Addr::LOCALHOST, 0).into(), Arc::new(state))
                .await
                .expect("bind the proxy");
            let addr = server.local_addr();
            tokio::spawn(server.serve(listener));
            addr
        });
        Self {
            addr,
            metrics,
            shutdown,
            runtime: Some(runtime),
        }
    }

    /// Sends one request with `Connection: close` and returns the status, the headers
    /// (lowercase names) and the body.
    fn send(&self, method: &str, target: &str, content_type: Option<&str>, body: &[u8]) -> Response {
        let headers: Vec<(&str, &str)> = content_type.map(|value| ("content-type", value)).into_iter().collect();
        self.send_with_headers(method, target, &headers, body)
    }

    fn send_with_headers(&self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let mut stream = TcpStream::connect(self.addr).expect("connect to the proxy");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set a read timeout");
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nhost: api.example\r\nconnection: close\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).expect("send the head");
        stream.write_all(body).expect("send the body");

        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("read the response");
        Response::parse(&raw)
    }

    fn metrics_text(&self) -> String {
        self.metrics.encode().expect("encode metrics")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn parse(raw: &[u8]) -> Self {
        let split = raw
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .expect("a complete response head");
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .expect("a status line");
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        Self {
            status,
            headers,
            body: raw[split + 4..].to_vec(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }

    fn problem(&self) -> serde_json::Value {
        assert_eq!(self.header("content-type"), Some("application/problem+json"));
        serde_json::from_slice(&self.body).expect("a JSON problem body")
    }
}

/// A directory with the schemas of the `/users/{id}` route, removed on drop.
struct SchemaDir(PathBuf);

impl SchemaDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("fw-validation-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the schema directory");
        let user = serde_json::json!({
            "type": "object",
            "required": ["name", "password"],
            "properties": {
                "name": {"type": "string", "maxLength": 20},
                "password": {"type": "string"},
                "bio": {"type": "string"}
            },
            "additionalProperties": false
        });
        std::fs::write(path.join("user.json"), user.to_string()).expect("write the schema");
        Self(path)
    }

    fn config(&self, mode: &str) -> String {
        format!(
            r#"
[[routes]]
name = "users"
path = "/users/{{id}}"

[routes.validation]
mode = "{mode}"
methods = ["PUT"]
content_types = ["application/json"]
body_schema = "{}/user.json"
rich_text = ["/bio"]
"#,
            self.0.display()
        )
    }
}

impl Drop for SchemaDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus/openapi")
        .join(name)
}

#[test]
fn valid_request_reaches_upstream_unchanged() {
    let schemas = SchemaDir::new("valid");
    let upstream = RecordingUpstream::start();
    let proxy = Proxy::start(&schemas.config("enforce"), upstream.addr);
    let body = b"{ \"name\":\"ada\",\n  \"password\": \"p\\u00e4ss<b>\" }";

    let response = proxy.send("PUT", "/users/1", Some("application/json"), body);

    assert_eq!(response.status, 200);
    assert_eq!(upstream.bodies(), [body.to_vec()]);
}

#[test]
fn invalid_requests_get_problem_details() {
    let schemas = SchemaDir::new("invalid");
    let upstream = RecordingUpstream::start();
    let proxy = Proxy::start(&schemas.config("enforce"), upstream.addr);
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));

    let schema = proxy.send("PUT", "/users/1", Some("application/json"), br#"{"name": 42, "password": "hunter2"}"#);
    let method = proxy.send("DELETE", "/users/1", None, b"");
    let media = proxy.send("PUT", "/users/1", Some("text/plain"), b"name=ada");
    let nesting = proxy.send("PUT", "/users/1", Some("application/json"), deep.as_bytes());
    let utf8 = proxy.send("PUT", "/users/1", Some("application/json"), b"{\"name\": \"a\xc3\x28\", \"password\": \"x\"}");
    let duplicate = proxy.send(
        "PUT",
        "/users/1",
        Some("application/json"),
        br#"{"name": "a", "password": "x", "password": "y"}"#,
    );

    assert_eq!(schema.status, 400);
    let problem = schema.problem();
    assert_eq!(problem["status"], 400);
    assert_eq!(problem["invalid-params"][0]["name"], "/name");
    assert!(!String::from_utf8_lossy(&schema.body).contains("hunter2"));
    assert_eq!(method.status, 405);
    assert_eq!(method.header("allow"), Some("PUT"));
    assert_eq!(method.problem()["status"], 405);
    assert_eq!(media.status, 415);
    assert_eq!(media.problem()["status"], 415);
    assert_eq!(nesting.status, 400);
    assert_eq!(nesting.problem()["invalid-params"][0]["name"], "/0".repeat(64));
    assert_eq!(utf8.status, 400);
    assert_eq!(utf8.problem()["invalid-params"][0]["name"], "/name");
    assert_eq!(duplicate.status, 400);
    assert_eq!(duplicate.problem()["invalid-params"][0]["name"], "/password");
    assert!(upstream.bodies().is_empty(), "an invalid request reached the upstream");
}

#[test]
fn coded_bodies_get_415_with_accept_encoding() {
    let upstream = RecordingUpstream::start();
    let proxy = Proxy::start("", upstream.addr);
    let coded = [("content-type", "application/json"), ("content-encoding", "gzip")];
    let plain = [("content-type", "application/json"), ("content-encoding", "identity")];

    let rejected = proxy.send_with_headers("POST", "/orders", &coded, b"\x1f\x8b\x08\x00\x00");
    let passed = proxy.send_with_headers("POST", "/orders", &plain, br#"{"id": 1}"#);

    assert_eq!(rejected.status, 415);
    assert_eq!(rejected.header("accept-encoding"), Some("identity"));
    assert_eq!(rejected.problem()["status"], 415);
    assert_eq!(passed.status, 200);
    assert_eq!(upstream.bodies(), [br#"{"id": 1}"#.to_vec()], "only the plain body reaches the upstream");
}

#[test]
fn report_mode_passes_and_counts() {
    let schemas = SchemaDir::new("report");
    let upstream = RecordingUpstream::start();
    let proxy = Proxy::start(&schemas.config("report"), upstream.addr);
    let body = br#"{"name": 42, "bio": "<script>x()</script>"}"#;

    let response = proxy.send("PUT", "/users/1", Some("application/json"), body);

    assert_eq!(response.status, 200);
    assert_eq!(upstream.bodies(), [body.to_vec()], "report mode forwards the body as sent");
    let metrics = proxy.metrics_text();
    let reported = metrics
        .lines()
        .find(|line| line.starts_with("firewall_validation_violations_total{") && line.contains("action=\"reported\""))
        .unwrap_or_else(|| panic!("no reported violation in:\n{metrics}"));
    assert!(reported.contains("route=\"users\""), "{reported}");
    assert!(reported.ends_with(" 1"), "{reported}");
}

#[test]
fn rich_text_is_sanitized_and_password_stays_identical() {
    let schemas = SchemaDir::new("sanitize");
    let upstream = RecordingUpstream::start();
    let proxy = Proxy::start(&schemas.config("enforce"), upstream.addr);
    let password = r#""<script>p\u0061ss\/w0rd</script> \"q\"""#;
    let body = format!("{{\"password\":  {password},\n \"bio\": \"<p onclick=\\\"steal()\\\">hi</p><script>x()</script>\", \"name\": \"ada\"}}");

    let response = proxy.send("PUT", "/users/1", Some("application/json"), body.as_bytes());

    assert_eq!(response.status, 200);
    let forwarded = upstream.bodies();
    assert_eq!(forwarded.len(), 1);
    let forwarded = String::from_utf8(forwarded[0].clone()).expect("UTF-8 body");
    let expected = format!("{{\"password\":  {password},\n \"bio\": \"<p>hi</p>\", \"name\": \"ada\"}}");
    assert_eq!(forwarded, expected);
}

#[test]
fn openapi_petstore_is_enforced_without_contacting_servers() {
    let upstream = RecordingUpstream::start();
    let config = format!("[openapi]\nfile = \"{}\"\n", corpus("petstore-3.0.yaml").display());
    let proxy = Proxy::start(&config, upstream.addr);

    let found = proxy.send("GET", "/pet/10", None, b"");
    let created = proxy.send("POST", "/pet", Some("application/json"), br#"{"name": "rex", "photoUrls": []}"#);
    let bad_id = proxy.send("GET", "/pet/ten", None, b"");
    let bad_status = proxy.send("GET", "/pet/findByStatus?status=lost", None, b"");
    let undeclared = proxy.send("GET", "/admin", None, b"");
    let method = proxy.send("PATCH", "/pet/10", None, b"");

    assert_eq!(found.status, 200);
    assert_eq!(created.status, 200);
    assert_eq!(bad_id.status, 400);
    assert_eq!(bad_id.problem()["invalid-params"][0]["name"], "petId");
    assert_eq!(bad_id.problem()["invalid-params"][0]["in"], "path");
    assert_eq!(bad_status.status, 400);
    assert_eq!(bad_status.problem()["invalid-params"][0]["in"], "query");
    assert_eq!(undeclared.status, 404);
    assert_eq!(method.status, 405);
    assert_eq!(method.header("allow"), Some("GET, POST, DELETE"));
    assert_eq!(upstream.bodies().len(), 2, "only the two valid requests were forwarded");
}
