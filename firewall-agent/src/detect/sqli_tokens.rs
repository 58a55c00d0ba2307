//! The SQL tokenizer of the SQL injection detector. It splits a lowercased value into tokens
//! and reduces each to a one-letter class, as listed in the table in `sqli.rs`.

/// Maximum fingerprint length in tokens. Injections show in their first tokens, and the cap
/// bounds the work on long values.
pub(super) const MAX_TOKENS: usize = 16;

/// One token: its class and where its text lies in the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Token {
    /// One-letter class, such as `b's'` for a string.
    pub class: u8,
    /// Byte offset of the first byte of the token's text.
    pub start: usize,
    /// Byte offset one past the token's text.
    pub end: usize,
}

/// Reading of a backslash inside a quoted string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Escapes {
    /// MySQL's default: a backslash escapes the next byte, so `\'` does not close a string.
    Backslash,
    /// Standard SQL: a backslash is an ordinary character.
    Standard,
}

/// Tokenizes `value`. With `quote`, the value is read as if it continued a string (or, for a
/// backtick, a quoted identifier) opened by that quote.
pub(super) fn tokenize(value: &str, quote: Option<u8>, escapes: Escapes) -> Vec<Token> {
    let mut tokenizer = Tokenizer {
        bytes: value.as_bytes(),
        position: 0,
        tokens: Vec::with_capacity(MAX_TOKENS),
        escapes,
    };
    if let Some(quote) = quote {
        tokenizer.read_string(quote, 0, b's');
    }
    while tokenizer.tokens.len() < MAX_TOKENS * 2 && tokenizer.next_token() {}
    tokenizer.tokens
}

/// Folds a token list. Comments followed by more tokens are dropped, so an attacker's
/// `union/**/select` reads as `union select`. Adjacent strings and qualified names are merged,
/// and the length is capped at [`MAX_TOKENS`].
pub(super) fn fold(tokens: &[Token]) -> Vec<Token> {
    let mut folded: Vec<Token> = Vec::with_capacity(MAX_TOKENS);
    for (index, token) in tokens.iter().copied().enumerate() {
        let last = folded.last().map(|token| token.class);
        let is_last = index + 1 == tokens.len();
        match token.class {
            b'c' if !is_last => continue,
            b's' if last == Some(b's') => continue,
            b'n' if last == Some(b'.') => {
                folded.pop();
                continue;
            }
            _ => {}
        }
        folded.push(token);
        if folded.len() == MAX_TOKENS {
            break;
        }
    }
    folded
}

struct Tokenizer<'a> {
    bytes: &'a [u8],
    position: usize,
    tokens: Vec<Token>,
    escapes: Escapes,
}

impl Tokenizer<'_> {
    fn peek(&self, offset: usize) -> u8 {
        self.bytes.get(self.position + offset).copied().unwrap_or(0)
    }

    fn push(&mut self, class: u8, start: usize) {
        self.tokens.push(Token {
            class,
            start,
            end: self.position.min(self.bytes.len()),
        });
    }

    /// Reads one token and records its class. Returns `false` at the end of the input.
    fn next_token(&mut self) -> bool {
        while self.position < self.bytes.len() && self.bytes[self.position].is_ascii_whitespace() {
            self.position += 1;
        }
        if self.position >= self.bytes.len() {
            return false;
        }

        let start = self.position;
        let byte = self.peek(0);
        match byte {
            b'\'' | b'"' => {
                self.position += 1;
                self.read_string(byte, start, b's');
            }
            b'`' => {
                self.position += 1;
                self.read_string(byte, start, b'n');
            }
            b'0'..=b'9' => self.read_number(),
            b'.' if self.peek(1).is_ascii_digit() => self.read_number(),
            b'@' if self.peek(1) == b'@' || is_word_byte(self.peek(1)) => self.read_variable(),
            b'#' => self.read_line_comment(),
            b'-' if self.peek(1) == b'-' => self.read_line_comment(),
            b'/' if self.peek(1) == b'*' => self.read_block_comment(),
            b'(' | b')' | b',' | b';' | b'.' => {
                self.position += 1;
                self.push(byte, start);
            }
            b':' if self.peek(1) == b':' => self.read_cast(),
            b'&' if self.peek(1) == b'&' => {
                self.position += 2;
                self.push(b'&', start);
            }
            b'|' if self.peek(1) == b'|' => {
                self.position += 2;
                self.push(b'&', start);
            }
            b':' if self.peek(1) == b'=' => self.read_operator(),
            b'=' | b'<' | b'>' | b'!' | b'|' | b'&' | b'^' | b'~' | b'+' | b'-' | b'*' | b'/'
            | b'%' => self.read_operator(),
            _ if is_word_byte(byte) => self.read_word(),
            _ => {
                // Punctuation SQL has no use for, such as `?`, `{` or a lone `@`: skipped,
                // like spaces.
                self.position += 1;
            }
        }
        true
    }

    /// Reads a string whose opening quote was already consumed and records it as `class`. SQL
    /// doubles a quote to escape it, and MySQL also accepts a backslash inside `'` and `"`
    /// strings, but not inside a backtick-quoted identifier.
    fn read_string(&mut self, quote: u8, start: usize, class: u8) {
        while self.position < self.bytes.len() {
            let byte = self.bytes[self.position];
            if byte == b'\\' && quote != b'`' && self.escapes == Escapes::Backslash {
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
        self.push(class, start);
    }

    fn read_number(&mut self) {
        let start = self.position;
        if self.peek(0) == b'0' && matches!(self.peek(1), b'x' | b'b') {
            let hex = self.peek(1) == b'x';
            self.position += 2;
            while (hex && self.peek(0).is_ascii_hexdigit()) || matches!(self.peek(0), b'0' | b'1') {
                self.position += 1;
            }
        } else {
            while self.peek(0).is_ascii_digit() || self.peek(0) == b'.' {
                self.position += 1;
            }
            if self.peek(0) == b'e' {
                if self.peek(1).is_ascii_digit() || matches!(self.peek(1), b'-' | b'+') {
                    self.position += 2;
                    while self.peek(0).is_ascii_digit() {
                        self.position += 1;
                    }
                } else if self.bytes.get(self.position - 1) == Some(&b'.')
                    && !is_word_byte(self.peek(1))
                {
                    // MySQL reads `1.e` as a number, and only attacks write it: glued to a
                    // bracket or a name, it hides a keyword from word-based filters.
                    self.position += 1;
                    self.push(b'P', start);
                    return;
                }
            }
        }
        // `123abc` is an identifier in MySQL, not a number followed by a word.
        if is_word_byte(self.peek(0)) && !self.peek(0).is_ascii_digit() {
            self.position = start;
            self.read_word();
            return;
        }
        self.push(b'1', start);
    }

    fn read_variable(&mut self) {
        let start = self.position;
        self.position += 1;
        if self.peek(0) == b'@' {
            self.position += 1;
        }
        while is_word_byte(self.peek(0)) || self.peek(0) == b'.' {
            self.position += 1;
        }
        self.push(b'v', start);
    }

    fn read_line_comment(&mut self) {
        // `--` starts a comment only at the end of input or before a space or control byte in
        // MySQL. Other engines are less strict, so `--x` counts too, but `-` `-1` does not.
        if self.peek(0) == b'-' && self.peek(2).is_ascii_digit() {
            self.read_operator();
            return;
        }
        let start = self.position;
        while self.position < self.bytes.len() && self.bytes[self.position] != b'\n' {
            self.position += 1;
        }
        self.push(b'c', start);
    }

    fn read_block_comment(&mut self) {
        let start = self.position;
        self.position += 2;
        if self.peek(0) == b'!' {
            // A MySQL executable comment: its content runs as SQL, so it is tokenized.
            self.position += 1;
            while self.peek(0).is_ascii_digit() {
                self.position += 1;
            }
            self.push(b'X', start);
            return;
        }
        let hint_spaces = self.bytes[self.position..]
            .iter()
            .skip(1)
            .take_while(|byte| **byte == b' ')
            .count();
        if self.peek(0) == b'+' && self.peek(1 + hint_spaces).is_ascii_alphabetic() {
            // An optimizer hint, `/*+ index(t) */`, which Oracle and MySQL read inside a
            // statement. Only its opening is a token, so the words after it still count.
            self.position += 1;
            self.push(b'X', start);
            return;
        }
        while self.position < self.bytes.len() {
            if self.peek(0) == b'*' && self.peek(1) == b'/' {
                self.position += 2;
                break;
            }
            self.position += 1;
        }
        self.push(b'c', start);
    }

    /// Reads a PostgreSQL cast, `::` and a type name. `::` before any other word, as in a C++
    /// or Rust path, is skipped.
    fn read_cast(&mut self) {
        let start = self.position;
        self.position += 2;
        let name_start = self.position;
        while is_word_byte(self.peek(0)) {
            self.position += 1;
        }
        let name = std::str::from_utf8(&self.bytes[name_start..self.position]).unwrap_or("");
        if is_sql_type(name) {
            self.push(b'C', start);
        } else {
            self.position = name_start;
        }
    }

    fn read_operator(&mut self) {
        let start = self.position;
        let byte = self.peek(0);
        self.position += 1;
        if byte == b'*' && self.peek(0) == b'/' {
            // The end of an executable comment.
            self.position += 1;
            return;
        }
        if byte == b'~' && self.peek(0) != b'=' {
            // Bitwise NOT takes one operand, so `~x` is a value like `x`: `'a' ~x` is not a
            // comparison.
            return;
        }
        while matches!(
            self.peek(0),
            b'=' | b'<' | b'>' | b'!' | b'|' | b'&' | b'^' | b'~'
        ) {
            self.position += 1;
        }

        let text = &self.bytes[start..self.position];
        let comparison = text != b"!"
            && text.iter().all(|byte| matches!(byte, b'=' | b'<' | b'>' | b'!'))
            // `<b>` or `</p>` in prose is markup, not a comparison.
            && !(text == b"<" && (self.peek(0).is_ascii_alphabetic() || self.peek(0) == b'/'));
        self.push(if comparison { b'=' } else { b'o' }, start);
    }

    fn read_word(&mut self) {
        let start = self.position;
        while is_word_byte(self.peek(0)) {
            self.position += 1;
        }
        let word = std::str::from_utf8(&self.bytes[start..self.position]).unwrap_or("");
        if matches!(word, "x" | "b" | "n") && self.peek(0) == b'\'' {
            // A hex, bit or national string literal: x'41', b'01', n'text'.
            self.position += 1;
            self.read_string(b'\'', start, b's');
            return;
        }

        let class = classify_word(word);
        match class {
            b'B' | b'W' | b'U' => self.read_phrase(class, start),
            b'E' if matches!(word, "exec" | "execute") && self.skip_word("immediate") => {
                self.push(b'I', start);
            }
            // MySQL's `PROCEDURE ANALYSE(...)` ends a SELECT and takes error-based payloads
            // such as `extractvalue(...)` as its arguments. After an article it is prose:
            // "the procedure analyse (see below)".
            b'k' if word == "procedure" && self.skip_word("analyse") => {
                let after_article = self.tokens.last().is_some_and(|token| token.class == b'a');
                let call = self.next_significant() == b'(' && !after_article;
                let class = if call { b'T' } else { b'n' };
                self.push(class, start);
            }
            b'F' | b'T' => {
                let class = match self.next_significant() {
                    b'(' if self.peek(0) == b'(' || class == b'T' => class,
                    b'(' => b'f',
                    _ => b'n',
                };
                self.push(class, start);
            }
            b'o' if matches!(word, "div" | "mod" | "glob" | "regexp")
                && self.next_significant() == b'(' =>
            {
                // These are functions as well as operators, as in PostgreSQL's `div(7, 2)`.
                self.push(b'F', start);
            }
            b'n' if self.next_significant() == b'(' => self.push(b'f', start),
            _ => self.push(class, start),
        }
    }

    /// Reads the second word of `order by`, `group by`, `waitfor delay` and `union all`. Without
    /// it, `order`, `group` and `waitfor` are plain names.
    /// Moves past whitespace and `expected` when that word comes next, and returns whether it
    /// did. Otherwise the position is left as it was.
    fn skip_word(&mut self, expected: &str) -> bool {
        let saved = self.position;
        while self.peek(0).is_ascii_whitespace() {
            self.position += 1;
        }
        let word_start = self.position;
        while is_word_byte(self.peek(0)) {
            self.position += 1;
        }
        let found = word_start > saved && &self.bytes[word_start..self.position] == expected.as_bytes();
        if !found {
            self.position = saved;
        }
        found
    }

    fn read_phrase(&mut self, class: u8, start: usize) {
        let saved = self.position;
        // A `+` between `waitfor` and `delay` is a space that was encoded twice or sent in a
        // field that does not decode `+`, and no prose spells "waitfor" either way.
        while self.peek(0).is_ascii_whitespace() || (class == b'W' && self.peek(0) == b'+') {
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
                self.push(b'n', start);
                return;
            }
        }
        self.push(class, start);
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

/// Type names that follow a PostgreSQL `::` cast.
fn is_sql_type(name: &str) -> bool {
    matches!(
        name,
        "int"
            | "int2"
            | "int4"
            | "int8"
            | "integer"
            | "bigint"
            | "smallint"
            | "numeric"
            | "decimal"
            | "real"
            | "float"
            | "float4"
            | "float8"
            | "double"
            | "money"
            | "text"
            | "varchar"
            | "char"
            | "bpchar"
            | "name"
            | "bool"
            | "boolean"
            | "bytea"
            | "date"
            | "time"
            | "timestamp"
            | "timestamptz"
            | "interval"
            | "json"
            | "jsonb"
            | "xml"
            | "uuid"
            | "inet"
            | "oid"
            | "regclass"
            | "regproc"
    )
}

pub(super) fn classify_word(word: &str) -> u8 {
    if is_attack_only_name(word) {
        return b'P';
    }
    match word {
        "and" | "or" | "xor" => b'&',
        // English articles and determiners never stand in a column list or a table name, so
        // "select a plan from the menu" does not read as a statement.
        "a" | "an" | "the" | "your" | "my" | "our" | "their" | "his" | "her" | "its" | "this"
        | "that" | "these" | "those" | "some" | "any" | "each" | "every" | "no" => b'a',
        "not" | "like" | "ilike" | "rlike" | "regexp" | "glob" | "is" | "in" | "between"
        | "div" | "mod" | "sounds" | "collate" | "escape" | "notnull" | "isnull" => b'o',
        "select" | "insert" | "update" | "delete" | "drop" | "create" | "alter" | "truncate"
        | "exec" | "execute" | "declare" | "shutdown" | "grant" | "revoke" | "merge" => b'E',
        "union" => b'U',
        "as" => b'A',
        "order" | "group" => b'B',
        "waitfor" => b'W',
        "true" | "false" | "null" => b'1',
        "from" | "where" | "having" | "limit" | "offset" | "into" | "values" | "table"
        | "exists" | "case" | "when" | "then" | "else" | "end" | "distinct" | "procedure"
        | "join" | "top" | "set" => b'k',
        "sleep" | "benchmark" | "extractvalue" | "updatexml" | "randomblob" | "name_const" => b'T',
        "char" | "chr" | "concat" | "concat_ws" | "substring" | "substr" | "mid" | "ascii"
        | "ord" | "hex" | "unhex" | "version" | "user" | "current_user" | "database" | "schema"
        | "count" | "cast" | "convert" | "if" | "ifnull" | "nullif" | "coalesce" | "md5"
        | "sha1" | "length" | "group_concat" | "floor" | "rand" | "exp" | "row" | "iif" | "elt"
        | "make_set" | "json_extract" | "instr" | "locate" | "position" | "now" | "sysdate"
        | "system_user" | "session_user" | "load" | "lower" | "upper" | "db_name"
        | "schema_name" | "user_name" | "current_database" | "overlay" | "lo_import"
        | "lo_export" | "lo_get" | "pg_read_file" => b'F',
        _ => b'n',
    }
}

/// Names of procedures, functions and clauses that no value outside an attack mentions: MSSQL
/// extended and system procedures, file and network access, and blind time delays.
fn is_attack_only_name(word: &str) -> bool {
    matches!(
        word,
        "xp_cmdshell"
            | "xp_dirtree"
            | "xp_regread"
            | "xp_regwrite"
            | "xp_fileexist"
            | "xp_subdirs"
            | "xp_servicecontrol"
            | "xp_availablemedia"
            | "xp_makecab"
            | "xp_loginconfig"
            | "xp_enumgroups"
            | "xp_terminate_process"
            | "sp_executesql"
            | "sp_password"
            | "sp_oacreate"
            | "sp_oamethod"
            | "sp_makewebtask"
            | "sp_addextendedproc"
            | "sp_configure"
            | "openrowset"
            | "opendatasource"
            | "utl_http"
            | "utl_inaddr"
            | "utl_file"
            | "dbms_pipe"
            | "dbms_lock"
            | "dbms_ldap"
            | "dbms_xmlgen"
            | "pg_sleep"
            | "load_file"
            | "outfile"
            | "dumpfile"
            | "sys_eval"
            | "sys_exec"
    )
}
