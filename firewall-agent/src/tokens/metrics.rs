//! Token check metrics, under `firewall_tokens_`.

use std::fmt::{self, Write as _};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::error::TokenError;

/// Result of one token check on a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenResult {
    /// The token verified and covers the route.
    Accepted,
    /// The route needs no token and none was sent.
    Absent,
    /// The route needs a token and none was sent.
    Missing,
    /// The token verified but lacks a scope the route needs.
    InsufficientScope,
    /// The token was rejected.
    Rejected(TokenError),
}

impl TokenResult {
    /// Label used in metrics.
    pub const fn label(self) -> &'static str {
        match self {
            TokenResult::Accepted => "accepted",
            TokenResult::Absent => "absent",
            TokenResult::Missing => "missing",
            TokenResult::InsufficientScope => "insufficient_scope",
            TokenResult::Rejected(error) => error.label(),
        }
    }
}

impl EncodeLabelValue for TokenResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        encoder.write_str(self.label())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: TokenResult,
}

/// The token metrics.
#[derive(Clone, Default)]
pub struct TokenMetrics {
    checks: Family<ResultLabels, Counter>,
    cache_hits: Counter,
}

impl fmt::Debug for TokenMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenMetrics").finish_non_exhaustive()
    }
}

impl TokenMetrics {
    /// Creates the metrics and registers them in `registry`, whose prefix is `firewall`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let registry = registry.sub_registry_with_prefix("tokens");
        registry.register(
            "checks",
            "Token checks on proxied requests, by result or rejection reason",
            metrics.checks.clone(),
        );
        registry.register(
            "cache_hits",
            "Token checks answered from the verified-token cache",
            metrics.cache_hits.clone(),
        );
        for result in [
            TokenResult::Accepted,
            TokenResult::Absent,
            TokenResult::Missing,
            TokenResult::InsufficientScope,
        ]
        .into_iter()
        .chain(TokenError::ALL.map(TokenResult::Rejected))
        {
            let _ = metrics.checks.get_or_create(&ResultLabels { result });
        }
        metrics
    }

    /// Counts one check.
    pub fn record(&self, result: TokenResult) {
        self.checks.get_or_create(&ResultLabels { result }).inc();
    }

    /// Returns the checks counted with `result`.
    pub fn checks(&self, result: TokenResult) -> u64 {
        self.checks.get_or_create(&ResultLabels { result }).get()
    }

    /// Counts one cache hit.
    pub fn record_cache_hit(&self) {
        self.cache_hits.inc();
    }

    /// Returns the cache hits counted.
    pub fn cache_hits(&self) -> u64 {
        self.cache_hits.get()
    }
}
