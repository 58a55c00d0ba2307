//! Tests of the protocol rules: injected headers, smuggled request lines, line breaks and
//! mod_proxy's `unix:` URLs.

use super::normalise::FieldEncoding;
use super::*;

fn ids(raw: &str, kind: FieldKind) -> Vec<&'static str> {
    let encoding = if kind == FieldKind::Path { FieldEncoding::Plain } else { FieldEncoding::Form };
    inspect_value(raw.as_bytes(), encoding, kind).iter().map(|rule| rule.id).collect()
}

fn assert_flags(rule: &str, kind: FieldKind, values: &[&str]) {
    for value in values {
        assert!(ids(value, kind).contains(&rule), "{rule} not found in {kind:?} {value:?}: {:?}", ids(value, kind));
    }
}

fn assert_not_flags(rule: &str, kind: FieldKind, values: &[&str]) {
    for value in values {
        assert!(!ids(value, kind).contains(&rule), "{rule} found in {kind:?} {value:?}");
    }
}

#[test]
fn injected_headers_in_query_are_flagged() {
    assert_flags(
        "protocol-header-injection",
        FieldKind::Query,
        &[
            "foobar%0d%0aContent-Length:%200%0d%0a%0d%0aHTTP/1.1%20200%20OK",
            "x%0d%0aRemote-addr:%20foo.bar.com",
            "%0aSet-Cookie: id=1",
            "aaa%0aGET / HTTP/1.1",
        ],
    );
    assert_not_flags("protocol-header-injection", FieldKind::Query, &["line one%0aline two", "a:b%0a:c"]);
}

#[test]
fn body_fields_flag_only_unambiguous_headers() {
    assert_flags(
        "protocol-header-injection",
        FieldKind::Body,
        &["%0d%0aContent-Length: 0", "x%0aTransfer-Encoding: chunked", "%0aPOST / HTTP/1.1", "aaa%0aHTTP/1.1 200 OK"],
    );
    // Addresses and notes start lines with such words.
    assert_not_flags(
        "protocol-header-injection",
        FieldKind::Body,
        &["Office%0d%0aLocation: Paris", "Notes%0aHost: Mary%0aDate: Friday", "post it%0aget / the thing"],
    );
    assert_flags("protocol-header-injection", FieldKind::Query, &["Office%0d%0aLocation: Paris"]);
}

#[test]
fn smuggled_request_lines_are_flagged() {
    assert_flags(
        "protocol-request-line",
        FieldKind::Query,
        &["GET http://www.foo.bar HTTP/1.2", "x POST /admin HTTP/1.1", "OPTIONS * HTTP/1.0"],
    );
    assert_flags("protocol-request-line", FieldKind::Cookie, &["GET / HTTP/1.1"]);
    assert_not_flags(
        "protocol-request-line",
        FieldKind::Query,
        &["get it via http/2", "target /x http", "forget /x HTTP/1.1", "GET /x HTTP/two"],
    );
    // A body field may quote a request, as an API for HTTP logs does.
    assert_not_flags("protocol-request-line", FieldKind::Body, &["GET /index.html HTTP/1.1"]);
}

#[test]
fn line_break_in_path_is_flagged() {
    assert_flags("protocol-line-break", FieldKind::Path, &["/foo%0Abar", "/index.php/PHP%0Ainfo.php"]);
    assert_not_flags("protocol-line-break", FieldKind::Path, &["/foo%20bar", "/a/b"]);
    assert_not_flags("protocol-line-break", FieldKind::Query, &["line one%0aline two"]);
}

#[test]
fn query_line_break_needs_level_two() {
    let mut hits = Vec::new();
    let value = normalise::normalise(b"test%0Dnext=more", FieldEncoding::Form);
    strict::detect(&value, FieldKind::Query, 2, &mut hits);
    assert!(hits.contains(&rules::PROTOCOL_LINE_BREAK), "{hits:?}");

    let mut body_hits = Vec::new();
    strict::detect(&value, FieldKind::Body, 4, &mut body_hits);
    assert!(!body_hits.contains(&rules::PROTOCOL_LINE_BREAK), "{body_hits:?}");
}

#[test]
fn unix_socket_urls_are_flagged() {
    assert_flags(
        "rfi-unix-socket-url",
        FieldKind::Query,
        &["unix:AAAAAAAAA|http://example.com/", "unix%3A/run/a.sock|https://example.com/x"],
    );
    assert_not_flags(
        "rfi-unix-socket-url",
        FieldKind::Query,
        &["unix:/run/app.sock", "a|b unix:", "unix: pipes | sorting", "unix:x|://"],
    );
}
