//! Per-source behaviour: counts in fixed windows, the signals they fire, and the decaying
//! score. Memory is bounded: each map evicts its least recently seen key when full.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::config::SourcesConfig;

/// Something a source did, as the tracker counts it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Observation<'a> {
    /// The detectors scored a request.
    Inspected {
        /// The request's anomaly score.
        score: f64,
        /// Whether the request was rejected.
        blocked: bool,
    },
    /// The response status of a request is known.
    Response {
        /// Request path, without the query.
        path: &'a str,
        /// Response status code.
        status: u16,
        /// Subject of the verified token, when the request carried one.
        user: Option<&'a str>,
    },
    /// A login failed.
    LoginFailed {
        /// The username that was tried.
        username: &'a str,
    },
    /// A bearer token was rejected.
    TokenRejected,
}

/// A behaviour signal. Each fires at most once per window of its source or user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    /// Many requests from one source.
    RequestRate,
    /// Many requests under one user.
    UserRequestRate,
    /// Many distinct paths with a high share of 404 responses.
    PathScan,
    /// A high share of error responses from one source.
    ErrorRate,
    /// A high share of error responses under one user.
    UserErrorRate,
    /// Many 401 and 403 responses: refused credentials or access.
    Unauthorized,
    /// Many failed logins.
    FailedLogins,
    /// Many rejected tokens.
    TokenFailures,
    /// Failed logins for many usernames from one source.
    ManyUsernames,
    /// A failed login for a username that many sources fail to log in as.
    ManySources,
}

impl Signal {
    /// Every signal, for metric label sets.
    pub const ALL: [Signal; 10] = [
        Signal::RequestRate,
        Signal::UserRequestRate,
        Signal::PathScan,
        Signal::ErrorRate,
        Signal::UserErrorRate,
        Signal::Unauthorized,
        Signal::FailedLogins,
        Signal::TokenFailures,
        Signal::ManyUsernames,
        Signal::ManySources,
    ];

    /// Rule id used in audit records, ban reasons and metric labels.
    pub const fn label(self) -> &'static str {
        match self {
            Signal::RequestRate => "behaviour.request_rate",
            Signal::UserRequestRate => "behaviour.user_request_rate",
            Signal::PathScan => "behaviour.path_scan",
            Signal::ErrorRate => "behaviour.error_rate",
            Signal::UserErrorRate => "behaviour.user_error_rate",
            Signal::Unauthorized => "behaviour.unauthorized",
            Signal::FailedLogins => "behaviour.failed_logins",
            Signal::TokenFailures => "behaviour.token_failures",
            Signal::ManyUsernames => "behaviour.credential_stuffing_usernames",
            Signal::ManySources => "behaviour.credential_stuffing_sources",
        }
    }

    /// Returns whether the signal is about authentication failures, which the audit log
    /// reports as bursts.
    pub const fn is_authentication(self) -> bool {
        matches!(
            self,
            Signal::Unauthorized
                | Signal::FailedLogins
                | Signal::TokenFailures
                | Signal::ManyUsernames
                | Signal::ManySources
        )
    }

    const fn bit(self) -> u16 {
        1 << self as u16
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A signal that fired on an observation.
#[derive(Clone, Debug, PartialEq)]
pub struct Fired {
    /// The signal.
    pub signal: Signal,
    /// The count that reached the threshold.
    pub count: u32,
    /// Points added to the source's score.
    pub points: f64,
    /// The username concerned, for [`Signal::ManySources`].
    pub username: Option<String>,
}

/// The source's state after an observation.
#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    /// The source's score, decayed to now, with this observation's points.
    pub score: f64,
    /// Signals this observation fired.
    pub fired: Vec<Fired>,
    /// Whether the score reached the ban threshold.
    pub reached_threshold: bool,
}

/// Counts of one key within the current window.
#[derive(Debug)]
struct Window {
    start: Instant,
    requests: u32,
    errors: u32,
    not_found: u32,
    unauthorized: u32,
    failed_logins: u32,
    token_failures: u32,
    /// Hashes of distinct paths, at most `scan_distinct_paths`. They are keyed SipHash
    /// values, which a client cannot aim at collisions, so the fast hasher suits them.
    paths: HashSet<u64, FastHasher>,
    /// Hashes of distinct usernames in failed logins, at most `stuffing_usernames`.
    usernames: HashSet<u64>,
    /// Signals fired in this window, one bit each.
    fired: u16,
}

impl Window {
    fn new(start: Instant) -> Self {
        Self {
            start,
            requests: 0,
            errors: 0,
            not_found: 0,
            unauthorized: 0,
            failed_logins: 0,
            token_failures: 0,
            paths: HashSet::default(),
            usernames: HashSet::new(),
            fired: 0,
        }
    }

    /// Starts a new window when the current one is over.
    fn roll(&mut self, now: Instant, length: Duration) {
        if now.saturating_duration_since(self.start) >= length {
            *self = Window::new(now);
        }
    }

    /// Marks `signal` as fired. Returns false when it already fired in this window.
    fn fire_once(&mut self, signal: Signal) -> bool {
        let first = self.fired & signal.bit() == 0;
        self.fired |= signal.bit();
        first
    }
}

#[derive(Debug)]
struct SourceState {
    score: f64,
    scored_at: Instant,
    window: Window,
}

#[derive(Debug)]
struct UsernameState {
    window: Window,
    /// Sources that failed to log in as this username, at most `stuffing_sources`.
    sources: HashSet<IpAddr>,
}

/// Hasher of the tracker's maps, faster than SipHash on the small keys they have: client
/// addresses, token subjects and keyed hashes of usernames and paths. A client can hardly
/// pick many of these keys so that they collide. It has to connect from each address it
/// uses, a subject comes from a verified token, and the hashes are keyed with a secret. The
/// seed is random per process, no hash value leaves the process, and each map is capped at
/// `max_sources` entries.
///
/// NOTE: a client with a whole IPv6 prefix does choose its addresses. foldhash is only
/// minimally resistant to collision attacks, so such a client that learned the seed, for
/// example through response timing, could make lookups in the sources map slow.
type FastHasher = foldhash::fast::RandomState;

/// A map of at most `capacity` entries that evicts the least recently used first.
#[derive(Debug)]
struct Lru<K, V> {
    entries: HashMap<K, (V, u64), FastHasher>,
    order: BTreeMap<u64, K>,
    next: u64,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::default(),
            order: BTreeMap::new(),
            next: 0,
            capacity,
        }
    }

    /// Returns the entry of `key`, created with `make` when missing, and marks it as the most
    /// recently used.
    fn touch(&mut self, key: &K, make: impl FnOnce() -> V) -> &mut V {
        match self.entries.get(key) {
            // Already the most recently used: the order stays as it is. One observation
            // touches its source more than once, so this is the common case.
            Some((_, used)) if *used + 1 == self.next => {}
            Some((_, used)) => {
                self.order.remove(used);
                self.order.insert(self.next, key.clone());
                self.next += 1;
            }
            None => {
                while self.entries.len() >= self.capacity {
                    let Some((_, oldest)) = self.order.pop_first() else {
                        break;
                    };
                    self.entries.remove(&oldest);
                }
                self.order.insert(self.next, key.clone());
                self.next += 1;
            }
        }
        let sequence = self.next - 1;
        let entry = self
            .entries
            .entry(key.clone())
            .or_insert_with(|| (make(), sequence));
        entry.1 = sequence;
        &mut entry.0
    }

    fn remove(&mut self, key: &K) {
        if let Some((_, used)) = self.entries.remove(key) {
            self.order.remove(&used);
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Behaviour and scores of every tracked source.
#[derive(Debug)]
pub struct Tracker {
    config: SourcesConfig,
    hasher: RandomState,
    sources: Lru<IpAddr, SourceState>,
    users: Lru<String, Window>,
    usernames: Lru<u64, UsernameState>,
}

impl Tracker {
    /// Creates an empty tracker.
    pub fn new(config: SourcesConfig) -> Self {
        Self {
            sources: Lru::new(config.max_sources),
            users: Lru::new(config.max_sources),
            usernames: Lru::new(config.max_sources),
            hasher: RandomState::new(),
            config,
        }
    }

    /// Number of sources tracked.
    pub fn sources(&self) -> usize {
        self.sources.len()
    }

    /// Forgets `source`, after it was banned or flagged.
    pub fn forget(&mut self, source: IpAddr) {
        self.sources.remove(&source);
    }

    /// Counts `observation` from `source` at `now`, fires the signals whose thresholds it
    /// reaches, and returns the source's score.
    pub fn observe(
        &mut self,
        source: IpAddr,
        observation: Observation<'_>,
        now: Instant,
    ) -> Assessment {
        let mut fired = Vec::new();
        let mut points = 0.0;
        match observation {
            Observation::Inspected { score, blocked } => {
                points += score.max(0.0) * self.config.request_score_weight;
                if blocked {
                    points += self.config.blocked_request_points;
                }
            }
            Observation::Response { path, status, user } => {
                self.count_response(source, path, status, now, &mut fired);
                if let Some(user) = user {
                    self.count_user_response(user, status, now, &mut fired);
                }
            }
            Observation::LoginFailed { username } => {
                self.count_failed_login(source, username, now, &mut fired);
            }
            Observation::TokenRejected => {
                let threshold = self.config.token_failures;
                let window = self.window_of(source, now);
                window.token_failures += 1;
                let count = window.token_failures;
                if count >= threshold && window.fire_once(Signal::TokenFailures) {
                    fired.push(self.fired(Signal::TokenFailures, count, None));
                }
            }
        }
        points += fired.iter().map(|fired| fired.points).sum::<f64>();

        let half_life = self.config.half_life();
        let threshold = self.config.ban_threshold;
        let state = self.state_of(source, now);
        state.score = decayed(
            state.score,
            now.saturating_duration_since(state.scored_at),
            half_life,
        ) + points;
        state.scored_at = now;
        Assessment {
            score: state.score,
            fired,
            reached_threshold: state.score >= threshold,
        }
    }

    fn count_response(
        &mut self,
        source: IpAddr,
        path: &str,
        status: u16,
        now: Instant,
        fired: &mut Vec<Fired>,
    ) {
        let path_hash = self.hasher.hash_one(path);
        let config = self.config.clone();
        let window = self.window_of(source, now);
        window.requests += 1;
        if window.paths.len() < config.scan_distinct_paths as usize {
            window.paths.insert(path_hash);
        }
        if status == 404 {
            window.not_found += 1;
        }
        if status == 401 || status == 403 {
            window.unauthorized += 1;
        }
        if status >= 400 {
            window.errors += 1;
        }

        let requests = window.requests;
        let share = |count: u32| f64::from(count) / f64::from(requests.max(1));
        // Only signals that fire for the first time in this window are collected, so a busy
        // source past a threshold costs no allocation per request.
        let mut newly = Vec::new();
        if requests >= config.rate_requests && window.fire_once(Signal::RequestRate) {
            newly.push((Signal::RequestRate, requests));
        }
        let distinct = u32::try_from(window.paths.len()).unwrap_or(u32::MAX);
        if distinct >= config.scan_distinct_paths
            && share(window.not_found) >= config.scan_not_found_ratio
            && window.fire_once(Signal::PathScan)
        {
            newly.push((Signal::PathScan, distinct));
        }
        if requests >= config.error_min_requests
            && share(window.errors) >= config.error_ratio
            && window.fire_once(Signal::ErrorRate)
        {
            newly.push((Signal::ErrorRate, window.errors));
        }
        if window.unauthorized >= config.unauthorized_responses && window.fire_once(Signal::Unauthorized) {
            newly.push((Signal::Unauthorized, window.unauthorized));
        }
        for (signal, count) in newly {
            fired.push(self.fired(signal, count, None));
        }
    }

    // NOTE: a user's signals add points to the address the request came from; nothing bans or
    // throttles the user itself, so a user spread over many addresses is only slowed down.
    fn count_user_response(
        &mut self,
        user: &str,
        status: u16,
        now: Instant,
        fired: &mut Vec<Fired>,
    ) {
        let config = self.config.clone();
        let window = self.users.touch(&user.to_owned(), || Window::new(now));
        window.roll(now, config.window());
        window.requests += 1;
        if status >= 400 {
            window.errors += 1;
        }

        let requests = window.requests;
        let mut newly = Vec::new();
        if requests >= config.rate_requests && window.fire_once(Signal::UserRequestRate) {
            newly.push((Signal::UserRequestRate, requests));
        }
        let error_share = f64::from(window.errors) / f64::from(requests.max(1));
        if requests >= config.error_min_requests
            && error_share >= config.error_ratio
            && window.fire_once(Signal::UserErrorRate)
        {
            newly.push((Signal::UserErrorRate, window.errors));
        }
        for (signal, count) in newly {
            fired.push(self.fired(signal, count, Some(user)));
        }
    }

    fn count_failed_login(
        &mut self,
        source: IpAddr,
        username: &str,
        now: Instant,
        fired: &mut Vec<Fired>,
    ) {
        let username_hash = self.hasher.hash_one(username);
        let config = self.config.clone();

        let window = self.window_of(source, now);
        window.failed_logins += 1;
        if window.usernames.len() < config.stuffing_usernames as usize {
            window.usernames.insert(username_hash);
        }
        let failed = window.failed_logins;
        let distinct = u32::try_from(window.usernames.len()).unwrap_or(u32::MAX);
        let mut newly = Vec::new();
        if failed >= config.failed_logins && window.fire_once(Signal::FailedLogins) {
            newly.push((Signal::FailedLogins, failed));
        }
        if distinct >= config.stuffing_usernames && window.fire_once(Signal::ManyUsernames) {
            newly.push((Signal::ManyUsernames, distinct));
        }

        let target = self.usernames.touch(&username_hash, || UsernameState {
            window: Window::new(now),
            sources: HashSet::new(),
        });
        if now.saturating_duration_since(target.window.start) >= config.window() {
            target.window = Window::new(now);
            target.sources.clear();
        }
        if target.sources.len() < config.stuffing_sources as usize {
            target.sources.insert(source);
        }
        // NOTE: only sources that fail after the username reached the threshold get points; the
        // earlier ones that made it reach the threshold keep their scores.
        let sources = u32::try_from(target.sources.len()).unwrap_or(u32::MAX);
        if sources >= config.stuffing_sources
            && self.window_of(source, now).fire_once(Signal::ManySources)
        {
            newly.push((Signal::ManySources, sources));
        }

        for (signal, count) in newly {
            let username = (signal == Signal::ManySources).then_some(username);
            fired.push(self.fired(signal, count, username));
        }
    }

    fn fired(&self, signal: Signal, count: u32, username: Option<&str>) -> Fired {
        let config = &self.config;
        let points = match signal {
            Signal::RequestRate | Signal::UserRequestRate => config.rate_points,
            Signal::PathScan => config.scan_points,
            Signal::ErrorRate | Signal::UserErrorRate => config.error_points,
            Signal::Unauthorized => config.unauthorized_points,
            Signal::FailedLogins => config.failed_login_points,
            Signal::TokenFailures => config.token_failure_points,
            Signal::ManyUsernames => config.stuffing_username_points,
            Signal::ManySources => config.stuffing_source_points,
        };
        Fired {
            signal,
            count,
            points,
            username: username.map(str::to_owned),
        }
    }

    fn state_of(&mut self, source: IpAddr, now: Instant) -> &mut SourceState {
        self.sources.touch(&source, || SourceState {
            score: 0.0,
            scored_at: now,
            window: Window::new(now),
        })
    }

    fn window_of(&mut self, source: IpAddr, now: Instant) -> &mut Window {
        let length = self.config.window();
        let window = &mut self.state_of(source, now).window;
        window.roll(now, length);
        window
    }
}

/// Returns `score` after `elapsed` with the given half-life.
fn decayed(score: f64, elapsed: Duration, half_life: Duration) -> f64 {
    if score == 0.0 {
        return 0.0;
    }
    let half_lives = elapsed.as_secs_f64() / half_life.as_secs_f64().max(f64::MIN_POSITIVE);
    score * 0.5f64.powf(half_lives)
}

#[cfg(test)]
#[path = "tracker_tests.rs"]
mod tests;
