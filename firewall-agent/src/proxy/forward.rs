//! Forwarding to the upstream: the target URL, header rewriting, and the HTTP client.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;

use super::forwarded::{Forwarding, set_forwarding_headers};
use super::pipeline::{RequestContext, RequestId};
use super::upstream_pool::{ConnectionPool, UpstreamError};
use crate::config::UpstreamUrl;

/// Headers that describe one connection and must not be forwarded (RFC 9110, section 7.6.1),
/// plus `proxy-connection`, which some old clients still send. Headers named in `Connection`
/// are removed as well.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Headers that forwarding may add to a request: the four forwarding headers, `Host`,
/// `x-request-id`, `Content-Length` and the `Upgrade` pair.
const FORWARD_ADDED_HEADERS: usize = 9;

/// Errors from forwarding a request.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The request target cannot be joined to the upstream URL (for example `OPTIONS *`).
    #[error("invalid request target `{target}` for upstream {upstream}")]
    InvalidTarget { target: String, upstream: String },
    /// The upstream could not be reached or did not send a valid response.
    #[error("upstream {upstream} failed")]
    Upstream {
        upstream: String,
        #[source]
        source: UpstreamError,
    },
    /// The upstream sent no response headers within the timeout.
    #[error("upstream {upstream} sent no response within {} s", timeout.as_secs())]
    Timeout { upstream: String, timeout: Duration },
}

/// The upstream and a pool of HTTP/1.1 connections to it. Clones share the pool.
#[derive(Clone, Debug)]
pub struct Upstream {
    url: UpstreamUrl,
    timeout: Duration,
    /// `Host` of every forwarded request: the upstream's host, with its port unless that is
    /// the scheme's default.
    host: HeaderValue,
    pool: Arc<ConnectionPool>,
}

impl Upstream {
    /// Creates a client for `url`. `timeout` bounds the wait for response headers; the body is
    /// streamed without a deadline. `tls` is the client configuration used for an `https://`
    /// URL.
    pub fn new(url: UpstreamUrl, timeout: Duration, tls: rustls::ClientConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        // The HTTPS connector below decides the scheme; the plain connector must let it.
        connector.enforce_http(false);
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
        let connector = builder
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(url_scheme(&url));
        parts.authority = Some(url.authority().clone());
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
        // A validated upstream URL has a scheme and an authority, so this does not fail.
        let connect_uri = Uri::from_parts(parts).unwrap_or_default();
        Self {
            host: host_header(&url),
            url,
            timeout,
            pool: Arc::new(ConnectionPool::new(
                connector,
                connect_uri,
                super::upstream_pool::DEFAULT_MAX_IDLE,
            )),
        }
    }

    /// Returns this client with an empty pool that keeps up to `max_idle` connections for
    /// reuse.
    pub fn with_max_idle(self, max_idle: usize) -> Self {
        Self {
            pool: Arc::new(self.pool.empty_copy(max_idle)),
            ..self
        }
    }

    /// Returns a client for the same upstream with its own, empty connection pool. The pool
    /// spawns each connection's task on the runtime of the request that opened it, so a pool
    /// used by one worker thread keeps its upstream connections on that thread.
    pub fn with_own_pool(&self) -> Self {
        Self {
            url: self.url.clone(),
            timeout: self.timeout,
            host: self.host.clone(),
            pool: Arc::new(self.pool.empty_copy(self.pool.max_idle())),
        }
    }

    /// Closes the pooled connections that stayed unused too long. Returns how many were
    /// closed.
    pub fn close_expired(&self) -> usize {
        self.pool.close_expired_at(std::time::Instant::now())
    }

    /// Returns the upstream URL.
    pub fn url(&self) -> &UpstreamUrl {
        &self.url
    }

    /// Sends the request upstream with rewritten headers and its buffered body, and returns
    /// the response, whose body is streamed, with its hop-by-hop headers removed.
    ///
    /// `upgrade` is the `Upgrade` value of a request that offers a protocol upgrade: it is
    /// forwarded with `Connection: upgrade`. A `101 Switching Protocols` response keeps its
    /// `Upgrade` header and gets `Connection: upgrade`, so that it can be relayed as it is.
    ///
    /// # Errors
    ///
    /// [`ForwardError`] when the target is invalid, or the upstream fails or times out.
    pub async fn forward(
        &self,
        context: &RequestContext,
        forwarding: &Forwarding,
        upgrade: Option<&HeaderValue>,
    ) -> Result<Response<Incoming>, ForwardError> {
        let request_id = context.request_id();
        // The context stays with the proxy, whose stages see the response status later.
        let mut request = Request::new(Full::new(context.forward_body().clone()));
        *request.method_mut() = context.method().clone();
        *request.headers_mut() = context.headers().clone();
        let (mut parts, body) = request.into_parts();
        // Room for the forwarding headers, `Host` and `x-request-id` at once, instead of the
        // map growing several times for a request with few headers.
        parts.headers.reserve(FORWARD_ADDED_HEADERS);
        parts.uri = self.target_path(context.uri())?;
        let original_host = original_host(&parts.headers, context.uri());
        rewrite_request_headers(&mut parts.headers, forwarding, request_id, original_host);
        parts.headers.insert(header::HOST, self.host.clone());
        if context.body_replaced() {
            let length = HeaderValue::from(context.forward_body().len());
            parts.headers.insert(header::CONTENT_LENGTH, length);
        }
        crate::tokens::downstream::set_identity_headers(&mut parts.headers, context.principal());
        if let Some(protocols) = upgrade {
            set_upgrade(&mut parts.headers, protocols.clone());
        }
        // The client pool speaks HTTP/1.1 to the upstream whatever the client used.
        parts.version = Version::HTTP_11;

        let request = Request::from_parts(parts, body);
        let response = tokio::time::timeout(self.timeout, self.pool.send(request))
            .await
            .map_err(|_| ForwardError::Timeout {
                upstream: self.url.to_string(),
                timeout: self.timeout,
            })?
            .map_err(|source| ForwardError::Upstream {
                upstream: self.url.to_string(),
                source,
            })?;

        let (mut parts, body) = response.into_parts();
        let switched_to = (parts.status == StatusCode::SWITCHING_PROTOCOLS)
            .then(|| parts.headers.get(header::UPGRADE).cloned())
            .flatten();
        remove_hop_by_hop(&mut parts.headers);
        if let Some(protocols) = switched_to {
            set_upgrade(&mut parts.headers, protocols);
        }
        // The client gets its own protocol version, not the upstream's (an HTTP/1.0 upstream
        // must not turn a client's keep-alive connection into HTTP/1.0).
        parts.version = context.version();
        Ok(Response::from_parts(parts, body))
    }

    /// Returns the origin-form target of the forwarded request: the upstream's base path
    /// joined with the request's path and query.
    fn target_path(&self, request_uri: &Uri) -> Result<Uri, ForwardError> {
        // An authority-form target (`CONNECT host:port`) has neither path nor scheme: it asks
        // for a tunnel, which this reverse proxy does not open.
        let path_and_query = match request_uri.path_and_query() {
            Some(path_and_query) => path_and_query.as_str(),
            None if request_uri.scheme().is_some() => "/",
            None => "",
        };
        let invalid = || ForwardError::InvalidTarget {
            target: path_and_query.to_owned(),
            upstream: self.url.to_string(),
        };
        if !path_and_query.starts_with('/') {
            return Err(invalid());
        }

        let target_path = if self.url.base_path().is_empty() {
            // The usual case: the request's target is reused without copying it.
            match request_uri.path_and_query() {
                Some(path_and_query) => path_and_query.clone(),
                None => PathAndQuery::from_static("/"),
            }
        } else {
            let joined = format!("{}{path_and_query}", self.url.base_path());
            PathAndQuery::try_from(joined).map_err(|_| invalid())?
        };
        Ok(Uri::from(target_path))
    }
}

fn url_scheme(url: &UpstreamUrl) -> Scheme {
    if url.is_https() {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    }
}

/// Returns the `Host` value for requests to `url`: its host, and its port unless that is the
/// scheme's default.
fn host_header(url: &UpstreamUrl) -> HeaderValue {
    let authority = url.authority();
    let default_port = if url.is_https() { 443 } else { 80 };
    let host = match authority.port_u16() {
        Some(port) if port != default_port => authority.as_str(),
        _ => authority.host(),
    };
    // An authority is valid header text, so the fallback is never used.
    HeaderValue::from_str(host).unwrap_or_else(|_| HeaderValue::from_static("localhost"))
}

/// Returns the host the client addressed: the `Host` header, or the authority of an HTTP/2 or
/// absolute-form request.
fn original_host(headers: &HeaderMap, uri: &Uri) -> Option<HeaderValue> {
    headers.get(header::HOST).cloned().or_else(|| {
        uri.authority()
            .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok())
    })
}

/// Removes hop-by-hop headers and sets the forwarding headers. Client-supplied forwarding
/// headers are replaced unless the peer is a trusted proxy.
fn rewrite_request_headers(
    headers: &mut HeaderMap,
    forwarding: &Forwarding,
    request_id: RequestId,
    original_host: Option<HeaderValue>,
) {
    remove_hop_by_hop(headers);
    // The client derives `Host` from the upstream URI.
    headers.remove(header::HOST);

    set_forwarding_headers(headers, forwarding, original_host);
    headers.insert(X_REQUEST_ID, request_id.header_value());
}

/// Sets `Upgrade` to `protocols` and `Connection` to `upgrade`, the hop-by-hop headers of a
/// protocol switch.
fn set_upgrade(headers: &mut HeaderMap, protocols: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocols);
}

/// Removes the fixed hop-by-hop headers and every header named in `Connection`.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // A header named in `Connection` counts only while `Connection` is present, and that is
    // one of the fixed names.
    if !super::headers::contains_named(headers, &HOP_BY_HOP) {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();

    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::super::forwarded::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-private", HeaderValue::from_static("secret"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));

        remove_hop_by_hop(&mut headers);

        assert_eq!(headers.len(), 1, "left: {headers:?}");
        assert!(headers.contains_key(header::ACCEPT));
    }

    #[test]
    fn forwarded_for_replaces_client_value() {
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.66"));
        headers.insert(header::HOST, HeaderValue::from_static("api.example"));

        let peer: IpAddr = "192.0.2.7".parse().expect("valid address");
        let forwarding = Forwarding {
            client: peer,
            peer,
            peer_trusted: false,
            tls: false,
        };
        rewrite_request_headers(
            &mut headers,
            &forwarding,
            RequestId(0xab),
            Some(HeaderValue::from_static("api.example")),
        );

        assert_eq!(headers[X_FORWARDED_FOR], "192.0.2.7");
        assert_eq!(headers.get_all(X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(headers[X_FORWARDED_HOST], "api.example");
        assert_eq!(headers[X_FORWARDED_PROTO], "http");
        assert_eq!(headers[X_REQUEST_ID], "00000000000000ab");
        assert!(!headers.contains_key(header::HOST));
    }

    fn untrusting_tls() -> rustls::ClientConfig {
        crate::tls::client_config(rustls::RootCertStore::empty()).expect("client config")
    }

    #[test]
    fn target_joins_base_path_and_query() {
        let url: UpstreamUrl = "http://127.0.0.1:9000/api/".parse().expect("valid URL");
        let upstream = Upstream::new(url, Duration::from_secs(1), untrusting_tls());
        let request: Uri = "/v1/items?page=2".parse().expect("valid URI");

        let target = upstream.target_path(&request).expect("target joins");

        assert_eq!(target.to_string(), "/api/v1/items?page=2");
    }

    #[test]
    fn host_header_omits_default_port() {
        let cases = [
            ("http://127.0.0.1:9000", "127.0.0.1:9000"),
            ("http://api.example:80/v1", "api.example"),
            ("http://api.example", "api.example"),
            ("https://api.example:443", "api.example"),
            ("https://api.example:8443", "api.example:8443"),
            ("http://[2001:db8::1]:8080", "[2001:db8::1]:8080"),
        ];
        for (url, expected) in cases {
            let url: UpstreamUrl = url.parse().expect("valid URL");
            assert_eq!(host_header(&url), expected, "host of {url}");
        }
    }

    #[test]
    fn asterisk_target_is_rejected() {
        let url: UpstreamUrl = "http://127.0.0.1:9000".parse().expect("valid URL");
        let upstream = Upstream::new(url, Duration::from_secs(1), untrusting_tls());
        let request: Uri = "*".parse().expect("valid URI");

        let error = upstream.target_path(&request).expect_err("`*` has no path");

        assert!(matches!(error, ForwardError::InvalidTarget { .. }));
    }
}
