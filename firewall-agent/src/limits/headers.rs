//! `RateLimit-Policy` and `RateLimit` response headers, as defined by the IETF draft
//! "RateLimit header fields for HTTP" (draft-ietf-httpapi-ratelimit-headers-10).
//!
//! Each enforced tier is one policy, named `RULE-WINDOWs`:
//!
//! ```text
//! RateLimit-Policy: "api-1s";q=5;w=1, "api-3600s";q=1000;w=3600
//! RateLimit: "api-1s";r=4;t=1, "api-3600s";r=999;t=4
//! ```
//!
//! `q` is the limit, `w` the window in seconds, `r` the requests that still fit and `t` the
//! seconds until the full limit is back, rounded up.

use std::fmt::Write as _;

use http::HeaderValue;
use http::header::HeaderName;

use super::{RuleCheck, RuleOutcome};

/// Name of the header that lists the policies.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// Name of the header that carries each policy's current state.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The two header values of one response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitHeaders {
    /// Value of `RateLimit-Policy`.
    pub policy: HeaderValue,
    /// Value of `RateLimit`.
    pub state: HeaderValue,
}

impl RateLimitHeaders {
    /// Builds the headers from the enforced rules of a request. Returns `None` when every rule
    /// is a shadow rule.
    pub fn build(checks: &[RuleCheck], outcomes: &[RuleOutcome]) -> Option<Self> {
        let mut policy = String::new();
        let mut state = String::new();
        for (check, outcome) in checks.iter().zip(outcomes) {
            if !check.enforced {
                continue;
            }
            for tier in &outcome.tiers {
                if !policy.is_empty() {
                    policy.push_str(", ");
                    state.push_str(", ");
                }
                let window = tier.tier.window.as_secs().max(1);
                let reset = tier.reset();
                let reset_seconds = reset.as_secs() + u64::from(reset.subsec_nanos() > 0);
                let _ = write!(
                    policy,
                    "\"{}-{window}s\";q={};w={window}",
                    check.name, tier.tier.limit
                );
                let _ = write!(
                    state,
                    "\"{}-{window}s\";r={};t={reset_seconds}",
                    check.name,
                    tier.remaining()
                );
            }
        }
        if policy.is_empty() {
            return None;
        }
        Some(Self {
            policy: HeaderValue::from_str(&policy).ok()?,
            state: HeaderValue::from_str(&state).ok()?,
        })
    }
}
