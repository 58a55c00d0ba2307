//! Reading the keys and string values of a JSON body as fields, in one pass over the bytes.
//!
//! The walk builds no tree: a string without escapes is borrowed from the body, and a field's
//! name (`json:items.3.note`) is kept as a link to its parent's path and only spelled out for
//! fields that a detector flags. The grammar is RFC 8259's, as strict as `serde_json`: a body
//! that breaks it, nests deeper than [`MAX_NESTING`] levels or contains invalid UTF-8 or a lone
//! surrogate is not JSON, and the caller inspects it whole instead.
//!
//! Every occurrence of a repeated key is read, so a value hidden behind a later duplicate key
//! is inspected even though many parsers keep only one of them.

use std::borrow::Cow;

use super::fields::{FieldName, MAX_FIELDS, MAX_JSON_DEPTH, RequestFields};
use super::normalise::FieldEncoding;
use super::FieldKind;

/// Deepest nesting of arrays and objects accepted as JSON, as in `serde_json`.
pub const MAX_NESTING: usize = 127;

/// One step of a path: an object key or an array index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Segment<'a> {
    Key(Cow<'a, str>),
    Index(u32),
}

/// A path, as its last segment and the index of its parent's path in the request's list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PathNode<'a> {
    pub parent: Option<u32>,
    pub segment: Segment<'a>,
}

/// The path of the value about to be read. An array element's path is recorded only when the
/// element is a string or a container, so that long arrays of numbers record nothing. Keys and
/// containers record one path each, as many as a parsed tree would hold values.
#[derive(Clone, Copy)]
enum ValuePath {
    Known(Option<u32>),
    Element { array: Option<u32>, index: u32 },
}

impl ValuePath {
    fn resolve(self, fields: &mut RequestFields<'_>) -> Option<u32> {
        match self {
            ValuePath::Known(path) => path,
            ValuePath::Element { array, index } => Some(fields.push_path(array, Segment::Index(index))),
        }
    }
}

/// The body is not JSON as RFC 8259 defines it, or nests too deep.
#[derive(Debug)]
pub(super) struct NotJson;

/// An open array or object.
struct Frame {
    /// Path of the container itself; `None` for the document's root.
    path: Option<u32>,
    /// Whether its keys and strings become fields, which they do at depths below
    /// [`MAX_JSON_DEPTH`].
    inspected: bool,
    /// `Some(index of the current element)` for an array, `None` for an object.
    array_index: Option<u32>,
}

/// Adds the keys and string values of `body` to `fields`. On [`NotJson`] the fields added so
/// far stay, and the caller removes them.
pub(super) fn push_json<'a>(fields: &mut RequestFields<'a>, body: &'a [u8]) -> Result<(), NotJson> {
    let mut reader = Reader::new(body);
    // A field takes at least a few bytes of the body, so this estimate saves most of the
    // reallocations of a body with many fields without reserving much for one with few.
    fields.reserve((body.len() / 16).min(MAX_FIELDS));
    let mut stack: Vec<Frame> = Vec::new();
    // Path and inspection of the value about to be read.
    let mut path = ValuePath::Known(None);
    let mut inspected = true;
    loop {
        if fields.len() >= MAX_FIELDS {
            if !reader.only_closing_left() {
                fields.mark_overflowed();
            }
            return Ok(());
        }
        // One value.
        reader.skip_whitespace();
        match reader.next_byte()? {
            opening @ (b'{' | b'[') => {
                if stack.len() == MAX_NESTING {
                    return Err(NotJson);
                }
                let is_array = opening == b'[';
                let depth_inspected = inspected && stack.len() < MAX_JSON_DEPTH;
                let container_path = if depth_inspected { path.resolve(fields) } else { None };
                stack.push(Frame {
                    path: container_path,
                    inspected: depth_inspected,
                    array_index: is_array.then_some(0),
                });
                reader.skip_whitespace();
                let closing = if is_array { b']' } else { b'}' };
                if reader.peek() == Some(closing) {
                    reader.position += 1;
                    stack.pop();
                } else {
                    (path, inspected) = open_member(fields, &mut reader, stack.last().ok_or(NotJson)?)?;
                    continue;
                }
            }
            b'"' => {
                let text = reader.string()?;
                if inspected {
                    let node = path.resolve(fields);
                    fields.push_raw(FieldName::Json(node), text_bytes(text), FieldEncoding::Plain, FieldKind::Body);
                }
            }
            b't' => reader.literal(b"rue")?,
            b'f' => reader.literal(b"alse")?,
            b'n' => reader.literal(b"ull")?,
            first @ (b'-' | b'0'..=b'9') => reader.number(first)?,
            _ => return Err(NotJson),
        }
        // After a value: close containers until one has a next member.
        loop {
            reader.skip_whitespace();
            let Some(frame) = stack.last_mut() else {
                return if reader.position == body.len() { Ok(()) } else { Err(NotJson) };
            };
            match (reader.next_byte()?, frame.array_index.is_some()) {
                (b',', true) => {
                    let index = frame.array_index.map_or(0, |index| index.saturating_add(1));
                    frame.array_index = Some(index);
                    inspected = frame.inspected;
                    path = ValuePath::Element { array: frame.path, index };
                    break;
                }
                (b',', false) => {
                    reader.skip_whitespace();
                    let frame = stack.last().ok_or(NotJson)?;
                    (path, inspected) = read_member_key(fields, &mut reader, frame)?;
                    break;
                }
                (b']', true) | (b'}', false) => {
                    stack.pop();
                }
                _ => return Err(NotJson),
            }
        }
    }
}

/// Starts reading the first member of a container that was just opened and is not empty.
/// Returns the path and inspection of the member's value.
fn open_member<'a>(
    fields: &mut RequestFields<'a>,
    reader: &mut Reader<'a>,
    frame: &Frame,
) -> Result<(ValuePath, bool), NotJson> {
    if frame.array_index.is_some() {
        Ok((ValuePath::Element { array: frame.path, index: 0 }, frame.inspected))
    } else {
        read_member_key(fields, reader, frame)
    }
}

/// Reads `"key":` in an object, adds the key as a field named by its own path, and returns
/// the path and inspection of the value that follows.
fn read_member_key<'a>(
    fields: &mut RequestFields<'a>,
    reader: &mut Reader<'a>,
    frame: &Frame,
) -> Result<(ValuePath, bool), NotJson> {
    if reader.next_byte()? != b'"' {
        return Err(NotJson);
    }
    let key = reader.string()?;
    reader.skip_whitespace();
    if reader.next_byte()? != b':' {
        return Err(NotJson);
    }
    if !frame.inspected {
        return Ok((ValuePath::Known(None), false));
    }
    let path = fields.push_path(frame.path, Segment::Key(key.clone()));
    fields.push_raw(FieldName::Json(Some(path)), text_bytes(key), FieldEncoding::Plain, FieldKind::Body);
    Ok((ValuePath::Known(Some(path)), true))
}

/// A cursor over the body.
struct Reader<'a> {
    body: &'a [u8],
    /// The longest prefix of `body` that is valid UTF-8, checked once for the whole body, so
    /// that each string inside it is borrowed without checking its bytes again.
    valid_text: &'a str,
    position: usize,
}

impl<'a> Reader<'a> {
    fn new(body: &'a [u8]) -> Self {
        let valid_text = match std::str::from_utf8(body) {
            Ok(text) => text,
            Err(error) => std::str::from_utf8(&body[..error.valid_up_to()]).unwrap_or_default(),
        };
        Reader { body, valid_text, position: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.body.get(self.position).copied()
    }

    /// Returns whether nothing but whitespace, commas and closing brackets is left to read.
    fn only_closing_left(&self) -> bool {
        self.body[self.position..]
            .iter()
            .all(|byte| matches!(byte, b' ' | b'\t' | b'\r' | b'\n' | b',' | b']' | b'}'))
    }

    fn next_byte(&mut self) -> Result<u8, NotJson> {
        let byte = self.peek().ok_or(NotJson)?;
        self.position += 1;
        Ok(byte)
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.position += 1;
        }
    }

    /// Reads the rest of a literal whose first byte was read.
    fn literal(&mut self, rest: &[u8]) -> Result<(), NotJson> {
        let end = self.position + rest.len();
        if self.body.get(self.position..end) != Some(rest) {
            return Err(NotJson);
        }
        self.position = end;
        Ok(())
    }

    /// Reads the rest of a number whose first byte was read:
    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self, first: u8) -> Result<(), NotJson> {
        let start = self.position - 1;
        let leading = if first == b'-' { self.next_byte()? } else { first };
        match leading {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return Err(NotJson),
        }
        if self.peek() == Some(b'.') {
            self.position += 1;
            self.required_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.position += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.position += 1;
            }
            self.required_digits()?;
        }
        // `serde_json` rejects a number beyond the range of `f64`, such as `1e400`, and so does
        // this walk. Short numbers without an exponent are always in range.
        let text = &self.body[start..self.position];
        if text.len() > 300 || text.contains(&b'e') || text.contains(&b'E') {
            let in_range = std::str::from_utf8(text)
                .ok()
                .and_then(|text| text.parse::<f64>().ok())
                .is_some_and(f64::is_finite);
            if !in_range {
                return Err(NotJson);
            }
        }
        Ok(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.position += 1;
        }
    }

    fn required_digits(&mut self) -> Result<(), NotJson> {
        let start = self.position;
        self.digits();
        if self.position == start { Err(NotJson) } else { Ok(()) }
    }

    /// Reads the rest of a string whose opening quote was read. A string without escapes is
    /// borrowed from the body; one with escapes is decoded into a new buffer.
    fn string(&mut self) -> Result<Cow<'a, str>, NotJson> {
        let start = self.position;
        let body = self.body;
        let rest = body.get(start..).ok_or(NotJson)?;
        let end = start + plain_run_length(rest).ok_or(NotJson)?;
        // JSON strings contain no raw control byte.
        if body[end] < 0x20 {
            return Err(NotJson);
        }
        let plain = &body[start..end];
        self.position = end + 1;
        if body[end] == b'"' {
            // Both ends are ASCII quotes or backslashes, so they are character boundaries of
            // the valid text whenever the string lies inside it.
            if let Some(text) = self.valid_text.get(start..end) {
                return Ok(Cow::Borrowed(text));
            }
            return std::str::from_utf8(plain).map(Cow::Borrowed).map_err(|_| NotJson);
        }
        let mut decoded = plain.to_vec();
        self.escape(&mut decoded)?;
        loop {
            match self.next_byte()? {
                b'"' => {
                    return String::from_utf8(decoded).map(Cow::Owned).map_err(|_| NotJson);
                }
                b'\\' => self.escape(&mut decoded)?,
                0..=0x1f => return Err(NotJson),
                byte => decoded.push(byte),
            }
        }
    }

    /// Decodes one escape after its backslash.
    fn escape(&mut self, decoded: &mut Vec<u8>) -> Result<(), NotJson> {
        let byte = match self.next_byte()? {
            byte @ (b'"' | b'\\' | b'/') => byte,
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let unit = self.hex_unit()?;
                let code_point = match unit {
                    0xd800..=0xdbff => {
                        if self.body.get(self.position..self.position + 2) != Some(b"\\u") {
                            return Err(NotJson);
                        }
                        self.position += 2;
                        let low = self.hex_unit()?;
                        if !(0xdc00..=0xdfff).contains(&low) {
                            return Err(NotJson);
                        }
                        0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00)
                    }
                    0xdc00..=0xdfff => return Err(NotJson),
                    _ => unit,
                };
                let character = char::from_u32(code_point).ok_or(NotJson)?;
                let mut buffer = [0; 4];
                decoded.extend_from_slice(character.encode_utf8(&mut buffer).as_bytes());
                return Ok(());
            }
            _ => return Err(NotJson),
        };
        decoded.push(byte);
        Ok(())
    }

    fn hex_unit(&mut self) -> Result<u32, NotJson> {
        let digits = self.body.get(self.position..self.position + 4).ok_or(NotJson)?;
        let mut unit = 0;
        for digit in digits {
            unit = unit * 16 + char::from(*digit).to_digit(16).ok_or(NotJson)?;
        }
        self.position += 4;
        Ok(unit)
    }
}

/// Returns the length of the run at the start of `bytes` that a JSON string contains as it is: the
/// offset of the first quote, backslash or control byte, or `None` when there is none. One pass
/// finds the end and the control bytes together, 16 bytes at a time without a branch per byte.
fn plain_run_length(bytes: &[u8]) -> Option<usize> {
    let ends_run = |byte: u8| (byte == b'"') | (byte == b'\\') | (byte < 0x20);
    let mut offset = 0;
    for chunk in bytes.chunks(16) {
        if chunk.iter().fold(false, |found, &byte| found | ends_run(byte)) {
            return chunk.iter().position(|&byte| ends_run(byte)).map(|index| offset + index);
        }
        offset += chunk.len();
    }
    None
}

/// Returns the bytes of a string read from the body, still borrowed where the text was.
fn text_bytes(text: Cow<'_, str>) -> Cow<'_, [u8]> {
    match text {
        Cow::Borrowed(text) => Cow::Borrowed(text.as_bytes()),
        Cow::Owned(text) => Cow::Owned(text.into_bytes()),
    }
}
