//! The Redis engine: counters shared by a fleet, in a single Redis or a Redis Cluster.
//!
//! One request costs one round trip for all its tiers: a Lua script, loaded once and then
//! called by its SHA1 (`EVALSHA`), reads the server clock, checks every tier and commits only
//! if the request is admitted. Every key it writes gets a TTL of the time its levels take to
//! drain, so idle clients leave nothing behind. Key names carry a hash tag of rule and key, so
//! that a key's slot in a Cluster depends on nothing else.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;

use super::breaker::{Breaker, Permit};
use super::config::RedisConfig;
use super::gcra::TierOutcome;
use super::metrics::LimitMetrics;
use super::{CheckOutcome, RuleCheck, RuleOutcome};
use crate::telemetry::ErrorChain;

/// The check-and-commit script. `KEYS[k]` is one (rule, key) and holds all the rule's tiers in
/// one string of little-endian doubles, packed with Redis's `struct` library: the time of the
/// last commit in microseconds, then per tier its window in microseconds and its level in
/// millionths of a request. Per key, `ARGV` has the tier count, `1` when the rule is enforced,
/// then the limit and window of each tier.
///
/// Returns integers: the request's verdict (`1` admitted), then per rule its verdict followed
/// by each tier's drained level before the request, in millionths of a request. One key per
/// rule keeps the script to three Redis calls per rule (TIME, GET, SET), whatever the number
/// of tiers, and binary packing avoids string parsing in Lua.
const CHECK_SCRIPT: &str = r"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local arg = 1
local rules = {}
local request_ok = true
for k = 1, #KEYS do
  local count = tonumber(ARGV[arg])
  local enforced = ARGV[arg + 1] == '1'
  arg = arg + 2
  local stored = redis.call('GET', KEYS[k])
  local stored_at = now
  local stored_count = 0
  if stored and #stored >= 8 and (#stored - 8) % 16 == 0 then
    stored_at = struct.unpack('<d', stored)
    stored_count = (#stored - 8) / 16
  end
  local elapsed = math.max(now - stored_at, 0)
  local ok = true
  local tiers = {}
  for j = 1, count do
    local limit = tonumber(ARGV[arg]) * 1000000
    local window = tonumber(ARGV[arg + 1])
    arg = arg + 2
    local level = 0
    for i = 0, stored_count - 1 do
      local stored_window, stored_level = struct.unpack('<dd', stored, 9 + i * 16)
      if stored_window == window then
        level = math.max(math.floor(stored_level - elapsed * limit / window), 0)
        break
      end
    end
    if level + 1000000 > limit then
      ok = false
    end
    tiers[j] = { limit, window, level }
  end
  if enforced and not ok then
    request_ok = false
  end
  rules[k] = { ok, tiers }
end
local result = { request_ok and 1 or 0 }
for k = 1, #KEYS do
  local ok, tiers = rules[k][1], rules[k][2]
  if request_ok and ok then
    local parts = { struct.pack('<d', now) }
    local ttl_us = 0
    for j = 1, #tiers do
      local level = tiers[j][3] + 1000000
      parts[j + 1] = struct.pack('<dd', tiers[j][2], level)
      ttl_us = math.max(ttl_us, level * tiers[j][2] / tiers[j][1])
    end
    redis.call('SET', KEYS[k], table.concat(parts), 'PX', math.ceil(ttl_us / 1000) + 1)
  end
  result[#result + 1] = ok and 1 or 0
  for j = 1, #tiers do
    result[#result + 1] = tiers[j][3]
  end
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
    /// The script returned something other than its documented reply.
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
            Ok(()) => {
                tracing::info!(
                    nodes = engine.config.urls.len(),
                    cluster = engine.config.cluster,
                    "connected to the Redis rate-limit store"
                );
                engine.metrics.set_store_available(true);
            }
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

    /// Returns the key name of one (rule, key).
    pub fn key_name(&self, rule: &RuleCheck) -> String {
        key_name(&self.config.key_prefix, &rule.name, &rule.key)
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
                    tracing::info!("Redis rate-limit store responds again, leaving failure mode");
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
        for rule in rules {
            invocation
                .key(self.key_name(rule))
                .arg(rule.tiers.len())
                .arg(u8::from(rule.enforced));
            for tier in &rule.tiers {
                invocation
                    .arg(tier.limit)
                    .arg(u64::try_from(tier.window.as_micros()).unwrap_or(u64::MAX));
            }
        }

        let timeout = self.config.timeout();
        let call = async {
            match connection {
                Connection::Single(manager) => invocation.invoke_async::<Vec<i64>>(manager).await,
                Connection::Cluster(cluster) => invocation.invoke_async::<Vec<i64>>(cluster).await,
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
        self.load_script(connection.clone(), timeout).await?;
        self.connection.store(Some(Arc::new(connection)));
        Ok(())
    }

    /// Loads the script on every server (every master of a Cluster), so that calls by hash
    /// succeed from the first. A server that restarts loses it; the first call after that
    /// loads it again, at the cost of two more round trips.
    async fn load_script(
        &self,
        mut connection: Connection,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let load = async {
            match &mut connection {
                Connection::Single(manager) => self.script.load_async(manager).await,
                Connection::Cluster(cluster) => self.script.load_async(cluster).await,
            }
        };
        tokio::time::timeout(timeout, load)
            .await
            .map_err(|_| StoreError::Timeout {
                timeout_ms: timeout.as_millis(),
            })?
            .map_err(StoreError::Connect)?;
        Ok(())
    }
}

/// Builds `PREFIX:{RULE|KEY}`, escaping braces and `%` in the key so that the hash tag always
/// ends where the key ends.
pub fn key_name(prefix: &str, rule: &str, key: &str) -> String {
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
    name.push('}');
    name
}

/// Millionths of a request: the unit of levels in Redis.
const LEVEL_SCALE: f64 = 1_000_000.0;

fn parse_reply(rules: &[RuleCheck], reply: &[i64]) -> Result<CheckOutcome, StoreError> {
    let tier_count: usize = rules.iter().map(|rule| rule.tiers.len()).sum();
    if reply.len() != 1 + rules.len() + tier_count {
        return Err(StoreError::Reply);
    }

    let admitted = reply[0] == 1;
    let mut values = reply[1..].iter();
    let mut outcomes = Vec::with_capacity(rules.len());
    for rule in rules {
        let rule_admitted = values.next().ok_or(StoreError::Reply)? == &1;
        let committed = admitted && rule_admitted;
        let mut tiers = Vec::with_capacity(rule.tiers.len());
        for tier in &rule.tiers {
            let level = *values.next().ok_or(StoreError::Reply)? as f64 / LEVEL_SCALE;
            let mut outcome = TierOutcome::new(*tier, level, committed);
            // The script decided in whole millionths; its verdict is the one that counted.
            outcome.admitted = rule_admitted || tier.admits(level);
            tiers.push(outcome);
        }
        outcomes.push(RuleOutcome {
            tiers,
            admitted: rule_admitted,
            committed,
        });
    }
    Ok(CheckOutcome {
        admitted,
        rules: outcomes,
    })
}
