//! Rate-limit metrics, registered under `firewall_rate_limit_`.

use std::fmt;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Outcome of one rule for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleDecision {
    /// Every tier admitted the request.
    Admitted,
    /// A tier rejected the request, which got 429.
    Rejected,
    /// A tier of a shadow rule would have rejected the request; it went through.
    ShadowRejected,
    /// The store failed and the rule fails closed: the request got 503.
    StoreUnavailable,
}

/// Reason an embedded entry was removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EvictionReason {
    /// Its level had drained to zero, so removing it loses nothing.
    Idle,
    /// The engine was full; the entry closest to idle made room.
    Capacity,
}

impl RuleDecision {
    /// Label used in metrics and logs.
    pub const fn label(self) -> &'static str {
        match self {
            RuleDecision::Admitted => "admitted",
            RuleDecision::Rejected => "rejected",
            RuleDecision::ShadowRejected => "shadow_rejected",
            RuleDecision::StoreUnavailable => "store_unavailable",
        }
    }
}

impl EncodeLabelValue for RuleDecision {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        fmt::Write::write_str(encoder, self.label())
    }
}

impl EncodeLabelValue for EvictionReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        let label = match self {
            EvictionReason::Idle => "idle",
            EvictionReason::Capacity => "capacity",
        };
        fmt::Write::write_str(encoder, label)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    rule: String,
    decision: RuleDecision,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EvictionLabels {
    reason: EvictionReason,
}

/// The rate-limit metrics.
#[derive(Clone, Default)]
pub struct LimitMetrics {
    decisions: Family<DecisionLabels, Counter>,
    evictions: Family<EvictionLabels, Counter>,
    entries: Gauge,
    store_available: Gauge,
    store_failures: Counter,
}

impl fmt::Debug for LimitMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitMetrics").finish_non_exhaustive()
    }
}

impl LimitMetrics {
    /// Creates the metrics and registers them in `registry`, whose prefix is `firewall`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let registry = registry.sub_registry_with_prefix("rate_limit");
        registry.register(
            "decisions",
            "Rate-limit rule decisions, by rule and decision",
            metrics.decisions.clone(),
        );
        registry.register(
            "evictions",
            "Embedded rate-limit entries removed, by reason",
            metrics.evictions.clone(),
        );
        registry.register(
            "entries",
            "Entries (key and tier) held by the embedded engine, as of the last sweep",
            metrics.entries.clone(),
        );
        registry.register(
            "store_available",
            "1 while the Redis store answers, 0 while the circuit breaker is open; 1 for the embedded engine",
            metrics.store_available.clone(),
        );
        registry.register(
            "store_failures",
            "Redis calls that failed or timed out",
            metrics.store_failures.clone(),
        );
        for reason in [EvictionReason::Idle, EvictionReason::Capacity] {
            let _ = metrics.evictions.get_or_create(&EvictionLabels { reason });
        }
        metrics.store_available.set(1);
        metrics
    }

    /// Returns the counter of one rule decision, which shares its value with the registered
    /// family.
    pub fn decision_counter(&self, rule: &str, decision: RuleDecision) -> Counter {
        self.decisions
            .get_or_create(&DecisionLabels {
                rule: rule.to_owned(),
                decision,
            })
            .clone()
    }

    /// Counts one rule decision.
    pub fn record_decision(&self, rule: &str, decision: RuleDecision) {
        self.decisions
            .get_or_create(&DecisionLabels {
                rule: rule.to_owned(),
                decision,
            })
            .inc();
    }

    /// Returns the count of one rule decision.
    pub fn decisions(&self, rule: &str, decision: RuleDecision) -> u64 {
        self.decisions
            .get_or_create(&DecisionLabels {
                rule: rule.to_owned(),
                decision,
            })
            .get()
    }

    /// Counts removed entries.
    pub fn record_evictions(&self, reason: EvictionReason, count: u64) {
        if count > 0 {
            self.evictions
                .get_or_create(&EvictionLabels { reason })
                .inc_by(count);
        }
    }

    /// Returns the count of removed entries for one reason.
    pub fn evictions(&self, reason: EvictionReason) -> u64 {
        self.evictions
            .get_or_create(&EvictionLabels { reason })
            .get()
    }

    /// Sets the number of embedded entries.
    pub fn set_entries(&self, count: usize) {
        self.entries.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Sets whether calls to the store succeed.
    pub fn set_store_available(&self, available: bool) {
        self.store_available.set(i64::from(available));
    }

    /// Returns whether the store is marked available.
    pub fn store_available(&self) -> bool {
        self.store_available.get() == 1
    }

    /// Counts one failed store call.
    pub fn record_store_failure(&self) {
        self.store_failures.inc();
    }
}
