//! The `[limits]` section: rules, tiers, the engine and the Redis store.

use std::time::Duration;

use serde::Deserialize;

use crate::config::{MAX_DURATION_SECONDS, RateLimitConfig};

/// Name of the rule that the `[rate_limit]` shorthand stands for.
pub const SHORTHAND_RULE_NAME: &str = "per-client";

/// Default prefix length that groups IPv6 clients, because one subscriber usually gets a whole /64.
pub const DEFAULT_IPV6_PREFIX_LENGTH: u8 = 64;

/// Default maximum number of (key, tier) entries the embedded engine keeps.
pub const DEFAULT_MAX_ENTRIES: usize = 1_000_000;

/// Default time in milliseconds that one Redis call may take before it counts as a failure.
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 20;

/// Longest accepted rule name, so that names fit in header values and Redis key names.
const MAX_RULE_NAME_BYTES: usize = 64;

/// `[limits]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Counter storage: `embedded` (in the agent's memory) or `redis` (shared by a fleet).
    pub engine: EngineKind,
    /// Whether responses on limited routes carry `RateLimit-Policy` and `RateLimit` headers.
    pub headers: bool,
    /// Maximum number of (key, tier) entries of the embedded engine, and of the local limiter
    /// that the Redis engine falls back to. Idle entries go first when it is reached.
    pub max_entries: usize,
    /// `[[limits.rules]]`. When empty, the `[rate_limit]` section stands for one rule.
    pub rules: Vec<RuleConfig>,
    /// `[limits.redis]`: the Redis store, used when `engine = "redis"`.
    pub redis: RedisConfig,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            engine: EngineKind::Embedded,
            headers: true,
            max_entries: DEFAULT_MAX_ENTRIES,
            rules: Vec::new(),
            redis: RedisConfig::default(),
        }
    }
}

/// Counter storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Sharded maps in the agent's memory.
    #[default]
    Embedded,
    /// A Redis server or a Redis Cluster shared by every agent of a fleet.
    Redis,
}

/// `[[limits.rules]]`: one limit with one or more tiers.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Name used in headers, metrics, logs and store keys. Counters survive a reload as long as
    /// the name and the tier's window stay the same.
    pub name: String,
    /// Parts of the request that make up the key, such as `["client_address"]` or
    /// `["client_address", "header:x-api-key"]`.
    pub key: Vec<String>,
    /// Route patterns the rule covers, such as `/users/{id}` or `/api/*`. Empty covers every
    /// path.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Methods the rule covers, such as `["POST"]`. Empty covers every method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Action on a request over the limit.
    #[serde(default)]
    pub action: RuleAction,
    /// Behaviour while the Redis store fails.
    #[serde(default)]
    pub on_store_failure: FailureMode,
    /// Prefix length that groups IPv6 client addresses in the `client_address` key part.
    #[serde(default = "default_ipv6_prefix_length")]
    pub ipv6_prefix_length: u8,
    /// The tiers, all of which must admit a request.
    pub tiers: Vec<TierConfig>,
}

fn default_ipv6_prefix_length() -> u8 {
    DEFAULT_IPV6_PREFIX_LENGTH
}

/// One tier of a rule: `requests` per `window_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// Maximum number of requests per window.
    pub requests: u32,
    /// Window length in seconds.
    pub window_seconds: u64,
}

impl TierConfig {
    /// Returns the window length.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_seconds)
    }
}

/// Action on a request over the limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// Respond with 429 and `Retry-After`.
    #[default]
    Reject,
    /// Respond with 429 and count a strike toward a kernel ban of the client address.
    Strike,
    /// Count and log the request as over the limit, but let it through.
    Shadow,
}

/// Behaviour of a rule while the Redis store fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Limit with a local counter at the rule's limit divided by `limits.redis.fleet_size`.
    #[default]
    FailOpen,
    /// Respond with 503.
    FailClosed,
}

/// `[limits.redis]` section. Its `Debug` leaves out the URLs, which may hold a password.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Server URLs, such as `redis://127.0.0.1:6379`. With `cluster = true`, any subset of the
    /// cluster's nodes.
    pub urls: Vec<String>,
    /// Whether the URLs are nodes of a Redis Cluster.
    pub cluster: bool,
    /// Maximum time in milliseconds for one call; a slower call counts as a failure.
    pub timeout_ms: u64,
    /// Number of agents sharing the store. A rule that fails open limits each agent to its
    /// limit divided by this.
    pub fleet_size: u32,
    /// Prefix of every key name.
    pub key_prefix: String,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// Time in milliseconds the breaker stays open before one call probes Redis again.
    pub breaker_open_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            cluster: false,
            timeout_ms: DEFAULT_REDIS_TIMEOUT_MS,
            fleet_size: 1,
            key_prefix: "fwrl".into(),
            breaker_failures: 3,
            breaker_open_ms: 1_000,
        }
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("urls", &format_args!("[{} redacted]", self.urls.len()))
            .field("cluster", &self.cluster)
            .field("timeout_ms", &self.timeout_ms)
            .field("fleet_size", &self.fleet_size)
            .field("key_prefix", &self.key_prefix)
            .field("breaker_failures", &self.breaker_failures)
            .field("breaker_open_ms", &self.breaker_open_ms)
            .finish()
    }
}

impl RedisConfig {
    /// Returns the call timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Returns how long the breaker stays open.
    pub fn breaker_open(&self) -> Duration {
        Duration::from_millis(self.breaker_open_ms)
    }
}

impl LimitsConfig {
    /// Returns the configured rules, or the rule that `[rate_limit]` stands for when none is
    /// configured: the client address as key, one tier, and a strike on each rejection.
    pub fn effective_rules(&self, shorthand: &RateLimitConfig) -> Vec<RuleConfig> {
        if !self.rules.is_empty() {
            return self.rules.clone();
        }
        vec![RuleConfig {
            name: SHORTHAND_RULE_NAME.into(),
            key: vec!["client_address".into()],
            routes: Vec::new(),
            methods: Vec::new(),
            action: RuleAction::Strike,
            on_store_failure: FailureMode::FailOpen,
            ipv6_prefix_length: DEFAULT_IPV6_PREFIX_LENGTH,
            tiers: vec![TierConfig {
                requests: shorthand.requests,
                window_seconds: shorthand.window_seconds,
            }],
        }]
    }

    /// Checks the section.
    ///
    /// # Errors
    ///
    /// The dotted key and the problem, such as `("limits.rules", "...")`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_entries == 0 {
            return Err(("limits.max_entries", "must be at least 1".into()));
        }

        let mut names = std::collections::HashSet::new();
        for rule in &self.rules {
            validate_rule(rule)?;
            if !names.insert(rule.name.as_str()) {
                return Err((
                    "limits.rules",
                    format!("has two rules named `{}`: names must be unique", rule.name),
                ));
            }
        }

        if self.engine == EngineKind::Redis {
            self.validate_redis()?;
        }
        Ok(())
    }

    fn validate_redis(&self) -> Result<(), (&'static str, String)> {
        let redis = &self.redis;
        if redis.urls.is_empty() {
            return Err((
                "limits.redis.urls",
                "must list at least one URL when limits.engine is `redis`".into(),
            ));
        }
        for url in &redis.urls {
            // The URL may hold a password, so the message does not repeat it.
            if redis::Client::open(url.as_str()).is_err() {
                return Err((
                    "limits.redis.urls",
                    "contains an invalid URL: expected redis://[:PASSWORD@]HOST[:PORT][/DB]".into(),
                ));
            }
        }
        if redis.timeout_ms == 0 {
            return Err(("limits.redis.timeout_ms", "must be at least 1".into()));
        }
        if redis.fleet_size == 0 {
            return Err(("limits.redis.fleet_size", "must be at least 1".into()));
        }
        if redis.breaker_failures == 0 {
            return Err(("limits.redis.breaker_failures", "must be at least 1".into()));
        }
        if redis.breaker_open_ms == 0 {
            return Err(("limits.redis.breaker_open_ms", "must be at least 1".into()));
        }
        let prefix_valid = !redis.key_prefix.is_empty()
            && redis
                .key_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b':');
        if !prefix_valid {
            return Err((
                "limits.redis.key_prefix",
                "must be ASCII letters, digits, `_`, `-` or `:`".into(),
            ));
        }
        Ok(())
    }
}

/// Checks one rule; the parts that need parsing (key parts, routes, methods) are checked when
/// the rule is compiled, which [`super::RuleSet::compile`] does during validation too.
fn validate_rule(rule: &RuleConfig) -> Result<(), (&'static str, String)> {
    let name_valid = !rule.name.is_empty()
        && rule.name.len() <= MAX_RULE_NAME_BYTES
        && rule
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if !name_valid {
        return Err((
            "limits.rules.name",
            format!(
                "`{}` is invalid: use 1 to {MAX_RULE_NAME_BYTES} ASCII letters, digits, `_`, `-` or `.`",
                rule.name
            ),
        ));
    }
    if rule.tiers.is_empty() {
        return Err((
            "limits.rules.tiers",
            format!("rule `{}` must have at least one tier", rule.name),
        ));
    }
    let mut windows = std::collections::HashSet::new();
    for tier in &rule.tiers {
        if tier.requests == 0 {
            return Err((
                "limits.rules.tiers.requests",
                format!("rule `{}`: must be at least 1", rule.name),
            ));
        }
        if tier.window_seconds == 0 || tier.window_seconds > MAX_DURATION_SECONDS {
            return Err((
                "limits.rules.tiers.window_seconds",
                format!(
                    "rule `{}`: must be between 1 and {MAX_DURATION_SECONDS}",
                    rule.name
                ),
            ));
        }
        if !windows.insert(tier.window_seconds) {
            return Err((
                "limits.rules.tiers.window_seconds",
                format!(
                    "rule `{}` has two tiers of {} seconds: each tier needs its own window",
                    rule.name, tier.window_seconds
                ),
            ));
        }
    }
    if rule.ipv6_prefix_length == 0 || rule.ipv6_prefix_length > 128 {
        return Err((
            "limits.rules.ipv6_prefix_length",
            format!("rule `{}`: must be between 1 and 128", rule.name),
        ));
    }
    super::rules::CompiledRule::compile(rule).map(|_| ())
}
