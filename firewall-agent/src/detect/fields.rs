//! Splitting a request into the named fields that detectors inspect.

use http::{HeaderMap, HeaderName};
use std::borrow::Cow;

use super::json_fields::{self, PathNode, Segment};
use super::normalise::FieldEncoding;

/// Most fields taken from one request. Fields past it are not inspected, so the work per
/// request stays bounded. A request with more gets a `protocol-too-many-fields` finding, so
/// that a value placed after the limit cannot pass unseen.
pub const MAX_FIELDS: usize = 1024;

/// Deepest JSON nesting walked: every level the JSON reader accepts, so depth hides no value
/// of a body that parses. A body nested deeper is not JSON to the reader and is inspected whole.
pub const MAX_JSON_DEPTH: usize = json_fields::MAX_NESTING;

/// Maximum field name length kept, in characters. Keys come from the client and can be long.
const MAX_NAME_CHARS: usize = 64;

/// Part of the request a field comes from. Some detectors only apply to some kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldKind {
    /// The request path.
    Path,
    /// A query key or value.
    Query,
    /// A cookie name or value.
    Cookie,
    /// A header value.
    Header,
    /// A key or value of a form, multipart or JSON body.
    Body,
    /// The file name of a multipart upload.
    FileName,
    /// A whole body of a type that is not parsed, such as plain text.
    RawBody,
}

/// One field of a request, as raw bytes. [`RequestFields::name`] spells out its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field<'a> {
    name: FieldName<'a>,
    /// Raw bytes, still encoded. They are borrowed from the request, except for JSON strings
    /// with escapes (decoded), XML fields and multipart part and file names (copied).
    pub raw: Cow<'a, [u8]>,
    /// Encoding of the bytes.
    pub encoding: FieldEncoding,
    /// Part of the request the field comes from.
    pub kind: FieldKind,
}

/// A field's name, or what it is made from. Names are only needed for findings, so the ones
/// that take work to spell out are kept as parts until then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum FieldName<'a> {
    Text(Cow<'a, str>),
    /// `PREFIX:KEY` with the raw key of a query, form or cookie pair, shown as
    /// [`display_name`] shows it.
    Keyed { prefix: &'static str, key: &'a [u8] },
    /// `header:NAME`.
    Header(&'a str),
    /// `json:` and the path of a JSON value, by its index in [`RequestFields::json_paths`];
    /// `None` for the document's root.
    Json(Option<u32>),
}

/// The fields of one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestFields<'a> {
    fields: Vec<Field<'a>>,
    /// The paths of the JSON body's values, each linking to its parent's.
    json_paths: Vec<PathNode<'a>>,
    /// Whether a value was left out because the request has more than [`MAX_FIELDS`] fields.
    overflowed: bool,
    /// A charset of the body that is not on [`ALLOWED_CHARSETS`], as the request names it.
    unexpected_charset: Option<String>,
    /// A media type given as the value of a `Content-Type` parameter, as the request names it.
    hidden_media_type: Option<String>,
}

impl<'a> RequestFields<'a> {
    /// Iterates over the fields.
    pub fn iter(&self) -> impl Iterator<Item = &Field<'a>> {
        self.fields.iter()
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Returns whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Returns whether the request has more than [`MAX_FIELDS`] fields, so some of its values
    /// were not inspected.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Returns the body's charset when it is not on [`ALLOWED_CHARSETS`], or the whole
    /// `Content-Type` value when it names more than one charset.
    pub fn unexpected_charset(&self) -> Option<&str> {
        self.unexpected_charset.as_deref()
    }

    /// Returns a media type that a `Content-Type` parameter gives as its value, such as the
    /// `application/json` of `application/x-www-form-urlencoded; boundary="application/json"`.
    pub fn hidden_media_type(&self) -> Option<&str> {
        self.hidden_media_type.as_deref()
    }

    /// Records that a value was left out because of the cap.
    pub(super) fn mark_overflowed(&mut self) {
        self.overflowed = true;
    }

    /// Returns the name of `field`, which is one of these fields, as findings and exclusions
    /// use it: `path`, `query:KEY`, `cookie:NAME`, `header:NAME`, `body:KEY` (form),
    /// `multipart:NAME`, `json:PATH`, `xml:ELEMENT`, `xml:ELEMENT@ATTRIBUTE` or `body`.
    pub fn name<'f>(&'f self, field: &'f Field<'a>) -> Cow<'f, str> {
        match &field.name {
            FieldName::Text(name) => Cow::Borrowed(name.as_ref()),
            FieldName::Keyed { prefix, key } => Cow::Owned(format!("{prefix}:{}", display_name(key))),
            FieldName::Header(name) => Cow::Owned(format!("header:{name}")),
            FieldName::Json(path) => Cow::Owned(self.json_name(*path)),
        }
    }

    /// Spells out `json:PATH`, shortening long keys and paths as [`join_path`] does.
    fn json_name(&self, mut node: Option<u32>) -> String {
        let mut chain = Vec::new();
        while let Some(index) = node {
            let Some(path) = self.json_paths.get(index as usize) else {
                break;
            };
            chain.push(&path.segment);
            node = path.parent;
        }
        let mut path = String::new();
        for segment in chain.into_iter().rev() {
            path = match segment {
                Segment::Key(key) => join_path(&path, key),
                Segment::Index(index) => join_path(&path, &index.to_string()),
            };
        }
        let mut name = String::with_capacity("json:".len() + path.len());
        name.push_str("json:");
        name.push_str(&path);
        name
    }

    /// Adds a field borrowed from the request unless the cap is reached.
    fn push(&mut self, name: impl Into<Cow<'a, str>>, raw: &'a [u8], encoding: FieldEncoding, kind: FieldKind) {
        self.push_named(FieldName::Text(name.into()), raw, encoding, kind);
    }

    /// Adds a field borrowed from the request, named by `name`, unless the cap is reached.
    fn push_named(&mut self, name: FieldName<'a>, raw: &'a [u8], encoding: FieldEncoding, kind: FieldKind) {
        self.push_raw(name, Cow::Borrowed(raw), encoding, kind);
    }

    /// Adds a field with a copy of `raw` unless the cap is reached.
    fn push_owned(&mut self, name: String, raw: &[u8], encoding: FieldEncoding, kind: FieldKind) {
        if self.fields.len() < MAX_FIELDS {
            self.push_raw(FieldName::Text(Cow::Owned(name)), Cow::Owned(raw.to_vec()), encoding, kind);
        } else if !raw.is_empty() {
            self.overflowed = true;
        }
    }

    /// Adds a field unless the cap is reached or it is empty.
    pub(super) fn push_raw(&mut self, name: FieldName<'a>, raw: Cow<'a, [u8]>, encoding: FieldEncoding, kind: FieldKind) {
        if raw.is_empty() {
            return;
        }
        if self.fields.len() < MAX_FIELDS {
            self.fields.push(Field { name, raw, encoding, kind });
        } else {
            self.overflowed = true;
        }
    }

    /// Reserves room for `additional` more fields and as many JSON paths.
    pub(super) fn reserve(&mut self, additional: usize) {
        self.fields.reserve(additional);
        self.json_paths.reserve(additional);
    }

    /// Records a JSON path and returns its index.
    pub(super) fn push_path(&mut self, parent: Option<u32>, segment: Segment<'a>) -> u32 {
        let index = u32::try_from(self.json_paths.len()).unwrap_or(u32::MAX);
        self.json_paths.push(PathNode { parent, segment });
        index
    }

    /// Returns how many JSON paths are recorded.
    #[cfg(test)]
    pub(super) fn json_path_count(&self) -> usize {
        self.json_paths.len()
    }

    /// Returns the point that [`Self::restore`] goes back to.
    fn checkpoint(&self) -> (usize, usize, bool) {
        (self.fields.len(), self.json_paths.len(), self.overflowed)
    }

    /// Drops the fields and paths added after `checkpoint`, and any overflow since.
    fn restore(&mut self, (fields, paths, overflowed): (usize, usize, bool)) {
        self.fields.truncate(fields);
        self.json_paths.truncate(paths);
        self.overflowed = overflowed;
    }
}

/// The parts of a request that fields are taken from.
#[derive(Clone, Copy, Debug)]
pub struct RequestParts<'a> {
    /// The path, still percent-encoded.
    pub path: &'a str,
    /// The query without `?`, still percent-encoded.
    pub query: Option<&'a str>,
    /// All headers.
    pub headers: &'a HeaderMap,
    /// Headers whose values are inspected, besides `Cookie`.
    pub inspected_headers: &'a [HeaderName],
    /// The buffered body.
    pub body: &'a [u8],
}

/// Splits a request into fields: the path, every query key and value, every cookie name and
/// value, the inspected headers, every header that is not a standard one, and the body by its
/// content type.
pub fn extract_fields<'a>(parts: RequestParts<'a>) -> RequestFields<'a> {
    let mut fields = RequestFields::default();
    fields.push("path", parts.path.as_bytes(), FieldEncoding::Plain, FieldKind::Path);
    if let Some(query) = parts.query {
        push_form_pairs(&mut fields, query.as_bytes(), "query", FieldKind::Query);
    }
    for cookie_header in parts.headers.get_all(http::header::COOKIE) {
        push_cookies(&mut fields, cookie_header.as_bytes());
    }
    for name in parts.inspected_headers {
        for value in parts.headers.get_all(name) {
            fields.push_named(
                FieldName::Header(name.as_str()),
                value.as_bytes(),
                FieldEncoding::Plain,
                FieldKind::Header,
            );
        }
    }
    for (name, value) in parts.headers {
        if !is_standard_header(name.as_str()) && !parts.inspected_headers.contains(name) {
            let kind = if FILE_NAME_HEADERS.contains(&name.as_str()) {
                FieldKind::FileName
            } else {
                FieldKind::Header
            };
            fields.push_named(FieldName::Header(name.as_str()), value.as_bytes(), FieldEncoding::Plain, kind);
        }
    }
    push_body(&mut fields, parts.headers, parts.body);
    if !parts.body.is_empty() {
        fields.unexpected_charset = unexpected_charset(parts.headers);
    }
    // Unlike a charset, a hidden media type is a probe even on a request without a body.
    fields.hidden_media_type = hidden_media_type(parts.headers);
    fields
}

/// Request headers whose values are not inspected unless configured: the standard ones,
/// whose syntax HTTP fixes, and the credentials, which would only leak into excerpts.
/// Application and vendor headers (`X-Filename`, `X-Api-Version`) carry client input as freely
/// as a query does, so they are inspected.
const STANDARD_HEADERS: &[&str] = &[
    "accept", "accept-charset", "accept-encoding", "accept-language", "authorization",
    "cache-control", "connection", "content-encoding", "content-length", "content-type",
    "cookie", "date", "dnt", "expect", "forwarded", "host", "if-match", "if-modified-since",
    "if-none-match", "if-range", "if-unmodified-since", "keep-alive", "max-forwards", "origin",
    "pragma", "priority", "proxy-authorization", "proxy-connection", "range", "referer",
    "request-range", "te", "traceparent", "tracestate", "transfer-encoding", "upgrade",
    "upgrade-insecure-requests", "user-agent", "via", "x-forwarded-for", "x-forwarded-host",
    "x-forwarded-port", "x-forwarded-proto", "x-real-ip", "x-request-id",
];

/// Headers in which upload clients and JavaScript uploaders send the name of the uploaded file,
/// inspected as file names.
const FILE_NAME_HEADERS: &[&str] = &["x-filename", "x_filename", "x.filename", "x-file-name"];

fn is_standard_header(name: &str) -> bool {
    name.starts_with("sec-") || STANDARD_HEADERS.contains(&name)
}

fn push_form_pairs<'a>(fields: &mut RequestFields<'a>, raw: &'a [u8], prefix: &'static str, kind: FieldKind) {
    for pair in raw.split(|byte| *byte == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = match pair.iter().position(|byte| *byte == b'=') {
            Some(index) => (&pair[..index], &pair[index + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        let name = FieldName::Keyed { prefix, key };
        fields.push_named(name.clone(), key, FieldEncoding::Form, kind);
        fields.push_named(name, value, FieldEncoding::Form, kind);
    }
}

fn push_cookies<'a>(fields: &mut RequestFields<'a>, header: &'a [u8]) {
    for cookie in header.split(|byte| *byte == b';') {
        let cookie = cookie.trim_ascii();
        let (name, value) = match cookie.iter().position(|byte| *byte == b'=') {
            Some(index) => (&cookie[..index], &cookie[index + 1..]),
            None => (cookie, &cookie[cookie.len()..]),
        };
        let field = FieldName::Keyed { prefix: "cookie", key: name };
        fields.push_named(field.clone(), name, FieldEncoding::Plain, FieldKind::Cookie);
        fields.push_named(field, value, FieldEncoding::Plain, FieldKind::Cookie);
    }
}

/// Returns a short, printable form of a raw key for field names: normalised and cut to
/// [`MAX_NAME_CHARS`].
fn display_name(raw: &[u8]) -> String {
    let decoded = super::normalise::normalise(raw, FieldEncoding::Form);
    decoded
        .folded
        .chars()
        .filter(|character| !character.is_control())
        .take(MAX_NAME_CHARS)
        .collect()
}

fn push_body<'a>(fields: &mut RequestFields<'a>, headers: &HeaderMap, body: &'a [u8]) {
    // A body with a content coding such as gzip cannot be read here. The validation stage
    // rejects it with 415 unless `encoded_bodies` lets it through unread.
    if body.is_empty() || crate::validation::request::has_content_coding(headers) {
        return;
    }
    let original_content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let content_type = original_content_type.to_ascii_lowercase();
    let essence = content_type.split(';').next().unwrap_or("").trim();

    if essence == "application/x-www-form-urlencoded" || (essence.is_empty() && looks_like_form(body))
    {
        push_form_pairs(fields, body, "body", FieldKind::Body);
    } else if essence == "application/json" || essence.ends_with("+json") {
        let checkpoint = fields.checkpoint();
        if json_fields::push_json(fields, body).is_err() {
            fields.restore(checkpoint);
            fields.push("body", body, FieldEncoding::Plain, FieldKind::RawBody);
        }
    } else if essence == "multipart/form-data" {
        // The boundary is case-sensitive, so it is read from the header as sent.
        // A body whose parts cannot be read with one boundary is inspected whole.
        let parts = multipart_boundary(original_content_type)
            .map_or(0, |boundary| push_multipart(fields, body, boundary.as_bytes()));
        if parts == 0 {
            fields.push("body", body, FieldEncoding::Plain, FieldKind::RawBody);
        }
    } else if essence.ends_with("/xml") || essence.ends_with("+xml") {
        push_xml(fields, body);
    } else if essence.is_empty() && !body.iter().any(u8::is_ascii_whitespace) {
        // A body without a content type and without whitespace is most likely form-encoded
        // text that is not a `key=value` list, so `+` and `%XX` are decoded as in a form.
        fields.push("body", body, FieldEncoding::Form, FieldKind::RawBody);
    } else if is_binary_media_type(essence) && looks_binary(body) {
        // NOTE: a binary upload is not inspected, like a multipart file, because its bytes set
        // off the NUL and UTF-8 rules on every image. Valid UTF-8 text under a binary type is
        // still inspected, but text with a NUL byte added is not.
    } else {
        fields.push("body", body, FieldEncoding::Plain, FieldKind::RawBody);
    }
}

/// Charsets a request body may be declared in, all of them ASCII-compatible. In others, such as
/// EBCDIC (`ibm037`) or UTF-16, an attack that the upstream decodes is noise to the detectors.
pub const ALLOWED_CHARSETS: &[&str] = &["utf-8", "utf8", "us-ascii", "iso-8859-1", "iso-8859-15", "windows-1252"];

/// Top-level media types, by which a parameter value that names a media type is known.
const TOP_LEVEL_TYPES: [&str; 9] = ["application", "text", "multipart", "image", "audio", "video", "font", "message", "model"];

/// Returns the value of a `Content-Type` parameter that is itself a media type, at most
/// [`MAX_NAME_CHARS`] characters. A firewall that picks its body parser by searching the header
/// for `json` or `xml` reads such a body with the wrong parser, so clients that send one are
/// probing for that. The `type` and `start-info` parameters of `multipart/related` name media
/// types by design and are left alone.
fn hidden_media_type(headers: &HeaderMap) -> Option<String> {
    let text = headers.get(http::header::CONTENT_TYPE)?.to_str().ok()?;
    media_type_parameters(text).find_map(|(name, value)| {
        if name.eq_ignore_ascii_case("type") || name.eq_ignore_ascii_case("start-info") {
            return None;
        }
        let value = value.trim_matches(['"', '\'']);
        let (top_level, subtype) = value.split_once('/')?;
        let media_type = TOP_LEVEL_TYPES.iter().any(|known| known.eq_ignore_ascii_case(top_level.trim()))
            && !subtype.trim().is_empty();
        media_type.then(|| value.chars().take(MAX_NAME_CHARS).collect())
    })
}

/// Returns the `charset` of the `Content-Type` when it is not on [`ALLOWED_CHARSETS`], or the
/// whole value when it names more than one, at most [`MAX_NAME_CHARS`] characters.
fn unexpected_charset(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(http::header::CONTENT_TYPE)?;
    let shorten = |text: &str| text.chars().take(MAX_NAME_CHARS).collect::<String>();
    let Ok(text) = value.to_str() else {
        return Some(shorten(&String::from_utf8_lossy(value.as_bytes())));
    };
    let mut charsets = media_type_parameters(text)
        .filter(|(name, _)| name.eq_ignore_ascii_case("charset"))
        .map(|(_, value)| value.trim_matches(['"', '\'']));
    let charset = charsets.next()?;
    if charsets.next().is_some() {
        return Some(shorten(text));
    }
    let allowed = ALLOWED_CHARSETS.iter().any(|allowed| allowed.eq_ignore_ascii_case(charset));
    (!allowed).then(|| shorten(charset))
}

/// Returns the parameters of a media type such as `Content-Type`, as name and value with the
/// surrounding whitespace removed and any quotes kept. Parameters without `=` are skipped.
fn media_type_parameters(media_type: &str) -> impl Iterator<Item = (&str, &str)> {
    media_type.split(';').skip(1).filter_map(|parameter| {
        let (name, value) = parameter.split_once('=')?;
        Some((name.trim(), value.trim()))
    })
}

/// Returns whether `essence`, a lowercase media type without parameters, names binary
/// content: images, audio, video, fonts, archives and other opaque files.
fn is_binary_media_type(essence: &str) -> bool {
    const BINARY: &[&str] = &[
        "application/octet-stream",
        "application/pdf",
        "application/zip",
        "application/gzip",
        "application/x-gzip",
        "application/x-tar",
        "application/x-7z-compressed",
        "application/zstd",
        "application/wasm",
        "application/protobuf",
        "application/x-protobuf",
        "application/vnd.google.protobuf",
        "application/msgpack",
        "application/x-msgpack",
        "application/vnd.msgpack",
        "application/cbor",
    ];
    ["image/", "audio/", "video/", "font/"]
        .iter()
        .any(|prefix| essence.starts_with(prefix))
        || BINARY.contains(&essence)
}

/// Returns whether `body` is not text: it has a NUL byte or is not UTF-8.
fn looks_binary(body: &[u8]) -> bool {
    body.contains(&0) || std::str::from_utf8(body).is_err()
}

/// Takes the attribute values and text of an XML body as fields, without building a tree:
/// `xml:ELEMENT@ATTRIBUTE` and `xml:ELEMENT`. Entities stay encoded here; normalisation
/// decodes them. Markup that does not parse as XML still yields what could be read.
fn push_xml(fields: &mut RequestFields<'_>, body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    let mut element = String::new();
    let mut rest: &str = &text;
    while !rest.is_empty() && fields.len() < MAX_FIELDS {
        let Some(open) = rest.find('<') else {
            push_xml_text(fields, &element, rest);
            break;
        };
        push_xml_text(fields, &element, &rest[..open]);
        rest = &rest[open + 1..];
        // Character data is text whatever it contains, `>` included.
        if let Some(data) = rest.strip_prefix("![CDATA[") {
            let (text, after) = data.split_once("]]>").unwrap_or((data, ""));
            push_xml_text(fields, &element, text);
            rest = after;
            continue;
        }
        let close = rest.find('>').unwrap_or(rest.len());
        let tag = &rest[..close];
        rest = rest.get(close + 1..).unwrap_or("");
        // A document type declaration, and the entities it declares, are inspected whole.
        if tag.get(..8).is_some_and(|start| start.eq_ignore_ascii_case("!doctype"))
            || tag.get(..7).is_some_and(|start| start.eq_ignore_ascii_case("!entity"))
        {
            fields.push_owned("xml:!DOCTYPE".to_owned(), format!("<{tag}>").as_bytes(), FieldEncoding::Plain, FieldKind::Body);
            continue;
        }
        if tag.starts_with(['?', '!', '/']) {
            continue;
        }
        let name_end = tag
            .find(|character: char| character.is_whitespace() || character == '/')
            .unwrap_or(tag.len());
        element = tag[..name_end].chars().take(MAX_NAME_CHARS).collect();
        fields.push_owned(format!("xml:{element}"), &tag.as_bytes()[..name_end], FieldEncoding::Plain, FieldKind::Body);
        push_xml_attributes(fields, &element, &tag[name_end..]);
    }
    if fields.len() >= MAX_FIELDS && !only_closing_tags(rest) {
        fields.mark_overflowed();
    }
}

/// Returns whether `rest` of an XML body has nothing but closing tags and whitespace.
fn only_closing_tags(mut rest: &str) -> bool {
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return true;
        }
        let Some(tag) = rest.strip_prefix("</") else {
            return false;
        };
        rest = tag.split_once('>').map_or("", |(_, after)| after);
    }
}

fn push_xml_text(fields: &mut RequestFields<'_>, element: &str, text: &str) {
    let text = text.trim();
    if !text.is_empty() {
        fields.push_owned(format!("xml:{element}"), text.as_bytes(), FieldEncoding::Plain, FieldKind::Body);
    }
}

fn push_xml_attributes(fields: &mut RequestFields<'_>, element: &str, mut attributes: &str) {
    while let Some(equals) = attributes.find('=') {
        let name = attributes[..equals].trim();
        let after = attributes[equals + 1..].trim_start();
        let Some(quote) = after.chars().next().filter(|quote| matches!(quote, '"' | '\'')) else {
            break;
        };
        let value_and_rest = &after[1..];
        let end = value_and_rest.find(quote).unwrap_or(value_and_rest.len());
        let field = format!("xml:{element}@{}", name.chars().take(MAX_NAME_CHARS).collect::<String>());
        fields.push_owned(field.clone(), name.as_bytes(), FieldEncoding::Plain, FieldKind::Body);
        fields.push_owned(
            field,
            &value_and_rest.as_bytes()[..end],
            FieldEncoding::Plain,
            FieldKind::Body,
        );
        attributes = value_and_rest.get(end + 1..).unwrap_or("");
    }
}

/// Returns whether a body without a content type reads as `key=value&key=value`, because many
/// clients send forms without declaring them.
fn looks_like_form(body: &[u8]) -> bool {
    let Some(first) = body.split(|byte| *byte == b'&').next() else {
        return false;
    };
    match first.iter().position(|byte| *byte == b'=') {
        Some(index) => first[..index]
            .iter()
            .all(|byte| !byte.is_ascii_whitespace() && !byte.is_ascii_control()),
        None => false,
    }
}

fn join_path(path: &str, key: &str) -> String {
    if path.len() > MAX_NAME_CHARS * 2 {
        return path.to_owned();
    }
    let mut joined = String::with_capacity(path.len() + 1 + key.len().min(MAX_NAME_CHARS * 4));
    if !path.is_empty() {
        joined.push_str(path);
        joined.push('.');
    }
    joined.extend(key.chars().filter(|character| !character.is_control()).take(MAX_NAME_CHARS));
    joined
}

fn multipart_boundary(content_type: &str) -> Option<String> {
    let mut boundaries = media_type_parameters(content_type)
        .filter(|(name, _)| name.eq_ignore_ascii_case("boundary"))
        .map(|(_, value)| value.trim_matches('"').to_owned());
    let boundary = boundaries.next()?;
    // Servers disagree on which of two boundaries counts, so neither is trusted.
    boundaries.next().is_none().then_some(boundary)
}

/// Takes the fields of a multipart body: each part's name, its file name, and the value of
/// parts that carry no file. Returns the number of parts the boundary delimits.
fn push_multipart<'a>(fields: &mut RequestFields<'a>, body: &'a [u8], boundary: &[u8]) -> usize {
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(boundary);
    let mut parts = 0;

    for part in split_bytes(body, &delimiter).skip(1) {
        // Some servers also accept bare line feeds as line ends, so attackers send them.
        let part = part.strip_prefix(b"\r\n").or_else(|| part.strip_prefix(b"\n")).unwrap_or(part);
        if part.starts_with(b"--") {
            break;
        }
        parts += 1;
        let Some((header_end, separator_length)) = find_bytes(part, b"\r\n\r\n")
            .map(|index| (index, 4))
            .or_else(|| find_bytes(part, b"\n\n").map(|index| (index, 2)))
        else {
            continue;
        };
        let head = String::from_utf8_lossy(&part[..header_end]).to_ascii_lowercase();
        let content = &part[header_end + separator_length..];
        let content = content
            .strip_suffix(b"\r\n")
            .or_else(|| content.strip_suffix(b"\n"))
            .unwrap_or(content);

        let name = disposition_parameter(&head, "name").unwrap_or_default();
        let field = format!("multipart:{}", name.chars().take(MAX_NAME_CHARS).collect::<String>());
        fields.push_owned(field.clone(), name.as_bytes(), FieldEncoding::Plain, FieldKind::Body);
        match disposition_parameter(&head, "filename") {
            // NOTE: file contents are not inspected; only their names are.
            Some(file_name) => fields.push_owned(
                format!("{field}:filename"),
                file_name.as_bytes(),
                FieldEncoding::Plain,
                FieldKind::FileName,
            ),
            None => fields.push(field, content, FieldEncoding::Plain, FieldKind::Body),
        }
    }
    parts
}

fn disposition_parameter(head: &str, parameter: &str) -> Option<String> {
    let line = head
        .lines()
        .find(|line| line.starts_with("content-disposition:"))?;
    line.split(';').skip(1).find_map(|item| {
        let (name, value) = item.split_once('=')?;
        (name.trim() == parameter).then(|| value.trim().trim_matches('"').to_owned())
    })
}

fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn split_bytes<'a, 'd>(haystack: &'a [u8], delimiter: &'d [u8]) -> impl Iterator<Item = &'a [u8]> + use<'a, 'd> {
    let mut rest = Some(haystack);
    std::iter::from_fn(move || {
        let current = rest?;
        match find_bytes(current, delimiter) {
            Some(index) => {
                rest = Some(&current[index + delimiter.len()..]);
                Some(&current[..index])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}
