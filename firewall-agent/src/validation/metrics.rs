//! Validation metrics, registered under `firewall_validation_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::Finding;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViolationLabels {
    source: &'static str,
    /// Route name or OpenAPI operation; empty when the request matched neither. The set is
    /// bounded by the config.
    route: String,
    kind: &'static str,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SanitizedLabels {
    route: String,
}

/// The validation metrics.
#[derive(Clone, Debug, Default)]
pub struct ValidationMetrics {
    violations: Family<ViolationLabels, Counter>,
    sanitized: Family<SanitizedLabels, Counter>,
}

impl ValidationMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "validation_violations",
            "Requests that broke a validation rule, by step, route, rule and action (rejected or reported)",
            metrics.violations.clone(),
        );
        registry.register(
            "validation_sanitized_fields",
            "Rich-text fields whose HTML was changed by sanitization",
            metrics.sanitized.clone(),
        );
        metrics
    }

    /// Counts one violation.
    pub fn record(&self, finding: &Finding) {
        let labels = ViolationLabels {
            source: finding.source.label(),
            route: finding.label.clone().unwrap_or_default(),
            kind: finding.violation.kind.label(),
            action: if finding.enforced { "rejected" } else { "reported" },
        };
        self.violations.get_or_create(&labels).inc();
    }

    /// Counts sanitized fields on a route.
    pub fn record_sanitized(&self, route: &str, fields: usize) {
        let labels = SanitizedLabels {
            route: route.to_owned(),
        };
        self.sanitized
            .get_or_create(&labels)
            .inc_by(u64::try_from(fields).unwrap_or(u64::MAX));
    }
}
