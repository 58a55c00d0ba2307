//! Request smuggling and ambiguous framing, sent as raw bytes to the proxy on loopback.
//!
//! Every ambiguous request must get a 400, the connection must close, and the recording
//! upstream behind the proxy must receive nothing from the ambiguous request or after it.

use std::time::Duration;

use integration_tests::edge::{EdgeAgent, RecordingUpstream, send_raw};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A request that must never reach the upstream. Each case appends it after its ambiguous
/// request, as a smuggling attempt would.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nhost: api.example\r\n\r\n";

/// Ambiguous requests, by name. Each is followed by [`SMUGGLED`].
const AMBIGUOUS: [(&str, &str); 12] = [
    (
        "content-length then transfer-encoding",
        "POST /a HTTP/1.1\r\nhost: api.example\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "transfer-encoding then content-length",
        "POST /a HTTP/1.1\r\nhost: api.example\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n",
    ),
    (
        "duplicate identical content-length",
        "POST /a HTTP/1.1\r\nhost: api.example\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\nabc",
    ),
    (
        "conflicting content-length",
        "POST /a HTTP/1.1\r\nhost: api.example\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd",
    ),
    (
        "content-length list",
        "POST /a HTTP/1.1\r\nhost: api.example\r\ncontent-length: 3, 3\r\n\r\nabc",
    ),
    (
        "malformed chunk size",
        "POST /a HTTP/1.1\r\nhost: api.example\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    ),
    (
        "chunk without terminator",
        "POST /a HTTP/1.1\r\nhost: api.example\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
    ),
    (
        "transfer-encoding not ending in chunked",
        "POST /a HTTP/1.1\r\nhost: api.example\r\ntransfer-encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    ),
    (
        "obsolete line folding",
        "GET /a HTTP/1.1\r\nhost: api.example\r\nx-folded: one\r\n two\r\n\r\n",
    ),
    (
        "space before colon",
        "POST /a HTTP/1.1\r\nhost: api.example\r\ntransfer-encoding : chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "invalid header name",
        "GET /a HTTP/1.1\r\nhost: api.example\r\nx(bad): 1\r\n\r\n",
    ),
    (
        "control character in header value",
        "GET /a HTTP/1.1\r\nhost: api.example\r\nx-value: a\x01b\r\n\r\n",
    ),
];

#[test]
fn ambiguous_requests_are_rejected_and_closed() {
    let upstream = RecordingUpstream::start();
    let agent = EdgeAgent::start("smuggling", upstream.addr, |_| {});
    let mut failures = Vec::new();

    for (name, request) in AMBIGUOUS {
        let before = upstream.requests().len();
        let exchange = send_raw(
            agent.addr,
            format!("{request}{SMUGGLED}").as_bytes(),
            TIMEOUT,
        );
        let forwarded = &upstream.requests()[before..];

        let statuses = exchange.statuses();
        println!(
            "{name}: statuses {statuses:?}, closed {}, forwarded {}",
            exchange.closed,
            forwarded.len()
        );
        if statuses != [400] {
            failures.push(format!("{name}: expected one 400, got {statuses:?}"));
        }
        if !exchange.closed {
            failures.push(format!("{name}: the connection stayed open"));
        }
        if !forwarded.is_empty() {
            failures.push(format!("{name}: the upstream received {forwarded:?}"));
        }
    }

    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn request_before_ambiguity_is_answered_alone() {
    let upstream = RecordingUpstream::start();
    let agent = EdgeAgent::start("smuggling-pipelined", upstream.addr, |_| {});
    let pipelined = format!(
        "GET /first HTTP/1.1\r\nhost: api.example\r\n\r\n{}{SMUGGLED}",
        AMBIGUOUS[0].1
    );

    let exchange = send_raw(agent.addr, pipelined.as_bytes(), TIMEOUT);

    let lines: Vec<String> = upstream
        .requests()
        .into_iter()
        .map(|request| request.request_line)
        .collect();
    assert_eq!(lines, ["GET /first HTTP/1.1"]);
    assert_eq!(exchange.statuses(), [200, 400], "{}", exchange.response);
    assert!(exchange.closed);
}

#[test]
fn rejection_carries_security_headers() {
    let upstream = RecordingUpstream::start();
    let agent = EdgeAgent::start("smuggling-headers", upstream.addr, |_| {});

    let exchange = send_raw(agent.addr, AMBIGUOUS[2].1.as_bytes(), TIMEOUT);

    let response = exchange.response.to_ascii_lowercase();
    assert!(response.contains("connection: close\r\n"), "{response}");
    assert!(
        response.contains("x-content-type-options: nosniff\r\n"),
        "{response}"
    );
    assert!(response.contains("duplicate content-length"), "{response}");
}

#[test]
fn valid_keep_alive_requests_all_pass() {
    let upstream = RecordingUpstream::start();
    let agent = EdgeAgent::start("smuggling-valid", upstream.addr, |_| {});
    let requests = concat!(
        "POST /one HTTP/1.1\r\nhost: api.example\r\ncontent-length: 3\r\n\r\nabc",
        "POST /two HTTP/1.1\r\nhost: api.example\r\ntransfer-encoding: chunked\r\n\r\n",
        "3;note=1\r\nxyz\r\n0\r\nx-trailer: t\r\n\r\n",
        "GET /three HTTP/1.1\r\nhost: api.example\r\nconnection: close\r\n\r\n",
    );

    let exchange = send_raw(agent.addr, requests.as_bytes(), TIMEOUT);

    assert_eq!(
        exchange.statuses(),
        [200, 200, 200],
        "{}",
        exchange.response
    );
    let recorded = upstream.requests();
    let lines: Vec<&str> = recorded.iter().map(|r| r.request_line.as_str()).collect();
    assert_eq!(
        lines,
        [
            "POST /one HTTP/1.1",
            "POST /two HTTP/1.1",
            "GET /three HTTP/1.1"
        ]
    );
    assert_eq!(recorded[0].body, b"abc");
    assert_eq!(recorded[1].body, b"xyz");
}

#[test]
fn oversized_head_gets_431() {
    let upstream = RecordingUpstream::start();
    let agent = EdgeAgent::start("smuggling-large", upstream.addr, |config| {
        config.http.max_header_bytes = 4096;
    });
    let request = format!(
        "GET /a HTTP/1.1\r\nhost: api.example\r\nx-large: {}\r\n\r\n",
        "a".repeat(5000)
    );

    let exchange = send_raw(agent.addr, request.as_bytes(), TIMEOUT);

    assert_eq!(exchange.statuses(), [431], "{}", exchange.response);
    assert!(exchange.closed);
    assert!(upstream.requests().is_empty());
}
