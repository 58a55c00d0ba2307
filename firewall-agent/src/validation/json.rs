//! A strict JSON parser that enforces limits while it parses.
//!
//! `serde_json` recurses once per nesting level and accepts duplicate keys (the last one wins),
//! so an attacker can exhaust the stack or smuggle a second value past a validator that reads
//! the first. This parser checks the nesting depth before it descends, rejects duplicate keys
//! (compared after unescaping), invalid UTF-8, lone surrogates, a byte order mark, control
//! characters in strings and trailing data. Every error carries the JSON pointer of the value
//! being parsed, never the value itself.
//!
//! The parser also records where chosen string values sit in the input, so that a caller can
//! rewrite those values and leave every other byte as it was.

use std::fmt;
use std::ops::Range;

use serde_json::{Map, Number, Value};

/// Default maximum nesting depth of arrays and objects.
pub const DEFAULT_MAX_DEPTH: usize = 64;
/// Highest nesting depth a configuration may set. The parser recurses once per level, so this
/// bounds its stack use well below the 2 MiB of a Tokio worker thread.
pub const MAX_DEPTH_CEILING: usize = 1024;

/// Limits checked while parsing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonLimits {
    /// Maximum nesting depth: a scalar at the top is depth 0, `[1]` is depth 1.
    pub max_depth: usize,
    /// Maximum size of the document in bytes.
    pub max_bytes: usize,
}

impl Default for JsonLimits {
    fn default() -> Self {
        Self {
            max_depth: DEFAULT_MAX_DEPTH,
            max_bytes: 1024 * 1024,
        }
    }
}

/// Reason a document is rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JsonErrorKind {
    /// The document is larger than the size limit.
    #[error("document is larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Arrays and objects are nested deeper than the depth limit.
    #[error("nesting is deeper than {limit} levels")]
    TooDeep {
        /// The limit in levels.
        limit: usize,
    },
    /// A string is not valid UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// An object has the same key twice.
    #[error("duplicate object key")]
    DuplicateKey,
    /// An escape sequence is unknown, incomplete, or a lone UTF-16 surrogate.
    #[error("invalid escape sequence in string")]
    InvalidEscape,
    /// A string contains a raw control character, which JSON requires to be escaped.
    #[error("unescaped control character in string")]
    ControlCharacter,
    /// A number does not fit in a 64-bit float.
    #[error("number is out of range")]
    NumberOutOfRange,
    /// The input ends inside a value.
    #[error("unexpected end of document")]
    UnexpectedEnd,
    /// Something other than the end of the input follows the top-level value.
    #[error("unexpected data after the document")]
    TrailingData,
    /// The input does not follow the JSON grammar at this point.
    #[error("expected {expected}")]
    Syntax {
        /// The token the grammar allows here.
        expected: &'static str,
    },
}

/// A rejected document: what is wrong, where in the value tree, and at which byte.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON at {pointer:?} (byte {offset}): {kind}")]
pub struct JsonError {
    /// The reason.
    pub kind: JsonErrorKind,
    /// JSON pointer (RFC 6901) of the value being parsed; empty for the whole document.
    pub pointer: String,
    /// Byte offset in the input.
    pub offset: usize,
}

/// One segment of a [`PointerPattern`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum PatternSegment {
    /// `*`: any array index or object key.
    Any,
    /// A reference token, unescaped.
    Token(String),
}

/// A JSON pointer (RFC 6901) in which a segment `*` matches any array index or object key, such
/// as `/comments/*/body`. A key that is literally `*` cannot be named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointerPattern {
    text: String,
    segments: Vec<PatternSegment>,
}

/// Error from [`PointerPattern::parse`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON pointer {pointer:?}: {reason}")]
pub struct PointerPatternError {
    /// The pattern as written.
    pub pointer: String,
    /// The problem with it.
    pub reason: &'static str,
}

impl PointerPattern {
    /// Parses a pointer such as `/user/bio` or `/posts/*/html`.
    ///
    /// # Errors
    ///
    /// [`PointerPatternError`] when the pointer is empty (the whole document), does not start
    /// with `/`, or has an escape other than `~0` and `~1`.
    pub fn parse(text: &str) -> Result<Self, PointerPatternError> {
        let error = |reason| PointerPatternError {
            pointer: text.to_owned(),
            reason,
        };
        let Some(rest) = text.strip_prefix('/') else {
            return Err(error("a pointer to a field starts with '/'"));
        };

        let mut segments = Vec::new();
        for token in rest.split('/') {
            if token == "*" {
                segments.push(PatternSegment::Any);
                continue;
            }
            let unescaped = unescape_token(token).ok_or_else(|| error("'~' must be followed by 0 or 1"))?;
            segments.push(PatternSegment::Token(unescaped));
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    /// Returns the pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn matches(&self, path: &[PathSegment]) -> bool {
        self.segments.len() == path.len()
            && self
                .segments
                .iter()
                .zip(path)
                .all(|(pattern, segment)| match (pattern, segment) {
                    (PatternSegment::Any, _) => true,
                    (PatternSegment::Token(token), PathSegment::Key(key)) => token == key,
                    (PatternSegment::Token(token), PathSegment::Index(index)) => {
                        token.parse::<usize>().ok() == Some(*index)
                    }
                })
    }
}

impl fmt::Display for PointerPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn unescape_token(token: &str) -> Option<String> {
    let mut unescaped = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => unescaped.push('~'),
                Some('1') => unescaped.push('/'),
                _ => return None,
            }
        } else {
            unescaped.push(c);
        }
    }
    Some(unescaped)
}

/// A string value whose position a caller asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StringSpan {
    /// JSON pointer of the value.
    pub pointer: String,
    /// Byte range of the string literal in the input, quotes included.
    pub range: Range<usize>,
    /// The value, unescaped.
    pub value: String,
}

/// A parsed document.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedJson {
    /// The value tree.
    pub value: Value,
    /// String values at the watched pointers, in input order.
    pub strings: Vec<StringSpan>,
}

/// Parses a document under `limits`.
///
/// # Errors
///
/// [`JsonError`] naming the first violation and the pointer of the value where it occurred.
pub fn parse(input: &[u8], limits: JsonLimits) -> Result<Value, JsonError> {
    parse_watching(input, limits, &[]).map(|parsed| parsed.value)
}

/// Parses a document under `limits` and records the position of every string value whose
/// pointer matches one of `watched`.
///
/// # Errors
///
/// [`JsonError`] naming the first violation and the pointer of the value where it occurred.
pub fn parse_watching(
    input: &[u8],
    limits: JsonLimits,
    watched: &[PointerPattern],
) -> Result<ParsedJson, JsonError> {
    let mut parser = Parser {
        input,
        position: 0,
        limits,
        path: Vec::new(),
        watched,
        strings: Vec::new(),
    };
    if input.len() > limits.max_bytes {
        return Err(parser.error(JsonErrorKind::TooLarge {
            limit: limits.max_bytes,
        }));
    }

    parser.skip_whitespace();
    let value = parser.parse_value(0)?;
    parser.skip_whitespace();
    if parser.position < input.len() {
        return Err(parser.error(JsonErrorKind::TrailingData));
    }
    Ok(ParsedJson {
        value,
        strings: parser.strings,
    })
}

/// Renders a path of keys and indexes as a JSON pointer (RFC 6901).
pub fn render_pointer<'a, I>(segments: I) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    let mut pointer = String::new();
    for segment in segments {
        pointer.push('/');
        for c in segment.chars() {
            match c {
                '~' => pointer.push_str("~0"),
                '/' => pointer.push_str("~1"),
                c => pointer.push(c),
            }
        }
    }
    pointer
}

#[derive(Clone, Debug)]
enum PathSegment {
    Key(String),
    Index(usize),
}

struct Parser<'a> {
    input: &'a [u8],
    position: usize,
    limits: JsonLimits,
    path: Vec<PathSegment>,
    watched: &'a [PointerPattern],
    strings: Vec<StringSpan>,
}

impl Parser<'_> {
    fn pointer(&self) -> String {
        let indexes: Vec<String> = self
            .path
            .iter()
            .map(|segment| match segment {
                PathSegment::Key(key) => key.clone(),
                PathSegment::Index(index) => index.to_string(),
            })
            .collect();
        render_pointer(indexes.iter().map(String::as_str))
    }

    fn error(&self, kind: JsonErrorKind) -> JsonError {
        JsonError {
            kind,
            pointer: self.pointer(),
            offset: self.position,
        }
    }

    fn syntax(&self, expected: &'static str) -> JsonError {
        if self.position >= self.input.len() {
            self.error(JsonErrorKind::UnexpectedEnd)
        } else {
            self.error(JsonErrorKind::Syntax { expected })
        }
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.position).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.position += 1;
        }
    }

    fn expect_literal(&mut self, literal: &'static [u8], expected: &'static str) -> Result<(), JsonError> {
        let rest = &self.input[self.position..];
        if rest.starts_with(literal) {
            self.position += literal.len();
            Ok(())
        } else if literal.starts_with(rest) {
            self.position = self.input.len();
            Err(self.error(JsonErrorKind::UnexpectedEnd))
        } else {
            Err(self.syntax(expected))
        }
    }

    fn parse_value(&mut self, depth: usize) -> Result<Value, JsonError> {
        match self.peek() {
            Some(b'{') => self.parse_object(depth + 1),
            Some(b'[') => self.parse_array(depth + 1),
            Some(b'"') => {
                let start = self.position;
                let value = self.parse_string()?;
                self.record_string(start, &value);
                Ok(Value::String(value))
            }
            Some(b't') => self.expect_literal(b"true", "a value").map(|()| Value::Bool(true)),
            Some(b'f') => self.expect_literal(b"false", "a value").map(|()| Value::Bool(false)),
            Some(b'n') => self.expect_literal(b"null", "a value").map(|()| Value::Null),
            Some(b'-' | b'0'..=b'9') => self.parse_number(),
            _ => Err(self.syntax("a value")),
        }
    }

    fn enter(&self, depth: usize) -> Result<(), JsonError> {
        if depth > self.limits.max_depth {
            return Err(self.error(JsonErrorKind::TooDeep {
                limit: self.limits.max_depth,
            }));
        }
        Ok(())
    }

    fn parse_object(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.enter(depth)?;
        self.position += 1;
        let mut map = Map::new();

        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.position += 1;
            return Ok(Value::Object(map));
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.syntax("an object key"));
            }
            let key_start = self.position;
            let key = self.parse_string()?;
            self.path.push(PathSegment::Key(key));
            if map.contains_key(self.current_key()) {
                self.position = key_start;
                return Err(self.error(JsonErrorKind::DuplicateKey));
            }

            self.skip_whitespace();
            if self.peek() != Some(b':') {
                return Err(self.syntax("':' after an object key"));
            }
            self.position += 1;
            self.skip_whitespace();
            let value = self.parse_value(depth)?;
            // The key pushed above is on top of the path.
            if let Some(PathSegment::Key(key)) = self.path.pop() {
                map.insert(key, value);
            }

            self.skip_whitespace();
            match self.peek() {
                Some(b',') => {
                    self.position += 1;
                    self.skip_whitespace();
                }
                Some(b'}') => {
                    self.position += 1;
                    return Ok(Value::Object(map));
                }
                _ => return Err(self.syntax("',' or '}' in an object")),
            }
        }
    }

    fn current_key(&self) -> &str {
        match self.path.last() {
            Some(PathSegment::Key(key)) => key,
            _ => "",
        }
    }

    fn parse_array(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.enter(depth)?;
        self.position += 1;
        let mut items = Vec::new();

        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.position += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.path.push(PathSegment::Index(items.len()));
            let item = self.parse_value(depth)?;
            self.path.pop();
            items.push(item);

            self.skip_whitespace();
            match self.peek() {
                Some(b',') => {
                    self.position += 1;
                    self.skip_whitespace();
                }
                Some(b']') => {
                    self.position += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.syntax("',' or ']' in an array")),
            }
        }
    }

    fn record_string(&mut self, start: usize, value: &str) {
        if self.watched.iter().any(|pattern| pattern.matches(&self.path)) {
            self.strings.push(StringSpan {
                pointer: self.pointer(),
                range: start..self.position,
                value: value.to_owned(),
            });
        }
    }

    /// Parses the string literal whose opening quote is at the current position.
    fn parse_string(&mut self) -> Result<String, JsonError> {
        self.position += 1;
        let mut value = String::new();
        loop {
            let run_start = self.position;
            while let Some(byte) = self.peek() {
                if byte == b'"' || byte == b'\\' || byte < 0x20 {
                    break;
                }
                self.position += 1;
            }
            let run = &self.input[run_start..self.position];
            match std::str::from_utf8(run) {
                Ok(text) => value.push_str(text),
                Err(error) => {
                    self.position = run_start + error.valid_up_to();
                    return Err(self.error(JsonErrorKind::InvalidUtf8));
                }
            }

            match self.peek() {
                None => return Err(self.error(JsonErrorKind::UnexpectedEnd)),
                Some(b'"') => {
                    self.position += 1;
                    return Ok(value);
                }
                Some(b'\\') => {
                    let c = self.parse_escape()?;
                    value.push(c);
                }
                Some(_) => return Err(self.error(JsonErrorKind::ControlCharacter)),
            }
        }
    }

    /// Parses the escape sequence whose backslash is at the current position.
    fn parse_escape(&mut self) -> Result<char, JsonError> {
        let escape_start = self.position;
        self.position += 1;
        let Some(byte) = self.peek() else {
            return Err(self.error(JsonErrorKind::UnexpectedEnd));
        };
        self.position += 1;
        let c = match byte {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => return self.parse_unicode_escape(escape_start),
            _ => {
                self.position = escape_start;
                return Err(self.error(JsonErrorKind::InvalidEscape));
            }
        };
        Ok(c)
    }

    fn parse_unicode_escape(&mut self, escape_start: usize) -> Result<char, JsonError> {
        let first = self.parse_hex4(escape_start)?;
        let code_point = match first {
            0xD800..=0xDBFF => {
                if !self.input[self.position..].starts_with(b"\\u") {
                    self.position = escape_start;
                    return Err(self.error(JsonErrorKind::InvalidEscape));
                }
                self.position += 2;
                let second = self.parse_hex4(escape_start)?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    self.position = escape_start;
                    return Err(self.error(JsonErrorKind::InvalidEscape));
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => {
                self.position = escape_start;
                return Err(self.error(JsonErrorKind::InvalidEscape));
            }
            other => other,
        };
        char::from_u32(code_point).ok_or_else(|| {
            self.position = escape_start;
            self.error(JsonErrorKind::InvalidEscape)
        })
    }

    fn parse_hex4(&mut self, escape_start: usize) -> Result<u32, JsonError> {
        let digits = self.input.get(self.position..self.position + 4);
        let parsed = digits
            .filter(|digits| digits.iter().all(u8::is_ascii_hexdigit))
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| u32::from_str_radix(digits, 16).ok());
        match parsed {
            Some(value) => {
                self.position += 4;
                Ok(value)
            }
            None => {
                self.position = escape_start;
                Err(self.error(JsonErrorKind::InvalidEscape))
            }
        }
    }

    fn parse_number(&mut self) -> Result<Value, JsonError> {
        let start = self.position;
        let mut integer = true;

        if self.peek() == Some(b'-') {
            self.position += 1;
        }
        match self.peek() {
            Some(b'0') => self.position += 1,
            Some(b'1'..=b'9') => self.skip_digits(),
            _ => return Err(self.syntax("a digit")),
        }
        if self.peek() == Some(b'.') {
            integer = false;
            self.position += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.syntax("a digit after '.'"));
            }
            self.skip_digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            integer = false;
            self.position += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.position += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.syntax("a digit in the exponent"));
            }
            self.skip_digits();
        }

        // The bytes are ASCII digits and signs, checked above.
        let text = std::str::from_utf8(&self.input[start..self.position]).unwrap_or_default();
        let number = if integer {
            text.parse::<i64>()
                .map(Number::from)
                .or_else(|_| text.parse::<u64>().map(Number::from))
                .ok()
        } else {
            None
        };
        let number = match number {
            Some(number) => number,
            None => text
                .parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .ok_or_else(|| {
                    let mut error = self.error(JsonErrorKind::NumberOutOfRange);
                    error.offset = start;
                    error
                })?,
        };
        Ok(Value::Number(number))
    }

    fn skip_digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.position += 1;
        }
    }
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
