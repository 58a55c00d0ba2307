//! The Redis engine: counters shared by a fleet, in a single Redis or a Redis Cluster.
//!
//! On a single Redis, one request costs one round trip for all its rules and tiers. A Lua
//! script, loaded once and then called by its SHA1 (`EVALSHA`), reads the server clock, checks
//! every tier and commits only if the request is admitted. Requests that arrive while a call
//! is in flight share the next call (see the `batch` module). In a Cluster, each rule is one
//! call, all sent at once, and a rejected request costs a second round of refund calls (see
//! [`RedisEngine::check`]). Every key gets a TTL of at least the time its levels take to
//! drain, so idle clients leave nothing behind. Key names carry a hash tag of rule and key, so
//! that a key's slot in a Cluster depends on nothing else.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;

mod batch;

use super::breaker::{Breaker, Permit};
use super::config::RedisConfig;
use super::gcra::TierOutcome;
use super::metrics::LimitMetrics;
use super::{CheckOutcome, RuleCheck, RuleOutcome};
use crate::telemetry::ErrorChain;

/// The check-and-commit script, for one request or a batch of them, decided one after
/// another. `ARGV[1]` has two bytes per request, its number of keys as a little-endian 16-bit
/// integer. `KEYS[k]` is one (rule, key) of a request and contains all the rule's tiers in one
/// string of little-endian doubles. It starts with the time of the last commit and the time
/// the key expires, both in microseconds of the server clock. Then comes, per tier, its window
/// in microseconds and its level in millionths of a request. `ARGV[2k]` is the `struct` format of that string.
/// `ARGV[2k+1]` has the same layout and contains the rule's parameters: `1` when the rule is
/// enforced, the TTL slack in microseconds, then per tier its window and its limit in
/// millionths. Parameters arrive packed because Lua's string-to-number conversion costs more
/// than one `struct.unpack` of all of them.
///
/// Returns integers, per request: its verdict (`1` admitted), then per rule its verdict
/// followed by each tier's drained level before the request, in millionths of a request.
///
/// The server clock is read once per call (TIME), then each key costs a GET and, when
/// committed, a SET, whatever the number of tiers. The SET keeps the key's TTL (`KEEPTTL`,
/// Redis 6.0 or later) unless the levels need a longer one. Then it sets the time they take to
/// drain plus the slack, so a busy key resets its TTL only once per slack's worth of requests.
/// When the stored tiers differ from the rule's, such as after a reload, a slower path keeps
/// the level of each tier whose window is unchanged.
const CHECK_SCRIPT: &str = r"
local clock = redis.call('TIME')
local now = clock[1] * 1000000 + clock[2]
local groups = ARGV[1]
local result = {}
local n = 0
local first = 1
for r = 1, #groups / 2 do
  local low, high = string.byte(groups, 2 * r - 1, 2 * r)
  local last_key = first + low + 256 * high - 1
  local params = {}
  local states = {}
  local request_ok = true
  for k = first, last_key do
    local format = ARGV[2 * k]
    local packed = ARGV[2 * k + 1]
    local p = { struct.unpack(format, packed) }
    local stored = redis.call('GET', KEYS[k])
    local s
    if stored and #stored == #packed then
      s = { struct.unpack(format, stored) }
    elseif stored and #stored >= 32 and #stored % 16 == 0 then
      local old = { struct.unpack('<' .. string.rep('d', #stored / 8), stored) }
      s = { old[1], old[2] }
      for j = 3, #packed / 8, 2 do
        for i = 3, #stored / 8, 2 do
          if old[i] == p[j] then
            s[j] = old[i]
            s[j + 1] = old[i + 1]
          end
        end
      end
    end
    local elapsed = 0
    if s then
      elapsed = now - s[1]
      if elapsed < 0 then elapsed = 0 end
    else
      s = { 0, 0 }
    end
    local ok = 1
    for j = 3, #packed / 8, 2 do
      local window, limit = p[j], p[j + 1]
      local level = 0
      if s[j] == window then
        level = s[j + 1] - elapsed * limit / window
        if level < 0 then level = 0 end
      end
      if level + 1000000 > limit then ok = 0 end
      s[j] = window
      s[j + 1] = level
    end
    if ok == 0 and p[1] == 1 then request_ok = false end
    p[1] = ok
    params[k] = p
    states[k] = s
  end
  n = n + 1
  result[n] = request_ok and 1 or 0
  for k = first, last_key do
    local p, s = params[k], states[k]
    local last = #ARGV[2 * k + 1] / 8
    n = n + 1
    result[n] = p[1]
    for j = 3, last, 2 do
      n = n + 1
      result[n] = s[j + 1]
    end
    if request_ok and p[1] == 1 then
      local ttl = 0
      for j = 3, last, 2 do
        local level = s[j + 1] + 1000000
        s[j + 1] = level
        local drain = level * s[j] / p[j + 1]
        if drain > ttl then ttl = drain end
      end
      local expires = s[2]
      s[1] = now
      if now + ttl > expires then
        ttl = ttl + p[2]
        s[2] = now + ttl
        redis.call('SET', KEYS[k], struct.pack(ARGV[2 * k], unpack(s, 1, last)), 'PX', math.floor(ttl / 1000) + 1)
      else
        redis.call('SET', KEYS[k], struct.pack(ARGV[2 * k], unpack(s, 1, last)), 'KEEPTTL')
      end
    end
  end
  first = last_key + 1
end
return result
";

/// The refund script: takes one request back from every tier of one key that [`CHECK_SCRIPT`]
/// committed. `KEYS[1]` is the key, `ARGV[1]` the `struct` format and `ARGV[2]` the packed
/// parameters, as in that script. A tier
/// whose stored window differs from the rule's is left as it is. Returns `1` when the key
/// existed.
const REFUND_SCRIPT: &str = r"
local stored = redis.call('GET', KEYS[1])
local packed = ARGV[2]
if not stored or #stored ~= #packed then return 0 end
local clock = redis.call('TIME')
local now = clock[1] * 1000000 + clock[2]
local p = { struct.unpack(ARGV[1], packed) }
local s = { struct.unpack(ARGV[1], stored) }
local elapsed = now - s[1]
if elapsed < 0 then elapsed = 0 end
for j = 3, #packed / 8, 2 do
  if s[j] == p[j] then
    local level = s[j + 1] - elapsed * p[j + 1] / p[j] - 1000000
    if level < 0 then level = 0 end
    s[j + 1] = level
  end
end
s[1] = now
redis.call('SET', KEYS[1], struct.pack(ARGV[1], unpack(s, 1, #packed / 8)), 'KEEPTTL')
return 1
";

/// Share of a rule's longest window added to a key's TTL when the TTL must grow, so that the
/// script resets it rarely. An idle key lives at most this much longer than its levels need.
const TTL_SLACK_DIVISOR: u32 = 16;

/// `struct` formats of the packed state for one to eight tiers: two doubles, then two per tier.
const STATE_FORMATS: [&str; 8] = [
    "<dddd",
    "<dddddd",
    "<dddddddd",
    "<dddddddddd",
    "<dddddddddddd",
    "<dddddddddddddd",
    "<dddddddddddddddd",
    "<dddddddddddddddddd",
];

/// Errors from the Redis engine.
#[derive(Clone, Debug, thiserror::Error)]
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
    /// A request is covered by more rules than one script call takes.
    #[error("a request matched {rules} rate-limit rules, more than the 65535 one Redis call takes")]
    TooManyRules { rules: usize },
    /// The task that sends batches of requests to Redis stopped.
    #[error("the Redis rate-limit batch task stopped")]
    BatchStopped,
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
    refund_script: redis::Script,
    /// Batches requests for a single Redis, and is `None` for a Cluster.
    batcher: Option<batch::Batcher>,
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
            refund_script: redis::Script::new(REFUND_SCRIPT),
            batcher: (!config.cluster).then(|| {
                batch::Batcher::start(
                    redis::Script::new(CHECK_SCRIPT),
                    config.key_prefix.clone(),
                    config.timeout(),
                )
            }),
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
    /// rule for a Cluster, where the rules that admitted a request that another rule rejected
    /// get their reservation refunded.
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

        // NOTE: Cluster calls are not batched, because a batch would have to be split by slot,
        // so a Cluster costs one script call per rule and request.
        match &self.batcher {
            Some(batcher) => batcher.check(connection, rules).await,
            None if self.config.cluster => self.reserve_each(&connection, rules).await,
            None => self.call(&mut connection, rules).await,
        }
    }

    /// Checks a request in a Redis Cluster, where the keys of two rules may live on different
    /// masters. One call per rule, all sent at once, checks the rule and commits (reserves)
    /// the request if the rule alone admits it. When an enforced rule rejects the request, the
    /// other rules' reservations are refunded, so a rejected request consumes nothing.
    ///
    /// Between a reservation and its refund, other requests of the same keys see the reserved
    /// request, so they may be rejected when one request less would have fit. The race can
    /// only reject, never admit too many. A refund that fails leaves its reservation in place
    /// until the levels drain, and is counted as a store failure.
    async fn reserve_each(
        &self,
        connection: &Connection,
        rules: &[RuleCheck],
    ) -> Result<CheckOutcome, StoreError> {
        let calls = rules.iter().map(|rule| {
            let mut connection = connection.clone();
            async move { self.call(&mut connection, std::slice::from_ref(rule)).await }
        });
        let mut outcome = CheckOutcome {
            admitted: true,
            rules: Vec::with_capacity(rules.len()),
        };
        for (rule, single) in rules
            .iter()
            .zip(futures_util::future::join_all(calls).await)
        {
            let single = single?;
            outcome.admitted &= single.admitted || !rule.enforced;
            outcome.rules.extend(single.rules);
        }
        if outcome.admitted {
            return Ok(outcome);
        }

        let refunds = rules
            .iter()
            .zip(&mut outcome.rules)
            .filter(|(_, result)| result.committed)
            .map(|(rule, result)| {
                result.committed = false;
                for tier in &mut result.tiers {
                    tier.level = (tier.level - 1.0).max(0.0);
                }
                let mut connection = connection.clone();
                async move { self.refund(&mut connection, rule).await }
            });
        for refund in futures_util::future::join_all(refunds).await {
            if let Err(error) = refund {
                self.metrics.record_store_failure();
                tracing::warn!(error = %ErrorChain(&error), "failed to refund a rate-limit reservation, the rejected request stays counted until its levels drain");
            }
        }
        Ok(outcome)
    }

    async fn call(
        &self,
        connection: &mut Connection,
        rules: &[RuleCheck],
    ) -> Result<CheckOutcome, StoreError> {
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(request_groups([rules])?);
        add_rules(&mut invocation, &self.config.key_prefix, rules);
        let reply: Vec<i64> = invoke(connection, &invocation, self.config.timeout()).await?;
        parse_reply(rules, &reply)
    }

    async fn refund(
        &self,
        connection: &mut Connection,
        rule: &RuleCheck,
    ) -> Result<(), StoreError> {
        let mut invocation = self.refund_script.prepare_invoke();
        invocation
            .key(self.key_name(rule))
            .arg(state_format(rule.tiers.len()).as_ref())
            .arg(packed_parameters(rule));
        let _: i64 = invoke(connection, &invocation, self.config.timeout()).await?;
        Ok(())
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

    /// Loads the scripts on every server (every master of a Cluster), so that calls by hash
    /// succeed from the first. A server that restarts loses it; the first call after that
    /// loads it again, at the cost of two more round trips.
    async fn load_script(
        &self,
        mut connection: Connection,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let load = async {
            for script in [&self.script, &self.refund_script] {
                match &mut connection {
                    Connection::Single(manager) => script.load_async(manager).await?,
                    Connection::Cluster(cluster) => script.load_async(cluster).await?,
                };
            }
            Ok::<(), redis::RedisError>(())
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

/// Calls a script by hash within `timeout`, loading it first if the server lacks it.
async fn invoke<T: redis::FromRedisValue>(
    connection: &mut Connection,
    invocation: &redis::ScriptInvocation<'_>,
    timeout: Duration,
) -> Result<T, StoreError> {
    let call = async {
        match connection {
            Connection::Single(manager) => invocation.invoke_async::<T>(manager).await,
            Connection::Cluster(cluster) => invocation.invoke_async::<T>(cluster).await,
        }
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| StoreError::Timeout {
            timeout_ms: timeout.as_millis(),
        })?
        .map_err(StoreError::Call)
}

/// Returns the first argument of [`CHECK_SCRIPT`]: each request's number of rules, as two
/// little-endian bytes.
fn request_groups<'r>(
    requests: impl IntoIterator<Item = &'r [RuleCheck]>,
) -> Result<Vec<u8>, StoreError> {
    let mut groups = Vec::new();
    for rules in requests {
        let count = u16::try_from(rules.len())
            .map_err(|_| StoreError::TooManyRules { rules: rules.len() })?;
        groups.extend_from_slice(&count.to_le_bytes());
    }
    Ok(groups)
}

/// Adds the key, the state format and the packed parameters of each rule to a call of
/// [`CHECK_SCRIPT`].
fn add_rules(invocation: &mut redis::ScriptInvocation<'_>, prefix: &str, rules: &[RuleCheck]) {
    for rule in rules {
        invocation
            .key(key_name(prefix, &rule.name, &rule.key))
            .arg(state_format(rule.tiers.len()).as_ref())
            .arg(packed_parameters(rule));
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

/// Returns the `struct` format of the packed state and parameters of a rule with `tiers` tiers.
fn state_format(tiers: usize) -> Cow<'static, str> {
    match STATE_FORMATS.get(tiers.wrapping_sub(1)) {
        Some(format) => Cow::Borrowed(format),
        None => Cow::Owned(format!("<{}", "d".repeat(2 + 2 * tiers))),
    }
}

/// Packs a rule's parameters for the scripts: enforced (`1` or `0`), TTL slack in
/// microseconds, then per tier its window in microseconds and its limit in millionths of a
/// request, as little-endian doubles. Both are exact below 2^53, that is for windows under 285
/// years and limits under 9·10^9.
fn packed_parameters(rule: &RuleCheck) -> Vec<u8> {
    let longest = rule
        .tiers
        .iter()
        .map(|tier| tier.window)
        .max()
        .unwrap_or_default();
    let slack = longest / TTL_SLACK_DIVISOR;
    let mut packed = Vec::with_capacity(16 + 16 * rule.tiers.len());
    packed.extend_from_slice(&f64::from(u8::from(rule.enforced)).to_le_bytes());
    packed.extend_from_slice(&(slack.as_micros() as f64).to_le_bytes());
    for tier in rule.tiers.iter() {
        packed.extend_from_slice(&(tier.window.as_micros() as f64).to_le_bytes());
        packed.extend_from_slice(&(f64::from(tier.limit) * LEVEL_SCALE).to_le_bytes());
    }
    packed
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
        for tier in rule.tiers.iter() {
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
