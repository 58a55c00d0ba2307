//! The request pipeline: a chain of stages that each inspect a request and let it continue or
//! reject it.
//!
//! Stages run in order before the request is forwarded. The first rejection ends the chain and
//! becomes the response. Rate limiting is the first stage; token checks, request validation and
//! threat scoring plug into the same chain.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};

/// Identifier of one request, sent upstream as `x-request-id` and written in logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The parts of a request that stages inspect: the client, the request line and the headers.
/// The body is not buffered, so stages cannot read it.
#[derive(Debug)]
pub struct RequestContext {
    client: IpAddr,
    request_id: RequestId,
    parts: http::request::Parts,
    /// Headers that stages add to the response, whether it is a rejection or the upstream's.
    response_headers: std::sync::Mutex<HeaderMap>,
}

impl RequestContext {
    /// Creates the context of a request from `client` (canonicalised here, so an IPv4-mapped
    /// IPv6 peer is seen as IPv4).
    pub fn new(client: IpAddr, request_id: RequestId, parts: http::request::Parts) -> Self {
        Self {
            client: client.to_canonical(),
            request_id,
            parts,
            response_headers: std::sync::Mutex::new(HeaderMap::new()),
        }
    }

    /// Adds a header to the response of this request, replacing an earlier one of that name.
    pub fn add_response_header(&self, name: http::HeaderName, value: http::HeaderValue) {
        self.response_headers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name, value);
    }

    /// Takes the headers that stages added for the response.
    pub fn take_response_headers(&self) -> HeaderMap {
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

    /// Gives back the request head, to forward it.
    pub fn into_parts(self) -> http::request::Parts {
        self.parts
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
}

impl RequestOutcome {
    /// Every outcome, in label order.
    pub const ALL: [RequestOutcome; 6] = [
        RequestOutcome::Forwarded,
        RequestOutcome::RateLimited,
        RequestOutcome::LimitStoreUnavailable,
        RequestOutcome::Banned,
        RequestOutcome::UpstreamError,
        RequestOutcome::UpstreamTimeout,
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StageOutcome {
    /// Pass the request to the next stage, or upstream after the last one.
    Continue,
    /// Stop here and respond with the rejection.
    Reject(Rejection),
}

/// The future a stage returns. Boxed so that [`Stage`] stays object-safe.
pub type StageFuture<'a> = Pin<Box<dyn Future<Output = StageOutcome> + Send + 'a>>;

/// One check in the pipeline.
pub trait Stage: Send + Sync + 'static {
    /// Short name for logs, such as `rate_limit`.
    fn name(&self) -> &'static str;

    /// Inspects a request. Security-relevant rejections also emit an event to the ban manager.
    fn inspect<'a>(&'a self, request: &'a RequestContext) -> StageFuture<'a>;
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

    /// Runs the stages in order. Returns the name of the first stage that rejected and its
    /// rejection, or `Ok` when every stage let the request continue.
    pub async fn run(&self, request: &RequestContext) -> Result<(), (&'static str, Rejection)> {
        for stage in &self.stages {
            if let StageOutcome::Reject(rejection) = stage.inspect(request).await {
                return Err((stage.name(), rejection));
            }
        }
        Ok(())
    }
}
