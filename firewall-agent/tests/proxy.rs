//! The proxy with its rate limit and bans, in front of an echo upstream, driven by real HTTP
//! requests over loopback.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Full;

use common::{Echo, get, http_client, send, start_agent, start_echo_upstream};
use firewall_agent::proxy::RequestOutcome;
use firewall_agent::store::{BanOrigin, Store};

fn loopback() -> IpAddr {
    "127.0.0.1".parse().expect("valid address")
}

#[tokio::test]
async fn forwards_request_and_rewrites_headers() {
    let upstream = start_echo_upstream().await;
    let mut agent = start_agent(upstream.addr, |_| {}).await;
    let client = http_client();

    let request = Request::post(agent.proxy_url("/v1/items?page=2"))
        .header("x-forwarded-for", "203.0.113.66")
        .header("connection", "x-secret-hop")
        .header("x-secret-hop", "must not pass")
        .header("x-api-key", "kept")
        .body(Full::new(Bytes::from_static(b"{\"name\":\"widget\"}")))
        .expect("valid request");
    let reply = send(&client, request).await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["x-upstream"], "echo");
    assert!(
        !reply.headers.contains_key("keep-alive"),
        "hop-by-hop response header removed"
    );
    let echo: Echo = reply.json();
    assert_eq!(echo.method, "POST");
    assert_eq!(echo.uri, "/v1/items?page=2");
    assert_eq!(echo.body, "{\"name\":\"widget\"}");
    assert_eq!(echo.header("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(
        echo.header("x-forwarded-host"),
        vec![agent.proxy_addr.to_string()]
    );
    assert_eq!(echo.header("x-api-key"), vec!["kept"]);
    assert!(echo.header("x-secret-hop").is_empty());
    assert_eq!(echo.header("x-request-id").len(), 1);

    assert_eq!(
        agent
            .running()
            .metrics()
            .requests(RequestOutcome::Forwarded),
        1
    );
    agent.stop().await;
}

#[tokio::test]
async fn limit_then_429_with_retry_after() {
    let upstream = start_echo_upstream().await;
    let mut agent = start_agent(upstream.addr, |config| {
        config.rate_limit.requests = 3;
        config.rate_limit.window_seconds = 60;
        config.bans.strikes = 100;
    })
    .await;
    let client = http_client();
    let url = agent.proxy_url("/limited");

    for attempt in 1..=3 {
        let reply = get(&client, &url).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "request {attempt} is within the limit"
        );
    }
    let reply = get(&client, &url).await;

    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = reply.headers[header::RETRY_AFTER]
        .to_str()
        .expect("ASCII header")
        .parse()
        .expect("whole seconds");
    // The count of a full window weighs on the next one, so the wait can exceed one window
    // but never two.
    assert!(
        (1..=120).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    let body: serde_json::Value = reply.json();
    assert_eq!(body["error"], "rate limit exceeded");
    assert_eq!(
        agent
            .running()
            .metrics()
            .requests(RequestOutcome::RateLimited),
        1
    );
    agent.stop().await;
}

#[tokio::test]
async fn rejected_requests_do_not_consume_quota() {
    let upstream = start_echo_upstream().await;
    let mut agent = start_agent(upstream.addr, |config| {
        config.rate_limit.requests = 2;
        config.rate_limit.window_seconds = 1;
        config.bans.strikes = 100;
    })
    .await;
    let client = http_client();
    let url = agent.proxy_url("/quota");

    assert_eq!(get(&client, &url).await.status, StatusCode::OK);
    assert_eq!(get(&client, &url).await.status, StatusCode::OK);
    let mut retry_after = 0;
    for _ in 0..10 {
        let reply = get(&client, &url).await;
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        retry_after = reply.headers[header::RETRY_AFTER]
            .to_str()
            .expect("ASCII header")
            .parse()
            .expect("whole seconds");
    }

    // Had the ten rejections been counted, the estimate would still be far above the limit
    // after the advertised wait.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(get(&client, &url).await.status, StatusCode::OK);
    agent.stop().await;
}

#[tokio::test]
async fn strikes_ban_client_in_kernel_and_store() {
    let upstream = start_echo_upstream().await;
    let mut agent = start_agent(upstream.addr, |config| {
        config.rate_limit.requests = 1;
        config.bans.strikes = 3;
        config.bans.ban_seconds = 600;
    })
    .await;
    let client = http_client();
    let url = agent.proxy_url("/strikes");

    assert_eq!(get(&client, &url).await.status, StatusCode::OK);
    for _ in 0..3 {
        assert_eq!(
            get(&client, &url).await.status,
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    // The response to the strike that completes a ban is sent once the ban is in force.
    let blocklist = agent.blocklist.clone();
    assert!(
        blocklist.ban_of(loopback()).is_some(),
        "banned when the last 429 arrives"
    );

    let bans = agent.running().bans().list().expect("bans list");
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0].address, loopback().into());
    assert_eq!(bans[0].origin, BanOrigin::RateLimit);
    let expires_at = blocklist
        .ban_of(loopback())
        .flatten()
        .expect("the ban has an expiry");
    let remaining = expires_at
        .duration_since(std::time::SystemTime::now())
        .expect("expiry is in the future");
    assert!(remaining > Duration::from_secs(590), "{remaining:?}");

    // Loopback has no XDP program in front of it, so the proxy rejects the banned client.
    let reply = get(&client, &url).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        agent.running().metrics().requests(RequestOutcome::Banned),
        1
    );

    // The ban is in the store file, so a restart restores it.
    agent.stop().await;
    let store = Store::open(&agent.store_path).expect("store reopens after stop");
    let stored = store.list_bans().expect("stored bans");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].address, loopback().into());
}

#[tokio::test]
async fn mapped_ipv6_client_is_banned_as_ipv4() {
    let upstream = start_echo_upstream().await;
    // A dual-stack listener reports IPv4 peers as ::ffff:127.0.0.1.
    let mut agent = start_agent(upstream.addr, |config| {
        config.proxy.listen = "[::]:0".parse().expect("valid address");
        config.rate_limit.requests = 1;
        config.bans.strikes = 2;
    })
    .await;
    let client = http_client();
    let url = format!("http://127.0.0.1:{}/mapped", agent.proxy_addr.port());

    let reply = get(&client, &url).await;
    assert_eq!(reply.status, StatusCode::OK);
    let echo: Echo = reply.json();
    assert_eq!(echo.header("x-forwarded-for"), vec!["127.0.0.1"]);

    get(&client, &url).await;
    get(&client, &url).await;
    assert_eq!(agent.blocklist.banned_addresses(), vec![loopback().into()]);
    let bans = agent.running().bans().list().expect("bans list");
    assert_eq!(bans[0].address, loopback().into());
    agent.stop().await;
}

#[tokio::test]
async fn upstream_down_returns_502_json() {
    // Bind and drop a listener, so that the port is very likely closed.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    };
    let mut agent = start_agent(closed, |_| {}).await;
    let client = http_client();

    let reply = get(&client, &agent.proxy_url("/down")).await;

    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.headers[header::CONTENT_TYPE], "application/json");
    let body: serde_json::Value = reply.json();
    assert_eq!(body["error"], "upstream unavailable");
    assert!(body["request_id"].is_string());
    assert_eq!(
        agent
            .running()
            .metrics()
            .requests(RequestOutcome::UpstreamError),
        1
    );
    agent.stop().await;
}

#[tokio::test]
async fn http2_clients_are_served() {
    let upstream = start_echo_upstream().await;
    let mut agent = start_agent(upstream.addr, |_| {}).await;
    let client: common::TestClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build(hyper_util::client::legacy::connect::HttpConnector::new());

    let reply = get(&client, &agent.proxy_url("/h2")).await;

    assert_eq!(reply.status, StatusCode::OK);
    let echo: Echo = reply.json();
    assert_eq!(echo.uri, "/h2");
    assert_eq!(echo.header("x-forwarded-for"), vec!["127.0.0.1"]);
    // HTTP/2 has no `Host` header: the client's `:authority` names the host it addressed.
    assert_eq!(
        echo.header("x-forwarded-host"),
        vec![agent.proxy_addr.to_string()]
    );
    assert_eq!(echo.header("host"), vec![upstream.addr.to_string()]);
    agent.stop().await;
}

#[tokio::test]
async fn metrics_endpoint_reports_requests_and_kernel_counters() {
    let upstream = start_echo_upstream().await;
    let mut agent = start_agent(upstream.addr, |_| {}).await;
    agent.blocklist.set_verdict(
        firewall_common::Verdict::DroppedBanned,
        firewall_common::PacketCounter {
            packets: 42,
            bytes: 4200,
        },
    );
    let client = http_client();
    get(&client, &agent.proxy_url("/counted")).await;

    let reply = get(&client, &format!("http://{}/metrics", agent.metrics_addr)).await;

    assert_eq!(reply.status, StatusCode::OK);
    let text = String::from_utf8(reply.body.to_vec()).expect("UTF-8 metrics");
    for line in [
        "firewall_http_requests_total{outcome=\"forwarded\"} 1",
        "firewall_http_requests_total{outcome=\"rate_limited\"} 0",
        "firewall_kernel_packets_total{verdict=\"dropped_banned\"} 42",
        "firewall_kernel_bytes_total{verdict=\"dropped_banned\"} 4200",
        "firewall_kernel_packets_total{verdict=\"passed\"} 0",
        "firewall_bans_active 0",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }

    let missing = get(&client, &format!("http://{}/other", agent.metrics_addr)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    agent.stop().await;
}

#[tokio::test]
async fn stop_closes_proxy_listener() {
    let upstream = start_echo_upstream().await;
    let mut agent = start_agent(upstream.addr, |_| {}).await;
    let proxy_addr = agent.proxy_addr;

    agent.stop().await;

    let connect = tokio::net::TcpStream::connect(proxy_addr).await;
    assert!(connect.is_err(), "the proxy still accepts after stop");
    assert!(
        !agent.socket_path.exists(),
        "the admin socket is removed on stop"
    );
}
