//! HTTP/1.1 connections to the upstream, opened on demand and reused.
//!
//! Each proxy worker thread has its own pool, and a connection's task runs on the thread that
//! opened it. Unlike hyper-util's pooled client, a connection whose response body is still
//! streaming goes back into the pool at once and is skipped until hyper reports it ready, so a
//! request costs no extra task to return its connection.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service;

use crate::telemetry::ErrorChain;

/// Time after which an unused connection is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Interval at which each worker closes the connections unused for [`IDLE_TIMEOUT`], so that
/// they do not stay open after traffic stops.
pub const IDLE_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Default maximum number of connections one pool keeps for reuse, set by
/// `proxy.upstream_idle_connections`.
pub const DEFAULT_MAX_IDLE: usize = 128;

/// Error from sending a request to the upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No TCP connection or TLS session could be opened.
    #[error("failed to connect")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The HTTP/1.1 exchange failed: the handshake, writing the request or reading the
    /// response head.
    #[error("HTTP/1.1 exchange failed")]
    Http(#[source] hyper::Error),
}

/// A connection waiting in the pool.
#[derive(Debug)]
struct Pooled {
    sender: SendRequest<Full<Bytes>>,
    returned_at: Instant,
}

impl Pooled {
    /// Returns whether the connection was last returned [`IDLE_TIMEOUT`] or longer before `now`.
    fn unused_too_long(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.returned_at) >= IDLE_TIMEOUT
    }
}

/// The upstream connections of one worker thread.
#[derive(Debug)]
pub struct ConnectionPool {
    connector: HttpsConnector<HttpConnector>,
    /// The upstream's scheme and authority, which the connector needs.
    connect_uri: Uri,
    /// Connections, both idle ones and ones whose response body is still streaming.
    connections: Mutex<Vec<Pooled>>,
    /// Maximum number of connections kept in `connections`, a bound like nginx's `keepalive`
    /// count. A connection returned beyond it is closed once its response ends, so a burst of
    /// concurrent requests does not leave as many upstream sockets open.
    max_idle: usize,
}

impl ConnectionPool {
    /// Creates an empty pool that opens connections to `connect_uri` with `connector` and keeps
    /// up to `max_idle` of them for reuse.
    pub fn new(
        connector: HttpsConnector<HttpConnector>,
        connect_uri: Uri,
        max_idle: usize,
    ) -> Self {
        Self {
            connector,
            connect_uri,
            connections: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    /// Creates an empty pool to the same upstream that keeps up to `max_idle` connections.
    pub fn empty_copy(&self, max_idle: usize) -> Self {
        Self::new(self.connector.clone(), self.connect_uri.clone(), max_idle)
    }

    /// Returns the number of connections the pool keeps for reuse.
    pub fn max_idle(&self) -> usize {
        self.max_idle
    }

    /// Sends `request` on an idle connection, or on a new one when none is idle. A request
    /// that a reused connection could not start, because the upstream had closed it, is sent
    /// again on a new connection.
    ///
    /// `request` needs a `Host` header and an origin-form target.
    ///
    /// # Errors
    ///
    /// [`UpstreamError`] when no connection can be opened or the exchange fails.
    pub async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        if let Some(mut sender) = self.checkout() {
            match sender.try_send_request(request).await {
                Ok(response) => {
                    self.checkin(sender, &response);
                    return Ok(response);
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(UpstreamError::Http(error.into_error())),
                },
            }
        }

        let mut sender = self.connect().await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(UpstreamError::Http)?;
        self.checkin(sender, &response);
        Ok(response)
    }

    /// Takes a connection that can send a request now, closing the ones that the upstream
    /// closed or that stayed unused for [`IDLE_TIMEOUT`].
    fn checkout(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut index = connections.len();
        // From the end, so that the connection returned last is reused first. `swap_remove`
        // moves the last entry, which was already looked at, into the checked slot.
        while index > 0 {
            index -= 1;
            let pooled = &connections[index];
            if pooled.sender.is_closed() {
                connections.swap_remove(index);
            } else if pooled.sender.is_ready() {
                if pooled.unused_too_long(Instant::now()) {
                    connections.swap_remove(index);
                    continue;
                }
                return Some(connections.swap_remove(index).sender);
            }
        }
        None
    }

    /// Closes the connections that the upstream closed or that are idle and were last used
    /// [`IDLE_TIMEOUT`] or longer before `now`. Returns how many were closed.
    pub fn close_expired_at(&self, now: Instant) -> usize {
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let before = connections.len();
        connections.retain(|pooled| {
            let expired = pooled.sender.is_ready() && pooled.unused_too_long(now);
            !pooled.sender.is_closed() && !expired
        });
        before - connections.len()
    }

    /// Puts a connection back once its response head arrived. A connection that switched
    /// protocols belongs to the upgraded stream and is not reused. When the pool is full, the
    /// connection is dropped: hyper finishes the response on it and then closes it.
    fn checkin(&self, sender: SendRequest<Full<Bytes>>, response: &Response<Incoming>) {
        if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            return;
        }
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if connections.len() >= self.max_idle {
            connections.retain(|pooled| !pooled.sender.is_closed());
            if connections.len() >= self.max_idle {
                return;
            }
        }
        connections.push(Pooled {
            sender,
            returned_at: Instant::now(),
        });
    }

    /// Opens a connection and spawns its task on the current runtime.
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, UpstreamError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(UpstreamError::Connect)?;
        let stream = connector
            .call(self.connect_uri.clone())
            .await
            .map_err(UpstreamError::Connect)?;
        let (sender, connection) = http1::Builder::new()
            .handshake(stream)
            .await
            .map_err(UpstreamError::Http)?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(error = %ErrorChain(&error), "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Starts an upstream on loopback that counts its connections and responds to every request head
    /// with 200 `ok`. With `close_after_response` it closes each connection after one response
    /// without announcing it, as an upstream whose keep-alive timeout ran out does.
    async fn counting_upstream(close_after_response: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let address = listener.local_addr().expect("upstream address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut received = Vec::new();
                    let mut buffer = [0u8; 1024];
                    loop {
                        let Ok(count) = stream.read(&mut buffer).await else {
                            return;
                        };
                        if count == 0 {
                            return;
                        }
                        received.extend_from_slice(&buffer[..count]);
                        while let Some(end) =
                            received.windows(4).position(|window| window == b"\r\n\r\n")
                        {
                            received.drain(..end + 4);
                            let response = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if stream.write_all(response).await.is_err() || close_after_response {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (address, accepted)
    }

    fn pool_for(address: SocketAddr) -> ConnectionPool {
        pool_keeping(address, DEFAULT_MAX_IDLE)
    }

    fn pool_keeping(address: SocketAddr, max_idle: usize) -> ConnectionPool {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let tls = crate::tls::client_config(rustls::RootCertStore::empty()).expect("client config");
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let uri = format!("http://{address}/").parse().expect("connect URI");
        ConnectionPool::new(connector, uri, max_idle)
    }

    async fn get(pool: &ConnectionPool) -> (u16, Bytes) {
        let request = Request::get("/")
            .header(http::header::HOST, "upstream.example")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let response = pool.send(request).await.expect("upstream responds");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        // Lets the connection task see the end of the response and mark itself ready.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        (status, body)
    }

    #[tokio::test]
    async fn idle_connection_is_reused() {
        let (address, accepted) = counting_upstream(false).await;
        let pool = pool_for(address);

        for _ in 0..3 {
            assert_eq!(get(&pool).await, (200, Bytes::from_static(b"ok")));
        }

        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn full_pool_closes_extra_connections() {
        let (address, accepted) = counting_upstream(false).await;
        let pool = pool_keeping(address, 1);

        // Two requests at once need two connections, and only one goes back into the pool.
        let (first, second) = tokio::join!(get(&pool), get(&pool));
        assert_eq!(first, (200, Bytes::from_static(b"ok")));
        assert_eq!(second, (200, Bytes::from_static(b"ok")));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(pool.connections.lock().expect("pool lock").len(), 1);

        for _ in 0..3 {
            assert_eq!(get(&pool).await, (200, Bytes::from_static(b"ok")));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn expired_connections_are_closed() {
        let (address, accepted) = counting_upstream(false).await;
        let pool = pool_for(address);
        assert_eq!(get(&pool).await, (200, Bytes::from_static(b"ok")));

        assert_eq!(pool.close_expired_at(Instant::now()), 0);
        assert_eq!(pool.close_expired_at(Instant::now() + IDLE_TIMEOUT), 1);
        assert!(pool.connections.lock().expect("pool lock").is_empty());

        assert_eq!(get(&pool).await, (200, Bytes::from_static(b"ok")));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn zero_idle_opens_connection_per_request() {
        let (address, accepted) = counting_upstream(false).await;
        let pool = pool_keeping(address, 0);

        for _ in 0..3 {
            assert_eq!(get(&pool).await, (200, Bytes::from_static(b"ok")));
        }

        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn closed_connection_is_replaced() {
        let (address, accepted) = counting_upstream(true).await;
        let pool = pool_for(address);

        for _ in 0..3 {
            assert_eq!(get(&pool).await, (200, Bytes::from_static(b"ok")));
        }

        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn unreachable_upstream_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        drop(listener);
        let pool = pool_for(address);
        let request = Request::get("/")
            .header(http::header::HOST, "upstream.example")
            .body(Full::new(Bytes::new()))
            .expect("request");

        let error = pool.send(request).await.expect_err("nothing listens");

        assert!(matches!(error, UpstreamError::Connect(_)), "{error:?}");
    }
}
