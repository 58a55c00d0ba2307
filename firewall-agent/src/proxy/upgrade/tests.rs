use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::bans::memory::MemoryBlocklist;
use crate::proxy::{HttpConfig, Pipeline, ProxyServer, ProxyState, Upstream};
use crate::shutdown::Shutdown;
use crate::telemetry::Metrics;

/// A WebSocket opening handshake (RFC 6455, section 4.1) for `/chat`.
const WEBSOCKET_HANDSHAKE: &[u8] = b"GET /chat HTTP/1.1\r\nhost: api.example\r\n\
    upgrade: websocket\r\nconnection: Upgrade\r\n\
    sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n";

/// A masked WebSocket text frame carrying `Hello` (RFC 6455, section 5.7).
const HELLO_FRAME: &[u8] = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";

/// Bytes that an upstream sends right after its 101, before the client says anything.
const UPSTREAM_GREETING: &[u8] = b"raw bytes from the upstream";

/// How a test upstream responds to a request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UpstreamMode {
    /// 101 to a WebSocket upgrade request, then echo every byte. 200 to anything else.
    EchoWebSocket,
    /// 101 naming `switched_to` to every request, then send [`UPSTREAM_GREETING`].
    AlwaysSwitch { switched_to: &'static str },
    /// 200 to every request, keeping the connection open for the next one.
    NeverSwitch,
}

/// A test upstream on loopback that records the request heads it reads.
struct TestUpstream {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl TestUpstream {
    async fn start(mode: UpstreamMode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream address");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let records = Arc::clone(&heads);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_upstream(stream, mode, Arc::clone(&records)));
            }
        });
        Self { addr, heads }
    }

    /// Returns the request heads read so far, with lowercase header names.
    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("upstream records").clone()
    }
}

async fn serve_upstream(mut stream: TcpStream, mode: UpstreamMode, heads: Arc<Mutex<Vec<String>>>) {
    let mut pending = Vec::new();
    loop {
        let Some((head, rest)) = read_head(&mut stream, pending).await else {
            return;
        };
        pending = rest;
        let websocket = head.contains("\r\nupgrade: websocket\r\n");
        heads.lock().expect("upstream records").push(head);

        match mode {
            UpstreamMode::EchoWebSocket if websocket => {
                let response = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
                    connection: Upgrade\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
                if stream.write_all(response).await.is_err()
                    || stream.write_all(&pending).await.is_err()
                {
                    return;
                }
                let (mut reader, mut writer) = stream.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
                return;
            }
            UpstreamMode::AlwaysSwitch { switched_to } => {
                let response = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nupgrade: {switched_to}\r\nconnection: Upgrade\r\n\r\n"
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.write_all(UPSTREAM_GREETING).await;
                // Hold the connection open, so that only the proxy can end the exchange.
                tokio::time::sleep(Duration::from_secs(10)).await;
                return;
            }
            UpstreamMode::EchoWebSocket | UpstreamMode::NeverSwitch => {
                let response = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if stream.write_all(response).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads up to the end of a message head. Returns the head, with header names in lowercase,
/// and the bytes read after it, or `None` at the end of the stream.
async fn read_head(stream: &mut TcpStream, mut buffer: Vec<u8>) -> Option<(String, Vec<u8>)> {
    loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            let rest = buffer.split_off(end + 4);
            let head = String::from_utf8_lossy(&buffer);
            let lowercase_names = head
                .split("\r\n")
                .map(|line| match line.split_once(':') {
                    Some((name, value)) => format!("{}:{value}", name.to_ascii_lowercase()),
                    None => line.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("\r\n");
            return Some((lowercase_names, rest));
        }
        let mut chunk = [0u8; 4096];
        let count = stream.read(&mut chunk).await.ok()?;
        if count == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..count]);
    }
}

/// Reads whatever arrives until the peer closes or `wait` passes. Returns the bytes and
/// whether the peer closed.
async fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> (Vec<u8>, bool) {
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (received, true),
            Ok(Ok(count)) => received.extend_from_slice(&chunk[..count]),
            Err(_) => return (received, false),
        }
    }
}

/// Starts the proxy in front of `upstream` with an idle timeout of `idle_timeout_seconds`.
async fn start_proxy(upstream: SocketAddr, idle_timeout_seconds: u64) -> (SocketAddr, Shutdown) {
    let metrics = Arc::new(Metrics::new(Arc::new(MemoryBlocklist::new())));
    let url = format!("http://{upstream}").parse().expect("upstream URL");
    let tls = crate::tls::client_config(rustls::RootCertStore::empty()).expect("client config");
    let state = ProxyState::new(
        Pipeline::default(),
        Upstream::new(url, Duration::from_secs(5), tls),
        metrics,
    );
    let http = HttpConfig {
        idle_timeout_seconds,
        ..HttpConfig::default()
    };
    let server = ProxyServer::bind("127.0.0.1:0".parse().expect("address"), Arc::new(state))
        .await
        .expect("bind proxy")
        .with_http(http);
    let address = server.local_addr();
    let shutdown = Shutdown::new();
    tokio::spawn(server.serve(shutdown.listener()));
    (address, shutdown)
}

fn status_of(head: &str) -> Option<u16> {
    head.split(' ').nth(1)?.parse().ok()
}

#[tokio::test]
async fn websocket_handshake_is_relayed_both_ways() {
    let upstream = TestUpstream::start(UpstreamMode::EchoWebSocket).await;
    let (proxy, shutdown) = start_proxy(upstream.addr, 60).await;
    let mut client = TcpStream::connect(proxy)
        .await
        .expect("connect to the proxy");

    client
        .write_all(WEBSOCKET_HANDSHAKE)
        .await
        .expect("send the handshake");
    let (head, rest) = read_head(&mut client, Vec::new())
        .await
        .expect("response head");
    client.write_all(HELLO_FRAME).await.expect("send a frame");
    let mut echoed = rest;
    while echoed.len() < HELLO_FRAME.len() {
        let mut chunk = [0u8; 64];
        let count = tokio::time::timeout(Duration::from_secs(5), client.read(&mut chunk))
            .await
            .expect("echo within 5 s")
            .expect("read the echo");
        assert_ne!(count, 0, "connection closed before the echo");
        echoed.extend_from_slice(&chunk[..count]);
    }

    assert_eq!(status_of(&head), Some(101), "head: {head}");
    assert!(head.contains("\r\nupgrade: websocket"), "head: {head}");
    assert!(head.contains("\r\nconnection: upgrade"), "head: {head}");
    assert!(
        head.contains("\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "head: {head}"
    );
    assert_eq!(echoed, HELLO_FRAME);
    let forwarded = upstream.heads();
    assert_eq!(forwarded.len(), 1, "heads: {forwarded:?}");
    assert!(
        forwarded[0].contains("\r\nupgrade: websocket\r\n"),
        "{}",
        forwarded[0]
    );
    assert!(
        forwarded[0].contains("\r\nconnection: upgrade\r\n"),
        "{}",
        forwarded[0]
    );
    assert!(
        forwarded[0].contains("\r\nsec-websocket-key: "),
        "{}",
        forwarded[0]
    );
    assert!(
        forwarded[0].contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
        "{}",
        forwarded[0]
    );
    shutdown.trigger();
}

#[tokio::test]
async fn frame_sent_before_101_is_relayed_after_it() {
    let upstream = TestUpstream::start(UpstreamMode::EchoWebSocket).await;
    let (proxy, shutdown) = start_proxy(upstream.addr, 1).await;
    let mut client = TcpStream::connect(proxy)
        .await
        .expect("connect to the proxy");

    let mut bytes = WEBSOCKET_HANDSHAKE.to_vec();
    bytes.extend_from_slice(HELLO_FRAME);
    client
        .write_all(&bytes)
        .await
        .expect("send the handshake and a frame");
    let (head, rest) = read_head(&mut client, Vec::new())
        .await
        .expect("response head");
    let (mut echoed, _) = read_until_closed(&mut client, Duration::from_secs(5)).await;
    echoed.splice(0..0, rest);

    assert_eq!(status_of(&head), Some(101), "head: {head}");
    assert_eq!(echoed, HELLO_FRAME);
    let forwarded = upstream.heads();
    assert_eq!(forwarded.len(), 1, "heads: {forwarded:?}");
    shutdown.trigger();
}

#[tokio::test]
async fn relayed_connection_closes_when_idle() {
    let upstream = TestUpstream::start(UpstreamMode::EchoWebSocket).await;
    let (proxy, shutdown) = start_proxy(upstream.addr, 1).await;
    let mut client = TcpStream::connect(proxy)
        .await
        .expect("connect to the proxy");

    client
        .write_all(WEBSOCKET_HANDSHAKE)
        .await
        .expect("send the handshake");
    let (head, _) = read_head(&mut client, Vec::new())
        .await
        .expect("response head");
    client.write_all(HELLO_FRAME).await.expect("send a frame");
    let (echoed, closed) = read_until_closed(&mut client, Duration::from_secs(5)).await;

    assert_eq!(status_of(&head), Some(101), "head: {head}");
    assert_eq!(echoed, HELLO_FRAME);
    assert!(
        closed,
        "the idle relay stayed open past the 1 s idle timeout"
    );
    shutdown.trigger();
}

#[tokio::test]
async fn unoffered_switch_gets_502() {
    let upstream = TestUpstream::start(UpstreamMode::AlwaysSwitch {
        switched_to: "websocket",
    })
    .await;
    let (proxy, shutdown) = start_proxy(upstream.addr, 60).await;
    // The first request offers nothing. The second names a protocol in `Upgrade` but lacks
    // `Connection: upgrade`, so it offers nothing either.
    let requests: [&[u8]; 2] = [
        b"GET /plain HTTP/1.1\r\nhost: api.example\r\n\r\n",
        b"GET /chat HTTP/1.1\r\nhost: api.example\r\nupgrade: websocket\r\n\r\n",
    ];

    for request in requests {
        let mut client = TcpStream::connect(proxy)
            .await
            .expect("connect to the proxy");
        client.write_all(request).await.expect("send the request");
        let (received, _) = read_until_closed(&mut client, Duration::from_secs(2)).await;
        let text = String::from_utf8_lossy(&received);

        assert_eq!(status_of(&text), Some(502), "response: {text}");
        assert!(
            !text.contains("raw bytes"),
            "raw upstream bytes reached the client: {text}"
        );
    }
    let forwarded = upstream.heads();
    assert_eq!(forwarded.len(), 2, "heads: {forwarded:?}");
    for head in &forwarded {
        assert!(
            !head.contains("\r\nupgrade:"),
            "upgrade forwarded without an offer: {head}"
        );
    }
    shutdown.trigger();
}

#[tokio::test]
async fn switch_to_protocol_not_offered_gets_502() {
    let upstream = TestUpstream::start(UpstreamMode::AlwaysSwitch { switched_to: "h2c" }).await;
    let (proxy, shutdown) = start_proxy(upstream.addr, 60).await;
    let mut client = TcpStream::connect(proxy)
        .await
        .expect("connect to the proxy");

    client
        .write_all(WEBSOCKET_HANDSHAKE)
        .await
        .expect("send the handshake");
    let (received, _) = read_until_closed(&mut client, Duration::from_secs(2)).await;
    let text = String::from_utf8_lossy(&received);

    assert_eq!(status_of(&text), Some(502), "response: {text}");
    assert!(
        !text.contains("raw bytes"),
        "raw upstream bytes reached the client: {text}"
    );
    shutdown.trigger();
}

#[tokio::test]
async fn refused_upgrade_passes_no_raw_bytes() {
    let upstream = TestUpstream::start(UpstreamMode::NeverSwitch).await;
    let (proxy, shutdown) = start_proxy(upstream.addr, 60).await;
    let mut client = TcpStream::connect(proxy)
        .await
        .expect("connect to the proxy");

    // A client that does not wait for the 101 sends its first frame right after the handshake.
    let mut bytes = WEBSOCKET_HANDSHAKE.to_vec();
    bytes.extend_from_slice(HELLO_FRAME);
    client
        .write_all(&bytes)
        .await
        .expect("send the handshake and a frame");
    let (received, closed) = read_until_closed(&mut client, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&received);

    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "response: {text}");
    assert!(
        text.contains("HTTP/1.1 400 Bad Request\r\n"),
        "response: {text}"
    );
    assert!(closed, "the connection stayed open after the frame");
    let forwarded = upstream.heads();
    assert_eq!(
        forwarded.len(),
        1,
        "the frame reached the upstream: {forwarded:?}"
    );
    shutdown.trigger();
}

#[tokio::test]
async fn h2c_upgrade_is_not_forwarded() {
    let upstream = TestUpstream::start(UpstreamMode::NeverSwitch).await;
    let (proxy, shutdown) = start_proxy(upstream.addr, 60).await;
    let mut client = TcpStream::connect(proxy)
        .await
        .expect("connect to the proxy");

    client
        .write_all(
            b"GET / HTTP/1.1\r\nhost: api.example\r\nupgrade: h2c\r\n\
              connection: Upgrade, HTTP2-Settings\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n\r\n",
        )
        .await
        .expect("send the request");
    let (head, _) = read_head(&mut client, Vec::new())
        .await
        .expect("response head");

    assert_eq!(status_of(&head), Some(200), "head: {head}");
    let forwarded = upstream.heads();
    assert_eq!(forwarded.len(), 1, "heads: {forwarded:?}");
    assert!(!forwarded[0].contains("\r\nupgrade:"), "{}", forwarded[0]);
    assert!(
        !forwarded[0].contains("\r\nhttp2-settings:"),
        "{}",
        forwarded[0]
    );
    shutdown.trigger();
}

#[test]
fn offered_protocols_need_connection_upgrade() {
    let mut headers = HeaderMap::new();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    assert_eq!(offered_protocols(&headers), None);

    headers.insert(
        header::CONNECTION,
        HeaderValue::from_static("keep-alive, Upgrade"),
    );
    assert_eq!(
        offered_protocols(&headers),
        Some(HeaderValue::from_static("websocket"))
    );
}

#[test]
fn offered_protocols_drop_h2c() {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("H2C, websocket"));
    assert_eq!(
        offered_protocols(&headers),
        Some(HeaderValue::from_static("websocket"))
    );

    headers.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
    assert_eq!(offered_protocols(&headers), None);
}

#[test]
fn switched_protocol_must_be_offered() {
    let offered = HeaderValue::from_static("websocket, foo/2");
    let switched = |value: &'static str| {
        let mut headers = HeaderMap::new();
        if !value.is_empty() {
            headers.insert(header::UPGRADE, HeaderValue::from_static(value));
        }
        check_switched_protocols(&headers, &offered)
    };

    assert!(switched("WebSocket").is_ok());
    assert!(switched("foo/2").is_ok());
    assert!(matches!(
        switched("foo/3"),
        Err(UpgradeError::ProtocolNotOffered { protocol }) if protocol == "foo/3"
    ));
    assert!(matches!(switched(""), Err(UpgradeError::MissingProtocol)));
}
