//! Real attack tools against the agent: sqlmap, hydra and a path scanner run from an attacker
//! namespace on 203.0.113.0/24, while a legitimate client on 198.51.100.0/24 keeps making
//! requests. Each attack must end with the attacker banned in the kernel by the threat engine.
//!
//! Every test here needs root and uses both test networks, so run this file alone with
//! `--test-threads=1`. Every tool run is bounded in time with `timeout`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use integration_tests::agent::{Agent, AgentSettings, CurlOutcome, curl, free_port};
use integration_tests::netns::{ClientHost, is_root};

const ATTACKER_HOST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const ATTACKER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const LEGIT_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const LEGIT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

/// Failed logins (403 responses) in a window that ban a source in these tests.
const LOGIN_FAILURES_TO_BAN: u32 = 10;

static NETWORK: Mutex<()> = Mutex::new(());

/// A deliberately injectable API on loopback: `/item?id=` pastes the id into an SQLite query,
/// `/login` checks a form against one user and returns 403 otherwise, `/hello` returns 200
/// and every other path 404. `/stats` returns how many login attempts it saw.
const INJECTABLE_UPSTREAM: &str = r#"
import http.server, json, sqlite3, threading, urllib.parse

db = sqlite3.connect(":memory:", check_same_thread=False)
db.executescript(
    "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT);"
    "INSERT INTO items VALUES (1, 'apple'), (2, 'pear');"
    "CREATE TABLE users (name TEXT, password TEXT);"
    "INSERT INTO users VALUES ('alice', 'wonderland');"
)
lock = threading.Lock()
logins = 0

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, text):
        data = text.encode()
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/hello":
            return self.reply(200, "hello\n")
        if url.path == "/stats":
            return self.reply(200, json.dumps({"logins": logins}))
        if url.path == "/item":
            ident = urllib.parse.parse_qs(url.query).get("id", ["1"])[0]
            try:
                with lock:
                    # Injectable on purpose: the id is pasted into the SQL text.
                    rows = db.execute("SELECT name FROM items WHERE id = " + ident).fetchall()
            except Exception as error:
                return self.reply(500, "database error: %s\n" % error)
            return self.reply(200, "".join("%s\n" % (row[0],) for row in rows))
        self.reply(404, "not found\n")

    def do_POST(self):
        global logins
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        if urllib.parse.urlsplit(self.path).path != "/login":
            return self.reply(404, "not found\n")
        form = urllib.parse.parse_qs(body)
        with lock:
            logins += 1
        user = form.get("user", [""])[0]
        password = form.get("password", [""])[0]
        if (user, password) == ("alice", "wonderland"):
            return self.reply(200, "welcome\n")
        # 403, not 401: hydra's form module takes a 401 for HTTP authentication and stops.
        self.reply(403, "invalid credentials\n")

class Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # Clients cut off by a ban leave broken pipes; they are expected here.
        pass

server = Server(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// A path scanner: requests each path of the wordlist in turn and stops after three requests in
/// a row time out, which is what a kernel ban looks like from outside. Prints the number of
/// responses it received.
const PATH_SCANNER: &str = r#"
import sys, urllib.error, urllib.request

base, wordlist = sys.argv[1], sys.argv[2]
answered = timeouts = 0
for line in open(wordlist):
    path = line.strip()
    try:
        urllib.request.urlopen(base + "/" + path, timeout=2).read()
        answered += 1
        timeouts = 0
    except urllib.error.HTTPError:
        answered += 1
        timeouts = 0
    except Exception:
        timeouts += 1
        if timeouts >= 3:
            break
print(answered)
"#;

/// The Python upstream process, killed on drop.
struct InjectableUpstream {
    child: Child,
    addr: SocketAddr,
}

impl InjectableUpstream {
    fn start(dir: &Path) -> Self {
        let script = dir.join("upstream.py");
        std::fs::write(&script, INJECTABLE_UPSTREAM).expect("write the upstream script");
        let mut child = Command::new("python3")
            .arg(&script)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Python upstream");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the upstream port");
        let port: u16 = line.trim().parse().expect("the upstream prints its port");
        Self {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        }
    }

    /// Login attempts the upstream received, read over loopback.
    fn logins(&self) -> u64 {
        let mut stream = TcpStream::connect(self.addr).expect("connect to the upstream");
        stream
            .write_all(b"GET /stats HTTP/1.1\r\nhost: upstream\r\nconnection: close\r\n\r\n")
            .expect("send the stats request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("read the stats response");
        let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
        let stats: serde_json::Value = serde_json::from_str(body).expect("stats are JSON");
        stats["logins"].as_u64().expect("a login count")
    }
}

impl Drop for InjectableUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests `/hello` from the legitimate client every 200 ms until stopped, and records every
/// outcome.
struct LegitimateTraffic {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<CurlOutcome>>>,
}

impl LegitimateTraffic {
    fn start(namespace: String, url: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut outcomes = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let command = integration_tests::netns::command_in(&namespace, "curl");
                outcomes.push(curl(command, &url, 2));
                thread::sleep(Duration::from_millis(200));
            }
            outcomes
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<CurlOutcome> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|thread| thread.join().expect("the legitimate client thread"))
            .unwrap_or_default()
    }
}

impl Drop for LegitimateTraffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// An agent in front of the injectable upstream, with an attacker and a legitimate client.
struct Bench {
    // Field order is drop order: stop the agent before removing its interfaces.
    agent: Agent,
    attacker: ClientHost,
    legit: ClientHost,
    upstream: InjectableUpstream,
    work: tempfile_dir::Dir,
    _network: MutexGuard<'static, ()>,
}

/// A temporary directory removed on drop, without another dependency.
mod tempfile_dir {
    use std::path::PathBuf;

    pub struct Dir(pub PathBuf);

    impl Dir {
        pub fn new(name: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("fw-threat-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("create the work directory");
            Self(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Bench {
    /// Returns `None`, after printing why, when not root outside CI.
    fn start(name: &str) -> Option<Self> {
        if !is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "threat tool tests need root, and CI must run them"
            );
            eprintln!("skipping {name}: needs root for network namespaces and XDP");
            return None;
        }
        let network = NETWORK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let attacker_interface = format!("fwa{name}");
        let legit_interface = format!("fwl{name}");
        let attacker = ClientHost::create(
            &format!("fwa-{name}"),
            &attacker_interface,
            ATTACKER_HOST,
            ATTACKER,
        )
        .expect("create the attacker namespace");
        let legit = ClientHost::create(&format!("fwl-{name}"), &legit_interface, LEGIT_HOST, LEGIT)
            .expect("create the legitimate client namespace");
        let work = tempfile_dir::Dir::new(name);
        let upstream = InjectableUpstream::start(&work.0);

        let mut agent = Agent::start(AgentSettings {
            name: format!("threat-{name}"),
            interfaces: vec![attacker_interface, legit_interface],
            listen: SocketAddr::from((ATTACKER_HOST, free_port(ATTACKER_HOST))),
            upstream: upstream.addr,
            // High enough that only the threat engine bans.
            rate_limit_requests: 100_000,
            rate_limit_window_seconds: 60,
            strikes: 1_000,
            ban_seconds: 60,
        });
        agent.stop();
        let extra = format!(
            "\n[threat.sources]\nunauthorized_responses = {LOGIN_FAILURES_TO_BAN}\n\n\
             [audit]\npath = \"{}\"\n",
            agent.dir.join("audit.jsonl").display()
        );
        let mut config = std::fs::read_to_string(&agent.config_path).expect("read the config");
        config.push_str(&extra);
        std::fs::write(&agent.config_path, config).expect("write the config");
        agent.spawn();

        Some(Self {
            agent,
            attacker,
            legit,
            upstream,
            work,
            _network: network,
        })
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.agent.settings.listen)
    }

    fn legitimate_traffic(&self) -> LegitimateTraffic {
        LegitimateTraffic::start(
            self.legit.namespace.clone(),
            format!("{}/hello", self.base_url()),
        )
    }

    /// Runs `program` in the attacker namespace under `timeout`, returning stdout and stderr.
    fn attack(&self, seconds: u32, program: &str, args: &[&str]) -> (String, String) {
        let mut full = vec![seconds.to_string(), program.to_owned()];
        full.extend(args.iter().map(|arg| (*arg).to_owned()));
        let output = self
            .attacker
            .command("timeout")
            .args(&full)
            // Hydra writes a restore file into the working directory.
            .current_dir(&self.work.0)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("run {program}: {error}"));
        (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.agent.dir.join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("each audit line is JSON"))
            .collect()
    }

    /// Asserts that the attacker carries a threat-score ban, in the store and in the kernel, and
    /// that the audit log recorded it.
    fn assert_attacker_banned(&self, context: &str) {
        let attacker = ATTACKER.to_string();
        let ban = self
            .agent
            .ban_entry(&attacker)
            .unwrap_or_else(|| panic!("{context}: {attacker} is not banned\n{}", self.agent.log()));
        assert_eq!(ban["origin"], "threat_score", "{context}: {ban}");
        assert!(
            matches!(
                curl(
                    self.attacker.command("curl"),
                    &format!("{}/hello", self.base_url()),
                    2
                ),
                CurlOutcome::TimedOut
            ),
            "{context}: the banned attacker still connects"
        );
        assert!(
            self.agent.dropped_packets(ATTACKER) > 0,
            "{context}: the kernel dropped no packet of the attacker"
        );
        let audited = self.audit_lines().into_iter().any(|record| {
            record["event"] == "ban_applied" && record["source"] == attacker.as_str()
        });
        assert!(audited, "{context}: no ban_applied audit record");
    }
}

fn assert_all_succeeded(outcomes: &[CurlOutcome], context: &str) {
    assert!(
        !outcomes.is_empty(),
        "{context}: the legitimate client made no request"
    );
    let failed: Vec<&CurlOutcome> = outcomes
        .iter()
        .filter(|outcome| **outcome != CurlOutcome::Status(200))
        .collect();
    assert!(
        failed.is_empty(),
        "{context}: {} of {} legitimate requests failed: {failed:?}",
        failed.len(),
        outcomes.len()
    );
}

/// Builds a few hundred paths that scanners probe: admin panels, backups, configuration files and
/// framework endpoints, each under a few prefixes.
fn scan_wordlist() -> Vec<String> {
    let names = [
        "admin",
        "administrator",
        "login",
        "wp-login.php",
        "wp-admin",
        "phpmyadmin",
        "pma",
        "mysql",
        "db",
        "database",
        "backup",
        "backups",
        "backup.zip",
        "backup.tar.gz",
        "dump.sql",
        "db.sql",
        ".git/config",
        ".git/HEAD",
        ".svn/entries",
        ".hg",
        ".env",
        ".env.local",
        ".htaccess",
        ".htpasswd",
        ".DS_Store",
        "config.php",
        "config.json",
        "config.yml",
        "settings.py",
        "web.config",
        "server-status",
        "server-info",
        "phpinfo.php",
        "info.php",
        "test.php",
        "shell.php",
        "cmd.php",
        "upload",
        "uploads",
        "files",
        "tmp",
        "temp",
        "old",
        "new",
        "dev",
        "debug",
        "console",
        "actuator",
        "actuator/env",
        "actuator/health",
        "metrics",
        "swagger.json",
        "swagger-ui.html",
        "api-docs",
        "graphql",
        "graphiql",
        "jenkins",
        "manager/html",
        "solr",
        "cgi-bin/test.cgi",
        "cgi-bin/printenv",
        "xmlrpc.php",
        "wp-config.php.bak",
        "index.php.bak",
        "id_rsa",
        "credentials",
        "secrets.yml",
        "docker-compose.yml",
        "Dockerfile",
        "package.json",
        "composer.json",
        "vendor",
        "node_modules",
        "robots.txt",
        "sitemap.xml",
        "crossdomain.xml",
        "elmah.axd",
        "trace.axd",
        "status",
        "healthz",
    ];
    let prefixes = ["", "app/", "api/", "v1/"];
    prefixes
        .iter()
        .flat_map(|prefix| names.iter().map(move |name| format!("{prefix}{name}")))
        .collect()
}

#[test]
fn path_scanner_is_banned() {
    let Some(bench) = Bench::start("scan") else {
        return;
    };
    let wordlist = scan_wordlist();
    assert!(wordlist.len() >= 300, "{} paths", wordlist.len());
    let wordlist_path: PathBuf = bench.work.0.join("paths.txt");
    std::fs::write(&wordlist_path, wordlist.join("\n")).expect("write the wordlist");
    let scanner = bench.work.0.join("scan.py");
    std::fs::write(&scanner, PATH_SCANNER).expect("write the scanner");
    let legit = bench.legitimate_traffic();

    let started = Instant::now();
    let (stdout, stderr) = bench.attack(
        120,
        "python3",
        &[
            scanner.to_str().expect("UTF-8 path"),
            &bench.base_url(),
            wordlist_path.to_str().expect("UTF-8 path"),
        ],
    );
    let answered: usize = stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the scanner printed no count: {stdout} {stderr}"));
    eprintln!(
        "path scanner: {answered} of {} paths answered before the ban, {:.1} s",
        wordlist.len(),
        started.elapsed().as_secs_f64()
    );

    assert!(answered < 60, "banned only after {answered} responses");
    bench.assert_attacker_banned("path scan");
    assert_all_succeeded(&legit.finish(), "path scan");
}

#[test]
fn hydra_credential_stuffing_is_banned() {
    let Some(bench) = Bench::start("hydra") else {
        return;
    };
    let users: Vec<String> = (0..30).map(|index| format!("user{index:02}")).collect();
    let passwords: Vec<String> = (0..30).map(|index| format!("winter{index:02}!")).collect();
    let users_path = bench.work.0.join("users.txt");
    let passwords_path = bench.work.0.join("passwords.txt");
    std::fs::write(&users_path, users.join("\n")).expect("write the users");
    std::fs::write(&passwords_path, passwords.join("\n")).expect("write the passwords");
    let legit = bench.legitimate_traffic();
    let port = bench.agent.settings.listen.port().to_string();

    let (stdout, stderr) = bench.attack(
        90,
        "hydra",
        &[
            "-L",
            users_path.to_str().expect("UTF-8 path"),
            "-P",
            passwords_path.to_str().expect("UTF-8 path"),
            "-s",
            &port,
            "-t",
            "2",
            "-w",
            "3",
            "-I",
            &ATTACKER_HOST.to_string(),
            "http-post-form",
            "/login:user=^USER^&password=^PASS^:F=invalid credentials",
        ],
    );
    let attempts = bench.upstream.logins();
    eprintln!("hydra: {attempts} login attempts reached the upstream before the ban");

    // Hydra reports a found pair as "[port][module] host: ADDRESS   login: USER   password: ...".
    assert!(
        !stdout.contains("] host: "),
        "hydra found credentials it should not: {stdout} {stderr}"
    );
    // Hydra keeps two attempts in flight, so up to two more may pass while the ban lands.
    assert!(
        attempts <= u64::from(LOGIN_FAILURES_TO_BAN) + 2,
        "{attempts} attempts passed before the ban: {stdout} {stderr}"
    );
    bench.assert_attacker_banned("hydra");
    let bursts = bench
        .audit_lines()
        .into_iter()
        .filter(|record| record["event"] == "auth_failure_burst")
        .count();
    assert!(bursts >= 1, "no auth_failure_burst audit record");
    assert_all_succeeded(&legit.finish(), "hydra");
}

#[test]
fn sqlmap_is_banned_before_confirming() {
    let Some(bench) = Bench::start("sqlmap") else {
        return;
    };
    let traffic = bench.work.0.join("sqlmap-traffic.txt");
    let output_dir = bench.work.0.join("sqlmap");
    let url = format!("{}/item?id=1", bench.base_url());
    let legit = bench.legitimate_traffic();

    let (stdout, stderr) = bench.attack(
        150,
        "sqlmap",
        &[
            "-u",
            &url,
            "--batch",
            "--flush-session",
            "--disable-coloring",
            "--timeout",
            "3",
            "--retries",
            "0",
            "-t",
            traffic.to_str().expect("UTF-8 path"),
            "--output-dir",
            output_dir.to_str().expect("UTF-8 path"),
        ],
    );
    let log = std::fs::read_to_string(&traffic).unwrap_or_default();
    let requests = log.matches("HTTP request [#").count();
    eprintln!("sqlmap: banned after {requests} requests");

    let confirmed = stdout.contains("identified the following injection point")
        || stdout.contains("is vulnerable");
    assert!(
        !confirmed,
        "sqlmap confirmed an injection:\n{stdout}\n{stderr}"
    );
    bench.assert_attacker_banned("sqlmap");
    assert_all_succeeded(&legit.finish(), "sqlmap");
}
