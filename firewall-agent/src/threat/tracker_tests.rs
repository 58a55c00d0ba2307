use super::*;

const SOURCE: &str = "203.0.113.7";

fn addr(text: &str) -> IpAddr {
    text.parse().expect("valid address")
}

fn response(path: &str, status: u16) -> Observation<'_> {
    Observation::Response {
        path,
        status,
        user: None,
    }
}

fn signals(assessment: &Assessment) -> Vec<Signal> {
    assessment.fired.iter().map(|fired| fired.signal).collect()
}

#[test]
fn anomaly_scores_add_up_to_threshold() {
    let mut tracker = Tracker::new(SourcesConfig::default());
    let now = Instant::now();
    let blocked = Observation::Inspected {
        score: 5.0,
        blocked: true,
    };

    let first = tracker.observe(addr(SOURCE), blocked, now);
    let mut last = first.clone();
    for _ in 0..3 {
        last = tracker.observe(addr(SOURCE), blocked, now);
    }

    assert_eq!(first.score, 25.0);
    assert!(!first.reached_threshold);
    assert_eq!(last.score, 100.0);
    assert!(last.reached_threshold);
}

#[test]
fn score_halves_after_half_life() {
    let mut tracker = Tracker::new(SourcesConfig::default());
    let start = Instant::now();
    let inspected = Observation::Inspected {
        score: 80.0,
        blocked: false,
    };

    tracker.observe(addr(SOURCE), inspected, start);
    let later = tracker.observe(
        addr(SOURCE),
        Observation::Inspected {
            score: 0.0,
            blocked: false,
        },
        start + Duration::from_secs(600),
    );

    assert!((later.score - 40.0).abs() < 1e-9, "{}", later.score);
}

#[test]
fn path_scan_fires_on_distinct_404s() {
    let mut tracker = Tracker::new(SourcesConfig::default());
    let now = Instant::now();
    let paths: Vec<String> = (0..20).map(|index| format!("/scan/{index}")).collect();

    let mut assessments = Vec::new();
    for path in &paths {
        assessments.push(tracker.observe(addr(SOURCE), response(path, 404), now));
    }

    assert!(
        assessments[..19]
            .iter()
            .all(|assessment| assessment.fired.is_empty())
    );
    let last = &assessments[19];
    assert!(signals(last).contains(&Signal::PathScan), "{last:?}");
    assert!(last.reached_threshold);
}

#[test]
fn repeated_path_is_not_a_scan() {
    let mut tracker = Tracker::new(SourcesConfig::default());
    let now = Instant::now();

    for _ in 0..19 {
        let assessment = tracker.observe(addr(SOURCE), response("/api/items", 200), now);
        assert!(assessment.fired.is_empty());
    }
    for index in 0..5 {
        let path = format!("/missing/{index}");
        let assessment = tracker.observe(addr(SOURCE), response(&path, 404), now);
        assert!(
            !signals(&assessment).contains(&Signal::PathScan),
            "5 distinct 404s among 24 requests is no scan"
        );
    }
}

#[test]
fn signal_fires_once_per_window() {
    let config = SourcesConfig {
        unauthorized_responses: 3,
        unauthorized_points: 10.0,
        ..SourcesConfig::default()
    };
    let mut tracker = Tracker::new(config);
    let start = Instant::now();

    let fired_now: Vec<bool> = (0..6)
        .map(|_| {
            let assessment = tracker.observe(addr(SOURCE), response("/login", 401), start);
            signals(&assessment).contains(&Signal::Unauthorized)
        })
        .collect();
    let next_window = start + Duration::from_secs(61);
    let mut fired_later = false;
    for _ in 0..3 {
        let assessment = tracker.observe(addr(SOURCE), response("/login", 401), next_window);
        fired_later |= signals(&assessment).contains(&Signal::Unauthorized);
    }

    assert_eq!(fired_now, vec![false, false, true, false, false, false]);
    assert!(fired_later, "a new window fires again");
}

#[test]
fn failed_logins_reach_threshold() {
    let mut tracker = Tracker::new(SourcesConfig::default());
    let now = Instant::now();

    let mut reached_at = None;
    for attempt in 1..=10 {
        let assessment = tracker.observe(
            addr(SOURCE),
            Observation::LoginFailed { username: "alice" },
            now,
        );
        if assessment.reached_threshold && reached_at.is_none() {
            reached_at = Some(attempt);
            assert_eq!(signals(&assessment), vec![Signal::FailedLogins]);
        }
    }

    assert_eq!(reached_at, Some(10));
}

#[test]
fn many_usernames_from_one_source() {
    let mut tracker = Tracker::new(SourcesConfig::default());
    let now = Instant::now();
    let names = ["ann", "bob", "cai", "dee", "eve"];

    let last = names
        .iter()
        .map(|name| {
            tracker.observe(
                addr(SOURCE),
                Observation::LoginFailed { username: name },
                now,
            )
        })
        .last()
        .expect("five attempts");

    assert_eq!(signals(&last), vec![Signal::ManyUsernames]);
    assert!(last.reached_threshold);
}

#[test]
fn one_username_from_many_sources() {
    let mut tracker = Tracker::new(SourcesConfig::default());
    let now = Instant::now();

    let mut fired = Vec::new();
    for host in 1..=12 {
        let source = addr(&format!("198.51.100.{host}"));
        let assessment =
            tracker.observe(source, Observation::LoginFailed { username: "root" }, now);
        fired.push(signals(&assessment).contains(&Signal::ManySources));
    }

    assert!(fired[..9].iter().all(|fired| !fired));
    assert!(fired[9..].iter().all(|fired| *fired), "{fired:?}");
}

#[test]
fn user_error_rate_counts_across_sources() {
    let config = SourcesConfig {
        error_min_requests: 4,
        ..SourcesConfig::default()
    };
    let mut tracker = Tracker::new(config);
    let now = Instant::now();

    let mut last = None;
    for host in 1..=4 {
        let source = addr(&format!("198.51.100.{host}"));
        let observation = Observation::Response {
            path: "/api/orders",
            status: 403,
            user: Some("user-42"),
        };
        last = Some(tracker.observe(source, observation, now));
    }

    let last = last.expect("four responses");
    let user_signal = last
        .fired
        .iter()
        .find(|fired| fired.signal == Signal::UserErrorRate)
        .expect("the user error rate fires");
    assert_eq!(user_signal.username.as_deref(), Some("user-42"));
}

#[test]
fn oldest_source_is_evicted() {
    let config = SourcesConfig {
        max_sources: 2,
        ..SourcesConfig::default()
    };
    let mut tracker = Tracker::new(config);
    let now = Instant::now();
    let inspected = Observation::Inspected {
        score: 50.0,
        blocked: false,
    };

    tracker.observe(addr("203.0.113.1"), inspected, now);
    tracker.observe(addr("203.0.113.2"), inspected, now);
    tracker.observe(addr("203.0.113.1"), inspected, now);
    tracker.observe(addr("203.0.113.3"), inspected, now);
    let first = tracker.observe(addr("203.0.113.1"), inspected, now);
    let second = tracker.observe(addr("203.0.113.2"), inspected, now);

    assert_eq!(tracker.sources(), 2);
    assert_eq!(first.score, 150.0, "recently seen source kept its score");
    assert_eq!(
        second.score, 50.0,
        "least recently seen source was forgotten"
    );
}

#[test]
fn forget_resets_score() {
    let mut tracker = Tracker::new(SourcesConfig::default());
    let now = Instant::now();
    let inspected = Observation::Inspected {
        score: 60.0,
        blocked: false,
    };

    tracker.observe(addr(SOURCE), inspected, now);
    tracker.forget(addr(SOURCE));
    let after = tracker.observe(addr(SOURCE), inspected, now);

    assert_eq!(after.score, 60.0);
}

#[test]
fn responses_keep_least_recent_order() {
    let config = SourcesConfig {
        max_sources: 2,
        ..SourcesConfig::default()
    };
    let mut tracker = Tracker::new(config);
    let now = Instant::now();
    let inspected = Observation::Inspected {
        score: 50.0,
        blocked: false,
    };

    // A response touches its source twice, the second time while it is the most recent.
    tracker.observe(addr("203.0.113.1"), inspected, now);
    tracker.observe(addr("203.0.113.2"), inspected, now);
    tracker.observe(addr("203.0.113.1"), response("/a", 200), now);
    tracker.observe(addr("203.0.113.1"), response("/b", 200), now);
    tracker.observe(addr("203.0.113.3"), response("/c", 200), now);
    let first = tracker.observe(addr("203.0.113.1"), inspected, now);
    let second = tracker.observe(addr("203.0.113.2"), inspected, now);

    assert_eq!(first.score, 100.0, "recently seen source kept its score");
    assert_eq!(second.score, 50.0, "least recently seen source was forgotten");
}
