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
    Pipeline, Principal, Rejection, RequestContext, RequestId, RequestOutcome, Stage,
    StageFuture, StageOutcome, Stopped,
};

use crate::events::{EventSinks, SecurityEvent};
use crate::routes::RouteTable;
use crate::shutdown::ShutdownListener;
use crate::telemetry::ErrorChain;
use crate::telemetry::Metrics;

/// Maximum time that open connections get to finish their requests after shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Maximum time a client gets to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default largest request body, in bytes, when the config sets none.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;

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
    routes: RouteTable,
    max_body_bytes: u64,
    events: EventSinks,
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
            routes: RouteTable::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            events: EventSinks::new(),
            next_request_id: AtomicU64::new(seed),
        }
    }

    /// Sets the routes and the body size limit for requests whose route sets none.
    #[must_use]
    pub fn with_routes(mut self, routes: RouteTable, max_body_bytes: u64) -> Self {
        self.routes = routes;
        self.max_body_bytes = max_body_bytes;
        self
    }

    /// Sets the sinks that receive a [`SecurityEvent::Response`] for every request.
    #[must_use]
    pub fn with_events(mut self, events: EventSinks) -> Self {
        self.events = events;
        self
    }

    fn next_request_id(&self) -> RequestId {
        RequestId(self.next_request_id.fetch_add(1, Ordering::Relaxed))
    }
}

/// A bound proxy listener.
///
/// NOTE: the number of open connections is not limited, and request bodies are read without a
/// deadline of their own.
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

/// Handles one request: route, body, pipeline, then upstream.
async fn handle(
    state: Arc<ProxyState>,
    client: IpAddr,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let request_id = state.next_request_id();
    let (parts, body) = request.into_parts();
    let route = state.routes.find(&parts.method, parts.uri.path());
    let limit = route
        .as_ref()
        .and_then(|route| route.config().max_body_bytes)
        .unwrap_or(state.max_body_bytes);
    let context = RequestContext::new(client, request_id, parts).with_route(route);

    let body = match read_body(&context, body, limit).await {
        Ok(body) => body,
        Err(rejection) => {
            let response = stopped_response(&state, &context, "body", Stopped::Rejected(rejection));
            return Ok(finish(&state, &context, response));
        }
    };
    let context = context.with_body(body);

    if let Err((stage, stopped)) = state.pipeline.run(&context).await {
        let response = stopped_response(&state, &context, stage, stopped);
        return Ok(finish(&state, &context, response));
    }
    let added_headers = context.take_response_headers();

    let response = match state.upstream.forward(&context).await {
        Ok(response) => {
            state.metrics.record_request(RequestOutcome::Forwarded);
            tracing::debug!(
                %client, %request_id, method = %context.method(), path = context.path(),
                status = response.status().as_u16(), "request forwarded"
            );
            let mut response = response.map(BodyExt::boxed);
            response.headers_mut().extend(added_headers);
            response
        }
        Err(error) => upstream_failure(&state, client, request_id, &error),
    };
    Ok(finish(&state, &context, response))
}

/// Reads the whole request body, refusing one larger than `limit` bytes.
async fn read_body(
    context: &RequestContext,
    body: Incoming,
    limit: u64,
) -> Result<Bytes, Rejection> {
    let too_large = || Rejection {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        outcome: RequestOutcome::BodyTooLarge,
        reason: "request body too large".into(),
        retry_after: None,
    };
    let declared = context
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(error) => {
            tracing::debug!(
                client = %context.client(), request_id = %context.request_id(),
                error = %ErrorChain(&*error), "failed to read the request body"
            );
            Err(Rejection {
                status: StatusCode::BAD_REQUEST,
                outcome: RequestOutcome::BodyUnreadable,
                reason: "request body could not be read".into(),
                retry_after: None,
            })
        }
    }
}

/// Builds the response of a request that a stage stopped, and records it.
fn stopped_response(
    state: &ProxyState,
    context: &RequestContext,
    stage: &'static str,
    stopped: Stopped,
) -> Response<ProxyBody> {
    let mut response = match stopped {
        Stopped::Rejected(rejection) => {
            state.metrics.record_request(rejection.outcome);
            log_rejection(context, stage, &rejection);
            rejection_response(&rejection, context.request_id())
        }
        Stopped::Responded { outcome, response } => {
            state.metrics.record_request(outcome);
            response
        }
    };
    response
        .headers_mut()
        .extend(context.take_response_headers());
    response
}

/// Tells the stages and the event sinks the response status, and hands the response back.
fn finish(
    state: &ProxyState,
    context: &RequestContext,
    response: Response<ProxyBody>,
) -> Response<ProxyBody> {
    let status = response.status();
    state.pipeline.response_sent(context, status);
    if !state.events.is_empty() {
        state.events.emit(&SecurityEvent::Response {
            client: context.client(),
            request_id: context.request_id(),
            subject: context
                .principal()
                .and_then(|principal| principal.subject.clone()),
            route: context.route_name().map(str::to_owned),
            path: context.path().to_owned(),
            status: status.as_u16(),
        });
    }
    response
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
    use std::sync::Mutex;

    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;

    use super::*;
    use crate::bans::memory::MemoryBlocklist;
    use crate::routes::RouteConfig;
    use crate::shutdown::Shutdown;

    /// Answers `/answer` itself and records every response status it is told about.
    #[derive(Default)]
    struct AnsweringStage {
        statuses: Mutex<Vec<(String, u16)>>,
    }

    impl Stage for AnsweringStage {
        fn name(&self) -> &'static str {
            "answering"
        }

        fn inspect<'a>(&'a self, request: &'a RequestContext) -> StageFuture<'a> {
            Box::pin(async move {
                if request.path() != "/answer" {
                    return StageOutcome::Continue;
                }
                let body = format!("route={:?}", request.route_name());
                let response = Response::builder()
                    .status(StatusCode::ACCEPTED)
                    .body(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed())
                    .expect("static response");
                StageOutcome::Respond {
                    outcome: RequestOutcome::Answered,
                    response,
                }
            })
        }

        fn on_response(&self, request: &RequestContext, status: StatusCode) {
            self.statuses
                .lock()
                .expect("status lock")
                .push((request.path().to_owned(), status.as_u16()));
        }
    }

    /// An upstream on loopback that answers with the length of the body it received.
    async fn length_upstream() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let address = listener.local_addr().expect("upstream address");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = service_fn(|request: Request<Incoming>| async move {
                    let body = request.into_body().collect().await?.to_bytes();
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(
                        body.len().to_string(),
                    ))))
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

    const LONGER_THAN_64: &str =
        "0123456789012345678901234567890123456789012345678901234567890123456789";

    #[tokio::test]
    async fn bodies_are_buffered_within_the_route_limit_and_stages_see_every_status() {
        let upstream = length_upstream().await;
        let stage = Arc::new(AnsweringStage::default());
        let routes = RouteTable::new(&[
            RouteConfig {
                name: Some("small".into()),
                path: "/small/{*rest}".into(),
                max_body_bytes: Some(8),
                ..RouteConfig::default()
            },
            RouteConfig {
                name: Some("answer".into()),
                path: "/answer".into(),
                ..RouteConfig::default()
            },
        ])
        .expect("valid routes");
        let metrics = Arc::new(Metrics::new(Arc::new(MemoryBlocklist::new())));
        let url = format!("http://{upstream}").parse().expect("upstream url");
        let state = ProxyState::new(
            Pipeline::new(vec![stage.clone()]),
            Upstream::new(url, Duration::from_secs(5)),
            metrics,
        )
        .with_routes(routes, 64);
        let server = ProxyServer::bind("127.0.0.1:0".parse().expect("address"), Arc::new(state))
            .await
            .expect("bind proxy");
        let proxy = server.local_addr();
        let shutdown = Shutdown::new();
        tokio::spawn(server.serve(shutdown.listener()));
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let send = |path: &str, body: &'static str| {
            let request = Request::post(format!("http://{proxy}{path}"))
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .expect("request");
            let response = client.request(request);
            async move {
                let response = response.await.expect("proxy answers");
                let status = response.status().as_u16();
                let body = response.into_body().collect().await.expect("body").to_bytes();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };

        assert_eq!(send("/small/x", "12345678").await, (200, "8".to_owned()));
        assert_eq!(send("/small/x", "123456789").await.0, 413);
        assert_eq!(send("/other", "x").await, (200, "1".to_owned()));
        assert_eq!(send("/other", LONGER_THAN_64).await.0, 413);
        assert_eq!(
            send("/answer", "").await,
            (202, "route=Some(\"answer\")".to_owned())
        );
        shutdown.trigger();

        let statuses = stage.statuses.lock().expect("status lock").clone();
        let expected: Vec<(String, u16)> = [
            ("/small/x", 200),
            ("/small/x", 413),
            ("/other", 200),
            ("/other", 413),
            ("/answer", 202),
        ]
        .iter()
        .map(|(path, status)| ((*path).to_owned(), *status))
        .collect();
        assert_eq!(statuses, expected);
    }

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
