//! Validation settings: the `[validation]` and `[openapi]` sections and the
//! `[routes.validation]` sub-table of a route.

use std::path::PathBuf;

use serde::Deserialize;

use super::json::DEFAULT_MAX_DEPTH;

/// Action on a request that breaks a rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValidationMode {
    /// Reject it with a problem body.
    #[default]
    Enforce,
    /// Log and count the violation, then let the request through, for rolling a schema out.
    Report,
}

/// Action on a request for a path or method that the OpenAPI document does not declare.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UndeclaredAction {
    /// 404 for an undeclared path, 405 with `Allow` for an undeclared method.
    #[default]
    Reject,
    /// Log and count, then let it through.
    Report,
    /// Let it through silently.
    Pass,
}

/// Check of request bodies with a JSON media type that no route rule or OpenAPI operation
/// parsed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JsonBodies {
    /// Parse strictly and reject a body that is too deep, not UTF-8, has duplicate keys or is
    /// not JSON.
    #[default]
    Enforce,
    /// Parse strictly, log and count a violation, and let the request through.
    Report,
    /// Parse bodies only where a route rule or the OpenAPI document requires it.
    Off,
}

/// Action on a request body sent with a `Content-Encoding` other than `identity`, such as
/// gzip. The detectors and validators read the bytes as sent, so they cannot see into it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodedBodies {
    /// 415 with `Accept-Encoding: identity` (RFC 7694), so the client sends it again plain.
    #[default]
    Reject,
    /// Log and count, then let it through. The strict JSON parse of `json_bodies` skips it, but
    /// a route or OpenAPI body schema still reads the bytes as sent and rejects them.
    Report,
    /// Let it through as `report` does, without a log line, for an upstream that takes
    /// compressed uploads.
    Pass,
}

/// `[validation]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationConfig {
    /// Check of every JSON request body: `enforce`, `report` or `off`.
    pub json_bodies: JsonBodies,
    /// Maximum nesting depth of a JSON body, for routes that set none.
    pub max_json_depth: usize,
    /// Action on a request body with a content coding, for routes that set none.
    pub encoded_bodies: EncodedBodies,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            json_bodies: JsonBodies::Enforce,
            max_json_depth: DEFAULT_MAX_DEPTH,
            encoded_bodies: EncodedBodies::Reject,
        }
    }
}

/// `[openapi]` section.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenApiConfig {
    /// OpenAPI 3.0 or 3.1 document, YAML or JSON, relative to the working directory. No
    /// OpenAPI check runs when unset.
    pub file: Option<PathBuf>,
    /// Path prefix the document's paths are relative to, such as `/api/v3` when its server URL
    /// is `https://api.example/api/v3`. A request outside the prefix is undeclared.
    pub base_path: Option<String>,
    /// Whether a request that breaks the document is rejected or only reported.
    pub mode: ValidationMode,
    /// Action on undeclared paths and methods: `reject`, `report` or `pass`.
    pub undeclared: UndeclaredAction,
}

/// `[routes.validation]`: the rules of one route.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteValidationConfig {
    /// Whether a request that breaks a rule is rejected or only reported.
    pub mode: ValidationMode,
    /// Allowed methods, upper case; any other gets 405 with `Allow`. Every method when empty.
    pub methods: Vec<String>,
    /// Allowed media types of a request body, such as `application/json` or `text/*`; a body
    /// of another type gets 415. Any type when empty.
    pub content_types: Vec<String>,
    /// Largest request body in bytes; a larger one gets 413.
    pub max_body_bytes: Option<u64>,
    /// Maximum nesting depth of a JSON body; `[validation] max_json_depth` when unset.
    pub max_json_depth: Option<usize>,
    /// JSON Schema (draft 2020-12) file for a JSON body.
    pub body_schema: Option<PathBuf>,
    /// JSON Schema file for the query, checked as an object of parameter names. A parameter
    /// given once is a string, or the type its property schema names; a repeated one is an
    /// array.
    pub query_schema: Option<PathBuf>,
    /// JSON Schema file for the path parameters of the route's pattern, checked as an object.
    pub path_schema: Option<PathBuf>,
    /// JSON pointers of rich-text string fields in a JSON body, such as `/bio` or
    /// `/posts/*/html` (`*` is any array index or key), whose HTML is sanitized.
    pub rich_text: Vec<String>,
    /// Action on a request body with a content coding, or `[validation] encoded_bodies` when
    /// unset. Unlike the other rules, `mode` does not apply to it.
    pub encoded_bodies: Option<EncodedBodies>,
}
