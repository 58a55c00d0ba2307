//! Token benchmark: verifications per second on one core for ES256 and RS256, cold and through
//! the verified-token cache. A cold verification parses the token and checks its signature.
//! PyJWT verifies the same tokens on the same machine as the reference. The benchmark also
//! measures the latency that token checks add to a request proxied on loopback. It prints
//! Markdown table rows, which `cargo xtask bench tokens` writes into BENCHMARKS.md.
//!
//! Every run is bounded by a fixed duration or request count. All traffic stays on 127.0.0.1.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use firewall_agent::bans::memory::MemoryBlocklist;
use firewall_agent::config::Config;
use firewall_agent::daemon::Agent;
use firewall_agent::store::Store;
use firewall_agent::tokens::{
    Algorithm, IssuerConfig, KeySource, NoRevocation, StaticKeySource, TokenMetrics,
    TokenVerifier, TokensConfig,
};
use integration_tests::tokens::{
    ES_KID, EchoUpstream, JwksServer, RS_KID, TestKeys, claims, header,
};
use serde_json::{Value, json};

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "orders-api";
/// Distinct tokens minted per algorithm.
const TOKENS: usize = 1_000;
/// Time each verification rate is measured for.
const MEASURE: Duration = Duration::from_secs(3);
/// Requests sent per latency series.
const REQUESTS: usize = 2_000;
/// The interpreter that Debian's python3-jwt and python3-cryptography are installed for.
const PYTHON: &str = "/usr/bin/python3";

/// Verifies every token of a file with PyJWT for a fixed time per algorithm and prints the
/// rates as JSON. The keys come from the JWKS through `PyJWK`, and the checks match the
/// agent's: signature, `exp`, `iss`, `aud` and the presence of `exp`, `iat`, `iss` and `aud`.
const PYJWT_SCRIPT: &str = r#"
import json, sys, time
import jwt
from jwt import PyJWK

data = json.load(open(sys.argv[1]))
keys = {jwk["kid"]: PyJWK(jwk).key for jwk in data["jwks"]["keys"]}
seconds = data["seconds"]
rates = {"version": jwt.__version__}
for alg, kid in (("ES256", "es-1"), ("RS256", "rs-1")):
    tokens = data["tokens"][alg]
    key = keys[kid]
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for token in tokens[:100]:
            jwt.decode(token, key=key, algorithms=[alg], audience=data["audience"],
                       issuer=data["issuer"], options={"require": ["exp", "iat", "iss", "aud"]})
        count += 100
    rates[alg] = count / (time.perf_counter() - start)
print(json.dumps(rates))
"#;

fn main() -> Result<()> {
    let keys = TestKeys::generate();
    let es_tokens = mint_many(&keys, "ES256", ES_KID);
    let rs_tokens = mint_many(&keys, "RS256", RS_KID);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to build the runtime")?;

    let mut ours = HashMap::new();
    for (alg, tokens) in [("ES256", &es_tokens), ("RS256", &rs_tokens)] {
        let cold = verifier(&keys, 0)?;
        let cached = verifier(&keys, 2 * TOKENS)?;
        let cold_rate = runtime.block_on(verifications_per_second(&cold, tokens))?;
        let cached_rate = runtime.block_on(verifications_per_second(&cached, tokens))?;
        ours.insert(alg, (cold_rate, cached_rate));
    }
    let pyjwt = pyjwt_rates(&keys, &es_tokens, &rs_tokens)?;

    for alg in ["ES256", "RS256"] {
        let (cold, cached) = ours[alg];
        let reference = pyjwt[alg].as_f64().unwrap_or(0.0);
        println!(
            "| {alg} verifications/s, one core, cold | {cold:.0} | {reference:.0} | {:.1}x |",
            cold / reference
        );
        println!(
            "| {alg} verifications/s, one core, cached token | {cached:.0} | {reference:.0} | {:.1}x |",
            cached / reference
        );
    }

    let latency = proxy_latency(&keys)?;
    for row in latency {
        println!("{row}");
    }
    eprintln!(
        "PyJWT {} with cryptography, run by {PYTHON}",
        pyjwt["version"].as_str().unwrap_or("unknown")
    );
    Ok(())
}

fn mint_many(keys: &TestKeys, alg: &str, kid: &str) -> Vec<String> {
    (0..TOKENS)
        .map(|_| keys.mint(&header(alg, kid), &claims(ISSUER, AUDIENCE)))
        .collect()
}

fn verifier(keys: &TestKeys, cache_entries: usize) -> Result<TokenVerifier> {
    let config = TokensConfig {
        cache_entries,
        issuers: vec![IssuerConfig {
            issuer: ISSUER.into(),
            audiences: vec![AUDIENCE.into()],
            jwks_url: "http://127.0.0.1:9/unused".into(),
            algorithms: vec![Algorithm::ES256, Algorithm::RS256],
            accept_typ_jwt: false,
            leeway_seconds: 60,
            jwks_ttl_seconds: 300,
            jwks_cooldown_seconds: 30,
        }],
        ..TokensConfig::default()
    };
    let source = StaticKeySource::from_document(keys.jwks().to_string().as_bytes())?;
    let sources = HashMap::from([(ISSUER.to_owned(), Arc::new(source) as Arc<dyn KeySource>)]);
    Ok(TokenVerifier::new(
        &config,
        sources,
        Arc::new(NoRevocation),
        TokenMetrics::default(),
    )?)
}

/// Verifies `tokens` round-robin for [`MEASURE`] on the current thread.
async fn verifications_per_second(verifier: &TokenVerifier, tokens: &[String]) -> Result<f64> {
    // One pass first: fills the cache and loads the keys, so neither is in the timed part.
    for token in tokens {
        if let Err(error) = verifier.verify(token).await {
            bail!("a benchmark token was rejected: {error}");
        }
    }
    let start = Instant::now();
    let mut count = 0u64;
    while start.elapsed() < MEASURE {
        for token in tokens.iter().take(100) {
            let verified = verifier.verify(token).await;
            std::hint::black_box(&verified);
        }
        count += 100;
    }
    Ok(count as f64 / start.elapsed().as_secs_f64())
}

fn pyjwt_rates(keys: &TestKeys, es_tokens: &[String], rs_tokens: &[String]) -> Result<Value> {
    let dir = std::env::temp_dir().join(format!("fw-bench-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).context("failed to create a temporary directory")?;
    let input = dir.join("tokens.json");
    let script = dir.join("pyjwt_bench.py");
    let data = json!({
        "jwks": keys.jwks(),
        "tokens": { "ES256": es_tokens, "RS256": rs_tokens },
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "seconds": MEASURE.as_secs_f64(),
    });
    std::fs::write(&input, data.to_string()).context("failed to write the tokens")?;
    std::fs::write(&script, PYJWT_SCRIPT).context("failed to write the PyJWT script")?;
    let output = run_python(&script, &input);
    let _ = std::fs::remove_dir_all(&dir);
    output
}

fn run_python(script: &Path, input: &Path) -> Result<Value> {
    let output = Command::new(PYTHON)
        .arg(script)
        .arg(input)
        .output()
        .with_context(|| format!("failed to run {PYTHON}"))?;
    if !output.status.success() {
        bail!(
            "the PyJWT benchmark failed with {}; install python3-jwt and python3-cryptography:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout).context("the PyJWT benchmark printed no JSON")
}

/// Measures request latency through an in-process agent on loopback, in front of an echo
/// upstream: a route without token checks, a route with one repeated token (cache hits), and
/// the same route with a new token on every request (full verification).
fn proxy_latency(keys: &TestKeys) -> Result<Vec<String>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("failed to build the agent runtime")?;
    let jwks = JwksServer::start(&keys.jwks());
    let upstream = EchoUpstream::start();
    let dir = std::env::temp_dir().join(format!("fw-bench-agent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).context("failed to create the agent directory")?;
    let text = agent_config(&dir, upstream.addr, &jwks.url());
    let config_path = dir.join("agent.toml");
    let config = Config::parse(&text, &config_path)?;
    let store = Store::open(&dir.join("state.redb"))?;
    let agent = runtime.block_on(async {
        Agent::new(config, store, Arc::new(MemoryBlocklist::new()))
            .bind()
            .await
            .map(|bound| bound.start())
    })?;
    let proxy = agent.proxy_addr();

    let es_tokens = mint_many(keys, "ES256", ES_KID);
    let hot = format!("Bearer {}", es_tokens[0]);
    let mut client = KeepAliveClient::connect(proxy)?;
    let _ = client.series("/public", |_| None, 200)?;
    let public = client.series("/public", |_| None, REQUESTS)?;
    let cached = client.series("/orders/1", |_| Some(hot.clone()), REQUESTS)?;
    let cold = client.series(
        "/orders/1",
        |index| Some(format!("Bearer {}", es_tokens[1 + index % (TOKENS - 1)])),
        TOKENS - 1,
    )?;
    drop(client);
    runtime.block_on(agent.stop());
    let _ = std::fs::remove_dir_all(&dir);

    let row = |name: &str, series: &Latency| {
        format!(
            "| request latency, {name} (p50 / p99) | {:.0} / {:.0} µs, +{:.0} µs at p50 | | |",
            series.p50, series.p99, series.p50 - public.p50
        )
    };
    Ok(vec![
        format!(
            "| request latency, route without token checks (p50 / p99) | {:.0} / {:.0} µs | | |",
            public.p50, public.p99
        ),
        row("ES256 token from the cache", &cached),
        row("new ES256 token on every request", &cold),
    ])
}

fn agent_config(dir: &Path, upstream: SocketAddr, jwks_url: &str) -> String {
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
upstream = "http://{upstream}"

[xdp]
interfaces = ["lo"]

[rate_limit]
requests = 1000000

[admin]
socket_path = "{dir}/admin.sock"

[metrics]
listen = "127.0.0.1:0"

[store]
path = "{dir}/state.redb"

[[tokens.issuers]]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
jwks_url = "{jwks_url}"

[[routes]]
path = "/orders/{{*rest}}"
[routes.auth]
scopes = ["orders:read"]
"#,
        dir = dir.display()
    )
}

/// Latency percentiles of one series, in microseconds.
struct Latency {
    p50: f64,
    p99: f64,
}

/// One HTTP/1.1 keep-alive connection, so every request measures the proxy and not a TCP
/// handshake.
struct KeepAliveClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl KeepAliveClient {
    fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr).context("failed to connect to the proxy")?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    fn series(
        &mut self,
        path: &str,
        authorization: impl Fn(usize) -> Option<String>,
        count: usize,
    ) -> Result<Latency> {
        let mut samples = Vec::with_capacity(count);
        for index in 0..count {
            let mut request = format!("GET {path} HTTP/1.1\r\nhost: bench\r\n");
            if let Some(value) = authorization(index) {
                request.push_str(&format!("authorization: {value}\r\n"));
            }
            request.push_str("\r\n");
            let start = Instant::now();
            self.writer.write_all(request.as_bytes())?;
            let status = self.read_response()?;
            samples.push(start.elapsed().as_secs_f64() * 1e6);
            if status != 200 {
                bail!("{path} answered {status} during the benchmark");
            }
        }
        samples.sort_by(f64::total_cmp);
        let at = |quantile: f64| samples[((samples.len() - 1) as f64 * quantile) as usize];
        Ok(Latency {
            p50: at(0.5),
            p99: at(0.99),
        })
    }

    /// Reads one response and returns its status; the body is read by `content-length`.
    fn read_response(&mut self) -> Result<u16> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .context("the proxy sent no status line")?;
        let mut length = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok(status)
    }
}
