//! Rate-limit benchmark, run by `cargo xtask bench limits`: prints Markdown table rows.
//!
//! Embedded engine: decisions per second on one thread, with one hot key and with one million
//! distinct keys, and resident memory per entry.
//!
//! Redis engine: requests per second with three tiers (32 and 1 in flight), round trips per
//! request, and Redis memory per client after a day-long limit of 10,000 is filled. Each is
//! compared with a sorted-set limiter implemented here. That limiter adds one member per
//! request and sends one MULTI round trip per tier (ZREMRANGEBYSCORE, ZADD, ZCARD, PEXPIRE),
//! tiers one after another. For both, the benchmark reads the time Redis spends per call
//! (`INFO commandstats`) and Redis's CPU time per request (`INFO cpu`).

#[path = "../tests/redis_server/mod.rs"]
#[allow(dead_code, reason = "shared with the tests, which use all of it")]
mod redis_server;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use firewall_agent::limits::config::RedisConfig;
use firewall_agent::limits::{EmbeddedEngine, LimitMetrics, RedisEngine, RuleCheck, Tier};
use redis::aio::ConnectionManager;

/// Concurrent requests in flight against Redis in the throughput runs. The latency runs have
/// one.
const CONCURRENCY: usize = 32;
/// Length of each Redis throughput run.
const REDIS_RUN: Duration = Duration::from_secs(5);
/// Distinct clients in the Redis throughput runs.
const REDIS_CLIENTS: u32 = 10_000;
/// The day-long limit of the memory comparison.
const DAY_LIMIT: u32 = 10_000;

/// Round trips made by the sorted-set limiter.
static BASELINE_ROUND_TRIPS: AtomicU64 = AtomicU64::new(0);

fn main() {
    let rows = embedded_rows();
    for row in rows {
        println!("{row}");
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    for row in runtime.block_on(redis_rows()) {
        println!("{row}");
    }
}

fn rule(key: String, tiers: &[Tier]) -> RuleCheck {
    RuleCheck {
        name: "bench".into(),
        key,
        tiers: tiers.into(),
        enforced: true,
    }
}

fn embedded_rows() -> Vec<String> {
    let metrics = Arc::new(LimitMetrics::default());
    let tiers = [Tier::new(1_000_000_000, Duration::from_secs(1))];

    let engine = EmbeddedEngine::new(2_000_000, Arc::clone(&metrics));
    let hot = [rule("198.51.100.7".into(), &tiers)];
    let count = 3_000_000u32;
    let started = Instant::now();
    for _ in 0..count {
        std::hint::black_box(engine.check(&hot));
    }
    let hot_rate = f64::from(count) / started.elapsed().as_secs_f64();

    let engine = EmbeddedEngine::new(2_000_000, Arc::clone(&metrics));
    let distinct = 1_000_000u32;
    let rss_before = resident_bytes();
    let started = Instant::now();
    for index in 0..distinct {
        let check = [rule(format!("client-{index}"), &tiers)];
        std::hint::black_box(engine.check(&check));
    }
    let distinct_rate = f64::from(distinct) / started.elapsed().as_secs_f64();
    let rss_after = resident_bytes();
    let per_entry = rss_after.saturating_sub(rss_before) as f64 / engine.entries() as f64;

    vec![
        format!("| embedded | decisions/s on one core, one hot key, 1 tier | {hot_rate:.0} | | |"),
        format!(
            "| embedded | decisions/s on one core, {distinct} distinct keys, 1 tier (key built per request) | {distinct_rate:.0} | | |"
        ),
        format!(
            "| embedded | resident memory per (key, tier) entry, {} entries | {per_entry:.0} B | | |",
            engine.entries()
        ),
    ]
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

async fn redis_rows() -> Vec<String> {
    if !redis_server::available() {
        return vec!["| redis | skipped: redis-server is not installed | | | |".into()];
    }
    let server = redis_server::RedisServer::start();
    let client = redis::Client::open(server.url()).expect("redis client");
    let connection = client
        .get_connection_manager()
        .await
        .expect("redis connection");

    let metrics = Arc::new(LimitMetrics::default());
    let config = RedisConfig {
        urls: vec![server.url()],
        // Generous, so that queueing under full load is measured, not counted as failures.
        timeout_ms: 1_000,
        ..RedisConfig::default()
    };
    let engine = Arc::new(RedisEngine::new(config, metrics).await);
    let tiers = [
        Tier::new(1_000, Duration::from_secs(60)),
        Tier::new(5_000, Duration::from_secs(3_600)),
        Tier::new(DAY_LIMIT, Duration::from_secs(86_400)),
    ];

    let engine_request = {
        let engine = Arc::clone(&engine);
        move |index: u64| {
            let engine = Arc::clone(&engine);
            async move {
                let check = [rule(
                    format!("c{}", index % u64::from(REDIS_CLIENTS)),
                    &tiers,
                )];
                engine.check(&check).await.is_ok()
            }
        }
    };
    let before = ServerStats::read(&server);
    let (engine_requests, engine_errors) =
        run_for(REDIS_RUN, CONCURRENCY, engine_request.clone()).await;
    let engine_stats = ServerStats::read(&server).since(&before);
    let engine_commands = engine_stats.calls(&["evalsha", "eval", "script"]);
    let engine_rate = engine_requests as f64 / REDIS_RUN.as_secs_f64();
    let (engine_sequential, _) = run_for(REDIS_RUN, 1, engine_request).await;
    let engine_sequential_rate = engine_sequential as f64 / REDIS_RUN.as_secs_f64();

    server.command("FLUSHALL");
    let before = ServerStats::read(&server);
    let baseline_request = {
        let connection = connection.clone();
        move |index: u64| {
            let mut connection = connection.clone();
            async move {
                let client = format!("c{}", index % u64::from(REDIS_CLIENTS));
                sorted_set_check(&mut connection, &client, &tiers, index)
                    .await
                    .is_ok()
            }
        }
    };
    let (baseline_requests, baseline_errors) =
        run_for(REDIS_RUN, CONCURRENCY, baseline_request.clone()).await;
    let baseline_stats = ServerStats::read(&server).since(&before);
    let baseline_round_trips = BASELINE_ROUND_TRIPS.load(Ordering::Relaxed);
    let baseline_rate = baseline_requests as f64 / REDIS_RUN.as_secs_f64();
    let (baseline_sequential, _) = run_for(REDIS_RUN, 1, baseline_request).await;
    let baseline_sequential_rate = baseline_sequential as f64 / REDIS_RUN.as_secs_f64();

    server.command("FLUSHALL");
    let day = [Tier::new(DAY_LIMIT, Duration::from_secs(86_400))];
    for _ in 0..DAY_LIMIT {
        let _ = engine.check(&[rule("heavy".into(), &day)]).await;
    }
    let engine_memory = memory_usage(&server, &engine.key_name(&rule("heavy".into(), &day)));
    let mut baseline_connection = connection.clone();
    for index in 0..u64::from(DAY_LIMIT) {
        let _ = sorted_set_check(&mut baseline_connection, "heavy", &day, index).await;
    }
    let baseline_memory = memory_usage(&server, "zset:heavy:86400");

    vec![
        format!(
            "| redis | requests/s, 3 tiers, {CONCURRENCY} in flight, {REDIS_CLIENTS} clients | {engine_rate:.0} | {baseline_rate:.0} | {:.1}x |",
            engine_rate / baseline_rate
        ),
        format!(
            "| redis | requests/s, 3 tiers, 1 in flight (bound by round trips) | {engine_sequential_rate:.0} | {baseline_sequential_rate:.0} | {:.1}x |",
            engine_sequential_rate / baseline_sequential_rate
        ),
        format!(
            "| redis | round trips per request, 3 tiers (engine: EVALSHA and SCRIPT calls at the server; sorted sets: MULTI pipelines sent) | {:.2} | {:.2} | |",
            engine_commands as f64 / (engine_requests + engine_errors).max(1) as f64,
            baseline_round_trips as f64 / (baseline_requests + baseline_errors).max(1) as f64
        ),
        format!(
            "| redis | server time per call in µs, 3 tiers, {CONCURRENCY} in flight (`INFO commandstats` usec over calls: EVALSHA; sorted sets: MULTI plus EXEC, which includes the commands it runs, per transaction) | {:.1} | {:.1} | |",
            engine_stats.usec(&["evalsha"]) as f64 / engine_stats.calls(&["evalsha"]).max(1) as f64,
            baseline_stats.usec(&["multi", "exec"]) as f64
                / baseline_stats.calls(&["exec"]).max(1) as f64,
        ),
        format!(
            "| redis | server time per request in µs, 3 tiers, {CONCURRENCY} in flight (the same usec over requests; ratio: sorted sets ÷ this engine) | {:.1} | {:.1} | {:.1}x |",
            engine_stats.usec(&["evalsha"]) as f64 / engine_requests.max(1) as f64,
            baseline_stats.usec(&["multi", "exec"]) as f64 / baseline_requests.max(1) as f64,
            (baseline_stats.usec(&["multi", "exec"]) as f64 / baseline_requests.max(1) as f64)
                / (engine_stats.usec(&["evalsha"]) as f64 / engine_requests.max(1) as f64)
                    .max(f64::MIN_POSITIVE),
        ),
        format!(
            "| redis | Redis CPU per request in µs, 3 tiers, {CONCURRENCY} in flight (`INFO cpu` user plus system, network included; ratio: sorted sets ÷ this engine) | {:.1} | {:.1} | {:.1}x |",
            engine_stats.cpu_seconds * 1e6 / engine_requests.max(1) as f64,
            baseline_stats.cpu_seconds * 1e6 / baseline_requests.max(1) as f64,
            (baseline_stats.cpu_seconds / baseline_requests.max(1) as f64)
                / (engine_stats.cpu_seconds / engine_requests.max(1) as f64).max(f64::MIN_POSITIVE),
        ),
        format!("| redis | failed calls during the runs | {engine_errors} | {baseline_errors} | |"),
        format!(
            "| redis | memory per client after filling a limit of {DAY_LIMIT} per day | {engine_memory} B | {baseline_memory} B | {:.0}x less |",
            baseline_memory as f64 / engine_memory.max(1) as f64
        ),
    ]
}

/// Runs `request` from `concurrency` tasks for `duration`. Returns the successful and the
/// failed requests.
async fn run_for<F, Fut>(duration: Duration, concurrency: usize, request: F) -> (u64, u64)
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let next = Arc::clone(&next);
            let failed = Arc::clone(&failed);
            let request = request.clone();
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if request(index).await {
                        done += 1;
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap_or(0);
    }
    (total, failed.load(Ordering::Relaxed))
}

/// Checks a request with the sorted-set limiter: per tier, in order, one MULTI with
/// ZREMRANGEBYSCORE, ZADD, ZCARD and PEXPIRE. A tier whose count exceeds its limit rejects.
async fn sorted_set_check(
    connection: &mut ConnectionManager,
    client: &str,
    tiers: &[Tier],
    request: u64,
) -> redis::RedisResult<bool> {
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as u64)
        .unwrap_or(0);
    for tier in tiers {
        let key = format!("zset:{client}:{}", tier.window.as_secs());
        let window_us = tier.window.as_micros() as u64;
        BASELINE_ROUND_TRIPS.fetch_add(1, Ordering::Relaxed);
        let (count,): (u64,) = redis::pipe()
            .atomic()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg(0)
            .arg(now_us.saturating_sub(window_us))
            .ignore()
            .cmd("ZADD")
            .arg(&key)
            .arg(now_us)
            .arg(format!("{now_us}-{request}"))
            .ignore()
            .cmd("ZCARD")
            .arg(&key)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(tier.window.as_millis() as u64)
            .ignore()
            .query_async(connection)
            .await?;
        if count > u64::from(tier.limit) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Counters of one Redis server: `INFO commandstats` per command and `INFO cpu`.
#[derive(Default)]
struct ServerStats {
    /// Per command name, such as `evalsha`: calls and microseconds spent.
    commands: std::collections::HashMap<String, (u64, u64)>,
    /// `used_cpu_user` plus `used_cpu_sys`.
    cpu_seconds: f64,
}

impl ServerStats {
    fn read(server: &redis_server::RedisServer) -> Self {
        let mut stats = Self::default();
        for line in server.command("INFO commandstats").lines() {
            let Some((name, fields)) = line
                .strip_prefix("cmdstat_")
                .and_then(|rest| rest.split_once(':'))
            else {
                continue;
            };
            let field = |key: &str| -> u64 {
                fields
                    .split(',')
                    .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|value| value.parse().ok())
                    .unwrap_or(0)
            };
            stats
                .commands
                .insert(name.to_owned(), (field("calls"), field("usec")));
        }
        stats.cpu_seconds = server
            .command("INFO cpu")
            .lines()
            .filter(|line| line.starts_with("used_cpu_user:") || line.starts_with("used_cpu_sys:"))
            .filter_map(|line| line.split_once(':')?.1.trim().parse::<f64>().ok())
            .sum();
        stats
    }

    /// Returns the counters from `earlier` to `self`.
    fn since(&self, earlier: &Self) -> Self {
        let commands = self
            .commands
            .iter()
            .map(|(name, &(calls, usec))| {
                let (calls_before, usec_before) =
                    earlier.commands.get(name).copied().unwrap_or_default();
                (
                    name.clone(),
                    (
                        calls.saturating_sub(calls_before),
                        usec.saturating_sub(usec_before),
                    ),
                )
            })
            .collect();
        Self {
            commands,
            cpu_seconds: self.cpu_seconds - earlier.cpu_seconds,
        }
    }

    /// Returns the calls of the commands whose name starts with one of `prefixes`, so that
    /// `script` covers `script|load`.
    fn calls(&self, prefixes: &[&str]) -> u64 {
        self.matching(prefixes).map(|(calls, _)| calls).sum()
    }

    fn usec(&self, names: &[&str]) -> u64 {
        self.exact(names).map(|(_, usec)| usec).sum()
    }

    fn matching<'s>(&'s self, prefixes: &'s [&str]) -> impl Iterator<Item = (u64, u64)> + 's {
        self.commands
            .iter()
            .filter(|(name, _)| prefixes.iter().any(|prefix| name.starts_with(prefix)))
            .map(|(_, &counters)| counters)
    }

    fn exact<'s>(&'s self, names: &'s [&str]) -> impl Iterator<Item = (u64, u64)> + 's {
        names
            .iter()
            .filter_map(|name| self.commands.get(*name).copied())
    }
}

fn memory_usage(server: &redis_server::RedisServer, key: &str) -> u64 {
    let reply = server.command(&format!("MEMORY USAGE {key} SAMPLES 0"));
    reply
        .trim()
        .strip_prefix(':')
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}
