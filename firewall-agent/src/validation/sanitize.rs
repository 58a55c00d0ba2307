//! HTML sanitization of the JSON string fields a route declares as rich text.
//!
//! Only the bytes of a changed string literal are replaced. Every other byte of the body, such
//! as whitespace, key order, number spelling, escapes and undeclared fields like passwords,
//! stays exactly as the client sent it.

use bytes::Bytes;

use super::json::StringSpan;

/// Result of sanitizing a body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sanitized {
    /// The body to forward: the original when nothing changed.
    pub body: Bytes,
    /// JSON pointers of the fields that changed.
    pub changed: Vec<String>,
}

/// Cleans the string values at `spans` (from [`super::json::parse_watching`] on `body`) with
/// ammonia's default policy, which keeps a safe subset of HTML and removes scripts, event
/// handler attributes and dangerous URLs.
pub fn sanitize_fields(body: &Bytes, spans: &[StringSpan]) -> Sanitized {
    let mut replacements = Vec::new();
    for span in spans {
        let cleaned = ammonia::clean(&span.value);
        if cleaned != span.value {
            // Serializing a `String` cannot fail.
            let literal = serde_json::to_string(&cleaned).unwrap_or_else(|_| "\"\"".to_owned());
            replacements.push((span, literal));
        }
    }
    if replacements.is_empty() {
        return Sanitized {
            body: body.clone(),
            changed: Vec::new(),
        };
    }

    let mut rewritten = Vec::with_capacity(body.len());
    let mut copied_up_to = 0;
    for (span, literal) in &replacements {
        rewritten.extend_from_slice(&body[copied_up_to..span.range.start]);
        rewritten.extend_from_slice(literal.as_bytes());
        copied_up_to = span.range.end;
    }
    rewritten.extend_from_slice(&body[copied_up_to..]);

    Sanitized {
        body: Bytes::from(rewritten),
        changed: replacements
            .iter()
            .map(|(span, _)| span.pointer.clone())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::json::{JsonLimits, PointerPattern, parse_watching};

    fn sanitize(body: &str, pointers: &[&str]) -> Sanitized {
        let patterns: Vec<PointerPattern> = pointers
            .iter()
            .map(|pointer| PointerPattern::parse(pointer).expect("valid pointer"))
            .collect();
        let body = Bytes::from(body.to_owned());
        let parsed = parse_watching(&body, JsonLimits::default(), &patterns).expect("valid JSON");
        sanitize_fields(&body, &parsed.strings)
    }

    #[test]
    fn sanitize_cleans_only_declared_field() {
        let body = "{ \"password\" : \"<script>p\\u0061ss</script>\",\n  \"bio\":\"<b>hi</b><script>alert(1)</script>\", \"n\": 1.50 }";

        let sanitized = sanitize(body, &["/bio"]);

        assert_eq!(sanitized.changed, vec!["/bio".to_owned()]);
        let expected = "{ \"password\" : \"<script>p\\u0061ss</script>\",\n  \"bio\":\"<b>hi</b>\", \"n\": 1.50 }";
        assert_eq!(std::str::from_utf8(&sanitized.body).expect("UTF-8"), expected);
    }

    #[test]
    fn sanitize_keeps_clean_body_identical() {
        let body = "{\"bio\": \"<p>plain <em>text</em></p>\", \"token\": \"a\\/b\"}";

        let sanitized = sanitize(body, &["/bio"]);

        assert!(sanitized.changed.is_empty());
        assert_eq!(&sanitized.body[..], body.as_bytes());
    }

    #[test]
    fn sanitize_handles_wildcard_and_several_fields() {
        let body = r#"{"posts":[{"html":"<img src=x onerror=alert(1)>"},{"html":"ok"},{"html":"<a href=\"javascript:x()\">l</a>"}],"raw":"<script></script>"}"#;

        let sanitized = sanitize(body, &["/posts/*/html"]);

        assert_eq!(sanitized.changed, vec!["/posts/0/html".to_owned(), "/posts/2/html".to_owned()]);
        let value: serde_json::Value = serde_json::from_slice(&sanitized.body).expect("valid JSON");
        assert_eq!(value["posts"][0]["html"], "<img src=\"x\">");
        assert_eq!(value["posts"][1]["html"], "ok");
        assert_eq!(value["posts"][2]["html"], "<a rel=\"noopener noreferrer\">l</a>");
        assert_eq!(value["raw"], "<script></script>");
    }

    #[test]
    fn sanitize_ignores_non_string_values() {
        let body = r#"{"bio": {"html": "<script></script>"}}"#;

        let sanitized = sanitize(body, &["/bio"]);

        assert!(sanitized.changed.is_empty());
        assert_eq!(&sanitized.body[..], body.as_bytes());
    }
}
