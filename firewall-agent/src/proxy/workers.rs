//! Proxy worker threads. Each runs a single-threaded tokio runtime with its own upstream
//! connection pool, so that a client connection, the requests on it and the upstream
//! connections they use are all driven on one thread. On a multi-threaded runtime the pooled
//! client's connection task and the request often ran on different threads, and every
//! request then paid for a cross-thread wakeup.
//!
//! The listener stays on the caller's runtime: it accepts, applies the per-client connection
//! limit and hands each connection to the worker with the fewest open connections.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use super::connections::ConnectionPermit;
use super::upstream_pool::IDLE_SWEEP_INTERVAL;
use super::{ClientConnection, DRAIN_TIMEOUT, HttpConfig, ProxyState, Upstream};
use crate::telemetry::ErrorChain;

/// Largest accepted `proxy.worker_threads`.
pub const MAX_WORKER_THREADS: usize = 256;

/// Returns the number of worker threads to start for a configured `count`: the count itself,
/// or one per CPU core for 0.
pub fn worker_count(count: usize) -> usize {
    if count > 0 {
        return count.min(MAX_WORKER_THREADS);
    }
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Settings that every worker needs to serve a connection, shared by all of them.
#[derive(Clone)]
pub(super) struct ConnectionSettings {
    pub state: Arc<ProxyState>,
    pub builder: Arc<auto::Builder<TokioExecutor>>,
    pub http: HttpConfig,
    pub tls: Option<TlsAcceptor>,
}

/// A connection accepted by the listener, on its way to a worker.
struct Accepted {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    client: IpAddr,
    permit: ConnectionPermit,
    load: LoadGuard,
}

/// Counts one open connection of a worker until dropped.
struct LoadGuard(Arc<AtomicUsize>);

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The listener's side of one worker.
struct WorkerHandle {
    sender: mpsc::UnboundedSender<Accepted>,
    open: Arc<AtomicUsize>,
    done: oneshot::Receiver<()>,
}

/// The running workers of one proxy listener.
pub(super) struct Workers {
    workers: Vec<WorkerHandle>,
    /// Index at which the search for the least loaded worker starts, so that ties rotate.
    next: usize,
}

impl Workers {
    /// Starts `count` workers (at least one). A worker whose thread or runtime cannot be
    /// started runs on the caller's runtime instead, so the proxy still serves.
    pub fn start(count: usize, settings: &ConnectionSettings) -> Self {
        let workers = (0..count.max(1))
            .map(|index| start_worker(index, settings))
            .collect();
        Self { workers, next: 0 }
    }

    /// Hands an accepted connection to the worker with the fewest open connections. The
    /// permit is released when the worker closes the connection.
    pub fn dispatch(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        client: IpAddr,
        permit: ConnectionPermit,
    ) {
        // The worker registers the socket with its own runtime, so it leaves this one here.
        // tokio returns it in non-blocking mode.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%peer, error = %ErrorChain(&error), "failed to hand a proxy connection to a worker");
                return;
            }
        };
        let index = self.least_loaded();
        self.next = (index + 1) % self.workers.len();
        let worker = &self.workers[index];
        worker.open.fetch_add(1, Ordering::Relaxed);
        let accepted = Accepted {
            stream,
            peer,
            client,
            permit,
            load: LoadGuard(Arc::clone(&worker.open)),
        };
        if worker.sender.send(accepted).is_err() {
            // Only a worker that stopped early gets here; dropping the socket closes it.
            tracing::warn!(%peer, worker = index, "proxy worker stopped, closing the connection");
        }
    }

    fn least_loaded(&self) -> usize {
        let count = self.workers.len();
        (0..count)
            .map(|offset| (self.next + offset) % count)
            .min_by_key(|&index| self.workers[index].open.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Stops handing out connections and waits until every worker has drained its own.
    pub async fn shutdown(self) {
        let mut done = Vec::with_capacity(self.workers.len());
        for worker in self.workers {
            drop(worker.sender);
            done.push(worker.done);
        }
        for worker in done {
            // An error means the worker's thread ended without reporting, which also ends
            // its connections.
            let _ = worker.await;
        }
    }
}

/// Starts one worker on its own thread, or on the caller's runtime when the thread or its
/// runtime cannot be started.
fn start_worker(index: usize, settings: &ConnectionSettings) -> WorkerHandle {
    let (sender, receiver) = mpsc::unbounded_channel();
    let (done_sender, done) = oneshot::channel();
    let handle = WorkerHandle {
        sender,
        open: Arc::new(AtomicUsize::new(0)),
        done,
    };
    let worker = Worker::new(settings);
    let fallback = tokio::runtime::Handle::current();

    // The thread gets the worker only once it runs, so that a failed spawn leaves the worker
    // here for the fallback.
    let (start_sender, start_receiver) = std::sync::mpsc::channel::<StartedWorker>();
    let spawned = std::thread::Builder::new()
        .name(format!("proxy-worker-{index}"))
        .spawn(move || {
            if let Ok(started) = start_receiver.recv() {
                started.run_on_own_runtime(index, &fallback);
            }
        });
    let started = StartedWorker {
        worker,
        receiver,
        done_sender,
    };

    match spawned {
        Ok(_) => {
            // The new thread keeps the receiver until it has received, so the send fails only
            // if that thread died first. The worker's channel is then closed, and the listener
            // logs each connection it cannot hand over.
            let _ = start_sender.send(started);
        }
        Err(error) => {
            tracing::error!(
                worker = index, error = %ErrorChain(&error),
                "failed to start a proxy worker thread, serving its connections on the main runtime"
            );
            tokio::spawn(started.run());
        }
    }
    handle
}

/// A worker with the receiving ends of its channels, ready to run.
struct StartedWorker {
    worker: Worker,
    receiver: mpsc::UnboundedReceiver<Accepted>,
    done_sender: oneshot::Sender<()>,
}

impl StartedWorker {
    /// Runs the worker on a new single-threaded runtime on this thread, or on `fallback` when
    /// that runtime cannot be built.
    fn run_on_own_runtime(self, index: usize, fallback: &tokio::runtime::Handle) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match runtime {
            Ok(runtime) => {
                let Self {
                    worker,
                    receiver,
                    done_sender,
                } = self;
                runtime.block_on(worker.run(receiver));
                // Dropping the runtime ends the connections still open after the drain.
                drop(runtime);
                let _ = done_sender.send(());
            }
            Err(error) => {
                tracing::error!(
                    worker = index, error = %ErrorChain(&error),
                    "failed to build a proxy worker runtime, serving its connections on the main runtime"
                );
                fallback.spawn(self.run());
            }
        }
    }

    /// Runs the worker on the current runtime.
    async fn run(self) {
        self.worker.run(self.receiver).await;
        let _ = self.done_sender.send(());
    }
}

/// One worker: serves the connections it receives with its own upstream pool.
struct Worker {
    settings: ConnectionSettings,
    upstream: Arc<Upstream>,
}

impl Worker {
    fn new(settings: &ConnectionSettings) -> Self {
        Self {
            upstream: Arc::new(settings.state.upstream.with_own_pool()),
            settings: settings.clone(),
        }
    }

    /// Serves connections until the listener stops sending them, then gives the open ones up
    /// to [`DRAIN_TIMEOUT`] to finish.
    async fn run(self, mut receiver: mpsc::UnboundedReceiver<Accepted>) {
        let sweeper = tokio::spawn(close_expired_connections(Arc::clone(&self.upstream)));
        let graceful = GracefulShutdown::new();
        while let Some(accepted) = receiver.recv().await {
            let Accepted {
                stream,
                peer,
                client,
                permit,
                load,
            } = accepted;
            let stream = match TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%peer, error = %ErrorChain(&error), "failed to register a proxy connection");
                    continue;
                }
            };
            let connection = ClientConnection {
                state: Arc::clone(&self.settings.state),
                upstream: Arc::clone(&self.upstream),
                builder: Arc::clone(&self.settings.builder),
                http: self.settings.http.clone(),
                tls: self.settings.tls.clone(),
                watcher: graceful.watcher(),
                client,
            };
            let span = tracing::debug_span!("connection", %peer);
            tokio::spawn(
                async move {
                    connection.serve(stream).await;
                    drop(permit);
                    drop(load);
                }
                .instrument(span),
            );
        }

        if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                timeout_seconds = DRAIN_TIMEOUT.as_secs(),
                "proxy connections still open after the drain timeout, closing them"
            );
        }
        sweeper.abort();
    }
}

/// Closes the worker's idle upstream connections that stayed unused too long, every
/// [`IDLE_SWEEP_INTERVAL`], until the task is aborted.
async fn close_expired_connections(upstream: Arc<Upstream>) {
    let mut interval = tokio::time::interval(IDLE_SWEEP_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let closed = upstream.close_expired();
        if closed > 0 {
            tracing::debug!(closed, "closed idle upstream connections");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_workers_means_one_per_core() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);

        assert_eq!(worker_count(0), cores);
        assert_eq!(worker_count(3), 3);
        assert_eq!(worker_count(MAX_WORKER_THREADS + 1), MAX_WORKER_THREADS);
    }
}
