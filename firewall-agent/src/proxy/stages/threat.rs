//! The threat stage: runs the detectors over every request and blocks those whose anomaly
//! score reaches the threshold.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};

use crate::detect::{self, Finding, RequestParts, ThreatPolicy, Verdict};
use crate::events::{EventFinding, EventSinks, SecurityEvent};
use crate::proxy::pipeline::{
    Rejection, RequestContext, RequestOutcome, Stage, StageFuture, StageOutcome,
};

/// Response header with the verdict, sent only when `[threat] verdict_header` is on:
/// `score=7; blocked=false; rules=sqli-union,xss-event-handler`.
pub static VERDICT_HEADER: HeaderName = HeaderName::from_static("x-firewall-threat");

/// Maximum excerpt length written into an event, in characters.
const EVENT_EXCERPT_CHARS: usize = 64;

/// Parts of field names that mark a value as a secret, whose excerpt is never written.
const SECRET_NAME_PARTS: &[&str] = &[
    "pass", "pwd", "token", "secret", "authorization", "auth", "api_key", "apikey", "api-key",
    "credential", "session", "sess", "sid", "cookie:id", "private", "otp", "pin",
];

/// Tells whether a client is on the allowlist.
pub type AllowlistCheck = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// Inspects every request with the threat detectors. At or above the request threshold the
/// request gets 403 with outcome `threat_blocked`, unless the mode is detection-only, the
/// findings are detection-only or excluded, or the client is allowlisted. Every request with
/// findings is reported as [`SecurityEvent::RequestInspected`].
pub struct ThreatStage {
    policy: Arc<ThreatPolicy>,
    events: EventSinks,
    allowlisted: AllowlistCheck,
}

impl fmt::Debug for ThreatStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreatStage")
            .field("policy", &self.policy)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl ThreatStage {
    /// Creates the stage.
    pub fn new(policy: Arc<ThreatPolicy>, events: EventSinks, allowlisted: AllowlistCheck) -> Self {
        // At start rather than in the first request, which would wait for it.
        detect::compile_patterns();
        Self {
            policy,
            events,
            allowlisted,
        }
    }

    /// Inspects a request and decides, without side effects.
    pub fn judge(&self, request: &RequestContext) -> Option<Verdict> {
        let route = request.route_name();
        if !self.policy.inspects(route) {
            return None;
        }
        let fields = detect::extract_fields(RequestParts {
            path: request.path(),
            query: request.query(),
            headers: request.headers(),
            inspected_headers: self.policy.inspected_headers(),
            body: request.body(),
        });
        let findings = detect::inspect_fields_at(&fields, self.policy.paranoia_level(route));
        Some(self.policy.judge(findings, route))
    }

    /// Logs and emits the findings of a request. `allowlisted` is true when the allowlist let a
    /// blocking verdict pass.
    fn report(
        &self,
        request: &RequestContext,
        verdict: &Verdict,
        blocked: bool,
        allowlisted: bool,
    ) {
        let rules: Vec<&str> = verdict.findings.iter().map(|finding| finding.rule.id).collect();
        let rules = rules.join(",");
        tracing::info!(
            client = %request.client(),
            request_id = %request.request_id(),
            route = request.route_name().unwrap_or(""),
            score = verdict.score,
            blocked,
            allowlisted,
            rules = %rules,
            "request inspected"
        );
        if !self.events.is_empty() {
            self.events.emit(&SecurityEvent::RequestInspected {
                client: request.client(),
                request_id: request.request_id(),
                route: request.route_name().map(str::to_owned),
                method: request.method().as_str().to_owned(),
                path: request.path().chars().take(EVENT_EXCERPT_CHARS * 4).collect(),
                score: verdict.score,
                blocked,
                findings: verdict.findings.iter().map(event_finding).collect(),
            });
        }
    }
}

impl Stage for ThreatStage {
    fn name(&self) -> &'static str {
        "threat"
    }

    fn inspect<'a>(&'a self, request: &'a RequestContext) -> StageFuture<'a> {
        let outcome = match self.judge(request) {
            None => StageOutcome::Continue,
            Some(verdict) => {
                let allowlisted = verdict.block && (self.allowlisted)(request.client());
                let blocked = verdict.block && !allowlisted;
                if !verdict.findings.is_empty() {
                    self.report(request, &verdict, blocked, allowlisted);
                }
                if self.policy.verdict_header() {
                    add_verdict_header(request, &verdict, blocked);
                }
                if blocked {
                    StageOutcome::Reject(Rejection {
                        status: StatusCode::FORBIDDEN,
                        outcome: RequestOutcome::ThreatBlocked,
                        reason: "request blocked by the threat detectors".into(),
                        retry_after: None,
                    })
                } else {
                    StageOutcome::Continue
                }
            }
        };
        Box::pin(std::future::ready(outcome))
    }
}

fn add_verdict_header(request: &RequestContext, verdict: &Verdict, blocked: bool) {
    let mut rules: Vec<&str> = verdict.findings.iter().map(|finding| finding.rule.id).collect();
    rules.sort_unstable();
    rules.dedup();
    let value = format!(
        "score={}; blocked={blocked}; rules={}",
        verdict.score,
        rules.join(",")
    );
    if let Ok(value) = HeaderValue::from_str(&value) {
        request.add_response_header(VERDICT_HEADER.clone(), value);
    }
}

/// Converts a finding for an event, with a short excerpt and secrets redacted.
pub fn event_finding(finding: &Finding) -> EventFinding {
    EventFinding {
        rule_id: finding.rule.id,
        severity: u8::try_from(finding.rule.severity.weight()).unwrap_or(u8::MAX),
        field: finding.field.clone(),
        excerpt: redacted_excerpt(&finding.field, &finding.excerpt),
    }
}

/// Returns a short excerpt of a value, or `[redacted]` when the field's name marks it as a
/// secret or the value carries credentials.
pub fn redacted_excerpt(field: &str, value: &str) -> String {
    let name = field.to_ascii_lowercase();
    let secret_name = SECRET_NAME_PARTS.iter().any(|part| name.contains(part));
    let secret_value = value.contains("bearer ") || value.contains("basic ");
    if secret_name || secret_value {
        return "[redacted]".into();
    }
    let mut excerpt: String = value
        .chars()
        .map(|character| if character.is_control() { ' ' } else { character })
        .take(EVENT_EXCERPT_CHARS)
        .collect();
    if value.chars().count() > EVENT_EXCERPT_CHARS {
        excerpt.push('…');
    }
    excerpt
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use std::time::Duration;

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use tokio::net::TcpListener;

    use super::*;
    use crate::bans::memory::MemoryBlocklist;
    use crate::detect::config::Exclusion;
    use crate::detect::{ThreatConfig, ThreatMode};
    use crate::events::EventSink;
    use crate::proxy::{Pipeline, ProxyServer, ProxyState, Upstream};
    use crate::routes::{RouteConfig, RouteTable};
    use crate::shutdown::Shutdown;
    use crate::telemetry::Metrics;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<SecurityEvent>>);

    impl EventSink for Recorder {
        fn emit(&self, event: &SecurityEvent) {
            self.0.lock().expect("recorder lock").push(event.clone());
        }
    }

    /// Starts an upstream on loopback that responds to every request with 200 `ok`.
    async fn ok_upstream() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let address = listener.local_addr().expect("upstream address");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = service_fn(|_request: Request<Incoming>| async {
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                tokio::spawn(
                    auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned(),
                );
            }
        });
        address
    }

    struct TestProxy {
        address: SocketAddr,
        events: Arc<Recorder>,
        shutdown: Shutdown,
        client: Client<HttpConnector, Full<Bytes>>,
    }

    impl TestProxy {
        /// Starts a proxy whose route `/pages/{*rest}` excludes XSS findings in `json:html`.
        async fn start(config: ThreatConfig, allowlisted: bool) -> Self {
            let route = crate::detect::RouteThreatConfig {
                exclusions: vec![Exclusion {
                    rules: vec!["xss".into()],
                    fields: vec!["json:html".into()],
                    route: None,
                }],
                ..Default::default()
            };
            Self::start_with_route(config, route, allowlisted).await
        }

        /// Starts a proxy whose route `/pages/{*rest}` has the threat settings `route`.
        async fn start_with_route(
            config: ThreatConfig,
            route: crate::detect::RouteThreatConfig,
            allowlisted: bool,
        ) -> Self {
            let upstream = ok_upstream().await;
            let recorder = Arc::new(Recorder::default());
            let mut events = EventSinks::new();
            events.push(recorder.clone());
            let policy = Arc::new(ThreatPolicy::new(&config, [("pages", &route)]));
            let stage = ThreatStage::new(policy, events.clone(), Arc::new(move |_| allowlisted));
            let routes = RouteTable::new(&[RouteConfig {
                name: Some("pages".into()),
                path: "/pages/{*rest}".into(),
                ..RouteConfig::default()
            }])
            .expect("valid routes");
            let metrics = Arc::new(Metrics::new(Arc::new(MemoryBlocklist::new())));
            let url = format!("http://{upstream}").parse().expect("upstream url");
            let state = ProxyState::new(
                Pipeline::new(vec![Arc::new(stage)]),
                Upstream::new(
                url,
                Duration::from_secs(5),
                crate::tls::client_config(rustls::RootCertStore::empty()).expect("client config"),
            ),
                metrics,
            )
            .with_routes(routes, 1 << 20)
            .with_events(events);
            let server = ProxyServer::bind("127.0.0.1:0".parse().expect("address"), Arc::new(state))
                .await
                .expect("bind proxy");
            let address = server.local_addr();
            let shutdown = Shutdown::new();
            tokio::spawn(server.serve(shutdown.listener()));
            Self {
                address,
                events: recorder,
                shutdown,
                client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            }
        }

        async fn post(&self, path: &str, json: &'static str) -> (u16, Option<String>) {
            self.post_typed(path, "application/json", json.as_bytes()).await
        }

        async fn post_typed(&self, path: &str, content_type: &str, body: &'static [u8]) -> (u16, Option<String>) {
            let request = Request::post(format!("http://{}{path}", self.address))
                .header("content-type", content_type)
                .body(Full::new(Bytes::from_static(body)))
                .expect("request");
            let response = self.client.request(request).await.expect("proxy response");
            let verdict = response
                .headers()
                .get(&VERDICT_HEADER)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            let status = response.status().as_u16();
            let _ = response.into_body().collect().await;
            (status, verdict)
        }

        /// Returns the `RequestInspected` events so far; the proxy also emits others.
        fn events(&self) -> Vec<SecurityEvent> {
            let events = self.events.0.lock().expect("recorder lock");
            events
                .iter()
                .filter(|event| matches!(event, SecurityEvent::RequestInspected { .. }))
                .cloned()
                .collect()
        }
    }

    impl Drop for TestProxy {
        fn drop(&mut self) {
            self.shutdown.trigger();
        }
    }

    const ATTACK: &str = r#"{"id": "1 UNION SELECT password FROM users", "password": "hunter2' or '1'='1"}"#;
    const BENIGN: &str = r#"{"name": "Mary O'Brien", "note": "select a plan from the menu"}"#;

    #[tokio::test]
    async fn attack_is_blocked_and_benign_passes() {
        let proxy = TestProxy::start(ThreatConfig::default(), false).await;

        assert_eq!(proxy.post("/api/items", ATTACK).await, (403, None));
        assert_eq!(proxy.post("/api/items", BENIGN).await, (200, None));

        let events = proxy.events();
        assert_eq!(events.len(), 1, "{events:?}");
        let SecurityEvent::RequestInspected {
            blocked, score, findings, path, ..
        } = &events[0]
        else {
            panic!("unexpected event {:?}", events[0]);
        };
        assert!(*blocked);
        assert!(*score >= 5);
        assert_eq!(path, "/api/items");
        let id_finding = findings.iter().find(|finding| finding.field == "json:id").expect("id finding");
        assert!(id_finding.excerpt.contains("union select"), "{id_finding:?}");
        let password = findings.iter().find(|finding| finding.field == "json:password").expect("password finding");
        assert_eq!(password.excerpt, "[redacted]");
    }

    #[tokio::test]
    async fn paranoia_level_adds_rules() {
        const PROBE: &str = r#"{"db": "northwind"}"#;
        let default = TestProxy::start(ThreatConfig::default(), false).await;
        assert_eq!(default.post("/api/items", PROBE).await.0, 200);

        let strict = ThreatConfig {
            paranoia_level: 2,
            ..ThreatConfig::default()
        };
        let strict = TestProxy::start(strict, false).await;
        assert_eq!(strict.post("/api/items", PROBE).await.0, 403);
        assert!(matches!(
            strict.events().as_slice(),
            [SecurityEvent::RequestInspected { findings, .. }]
                if findings.iter().any(|finding| finding.rule_id == "sqli-database-name")
        ));
    }

    #[tokio::test]
    async fn route_paranoia_level_overrides() {
        const PROBE: &str = r#"{"db": "northwind"}"#;
        let route = crate::detect::RouteThreatConfig {
            paranoia_level: Some(2),
            ..Default::default()
        };
        let proxy = TestProxy::start_with_route(ThreatConfig::default(), route, false).await;

        assert_eq!(proxy.post("/pages/home", PROBE).await.0, 403);
        assert_eq!(proxy.post("/api/items", PROBE).await.0, 200);
    }

    #[tokio::test]
    async fn binary_upload_passes_uninspected() {
        let proxy = TestProxy::start(ThreatConfig::default(), false).await;
        let png: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00\xc0\xaf\x00";

        assert_eq!(proxy.post_typed("/api/avatar", "image/png", png).await, (200, None));
        assert_eq!(proxy.events(), Vec::new(), "a binary upload produced findings");
    }

    #[tokio::test]
    async fn detect_mode_passes_but_reports() {
        let config = ThreatConfig {
            mode: ThreatMode::Detect,
            verdict_header: true,
            ..ThreatConfig::default()
        };
        let proxy = TestProxy::start(config, false).await;

        let (status, verdict) = proxy.post("/api/items", ATTACK).await;
        assert_eq!(status, 200);
        let verdict = verdict.expect("verdict header");
        assert!(verdict.contains("blocked=false"), "{verdict}");
        assert!(verdict.contains("sqli-union"), "{verdict}");
        assert!(matches!(
            proxy.events().as_slice(),
            [SecurityEvent::RequestInspected { blocked: false, .. }]
        ));
    }

    #[tokio::test]
    async fn route_exclusion_and_allowlist_pass() {
        let proxy = TestProxy::start(ThreatConfig::default(), false).await;
        let xss = r#"{"html": "<script>alert(1)</script>"}"#;

        assert_eq!(proxy.post("/pages/home", xss).await.0, 200);
        assert_eq!(proxy.post("/api/items", xss).await.0, 403);

        let allowlisted = TestProxy::start(ThreatConfig::default(), true).await;
        assert_eq!(allowlisted.post("/api/items", ATTACK).await.0, 200);
        assert!(matches!(
            allowlisted.events().as_slice(),
            [SecurityEvent::RequestInspected { blocked: false, .. }]
        ));
    }

    #[test]
    fn secrets_are_redacted_and_excerpts_truncated() {
        assert_eq!(redacted_excerpt("json:user.password", "x' or 1=1"), "[redacted]");
        assert_eq!(redacted_excerpt("cookie:sessionid", "abc"), "[redacted]");
        assert_eq!(redacted_excerpt("header:referer", "bearer abc"), "[redacted]");
        let long = "a".repeat(200);
        let excerpt = redacted_excerpt("query:q", &long);
        assert_eq!(excerpt.chars().count(), EVENT_EXCERPT_CHARS + 1);
        assert!(excerpt.ends_with('…'));
    }
}
