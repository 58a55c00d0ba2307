//! Normalisation of one request field before detection.
//!
//! Attackers hide payloads behind encodings that the application, a framework or a browser
//! undoes later: percent-encoding applied twice, HTML entities, full-width Unicode forms, mixed
//! case, NUL bytes between letters and overlong UTF-8. Detectors only ever see the result of
//! undoing all of them, so one signature covers every spelling.

use std::borrow::Cow;

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfkc_quick};

/// Maximum number of percent-decoding rounds. Three rounds undo triple encoding, which is more
/// than any real client sends; a fourth round would only feed an attacker's nesting.
pub const MAX_DECODE_ROUNDS: usize = 3;

/// Maximum number of HTML entity decoding rounds, so that `&amp;lt;` becomes `<`.
const MAX_ENTITY_ROUNDS: usize = 2;

/// Longest entity name or number accepted between `&` and `;`.
const MAX_ENTITY_CHARS: usize = 10;

/// How a field's raw bytes are encoded on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldEncoding {
    /// A query or form value, where `+` stands for a space.
    Form,
    /// Anything else: a path, a header, a cookie or a JSON string.
    Plain,
}

/// Encoding anomalies met while normalising. Each becomes a finding of its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Anomalies {
    /// An overlong UTF-8 sequence, such as `C0 AF` for `/`. No conforming encoder writes one,
    /// so it is only ever an attempt to slip a character past a filter.
    pub overlong_utf8: bool,
    /// A NUL byte, a classic way to end a string early in C-based code.
    pub nul_byte: bool,
    /// A control byte other than tab, line feed and carriage return.
    pub control_byte: bool,
    /// Percent-encoding still left after [`MAX_DECODE_ROUNDS`] rounds.
    pub deep_encoding: bool,
}

/// One field after normalisation. Text that no step changes is borrowed from the raw bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Normalised<'a> {
    /// The decoded text after NFKC, with its case kept. Some detectors need the case, such as
    /// the one that looks for Base64-encoded gadget names.
    pub cased: Cow<'a, str>,
    /// `cased` after lowercasing. Most detectors match on this.
    pub folded: Cow<'a, str>,
    /// Anomalies met on the way.
    pub anomalies: Anomalies,
}

/// Normalises the raw bytes of one field.
///
/// The steps run in this order: `+` to space (form values only), percent-decoding until
/// nothing changes or [`MAX_DECODE_ROUNDS`] rounds, overlong UTF-8 decoding (flagged), UTF-8
/// decoding with invalid bytes replaced, JavaScript `\uXXXX` escapes, HTML entity decoding,
/// NUL removal, control bytes to spaces, Unicode NFKC and lowercasing. Every step is linear in the input, so the whole runs
/// in bounded time on any input.
pub fn normalise(raw: &[u8], encoding: FieldEncoding) -> Normalised<'_> {
    let classes = ByteClasses::of(raw, encoding);
    if !classes.escape_or_control
        && let Ok(text) = std::str::from_utf8(raw)
    {
        // Valid UTF-8 contains no overlong sequence, so only NFKC and lowercasing can change it.
        if !classes.non_ascii {
            let folded = if classes.uppercase {
                Cow::Owned(text.to_ascii_lowercase())
            } else {
                Cow::Borrowed(text)
            };
            return Normalised {
                cased: Cow::Borrowed(text),
                folded,
                anomalies: Anomalies::default(),
            };
        }
        if !has_c1_control(raw) && is_nfkc_quick(text.chars()) == IsNormalized::Yes {
            return Normalised {
                cased: Cow::Borrowed(text),
                folded: Cow::Owned(lowercase(text)),
                anomalies: Anomalies::default(),
            };
        }
    }
    normalise_all_steps(raw, encoding)
}

/// The kinds of bytes in a raw value that decide which path [`normalise`] takes, found in one
/// pass.
struct ByteClasses {
    /// A byte that starts a decoding step (`%`, `\`, `&` and, in a form value, `+`) or an ASCII
    /// control byte other than tab, line feed and carriage return. Valid UTF-8 without one,
    /// and without a C1 control, is changed only by NFKC and lowercasing.
    escape_or_control: bool,
    /// A byte outside ASCII.
    non_ascii: bool,
    /// An ASCII uppercase letter.
    uppercase: bool,
}

impl ByteClasses {
    fn of(raw: &[u8], encoding: FieldEncoding) -> Self {
        let form = encoding == FieldEncoding::Form;
        let mut classes = Self {
            escape_or_control: false,
            non_ascii: false,
            uppercase: false,
        };
        // No branch depends on a byte, so that the compiler can compare many bytes at once in
        // vector registers.
        for &byte in raw {
            classes.escape_or_control |= is_escape_or_control(byte, form);
            classes.non_ascii |= byte >= 0x80;
            classes.uppercase |= byte.is_ascii_uppercase();
        }
        classes
    }
}

/// Returns whether `byte` starts a decoding step or is an ASCII control byte other than tab,
/// line feed and carriage return. The operators do not short-circuit, so that no branch is
/// taken per byte.
fn is_escape_or_control(byte: u8, form: bool) -> bool {
    let control = ((byte < 0x20) & (byte != b'\t') & (byte != b'\n') & (byte != b'\r')) | (byte == 0x7F);
    let escape = (byte == b'%') | (byte == b'\\') | (byte == b'&') | (form & (byte == b'+'));
    control | escape
}

/// Returns whether UTF-8 `text` contains a C1 control character, U+0080 to U+009F, which UTF-8
/// writes as 0xC2 followed by 0x80 to 0x9F.
fn has_c1_control(text: &[u8]) -> bool {
    memchr::memchr_iter(0xC2, text)
        .any(|index| text.get(index + 1).is_some_and(|next| (0x80..=0x9F).contains(next)))
}

/// Lowercases `text` exactly as [`str::to_lowercase`] does, with runs of ASCII characters
/// lowercased in place instead of looked up in the Unicode tables one by one. The one
/// context-dependent mapping, a capital sigma that ends a word, is left to the standard library.
pub(super) fn lowercase(text: &str) -> String {
    if text.contains('\u{3a3}') {
        return text.to_lowercase();
    }
    let mut folded = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let ascii_length = rest.bytes().position(|byte| !byte.is_ascii()).unwrap_or(rest.len());
        let start = folded.len();
        folded.push_str(&rest[..ascii_length]);
        folded[start..].make_ascii_lowercase();
        rest = &rest[ascii_length..];
        let mut characters = rest.chars();
        if let Some(character) = characters.next() {
            folded.extend(character.to_lowercase());
        }
        rest = characters.as_str();
    }
    folded
}

/// Runs every normalisation step in turn, as [`normalise`] describes.
pub(super) fn normalise_all_steps(raw: &[u8], encoding: FieldEncoding) -> Normalised<'static> {
    let mut anomalies = Anomalies::default();

    let mut bytes: Vec<u8> = raw.to_vec();
    if encoding == FieldEncoding::Form {
        for byte in &mut bytes {
            if *byte == b'+' {
                *byte = b' ';
            }
        }
    }

    for _ in 0..MAX_DECODE_ROUNDS {
        match percent_decode(&bytes) {
            Some(decoded) => bytes = decoded,
            None => break,
        }
    }
    if percent_decode(&bytes).is_some() {
        anomalies.deep_encoding = true;
    }

    let bytes = decode_overlong(bytes, &mut anomalies);
    let mut text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => String::from_utf8_lossy(error.as_bytes()).into_owned(),
    };

    if let Some(decoded) = decode_js_escapes(&text) {
        text = decoded;
    }

    for _ in 0..MAX_ENTITY_ROUNDS {
        match decode_entities(&text) {
            Some(decoded) => text = decoded,
            None => break,
        }
    }

    let text = replace_controls(text, &mut anomalies);
    // NFKC leaves ASCII text as it is, and ASCII lowercasing then equals full lowercasing.
    let (cased, folded) = if text.is_ascii() {
        let folded = text.to_ascii_lowercase();
        (text, folded)
    } else {
        // Most non-ASCII text is already in NFKC (precomposed letters such as `ë`), which the
        // quick check confirms without decomposing it.
        let cased: String = match is_nfkc_quick(text.chars()) {
            IsNormalized::Yes => text,
            IsNormalized::No | IsNormalized::Maybe => text.nfkc().collect(),
        };
        let folded = lowercase(&cased);
        (cased, folded)
    };
    Normalised {
        cased: Cow::Owned(cased),
        folded: Cow::Owned(folded),
        anomalies,
    }
}

/// Decodes `%XX` and `%uXXXX` escapes once. Returns `None` when there was nothing to decode.
fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    if !input.contains(&b'%') {
        return None;
    }

    let mut output = Vec::with_capacity(input.len());
    let mut changed = false;
    let mut index = 0;
    while index < input.len() {
        let byte = input[index];
        if byte == b'%' {
            if let Some(value) = hex_pair(input, index + 1) {
                output.push(value);
                index += 3;
                changed = true;
                continue;
            }
            if let Some(code_point) = percent_u(input, index + 1) {
                let mut buffer = [0u8; 4];
                output.extend_from_slice(code_point.encode_utf8(&mut buffer).as_bytes());
                index += 6;
                changed = true;
                continue;
            }
        }
        output.push(byte);
        index += 1;
    }
    changed.then_some(output)
}

/// Reads two hex digits at `index`.
fn hex_pair(input: &[u8], index: usize) -> Option<u8> {
    let high = hex_value(*input.get(index)?)?;
    let low = hex_value(*input.get(index + 1)?)?;
    Some(high << 4 | low)
}

/// Reads the IIS-style `uXXXX` escape at `index`, as in `%u003c`.
fn percent_u(input: &[u8], index: usize) -> Option<char> {
    if !matches!(input.get(index), Some(b'u' | b'U')) {
        return None;
    }
    let high = hex_pair(input, index + 1)?;
    let low = hex_pair(input, index + 3)?;
    char::from_u32(u32::from(high) << 8 | u32::from(low))
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Replaces overlong two- and three-byte UTF-8 sequences with the character they spell, and
/// flags them. Lenient decoders once accepted `C0 AF` as `/`, so detectors must see the `/`.
fn decode_overlong(input: Vec<u8>, anomalies: &mut Anomalies) -> Vec<u8> {
    // Every overlong sequence starts with a byte from 0xC0 up.
    if !input.iter().any(|byte| matches!(byte, 0xC0 | 0xC1 | 0xE0 | 0xF0)) {
        return input;
    }
    let mut output = Vec::with_capacity(input.len());
    let mut index = 0;
    while index < input.len() {
        let lead = input[index];
        let next = input.get(index + 1).copied().unwrap_or(0);
        let third = input.get(index + 2).copied().unwrap_or(0);
        if matches!(lead, 0xC0 | 0xC1) && is_continuation(next) {
            anomalies.overlong_utf8 = true;
            output.push(((lead & 0x1F) << 6) | (next & 0x3F));
            index += 2;
            continue;
        }
        if lead == 0xE0 && (0x80..=0x9F).contains(&next) && is_continuation(third) {
            anomalies.overlong_utf8 = true;
            let code_point =
                (u32::from(next & 0x3F) << 6) | u32::from(third & 0x3F);
            let character = char::from_u32(code_point).unwrap_or(char::REPLACEMENT_CHARACTER);
            let mut buffer = [0u8; 4];
            output.extend_from_slice(character.encode_utf8(&mut buffer).as_bytes());
            index += 3;
            continue;
        }
        if lead == 0xF0 && (0x80..=0x8F).contains(&next) {
            anomalies.overlong_utf8 = true;
        }
        output.push(lead);
        index += 1;
    }
    output
}

fn is_continuation(byte: u8) -> bool {
    byte & 0xC0 == 0x80
}

/// Decodes JavaScript and JSON `\uXXXX` escapes once, because a script or a JSON parser
/// behind the firewall reads `c\u006fnsole` as `console`. Returns `None` when there was
/// nothing to decode. Escapes of surrogates become U+FFFD.
fn decode_js_escapes(input: &str) -> Option<String> {
    if !input.contains("\\u") {
        return None;
    }
    let mut output = String::with_capacity(input.len());
    let mut changed = false;
    let mut rest = input;
    while let Some(position) = rest.find("\\u") {
        output.push_str(&rest[..position]);
        let digits = rest.get(position + 2..position + 6).filter(|digits| digits.bytes().all(|byte| byte.is_ascii_hexdigit()));
        match digits.and_then(|digits| u32::from_str_radix(digits, 16).ok()) {
            Some(code_point) => {
                output.push(char::from_u32(code_point).unwrap_or(char::REPLACEMENT_CHARACTER));
                rest = &rest[position + 6..];
                changed = true;
            }
            None => {
                output.push_str("\\u");
                rest = &rest[position + 2..];
            }
        }
    }
    output.push_str(rest);
    changed.then_some(output)
}

/// Decodes numeric (`&#60;`, `&#x3c;`) and common named HTML entities once, with or without
/// the closing `;` as browsers do. Returns `None` when there was nothing to decode.
fn decode_entities(input: &str) -> Option<String> {
    if !input.contains('&') {
        return None;
    }

    let mut output = String::with_capacity(input.len());
    let mut changed = false;
    let mut rest = input;
    while let Some(position) = rest.find('&') {
        output.push_str(&rest[..position]);
        rest = &rest[position..];
        match decode_entity(rest) {
            Some((character, consumed)) => {
                output.push(character);
                rest = &rest[consumed..];
                changed = true;
            }
            None => {
                output.push('&');
                rest = &rest[1..];
            }
        }
    }
    output.push_str(rest);
    changed.then_some(output)
}

/// Decodes the entity at the start of `input` (which starts with `&`). Returns the character
/// and the number of bytes the entity took.
fn decode_entity(input: &str) -> Option<(char, usize)> {
    let body = &input[1..];
    if let Some(number) = body.strip_prefix('#') {
        let (digits, radix, prefix) = match number.strip_prefix(['x', 'X']) {
            Some(hex) => (hex, 16, 2),
            None => (number, 10, 1),
        };
        let length = digits
            .bytes()
            .take(MAX_ENTITY_CHARS)
            .take_while(|byte| (*byte as char).is_digit(radix))
            .count();
        if length == 0 {
            return None;
        }
        let value = u32::from_str_radix(&digits[..length], radix).ok()?;
        let character = char::from_u32(value).unwrap_or(char::REPLACEMENT_CHARACTER);
        let semicolon = usize::from(digits[length..].starts_with(';'));
        return Some((character, 1 + prefix + length + semicolon));
    }

    let length = body
        .bytes()
        .take(MAX_ENTITY_CHARS)
        .take_while(u8::is_ascii_alphanumeric)
        .count();
    let character = named_entity(&body[..length].to_ascii_lowercase())?;
    let semicolon = usize::from(body[length..].starts_with(';'));
    Some((character, 1 + length + semicolon))
}

/// The named entities that matter for injection: markup, quotes, separators and the
/// whitespace that browsers strip inside URLs.
fn named_entity(name: &str) -> Option<char> {
    let character = match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "colon" => ':',
        "semi" => ';',
        "comma" => ',',
        "period" => '.',
        "sol" => '/',
        "bsol" => '\\',
        "lpar" => '(',
        "rpar" => ')',
        "lsqb" | "lbrack" => '[',
        "rsqb" | "rbrack" => ']',
        "lcub" | "lbrace" => '{',
        "rcub" | "rbrace" => '}',
        "equals" => '=',
        "plus" => '+',
        "excl" => '!',
        "num" => '#',
        "dollar" => '$',
        "percnt" => '%',
        "grave" => '`',
        "tab" => '\t',
        "newline" => '\n',
        _ => return None,
    };
    Some(character)
}

/// Removes NUL characters and turns other control characters into spaces, flagging both. Tab,
/// line feed and carriage return are kept, because detectors of header injection and shell
/// command separators need them.
fn replace_controls(input: String, anomalies: &mut Anomalies) -> String {
    if !input.chars().any(char::is_control) {
        return input;
    }

    let mut output = String::with_capacity(input.len());
    for character in input.chars() {
        match character {
            '\0' => anomalies.nul_byte = true,
            '\t' | '\n' | '\r' => output.push(character),
            _ if character.is_control() => {
                anomalies.control_byte = true;
                output.push(' ');
            }
            _ => output.push(character),
        }
    }
    output
}
