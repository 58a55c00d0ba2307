//! The validation stage: checks each request against the route rules, the OpenAPI document and
//! the JSON limits, and responds to a violation with an `application/problem+json` body.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::Response;
use http_body_util::{BodyExt, Full};

use crate::config::Config;
use crate::proxy::ProxyBody;
use crate::proxy::pipeline::{RequestContext, RequestOutcome, Stage, StageFuture, StageOutcome};
use crate::reload::Reloadable;
use crate::validation::problem::PROBLEM_JSON;
use crate::validation::{BuildError, Finding, RequestView, RouteKey, Validation, ValidationMetrics, ViolationKind};

/// Runs [`Validation`] on every request. The compiled settings are replaced whole on reload.
pub struct ValidationStage {
    validation: ArcSwap<Validation>,
    metrics: Arc<ValidationMetrics>,
}

impl std::fmt::Debug for ValidationStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidationStage").finish_non_exhaustive()
    }
}

impl ValidationStage {
    /// Creates the stage.
    pub fn new(validation: Validation, metrics: Arc<ValidationMetrics>) -> Self {
        Self {
            validation: ArcSwap::from_pointee(validation),
            metrics,
        }
    }

    /// Compiles the settings of `config` and creates the stage.
    ///
    /// # Errors
    ///
    /// [`BuildError`] naming the section, route and file at fault.
    pub fn from_config(config: &Config, metrics: Arc<ValidationMetrics>) -> Result<Self, BuildError> {
        Ok(Self::new(Validation::build(config)?, metrics))
    }

    fn record(&self, request: &RequestContext, finding: &Finding) {
        self.metrics.record(finding);
        let client = request.client();
        let request_id = request.request_id();
        let source = finding.source.label();
        let label = finding.label.as_deref().unwrap_or("");
        let kind = finding.violation.kind.label();
        let status = finding.violation.problem.status.as_u16();
        let fields = finding.violation.field_names().join(",");
        if finding.enforced {
            tracing::info!(%client, %request_id, source, route = label, kind, status, fields, "request failed validation");
        } else {
            tracing::info!(
                %client, %request_id, source, route = label, kind, status, fields,
                "request failed validation, passed in report mode"
            );
        }
    }
}

impl Stage for ValidationStage {
    fn name(&self) -> &'static str {
        "validation"
    }

    fn inspect<'a>(&'a self, request: &'a RequestContext) -> StageFuture<'a> {
        Box::pin(async move {
            let validation = self.validation.load();
            let view = RequestView {
                method: request.method(),
                path: request.path(),
                query: request.query(),
                headers: request.headers(),
                body: request.body(),
            };
            let route = request.route().map(|route| RouteKey {
                name: route.name(),
                pattern: &route.config().path,
                parameters: route.params(),
            });
            let verdict = validation.check(&view, route);

            for finding in &verdict.findings {
                self.record(request, finding);
            }
            if let Some(finding) = verdict.rejection() {
                return StageOutcome::Respond {
                    outcome: RequestOutcome::Invalid,
                    response: problem_response(finding, &request.request_id().to_string()),
                };
            }
            if let Some(sanitized) = verdict.sanitized {
                let route = request.route_name().unwrap_or("");
                self.metrics.record_sanitized(route, sanitized.changed.len());
                tracing::debug!(
                    client = %request.client(), request_id = %request.request_id(), route,
                    fields = sanitized.changed.join(","), "rich-text fields sanitized"
                );
                request.set_forward_body(sanitized.body);
            }
            StageOutcome::Continue
        })
    }
}

impl Reloadable for ValidationStage {
    fn sections(&self) -> &'static str {
        "validation, openapi, routes.validation"
    }

    fn reload(&self, config: &Config) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let validation = Validation::build(config)?;
        tracing::info!(
            routes = validation.route_rules(),
            openapi_operations = validation.openapi_operations(),
            "validation rules reloaded"
        );
        self.validation.store(Arc::new(validation));
        Ok(())
    }
}

/// Builds the problem response of an enforced violation, with `Allow` on a 405 and
/// `Accept-Encoding: identity` on a 415 for a content coding.
fn problem_response(finding: &Finding, request_id: &str) -> Response<ProxyBody> {
    let violation = &finding.violation;
    let body = Full::new(Bytes::from(violation.problem.to_json(request_id)))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = violation.problem.status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    if violation.kind == ViolationKind::ContentEncoding {
        response
            .headers_mut()
            .insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
    if !violation.allow.is_empty() {
        let allow: Vec<&str> = violation.allow.iter().map(http::Method::as_str).collect();
        if let Ok(value) = HeaderValue::from_str(&allow.join(", ")) {
            response.headers_mut().insert(header::ALLOW, value);
        }
    }
    response
}
