//! The Redis engine: counters shared by a fleet, in a single Redis or a Redis Cluster.
//!
//! One request costs one round trip for all its tiers: a Lua script, loaded once and then
//! called by its SHA1 (`EVALSHA`), reads the server clock, checks every tier and commits only
//! if the request is admitted. Every key it writes gets a TTL of the time its level takes to
//! drain, so idle clients leave nothing behind. Key names carry a hash tag of rule and key, so
//! the tiers of one rule share a Cluster slot.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;

use super::breaker::{Breaker, Permit};
use super::config::RedisConfig;
use super::gcra::Tier;
use super::metrics::LimitMetrics;
use super::{CheckOutcome, RuleCheck};
use crate::telemetry::ErrorChain;

/// The check-and-commit script. `KEYS[i]` is one (rule, key, tier); `ARGV` holds four values
/// per key: limit, window in microseconds, rule index and `1` when the rule is enforced.
/// Returns the request's verdict (`1` admitted) followed by each key's drained level before
/// the request, as strings because Redis would truncate Lua numbers to integers.
const CHECK_SCRIPT: &str = r"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local count = #KEYS
local levels = {}
local rule_ok = {}
local request_ok = true
for i = 1, count do
  local base = (i - 1) * 4
  local limit = tonumber(ARGV[base + 1])
  local window = tonumber(ARGV[base + 2])
  local rule = ARGV[base + 3]
  local level = 0
  local stored = redis.call('GET', KEYS[i])
  if stored then
    local stored_level, stored_at = string.match(stored, '^(%S+) (%S+)$')
    stored_level = tonumber(stored_level)
    stored_at = tonumber(stored_at)
    if stored_level and stored_at then
      local elapsed = math.max(now - stored_at, 0)
      level = math.max(stored_level - elapsed * limit / window, 0)
    end
  end
  levels[i] = level
  if level + 1 > limit + 1e-9 then
    rule_ok[rule] = false
    if ARGV[base + 4] == '1' then
      request_ok = false
    end
  elseif rule_ok[rule] == nil then
    rule_ok[rule] = true
  end
end
local result = { request_ok and '1' or '0' }
for i = 1, count do
  local base = (i - 1) * 4
  if request_ok and rule_ok[ARGV[base + 3]] then
    local limit = tonumber(ARGV[base + 1])
    local window = tonumber(ARGV[base + 2])
    local level = levels[i] + 1
    local ttl_ms = math.ceil(level * window / limit / 1000) + 1
    redis.call('SET', KEYS[i], string.format('%.17g %.0f', level, now), 'PX', ttl_ms)
  end
  result[i + 1] = string.format('%.17g', levels[i])
end
return result
";

/// Errors from the Redis engine.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No connection could be made.
    #[error("failed to connect to the Redis rate-limit store")]
    Connect(#[source] redis::RedisError),
    /// A call failed.
    #[error("Redis rate-limit call failed")]
    Call(#[source] redis::RedisError),
    /// A call took longer than the timeout.
    #[error("Redis rate-limit call timed out after {timeout_ms} ms")]
    Timeout { timeout_ms: u128 },
    /// The script answered something other than its documented reply.
    #[error("Redis rate-limit script returned an unexpected reply")]
    Reply,
    /// The circuit breaker is open.
    #[error("Redis rate-limit store is marked unavailable until the circuit breaker probes it")]
    BreakerOpen,
}

/// A connection to a single Redis or to a Redis Cluster. Both reconnect on their own.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The Redis engine.
pub struct RedisEngine {
    config: RedisConfig,
    script: redis::Script,
    connection: ArcSwapOption<Connection>,
    breaker: Breaker,
    metrics: Arc<LimitMetrics>,
}

impl std::fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEngine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RedisEngine {
    /// Creates the engine and tries to connect once. A failed connection is logged, not
    /// returned: the rules' failure modes apply until a later call reaches Redis.
    pub async fn new(config: RedisConfig, metrics: Arc<LimitMetrics>) -> Self {
        let engine = Self {
            breaker: Breaker::new(config.breaker_failures, config.breaker_open()),
            script: redis::Script::new(CHECK_SCRIPT),
            connection: ArcSwapOption::empty(),
            config,
            metrics,
        };
        match engine.connect().await {
            Ok(()) => tracing::info!(
                nodes = engine.config.urls.len(),
                cluster = engine.config.cluster,
                "connected to the Redis rate-limit store"
            ),
            Err(error) => {
                tracing::warn!(
                    error = %ErrorChain(&error),
                    "Redis rate-limit store unavailable at start, using each rule's failure mode"
                );
                engine.breaker.force_open();
                engine.metrics.set_store_available(false);
            }
        }
        engine
    }

    /// Returns the key name of one (rule, key, tier).
    pub fn key_name(&self, rule: &RuleCheck, tier: Tier) -> String {
        key_name(&self.config.key_prefix, &rule.name, &rule.key, tier)
    }

    /// Checks and, if admitted, commits a request: one script call for a single Redis, one per
    /// rule for a Cluster.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the breaker is open, or Redis fails or is slower than the timeout.
    pub async fn check(&self, rules: &[RuleCheck]) -> Result<CheckOutcome, StoreError> {
        let permit = self.breaker.permit();
        if permit == Permit::Denied {
            return Err(StoreError::BreakerOpen);
        }

        let result = self.call_all(rules).await;
        match &result {
            Ok(_) => {
                if self.breaker.record_success() {
                    tracing::info!("Redis rate-limit store answers again, leaving failure mode");
                    self.metrics.set_store_available(true);
                }
            }
            Err(error) => {
                self.metrics.record_store_failure();
                if self.breaker.record_failure(permit) {
                    tracing::warn!(
                        error = %ErrorChain(error),
                        open_ms = self.config.breaker_open_ms,
                        "Redis rate-limit store failing, circuit breaker open: using each rule's failure mode"
                    );
                    self.metrics.set_store_available(false);
                } else {
                    tracing::debug!(error = %ErrorChain(error), "Redis rate-limit call failed");
                }
            }
        }
        result
    }

    async fn call_all(&self, rules: &[RuleCheck]) -> Result<CheckOutcome, StoreError> {
        let connection = match self.connection.load_full() {
            Some(connection) => connection,
            None => {
                self.connect().await?;
                self.connection.load_full().ok_or(StoreError::Reply)?
            }
        };
        let mut connection = Connection::clone(&connection);

        if !self.config.cluster {
            return self.call(&mut connection, rules).await;
        }

        // NOTE: in a Cluster each rule is its own call, because the keys of two rules may live
        // in different slots. A request rejected by a later rule has then already been counted
        // by the rules before it.
        let mut outcome = CheckOutcome {
            admitted: true,
            rules: Vec::with_capacity(rules.len()),
        };
        for rule in rules {
            let single = self
                .call(&mut connection, std::slice::from_ref(rule))
                .await?;
            outcome.admitted &= single.admitted || !rule.enforced;
            outcome.rules.extend(single.rules);
        }
        Ok(outcome)
    }

    async fn call(
        &self,
        connection: &mut Connection,
        rules: &[RuleCheck],
    ) -> Result<CheckOutcome, StoreError> {
        let mut invocation = self.script.prepare_invoke();
        for (index, rule) in rules.iter().enumerate() {
            for tier in &rule.tiers {
                invocation
                    .key(self.key_name(rule, *tier))
                    .arg(tier.limit)
                    .arg(u64::try_from(tier.window.as_micros()).unwrap_or(u64::MAX))
                    .arg(index)
                    .arg(u8::from(rule.enforced));
            }
        }

        let timeout = self.config.timeout();
        let call = async {
            match connection {
                Connection::Single(manager) => {
                    invocation.invoke_async::<Vec<String>>(manager).await
                }
                Connection::Cluster(cluster) => {
                    invocation.invoke_async::<Vec<String>>(cluster).await
                }
            }
        };
        let reply = tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| StoreError::Timeout {
                timeout_ms: timeout.as_millis(),
            })?
            .map_err(StoreError::Call)?;
        parse_reply(rules, &reply)
    }

    async fn connect(&self) -> Result<(), StoreError> {
        let timeout = self.config.timeout().max(Duration::from_millis(250));
        let connection = if self.config.cluster {
            let client = redis::cluster::ClusterClient::builder(self.config.urls.clone())
                .connection_timeout(timeout)
                .response_timeout(self.config.timeout())
                .retries(1)
                .build()
                .map_err(StoreError::Connect)?;
            let cluster = tokio::time::timeout(timeout, client.get_async_connection())
                .await
                .map_err(|_| StoreError::Timeout {
                    timeout_ms: timeout.as_millis(),
                })?
                .map_err(StoreError::Connect)?;
            Connection::Cluster(cluster)
        } else {
            let url = self.config.urls.first().ok_or(StoreError::Reply)?;
            let client = redis::Client::open(url.as_str()).map_err(StoreError::Connect)?;
            let settings = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(self.config.timeout()))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            let manager =
                tokio::time::timeout(timeout, client.get_connection_manager_with_config(settings))
                    .await
                    .map_err(|_| StoreError::Timeout {
                        timeout_ms: timeout.as_millis(),
                    })?
                    .map_err(StoreError::Connect)?;
            Connection::Single(manager)
        };
        self.connection.store(Some(Arc::new(connection)));
        Ok(())
    }
}

/// Builds `PREFIX:{RULE|KEY}:WINDOW_MS`, escaping braces and `%` in the key so that the hash
/// tag always ends where the key ends.
pub fn key_name(prefix: &str, rule: &str, key: &str, tier: Tier) -> String {
    let mut name = String::with_capacity(prefix.len() + rule.len() + key.len() + 24);
    name.push_str(prefix);
    name.push_str(":{");
    name.push_str(rule);
    name.push('|');
    for c in key.chars() {
        match c {
            '{' => name.push_str("%7B"),
            '}' => name.push_str("%7D"),
            '%' => name.push_str("%25"),
            _ => name.push(c),
        }
    }
    name.push_str("}:");
    name.push_str(&tier.window.as_millis().to_string());
    name
}

fn parse_reply(rules: &[RuleCheck], reply: &[String]) -> Result<CheckOutcome, StoreError> {
    let tier_count: usize = rules.iter().map(|rule| rule.tiers.len()).sum();
    if reply.len() != tier_count + 1 {
        return Err(StoreError::Reply);
    }
    let mut values = reply[1..].iter();
    let mut levels = Vec::with_capacity(rules.len());
    for rule in rules {
        let mut rule_levels = Vec::with_capacity(rule.tiers.len());
        for _ in &rule.tiers {
            let level: f64 = values
                .next()
                .and_then(|value| value.parse().ok())
                .ok_or(StoreError::Reply)?;
            rule_levels.push(level);
        }
        levels.push(rule_levels);
    }

    let outcome = CheckOutcome::decide(rules, &levels);
    // The script and `decide` apply the same rule to the same levels; a mismatch means the
    // script is not the one this agent sent.
    let admitted_by_script = reply[0] == "1";
    if outcome.admitted != admitted_by_script {
        return Err(StoreError::Reply);
    }
    Ok(outcome)
}
