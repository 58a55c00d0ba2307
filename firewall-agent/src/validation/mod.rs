//! Request validation, the positive security model: strict JSON with limits, per-route rules
//! with JSON Schema, an imported OpenAPI document, and HTML sanitization of declared
//! rich-text fields.
//!
//! Everything is compiled once from the config, at start and on reload. A check runs in four
//! steps, and the first enforced violation ends it:
//!
//! 1. the content coding of the body (`[validation] encoded_bodies`);
//! 2. the rules of the matched route (`[routes.validation]`);
//! 3. the OpenAPI document (`[openapi]`);
//! 4. a strict parse of any JSON body that neither of the two before parsed (`[validation] json_bodies`).

pub mod config;
pub mod json;
mod metrics;
pub mod openapi;
mod operation;
pub mod path;
pub mod problem;
pub mod request;
pub mod rules;
pub mod sanitize;
pub mod schema;

use http::StatusCode;

pub use config::{
    EncodedBodies, JsonBodies, OpenApiConfig, RouteValidationConfig, UndeclaredAction, ValidationConfig,
    ValidationMode,
};
pub use metrics::ValidationMetrics;
pub use request::{RequestView, Violation, ViolationKind};

use self::json::{JsonLimits, MAX_DEPTH_CEILING};
use self::openapi::{OpenApiError, OpenApiSpec, OperationMatch};
use self::request::{has_content_coding, is_json, media_type};
use self::rules::{RouteRules, RuleError};
use self::sanitize::Sanitized;
use crate::config::Config;

/// Error while compiling the validation settings.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A `[validation]` or `[openapi]` setting is invalid.
    #[error("{key} {problem}")]
    Invalid {
        /// The key, with its section, such as `openapi.base_path`.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A route's rules do not compile.
    #[error(transparent)]
    Route(#[from] RuleError),
    /// The OpenAPI document cannot be used.
    #[error("openapi.file")]
    OpenApi(#[from] OpenApiError),
}

impl BuildError {
    /// Returns the config section the error belongs to.
    pub fn section(&self) -> &'static str {
        match self {
            BuildError::Invalid { key, .. } => {
                let key: &'static str = key;
                key.split('.').next().unwrap_or(key)
            }
            BuildError::Route(_) => "routes",
            BuildError::OpenApi(_) => "openapi",
        }
    }
}

/// Step of the check that found a violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// The matched route's rules.
    Route,
    /// The OpenAPI document.
    OpenApi,
    /// The strict JSON parse of a body.
    Json,
    /// The check of the body's content coding.
    ContentEncoding,
}

impl Source {
    /// Label used in metrics and logs.
    pub const fn label(self) -> &'static str {
        match self {
            Source::Route => "route",
            Source::OpenApi => "openapi",
            Source::Json => "json",
            Source::ContentEncoding => "content_encoding",
        }
    }
}

/// One violation found in a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The step that found it.
    pub source: Source,
    /// The route's name or the OpenAPI operation, when known.
    pub label: Option<String>,
    /// The broken rule.
    pub violation: Violation,
    /// True when the request is rejected for it; false in report mode.
    pub enforced: bool,
}

/// The result of checking one request.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Every violation found, the enforced one (if any) last.
    pub findings: Vec<Finding>,
    /// The body to forward instead of the original, when a rich-text field was sanitized.
    pub sanitized: Option<Sanitized>,
}

impl Verdict {
    /// Returns the violation that rejects the request, if any.
    pub fn rejection(&self) -> Option<&Finding> {
        self.findings.iter().find(|finding| finding.enforced)
    }
}

/// The route a request matched, as validation needs it.
#[derive(Clone, Copy, Debug)]
pub struct RouteKey<'a> {
    /// The route's name (its path pattern when it has none).
    pub name: &'a str,
    /// The route's path pattern.
    pub pattern: &'a str,
    /// The parameters its pattern captured, percent-encoded.
    pub parameters: &'a [(String, String)],
}

#[derive(Debug)]
struct RouteEntry {
    name: String,
    pattern: String,
    rules: RouteRules,
    encoded_bodies: Option<EncodedBodies>,
}

#[derive(Debug)]
struct OpenApiPolicy {
    spec: OpenApiSpec,
    base_path: Option<String>,
    mode: ValidationMode,
    undeclared: UndeclaredAction,
}

/// The compiled validation settings.
#[derive(Debug)]
pub struct Validation {
    json_bodies: JsonBodies,
    encoded_bodies: EncodedBodies,
    json_limits: JsonLimits,
    routes: Vec<RouteEntry>,
    openapi: Option<OpenApiPolicy>,
}

impl Validation {
    /// Compiles the settings of `config`: reads and compiles every schema file and the OpenAPI
    /// document.
    ///
    /// # Errors
    ///
    /// [`BuildError`] naming the section, the route and the file at fault.
    pub fn build(config: &Config) -> Result<Self, BuildError> {
        let max_depth = config.validation.max_json_depth;
        if max_depth > MAX_DEPTH_CEILING {
            return Err(BuildError::Invalid {
                key: "validation.max_json_depth",
                problem: format!("must be at most {MAX_DEPTH_CEILING}"),
            });
        }

        let mut routes = Vec::new();
        for route in &config.routes {
            if let Some(rules) = &route.validation {
                routes.push(RouteEntry {
                    name: route.display_name().to_owned(),
                    pattern: route.path.clone(),
                    rules: RouteRules::compile(route.display_name(), rules, max_depth)?,
                    encoded_bodies: rules.encoded_bodies,
                });
            }
        }
        let base_path = config.openapi.base_path.clone();
        if let Some(prefix) = &base_path {
            if !prefix.starts_with('/') || prefix.ends_with('/') {
                return Err(BuildError::Invalid {
                    key: "openapi.base_path",
                    problem: format!("`{prefix}` must start with `/` and not end with `/`"),
                });
            }
        }
        let openapi = match &config.openapi.file {
            Some(file) => Some(OpenApiPolicy {
                spec: OpenApiSpec::load(file)?,
                base_path,
                mode: config.openapi.mode,
                undeclared: config.openapi.undeclared,
            }),
            None => None,
        };
        Ok(Self {
            json_bodies: config.validation.json_bodies,
            encoded_bodies: config.validation.encoded_bodies,
            json_limits: JsonLimits {
                max_depth,
                // The proxy already refused bodies over the route's or the proxy's limit.
                max_bytes: usize::MAX,
            },
            routes,
            openapi,
        })
    }

    /// Returns the number of declared OpenAPI operations, 0 without a document.
    pub fn openapi_operations(&self) -> usize {
        self.openapi.as_ref().map_or(0, |policy| policy.spec.operation_count())
    }

    /// Returns the number of routes with rules.
    pub fn route_rules(&self) -> usize {
        self.routes.len()
    }

    /// Checks a request that matched `route`, if any.
    pub fn check(&self, request: &RequestView<'_>, route: Option<RouteKey<'_>>) -> Verdict {
        let mut verdict = Verdict::default();
        let mut json_parsed = false;

        let entry = route.and_then(|route| {
            self.routes
                .iter()
                .find(|entry| entry.name == route.name && entry.pattern == route.pattern)
                .map(|entry| (entry, route.parameters))
        });

        let encoded_bodies = entry.and_then(|(entry, _)| entry.encoded_bodies).unwrap_or(self.encoded_bodies);
        let coded_body = !request.body.is_empty() && has_content_coding(request.headers);
        if coded_body {
            // The strict JSON parse cannot read a coded body, so a body let through skips it.
            json_parsed = true;
            if encoded_bodies != EncodedBodies::Pass {
                let enforced = encoded_bodies == EncodedBodies::Reject;
                verdict.findings.push(Finding {
                    source: Source::ContentEncoding,
                    label: route.map(|route| route.name.to_owned()),
                    violation: Violation::new(
                        ViolationKind::ContentEncoding,
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "request bodies with a Content-Encoding are not accepted; send the body without one",
                    ),
                    enforced,
                });
                if enforced {
                    return verdict;
                }
            }
        }

        if let Some((entry, parameters)) = entry {
            let check = entry.rules.check(request, parameters, coded_body);
            json_parsed |= check.json_parsed;
            let enforce = entry.rules.mode() == ValidationMode::Enforce;
            if let Some(violation) = check.violation {
                verdict.findings.push(Finding {
                    source: Source::Route,
                    label: Some(entry.name.clone()),
                    violation,
                    enforced: enforce,
                });
                if enforce {
                    return verdict;
                }
            }
            // Report mode leaves the traffic as it is, sanitization included.
            if enforce {
                verdict.sanitized = check.sanitized;
            }
        }

        if let Some(policy) = &self.openapi {
            if let Some(finding) = self.check_openapi(policy, request, &mut json_parsed) {
                let enforced = finding.enforced;
                verdict.findings.push(finding);
                if enforced {
                    return verdict;
                }
            }
        }

        if !json_parsed && self.json_bodies != JsonBodies::Off && !request.body.is_empty() {
            if let Some(finding) = self.check_json(request) {
                verdict.findings.push(finding);
            }
        }
        verdict
    }

    fn check_openapi(&self, policy: &OpenApiPolicy, request: &RequestView<'_>, json_parsed: &mut bool) -> Option<Finding> {
        let enforce = policy.mode == ValidationMode::Enforce;
        let undeclared = |violation: Violation| match policy.undeclared {
            UndeclaredAction::Pass => None,
            UndeclaredAction::Report | UndeclaredAction::Reject => Some(Finding {
                source: Source::OpenApi,
                label: None,
                violation,
                enforced: policy.undeclared == UndeclaredAction::Reject,
            }),
        };
        let not_found = || {
            Violation::new(
                ViolationKind::UndeclaredPath,
                StatusCode::NOT_FOUND,
                "no operation of the API is declared at this path",
            )
        };

        let relative = match &policy.base_path {
            None => Some(request.path),
            Some(prefix) => request
                .path
                .strip_prefix(prefix.as_str())
                .filter(|rest| rest.is_empty() || rest.starts_with('/'))
                .map(|rest| if rest.is_empty() { "/" } else { rest }),
        };
        let Some(relative) = relative else {
            return undeclared(not_found());
        };
        let Ok(segments) = path::split_path(relative) else {
            return Some(Finding {
                source: Source::OpenApi,
                label: None,
                violation: Violation::new(
                    ViolationKind::Encoding,
                    StatusCode::BAD_REQUEST,
                    "request path is not valid percent-encoded UTF-8",
                ),
                enforced: enforce,
            });
        };

        match policy.spec.find(request.method, &segments) {
            OperationMatch::NotFound => undeclared(not_found()),
            OperationMatch::MethodNotAllowed { allowed } => {
                undeclared(Violation::method_not_allowed(request.method, allowed))
            }
            OperationMatch::Found {
                operation,
                path_parameters,
                ..
            } => {
                let check = operation::check_operation(operation, request, &path_parameters, self.json_limits);
                *json_parsed |= check.json_parsed;
                check.violation.map(|violation| Finding {
                    source: Source::OpenApi,
                    label: Some(operation.label.clone()),
                    violation,
                    enforced: enforce,
                })
            }
        }
    }

    fn check_json(&self, request: &RequestView<'_>) -> Option<Finding> {
        // A malformed Content-Type is left to the route and OpenAPI rules.
        let media = media_type(request.headers).ok().flatten()?;
        if !is_json(&media) {
            return None;
        }
        let error = json::parse(request.body, self.json_limits).err()?;
        Some(Finding {
            source: Source::Json,
            label: None,
            violation: Violation::from_json(&error),
            enforced: self.json_bodies == JsonBodies::Enforce,
        })
    }
}

#[cfg(test)]
mod tests;
