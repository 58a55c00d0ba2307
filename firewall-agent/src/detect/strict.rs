//! The rules of paranoia levels 2 to 4: probes that look like ordinary values.
//!
//! Scanners send lone SQL names (`northwind`, `varchar`), integers just past a type's limit,
//! runs of punctuation, fragments that end in `OR`, and values wrapped in quotes, to see which
//! of them changes the application's response. Line breaks in the query and `data:` URLs of
//! text are probes too, but some APIs take them. Each of these also occurs in real traffic, so
//! the rules here run only when `[threat] paranoia_level` is set to their level or higher.
//! Higher levels flag more probes and more ordinary values. The figures per level are in
//! BENCHMARKS.md.

use super::normalise::Normalised;
use super::{FieldKind, Rule, rules};

/// Sample databases and `information_schema` columns that probes name.
const DATABASE_NAMES: [&str; 6] = [
    "northwind",
    "schema_name",
    "table_schema",
    "pg_toast",
    "sqlite_temp_master",
    "sysprocesses",
];

/// SQL string and binary type names that casts in injected queries carry.
const TYPE_NAMES: [&str; 6] = ["varchar", "nvarchar", "varchar2", "nvarchar2", "varbinary", "sql_variant"];

/// Integers one past, or at, the limits of 32- and 64-bit integers, signed and unsigned.
const INTEGER_BOUNDARIES: [&str; 12] = [
    "2147483647",
    "2147483648",
    "-2147483648",
    "-2147483649",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
];

/// ASCII characters that SQL and shells treat as operators, quotes or comments. The
/// typographic single quotes count too.
const ANOMALY_CHARACTERS: &[u8] = b"~!@#$%^&*()-+={}[]|:;\"'`<>";

/// Characters of URL syntax. An absolute URL contains many of them without any injection.
const URL_SYNTAX: &[u8] = b":/?#[]@!$&+=~-%;";

/// Boolean operators that a value split over two parameters ends with.
const TRAILING_OPERATORS: [&str; 5] = ["or", "and", "xor", "&&", "||"];

/// Runs the rules of levels 2 to `level` over one normalised value.
pub fn detect(value: &Normalised<'_>, kind: FieldKind, level: u8, hits: &mut Vec<Rule>) {
    if level < 2 {
        return;
    }
    let text: &str = &value.folded;
    let trimmed = text.trim();

    // A body without a form or JSON type is one value to the detectors, so the rules for single
    // parameters apply to it too.
    let parameter = matches!(kind, FieldKind::Query | FieldKind::Body | FieldKind::Cookie | FieldKind::RawBody);
    if contains_word(text, &DATABASE_NAMES) {
        hits.push(rules::SQLI_DATABASE_NAME);
    }
    if contains_word(text, &TYPE_NAMES) {
        hits.push(rules::SQLI_TYPE_NAME);
    }
    if parameter && INTEGER_BOUNDARIES.contains(&trimmed) {
        hits.push(rules::PROTOCOL_INTEGER_BOUNDARY);
    }
    if parameter && is_text_data_url(trimmed) {
        hits.push(rules::RFI_DATA_URL);
    }

    if let Some(limit) = character_limit(kind, level)
        && anomaly_characters(text) >= limit
    {
        hits.push(rules::SQLI_CHARACTER_ANOMALY);
    }
    if kind == FieldKind::Query && text.contains(['\r', '\n']) {
        hits.push(rules::PROTOCOL_LINE_BREAK);
    }
    if level < 3 || !parameter {
        return;
    }

    if ends_with_operator(text) {
        hits.push(rules::SQLI_TRAILING_OPERATOR);
    }

    if trimmed.starts_with(['\'', '`']) || trimmed.ends_with(['\'', '`']) {
        hits.push(rules::SQLI_EDGE_QUOTE);
    }
}

/// Returns how many operator and quote characters one value of `kind` may contain at `level`
/// before [`rules::SQLI_CHARACTER_ANOMALY`] matches, or `None` where the rule does not run.
///
/// Session cookies are Base64 with `-`, `_` and `=`, so cookies get a higher limit and only
/// from level 3. At level 4 a date or a UUID reaches the limit of parameters. Whole bodies of
/// text are not counted: prose contains many such characters.
pub fn character_limit(kind: FieldKind, level: u8) -> Option<usize> {
    match (kind, level) {
        (FieldKind::Query | FieldKind::Body, 2) => Some(12),
        (FieldKind::Query | FieldKind::Body, 3) => Some(6),
        (FieldKind::Cookie, 3) => Some(8),
        (FieldKind::Query | FieldKind::Body | FieldKind::Cookie, 4..) => Some(3),
        _ => None,
    }
}

/// Counts the operator and quote characters of `text`. In an absolute `http` or `https` URL
/// without whitespace, such as a callback address, the characters of URL syntax do not count,
/// but quotes, brackets, pipes and the others still do.
fn anomaly_characters(text: &str) -> usize {
    let url = (text.starts_with("http://") || text.starts_with("https://"))
        && !text.bytes().any(|byte| byte.is_ascii_whitespace());
    let ascii = text
        .bytes()
        .filter(|byte| ANOMALY_CHARACTERS.contains(byte) && !(url && URL_SYNTAX.contains(byte)))
        .count();
    let typographic = if text.is_ascii() {
        0
    } else {
        text.chars().filter(|c| matches!(c, '\u{2018}' | '\u{2019}')).count()
    };
    ascii + typographic
}

/// Returns whether `text` contains one of `words` with no letter, digit or underscore on either
/// side.
fn contains_word(text: &str, words: &[&str]) -> bool {
    words.iter().any(|word| {
        text.match_indices(word).any(|(start, _)| {
            let before = text[..start].bytes().next_back();
            let after = text[start + word.len()..].bytes().next();
            !before.is_some_and(is_word_byte) && !after.is_some_and(is_word_byte)
        })
    })
}

fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// Returns whether `text` is a `data:` URL with a text media type, or none (which means
/// `text/plain`), or written as `data://`, the form PHP's stream wrapper takes.
fn is_text_data_url(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("data:") else {
        return false;
    };
    rest.starts_with("//")
        || rest.starts_with("text/")
        || rest.starts_with(',')
        || rest.starts_with(";base64,")
        || rest.starts_with("application/x-httpd-php")
}

/// Returns whether `text` ends with whitespace after a boolean operator that follows other
/// text and whitespace, as `/3 or ` does.
fn ends_with_operator(text: &str) -> bool {
    let trimmed = text.trim_end();
    if trimmed.len() == text.len() {
        return false;
    }
    TRAILING_OPERATORS.iter().any(|operator| {
        trimmed.strip_suffix(operator).is_some_and(|rest| {
            rest.ends_with(char::is_whitespace) && !rest.trim().is_empty()
        })
    })
}
