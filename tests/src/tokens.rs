//! Test issuers for the token checks: keys of every supported type, token minting with any
//! header and claims, and a JWKS server on loopback.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{Value, json};

/// A 2048-bit RSA private key in PKCS#1 DER (`RSAPrivateKey`), made for these tests with
/// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -outform DER` (OpenSSL 3). ring cannot
/// generate RSA keys, and generating one per run would be slow. It signs nothing but test tokens.
const TEST_RSA_PKCS1_DER: &str = "MIIEoQIBAAKCAQEAtbjoR2i6gYcGW17xuwNzTu42/gNwhjUCAi1fChE2g93ktksCYZZ5+j2L+5ZrkDhgeUZSavL/hG/O+VT4KETMLKn7MtRwTs8pYUf0nfJkM2/CzprhiTxdfiaRPK3vXicBNfdOrUJzFF/potshCCrm6O+6sP5b6d8K+IMzdMRfUC+l9NenYNzyX/BCjzqx8hUEc5X0f0laGOj6qJkuBonUAKO46r+TOdxNFmHC4A34YS7Z2b6jo0flv+I18uL9KsvCmrEghBpFjoB33q6ZmQxd2dGjcmRVVaOL6JovN3KQKfN0J3eMhdbpynvh2X4xFFe/lDZNMkWs/fO5f9b+iKTbqwIDAQABAoIBAAsxobVMYTi7XYvhVFilxMOW7vJEufi6aS5DJziSiN4knAMSqcnjIA5nHilYQbX3kxHFYCxQXacF0CURs9ufKUiTC/M8nNJt9mmUqh/Un5F/j+t0JPJ0Mnoj3Ax11mnhUzTE0CbiEf6uTdEHWIiNQ/4TTle6w2SrpZxbUJ8fvZNN0S7Vb4PgJfkxcebhw5CmZR0Rmjv6tyB2a6aSFQI22+4OqXWm3pZL2+y3eT7H57ef6m7MNWTBlEnpxLmSsxhyhD7lUwP5/eQ0o1sTKfAzYRbzmD6NLqQHj13jT2iMWY5QUNLxf89jPrm9XnuzfoIYyz8oqhiS22BnRxyGSLfP7HkCgYEA/Iv9WVUwly85lWH4UUy9Cfpz/iDFAy6rG8wLy0Ulsv5JGhirQa4kTjgC3k/LUoqvxgkk/ged80C57WhLjaEj6CAqlAsDSE9pllT8CccXf0sl985F8OC4ovpEy8OeqZtidJXn+sa9IY/rdde9hHRX8SCtOKGNTb12oEUJSiz1Nd8CgYEAuDUBN/U/CoG6upmG9mbyiCw67ZTNUlaEYQzDcNB97dcBTTAJheotK2lpO0wEmQ7k6myOeVkEoCekqPi2uDM/blUjkOSTOXoHwMV2oqF9ECApN3VbIVoUvNSLdhrfwJf1sKp2ODbCIzpeLzBc6Wang19wZXc7IjtPiPoIiWvQ27UCfx6U1Rj8N+YW0eJE+szdfga3TVR4o2K/Q/kZvFPhC6+hGzkNw68wZzURk0dYYkachKx2bwRT58yNCfa1qnB8Et0JCB7lNoCLHT4XDG4irbW8Y9yeHdoNXE5f//Ssu4nORx3XCUBU0JI/20Np3IktjXilfFRfO70uNC80LOvOheMCgYEAiE3AXxW71hx0fYsJEN7Qa+6+k/pdi6W1QtLc82dzJ0DHF8SJ52uGjO7tDRGM/WzF+qjlK+mwwIlVECspmVdiglPBg39/aTJg9kWnKWPxVLNXjE/sZNtxKODlaTkthCdth5I69BGgycxw0N4qghKRtWYzlwEI4qWcjrDlDDqZS1kCgYAbAQ842OARRZYQYk3fggf4KBz+z9QCcMwVKj0kgKpxiuI6qSfZgZcF44C1umsSh99J1J4ENqjDvRl9YUgdpn60eHe0i+plJiQBBU1PXcJwppe+yLfGiUGi+3MJfoJy9jTQnm4GbVj9bCzJyIj+zS/N73zWBbGenPgjJHgRwO8PUg==";

/// Returns the base64url encoding without padding of `bytes`.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Returns the current time in whole seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or(0)
}

/// The signing keys of one test issuer: P-256 (`es`), RSA (`rs`) and Ed25519 (`ed`).
pub struct TestKeys {
    es: EcdsaKeyPair,
    rs: RsaKeyPair,
    ed: Ed25519KeyPair,
    rng: SystemRandom,
}

/// Key ids that [`TestKeys::jwks`] publishes.
pub const ES_KID: &str = "es-1";
pub const RS_KID: &str = "rs-1";
pub const PS_KID: &str = "ps-1";
pub const ED_KID: &str = "ed-1";

impl TestKeys {
    /// Generates fresh P-256 and Ed25519 keys and loads the fixed RSA key.
    pub fn generate() -> Self {
        let rng = SystemRandom::new();
        let es_pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .expect("generate a P-256 key");
        let es = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            es_pkcs8.as_ref(),
            &rng,
        )
        .expect("load the P-256 key");
        let ed_pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("generate an Ed25519 key");
        let ed = Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref()).expect("load the Ed25519 key");
        let rs_der = STANDARD.decode(TEST_RSA_PKCS1_DER).expect("decode the RSA key");
        let rs = RsaKeyPair::from_der(&rs_der).expect("load the RSA key");
        Self { es, rs, ed, rng }
    }

    /// Returns the uncompressed P-256 public point.
    pub fn es_point(&self) -> Vec<u8> {
        self.es.public_key().as_ref().to_vec()
    }

    /// Returns the RSA public key as JWK members `n` and `e`.
    fn rsa_members(&self) -> (String, String) {
        let components =
            signature::RsaPublicKeyComponents::<Vec<u8>>::from(self.rs.public());
        (b64(&components.n), b64(&components.e))
    }

    /// Returns the JWK of the P-256 key.
    pub fn es_jwk(&self, kid: &str) -> Value {
        let point = self.es_point();
        json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": b64(&point[1..33]), "y": b64(&point[33..65]),
        })
    }

    /// Returns the JWK of the RSA key, with `alg` when given.
    pub fn rs_jwk(&self, kid: &str, alg: Option<&str>) -> Value {
        let (n, e) = self.rsa_members();
        let mut jwk = json!({ "kty": "RSA", "kid": kid, "use": "sig", "n": n, "e": e });
        if let Some(alg) = alg {
            jwk["alg"] = json!(alg);
        }
        jwk
    }

    /// Returns the JWK of the Ed25519 key.
    pub fn ed_jwk(&self, kid: &str) -> Value {
        json!({
            "kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig",
            "x": b64(self.ed.public_key().as_ref()),
        })
    }

    /// Returns the JWKS document: ES256 under [`ES_KID`], the RSA key as RS256 under [`RS_KID`]
    /// and as PS256 under [`PS_KID`], and EdDSA under [`ED_KID`].
    pub fn jwks(&self) -> Value {
        json!({ "keys": [
            self.es_jwk(ES_KID),
            self.rs_jwk(RS_KID, Some("RS256")),
            self.rs_jwk(PS_KID, Some("PS256")),
            self.ed_jwk(ED_KID),
        ]})
    }

    /// Signs `signing_input` with the algorithm `alg` names. `HS256` uses `hmac_secret`;
    /// `none` returns an empty signature.
    pub fn sign(&self, alg: &str, signing_input: &[u8], hmac_secret: &[u8]) -> Vec<u8> {
        match alg {
            "ES256" => self
                .es
                .sign(&self.rng, signing_input)
                .expect("sign with P-256")
                .as_ref()
                .to_vec(),
            "EdDSA" => self.ed.sign(signing_input).as_ref().to_vec(),
            "RS256" | "PS256" => {
                let padding: &dyn signature::RsaEncoding = if alg == "RS256" {
                    &signature::RSA_PKCS1_SHA256
                } else {
                    &signature::RSA_PSS_SHA256
                };
                let mut signature = vec![0; self.rs.public().modulus_len()];
                self.rs
                    .sign(padding, &self.rng, signing_input, &mut signature)
                    .expect("sign with RSA");
                signature
            }
            "HS256" => {
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, hmac_secret);
                ring::hmac::sign(&key, signing_input).as_ref().to_vec()
            }
            _ => Vec::new(),
        }
    }

    /// Builds a compact JWS of `header` and `claims`, signed with the algorithm in the header's
    /// `alg`.
    pub fn mint(&self, header: &Value, claims: &Value) -> String {
        let alg = header["alg"].as_str().unwrap_or_default();
        self.mint_raw(alg, header.to_string().as_bytes(), claims.to_string().as_bytes())
    }

    /// Builds a compact JWS from raw header and claims bytes, signed with `alg`.
    pub fn mint_raw(&self, alg: &str, header: &[u8], claims: &[u8]) -> String {
        let signing_input = format!("{}.{}", b64(header), b64(claims));
        let signature = self.sign(alg, signing_input.as_bytes(), b"");
        format!("{signing_input}.{}", b64(&signature))
    }
}

/// Returns a header for `alg` and `kid` with `typ: at+jwt`.
pub fn header(alg: &str, kid: &str) -> Value {
    json!({ "alg": alg, "kid": kid, "typ": "at+jwt" })
}

/// Returns valid claims for `issuer` and `audience`, issued now and valid for 10 minutes.
pub fn claims(issuer: &str, audience: &str) -> Value {
    let now = now();
    json!({
        "iss": issuer,
        "sub": "user-42",
        "aud": audience,
        "client_id": "client-7",
        "scope": "orders:read orders:write",
        "iat": now,
        "exp": now + 600,
        "jti": format!("jti-{now}-{}", rand_suffix()),
    })
}

fn rand_suffix() -> u64 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed) as u64
}

/// A JWKS server on 127.0.0.1 that serves a document it holds, over HTTP/1.1, and counts the
/// requests. Stops when dropped.
pub struct JwksServer {
    pub addr: SocketAddr,
    document: Arc<Mutex<String>>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl JwksServer {
    /// Starts serving `document` at every path.
    pub fn start(document: &Value) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the JWKS server");
        let addr = listener.local_addr().expect("read the JWKS server address");
        let document = Arc::new(Mutex::new(document.to_string()));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (served, counter, stopped) =
            (Arc::clone(&document), Arc::clone(&requests), Arc::clone(&stop));
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(stream) = stream {
                    counter.fetch_add(1, Ordering::Relaxed);
                    let body = served.lock().map(|body| body.clone()).unwrap_or_default();
                    serve_once(stream, &body);
                }
            }
        });
        Self {
            addr,
            document,
            requests,
            stop,
        }
    }

    /// Returns the JWKS URL.
    pub fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    /// Replaces the served document.
    pub fn set_document(&self, document: &Value) {
        if let Ok(mut served) = self.document.lock() {
            *served = document.to_string();
        }
    }

    /// Returns the number of connections served.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

/// Reads one request head, responds with `body` and closes the connection.
fn serve_once(stream: TcpStream, body: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(clone) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(clone);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/jwk-set+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut writer = stream;
    let _ = writer.write_all(response.as_bytes());
}

/// A response read by [`http_get`].
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// Returns the first value of the header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Sends one HTTP/1.1 GET to `addr` with the extra `headers` and `Connection: close`, and reads
/// the whole response. Panics on I/O errors or a response that does not parse.
pub fn http_get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> HttpResponse {
    use std::io::Read as _;

    let mut stream = TcpStream::connect(addr).expect("connect to the proxy");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    let mut request = format!("GET {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send the request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    parse_response(&String::from_utf8_lossy(&raw))
}

fn parse_response(raw: &str) -> HttpResponse {
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// An upstream on 127.0.0.1 that responds to every request with 200 and the request head it
/// received as the body, so tests can see which headers the proxy forwarded. Stops when dropped.
pub struct EchoUpstream {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl EchoUpstream {
    pub fn start() -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the upstream");
        let addr = listener.local_addr().expect("read the upstream address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(stream) = stream {
                    thread::spawn(move || echo_connection(stream));
                }
            }
        });
        Self { addr, stop }
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

/// Responds to each request of a keep-alive connection with its head. Requests carry no body
/// here (GET only).
fn echo_connection(stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(clone) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(clone);
    let mut writer = stream;
    loop {
        let mut head = String::new();
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" || line == "\n" => break,
                Ok(_) => head.push_str(&line),
            }
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{head}",
            head.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
