//! JSON Schema (draft 2020-12) compiled once at load, and checks of request parts against it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jsonschema::{Draft, Retrieve, Uri, Validator};
use serde_json::Value;

use super::problem::{InvalidParam, ParamLocation};

/// Maximum size of a schema file, so a wrong path such as a log file is refused quickly.
const MAX_SCHEMA_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Error while loading or compiling a schema.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The file could not be read.
    #[error("failed to read schema file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than the limit.
    #[error("schema file {path} is larger than {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// The file is not JSON.
    #[error("schema file {path} is not valid JSON")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the JSON parser reported.
        #[source]
        source: serde_json::Error,
    },
    /// The document is not a valid draft 2020-12 schema, or a `$ref` could not be resolved.
    #[error("invalid JSON Schema in {origin}: {message}")]
    Compile {
        /// The file, or where in a larger document the schema is.
        origin: String,
        /// What the compiler reported.
        message: String,
    },
}

/// Refuses every external `$ref`: schemas may only refer to themselves, so loading one never
/// opens a file or a network connection.
struct NoRetrieval;

impl Retrieve for NoRetrieval {
    fn retrieve(&self, uri: &Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("external reference {uri} is not allowed; inline the schema instead").into())
    }
}

/// A compiled schema.
#[derive(Clone)]
pub struct CompiledSchema {
    origin: Arc<str>,
    source: Arc<Value>,
    validator: Arc<Validator>,
}

impl fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledSchema")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl CompiledSchema {
    /// Compiles `schema` as draft 2020-12. `origin` names it in errors.
    ///
    /// # Errors
    ///
    /// [`SchemaError::Compile`] when the schema is invalid or refers outside itself.
    pub fn compile(schema: Value, origin: &str) -> Result<Self, SchemaError> {
        let validator = jsonschema::options()
            .with_draft(Draft::Draft202012)
            .with_retriever(NoRetrieval)
            .build(&schema)
            .map_err(|error| SchemaError::Compile {
                origin: origin.to_owned(),
                message: error.to_string(),
            })?;
        Ok(Self {
            origin: origin.into(),
            source: Arc::new(schema),
            validator: Arc::new(validator),
        })
    }

    /// Reads and compiles a schema file.
    ///
    /// # Errors
    ///
    /// [`SchemaError`] naming the file when it cannot be read, parsed or compiled.
    pub fn load(path: &Path) -> Result<Self, SchemaError> {
        let read_error = |source| SchemaError::Read {
            path: path.to_owned(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read_error)?.len();
        if size > MAX_SCHEMA_FILE_BYTES {
            return Err(SchemaError::TooLarge {
                path: path.to_owned(),
                limit: MAX_SCHEMA_FILE_BYTES,
            });
        }
        let text = std::fs::read(path).map_err(read_error)?;
        let schema = serde_json::from_slice(&text).map_err(|source| SchemaError::Parse {
            path: path.to_owned(),
            source,
        })?;
        Self::compile(schema, &path.display().to_string())
    }

    /// Returns the schema document.
    pub fn source(&self) -> &Value {
        &self.source
    }

    /// Checks `instance`. Each error names the failing value's location: the JSON pointer
    /// under `prefix` for a body, or the parameter name for other locations.
    pub fn check(&self, instance: &Value, location: ParamLocation) -> Vec<InvalidParam> {
        self.validator
            .iter_errors(instance)
            .map(|error| {
                let mut pointer = error.instance_path().as_str().to_owned();
                // A missing property is reported on its parent object: name the property.
                if let jsonschema::error::ValidationErrorKind::Required { property } = error.kind() {
                    if let Some(property) = property.as_str() {
                        pointer.push_str(&super::json::render_pointer([property]));
                    }
                }
                let name = match location {
                    ParamLocation::Body => pointer,
                    _ => parameter_name(&pointer),
                };
                InvalidParam {
                    name,
                    location,
                    reason: error.masked().to_string(),
                }
            })
            .collect()
    }
}

/// Turns `/name` or `/name/0` into `name`, the way a client knows its parameter. The pointer
/// is unescaped per RFC 6901.
fn parameter_name(pointer: &str) -> String {
    let first = pointer
        .strip_prefix('/')
        .and_then(|rest| rest.split('/').next())
        .unwrap_or(pointer);
    first.replace("~1", "/").replace("~0", "~")
}

/// Converts a parameter's text to the JSON type its schema expects, so that `?limit=10`
/// checks against `{"type": "integer"}`. Text that does not convert stays a string and fails
/// the schema's type check.
pub fn coerce_parameter(raw: &str, schema: Option<&Value>) -> Value {
    let types = schema.map(schema_types).unwrap_or_default();
    for kind in types {
        let converted = match kind {
            "integer" => raw
                .parse::<i64>()
                .ok()
                .map(Value::from)
                .or_else(|| raw.parse::<u64>().ok().map(Value::from)),
            "number" => raw
                .parse::<f64>()
                .ok()
                .filter(|number| number.is_finite())
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number),
            "boolean" => match raw {
                "true" => Some(Value::Bool(true)),
                "false" => Some(Value::Bool(false)),
                _ => None,
            },
            "null" if raw.is_empty() => Some(Value::Null),
            _ => None,
        };
        if let Some(converted) = converted {
            return converted;
        }
    }
    Value::String(raw.to_owned())
}

/// Converts the values of a parameter that may repeat. An array schema gets every value,
/// converted by its `items` schema; any other schema gets the first one.
pub fn coerce_values(values: &[String], schema: Option<&Value>) -> Value {
    let is_array = schema.is_some_and(|schema| schema_types(schema).contains(&"array"));
    if is_array {
        let items = schema.and_then(|schema| schema.get("items"));
        return Value::Array(
            values
                .iter()
                .map(|value| coerce_parameter(value, items))
                .collect(),
        );
    }
    match values.first() {
        Some(value) => coerce_parameter(value, schema),
        None => Value::Null,
    }
}

fn schema_types(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(kind)) => vec![kind.as_str()],
        Some(Value::Array(kinds)) => kinds.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn user_schema() -> CompiledSchema {
        CompiledSchema::compile(
            json!({
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "maxLength": 8},
                    "age": {"type": "integer", "minimum": 0}
                },
                "additionalProperties": false
            }),
            "test",
        )
        .expect("valid schema")
    }

    #[test]
    fn schema_accepts_valid_instance() {
        let errors = user_schema().check(&json!({"name": "ada", "age": 36}), ParamLocation::Body);

        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn schema_names_field_without_value() {
        let errors = user_schema().check(
            &json!({"name": "secret-password-value", "age": -1}),
            ParamLocation::Body,
        );

        let names: Vec<&str> = errors.iter().map(|error| error.name.as_str()).collect();
        assert!(names.contains(&"/name"), "{errors:?}");
        assert!(names.contains(&"/age"), "{errors:?}");
        for error in &errors {
            assert!(!error.reason.contains("secret-password-value"), "{error:?}");
            assert!(!error.reason.contains("-1"), "{error:?}");
        }
    }

    #[test]
    fn schema_refuses_external_reference() {
        let error = CompiledSchema::compile(
            json!({"$ref": "https://schemas.example.invalid/user.json"}),
            "users.json",
        )
        .expect_err("external reference");

        assert!(error.to_string().contains("users.json"), "{error}");
    }

    #[test]
    fn schema_rejects_invalid_keyword_value() {
        let error = CompiledSchema::compile(json!({"type": 12}), "broken.json")
            .expect_err("invalid schema");

        assert!(matches!(error, SchemaError::Compile { .. }));
    }

    #[test]
    fn parameter_names_come_from_pointer() {
        assert_eq!(parameter_name("/limit"), "limit");
        assert_eq!(parameter_name("/tags/1"), "tags");
        assert_eq!(parameter_name("/a~1b"), "a/b");
        assert_eq!(parameter_name(""), "");
    }

    #[test]
    fn coercion_follows_schema_type() {
        assert_eq!(coerce_parameter("10", Some(&json!({"type": "integer"}))), json!(10));
        assert_eq!(coerce_parameter("1.5", Some(&json!({"type": "number"}))), json!(1.5));
        assert_eq!(coerce_parameter("true", Some(&json!({"type": "boolean"}))), json!(true));
        assert_eq!(coerce_parameter("ten", Some(&json!({"type": "integer"}))), json!("ten"));
        assert_eq!(coerce_parameter("10", Some(&json!({"type": "string"}))), json!("10"));
        assert_eq!(coerce_parameter("10", None), json!("10"));
        assert_eq!(
            coerce_parameter("7", Some(&json!({"type": ["null", "integer"]}))),
            json!(7)
        );
    }

    #[test]
    fn coercion_collects_array_values() {
        let schema = json!({"type": "array", "items": {"type": "integer"}});
        let values = vec!["1".to_owned(), "x".to_owned()];

        assert_eq!(coerce_values(&values, Some(&schema)), json!([1, "x"]));
        assert_eq!(coerce_values(&values, None), json!("1"));
    }
}
