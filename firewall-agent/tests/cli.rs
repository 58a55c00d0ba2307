//! The `firewall-agent` and `fwctl` binaries: start-up errors, argument errors, and `fwctl`
//! against an agent running in this process.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{start_agent, start_echo_upstream};

const AGENT: &str = env!("CARGO_BIN_EXE_firewall-agent");
const FWCTL: &str = env!("CARGO_BIN_EXE_fwctl");

fn run(binary: &str, args: &[&str]) -> Output {
    Command::new(binary)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap_or_else(|error| panic!("failed to run {binary}: {error}"))
}

/// Runs `fwctl` on a blocking thread, so that an agent in this test's runtime can respond.
async fn fwctl(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(FWCTL, &args)
    })
    .await
    .expect("fwctl thread")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn socket_args(socket: &Path, args: &[&str]) -> Vec<String> {
    let mut all = vec!["--socket".to_owned(), socket.display().to_string()];
    all.extend(args.iter().map(|arg| (*arg).to_owned()));
    all
}

#[test]
fn agent_rejects_unknown_config_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        "[proxy]\nupstream = \"http://127.0.0.1:9000\"\n[rate_limit]\nwindw = 5\n",
    )
    .expect("write config");

    let output = run(
        AGENT,
        &["run", "--config", path.to_str().expect("UTF-8 path")],
    );

    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains(&format!("config {}", path.display())),
        "{message}"
    );
    assert!(
        message.contains("unknown key `rate_limit.windw`"),
        "{message}"
    );
}

#[test]
fn agent_rejects_invalid_config_value() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        "[proxy]\nupstream = \"http://127.0.0.1:9000\"\n[xdp]\ninterfaces = [\"lo\"]\n\
         [rate_limit]\nrequests = 0\n",
    )
    .expect("write config");

    let output = run(
        AGENT,
        &["run", "--config", path.to_str().expect("UTF-8 path")],
    );

    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains(&format!(
            "config {}: rate_limit.requests must be at least 1",
            path.display()
        )),
        "{message}"
    );
}

#[test]
fn agent_without_interface_names_flag() {
    let output = run(AGENT, &["run", "--upstream", "http://127.0.0.1:9000"]);

    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("xdp.interfaces"), "{message}");
    assert!(message.contains("--interface"), "{message}");
}

#[test]
fn agent_requires_a_ca_for_an_https_upstream_flag() {
    let output = run(
        AGENT,
        &[
            "run",
            "--upstream",
            "https://127.0.0.1:9443",
            "--interface",
            "lo",
        ],
    );

    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("tls.upstream_ca_path is missing"),
        "{message}"
    );
}

#[test]
fn fwctl_reports_agent_not_running() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("admin.sock");

    let output = run(
        FWCTL,
        &[
            "--socket",
            socket.to_str().expect("UTF-8 path"),
            "bans",
            "list",
        ],
    );

    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains(&socket.display().to_string()), "{message}");
    assert!(message.contains("not running"), "{message}");
    assert!(message.contains("(no such file)"), "{message}");
    assert!(message.contains("start it"), "{message}");
}

#[test]
fn fwctl_rejects_invalid_address() {
    let output = run(FWCTL, &["bans", "add", "192.0.2.300"]);

    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("invalid address or range `192.0.2.300`"),
        "{message}"
    );
}

#[test]
fn fwctl_rejects_invalid_ttl() {
    let output = run(FWCTL, &["bans", "add", "192.0.2.7", "--ttl", "ten minutes"]);

    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("invalid TTL `ten minutes`"), "{message}");
    assert!(message.contains("such as 90s, 10m, 1h or 2d"), "{message}");
}

#[test]
fn fwctl_lists_rules_without_agent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("admin.sock");
    let socket = socket.to_str().expect("UTF-8 path");

    let table = run(FWCTL, &["--socket", socket, "rules"]);
    assert!(table.status.success(), "{}", stderr(&table));
    let text = stdout(&table);
    assert!(text.starts_with("ID "), "{text}");
    assert!(text.contains("sqli-union"), "{text}");
    assert!(text.contains("sqli-edge-quote"), "{text}");

    let json = run(FWCTL, &["--socket", socket, "--json", "rules", "--level", "1"]);
    assert!(json.status.success(), "{}", stderr(&json));
    let rules: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).expect("JSON array");
    assert!(rules.iter().any(|rule| rule["id"] == "sqli-union" && rule["weight"] == 5));
    assert!(rules.iter().all(|rule| rule["level"] == 1), "a rule above level 1 is listed");
    let all: Vec<serde_json::Value> =
        serde_json::from_slice(&run(FWCTL, &["--json", "rules"]).stdout).expect("JSON array");
    assert!(all.len() > rules.len());

    let invalid = run(FWCTL, &["rules", "--level", "5"]);
    assert!(!invalid.status.success());
    assert!(stderr(&invalid).contains("5 is not in 1..=4"), "{}", stderr(&invalid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fwctl_manages_bans_of_running_agent() {
    let upstream = start_echo_upstream().await;
    let mut agent = start_agent(upstream.addr, |_| {}).await;
    let socket = agent.socket_path.clone();

    let added = fwctl(socket_args(
        &socket,
        &["bans", "add", "192.0.2.7", "--ttl", "10m"],
    ))
    .await;
    assert!(added.status.success(), "{}", stderr(&added));
    assert_eq!(stdout(&added).trim(), "banned 192.0.2.7 for 10m (manual)");

    let forever = fwctl(socket_args(
        &socket,
        &[
            "bans",
            "add",
            "2001:db8::1",
            "--ttl",
            "never",
            "--reason",
            "scanner",
        ],
    ))
    .await;
    assert!(forever.status.success(), "{}", stderr(&forever));

    let table = fwctl(socket_args(&socket, &["bans", "list"])).await;
    assert!(table.status.success(), "{}", stderr(&table));
    let lines: Vec<String> = stdout(&table).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].starts_with("ADDRESS"), "{lines:?}");
    assert!(lines[1].starts_with("192.0.2.7"), "{lines:?}");
    assert!(lines[1].contains("manual"), "{lines:?}");
    assert!(
        lines[1].contains("9m") || lines[1].contains("10m"),
        "{lines:?}"
    );
    assert!(
        lines[2].contains("never") && lines[2].contains("scanner"),
        "{lines:?}"
    );
    // Columns line up: ORIGIN starts at the same offset in every row.
    let origin_column = lines[0].find("ORIGIN").expect("ORIGIN header");
    assert_eq!(lines[1].find("manual"), Some(origin_column));
    assert_eq!(lines[2].find("manual"), Some(origin_column));

    let json = fwctl(socket_args(&socket, &["--json", "bans", "list"])).await;
    assert!(json.status.success(), "{}", stderr(&json));
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON output");
    assert_eq!(value[0]["address"], "192.0.2.7");
    assert_eq!(value[0]["origin"], "manual");
    assert_eq!(value[1]["remaining_seconds"], serde_json::Value::Null);

    let stats = fwctl(socket_args(&socket, &["stats", "--top", "5"])).await;
    assert!(stats.status.success(), "{}", stderr(&stats));
    let text = stdout(&stats);
    assert!(text.contains("dropped_banned"), "{text}");
    assert!(text.contains("active bans: 2"), "{text}");

    let removed = fwctl(socket_args(&socket, &["bans", "remove", "192.0.2.7"])).await;
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert_eq!(stdout(&removed).trim(), "removed the ban of 192.0.2.7");

    let again = fwctl(socket_args(&socket, &["bans", "remove", "192.0.2.7"])).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("no ban found for 192.0.2.7"),
        "{}",
        stderr(&again)
    );

    assert_eq!(agent.blocklist.banned_addresses().len(), 1);
    agent.stop().await;
}

#[test]
fn detach_without_pins_says_nothing_pinned() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pin_dir = dir.path().join("never-pinned");
    let socket = dir.path().join("admin.sock");
    let pin_dir = pin_dir.to_str().expect("UTF-8 path");
    let socket = socket.to_str().expect("UTF-8 path");

    let output = run(FWCTL, &["--socket", socket, "detach", "--pin-dir", pin_dir]);

    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), format!("nothing pinned in {pin_dir}\n"));
}
