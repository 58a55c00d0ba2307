//! Per-client rate limiting with a sliding window counter.
//!
//! Time is cut into fixed windows. A client's request count is estimated as the previous
//! window's count, weighted by how much of the sliding window still overlaps it, plus the current
//! window's count. This needs two counters per client instead of one timestamp per request, and
//! is exact when requests are spread evenly over the previous window.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use std::collections::hash_map::RandomState;

/// Number of independently locked shards. A power of two well above the core count keeps lock
/// contention low without wasting memory on empty maps.
const SHARD_COUNT: usize = 32;

/// The result of [`RateLimiter::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateDecision {
    /// The request is counted and may proceed. `remaining` is a lower bound of the requests the
    /// client can still make right now.
    Allowed { remaining: u32 },
    /// The request is over the limit and was not counted. `retry_after` is when the client's
    /// next request would be allowed if it sends nothing until then.
    Limited { retry_after: Duration },
}

/// Per-client sliding window counters, sharded by a hash of the address.
///
/// NOTE: the number of tracked clients has no upper bound. Many distinct addresses within two
/// windows grow memory until [`RateLimiter::evict_idle`] removes them.
#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    window: Duration,
    /// Start of window 0. Windows are `[epoch + n * window, epoch + (n + 1) * window)`.
    epoch: Instant,
    hasher: RandomState,
    shards: Box<[Mutex<HashMap<IpAddr, WindowCounts>>]>,
}

/// Counts of one client in its latest window and the window before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct WindowCounts {
    window_index: u64,
    current: u32,
    previous: u32,
}

impl WindowCounts {
    /// Moves the counts forward to `index`, dropping windows that no longer overlap.
    fn advance_to(&mut self, index: u64) {
        if index == self.window_index {
            return;
        }
        self.previous = if index == self.window_index + 1 {
            self.current
        } else {
            0
        };
        self.current = 0;
        self.window_index = index;
    }
}

impl RateLimiter {
    /// Creates a limiter that allows `limit` requests per `window` for each client.
    ///
    /// `limit` of 0 is raised to 1 and a zero `window` to one second; the config's validation
    /// rejects both before this point.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self::with_epoch(limit, window, Instant::now())
    }

    /// Creates a limiter whose window 0 starts at `epoch`, so tests can place requests at exact
    /// offsets.
    pub fn with_epoch(limit: u32, window: Duration, epoch: Instant) -> Self {
        let shards = (0..SHARD_COUNT)
            .map(|_| Mutex::new(HashMap::new()))
            .collect();
        Self {
            limit: limit.max(1),
            window: if window.is_zero() {
                Duration::from_secs(1)
            } else {
                window
            },
            epoch,
            hasher: RandomState::new(),
            shards,
        }
    }

    /// Returns the window length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Counts a request from `client` now, unless it is over the limit.
    pub fn check(&self, client: IpAddr) -> RateDecision {
        self.check_at(client, Instant::now())
    }

    /// Counts a request from `client` at `now`, unless it is over the limit. A rejected request
    /// is not counted, so a client that keeps retrying is not locked out for longer.
    pub fn check_at(&self, client: IpAddr, now: Instant) -> RateDecision {
        let (index, offset) = self.position(now);
        let mut shard = self.shard(client);
        let counts = shard.entry(client).or_insert(WindowCounts {
            window_index: index,
            current: 0,
            previous: 0,
        });
        counts.advance_to(index);

        let estimate = self.estimate(counts, offset);
        if estimate + 1.0 > f64::from(self.limit) {
            return RateDecision::Limited {
                retry_after: self.retry_after(counts, offset),
            };
        }

        counts.current = counts.current.saturating_add(1);
        let remaining = (f64::from(self.limit) - estimate - 1.0).floor();
        RateDecision::Allowed {
            // `remaining` is in [0, limit) here, so the cast cannot truncate.
            remaining: remaining.max(0.0) as u32,
        }
    }

    /// Removes clients that sent nothing in the current or previous window, because their
    /// estimate is zero. Returns how many were removed.
    pub fn evict_idle(&self, now: Instant) -> usize {
        let (index, _) = self.position(now);
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let before = shard.len();
            shard.retain(|_, counts| counts.window_index + 1 >= index);
            removed += before - shard.len();
        }
        removed
    }

    /// Number of clients currently tracked.
    pub fn tracked_clients(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }

    /// Returns the window index of `now` and the offset into that window.
    fn position(&self, now: Instant) -> (u64, Duration) {
        let elapsed = now.saturating_duration_since(self.epoch).as_nanos();
        let window = self.window.as_nanos();
        let index = u64::try_from(elapsed / window).unwrap_or(u64::MAX);
        // The remainder is below the window length, which fits in a Duration.
        let offset = Duration::from_nanos(u64::try_from(elapsed % window).unwrap_or(0));
        (index, offset)
    }

    fn estimate(&self, counts: &WindowCounts, offset: Duration) -> f64 {
        let overlap = 1.0 - offset.as_secs_f64() / self.window.as_secs_f64();
        f64::from(counts.previous) * overlap + f64::from(counts.current)
    }

    /// Time from `offset` until the estimate leaves room for one request, assuming no requests
    /// arrive meanwhile.
    fn retry_after(&self, counts: &WindowCounts, offset: Duration) -> Duration {
        let window = self.window.as_secs_f64();
        let offset = offset.as_secs_f64();
        let limit = f64::from(self.limit);
        let current = f64::from(counts.current);
        let previous = f64::from(counts.previous);

        // Still in this window: the previous window's weight must shrink enough.
        if current + 1.0 <= limit && previous > 0.0 {
            let needed_offset = window * (1.0 - (limit - current - 1.0) / previous);
            if needed_offset < window {
                return Duration::from_secs_f64((needed_offset - offset).max(0.0));
            }
        }

        // In the next window this window's count becomes the weighted one.
        let into_next = if current > limit - 1.0 {
            window * (1.0 - (limit - 1.0) / current)
        } else {
            0.0
        };
        Duration::from_secs_f64((window - offset) + into_next)
    }

    fn shard(&self, client: IpAddr) -> MutexGuard<'_, HashMap<IpAddr, WindowCounts>> {
        let index = (self.hasher.hash_one(client) as usize) % self.shards.len();
        lock(&self.shards[index])
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change under the lock is a single map operation, so a poisoned map is still
    // consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
