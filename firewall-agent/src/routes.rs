//! Routes: the `[[routes]]` table that gives parts of the API their own settings, and the
//! matcher that finds a request's route.
//!
//! A route's path is a pattern of `/`-separated segments. A literal segment matches itself, a
//! `{name}` segment matches any one non-empty segment and captures it, and a final `{*name}`
//! segment matches the rest of the path, including nothing. The first route in config order
//! whose pattern and methods match is the request's route.

use std::fmt;

use http::Method;
use serde::Deserialize;

/// One `[[routes]]` entry.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteConfig {
    /// Name used in logs, metrics and audit events; the path pattern when not set.
    pub name: Option<String>,
    /// Path pattern, such as `/users/{id}` or `/static/{*rest}`.
    pub path: String,
    /// Methods this route applies to, upper case; every method when empty.
    pub methods: Vec<String>,
    /// Largest request body accepted on this route, in bytes; `[proxy] max_body_bytes` when
    /// not set.
    pub max_body_bytes: Option<u64>,
    /// `[routes.validation]`: request validation rules of this route.
    pub validation: Option<crate::validation::RouteValidationConfig>,
    /// Threat detection settings of this route: mode, exclusions, detection-only rules.
    pub threat: Option<crate::detect::RouteThreatConfig>,
    /// `[routes.auth]`: whether the route needs an access token and which scopes and issuers.
    pub auth: Option<crate::tokens::RouteAuthConfig>,
    /// `headers`: response headers to set or remove on this route, over the security defaults.
    pub headers: Option<crate::proxy::headers::HeaderRules>,
    /// `cors`: the route's CORS policy. The agent responds to its preflight requests itself.
    pub cors: Option<crate::proxy::headers::CorsPolicy>,
}

impl RouteConfig {
    /// Returns the name used in logs: the configured name, or the path pattern.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.path)
    }
}

/// A problem with a route's path pattern or methods.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem}")]
pub struct RouteError {
    /// The problem, naming the offending part.
    pub problem: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Rest(String),
}

/// A compiled path pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPattern {
    segments: Vec<Segment>,
}

impl PathPattern {
    /// Compiles `pattern`.
    ///
    /// # Errors
    ///
    /// [`RouteError`] when the pattern does not start with `/`, has an empty or duplicate
    /// parameter name, a `{*rest}` segment that is not the last, or a brace inside a literal.
    pub fn parse(pattern: &str) -> Result<Self, RouteError> {
        let fail = |problem: String| Err(RouteError { problem });
        let Some(rest) = pattern.strip_prefix('/') else {
            return fail(format!("path pattern `{pattern}` must start with `/`"));
        };
        let mut segments = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let count = parts.len();
        for (index, part) in parts.into_iter().enumerate() {
            let segment = if let Some(inner) =
                part.strip_prefix('{').and_then(|p| p.strip_suffix('}'))
            {
                let (name, is_rest) = match inner.strip_prefix('*') {
                    Some(name) => (name, true),
                    None => (inner, false),
                };
                let valid = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !valid {
                    return fail(format!(
                        "path pattern `{pattern}` has an invalid parameter `{{{inner}}}`: use letters, digits, `_` or `-`"
                    ));
                }
                if names.contains(&name) {
                    return fail(format!(
                        "path pattern `{pattern}` uses the parameter name `{name}` twice"
                    ));
                }
                names.push(name);
                if is_rest {
                    if index + 1 != count {
                        return fail(format!(
                            "path pattern `{pattern}`: `{{*{name}}}` must be the last segment"
                        ));
                    }
                    Segment::Rest(name.to_owned())
                } else {
                    Segment::Param(name.to_owned())
                }
            } else if part.contains(['{', '}']) {
                return fail(format!(
                    "path pattern `{pattern}` has a brace inside the segment `{part}`: a parameter must be a whole segment"
                ));
            } else {
                Segment::Literal(part.to_owned())
            };
            segments.push(segment);
        }
        Ok(Self { segments })
    }

    /// Matches `path` (without the query) and returns the captured parameters, in pattern
    /// order, or `None`.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let rest = path.strip_prefix('/')?;
        let mut parts = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect::<Vec<_>>()
        }
        .into_iter();
        let mut params = Vec::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(literal) => {
                    if parts.next()? != literal {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    let part = parts.next()?;
                    if part.is_empty() {
                        return None;
                    }
                    params.push((name.clone(), part.to_owned()));
                }
                Segment::Rest(name) => {
                    let remainder: Vec<&str> = parts.by_ref().collect();
                    params.push((name.clone(), remainder.join("/")));
                }
            }
        }
        parts.next().is_none().then_some(params)
    }
}

/// A compiled route.
#[derive(Clone, Debug)]
pub struct Route {
    config: RouteConfig,
    pattern: PathPattern,
    methods: Vec<Method>,
}

impl Route {
    /// Compiles a route.
    ///
    /// # Errors
    ///
    /// [`RouteError`] for an invalid path pattern or method.
    pub fn new(config: RouteConfig) -> Result<Self, RouteError> {
        let pattern = PathPattern::parse(&config.path)?;
        let methods = config
            .methods
            .iter()
            .map(|name| {
                let upper = name.to_ascii_uppercase();
                Method::from_bytes(upper.as_bytes()).map_err(|_| RouteError {
                    problem: format!("`{name}` is not an HTTP method"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            config,
            pattern,
            methods,
        })
    }

    /// Returns the route's settings.
    pub fn config(&self) -> &RouteConfig {
        &self.config
    }

    /// Returns the name used in logs and events.
    pub fn name(&self) -> &str {
        self.config.display_name()
    }
}

/// The routes in config order.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    routes: Vec<std::sync::Arc<Route>>,
}

impl RouteTable {
    /// Compiles every route.
    ///
    /// # Errors
    ///
    /// The index of the first invalid route and its problem.
    pub fn new(configs: &[RouteConfig]) -> Result<Self, (usize, RouteError)> {
        let routes = configs
            .iter()
            .enumerate()
            .map(|(index, config)| {
                Route::new(config.clone())
                    .map(std::sync::Arc::new)
                    .map_err(|error| (index, error))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { routes })
    }

    /// Returns true when no route is configured.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Finds the first route that matches `method` and `path`.
    pub fn find(&self, method: &Method, path: &str) -> Option<MatchedRoute> {
        self.routes.iter().find_map(|route| {
            if !route.methods.is_empty() && !route.methods.contains(method) {
                return None;
            }
            let params = route.pattern.matches(path)?;
            Some(MatchedRoute {
                route: std::sync::Arc::clone(route),
                params,
            })
        })
    }
}

/// The route a request matched, with the path parameters it captured.
#[derive(Clone)]
pub struct MatchedRoute {
    route: std::sync::Arc<Route>,
    params: Vec<(String, String)>,
}

impl fmt::Debug for MatchedRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Parameter values come from the client and may hold secrets: only their names.
        let names: Vec<&str> = self.params.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("MatchedRoute")
            .field("route", &self.name())
            .field("params", &names)
            .finish()
    }
}

impl MatchedRoute {
    /// Returns the route's name.
    pub fn name(&self) -> &str {
        self.route.name()
    }

    /// Returns the route's settings.
    pub fn config(&self) -> &RouteConfig {
        self.route.config()
    }

    /// Returns the value of path parameter `name`, still percent-encoded as the client sent it.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(param, _)| param == name)
            .map(|(_, value)| value.as_str())
    }

    /// Returns every captured parameter, in pattern order.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str, methods: &[&str]) -> RouteConfig {
        RouteConfig {
            path: path.into(),
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            ..RouteConfig::default()
        }
    }

    #[test]
    fn literal_param_and_rest_segments_match() {
        let pattern = PathPattern::parse("/users/{id}/files/{*rest}").expect("valid pattern");

        let params = pattern
            .matches("/users/42/files/a/b.txt")
            .expect("path matches");

        assert_eq!(
            params,
            vec![
                ("id".to_owned(), "42".to_owned()),
                ("rest".to_owned(), "a/b.txt".to_owned())
            ]
        );
        assert_eq!(
            pattern.matches("/users/42/files").expect("path matches")[1],
            ("rest".to_owned(), String::new())
        );
        assert!(pattern.matches("/users//files/x").is_none());
        assert!(pattern.matches("/users/42/other/x").is_none());
        assert!(pattern.matches("users/42/files").is_none());
    }

    #[test]
    fn pattern_without_rest_matches_the_whole_path_only() {
        let pattern = PathPattern::parse("/users/{id}").expect("valid pattern");

        assert!(pattern.matches("/users/7").is_some());
        assert!(pattern.matches("/users/7/").is_none());
        assert!(pattern.matches("/users/7/x").is_none());
        assert!(pattern.matches("/users").is_none());
        assert!(
            PathPattern::parse("/")
                .expect("root pattern")
                .matches("/")
                .is_some()
        );
        assert!(
            PathPattern::parse("/")
                .expect("root pattern")
                .matches("/x")
                .is_none()
        );
    }

    #[test]
    fn invalid_patterns_are_refused_with_the_reason() {
        for (pattern, expected) in [
            ("users", "must start with `/`"),
            ("/a/{}", "invalid parameter"),
            ("/a/{id}/{id}", "twice"),
            ("/{*rest}/a", "must be the last segment"),
            ("/a{id}", "brace inside the segment"),
        ] {
            let error = PathPattern::parse(pattern).expect_err("invalid input");
            assert!(
                error.problem.contains(expected),
                "{pattern}: {}",
                error.problem
            );
        }
    }

    #[test]
    fn table_picks_the_first_match_in_config_order() {
        let table = RouteTable::new(&[
            route("/users/me", &["GET"]),
            route("/users/{id}", &[]),
            route("/{*any}", &[]),
        ])
        .expect("valid routes");

        let found =
            |method: Method, path: &str| table.find(&method, path).map(|m| m.name().to_owned());

        assert_eq!(
            found(Method::GET, "/users/me").as_deref(),
            Some("/users/me")
        );
        assert_eq!(
            found(Method::POST, "/users/me").as_deref(),
            Some("/users/{id}")
        );
        assert_eq!(found(Method::GET, "/other").as_deref(), Some("/{*any}"));
        assert_eq!(
            table
                .find(&Method::GET, "/users/9")
                .expect("route matches")
                .param("id"),
            Some("9")
        );
    }

    #[test]
    fn route_table_error_names_invalid_method() {
        let (index, error) = RouteTable::new(&[route("/a", &[]), route("/b", &["GE T"])])
            .expect_err("invalid input");

        assert_eq!(index, 1);
        assert!(error.problem.contains("`GE T`"), "{}", error.problem);
    }

    #[test]
    fn debug_output_hides_parameter_values() {
        let table = RouteTable::new(&[route("/reset/{token}", &[])]).expect("valid route");

        let matched = table
            .find(&Method::GET, "/reset/s3cret-value")
            .expect("route matches");

        assert!(!format!("{matched:?}").contains("s3cret"));
    }
}
