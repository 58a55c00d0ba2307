//! The limit algorithm: GCRA in its continuous-state leaky bucket form.
//!
//! Each (key, tier) keeps a level, in requests, and the time it was last updated. The level
//! drains at `limit / window` requests per second. A request is admitted when the drained level
//! plus one is at most `limit`, and only then is the level raised by one. A rejected request
//! changes nothing, so a client that keeps retrying while over the limit does not stay locked
//! out.
//!
//! Memory is constant per key and tier: one level and one timestamp. Because the level counts
//! requests rather than time, a reload that changes `limit` keeps its meaning: a client that
//! used 10 of an old limit of 10 has used 10 of a new limit of 20.
//!
//! # Error bound
//!
//! Against a sliding window that admits at most `limit` requests in any interval of length
//! `window`, the algorithm admits at most
//!
//! ```text
//! limit + floor(d * limit / window)
//! ```
//!
//! requests in any interval of length `d`. A burst shorter than `window / limit` (a boundary
//! burst) therefore gets at most `limit`, never twice the limit as with fixed windows. Over a
//! whole window the worst case is `2 * limit - 1`: a full burst at the start of an idle
//! period, then one request each time one drains. A steady rate at or below `limit / window`
//! is never rejected.

use std::time::Duration;

/// Slack for floating-point rounding when comparing a level with a limit, in requests.
const LEVEL_EPSILON: f64 = 1e-9;

/// One tier of a rule: `limit` requests per `window`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tier {
    /// Maximum requests per window, at least 1.
    pub limit: u32,
    /// Window length, at least one nanosecond.
    pub window: Duration,
}

impl Tier {
    /// Creates a tier; a zero limit is raised to 1 and a zero window to one second, which
    /// validation rejects before this point.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit: limit.max(1),
            window: if window.is_zero() {
                Duration::from_secs(1)
            } else {
                window
            },
        }
    }

    /// Returns this tier with its limit divided by `parts`, rounded down but at least 1.
    pub fn divided(self, parts: u32) -> Self {
        Self::new(self.limit / parts.max(1), self.window)
    }

    /// Requests drained per nanosecond.
    fn drain_per_nanosecond(self) -> f64 {
        f64::from(self.limit) / self.window.as_nanos() as f64
    }

    /// Returns the level left at `elapsed` after it was `level`.
    pub fn drain(self, level: f64, elapsed: Duration) -> f64 {
        (level - elapsed.as_nanos() as f64 * self.drain_per_nanosecond()).max(0.0)
    }

    /// Returns whether a request fits on top of the drained `level`.
    pub fn admits(self, level: f64) -> bool {
        level + 1.0 <= f64::from(self.limit) + LEVEL_EPSILON
    }

    /// Returns the time until a request fits on top of `level`, zero if it fits now.
    pub fn retry_after(self, level: f64) -> Duration {
        let excess = level + 1.0 - f64::from(self.limit);
        self.time_to_drain(excess)
    }

    /// Returns the time until `level` has drained to zero, when the full limit is back.
    pub fn time_to_drain(self, level: f64) -> Duration {
        if level <= LEVEL_EPSILON {
            return Duration::ZERO;
        }
        let nanos = (level / self.drain_per_nanosecond()).ceil();
        // A level is at most the limit, so this is at most one window and fits in a u64.
        Duration::from_nanos(nanos.min(u64::MAX as f64) as u64)
    }

    /// Returns the number of requests that still fit on top of `level`.
    pub fn remaining(self, level: f64) -> u32 {
        let remaining = (f64::from(self.limit) - level + LEVEL_EPSILON).floor();
        // The value is in [0, limit], so the cast does not truncate.
        remaining.clamp(0.0, f64::from(self.limit)) as u32
    }
}

/// The state of one key in one tier.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TierState {
    /// Level in requests at `updated`.
    pub level: f64,
    /// Time of the last admitted request, in nanoseconds since the engine's epoch.
    pub updated_ns: u64,
}

impl TierState {
    /// Returns the level at `now_ns`.
    pub fn level_at(&self, tier: Tier, now_ns: u64) -> f64 {
        let elapsed = Duration::from_nanos(now_ns.saturating_sub(self.updated_ns));
        tier.drain(self.level, elapsed)
    }
}

/// The result of one tier for one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TierOutcome {
    /// The tier.
    pub tier: Tier,
    /// Whether this tier alone would admit the request.
    pub admitted: bool,
    /// Level after the request: raised by one when the request was committed.
    pub level: f64,
}

impl TierOutcome {
    /// Builds the outcome from the drained level before the request.
    pub fn new(tier: Tier, level_before: f64, committed: bool) -> Self {
        Self {
            tier,
            admitted: tier.admits(level_before),
            level: if committed {
                level_before + 1.0
            } else {
                level_before
            },
        }
    }

    /// Requests that still fit.
    pub fn remaining(&self) -> u32 {
        self.tier.remaining(self.level)
    }

    /// Time until the full limit is back.
    pub fn reset(&self) -> Duration {
        self.tier.time_to_drain(self.level)
    }

    /// Time until the next request fits.
    pub fn retry_after(&self) -> Duration {
        self.tier.retry_after(self.level)
    }
}
