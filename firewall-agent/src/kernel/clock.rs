//! Conversion of wall-clock ban expiries to `CLOCK_BOOTTIME`, the clock the XDP program reads
//! with `bpf_ktime_get_boot_ns`.
//!
//! A deadline on the boot clock is fixed when the ban is written, so a later step of the wall
//! clock (NTP, an administrator) neither shortens nor lengthens a ban in the kernel.

use std::time::{Duration, SystemTime};

use firewall_common::BAN_NEVER_EXPIRES;
use nix::time::{ClockId, clock_gettime};

use super::KernelError;

/// Reads `CLOCK_BOOTTIME` in nanoseconds.
pub(crate) fn boottime_now_ns() -> Result<u64, KernelError> {
    let now =
        clock_gettime(ClockId::CLOCK_BOOTTIME).map_err(|source| KernelError::Clock { source })?;
    Ok(duration_as_ns(Duration::from(now)))
}

/// Converts `expires_at` to a `CLOCK_BOOTTIME` deadline, given `wall_now` and `boottime_now_ns`
/// read at the same moment.
///
/// An expiry in the past gives a deadline in the past (at the earliest 0), so the ban is written
/// but passes traffic. A timed ban never maps to [`BAN_NEVER_EXPIRES`], however far away.
pub(crate) fn boottime_deadline_ns(
    expires_at: SystemTime,
    wall_now: SystemTime,
    boottime_now_ns: u64,
) -> u64 {
    match expires_at.duration_since(wall_now) {
        Ok(remaining) => boottime_now_ns
            .saturating_add(duration_as_ns(remaining))
            .min(BAN_NEVER_EXPIRES - 1),
        Err(past) => boottime_now_ns.saturating_sub(duration_as_ns(past.duration())),
    }
}

/// Converts a `CLOCK_BOOTTIME` deadline back to the wall clock, given `wall_now` and
/// `boottime_now_ns` read at the same moment. [`BAN_NEVER_EXPIRES`] gives `None`.
pub(crate) fn wall_deadline(
    deadline_ns: u64,
    wall_now: SystemTime,
    boottime_now_ns: u64,
) -> Option<SystemTime> {
    if deadline_ns == BAN_NEVER_EXPIRES {
        return None;
    }
    let deadline = if deadline_ns >= boottime_now_ns {
        wall_now.checked_add(Duration::from_nanos(deadline_ns - boottime_now_ns))
    } else {
        wall_now.checked_sub(Duration::from_nanos(boottime_now_ns - deadline_ns))
    };
    // A deadline beyond what `SystemTime` holds is as good as never for a ban.
    Some(deadline.unwrap_or(wall_now))
}

fn duration_as_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND_NS: u64 = 1_000_000_000;

    fn wall_now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn future_expiry_adds_remaining_time() {
        let expires_at = wall_now() + Duration::from_secs(90);
        let deadline = boottime_deadline_ns(expires_at, wall_now(), 5 * SECOND_NS);
        assert_eq!(deadline, 95 * SECOND_NS);
    }

    #[test]
    fn past_expiry_lies_before_now() {
        let expires_at = wall_now() - Duration::from_secs(2);
        let deadline = boottime_deadline_ns(expires_at, wall_now(), 5 * SECOND_NS);
        assert_eq!(deadline, 3 * SECOND_NS);
    }

    #[test]
    fn expiry_before_boot_clamps_to_zero() {
        let expires_at = wall_now() - Duration::from_secs(3600);
        assert_eq!(
            boottime_deadline_ns(expires_at, wall_now(), 5 * SECOND_NS),
            0
        );
    }

    #[test]
    fn distant_expiry_stays_timed() {
        let expires_at = wall_now() + Duration::from_secs(u64::MAX / 4);
        let deadline = boottime_deadline_ns(expires_at, wall_now(), 5 * SECOND_NS);
        assert_eq!(deadline, BAN_NEVER_EXPIRES - 1);
    }

    #[test]
    fn wall_deadline_inverts_boottime_deadline() {
        let expires_at = wall_now() + Duration::from_secs(90);
        let deadline = boottime_deadline_ns(expires_at, wall_now(), 5 * SECOND_NS);
        assert_eq!(
            wall_deadline(deadline, wall_now(), 5 * SECOND_NS),
            Some(expires_at)
        );
    }

    #[test]
    fn wall_deadline_of_past_ban_lies_before_now() {
        let deadline = wall_deadline(3 * SECOND_NS, wall_now(), 5 * SECOND_NS);
        assert_eq!(deadline, Some(wall_now() - Duration::from_secs(2)));
    }

    #[test]
    fn never_expiring_ban_has_no_wall_deadline() {
        assert_eq!(
            wall_deadline(BAN_NEVER_EXPIRES, wall_now(), 5 * SECOND_NS),
            None
        );
    }

    #[test]
    fn boottime_clock_advances() {
        let first = boottime_now_ns().expect("CLOCK_BOOTTIME is readable");
        let second = boottime_now_ns().expect("CLOCK_BOOTTIME is readable");
        assert!(first > 0);
        assert!(second >= first);
    }
}
