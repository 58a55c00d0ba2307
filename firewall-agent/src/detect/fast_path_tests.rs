//! Tests that every fast path of the detection stage returns what the slow path it skips
//! would have returned.

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;

use super::byte_set::ByteSet;
use super::normalise::{FieldEncoding, normalise, normalise_all_steps};
use super::*;

/// Pieces of payloads that reach the checks behind the fast paths, and of the encodings that
/// normalisation undoes.
const PIECES: &[&str] = &[
    "bash -c", "sh,-c", "${shell} -c", "/bin/", "/usr/local/bin/nc ", "/???/c?t", "/bin/n[c] ",
    "for /f %x in (a) do", "if exist x", "if a==b x", "alias ls=", "~+", "!-1", ">/tmp/x",
    "a=b; $a", "c'a't", "w\"h\"oami", "$ifs", "cat /etc/passwd", "; ls -la", "| id", "`id`",
    "$(whoami)", "javascript:", "java\tscript:", "vbscript:alert(1)", "data:text/html,",
    "alert(1)", "document.cookie", "window.location", "string.fromcharcode(", "x.innerhtml=",
    "top['x']", "atob(", "[][(![]", "!![]", "url(javascript", "url( 'vbscript",
    "<x xmlns=", "<a:include", "!entity x system", "<script>", "<img src=x onerror=", "\" onload=",
    "/*x*/", "%3c", "%25", "%u003c", "&lt;", "&#x3c;", "\\u003c", "+", "\u{ff1c}", "\u{e9}", "\0",
    "\x01", "\x7f", "\r\n", "\t", " ", "A", "Z", "1' or '1'='1", "union select", ":",
    "\u{2019} or 1=1", " \u{301}", "id=1&x=2", "a+b", " and ", " is not ", "null", " by",
    "import('", "import {a} from '", "import * as m from \"", "new function(", "btoa(", "srcdoc=",
    "formaction=", "settimeout(", "ale/**/rt(", "self[", "+[]", "[+!", "confirm`", "prompt (",
];

fn text_strategy() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        proptest::sample::select(PIECES).prop_map(str::to_owned),
        "[ -~]{0,4}",
    ];
    proptest::collection::vec(piece, 0..6).prop_map(|pieces| pieces.concat())
}

/// Pieces of non-ASCII text: letters with accents, decomposed and compatibility forms that NFKC
/// changes, the capital sigma whose lowercase form depends on its place, C1 controls and
/// letters whose lowercase form has another length in UTF-8.
const UNICODE_PIECES: &[&str] = &[
    "Zo\u{eb}", "In\u{e8}s", "M\u{fc}ller", "Garc\u{ed}a", "e\u{301}", "\u{fb01}", "\u{2460}", "\u{3a3}",
    "O\u{3a3}", "\u{3a3}A", "\u{85}", "\u{9f}", "\u{a0}", "\u{130}", "\u{212a}", "\u{1e9e}", "\u{10400}",
    "\u{4e2d}", "\u{ff21}", "\u{c2}",
];

fn byte_strategy() -> impl Strategy<Value = Vec<u8>> {
    let unicode_piece = prop_oneof![
        proptest::sample::select(UNICODE_PIECES).prop_map(str::to_owned),
        proptest::sample::select(PIECES).prop_map(str::to_owned),
        "\\PC{0,3}",
    ];
    prop_oneof![
        text_strategy().prop_map(String::into_bytes),
        proptest::collection::vec(unicode_piece, 0..6).prop_map(|pieces| pieces.concat().into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(proptest::sample::select(b"aA%+&\\;u0c3 \t\x7f\xc2\x85\xa0".as_slice()), 0..32),
    ]
}

fn kind_strategy() -> impl Strategy<Value = FieldKind> {
    proptest::sample::select(vec![
        FieldKind::Path,
        FieldKind::Query,
        FieldKind::Cookie,
        FieldKind::Header,
        FieldKind::Body,
        FieldKind::FileName,
        FieldKind::RawBody,
    ])
}

/// Inspects every field on its own, as `inspect_fields` did before it inspected each distinct
/// value once.
fn inspect_each_field(fields: &RequestFields<'_>) -> Vec<Finding> {
    let mut findings: Vec<Finding> = Vec::new();
    for field in fields.iter() {
        let value = normalise(&field.raw, field.encoding);
        let mut hits = Vec::new();
        detect_value(&value, field.kind, &mut hits);
        for rule in hits {
            let duplicate = findings
                .iter()
                .any(|finding| finding.rule.id == rule.id && finding.field == fields.name(field));
            if duplicate {
                continue;
            }
            if findings.len() == MAX_FINDINGS {
                return findings;
            }
            findings.push(Finding {
                rule,
                field: fields.name(field).into_owned(),
                excerpt: value.folded.chars().take(EXCERPT_CHARS).collect(),
            });
        }
    }
    findings
}

/// Builds a JSON body with each value as a note and as a key, beside a repeated id.
fn json_body(values: &[String]) -> String {
    let items: Vec<serde_json::Value> = values
        .iter()
        .enumerate()
        .map(|(index, value)| serde_json::json!({ "note": value, "id": index % 3, value.clone(): 1 }))
        .collect();
    serde_json::json!({ "items": items }).to_string()
}

fn json_fields<'a>(body: &'a str, headers: &'a HeaderMap) -> RequestFields<'a> {
    extract_fields(RequestParts {
        path: "/api/items",
        query: None,
        headers,
        inspected_headers: &[],
        body: body.as_bytes(),
    })
}

fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn plain_fast_path_matches_all_steps(raw in byte_strategy()) {
        for encoding in [FieldEncoding::Plain, FieldEncoding::Form] {
            prop_assert_eq!(normalise(&raw, encoding), normalise_all_steps(&raw, encoding), "raw {:?}", raw);
        }
    }

    #[test]
    fn lowercase_matches_standard_library(text in "\\PC{0,24}|[A-Za-z\u{3a3}\u{130}\u{c9} .]{0,24}") {
        prop_assert_eq!(super::normalise::lowercase(&text), text.to_lowercase(), "text {:?}", text);
    }

    #[test]
    fn byte_tests_lose_no_detection(text in text_strategy(), kind in kind_strategy()) {
        let bytes = ByteSet::of(&text);

        let mut fast = Vec::new();
        let mut slow = Vec::new();
        super::shell::detect(&text, &bytes, kind, &mut fast);
        super::shell::detect(&text, &ByteSet::full(), kind, &mut slow);
        prop_assert_eq!(fast, slow, "shell, text {:?}", text);

        let mut fast = Vec::new();
        let mut slow = Vec::new();
        super::xss::detect(&text, &bytes, &mut fast);
        super::xss::detect(&text, &ByteSet::full(), &mut slow);
        prop_assert_eq!(fast, slow, "xss, text {:?}", text);

        let value = normalise(text.as_bytes(), FieldEncoding::Plain);
        let mut fast = Vec::new();
        let mut slow = Vec::new();
        super::signatures::detect(&value, &ByteSet::of(&value.folded), kind, &mut fast);
        super::signatures::detect(&value, &ByteSet::full(), kind, &mut slow);
        prop_assert_eq!(fast, slow, "signatures, text {:?}", text);
    }

    #[test]
    fn sql_byte_tests_lose_no_detection(text in text_strategy(), kind in kind_strategy()) {
        let bytes = ByteSet::of(&text);
        prop_assert_eq!(
            super::sqli::might_be_sql(&text, &bytes),
            might_be_sql_without_byte_tests(&text),
            "text {:?}", text
        );
        // The precheck passes every value when every byte is present, so the detector is
        // compared with and without its byte tests on the values the precheck lets through.
        if super::sqli::might_be_sql(&text, &bytes) {
            let mut fast = Vec::new();
            let mut slow = Vec::new();
            super::sqli::detect(&text, &bytes, kind, &mut fast);
            super::sqli::detect(&text, &ByteSet::full(), kind, &mut slow);
            prop_assert_eq!(fast, slow, "text {:?}", text);
        }
    }

    #[test]
    fn xss_text_tests_lose_no_match(text in text_strategy()) {
        prop_assert_eq!(
            super::xss::contains_script_scheme(&text),
            super::xss::contains_script_scheme_unfiltered(&text),
            "text {:?}", text
        );
        if super::xss::STYLE_SCRIPT_URL.as_ref().is_some_and(|regex| regex.is_match(&text)) {
            prop_assert!(super::xss::may_have_style_script_url(&text, &ByteSet::of(&text)), "text {:?}", text);
        }
        if super::xss::XML_INJECTION.as_ref().is_some_and(|regex| regex.is_match(&text)) {
            prop_assert!(super::xss::may_have_xml_injection(&text, &ByteSet::of(&text)), "text {:?}", text);
        }
    }

    #[test]
    fn repeated_values_give_same_findings(
        values in proptest::collection::vec(proptest::sample::select(PIECES), 1..24),
    ) {
        let values: Vec<String> = values.iter().map(|value| (*value).to_owned()).collect();
        let (body, headers) = (json_body(&values), json_headers());
        let fields = json_fields(&body, &headers);
        prop_assert_eq!(inspect_fields(&fields), inspect_each_field(&fields));
    }
}

/// Words and numbers that paths and keys are made of, with SQL keywords and the names of every
/// token class among them, so that glued and separated keywords both occur.
const PATH_WORDS: &[&str] = &[
    "select", "union", "all", "order", "group", "by", "and", "or", "xor", "exec", "execute",
    "immediate", "set", "from", "where", "like", "not", "in", "is", "as", "null", "true", "the",
    "a", "x", "b", "n", "sleep", "char", "user", "version", "xp_cmdshell", "pg_sleep", "waitfor",
    "delay", "procedure", "analyse", "div", "glob", "int", "items", "api", "v2", "page", "users",
    "_", "0", "1", "42", "4294967296", "e", "0x41", "1e5", "unionselect", "xunionselectfrom",
];

fn path_strategy() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        proptest::sample::select(PATH_WORDS).prop_map(str::to_owned),
        Just("/".to_owned()),
        "[a-z0-9_/]{0,6}",
    ];
    proptest::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn plain_name_path_has_no_sql_finding(text in path_strategy(), kind in kind_strategy()) {
        if super::sqli::is_plain_name_path(&text) {
            let mut hits = Vec::new();
            super::sqli::detect_tokens(&text, &ByteSet::of(&text), kind, &mut hits);
            prop_assert!(hits.is_empty(), "text {:?} kind {:?} hits {:?}", text, kind, hits);
        }
    }
}

#[test]
fn plain_name_path_skips_only_plain_names() {
    for plain in ["page", "/items", "/api/v2/users/42/", "_id", "4294967296", "", "//"] {
        assert!(super::sqli::is_plain_name_path(plain), "{plain:?}");
    }
    let long = "a".repeat(5000);
    for other in ["select", "/order", "/x/union", "/xunionselectfrom", "1e5", "0x41", "a b", "a-b", "a.b", "Page", "caf\u{e9}", long.as_str()] {
        assert!(!super::sqli::is_plain_name_path(other), "{other:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn fingerprint_cache_matches_pattern_set(fingerprint in "[_bqs1nkAaEUBfFTPCW&=ovcX(),;.]{0,18}") {
        let expected = super::sqli::fingerprint_rules(&fingerprint);
        let mut expected_unique = Vec::new();
        for rule in expected {
            if !expected_unique.contains(&rule) {
                expected_unique.push(rule);
            }
        }
        // The first call fills the cache and the second reads it.
        prop_assert_eq!(&super::sqli::cached_fingerprint_rules(&fingerprint), &expected_unique);
        prop_assert_eq!(&super::sqli::cached_fingerprint_rules(&fingerprint), &expected_unique);
    }
}

/// Runs the SQL precheck on the value itself, byte by byte and phrase by phrase, without a
/// byte set.
fn might_be_sql_without_byte_tests(value: &str) -> bool {
    value.bytes().any(|byte| b"'\"();#-/=<>|&@`!:^~*%,_".contains(&byte))
        || !value.trim().contains(char::is_whitespace)
        || [" or ", " and ", "union", " by", "null", " when ", " is not "]
            .iter()
            .any(|phrase| value.contains(phrase))
        || value.starts_with("exec")
        || value.starts_with("or ")
        || value.starts_with("and ")
        || value.trim_start().starts_with("xor")
}

#[test]
fn byte_set_matches_text_bytes() {
    let bytes = ByteSet::of("a/\u{e9}");
    for byte in 0..=u8::MAX {
        let expected = matches!(byte, b'a' | b'/' | 0xC3 | 0xA9);
        assert_eq!(bytes.contains(byte), expected, "byte {byte:#x}");
    }
    assert!(bytes.contains_all(b"a/"));
    assert!(!bytes.contains_all(b"a/b"));
    assert!(bytes.contains_any(b"xyz/"));
    assert!(!bytes.contains_any(b"xyz"));
}

#[test]
fn plain_fast_path_skips_only_plain_values() {
    for raw in [
        &b"Hello World"[..], b"a+b", b"a%41", b"a&lt;", b"a\\u0041", b"a\x01", b"\xc3\xa9", b"Zo\xc3\xab",
        b"a\xc2\x85b", b"a\xc2\xa0b", b"\xef\xac\x81", b"e\xcc\x81", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xce\xa3",
    ] {
        for encoding in [FieldEncoding::Plain, FieldEncoding::Form] {
            assert_eq!(normalise(raw, encoding), normalise_all_steps(raw, encoding), "raw {raw:?}");
        }
    }
    assert_eq!(normalise(b"a+B", FieldEncoding::Form).folded, "a b");
    assert_eq!(normalise(b"a+B", FieldEncoding::Plain).folded, "a+b");
}

#[test]
fn repeated_attack_is_found_in_every_field() {
    let values: Vec<String> = vec!["1' or '1'='1".into(); 3];
    let (body, headers) = (json_body(&values), json_headers());
    let fields = json_fields(&body, &headers);
    let findings = inspect_fields(&fields);
    assert_eq!(findings, inspect_each_field(&fields));
    for index in 0..3 {
        let name = format!("json:items.{index}.note");
        assert!(findings.iter().any(|finding| finding.field == name), "{name} missing: {findings:?}");
    }
}

#[test]
fn every_piece_gives_same_result_without_byte_tests() {
    for piece in PIECES {
        let bytes = ByteSet::of(piece);
        let mut fast = Vec::new();
        let mut slow = Vec::new();
        super::shell::detect(piece, &bytes, FieldKind::Query, &mut fast);
        super::xss::detect(piece, &bytes, &mut fast);
        super::shell::detect(piece, &ByteSet::full(), FieldKind::Query, &mut slow);
        super::xss::detect(piece, &ByteSet::full(), &mut slow);
        assert_eq!(fast, slow, "piece {piece:?}");
    }
}

#[test]
fn nfkc_quick_check_keeps_full_normalisation() {
    use unicode_normalization::UnicodeNormalization;

    for text in ["Zoë D'Angelo", "Zoe\u{301}", "ＡＢＣ１２３", "ﬁle", "한국어", "Ω and Ω", "x²", "café ｶﾀｶﾅ"] {
        let expected: String = text.nfkc().collect();
        assert_eq!(normalise(text.as_bytes(), FieldEncoding::Plain).cased, expected, "text {text:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn non_ascii_text_is_nfkc_normalised(text in "[^%&\\\\+\\x00-\\x1f\\x7f-\\x{9f}]{0,24}") {
        use unicode_normalization::UnicodeNormalization;

        let expected: String = text.nfkc().collect();
        prop_assert_eq!(normalise(text.as_bytes(), FieldEncoding::Plain).cased, expected, "text {:?}", text);
    }
}
