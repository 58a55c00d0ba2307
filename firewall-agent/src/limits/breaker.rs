//! A circuit breaker for the Redis store, lock-free so every request can consult it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Whether a call may go to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permit {
    /// The breaker is closed.
    Allowed,
    /// The breaker is half-open and this call is the one probe.
    Probe,
    /// The breaker is open.
    Denied,
}

/// Opens after `threshold` consecutive failures, stays open for `open_for`, then lets one
/// probe through: its success closes the breaker, its failure opens it again.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    epoch: Instant,
    consecutive_failures: AtomicU32,
    /// Nanoseconds since `epoch` until which the breaker is open; 0 when closed.
    open_until_ns: AtomicU64,
    probe_in_flight: AtomicBool,
}

impl Breaker {
    /// Creates a closed breaker.
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            epoch: Instant::now(),
            consecutive_failures: AtomicU32::new(0),
            open_until_ns: AtomicU64::new(0),
            probe_in_flight: AtomicBool::new(false),
        }
    }

    /// Returns whether a call may go to the store now.
    pub fn permit(&self) -> Permit {
        let open_until = self.open_until_ns.load(Ordering::Acquire);
        if open_until == 0 {
            return Permit::Allowed;
        }
        if self.now_ns() < open_until {
            return Permit::Denied;
        }
        match self.probe_in_flight.compare_exchange(
            false,
            true,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Permit::Probe,
            Err(_) => Permit::Denied,
        }
    }

    /// Records a successful call. Returns `true` when this closed an open breaker.
    pub fn record_success(&self) -> bool {
        self.consecutive_failures.store(0, Ordering::Release);
        self.probe_in_flight.store(false, Ordering::Release);
        self.open_until_ns.swap(0, Ordering::AcqRel) != 0
    }

    /// Records a failed call. Returns `true` when this opened a closed breaker.
    pub fn record_failure(&self, permit: Permit) -> bool {
        if permit == Permit::Probe {
            self.open_until_ns
                .store(self.now_ns() + self.open_for_ns(), Ordering::Release);
            self.probe_in_flight.store(false, Ordering::Release);
            return false;
        }
        let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures < self.threshold {
            return false;
        }
        let until = self.now_ns() + self.open_for_ns();
        self.open_until_ns
            .compare_exchange(0, until, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Opens the breaker now, such as when the first connection fails.
    pub fn force_open(&self) {
        self.open_until_ns
            .store(self.now_ns() + self.open_for_ns(), Ordering::Release);
    }

    /// Returns whether the breaker is open or half-open.
    pub fn is_open(&self) -> bool {
        self.open_until_ns.load(Ordering::Acquire) != 0
    }

    fn now_ns(&self) -> u64 {
        // At least 1, because 0 means closed.
        u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn open_for_ns(&self) -> u64 {
        u64::try_from(self.open_for.as_nanos()).unwrap_or(u64::MAX / 2)
    }
}
