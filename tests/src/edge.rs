//! Helpers for the HTTP edge tests: the agent run in-process on loopback with a memory
//! blocklist, a recording upstream, and raw-byte clients.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use firewall_agent::bans::memory::MemoryBlocklist;
use firewall_agent::config::Config;
use firewall_agent::daemon::{Agent, RunningAgent};
use firewall_agent::store::Store;

/// Body the recording upstream sends with every response.
pub const RECORDING_BODY: &str = "recorded\n";

/// One request as the recording upstream read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The request line, such as `GET /a HTTP/1.1`.
    pub request_line: String,
    /// Header lines as received, lowercase names.
    pub headers: Vec<(String, String)>,
    /// The body, read by `Content-Length` or chunked framing.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// Returns the first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// An HTTP/1.1 upstream on 127.0.0.1 that records every request it reads and responds 200
/// with headers that reveal its software (`server`, `x-powered-by`). Stops when dropped.
pub struct RecordingUpstream {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    stop: Arc<AtomicBool>,
}

impl RecordingUpstream {
    pub fn start() -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the upstream");
        let addr = listener.local_addr().expect("read the upstream address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (records, stop_flag) = (Arc::clone(&requests), Arc::clone(&stop));
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stop_flag.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(stream) = stream {
                    let records = Arc::clone(&records);
                    thread::spawn(move || serve_recording(stream, &records));
                }
            }
        });
        Self {
            addr,
            requests,
            stop,
        }
    }

    /// Returns the requests read so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.lock().expect("upstream records").clone()
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_recording(stream: TcpStream, records: &Mutex<Vec<RecordedRequest>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(clone) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(clone);
    let mut writer = stream;
    while let Some(request) = read_request(&mut reader) {
        records.lock().expect("upstream records").push(request);
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nserver: test-upstream/1.0\r\n\
             x-powered-by: test-framework\r\ncontent-length: {}\r\n\r\n{RECORDING_BODY}",
            RECORDING_BODY.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn read_request(reader: &mut impl BufRead) -> Option<RecordedRequest> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let request_line = line.trim_end().to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut request = RecordedRequest {
        request_line,
        headers,
        body: Vec::new(),
    };
    if request.header("transfer-encoding").is_some() {
        request.body = read_chunked(reader)?;
    } else if let Some(length) = request.header("content-length") {
        let mut body = vec![0u8; length.parse().ok()?];
        reader.read_exact(&mut body).ok()?;
        request.body = body;
    }
    Some(request)
}

fn read_chunked(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let size = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
        if size == 0 {
            // Trailers until the empty line.
            loop {
                line.clear();
                reader.read_line(&mut line).ok()?;
                if line.trim().is_empty() {
                    return Some(body);
                }
            }
        }
        let mut chunk = vec![0u8; size + 2];
        reader.read_exact(&mut chunk).ok()?;
        body.extend_from_slice(&chunk[..size]);
    }
}

/// The agent run in-process on a free loopback port, with a memory blocklist and its store,
/// admin socket and files in a temporary directory. Stops when dropped.
pub struct EdgeAgent {
    runtime: tokio::runtime::Runtime,
    running: Option<RunningAgent>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

impl EdgeAgent {
    /// Starts the agent in front of `upstream`. `configure` changes the config before start.
    pub fn start(name: &str, upstream: SocketAddr, configure: impl FnOnce(&mut Config)) -> Self {
        let dir = std::env::temp_dir().join(format!("fw-edge-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the agent's temporary directory");

        let mut config = Config::default();
        config.proxy.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        config.proxy.upstream = Some(
            format!("http://{upstream}")
                .parse()
                .expect("valid upstream URL"),
        );
        config.admin.socket_path = dir.join("admin.sock");
        config.metrics.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        config.store.path = dir.join("state.redb");
        // Attack excerpts in the test output would look like failures.
        config.audit.path = Some(dir.join("audit.jsonl"));
        // Edge tests send many requests from loopback; the rate limit is not under test.
        config.rate_limit.requests = 1_000_000;
        config.xdp.interfaces = vec!["lo".into()];
        configure(&mut config);

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("start a tokio runtime");
        let store = Store::open(&config.store.path).expect("open the store");
        let running = runtime.block_on(async {
            let agent = Agent::new(config, store, Arc::new(MemoryBlocklist::new()));
            agent.bind().await.expect("bind the agent").start()
        });
        let addr = running.proxy_addr();
        Self {
            runtime,
            running: Some(running),
            addr,
            dir,
        }
    }

    /// Returns the running agent.
    pub fn running(&self) -> &RunningAgent {
        self.running.as_ref().expect("the agent runs until dropped")
    }
}

impl Drop for EdgeAgent {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            self.runtime.block_on(running.stop());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a raw-byte client saw on one connection.
#[derive(Debug)]
pub struct RawExchange {
    /// Every byte the server sent.
    pub response: String,
    /// Whether the server closed the connection before the read timeout.
    pub closed: bool,
}

impl RawExchange {
    /// Returns the status codes of the responses in the order they arrived.
    pub fn statuses(&self) -> Vec<u16> {
        self.response
            .match_indices("HTTP/1.1 ")
            .filter_map(|(index, prefix)| {
                let start = index + prefix.len();
                self.response.get(start..start + 3)?.parse().ok()
            })
            .collect()
    }
}

/// Sends `bytes` on a new connection to `addr` without closing the write side, then reads until
/// the server closes the connection or `timeout` passes.
pub fn send_raw(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> RawExchange {
    let mut stream = TcpStream::connect(addr).expect("connect to the proxy");
    stream.write_all(bytes).expect("send the raw request");
    let deadline = Instant::now() + timeout;
    let mut response = Vec::new();
    let mut buffer = [0u8; 4096];
    let closed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        stream
            .set_read_timeout(Some(left))
            .expect("set the read timeout");
        match stream.read(&mut buffer) {
            Ok(0) => break true,
            Ok(count) => response.extend_from_slice(&buffer[..count]),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break false;
            }
            // A reset after the response also means the server closed the connection.
            Err(_) => break true,
        }
    };
    RawExchange {
        response: String::from_utf8_lossy(&response).into_owned(),
        closed,
    }
}
