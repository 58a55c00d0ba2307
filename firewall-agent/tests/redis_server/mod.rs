//! `redis-server` processes for tests: loopback only, an ephemeral port, a temporary directory,
//! no persistence, killed by pid on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Maximum time a server gets to reply to PING after start.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Returns whether `redis-server` is installed. Under CI its absence fails the test, because
/// `cargo xtask test` installs it.
pub fn available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is missing; `cargo xtask test` installs it"
        );
        eprintln!("skipped: redis-server is not installed (run `cargo xtask test`)");
    }
    found
}

/// One running `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    cluster: bool,
}

impl RedisServer {
    /// Starts a standalone server.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Starts a server in cluster mode, without slots until [`create_cluster`] assigns them.
    pub fn start_cluster_node() -> Self {
        Self::start_with(true)
    }

    fn start_with(cluster: bool) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory for redis-server");
        let port = free_port();
        let mut server = Self {
            child: None,
            port,
            dir,
            cluster,
        };
        server.spawn();
        server
    }

    /// Returns the `redis://` URL of the server.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Returns the `127.0.0.1:PORT` address.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the server and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, with an empty data set.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Sends one command in the inline protocol and returns the raw reply.
    pub fn command(&self, line: &str) -> String {
        send_inline(&self.address(), line).expect("redis command")
    }

    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.cluster {
            command
                .args(["--cluster-enabled", "yes"])
                .arg("--cluster-config-file")
                .arg(node_file(self.dir.path()));
        }
        self.child = Some(command.spawn().expect("failed to start redis-server"));

        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if send_inline(&self.address(), "PING").is_ok_and(|reply| reply.starts_with("+PONG")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Assigns the 16384 slots evenly to `nodes`, as masters without replicas, and waits until the
/// cluster is ready.
pub fn create_cluster(nodes: &[RedisServer]) {
    let status = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(nodes.iter().map(RedisServer::address))
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("failed to run redis-cli --cluster create");
    assert!(
        status.success(),
        "redis-cli --cluster create failed: {status}"
    );

    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        let ready = nodes
            .iter()
            .all(|node| node.command("CLUSTER INFO").contains("cluster_state:ok"));
        if ready {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the Redis cluster did not reach cluster_state:ok");
}

fn node_file(dir: &Path) -> PathBuf {
    dir.join("nodes.conf")
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

fn send_inline(address: &str, line: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(format!("{line}\r\n").as_bytes())?;
    let mut reply = vec![0u8; 64 * 1024];
    let read = stream.read(&mut reply)?;
    Ok(String::from_utf8_lossy(&reply[..read]).into_owned())
}
