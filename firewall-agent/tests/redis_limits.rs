//! The Redis engine against real `redis-server` processes on loopback.

mod redis_server;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, Method};

use firewall_agent::config::RateLimitConfig;
use firewall_agent::limits::{
    EngineKind, FailureMode, KeyInput, LimitMetrics, LimitsConfig, RateLimits, RuleAction,
    RuleConfig, TierConfig, Verdict,
};
use redis_server::RedisServer;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));

fn rule(name: &str, tiers: &[(u32, u64)], on_store_failure: FailureMode) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        key: vec!["client_address".into()],
        routes: Vec::new(),
        methods: Vec::new(),
        action: RuleAction::Reject,
        on_store_failure,
        ipv6_prefix_length: 64,
        tiers: tiers
            .iter()
            .map(|&(requests, window_seconds)| TierConfig {
                requests,
                window_seconds,
            })
            .collect(),
    }
}

fn redis_config(urls: Vec<String>, cluster: bool, rules: Vec<RuleConfig>) -> LimitsConfig {
    let mut config = LimitsConfig {
        engine: EngineKind::Redis,
        rules,
        ..LimitsConfig::default()
    };
    config.redis.urls = urls;
    config.redis.cluster = cluster;
    config.redis.breaker_open_ms = 200;
    // Tests run in parallel on a debug build, where one call can take longer than the 20 ms
    // default. The outage test relies on refused connections, so it needs no short timeout.
    config.redis.timeout_ms = 1_000;
    config
}

async fn limits(config: &LimitsConfig) -> (Arc<RateLimits>, Arc<LimitMetrics>) {
    config.validate().expect("valid config");
    let metrics = Arc::new(LimitMetrics::default());
    let limits = RateLimits::new(config, &RateLimitConfig::default(), Arc::clone(&metrics))
        .await
        .expect("rules compile");
    (Arc::new(limits), metrics)
}

async fn send(limits: &RateLimits, client: IpAddr) -> Verdict {
    let headers = HeaderMap::new();
    let method = Method::GET;
    let input = KeyInput {
        client,
        method: &method,
        path: "/",
        headers: &headers,
        token_subject: None,
        client_id: None,
    };
    limits.check(&input).await.verdict
}

fn admitted(verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::Admit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_burst_admits_at_most_limit() {
    if !redis_server::available() {
        return;
    }
    let server = RedisServer::start();
    let config = redis_config(
        vec![server.url()],
        false,
        vec![rule("api", &[(5, 1)], FailureMode::FailClosed)],
    );
    let (limits, _) = limits(&config).await;

    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let limits = Arc::clone(&limits);
            tokio::spawn(async move { send(&limits, CLIENT).await })
        })
        .collect();
    let mut verdicts = Vec::new();
    for task in tasks {
        verdicts.push(task.await.expect("task"));
    }

    let admitted_count = verdicts.iter().filter(|verdict| admitted(verdict)).count();
    assert!(admitted_count <= 5, "{admitted_count} admitted");
    assert!(admitted_count >= 1, "{verdicts:?}");
    let unavailable = verdicts
        .iter()
        .filter(|verdict| matches!(verdict, Verdict::Unavailable { .. }))
        .count();
    assert_eq!(unavailable, 0, "the store must answer every call");
}

#[tokio::test]
async fn reload_raises_limit_keeping_counters() {
    if !redis_server::available() {
        return;
    }
    let server = RedisServer::start();
    let mut config = redis_config(
        vec![server.url()],
        false,
        vec![rule("hourly", &[(10, 3600)], FailureMode::FailClosed)],
    );
    let (limits, _) = limits(&config).await;

    let mut rejected = 0;
    for _ in 0..50 {
        if !admitted(&send(&limits, CLIENT).await) {
            rejected += 1;
        }
    }
    assert_eq!(rejected, 40);

    config.rules = vec![rule("hourly", &[(20, 3600)], FailureMode::FailClosed)];
    limits
        .reload(&config, &RateLimitConfig::default())
        .expect("reload");

    assert!(admitted(&send(&limits, CLIENT).await));
}

#[tokio::test]
async fn rejection_on_one_tier_consumes_no_other_tier() {
    if !redis_server::available() {
        return;
    }
    let server = RedisServer::start();
    let config = redis_config(
        vec![server.url()],
        false,
        vec![rule(
            "api",
            &[(2, 3600), (100, 7200)],
            FailureMode::FailClosed,
        )],
    );
    let (limits, _) = limits(&config).await;

    for _ in 0..30 {
        send(&limits, CLIENT).await;
    }

    // Drop the hourly tier and cut the 2-hour tier to 3: if the 2-hour tier counted only the
    // 2 admitted requests, exactly one more fits.
    let mut reloaded = config.clone();
    reloaded.rules = vec![rule("api", &[(3, 7200)], FailureMode::FailClosed)];
    limits
        .reload(&reloaded, &RateLimitConfig::default())
        .expect("reload");
    assert!(admitted(&send(&limits, CLIENT).await));
    assert!(!admitted(&send(&limits, CLIENT).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_key_has_ttl_after_load_run() {
    if !redis_server::available() {
        return;
    }
    let server = RedisServer::start();
    let config = redis_config(
        vec![server.url()],
        false,
        vec![
            rule(
                "api",
                &[(3, 60), (20, 3600), (100, 86_400)],
                FailureMode::FailClosed,
            ),
            RuleConfig {
                key: vec!["endpoint".into()],
                ..rule("endpoint", &[(1_000, 60)], FailureMode::FailClosed)
            },
        ],
    );
    let (limits, _) = limits(&config).await;

    let tasks: Vec<_> = (0..8u32)
        .map(|task| {
            let limits = Arc::clone(&limits);
            tokio::spawn(async move {
                for index in 0..100u32 {
                    let client =
                        IpAddr::V4(Ipv4Addr::from(0xC633_6400 | ((task * 100 + index) % 200)));
                    send(&limits, client).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }

    let client = redis::Client::open(server.url()).expect("client");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut connection)
        .await
        .expect("KEYS");
    // One key for each of the 200 clients, and the endpoint rule's one key.
    assert_eq!(keys.len(), 201, "{keys:?}");
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .expect("PTTL");
        // PTTL is -1 for a key without TTL. Every key has at least one request, which takes
        // seconds to drain, so its TTL is positive.
        assert!(ttl > 0, "{key} has PTTL {ttl}");
    }
}

#[tokio::test]
async fn redis_outage_fails_open_closed_and_recovers() {
    if !redis_server::available() {
        return;
    }
    let mut server = RedisServer::start();
    let mut open_rule = rule("open", &[(1_000, 60)], FailureMode::FailOpen);
    open_rule.methods = vec!["GET".into()];
    let mut closed_rule = rule("closed", &[(1_000, 60)], FailureMode::FailClosed);
    closed_rule.methods = vec!["POST".into()];
    let mut config = redis_config(vec![server.url()], false, vec![open_rule, closed_rule]);
    config.redis.fleet_size = 100;
    let (limits, metrics) = limits(&config).await;
    let headers = HeaderMap::new();
    let check = |method: Method| {
        let limits = Arc::clone(&limits);
        let headers = headers.clone();
        async move {
            let input = KeyInput {
                client: CLIENT,
                method: &method,
                path: "/",
                headers: &headers,
                token_subject: None,
                client_id: None,
            };
            limits.check(&input).await.verdict
        }
    };

    for _ in 0..5 {
        assert!(admitted(&check(Method::GET).await));
        assert!(admitted(&check(Method::POST).await));
    }
    assert!(metrics.store_available());

    server.kill();
    let mut get_verdicts = Vec::new();
    let mut post_verdicts = Vec::new();
    for _ in 0..20 {
        get_verdicts.push(check(Method::GET).await);
        post_verdicts.push(check(Method::POST).await);
    }
    // Fail open: the local limit is 1000 / 100 = 10, so 10 of the 20 pass and the rest get a
    // 429 from that local limit, never a 503. Fail closed: 503, never 429.
    let open_admitted = get_verdicts.iter().filter(|v| admitted(v)).count();
    assert_eq!(open_admitted, 10, "{get_verdicts:?}");
    assert!(
        get_verdicts
            .iter()
            .all(|v| !matches!(v, Verdict::Unavailable { .. }))
    );
    assert!(
        post_verdicts
            .iter()
            .all(|v| matches!(v, Verdict::Unavailable { .. })),
        "{post_verdicts:?}"
    );
    assert!(!metrics.store_available());

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut recovered = false;
    while Instant::now() < deadline {
        if admitted(&check(Method::POST).await) && metrics.store_available() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "service did not recover after Redis restarted");
    // Back on Redis, whose counters restarted empty: the full limit applies again.
    for _ in 0..20 {
        assert!(admitted(&check(Method::GET).await));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_engine_limits_keys_on_every_master() {
    if !redis_server::available() {
        return;
    }
    let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_cluster_node()).collect();
    redis_server::create_cluster(&nodes);

    let config = redis_config(
        nodes.iter().map(RedisServer::url).collect(),
        true,
        vec![rule("api", &[(5, 60), (50, 3600)], FailureMode::FailClosed)],
    );
    let (limits, metrics) = limits(&config).await;

    // Find one client whose keys live on each master.
    let mut clients: Vec<Option<(IpAddr, String)>> = vec![None, None, None];
    for index in 1..=250u8 {
        let client = IpAddr::V4(Ipv4Addr::new(198, 51, 100, index));
        let key = firewall_agent::limits::redis::key_name("fwrl", "api", &client.to_string());
        let owner = nodes
            .iter()
            .position(|node| node.command(&format!("EXISTS {key}")).starts_with(':'))
            .expect("one node owns every slot");
        if clients[owner].is_none() {
            clients[owner] = Some((client, key));
        }
    }

    for (owner, entry) in clients.iter().enumerate() {
        let (client, key) = entry.as_ref().expect("a client for every master");
        for _ in 0..5 {
            assert!(admitted(&send(&limits, *client).await), "master {owner}");
        }
        assert!(!admitted(&send(&limits, *client).await), "master {owner}");
        assert!(
            nodes[owner]
                .command(&format!("EXISTS {key}"))
                .starts_with(":1"),
            "{key} must live on master {owner}"
        );
    }
    assert!(metrics.store_available());
}

/// Returns the index of the cluster node that stores `key`.
fn owner_of(nodes: &[RedisServer], key: &str) -> usize {
    nodes
        .iter()
        .position(|node| node.command(&format!("EXISTS {key}")).starts_with(':'))
        .expect("one node owns every slot")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_rejection_consumes_no_other_rule() {
    if !redis_server::available() {
        return;
    }
    let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_cluster_node()).collect();
    redis_server::create_cluster(&nodes);
    let wide = rule("wide", &[(10, 3600)], FailureMode::FailClosed);
    let narrow = rule("narrow", &[(2, 3600)], FailureMode::FailClosed);
    let config = redis_config(
        nodes.iter().map(RedisServer::url).collect(),
        true,
        vec![wide.clone(), narrow],
    );
    let (limits, _) = limits(&config).await;

    // A client whose two keys live on different masters, so each rule is its own call.
    let client = (1..=250u8)
        .map(|index| IpAddr::V4(Ipv4Addr::new(198, 51, 100, index)))
        .find(|client| {
            let wide_key = firewall_agent::limits::redis::key_name("fwrl", "wide", &client.to_string());
            let narrow_key =
                firewall_agent::limits::redis::key_name("fwrl", "narrow", &client.to_string());
            owner_of(&nodes, &wide_key) != owner_of(&nodes, &narrow_key)
        })
        .expect("a client whose keys live on two masters");

    for _ in 0..2 {
        assert!(admitted(&send(&limits, client).await));
    }
    for _ in 0..6 {
        assert!(!admitted(&send(&limits, client).await));
    }

    // Raise the narrow rule: if the wide rule counted only the 2 admitted requests, 8 more fit.
    let mut reloaded = config.clone();
    reloaded.rules = vec![wide, rule("narrow", &[(100, 3600)], FailureMode::FailClosed)];
    limits
        .reload(&reloaded, &RateLimitConfig::default())
        .expect("reload");
    for request in 0..8 {
        assert!(
            admitted(&send(&limits, client).await),
            "request {request} after the reload"
        );
    }
    assert!(!admitted(&send(&limits, client).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_outage_fails_open_closed_and_recovers() {
    if !redis_server::available() {
        return;
    }
    let mut nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_cluster_node()).collect();
    redis_server::create_cluster(&nodes);
    let mut open_rule = rule("open", &[(1_000, 60)], FailureMode::FailOpen);
    open_rule.methods = vec!["GET".into()];
    let mut closed_rule = rule("closed", &[(1_000, 60)], FailureMode::FailClosed);
    closed_rule.methods = vec!["POST".into()];
    let config = redis_config(
        nodes.iter().map(RedisServer::url).collect(),
        true,
        vec![open_rule, closed_rule],
    );
    let (limits, metrics) = limits(&config).await;
    let headers = HeaderMap::new();
    let check = |client: IpAddr, method: Method| {
        let limits = Arc::clone(&limits);
        let headers = headers.clone();
        async move {
            let input = KeyInput {
                client,
                method: &method,
                path: "/",
                headers: &headers,
                token_subject: None,
                client_id: None,
            };
            limits.check(&input).await.verdict
        }
    };
    let clients: Vec<IpAddr> = (1..=30u8)
        .map(|index| IpAddr::V4(Ipv4Addr::new(198, 51, 100, index)))
        .collect();
    for &client in &clients {
        assert!(admitted(&check(client, Method::GET).await));
        assert!(admitted(&check(client, Method::POST).await));
    }

    // Stop the master of the first client's open key while requests keep coming.
    let key = firewall_agent::limits::redis::key_name("fwrl", "open", &clients[0].to_string());
    let stopped = owner_of(&nodes, &key);
    nodes[stopped].kill();
    let mut get_verdicts = Vec::new();
    let mut post_verdicts = Vec::new();
    for _ in 0..3 {
        for &client in &clients {
            get_verdicts.push(check(client, Method::GET).await);
            post_verdicts.push(check(client, Method::POST).await);
        }
    }
    // Fail open: the local limit of 1000 per minute is far away, so every request passes.
    // Fail closed: 503 where the store failed, else admitted. Never 429.
    assert!(
        get_verdicts.iter().all(admitted),
        "a fail-open rule rejected a request: {get_verdicts:?}"
    );
    assert!(
        post_verdicts
            .iter()
            .all(|v| admitted(v) || matches!(v, Verdict::Unavailable { .. })),
        "{post_verdicts:?}"
    );
    assert!(
        post_verdicts
            .iter()
            .any(|v| matches!(v, Verdict::Unavailable { .. })),
        "no request saw the stopped master: {post_verdicts:?}"
    );

    nodes[stopped].restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut recovered = false;
    while Instant::now() < deadline {
        let mut all_admitted = true;
        for &client in &clients {
            all_admitted &= admitted(&check(client, Method::POST).await);
        }
        if all_admitted && metrics.store_available() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "service did not recover after the master restarted");
}
