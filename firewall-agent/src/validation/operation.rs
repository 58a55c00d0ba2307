//! Checks of a request against the OpenAPI operation it matched: parameters, media type and
//! body.

use std::collections::BTreeMap;

use http::StatusCode;
use serde_json::{Map, Value};

use super::json::{self, JsonLimits};
use super::openapi::{MediaTypeSpec, Operation, Parameter};
use super::problem::{InvalidParam, ParamLocation};
use super::request::{RequestView, Violation, ViolationKind, is_json, media_range_matches, media_type, parse_form};
use super::schema::coerce_values;

/// What the operation check found.
#[derive(Debug, Default)]
pub struct OperationCheck {
    /// The first broken rule, if any.
    pub violation: Option<Violation>,
    /// Whether the body was parsed as JSON.
    pub json_parsed: bool,
}

/// Checks `request` against `operation`. `path_parameters` are the decoded values the
/// template captured.
pub fn check_operation(
    operation: &Operation,
    request: &RequestView<'_>,
    path_parameters: &[(String, String)],
    limits: JsonLimits,
) -> OperationCheck {
    let mut check = OperationCheck::default();
    if let Err(violation) = check_parameters(operation, request, path_parameters) {
        check.violation = Some(violation);
        return check;
    }
    match check_body(operation, request, limits) {
        Ok(parsed) => check.json_parsed = parsed,
        Err((violation, parsed)) => {
            check.violation = Some(violation);
            check.json_parsed = parsed;
        }
    }
    check
}

fn check_parameters(
    operation: &Operation,
    request: &RequestView<'_>,
    path_parameters: &[(String, String)],
) -> Result<(), Violation> {
    let query = parse_form(request.query.unwrap_or_default(), ParamLocation::Query)?;
    let mut errors = Vec::new();
    for parameter in &operation.parameters {
        let values = match parameter_values(parameter, request, &query, path_parameters) {
            Ok(values) => values,
            Err(param) => {
                errors.push(param);
                continue;
            }
        };
        if values.is_empty() {
            if parameter.required {
                errors.push(InvalidParam {
                    name: parameter.name.clone(),
                    location: parameter.location,
                    reason: "required parameter is missing".to_owned(),
                });
            }
            continue;
        }
        let Some(schema) = &parameter.schema else {
            continue;
        };
        let instance = coerce_values(&values, parameter.schema_source.as_ref());
        for mut error in schema.check(&instance, parameter.location) {
            error.name.clone_from(&parameter.name);
            errors.push(error);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Violation::invalid_params(
            ViolationKind::Schema,
            "request parameters do not match the API description",
            errors,
        ))
    }
}

/// Returns a parameter's raw values. Path and header parameters in the default `simple` style
/// split an array on commas.
///
/// NOTE: only the default serialization styles are read (`form` with `explode` for the query,
/// `simple` for path and header), so a parameter declared with `style` or `explode` set
/// otherwise may be split wrongly and fail its schema.
fn parameter_values(
    parameter: &Parameter,
    request: &RequestView<'_>,
    query: &BTreeMap<String, Vec<String>>,
    path_parameters: &[(String, String)],
) -> Result<Vec<String>, InvalidParam> {
    let is_array = parameter
        .schema_source
        .as_ref()
        .and_then(|schema| schema.get("type"))
        .is_some_and(|kind| kind == "array");
    let split = |value: &str| -> Vec<String> {
        if is_array {
            value.split(',').map(str::to_owned).collect()
        } else {
            vec![value.to_owned()]
        }
    };

    match parameter.location {
        ParamLocation::Query => Ok(query.get(&parameter.name).cloned().unwrap_or_default()),
        ParamLocation::Path => Ok(path_parameters
            .iter()
            .find(|(name, _)| *name == parameter.name)
            .map(|(_, value)| split(value))
            .unwrap_or_default()),
        ParamLocation::Header => {
            let mut values = Vec::new();
            for value in request.headers.get_all(parameter.name.as_str()) {
                let text = value.to_str().map_err(|_| InvalidParam {
                    name: parameter.name.clone(),
                    location: ParamLocation::Header,
                    reason: "header value is not visible ASCII".to_owned(),
                })?;
                values.extend(split(text));
            }
            Ok(values)
        }
        ParamLocation::Body => Ok(Vec::new()),
    }
}

/// Checks the body. The error carries whether the body was parsed as JSON.
fn check_body(operation: &Operation, request: &RequestView<'_>, limits: JsonLimits) -> Result<bool, (Violation, bool)> {
    let Some(spec) = &operation.request_body else {
        if request.body.is_empty() {
            return Ok(false);
        }
        return Err((
            Violation::new(
                ViolationKind::ContentType,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "this operation accepts no request body",
            ),
            false,
        ));
    };
    if request.body.is_empty() {
        if spec.required {
            return Err((
                Violation::new(ViolationKind::MissingBody, StatusCode::BAD_REQUEST, "request body is required"),
                false,
            ));
        }
        return Ok(false);
    }

    let media = media_type(request.headers).map_err(|violation| (violation, false))?;
    let declared = media.as_deref().and_then(|media| {
        // An exact media type wins over a range such as `application/*`.
        spec.content
            .iter()
            .find(|candidate| candidate.range == media)
            .or_else(|| spec.content.iter().find(|candidate| media_range_matches(&candidate.range, media)))
    });
    let (Some(media), Some(declared)) = (media, declared) else {
        let ranges: Vec<&str> = spec.content.iter().map(|media| media.range.as_str()).collect();
        return Err((
            Violation::new(
                ViolationKind::ContentType,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("request body must be one of: {}", ranges.join(", ")),
            ),
            false,
        ));
    };

    if is_json(&media) {
        let value = json::parse(request.body, limits).map_err(|error| (Violation::from_json(&error), true))?;
        check_body_schema(declared, &value).map_err(|violation| (violation, true))?;
        return Ok(true);
    }
    if media == "application/x-www-form-urlencoded" {
        let text = std::str::from_utf8(request.body).map_err(|_| {
            (
                Violation::new(ViolationKind::Encoding, StatusCode::BAD_REQUEST, "form body is not valid UTF-8"),
                false,
            )
        })?;
        let fields = parse_form(text, ParamLocation::Body).map_err(|violation| (violation, false))?;
        let properties = declared
            .schema_source
            .as_ref()
            .and_then(|schema| schema.get("properties"));
        let mut object = Map::new();
        for (name, values) in &fields {
            let property = properties.and_then(|properties| properties.get(name));
            object.insert(name.clone(), coerce_values(values, property));
        }
        check_body_schema(declared, &Value::Object(object)).map_err(|violation| (violation, false))?;
    }
    // NOTE: bodies other than JSON and URL-encoded forms (XML, multipart, binary) are only
    // checked for their media type, not against their schema.
    Ok(false)
}

fn check_body_schema(declared: &MediaTypeSpec, value: &Value) -> Result<(), Violation> {
    let Some(schema) = &declared.schema else {
        return Ok(());
    };
    let errors = schema.check(value, ParamLocation::Body);
    if errors.is_empty() {
        return Ok(());
    }
    Err(Violation::invalid_params(
        ViolationKind::Schema,
        "request body does not match the API description",
        errors,
    ))
}
