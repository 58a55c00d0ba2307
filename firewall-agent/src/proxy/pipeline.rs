//! The request pipeline: a chain of stages that each inspect a request and let it continue or
//! reject it.
//!
//! Stages run in order before the request is forwarded. The first rejection ends the chain and
//! becomes the response, and a stage may also respond to a request itself. The ban check and
//! the rate limit come first. Threat detection, token checks and request validation follow in
//! the same chain.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use std::sync::OnceLock;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};

use super::ProxyBody;
use super::stages::tokens::BearerCheck;
use crate::routes::MatchedRoute;

/// Identifier of one request, sent upstream as `x-request-id` and written in logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(pub u64);

impl RequestId {
    /// Returns the identifier as a header value: 16 lowercase hexadecimal digits, as displayed.
    pub fn header_value(self) -> http::HeaderValue {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 16];
        for (index, byte) in text.iter_mut().enumerate() {
            let shift = 60 - 4 * index;
            *byte = DIGITS[((self.0 >> shift) & 0xf) as usize];
        }
        // Hexadecimal digits are always a valid header value.
        http::HeaderValue::from_bytes(&text).unwrap_or(http::HeaderValue::from_static("0"))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The identity that a verified access token gives a request.
#[derive(Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub` claim, if it has one (client-credentials tokens may not).
    pub subject: Option<String>,
    /// The token's `client_id` claim.
    pub client_id: Option<String>,
    /// The granted scopes.
    pub scopes: Vec<String>,
    /// The token's issuer.
    pub issuer: String,
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("subject", &self.subject)
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .field("issuer", &self.issuer)
            .finish()
    }
}

/// The parts of a request that stages inspect: the client, the request head, the matched
/// route and the buffered body.
pub struct RequestContext {
    client: IpAddr,
    request_id: RequestId,
    parts: http::request::Parts,
    route: Option<MatchedRoute>,
    body: Bytes,
    /// The body to forward when a stage rewrote it, such as after HTML sanitization.
    forward_body: OnceLock<Bytes>,
    principal: OnceLock<Principal>,
    /// The result of checking the bearer token, kept so that the token is verified once even
    /// when two stages need it.
    bearer: OnceLock<BearerCheck>,
    /// Headers that stages add to the response, whether it is a rejection or the upstream's.
    response_headers: std::sync::Mutex<AddedHeaders>,
}

/// Headers that stages add to a response, one value per name.
///
/// A short list rather than a `HeaderMap`, because a request gets only a few of them, such as
/// the rate-limit pair on every limited route. A map would allocate and hash each name here
/// and again in the response.
#[derive(Debug, Default)]
pub struct AddedHeaders(smallvec::SmallVec<[(HeaderName, HeaderValue); 2]>);

impl AddedHeaders {
    /// Adds a header, replacing an earlier one of that name.
    fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        match self.0.iter_mut().find(|(added, _)| *added == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// Sets each header on `headers`, replacing every value of that name there.
    pub fn apply_to(self, headers: &mut HeaderMap) {
        for (name, value) in self.0 {
            headers.insert(name, value);
        }
    }
}

impl fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body, the query and the headers may carry secrets: only their shape.
        f.debug_struct("RequestContext")
            .field("client", &self.client)
            .field("request_id", &self.request_id)
            .field("method", &self.parts.method)
            .field("path", &self.parts.uri.path())
            .field("route", &self.route)
            .field("body_bytes", &self.body.len())
            .field("principal", &self.principal.get())
            .finish_non_exhaustive()
    }
}

impl RequestContext {
    /// Creates the context of a request from `client` (canonicalised here, so an IPv4-mapped
    /// IPv6 peer is seen as IPv4).
    pub fn new(client: IpAddr, request_id: RequestId, parts: http::request::Parts) -> Self {
        Self {
            client: client.to_canonical(),
            request_id,
            parts,
            route: None,
            body: Bytes::new(),
            forward_body: OnceLock::new(),
            principal: OnceLock::new(),
            bearer: OnceLock::new(),
            response_headers: std::sync::Mutex::new(AddedHeaders::default()),
        }
    }

    /// Sets the route the request matched.
    #[must_use]
    pub fn with_route(mut self, route: Option<MatchedRoute>) -> Self {
        self.route = route;
        self
    }

    /// Sets the buffered request body.
    #[must_use]
    pub fn with_body(mut self, body: Bytes) -> Self {
        self.body = body;
        self
    }

    /// Returns the route the request matched, if any.
    pub fn route(&self) -> Option<&MatchedRoute> {
        self.route.as_ref()
    }

    /// Returns the name of the matched route, if any.
    pub fn route_name(&self) -> Option<&str> {
        self.route.as_ref().map(MatchedRoute::name)
    }

    /// Returns the request body, read in full before the pipeline runs. Empty for a request
    /// without a body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Replaces the body that is forwarded upstream. [`RequestContext::body`] keeps returning
    /// what the client sent. Only the first call has an effect: returns false when a stage
    /// already replaced the body.
    pub fn set_forward_body(&self, body: Bytes) -> bool {
        self.forward_body.set(body).is_ok()
    }

    /// Returns the body to forward upstream: the replacement a stage set, else the client's.
    pub fn forward_body(&self) -> &Bytes {
        self.forward_body.get().unwrap_or(&self.body)
    }

    /// Returns whether a stage replaced the body that is forwarded.
    pub fn body_replaced(&self) -> bool {
        self.forward_body.get().is_some()
    }

    /// Records the identity from a verified access token. Only the first call has an effect:
    /// returns false when a principal was already set.
    pub fn set_principal(&self, principal: Principal) -> bool {
        self.principal.set(principal).is_ok()
    }

    /// Returns the identity from a verified access token, if a stage verified one.
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.get()
    }

    /// Records the result of checking the bearer token. Only the first call has an effect:
    /// returns false when a result was already recorded.
    pub fn set_bearer_check(&self, check: BearerCheck) -> bool {
        self.bearer.set(check).is_ok()
    }

    /// Returns the result of checking the bearer token, if a stage checked it.
    pub fn bearer_check(&self) -> Option<&BearerCheck> {
        self.bearer.get()
    }

    /// Adds a header to the response of this request, replacing an earlier one of that name.
    pub fn add_response_header(&self, name: http::HeaderName, value: http::HeaderValue) {
        self.response_headers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name, value);
    }

    /// Takes the headers that stages added for the response.
    pub fn take_response_headers(&self) -> AddedHeaders {
        std::mem::take(
            &mut *self
                .response_headers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Returns the client's address: the TCP peer, canonical.
    pub fn client(&self) -> IpAddr {
        self.client
    }

    /// Returns the request's identifier.
    pub fn request_id(&self) -> RequestId {
        self.request_id
    }

    /// Returns the request method.
    pub fn method(&self) -> &Method {
        &self.parts.method
    }

    /// Returns the request path, without the query.
    pub fn path(&self) -> &str {
        self.parts.uri.path()
    }

    /// Returns the request query, without the `?`.
    pub fn query(&self) -> Option<&str> {
        self.parts.uri.query()
    }

    /// Returns the request headers as the client sent them.
    pub fn headers(&self) -> &HeaderMap {
        &self.parts.headers
    }

    /// Returns the request target as the client sent it.
    pub fn uri(&self) -> &http::Uri {
        &self.parts.uri
    }

    /// Returns the HTTP version the client used.
    pub fn version(&self) -> http::Version {
        self.parts.version
    }
}

/// Final outcome of a request, for the `firewall_http_requests` metric and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    /// Forwarded to the upstream, which responded.
    Forwarded,
    /// Rejected by the rate limit with 429.
    RateLimited,
    /// Rejected with 503 because the rate-limit store failed and a rule fails closed.
    LimitStoreUnavailable,
    /// Rejected with 403 because the client is banned. The XDP program normally drops such
    /// clients first; this covers interfaces without it.
    Banned,
    /// The upstream could not be reached or failed mid-response: 502.
    UpstreamError,
    /// The upstream sent no response headers in time: 504.
    UpstreamTimeout,
    /// The request body was larger than the route allows: 413.
    BodyTooLarge,
    /// The client's request body could not be read (reset, malformed framing or too slow):
    /// 400.
    BodyUnreadable,
    /// A stage responded to the request itself, as for an endpoint that the agent serves.
    Answered,
    /// The request broke a validation rule: 400, 404, 405, 413 or 415 with a problem body.
    Invalid,
    /// Rejected with 403 because the threat detectors scored it at or above the threshold.
    ThreatBlocked,
    /// The access token was missing, invalid or not accepted on the route: 401 (400 for a
    /// malformed `Authorization` header).
    TokenRejected,
    /// The access token lacks a scope the route needs: 403.
    InsufficientScope,
    /// A trusted proxy sent a forwarding header that does not name the client: 400.
    InvalidForwarding,
}

impl RequestOutcome {
    /// Every outcome, in label order.
    pub const ALL: [RequestOutcome; 14] = [
        RequestOutcome::Forwarded,
        RequestOutcome::RateLimited,
        RequestOutcome::LimitStoreUnavailable,
        RequestOutcome::Banned,
        RequestOutcome::UpstreamError,
        RequestOutcome::UpstreamTimeout,
        RequestOutcome::BodyTooLarge,
        RequestOutcome::BodyUnreadable,
        RequestOutcome::Answered,
        RequestOutcome::Invalid,
        RequestOutcome::ThreatBlocked,
        RequestOutcome::TokenRejected,
        RequestOutcome::InsufficientScope,
        RequestOutcome::InvalidForwarding,
    ];

    /// Label used in metrics and logs.
    pub const fn label(self) -> &'static str {
        match self {
            RequestOutcome::Forwarded => "forwarded",
            RequestOutcome::RateLimited => "rate_limited",
            RequestOutcome::LimitStoreUnavailable => "limit_store_unavailable",
            RequestOutcome::Banned => "banned",
            RequestOutcome::UpstreamError => "upstream_error",
            RequestOutcome::UpstreamTimeout => "upstream_timeout",
            RequestOutcome::BodyTooLarge => "body_too_large",
            RequestOutcome::BodyUnreadable => "body_unreadable",
            RequestOutcome::Answered => "answered",
            RequestOutcome::Invalid => "invalid",
            RequestOutcome::ThreatBlocked => "threat_blocked",
            RequestOutcome::TokenRejected => "token_rejected",
            RequestOutcome::InsufficientScope => "insufficient_scope",
            RequestOutcome::InvalidForwarding => "invalid_forwarding",
        }
    }
}

/// A stage's reason to reject a request, turned into the response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Response status.
    pub status: StatusCode,
    /// Outcome recorded in metrics.
    pub outcome: RequestOutcome,
    /// Short reason sent to the client in the JSON body. Must not reveal internals.
    pub reason: Cow<'static, str>,
    /// Value of the `Retry-After` header, rounded up to whole seconds, if any.
    pub retry_after: Option<Duration>,
}

/// A stage's decision.
#[derive(Debug)]
pub enum StageOutcome {
    /// Pass the request to the next stage, or upstream after the last one.
    Continue,
    /// Stop here and respond with the rejection.
    Reject(Rejection),
    /// Stop here and send this response, which the stage built itself (for endpoints that the
    /// agent serves, such as OAuth). `outcome` is recorded in metrics.
    Respond {
        outcome: RequestOutcome,
        response: Response<ProxyBody>,
    },
}

/// The end of the pipeline for a request that did not continue upstream.
#[derive(Debug)]
pub enum Stopped {
    /// A stage rejected the request.
    Rejected(Rejection),
    /// A stage responded to the request itself.
    Responded {
        outcome: RequestOutcome,
        response: Response<ProxyBody>,
    },
}

/// The future a stage returns. Boxed so that [`Stage`] stays object-safe.
pub type StageFuture<'a> = Pin<Box<dyn Future<Output = StageOutcome> + Send + 'a>>;

/// One check in the pipeline.
pub trait Stage: Send + Sync + 'static {
    /// Short name for logs, such as `rate_limit`.
    fn name(&self) -> &'static str;

    /// Inspects a request. Security-relevant rejections also emit an event to the ban manager.
    fn inspect<'a>(&'a self, request: &'a RequestContext) -> StageFuture<'a>;

    /// Sees the status of the response to a request this stage let through or answered, or
    /// that a later stage rejected. Called once per request; must return quickly.
    fn on_response(&self, request: &RequestContext, status: StatusCode) {
        let _ = (request, status);
    }
}

/// The ordered chain of stages.
#[derive(Clone, Default)]
pub struct Pipeline {
    stages: Vec<Arc<dyn Stage>>,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.stages.iter().map(|stage| stage.name()).collect();
        f.debug_struct("Pipeline").field("stages", &names).finish()
    }
}

impl Pipeline {
    /// Creates a pipeline that runs `stages` in order.
    pub fn new(stages: Vec<Arc<dyn Stage>>) -> Self {
        Self { stages }
    }

    /// Runs the stages in order. Returns the name of the first stage that stopped the request
    /// and how, or `Ok` when every stage let the request continue.
    pub async fn run(&self, request: &RequestContext) -> Result<(), (&'static str, Stopped)> {
        for stage in &self.stages {
            match stage.inspect(request).await {
                StageOutcome::Continue => {}
                StageOutcome::Reject(rejection) => {
                    return Err((stage.name(), Stopped::Rejected(rejection)));
                }
                StageOutcome::Respond { outcome, response } => {
                    return Err((stage.name(), Stopped::Responded { outcome, response }));
                }
            }
        }
        Ok(())
    }

    /// Tells every stage the response status of `request`.
    pub fn response_sent(&self, request: &RequestContext, status: StatusCode) {
        for stage in &self.stages {
            stage.on_response(request, status);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RequestId;

    #[test]
    fn request_id_header_matches_display() {
        for id in [0, 0xab, 0x0123_4567_89ab_cdef, u64::MAX] {
            let request_id = RequestId(id);

            let value = request_id.header_value();

            assert_eq!(value, request_id.to_string().as_str(), "id {id:#x}");
        }
    }
}
