use proptest::prelude::*;
use serde_json::json;

use super::*;

fn limits() -> JsonLimits {
    JsonLimits::default()
}

fn error_of(input: &[u8]) -> JsonError {
    parse(input, limits()).expect_err("invalid document")
}

#[test]
fn parse_accepts_what_serde_json_accepts() {
    let text = r#" {"a": [1, -2, 3.5e2, true, false, null], "b": {"c": "d\u00e9\n\ud83d\ude00"}, "e": 18446744073709551615} "#;

    let parsed = parse(text.as_bytes(), limits()).expect("valid document");

    let expected: Value = serde_json::from_str(text).expect("valid for serde_json");
    assert_eq!(parsed, expected);
}

#[test]
fn parse_rejects_deep_nesting_without_overflow() {
    let depth = 100_000;
    let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));

    let error = error_of(text.as_bytes());

    assert_eq!(error.kind, JsonErrorKind::TooDeep { limit: DEFAULT_MAX_DEPTH });
    assert_eq!(error.offset, DEFAULT_MAX_DEPTH);
}

#[test]
fn parse_accepts_depth_at_limit() {
    let depth = DEFAULT_MAX_DEPTH;
    let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));

    assert!(parse(text.as_bytes(), limits()).is_ok());
    let deeper = format!("[{text}]");
    assert!(parse(deeper.as_bytes(), limits()).is_err());
}

#[test]
fn parse_names_pointer_of_deep_value() {
    let text = br#"{"a": {"b": [{"c": [[[1]]]}]}}"#;
    let tight = JsonLimits {
        max_depth: 5,
        ..limits()
    };

    let error = parse(text, tight).expect_err("too deep");

    assert_eq!(error.kind, JsonErrorKind::TooDeep { limit: 5 });
    assert_eq!(error.pointer, "/a/b/0/c/0");
}

#[test]
fn parse_rejects_oversized_document() {
    let small = JsonLimits {
        max_bytes: 4,
        ..limits()
    };

    let error = parse(b"[1, 2]", small).expect_err("too large");

    assert_eq!(error.kind, JsonErrorKind::TooLarge { limit: 4 });
}

#[test]
fn parse_rejects_duplicate_keys() {
    let error = error_of(br#"{"user": {"role": "user", "role": "admin"}}"#);

    assert_eq!(error.kind, JsonErrorKind::DuplicateKey);
    assert_eq!(error.pointer, "/user/role");
}

#[test]
fn parse_rejects_duplicate_keys_after_unescaping() {
    let error = error_of(br#"{"role": 1, "r\u006fle": 2}"#);

    assert_eq!(error.kind, JsonErrorKind::DuplicateKey);
    assert_eq!(error.pointer, "/role");
}

#[test]
fn parse_rejects_invalid_utf8() {
    let error = error_of(b"{\"name\": \"ab\xff\"}");

    assert_eq!(error.kind, JsonErrorKind::InvalidUtf8);
    assert_eq!(error.pointer, "/name");
    assert_eq!(error.offset, 12);
}

#[test]
fn parse_rejects_overlong_utf8_encoding() {
    // 0xC0 0xAF is an overlong '/', which lenient decoders turn into a path separator.
    let error = error_of(b"[\"\xc0\xaf\"]");

    assert_eq!(error.kind, JsonErrorKind::InvalidUtf8);
    assert_eq!(error.pointer, "/0");
}

#[test]
fn parse_rejects_lone_surrogates() {
    assert_eq!(error_of(br#""\ud800""#).kind, JsonErrorKind::InvalidEscape);
    assert_eq!(error_of(br#""\udc00x""#).kind, JsonErrorKind::InvalidEscape);
    assert_eq!(error_of(br#""\ud800\u0041""#).kind, JsonErrorKind::InvalidEscape);
}

#[test]
fn parse_rejects_grammar_errors() {
    let cases: &[(&[u8], JsonErrorKind)] = &[
        (b"", JsonErrorKind::UnexpectedEnd),
        (b"\xef\xbb\xbf{}", JsonErrorKind::Syntax { expected: "a value" }),
        (b"{} {}", JsonErrorKind::TrailingData),
        (b"[1,]", JsonErrorKind::Syntax { expected: "a value" }),
        (b"{\"a\" 1}", JsonErrorKind::Syntax { expected: "':' after an object key" }),
        (b"{'a': 1}", JsonErrorKind::Syntax { expected: "an object key" }),
        (b"01", JsonErrorKind::TrailingData),
        (b"1.", JsonErrorKind::UnexpectedEnd),
        (b"-", JsonErrorKind::UnexpectedEnd),
        (b"1e999", JsonErrorKind::NumberOutOfRange),
        (b"\"tab\there\"", JsonErrorKind::ControlCharacter),
        (b"\"\\x41\"", JsonErrorKind::InvalidEscape),
        (b"\"\\u12\"", JsonErrorKind::InvalidEscape),
        (b"tru", JsonErrorKind::UnexpectedEnd),
        (b"NaN", JsonErrorKind::Syntax { expected: "a value" }),
        (b"[1 2]", JsonErrorKind::Syntax { expected: "',' or ']' in an array" }),
        (b"\"open", JsonErrorKind::UnexpectedEnd),
    ];

    for (input, kind) in cases {
        let error = parse(input, limits()).expect_err("invalid document");
        assert_eq!(&error.kind, kind, "input {:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn error_message_does_not_echo_value() {
    let error = error_of(b"{\"password\": \"hunter2\xff\"}");

    let message = error.to_string();

    assert!(message.contains("/password"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn pointer_escapes_tilde_and_slash() {
    let error = error_of(br#"{"a/b": {"c~d": [}}"#);

    assert_eq!(error.pointer, "/a~1b/c~0d/0");
}

#[test]
fn watched_strings_report_spans() {
    let text = br#"{"bio": "x\"y", "list": [{"t": "one"}, {"t": 2}, {"t": "three"}], "other": "no"}"#;
    let watched = [
        PointerPattern::parse("/bio").expect("valid"),
        PointerPattern::parse("/list/*/t").expect("valid"),
    ];

    let parsed = parse_watching(text, limits(), &watched).expect("valid document");

    let pointers: Vec<&str> = parsed.strings.iter().map(|span| span.pointer.as_str()).collect();
    assert_eq!(pointers, ["/bio", "/list/0/t", "/list/2/t"]);
    assert_eq!(&text[parsed.strings[0].range.clone()], br#""x\"y""#);
    assert_eq!(parsed.strings[0].value, "x\"y");
    assert_eq!(&text[parsed.strings[2].range.clone()], br#""three""#);
}

#[test]
fn pointer_pattern_rejects_bad_syntax() {
    assert!(PointerPattern::parse("bio").is_err());
    assert!(PointerPattern::parse("").is_err());
    assert!(PointerPattern::parse("/a~2").is_err());
    assert_eq!(PointerPattern::parse("/a~1b").expect("valid").as_str(), "/a~1b");
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |number| number.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn depth_of(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth_of).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth_of).max().unwrap_or(0),
        _ => 0,
    }
}

proptest! {
    #[test]
    fn parse_never_panics(input in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&input, limits());
    }

    #[test]
    fn parse_round_trips_serialized_values(value in json_value()) {
        let text = serde_json::to_string(&value).expect("serializable");

        let parsed = parse(text.as_bytes(), limits()).expect("serde_json output is valid");

        prop_assert_eq!(parsed, value);
    }

    #[test]
    fn parse_holds_depth_bound(value in json_value(), max_depth in 0usize..6) {
        let text = serde_json::to_string(&value).expect("serializable");
        let bounded = JsonLimits { max_depth, ..limits() };

        let result = parse(text.as_bytes(), bounded);

        prop_assert_eq!(result.is_ok(), depth_of(&value) <= max_depth);
    }

    #[test]
    fn parse_agrees_with_serde_json_on_acceptance(input in "[\\[\\]{}\",:0-9a-z .eE+-]{0,40}") {
        let ours = parse(input.as_bytes(), limits());
        let reference = serde_json::from_str::<Value>(&input);

        // serde_json keeps the last of duplicate keys where this parser rejects them.
        if let Err(error) = &ours {
            if error.kind == JsonErrorKind::DuplicateKey {
                return Ok(());
            }
        }
        prop_assert_eq!(ours.is_ok(), reference.is_ok(), "input {:?}", input);
    }
}

#[test]
fn parse_matches_serde_json_value_for_nested_document() {
    let value = json!({"k": [{"x": [1, 2, {"y": null}]}], "s": "\u{1F600}"});
    let text = serde_json::to_vec_pretty(&value).expect("serializable");

    assert_eq!(parse(&text, limits()).expect("valid"), value);
}
