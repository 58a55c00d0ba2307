use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::json;

use super::*;
use crate::routes::RouteTable;

struct Fixture {
    _dir: tempfile::TempDir,
    validation: Validation,
    routes: RouteTable,
}

fn write(dir: &Path, name: &str, value: &serde_json::Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, value.to_string()).expect("write schema");
    path
}

fn openapi_corpus(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus/openapi")
        .join(name)
}

/// Builds the validation of a config whose text is `config`, after `{dir}` is replaced with a
/// directory holding a user body schema, a query schema and a path schema.
fn fixture(config: &str) -> Fixture {
    let dir = tempfile::tempdir().expect("temporary directory");
    write(
        dir.path(),
        "user.json",
        &json!({
            "type": "object",
            "required": ["name", "password"],
            "properties": {
                "name": {"type": "string", "maxLength": 20},
                "password": {"type": "string"},
                "bio": {"type": "string"},
                "age": {"type": "integer", "minimum": 0}
            },
            "additionalProperties": false
        }),
    );
    write(
        dir.path(),
        "query.json",
        &json!({
            "type": "object",
            "properties": {"limit": {"type": "integer", "maximum": 100}},
            "required": ["limit"]
        }),
    );
    write(
        dir.path(),
        "path.json",
        &json!({"type": "object", "properties": {"id": {"type": "integer"}}}),
    );
    let text = config.replace("{dir}", &dir.path().display().to_string());
    let config = Config::parse(&text, Path::new("agent.toml")).expect("valid config");
    let validation = Validation::build(&config).expect("rules compile");
    let routes = RouteTable::new(&config.routes).expect("routes compile");
    Fixture {
        _dir: dir,
        validation,
        routes,
    }
}

const USERS: &str = r#"
[[routes]]
name = "users"
path = "/users/{id}"

[routes.validation]
methods = ["GET", "PUT"]
content_types = ["application/json"]
max_body_bytes = 512
body_schema = "{dir}/user.json"
query_schema = "{dir}/query.json"
path_schema = "{dir}/path.json"
rich_text = ["/bio"]
"#;

struct Request {
    method: Method,
    target: String,
    headers: HeaderMap,
    body: Bytes,
}

fn request(method: Method, target: &str, body: &[u8]) -> Request {
    let mut headers = HeaderMap::new();
    if !body.is_empty() {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    Request {
        method,
        target: target.to_owned(),
        headers,
        body: Bytes::copy_from_slice(body),
    }
}

fn check(fixture: &Fixture, request: &Request) -> Verdict {
    let (path, query) = match request.target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (request.target.as_str(), None),
    };
    let view = RequestView {
        method: &request.method,
        path,
        query,
        headers: &request.headers,
        body: &request.body,
    };
    let matched = fixture.routes.find(&request.method, path);
    let route = matched.as_ref().map(|route| RouteKey {
        name: route.name(),
        pattern: &route.config().path,
        parameters: route.params(),
    });
    fixture.validation.check(&view, route)
}

fn rejection_status(verdict: &Verdict) -> Option<StatusCode> {
    verdict.rejection().map(|finding| finding.violation.problem.status)
}

#[test]
fn route_accepts_valid_request() {
    let fixture = fixture(USERS);

    let verdict = check(&fixture, &request(Method::PUT, "/users/7?limit=10", br#"{"name": "ada", "password": "x"}"#));

    assert!(verdict.findings.is_empty(), "{:?}", verdict.findings);
    assert!(verdict.sanitized.is_none());
}

#[test]
fn route_rejects_method_with_allow() {
    let fixture = fixture(USERS);

    let verdict = check(&fixture, &request(Method::DELETE, "/users/7?limit=1", b""));

    let finding = verdict.rejection().expect("rejected");
    assert_eq!(finding.violation.problem.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(finding.violation.allow, [Method::GET, Method::PUT]);
}

#[test]
fn route_rejects_content_type() {
    let fixture = fixture(USERS);
    let mut put = request(Method::PUT, "/users/7?limit=1", b"name=ada");
    put.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));

    assert_eq!(rejection_status(&check(&fixture, &put)), Some(StatusCode::UNSUPPORTED_MEDIA_TYPE));
}

#[test]
fn route_rejects_oversized_body() {
    let fixture = fixture(USERS);
    let body = format!(r#"{{"name": "ada", "password": "{}"}}"#, "x".repeat(600));

    let verdict = check(&fixture, &request(Method::PUT, "/users/7?limit=1", body.as_bytes()));

    assert_eq!(rejection_status(&verdict), Some(StatusCode::PAYLOAD_TOO_LARGE));
}

#[test]
fn route_names_schema_fields_without_values() {
    let fixture = fixture(USERS);

    let verdict = check(
        &fixture,
        &request(Method::PUT, "/users/7?limit=1", br#"{"name": "a-very-long-name-that-is-secret", "age": -4}"#),
    );

    let finding = verdict.rejection().expect("rejected");
    assert_eq!(finding.violation.problem.status, StatusCode::BAD_REQUEST);
    let names = finding.violation.field_names();
    assert!(names.contains(&"/name"), "{names:?}");
    assert!(names.contains(&"/age"), "{names:?}");
    assert!(names.contains(&"/password"), "{names:?}");
    let body = finding.violation.problem.to_json("1");
    assert!(!body.contains("a-very-long-name-that-is-secret"), "{body}");
}

#[test]
fn route_checks_query_and_path_parameters() {
    let fixture = fixture(USERS);

    let missing = check(&fixture, &request(Method::GET, "/users/7", b""));
    let too_high = check(&fixture, &request(Method::GET, "/users/7?limit=500", b""));
    let bad_id = check(&fixture, &request(Method::GET, "/users/seven?limit=5", b""));
    let fine = check(&fixture, &request(Method::GET, "/users/7?limit=5&extra=1", b""));

    let missing = missing.rejection().expect("limit is required");
    assert_eq!(missing.violation.field_names(), ["limit"]);
    assert_eq!(too_high.rejection().expect("limit too high").violation.field_names(), ["limit"]);
    assert_eq!(bad_id.rejection().expect("id is not an integer").violation.field_names(), ["id"]);
    assert!(fine.findings.is_empty(), "{:?}", fine.findings);
}

#[test]
fn route_rejects_json_limits() {
    // The route's size rule would stop the deep document before the parser sees it.
    let fixture = fixture(&USERS.replace("max_body_bytes = 512\n", ""));
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let cases: [&[u8]; 3] = [
        deep.as_bytes(),
        b"{\"name\": \"a\xff\", \"password\": \"x\"}",
        br#"{"name": "a", "name": "b", "password": "x"}"#,
    ];

    for body in cases {
        let verdict = check(&fixture, &request(Method::PUT, "/users/7?limit=1", body));
        let finding = verdict.rejection().expect("rejected");
        assert_eq!(finding.violation.kind, ViolationKind::Json);
        assert_eq!(finding.violation.problem.status, StatusCode::BAD_REQUEST);
    }
}

#[test]
fn route_sanitizes_rich_text_only() {
    let fixture = fixture(USERS);
    let body = br#"{"name": "ada", "password": "<script>keep\u0021</script>", "bio": "<b>hi</b><script>x()</script>"}"#;

    let verdict = check(&fixture, &request(Method::PUT, "/users/7?limit=1", body));

    assert!(verdict.findings.is_empty(), "{:?}", verdict.findings);
    let sanitized = verdict.sanitized.expect("bio changed");
    let expected = br#"{"name": "ada", "password": "<script>keep\u0021</script>", "bio": "<b>hi</b>"}"#;
    assert_eq!(&sanitized.body[..], &expected[..]);
}

#[test]
fn report_mode_records_without_rejecting() {
    let fixture = fixture(&USERS.replace("[routes.validation]\n", "[routes.validation]\nmode = \"report\"\n"));

    let verdict = check(&fixture, &request(Method::PUT, "/users/7?limit=1", br#"{"bio": "<script></script>"}"#));

    assert!(verdict.rejection().is_none());
    assert_eq!(verdict.findings.len(), 1);
    assert!(!verdict.findings[0].enforced);
    assert_eq!(verdict.findings[0].violation.kind, ViolationKind::Schema);
    assert!(verdict.sanitized.is_none(), "report mode leaves the body as sent");
}

#[test]
fn json_bodies_are_checked_without_route() {
    let strict = fixture("");
    let off = fixture("[validation]\njson_bodies = \"off\"\n");
    let shallow = fixture("[validation]\nmax_json_depth = 2\n");

    let duplicate = request(Method::POST, "/anything", br#"{"a": 1, "a": 2}"#);
    let deep = request(Method::POST, "/anything", b"[[[1]]]");

    assert_eq!(rejection_status(&check(&strict, &duplicate)), Some(StatusCode::BAD_REQUEST));
    assert!(check(&off, &duplicate).findings.is_empty());
    assert!(check(&strict, &deep).findings.is_empty());
    assert_eq!(rejection_status(&check(&shallow, &deep)), Some(StatusCode::BAD_REQUEST));
}

#[test]
fn non_json_bodies_skip_the_json_check() {
    let strict = fixture("");
    let mut text = request(Method::POST, "/anything", b"{not json");
    text.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));

    assert!(check(&strict, &text).findings.is_empty());
}

fn petstore(extra: &str) -> Fixture {
    let file = openapi_corpus("petstore-3.0.yaml");
    fixture(&format!("[openapi]\nfile = \"{}\"\n{extra}", file.display()))
}

#[test]
fn openapi_accepts_valid_requests() {
    let fixture = petstore("");
    let cases = [
        request(Method::GET, "/pet/10", b""),
        request(Method::GET, "/pet/findByStatus?status=sold", b""),
        request(Method::GET, "/pet/findByTags?tags=a&tags=b", b""),
        request(Method::POST, "/pet", br#"{"name": "rex", "photoUrls": ["u"], "status": "available"}"#),
        request(Method::DELETE, "/store/order/3", b""),
        request(Method::GET, "/user/login?username=a&password=b", b""),
    ];

    for case in &cases {
        let verdict = check(&fixture, case);
        assert!(verdict.findings.is_empty(), "{} {}: {:?}", case.method, case.target, verdict.findings);
    }
}

#[test]
fn openapi_rejects_invalid_requests() {
    let fixture = petstore("");
    let mut xml = request(Method::POST, "/pet", b"<pet/>");
    xml.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    let cases = [
        (request(Method::GET, "/pet/ten", b""), StatusCode::BAD_REQUEST, ViolationKind::Schema),
        (request(Method::GET, "/pet/findByStatus?status=lost", b""), StatusCode::BAD_REQUEST, ViolationKind::Schema),
        (request(Method::POST, "/pet", br#"{"name": 1}"#), StatusCode::BAD_REQUEST, ViolationKind::Schema),
        (request(Method::POST, "/pet", b""), StatusCode::BAD_REQUEST, ViolationKind::MissingBody),
        (xml, StatusCode::UNSUPPORTED_MEDIA_TYPE, ViolationKind::ContentType),
        (request(Method::PATCH, "/pet/1", b""), StatusCode::METHOD_NOT_ALLOWED, ViolationKind::Method),
        (request(Method::GET, "/admin/users", b""), StatusCode::NOT_FOUND, ViolationKind::UndeclaredPath),
        (request(Method::GET, "/pet/%ff", b""), StatusCode::BAD_REQUEST, ViolationKind::Encoding),
        (request(Method::GET, "/store/inventory", b"{}"), StatusCode::UNSUPPORTED_MEDIA_TYPE, ViolationKind::ContentType),
    ];

    for (case, status, kind) in &cases {
        let verdict = check(&fixture, case);
        let finding = verdict
            .rejection()
            .unwrap_or_else(|| panic!("{} {} passed", case.method, case.target));
        assert_eq!(finding.violation.problem.status, *status, "{} {}", case.method, case.target);
        assert_eq!(finding.violation.kind, *kind, "{} {}", case.method, case.target);
        assert_eq!(finding.source, Source::OpenApi);
    }
}

#[test]
fn openapi_undeclared_can_pass_or_report() {
    let pass = petstore("undeclared = \"pass\"\n");
    let report = petstore("undeclared = \"report\"\n");
    let undeclared = request(Method::GET, "/admin/users", b"");

    assert!(check(&pass, &undeclared).findings.is_empty());
    let reported = check(&report, &undeclared);
    assert!(reported.rejection().is_none());
    assert_eq!(reported.findings.len(), 1);
    assert_eq!(reported.findings[0].violation.kind, ViolationKind::UndeclaredPath);
}

#[test]
fn openapi_base_path_prefixes_declared_paths() {
    let fixture = petstore("base_path = \"/api/v3\"\n");

    let inside = check(&fixture, &request(Method::GET, "/api/v3/pet/10", b""));
    let invalid = check(&fixture, &request(Method::GET, "/api/v3/pet/ten", b""));
    let bare = check(&fixture, &request(Method::GET, "/pet/10", b""));
    let lookalike = check(&fixture, &request(Method::GET, "/api/v3x/pet/10", b""));

    assert!(inside.findings.is_empty(), "{:?}", inside.findings);
    assert_eq!(rejection_status(&invalid), Some(StatusCode::BAD_REQUEST));
    assert_eq!(rejection_status(&bare), Some(StatusCode::NOT_FOUND));
    assert_eq!(rejection_status(&lookalike), Some(StatusCode::NOT_FOUND));
}

#[test]
fn openapi_report_mode_passes_schema_violations() {
    let fixture = petstore("mode = \"report\"\n");

    let verdict = check(&fixture, &request(Method::GET, "/pet/ten", b""));

    assert!(verdict.rejection().is_none());
    assert_eq!(verdict.findings.len(), 1);
}

#[test]
fn openapi_validates_form_bodies() {
    let fixture = petstore("");
    let mut valid = request(Method::POST, "/user", b"username=ada&userStatus=1");
    valid.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
    let mut invalid = request(Method::POST, "/user", b"username=ada&userStatus=high");
    invalid.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));

    assert!(check(&fixture, &valid).findings.is_empty());
    let finding = check(&fixture, &invalid).rejection().cloned().expect("rejected");
    assert_eq!(finding.violation.field_names(), ["/userStatus"]);
}

#[test]
fn openapi_expanded_and_examples_documents_enforce() {
    let expanded = fixture(&format!(
        "[openapi]\nfile = \"{}\"\n",
        openapi_corpus("petstore-expanded-3.0.yaml").display()
    ));
    let examples = fixture(&format!(
        "[openapi]\nfile = \"{}\"\n",
        openapi_corpus("api-with-examples-3.0.yaml").display()
    ));

    assert!(check(&expanded, &request(Method::GET, "/pets?limit=5&tags=a", b"")).findings.is_empty());
    assert!(check(&expanded, &request(Method::POST, "/pets", br#"{"name": "rex", "tag": "dog"}"#)).findings.is_empty());
    assert_eq!(
        rejection_status(&check(&expanded, &request(Method::GET, "/pets?limit=many", b""))),
        Some(StatusCode::BAD_REQUEST)
    );
    assert_eq!(
        rejection_status(&check(&expanded, &request(Method::POST, "/pets", br#"{"tag": "dog"}"#))),
        Some(StatusCode::BAD_REQUEST)
    );
    assert!(check(&examples, &request(Method::GET, "/v2", b"")).findings.is_empty());
    assert_eq!(
        rejection_status(&check(&examples, &request(Method::PUT, "/v2", b""))),
        Some(StatusCode::METHOD_NOT_ALLOWED)
    );
}

#[test]
fn build_errors_name_route_and_file() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\"type\": 5}").expect("write schema");
    let missing = dir.path().join("missing.json");
    let cases = [
        (broken.clone(), "broken.json"),
        (missing.clone(), "missing.json"),
    ];

    for (file, name) in cases {
        let text = format!(
            "[[routes]]\nname = \"orders\"\npath = \"/orders\"\n[routes.validation]\nbody_schema = \"{}\"\n",
            file.display()
        );
        let config = Config::parse(&text, Path::new("agent.toml")).expect("valid TOML");
        let error = Validation::build(&config).expect_err("schema is unusable");
        let message = crate::telemetry::ErrorChain(&error).to_string();
        assert!(message.contains("route orders"), "{message}");
        assert!(message.contains("validation.body_schema"), "{message}");
        assert!(message.contains(name), "{message}");
        assert_eq!(error.section(), "routes");
    }
}

#[test]
fn build_rejects_bad_settings() {
    let cases = [
        "[validation]\nmax_json_depth = 100000\n",
        "[[routes]]\npath = \"/a\"\n[routes.validation]\nmethods = [\"G ET\"]\n",
        "[[routes]]\npath = \"/a\"\n[routes.validation]\ncontent_types = [\"json\"]\n",
        "[[routes]]\npath = \"/a\"\n[routes.validation]\nrich_text = [\"bio\"]\n",
        "[[routes]]\npath = \"/a\"\n[routes.validation]\nmax_body_bytes = 0\n",
        "[openapi]\nfile = \"/nonexistent/openapi.yaml\"\n",
        "[openapi]\nbase_path = \"api/\"\n",
    ];

    for text in cases {
        let config = Config::parse(text, Path::new("agent.toml")).expect("valid TOML");
        assert!(Validation::build(&config).is_err(), "{text}");
    }
}

fn gzip_request(target: &str, coding: &'static str) -> Request {
    let mut post = request(Method::POST, target, b"\x1f\x8b\x08\x00compressed");
    post.headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
    post
}

#[test]
fn encoded_body_is_rejected_by_default() {
    let fixture = fixture("");

    let verdict = check(&fixture, &gzip_request("/anything", "gzip"));

    let finding = verdict.rejection().expect("rejected");
    assert_eq!(finding.violation.problem.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(finding.violation.kind, ViolationKind::ContentEncoding);
    assert_eq!(finding.source, Source::ContentEncoding);
}

#[test]
fn identity_coding_and_empty_body_pass() {
    let fixture = fixture("");
    let mut identity = request(Method::POST, "/anything", br#"{"a": 1}"#);
    identity.headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("Identity"));
    let mut empty = gzip_request("/anything", "gzip");
    empty.body = Bytes::new();

    assert!(check(&fixture, &identity).findings.is_empty());
    assert!(check(&fixture, &empty).findings.is_empty());
    assert!(check(&fixture, &gzip_request("/anything", "identity, br")).rejection().is_some());
}

#[test]
fn encoded_body_modes_and_route_override() {
    let report = fixture("[validation]\nencoded_bodies = \"report\"\n");
    let pass = fixture("[validation]\nencoded_bodies = \"pass\"\n");
    let route = fixture(
        "[[routes]]\nname = \"uploads\"\npath = \"/uploads\"\n[routes.validation]\nencoded_bodies = \"pass\"\n",
    );

    let reported = check(&report, &gzip_request("/anything", "gzip"));
    assert!(reported.rejection().is_none());
    assert_eq!(reported.findings.len(), 1);
    assert!(check(&pass, &gzip_request("/anything", "gzip")).findings.is_empty());
    let uploads = check(&route, &gzip_request("/uploads", "gzip"));
    assert!(uploads.findings.is_empty(), "{:?}", uploads.findings);
    assert!(check(&route, &gzip_request("/other", "gzip")).rejection().is_some());
}
