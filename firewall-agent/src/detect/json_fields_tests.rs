//! Tests of the one-pass JSON walk: the fields and names it gives, what it accepts as JSON, and
//! what falls back to the raw body.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use serde_json::Value;

use super::fields::MAX_JSON_DEPTH;
use super::json_fields::MAX_NESTING;
use super::*;

fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers
}

fn extract<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> RequestFields<'a> {
    extract_fields(RequestParts {
        path: "/api",
        query: None,
        headers,
        inspected_headers: &[],
        body,
    })
}

/// Extracts the body's fields other than the path, as sorted (name, raw bytes, kind) rows.
fn body_fields(body: &[u8]) -> Vec<(String, Vec<u8>, FieldKind)> {
    let headers = json_headers();
    let fields = extract(&headers, body);
    let mut list: Vec<_> = fields
        .iter()
        .filter(|field| field.kind != FieldKind::Path)
        .map(|field| (fields.name(field).into_owned(), field.raw.to_vec(), field.kind))
        .collect();
    list.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    list
}

/// Returns whether the walk read `body` as JSON. A body that is not JSON becomes one raw field.
fn read_as_json(body: &[u8]) -> bool {
    let headers = json_headers();
    let fields = extract(&headers, body);
    !fields.iter().any(|field| field.kind == FieldKind::RawBody)
}

/// Lists the fields of a parsed document as the walk names them: every key and every string,
/// named by its path, down to the walked depth.
fn tree_fields(value: &Value) -> Vec<(String, Vec<u8>, FieldKind)> {
    fn join(path: &str, key: &str) -> String {
        if path.len() > 128 {
            return path.to_owned();
        }
        let key: String = key.chars().filter(|character| !character.is_control()).take(64).collect();
        if path.is_empty() { key } else { format!("{path}.{key}") }
    }
    fn walk(value: &Value, path: &str, depth: usize, out: &mut Vec<(String, Vec<u8>, FieldKind)>) {
        match value {
            Value::String(text) if !text.is_empty() => {
                out.push((format!("json:{path}"), text.as_bytes().to_vec(), FieldKind::Body));
            }
            Value::Object(map) if depth < MAX_JSON_DEPTH => {
                for (key, child) in map {
                    let child_path = join(path, key);
                    if !key.is_empty() {
                        out.push((format!("json:{child_path}"), key.as_bytes().to_vec(), FieldKind::Body));
                    }
                    walk(child, &child_path, depth + 1, out);
                }
            }
            Value::Array(items) if depth < MAX_JSON_DEPTH => {
                for (index, child) in items.iter().enumerate() {
                    walk(child, &join(path, &index.to_string()), depth + 1, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, "", 0, &mut out);
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        "(\\PC|[\"\\\\/\u{7}\u{0}\u{1f}\u{e9}\u{1f600}]){0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map("(\\PC|[\"\\\\.\u{1}]){0,8}", inner, 0..6)
                .prop_map(|map: BTreeMap<String, Value>| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Pieces from which mostly malformed JSON texts are put together.
const PIECES: &[&str] = &[
    "{", "}", "[", "]", ",", ":", "\"", "\"a\"", "\"\\u00e9\"", "\"\\ud83d\\ude00\"", "\"\\ud83d\"",
    "\"\\x\"", "\\", "1", "-", "0", "01", "1.", ".5", "1e5", "1E+", "-0.5e-3", "e999", "true", "tru", "null",
    "nul", "false", " ", "\n", "\t", "\u{0}", "\u{e9}", "\"\u{1}\"", "x",
    "\"a string longer than sixteen bytes\"", "\"a string longer than sixteen\u{1f} bytes\"",
    "\"\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\\\"\"",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn fields_match_tree_walk(value in json_value(), pretty in any::<bool>()) {
        let body = if pretty {
            serde_json::to_string_pretty(&value).unwrap_or_default()
        } else {
            value.to_string()
        };
        prop_assert_eq!(body_fields(body.as_bytes()), tree_fields(&value), "body {}", body);
    }

    #[test]
    fn accepts_what_serde_json_accepts(pieces in proptest::collection::vec(proptest::sample::select(PIECES), 1..12)) {
        let body = pieces.concat();
        let expected = serde_json::from_str::<Value>(&body).is_ok();
        prop_assert_eq!(read_as_json(body.as_bytes()), expected, "body {:?}", body);
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let expected = serde_json::from_slice::<Value>(&body).is_ok();
        prop_assert_eq!(read_as_json(&body) || body.is_empty(), expected || body.is_empty());
    }
}

#[test]
fn nesting_limit_matches_serde_json() {
    for depth in [MAX_NESTING - 1, MAX_NESTING, MAX_NESTING + 1, 500] {
        let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let expected = serde_json::from_str::<Value>(&body).is_ok();
        assert_eq!(read_as_json(body.as_bytes()), expected, "depth {depth}");
    }
    assert!(read_as_json(format!("{}{}", "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING)).as_bytes()));
}

#[test]
fn every_duplicate_key_is_inspected() {
    // A parser that keeps the last of two equal keys hid the first value from inspection, while
    // applications that keep the first one read it.
    let body = br#"{"q":"1' union select password from users--","q":"shoes"}"#;
    let headers = json_headers();
    let fields = extract(&headers, body);
    let findings = inspect_fields(&fields);

    assert!(
        findings.iter().any(|finding| finding.rule.family == Family::Sqli && finding.field == "json:q"),
        "{findings:?}"
    );
}

#[test]
fn escapes_are_decoded_in_values_and_names() {
    let body = br#"{"na\u006de":"1\u0027 union select password from users--","emoji":"\ud83d\ude00 \/ok"}"#;
    let fields = body_fields(body);

    assert!(fields.contains(&("json:name".into(), b"name".to_vec(), FieldKind::Body)), "{fields:?}");
    assert!(
        fields.contains(&("json:name".into(), b"1' union select password from users--".to_vec(), FieldKind::Body)),
        "{fields:?}"
    );
    assert!(fields.contains(&("json:emoji".into(), "\u{1f600} /ok".as_bytes().to_vec(), FieldKind::Body)), "{fields:?}");
    let headers = json_headers();
    let findings = inspect_fields(&extract(&headers, body));
    assert!(findings.iter().any(|finding| finding.field == "json:name"), "{findings:?}");
}

#[test]
fn malformed_json_is_inspected_whole() {
    for body in [
        &br#"{"a":"x",}"#[..],
        br#"{"a":"x"} trailing"#,
        br#"{"a":"\ud83d"}"#,
        b"{\"a\":\"tab\there\"}",
        b"{\"a\":\"\xff\"}",
        br#"{"a":01}"#,
        br#"{"a":1e400}"#,
        br#"[-1.5E+999]"#,
        br#"{"a" "x"}"#,
        br#"["x" "y"]"#,
    ] {
        let fields = body_fields(body);
        assert_eq!(fields, vec![("body".into(), body.to_vec(), FieldKind::RawBody)], "body {:?}", String::from_utf8_lossy(body));
    }
}

#[test]
fn long_paths_and_keys_are_shortened_in_names() {
    let long_key = "k".repeat(100);
    let mut value = Value::String("leaf".into());
    for _ in 0..6 {
        value = serde_json::json!({ long_key.clone(): value });
    }
    let body = value.to_string();
    assert_eq!(body_fields(body.as_bytes()), tree_fields(&value));
    let longest = body_fields(body.as_bytes()).into_iter().map(|(name, _, _)| name.len()).max();
    assert!(longest.is_some_and(|length| length < 300), "{longest:?}");
}

#[test]
fn long_number_arrays_record_no_paths() {
    let numbers = vec!["1.5"; 100_000].join(",");
    let body = format!(r#"{{"embedding":[{numbers}],"comment":"1' union select password from users--"}}"#);
    let headers = json_headers();
    let fields = extract(&headers, body.as_bytes());

    assert!(fields.json_path_count() < 10, "{} paths", fields.json_path_count());
    let findings = inspect_fields(&fields);
    assert!(findings.iter().any(|finding| finding.field == "json:comment"), "{findings:?}");
}
