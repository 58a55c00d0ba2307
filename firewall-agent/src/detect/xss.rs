//! Cross-site scripting detection by tokenizing HTML.
//!
//! The value is read the way a browser's tokenizer would read it if it were written into a
//! page: tags with their names and attributes. A dangerous tag (`script`, `iframe`, `svg`,
//! ...), an event handler attribute (`onerror=`), or a URL attribute whose scheme runs script
//! (`javascript:`) is a finding. A value can also land inside an attribute the page already
//! opened, so an `on...=` handler after a closing quote counts without any tag. Plain markup
//! such as `<b>` or `a < b` is not a finding.

use std::sync::LazyLock;

use regex::Regex;

use super::byte_set::ByteSet;
use super::{Rule, rules};


/// Tags that run script, load a document or change how the page's URLs resolve.
const DANGEROUS_TAGS: &[&str] = &[
    "script", "iframe", "frame", "frameset", "object", "embed", "applet", "svg", "math",
    "base", "link", "meta", "style", "import", "isindex", "vmlframe", "template",
    "animate", "set", "handler", "xss", "portal", "noscript", "layer", "ilayer", "bgsound",
    "marquee",
];

/// Event names recognised without a tag around them (after a quote that closes an attribute
/// the page opened). Inside a tag every `on...` attribute counts.
const EVENT_NAMES: &[&str] = &[
    "load", "error", "click", "dblclick", "mouseover", "mouseout", "mousemove", "mousedown",
    "mouseup", "mouseenter", "mouseleave", "focus", "blur", "focusin", "focusout", "change",
    "submit", "reset", "select", "keydown", "keyup", "keypress", "input", "invalid", "scroll",
    "resize", "wheel", "toggle", "begin", "end", "repeat", "animationstart", "animationend",
    "animationiteration", "transitionend", "transitionstart", "pageshow", "pagehide",
    "hashchange", "popstate", "message", "beforeunload", "unload", "readystatechange", "drag",
    "dragstart", "dragend", "dragover", "drop", "copy", "cut", "paste", "contextmenu", "zoom",
    "start", "finish", "search", "show", "auxclick", "pointerover", "pointerenter",
    "pointerdown", "pointerup", "pointermove", "touchstart", "touchend", "touchmove",
    "afterprint", "beforeprint", "loadstart", "loadend", "play", "playing", "canplay",
    "durationchange", "volumechange", "timeupdate", "activate", "beforeactivate",
    "filterchange", "propertychange", "mousewheel", "online", "offline", "storage",
];

/// Script in a value without markup: calls of the functions proof-of-concept payloads use,
/// and the DOM objects they steal from. Word boundaries are ASCII ones (`(?-u:\b)`): the regex
/// crate's fast engines cannot decide a Unicode boundary next to a non-ASCII letter and fall
/// back to a backtracking one, which made names such as "Zoë D'Angelo" cost several times more.
pub(super) static SINK: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?:^|[^\w.])(?:alert|prompt|confirm|eval|settimeout|setinterval|execscript)\s*[(`]",
        r"|document\s*\)?\s*(?:\.\s*|\[\s*['\x22`])(?:cookie|domain|write|location)",
        r"|window\s*\.\s*(?:location|name|open)(?-u:\b)",
        r"|string\s*\.\s*fromcharcode\s*\(",
        r"|\.\s*(?:innerhtml|outerhtml)\s*=",
        r"|(?-u:\b)(?:top|self|parent|window|this|globalthis|frames)\s*\[\s*['\x22`]",
        r"|(?-u:\b)formaction\s*=|(?-u:\b)srcdoc\s*=|(?-u:\b)atob\s*\(",
        r"|\[\]\s*\[\s*\(\s*!\[\]",
        r"|!!\s*\[\s*\]|!\s*\[\s*\]\s*[+\[\])]|\+\s*!?\s*\+?\s*\[\s*\]\s*[)\]+]|\[\s*\+\s*!",
        r"|(?-u:\b)new\s+function\s*\(|(?-u:\b)btoa\s*\(",
        // Module imports that load a script: `import('//host/x.js')`, `import {a} from "./x"`
        // and `import * as m from "x"`. The quote keeps prose such as "import (and ...)" out.
        r"|(?-u:\b)import\s*\(\s*['\x22`]",
        r"|(?-u:\b)import\s*(?:\{[^{}]{0,200}\}|\*\s*as\s+[\w$]+)\s*from\s*['\x22`]",
    ))
    .ok()
});

/// A CSS `url(` whose target is a script URL, even cut off: `x:url(javascript`.
pub(super) static STYLE_SCRIPT_URL: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#"url\s*\(\s*['"]?\s*(?:java|vb|live)script"#).ok());

/// A `data:` URL whose content is markup: `data:,<x>` or `data: text/html,<script>`.
static DATA_URL_MARKUP: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"\bdata\s*:[^,<]{0,40},\s*<").ok());

/// XML that makes a parser load or run markup from elsewhere: namespace declarations and
/// schema locations inside a tag, XInclude and entity declarations.
pub(super) static XML_INJECTION: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(concat!(
        r#"<[a-z][\w:.-]*\s[^>]*?\b(?:xmlns(?::[\w-]+)?|xlink:href|xsi:schemalocation|xsi:nonamespaceschemalocation)\s*="#,
        r"|<[\w-]+:include\b|!entity\s+(?:%\s*)?[\w.-]+\s+(?:system|public)\b",
    ))
    .ok()
});

/// A tag written with `\xbc` and `\xbe`, or with the characters `¼` and `¾` (which NFKC turns
/// into `1⁄4` and `3⁄4`). Those are bytes 0xBC and 0xBE, and a decoder that drops the high bit,
/// as some US-ASCII decoders do, reads them as `<` and `>`. Only a tag name directly after the
/// opening byte counts, so "¼ cup" and byte dumps such as `\xbc\xde` do not. The groups are
/// the closing slash, the tag name and the attributes.
static SEVEN_BIT_TAG: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"(?:\\xbc|1\x{2044}4)(/?)([a-z][a-z0-9:-]{0,30})((?:[\s/][^<>]{0,200}?)?)(?:\\x[89a-f][0-9a-f])*(?:\\xbe|3\x{2044}4)").ok()
});

/// Maximum number of seven-bit tags read from one value.
const MAX_SEVEN_BIT_TAGS: usize = 16;

/// An event handler after a quote or slash that ends an attribute value or a tag name.
static BROKEN_ATTRIBUTE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#"(?:^|["'`/\s])on([a-z]{3,})\s*="#).ok());

/// The regular expressions of this module, compiled ahead by [`compile_patterns`].
static PATTERNS: [&LazyLock<Option<Regex>>; 6] = [
    &SINK,
    &STYLE_SCRIPT_URL,
    &DATA_URL_MARKUP,
    &XML_INJECTION,
    &SEVEN_BIT_TAG,
    &BROKEN_ATTRIBUTE,
];

/// Compiles the patterns of this module.
pub(super) fn compile_patterns() {
    for pattern in PATTERNS {
        LazyLock::force(pattern);
    }
}

/// Returns whether every pattern of this module is compiled.
pub(super) fn patterns_compiled() -> bool {
    PATTERNS.iter().all(|pattern| LazyLock::get(pattern).is_some())
}

/// Looks for cross-site scripting in a normalised, lowercased value whose bytes are `bytes`.
pub fn detect(value: &str, bytes: &ByteSet, hits: &mut Vec<Rule>) {
    if value.contains('<') {
        scan_tags(value, hits);
        if has_spaced_tag(value) {
            push(hits, rules::XSS_DANGEROUS_TAG);
        }
    }
    if contains_script_scheme(value) {
        push(hits, rules::XSS_SCRIPT_URL);
    }
    if bytes.contains(b'=')
        && value.contains("on")
        && let Some(regex) = BROKEN_ATTRIBUTE.as_ref()
    {
        let event = regex.captures_iter(value).any(|captures| {
            let (Some(whole), Some(name)) = (captures.get(0), captures.get(1)) else {
                return false;
            };
            // Browsers add event names every year, so an unknown `on...=` counts too when
            // whitespace or a quote sets it apart and the `=` follows the name directly, as
            // in an attribute ("the onion = 3 euros" is prose).
            let set_apart = whole.as_str().starts_with(|character: char| character.is_whitespace() || matches!(character, '"' | '\'' | '`'));
            let glued = whole.as_str().ends_with(&format!("{}=", name.as_str()));
            EVENT_NAMES.contains(&name.as_str()) || set_apart && glued && name.len() <= 40
        });
        if event {
            push(hits, rules::XSS_EVENT_HANDLER);
        }
    }
    if bytes.contains(b':')
        && (value.contains("expression(") || value.contains("-moz-binding") || value.contains("behavior:"))
    {
        push(hits, rules::XSS_STYLE_SCRIPT);
    }
    if may_have_style_script_url(value, bytes) && STYLE_SCRIPT_URL.as_ref().is_some_and(|regex| regex.is_match(value)) {
        push(hits, rules::XSS_STYLE_SCRIPT);
    }
    if bytes.contains(b':') && value.contains("data:") && DATA_URL_MARKUP.as_ref().is_some_and(|regex| regex.is_match(value)) {
        push(hits, rules::XSS_SCRIPT_URL);
    }
    // `\xbc` needs a backslash, and U+2044 starts with the byte 0xE2 in UTF-8.
    if bytes.contains_any(b"\\\xe2")
        && (value.contains("\\xbc") || value.contains('\u{2044}'))
        && has_seven_bit_element(value)
    {
        push(hits, rules::XSS_SEVEN_BIT_MARKUP);
    }
    if may_have_xml_injection(value, bytes) && XML_INJECTION.as_ref().is_some_and(|regex| regex.is_match(value)) {
        push(hits, rules::XSS_XML_INJECTION);
    }
    if may_have_sink(bytes)
        && let Some(regex) = SINK.as_ref()
        && regex.is_match(&strip_js_comments(value))
    {
        push(hits, rules::XSS_SCRIPT_SINK);
    }
}

/// Returns `false` only when [`STYLE_SCRIPT_URL`] cannot match: every match contains `url`
/// and a bracket.
pub(super) fn may_have_style_script_url(value: &str, bytes: &ByteSet) -> bool {
    bytes.contains(b'(') && value.contains("url")
}

/// Returns `false` only when [`XML_INJECTION`] cannot match: a match starts with a tag or
/// contains `!entity`.
pub(super) fn may_have_xml_injection(value: &str, bytes: &ByteSet) -> bool {
    bytes.contains(b'<') || bytes.contains(b'!') && value.contains("!entity")
}

/// Returns `false` only when [`SINK`] cannot match: every alternative needs a bracket, a
/// backtick, a dot, an `=` or a quote. Removing comments never adds a byte.
pub(super) fn may_have_sink(bytes: &ByteSet) -> bool {
    bytes.contains_any(b"(`.[='\x22")
}

/// Returns whether `value` contains a seven-bit element that runs something: an opening tag with
/// an event handler, or an opening tag closed later by its end tag. Browsers do not run a
/// `<script>` whose end tag is missing, so an opening tag alone does not count.
fn has_seven_bit_element(value: &str) -> bool {
    let Some(regex) = SEVEN_BIT_TAG.as_ref() else {
        return false;
    };
    let mut opened: Vec<&str> = Vec::new();
    for captures in regex.captures_iter(value).take(MAX_SEVEN_BIT_TAGS) {
        let closing = captures.get(1).is_some_and(|slash| !slash.is_empty());
        let name = captures.get(2).map_or("", |name| name.as_str());
        let attributes = captures.get(3).map_or("", |attributes| attributes.as_str());
        if closing {
            if opened.contains(&name) {
                return true;
            }
        } else if BROKEN_ATTRIBUTE.as_ref().is_some_and(|regex| regex.is_match(attributes)) {
            return true;
        } else {
            opened.push(name);
        }
    }
    false
}

fn push(hits: &mut Vec<Rule>, rule: Rule) {
    if !hits.contains(&rule) {
        hits.push(rule);
    }
}

/// Reads every tag in `value`, including one cut off by the end of the value.
fn scan_tags(value: &str, hits: &mut Vec<Rule>) {
    let bytes = value.as_bytes();
    let mut position = 0;
    while let Some(offset) = value[position..].find('<') {
        position += offset + 1;
        let mut cursor = position;
        if bytes.get(cursor) == Some(&b'/') {
            cursor += 1;
        }
        let name_start = cursor;
        while cursor < bytes.len() && is_tag_name_byte(bytes[cursor]) {
            cursor += 1;
        }
        if cursor == name_start || !bytes[name_start].is_ascii_alphabetic() {
            continue;
        }
        let name = &value[name_start..cursor];
        let name = name.rsplit(':').next().unwrap_or(name);
        if DANGEROUS_TAGS.contains(&name) {
            push(hits, rules::XSS_DANGEROUS_TAG);
        }
        position = scan_attributes(value, cursor, hits);
    }
}

/// Tags worth flagging when written with spaces inside, as in `<f o r m` or `< x: script`.
/// No browser reads those as tags, but filters that collapse whitespace do.
const SPACED_TAGS: &[&str] = &[
    "script", "iframe", "form", "dialog", "object", "embed", "applet", "svg", "frameset",
    "isindex", "style", "link", "meta", "base", "img",
];

/// Returns whether a `<` is followed by a dangerous tag name written with spaces between its
/// letters or after the `<` or a namespace prefix.
fn has_spaced_tag(value: &str) -> bool {
    value.match_indices('<').any(|(index, _)| {
        let after = &value[index + 1..];
        let spaced = after.starts_with(char::is_whitespace) || after.chars().nth(1).is_some_and(char::is_whitespace);
        if !spaced {
            return false;
        }
        let collapsed: String = after
            .chars()
            .take(48)
            .take_while(|character| character.is_ascii_alphabetic() || character.is_whitespace() || *character == ':')
            .filter(|character| !character.is_whitespace())
            .collect();
        let name = collapsed.rsplit(':').next().unwrap_or("");
        SPACED_TAGS.iter().any(|tag| name == *tag || name.starts_with(tag) && collapsed.contains(':'))
    })
}

fn is_tag_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-' || byte == b':' || byte == b'_'
}

/// Reads the attributes of a tag from `start` to its `>`. Returns where the tag ends.
fn scan_attributes(value: &str, start: usize, hits: &mut Vec<Rule>) -> usize {
    let bytes = value.as_bytes();
    let mut cursor = start;
    loop {
        while cursor < bytes.len() && (bytes[cursor].is_ascii_whitespace() || bytes[cursor] == b'/')
        {
            cursor += 1;
        }
        if cursor >= bytes.len() || bytes[cursor] == b'>' || bytes[cursor] == b'<' {
            return cursor;
        }

        let name_start = cursor;
        while cursor < bytes.len()
            && !bytes[cursor].is_ascii_whitespace()
            && !matches!(bytes[cursor], b'/' | b'>' | b'=' | b'<')
        {
            cursor += 1;
        }
        let name = &value[name_start..cursor];
        if cursor == name_start {
            cursor += 1;
            continue;
        }

        while cursor < bytes.len() && bytes[cursor].is_ascii_whitespace() {
            cursor += 1;
        }
        let mut attribute_value = "";
        if bytes.get(cursor) == Some(&b'=') {
            cursor += 1;
            while cursor < bytes.len() && bytes[cursor].is_ascii_whitespace() {
                cursor += 1;
            }
            let value_start;
            match bytes.get(cursor) {
                Some(quote @ (b'"' | b'\'' | b'`')) => {
                    value_start = cursor + 1;
                    cursor = value[value_start..]
                        .find(*quote as char)
                        .map_or(bytes.len(), |end| value_start + end);
                    attribute_value = &value[value_start..cursor];
                    cursor = (cursor + 1).min(bytes.len());
                }
                _ => {
                    value_start = cursor;
                    while cursor < bytes.len()
                        && !bytes[cursor].is_ascii_whitespace()
                        && bytes[cursor] != b'>'
                    {
                        cursor += 1;
                    }
                    attribute_value = &value[value_start..cursor];
                }
            }
        }

        let name = name.trim_start_matches(['"', '\'', '`']);
        if name.len() > 2 && name.starts_with("on") && name[2..].bytes().all(|b| b.is_ascii_alphabetic()) {
            push(hits, rules::XSS_EVENT_HANDLER);
        }
        if name == "pattern" {
            // An injected form control with a validation pattern lets CSS such as
            // `input:invalid` test the page's values against the attacker's regex without
            // any script.
            push(hits, rules::XSS_DANGEROUS_TAG);
        }
        if contains_script_scheme(attribute_value) {
            push(hits, rules::XSS_SCRIPT_URL);
        }
        if name == "style"
            && (attribute_value.contains("expression") || attribute_value.contains("url("))
        {
            push(hits, rules::XSS_STYLE_SCRIPT);
        }
    }
}

/// Returns whether `value` contains a `javascript:`, `vbscript:` or HTML `data:` URL. Browsers ignore
/// whitespace and control characters inside the scheme, so they are skipped here too.
pub(super) fn contains_script_scheme(value: &str) -> bool {
    // Every scheme ends with a colon, and removing whitespace adds none.
    value.contains(':') && contains_script_scheme_unfiltered(value)
}

/// Runs [`contains_script_scheme`] without its check for a colon.
pub(super) fn contains_script_scheme_unfiltered(value: &str) -> bool {
    let compact: String;
    let text = if value.bytes().any(|byte| byte.is_ascii_whitespace()) {
        compact = value.chars().filter(|character| !character.is_whitespace()).collect();
        compact.as_str()
    } else {
        value
    };
    for scheme in ["javascript:", "vbscript:", "livescript:"] {
        let mut rest = text;
        while let Some(index) = rest.find(scheme) {
            let after = &rest[index + scheme.len()..];
            if looks_like_script(after, value, scheme) {
                return true;
            }
            rest = after;
        }
    }
    text.contains("data:text/html") || text.contains("data:image/svg+xml")
}

/// Returns whether the text after a script scheme reads as code, so that prose such as
/// "JavaScript: the good parts" is not taken for a URL.
fn looks_like_script(after: &str, original: &str, scheme: &str) -> bool {
    let spaced_prose = original.contains(&format!("{scheme} ")) && {
        let words = original.split_whitespace().count();
        words > 3 && !after.contains('(') && !after.contains('`')
    };
    if spaced_prose {
        return false;
    }
    let first = after.bytes().next().unwrap_or(0);
    if matches!(first, b'/' | b'\'' | b'"' | b'`' | b'[' | b'(' | b'%' | b'\\' | b'{' | b'!' | b'+' | b'-' | b'~' | 0) {
        return true;
    }
    let word_length = after
        .bytes()
        .take_while(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'$'))
        .count();
    let next = after.as_bytes().get(word_length).copied().unwrap_or(0);
    matches!(next, b'(' | b'`' | b'=' | b'[' | b';' | 0)
}

/// Removes `/* ... */` comments, which JavaScript allows between any two tokens, so that
/// `document/**/.cookie` reads as `document.cookie`.
fn strip_js_comments(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains("/*") {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut output = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("/*") {
        output.push_str(&rest[..start]);
        match rest[start + 2..].find("*/") {
            Some(end) => rest = &rest[start + 2 + end + 2..],
            None => {
                rest = "";
                break;
            }
        }
    }
    output.push_str(rest);
    std::borrow::Cow::Owned(output)
}
