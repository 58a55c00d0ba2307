//! Threat detection benchmark, run by `cargo xtask bench threats`: prints Markdown table rows.
//!
//! Detector throughput: every request of a corpus file is split into fields and inspected on
//! one thread, repeatedly for a few seconds, and the rate is request bytes per second. The
//! xtask writes the file as raw HTTP requests, each preceded by its length on a line.
//!
//! Added latency: two proxies run in this process in front of one loopback upstream, one with
//! the threat stage and one with an empty pipeline. A client sends each 4 KB JSON body to
//! both, alternating, one request at a time, and the p50 and p99 of each are compared. The
//! first body repeats its values in every item and every request. The second has values that
//! differ everywhere, so that every one of them is inspected.

/// The agent's allocator, so that the stage is measured as the agent runs it.
#[global_allocator]
static ALLOCATOR: firewall_agent::MiMalloc = firewall_agent::MiMalloc;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use firewall_agent::bans::memory::MemoryBlocklist;
use firewall_agent::detect::{self, RequestParts, ThreatConfig, ThreatPolicy};
use firewall_agent::events::EventSinks;
use firewall_agent::proxy::stages::threat::ThreatStage;
use firewall_agent::proxy::{Pipeline, ProxyServer, ProxyState, Stage, Upstream};
use firewall_agent::shutdown::Shutdown;
use firewall_agent::telemetry::Metrics;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Length of the throughput run.
const THROUGHPUT_RUN: Duration = Duration::from_secs(5);
/// Requests sent to each proxy in the latency run, after the warm-up.
const LATENCY_REQUESTS: usize = 5_000;
/// Requests sent to each proxy before measuring.
const WARM_UP_REQUESTS: usize = 500;

fn main() {
    let corpus_path = std::env::args().nth(1).unwrap_or_default();
    if corpus_path == "--inspect-distinct" {
        let count = std::env::args().nth(2).and_then(|count| count.parse().ok()).unwrap_or(1_000);
        let bodies: Vec<Bytes> = (0..count + WARM_UP_REQUESTS).map(distinct_json_body).collect();
        let (warm_up, measured) = bodies.split_at(WARM_UP_REQUESTS);
        inspect_bodies(warm_up);
        let started = Instant::now();
        let findings = inspect_measured_bodies(measured);
        let elapsed = started.elapsed();
        #[expect(clippy::cast_precision_loss, reason = "body counts are far below 2^52")]
        let micros_per_body = elapsed.as_secs_f64() * 1e6 / measured.len().max(1) as f64;
        println!("{findings} findings, {micros_per_body:.1} µs per body to split and inspect");
        return;
    }
    match std::fs::read(&corpus_path) {
        Ok(corpus) => println!("{}", throughput_row(&split_corpus(&corpus))),
        Err(error) => eprintln!("cannot read the corpus file {corpus_path:?}: {error}"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return;
        }
    };
    for row in runtime.block_on(latency_rows()) {
        println!("{row}");
    }
}

/// Splits the corpus file into requests: a decimal length line, then that many bytes.
fn split_corpus(corpus: &[u8]) -> Vec<&[u8]> {
    let mut requests = Vec::new();
    let mut rest = corpus;
    while let Some(newline) = rest.iter().position(|byte| *byte == b'\n') {
        let Some(length) = std::str::from_utf8(&rest[..newline]).ok().and_then(|text| text.parse::<usize>().ok()) else {
            break;
        };
        let start = newline + 1;
        let Some(request) = rest.get(start..start + length) else {
            break;
        };
        requests.push(request);
        rest = &rest[start + length..];
    }
    requests
}

/// A request split into the parts the detectors read.
struct ParsedRequest {
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Vec<u8>,
}

fn parse_request(raw: &[u8]) -> ParsedRequest {
    let head_end = raw.windows(4).position(|window| window == b"\r\n\r\n").unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let body = raw.get(head_end + 4..).unwrap_or_default().to_vec();
    let mut lines = head.lines();
    let target = lines.next().and_then(|line| line.split(' ').nth(1)).unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (target.to_owned(), None),
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.trim().as_bytes()), HeaderValue::from_str(value.trim()))
        {
            headers.append(name, value);
        }
    }
    ParsedRequest { path, query, headers, body }
}

fn throughput_row(requests: &[&[u8]]) -> String {
    let parsed: Vec<ParsedRequest> = requests.iter().map(|raw| parse_request(raw)).collect();
    let bytes_per_pass: usize = requests.iter().map(|raw| raw.len()).sum();
    let inspected = ThreatConfig::default().inspected_headers();

    let started = Instant::now();
    let mut passes = 0usize;
    let mut findings = 0usize;
    while started.elapsed() < THROUGHPUT_RUN {
        for request in &parsed {
            let fields = detect::extract_fields(RequestParts {
                path: &request.path,
                query: request.query.as_deref(),
                headers: &request.headers,
                inspected_headers: &inspected,
                body: &request.body,
            });
            findings += detect::inspect_fields(&fields).len();
        }
        passes += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    #[expect(clippy::cast_precision_loss, reason = "byte counts are far below 2^52")]
    let megabytes = (bytes_per_pass * passes) as f64 / 1e6;
    #[expect(clippy::cast_precision_loss, reason = "request counts are far below 2^52")]
    let requests_per_second = (requests.len() * passes) as f64 / seconds;
    format!(
        "| detector throughput, one core | {:.1} MB/s ({:.0} requests/s; {} requests, {} bytes per pass, {} findings) |",
        megabytes / seconds,
        requests_per_second,
        requests.len(),
        bytes_per_pass,
        findings / passes.max(1)
    )
}

/// Inspects `bodies` for a profiler. `threat_bench --inspect-distinct COUNT` first inspects 500
/// bodies of distinct values, which builds the lazily compiled detectors. Then it inspects
/// COUNT more in this function, which a profiler selects by name, as with callgrind's
/// `--toggle-collect`.
#[inline(never)]
fn inspect_measured_bodies(bodies: &[Bytes]) -> usize {
    inspect_bodies(bodies)
}

/// Splits and inspects JSON `bodies` without a proxy and returns the number of findings.
fn inspect_bodies(bodies: &[Bytes]) -> usize {
    let headers = HeaderMap::from_iter([(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )]);
    let inspected = ThreatConfig::default().inspected_headers();
    let mut findings = 0;
    for body in bodies {
        let fields = detect::extract_fields(RequestParts {
            path: "/api/v1/orders",
            query: None,
            headers: &headers,
            inspected_headers: &inspected,
            body,
        });
        findings += detect::inspect_fields(&fields).len();
    }
    findings
}

/// Builds a benign JSON body of 4,096 bytes, in the shape of a typical API write: a list of
/// orders that repeat the customer, address and note, as a batch from one customer does.
fn json_body() -> Bytes {
    padded_json_body(|index| {
        serde_json::json!({
            "id": format!("ORD-2026-{index:05}"),
            "customer": {"name": "Mary O'Brien", "email": "mary.obrien@example.com"},
            "address": "Apt. #4, 12 Rue de la Paix; Paris 75002",
            "note": "Please leave it at the door (side entrance) -- thanks!",
            "quantity": index % 7 + 1,
        })
    })
}

/// Builds a benign JSON body of 4,096 bytes whose string values all differ from each other and
/// from those of any other `round`, so that no value is inspected from a cache.
fn distinct_json_body(round: usize) -> Bytes {
    const GIVEN_NAMES: &[&str] = &["Mary", "Liam", "Zoë", "Sean", "Aiko", "Omar", "Inès", "Ravi", "Jo", "Ana"];
    const FAMILY_NAMES: &[&str] = &["O'Brien", "Müller", "D'Angelo", "Nakamura", "García", "Okafor", "Smith-Jones"];
    padded_json_body(|index| {
        let given_name = GIVEN_NAMES[(round + index) % GIVEN_NAMES.len()];
        let family_name = FAMILY_NAMES[(round / 3 + index) % FAMILY_NAMES.len()];
        serde_json::json!({
            "id": format!("ORD-{round}-{index:03}"),
            "customer": {"name": format!("{given_name} {family_name} {round}"), "email": format!("{}.{index}.{round}@example.com", given_name.to_lowercase())},
            "address": format!("Apt. #{index}, {} Rue de la Paix; Paris 750{:02}", round % 97 + 1, index % 20 + 1),
            "note": format!("Leave it with {given_name} at door {index} (side entrance), order {round}"),
            "quantity": index % 7 + 1,
        })
    })
}

/// Puts items from `item` into `{"items": [...], "note": "..."}` until the body is 4,096 bytes,
/// padding with the note.
fn padded_json_body(item: impl Fn(usize) -> serde_json::Value) -> Bytes {
    let mut items = Vec::new();
    let mut index = 0;
    loop {
        items.push(item(index));
        let mut text = serde_json::json!({ "items": items, "note": "" }).to_string();
        if text.len() > 4_096 - 200 {
            if text.len() > 4_096 {
                items.pop();
                text = serde_json::json!({ "items": items, "note": "" }).to_string();
            }
            let padding = 4_096 - text.len();
            let body = serde_json::json!({ "items": items, "note": "x".repeat(padding) }).to_string();
            return Bytes::from(body);
        }
        index += 1;
    }
}

async fn ok_upstream() -> Option<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await.ok()?;
    let address = listener.local_addr().ok()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(|request: Request<Incoming>| async move {
                let _ = request.into_body().collect().await;
                Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            tokio::spawn(
                auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned(),
            );
        }
    });
    Some(address)
}

async fn start_proxy(upstream: SocketAddr, stages: Vec<Arc<dyn Stage>>, shutdown: &Shutdown) -> Option<SocketAddr> {
    let metrics = Arc::new(Metrics::new(Arc::new(MemoryBlocklist::new())));
    let url = format!("http://{upstream}").parse().ok()?;
    let state = ProxyState::new(Pipeline::new(stages), Upstream::new(
            url,
            Duration::from_secs(5),
            firewall_agent::tls::client_config(rustls::RootCertStore::empty()).ok()?,
        ), metrics);
    let server = ProxyServer::bind("127.0.0.1:0".parse().ok()?, Arc::new(state)).await.ok()?;
    let address = server.local_addr();
    tokio::spawn(server.serve(shutdown.listener()));
    Some(address)
}

async fn latency_rows() -> Vec<String> {
    let shutdown = Shutdown::new();
    let Some(upstream) = ok_upstream().await else {
        return vec!["| added latency | upstream did not start |".into()];
    };
    let policy = Arc::new(ThreatPolicy::new(&ThreatConfig::default(), []));
    let stage: Arc<dyn Stage> = Arc::new(ThreatStage::new(policy, EventSinks::new(), Arc::new(|_| false)));
    let (Some(with_stage), Some(without_stage)) = (
        start_proxy(upstream, vec![stage], &shutdown).await,
        start_proxy(upstream, Vec::new(), &shutdown).await,
    ) else {
        return vec!["| added latency | proxies did not start |".into()];
    };

    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let repeated = json_body();
    let mut rows = added_latency_rows(&client, with_stage, without_stage, "4 KB JSON body", |_| repeated.clone()).await;
    rows.extend(
        added_latency_rows(&client, with_stage, without_stage, "4 KB JSON body of distinct values", distinct_json_body).await,
    );
    shutdown.trigger();
    rows
}

/// Sends the body that `body` builds for each round to both proxies, alternating, and returns
/// the rows for the p50 and p99 of each and the difference.
async fn added_latency_rows(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    with_stage: SocketAddr,
    without_stage: SocketAddr,
    label: &str,
    body: impl Fn(usize) -> Bytes,
) -> Vec<String> {
    let mut on = Vec::with_capacity(LATENCY_REQUESTS);
    let mut off = Vec::with_capacity(LATENCY_REQUESTS);
    for round in 0..WARM_UP_REQUESTS + LATENCY_REQUESTS {
        let body = body(round);
        for (proxy, samples) in [(with_stage, &mut on), (without_stage, &mut off)] {
            let Ok(request) = Request::post(format!("http://{proxy}/api/v1/orders"))
                .header("content-type", "application/json")
                .body(Full::new(body.clone()))
            else {
                continue;
            };
            let started = Instant::now();
            let Ok(response) = client.request(request).await else {
                continue;
            };
            let ok = response.status().is_success();
            let _ = response.into_body().collect().await;
            if round >= WARM_UP_REQUESTS && ok {
                samples.push(started.elapsed());
            }
        }
    }

    on.sort_unstable();
    off.sort_unstable();
    let p50 = |samples: &[Duration]| percentile(samples, 50);
    let p99 = |samples: &[Duration]| percentile(samples, 99);
    vec![
        format!(
            "| {label}, threat stage on | p50 {} µs, p99 {} µs ({} requests) |",
            p50(&on), p99(&on), on.len()
        ),
        format!(
            "| {label}, threat stage off | p50 {} µs, p99 {} µs ({} requests) |",
            p50(&off), p99(&off), off.len()
        ),
        format!(
            "| {label}, added by the threat stage | p50 {} µs, p99 {} µs |",
            i128::from(p50(&on)) - i128::from(p50(&off)),
            i128::from(p99(&on)) - i128::from(p99(&off))
        ),
    ]
}

fn percentile(sorted: &[Duration], percent: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = (sorted.len() * percent / 100).min(sorted.len() - 1);
    u64::try_from(sorted[index].as_micros()).unwrap_or(u64::MAX)
}
