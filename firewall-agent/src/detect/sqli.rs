//! SQL injection detection by tokenizing, in the manner of libinjection.
//!
//! The value is split into SQL tokens, and each token is reduced to a one-letter class. The
//! string of classes (the fingerprint) is what the rules match: `1 OR 1=1` and `'x' or 'a'='a`
//! both become a value, a logical operator and a comparison, whatever the spelling, spacing,
//! comments or case. Because an injected value usually sits inside a quoted SQL string, the
//! value is also tokenized as if a `'`, `"` or backtick came before it, so the attacker's
//! closing quote starts the fingerprint with a string token. A path is also read from the start
//! of each segment, and a value that is itself a `key=value&...` list from the start of each
//! embedded value, because an injection there starts after a `/` or an `=`.
//!
//! Classes:
//!
//! | class | tokens |
//! | --- | --- |
//! | `s` | a quoted string |
//! | `1` | a number, `true`, `false`, `null` |
//! | `n` | an identifier or bare word |
//! | `k` | a keyword such as `from`, `where`, `having`, `limit` |
//! | `A` | `as`, which names a column in `) AS x FROM` |
//! | `a` | an English article or determiner such as `the`, which SQL never has |
//! | `E` | a statement keyword such as `select`, `insert`, `drop`, `exec` |
//! | `U` | `union` (with `all` or `distinct`) |
//! | `B` | `order by`, `group by` |
//! | `f` | a function: a name followed by `(` |
//! | `F` | a known SQL function directly followed by `(`, such as `user(` or `concat(` |
//! | `T` | a time-based or XML error function followed by `(`: `sleep`, `benchmark`, ... |
//! | `P` | a name only attacks use: `xp_cmdshell`, `pg_sleep`, `load_file`, `outfile`, `1.e` |
//! | `C` | a PostgreSQL cast to a type: `::int`, `::text` |
//! | `W` | `waitfor delay` or `waitfor time` |
//! | `&` | `and`, `or`, `xor`, `&&`, `||` |
//! | `=` | a comparison: `=`, `<>`, `!=`, `<=>`, `<`, ... |
//! | `o` | any other operator: `like`, `in`, `between`, `+`, `-`, `<` before a tag name, ... |
//! | `v` | a variable: `@name`, `@@version` |
//! | `c` | a comment: `--`, `#`, `/* */` |
//! | `X` | a MySQL executable comment `/*!` or an optimizer hint `/*+name` |
//! | `I` | `execute immediate` or `exec immediate`, Oracle's dynamic SQL |
//! | `(` `)` `,` `;` `.` | themselves |
//!
//! Four marks replace or precede the first class of a fingerprint. `_` marks a value that
//! starts with its own quoted string, and `q` a backtick identifier closed by the attacker. `b`
//! marks a quote that closes an empty string, as probes send, and `Q` a backtick that closes
//! an empty identifier.
//!
//! NOTE: at the default paranoia level about one in twelve of the OWASP CRS 942 attack tests
//! still pass (`cargo xtask eval crs`). Most are single names (`northwind`, `nvarchar`,
//! `schema_name`) or the number `4294967296`, runs of punctuation such as `!@#$%^&*()`, or lone
//! quotes and JSON fragments such as `":"65`. Others are fragments that end in AND/OR, such as
//! `/3 or `, and prose with a quote before "or", such as `your parents' or yours?`. Their token
//! shapes also occur in ordinary values (names, keys, sizes, passwords, prose), so the rules for
//! many of them run only at higher paranoia levels (`strict.rs`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::LazyLock;

use regex::RegexSet;

use super::byte_set::ByteSet;
use super::sqli_tokens::{self, Escapes, Token};
use super::{FieldKind, Rule, rules};

/// Maximum length tokenized, in bytes. A longer payload is still tokenized from its start.
const MAX_SQL_BYTES: usize = 4096;

/// Maximum number of path segments read from their start.
const MAX_PATH_SEGMENTS: usize = 16;

/// Maximum number of embedded `key=value` pairs read from the start of their value.
const MAX_EMBEDDED_VALUES: usize = 16;

/// Maximum number of `/* */` comments checked for a keyword glued to them.
const MAX_GLUED_COMMENTS: usize = 8;

/// The quotes a value is assumed to continue, besides none.
const CONTEXT_QUOTES: [u8; 3] = [b'\'', b'"', b'`'];

/// Fingerprint patterns, each with the rule it reports. `^` anchors at the first token, which in
/// a quoted context is the string the attacker closed.
pub(super) const FINGERPRINT_PATTERNS: &[(&str, Rule)] = &[
    // A value closed by the attacker, then AND/OR and a comparison, a call or a subquery.
    (r"^s\)*&\(*[s1vfFTP]", rules::SQLI_BOOLEAN),
    (
        r"^1\)*&\(*(?:[vfFTP]|[1s](?:[o=c;&)]))",
        rules::SQLI_BOOLEAN,
    ),
    (r"^s\)*&\(*n[o=c)1(]", rules::SQLI_BOOLEAN),
    (r"^1\)*&\(*n[=c)1(]", rules::SQLI_BOOLEAN),
    (r"^[s1]\)*&\(*E", rules::SQLI_SUBQUERY),
    (r"^[s1]\)*&\(*c", rules::SQLI_COMMENT_BREAK),
    // A value that starts with a path-like word and ends in AND/OR and an opened bracket:
    // `/3 and(`.
    (r"^o[1n]&\($", rules::SQLI_BOOLEAN),
    // A closed value, then AND/OR, an operator such as `not` or `glob` and a value, and a
    // comment that cuts off the rest: `' or (glob 1)--`.
    (r"^s\)*&\(*o\(*[1s]\)*c$", rules::SQLI_COMMENT_BREAK),
    // A value that starts with AND/OR and a comparison, as appended to a WHERE clause, or
    // with AND/OR and a single value, possibly cut off by a comment.
    (r"^&\(*[s1vna]\)*=", rules::SQLI_BOOLEAN),
    (r"^&\(*[1v]\)*c?$", rules::SQLI_BOOLEAN),
    (r"^&\(*s\)*n?=", rules::SQLI_BOOLEAN),
    // UNION SELECT anywhere, with brackets or ALL between, or UNION after a closed value.
    (r"U\(*E", rules::SQLI_UNION),
    (r"^[s1]\)*U\(*[1sfFv]", rules::SQLI_UNION),
    (r"^s\)*U(?:$|[a1(Ec;])", rules::SQLI_UNION),
    (r"^b\)*U[^s]*$", rules::SQLI_UNION),
    // A statement with its clauses: SELECT ... FROM, DELETE FROM x, DROP TABLE x, DROP x;.
    (r"E[n1vfFo=(),.B]{1,8}[kAB]", rules::SQLI_STATEMENT),
    (r"E[kA]n", rules::SQLI_STATEMENT),
    (r"E\(*[fFT]\(", rules::SQLI_STATEMENT),
    (r"E(?:[1nv],)+[fFT]\(", rules::SQLI_STATEMENT),
    (r"^E\(+$", rules::SQLI_STATEMENT),
    (r"^E\(*n;", rules::SQLI_STATEMENT),
    // Dynamic SQL run from a string or a variable: `EXECUTE IMMEDIATE 'DROP ...'`.
    (r"I\(*[sv]", rules::SQLI_STATEMENT),
    // A statement keyword right after a quote that closes an empty string, or numbers and
    // operators alone after one, as probes send to see whether the quote broke the query.
    // A later string means the value is quoted text, such as `'update-ca-certificates'`.
    (r"^b\)*E(?:$|[na1(v])[^s]*$", rules::SQLI_STATEMENT),
    (r"^b\)*Eo$", rules::SQLI_STATEMENT),
    (r"^b\)*[1o=,][1o=,()&]*$", rules::SQLI_STRING_BREAK),
    // DECLARE @x, EXEC (@x, and SET @x after a separator.
    (r"^[;o=]*E\(*v", rules::SQLI_STATEMENT),
    (r"^[;o=]+k\(*v", rules::SQLI_STATEMENT),
    // The middle of a query: `) AS x FROM`, `) WHEN 1 THEN`, `CASE WHEN x THEN`, `HAVING 1=`,
    // `VALUES ('a', 'b'`, `FROM x WHERE y =`.
    (r"^[)1qQ]\)*A[sn1]k", rules::SQLI_STATEMENT),
    (r"^\)+k1k", rules::SQLI_STATEMENT),
    (r"^[sqQ]\)*[kA]$", rules::SQLI_STATEMENT),
    (r"^kk[1ns]k", rules::SQLI_STATEMENT),
    (r"^k\(*1[o=]", rules::SQLI_STATEMENT),
    (r"^k\(s,s", rules::SQLI_STATEMENT),
    (r"^n[o=]s,\(*1", rules::SQLI_STATEMENT),
    (r"^\)+[o=]\(+$", rules::SQLI_STATEMENT),
    (r"^B$", rules::SQLI_STATEMENT),
    (r"^k\(*n\)*B", rules::SQLI_STATEMENT),
    (r"^kn[kB]\(*(?:n[o=]|F\()", rules::SQLI_STATEMENT),
    (r"^knk$", rules::SQLI_STATEMENT),
    // A closed value, then a statement separator and a statement, or a statement alone after
    // a separator.
    (r"[s1n)];\(*E", rules::SQLI_STACKED_QUERY),
    (r"^;\(*E", rules::SQLI_STACKED_QUERY),
    (r"^s\)*;", rules::SQLI_STACKED_QUERY),
    // Time-based and file-reading functions and attack-only names, in any position.
    (r"T\(", rules::SQLI_FUNCTION),
    (r"W", rules::SQLI_FUNCTION),
    (r"P", rules::SQLI_FUNCTION),
    // A value that starts with a call of a known SQL function, or a clause keyword and one.
    (
        r"^k?\(*F\((?:$|[1svfF(]|n[,o=]|n\)[o=])",
        rules::SQLI_FUNCTION,
    ),
    // One word, then a known SQL function opened at the end: `selectect user(`.
    (r"^nF\($", rules::SQLI_FUNCTION),
    // A closed string, then an operator and a value, call or subquery.
    (r"^s\)*[o=]\(*[s1vfFTP]", rules::SQLI_STRING_BREAK),
    (r"^s\)*[o=]\(*E.", rules::SQLI_STRING_BREAK),
    (r"^s\)*[o=]+\(*n(?:[o=]\(*[1ns])?[c&;]", rules::SQLI_STRING_BREAK),
    (r"^s\)*[o=]+c", rules::SQLI_STRING_BREAK),
    // A closed string, then an operator and a clause keyword with a comparison, as in
    // `' * from = 1`, the tail of `select '' * from`.
    (r"^s\)*o\(*k=", rules::SQLI_STRING_BREAK),
    // A closed identifier, then a bare operator, an operator and a number, AND/OR and one
    // operand, or a final separator: `` "` * 123 ``, `` x`; ``. After an empty identifier
    // (`Q`) only a comparison counts, before a number or a name: `` `>65 ``, `` `>6fbdec2 ``,
    // but not `` `!1 ``, where `!` is a NOT.
    (r"^[qQ]\)*[o=]$", rules::SQLI_STRING_BREAK),
    (r"^q\)*[o=]\(*1", rules::SQLI_STRING_BREAK),
    (r"^Q\)*=\(*[1n]", rules::SQLI_STRING_BREAK),
    (r"^[qQ]\)*&\(*[1n]$", rules::SQLI_STRING_BREAK),
    (r"^[qQ]\)*;$", rules::SQLI_STRING_BREAK),
    (r"^1\)*[o=]\(*s\)*&", rules::SQLI_STRING_BREAK),
    (r"^_s\)*[o=]{1,2}\(*[s1]$", rules::SQLI_STRING_BREAK),
    (r"^1\)*[o=]\(*(?:E.|[TfF]\()", rules::SQLI_STRING_BREAK),
    // `3' ' 1`: a number, a quote that closes its string, a new string and a number.
    (r"^1s1$", rules::SQLI_STRING_BREAK),
    // A chain of strings joined with `.`, as `'.'.'.'.'` probes for PHP or Oracle-style
    // concatenation.
    (r"^_s(?:\.s){3}", rules::SQLI_STRING_BREAK),
    // A value cast to a PostgreSQL type.
    (r"[n1s)]C", rules::SQLI_STRING_BREAK),
    // A closed string or number, then a comment that cuts off the rest of the query.
    (r"^[s1]\)*c$", rules::SQLI_COMMENT_BREAK),
    // A subquery inside brackets, or after an operator.
    (r"\(E[1vfFTo=*]", rules::SQLI_SUBQUERY),
    (r"[o=]\(+E", rules::SQLI_SUBQUERY),
    (r"^\(+E$", rules::SQLI_SUBQUERY),
    (r"^[s1]\)*B1", rules::SQLI_STRING_BREAK),
];

/// [`FINGERPRINT_PATTERNS`] compiled into one set, so that a fingerprint is matched in one pass.
/// A unit test checks that every pattern compiles, so the empty fallback never ships.
static FINGERPRINT_RULES: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new(FINGERPRINT_PATTERNS.iter().map(|(pattern, _)| *pattern))
        .unwrap_or_else(|_| RegexSet::empty())
});

/// Compiles the fingerprint patterns.
pub(super) fn compile_patterns() {
    LazyLock::force(&FINGERPRINT_RULES);
}

/// Returns whether the fingerprint patterns are compiled.
pub(super) fn patterns_compiled() -> bool {
    LazyLock::get(&FINGERPRINT_RULES).is_some()
}

/// Looks for SQL injection in a normalised, lowercased value.
pub fn detect(value: &str, bytes: &ByteSet, kind: FieldKind, hits: &mut Vec<Rule>) {
    if is_plain_name_path(value) || !might_be_sql(value, bytes) {
        return;
    }
    detect_tokens(value, bytes, kind, hits);
}

/// Returns whether `value` is made only of plain names and numbers between slashes, such as
/// `page`, `/items` or `/api/v2/users/42`, and has no `unionselect` in it. No rule matches such
/// a value: it tokenizes to names, numbers and the operator `/`, a fingerprint that no pattern
/// accepts, and none of the checks outside the patterns applies. A property test checks this
/// against [`detect_tokens`].
///
/// A name counts as plain only when [`sqli_tokens::classify_word`] reads it as a name, so a
/// keyword such as `select`, `union` or `order` still goes through the tokenizer.
pub(super) fn is_plain_name_path(value: &str) -> bool {
    // A longer value is cut before it is tokenized, which may leave a keyword at its end.
    value.len() <= MAX_SQL_BYTES && value.as_bytes().split(|byte| *byte == b'/').all(is_plain_piece)
}

/// Returns whether a piece of [`is_plain_name_path`] is empty, a number or a plain name.
fn is_plain_piece(piece: &[u8]) -> bool {
    const GLUED_UNION: &[u8] = b"unionselect";
    match piece.first() {
        None => true,
        Some(b'0'..=b'9') => piece.iter().all(u8::is_ascii_digit),
        Some(b'a'..=b'z' | b'_') => {
            piece.iter().all(|byte| matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'_'))
                && sqli_tokens::classify_word(piece) == b'n'
                // [`detect_tokens`] reports `unionselect` glued into one name on its own.
                && !piece.windows(GLUED_UNION.len()).any(|window| window == GLUED_UNION)
        }
        Some(_) => false,
    }
}

/// Runs every SQL check on a value that [`might_be_sql`] let through.
pub(super) fn detect_tokens(value: &str, bytes: &ByteSet, kind: FieldKind, hits: &mut Vec<Rule>) {
    let value = truncate(value, MAX_SQL_BYTES);
    // Typographic quotes start with the byte 0xE2 in UTF-8, and a combining acute accent with 0xCC.
    let value = if bytes.contains_any(&[0xE2, 0xCC]) {
        fold_typographic_quotes(value)
    } else {
        std::borrow::Cow::Borrowed(value)
    };
    // A byte set that contains every quote of each text tokenized below, because replacing
    // `+` with a space and taking a part of the value add no quote.
    let folded_bytes;
    let bytes = match &value {
        std::borrow::Cow::Borrowed(_) => bytes,
        std::borrow::Cow::Owned(folded) => {
            folded_bytes = ByteSet::of(folded);
            &folded_bytes
        }
    };
    detect_sql(&value, bytes, hits);
    // A form value decoded twice by the application turns `%2B` into `+` and then into a
    // space, so `from+x+where` reaches the database as `from x where`. A path segment is
    // read that way too by routers that decode `+` as a space.
    let spaced = (bytes.contains(b'+') && value.contains('+') && !value.contains(char::is_whitespace))
        .then(|| value.replace('+', " "));
    if let Some(spaced) = &spaced {
        detect_sql(spaced, bytes, hits);
    }
    if bytes.contains_all(b"unionselct") && value.contains("unionselect") {
        // `unionselect` glued into one word reaches some databases as `union select` once a
        // filter strips the comment or the character that split it.
        push(hits, rules::SQLI_UNION);
    }
    if bytes.contains_all(b"/*") && value.contains("/*") && has_glued_comment(&value) {
        push(hits, rules::SQLI_COMMENT_OBFUSCATION);
    }

    if kind == FieldKind::Path {
        detect_path_segments(&value, bytes, hits);
        if let Some(spaced) = &spaced {
            detect_path_segments(spaced, bytes, hits);
        }
    }
    if bytes.contains(b'=') {
        for embedded in embedded_form_values(&value) {
            detect_sql(embedded, bytes, hits);
        }
    }
}

/// Matches the fingerprints of a path read from the start of each segment. `bytes` contains
/// every quote byte of `path`.
fn detect_path_segments(path: &str, bytes: &ByteSet, hits: &mut Vec<Rule>) {
    let segment_starts = path
        .match_indices('/')
        .map(|(index, _)| index + 1)
        .filter(|start| *start < path.len())
        .take(MAX_PATH_SEGMENTS);
    for start in segment_starts {
        detect_sql(&path[start..], bytes, hits);
    }
}

/// Returns the embedded values of a value that is itself a form-encoded list such as
/// `key=value&key=value`, as a URL parameter or a body sent without a content type is. Each
/// runs to the end of `value`, because an `&` inside it may be the SQL operator `&&`. A value
/// that does not start with `key=`, such as prose or code with an `=` in it, yields nothing.
fn embedded_form_values(value: &str) -> impl Iterator<Item = &str> {
    let is_form = value
        .split_once('=')
        .is_some_and(|(first_key, _)| is_form_key(first_key));
    let pair_starts = std::iter::once(0)
        .chain(value.match_indices('&').map(|(index, _)| index + 1))
        .filter(move |_| is_form);
    pair_starts
        .take(MAX_EMBEDDED_VALUES)
        .filter_map(move |start| {
            let pair = &value[start..];
            let (key, embedded) = pair.split_once('=')?;
            (is_form_key(key) && !embedded.is_empty()).then_some(embedded)
        })
}

/// Returns whether `key` is made of the bytes of a form key: letters, digits, `_`, `-`, `.`
/// and brackets.
fn is_form_key(key: &str) -> bool {
    !key.is_empty()
        && key.bytes().all(|byte| {
            byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.' | b'[' | b']')
        })
}

/// Tokenizes `value` as written and as if it continued each kind of quote it contains, and
/// matches the fingerprints. `bytes` contains every quote byte of `value`.
fn detect_sql(value: &str, bytes: &ByteSet, hits: &mut Vec<Rule>) {
    let raw_tokens = sqli_tokens::tokenize(value, None, Escapes::Backslash);
    let plain = sqli_tokens::fold(&raw_tokens);
    let mut fingerprint = classes(&plain);
    if is_lone_operator(value, &plain) || is_literal_comparison(value, &plain) {
        push(hits, rules::SQLI_BOOLEAN);
    }
    if is_blank_string_list(value, &plain) || is_mixed_quote_probe(value) {
        push(hits, rules::SQLI_STRING_BREAK);
    }
    if starts_with_union_all(value, &plain) {
        push(hits, rules::SQLI_UNION);
    }
    if is_bare_statement(value, &plain, &fingerprint) {
        push(hits, rules::SQLI_STATEMENT);
    }
    if ends_in_open_like(value, &plain) {
        push(hits, rules::SQLI_STRING_BREAK);
    }
    if starts_with_boolean(&fingerprint) && has_inner_block_comment(value, &raw_tokens) {
        push(hits, rules::SQLI_COMMENT_OBFUSCATION);
    }
    if fingerprint.starts_with('s') {
        // A value that starts with its own quoted string closes nothing: rules anchored on a
        // closed string only apply when the value is read as if inside one.
        fingerprint.insert(0, '_');
    }
    match_fingerprint(&fingerprint, hits);

    for quote in CONTEXT_QUOTES {
        if bytes.contains(quote) && value.as_bytes().contains(&quote) {
            detect_quoted(value, quote, hits);
        }
    }
}

/// Matches the fingerprints of `value` read as if it continued a string or identifier opened
/// by `quote`.
fn detect_quoted(value: &str, quote: u8, hits: &mut Vec<Rule>) {
    let tokens = sqli_tokens::fold(&sqli_tokens::tokenize(
        value,
        Some(quote),
        Escapes::Backslash,
    ));
    let mut fingerprint = classes(&tokens);
    if quote == b'`' && fingerprint.starts_with('s') {
        // A closed identifier is a name, not a value, so only the rules that allow one (`q`,
        // or `Q` when the value starts with the closing backtick) apply to it.
        let mark = if closes_empty_string(value, &tokens, quote) { "Q" } else { "q" };
        fingerprint.replace_range(..1, mark);
    }
    match_fingerprint(&fingerprint, hits);
    if quote == b'`' {
        return;
    }

    if closes_empty_string(value, &tokens, quote) {
        // A value that starts with the closing quote is a probe rather than prose, so the
        // rules anchored on an empty closed string (`b`) apply too.
        fingerprint.replace_range(..1, "b");
        match_fingerprint(&fingerprint, hits);
    }
    if value.contains('\\') {
        // Standard SQL, PostgreSQL and SQLite do not escape a quote with a backslash, so `\'`
        // there closes the string.
        let tokens = sqli_tokens::fold(&sqli_tokens::tokenize(
            value,
            Some(quote),
            Escapes::Standard,
        ));
        let fingerprint = classes(&tokens);
        if fingerprint == "s&" && escapes_closing_quote(value, &tokens, quote) {
            // `\'and`: the backslash meant to escape the quote leaves it closing the string,
            // and AND waits for the rest of the condition.
            push(hits, rules::SQLI_BOOLEAN);
        }
        match_fingerprint(&fingerprint, hits);
    }
}

/// Returns whether the first token of a quoted context ends in a backslash and the quote.
fn escapes_closing_quote(value: &str, tokens: &[Token], quote: u8) -> bool {
    tokens.first().is_some_and(|first| {
        value
            .as_bytes()
            .get(..first.end)
            .is_some_and(|text| text.ends_with(&[b'\\', quote]))
    })
}

/// Returns whether the first token of a quoted context contains only the closing quote and
/// spaces.
fn closes_empty_string(value: &str, tokens: &[Token], quote: u8) -> bool {
    tokens.first().is_some_and(|first| {
        value.get(..first.end).is_some_and(|text| {
            text.bytes()
                .all(|byte| byte == quote || byte.is_ascii_whitespace())
        })
    })
}

fn match_fingerprint(fingerprint: &str, hits: &mut Vec<Rule>) {
    if fingerprint.contains('X') {
        push(hits, rules::SQLI_EXECUTABLE_COMMENT);
    }
    FINGERPRINT_CACHE.with_borrow_mut(|cache| {
        if let Some(matched) = cache.get(fingerprint) {
            for rule in matched {
                push(hits, *rule);
            }
            return;
        }
        let matched = fingerprint_rules(fingerprint);
        for rule in &matched {
            push(hits, *rule);
        }
        if cache.len() >= MAX_CACHED_FINGERPRINTS {
            cache.clear();
        }
        cache.insert(fingerprint.to_owned(), matched);
    });
}

/// Maximum number of fingerprints whose rules each thread keeps. The cache is emptied when
/// full, so its size stays bounded under any input.
const MAX_CACHED_FINGERPRINTS: usize = 4096;

thread_local! {
    /// The rules of the fingerprints met recently on this thread, in pattern order. A
    /// fingerprint is at most a few dozen bytes, and looking it up costs less than matching
    /// the pattern set.
    static FINGERPRINT_CACHE: RefCell<HashMap<String, Vec<Rule>, foldhash::fast::RandomState>> =
        RefCell::new(HashMap::default());
}

/// Returns the rules of the fingerprint patterns that match `fingerprint`, in pattern order.
pub(super) fn fingerprint_rules(fingerprint: &str) -> Vec<Rule> {
    FINGERPRINT_RULES
        .matches(fingerprint)
        .iter()
        .filter_map(|index| FINGERPRINT_PATTERNS.get(index).map(|(_, rule)| *rule))
        .collect()
}

/// Returns the rules [`match_fingerprint`] adds for `fingerprint`, through the cache.
#[cfg(test)]
pub(super) fn cached_fingerprint_rules(fingerprint: &str) -> Vec<Rule> {
    let mut hits = Vec::new();
    match_fingerprint(fingerprint, &mut hits);
    hits.retain(|rule| *rule != rules::SQLI_EXECUTABLE_COMMENT);
    hits
}

/// Returns whether the whole value is one SQL comparison or logical operator, alone, before
/// `NULL` or before a bracketed list: `<=>`, `!=`, `||`, `xor`, `is null`, `in (1,2)`, or XOR
/// before a number or a variable: `xor 5-`. Probes
/// send these to learn whether the value lands in a query. One-character operators such as
/// `-` or `=` and the words `and`, `or`, `not` and `like` are left out, because they stand
/// alone in ordinary values.
fn is_lone_operator(value: &str, tokens: &[Token]) -> bool {
    let Some(first) = tokens.first() else {
        return false;
    };
    if !matches!(first.class, b'o' | b'=' | b'&') {
        return false;
    }
    let text = value.get(first.start..first.end).unwrap_or("");
    let probe = matches!(
        text,
        "xor"
            | "regexp"
            | "rlike"
            | "is"
            | "in"
            | "like"
            | "<=>"
            | "!="
            | "<>"
            | "<="
            | ">="
            | "=="
            | "<<"
            | ">>"
            | "||"
            | "&&"
            | "->"
            | "->>"
            | ":="
            | "!<"
            | "!>"
    );
    if !probe {
        return false;
    }

    let rest: String = classes(&tokens[1..]);
    let operand = tokens
        .get(1)
        .and_then(|token| value.get(token.start..token.end))
        .unwrap_or("");
    match rest.as_str() {
        "" => !matches!(text, "is" | "in" | "like"),
        "1" => operand == "null",
        _ if text == "xor" => rest.starts_with(['1', 'v']),
        _ => text == "in" && is_number_list(&rest),
    }
}

/// Returns whether the whole value is a stored procedure run by name or a variable set:
/// `exec name`, `execute name`, `exec master.` or `set @name ...`. MSSQL runs the procedure
/// named after EXEC without brackets, so the call needs no other SQL syntax. Other statement
/// keywords before one word, such as `update profile` or `delete account`, are ordinary
/// values and stay clean, and so does an adverb in `-ly` after EXECUTE, as in
/// `execute immediately`.
///
/// NOTE: a two-word command such as `execute backup` is flagged too; the tokenizer cannot
/// tell a procedure name from an English noun.
fn is_bare_statement(value: &str, tokens: &[Token], fingerprint: &str) -> bool {
    let text = |index: usize| {
        tokens
            .get(index)
            .and_then(|token| value.get(token.start..token.end))
            .unwrap_or("")
    };
    match fingerprint {
        "En" | "En." => matches!(text(0), "exec" | "execute") && !text(1).ends_with("ly"),
        _ => fingerprint.starts_with("kv") && text(0) == "set",
    }
}

/// Returns whether the value is two or three quote characters of at least two kinds, such as
/// `"'`: a probe for which quote the query uses.
fn is_mixed_quote_probe(value: &str) -> bool {
    let value = value.trim();
    let bytes = value.as_bytes();
    (2..=3).contains(&bytes.len())
        && bytes.iter().all(|byte| matches!(byte, b'\'' | b'"' | b'`'))
        && bytes.iter().any(|byte| *byte != bytes[0])
}

/// Returns whether the value starts with a number or string and `UNION ALL` or
/// `UNION DISTINCT`, as in `2 union all`. A bare `union` after a number is left alone,
/// because it is also an address such as `1 Union Square`.
fn starts_with_union_all(value: &str, tokens: &[Token]) -> bool {
    let [first, union, ..] = tokens else {
        return false;
    };
    let text = value.get(union.start..union.end).unwrap_or("");
    matches!(first.class, b'1' | b's')
        && union.class == b'U'
        && (text.ends_with("all") || text.ends_with("distinct"))
}

/// Returns whether the value is a comma-separated list of at least two items, strings that
/// hold only spaces and perhaps one number at the end: `'', '', '', 13` or `' ', 10`. Probes
/// send such lists to count the columns a UNION needs.
fn is_blank_string_list(value: &str, tokens: &[Token]) -> bool {
    let is_blank_string = |token: &Token| {
        token.class == b's'
            && value
                .get(token.start..token.end)
                .is_some_and(|text| text.bytes().all(|byte| matches!(byte, b'\'' | b'"' | b' ')))
    };
    if tokens.len() < 3 || tokens[0].class != b's' {
        return false;
    }
    // Items sit at even indexes and commas at odd ones. A list cut off by the token limit
    // ends in a comma.
    let last_item = (tokens.len() - 1) / 2 * 2;
    tokens.iter().enumerate().all(|(index, token)| {
        if index % 2 == 1 {
            token.class == b','
        } else if index == last_item {
            is_blank_string(token) || token.class == b'1'
        } else {
            is_blank_string(token)
        }
    })
}

/// Returns whether the value is a name, LIKE and an opened quote alone, `name LIKE '`: the
/// start of a pattern whose quote the rest of the query closes.
fn ends_in_open_like(value: &str, tokens: &[Token]) -> bool {
    let text = |token: &Token| value.get(token.start..token.end).unwrap_or("");
    matches!(
        tokens,
        [name, operator, quote]
            if name.class == b'n'
                && text(operator) == "like"
                && matches!(text(quote), "'" | "\"")
    )
}

/// Returns whether a fingerprint starts with a value, closing brackets and AND/OR.
fn starts_with_boolean(fingerprint: &str) -> bool {
    fingerprint
        .strip_prefix(['s', '1'])
        .is_some_and(|rest| rest.trim_start_matches(')').starts_with('&'))
}

/// Returns whether a `/* */` comment is between two tokens, as in `9999 or /* x */ true`.
/// Prose and ordinary values seldom contain one, so it marks an attempt to split what a
/// filter matches.
fn has_inner_block_comment(value: &str, tokens: &[Token]) -> bool {
    let Some((_, inner)) = tokens.split_last() else {
        return false;
    };
    inner.iter().skip(1).any(|token| {
        token.class == b'c' && value.get(token.start..token.end).is_some_and(|text| text.starts_with("/*"))
    })
}

/// Returns whether `tokens` contain a comparison that is always true because both sides are
/// the same literal, such as `'1'='1'` or `1=1`, at the start or after a comma, a bracket or
/// AND/OR. A value that is only an inequality of two different numbers, such as `1!=2` or
/// `1 is not 2`, counts too, because probes send it to see whether the value reaches a WHERE clause.
fn is_literal_comparison(value: &str, tokens: &[Token]) -> bool {
    let text = |token: &Token| value.get(token.start..token.end).unwrap_or("");
    let literal = |token: &Token| matches!(token.class, b's' | b'1');
    if let [left, operator, right] = tokens
        && left.class == b'1'
        && right.class == b'1'
        && matches!(text(operator), "!=" | "<>")
    {
        return text(left) != text(right);
    }
    if let [left, is, not, right] = tokens
        && left.class == b'1'
        && right.class == b'1'
        && text(is) == "is"
        && text(not) == "not"
    {
        return text(left) != text(right);
    }
    tokens.windows(3).enumerate().any(|(index, window)| {
        let [left, operator, right] = window else {
            return false;
        };
        let after_separator =
            index == 0 || matches!(tokens[index - 1].class, b',' | b'(' | b'&');
        let unquoted = |token: &Token| text(token).trim_matches(['\'', '"']);
        after_separator
            && literal(left)
            && literal(right)
            && matches!(text(operator), "=" | "==")
            && !unquoted(left).is_empty()
            && unquoted(left) == unquoted(right)
    })
}

/// Returns whether a `/* */` comment replaces a space next to a SQL keyword, as in
/// `drop/*x*/table` or `union/**/select`, or splits one, as in `sel/**/ect`. Filters that
/// look for keywords between spaces miss both.
fn has_glued_comment(value: &str) -> bool {
    let mut search_from = 0;
    for _ in 0..MAX_GLUED_COMMENTS {
        let Some(open) = value[search_from..].find("/*").map(|offset| search_from + offset) else {
            return false;
        };
        let Some(close) = value[open + 2..].find("*/").map(|offset| open + 2 + offset + 2) else {
            return false;
        };
        search_from = close;
        let before = word_ending_at(value, open);
        let after = word_starting_at(value, close);
        if before.is_empty() || after.is_empty() {
            continue;
        }
        if is_glue_keyword(before) || is_glue_keyword(after) || is_glue_keyword(&format!("{before}{after}")) {
            return true;
        }
    }
    false
}

/// Returns whether `word` is a statement keyword, UNION, AND/OR or a clause keyword that
/// attackers glue comments to.
fn is_glue_keyword(word: &str) -> bool {
    matches!(sqli_tokens::classify_word(word.as_bytes()), b'E' | b'U' | b'&')
        || matches!(word, "from" | "where" | "having" | "into" | "limit" | "table")
}

fn word_ending_at(value: &str, end: usize) -> &str {
    let length = value.as_bytes()[..end]
        .iter()
        .rev()
        .take_while(|byte| is_sql_word_byte(**byte))
        .count();
    &value[end - length..end]
}

fn word_starting_at(value: &str, start: usize) -> &str {
    let length = value.as_bytes()[start..]
        .iter()
        .take_while(|byte| is_sql_word_byte(**byte))
        .count();
    &value[start..start + length]
}

/// ASCII bytes only, so that a word's ends always fall on character boundaries.
fn is_sql_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// Returns whether `classes` is a bracketed list of numbers or strings, `(1,1,...)`, possibly
/// without the closing bracket.
fn is_number_list(classes: &str) -> bool {
    let Some(inner) = classes.strip_prefix('(') else {
        return false;
    };
    let (inner, closed) = match inner.strip_suffix(')') {
        Some(inner) => (inner, true),
        None => (inner, false),
    };
    // A list cut off by the token limit ends in a comma.
    let inner = if closed { inner } else { inner.strip_suffix(',').unwrap_or(inner) };
    !inner.is_empty()
        && inner
            .split(',')
            .all(|item| matches!(item, "1" | "o1" | "s"))
}

fn classes(tokens: &[Token]) -> String {
    // One byte more than the classes leaves room for the mark that `detect_sql` may insert.
    let mut fingerprint = String::with_capacity(tokens.len() + 1);
    fingerprint.extend(tokens.iter().map(|token| char::from(token.class)));
    fingerprint
}

fn push(hits: &mut Vec<Rule>, rule: Rule) {
    if !hits.contains(&rule) {
        hits.push(rule);
    }
}

/// Cheap precheck. An injection needs a quote, a bracket, a comment, an operator or a
/// separator, or it is a single word such as `xp_dirtree` or `xor`, or a phrase with `and`,
/// `or`, `union`, `by` or `null`. Prose with none of these skips the tokenizer. `bytes` are
/// the bytes of `value`, so a phrase is searched only when the value has all of its letters.
pub(super) fn might_be_sql(value: &str, bytes: &ByteSet) -> bool {
    let has = |phrase: &str| bytes.contains_all(phrase.as_bytes()) && value.contains(phrase);
    bytes.contains_any(b"'\"();#-/=<>|&@`!:^~*%,_")
        || !value.trim().contains(char::is_whitespace)
        || has(" or ")
        || has(" and ")
        || has("union")
        || has(" by")
        || has("null")
        || has(" when ")
        || has(" is not ")
        || value.starts_with("exec")
        || value.starts_with("or ")
        || value.starts_with("and ")
        || value.trim_start().starts_with("xor")
}

/// Replaces typographic single quotes and the acute accent `´` with `'`. Payloads use them in
/// place of `'` in case a character set conversion on the way to the database turns them into
/// one. NFKC has already turned `´` into a space and a combining acute accent (U+0301).
fn fold_typographic_quotes(value: &str) -> std::borrow::Cow<'_, str> {
    const SPACED_ACUTE: &str = " \u{301}";
    if value.contains(['\u{2018}', '\u{2019}']) || value.contains(SPACED_ACUTE) {
        std::borrow::Cow::Owned(value.replace(['\u{2018}', '\u{2019}'], "'").replace(SPACED_ACUTE, "'"))
    } else {
        std::borrow::Cow::Borrowed(value)
    }
}

fn truncate(value: &str, max_bytes: usize) -> &str {
    if value.len() <= max_bytes {
        return value;
    }
    let mut end = max_bytes;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// Tokenizes `value` and returns its fingerprint. With `quote`, the value is read as if it
/// continued a string opened by that quote.
#[cfg(test)]
pub fn fingerprint(value: &str, quote: Option<char>) -> String {
    let quote = quote.and_then(|quote| u8::try_from(quote).ok());
    classes(&sqli_tokens::fold(&sqli_tokens::tokenize(
        value,
        quote,
        Escapes::Backslash,
    )))
}

#[cfg(test)]
#[path = "sqli_tests.rs"]
mod tests;
