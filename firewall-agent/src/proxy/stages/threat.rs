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

/// Longest excerpt written into an event, in characters.
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
        let findings = detect::inspect_fields(&fields);
        Some(self.policy.judge(findings, route))
    }

    fn report(&self, request: &RequestContext, verdict: &Verdict, blocked: bool) {
        let rules: Vec<&str> = verdict.findings.iter().map(|finding| finding.rule.id).collect();
        let rules = rules.join(",");
        tracing::info!(
            client = %request.client(),
            request_id = %request.request_id(),
            route = request.route_name().unwrap_or(""),
            score = verdict.score,
            blocked,
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
                let blocked = verdict.block && !(self.allowlisted)(request.client());
                if !verdict.findings.is_empty() {
                    self.report(request, &verdict, blocked);
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
        rule_id: finding.rule.number,
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
