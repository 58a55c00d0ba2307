//! `bare-proxy`: a reverse proxy built from the agent's stack (tokio, hyper, rustls, mimalloc)
//! with no checks at all, for `cargo xtask bench http`. Its rows show the cost of the stack
//! itself, so the agent's rows can be split into what the stack costs and what its checks
//! cost.
//!
//! Usage: `bare-proxy UPSTREAM_ADDR [--tls CERT KEY]`. Prints its port on the first line of
//! stdout and serves until stdin is closed, like `edge-bench-agent`.
//!
//! It runs one single-threaded runtime per core, as the agent's workers do, each accepting on
//! its own `SO_REUSEPORT` socket. Each client connection gets one upstream HTTP/1.1 connection,
//! opened again when the upstream closes it. It forwards requests and responses unchanged but
//! for the response's `Connection` header: no forwarding headers, no limits, no checks. Never put it in front of anything.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use integration_tests::bench;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsAcceptor;

/// The agent's allocator, so that the floor and the agent compare like for like.
#[global_allocator]
static ALLOCATOR: firewall_agent::MiMalloc = firewall_agent::MiMalloc;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let upstream = bench::upstream_arg(&mut args)?;
    let tls = match (args.next().as_deref(), args.next(), args.next()) {
        (None, _, _) => None,
        (Some("--tls"), Some(cert), Some(key)) => Some(acceptor(&cert, &key)?),
        _ => bail!("unexpected arguments: expected nothing or --tls CERT KEY"),
    };

    // tokio needs a reactor to create listening sockets. Each thread registers its listener
    // with its own runtime afterwards.
    let setup = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("failed to start a runtime")?;
    let _entered = setup.enter();
    // The first socket picks the port, and the others bind the same one.
    let first = reuseport_socket(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let addr = first
        .local_addr()
        .context("failed to read the bound port")?;
    let mut sockets = vec![first];
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    for _ in 1..threads {
        sockets.push(reuseport_socket(addr)?);
    }
    for socket in sockets {
        let tls = tls.clone();
        std::thread::Builder::new()
            .name("bare-proxy".into())
            .spawn(move || serve_thread(socket, upstream, tls))
            .context("failed to start a proxy thread")?;
    }
    bench::announce_port(addr.port())?;
    // The threads end with the process.
    bench::wait_for_stdin_close();
    Ok(())
}

fn acceptor(cert: &str, key: &str) -> Result<TlsAcceptor> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("failed to open {cert}"))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("failed to read the certificates in {cert}"))?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("failed to read {key}"))?;
    let mut config =
        rustls::ServerConfig::builder_with_provider(firewall_agent::tls::crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("the crypto provider supports neither TLS 1.2 nor 1.3")?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .context("the certificate and key do not form a valid pair")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Binds a listening socket with `SO_REUSEPORT`, so that every thread accepts on the same port.
fn reuseport_socket(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let listen = || -> std::io::Result<std::net::TcpListener> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        socket.listen(1024)?.into_std()
    };
    listen().with_context(|| format!("failed to listen on {addr}"))
}

fn serve_thread(listener: std::net::TcpListener, upstream: SocketAddr, tls: Option<TlsAcceptor>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bare-proxy: failed to start a runtime: {error}");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("bare-proxy: failed to register the listener: {error}");
                return;
            }
        };
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let tls = tls.clone();
            tokio::task::spawn_local(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            serve_connection(stream, upstream).await;
                        }
                    }
                    None => serve_connection(stream, upstream).await,
                }
            });
        }
    });
}

/// Serves one client connection over one upstream connection at a time.
async fn serve_connection<S>(stream: S, upstream: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let sender: Rc<RefCell<Option<SendRequest<Incoming>>>> = Rc::default();
    let service = hyper::service::service_fn(move |request| {
        let sender = Rc::clone(&sender);
        async move {
            let current = sender.borrow_mut().take();
            let mut ready = match current {
                Some(ready) if !ready.is_closed() => ready,
                _ => connect(upstream).await?,
            };
            if ready.ready().await.is_err() {
                // The upstream closed the connection between two requests.
                ready = connect(upstream).await?;
                ready.ready().await?;
            }
            let response = ready.send_request(request).await;
            *sender.borrow_mut() = Some(ready);
            let mut response = response?;
            // The upstream's `Connection: close` ends only the upstream connection.
            response.headers_mut().remove(hyper::header::CONNECTION);
            Ok::<_, anyhow::Error>(response)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn connect(upstream: SocketAddr) -> Result<SendRequest<Incoming>> {
    let stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::task::spawn_local(async move {
        let _ = connection.await;
    });
    Ok(sender)
}
