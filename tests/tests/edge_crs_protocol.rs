//! Replays the protocol families of the OWASP CRS regression tests (920 protocol enforcement,
//! 921 protocol attacks) as raw requests against the proxy on loopback, and prints how many
//! the HTTP edge rejects and why.
//!
//! The corpus lives outside the repository: `FIREWALL_CRS_CORPUS`, or
//! `../shared/corpus/crs-regression` beside the workspace. The test is skipped, with a message,
//! when neither exists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use integration_tests::edge::{EdgeAgent, RawExchange, RecordingUpstream, send_raw};
use serde_norway::Value;

const FAMILIES: [&str; 2] = [
    "REQUEST-920-PROTOCOL-ENFORCEMENT",
    "REQUEST-921-PROTOCOL-ATTACK",
];

/// One request of the corpus.
struct Case {
    /// `file#test_id`.
    name: String,
    raw: Vec<u8>,
    /// Whether CRS labels the request an attack (`expect_ids`).
    attack: bool,
    /// The status CRS expects from a web server in front of the rules, such as 400.
    expected_status: Option<u16>,
}

fn corpus_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("FIREWALL_CRS_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/crs-regression")
        });
    dir.is_dir().then_some(dir)
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// Builds the raw bytes of a stage's request, as go-ftw does: request line, headers in file
/// order, then `data`. Unless `autocomplete_headers` is false, a missing `Content-Length` is
/// added for a body and `Connection: close` is added.
fn raw_request(input: &Value) -> Option<Vec<u8>> {
    if let Some(encoded) = input.get("encoded_request").and_then(text) {
        return base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok();
    }
    let method = input
        .get("method")
        .and_then(text)
        .unwrap_or_else(|| "GET".into());
    let uri = input
        .get("uri")
        .and_then(text)
        .unwrap_or_else(|| "/".into());
    let version = input
        .get("version")
        .and_then(text)
        .unwrap_or_else(|| "HTTP/1.1".into());
    let data = expand_repeat(&input.get("data").and_then(text).unwrap_or_default());
    let autocomplete = input
        .get("autocomplete_headers")
        .and_then(Value::as_bool)
        .unwrap_or(true);

    let mut head = format!("{method} {uri} {version}\r\n");
    let mut names = Vec::new();
    if let Some(Value::Mapping(headers)) = input.get("headers") {
        for (name, value) in headers {
            let (Some(name), Some(value)) = (text(name), text(value)) else {
                continue;
            };
            head.push_str(&format!("{name}: {value}\r\n"));
            names.push(name.to_ascii_lowercase());
        }
    }
    if autocomplete {
        let has = |wanted: &str| names.iter().any(|name| name == wanted);
        if !data.is_empty() && !has("content-length") && !has("transfer-encoding") {
            head.push_str(&format!("Content-Length: {}\r\n", data.len()));
        }
        if !has("connection") {
            head.push_str("Connection: close\r\n");
        }
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(data.as_bytes());
    Some(raw)
}

/// Expands go-ftw's `{{ "x" | repeat N }}` template, which some tests use for large bodies.
fn expand_repeat(data: &str) -> String {
    let Some((before, rest)) = data.split_once("{{") else {
        return data.to_owned();
    };
    let Some((template, after)) = rest.split_once("}}") else {
        return data.to_owned();
    };
    let mut parts = template.split('|').map(str::trim);
    let (Some(quoted), Some(repeat)) = (parts.next(), parts.next()) else {
        return data.to_owned();
    };
    let unit = quoted.trim_matches('"');
    let count = repeat
        .strip_prefix("repeat")
        .and_then(|count| count.trim().parse::<usize>().ok());
    match count {
        Some(count) => format!("{before}{}{}", unit.repeat(count), expand_repeat(after)),
        None => data.to_owned(),
    }
}

fn load_cases(dir: &Path, family: &str) -> Vec<Case> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(family))
        .expect("read the family directory")
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();

    let mut cases = Vec::new();
    for file in files {
        let contents = std::fs::read_to_string(&file).expect("read a corpus file");
        let document: Value = serde_norway::from_str(&contents)
            .unwrap_or_else(|error| panic!("{} is not valid YAML: {error}", file.display()));
        let file_name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
        let tests = document.get("tests").and_then(Value::as_sequence);
        for test in tests.into_iter().flatten() {
            let id = test.get("test_id").and_then(text).unwrap_or_default();
            let stages = test.get("stages").and_then(Value::as_sequence);
            for stage in stages.into_iter().flatten() {
                let Some(raw) = stage.get("input").and_then(raw_request) else {
                    continue;
                };
                let output = stage.get("output");
                let log = output.and_then(|output| output.get("log"));
                cases.push(Case {
                    name: format!("{file_name}#{id}"),
                    raw,
                    attack: log.and_then(|log| log.get("expect_ids")).is_some(),
                    expected_status: output
                        .and_then(|output| output.get("status"))
                        .and_then(Value::as_u64)
                        .and_then(|status| u16::try_from(status).ok()),
                });
            }
        }
    }
    cases
}

/// Classifies how the edge handled one request.
fn classify(exchange: &RawExchange, forwarded: bool) -> String {
    if forwarded {
        return "forwarded".into();
    }
    let Some(status) = exchange.statuses().first().copied() else {
        return if exchange.closed {
            "closed without a response".into()
        } else {
            "no response within the timeout".into()
        };
    };
    // The agent's own errors carry a JSON reason; hyper's automatic parse errors have none.
    let reason = exchange
        .response
        .split_once("\"error\":\"")
        .and_then(|(_, rest)| rest.split('"').next())
        .unwrap_or("rejected by the HTTP parser");
    format!("{status} {reason}")
}

#[test]
fn crs_protocol_families_are_reported() {
    let Some(dir) = corpus_dir() else {
        println!("CRS corpus not found: set FIREWALL_CRS_CORPUS to run this replay");
        return;
    };
    let upstream = RecordingUpstream::start();
    let agent = EdgeAgent::start("crs-protocol", upstream.addr, |_| {});
    let mut unexpected = Vec::new();

    for family in FAMILIES {
        let cases = load_cases(&dir, family);
        assert!(!cases.is_empty(), "no cases in {family}");
        let mut outcomes: BTreeMap<String, (usize, usize)> = BTreeMap::new();

        for case in &cases {
            let before = upstream.requests().len();
            let exchange = send_raw(agent.addr, &case.raw, Duration::from_secs(3));
            let forwarded = upstream.requests().len() > before;
            let outcome = classify(&exchange, forwarded);

            let counts = outcomes.entry(outcome.clone()).or_default();
            if case.attack {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
            if outcome == "no response within the timeout" {
                unexpected.push(format!("{}: {outcome}", case.name));
            }
            if case.expected_status == Some(400) && !outcome.starts_with('4') {
                unexpected.push(format!(
                    "{}: CRS expects 400, the edge gave {outcome}",
                    case.name
                ));
            }
        }

        let refused: usize = outcomes
            .iter()
            .filter(|(outcome, _)| *outcome != "forwarded")
            .map(|(_, (attacks, benign))| attacks + benign)
            .sum();
        println!(
            "{family}: {} requests, {refused} refused by the HTTP edge",
            cases.len()
        );
        for (outcome, (attacks, benign)) in &outcomes {
            println!("  {outcome}: {attacks} labelled attacks, {benign} labelled benign");
        }
    }

    assert!(unexpected.is_empty(), "{}", unexpected.join("\n"));
}
