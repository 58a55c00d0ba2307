//! Running the real agent binary and `fwctl` from tests, in front of a small upstream.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Body the test upstream sends with every response.
pub const UPSTREAM_BODY: &str = "upstream ok\n";

/// Returns the path of a binary of the workspace's dev profile: the environment variable
/// `env_var` when it is set, else `debug/<name>` in `CARGO_TARGET_DIR` or in the workspace's
/// `target` directory.
fn binary(env_var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "{} not found; build it with `cargo xtask build` or set {env_var}",
        path.display()
    );
    path
}

/// Path of the `firewall-agent` binary.
pub fn agent_binary() -> PathBuf {
    binary("FIREWALL_AGENT_BIN", "firewall-agent")
}

/// Path of the `fwctl` binary.
pub fn fwctl_binary() -> PathBuf {
    binary("FWCTL_BIN", "fwctl")
}

/// Returns a TCP port that was free on `ip` a moment ago.
pub fn free_port(ip: Ipv4Addr) -> u16 {
    let listener = TcpListener::bind((ip, 0)).expect("bind an ephemeral port");
    listener.local_addr().expect("read the ephemeral port").port()
}

/// A minimal HTTP/1.1 server on 127.0.0.1 that responds to every request with 200 and
/// [`UPSTREAM_BODY`], one thread per connection. Stops when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    pub fn start() -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the upstream");
        let addr = listener.local_addr().expect("read the upstream address");
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stop_flag.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(stream) = stream {
                    thread::spawn(move || serve_upstream_connection(stream));
                }
            }
        });
        Self { addr, stop }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it reads the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_upstream_connection(stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(clone) => clone,
        Err(_) => return,
    });
    let mut writer = stream;
    loop {
        // Read one request head, then its body if it declares a length.
        let mut content_length = 0usize;
        let mut line = String::new();
        let mut saw_request_line = false;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            saw_request_line = true;
            let lower = line.to_ascii_lowercase();
            if let Some(value) = lower.strip_prefix("content-length:") {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
        if !saw_request_line {
            return;
        }
        let mut body = vec![0u8; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{UPSTREAM_BODY}",
            UPSTREAM_BODY.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// Settings a test chooses for one agent.
#[derive(Clone, Debug)]
pub struct AgentSettings {
    /// Short name for the agent's temporary directory.
    pub name: String,
    pub interfaces: Vec<String>,
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
    pub rate_limit_requests: u32,
    pub rate_limit_window_seconds: u64,
    pub strikes: u32,
    pub ban_seconds: u64,
}

/// A running `firewall-agent`, with its config, store and admin socket in a private temporary
/// directory. Dropping it stops the agent and removes the directory.
pub struct Agent {
    child: Option<Child>,
    pub dir: PathBuf,
    /// The agent's bpffs pin directory, removed with its pins on drop.
    pub pin_dir: PathBuf,
    pub config_path: PathBuf,
    pub socket: PathBuf,
    pub metrics: SocketAddr,
    pub settings: AgentSettings,
}

impl Agent {
    /// Writes the config and starts the agent, waiting until its admin socket and its proxy
    /// listener accept connections.
    pub fn start(settings: AgentSettings) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "fw-agent-{}-{}",
            std::process::id(),
            settings.name
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the agent's temporary directory");
        let socket = dir.join("admin.sock");
        let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)));
        let config_path = dir.join("agent.toml");
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/fw-test-{}-{}",
            std::process::id(),
            settings.name
        ));
        remove_pins(&pin_dir);
        let config = format!(
            r#"
[proxy]
listen = "{listen}"
upstream = "http://{upstream}"

[xdp]
interfaces = [{interfaces}]
pin_dir = "{pin_dir}"

[rate_limit]
requests = {requests}
window_seconds = {window}

[bans]
strikes = {strikes}
strike_window_seconds = 60
ban_seconds = {ban}
sweep_interval_seconds = 1

[admin]
socket_path = "{socket}"

[metrics]
listen = "{metrics}"

[store]
path = "{store}"
"#,
            listen = settings.listen,
            upstream = settings.upstream,
            interfaces = settings
                .interfaces
                .iter()
                .map(|name| format!("{name:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            requests = settings.rate_limit_requests,
            window = settings.rate_limit_window_seconds,
            strikes = settings.strikes,
            ban = settings.ban_seconds,
            socket = socket.display(),
            pin_dir = pin_dir.display(),
            metrics = metrics,
            store = dir.join("state.redb").display(),
        );
        std::fs::write(&config_path, config).expect("write the agent config");
        let mut agent = Self {
            child: None,
            dir,
            pin_dir,
            config_path,
            socket,
            metrics,
            settings,
        };
        agent.spawn();
        agent
    }

    /// Returns the process id of the running agent.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the agent process on the existing config and store.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "the agent is already running");
        let log = std::fs::File::create(self.dir.join("agent.log")).expect("create the agent log");
        let child = Command::new(agent_binary())
            .args(["run", "--config"])
            .arg(&self.config_path)
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn firewall-agent");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let socket_ready = std::os::unix::net::UnixStream::connect(&self.socket).is_ok();
            let proxy_ready =
                TcpStream::connect_timeout(&self.settings.listen, Duration::from_millis(200))
                    .is_ok();
            if socket_ready && proxy_ready {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("firewall-agent exited with {status} at start:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "firewall-agent not ready within 20 s:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the agent with SIGTERM and waits for it to exit, killing it after 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills the agent with SIGKILL, so it has no chance to clean up, and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Returns the agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// Runs `fwctl --socket <this agent's socket>` with `args`.
    pub fn fwctl(&self, args: &[&str]) -> Output {
        Command::new(fwctl_binary())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run fwctl")
    }

    /// Runs `fwctl` with `args` and `--json`, asserts success and parses its output.
    pub fn fwctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = args.to_vec();
        full.push("--json");
        let output = self.fwctl(&full);
        assert!(
            output.status.success(),
            "fwctl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "fwctl {args:?} printed invalid JSON ({error}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    /// Returns the kernel's dropped-packet count for `source`, from `fwctl stats --json`, or 0
    /// when the source is not among the top sources.
    pub fn dropped_packets(&self, source: Ipv4Addr) -> u64 {
        let stats = self.fwctl_json(&["stats", "--top", "100"]);
        let wanted = source.to_string();
        stats["top_sources"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|entry| entry["address"].as_str() == Some(wanted.as_str()))
            .and_then(|entry| entry["dropped_packets"].as_u64())
            .unwrap_or(0)
    }

    /// Returns whether `fwctl bans list --json` lists `address`.
    pub fn is_banned(&self, address: &str) -> bool {
        self.ban_entry(address).is_some()
    }

    /// Returns the `fwctl bans list --json` entry of `address`.
    pub fn ban_entry(&self, address: &str) -> Option<serde_json::Value> {
        let bans = self.fwctl_json(&["bans", "list"]);
        bans.as_array()
            .into_iter()
            .flatten()
            .find(|ban| ban["address"].as_str() == Some(address))
            .cloned()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
        remove_pins(&self.pin_dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Detaches the program pinned in `pin_dir` and removes the pins with `fwctl detach`, printing
/// any failure. A missing directory is not a failure.
fn remove_pins(pin_dir: &std::path::Path) {
    let output = Command::new(fwctl_binary())
        .arg("detach")
        .arg("--pin-dir")
        .arg(pin_dir)
        .stdin(Stdio::null())
        .output();
    match output {
        Ok(output) if output.status.success() => {}
        Ok(output) => eprintln!(
            "fwctl detach --pin-dir {} failed: {}",
            pin_dir.display(),
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => eprintln!("failed to run fwctl detach: {error}"),
    }
}

/// Result of one HTTP request made with curl.
#[derive(Debug, PartialEq, Eq)]
pub enum CurlOutcome {
    /// A response arrived with this status code.
    Status(u16),
    /// The TCP connection was not established in time (curl exit code 28 with no response).
    TimedOut,
    /// curl failed otherwise; the string contains its exit code and stderr.
    Failed(String),
}

/// Makes one GET request to `url` with curl, run through `command` (so it can run inside a
/// namespace), with a connect timeout of `connect_timeout_seconds`.
pub fn curl(mut command: Command, url: &str, connect_timeout_seconds: u32) -> CurlOutcome {
    let output = command
        .args([
            "--silent",
            "--show-error",
            "--output",
            "/dev/null",
            "--write-out",
            "%{http_code}",
            "--connect-timeout",
            &connect_timeout_seconds.to_string(),
            "--max-time",
            &(connect_timeout_seconds + 3).to_string(),
            url,
        ])
        .output()
        .expect("run curl");
    let code: u16 = String::from_utf8_lossy(&output.stdout).trim().parse().unwrap_or(0);
    match output.status.code() {
        Some(0) => CurlOutcome::Status(code),
        Some(28) if code == 0 => CurlOutcome::TimedOut,
        other => CurlOutcome::Failed(format!(
            "exit {other:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    }
}
