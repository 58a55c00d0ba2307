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
        // Both values are written with `push_str` and `itoa` because they are built for every
        // request, where `write!` cost more than the rate-limit check itself.
        let mut policy = String::with_capacity(64);
        let mut state = String::with_capacity(64);
        let mut numbers = itoa::Buffer::new();
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

                push_policy_name(&mut policy, &check.name, window, &mut numbers);
                policy.push_str(";q=");
                policy.push_str(numbers.format(tier.tier.limit));
                policy.push_str(";w=");
                policy.push_str(numbers.format(window));

                push_policy_name(&mut state, &check.name, window, &mut numbers);
                state.push_str(";r=");
                state.push_str(numbers.format(tier.remaining()));
                state.push_str(";t=");
                state.push_str(numbers.format(reset_seconds));
            }
        }
        if policy.is_empty() {
            return None;
        }
        // A `String` becomes the header value without a copy.
        Some(Self {
            policy: HeaderValue::try_from(policy).ok()?,
            state: HeaderValue::try_from(state).ok()?,
        })
    }
}

/// Appends the quoted policy name `"RULE-WINDOWs"`.
fn push_policy_name(
    text: &mut String,
    rule: &str,
    window_seconds: u64,
    numbers: &mut itoa::Buffer,
) {
    text.push('"');
    text.push_str(rule);
    text.push('-');
    text.push_str(numbers.format(window_seconds));
    text.push_str("s\"");
}
