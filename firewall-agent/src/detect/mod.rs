//! Per-request threat detection: normalisation, detectors and the anomaly score.
//!
//! A request is split into fields (path, query keys and values, cookies, selected headers, every
//! non-standard header and the keys and values of form, multipart and JSON bodies). Each field is normalised, then every
//! detector runs on it. A hit is a [`Finding`] with a rule id, a family, a severity and the
//! field's name. Severities carry weights in the manner of the OWASP Core Rule Set (critical 5,
//! error 4, warning 3, notice 2), and the request's anomaly score is the sum of the weights of
//! the distinct rules that matched.
//!
//! `[threat] paranoia_level` adds the rules of `strict.rs`, which catch probes that look like
//! ordinary values.
//!
//! NOTE: `cargo xtask eval crs` writes the detection figures to BENCHMARKS.md. At the default
//! paranoia level, SQL injection is still under the 95% goal on the OWASP CRS regression attack
//! tests (about 92%; about 96% from level 3), and about 10% of the corpus's non-attack tests are
//! flagged. Nearly all of those carry attack payloads (shell commands, SQL, PHP calls, metadata
//! addresses) that one CRS rule is only tested not to match.
//!
//! NOTE: in `cargo xtask bench threats` on a 2-core machine, the stage adds about 50 to 75 µs
//! at p50 and 60 to 80 µs at p99 to a 4 KB JSON body whose orders repeat their values. When
//! every value differs it adds about 110 to 135 µs at p50 and 190 to 210 µs at p99, around the
//! 200 µs goal, and far more under other load. The added p99 is the difference of two
//! tails, so it varies from run to run more than the p50 does. Splitting and inspecting such a
//! body, about 220 fields of which about 100 distinct values, takes about 0.81 million
//! instructions (callgrind over `threat_bench --inspect-distinct 200`). No single detector
//! dominates. The SQL detector takes about a quarter of them, the signature scan a fifth (its
//! anchor search alone a twelfth) and the command splitter a seventh. The JSON walk and
//! normalisation take a tenth each and the XSS checks a twelfth, so the cost still grows with
//! the number of distinct values.

mod byte_set;
pub mod config;
mod fields;
mod json_fields;
pub mod rules;
pub mod normalise;
mod php;
mod protocol;
mod shell;
mod signatures;
mod sqli;
mod sqli_tokens;
mod strict;
mod xss;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod injection_tests;
#[cfg(test)]
mod fast_path_tests;
#[cfg(test)]
mod php_tests;
#[cfg(test)]
mod json_fields_tests;
#[cfg(test)]
mod strict_tests;
#[cfg(test)]
mod protocol_tests;

use std::collections::HashMap;
use std::fmt;

pub use config::{RouteThreatConfig, ThreatConfig, ThreatMode, ThreatPolicy, Verdict};
pub use fields::{Field, FieldKind, RequestFields, RequestParts, extract_fields};
use fields::MAX_FIELDS;
use byte_set::ByteSet;
use normalise::{FieldEncoding, Normalised, normalise};

/// Attack family of a finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// SQL injection.
    Sqli,
    /// Cross-site scripting.
    Xss,
    /// Path traversal and local file inclusion.
    Lfi,
    /// Remote file inclusion and server-side request forgery.
    Rfi,
    /// OS command injection.
    Rce,
    /// Server-side template injection and other generic code injection.
    Ssti,
    /// PHP code injection.
    Php,
    /// Java code injection and gadget markers.
    Java,
    /// Serialized objects that unsafe deserializers turn into code.
    Deserialization,
    /// Protocol anomalies: overlong UTF-8, NUL bytes, header injection.
    Protocol,
    /// XML entity declarations (XXE): external entities that read files or URLs, and entities
    /// that expand exponentially.
    Xxe,
}

impl Family {
    /// Label used in config, events and metrics.
    pub const fn label(self) -> &'static str {
        match self {
            Family::Sqli => "sqli",
            Family::Xss => "xss",
            Family::Lfi => "lfi",
            Family::Rfi => "rfi",
            Family::Rce => "rce",
            Family::Ssti => "ssti",
            Family::Php => "php",
            Family::Java => "java",
            Family::Deserialization => "deserialization",
            Family::Protocol => "protocol",
            Family::Xxe => "xxe",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Severity of a finding, weighted as the OWASP Core Rule Set weights its anomaly scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// Weight 2.
    Notice,
    /// Weight 3.
    Warning,
    /// Weight 4.
    Error,
    /// Weight 5: enough on its own to reach the default request threshold.
    Critical,
}

impl Severity {
    /// Weight added to the anomaly score.
    pub const fn weight(self) -> u32 {
        match self {
            Severity::Notice => 2,
            Severity::Warning => 3,
            Severity::Error => 4,
            Severity::Critical => 5,
        }
    }

    /// Label used in events.
    pub const fn label(self) -> &'static str {
        match self {
            Severity::Notice => "notice",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
}

/// A detection rule: its id (stable, used in config exclusions and events), family and
/// severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Stable identifier, such as `sqli-union`, named in config.
    pub id: &'static str,
    /// Stable number, carried by security events.
    pub number: u32,
    /// Attack family.
    pub family: Family,
    /// Severity.
    pub severity: Severity,
    /// Lowest paranoia level at which the rule runs, from 1 (always) to [`MAX_PARANOIA_LEVEL`].
    pub level: u8,
}

/// One detector hit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The rule that matched.
    pub rule: Rule,
    /// Name of the field it matched in, such as `query:id` or `json:user.name`.
    pub field: String,
    /// The normalised field value, truncated to [`EXCERPT_CHARS`] characters. It is not
    /// redacted here: callers redact before writing it anywhere.
    pub excerpt: String,
}

/// Highest `[threat] paranoia_level`.
pub const MAX_PARANOIA_LEVEL: u8 = 4;

/// Maximum excerpt length kept in a finding, in characters.
pub const EXCERPT_CHARS: usize = 80;

/// Most findings kept per request. A request with more is an attack either way, and the cap
/// bounds the work of writing events.
pub const MAX_FINDINGS: usize = 32;

/// Compiles every detector's patterns now. Otherwise the first request that needs them pays
/// for it: about 60 ms for the first request after the agent started.
pub fn compile_patterns() {
    shell::compile_patterns();
    signatures::compile_patterns();
    sqli::compile_patterns();
    xss::compile_patterns();
}

/// Returns whether every detector's patterns are compiled.
pub fn patterns_compiled() -> bool {
    shell::patterns_compiled()
        && signatures::patterns_compiled()
        && sqli::patterns_compiled()
        && xss::patterns_compiled()
}

/// Runs every detector over one normalised value and collects the rules that matched.
pub fn detect_value(value: &Normalised<'_>, kind: FieldKind, hits: &mut Vec<Rule>) {
    signatures::detect_anomalies(value, hits);
    // No detector matches a value of digits alone, such as an id or a quantity.
    if value.folded.bytes().all(|byte| byte.is_ascii_digit()) {
        return;
    }
    let bytes = ByteSet::of(&value.folded);
    sqli::detect(&value.folded, &bytes, kind, hits);
    xss::detect(&value.folded, &bytes, hits);
    signatures::detect(value, &bytes, kind, hits);
    protocol::detect(&value.folded, &bytes, kind, hits);
}

/// Normalises `raw` and runs every detector over it.
pub fn inspect_value(raw: &[u8], encoding: FieldEncoding, kind: FieldKind) -> Vec<Rule> {
    let value = normalise(raw, encoding);
    let mut hits = Vec::new();
    detect_value(&value, kind, &mut hits);
    hits.sort_by_key(|rule| rule.id);
    hits.dedup_by_key(|rule| rule.id);
    hits
}

/// Inspects every field of a request with the rules of paranoia level 1.
pub fn inspect_fields(fields: &RequestFields<'_>) -> Vec<Finding> {
    inspect_fields_at(fields, 1)
}

/// Inspects every field of a request with the rules of paranoia levels 1 to `level` and returns
/// the findings, at most [`MAX_FINDINGS`], one per rule and field.
///
/// The rules a field matches depend only on its raw bytes, encoding and kind, so a value that
/// occurs in several fields is inspected once. Arrays of JSON objects repeat the same keys, and
/// often the same values, in every element.
pub fn inspect_fields_at(fields: &RequestFields<'_>, level: u8) -> Vec<Finding> {
    let mut findings: Vec<Finding> = Vec::new();
    if fields.overflowed() {
        findings.push(Finding {
            rule: rules::PROTOCOL_TOO_MANY_FIELDS,
            field: "request".to_owned(),
            excerpt: format!("more than {MAX_FIELDS} fields"),
        });
    }
    if let Some(media_type) = fields.hidden_media_type() {
        findings.push(Finding {
            rule: rules::PROTOCOL_HIDDEN_MEDIA_TYPE,
            field: "header:content-type".to_owned(),
            excerpt: media_type.to_owned(),
        });
    }
    if let Some(charset) = fields.unexpected_charset() {
        findings.push(Finding {
            rule: rules::PROTOCOL_CHARSET,
            field: "header:content-type".to_owned(),
            excerpt: charset.to_owned(),
        });
    }
    let mut inspected = InspectedValues::with_capacity(fields.len());
    for field in fields.iter() {
        let value = inspected.get_or_inspect(field, level);
        if value.rules.is_empty() {
            continue;
        }
        let name = fields.name(field);
        for rule in &value.rules {
            let duplicate = findings
                .iter()
                .any(|finding| finding.rule.id == rule.id && finding.field == name);
            if duplicate {
                continue;
            }
            if findings.len() == MAX_FINDINGS {
                return findings;
            }
            findings.push(Finding {
                rule: *rule,
                field: name.clone().into_owned(),
                excerpt: value.excerpt.clone(),
            });
        }
    }
    findings
}

/// Maximum number of fields whose repeated values are found by comparing each value with the
/// earlier ones. A request with more fields, such as a large JSON body, uses a hash table,
/// whose fixed cost per request is larger than a few comparisons.
const MAX_FIELDS_COMPARED: usize = 16;

/// Key of a value's inspection: raw bytes, encoding and kind, which together decide the rules
/// it matches.
type InspectionKey<'f> = (&'f [u8], FieldEncoding, FieldKind);

/// The inspected values of one request, by [`InspectionKey`].
enum InspectedValues<'f> {
    Few(Vec<(InspectionKey<'f>, InspectedValue)>),
    Many(HashMap<InspectionKey<'f>, InspectedValue, foldhash::fast::RandomState>),
}

impl<'f> InspectedValues<'f> {
    fn with_capacity(fields: usize) -> Self {
        if fields <= MAX_FIELDS_COMPARED {
            Self::Few(Vec::with_capacity(fields))
        } else {
            Self::Many(HashMap::with_capacity_and_hasher(fields, foldhash::fast::RandomState::default()))
        }
    }

    /// Returns the inspection of `field`'s value, inspecting it when no earlier field had it.
    fn get_or_inspect(&mut self, field: &'f Field<'_>, level: u8) -> &InspectedValue {
        let key = (field.raw.as_ref(), field.encoding, field.kind);
        let inspect = || InspectedValue::new(&field.raw, field.encoding, field.kind, level);
        match self {
            Self::Few(values) => {
                let index = match values.iter().position(|(known, _)| *known == key) {
                    Some(index) => index,
                    None => {
                        values.push((key, inspect()));
                        values.len() - 1
                    }
                };
                &values[index].1
            }
            Self::Many(values) => values.entry(key).or_insert_with(inspect),
        }
    }
}

/// The rules one raw value matched, in the order the detectors reported them, and its excerpt.
struct InspectedValue {
    rules: Vec<Rule>,
    /// The first [`EXCERPT_CHARS`] characters of the normalised value, or empty when no rule
    /// matched.
    excerpt: String,
}

impl InspectedValue {
    fn new(raw: &[u8], encoding: FieldEncoding, kind: FieldKind, level: u8) -> Self {
        let value = normalise(raw, encoding);
        let mut rules = Vec::new();
        detect_value(&value, kind, &mut rules);
        strict::detect(&value, kind, level, &mut rules);
        let excerpt = if rules.is_empty() {
            String::new()
        } else {
            value.folded.chars().take(EXCERPT_CHARS).collect()
        };
        Self { rules, excerpt }
    }
}

/// Sums the anomaly score of `findings`: the weight of each distinct rule once, however many
/// fields it matched in.
pub fn anomaly_score<'a>(findings: impl IntoIterator<Item = &'a Finding>) -> u32 {
    let mut seen: Vec<&'static str> = Vec::new();
    let mut score = 0;
    for finding in findings {
        if !seen.contains(&finding.rule.id) {
            seen.push(finding.rule.id);
            score += finding.rule.severity.weight();
        }
    }
    score
}
