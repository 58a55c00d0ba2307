//! `fixed-rate-client`: an open-loop HTTP/1.1 load generator for `cargo xtask bench http`.
//! It sends `GET` requests at a fixed rate, whatever the server's response time, and prints
//! the latency percentiles.
//!
//! Usage: `fixed-rate-client URL --rate PER_SECOND --seconds N [--ca CERT_PEM]`. `URL` is
//! `http://` or `https://` with an IP address and port. `--ca` names the certificate that
//! signs an `https://` server's certificate.
//!
//! A closed-loop tool such as wrk sends the next request only when a response arrives, so at
//! saturation its percentiles measure the queue in front of the server. Here every request
//! has a due time of `start + i / rate` and is sent then on an idle keep-alive connection
//! without waiting for earlier responses, so that a rate well below saturation measures the
//! time one request takes. The latency of a request runs from the moment it is sent to the
//! last byte of the response body. tokio's timer wakes the sender up to about a millisecond
//! after the due time, so the output also gives the 99th percentile of that send delay: a
//! large value means the client, not the server, fell behind.
//!
//! The run is bounded: `rate * seconds` measured requests after a warm-up of one second, at
//! most [`MAX_CONNECTIONS`] connections, and [`REQUEST_TIMEOUT`] per request. The output is
//! one line, `requests=N errors=N p50_ms=X p99_ms=X max_ms=X send_delay_p99_ms=X`, and the
//! exit status is not 0 when a request failed.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Upper bound on open connections. At the rates the bench uses a few suffice. A request that
/// finds all of them busy waits for one, and the wait counts as send delay.
const MAX_CONNECTIONS: usize = 64;
/// Connections opened before the first request, so that no measured request waits for a
/// TCP or TLS handshake.
const INITIAL_CONNECTIONS: usize = 4;
/// Time one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests sent before measuring, in seconds at the requested rate.
const WARM_UP_SECONDS: u64 = 1;
/// Largest rate and duration accepted, so that a typo cannot start an unbounded flood.
const MAX_RATE: u64 = 20_000;
const MAX_SECONDS: u64 = 60;

/// Parsed command line.
struct Options {
    target: Target,
    rate: u64,
    seconds: u64,
}

/// Where requests go and how to connect there.
struct Target {
    address: SocketAddr,
    host: String,
    path: String,
    tls: Option<tokio_rustls::TlsConnector>,
}

fn main() -> Result<()> {
    let options = parse_options()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the tokio runtime")?;
    let local = tokio::task::LocalSet::new();
    let summary = local.block_on(&runtime, run(options))?;
    println!(
        "requests={} errors={} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} send_delay_p99_ms={:.3}",
        summary.requests,
        summary.errors,
        summary.p50_ms,
        summary.p99_ms,
        summary.max_ms,
        summary.send_delay_p99_ms
    );
    if let Some(error) = summary.first_error {
        bail!(
            "{} of {} requests failed, the first with: {error}",
            summary.errors,
            summary.requests
        );
    }
    Ok(())
}

fn parse_options() -> Result<Options> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .context("missing the URL, such as http://127.0.0.1:8080/items")?;
    let mut rate = None;
    let mut seconds = None;
    let mut ca: Option<PathBuf> = None;
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--rate" => rate = Some(value()?.parse::<u64>().context("invalid --rate")?),
            "--seconds" => seconds = Some(value()?.parse::<u64>().context("invalid --seconds")?),
            "--ca" => ca = Some(value()?.into()),
            other => bail!("unknown argument `{other}`: expected --rate, --seconds or --ca"),
        }
    }
    let rate = rate.context("missing --rate")?;
    let seconds = seconds.context("missing --seconds")?;
    if !(1..=MAX_RATE).contains(&rate) {
        bail!("--rate {rate} is out of range: use 1 to {MAX_RATE} requests per second");
    }
    if !(1..=MAX_SECONDS).contains(&seconds) {
        bail!("--seconds {seconds} is out of range: use 1 to {MAX_SECONDS}");
    }
    Ok(Options {
        target: parse_target(&url, ca)?,
        rate,
        seconds,
    })
}

fn parse_target(url: &str, ca: Option<PathBuf>) -> Result<Target> {
    let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        bail!("invalid URL `{url}`: expected http:// or https://");
    };
    let (authority, path) = rest.find('/').map_or((rest, "/"), |at| rest.split_at(at));
    let address: SocketAddr = authority
        .parse()
        .with_context(|| format!("invalid address `{authority}` in `{url}`: expected IP:PORT"))?;
    let tls = match (https, ca) {
        (false, _) => None,
        (true, None) => bail!("an https:// URL needs --ca with the server's CA certificate"),
        (true, Some(ca)) => Some(tls_connector(&ca)?),
    };
    Ok(Target {
        address,
        host: authority.to_owned(),
        path: path.to_owned(),
        tls,
    })
}

fn tls_connector(ca: &std::path::Path) -> Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("failed to read {}", ca.display()))?
    {
        let certificate =
            certificate.with_context(|| format!("invalid certificate in {}", ca.display()))?;
        roots
            .add(certificate)
            .with_context(|| format!("unusable CA certificate in {}", ca.display()))?;
    }
    let provider = firewall_agent::tls::crypto_provider();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("failed to set the TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Latency percentiles of the measured requests.
struct Summary {
    requests: usize,
    errors: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    send_delay_p99_ms: f64,
    first_error: Option<String>,
}

/// Connections and results shared by the tasks of the single-threaded runtime.
#[derive(Default)]
struct Shared {
    idle: Vec<SendRequest<Empty<Bytes>>>,
    /// Open connections, idle or leased.
    open: usize,
    /// Signalled when a leased connection is released or closed.
    released: Rc<tokio::sync::Notify>,
    latencies: Vec<Duration>,
    /// How late each measured request was sent after its due time.
    send_delays: Vec<Duration>,
    errors: usize,
    /// The first failure, reported with the totals.
    first_error: Option<String>,
}

impl Shared {
    fn record_error(&mut self, error: String) {
        self.errors += 1;
        self.first_error.get_or_insert(error);
    }
}

async fn run(options: Options) -> Result<Summary> {
    let target = Rc::new(options.target);
    let shared = Rc::new(RefCell::new(Shared::default()));
    for _ in 0..INITIAL_CONNECTIONS {
        let sender = connect(&target)
            .await
            .with_context(|| format!("failed to connect to {}", target.address))?;
        let mut state = shared.borrow_mut();
        state.idle.push(sender);
        state.open += 1;
    }

    let period = Duration::from_secs_f64(1.0 / options.rate as f64);
    let warm_up = options.rate * WARM_UP_SECONDS;
    let total = warm_up + options.rate * options.seconds;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for index in 0..total {
        let due = start + period.mul_f64(index as f64);
        tokio::time::sleep_until(due).await;
        let measured = index >= warm_up;
        let (target, shared) = (Rc::clone(&target), Rc::clone(&shared));
        tasks.push(tokio::task::spawn_local(async move {
            let result = tokio::time::timeout(REQUEST_TIMEOUT, request(&target, &shared)).await;
            let mut state = shared.borrow_mut();
            match result {
                Ok(Ok(sent)) if measured => {
                    state.latencies.push(sent.elapsed());
                    state.send_delays.push(sent.saturating_duration_since(due));
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => state.record_error(format!("{error:#}")),
                Err(_) => state.record_error(format!(
                    "no response within {} s",
                    REQUEST_TIMEOUT.as_secs()
                )),
            }
        }));
    }
    for task in tasks {
        task.await.context("a request task panicked")?;
    }

    let mut state = shared.borrow_mut();
    let errors = state.errors;
    state.latencies.sort_unstable();
    state.send_delays.sort_unstable();
    Ok(Summary {
        requests: state.latencies.len() + errors,
        errors,
        p50_ms: percentile_ms(&state.latencies, 0.50),
        p99_ms: percentile_ms(&state.latencies, 0.99),
        max_ms: percentile_ms(&state.latencies, 1.0),
        send_delay_p99_ms: percentile_ms(&state.send_delays, 0.99),
        first_error: state.first_error.take(),
    })
}

/// Returns the nearest-rank percentile of `sorted` in milliseconds, NaN when it is empty.
fn percentile_ms(sorted: &[Duration], fraction: f64) -> f64 {
    let rank = ((sorted.len() as f64 * fraction).ceil() as usize).max(1);
    sorted
        .get(rank - 1)
        .map_or(f64::NAN, |value| value.as_secs_f64() * 1000.0)
}

/// Sends one request and reads the whole response body. Returns the instant the request was
/// sent, which is after any wait for a connection.
async fn request(target: &Rc<Target>, shared: &Rc<RefCell<Shared>>) -> Result<Instant> {
    let mut lease = Lease::acquire(target, shared).await?;
    let request = http::Request::get(target.path.as_str())
        .header(http::header::HOST, target.host.as_str())
        .body(Empty::<Bytes>::new())
        .context("failed to build the request")?;
    let sender = lease
        .sender
        .as_mut()
        .context("the lease has no connection")?;
    sender.ready().await?;
    let sent = Instant::now();
    let response = sender.send_request(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    if !status.is_success() {
        bail!("{} responded {status}", target.address);
    }
    lease.release();
    Ok(sent)
}

/// A connection taken for one request. It goes back to the idle list only through
/// [`Lease::release`], after a complete response. Dropped otherwise (on an error or a
/// timeout), it is closed and no longer counts toward [`MAX_CONNECTIONS`].
struct Lease {
    /// Always `Some` until dropped.
    sender: Option<SendRequest<Empty<Bytes>>>,
    shared: Rc<RefCell<Shared>>,
    released: bool,
}

impl Lease {
    /// Takes an idle connection, opens one while fewer than [`MAX_CONNECTIONS`] are open, or
    /// waits for one to become idle. The wait and the connect count toward the send delay,
    /// not the latency.
    async fn acquire(target: &Rc<Target>, shared: &Rc<RefCell<Shared>>) -> Result<Self> {
        loop {
            let released = {
                let mut state = shared.borrow_mut();
                while let Some(sender) = state.idle.pop() {
                    // A server may close a keep-alive connection after some requests, as
                    // nginx does after 1000.
                    if sender.is_closed() {
                        state.open -= 1;
                        continue;
                    }
                    return Ok(Self::new(sender, shared));
                }
                if state.open < MAX_CONNECTIONS {
                    state.open += 1;
                    None
                } else {
                    Some(Rc::clone(&state.released))
                }
            };
            match released {
                None => {
                    return match connect(target).await {
                        Ok(sender) => Ok(Self::new(sender, shared)),
                        Err(error) => {
                            shared.borrow_mut().open -= 1;
                            Err(error)
                        }
                    };
                }
                Some(released) => released.notified().await,
            }
        }
    }

    fn new(sender: SendRequest<Empty<Bytes>>, shared: &Rc<RefCell<Shared>>) -> Self {
        Self {
            sender: Some(sender),
            shared: Rc::clone(shared),
            released: false,
        }
    }

    fn release(mut self) {
        self.released = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut state = self.shared.borrow_mut();
        match self.sender.take() {
            Some(sender) if self.released && !sender.is_closed() => state.idle.push(sender),
            _ => state.open -= 1,
        }
        state.released.notify_one();
    }
}

/// Opens a keep-alive HTTP/1.1 connection, over TLS for an `https://` target.
async fn connect(target: &Target) -> Result<SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(target.address).await?;
    stream.set_nodelay(true)?;
    match &target.tls {
        None => handshake(stream).await,
        Some(connector) => {
            let name = ServerName::IpAddress(target.address.ip().into());
            let stream = connector.connect(name, stream).await?;
            handshake(stream).await
        }
    }
}

async fn handshake<S>(stream: S) -> Result<SendRequest<Empty<Bytes>>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::task::spawn_local(async move {
        // The connection ends when the server closes it or the sender is dropped. Either way
        // the request that used it has already recorded its outcome.
        let _ = connection.await;
    });
    Ok(sender)
}
