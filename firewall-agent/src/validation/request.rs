//! The parts of a request that validation reads, and the violations it reports.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, header};

use super::json::JsonError;
use super::problem::{InvalidParam, ParamLocation, Problem};

/// The parts of a request that validation reads.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    /// The method.
    pub method: &'a Method,
    /// The path, still percent-encoded.
    pub path: &'a str,
    /// The query without `?`.
    pub query: Option<&'a str>,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The buffered body.
    pub body: &'a Bytes,
}

/// Kind of rule a request broke, for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    /// The method is not allowed: 405.
    Method,
    /// No declared path matches: 404.
    UndeclaredPath,
    /// The body is larger than the route allows: 413.
    BodySize,
    /// The body's media type is not allowed: 415.
    ContentType,
    /// The body is not valid JSON or breaks a JSON limit: 400.
    Json,
    /// A required body is missing: 400.
    MissingBody,
    /// A parameter or the body breaks a schema, or a required parameter is missing: 400.
    Schema,
    /// The path or query is not valid percent-encoded UTF-8: 400.
    Encoding,
    /// The body has a content coding, such as gzip, that the checks cannot read: 415.
    ContentEncoding,
}

impl ViolationKind {
    /// Label used in metrics and logs.
    pub const fn label(self) -> &'static str {
        match self {
            ViolationKind::Method => "method",
            ViolationKind::UndeclaredPath => "undeclared_path",
            ViolationKind::BodySize => "body_size",
            ViolationKind::ContentType => "content_type",
            ViolationKind::Json => "json",
            ViolationKind::MissingBody => "missing_body",
            ViolationKind::Schema => "schema",
            ViolationKind::Encoding => "encoding",
            ViolationKind::ContentEncoding => "content_encoding",
        }
    }
}

/// A broken rule, ready to become a problem response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which rule.
    pub kind: ViolationKind,
    /// The problem body.
    pub problem: Problem,
    /// Methods for the `Allow` header of a 405.
    pub allow: Vec<Method>,
}

impl Violation {
    /// Creates a violation without field details.
    pub fn new(kind: ViolationKind, status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind,
            problem: Problem::new(status, detail),
            allow: Vec::new(),
        }
    }

    /// Creates a 400 violation listing the invalid fields.
    pub fn invalid_params(kind: ViolationKind, detail: &str, params: Vec<InvalidParam>) -> Self {
        Self {
            kind,
            problem: Problem::new(StatusCode::BAD_REQUEST, detail).with_invalid_params(params),
            allow: Vec::new(),
        }
    }

    /// Creates a 405 violation with the allowed methods.
    pub fn method_not_allowed(method: &Method, allow: Vec<Method>) -> Self {
        Self {
            kind: ViolationKind::Method,
            problem: Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} is not allowed on this path"),
            ),
            allow,
        }
    }

    /// Creates a 400 violation for a body that is not acceptable JSON.
    pub fn from_json(error: &JsonError) -> Self {
        Self::invalid_params(
            ViolationKind::Json,
            "request body is not acceptable JSON",
            vec![InvalidParam {
                name: error.pointer.clone(),
                location: ParamLocation::Body,
                reason: format!("{} (byte {})", error.kind, error.offset),
            }],
        )
    }

    /// Returns the JSON pointers or parameter names the violation names, for logs.
    pub fn field_names(&self) -> Vec<&str> {
        self.problem
            .invalid_params
            .iter()
            .map(|param| param.name.as_str())
            .collect()
    }
}

/// Parses a query or a form body into its parameters, percent-decoded, with `+` as a space.
///
/// # Errors
///
/// A 400 [`Violation`] when a name or value does not decode to UTF-8.
pub fn parse_form(text: &str, location: ParamLocation) -> Result<BTreeMap<String, Vec<String>>, Violation> {
    let mut parameters: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (index, pair) in text.split('&').enumerate() {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |part: &str| {
            let spaced = part.replace('+', " ");
            percent_encoding::percent_decode_str(&spaced)
                .decode_utf8()
                .map(|decoded| decoded.into_owned())
        };
        let (Ok(name), Ok(value)) = (decode(name), decode(value)) else {
            return Err(Violation::invalid_params(
                ViolationKind::Encoding,
                "request parameters are not valid percent-encoded UTF-8",
                vec![InvalidParam {
                    name: format!("#{index}"),
                    location,
                    reason: "not valid percent-encoded UTF-8".to_owned(),
                }],
            ));
        };
        parameters.entry(name).or_default().push(value);
    }
    Ok(parameters)
}

/// Returns the request's media type without parameters, lowercase, or `None` without a
/// `Content-Type` header.
///
/// # Errors
///
/// A 415 [`Violation`] when the header is not text or not `type/subtype`.
pub fn media_type(headers: &HeaderMap) -> Result<Option<String>, Violation> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(None);
    };
    let invalid = || {
        Violation::new(
            ViolationKind::ContentType,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the Content-Type header is not a valid media type",
        )
    };
    let text = value.to_str().map_err(|_| invalid())?;
    let essence = text.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match essence.split_once('/') {
        Some((kind, subtype)) if !kind.is_empty() && !subtype.is_empty() && !subtype.contains('/') => Ok(Some(essence)),
        _ => Err(invalid()),
    }
}

/// Returns whether a `Content-Encoding` field of the request names a coding other than
/// `identity`. A field that is not text counts as one.
pub fn has_content_coding(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONTENT_ENCODING).iter().any(|value| {
        value.to_str().map_or(true, |text| {
            text.split(',')
                .map(str::trim)
                .any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity"))
        })
    })
}

/// Returns whether `media_type` (lowercase essence) falls in `range`, such as `*/*`,
/// `application/*` or `application/json`.
pub fn media_range_matches(range: &str, media_type: &str) -> bool {
    let range = range.split(';').next().unwrap_or_default().trim();
    if range == "*/*" || range.eq_ignore_ascii_case(media_type) {
        return true;
    }
    match (range.strip_suffix("/*"), media_type.split_once('/')) {
        (Some(kind), Some((media_kind, _))) => kind.eq_ignore_ascii_case(media_kind),
        _ => false,
    }
}

/// Returns whether a media type is JSON: `application/json` or a `+json` structured syntax
/// suffix (RFC 6839).
pub fn is_json(media_type: &str) -> bool {
    media_type == "application/json" || media_type.ends_with("+json")
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn form_parsing_decodes_and_groups() {
        let parameters = parse_form("a=1&b=x+y&a=%32&c&&d=%C3%A9", ParamLocation::Query).expect("valid");

        assert_eq!(parameters["a"], ["1", "2"]);
        assert_eq!(parameters["b"], ["x y"]);
        assert_eq!(parameters["c"], [""]);
        assert_eq!(parameters["d"], ["é"]);
    }

    #[test]
    fn form_parsing_rejects_invalid_utf8() {
        let violation = parse_form("ok=1&bad=%ff", ParamLocation::Query).expect_err("invalid");

        assert_eq!(violation.kind, ViolationKind::Encoding);
        assert_eq!(violation.problem.invalid_params[0].name, "#1");
    }

    #[test]
    fn media_type_takes_essence() {
        let mut headers = HeaderMap::new();
        assert_eq!(media_type(&headers), Ok(None));

        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("Application/JSON; charset=utf-8"));
        assert_eq!(media_type(&headers), Ok(Some("application/json".to_owned())));

        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("json"));
        assert!(media_type(&headers).is_err());
    }

    #[test]
    fn media_ranges_match() {
        assert!(media_range_matches("*/*", "image/png"));
        assert!(media_range_matches("image/*", "image/png"));
        assert!(media_range_matches("application/json", "application/json"));
        assert!(!media_range_matches("application/json", "application/xml"));
        assert!(!media_range_matches("text/*", "image/png"));
    }

    #[test]
    fn json_media_types_include_suffix() {
        assert!(is_json("application/json"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/json5"));
    }
}
