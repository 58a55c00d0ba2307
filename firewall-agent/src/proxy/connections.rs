//! Per-connection bookkeeping: the limit of open connections per client address and the idle
//! timeout.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Open connections per client address, bounded by a maximum.
#[derive(Debug)]
pub struct ClientConnections {
    max_per_client: u32,
    open: Mutex<HashMap<IpAddr, u32>>,
}

impl ClientConnections {
    /// Creates an empty count with a limit of `max_per_client`.
    pub fn new(max_per_client: u32) -> Arc<Self> {
        Arc::new(Self {
            max_per_client,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a new connection from `client`, or returns `None` when the client already has the
    /// maximum open. The connection is counted until the permit is dropped.
    pub fn try_open(self: &Arc<Self>, client: IpAddr) -> Option<ConnectionPermit> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(client).or_insert(0);
        if *count >= self.max_per_client {
            return None;
        }
        *count += 1;
        Some(ConnectionPermit {
            connections: Arc::clone(self),
            client,
        })
    }

    /// Returns the number of open connections from `client`.
    pub fn open_from(&self, client: IpAddr) -> u32 {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&client).copied().unwrap_or(0)
    }
}

/// One counted connection; dropping it releases the count.
#[derive(Debug)]
pub struct ConnectionPermit {
    connections: Arc<ClientConnections>,
    client: IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

/// Activity of one connection: when bytes last moved and how many requests are in flight.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    /// Milliseconds since `start` of the last read or write.
    last_io_millis: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    /// Creates the activity of a connection opened now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            last_io_millis: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_io_millis.store(elapsed, Ordering::Relaxed);
    }

    /// Counts a request in flight until the returned guard is dropped.
    pub fn begin_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// Completes once the connection has had no request in flight and no bytes moved for
    /// `timeout`.
    pub async fn idle(&self, timeout: Duration) {
        loop {
            let last_io = Duration::from_millis(self.last_io_millis.load(Ordering::Relaxed));
            let idle_for = self.start.elapsed().saturating_sub(last_io);
            if idle_for >= timeout && self.in_flight.load(Ordering::Relaxed) == 0 {
                return;
            }
            // Check again when the timeout would run out if nothing happened meanwhile.
            let wait = timeout
                .saturating_sub(idle_for)
                .max(Duration::from_millis(100));
            tokio::time::sleep(wait).await;
        }
    }
}

/// A request in flight on a connection.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A stream that records its reads and writes in an [`Activity`].
#[derive(Debug)]
pub struct TrackedStream<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> TrackedStream<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TrackedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if result.is_ready() {
            this.activity.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TrackedStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if result.is_ready() {
            this.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if result.is_ready() {
            this.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_bounded_per_client() {
        let connections = ClientConnections::new(2);
        let client: IpAddr = "198.51.100.7".parse().expect("valid address");
        let other: IpAddr = "198.51.100.8".parse().expect("valid address");

        let first = connections.try_open(client).expect("first permit");
        let _second = connections.try_open(client).expect("second permit");
        let third = connections.try_open(client);
        let _other = connections
            .try_open(other)
            .expect("another client's permit");

        assert!(third.is_none());
        assert_eq!(connections.open_from(client), 2);
        drop(first);
        assert_eq!(connections.open_from(client), 1);
        assert!(connections.try_open(client).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_requests_in_flight() {
        let activity = Activity::new();
        let request = activity.begin_request();

        let early = tokio::time::timeout(
            Duration::from_secs(5),
            activity.idle(Duration::from_secs(1)),
        )
        .await;
        drop(request);
        let late = tokio::time::timeout(
            Duration::from_secs(5),
            activity.idle(Duration::from_secs(1)),
        )
        .await;

        assert!(early.is_err(), "idle while a request was in flight");
        assert!(late.is_ok(), "not idle after the request ended");
    }
}
