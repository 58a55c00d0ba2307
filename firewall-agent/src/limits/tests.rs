use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method};

use super::config::{LimitsConfig, RuleAction, RuleConfig, TierConfig};
use super::metrics::{EvictionReason, LimitMetrics, RuleDecision};
use super::{EmbeddedEngine, KeyInput, RateLimits, Verdict};
use crate::config::RateLimitConfig;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));

fn rule(name: &str, key: &[&str], tiers: &[(u32, u64)]) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        key: key.iter().map(|part| (*part).to_owned()).collect(),
        routes: Vec::new(),
        methods: Vec::new(),
        action: RuleAction::Reject,
        on_store_failure: super::FailureMode::FailOpen,
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

fn config(rules: Vec<RuleConfig>) -> LimitsConfig {
    LimitsConfig {
        rules,
        ..LimitsConfig::default()
    }
}

struct Harness {
    limits: RateLimits,
    epoch: Instant,
    metrics: Arc<LimitMetrics>,
    headers: HeaderMap,
}

impl Harness {
    fn new(config: &LimitsConfig) -> Self {
        Self::with_capacity(config, 1_000_000)
    }

    fn with_capacity(config: &LimitsConfig, max_entries: usize) -> Self {
        let metrics = Arc::new(LimitMetrics::default());
        let epoch = Instant::now();
        let engine = EmbeddedEngine::with_epoch(max_entries, Arc::clone(&metrics), epoch);
        let limits = RateLimits::with_embedded(
            config,
            &RateLimitConfig::default(),
            engine,
            Arc::clone(&metrics),
        )
        .expect("rules compile");
        Self {
            limits,
            epoch,
            metrics,
            headers: HeaderMap::new(),
        }
    }

    fn input<'a>(&'a self, client: IpAddr, method: &'a Method, path: &'a str) -> KeyInput<'a> {
        KeyInput {
            client,
            method,
            path,
            headers: &self.headers,
            token_subject: None,
            client_id: None,
        }
    }

    async fn send(&self, client: IpAddr, at: Duration) -> Verdict {
        let method = Method::GET;
        let input = self.input(client, &method, "/");
        self.limits.check_at(&input, self.epoch + at).await.verdict
    }
}

fn admitted(verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::Admit)
}

#[tokio::test]
async fn concurrent_burst_admits_at_most_limit() {
    let harness = Arc::new(Harness::new(&config(vec![rule(
        "api",
        &["client_address"],
        &[(5, 1)],
    )])));

    // 50 requests from 50 threads, all stamped within one millisecond.
    let threads: Vec<_> = (0..50u64)
        .map(|index| {
            let harness = Arc::clone(&harness);
            std::thread::spawn(move || {
                let at = Duration::from_secs(10) + Duration::from_micros(index * 20);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("runtime");
                runtime.block_on(harness.send(CLIENT, at))
            })
        })
        .collect();
    let admitted_count = threads
        .into_iter()
        .map(|thread| thread.join().expect("thread"))
        .filter(admitted)
        .count();

    assert_eq!(admitted_count, 5);
}

#[tokio::test]
async fn steady_rate_under_limit_is_never_rejected() {
    let harness = Harness::new(&config(vec![rule(
        "api",
        &["client_address"],
        &[(10, 1), (500, 60)],
    )]));

    // 8 per second for 60 s of simulated time: under both 10/s and 500/min.
    let mut rejected = 0;
    for index in 0..480u64 {
        let at = Duration::from_millis(index * 125);
        if !admitted(&harness.send(CLIENT, at).await) {
            rejected += 1;
        }
    }
    assert_eq!(rejected, 0);
}

#[tokio::test]
async fn boundary_burst_stays_within_error_bound() {
    let limit = 10u32;
    let window = Duration::from_secs(10);
    let harness = Harness::new(&config(vec![rule(
        "api",
        &["client_address"],
        &[(limit, 10)],
    )]));

    // Bursts of 30 requests, 1 ms apart, every 2.5 s: each burst straddles a multiple of the
    // window, where a fixed window would let 2 * limit through.
    let mut admitted_at = Vec::new();
    for burst in 0..8u64 {
        let start = Duration::from_millis(9_985 + burst * 2_500);
        for offset in 0..30u64 {
            let at = start + Duration::from_millis(offset);
            if admitted(&harness.send(CLIENT, at).await) {
                admitted_at.push(at);
            }
        }
    }

    // Bound from the module docs: at most limit + floor(d * limit / window) in any interval
    // of length d. Checked for every interval that starts at an admitted request.
    for d in [
        Duration::from_millis(30),
        Duration::from_secs(1),
        Duration::from_secs(5),
        window,
    ] {
        let bound = limit as usize
            + (d.as_secs_f64() * f64::from(limit) / window.as_secs_f64()).floor() as usize;
        for (index, &start) in admitted_at.iter().enumerate() {
            let count = admitted_at[index..]
                .iter()
                .take_while(|&&at| at - start <= d)
                .count();
            assert!(
                count <= bound,
                "{count} admitted within {d:?} from {start:?}, bound {bound}"
            );
        }
    }
    // The first burst straddling the boundary gets exactly the limit, not twice it.
    let first_burst = admitted_at
        .iter()
        .filter(|&&at| at < Duration::from_millis(10_100))
        .count();
    assert_eq!(first_burst, limit as usize);
}

#[tokio::test]
async fn reload_raises_limit_keeping_counters() {
    let harness = Harness::new(&config(vec![rule(
        "hourly",
        &["client_address"],
        &[(10, 3600)],
    )]));

    let mut rejected = 0;
    for index in 0..50u64 {
        if !admitted(&harness.send(CLIENT, Duration::from_millis(index)).await) {
            rejected += 1;
        }
    }
    assert_eq!(rejected, 40);

    harness
        .limits
        .reload(
            &config(vec![rule("hourly", &["client_address"], &[(20, 3600)])]),
            &RateLimitConfig::default(),
        )
        .expect("reload");

    assert!(admitted(
        &harness.send(CLIENT, Duration::from_millis(60)).await
    ));
    // The counters survived: 11 used of 20, so 9 more fit and the 10th does not.
    for _ in 0..9 {
        assert!(admitted(
            &harness.send(CLIENT, Duration::from_millis(61)).await
        ));
    }
    assert!(!admitted(
        &harness.send(CLIENT, Duration::from_millis(62)).await
    ));
}

#[tokio::test]
async fn rejection_on_one_tier_consumes_no_other_tier() {
    let harness = Harness::new(&config(vec![rule(
        "api",
        &["client_address"],
        &[(2, 1), (5, 3600)],
    )]));

    // 20 requests at one instant: the per-second tier admits 2 and rejects 18.
    for _ in 0..20 {
        harness.send(CLIENT, Duration::from_secs(1)).await;
    }

    // If the 18 rejections had reached the hourly tier, it would be exhausted. It has 3 left:
    // 2 more at 2 s (the per-second tier has drained) and 1 at 3 s.
    assert!(admitted(
        &harness.send(CLIENT, Duration::from_secs(2)).await
    ));
    assert!(admitted(
        &harness.send(CLIENT, Duration::from_secs(2)).await
    ));
    assert!(admitted(
        &harness.send(CLIENT, Duration::from_secs(3)).await
    ));
    let verdict = harness.send(CLIENT, Duration::from_secs(4)).await;
    let Verdict::Reject { retry_after, .. } = verdict else {
        panic!("the hourly tier must be exhausted, got {verdict:?}");
    };
    assert!(retry_after > Duration::from_secs(600), "{retry_after:?}");
}

#[tokio::test]
async fn rejection_by_one_rule_consumes_no_other_rule() {
    let harness = Harness::new(&config(vec![
        rule("client", &["client_address"], &[(1, 60)]),
        rule("endpoint", &["endpoint"], &[(3, 60)]),
    ]));

    assert!(admitted(
        &harness.send(CLIENT, Duration::from_secs(1)).await
    ));
    for _ in 0..200 {
        assert!(!admitted(
            &harness.send(CLIENT, Duration::from_secs(1)).await
        ));
    }

    // The endpoint rule counted only the one admitted request, so another client gets the
    // other 2 of its 3.
    assert!(admitted(&harness.send(OTHER, Duration::from_secs(1)).await));
    let method = Method::GET;
    let third = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));
    let decision = harness
        .limits
        .check_at(
            &harness.input(third, &method, "/"),
            harness.epoch + Duration::from_secs(1),
        )
        .await;
    assert!(admitted(&decision.verdict), "{decision:?}");
    let state = decision.headers.expect("headers").state;
    assert!(
        state
            .to_str()
            .expect("ascii")
            .contains("\"endpoint-60s\";r=0"),
        "{state:?}"
    );
    assert!(!admitted(
        &harness.send(OTHER, Duration::from_secs(1)).await
    ));
}

#[tokio::test]
async fn shadow_rule_counts_but_admits() {
    let mut shadow = rule("shadow", &["client_address"], &[(1, 60)]);
    shadow.action = RuleAction::Shadow;
    let harness = Harness::new(&config(vec![shadow]));

    for _ in 0..5 {
        assert!(admitted(
            &harness.send(CLIENT, Duration::from_secs(1)).await
        ));
    }
    assert_eq!(
        harness.metrics.decisions("shadow", RuleDecision::Admitted),
        1
    );
    assert_eq!(
        harness
            .metrics
            .decisions("shadow", RuleDecision::ShadowRejected),
        4
    );
}

#[tokio::test]
async fn strike_action_is_reported() {
    let mut strike = rule("strike", &["client_address"], &[(1, 60)]);
    strike.action = RuleAction::Strike;
    let harness = Harness::new(&config(vec![strike]));

    assert!(admitted(
        &harness.send(CLIENT, Duration::from_secs(1)).await
    ));
    let verdict = harness.send(CLIENT, Duration::from_secs(1)).await;
    assert!(
        matches!(verdict, Verdict::Reject { strike: true, .. }),
        "{verdict:?}"
    );
}

#[tokio::test]
async fn headers_describe_every_tier() {
    let harness = Harness::new(&config(vec![rule(
        "api",
        &["client_address"],
        &[(5, 1), (100, 3600)],
    )]));
    let method = Method::GET;
    let input = harness.input(CLIENT, &method, "/");

    let decision = harness.limits.check_at(&input, harness.epoch).await;
    let headers = decision.headers.expect("headers on a limited route");

    assert_eq!(
        headers.policy,
        "\"api-1s\";q=5;w=1, \"api-3600s\";q=100;w=3600"
    );
    assert_eq!(headers.state, "\"api-1s\";r=4;t=1, \"api-3600s\";r=99;t=36");
}

#[tokio::test]
async fn headers_can_be_turned_off() {
    let mut limits = config(vec![rule("api", &["client_address"], &[(5, 1)])]);
    limits.headers = false;
    let harness = Harness::new(&limits);
    let method = Method::GET;

    let decision = harness
        .limits
        .check_at(&harness.input(CLIENT, &method, "/"), harness.epoch)
        .await;
    assert_eq!(decision.headers, None);
}

#[tokio::test]
async fn retry_after_is_time_until_next_fit() {
    let harness = Harness::new(&config(vec![rule("api", &["client_address"], &[(2, 10)])]));
    harness.send(CLIENT, Duration::from_secs(1)).await;
    harness.send(CLIENT, Duration::from_secs(1)).await;

    let Verdict::Reject { retry_after, .. } = harness.send(CLIENT, Duration::from_secs(1)).await
    else {
        panic!("third request must be rejected");
    };
    // One request drains every 5 s.
    assert_eq!(retry_after, Duration::from_secs(5));
    assert!(!admitted(
        &harness
            .send(CLIENT, Duration::from_secs(6) - Duration::from_millis(1))
            .await
    ));
    assert!(admitted(
        &harness.send(CLIENT, Duration::from_secs(6)).await
    ));
}

#[tokio::test]
async fn idle_entries_are_evicted() {
    let harness = Harness::new(&config(vec![rule("api", &["client_address"], &[(10, 10)])]));
    harness.send(CLIENT, Duration::from_secs(1)).await;
    harness.send(OTHER, Duration::from_secs(5)).await;

    // One request drains in 1 s: at 5.5 s CLIENT (sent at 1 s) is idle and OTHER (sent at
    // 5 s) still holds half a request.
    assert_eq!(
        harness
            .limits
            .evict_idle(harness.epoch + Duration::from_millis(5_500)),
        1
    );
    assert_eq!(
        harness
            .limits
            .evict_idle(harness.epoch + Duration::from_secs(7)),
        1
    );
    assert_eq!(harness.metrics.evictions(EvictionReason::Idle), 2);
}

#[tokio::test]
async fn full_engine_evicts_closest_to_idle() {
    // 64 shards of one entry each.
    let harness = Harness::with_capacity(
        &config(vec![rule("api", &["client_address"], &[(10, 3600)])]),
        64,
    );
    for index in 0..1_000u32 {
        let client = IpAddr::V4(Ipv4Addr::from(0xCB00_7100 | (index & 0xff)));
        let client = if index < 256 {
            client
        } else {
            IpAddr::V6(Ipv6Addr::from(u128::from(index) << 64 | 0x2001_0db8 << 96))
        };
        harness.send(client, Duration::from_secs(1)).await;
    }

    let entries = match &harness.limits.engine {
        super::Engine::Embedded(engine) => engine.entries(),
        super::Engine::Redis { .. } => unreachable!(),
    };
    assert!(entries <= 64, "{entries} entries");
    assert!(harness.metrics.evictions(EvictionReason::Capacity) > 0);
}

fn key_of(
    rule_config: &RuleConfig,
    client: IpAddr,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Option<String> {
    let rule = super::CompiledRule::compile(rule_config).expect("rule compiles");
    rule.key_for(&KeyInput {
        client,
        method,
        path,
        headers,
        token_subject: None,
        client_id: None,
    })
}

#[test]
fn ipv6_clients_group_by_prefix() {
    let headers = HeaderMap::new();
    let per_client = rule("api", &["client_address"], &[(1, 1)]);
    let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("address");
    let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("address");
    let c: IpAddr = "2001:db8:1:3::1".parse().expect("address");

    let key_a = key_of(&per_client, a, &Method::GET, "/", &headers);
    assert_eq!(key_a.as_deref(), Some("2001:db8:1:2::/64"));
    assert_eq!(key_a, key_of(&per_client, b, &Method::GET, "/", &headers));
    assert_ne!(key_a, key_of(&per_client, c, &Method::GET, "/", &headers));

    let mut per_48 = per_client.clone();
    per_48.ipv6_prefix_length = 48;
    assert_eq!(
        key_of(&per_48, c, &Method::GET, "/", &headers).as_deref(),
        Some("2001:db8:1::/48")
    );
    assert_eq!(
        key_of(&per_client, CLIENT, &Method::GET, "/", &headers).as_deref(),
        Some("198.51.100.7")
    );
}

#[test]
fn keys_combine_endpoint_header_and_path_parameter() {
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", HeaderValue::from_static("key|one"));
    let mut combined = rule(
        "orders",
        &[
            "client_address",
            "endpoint",
            "header:X-Api-Key",
            "path:user",
        ],
        &[(1, 1)],
    );
    combined.routes = vec!["/users/{user}/orders".into(), "/v2/users/{user}/*".into()];
    combined.methods = vec!["post".into()];

    assert_eq!(
        key_of(
            &combined,
            CLIENT,
            &Method::POST,
            "/users/42/orders",
            &headers
        )
        .as_deref(),
        Some("198.51.100.7|POST /users/42/orders|key\\|one|42")
    );
    assert_eq!(
        key_of(
            &combined,
            CLIENT,
            &Method::POST,
            "/v2/users/7/orders/1",
            &headers
        )
        .as_deref(),
        Some("198.51.100.7|POST /v2/users/7/orders/1|key\\|one|7")
    );
    // Not covered: another method, another path, a shorter path.
    assert_eq!(
        key_of(
            &combined,
            CLIENT,
            &Method::GET,
            "/users/42/orders",
            &headers
        ),
        None
    );
    assert_eq!(
        key_of(&combined, CLIENT, &Method::POST, "/users/42/cart", &headers),
        None
    );
    assert_eq!(
        key_of(&combined, CLIENT, &Method::POST, "/users/42", &headers),
        None
    );
}

#[test]
fn missing_header_shares_one_empty_key() {
    let headers = HeaderMap::new();
    let per_key = rule("api", &["header:x-api-key"], &[(1, 1)]);
    assert_eq!(
        key_of(&per_key, CLIENT, &Method::GET, "/", &headers).as_deref(),
        Some("")
    );
}

#[test]
fn long_header_value_is_cut() {
    let mut headers = HeaderMap::new();
    let long = "a".repeat(10_000);
    headers.insert("x-api-key", HeaderValue::from_str(&long).expect("value"));
    let per_key = rule("api", &["header:x-api-key"], &[(1, 1)]);
    let key = key_of(&per_key, CLIENT, &Method::GET, "/", &headers).expect("covered");
    assert_eq!(key.len(), super::rules::MAX_KEY_PART_BYTES);
}

#[test]
fn invalid_rules_are_rejected() {
    let cases: Vec<(RuleConfig, &str, &str)> = vec![
        (
            rule("api", &["cookie"], &[(1, 1)]),
            "limits.rules.key",
            "unknown key part `cookie`",
        ),
        (
            rule("api", &[], &[(1, 1)]),
            "limits.rules.key",
            "at least one key part",
        ),
        (
            rule("api", &["client_address"], &[]),
            "limits.rules.tiers",
            "at least one tier",
        ),
        (
            rule("api", &["client_address"], &[(0, 1)]),
            "limits.rules.tiers.requests",
            "at least 1",
        ),
        (
            rule("api", &["client_address"], &[(1, 0)]),
            "limits.rules.tiers.window_seconds",
            "between 1",
        ),
        (
            rule("api", &["client_address"], &[(1, 5), (2, 5)]),
            "limits.rules.tiers.window_seconds",
            "two tiers of 5 seconds",
        ),
        (
            rule("a b", &["client_address"], &[(1, 1)]),
            "limits.rules.name",
            "`a b` is invalid",
        ),
        (
            rule("api", &["path:id"], &[(1, 1)]),
            "limits.rules.key",
            "must contain `{id}`",
        ),
    ];
    for (rule_config, expected_key, expected_problem) in cases {
        let (key, problem) = config(vec![rule_config.clone()])
            .validate()
            .expect_err("invalid rule");
        assert_eq!(key, expected_key, "{rule_config:?}");
        assert!(problem.contains(expected_problem), "{problem}");
    }

    let mut bad_route = rule("api", &["client_address"], &[(1, 1)]);
    bad_route.routes = vec!["users/*".into()];
    let (key, _) = config(vec![bad_route]).validate().expect_err("route");
    assert_eq!(key, "limits.rules.routes");

    // The route table's catch-all syntax would otherwise match one segment only.
    let mut catch_all = rule("api", &["client_address"], &[(1, 1)]);
    catch_all.routes = vec!["/orders/{*rest}".into()];
    let (key, problem) = config(vec![catch_all]).validate().expect_err("catch-all route");
    assert_eq!(key, "limits.rules.routes");
    assert!(problem.contains("end the route with `/*`"), "{problem}");

    let duplicate = config(vec![
        rule("api", &["client_address"], &[(1, 1)]),
        rule("api", &["endpoint"], &[(1, 1)]),
    ]);
    let (key, problem) = duplicate.validate().expect_err("duplicate");
    assert_eq!(key, "limits.rules");
    assert!(problem.contains("two rules named `api`"), "{problem}");
}

#[test]
fn redis_engine_needs_a_valid_url() {
    let mut limits = LimitsConfig {
        engine: super::EngineKind::Redis,
        ..LimitsConfig::default()
    };
    let (key, _) = limits.validate().expect_err("no URL");
    assert_eq!(key, "limits.redis.urls");

    limits.redis.urls = vec!["http://user:secret@127.0.0.1".into()];
    let (key, problem) = limits.validate().expect_err("wrong scheme");
    assert_eq!(key, "limits.redis.urls");
    assert!(!problem.contains("secret"), "{problem}");

    limits.redis.urls = vec!["redis://127.0.0.1:6379".into()];
    assert!(limits.validate().is_ok());
}

#[test]
fn shorthand_stands_for_one_strike_rule() {
    let shorthand = RateLimitConfig {
        requests: 7,
        window_seconds: 30,
    };
    let rules = LimitsConfig::default().effective_rules(&shorthand);
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].action, RuleAction::Strike);
    assert_eq!(rules[0].key, vec!["client_address".to_owned()]);
    assert_eq!(
        rules[0].tiers,
        vec![TierConfig {
            requests: 7,
            window_seconds: 30
        }]
    );

    let configured = config(vec![rule("api", &["endpoint"], &[(1, 1)])]);
    assert_eq!(configured.effective_rules(&shorthand)[0].name, "api");
}

#[test]
fn redis_key_names_escape_the_hash_tag() {
    let name = super::redis::key_name("fwrl", "api", "198.51.100.7|a{b}c%");
    assert_eq!(name, "fwrl:{api|198.51.100.7|a%7Bb%7Dc%25}");
}
