//! Requests and responses of the authorization server's endpoints, independent of the proxy:
//! parameter parsing, JSON and HTML bodies, and redirects.

use std::collections::BTreeMap;
use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};

/// One request to an endpoint of the authorization server.
#[derive(Clone, Debug)]
pub struct OAuthRequest {
    /// The client's address, for sign-in events.
    pub client: IpAddr,
    /// Request method.
    pub method: Method,
    /// Request path, without the query.
    pub path: String,
    /// Request query, without the `?`.
    pub query: Option<String>,
    /// Request headers.
    pub headers: HeaderMap,
    /// Request body.
    pub body: Bytes,
}

/// A response of the authorization server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthResponse {
    /// Response status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body.
    pub body: Bytes,
}

/// Parameters of a query or form body. A parameter sent with an empty value counts as absent,
/// as RFC 6749 section 3.1 requires.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    values: BTreeMap<String, String>,
    repeated: Vec<String>,
}

impl Params {
    /// Parses `application/x-www-form-urlencoded` text, remembering repeated names.
    pub fn parse(text: &[u8]) -> Self {
        let mut params = Self::default();
        for (name, value) in form_urlencoded::parse(text) {
            if value.is_empty() {
                continue;
            }
            let name = name.into_owned();
            if params.values.contains_key(&name) {
                if !params.repeated.contains(&name) {
                    params.repeated.push(name);
                }
                continue;
            }
            params.values.insert(name, value.into_owned());
        }
        params
    }

    /// Returns the value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Returns whether `name` was sent more than once.
    pub fn is_repeated(&self, name: &str) -> bool {
        self.repeated.iter().any(|repeated| repeated == name)
    }

    /// Returns the first parameter that was sent more than once, if any.
    pub fn first_repeated(&self) -> Option<&str> {
        self.repeated.first().map(String::as_str)
    }
}

impl OAuthResponse {
    /// Creates a response with `Cache-Control: no-store`, which every response of the
    /// authorization server carries because they hold codes, tokens or CSRF tokens.
    pub fn new(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        Self {
            status,
            headers,
            body: body.into(),
        }
    }

    /// Creates a JSON response.
    pub fn json(status: StatusCode, value: &serde_json::Value) -> Self {
        Self::new(status, "application/json", value.to_string())
    }

    /// Creates an OAuth error response (RFC 6749 section 5.2).
    pub fn oauth_error(status: StatusCode, error: &str, description: &str) -> Self {
        Self::json(
            status,
            &serde_json::json!({ "error": error, "error_description": description }),
        )
    }

    /// Creates an HTML page that cannot be framed and sends no referrer.
    pub fn html(status: StatusCode, html: String) -> Self {
        let mut response = Self::new(status, "text/html; charset=utf-8", html);
        response.headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
                 frame-ancestors 'none'",
            ),
        );
        response
            .headers
            .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        response.headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        response
    }

    /// Creates the error page shown instead of a redirect, when the client or the redirect URI
    /// cannot be trusted.
    pub fn error_page(status: StatusCode, message: &str) -> Self {
        let html = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>Authorization error</title></head><body><h1>Authorization error</h1>\
             <p>{}</p></body></html>",
            escape_html(message)
        );
        Self::html(status, html)
    }

    /// Creates a `303 See Other` redirect to `location`.
    pub fn redirect(location: &str) -> Self {
        let mut response = Self::new(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "");
        match HeaderValue::from_str(location) {
            Ok(value) => {
                response.headers.insert(header::LOCATION, value);
                response
            }
            // Registered redirect URIs are printable ASCII and parameters are percent-encoded,
            // so this branch only guards against a corrupt store.
            Err(_) => Self::error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the registered redirect URI is not a valid header value",
            ),
        }
    }

    /// Creates `405 Method Not Allowed` naming the allowed method.
    pub fn method_not_allowed(allowed: &'static str) -> Self {
        let mut response = Self::oauth_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            &format!("this endpoint accepts {allowed} only"),
        );
        response
            .headers
            .insert(header::ALLOW, HeaderValue::from_static(allowed));
        response
    }
}

/// Appends `params` to `uri`'s query, percent-encoded.
pub fn append_query(uri: &str, params: &[(&str, &str)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        serializer.append_pair(name, value);
    }
    let separator = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{separator}{}", serializer.finish())
}

/// Escapes text for an HTML element or a quoted attribute.
pub fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// Returns whether the request body is declared as a form.
pub fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media_type| {
            media_type
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_detect_repeated_names() {
        let params = Params::parse(b"a=1&b=2&a=3&c=");

        assert_eq!(params.get("a"), Some("1"));
        assert!(params.is_repeated("a"));
        assert!(!params.is_repeated("b"));
        assert_eq!(params.get("c"), None);
        assert_eq!(params.first_repeated(), Some("a"));
    }

    #[test]
    fn append_query_keeps_existing_query() {
        let uri = append_query("https://app.example/cb?x=1", &[("state", "a b&c")]);
        assert_eq!(uri, "https://app.example/cb?x=1&state=a+b%26c");
    }

    #[test]
    fn escape_html_escapes_markup() {
        assert_eq!(
            escape_html("<a href=\"x\">'&'"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;"
        );
    }
}
