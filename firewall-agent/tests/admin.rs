//! The admin API over its Unix socket, through the client that `fwctl` uses and through raw
//! HTTP requests.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use common::{start_agent, start_echo_upstream};
use firewall_agent::admin::api::{AddAllowRequest, AddBanRequest, ErrorBody};
use firewall_agent::admin::{AdminBindError, AdminClient, AdminServer, AdminState, ClientError};
use firewall_agent::bans::memory::MemoryBlocklist;
use firewall_agent::bans::{BanManager, BanPolicy};
use firewall_agent::kernel::SourceTotal;
use firewall_agent::store::{BanOrigin, Store};
use firewall_agent::telemetry::Metrics;

/// Sends one raw request to the admin socket and returns the status and body.
async fn raw_request(
    socket: &Path,
    method: Method,
    path: &str,
    body: &str,
) -> (StatusCode, String) {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .expect("admin socket accepts");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);

    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("valid request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn add_request(address: &str, ttl_seconds: Option<u64>) -> AddBanRequest {
    AddBanRequest {
        address: address.to_owned(),
        ttl_seconds,
        reason: None,
    }
}

#[tokio::test]
async fn socket_is_created_with_mode_0600() {
    let upstream = start_echo_upstream().await;
    let mut agent = start_agent(upstream.addr, |_| {}).await;

    let metadata = std::fs::symlink_metadata(&agent.socket_path).expect("socket exists");

    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    agent.stop().await;
    assert!(!agent.socket_path.exists(), "socket removed on stop");
}

#[tokio::test]
async fn bans_add_list_remove() {
    let upstream = start_echo_upstream().await;
    let mut agent = start_agent(upstream.addr, |_| {}).await;
    let client = AdminClient::new(&agent.socket_path);

    let added = client
        .add_ban(&add_request("192.0.2.7", Some(600)))
        .await
        .expect("ban added");
    assert_eq!(added.address.to_string(), "192.0.2.7");
    assert_eq!(added.origin, BanOrigin::Manual);
    assert!(matches!(added.remaining_seconds, Some(599..=600)));
    client
        .add_ban(&add_request("2001:db8::1", None))
        .await
        .expect("permanent ban added");

    let list = client.list_bans().await.expect("bans listed");
    let addresses: Vec<String> = list
        .bans
        .iter()
        .map(|ban| ban.address.to_string())
        .collect();
    assert_eq!(addresses, vec!["192.0.2.7", "2001:db8::1"]);
    assert_eq!(list.bans[1].remaining_seconds, None);
    assert_eq!(agent.blocklist.banned_addresses().len(), 2);

    let removed = client
        .remove_ban("192.0.2.7".parse().expect("valid address"))
        .await
        .expect("ban removed");
    assert_eq!(removed.address.to_string(), "192.0.2.7");
    assert_eq!(agent.blocklist.banned_addresses().len(), 1);

    let missing = client
        .remove_ban("192.0.2.7".parse().expect("valid address"))
        .await
        .expect_err("no ban left");
    assert!(matches!(
        missing,
        ClientError::Api {
            status: StatusCode::NOT_FOUND,
            ..
        }
    ));
    assert_eq!(missing.to_string(), "no ban found for 192.0.2.7");
    agent.stop().await;
}

#[tokio::test]
async fn mapped_address_is_stored_as_ipv4() {
    let upstream = start_echo_upstream().await;
    let mut agent = start_agent(upstream.addr, |_| {}).await;
    let client = AdminClient::new(&agent.socket_path);

    let added = client
        .add_ban(&add_request("::ffff:192.0.2.7", Some(60)))
        .await
        .expect("ban added");

    assert_eq!(added.address.to_string(), "192.0.2.7");
    assert_eq!(
        agent.blocklist.banned_addresses(),
        vec![
            "192.0.2.7"
                .parse::<firewall_agent::network::IpNetwork>()
                .expect("valid address")
        ]
    );
    let removed = client
        .remove_ban("::ffff:192.0.2.7".parse().expect("valid address"))
        .await
        .expect("mapped form removes the IPv4 ban");
    assert_eq!(removed.address.to_string(), "192.0.2.7");
    agent.stop().await;
}

#[tokio::test]
async fn invalid_input_is_400_naming_input() {
    let upstream = start_echo_upstream().await;
    let mut agent = start_agent(upstream.addr, |_| {}).await;
    let socket = agent.socket_path.clone();

    let cases = [
        (
            Method::POST,
            "/v1/bans",
            r#"{"address":"192.0.2.300","ttl_seconds":60}"#,
            "`192.0.2.300`",
        ),
        (
            Method::POST,
            "/v1/bans",
            r#"{"address":"192.0.2.7"}"#,
            "ttl_seconds",
        ),
        (
            Method::POST,
            "/v1/bans",
            r#"{"address":"192.0.2.7","ttl_seconds":0}"#,
            "ttl_seconds 0",
        ),
        (
            Method::POST,
            "/v1/bans",
            r#"{"address":"192.0.2.7","ttl_seconds":-1}"#,
            "ttl_seconds",
        ),
        (
            Method::POST,
            "/v1/bans",
            r#"{"address":"192.0.2.7","ttl":60}"#,
            "`ttl`",
        ),
        (Method::POST, "/v1/bans", "not json", "invalid request body"),
        (
            Method::POST,
            "/v1/bans",
            r#"{"address":"0.0.0.0","ttl_seconds":60}"#,
            "0.0.0.0",
        ),
        (
            Method::DELETE,
            "/v1/bans/not-an-address",
            "",
            "`not-an-address`",
        ),
        (Method::GET, "/v1/stats?top=0", "", "invalid top `0`"),
    ];
    for (method, path, body, needle) in cases {
        let (status, text) = raw_request(&socket, method.clone(), path, body).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{method} {path} {body}: {text}"
        );
        let error: ErrorBody = serde_json::from_str(&text).expect("JSON error body");
        assert!(
            error.error.contains(needle),
            "{method} {path} {body}: {}",
            error.error
        );
    }

    assert!(agent.blocklist.banned_addresses().is_empty());
    agent.stop().await;
}

#[tokio::test]
async fn unknown_endpoint_and_method() {
    let upstream = start_echo_upstream().await;
    let mut agent = start_agent(upstream.addr, |_| {}).await;

    let (status, _) = raw_request(&agent.socket_path, Method::GET, "/v2/nothing", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = raw_request(&agent.socket_path, Method::PUT, "/v1/bans", "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    agent.stop().await;
}

#[tokio::test]
async fn stats_report_verdicts_and_top_sources() {
    let upstream = start_echo_upstream().await;
    let mut agent = start_agent(upstream.addr, |_| {}).await;
    agent.blocklist.set_verdict(
        firewall_common::Verdict::Passed,
        firewall_common::PacketCounter {
            packets: 10,
            bytes: 1000,
        },
    );
    let source = |address: &str, packets: u64| SourceTotal {
        addr: address.parse().expect("valid address"),
        counters: firewall_common::SourceCounters {
            passed_packets: packets,
            passed_bytes: packets * 100,
            dropped_packets: 0,
            dropped_bytes: 0,
        },
    };
    agent.blocklist.set_sources(vec![
        source("198.51.100.1", 5),
        source("198.51.100.2", 50),
        source("2001:db8::2", 20),
    ]);
    let client = AdminClient::new(&agent.socket_path);

    let stats = client.stats(2).await.expect("stats");

    assert_eq!(stats.verdicts.len(), firewall_common::Verdict::ALL.len());
    assert_eq!(stats.verdicts[0].verdict, "passed");
    assert_eq!(stats.verdicts[0].packets, 10);
    let top: Vec<String> = stats
        .top_sources
        .iter()
        .map(|source| source.address.to_string())
        .collect();
    assert_eq!(top, vec!["198.51.100.2", "2001:db8::2"]);
    assert_eq!(stats.active_bans, 0);
    agent.stop().await;
}

fn admin_state(dir: &Path) -> Arc<AdminState> {
    let blocklist = Arc::new(MemoryBlocklist::new());
    let metrics = Arc::new(Metrics::new(blocklist.clone()));
    let store = Store::open(&dir.join("state.redb")).expect("store opens");
    let policy = BanPolicy {
        strikes: 5,
        strike_window: std::time::Duration::from_secs(60),
        ban_duration: std::time::Duration::from_secs(60),
    };
    let bans = Arc::new(BanManager::new(store, blocklist.clone(), policy, metrics));
    Arc::new(AdminState::new(bans, blocklist))
}

#[tokio::test]
async fn stale_socket_is_replaced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("admin.sock");
    // A socket file without a listener, as an agent that was killed leaves it.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    assert!(path.exists());

    let server = AdminServer::bind(&path, admin_state(dir.path()))
        .await
        .expect("stale socket is replaced");

    let mode = std::fs::metadata(&path)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(server);
    assert!(!path.exists(), "socket removed on drop");
}

#[tokio::test]
async fn live_socket_is_not_taken_over() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("admin.sock");
    let _live = tokio::net::UnixListener::bind(&path).expect("bind");

    let error = AdminServer::bind(&path, admin_state(dir.path()))
        .await
        .expect_err("a live socket must not be replaced");

    assert!(matches!(error, AdminBindError::InUse { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
    assert!(path.exists(), "the live socket is left in place");
}

#[tokio::test]
async fn regular_file_at_socket_path_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("admin.sock");
    std::fs::write(&path, b"not a socket").expect("write file");

    let error = AdminServer::bind(&path, admin_state(dir.path()))
        .await
        .expect_err("a regular file must not be replaced");

    assert!(
        matches!(error, AdminBindError::NotASocket { .. }),
        "{error:?}"
    );
    assert_eq!(std::fs::read(&path).expect("file kept"), b"not a socket");
}

#[tokio::test]
async fn client_reports_agent_not_running() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("missing.sock");

    let error = AdminClient::new(&path)
        .list_bans()
        .await
        .expect_err("no agent");

    assert!(matches!(error, ClientError::NotRunning { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("start it"), "{message}");
}

#[tokio::test]
async fn range_ban_is_added_and_removed() {
    let upstream = start_echo_upstream().await;
    let mut agent = start_agent(upstream.addr, |_| {}).await;
    let client = AdminClient::new(&agent.socket_path);

    let added = client
        .add_ban(&add_request("198.51.100.77/24", Some(60)))
        .await
        .expect("range ban added");
    assert_eq!(added.address.to_string(), "198.51.100.0/24");
    assert_eq!(added.remaining_seconds, Some(60));
    let listed = client.list_bans().await.expect("bans listed");
    assert_eq!(listed.bans.len(), 1);
    assert_eq!(listed.bans[0].address.to_string(), "198.51.100.0/24");

    let removed = client
        .remove_ban("198.51.100.0/24".parse().expect("valid range"))
        .await
        .expect("range ban removed");
    assert_eq!(removed.address.to_string(), "198.51.100.0/24");
    assert!(agent.blocklist.banned_addresses().is_empty());
    agent.stop().await;
}

#[tokio::test]
async fn allowlisted_ban_is_rejected_with_conflict() {
    let upstream = start_echo_upstream().await;
    let mut agent = start_agent(upstream.addr, |_| {}).await;
    let client = AdminClient::new(&agent.socket_path);

    let entry = client
        .add_allow(&AddAllowRequest {
            address: "203.0.113.0/28".into(),
        })
        .await
        .expect("allowlist entry added");
    assert_eq!(entry.address.to_string(), "203.0.113.0/28");
    assert!(!entry.configured);

    let rejected = client
        .add_ban(&add_request("203.0.113.5", Some(60)))
        .await
        .expect_err("an allowlisted address is not banned");
    assert!(
        matches!(
            rejected,
            ClientError::Api {
                status: StatusCode::CONFLICT,
                ..
            }
        ),
        "{rejected:?}"
    );
    assert!(
        rejected
            .to_string()
            .contains("allowlisted by 203.0.113.0/28"),
        "{rejected}"
    );
    assert!(agent.blocklist.banned_addresses().is_empty());

    let list = client.list_allows().await.expect("allowlist listed");
    let addresses: Vec<String> = list.entries.iter().map(|e| e.address.to_string()).collect();
    assert_eq!(addresses, ["203.0.113.0/28"]);

    client
        .remove_allow("203.0.113.0/28".parse().expect("valid range"))
        .await
        .expect("entry removed");
    client
        .add_ban(&add_request("203.0.113.5", Some(60)))
        .await
        .expect("the ban applies once the entry is gone");
    agent.stop().await;
}
