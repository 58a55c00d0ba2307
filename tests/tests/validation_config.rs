//! Validation settings that cannot be compiled stop the real agent binary at start, with a
//! message that names the route, the file and the config.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use integration_tests::agent::agent_binary;

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("fw-validation-config-{}-{name}", std::process::id()));
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

/// Runs the agent with a config that would start if `extra` were valid.
fn run_agent(dir: &Path, extra: &str) -> (PathBuf, Output) {
    let config = format!(
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

{extra}
"#,
        dir = dir.display()
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, config).expect("write the config");
    let output = Command::new(agent_binary())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run firewall-agent");
    (path, output)
}

#[test]
fn broken_schema_names_route_and_file() {
    let dir = TempDir::new("schema");
    let schema = dir.0.join("orders.json");
    std::fs::write(&schema, r#"{"type": "object", "properties": {"id": {"type": 7}}}"#)
        .expect("write the schema");
    let extra = format!(
        "[[routes]]\nname = \"orders\"\npath = \"/orders\"\n\n[routes.validation]\nbody_schema = \"{}\"\n",
        schema.display()
    );

    let (config, output) = run_agent(&dir.0, &extra);

    let message = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(message.contains("route orders"), "{message}");
    assert!(message.contains("validation.body_schema"), "{message}");
    assert!(message.contains(&schema.display().to_string()), "{message}");
    assert!(message.contains(&config.display().to_string()), "{message}");
}

#[test]
fn openapi_with_external_reference_is_refused() {
    let dir = TempDir::new("openapi");
    let document = dir.0.join("api.yaml");
    let text = "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /a:\n    get:\n      parameters:\n        - $ref: 'https://schemas.example.invalid/p.yaml'\n";
    std::fs::write(&document, text).expect("write the document");
    let extra = format!("[openapi]\nfile = \"{}\"\n", document.display());

    let (_, output) = run_agent(&dir.0, &extra);

    let message = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(message.contains("openapi"), "{message}");
    assert!(message.contains(&document.display().to_string()), "{message}");
    assert!(message.contains("outside the document"), "{message}");
}
