use std::path::PathBuf;

use serde_json::json;

use super::*;
use crate::validation::path::split_path;

fn corpus(name: &str) -> PathBuf {
    // The OpenAPI documents ship beside the repository, not inside it.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/openapi").join(name)
}

fn load_corpus(name: &str) -> OpenApiSpec {
    let path = corpus(name);
    OpenApiSpec::load(&path)
        .unwrap_or_else(|error| panic!("the OpenAPI corpus must sit in ../shared/corpus beside the repository: {error}"))
}

fn find<'a>(spec: &'a OpenApiSpec, method: Method, path: &str) -> OperationMatch<'a> {
    spec.find(&method, &split_path(path).expect("valid path"))
}

#[test]
fn petstore_loads_every_operation() {
    let spec = load_corpus("petstore-3.0.yaml");

    assert_eq!(spec.version(), SpecVersion::V3_0);
    assert_eq!(spec.operation_count(), 19);
}

#[test]
fn petstore_matches_templated_and_literal_paths() {
    let spec = load_corpus("petstore-3.0.yaml");

    match find(&spec, Method::GET, "/pet/42") {
        OperationMatch::Found {
            operation,
            template,
            path_parameters,
        } => {
            assert_eq!(operation.label, "getPetById");
            assert_eq!(template, "/pet/{petId}");
            assert_eq!(path_parameters, [("petId".to_owned(), "42".to_owned())]);
        }
        other => panic!("unexpected match {other:?}"),
    }
    match find(&spec, Method::GET, "/pet/findByStatus") {
        OperationMatch::Found { operation, .. } => assert_eq!(operation.label, "findPetsByStatus"),
        other => panic!("unexpected match {other:?}"),
    }
}

#[test]
fn petstore_reports_undeclared_method_and_path() {
    let spec = load_corpus("petstore-3.0.yaml");

    match find(&spec, Method::PATCH, "/pet/42") {
        OperationMatch::MethodNotAllowed { allowed } => {
            assert_eq!(allowed, [Method::GET, Method::POST, Method::DELETE]);
        }
        other => panic!("unexpected match {other:?}"),
    }
    assert!(matches!(find(&spec, Method::GET, "/admin"), OperationMatch::NotFound));
    assert!(matches!(find(&spec, Method::GET, "/pet/42/extra"), OperationMatch::NotFound));
}

#[test]
fn petstore_body_schema_resolves_component_refs() {
    let spec = load_corpus("petstore-3.0.yaml");
    let OperationMatch::Found { operation, .. } = find(&spec, Method::POST, "/pet") else {
        panic!("addPet is declared");
    };
    let body = operation.request_body.as_ref().expect("addPet has a body");
    let json = body
        .content
        .iter()
        .find(|media| media.range == "application/json")
        .and_then(|media| media.schema.as_ref())
        .expect("JSON schema");

    let valid = json.check(&json!({"name": "rex", "photoUrls": [], "category": {"id": 1}}), ParamLocation::Body);
    let invalid = json.check(&json!({"name": 3, "category": {"id": "one"}, "status": "lost"}), ParamLocation::Body);

    assert!(body.required);
    assert!(valid.is_empty(), "{valid:?}");
    let names: Vec<&str> = invalid.iter().map(|error| error.name.as_str()).collect();
    assert!(names.contains(&"/name"), "{names:?}");
    assert!(names.contains(&"/category/id"), "{names:?}");
    assert!(names.contains(&"/status"), "{names:?}");
    assert!(names.contains(&"/photoUrls"), "{names:?}");
}

#[test]
fn petstore_expanded_uses_all_of_refs() {
    let spec = load_corpus("petstore-expanded-3.0.yaml");
    let OperationMatch::Found { operation, .. } = find(&spec, Method::GET, "/pets") else {
        panic!("findPets is declared");
    };
    let limit = operation
        .parameters
        .iter()
        .find(|parameter| parameter.name == "limit")
        .expect("limit parameter");

    assert_eq!(limit.location, ParamLocation::Query);
    assert!(!limit.required);
    assert_eq!(limit.schema_source.as_ref().and_then(|schema| schema.get("type")), Some(&json!("integer")));
}

#[test]
fn api_with_examples_loads() {
    let spec = load_corpus("api-with-examples-3.0.yaml");

    assert!(matches!(find(&spec, Method::GET, "/"), OperationMatch::Found { .. }));
    assert!(matches!(find(&spec, Method::GET, "/v2"), OperationMatch::Found { .. }));
    assert!(matches!(find(&spec, Method::POST, "/v2"), OperationMatch::MethodNotAllowed { .. }));
}

fn parse_spec(text: &str) -> Result<OpenApiSpec, OpenApiError> {
    OpenApiSpec::parse(text, Path::new("inline.yaml"))
}

#[test]
fn literal_path_beats_template_regardless_of_order() {
    let spec = parse_spec(
        r#"
openapi: 3.1.0
info: {title: t, version: "1"}
paths:
  /users/{id}:
    get: {operationId: byId}
  /users/me:
    get: {operationId: me}
"#,
    )
    .expect("valid document");

    let OperationMatch::Found { operation, .. } = find(&spec, Method::GET, "/users/me") else {
        panic!("declared");
    };
    assert_eq!(operation.label, "me");
}

#[test]
fn head_falls_back_to_get() {
    let spec = parse_spec("openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths:\n  /a:\n    get: {}\n")
        .expect("valid document");

    let OperationMatch::Found { operation, .. } = find(&spec, Method::HEAD, "/a") else {
        panic!("HEAD matches GET");
    };
    assert_eq!(operation.label, "GET /a");
}

#[test]
fn external_reference_is_refused() {
    let error = parse_spec(
        r#"
openapi: 3.0.3
info: {title: t, version: "1"}
paths:
  /a:
    get:
      parameters:
        - $ref: "https://example.invalid/params.yaml#/limit"
"#,
    )
    .expect_err("external reference");

    let message = error.to_string();
    assert!(message.contains("inline.yaml"), "{message}");
    assert!(message.contains("/paths/~1a/get/parameters/0"), "{message}");
    assert!(message.contains("outside the document"), "{message}");
}

#[test]
fn reference_cycle_is_refused() {
    let error = parse_spec(
        r##"
openapi: 3.0.3
info: {title: t, version: "1"}
paths:
  /a:
    get:
      parameters:
        - $ref: "#/components/parameters/one"
components:
  parameters:
    one: {$ref: "#/components/parameters/two"}
    two: {$ref: "#/components/parameters/one"}
"##,
    )
    .expect_err("reference cycle");

    assert!(error.to_string().contains("chained references"), "{error}");
}

#[test]
fn swagger_2_is_refused() {
    let error = parse_spec("swagger: '2.0'\ninfo: {title: t, version: '1'}\npaths: {}\n")
        .expect_err("not OpenAPI 3");

    assert!(error.to_string().contains("'openapi' version field is missing"), "{error}");
}

#[test]
fn recursive_schema_compiles() {
    let spec = parse_spec(
        r##"
openapi: 3.1.0
info: {title: t, version: "1"}
paths:
  /tree:
    post:
      requestBody:
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Node"}
components:
  schemas:
    Node:
      type: object
      properties:
        children: {type: array, items: {$ref: "#/components/schemas/Node"}}
      additionalProperties: false
"##,
    )
    .expect("valid document");
    let OperationMatch::Found { operation, .. } = find(&spec, Method::POST, "/tree") else {
        panic!("declared");
    };
    let schema = operation.request_body.as_ref().and_then(|body| body.content[0].schema.as_ref()).expect("schema");

    assert!(schema.check(&json!({"children": [{"children": []}]}), ParamLocation::Body).is_empty());
    let errors = schema.check(&json!({"children": [{"bad": 1}]}), ParamLocation::Body);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].name, "/children/0");
}

#[test]
fn nullable_converts_to_null_type() {
    let mut schema = json!({"type": "string", "nullable": true, "enum": ["a"]});

    convert_schema_3_0(&mut schema);

    assert_eq!(schema, json!({"type": ["string", "null"], "enum": ["a", null]}));
}

#[test]
fn boolean_exclusive_bounds_convert() {
    let mut schema = json!({
        "type": "object",
        "properties": {
            "low": {"minimum": 0, "exclusiveMinimum": true},
            "high": {"maximum": 10, "exclusiveMaximum": false}
        }
    });

    convert_schema_3_0(&mut schema);

    assert_eq!(schema["properties"]["low"], json!({"exclusiveMinimum": 0}));
    assert_eq!(schema["properties"]["high"], json!({"maximum": 10}));
}

#[test]
fn ref_siblings_are_dropped_in_3_0() {
    let mut schema = json!({"$ref": "#/components/schemas/A", "description": "x", "nullable": true});

    convert_schema_3_0(&mut schema);

    assert_eq!(schema, json!({"$ref": "#/components/schemas/A"}));
}

#[test]
fn enum_values_are_not_converted() {
    let mut schema = json!({"enum": [{"nullable": true, "type": "x"}]});

    convert_schema_3_0(&mut schema);

    assert_eq!(schema, json!({"enum": [{"nullable": true, "type": "x"}]}));
}

#[test]
fn yaml_numeric_keys_become_text() {
    let spec = parse_spec(
        r#"
openapi: 3.0.3
info: {title: t, version: "1"}
paths:
  /a:
    get:
      responses:
        200: {description: ok}
"#,
    );

    assert!(spec.is_ok(), "{spec:?}");
}
