//! Token checks through the real `firewall-agent` binary on loopback: a token from a test
//! issuer is accepted only once that issuer is in the config. Needs root, because the agent
//! attaches its XDP program. It attaches to a veth pair of its own in the root namespace, with
//! no address and no traffic, so that concurrent tests that attach to `lo` do not collide
//! with it. (This kernel has no dummy interface driver.)

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use integration_tests::agent::{agent_binary, free_port};
use integration_tests::netns::is_root;
use integration_tests::tokens::{
    ES_KID, EchoUpstream, JwksServer, TestKeys, claims, header, http_get,
};

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "orders-api";

/// A `firewall-agent` process with its files in a temporary directory; killed and cleaned up
/// on drop.
struct AgentProcess {
    child: Child,
    dir: PathBuf,
    interface: VethInterface,
    listen: SocketAddr,
}

/// One end of a veth pair in the root namespace; deleting it on drop removes both ends.
struct VethInterface(String);

impl VethInterface {
    fn create(index: u32) -> Self {
        // Interface names hold at most 15 bytes.
        let name = format!("fwtk{}a{index}", std::process::id() % 1_000_000);
        let peer = format!("fwtk{}b{index}", std::process::id() % 1_000_000);
        let _ = Command::new("ip").args(["link", "del", &name]).status();
        let created = Command::new("ip")
            .args(["link", "add", &name, "type", "veth", "peer", "name", &peer])
            .status()
            .is_ok_and(|status| status.success());
        assert!(created, "failed to create the veth pair {name}");
        let _ = Command::new("ip").args(["link", "set", &name, "up"]).status();
        Self(name)
    }
}

impl Drop for VethInterface {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

impl AgentProcess {
    fn start(name: &str, index: u32, upstream: SocketAddr, issuers: &str) -> Self {
        let interface = VethInterface::create(index);
        let dir = std::env::temp_dir().join(format!("fw-tokens-agent-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the agent directory");
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)));
        let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)));
        let config = format!(
            r#"
[proxy]
listen = "{listen}"
upstream = "http://{upstream}"

[xdp]
interfaces = ["{interface}"]
pin = false

[admin]
socket_path = "{dir}/admin.sock"

[metrics]
listen = "{metrics}"

[store]
path = "{dir}/state.redb"

{issuers}

[[routes]]
name = "orders"
path = "/orders/{{*rest}}"
[routes.auth]
scopes = ["orders:read"]
"#,
            dir = dir.display(),
            interface = interface.0,
        );
        let config_path = dir.join("agent.toml");
        std::fs::write(&config_path, config).expect("write the config");
        let log = std::fs::File::create(dir.join("agent.log")).expect("create the log");
        let child = Command::new(agent_binary())
            .args(["run", "--config"])
            .arg(&config_path)
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn firewall-agent");
        let mut agent = Self {
            child,
            dir,
            interface,
            listen,
        };
        agent.wait_ready();
        agent
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&self.listen, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("firewall-agent exited with {status}:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "agent not ready:\n{}", self.log());
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        // The agent detached from the interface on exit; the interface goes with this field.
        let _ = &self.interface;
    }
}

fn issuer_section(issuer: &str, jwks_url: &str) -> String {
    format!(
        r#"
[[tokens.issuers]]
issuer = "{issuer}"
audiences = ["{AUDIENCE}"]
jwks_url = "{jwks_url}"
"#
    )
}

fn skip_without_root() -> bool {
    if !is_root() {
        eprintln!("skipped: creating an interface and attaching XDP need root");
        return true;
    }
    false
}

fn orders(agent: &AgentProcess, token: &str) -> integration_tests::tokens::HttpResponse {
    let authorization = format!("Bearer {token}");
    http_get(agent.listen, "/orders/7", &[("authorization", &authorization)])
}

#[test]
fn test_issuer_accepted_only_when_configured() {
    if skip_without_root() {
        return;
    }
    let keys = TestKeys::generate();
    let jwks = JwksServer::start(&keys.jwks());
    let other_jwks = JwksServer::start(&TestKeys::generate().jwks());
    let upstream = EchoUpstream::start();
    let token = keys.mint(&header("ES256", ES_KID), &claims(ISSUER, AUDIENCE));

    let rejected = {
        let agent = AgentProcess::start(
            "unconfigured",
            1,
            upstream.addr,
            &issuer_section("https://other.example", &other_jwks.url()),
        );
        orders(&agent, &token)
    };
    let (accepted, forwarded_log) = {
        let agent = AgentProcess::start(
            "configured",
            2,
            upstream.addr,
            &issuer_section(ISSUER, &jwks.url()),
        );
        let response = orders(&agent, &token);
        (response, agent.log())
    };

    assert_eq!(rejected.status, 401, "{}", rejected.body);
    assert!(
        rejected
            .header("www-authenticate")
            .is_some_and(|value| value.contains("the issuer is not trusted")),
        "{:?}",
        rejected.headers
    );
    assert_eq!(accepted.status, 200, "{}\n{forwarded_log}", accepted.body);
    assert!(
        accepted
            .body
            .to_ascii_lowercase()
            .contains("x-auth-subject: user-42"),
        "{}",
        accepted.body
    );
    assert!(
        !forwarded_log.contains(&token),
        "the agent logged the token:\n{forwarded_log}"
    );
}

#[test]
fn query_token_never_logged() {
    if skip_without_root() {
        return;
    }
    let keys = TestKeys::generate();
    let jwks = JwksServer::start(&keys.jwks());
    let upstream = EchoUpstream::start();
    let token = keys.mint(&header("ES256", ES_KID), &claims(ISSUER, AUDIENCE));
    let agent = AgentProcess::start("query", 3, upstream.addr, &issuer_section(ISSUER, &jwks.url()));

    let response = http_get(agent.listen, &format!("/orders/7?access_token={token}"), &[]);
    let bad = orders(&agent, &format!("{token}x"));
    // The log is written asynchronously; give it a moment.
    thread::sleep(Duration::from_millis(300));
    let log = agent.log();

    assert_eq!(response.status, 401);
    assert_eq!(bad.status, 401);
    assert!(!log.contains(&token), "the agent logged a token:\n{log}");
    assert!(log.contains("request rejected"), "no rejection logged:\n{log}");
}

