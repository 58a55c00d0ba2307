//! Problem details for HTTP APIs (RFC 9457): the `application/problem+json` body of a rejected
//! request.
//!
//! A problem names the offending fields by JSON pointer or parameter name and says what rule
//! they break. It never contains the values the client sent, because they may be secrets or
//! an attack payload that a careless client would display.

use http::StatusCode;
use serde::Serialize;

/// Media type of a problem body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Maximum number of entries in `invalid-params`, so a document with many errors cannot make
/// the response large.
pub const MAX_INVALID_PARAMS: usize = 20;

/// Location of an invalid parameter in the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamLocation {
    /// The request body.
    Body,
    /// The query string.
    Query,
    /// A segment of the path.
    Path,
    /// A request header.
    Header,
}

/// One entry of `invalid-params`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InvalidParam {
    /// JSON pointer of the field in the body, or the parameter's name.
    pub name: String,
    /// Its location in the request.
    #[serde(rename = "in")]
    pub location: ParamLocation,
    /// The rule it breaks, without its value.
    pub reason: String,
}

/// A problem details object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Problem type. `about:blank` means the status code and title describe the problem fully.
    #[serde(rename = "type")]
    pub problem_type: &'static str,
    /// Short summary, the same for every occurrence of the problem type.
    pub title: String,
    /// HTTP status code.
    #[serde(serialize_with = "serialize_status")]
    pub status: StatusCode,
    /// Explanation of this occurrence.
    pub detail: String,
    /// Fields that failed validation, at most [`MAX_INVALID_PARAMS`].
    #[serde(rename = "invalid-params", skip_serializing_if = "Vec::is_empty")]
    pub invalid_params: Vec<InvalidParam>,
}

fn serialize_status<S: serde::Serializer>(status: &StatusCode, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u16(status.as_u16())
}

impl Problem {
    /// Creates a problem with the status's reason phrase as the title.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            problem_type: "about:blank",
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status,
            detail: detail.into(),
            invalid_params: Vec::new(),
        }
    }

    /// Adds invalid parameters, keeping at most [`MAX_INVALID_PARAMS`].
    #[must_use]
    pub fn with_invalid_params(mut self, params: impl IntoIterator<Item = InvalidParam>) -> Self {
        let room = MAX_INVALID_PARAMS.saturating_sub(self.invalid_params.len());
        self.invalid_params.extend(params.into_iter().take(room));
        self
    }

    /// Serializes the problem, adding the request id as an extension member.
    pub fn to_json(&self, request_id: &str) -> String {
        let mut body = serde_json::to_value(self).unwrap_or_default();
        if let Some(object) = body.as_object_mut() {
            object.insert("request_id".to_owned(), request_id.into());
        }
        body.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_serializes_rfc9457_members() {
        let problem = Problem::new(StatusCode::BAD_REQUEST, "request body is invalid")
            .with_invalid_params([InvalidParam {
                name: "/age".to_owned(),
                location: ParamLocation::Body,
                reason: "must be of type integer".to_owned(),
            }]);

        let body: serde_json::Value =
            serde_json::from_str(&problem.to_json("00000000000000a1")).expect("valid JSON");

        assert_eq!(body["type"], "about:blank");
        assert_eq!(body["title"], "Bad Request");
        assert_eq!(body["status"], 400);
        assert_eq!(body["detail"], "request body is invalid");
        assert_eq!(body["invalid-params"][0]["name"], "/age");
        assert_eq!(body["invalid-params"][0]["in"], "body");
        assert_eq!(body["request_id"], "00000000000000a1");
    }

    #[test]
    fn problem_omits_empty_invalid_params() {
        let problem = Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "content type is not allowed");

        let body: serde_json::Value =
            serde_json::from_str(&problem.to_json("1")).expect("valid JSON");

        assert!(body.get("invalid-params").is_none());
    }

    #[test]
    fn problem_caps_invalid_params() {
        let params = (0..100).map(|index| InvalidParam {
            name: format!("/items/{index}"),
            location: ParamLocation::Body,
            reason: "must be of type string".to_owned(),
        });

        let problem = Problem::new(StatusCode::BAD_REQUEST, "request body is invalid")
            .with_invalid_params(params);

        assert_eq!(problem.invalid_params.len(), MAX_INVALID_PARAMS);
    }
}
