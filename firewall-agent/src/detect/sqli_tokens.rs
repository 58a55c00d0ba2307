//! The SQL tokenizer of the SQL injection detector. It splits a lowercased value into tokens
//! and reduces each to a one-letter class, as listed in the table in `sqli.rs`.

use smallvec::SmallVec;

/// Maximum fingerprint length in tokens. Injections show in their first tokens, and the cap
/// bounds the work on long values.
pub(super) const MAX_TOKENS: usize = 16;

/// Tokens of one value, kept on the stack. The tokenizer stops at twice [`MAX_TOKENS`], so they
/// fit, and heap vectors would cost every tokenized value two allocations.
pub(super) type Tokens = SmallVec<[Token; MAX_TOKENS * 2]>;

/// Tokens after [`fold`], which keeps at most [`MAX_TOKENS`] of them. The smaller inline
/// buffer halves the bytes copied when the list is returned.
pub(super) type FoldedTokens = SmallVec<[Token; MAX_TOKENS]>;

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
pub(super) fn tokenize(value: &str, quote: Option<u8>, escapes: Escapes) -> Tokens {
    let mut tokenizer = Tokenizer {
        bytes: value.as_bytes(),
        position: 0,
        tokens: Tokens::new(),
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
pub(super) fn fold(tokens: &[Token]) -> FoldedTokens {
    let mut folded = FoldedTokens::new();
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
    tokens: Tokens,
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
        if is_sql_type(&self.bytes[name_start..self.position]) {
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
        let word = &self.bytes[start..self.position];
        if matches!(word, b"x" | b"b" | b"n") && self.peek(0) == b'\'' {
            // A hex, bit or national string literal: x'41', b'01', n'text'.
            self.position += 1;
            self.read_string(b'\'', start, b's');
            return;
        }

        let class = classify_word(word);
        match class {
            b'B' | b'W' | b'U' => self.read_phrase(class, start),
            b'E' if matches!(word, b"exec" | b"execute") && self.skip_word("immediate") => {
                self.push(b'I', start);
            }
            // MySQL's `PROCEDURE ANALYSE(...)` ends a SELECT and takes error-based payloads
            // such as `extractvalue(...)` as its arguments. After an article it is prose:
            // "the procedure analyse (see below)".
            b'k' if word == b"procedure" && self.skip_word("analyse") => {
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
            b'o' if matches!(word, b"div" | b"mod" | b"glob" | b"regexp")
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
        let next = &self.bytes[next_start..self.position];
        let joined = match class {
            b'B' => next == b"by",
            b'W' => next == b"delay" || next == b"time",
            _ => next == b"all" || next == b"distinct",
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
    WORD_BYTES[usize::from(byte)]
}

/// The bytes of SQL words, by byte value: ASCII letters and digits, `_`, `$` and every byte of
/// a non-ASCII character. Word boundaries therefore fall on ASCII bytes, so a word is always
/// valid UTF-8.
static WORD_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let value = byte as u8;
        table[byte] = value.is_ascii_alphanumeric() || value == b'_' || value == b'$' || value >= 0x80;
        byte += 1;
    }
    table
};

/// Type names that follow a PostgreSQL `::` cast.
fn is_sql_type(name: &[u8]) -> bool {
    matches!(
        name,
        b"int"
            | b"int2"
            | b"int4"
            | b"int8"
            | b"integer"
            | b"bigint"
            | b"smallint"
            | b"numeric"
            | b"decimal"
            | b"real"
            | b"float"
            | b"float4"
            | b"float8"
            | b"double"
            | b"money"
            | b"text"
            | b"varchar"
            | b"char"
            | b"bpchar"
            | b"name"
            | b"bool"
            | b"boolean"
            | b"bytea"
            | b"date"
            | b"time"
            | b"timestamp"
            | b"timestamptz"
            | b"interval"
            | b"json"
            | b"jsonb"
            | b"xml"
            | b"uuid"
            | b"inet"
            | b"oid"
            | b"regclass"
            | b"regproc"
    )
}

pub(super) fn classify_word(word: &[u8]) -> u8 {
    if is_attack_only_name(word) {
        return b'P';
    }
    match word {
        b"and" | b"or" | b"xor" => b'&',
        // English articles and determiners never stand in a column list or a table name, so
        // "select a plan from the menu" does not read as a statement.
        b"a" | b"an" | b"the" | b"your" | b"my" | b"our" | b"their" | b"his" | b"her" | b"its" | b"this"
        | b"that" | b"these" | b"those" | b"some" | b"any" | b"each" | b"every" | b"no" => b'a',
        b"not" | b"like" | b"ilike" | b"rlike" | b"regexp" | b"glob" | b"is" | b"in" | b"between"
        | b"div" | b"mod" | b"sounds" | b"collate" | b"escape" | b"notnull" | b"isnull" => b'o',
        b"select" | b"insert" | b"update" | b"delete" | b"drop" | b"create" | b"alter" | b"truncate"
        | b"exec" | b"execute" | b"declare" | b"shutdown" | b"grant" | b"revoke" | b"merge" => b'E',
        b"union" => b'U',
        b"as" => b'A',
        b"order" | b"group" => b'B',
        b"waitfor" => b'W',
        b"true" | b"false" | b"null" => b'1',
        b"from" | b"where" | b"having" | b"limit" | b"offset" | b"into" | b"values" | b"table"
        | b"exists" | b"case" | b"when" | b"then" | b"else" | b"end" | b"distinct" | b"procedure"
        | b"join" | b"top" | b"set" => b'k',
        b"sleep" | b"benchmark" | b"extractvalue" | b"updatexml" | b"randomblob" | b"name_const" => b'T',
        b"char" | b"chr" | b"concat" | b"concat_ws" | b"substring" | b"substr" | b"mid" | b"ascii"
        | b"ord" | b"hex" | b"unhex" | b"version" | b"user" | b"current_user" | b"database" | b"schema"
        | b"count" | b"cast" | b"convert" | b"if" | b"ifnull" | b"nullif" | b"coalesce" | b"md5"
        | b"sha1" | b"length" | b"group_concat" | b"floor" | b"rand" | b"exp" | b"row" | b"iif" | b"elt"
        | b"make_set" | b"json_extract" | b"instr" | b"locate" | b"position" | b"now" | b"sysdate"
        | b"system_user" | b"session_user" | b"load" | b"lower" | b"upper" | b"db_name"
        | b"schema_name" | b"user_name" | b"current_database" | b"overlay" | b"lo_import"
        | b"lo_export" | b"lo_get" | b"pg_read_file" => b'F',
        _ => b'n',
    }
}

/// Names of procedures, functions and clauses that no value outside an attack mentions: MSSQL
/// extended and system procedures, file and network access, and blind time delays.
fn is_attack_only_name(word: &[u8]) -> bool {
    matches!(
        word,
        b"xp_cmdshell"
            | b"xp_dirtree"
            | b"xp_regread"
            | b"xp_regwrite"
            | b"xp_fileexist"
            | b"xp_subdirs"
            | b"xp_servicecontrol"
            | b"xp_availablemedia"
            | b"xp_makecab"
            | b"xp_loginconfig"
            | b"xp_enumgroups"
            | b"xp_terminate_process"
            | b"sp_executesql"
            | b"sp_password"
            | b"sp_oacreate"
            | b"sp_oamethod"
            | b"sp_makewebtask"
            | b"sp_addextendedproc"
            | b"sp_configure"
            | b"openrowset"
            | b"opendatasource"
            | b"utl_http"
            | b"utl_inaddr"
            | b"utl_file"
            | b"dbms_pipe"
            | b"dbms_lock"
            | b"dbms_ldap"
            | b"dbms_xmlgen"
            | b"pg_sleep"
            | b"load_file"
            | b"outfile"
            | b"dumpfile"
            | b"sys_eval"
            | b"sys_exec"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_byte_table_matches_word_bytes() {
        for byte in 0..=u8::MAX {
            let expected = byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'$' || byte >= 0x80;
            assert_eq!(is_word_byte(byte), expected, "byte {byte:#x}");
        }
    }

    #[test]
    fn non_ascii_word_is_one_name_token() {
        let tokens = tokenize("zoë müller", None, Escapes::Backslash);
        let classes: Vec<u8> = tokens.iter().map(|token| token.class).collect();
        assert_eq!(classes, b"nn");
        assert_eq!((tokens[0].start, tokens[0].end), (0, 4));
    }
}
