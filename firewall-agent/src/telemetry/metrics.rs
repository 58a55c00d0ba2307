//! Prometheus metrics, all under the `firewall_` prefix.
//!
//! Kernel counters are read from the [`Blocklist`] at scrape time; the agent's own counters are
//! updated as requests and bans happen.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use firewall_common::{
    MAP_ALLOW_V4, MAP_ALLOW_V6, MAP_BAN_RANGES_V4, MAP_BAN_RANGES_V6, MAP_BANS_V4, MAP_BANS_V6,
};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use super::ErrorChain;
use crate::kernel::Blocklist;
use crate::limits::LimitMetrics;
use crate::threat::ThreatMetrics;
use crate::proxy::RequestOutcome;
use crate::store::BanOrigin;

/// Label set of `firewall_http_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: RequestOutcome,
}

/// Label set of `firewall_bans_applied_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OriginLabels {
    origin: BanOrigin,
}

/// Label set of `firewall_kernel_map_full_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabels {
    map: String,
}

impl EncodeLabelValue for RequestOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        encoder.write_str(self.label())
    }
}

impl EncodeLabelValue for BanOrigin {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        encoder.write_str(self.label())
    }
}

/// The agent's metrics and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<OutcomeLabels, Counter>,
    /// The counter of each outcome in `http_requests`, in the order of
    /// [`RequestOutcome::ALL`], so that counting a request needs no label lookup.
    request_counters: [Counter; RequestOutcome::ALL.len()],
    bans_applied: Family<OriginLabels, Counter>,
    bans_active: Gauge,
    kernel_map_full: Family<MapLabels, Counter>,
    limits: Arc<LimitMetrics>,
    validation: Arc<crate::validation::ValidationMetrics>,
    threat: Arc<ThreatMetrics>,
    tokens: crate::tokens::TokenMetrics,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Creates the metrics. Kernel verdict counters are read from `blocklist` on each scrape.
    pub fn new(blocklist: Arc<dyn Blocklist>) -> Self {
        let mut registry = Registry::with_prefix("firewall");
        let http_requests = Family::<OutcomeLabels, Counter>::default();
        let bans_applied = Family::<OriginLabels, Counter>::default();
        let bans_active = Gauge::default();
        let kernel_map_full = Family::<MapLabels, Counter>::default();

        registry.register(
            "http_requests",
            "HTTP requests handled by the proxy, by outcome",
            http_requests.clone(),
        );
        registry.register(
            "bans_applied",
            "Bans applied, by origin",
            bans_applied.clone(),
        );
        registry.register(
            "bans_active",
            "Bans currently in force",
            bans_active.clone(),
        );
        registry.register(
            "kernel_map_full",
            "Inserts rejected because a kernel map was full, by map",
            kernel_map_full.clone(),
        );
        registry.register_collector(Box::new(KernelCollector { blocklist }));
        let limits = Arc::new(LimitMetrics::register(&mut registry));
        let validation = Arc::new(crate::validation::ValidationMetrics::register(&mut registry));
        let threat = Arc::new(ThreatMetrics::register(&mut registry));
        let tokens = crate::tokens::TokenMetrics::register(&mut registry);

        // Start every label at zero, so that rates work from the first scrape.
        let request_counters = RequestOutcome::ALL
            .map(|outcome| http_requests.get_or_create(&OutcomeLabels { outcome }).clone());
        for origin in BanOrigin::ALL {
            let _ = bans_applied.get_or_create(&OriginLabels { origin });
        }
        // The maps a ban or an allowlist entry can fill, so that an alert on them has data.
        for map in [
            MAP_BANS_V4,
            MAP_BANS_V6,
            MAP_BAN_RANGES_V4,
            MAP_BAN_RANGES_V6,
            MAP_ALLOW_V4,
            MAP_ALLOW_V6,
        ] {
            let _ = kernel_map_full.get_or_create(&MapLabels { map: map.to_owned() });
        }

        Self {
            registry,
            http_requests,
            request_counters,
            bans_applied,
            bans_active,
            kernel_map_full,
            limits,
            validation,
            threat,
            tokens,
        }
    }

    /// Returns the token check metrics.
    pub fn tokens(&self) -> &crate::tokens::TokenMetrics {
        &self.tokens
    }

    /// Returns the rate-limit metrics.
    pub fn limits(&self) -> &Arc<LimitMetrics> {
        &self.limits
    }

    /// Returns the validation metrics.
    pub fn validation(&self) -> &Arc<crate::validation::ValidationMetrics> {
        &self.validation
    }

    /// Returns the threat engine's and the audit log's metrics.
    pub fn threat(&self) -> &Arc<ThreatMetrics> {
        &self.threat
    }

    /// Counts one insert rejected because the kernel map `map` was full.
    pub fn record_map_full(&self, map: &str) {
        self.kernel_map_full
            .get_or_create(&MapLabels {
                map: map.to_owned(),
            })
            .inc();
    }

    /// Returns the value of `firewall_kernel_map_full_total` for one map.
    pub fn map_full(&self, map: &str) -> u64 {
        self.kernel_map_full
            .get_or_create(&MapLabels {
                map: map.to_owned(),
            })
            .get()
    }

    /// Counts one finished request.
    pub fn record_request(&self, outcome: RequestOutcome) {
        // `ALL` lists the outcomes in declaration order, which a test checks.
        self.request_counters[outcome as usize].inc();
    }

    /// Counts one applied ban.
    pub fn record_ban(&self, origin: BanOrigin) {
        self.bans_applied
            .get_or_create(&OriginLabels { origin })
            .inc();
    }

    /// Sets the number of bans in force.
    pub fn set_active_bans(&self, count: usize) {
        self.bans_active
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Returns the value of `firewall_http_requests_total` for one outcome.
    pub fn requests(&self, outcome: RequestOutcome) -> u64 {
        self.http_requests
            .get_or_create(&OutcomeLabels { outcome })
            .get()
    }

    /// Encodes every metric in the Prometheus text format.
    ///
    /// # Errors
    ///
    /// [`fmt::Error`] only if encoding into the string fails, which does not happen in practice.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Encodes the XDP program's verdict counters, read at scrape time.
struct KernelCollector {
    blocklist: Arc<dyn Blocklist>,
}

impl fmt::Debug for KernelCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelCollector").finish_non_exhaustive()
    }
}

impl Collector for KernelCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let totals = match self.blocklist.verdict_totals() {
            Ok(totals) => totals,
            Err(error) => {
                tracing::warn!(error = %ErrorChain(&error), "failed to read kernel verdict counters for metrics");
                return Ok(());
            }
        };

        let mut packets = encoder.encode_descriptor(
            "kernel_packets",
            "Packets seen by the XDP program, by verdict",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for total in &totals {
            let labels = [("verdict", total.verdict.label())];
            ConstCounter::new(total.counter.packets).encode(packets.encode_family(&labels)?)?;
        }

        let mut bytes = encoder.encode_descriptor(
            "kernel_bytes",
            "Bytes of the frames seen by the XDP program, by verdict",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for total in &totals {
            let labels = [("verdict", total.verdict.label())];
            ConstCounter::new(total.counter.bytes).encode(bytes.encode_family(&labels)?)?;
        }
        drop(bytes);

        if let Some(state) = self.blocklist.ban_table_state() {
            let mut overflow = encoder.encode_descriptor(
                "kernel_ban_table_overflow",
                "Exact bans that found their bucket of the XDP ban table full and are searched \
                 in the slower hash map; raise xdp.ban_table_entries when it grows",
                None,
                ConstGauge::new(0i64).metric_type(),
            )?;
            for (family, count) in [("ipv4", state.overflow_v4), ("ipv6", state.overflow_v6)] {
                ConstGauge::new(i64::from(count))
                    .encode(overflow.encode_family(&[("family", family)])?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bans::memory::MemoryBlocklist;

    #[test]
    fn each_outcome_counts_under_its_label() {
        let metrics = Metrics::new(Arc::new(MemoryBlocklist::new()));

        // A different number of requests per outcome, so that a counter under the wrong label
        // shows.
        for (position, outcome) in RequestOutcome::ALL.into_iter().enumerate() {
            for _ in 0..=position {
                metrics.record_request(outcome);
            }
        }

        for (position, outcome) in RequestOutcome::ALL.into_iter().enumerate() {
            let expected = u64::try_from(position + 1).expect("small count");
            assert_eq!(metrics.requests(outcome), expected, "{}", outcome.label());
        }
    }
}
