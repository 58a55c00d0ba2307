//! The reverse proxy: accepts HTTP/1.1 and HTTP/2 clients, runs each request through the
//! pipeline, and forwards what passes to the upstream.

mod connections;
mod forward;
pub mod forwarded;
pub mod framing;
pub mod headers;
pub mod pipeline;
mod settings;
pub mod stages;
mod upgrade;
mod upstream_pool;
mod workers;

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
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

pub use connections::ClientConnections;
pub use forward::{ForwardError, Upstream};
pub use pipeline::{
    AddedHeaders, Pipeline, Principal, Rejection, RequestContext, RequestId, RequestOutcome,
    Stage, StageFuture, StageOutcome, Stopped,
};
pub use settings::HttpConfig;
pub use upgrade::UpgradeError;
pub use upstream_pool::{DEFAULT_MAX_IDLE as DEFAULT_UPSTREAM_IDLE_CONNECTIONS, UpstreamError};
pub use workers::MAX_WORKER_THREADS;

use self::connections::{Activity, TrackedStream};
use self::forwarded::TrustedProxies;
use self::framing::FramingGuard;
use self::upgrade::{ConnectionUpgrades, UpgradeTicket};
use self::workers::{ConnectionSettings, Workers};
use crate::events::{EventSinks, SecurityEvent};
use crate::routes::RouteTable;
use crate::shutdown::ShutdownListener;
use crate::telemetry::ErrorChain;
use crate::telemetry::Metrics;

/// Maximum time that open connections get to finish their requests after shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The number of header fields that hyper 1.x accepts in a request head, and in the trailers
/// of a chunked body, when `max_headers` is not set.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;
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
    /// The upstream settings. Each worker thread forwards through its own copy with its own
    /// connection pool.
    upstream: Upstream,
    metrics: Arc<Metrics>,
    routes: RouteTable,
    max_body_bytes: u64,
    events: EventSinks,
    trusted_proxies: TrustedProxies,
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
            trusted_proxies: TrustedProxies::default(),
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

    /// Sets the proxies whose forwarding headers name the client.
    #[must_use]
    pub fn with_trusted_proxies(mut self, trusted_proxies: TrustedProxies) -> Self {
        self.trusted_proxies = trusted_proxies;
        self
    }

    fn next_request_id(&self) -> RequestId {
        RequestId(self.next_request_id.fetch_add(1, Ordering::Relaxed))
    }
}

/// A bound proxy listener.
pub struct ProxyServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<ProxyState>,
    http: HttpConfig,
    tls: Option<TlsAcceptor>,
    worker_threads: usize,
}

impl std::fmt::Debug for ProxyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyServer")
            .field("local_addr", &self.local_addr)
            .field("http", &self.http)
            .field("worker_threads", &self.worker_threads)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
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
            http: HttpConfig::default(),
            tls: None,
            worker_threads: workers::worker_count(0),
        })
    }

    /// Sets the number of worker threads that serve connections. 0 starts one per CPU core.
    #[must_use]
    pub fn with_worker_threads(mut self, count: usize) -> Self {
        self.worker_threads = workers::worker_count(count);
        self
    }

    /// Replaces the default connection limits and timeouts.
    pub fn with_http(mut self, http: HttpConfig) -> Self {
        self.http = http;
        self
    }

    /// Terminates TLS on this listener with `config`.
    pub fn with_tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(TlsAcceptor::from(config));
        self
    }

    /// Returns the bound address, with the port the kernel picked when the configured port was
    /// 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves clients on the worker threads until shutdown, then stops accepting and gives
    /// open connections up to [`DRAIN_TIMEOUT`] to finish.
    pub async fn serve(self, mut shutdown: ShutdownListener) {
        let settings = ConnectionSettings {
            state: self.state,
            builder: Arc::new(connection_builder(&self.http)),
            http: self.http.clone(),
            tls: self.tls,
        };
        let mut workers = Workers::start(self.worker_threads, &settings);
        drop(settings);
        let connections = ClientConnections::new(self.http.max_connections_per_client);

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

            let client = peer.ip().to_canonical();
            let Some(permit) = connections.try_open(client) else {
                // Closing at once costs the client a reconnect; a flood of these is logged at
                // debug so that it cannot fill the log.
                tracing::debug!(%client, "connection limit per client reached, closing");
                continue;
            };
            let _ = stream.set_nodelay(true);
            workers.dispatch(stream, peer, client, permit);
        }

        drop(self.listener);
        tracing::info!("proxy listener stopped, draining connections");
        workers.shutdown().await;
    }
}

/// Builds the HTTP/1.1 and HTTP/2 connection settings from the `[http]` limits.
fn connection_builder(http: &HttpConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The framing guard enforces the header read timeout of HTTP/1.1 requests, including the
    // wait for a later request on a keep-alive connection. hyper's own header read timeout
    // would arm a second timer for every request.
    builder
        .http1()
        .header_read_timeout(None)
        // The framing guard may end the read side at a bad request while an earlier request
        // of the same connection is still being answered; that answer must still be sent.
        .half_close(true);
    // hyper's limit without this setting is also 100 header fields, for request heads and
    // chunked trailers alike. Setting it, even to 100, makes hyper fill a buffer of that many
    // slots for every request head it parses: about 3% of the agent's instructions per
    // request in callgrind runs of `edge-bench-agent`.
    if http.max_header_count != HYPER_DEFAULT_MAX_HEADERS {
        builder.http1().max_headers(http.max_header_count);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(http.http2_max_concurrent_streams)
        .initial_stream_window_size(http.http2_stream_window_bytes)
        .initial_connection_window_size(http.http2_connection_window_bytes)
        .max_header_list_size(u32::try_from(http.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(http.idle_timeout() / 2)
        .keep_alive_timeout(http.header_read_timeout());
    builder
}

/// What a request handler needs to know about its connection.
#[derive(Clone, Copy, Debug)]
struct ConnectionInfo {
    /// Whether the client connection uses TLS.
    tls: bool,
    /// Time the client gets to send a whole request body.
    body_read_timeout: Duration,
}

/// One accepted client connection and what serving it needs.
struct ClientConnection {
    state: Arc<ProxyState>,
    /// The worker thread's own upstream client.
    upstream: Arc<Upstream>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    http: HttpConfig,
    tls: Option<TlsAcceptor>,
    watcher: Watcher,
    client: IpAddr,
}

impl ClientConnection {
    /// Completes the TLS handshake if any, then serves requests until the connection closes,
    /// stays idle for the idle timeout, or the listener shuts down.
    async fn serve(self, stream: TcpStream) {
        let activity = Activity::new();
        let stream = TrackedStream::new(stream, Arc::clone(&activity));
        match self.tls.clone() {
            None => self.serve_http(stream, activity, false).await,
            Some(acceptor) => {
                // The handshake counts toward the header deadline, so a client cannot hold a
                // connection open by never finishing it.
                let handshake =
                    tokio::time::timeout(self.http.header_read_timeout(), acceptor.accept(stream))
                        .await;
                match handshake {
                    Ok(Ok(tls_stream)) => self.serve_http(tls_stream, activity, true).await,
                    Ok(Err(error)) => {
                        tracing::debug!(error = %ErrorChain(&error), "TLS handshake failed");
                    }
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            }
        }
    }

    async fn serve_http<S>(self, stream: S, activity: Arc<Activity>, tls: bool)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let guarded = FramingGuard::new(stream, self.http.head_limits());
        let upgrades = ConnectionUpgrades::new(guarded.upgrade_gate());
        let state = self.state;
        let upstream = self.upstream;
        let client = self.client;
        let info = ConnectionInfo {
            tls,
            body_read_timeout: self.http.body_read_timeout(),
        };
        let request_activity = Arc::clone(&activity);
        let request_upgrades = Arc::clone(&upgrades);
        let service = service_fn(move |request| {
            let in_flight = request_activity.begin_request();
            let state = Arc::clone(&state);
            let upstream = Arc::clone(&upstream);
            let upgrades = Arc::clone(&request_upgrades);
            async move {
                let response = handle(state, &upstream, client, info, &upgrades, request).await;
                drop(in_flight);
                response
            }
        });
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(guarded), service);
        let connection = self.watcher.watch(connection.into_owned());
        tokio::select! {
            result = connection => {
                if let Err(error) = result {
                    tracing::debug!(error = %ErrorChain(&*error), "proxy connection ended with an error");
                }
            }
            () = activity.idle(self.http.idle_timeout()) => {
                tracing::debug!("closing an idle proxy connection");
                return;
            }
        }

        // A connection that switched protocols is relayed here, so it keeps counting toward
        // the client's connection limit.
        // NOTE: the graceful drain does not wait for a relayed connection: it goes on until its
        // idle timeout, or until its worker thread stops after the drain and closes it, even
        // in the middle of a transfer.
        if let Some(handover) = upgrades.take_handover() {
            handover.run(&activity, self.http.idle_timeout()).await;
        }
    }
}

/// Handles one request: route, body, pipeline, then upstream.
async fn handle(
    state: Arc<ProxyState>,
    upstream: &Upstream,
    client: IpAddr,
    connection: ConnectionInfo,
    upgrades: &Arc<ConnectionUpgrades>,
    mut request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let tls = connection.tls;
    let request_id = state.next_request_id();
    let upgrade = UpgradeTicket::new(upgrades, &mut request);
    let (parts, body) = request.into_parts();
    let forwarding = match state.trusted_proxies.resolve(client, tls, &parts.headers) {
        Ok(forwarding) => forwarding,
        Err(error) => return Ok(invalid_forwarding(&state, request_id, &error, tls)),
    };
    let client = forwarding.client;
    let route = state.routes.find(&parts.method, parts.uri.path());
    let limit = route
        .as_ref()
        .and_then(|route| route.config().max_body_bytes)
        .unwrap_or(state.max_body_bytes);
    let context = RequestContext::new(client, request_id, parts).with_route(route);

    // A request without a body needs no read and no timer.
    let read = if body.is_end_stream() {
        Ok(Bytes::new())
    } else {
        tokio::time::timeout(
            connection.body_read_timeout,
            read_body(&context, body, limit),
        )
        .await
        .unwrap_or_else(|_| Err(body_timeout(connection.body_read_timeout)))
    };
    let body = match read {
        Ok(body) => body,
        Err(rejection) => {
            // The rest of an unreadable body cannot be skipped reliably, so the connection
            // must not carry another request.
            let close = rejection.outcome == RequestOutcome::BodyUnreadable;
            let mut response =
                stopped_response(&state, &context, "body", Stopped::Rejected(rejection));
            if close {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return Ok(finish(&state, &context, response, tls));
        }
    };
    let context = context.with_body(body);

    if let Err((stage, stopped)) = state.pipeline.run(&context).await {
        let response = stopped_response(&state, &context, stage, stopped);
        return Ok(finish(&state, &context, response, tls));
    }
    let added_headers = context.take_response_headers();

    let forwarded = upstream
        .forward(&context, &forwarding, upgrade.protocols())
        .await;
    let response = match forwarded {
        Ok(response) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            switch_protocols(&state, &context, upgrade, response, added_headers)
        }
        Ok(response) => {
            state.metrics.record_request(RequestOutcome::Forwarded);
            tracing::debug!(
                %client, %request_id, method = %context.method(), path = context.path(),
                status = response.status().as_u16(), "request forwarded"
            );
            let mut response = response.map(BodyExt::boxed);
            added_headers.apply_to(response.headers_mut());
            response
        }
        Err(error) => upstream_failure(&state, client, request_id, &error),
    };
    Ok(finish(&state, &context, response, tls))
}

/// Relays the upstream's `101 Switching Protocols` if the request offered that upgrade, and
/// responds 502 otherwise.
fn switch_protocols(
    state: &ProxyState,
    context: &RequestContext,
    upgrade: UpgradeTicket,
    response: Response<Incoming>,
    added_headers: AddedHeaders,
) -> Response<ProxyBody> {
    let client = context.client();
    let request_id = context.request_id();
    match upgrade.switch(response) {
        Ok(mut response) => {
            state.metrics.record_request(RequestOutcome::Forwarded);
            added_headers.apply_to(response.headers_mut());
            tracing::debug!(
                %client, %request_id, path = context.path(), "connection switched protocols"
            );
            response
        }
        Err(error) => {
            state.metrics.record_request(RequestOutcome::UpstreamError);
            tracing::warn!(%client, %request_id, error = %error, "upstream protocol switch rejected");
            json_error(
                StatusCode::BAD_GATEWAY,
                "upstream switched protocols unexpectedly",
                request_id,
            )
        }
    }
}

/// Builds the 400 response to a request whose trusted proxy did not name the client.
fn invalid_forwarding(
    state: &ProxyState,
    request_id: RequestId,
    error: &forwarded::ForwardedError,
    tls: bool,
) -> Response<ProxyBody> {
    state.metrics.record_request(RequestOutcome::InvalidForwarding);
    tracing::warn!(%request_id, error = %error, "request rejected");
    let mut response = json_error(
        StatusCode::BAD_REQUEST,
        "invalid forwarding header",
        request_id,
    );
    headers::apply_security_headers(response.headers_mut(), tls, None);
    response
}

/// Returns the rejection of a request whose body did not arrive within `timeout`.
fn body_timeout(timeout: Duration) -> Rejection {
    Rejection {
        status: StatusCode::REQUEST_TIMEOUT,
        outcome: RequestOutcome::BodyUnreadable,
        reason: format!("request body not received within {} s", timeout.as_secs()).into(),
        retry_after: None,
    }
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
    context
        .take_response_headers()
        .apply_to(response.headers_mut());
    response
}

/// Sets the security headers, tells the stages and the event sinks the response status, and
/// hands the response back.
fn finish(
    state: &ProxyState,
    context: &RequestContext,
    mut response: Response<ProxyBody>,
    tls: bool,
) -> Response<ProxyBody> {
    headers::apply_response_headers(context, response.headers_mut(), tls);
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

    /// Builds the state of a proxy with `stages` in front of the upstream at `upstream`.
    fn proxy_state(upstream: SocketAddr, stages: Vec<Arc<dyn Stage>>) -> ProxyState {
        let metrics = Arc::new(Metrics::new(Arc::new(MemoryBlocklist::new())));
        let url = format!("http://{upstream}").parse().expect("upstream url");
        let tls = crate::tls::client_config(rustls::RootCertStore::empty()).expect("client config");
        ProxyState::new(Pipeline::new(stages), Upstream::new(url, Duration::from_secs(5), tls), metrics)
    }

    /// Binds a proxy for `state` on a loopback port, lets `configure` set it up, and serves it
    /// on a background task. Returns its address, the shutdown that stops it and the task.
    async fn serve_proxy(
        state: ProxyState,
        configure: impl FnOnce(ProxyServer) -> ProxyServer,
    ) -> (SocketAddr, Shutdown, tokio::task::JoinHandle<()>) {
        let server = ProxyServer::bind("127.0.0.1:0".parse().expect("address"), Arc::new(state))
            .await
            .expect("bind proxy");
        let server = configure(server);
        let proxy = server.local_addr();
        let shutdown = Shutdown::new();
        let served = tokio::spawn(server.serve(shutdown.listener()));
        (proxy, shutdown, served)
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
        let state = proxy_state(upstream, vec![stage.clone()])
        .with_routes(routes, 64);
        let (proxy, shutdown, _served) = serve_proxy(state, |server| server).await;
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

    /// Records the thread that ran each request, under the request's `x-connection` header.
    #[derive(Default)]
    struct ThreadRecordingStage {
        threads: Mutex<Vec<(String, std::thread::ThreadId)>>,
    }

    impl Stage for ThreadRecordingStage {
        fn name(&self) -> &'static str {
            "thread_recording"
        }

        fn inspect<'a>(&'a self, request: &'a RequestContext) -> StageFuture<'a> {
            let connection = request
                .headers()
                .get("x-connection")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            self.threads
                .lock()
                .expect("thread lock")
                .push((connection, std::thread::current().id()));
            Box::pin(async { StageOutcome::Continue })
        }
    }

    #[tokio::test]
    async fn connections_are_spread_over_worker_threads() {
        let upstream = length_upstream().await;
        let stage = Arc::new(ThreadRecordingStage::default());
        let state = proxy_state(upstream, vec![stage.clone()]);
        let (proxy, shutdown, served) = serve_proxy(state, |server| server.with_worker_threads(2)).await;

        // Both connections stay open, so the second one goes to the idle worker.
        let mut senders = Vec::new();
        for _ in 0..2 {
            let stream = TcpStream::connect(proxy)
                .await
                .expect("connect to the proxy");
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(connection);
            senders.push(sender);
        }
        for round in 0..3 {
            for (index, sender) in senders.iter_mut().enumerate() {
                let request = Request::get(format!("/round/{round}"))
                    .header(header::HOST, proxy.to_string())
                    .header("x-connection", index.to_string())
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                let response = sender.send_request(request).await.expect("proxy answers");
                assert_eq!(response.status(), StatusCode::OK);
                response.into_body().collect().await.expect("body");
            }
        }
        drop(senders);
        shutdown.trigger();
        served.await.expect("the proxy stops");

        let threads = stage.threads.lock().expect("thread lock").clone();
        assert_eq!(threads.len(), 6);
        let thread_of = |connection: &str| {
            let ids: Vec<_> = threads
                .iter()
                .filter(|(name, _)| name == connection)
                .map(|(_, id)| *id)
                .collect();
            assert_eq!(ids.len(), 3, "requests of connection {connection}");
            assert!(
                ids.iter().all(|id| *id == ids[0]),
                "connection {connection} moved between threads: {ids:?}"
            );
            ids[0]
        };
        let first = thread_of("0");
        let second = thread_of("1");
        assert_ne!(first, second, "both connections ran on one worker");
        assert_ne!(first, std::thread::current().id());
        assert_ne!(second, std::thread::current().id());
    }

    /// Starts an upstream on loopback that reports each request on `received`, then waits
    /// `delay` before it responds.
    async fn slow_upstream(delay: Duration, received: tokio::sync::mpsc::Sender<()>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let address = listener.local_addr().expect("upstream address");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let received = received.clone();
                let service = service_fn(move |_request: Request<Incoming>| {
                    let received = received.clone();
                    async move {
                        let _ = received.send(()).await;
                        tokio::time::sleep(delay).await;
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(b"late"))))
                    }
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

    #[tokio::test]
    async fn request_in_flight_finishes_after_shutdown() {
        let (received_sender, mut received) = tokio::sync::mpsc::channel(1);
        let upstream = slow_upstream(Duration::from_millis(300), received_sender).await;
        let state = proxy_state(upstream, Vec::new());
        let (proxy, shutdown, served) = serve_proxy(state, |server| server.with_worker_threads(2)).await;

        let stream = TcpStream::connect(proxy).await.expect("connect to the proxy");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        let request = Request::get("/slow")
            .header(header::HOST, proxy.to_string())
            .body(Full::new(Bytes::new()))
            .expect("request");
        let response = tokio::spawn(sender.send_request(request));
        received.recv().await.expect("the upstream receives the request");
        shutdown.trigger();

        let response = response
            .await
            .expect("the request task ends")
            .expect("the proxy responds after shutdown started");
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"late");
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("the proxy stops once the request is done")
            .expect("the proxy task ends");
        assert!(
            TcpStream::connect(proxy).await.is_err(),
            "the proxy still accepts after shutdown"
        );
    }

    #[tokio::test]
    async fn idle_keep_alive_closes_after_slow_responses() {
        let header_timeout = Duration::from_secs(1);
        let (received_sender, _received) = tokio::sync::mpsc::channel(8);
        let upstream = slow_upstream(header_timeout * 3 / 2, received_sender).await;
        let state = proxy_state(upstream, Vec::new());
        let http = HttpConfig {
            header_read_timeout_seconds: header_timeout.as_secs(),
            ..HttpConfig::default()
        };
        let (proxy, shutdown, _served) = serve_proxy(state, |server| server.with_http(http)).await;

        let stream = TcpStream::connect(proxy)
            .await
            .expect("connect to the proxy");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        let connection = tokio::spawn(connection);
        // Each response takes longer than the header read timeout, which must not run while
        // the proxy is still responding.
        for round in 0..2 {
            let request = Request::get(format!("/slow/{round}"))
                .header(header::HOST, proxy.to_string())
                .body(Full::new(Bytes::new()))
                .expect("request");
            let response = sender
                .send_request(request)
                .await
                .expect("the proxy responds on the kept-alive connection");
            assert_eq!(response.status(), StatusCode::OK);
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            assert_eq!(&body[..], b"late");
        }
        let idle_since = std::time::Instant::now();
        let closed = tokio::time::timeout(Duration::from_secs(5), connection).await;
        let idle_for = idle_since.elapsed();
        shutdown.trigger();

        assert!(
            closed.is_ok(),
            "an idle keep-alive connection was still open after 5 s"
        );
        assert!(
            idle_for >= header_timeout - Duration::from_millis(50),
            "an idle keep-alive connection closed after {idle_for:?}, before the header read timeout"
        );
    }

    /// Sends a request head with `count` header fields and returns the response's status line.
    async fn status_for_header_count(proxy: SocketAddr, count: usize) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let mut head =
            String::from("GET /headers HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
        for index in 2..count {
            head.push_str(&format!("x-field-{index}: 1\r\n"));
        }
        head.push_str("\r\n");
        let mut stream = TcpStream::connect(proxy)
            .await
            .expect("connect to the proxy");
        stream
            .write_all(head.as_bytes())
            .await
            .expect("send the head");
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
            .await
            .expect("the proxy responds within 5 s")
            .expect("read the response");
        let response = String::from_utf8_lossy(&response);
        response.lines().next().unwrap_or_default().to_owned()
    }

    /// Starts an upstream on loopback that responds 200 to every request head and closes,
    /// whatever its number of header fields, because the proxy adds forwarding headers.
    async fn accepting_upstream() -> SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let address = listener.local_addr().expect("upstream address");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buffer = [0u8; 4096];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(count) => head.extend_from_slice(&buffer[..count]),
                        }
                    }
                    let response =
                        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                    let _ = stream.write_all(response).await;
                });
            }
        });
        address
    }

    #[tokio::test]
    async fn header_count_limit_holds_around_hyper_default() {
        let upstream = accepting_upstream().await;
        for limit in [20, 100, 150] {
            let http = HttpConfig {
                max_header_count: limit,
                ..HttpConfig::default()
            };
            let state = proxy_state(upstream, Vec::new());
            let (proxy, shutdown, _served) =
                serve_proxy(state, |server| server.with_http(http)).await;

            let at_limit = status_for_header_count(proxy, limit).await;
            let over_limit = status_for_header_count(proxy, limit + 1).await;
            shutdown.trigger();

            assert!(
                at_limit.starts_with("HTTP/1.1 200"),
                "limit {limit}, {limit} fields: {at_limit}"
            );
            assert!(
                over_limit.starts_with("HTTP/1.1 431"),
                "limit {limit}, {} fields: {over_limit}",
                limit + 1
            );
        }
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
