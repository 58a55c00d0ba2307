//! OpenAPI path templates, such as `/pets/{petId}` or `/files/{name}.json`, matched against
//! percent-decoded request paths.

use std::fmt;

/// One `/`-separated segment of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum TemplateSegment {
    /// Text that must match exactly.
    Literal(String),
    /// A parameter, with optional literal text around it in the same segment.
    Parameter {
        name: String,
        prefix: String,
        suffix: String,
    },
}

/// A parsed path template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathTemplate {
    text: String,
    segments: Vec<TemplateSegment>,
}

/// Error from [`PathTemplate::parse`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid path template {template:?}: {reason}")]
pub struct PathTemplateError {
    /// The template as written.
    pub template: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Error from [`split_path`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("request path segment {index} is not valid percent-encoded UTF-8")]
pub struct PathDecodeError {
    /// Position of the segment, counting from 0.
    pub index: usize,
}

/// Splits a request path into percent-decoded segments. `/` is `[""]` and `/a/` is
/// `["a", ""]`, so a trailing slash is significant. An encoded slash (`%2F`) stays inside its
/// segment.
///
/// # Errors
///
/// [`PathDecodeError`] when a segment does not decode to UTF-8.
pub fn split_path(path: &str) -> Result<Vec<String>, PathDecodeError> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    trimmed
        .split('/')
        .enumerate()
        .map(|(index, segment)| {
            percent_encoding::percent_decode_str(segment)
                .decode_utf8()
                .map(|decoded| decoded.into_owned())
                .map_err(|_| PathDecodeError { index })
        })
        .collect()
}

impl PathTemplate {
    /// Parses a template. Each segment is literal text or contains one `{name}`, which matches a
    /// non-empty value.
    ///
    /// # Errors
    ///
    /// [`PathTemplateError`] when the template does not start with `/`, a brace is unbalanced,
    /// a parameter name is empty or repeated, or a segment holds two parameters.
    pub fn parse(text: &str) -> Result<Self, PathTemplateError> {
        let error = |reason| PathTemplateError {
            template: text.to_owned(),
            reason,
        };
        let Some(rest) = text.strip_prefix('/') else {
            return Err(error("a path template starts with '/'"));
        };

        let mut segments = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for segment in rest.split('/') {
            let Some(open) = segment.find('{') else {
                if segment.contains('}') {
                    return Err(error("'}' without '{'"));
                }
                segments.push(TemplateSegment::Literal(segment.to_owned()));
                continue;
            };
            let Some(close) = segment[open..].find('}').map(|offset| open + offset) else {
                return Err(error("'{' without '}'"));
            };
            let name = &segment[open + 1..close];
            let suffix = &segment[close + 1..];
            if name.is_empty() || name.contains('{') {
                return Err(error("a parameter needs a name between '{' and '}'"));
            }
            if suffix.contains('{') || suffix.contains('}') {
                return Err(error("a segment may hold one parameter only"));
            }
            if names.contains(&name) {
                return Err(error("a parameter name appears twice"));
            }
            names.push(name);
            segments.push(TemplateSegment::Parameter {
                name: name.to_owned(),
                prefix: segment[..open].to_owned(),
                suffix: suffix.to_owned(),
            });
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    /// Returns the template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Returns the number of literal segments. OpenAPI gives a concrete path precedence over a
    /// templated one, so the matcher prefers the template with more literal segments.
    pub fn literal_segments(&self) -> usize {
        self.segments
            .iter()
            .filter(|segment| matches!(segment, TemplateSegment::Literal(_)))
            .count()
    }

    /// Matches decoded path segments, returning the parameters' names and values in template
    /// order.
    pub fn matches(&self, segments: &[String]) -> Option<Vec<(String, String)>> {
        if segments.len() != self.segments.len() {
            return None;
        }
        let mut parameters = Vec::new();
        for (template, segment) in self.segments.iter().zip(segments) {
            match template {
                TemplateSegment::Literal(literal) => {
                    if literal != segment {
                        return None;
                    }
                }
                TemplateSegment::Parameter {
                    name,
                    prefix,
                    suffix,
                } => {
                    let value = segment
                        .strip_prefix(prefix.as_str())
                        .and_then(|rest| rest.strip_suffix(suffix.as_str()))
                        .filter(|value| !value.is_empty())?;
                    parameters.push((name.clone(), value.to_owned()));
                }
            }
        }
        Some(parameters)
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn segments(path: &str) -> Vec<String> {
        split_path(path).expect("valid path")
    }

    #[test]
    fn template_matches_literal_and_parameters() {
        let template = PathTemplate::parse("/pets/{petId}/photos/{photo}.jpg").expect("valid");

        let matched = template.matches(&segments("/pets/42/photos/front.jpg"));

        assert_eq!(
            matched,
            Some(vec![
                ("petId".to_owned(), "42".to_owned()),
                ("photo".to_owned(), "front".to_owned())
            ])
        );
        assert_eq!(template.matches(&segments("/pets/42/photos/front.png")), None);
        assert_eq!(template.matches(&segments("/pets/42/photos/.jpg")), None);
        assert_eq!(template.matches(&segments("/pets/42/photos")), None);
        assert_eq!(template.matches(&segments("/pets//photos/a.jpg")), None);
    }

    #[test]
    fn template_matches_root_and_trailing_slash_strictly() {
        let root = PathTemplate::parse("/").expect("valid");
        let pets = PathTemplate::parse("/pets").expect("valid");

        assert!(root.matches(&segments("/")).is_some());
        assert!(root.matches(&segments("/pets")).is_none());
        assert!(pets.matches(&segments("/pets")).is_some());
        assert!(pets.matches(&segments("/pets/")).is_none());
    }

    #[test]
    fn split_path_decodes_segments() {
        assert_eq!(segments("/a%20b/c%2Fd"), ["a b", "c/d"]);
        assert_eq!(split_path("/%ff"), Err(PathDecodeError { index: 0 }));
    }

    #[test]
    fn template_rejects_bad_syntax() {
        for template in ["pets", "/pets/{", "/pets/}", "/pets/{}", "/{a}{b}", "/{a}/{a}"] {
            assert!(PathTemplate::parse(template).is_err(), "{template}");
        }
    }

    #[test]
    fn literal_segments_counts_fixed_parts() {
        let template = PathTemplate::parse("/user/{name}/logout").expect("valid");

        assert_eq!(template.literal_segments(), 2);
    }

    proptest! {
        #[test]
        fn template_parse_and_match_never_panic(template in "[/{}a-z.]{0,24}", path in "[/%a-z0-9.]{0,24}") {
            if let Ok(parsed) = PathTemplate::parse(&template) {
                if let Ok(decoded) = split_path(&path) {
                    let _ = parsed.matches(&decoded);
                }
            }
        }

        #[test]
        fn template_round_trips_parameter_values(
            literals in prop::collection::vec("[a-z]{1,8}", 1..5),
            values in prop::collection::vec("[^/]{1,12}", 1..5),
        ) {
            let count = literals.len().min(values.len());
            let template: String = (0..count)
                .map(|index| format!("/{}/{{p{index}}}", literals[index]))
                .collect();
            let path: String = (0..count)
                .map(|index| {
                    let encoded = percent_encoding::utf8_percent_encode(
                        &values[index],
                        percent_encoding::NON_ALPHANUMERIC,
                    );
                    format!("/{}/{encoded}", literals[index])
                })
                .collect();

            let parsed = PathTemplate::parse(&template).expect("generated template is valid");
            let matched = parsed.matches(&segments(&path)).expect("generated path matches");

            let expected: Vec<(String, String)> = (0..count)
                .map(|index| (format!("p{index}"), values[index].clone()))
                .collect();
            prop_assert_eq!(matched, expected);
        }
    }
}
