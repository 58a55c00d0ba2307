//! The compiled rules of one route, from its `[routes.validation]` sub-table.

use std::collections::BTreeMap;
use std::path::Path;

use http::{Method, StatusCode};
use serde_json::{Map, Value};

use super::config::{RouteValidationConfig, ValidationMode};
use super::json::{self, JsonLimits, MAX_DEPTH_CEILING, PointerPattern};
use super::path::split_path;
use super::problem::{InvalidParam, ParamLocation};
use super::request::{
    RequestView, Violation, ViolationKind, is_json, media_range_matches, media_type, parse_form,
};
use super::sanitize::{Sanitized, sanitize_fields};
use super::schema::{CompiledSchema, SchemaError, coerce_values};

/// Error while compiling a route's rules. It names the route and the setting or file.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// A setting has an invalid value.
    #[error("route {route}: validation.{key} {problem}")]
    Invalid {
        /// The route's name.
        route: String,
        /// The key under `[routes.validation]`.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A schema file could not be loaded.
    #[error("route {route}: validation.{key}")]
    Schema {
        /// The route's name.
        route: String,
        /// The key under `[routes.validation]`.
        key: &'static str,
        /// The loader's error, which names the file.
        #[source]
        source: SchemaError,
    },
}

/// What a route's check found.
#[derive(Debug, Default)]
pub struct RouteCheck {
    /// The first broken rule, if any.
    pub violation: Option<Violation>,
    /// The body after sanitization, when a rich-text field changed.
    pub sanitized: Option<Sanitized>,
    /// Whether the body was parsed as JSON here, so no other check needs to parse it again.
    pub json_parsed: bool,
}

/// The compiled rules of one route.
#[derive(Clone, Debug)]
pub struct RouteRules {
    mode: ValidationMode,
    methods: Vec<Method>,
    content_types: Vec<String>,
    max_body_bytes: Option<u64>,
    json_limits: JsonLimits,
    body_schema: Option<CompiledSchema>,
    query_schema: Option<CompiledSchema>,
    path_schema: Option<CompiledSchema>,
    rich_text: Vec<PointerPattern>,
}

impl RouteRules {
    /// Compiles the rules of the route named `route`, reading its schema files.
    ///
    /// # Errors
    ///
    /// [`RuleError`] naming the route and the key or schema file at fault.
    pub fn compile(route: &str, config: &RouteValidationConfig, default_depth: usize) -> Result<Self, RuleError> {
        let invalid = |key: &'static str, problem: String| RuleError::Invalid {
            route: route.to_owned(),
            key,
            problem,
        };

        let methods = config
            .methods
            .iter()
            .map(|name| {
                Method::from_bytes(name.to_ascii_uppercase().as_bytes())
                    .map_err(|_| invalid("methods", format!("contains `{name}`, which is not an HTTP method")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for range in &config.content_types {
            let valid = range
                .split_once('/')
                .is_some_and(|(kind, subtype)| !kind.is_empty() && !subtype.is_empty());
            if !valid {
                return Err(invalid("content_types", format!("contains `{range}`, which is not type/subtype")));
            }
        }
        let max_json_depth = config.max_json_depth.unwrap_or(default_depth);
        if max_json_depth > MAX_DEPTH_CEILING {
            return Err(invalid("max_json_depth", format!("must be at most {MAX_DEPTH_CEILING}")));
        }
        let max_body_bytes = config.max_body_bytes;
        if max_body_bytes == Some(0) {
            return Err(invalid("max_body_bytes", "must be at least 1".to_owned()));
        }
        let rich_text = config
            .rich_text
            .iter()
            .map(|pointer| PointerPattern::parse(pointer).map_err(|error| invalid("rich_text", error.to_string())))
            .collect::<Result<Vec<_>, _>>()?;

        let load = |key: &'static str, path: Option<&Path>| {
            path.map(CompiledSchema::load)
                .transpose()
                .map_err(|source| RuleError::Schema {
                    route: route.to_owned(),
                    key,
                    source,
                })
        };
        Ok(Self {
            mode: config.mode,
            methods,
            content_types: config.content_types.iter().map(|range| range.to_ascii_lowercase()).collect(),
            max_body_bytes,
            json_limits: JsonLimits {
                max_depth: max_json_depth,
                max_bytes: usize::try_from(max_body_bytes.unwrap_or(u64::MAX)).unwrap_or(usize::MAX),
            },
            body_schema: load("body_schema", config.body_schema.as_deref())?,
            query_schema: load("query_schema", config.query_schema.as_deref())?,
            path_schema: load("path_schema", config.path_schema.as_deref())?,
            rich_text,
        })
    }

    /// Returns whether violations are rejected or reported.
    pub fn mode(&self) -> ValidationMode {
        self.mode
    }

    /// Checks a request that matched the route, whose pattern captured `path_parameters`
    /// (still percent-encoded). Rules run in order: method, body size, media type, query, path
    /// parameters, JSON body; the first broken one is reported. `coded_body` tells that the body
    /// has a content coding and was let through unread.
    pub fn check(
        &self,
        request: &RequestView<'_>,
        path_parameters: &[(String, String)],
        coded_body: bool,
    ) -> RouteCheck {
        let mut check = RouteCheck::default();
        if let Err(violation) = self.check_head(request, path_parameters) {
            check.violation = Some(violation);
            return check;
        }

        let media = match media_type(request.headers) {
            Ok(media) => media,
            Err(violation) => {
                check.violation = Some(violation);
                return check;
            }
        };
        // The depth check of a JSON media type cannot read a coded body, but a schema still
        // applies.
        let plain_json = media.as_deref().is_some_and(is_json) && !coded_body;
        let wants_json = self.body_schema.is_some() || !self.rich_text.is_empty() || plain_json;
        if request.body.is_empty() || !wants_json {
            return check;
        }

        check.json_parsed = true;
        let parsed = match json::parse_watching(request.body, self.json_limits, &self.rich_text) {
            Ok(parsed) => parsed,
            Err(error) => {
                check.violation = Some(Violation::from_json(&error));
                return check;
            }
        };
        if let Some(schema) = &self.body_schema {
            let errors = schema.check(&parsed.value, ParamLocation::Body);
            if !errors.is_empty() {
                check.violation = Some(Violation::invalid_params(
                    ViolationKind::Schema,
                    "request body does not match the schema",
                    errors,
                ));
            }
        }
        if !parsed.strings.is_empty() {
            let sanitized = sanitize_fields(request.body, &parsed.strings);
            if !sanitized.changed.is_empty() {
                check.sanitized = Some(sanitized);
            }
        }
        check
    }

    fn check_head(&self, request: &RequestView<'_>, path_parameters: &[(String, String)]) -> Result<(), Violation> {
        if !self.methods.is_empty() && !self.methods.contains(request.method) {
            return Err(Violation::method_not_allowed(request.method, self.methods.clone()));
        }
        if let Some(limit) = self.max_body_bytes {
            if u64::try_from(request.body.len()).unwrap_or(u64::MAX) > limit {
                return Err(Violation::new(
                    ViolationKind::BodySize,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body is larger than {limit} bytes"),
                ));
            }
        }
        if !request.body.is_empty() && !self.content_types.is_empty() {
            let media = media_type(request.headers)?;
            let allowed = media
                .as_deref()
                .is_some_and(|media| self.content_types.iter().any(|range| media_range_matches(range, media)));
            if !allowed {
                return Err(Violation::new(
                    ViolationKind::ContentType,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("request body must be one of: {}", self.content_types.join(", ")),
                ));
            }
        }
        if let Some(schema) = &self.query_schema {
            let parameters = parse_form(request.query.unwrap_or_default(), ParamLocation::Query)?;
            let instance = parameters_object(&parameters, schema.source());
            check_parameters(schema, &instance, ParamLocation::Query, "query parameters do not match the schema")?;
        }
        if let Some(schema) = &self.path_schema {
            let mut parameters = BTreeMap::new();
            for (name, raw) in path_parameters {
                let decoded = split_path(&format!("/{raw}"))
                    .ok()
                    .map(|segments| segments.join("/"))
                    .ok_or_else(|| {
                        Violation::invalid_params(
                            ViolationKind::Encoding,
                            "path parameters are not valid percent-encoded UTF-8",
                            vec![InvalidParam {
                                name: name.clone(),
                                location: ParamLocation::Path,
                                reason: "not valid percent-encoded UTF-8".to_owned(),
                            }],
                        )
                    })?;
                parameters.insert(name.clone(), vec![decoded]);
            }
            let instance = parameters_object(&parameters, schema.source());
            check_parameters(schema, &instance, ParamLocation::Path, "path parameters do not match the schema")?;
        }
        Ok(())
    }
}

/// Builds the object a query or path schema checks, converting each value by its property
/// schema.
fn parameters_object(parameters: &BTreeMap<String, Vec<String>>, schema: &Value) -> Value {
    let properties = schema.get("properties");
    let mut object = Map::new();
    for (name, values) in parameters {
        let property = properties.and_then(|properties| properties.get(name));
        object.insert(name.clone(), coerce_values(values, property));
    }
    Value::Object(object)
}

fn check_parameters(schema: &CompiledSchema, instance: &Value, location: ParamLocation, detail: &str) -> Result<(), Violation> {
    let errors = schema.check(instance, location);
    if errors.is_empty() {
        return Ok(());
    }
    Err(Violation::invalid_params(ViolationKind::Schema, detail, errors))
}
