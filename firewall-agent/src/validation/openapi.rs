//! Import of an OpenAPI 3.0 or 3.1 document: the declared paths, methods, parameters and
//! request bodies, with their schemas compiled as JSON Schema draft 2020-12.
//!
//! `$ref`s are resolved inside the document only, and the document's server URLs are never
//! used: the agent forwards to its configured upstream.

use std::path::{Path, PathBuf};

use http::Method;
use serde_json::{Map, Value};

use super::path::{PathTemplate, PathTemplateError};
use super::problem::ParamLocation;
use super::schema::{CompiledSchema, SchemaError};

/// Maximum size of an OpenAPI document.
const MAX_DOCUMENT_BYTES: u64 = 16 * 1024 * 1024;
/// Maximum number of `$ref` hops followed to reach a parameter or request body, so a cycle of
/// references ends.
const MAX_REF_HOPS: usize = 32;
/// Maximum nesting of the document's values, so the conversion of 3.0 schemas, which recurses,
/// has a bounded depth.
const MAX_DOCUMENT_DEPTH: usize = 256;

/// The HTTP methods an OpenAPI path item can declare.
const METHODS: [(&str, Method); 8] = [
    ("get", Method::GET),
    ("put", Method::PUT),
    ("post", Method::POST),
    ("delete", Method::DELETE),
    ("options", Method::OPTIONS),
    ("head", Method::HEAD),
    ("patch", Method::PATCH),
    ("trace", Method::TRACE),
];

/// Error while loading an OpenAPI document.
#[derive(Debug, thiserror::Error)]
pub enum OpenApiError {
    /// The file could not be read.
    #[error("failed to read OpenAPI document {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than the limit.
    #[error("OpenAPI document {path} is larger than {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// The file is neither JSON nor YAML.
    #[error("OpenAPI document {path} is not valid YAML or JSON: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser reported.
        message: String,
    },
    /// The document breaks a rule of the specification, or uses a feature the agent does not
    /// support.
    #[error("invalid OpenAPI document {path} at {location}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// JSON pointer of the offending part.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// A path key is not a valid template.
    #[error("invalid path template in OpenAPI document {path}")]
    Template {
        /// The file.
        path: PathBuf,
        /// The template error.
        #[source]
        source: PathTemplateError,
    },
    /// A schema does not compile.
    #[error("invalid schema in OpenAPI document {path}")]
    Schema {
        /// The file.
        path: PathBuf,
        /// The compiler's error, which names the schema's location.
        #[source]
        source: SchemaError,
    },
}

/// The OpenAPI version family, which decides how schemas are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecVersion {
    /// 3.0.x: schemas are an extended subset of JSON Schema draft 4 and are converted.
    V3_0,
    /// 3.1.x: schemas are JSON Schema draft 2020-12.
    V3_1,
}

/// A declared parameter.
#[derive(Clone, Debug)]
pub struct Parameter {
    /// Its name; header names are lowercase.
    pub name: String,
    /// Its location in the request.
    pub location: ParamLocation,
    /// Whether the request must carry it.
    pub required: bool,
    /// The schema, converted, for type coercion of the raw text.
    pub schema_source: Option<Value>,
    /// The compiled schema.
    pub schema: Option<CompiledSchema>,
}

/// One media type a request body may have.
#[derive(Clone, Debug)]
pub struct MediaTypeSpec {
    /// The media range as declared, lowercase, such as `application/json` or `image/*`.
    pub range: String,
    /// The body schema, if declared.
    pub schema: Option<CompiledSchema>,
    /// The schema, converted, for type coercion of form fields.
    pub schema_source: Option<Value>,
}

/// A declared request body.
#[derive(Clone, Debug)]
pub struct RequestBodySpec {
    /// Whether the request must have a body.
    pub required: bool,
    /// Accepted media types in document order.
    pub content: Vec<MediaTypeSpec>,
}

/// A declared operation: one method on one path.
#[derive(Clone, Debug)]
pub struct Operation {
    /// `operationId`, or `METHOD template` when the document gives none, for logs and metrics.
    pub label: String,
    /// Parameters: the path item's, overridden by the operation's of the same name and location.
    pub parameters: Vec<Parameter>,
    /// The request body, if the operation accepts one.
    pub request_body: Option<RequestBodySpec>,
}

#[derive(Clone, Debug)]
struct ApiPath {
    template: PathTemplate,
    operations: Vec<(Method, Operation)>,
}

/// Result of matching a request against the document.
#[derive(Debug)]
pub enum OperationMatch<'a> {
    /// A declared operation, with the path parameters' decoded values.
    Found {
        /// The operation.
        operation: &'a Operation,
        /// The template that matched.
        template: &'a str,
        /// Path parameters in template order.
        path_parameters: Vec<(String, String)>,
    },
    /// The path is declared, the method is not.
    MethodNotAllowed {
        /// The declared methods.
        allowed: Vec<Method>,
    },
    /// No declared path matches.
    NotFound,
}

/// An imported OpenAPI document.
#[derive(Clone, Debug)]
pub struct OpenApiSpec {
    version: SpecVersion,
    paths: Vec<ApiPath>,
}

impl OpenApiSpec {
    /// Reads a document from a YAML or JSON file (JSON is YAML) and compiles its schemas.
    ///
    /// # Errors
    ///
    /// [`OpenApiError`] naming the file and the offending location.
    pub fn load(path: &Path) -> Result<Self, OpenApiError> {
        let read_error = |source| OpenApiError::Read {
            path: path.to_owned(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read_error)?.len();
        if size > MAX_DOCUMENT_BYTES {
            return Err(OpenApiError::TooLarge {
                path: path.to_owned(),
                limit: MAX_DOCUMENT_BYTES,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        Self::parse(&text, path)
    }

    /// Parses a document from text. `path` names it in errors.
    ///
    /// # Errors
    ///
    /// [`OpenApiError`] naming `path` and the offending location.
    pub fn parse(text: &str, path: &Path) -> Result<Self, OpenApiError> {
        let yaml: serde_norway::Value =
            serde_norway::from_str(text).map_err(|error| OpenApiError::Parse {
                path: path.to_owned(),
                message: error.to_string(),
            })?;
        let document = yaml_to_json(yaml, 0).map_err(|reason| OpenApiError::Parse {
            path: path.to_owned(),
            message: reason,
        })?;
        Loader::new(document, path)?.load()
    }

    /// Returns the version family of the document.
    pub fn version(&self) -> SpecVersion {
        self.version
    }

    /// Returns the number of declared operations.
    pub fn operation_count(&self) -> usize {
        self.paths.iter().map(|path| path.operations.len()).sum()
    }

    /// Finds the operation for a method and decoded path segments. A template with more literal
    /// segments wins over one with fewer, so `/pets/mine` beats `/pets/{id}`. A `HEAD` request
    /// matches a declared `GET` when no `HEAD` is declared.
    pub fn find(&self, method: &Method, segments: &[String]) -> OperationMatch<'_> {
        let mut best: Option<(&ApiPath, Vec<(String, String)>)> = None;
        for path in &self.paths {
            if let Some(parameters) = path.template.matches(segments) {
                let better = best.as_ref().is_none_or(|(current, _)| {
                    path.template.literal_segments() > current.template.literal_segments()
                });
                if better {
                    best = Some((path, parameters));
                }
            }
        }
        let Some((path, path_parameters)) = best else {
            return OperationMatch::NotFound;
        };

        let operation = path
            .operations
            .iter()
            .find(|(declared, _)| declared == method)
            .or_else(|| {
                (method == Method::HEAD)
                    .then(|| path.operations.iter().find(|(declared, _)| declared == Method::GET))
                    .flatten()
            });
        match operation {
            Some((_, operation)) => OperationMatch::Found {
                operation,
                template: path.template.as_str(),
                path_parameters,
            },
            None => OperationMatch::MethodNotAllowed {
                allowed: path.operations.iter().map(|(method, _)| method.clone()).collect(),
            },
        }
    }
}

/// Converts a YAML value to JSON. Mapping keys that YAML reads as numbers or booleans, such as
/// the response code `200`, become their text.
fn yaml_to_json(value: serde_norway::Value, depth: usize) -> Result<Value, String> {
    if depth > MAX_DOCUMENT_DEPTH {
        return Err(format!("values are nested deeper than {MAX_DOCUMENT_DEPTH} levels"));
    }
    Ok(match value {
        serde_norway::Value::Null => Value::Null,
        serde_norway::Value::Bool(flag) => Value::Bool(flag),
        serde_norway::Value::Number(number) => {
            if let Some(integer) = number.as_i64() {
                Value::from(integer)
            } else if let Some(integer) = number.as_u64() {
                Value::from(integer)
            } else {
                number
                    .as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(|| format!("number {number} is not finite"))?
            }
        }
        serde_norway::Value::String(text) => Value::String(text),
        serde_norway::Value::Sequence(items) => Value::Array(
            items
                .into_iter()
                .map(|item| yaml_to_json(item, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        serde_norway::Value::Mapping(mapping) => {
            let mut object = Map::new();
            for (key, value) in mapping {
                let key = match key {
                    serde_norway::Value::String(text) => text,
                    serde_norway::Value::Number(number) => number.to_string(),
                    serde_norway::Value::Bool(flag) => flag.to_string(),
                    serde_norway::Value::Null => "null".to_owned(),
                    _ => return Err("a mapping key is a sequence, mapping or tagged value".to_owned()),
                };
                object.insert(key, yaml_to_json(value, depth + 1)?);
            }
            Value::Object(object)
        }
        serde_norway::Value::Tagged(tagged) => yaml_to_json(tagged.value, depth + 1)?,
    })
}

/// Escapes one JSON pointer reference token (RFC 6901).
fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

struct Loader<'a> {
    document: Value,
    path: &'a Path,
    version: SpecVersion,
    /// `components`, converted to draft 2020-12, for the `$ref`s of every compiled schema.
    components: Value,
}

impl<'a> Loader<'a> {
    fn new(document: Value, path: &'a Path) -> Result<Self, OpenApiError> {
        let invalid = |location: &str, reason: &str| OpenApiError::Invalid {
            path: path.to_owned(),
            location: location.to_owned(),
            reason: reason.to_owned(),
        };
        let version = match document.get("openapi").and_then(Value::as_str) {
            Some(version) if version.starts_with("3.0.") => SpecVersion::V3_0,
            Some(version) if version.starts_with("3.1.") => SpecVersion::V3_1,
            Some(_) => return Err(invalid("/openapi", "only OpenAPI 3.0.x and 3.1.x are supported")),
            None => return Err(invalid("/openapi", "the 'openapi' version field is missing")),
        };
        let mut components = document.get("components").cloned().unwrap_or(Value::Null);
        if version == SpecVersion::V3_0 {
            convert_schema_3_0(&mut components);
        }
        Ok(Self {
            document,
            path,
            version,
            components,
        })
    }

    fn invalid(&self, location: &str, reason: impl Into<String>) -> OpenApiError {
        OpenApiError::Invalid {
            path: self.path.to_owned(),
            location: location.to_owned(),
            reason: reason.into(),
        }
    }

    fn load(self) -> Result<OpenApiSpec, OpenApiError> {
        let mut paths = Vec::new();
        let Some(declared) = self.document.get("paths") else {
            return Ok(OpenApiSpec {
                version: self.version,
                paths,
            });
        };
        let Some(declared) = declared.as_object() else {
            return Err(self.invalid("/paths", "'paths' is not an object"));
        };

        for (template_text, item) in declared {
            let location = format!("/paths/{}", escape_token(template_text));
            let template = PathTemplate::parse(template_text).map_err(|source| OpenApiError::Template {
                path: self.path.to_owned(),
                source,
            })?;
            let (item, item_location) = self.resolve(item, &location)?;
            let shared = self.parameters(item.get("parameters"), &format!("{item_location}/parameters"))?;

            let mut operations = Vec::new();
            for (key, method) in &METHODS {
                let Some(operation) = item.get(*key) else {
                    continue;
                };
                let operation_location = format!("{item_location}/{key}");
                let operation = self.operation(operation, &operation_location, method, template_text, &shared)?;
                operations.push((method.clone(), operation));
            }
            paths.push(ApiPath {
                template,
                operations,
            });
        }
        Ok(OpenApiSpec {
            version: self.version,
            paths,
        })
    }

    fn operation(
        &self,
        operation: &Value,
        location: &str,
        method: &Method,
        template: &str,
        shared: &[Parameter],
    ) -> Result<Operation, OpenApiError> {
        let label = operation
            .get("operationId")
            .and_then(Value::as_str)
            .map_or_else(|| format!("{method} {template}"), str::to_owned);

        let own = self.parameters(operation.get("parameters"), &format!("{location}/parameters"))?;
        let mut parameters: Vec<Parameter> = shared
            .iter()
            .filter(|inherited| {
                !own.iter()
                    .any(|local| local.name == inherited.name && local.location == inherited.location)
            })
            .cloned()
            .collect();
        parameters.extend(own);

        let request_body = match operation.get("requestBody") {
            Some(body) => Some(self.request_body(body, &format!("{location}/requestBody"))?),
            None => None,
        };
        Ok(Operation {
            label,
            parameters,
            request_body,
        })
    }

    /// Follows `$ref`s to the value they name, returning it and its location.
    fn resolve<'v>(&'v self, mut value: &'v Value, location: &str) -> Result<(&'v Value, String), OpenApiError> {
        let mut current = location.to_owned();
        for _ in 0..MAX_REF_HOPS {
            let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
                return Ok((value, current));
            };
            let Some(pointer) = reference.strip_prefix('#') else {
                return Err(self.invalid(
                    &current,
                    format!("reference {reference:?} points outside the document, which is not supported"),
                ));
            };
            value = self
                .document
                .pointer(pointer)
                .ok_or_else(|| self.invalid(&current, format!("reference {reference:?} does not resolve")))?;
            current = pointer.to_owned();
        }
        Err(self.invalid(location, format!("more than {MAX_REF_HOPS} chained references")))
    }

    fn parameters(&self, list: Option<&Value>, location: &str) -> Result<Vec<Parameter>, OpenApiError> {
        let Some(list) = list else {
            return Ok(Vec::new());
        };
        let Some(list) = list.as_array() else {
            return Err(self.invalid(location, "'parameters' is not an array"));
        };

        let mut parameters = Vec::new();
        for (index, parameter) in list.iter().enumerate() {
            let (parameter, parameter_location) = self.resolve(parameter, &format!("{location}/{index}"))?;
            if let Some(parameter) = self.parameter(parameter, &parameter_location)? {
                parameters.push(parameter);
            }
        }
        Ok(parameters)
    }

    /// Reads one parameter. Cookie parameters, and the `Accept`, `Content-Type` and
    /// `Authorization` headers (which OpenAPI requires tools to ignore as parameters), give `None`.
    fn parameter(&self, parameter: &Value, location: &str) -> Result<Option<Parameter>, OpenApiError> {
        let Some(name) = parameter.get("name").and_then(Value::as_str) else {
            return Err(self.invalid(location, "a parameter has no 'name'"));
        };
        let parameter_in = parameter.get("in").and_then(Value::as_str);
        let (location_kind, name) = match parameter_in {
            Some("path") => (ParamLocation::Path, name.to_owned()),
            Some("query") => (ParamLocation::Query, name.to_owned()),
            Some("header") => {
                let lower = name.to_ascii_lowercase();
                if matches!(lower.as_str(), "accept" | "content-type" | "authorization") {
                    return Ok(None);
                }
                (ParamLocation::Header, lower)
            }
            // NOTE: cookie parameters are not checked, so a spec that relies on one being
            // present or well-formed is not enforced there.
            Some("cookie") => return Ok(None),
            _ => return Err(self.invalid(location, "'in' must be path, query, header or cookie")),
        };
        let required = location_kind == ParamLocation::Path
            || parameter.get("required").and_then(Value::as_bool).unwrap_or(false);

        let (schema_source, schema) = match parameter.get("schema") {
            Some(schema) => {
                let (source, compiled) = self.compile(schema, &format!("{location}/schema"))?;
                (Some(source), Some(compiled))
            }
            None => (None, None),
        };
        Ok(Some(Parameter {
            name,
            location: location_kind,
            required,
            schema_source,
            schema,
        }))
    }

    fn request_body(&self, body: &Value, location: &str) -> Result<RequestBodySpec, OpenApiError> {
        let (body, body_location) = self.resolve(body, location)?;
        let required = body.get("required").and_then(Value::as_bool).unwrap_or(false);
        let Some(content) = body.get("content").and_then(Value::as_object) else {
            return Err(self.invalid(&body_location, "a request body has no 'content' object"));
        };

        let mut media_types = Vec::new();
        for (range, media) in content {
            let media_location = format!("{body_location}/content/{}", escape_token(range));
            let (schema_source, schema) = match media.get("schema") {
                Some(schema) => {
                    let (source, compiled) = self.compile(schema, &format!("{media_location}/schema"))?;
                    (Some(source), Some(compiled))
                }
                None => (None, None),
            };
            media_types.push(MediaTypeSpec {
                range: range.to_ascii_lowercase(),
                schema,
                schema_source,
            });
        }
        Ok(RequestBodySpec {
            required,
            content: media_types,
        })
    }

    /// Compiles a schema of the document. The compiled root holds the converted `components`,
    /// so that `#/components/...` references resolve, and the schema itself under `allOf`.
    fn compile(&self, schema: &Value, location: &str) -> Result<(Value, CompiledSchema), OpenApiError> {
        let mut converted = schema.clone();
        if self.version == SpecVersion::V3_0 {
            convert_schema_3_0(&mut converted);
        }
        let resolved = match converted.get("$ref").and_then(Value::as_str) {
            Some(reference) => reference
                .strip_prefix('#')
                .and_then(|pointer| self.components_pointer(pointer))
                .cloned()
                .unwrap_or_else(|| converted.clone()),
            None => converted.clone(),
        };

        // NOTE: each compiled schema carries its own copy of `components`, so load time and
        // memory grow with operations times components; a document with thousands of both
        // loads slowly.
        let mut root = Map::new();
        root.insert("components".to_owned(), self.components.clone());
        root.insert("allOf".to_owned(), Value::Array(vec![converted]));
        let origin = format!("{}#{location}", self.path.display());
        let compiled = CompiledSchema::compile(Value::Object(root), &origin).map_err(|source| OpenApiError::Schema {
            path: self.path.to_owned(),
            source,
        })?;
        Ok((resolved, compiled))
    }

    fn components_pointer(&self, pointer: &str) -> Option<&Value> {
        pointer
            .strip_prefix("/components")
            .and_then(|rest| self.components.pointer(rest))
    }
}

/// Converts an OpenAPI 3.0 schema to JSON Schema draft 2020-12 in place:
///
/// - `nullable: true` adds `"null"` to `type` (and to `enum`, when there is one);
/// - boolean `exclusiveMinimum` and `exclusiveMaximum` become the numeric form;
/// - keys beside a `$ref` are dropped, because OpenAPI 3.0 ignores them.
///
/// Instance data under `enum`, `const`, `default`, `example` and `examples` is left alone.
fn convert_schema_3_0(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if object.contains_key("$ref") {
                object.retain(|key, _| key == "$ref");
                return;
            }
            convert_nullable(object);
            convert_exclusive(object, "exclusiveMinimum", "minimum");
            convert_exclusive(object, "exclusiveMaximum", "maximum");
            for (key, child) in object.iter_mut() {
                if !matches!(key.as_str(), "enum" | "const" | "default" | "example" | "examples") {
                    convert_schema_3_0(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(convert_schema_3_0),
        _ => {}
    }
}

fn convert_nullable(object: &mut Map<String, Value>) {
    let Some(Value::Bool(nullable)) = object.get("nullable") else {
        return;
    };
    let nullable = *nullable;
    object.remove("nullable");
    if !nullable {
        return;
    }
    match object.get_mut("type") {
        Some(Value::String(kind)) => {
            let kind = std::mem::take(kind);
            object.insert("type".to_owned(), Value::Array(vec![kind.into(), "null".into()]));
        }
        Some(Value::Array(kinds)) if !kinds.iter().any(|kind| kind == "null") => kinds.push("null".into()),
        _ => {}
    }
    if let Some(Value::Array(values)) = object.get_mut("enum") {
        if !values.contains(&Value::Null) {
            values.push(Value::Null);
        }
    }
}

fn convert_exclusive(object: &mut Map<String, Value>, exclusive_key: &str, bound_key: &str) {
    let Some(Value::Bool(exclusive)) = object.get(exclusive_key) else {
        return;
    };
    let exclusive = *exclusive;
    object.remove(exclusive_key);
    if exclusive {
        if let Some(bound) = object.remove(bound_key) {
            object.insert(exclusive_key.to_owned(), bound);
        }
    }
}

#[cfg(test)]
#[path = "openapi_tests.rs"]
mod tests;
