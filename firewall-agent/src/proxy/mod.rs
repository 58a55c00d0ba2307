//! The reverse proxy: accepts HTTP/1.1 and HTTP/2 clients, runs each request through the
//! pipeline, and forwards what passes to the upstream.

mod forward;
pub mod pipeline;
pub mod stages;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::Instrument;

pub use forward::{ForwardError, Upstream};
pub use pipeline::{
    Pipeline, Rejection, RequestContext, RequestId, RequestOutcome, Stage, StageFuture,
    StageOutcome,
};

use crate::shutdown::ShutdownListener;
use crate::telemetry::ErrorChain;
use crate::telemetry::Metrics;

/// Maximum time that open connections get to finish their requests after shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Maximum time a client gets to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Body of every proxy response: the upstream's streamed body or a short JSON error.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Error from [`ProxyServer::bind`].
#[derive(Debug, thiserror::Error)]
#[error("failed to listen for proxy clients on {address}")]
pub struct ProxyBindError {
    address: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// State shared by every request handler.
#[derive(Debug)]
pub struct ProxyState {
    pipeline: Pipeline,
    upstream: Upstream,
    metrics: Arc<Metrics>,
    next_request_id: AtomicU64,
}

impl ProxyState {
    /// Creates the shared state.
    pub fn new(pipeline: Pipeline, upstream: Upstream, metrics: Arc<Metrics>) -> Self {
        // Seed request ids with the start time, so ids from two runs rarely collide in logs.
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs() << 32)
            .unwrap_or(0);
        Self {
            pipeline,
            upstream,
            metrics,
            next_request_id: AtomicU64::new(seed),
        }
    }

    fn next_request_id(&self) -> RequestId {
        RequestId(self.next_request_id.fetch_add(1, Ordering::Relaxed))
    }
}

/// A bound proxy listener.
///
/// NOTE: neither the number of open connections nor the request body size is limited, so the
/// upstream must cope with whatever clients send within the rate limit.
#[derive(Debug)]
pub struct ProxyServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<ProxyState>,
}

impl ProxyServer {
    /// Binds the listener.
    ///
    /// # Errors
    ///
    /// [`ProxyBindError`] naming the address when binding fails.
    pub async fn bind(address: SocketAddr, state: Arc<ProxyState>) -> Result<Self, ProxyBindError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| ProxyBindError { address, source })?;
        // Reading back a bound socket's address does not fail in practice; the configured
        // address is the fallback.
        let local_addr = listener.local_addr().unwrap_or(address);
        Ok(Self {
            listener,
            local_addr,
            state,
        })
    }

    /// Returns the bound address, with the port the kernel picked when the configured port was
    /// 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves clients until shutdown, then stops accepting and gives open connections up to
    /// [`DRAIN_TIMEOUT`] to finish.
    pub async fn serve(self, mut shutdown: ShutdownListener) {
        let graceful = GracefulShutdown::new();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // Without a timer hyper cannot enforce the header read timeout, and a client that
        // sends its headers slowly would hold the connection open indefinitely.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        builder.http2().timer(TokioTimer::new());

        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(error = %ErrorChain(&error), "failed to accept a proxy connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = shutdown.wait() => break,
            };

            let state = Arc::clone(&self.state);
            let client = peer.ip().to_canonical();
            let service = service_fn(move |request| handle(Arc::clone(&state), client, request));
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let connection = graceful.watch(connection.into_owned());
            let span = tracing::debug_span!("connection", %peer);
            tokio::spawn(
                async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(error = %ErrorChain(&*error), "proxy connection ended with an error");
                    }
                }
                .instrument(span),
            );
        }

        drop(self.listener);
        tracing::info!("proxy listener stopped, draining connections");
        if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                timeout_seconds = DRAIN_TIMEOUT.as_secs(),
                "proxy connections still open after the drain timeout, closing them"
            );
        }
    }
}

/// Handles one request: pipeline, then upstream.
async fn handle(
    state: Arc<ProxyState>,
    client: IpAddr,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let request_id = state.next_request_id();
    let (parts, body) = request.into_parts();
    let context = RequestContext::new(client, request_id, parts);

    if let Err((stage, rejection)) = state.pipeline.run(&context).await {
        state.metrics.record_request(rejection.outcome);
        log_rejection(&context, stage, &rejection);
        let mut response = rejection_response(&rejection, request_id);
        response
            .headers_mut()
            .extend(context.take_response_headers());
        return Ok(response);
    }
    let added_headers = context.take_response_headers();

    let method = context.method().clone();
    let path = context.path().to_owned();
    match state.upstream.forward(context, body).await {
        Ok(response) => {
            state.metrics.record_request(RequestOutcome::Forwarded);
            tracing::debug!(
                %client, %request_id, %method, path, status = response.status().as_u16(),
                "request forwarded"
            );
            let mut response = response.map(BodyExt::boxed);
            response.headers_mut().extend(added_headers);
            Ok(response)
        }
        Err(error) => Ok(upstream_failure(&state, client, request_id, &error)),
    }
}

fn log_rejection(context: &RequestContext, stage: &'static str, rejection: &Rejection) {
    let client = context.client();
    let request_id = context.request_id();
    let status = rejection.status.as_u16();
    let reason = &*rejection.reason;
    // A banned client that reaches the proxy can repeat without limit, so its rejections are
    // logged at debug; the ban itself was logged at info.
    if rejection.outcome == RequestOutcome::Banned {
        tracing::debug!(%client, %request_id, stage, status, reason, "request rejected");
    } else {
        tracing::info!(%client, %request_id, stage, status, reason, "request rejected");
    }
}

fn upstream_failure(
    state: &ProxyState,
    client: IpAddr,
    request_id: RequestId,
    error: &ForwardError,
) -> Response<ProxyBody> {
    let (status, outcome, message) = match error {
        ForwardError::Timeout { .. } => (
            StatusCode::GATEWAY_TIMEOUT,
            RequestOutcome::UpstreamTimeout,
            "upstream timed out",
        ),
        ForwardError::InvalidTarget { .. } => (
            StatusCode::BAD_REQUEST,
            RequestOutcome::UpstreamError,
            "invalid request target",
        ),
        ForwardError::Upstream { .. } => (
            StatusCode::BAD_GATEWAY,
            RequestOutcome::UpstreamError,
            "upstream unavailable",
        ),
    };
    state.metrics.record_request(outcome);
    tracing::warn!(%client, %request_id, error = %ErrorChain(error), "request failed upstream");
    json_error(status, message, request_id)
}

/// Builds the response of a rejected request.
pub fn rejection_response(rejection: &Rejection, request_id: RequestId) -> Response<ProxyBody> {
    let mut response = json_error(rejection.status, &rejection.reason, request_id);
    if let Some(retry_after) = rejection.retry_after {
        let seconds = retry_after_seconds(retry_after);
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

/// Rounds a wait up to whole seconds, at least 1, as `Retry-After` counts in seconds.
fn retry_after_seconds(wait: Duration) -> u64 {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    seconds.max(1)
}

fn json_error(status: StatusCode, message: &str, request_id: RequestId) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "error": message,
        "request_id": request_id.to_string(),
    });
    let body = Full::new(Bytes::from(body.to_string()))
        .map_err(|never| match never {})
        .boxed();

    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(200)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_seconds(Duration::from_millis(3_001)), 4);
    }

    #[test]
    fn rejection_response_sets_retry_after() {
        let rejection = Rejection {
            status: StatusCode::TOO_MANY_REQUESTS,
            outcome: RequestOutcome::RateLimited,
            reason: "rate limit exceeded".into(),
            retry_after: Some(Duration::from_millis(2_500)),
        };

        let response = rejection_response(&rejection, RequestId(1));

        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }
}
