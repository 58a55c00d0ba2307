//! The metrics listener: `GET /metrics` on a loopback address.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::{ErrorChain, Metrics};
use crate::shutdown::ShutdownListener;

/// Content type of the OpenMetrics text format that `prometheus-client` writes.
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Error from [`MetricsServer::bind`].
#[derive(Debug, thiserror::Error)]
#[error("failed to listen for metrics on {address}")]
pub struct MetricsServerError {
    address: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// A bound metrics listener.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    metrics: Arc<Metrics>,
}

impl MetricsServer {
    /// Binds the listener.
    ///
    /// # Errors
    ///
    /// [`MetricsServerError`] naming the address when binding fails.
    pub async fn bind(
        address: SocketAddr,
        metrics: Arc<Metrics>,
    ) -> Result<Self, MetricsServerError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| MetricsServerError { address, source })?;
        // Reading back a bound socket's address does not fail in practice; the configured
        // address is the fallback.
        let local_addr = listener.local_addr().unwrap_or(address);
        Ok(Self {
            listener,
            local_addr,
            metrics,
        })
    }

    /// Returns the bound address, with the port the kernel picked when the configured port was
    /// 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves scrapes until shutdown.
    pub async fn serve(self, mut shutdown: ShutdownListener) {
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(error = %ErrorChain(&error), "failed to accept a metrics connection");
                        continue;
                    }
                },
                () = shutdown.wait() => break,
            };

            let metrics = Arc::clone(&self.metrics);
            let service = service_fn(move |request| {
                let metrics = Arc::clone(&metrics);
                async move { Ok::<_, Infallible>(respond(&metrics, &request)) }
            });
            tokio::spawn(async move {
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(error) = connection.await {
                    tracing::debug!(%peer, error = %ErrorChain(&error), "metrics connection failed");
                }
            });
        }
        tracing::info!("metrics listener stopped");
    }
}

fn respond(metrics: &Metrics, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: the only path is /metrics\n",
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use GET\n",
        );
    }

    match metrics.encode() {
        Ok(text) => {
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE),
            );
            response
        }
        Err(error) => {
            tracing::error!(error = %ErrorChain(&error), "failed to encode metrics");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "failed to encode metrics\n",
            )
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
