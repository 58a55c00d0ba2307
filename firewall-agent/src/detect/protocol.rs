//! HTTP carried inside values: injected headers that split a response, request lines smuggled
//! to a back end, line breaks in the path, and the `unix:` URLs of Apache's mod_proxy.

use super::byte_set::ByteSet;
use super::{FieldKind, Rule, rules};

/// Methods that start a smuggled request line.
const METHODS: [&str; 9] = ["get", "post", "put", "patch", "delete", "head", "options", "connect", "trace"];

/// Headers whose injection after a line break splits a response or smuggles a request.
const INJECTED_HEADERS: [&str; 8] = [
    "set-cookie:",
    "location:",
    "content-length:",
    "transfer-encoding:",
    "content-type:",
    "refresh:",
    "x-forwarded-for:",
    "host:",
];

/// The injected headers that count in form and JSON fields. Notes and addresses can start a
/// line with `Location:` or `Host:`, but not with these.
const BODY_INJECTED_HEADERS: [&str; 3] = ["set-cookie:", "content-length:", "transfer-encoding:"];

/// Runs the protocol rules over one normalised, lowercase value.
pub fn detect(text: &str, bytes: &ByteSet, kind: FieldKind, hits: &mut Vec<Rule>) {
    let line_break = bytes.contains_any(b"\r\n");
    if line_break && has_header_injection(text, kind) {
        hits.push(rules::PROTOCOL_HEADER_INJECTION);
    }
    if line_break && kind == FieldKind::Path {
        hits.push(rules::PROTOCOL_LINE_BREAK);
    }
    // A body field may quote a request, as an API for HTTP logs or tests does. Only one that
    // starts a line after a line break counts there, as an injected header.
    if kind != FieldKind::Body && bytes.contains_all(b"http/") && contains_request_line(text) {
        hits.push(rules::PROTOCOL_REQUEST_LINE);
    }
    if bytes.contains_all(b"|:") && has_unix_socket_url(text) {
        hits.push(rules::RFI_UNIX_SOCKET_URL);
    }
}

/// Returns whether a line after a line break starts with a header, a request line or a status
/// line. In query, cookie and header values and in the path any header name counts, and in
/// form and JSON fields only [`BODY_INJECTED_HEADERS`].
fn has_header_injection(text: &str, kind: FieldKind) -> bool {
    text.split(['\r', '\n']).skip(1).any(|line| {
        let line = line.trim_start();
        let header = match kind {
            FieldKind::Query | FieldKind::Cookie | FieldKind::Header | FieldKind::Path => {
                starts_with_header_name(line)
            }
            FieldKind::Body => BODY_INJECTED_HEADERS.iter().any(|header| line.starts_with(header)),
            FieldKind::RawBody | FieldKind::FileName => {
                INJECTED_HEADERS.iter().any(|header| line.starts_with(header))
            }
        };
        header || line.starts_with("http/1.") || line.starts_with("http/2 ") || starts_with_request_line(line)
    })
}

/// Returns whether `line` starts with a header field name and a colon, such as
/// `remote-addr: x`.
fn starts_with_header_name(line: &str) -> bool {
    let name_end = line
        .bytes()
        .position(|byte| !(byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'))
        .unwrap_or(line.len());
    name_end >= 2 && line[name_end..].trim_start_matches([' ', '\t']).starts_with(':')
}

/// Returns whether `text` contains a request line (method, target, `HTTP/` and a digit) that
/// starts at a word boundary.
fn contains_request_line(text: &str) -> bool {
    if !text.contains("http/") {
        return false;
    }
    METHODS.iter().any(|method| {
        text.match_indices(method).any(|(start, _)| {
            let boundary = !text[..start].bytes().next_back().is_some_and(|byte| byte.is_ascii_alphanumeric());
            boundary && starts_with_request_line(&text[start..])
        })
    })
}

/// Returns whether `line` starts with a method, whitespace, a target (a path, `*` or an
/// absolute URL), whitespace and `http/` with a digit.
fn starts_with_request_line(line: &str) -> bool {
    let Some(method) = METHODS.iter().find(|method| line.starts_with(**method)) else {
        return false;
    };
    let Some(target) = skip_blanks(&line[method.len()..]) else {
        return false;
    };
    let target_end = target.find([' ', '\t']).unwrap_or(target.len());
    let target_text = &target[..target_end];
    if !(target_text.starts_with(['/', '*']) || target_text.contains("://")) {
        return false;
    }
    skip_blanks(&target[target_end..])
        .and_then(|version| version.strip_prefix("http/"))
        .is_some_and(|number| number.starts_with(|c: char| c.is_ascii_digit()))
}

/// Returns `text` after its leading spaces and tabs, or `None` when it does not start with one.
fn skip_blanks(text: &str) -> Option<&str> {
    let rest = text.trim_start_matches([' ', '\t']);
    (rest.len() < text.len()).then_some(rest)
}

/// Returns whether `text` contains `unix:`, later a `|`, and after it a URL scheme and `://`.
fn has_unix_socket_url(text: &str) -> bool {
    text.match_indices("unix:").any(|(start, _)| {
        let Some(bar) = text[start..].find('|') else {
            return false;
        };
        let url = &text[start + bar + 1..];
        let scheme_end = url
            .bytes()
            .position(|byte| !(byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'.' | b'-')))
            .unwrap_or(url.len());
        scheme_end > 0 && url[scheme_end..].starts_with("://")
    })
}
