//! The authorization server of the real agent binary, on loopback, against real clients:
//! `fwctl users` adds the user, Python's authlib runs the flows and PyJWT verifies the tokens
//! (`tests/python/oauth_interop.py`), the proxy's token check accepts the issued tokens on a
//! protected route until they are revoked, and the store keeps users and keys across a restart.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};

use firewall_agent::oauth::secrets::sha256_hex;
use integration_tests::agent::{Agent, AgentSettings, Upstream, free_port, fwctl_binary};
use integration_tests::netns::is_root;

const PUBLIC_CLIENT: &str = "interop-spa";
const REDIRECT_URI: &str = "http://127.0.0.1/callback";
const CONFIDENTIAL_CLIENT: &str = "interop-backend";
const CONFIDENTIAL_SECRET: &str = "interop-backend-secret-5b0e2d";
const USERNAME: &str = "carol";
const PASSWORD: &str = "a long passphrase for the interop test";
/// Python with Debian's python3-authlib, python3-jwt and python3-requests.
const PYTHON: &str = "/usr/bin/python3";

/// A veth pair in the root namespace for the agent's XDP program, so the test leaves `lo`
/// alone. Neither end has an address, so it carries no traffic. Deleting one end on drop
/// removes both.
struct VethInterface(String);

impl VethInterface {
    fn create() -> Self {
        let name = format!("fwoa{}", std::process::id() % 100_000);
        let peer = format!("{name}p");
        let _ = Command::new("ip")
            .args(["link", "del", &name])
            .stderr(Stdio::null())
            .status();
        let status = Command::new("ip")
            .args(["link", "add", &name, "type", "veth", "peer", "name", &peer])
            .status()
            .expect("run ip link add");
        assert!(status.success(), "failed to create veth pair {name}");
        let status = Command::new("ip")
            .args(["link", "set", &name, "up"])
            .status()
            .expect("run ip link set");
        assert!(status.success(), "failed to bring up veth {name}");
        Self(name)
    }
}

impl Drop for VethInterface {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

/// Appends the `[oauth]` section for `issuer` to the agent's config.
fn enable_oauth(config_path: &Path, issuer: &str) {
    let section = format!(
        r#"
[oauth]
enabled = true
issuer = "{issuer}"

[[oauth.clients]]
client_id = "{PUBLIC_CLIENT}"
redirect_uris = ["{REDIRECT_URI}"]
scopes = ["read", "write"]

[[oauth.clients]]
client_id = "{CONFIDENTIAL_CLIENT}"
secret_sha256 = "{secret}"
redirect_uris = ["https://backend.example/callback"]
grant_types = ["authorization_code", "refresh_token", "client_credentials"]
scopes = ["read", "write"]

[[tokens.issuers]]
issuer = "{issuer}"
audiences = ["{issuer}"]
jwks_url = "{issuer}/oauth2/jwks"
algorithms = ["ES256"]

[[routes]]
path = "/api/{{*rest}}"
[routes.auth]
scopes = ["read"]
"#,
        secret = sha256_hex(CONFIDENTIAL_SECRET),
    );
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(config_path)
        .expect("open the agent config");
    file.write_all(section.as_bytes()).expect("append [oauth]");
}

/// Runs `fwctl users add` with the password on standard input.
fn add_user(agent: &Agent) {
    let mut child = Command::new(fwctl_binary())
        .arg("--socket")
        .arg(&agent.socket)
        .args(["users", "add", USERNAME])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fwctl users add");
    child
        .stdin
        .take()
        .expect("fwctl stdin")
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .expect("write the password");
    let output = child.wait_with_output().expect("wait for fwctl");
    assert!(
        output.status.success(),
        "fwctl users add failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn run_python(issuer: &str) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/oauth_interop.py");
    Command::new(PYTHON)
        .arg(script)
        .env("OAUTH_ISSUER", issuer)
        .env("OAUTH_PUBLIC_CLIENT", PUBLIC_CLIENT)
        .env("OAUTH_REDIRECT_URI", REDIRECT_URI)
        .env("OAUTH_CONFIDENTIAL_CLIENT", CONFIDENTIAL_CLIENT)
        .env("OAUTH_CONFIDENTIAL_SECRET", CONFIDENTIAL_SECRET)
        .env("OAUTH_USERNAME", USERNAME)
        .env("OAUTH_PASSWORD", PASSWORD)
        // Keep every request on loopback even where a proxy is configured.
        .env("NO_PROXY", "127.0.0.1")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .output()
        .expect("run the Python interop script")
}

fn python_ready() -> bool {
    Command::new(PYTHON)
        .args(["-c", "import authlib, jwt, requests, cryptography"])
        .status()
        .is_ok_and(|status| status.success())
}

#[test]
fn authlib_and_pyjwt_interop() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the agent needs root, and CI must run this"
        );
        eprintln!("skipping authlib_and_pyjwt_interop: the agent needs root for XDP");
        return;
    }
    assert!(
        python_ready(),
        "python3-authlib, python3-jwt and python3-requests are missing: run `cargo xtask test`, \
         which installs them"
    );
    let interface = VethInterface::create();
    let upstream = Upstream::start();
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)));
    let issuer = format!("http://{listen}");
    let mut agent = Agent::start(AgentSettings {
        name: "oauth-interop".to_owned(),
        interfaces: vec![interface.0.clone()],
        listen,
        upstream: upstream.addr,
        rate_limit_requests: 1000,
        rate_limit_window_seconds: 60,
        strikes: 1000,
        ban_seconds: 60,
    });
    agent.stop();
    enable_oauth(&agent.config_path, &issuer);
    agent.spawn();

    add_user(&agent);
    let users = agent.fwctl_json(&["users", "list"]);
    assert_eq!(users[0]["username"], USERNAME, "{users}");
    let keys_before = agent.fwctl_json(&["keys", "list"]);
    assert_eq!(
        keys_before.as_array().map(Vec::len),
        Some(2),
        "{keys_before}"
    );

    let output = run_python(&issuer);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "interop failed:\n{stdout}\n{stderr}\nagent log:\n{}",
        agent.log()
    );
    assert!(stdout.contains("all interop checks passed"), "{stdout}");

    let rotated = agent.fwctl_json(&["keys", "rotate"]);
    let statuses: Vec<&str> = rotated
        .as_array()
        .expect("key list")
        .iter()
        .filter_map(|key| key["status"].as_str())
        .collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|status| **status == "retired")
            .count(),
        1,
        "{rotated}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|status| **status == "active")
            .count(),
        1,
        "{rotated}"
    );

    // Users and keys come back from the store after a restart, and the flows still pass with
    // the rotated keys.
    agent.stop();
    agent.spawn();
    let keys_after = agent.fwctl_json(&["keys", "list"]);
    assert_eq!(keys_after, rotated);
    let output = run_python(&issuer);
    assert!(
        output.status.success(),
        "interop after restart failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let removed = agent.fwctl(&["users", "remove", USERNAME]);
    assert!(removed.status.success());
    let missing = agent.fwctl(&["users", "remove", USERNAME]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no user named"));
}
