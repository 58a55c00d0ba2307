//! Rate limiting: rules with keys and tiers, checked and committed atomically by an engine.
//!
//! A rule covers some routes and methods and builds a key from the request: client address,
//! token subject, client id, endpoint, header value, path parameter, or several of these. It
//! has one or more tiers, such as 10 per second and 1000 per hour. A request is admitted only
//! if every tier of every enforced rule admits it, and a rejected request consumes nothing.
//! The algorithm and its error bound are described in [`gcra`].
//!
//! Counters live in the [`EmbeddedEngine`] (the default) or in Redis ([`RedisEngine`]) for a
//! fleet of agents. Rules, limits and the header switch change on reload without losing
//! counters: a counter belongs to a rule name, a key and a tier window.

pub mod breaker;
pub mod config;
pub mod embedded;
pub mod gcra;
pub mod headers;
pub mod metrics;
pub mod redis;
pub mod rules;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use smallvec::SmallVec;

pub use config::{EngineKind, FailureMode, LimitsConfig, RuleAction, RuleConfig, TierConfig};
pub use embedded::EmbeddedEngine;
pub use gcra::{Tier, TierOutcome};
pub use metrics::{EvictionReason, LimitMetrics, RuleDecision};
pub use redis::{RedisEngine, StoreError};
pub use rules::{CompiledRule, KeyInput, KeyPart};

use crate::config::RateLimitConfig;
use crate::telemetry::ErrorChain;
use headers::RateLimitHeaders;

/// One rule's part of a request, as passed to an engine. The name and tiers are shared with
/// the compiled rule, so that building a check per request does not copy them.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleCheck {
    /// Rule name.
    pub name: Arc<str>,
    /// The request's key under this rule.
    pub key: String,
    /// The rule's tiers.
    pub tiers: Arc<[Tier]>,
    /// `false` for a shadow rule, whose rejections do not reject the request.
    pub enforced: bool,
}

/// One rule's result for a request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleOutcome {
    /// One outcome per tier, in the rule's order.
    pub tiers: Vec<TierOutcome>,
    /// Whether every tier admits the request.
    pub admitted: bool,
    /// Whether the request was counted in this rule's tiers.
    pub committed: bool,
}

/// The result of a request across its rules.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckOutcome {
    /// Whether every enforced rule admits the request.
    pub admitted: bool,
    /// One outcome per rule, in order.
    pub rules: Vec<RuleOutcome>,
}

impl CheckOutcome {
    /// Decides a request from each tier's drained level before it. The embedded engine and
    /// the Redis script apply this same rule.
    pub fn decide<L: AsRef<[f64]>>(rules: &[RuleCheck], levels: &[L]) -> Self {
        let rule_admits: smallvec::SmallVec<[bool; 4]> = rules
            .iter()
            .zip(levels)
            .map(|(rule, levels)| {
                rule.tiers
                    .iter()
                    .zip(levels.as_ref())
                    .all(|(tier, &level)| tier.admits(level))
            })
            .collect();
        let admitted = rules
            .iter()
            .zip(&rule_admits)
            .all(|(rule, &admits)| admits || !rule.enforced);

        let rules = rules
            .iter()
            .zip(levels)
            .zip(rule_admits)
            .map(|((rule, levels), admits)| {
                let committed = admitted && admits;
                RuleOutcome {
                    tiers: rule
                        .tiers
                        .iter()
                        .zip(levels.as_ref())
                        .map(|(tier, &level)| TierOutcome::new(*tier, level, committed))
                        .collect(),
                    admitted: admits,
                    committed,
                }
            })
            .collect();
        Self { admitted, rules }
    }
}

/// The proxy's action on a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Let it through.
    Admit,
    /// Respond with 429. `strike` counts a strike toward a ban of the client address.
    Reject {
        /// Name of the first enforced rule that rejected the request.
        rule: String,
        /// Time until the rejecting tiers admit a request again.
        retry_after: Duration,
        /// Whether the rule's action is `strike`.
        strike: bool,
    },
    /// Respond with 503: the store failed and a matching rule fails closed.
    Unavailable {
        /// Name of the rule.
        rule: String,
    },
}

/// The verdict and the headers of one request.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The action.
    pub verdict: Verdict,
    /// `RateLimit-Policy` and `RateLimit` values, unless no rule applies or headers are off.
    pub headers: Option<RateLimitHeaders>,
}

/// The compiled rules in force, replaced whole on reload.
#[derive(Debug, Default)]
struct RuleSet {
    rules: Vec<CompiledRule>,
    headers: bool,
}

impl RuleSet {
    fn compile(config: &LimitsConfig, shorthand: &RateLimitConfig) -> Result<Self, LimitsError> {
        let rules = config
            .effective_rules(shorthand)
            .iter()
            .map(|rule| {
                CompiledRule::compile(rule)
                    .map_err(|(key, problem)| LimitsError::Invalid { key, problem })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            rules,
            headers: config.headers,
        })
    }
}

/// Errors from building or reloading the limits.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    /// A rule does not compile.
    #[error("{key} {problem}")]
    Invalid {
        /// Dotted config key.
        key: &'static str,
        /// The problem.
        problem: String,
    },
}

/// The counters' home.
#[derive(Debug)]
enum Engine {
    Embedded(EmbeddedEngine),
    Redis {
        engine: Box<RedisEngine>,
        /// Local counters for rules that fail open while Redis fails.
        fallback: EmbeddedEngine,
        fleet_size: u32,
    },
}

/// The rate limits: rules in force and the engine that counts.
#[derive(Debug)]
pub struct RateLimits {
    rules: ArcSwap<RuleSet>,
    engine: Engine,
    /// Settings the engine was built with; changing them takes a restart.
    engine_config: LimitsConfig,
    metrics: Arc<LimitMetrics>,
}

impl RateLimits {
    /// Builds the rules and the engine. With `engine = "redis"`, connects once; a failure is
    /// logged and the rules' failure modes apply until a call to Redis succeeds.
    ///
    /// # Errors
    ///
    /// [`LimitsError`] when a rule does not compile; validation catches this earlier.
    pub async fn new(
        config: &LimitsConfig,
        shorthand: &RateLimitConfig,
        metrics: Arc<LimitMetrics>,
    ) -> Result<Self, LimitsError> {
        let rules = RuleSet::compile(config, shorthand)?;
        let engine = match config.engine {
            EngineKind::Embedded => Engine::Embedded(EmbeddedEngine::new(
                config.max_entries,
                Arc::clone(&metrics),
            )),
            EngineKind::Redis => Engine::Redis {
                engine: Box::new(
                    RedisEngine::new(config.redis.clone(), Arc::clone(&metrics)).await,
                ),
                fallback: EmbeddedEngine::new(config.max_entries, Arc::clone(&metrics)),
                fleet_size: config.redis.fleet_size,
            },
        };
        Ok(Self {
            rules: ArcSwap::from_pointee(rules),
            engine,
            engine_config: config.clone(),
            metrics,
        })
    }

    /// Creates embedded limits over a given engine, for tests that control the clock.
    pub fn with_embedded(
        config: &LimitsConfig,
        shorthand: &RateLimitConfig,
        engine: EmbeddedEngine,
        metrics: Arc<LimitMetrics>,
    ) -> Result<Self, LimitsError> {
        Ok(Self {
            rules: ArcSwap::from_pointee(RuleSet::compile(config, shorthand)?),
            engine: Engine::Embedded(engine),
            engine_config: config.clone(),
            metrics,
        })
    }

    /// Replaces the rules and the header switch, keeping every counter whose rule name and
    /// tier window are unchanged. Engine settings are kept as they are, with a warning.
    ///
    /// # Errors
    ///
    /// [`LimitsError`] when a rule does not compile; the rules in force stay.
    pub fn reload(
        &self,
        config: &LimitsConfig,
        shorthand: &RateLimitConfig,
    ) -> Result<(), LimitsError> {
        let rules = RuleSet::compile(config, shorthand)?;
        let count = rules.rules.len();
        self.rules.store(Arc::new(rules));

        let engine_changed = config.engine != self.engine_config.engine
            || config.redis != self.engine_config.redis
            || config.max_entries != self.engine_config.max_entries;
        if engine_changed {
            tracing::warn!(
                "limits.engine, limits.max_entries and [limits.redis] changed, but take effect only after a restart"
            );
        }
        tracing::info!(rules = count, "rate-limit rules reloaded");
        Ok(())
    }

    /// Returns the metrics.
    pub fn metrics(&self) -> &Arc<LimitMetrics> {
        &self.metrics
    }

    /// Returns whether a rule covering a request with `method` and `path` keys on the token
    /// subject or the client id, so the token must be verified before [`RateLimits::check`].
    pub fn keys_on_token(&self, method: &http::Method, path: &str) -> bool {
        self.rules
            .load()
            .rules
            .iter()
            .any(|rule| rule.keys_on_token() && rule.covers(method, path))
    }

    /// Checks a request against every rule that covers it and commits it if admitted.
    pub async fn check(&self, input: &KeyInput<'_>) -> Decision {
        self.check_at(input, Instant::now()).await
    }

    /// Like [`RateLimits::check`], with the embedded engine's clock at `now`. The Redis
    /// engine always uses the server's clock.
    pub async fn check_at(&self, input: &KeyInput<'_>, now: Instant) -> Decision {
        let rules = self.rules.load();
        let mut covered: SmallVec<[&CompiledRule; 2]> = SmallVec::new();
        let mut checks: SmallVec<[RuleCheck; 2]> = SmallVec::new();
        for rule in &rules.rules {
            if let Some(key) = rule.key_for(input) {
                checks.push(RuleCheck {
                    name: Arc::clone(&rule.name),
                    key,
                    tiers: Arc::clone(&rule.tiers),
                    enforced: rule.action != RuleAction::Shadow,
                });
                covered.push(rule);
            }
        }
        if checks.is_empty() {
            return Decision {
                verdict: Verdict::Admit,
                headers: None,
            };
        }

        let outcome = match &self.engine {
            Engine::Embedded(engine) => engine.check_at(&checks, now),
            Engine::Redis {
                engine,
                fallback,
                fleet_size,
            } => match engine.check(&checks).await {
                Ok(outcome) => outcome,
                Err(error) => {
                    return self.fail_over(
                        input,
                        &covered,
                        checks,
                        fallback,
                        *fleet_size,
                        now,
                        &error,
                    );
                }
            },
        };
        self.conclude(input, &covered, &checks, &outcome, rules.headers)
    }

    /// Decides a request while Redis fails: 503 if a covering rule fails closed, else the
    /// local counters at each limit divided by the fleet size. Never 429 for the failure
    /// itself.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site, all parts of one decision"
    )]
    fn fail_over(
        &self,
        input: &KeyInput<'_>,
        covered: &[&CompiledRule],
        checks: SmallVec<[RuleCheck; 2]>,
        fallback: &EmbeddedEngine,
        fleet_size: u32,
        now: Instant,
        error: &StoreError,
    ) -> Decision {
        if let Some(rule) = covered
            .iter()
            .find(|rule| rule.on_store_failure == FailureMode::FailClosed)
        {
            self.metrics
                .record_decision(&rule.name, RuleDecision::StoreUnavailable);
            tracing::debug!(client = %input.client, rule = &*rule.name, error = %ErrorChain(error), "rate-limit store unavailable, rule fails closed");
            return Decision {
                verdict: Verdict::Unavailable {
                    rule: rule.name.to_string(),
                },
                headers: None,
            };
        }

        let local: SmallVec<[RuleCheck; 2]> = checks
            .into_iter()
            .map(|mut check| {
                check.tiers = check
                    .tiers
                    .iter()
                    .map(|tier| tier.divided(fleet_size))
                    .collect();
                check
            })
            .collect();
        let outcome = fallback.check_at(&local, now);
        let headers = self.rules.load().headers;
        self.conclude(input, covered, &local, &outcome, headers)
    }

    fn conclude(
        &self,
        input: &KeyInput<'_>,
        covered: &[&CompiledRule],
        checks: &[RuleCheck],
        outcome: &CheckOutcome,
        headers_on: bool,
    ) -> Decision {
        let mut rejection: Option<Verdict> = None;
        for ((rule, check), result) in covered.iter().zip(checks).zip(&outcome.rules) {
            let decision = if result.admitted {
                // Admitted requests are the common case, so their counter is looked up once
                // per rule instead of once per request.
                rule.admitted_count
                    .get_or_init(|| {
                        self.metrics
                            .decision_counter(&rule.name, RuleDecision::Admitted)
                    })
                    .inc();
                continue;
            } else if !check.enforced {
                tracing::info!(client = %input.client, rule = &*rule.name, "request over a shadow rate limit, let through");
                RuleDecision::ShadowRejected
            } else {
                if rejection.is_none() {
                    rejection = Some(Verdict::Reject {
                        rule: rule.name.to_string(),
                        retry_after: retry_after(result),
                        strike: rule.action == RuleAction::Strike,
                    });
                }
                RuleDecision::Rejected
            };
            self.metrics.record_decision(&rule.name, decision);
        }

        let headers = headers_on
            .then(|| RateLimitHeaders::build(checks, &outcome.rules))
            .flatten();
        Decision {
            verdict: rejection.unwrap_or(Verdict::Admit),
            headers,
        }
    }

    /// Removes idle embedded entries. Returns how many were removed.
    pub fn evict_idle(&self, now: Instant) -> usize {
        match &self.engine {
            Engine::Embedded(engine) => engine.evict_idle(now),
            Engine::Redis { fallback, .. } => fallback.evict_idle(now),
        }
    }
}

/// Returns the longest wait among the tiers that rejected.
fn retry_after(result: &RuleOutcome) -> Duration {
    result
        .tiers
        .iter()
        .filter(|tier| !tier.admitted)
        .map(TierOutcome::retry_after)
        .max()
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests;

impl crate::reload::Reloadable for RateLimits {
    fn sections(&self) -> &'static str {
        "limits, rate_limit"
    }

    fn reload(
        &self,
        config: &crate::config::Config,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        RateLimits::reload(self, &config.limits, &config.rate_limit).map_err(Into::into)
    }
}
