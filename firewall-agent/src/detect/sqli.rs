//! SQL injection detection by tokenizing, in the manner of libinjection.
//!
//! The value is split into SQL tokens, and each token is reduced to a one-letter class. The
//! string of classes (the fingerprint) is what the rules match: `1 OR 1=1` and `'x' or 'a'='a`
//! both become a value, a logical operator and a comparison, whatever the spelling, spacing,
//! comments or case. Because an injected value usually sits inside a quoted SQL string, the
//! value is also tokenized as if a `'` or `"` came before it, so the attacker's closing quote
//! starts the fingerprint with a string token.
//!
//! Classes:
//!
//! | class | tokens |
//! | --- | --- |
//! | `s` | a quoted string |
//! | `1` | a number, `true`, `false`, `null` |
//! | `n` | an identifier or bare word |
//! | `k` | a keyword such as `from`, `where`, `having`, `limit` |
//! | `a` | an English article or determiner such as `the`, which SQL never has |
//! | `E` | a statement keyword such as `select`, `insert`, `drop`, `exec` |
//! | `U` | `union` (with `all` or `distinct`) |
//! | `B` | `order by`, `group by` |
//! | `f` | a function: a name followed by `(` |
//! | `T` | a time-based or file-reading function: `sleep`, `benchmark`, `load_file`, ... |
//! | `W` | `waitfor delay` or `waitfor time` |
//! | `&` | `and`, `or`, `xor`, `&&`, `||` |
//! | `o` | an operator: `=`, `<>`, `like`, `in`, `between`, `+`, ... |
//! | `v` | a variable: `@name`, `@@version` |
//! | `c` | a comment: `--`, `#`, `/* */` |
//! | `X` | a MySQL executable comment `/*!` |
//! | `(` `)` `,` `;` `.` | themselves |

use std::sync::LazyLock;

use regex::RegexSet;

use super::{FieldKind, Rule, rules};

/// Maximum fingerprint length in tokens. Injections show in their first tokens, and the cap
/// bounds the work on long values.
const MAX_TOKENS: usize = 16;

/// Maximum length tokenized, in bytes. A longer payload is still tokenized from its start.
const MAX_SQL_BYTES: usize = 4096;


/// Fingerprint patterns, each with the rule it reports. `^` anchors at the first token, which in
/// a quoted context is the string the attacker closed.
pub(super) const FINGERPRINT_PATTERNS: &[(&str, Rule)] = &[
    // A value closed by the attacker, then AND/OR and a comparison, a call or a subquery.
    (r"^s\)*&\(*[s1vfT]", rules::SQLI_BOOLEAN),
    (r"^1\)*&\(*(?:[vfT]|[1s](?:o|c|;|&|\)))", rules::SQLI_BOOLEAN),
    (r"^[s1]\)*&\(*n(?:o|c|\)|1|\()", rules::SQLI_BOOLEAN),
    (r"^[s1]\)*&\(*E", rules::SQLI_SUBQUERY),
    // A value that starts with AND/OR and a comparison, as appended to a WHERE clause.
    (r"^&\(*[s1v]o", rules::SQLI_BOOLEAN),
    // UNION SELECT anywhere, with brackets or ALL between.
    (r"U\(*E", rules::SQLI_UNION),
    (r"^[s1]\)*U\(*[1sfv]", rules::SQLI_UNION),
    // A statement with its clauses: SELECT ... FROM, DELETE FROM x, DROP TABLE x.
    (r"E[n1vfo(),.B]{1,8}[kB]", rules::SQLI_STATEMENT),
    (r"Ekn", rules::SQLI_STATEMENT),
    (r"E\(*[fT]\(", rules::SQLI_STATEMENT),
    // A closed value, then a statement separator and a statement.
    (r"[s1n)];\(*E", rules::SQLI_STACKED_QUERY),
    (r"^s\)*;", rules::SQLI_STACKED_QUERY),
    // Time-based and file-reading functions, in any position.
    (r"T\(", rules::SQLI_FUNCTION),
    (r"W", rules::SQLI_FUNCTION),
    // A closed string, then an operator and a value, call or subquery.
    (r"^s\)*o\(*[s1vfT]", rules::SQLI_STRING_BREAK),
    (r"^s\)*o\(*E.", rules::SQLI_STRING_BREAK),
    (r"^s\)*o+\(*n[c&;]", rules::SQLI_STRING_BREAK),
    (r"^1\)*o\(*(?:E.|[Tf]\()", rules::SQLI_STRING_BREAK),
    // A closed string or number, then a comment that cuts off the rest of the query.
    (r"^[s1]\)*c$", rules::SQLI_COMMENT_BREAK),
    // A subquery inside brackets.
    (r"\(E[1vfTo*]", rules::SQLI_SUBQUERY),
    (r"^[s1]\)*B1", rules::SQLI_STRING_BREAK),
];

/// [`FINGERPRINT_PATTERNS`] compiled into one set, so that a fingerprint is matched in one pass.
/// A unit test checks that every pattern compiles, so the empty fallback never ships.
static FINGERPRINT_RULES: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new(FINGERPRINT_PATTERNS.iter().map(|(pattern, _)| *pattern))
        .unwrap_or_else(|_| RegexSet::empty())
});

/// Looks for SQL injection in a normalised, lowercased value.
pub fn detect(value: &str, _kind: FieldKind, hits: &mut Vec<Rule>) {
    if !might_be_sql(value) {
        return;
    }
    let value = truncate(value, MAX_SQL_BYTES);

    for quote in [None, Some('\''), Some('"')] {
        if let Some(quote) = quote
            && !value.contains(quote)
        {
            continue;
        }
        let mut fingerprint = fingerprint(value, quote);
        if quote.is_none() && fingerprint.starts_with('s') {
            // A value that starts with its own quoted string closes nothing: rules anchored
            // on a closed string only apply when the value is read as if inside one.
            fingerprint.insert(0, '_');
        }
        if fingerprint.contains('X') {
            push(hits, rules::SQLI_EXECUTABLE_COMMENT);
        }
        for index in FINGERPRINT_RULES.matches(&fingerprint).iter() {
            if let Some((_, rule)) = FINGERPRINT_PATTERNS.get(index) {
                push(hits, *rule);
            }
        }
    }
}

fn push(hits: &mut Vec<Rule>, rule: Rule) {
    if !hits.contains(&rule) {
        hits.push(rule);
    }
}

/// Cheap precheck: an injection needs a quote, a bracket, a comment, an operator or a
/// separator. Plain words and numbers skip the tokenizer.
fn might_be_sql(value: &str) -> bool {
    value.bytes().any(|byte| {
        matches!(
            byte,
            b'\'' | b'"' | b'(' | b';' | b'#' | b'-' | b'/' | b'=' | b'<' | b'>' | b'|' | b'&' | b'@' | b'`'
        )
    }) || value.contains(" or ")
        || value.contains(" and ")
        || value.contains("union")
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
pub fn fingerprint(value: &str, quote: Option<char>) -> String {
    let mut tokenizer = Tokenizer {
        bytes: value.as_bytes(),
        position: 0,
        classes: Vec::with_capacity(MAX_TOKENS),
    };
    if let Some(quote) = quote {
        tokenizer.read_string(quote as u8);
    }
    while tokenizer.classes.len() < MAX_TOKENS * 2 && tokenizer.next_token() {}
    fold(&tokenizer.classes)
}

/// Folds the raw class list: drops comments that are followed by more tokens (an attacker's
/// `union/**/select` reads as `union select`), merges adjacent strings and qualified names,
/// and caps the length.
fn fold(classes: &[u8]) -> String {
    let mut folded: Vec<u8> = Vec::with_capacity(MAX_TOKENS);
    for (index, class) in classes.iter().copied().enumerate() {
        let last = folded.last().copied();
        let is_last = index + 1 == classes.len();
        match class {
            b'c' if !is_last => continue,
            b's' if last == Some(b's') => continue,
            b'n' if last == Some(b'.') => {
                folded.pop();
                continue;
            }
            _ => {}
        }
        folded.push(class);
        if folded.len() == MAX_TOKENS {
            break;
        }
    }
    String::from_utf8_lossy(&folded).into_owned()
}

struct Tokenizer<'a> {
    bytes: &'a [u8],
    position: usize,
    classes: Vec<u8>,
}

impl Tokenizer<'_> {
    fn peek(&self, offset: usize) -> u8 {
        self.bytes.get(self.position + offset).copied().unwrap_or(0)
    }

    /// Reads one token and records its class. Returns `false` at the end of the input.
    fn next_token(&mut self) -> bool {
        while self.position < self.bytes.len() && self.bytes[self.position].is_ascii_whitespace()
        {
            self.position += 1;
        }
        if self.position >= self.bytes.len() {
            return false;
        }

        let byte = self.peek(0);
        match byte {
            b'\'' | b'"' => {
                self.position += 1;
                self.read_string(byte);
            }
            b'`' => {
                self.position += 1;
                self.skip_until(b'`');
                self.classes.push(b'n');
            }
            b'0'..=b'9' => self.read_number(),
            b'.' if self.peek(1).is_ascii_digit() => self.read_number(),
            b'@' => self.read_variable(),
            b'#' => self.read_line_comment(),
            b'-' if self.peek(1) == b'-' => self.read_line_comment(),
            b'/' if self.peek(1) == b'*' => self.read_block_comment(),
            b'(' | b')' | b',' | b';' | b'.' => {
                self.position += 1;
                self.classes.push(byte);
            }
            b'&' if self.peek(1) == b'&' => {
                self.position += 2;
                self.classes.push(b'&');
            }
            b'|' if self.peek(1) == b'|' => {
                self.position += 2;
                self.classes.push(b'&');
            }
            b':' if self.peek(1) == b'=' => self.read_operator(),
            b'=' | b'<' | b'>' | b'!' | b'|' | b'&' | b'^' | b'~' | b'+' | b'-' | b'*' | b'/'
            | b'%' => self.read_operator(),
            _ if is_word_byte(byte) => self.read_word(),
            _ => {
                // Punctuation SQL has no use for, such as `?` or `{`: skipped, like spaces.
                self.position += 1;
            }
        }
        true
    }

    /// Reads a string whose opening quote was already consumed. SQL doubles a quote to escape
    /// it and MySQL also accepts a backslash.
    fn read_string(&mut self, quote: u8) {
        while self.position < self.bytes.len() {
            let byte = self.bytes[self.position];
            if byte == b'\\' {
                self.position += 2;
                continue;
            }
            self.position += 1;
            if byte == quote {
                if self.peek(0) == quote {
                    self.position += 1;
                    continue;
                }
                break;
            }
        }
        self.classes.push(b's');
    }

    fn skip_until(&mut self, end: u8) {
        while self.position < self.bytes.len() {
            let byte = self.bytes[self.position];
            self.position += 1;
            if byte == end {
                break;
            }
        }
    }

    fn read_number(&mut self) {
        let start = self.position;
        if self.peek(0) == b'0' && self.peek(1) == b'x' {
            self.position += 2;
            while self.peek(0).is_ascii_hexdigit() {
                self.position += 1;
            }
        } else {
            while self.peek(0).is_ascii_digit() || self.peek(0) == b'.' {
                self.position += 1;
            }
            if self.peek(0) == b'e' && (self.peek(1).is_ascii_digit() || self.peek(1) == b'-') {
                self.position += 2;
                while self.peek(0).is_ascii_digit() {
                    self.position += 1;
                }
            }
        }
        // `123abc` is an identifier in MySQL, not a number followed by a word.
        if is_word_byte(self.peek(0)) && !self.peek(0).is_ascii_digit() {
            self.position = start;
            self.read_word();
            return;
        }
        self.classes.push(b'1');
    }

    fn read_variable(&mut self) {
        self.position += 1;
        if self.peek(0) == b'@' {
            self.position += 1;
        }
        while is_word_byte(self.peek(0)) || self.peek(0) == b'.' {
            self.position += 1;
        }
        self.classes.push(b'v');
    }

    fn read_line_comment(&mut self) {
        // `--` starts a comment only at the end of input or before a space or control byte in
        // MySQL. Other engines are less strict, so `--x` counts too, but `-` `-1` does not.
        if self.peek(0) == b'-' && self.peek(2).is_ascii_digit() {
            self.read_operator();
            return;
        }
        self.skip_until(b'\n');
        self.classes.push(b'c');
    }

    fn read_block_comment(&mut self) {
        self.position += 2;
        if self.peek(0) == b'!' {
            // A MySQL executable comment: its content runs as SQL, so it is tokenized.
            self.position += 1;
            while self.peek(0).is_ascii_digit() {
                self.position += 1;
            }
            self.classes.push(b'X');
            return;
        }
        while self.position < self.bytes.len() {
            if self.peek(0) == b'*' && self.peek(1) == b'/' {
                self.position += 2;
                break;
            }
            self.position += 1;
        }
        self.classes.push(b'c');
    }

    fn read_operator(&mut self) {
        let byte = self.peek(0);
        self.position += 1;
        if byte == b'*' && self.peek(0) == b'/' {
            // The end of an executable comment.
            self.position += 1;
            return;
        }
        while matches!(self.peek(0), b'=' | b'<' | b'>' | b'!' | b'|' | b'&' | b'^' | b'~') {
            self.position += 1;
        }
        self.classes.push(b'o');
    }

    fn read_word(&mut self) {
        let start = self.position;
        while is_word_byte(self.peek(0)) {
            self.position += 1;
        }
        let word = std::str::from_utf8(&self.bytes[start..self.position]).unwrap_or("");
        let class = classify_word(word);

        match class {
            b'B' | b'W' | b'U' => {
                // `order by`, `waitfor delay`, `union all` take the next word with them.
                let saved = self.position;
                while self.peek(0).is_ascii_whitespace() {
                    self.position += 1;
                }
                let next_start = self.position;
                while is_word_byte(self.peek(0)) {
                    self.position += 1;
                }
                let next = std::str::from_utf8(&self.bytes[next_start..self.position]).unwrap_or("");
                let joined = match class {
                    b'B' => next == "by",
                    b'W' => next == "delay" || next == "time",
                    _ => next == "all" || next == "distinct",
                };
                if !joined {
                    self.position = saved;
                    if class != b'U' {
                        self.classes.push(b'n');
                        return;
                    }
                }
                self.classes.push(class);
            }
            b'f' | b'T' => {
                if self.next_significant() == b'(' {
                    self.classes.push(class);
                } else {
                    self.classes.push(b'n');
                }
            }
            b'n' if self.peek(0) == b'(' => self.classes.push(b'f'),
            _ => self.classes.push(class),
        }
    }

    /// Returns the next byte that is not a space or part of a comment, without consuming.
    fn next_significant(&self) -> u8 {
        let mut position = self.position;
        loop {
            match self.bytes.get(position) {
                Some(byte) if byte.is_ascii_whitespace() => position += 1,
                Some(b'/') if self.bytes.get(position + 1) == Some(&b'*') => {
                    position += 2;
                    while position < self.bytes.len()
                        && !(self.bytes[position] == b'*'
                            && self.bytes.get(position + 1) == Some(&b'/'))
                    {
                        position += 1;
                    }
                    position += 2;
                }
                Some(byte) => return *byte,
                None => return 0,
            }
        }
    }
}

fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'$' || byte >= 0x80
}

fn classify_word(word: &str) -> u8 {
    match word {
        "and" | "or" | "xor" => b'&',
        // English articles and determiners never stand in a column list or a table name, so
        // "select a plan from the menu" does not read as a statement.
        "a" | "an" | "the" | "your" | "my" | "our" | "their" | "his" | "her" | "its" | "this"
        | "that" | "these" | "those" | "some" | "any" | "each" | "every" | "no" => b'a',
        "not" | "like" | "rlike" | "regexp" | "is" | "in" | "between" | "div" | "mod"
        | "sounds" | "collate" | "escape" => b'o',
        "select" | "insert" | "update" | "delete" | "drop" | "create" | "alter" | "truncate"
        | "exec" | "execute" | "declare" | "shutdown" | "grant" | "revoke" | "merge" => b'E',
        "union" => b'U',
        "order" | "group" => b'B',
        "waitfor" => b'W',
        "true" | "false" | "null" => b'1',
        "from" | "where" | "having" | "limit" | "offset" | "into" | "values" | "table"
        | "exists" | "case" | "when" | "then" | "else" | "end" | "as" | "distinct" | "procedure"
        | "outfile" | "dumpfile" | "join" | "top" | "set" => b'k',
        "sleep" | "benchmark" | "pg_sleep" | "load_file" | "extractvalue" | "updatexml"
        | "xp_cmdshell" | "sp_executesql" | "dbms_pipe" | "utl_inaddr" | "utl_http"
        | "randomblob" | "name_const" | "dbms_lock" | "sys_eval" | "sys_exec" => b'T',
        "char" | "chr" | "concat" | "concat_ws" | "substring" | "substr" | "mid" | "ascii"
        | "ord" | "hex" | "unhex" | "version" | "user" | "current_user" | "database"
        | "schema" | "count" | "cast" | "convert" | "if" | "ifnull" | "nullif" | "coalesce"
        | "md5" | "sha1" | "length" | "group_concat" | "floor" | "rand" | "exp" | "row"
        | "iif" | "elt" | "make_set" | "json_extract" | "instr" | "locate" | "position"
        | "now" | "sysdate" | "system_user" | "session_user" | "load" | "lower" | "upper" => b'f',
        _ => b'n',
    }
}
