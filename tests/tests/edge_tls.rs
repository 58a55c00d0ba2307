//! TLS termination on loopback with certificates generated at test time: a curl handshake
//! over HTTP/1.1 and HTTP/2, TLS 1.1 rejected, and a certificate reload under load without a
//! failed request.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use integration_tests::edge::{EdgeAgent, RecordingUpstream};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A certificate authority made for one test, and a directory for the files it issues.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
}

impl TestCa {
    fn new(dir: &Path) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "firewall edge test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("generate the CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-sign the CA");
        std::fs::write(dir.join("ca.pem"), issuer.pem()).expect("write the CA certificate");
        Self {
            issuer,
            dir: dir.to_owned(),
        }
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues a certificate for localhost and 127.0.0.1 and writes it and its key to
    /// `cert.pem` and `key.pem`, each through a rename so a reader never sees half a file.
    /// Returns the certificate PEM.
    fn issue_server_certificate(&self, name: &str) -> String {
        let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("server parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("generate the server key");
        let certificate = params
            .signed_by(&key, &self.issuer)
            .expect("sign the server certificate");
        let pem = certificate.pem();
        replace_file(&self.dir.join("cert.pem"), &pem);
        replace_file(&self.dir.join("key.pem"), &key.serialize_pem());
        pem
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn replace_file(path: &Path, contents: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, contents).expect("write a temporary file");
    std::fs::rename(&temporary, path).expect("rename the temporary file");
}

fn tls_agent(name: &str, upstream: &RecordingUpstream) -> (EdgeAgent, TestCa) {
    let dir = std::env::temp_dir().join(format!("fw-edge-tls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the certificate directory");
    let ca = TestCa::new(&dir);
    ca.issue_server_certificate("first");
    let agent = EdgeAgent::start(name, upstream.addr, |config| {
        config.tls.cert_path = Some(dir.join("cert.pem"));
        config.tls.key_path = Some(dir.join("key.pem"));
        config.tls.watch_interval_seconds = 1;
    });
    (agent, ca)
}

fn curl(ca: &TestCa, args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10", "--cacert"])
        .arg(ca.ca_path())
        .args(args)
        .output()
        .expect("run curl")
}

#[test]
fn curl_handshake_over_http11_and_h2() {
    let upstream = RecordingUpstream::start();
    let (agent, ca) = tls_agent("tls-handshake", &upstream);
    let url = format!("https://127.0.0.1:{}/items", agent.addr.port());

    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let output = curl(
            &ca,
            &[flag, "--include", "--write-out", "\n%{http_version}", &url],
        );
        let text = String::from_utf8_lossy(&output.stdout).to_ascii_lowercase();

        assert!(
            output.status.success(),
            "curl {flag} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(text.ends_with(&format!("\n{version}")), "{flag}: {text}");
        assert!(
            text.contains("strict-transport-security: max-age="),
            "{flag}: {text}"
        );
        assert!(
            text.contains("x-content-type-options: nosniff"),
            "{flag}: {text}"
        );
    }
    let recorded = upstream.requests();
    assert_eq!(recorded.len(), 2);
    assert!(
        recorded
            .iter()
            .all(|request| request.header("x-forwarded-proto") == Some("https"))
    );
}

/// Runs `openssl s_client` against `address` with `args` and returns its exit status and output.
fn s_client(address: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new("openssl")
        .args(["s_client", "-connect", address])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn tls11_is_rejected() {
    let upstream = RecordingUpstream::start();
    let (agent, _ca) = tls_agent("tls-old", &upstream);
    let address = format!("127.0.0.1:{}", agent.addr.port());

    // SECLEVEL=0 lets OpenSSL 3 offer TLS 1.1 at all, so a failure is the server's answer.
    let (old_ok, old) = s_client(&address, &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]);
    let (tls12_ok, tls12) = s_client(&address, &["-tls1_2"]);

    assert!(!old_ok, "TLS 1.1 handshake succeeded:\n{old}");
    assert!(old.contains("Cipher is (NONE)"), "{old}");
    assert!(
        old.contains("alert handshake failure") || old.contains("alert protocol version"),
        "{old}"
    );
    assert!(tls12_ok, "TLS 1.2 handshake failed:\n{tls12}");
    assert!(tls12.contains("Protocol  : TLSv1.2"), "{tls12}");
    assert!(upstream.requests().is_empty());
}

#[test]
fn certificate_reload_under_load_fails_nothing() {
    let upstream = RecordingUpstream::start();
    let (agent, ca) = tls_agent("tls-reload", &upstream);
    let url = format!("https://127.0.0.1:{}/load", agent.addr.port());

    // One keep-alive connection spans the reload at 20 requests per second, and separate
    // connections make new handshakes before, during and after it.
    let kept_alive = {
        let urls: Vec<String> = (0..60).map(|_| url.clone()).collect();
        let mut command = Command::new("curl");
        command
            .args(["--silent", "--max-time", "30", "--rate", "20/s", "--cacert"])
            .arg(ca.ca_path())
            .args(["--write-out", "\ncode=%{http_code} %{num_connects}\n"])
            .args(&urls);
        thread::spawn(move || command.output().expect("run curl"))
    };
    let handshakes = {
        let ca_path = ca.ca_path();
        let url = url.clone();
        thread::spawn(move || {
            let started = Instant::now();
            let mut codes = Vec::new();
            while started.elapsed() < Duration::from_secs(5) {
                let output = Command::new("curl")
                    .args(["--silent", "--max-time", "10", "--cacert"])
                    .arg(&ca_path)
                    .args(["--output", "/dev/null", "--write-out", "%{http_code}", &url])
                    .output()
                    .expect("run curl");
                codes.push(String::from_utf8_lossy(&output.stdout).into_owned());
            }
            codes
        })
    };

    thread::sleep(Duration::from_millis(1500));
    let new_pem = ca.issue_server_certificate("second");

    let handshake_codes = handshakes.join().expect("handshake thread");
    let kept = kept_alive.join().expect("keep-alive thread");
    let kept_lines: Vec<String> = String::from_utf8_lossy(&kept.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("code="))
        .map(str::to_owned)
        .collect();
    println!(
        "during the reload: {} new handshakes, {} keep-alive requests",
        handshake_codes.len(),
        kept_lines.len()
    );
    assert!(
        handshake_codes.len() >= 5,
        "too few handshakes: {handshake_codes:?}"
    );
    assert!(
        handshake_codes.iter().all(|code| code == "200"),
        "a new connection failed: {handshake_codes:?}"
    );
    assert_eq!(kept_lines.len(), 60, "{kept_lines:?}");
    assert!(
        kept_lines.iter().all(|line| line.starts_with("200 ")),
        "a keep-alive request failed: {kept_lines:?}"
    );
    let new_connections: u32 = kept_lines
        .iter()
        .filter_map(|line| line.split(' ').nth(1)?.parse::<u32>().ok())
        .sum();
    assert_eq!(
        new_connections, 1,
        "the kept-alive connection was dropped: {kept_lines:?}"
    );

    let (_, served) = s_client(&format!("127.0.0.1:{}", agent.addr.port()), &[]);
    let new_body: String = new_pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let served_body: String = served
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .and_then(|rest| rest.split("-----END CERTIFICATE-----").next())
        .unwrap_or_default()
        .lines()
        .collect();
    assert_eq!(served_body, new_body, "the new certificate is not served");
}

/// `openssl s_server -www` on a loopback port: an HTTPS server that sends a status page for
/// every GET. Killed when dropped.
struct HttpsServer {
    child: std::process::Child,
    port: u16,
}

impl HttpsServer {
    fn start(cert: &Path, key: &Path) -> Self {
        let port = integration_tests::agent::free_port(std::net::Ipv4Addr::LOCALHOST);
        let child = Command::new("openssl")
            .args(["s_server", "-www", "-quiet", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start openssl s_server");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "openssl s_server did not start");
            thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn https_upstream_is_verified_with_ca_file() {
    let dir = std::env::temp_dir().join(format!("fw-edge-upstream-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the certificate directory");
    let ca = TestCa::new(&dir);
    ca.issue_server_certificate("upstream");
    let server = HttpsServer::start(&dir.join("cert.pem"), &dir.join("key.pem"));
    let other_dir = dir.join("other");
    std::fs::create_dir_all(&other_dir).expect("create the second CA directory");
    let other_ca = TestCa::new(&other_dir);
    let upstream_url = format!("https://127.0.0.1:{}", server.port);

    let trusted = EdgeAgent::start(
        "https-upstream",
        "127.0.0.1:9".parse().expect("addr"),
        |config| {
            config.proxy.upstream = Some(upstream_url.parse().expect("valid URL"));
            config.tls.upstream_ca_path = Some(ca.ca_path());
        },
    );
    let untrusted = EdgeAgent::start(
        "https-upstream-other-ca",
        "127.0.0.1:9".parse().expect("addr"),
        |config| {
            config.proxy.upstream = Some(upstream_url.parse().expect("valid URL"));
            config.tls.upstream_ca_path = Some(other_ca.ca_path());
        },
    );
    let get = b"GET / HTTP/1.1\r\nhost: api.example\r\nconnection: close\r\n\r\n";

    let verified = integration_tests::edge::send_raw(trusted.addr, get, Duration::from_secs(10));
    let rejected = integration_tests::edge::send_raw(untrusted.addr, get, Duration::from_secs(10));

    assert_eq!(verified.statuses(), [200], "{}", verified.response);
    assert!(
        verified.response.contains("s_server"),
        "{}",
        verified.response
    );
    assert_eq!(rejected.statuses(), [502], "{}", rejected.response);
}
