use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::{RateDecision, RateLimiter};

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9));

fn limiter(limit: u32, window_seconds: u64) -> (RateLimiter, Instant) {
    let epoch = Instant::now();
    let limiter = RateLimiter::with_epoch(limit, Duration::from_secs(window_seconds), epoch);
    (limiter, epoch)
}

fn is_allowed(decision: RateDecision) -> bool {
    matches!(decision, RateDecision::Allowed { .. })
}

#[test]
fn allows_up_to_limit_then_limits() {
    let (limiter, epoch) = limiter(3, 10);
    let now = epoch + Duration::from_secs(1);

    assert_eq!(
        limiter.check_at(CLIENT, now),
        RateDecision::Allowed { remaining: 2 }
    );
    assert_eq!(
        limiter.check_at(CLIENT, now),
        RateDecision::Allowed { remaining: 1 }
    );
    assert_eq!(
        limiter.check_at(CLIENT, now),
        RateDecision::Allowed { remaining: 0 }
    );
    assert!(!is_allowed(limiter.check_at(CLIENT, now)));
}

#[test]
fn clients_are_counted_separately() {
    let (limiter, epoch) = limiter(1, 10);
    let now = epoch + Duration::from_secs(1);

    assert!(is_allowed(limiter.check_at(CLIENT, now)));
    assert!(!is_allowed(limiter.check_at(CLIENT, now)));
    assert!(is_allowed(limiter.check_at(OTHER, now)));
}

#[test]
fn rejected_requests_consume_nothing() {
    let (limiter, epoch) = limiter(2, 10);
    let start = epoch + Duration::from_secs(1);

    assert!(is_allowed(limiter.check_at(CLIENT, start)));
    assert!(is_allowed(limiter.check_at(CLIENT, start)));
    for _ in 0..50 {
        assert!(!is_allowed(limiter.check_at(CLIENT, start)));
    }

    // Two whole windows later nothing overlaps, so the full limit is back despite the 50
    // rejections.
    let later = epoch + Duration::from_secs(21);
    assert!(is_allowed(limiter.check_at(CLIENT, later)));
    assert!(is_allowed(limiter.check_at(CLIENT, later)));
    assert!(!is_allowed(limiter.check_at(CLIENT, later)));
}

#[test]
fn previous_window_is_weighted_by_overlap() {
    let (limiter, epoch) = limiter(10, 10);

    // Ten requests at the end of window 0.
    for _ in 0..10 {
        assert!(is_allowed(
            limiter.check_at(CLIENT, epoch + Duration::from_millis(9_900))
        ));
    }

    // At 2 s into window 1 the previous window still weighs 0.8, an estimate of 8: two more
    // requests fit, the third does not.
    let now = epoch + Duration::from_secs(12);
    assert!(is_allowed(limiter.check_at(CLIENT, now)));
    assert!(is_allowed(limiter.check_at(CLIENT, now)));
    assert!(!is_allowed(limiter.check_at(CLIENT, now)));
}

#[test]
fn retry_after_points_to_first_allowed_moment() {
    let (limiter, epoch) = limiter(2, 10);
    let now = epoch + Duration::from_secs(4);

    limiter.check_at(CLIENT, now);
    limiter.check_at(CLIENT, now);
    let RateDecision::Limited { retry_after } = limiter.check_at(CLIENT, now) else {
        panic!("third request within the window must be limited");
    };

    // Window 0 ends at 10 s. In window 1 the estimate is 2 * (1 - t / 10) + 1 <= 2 from
    // t = 5 s, so the first allowed moment is 15 s, 11 s from now.
    assert_eq!(retry_after, Duration::from_secs(11));
    assert!(!is_allowed(limiter.check_at(
        CLIENT,
        now + retry_after - Duration::from_millis(10)
    )));
    assert!(is_allowed(limiter.check_at(CLIENT, now + retry_after)));
}

#[test]
fn retry_after_within_current_window() {
    let (limiter, epoch) = limiter(4, 10);

    for _ in 0..4 {
        limiter.check_at(CLIENT, epoch + Duration::from_secs(9));
    }
    // At 1 s into window 1 the estimate is 4 * 0.9 = 3.6, so a request does not fit. It fits
    // once the estimate reaches 3, at 2.5 s into the window.
    let now = epoch + Duration::from_secs(11);
    let RateDecision::Limited { retry_after } = limiter.check_at(CLIENT, now) else {
        panic!("request must be limited while the previous window weighs 3.6");
    };
    assert_eq!(retry_after, Duration::from_millis(1_500));
    assert!(is_allowed(limiter.check_at(CLIENT, now + retry_after)));
}

#[test]
fn evict_idle_removes_only_stale_clients() {
    let (limiter, epoch) = limiter(5, 10);

    limiter.check_at(CLIENT, epoch + Duration::from_secs(1));
    limiter.check_at(OTHER, epoch + Duration::from_secs(15));
    assert_eq!(limiter.tracked_clients(), 2);

    // In window 2, CLIENT (window 0) no longer overlaps, OTHER (window 1) still does.
    assert_eq!(limiter.evict_idle(epoch + Duration::from_secs(25)), 1);
    assert_eq!(limiter.tracked_clients(), 1);

    assert_eq!(limiter.evict_idle(epoch + Duration::from_secs(35)), 1);
    assert_eq!(limiter.tracked_clients(), 0);
}

#[test]
fn zero_settings_are_raised() {
    let limiter = RateLimiter::new(0, Duration::ZERO);
    assert_eq!(limiter.window(), Duration::from_secs(1));
    assert!(is_allowed(limiter.check(CLIENT)));
}
