//! Feeds arbitrary text to the path-template parser and the OpenAPI operation matcher. Neither
//! may panic, and a matched operation's template must match the same path on its own.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use firewall_agent::validation::openapi::{OpenApiSpec, OperationMatch};
use firewall_agent::validation::path::{PathTemplate, split_path};
use libfuzzer_sys::fuzz_target;

const SPEC: &str = r#"
openapi: 3.1.0
info: {title: fuzz, version: "1"}
paths:
  /pets:
    get: {operationId: list}
    post: {operationId: create}
  /pets/{id}:
    get: {operationId: show}
  /pets/mine:
    get: {operationId: mine}
  /files/{name}.json:
    get: {operationId: file}
  /:
    get: {operationId: root}
"#;

fn spec() -> &'static OpenApiSpec {
    static SPEC_CELL: OnceLock<OpenApiSpec> = OnceLock::new();
    SPEC_CELL.get_or_init(|| OpenApiSpec::parse(SPEC, Path::new("fuzz.yaml")).expect("valid document"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (template, path) = text.split_once('\n').unwrap_or((text, text));
    let Ok(segments) = split_path(path) else {
        return;
    };

    if let Ok(template) = PathTemplate::parse(template) {
        let _ = template.matches(&segments);
    }

    for method in [http::Method::GET, http::Method::POST, http::Method::HEAD, http::Method::DELETE] {
        if let OperationMatch::Found { template, path_parameters, .. } = spec().find(&method, &segments) {
            let parsed = PathTemplate::parse(template).expect("declared templates parse");
            assert_eq!(parsed.matches(&segments), Some(path_parameters));
        }
    }
});
