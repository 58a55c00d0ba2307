//! Tests of the rules of paranoia levels 2 to 4.

use http::{HeaderMap, HeaderValue};

use super::normalise::{FieldEncoding, normalise};
use super::strict::character_limit;
use super::*;

/// Returns the ids of the rules of levels 2 to `level` that `raw` matches as a field of `kind`.
fn strict_ids(raw: &str, kind: FieldKind, level: u8) -> Vec<&'static str> {
    let mut hits = Vec::new();
    strict::detect(&normalise(raw.as_bytes(), FieldEncoding::Form), kind, level, &mut hits);
    hits.iter().map(|rule| rule.id).collect()
}

/// Returns the levels from 1 to 4 at which `raw`, as a query value, matches `rule`.
fn levels_matching(raw: &str, rule: &str) -> Vec<u8> {
    (1..=MAX_PARANOIA_LEVEL)
        .filter(|level| strict_ids(raw, FieldKind::Query, *level).contains(&rule))
        .collect()
}

#[test]
fn each_rule_starts_at_its_level() {
    assert_eq!(levels_matching("northwind", "sqli-database-name"), [2, 3, 4]);
    assert_eq!(levels_matching("x', schema_name from y", "sqli-database-name"), [2, 3, 4]);
    assert_eq!(levels_matching("nvarchar", "sqli-type-name"), [2, 3, 4]);
    assert_eq!(levels_matching("4294967296", "protocol-integer-boundary"), [2, 3, 4]);
    assert_eq!(levels_matching("(((((())))))", "sqli-character-anomaly"), [2, 3, 4]);
    assert_eq!(levels_matching("/3 or ", "sqli-trailing-operator"), [3, 4]);
    assert_eq!(levels_matching("'bla'", "sqli-edge-quote"), [3, 4]);
    for rule in [
        rules::SQLI_DATABASE_NAME,
        rules::SQLI_TYPE_NAME,
        rules::PROTOCOL_INTEGER_BOUNDARY,
        rules::SQLI_CHARACTER_ANOMALY,
        rules::SQLI_TRAILING_OPERATOR,
        rules::SQLI_EDGE_QUOTE,
    ] {
        assert!(rules::ALL.contains(&rule), "{} is not in the catalogue", rule.id);
        assert!(rule.level > 1, "{} runs at level 1", rule.id);
    }
}

#[test]
fn names_match_only_as_whole_words() {
    for value in ["northwinds", "my_northwind", "varchars", "nvarchar_limit", "schema_names"] {
        assert_eq!(strict_ids(value, FieldKind::Query, 4).iter().filter(|id| id.starts_with("sqli-")).count(), 0, "{value}");
    }
    assert_eq!(strict_ids("cast(x as varchar(10))", FieldKind::Query, 2), ["sqli-type-name"]);
    assert_eq!(strict_ids("Northwind Traders", FieldKind::Body, 2), ["sqli-database-name"]);
}

#[test]
fn only_integers_at_a_limit_are_boundaries() {
    for value in ["2147483648", "-2147483649", "18446744073709551616", " 4294967295 "] {
        assert_eq!(strict_ids(value, FieldKind::Query, 2), ["protocol-integer-boundary"], "{value}");
    }
    for value in ["4294967297", "42949672960", "1024", "id 4294967296", "2147483648.5"] {
        assert_eq!(strict_ids(value, FieldKind::Query, 4), Vec::<&str>::new(), "{value}");
    }
    // Headers and paths carry numbers of their own, such as byte ranges.
    assert_eq!(strict_ids("4294967296", FieldKind::Header, 4), Vec::<&str>::new());
}

#[test]
fn character_limits_fall_with_the_level() {
    assert_eq!(character_limit(FieldKind::Query, 1), None);
    assert_eq!(character_limit(FieldKind::Query, 2), Some(12));
    assert_eq!(character_limit(FieldKind::Body, 3), Some(6));
    assert_eq!(character_limit(FieldKind::Query, 4), Some(3));
    assert_eq!(character_limit(FieldKind::Cookie, 2), None);
    assert_eq!(character_limit(FieldKind::Cookie, 3), Some(8));
    for kind in [FieldKind::Path, FieldKind::Header, FieldKind::RawBody, FieldKind::FileName] {
        assert_eq!(character_limit(kind, 4), None, "{kind:?}");
    }

    let eleven = "((((()))))!";
    assert_eq!(strict_ids(eleven, FieldKind::Query, 2), Vec::<&str>::new());
    assert_eq!(strict_ids(&format!("{eleven}!"), FieldKind::Query, 2), ["sqli-character-anomaly"]);
    // Typographic quotes count like ASCII ones.
    assert_eq!(strict_ids("\u{2018}\u{2019}\u{2018}\u{2019}\u{2018}\u{2019}", FieldKind::Body, 3), ["sqli-character-anomaly"]);
    // URL syntax does not count in a URL, but quotes and brackets do.
    let callback = "https://api.example.com/v2/cb?state=a-b-c&code=x~y&scope=read,write#frag";
    assert_eq!(strict_ids(callback, FieldKind::Query, 3), Vec::<&str>::new());
    let injected = "https://example.com/?id=1')) or (('1'='1";
    assert_eq!(strict_ids(injected, FieldKind::Query, 3), ["sqli-character-anomaly"]);
    assert_eq!(strict_ids(&format!("see {callback}"), FieldKind::Query, 3), ["sqli-character-anomaly"]);
    // A JSON Web Token in a cookie stays under the cookie limit.
    assert_eq!(strict_ids("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9", FieldKind::Cookie, 3), Vec::<&str>::new());
}

#[test]
fn text_data_urls_are_flagged() {
    for value in [
        "data:text/plain;base64,SSBsb3ZlIFBIUAo=",
        "data:text/plain",
        "data://text/plain;base64,PD9waHAgc3lzdGVtKCdpZCcpOyA/Pg==",
        "data:,<?php system('id'); ?>",
        " data:application/x-httpd-php;base64,PD9waHA=",
    ] {
        assert_eq!(levels_matching(value, "rfi-data-url"), [2, 3, 4], "{value}");
    }
    for value in ["data:image/png;base64,iVBORw0KGgo=", "metadata:text/plain", "see data:text/plain", "data"] {
        assert_eq!(levels_matching(value, "rfi-data-url"), Vec::<u8>::new(), "{value}");
    }
}

#[test]
fn trailing_operator_needs_context() {
    for value in ["/3 or ", "xxxx_r and ", "a xor  ", "x && ", "1 || "] {
        assert_eq!(strict_ids(value, FieldKind::Body, 3), ["sqli-trailing-operator"], "{value}");
    }
    for value in ["/3 or", "color ", " or ", "or ", "black and white", "rock and roll"] {
        assert!(!strict_ids(value, FieldKind::Body, 4).contains(&"sqli-trailing-operator"), "{value}");
    }
}

#[test]
fn edge_quotes_are_leading_or_trailing() {
    for value in ["'bla'", "admin '", "`id", "' or '1"] {
        assert!(strict_ids(value, FieldKind::Query, 3).contains(&"sqli-edge-quote"), "{value}");
    }
    for value in ["it's", "o'brien", "\"quoted\"", "rock 'n roll"] {
        assert!(!strict_ids(value, FieldKind::Query, 4).contains(&"sqli-edge-quote"), "{value}");
    }
    assert_eq!(strict_ids("'bla'", FieldKind::Path, 4), Vec::<&str>::new());
}

#[test]
fn level_one_request_has_no_strict_findings() {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let body = br#"{"db": "northwind", "size": "4294967296", "q": "'bla'", "p": "(((((())))))"}"#;
    let fields = extract_fields(RequestParts {
        path: "/api",
        query: Some("type=nvarchar"),
        headers: &headers,
        inspected_headers: &[],
        body,
    });
    let ids = |level| -> Vec<&'static str> {
        let mut ids: Vec<_> = inspect_fields_at(&fields, level).iter().map(|finding| finding.rule.id).collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!(ids(1), Vec::<&str>::new());
    assert_eq!(inspect_fields(&fields), Vec::new());
    assert_eq!(
        ids(2),
        ["protocol-integer-boundary", "sqli-character-anomaly", "sqli-database-name", "sqli-type-name"]
    );
    assert!(ids(3).contains(&"sqli-edge-quote"));
}
