//! Metrics of the threat engine and the audit log, under `firewall_threat_` and
//! `firewall_audit_`.

use std::fmt::{self, Write as _};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Signal;
use crate::audit::AuditCounters;

/// Label set of `firewall_threat_signals_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignalLabels {
    signal: Signal,
}

impl EncodeLabelValue for Signal {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        encoder.write_str(self.label())
    }
}

/// Counters of the threat engine and the audit log.
#[derive(Debug)]
pub struct ThreatMetrics {
    signals: Family<SignalLabels, Counter>,
    sources_flagged: Counter,
    sources_tracked: Gauge,
    ban_queue_full: Counter,
    audit: AuditCounters,
}

impl ThreatMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            signals: Family::default(),
            sources_flagged: Counter::default(),
            sources_tracked: Gauge::default(),
            ban_queue_full: Counter::default(),
            audit: AuditCounters::default(),
        };
        registry.register(
            "threat_signals",
            "Behaviour signals fired, by signal",
            metrics.signals.clone(),
        );
        registry.register(
            "threat_sources_flagged",
            "Sources that reached the ban threshold but were not banned (detection-only mode or allowlisted)",
            metrics.sources_flagged.clone(),
        );
        registry.register(
            "threat_sources_tracked",
            "Sources whose behaviour is tracked",
            metrics.sources_tracked.clone(),
        );
        registry.register(
            "threat_ban_queue_full",
            "Threat bans postponed because the ban queue was full",
            metrics.ban_queue_full.clone(),
        );
        registry.register(
            "audit_records_written",
            "Audit records written",
            metrics.audit.written.clone(),
        );
        registry.register(
            "audit_records_dropped",
            "Audit records dropped because the writer fell behind",
            metrics.audit.dropped.clone(),
        );
        registry.register(
            "audit_write_errors",
            "Failed writes of audit records",
            metrics.audit.write_errors.clone(),
        );
        for signal in Signal::ALL {
            let _ = metrics.signals.get_or_create(&SignalLabels { signal });
        }
        metrics
    }

    /// Returns the audit log's counters.
    pub fn audit(&self) -> AuditCounters {
        self.audit.clone()
    }

    pub(super) fn record_signal(&self, signal: Signal) {
        self.signals.get_or_create(&SignalLabels { signal }).inc();
    }

    pub(super) fn record_flag(&self) {
        self.sources_flagged.inc();
    }

    pub(super) fn record_ban_queue_full(&self) {
        self.ban_queue_full.inc();
    }

    pub(super) fn set_sources_tracked(&self, count: usize) {
        self.sources_tracked
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
}
