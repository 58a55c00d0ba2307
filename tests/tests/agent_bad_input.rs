//! The agent's start-up checks, run on the real binary: each bad input ends the process with a
//! non-zero exit and a message that names the input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use integration_tests::agent::{agent_binary, fwctl_binary};
use integration_tests::netns::is_root;

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("fw-bad-input-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_agent_with_config(dir: &Path, config: &str) -> (PathBuf, Output) {
    let path = dir.join("agent.toml");
    std::fs::write(&path, config).expect("write the config");
    let output = Command::new(agent_binary())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run firewall-agent");
    (path, output)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Builds a config that would start if it were valid, with `extra` appended to its `[rate_limit]`
/// section.
fn config_with_rate_limit(dir: &Path, extra: &str) -> String {
    format!(
        r#"
[proxy]
listen = "127.0.0.1:1"
upstream = "http://127.0.0.1:2"

[xdp]
interfaces = ["lo"]

[admin]
socket_path = "{dir}/admin.sock"

[store]
path = "{dir}/state.redb"

[rate_limit]
{extra}
"#,
        dir = dir.display()
    )
}

#[test]
fn unknown_config_key_names_key_and_file() {
    let dir = TempDir::new("unknown-key");
    let config = config_with_rate_limit(&dir.0, "requests_per_windw = 5");

    let (path, output) = run_agent_with_config(&dir.0, &config);

    let message = stderr(&output);
    assert!(!output.status.success());
    assert!(message.contains("requests_per_windw"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[test]
fn invalid_config_value_names_key_and_file() {
    let dir = TempDir::new("invalid-value");
    let config = config_with_rate_limit(&dir.0, "requests = 0");

    let (path, output) = run_agent_with_config(&dir.0, &config);

    let message = stderr(&output);
    assert!(!output.status.success());
    assert!(message.contains("rate_limit.requests"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[test]
fn missing_interface_is_named() {
    if !is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI must run this test as root");
        eprintln!("skipping missing_interface_is_named: needs root to get past the privilege check");
        return;
    }
    let dir = TempDir::new("missing-interface");
    let config = config_with_rate_limit(&dir.0, "").replace(r#"["lo"]"#, r#"["fwnosuchif0"]"#);

    let (_, output) = run_agent_with_config(&dir.0, &config);

    let message = stderr(&output);
    assert!(!output.status.success());
    assert!(message.contains("fwnosuchif0"), "{message}");
}

#[test]
fn unprivileged_start_names_missing_capability() {
    if !is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI must run this test as root");
        eprintln!("skipping unprivileged_start_names_missing_capability: needs root to drop privileges");
        return;
    }
    // Run as the unprivileged user `nobody` with every capability cleared.
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(agent_binary())
        .args(["run", "--upstream", "http://127.0.0.1:2", "--listen", "127.0.0.1:0"])
        .args(["--interface", "lo"])
        .output()
        .expect("run setpriv");

    let message = stderr(&output);
    assert!(!output.status.success());
    assert!(message.contains("CAP_"), "{message}");
}

#[test]
fn fwctl_rejects_invalid_address() {
    let dir = TempDir::new("fwctl-address");
    let output = Command::new(fwctl_binary())
        .arg("--socket")
        .arg(dir.0.join("admin.sock"))
        .args(["bans", "add", "192.0.2.300", "--ttl", "10m"])
        .output()
        .expect("run fwctl");

    let message = stderr(&output);
    assert!(!output.status.success());
    assert!(message.contains("192.0.2.300"), "{message}");
}
