//! The `[threat.sources]` section: behaviour signals, the per-source score and escalating bans.

use std::time::Duration;

use serde::Deserialize;

use crate::bans::EscalationPolicy;
use crate::config::MAX_DURATION_SECONDS;

/// Action of the threat engine when a source reaches the ban threshold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceMode {
    /// Ban the source in the kernel.
    #[default]
    Enforce,
    /// Write an audit record and ban nothing.
    DetectionOnly,
}

/// `[threat.sources]` section. A behaviour signal fires when its count within one window
/// reaches its threshold, adds its points to the source's score and then waits for the next
/// window. Points that add up to `ban_threshold` ban the source.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourcesConfig {
    /// Whether a source at the threshold is banned (`enforce`) or only logged
    /// (`detection_only`).
    pub mode: SourceMode,
    /// Score at which a source is banned.
    pub ban_threshold: f64,
    /// Time in seconds after which a source's score has halved.
    pub half_life_seconds: u64,
    /// Length in seconds of the window that behaviour signals count in.
    pub window_seconds: u64,
    /// Maximum number of sources, and separately of users and usernames, tracked at once. The
    /// least recently seen is forgotten first.
    pub max_sources: usize,
    /// Factor applied to a request's anomaly score before it is added to the source's score.
    pub request_score_weight: f64,
    /// Points added for each request the detectors blocked.
    pub blocked_request_points: f64,
    /// Requests per window from one source or user that count as abusive.
    pub rate_requests: u32,
    /// Points of the request-rate signal.
    pub rate_points: f64,
    /// Distinct paths per window that, with `scan_not_found_ratio`, mark a scanner.
    pub scan_distinct_paths: u32,
    /// Share of 404 responses, from 0 to 1, that with `scan_distinct_paths` marks a scanner.
    pub scan_not_found_ratio: f64,
    /// Points of the path-scanning signal.
    pub scan_points: f64,
    /// Minimum responses per window before the error share is judged.
    pub error_min_requests: u32,
    /// Share of 4xx and 5xx responses, from 0 to 1, that counts as abusive.
    pub error_ratio: f64,
    /// Points of the error-rate signal.
    pub error_points: f64,
    /// 401 and 403 responses per window that count as guessing credentials. Login forms that
    /// refuse with 403 count as well as those that refuse with 401.
    pub unauthorized_responses: u32,
    /// Points of the 401 and 403 signal.
    pub unauthorized_points: f64,
    /// Failed logins per window from one source.
    pub failed_logins: u32,
    /// Points of the failed-login signal.
    pub failed_login_points: f64,
    /// Rejected tokens per window from one source.
    pub token_failures: u32,
    /// Points of the rejected-token signal.
    pub token_failure_points: f64,
    /// Distinct usernames per window in failed logins from one source (credential stuffing).
    pub stuffing_usernames: u32,
    /// Points of the many-usernames signal.
    pub stuffing_username_points: f64,
    /// Distinct sources per window failing to log in as one username.
    pub stuffing_sources: u32,
    /// Points added to each source that fails to log in as a username that many sources try.
    pub stuffing_source_points: f64,
    /// Duration in seconds of a source's first ban.
    pub ban_base_seconds: u64,
    /// Multiplier of the ban duration per earlier ban of the source.
    pub ban_factor: f64,
    /// Maximum ban duration in seconds, before jitter.
    pub ban_max_seconds: u64,
    /// Largest share of a ban's duration that random jitter adds or removes, from 0 to 0.5.
    pub ban_jitter_ratio: f64,
    /// Time in seconds after which an earlier ban no longer makes the next one longer.
    pub offence_history_seconds: u64,
}

impl Default for SourcesConfig {
    fn default() -> Self {
        Self {
            mode: SourceMode::Enforce,
            ban_threshold: 100.0,
            half_life_seconds: 600,
            window_seconds: 60,
            max_sources: 100_000,
            request_score_weight: 1.0,
            blocked_request_points: 20.0,
            rate_requests: 1000,
            rate_points: 50.0,
            scan_distinct_paths: 20,
            scan_not_found_ratio: 0.5,
            scan_points: 100.0,
            error_min_requests: 20,
            error_ratio: 0.5,
            error_points: 30.0,
            unauthorized_responses: 20,
            unauthorized_points: 100.0,
            failed_logins: 10,
            failed_login_points: 100.0,
            token_failures: 20,
            token_failure_points: 50.0,
            stuffing_usernames: 5,
            stuffing_username_points: 100.0,
            stuffing_sources: 10,
            stuffing_source_points: 50.0,
            ban_base_seconds: 600,
            ban_factor: 2.0,
            ban_max_seconds: 86_400,
            ban_jitter_ratio: 0.1,
            offence_history_seconds: 30 * 86_400,
        }
    }
}

impl SourcesConfig {
    /// Returns the score half-life.
    pub fn half_life(&self) -> Duration {
        Duration::from_secs(self.half_life_seconds)
    }

    /// Returns the signal window.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_seconds)
    }

    /// Returns the escalation policy of bans.
    pub fn escalation(&self) -> EscalationPolicy {
        EscalationPolicy {
            base: Duration::from_secs(self.ban_base_seconds),
            factor: self.ban_factor,
            max: Duration::from_secs(self.ban_max_seconds),
            jitter_ratio: self.ban_jitter_ratio,
            history: Duration::from_secs(self.offence_history_seconds),
        }
    }

    /// Checks ranges.
    ///
    /// # Errors
    ///
    /// The dotted key and the problem, for [`crate::config::ConfigError::Invalid`].
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (value, key) in [
            (self.half_life_seconds, "threat.sources.half_life_seconds"),
            (self.window_seconds, "threat.sources.window_seconds"),
            (self.ban_base_seconds, "threat.sources.ban_base_seconds"),
            (self.ban_max_seconds, "threat.sources.ban_max_seconds"),
            (
                self.offence_history_seconds,
                "threat.sources.offence_history_seconds",
            ),
        ] {
            if value == 0 || value > MAX_DURATION_SECONDS {
                return Err((key, format!("must be between 1 and {MAX_DURATION_SECONDS}")));
            }
        }
        if self.ban_max_seconds < self.ban_base_seconds {
            return Err((
                "threat.sources.ban_max_seconds",
                format!(
                    "must be at least ban_base_seconds ({})",
                    self.ban_base_seconds
                ),
            ));
        }
        if self.max_sources == 0 {
            return Err(("threat.sources.max_sources", "must be at least 1".into()));
        }
        if !(self.ban_threshold.is_finite() && self.ban_threshold > 0.0) {
            return Err((
                "threat.sources.ban_threshold",
                "must be a number above 0".into(),
            ));
        }
        if !(self.ban_factor.is_finite() && (1.0..=100.0).contains(&self.ban_factor)) {
            return Err((
                "threat.sources.ban_factor",
                "must be between 1 and 100".into(),
            ));
        }
        if !(0.0..=0.5).contains(&self.ban_jitter_ratio) {
            return Err((
                "threat.sources.ban_jitter_ratio",
                "must be between 0 and 0.5".into(),
            ));
        }
        for (value, key) in [
            (
                self.scan_not_found_ratio,
                "threat.sources.scan_not_found_ratio",
            ),
            (self.error_ratio, "threat.sources.error_ratio"),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err((key, "must be between 0 and 1".into()));
            }
        }
        self.validate_points()
    }

    fn validate_points(&self) -> Result<(), (&'static str, String)> {
        for (value, key) in [
            (
                self.request_score_weight,
                "threat.sources.request_score_weight",
            ),
            (
                self.blocked_request_points,
                "threat.sources.blocked_request_points",
            ),
            (self.rate_points, "threat.sources.rate_points"),
            (self.scan_points, "threat.sources.scan_points"),
            (self.error_points, "threat.sources.error_points"),
            (
                self.unauthorized_points,
                "threat.sources.unauthorized_points",
            ),
            (
                self.failed_login_points,
                "threat.sources.failed_login_points",
            ),
            (
                self.token_failure_points,
                "threat.sources.token_failure_points",
            ),
            (
                self.stuffing_username_points,
                "threat.sources.stuffing_username_points",
            ),
            (
                self.stuffing_source_points,
                "threat.sources.stuffing_source_points",
            ),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err((key, "must be a number of at least 0".into()));
            }
        }
        for (value, key) in [
            (self.rate_requests, "threat.sources.rate_requests"),
            (
                self.scan_distinct_paths,
                "threat.sources.scan_distinct_paths",
            ),
            (self.error_min_requests, "threat.sources.error_min_requests"),
            (
                self.unauthorized_responses,
                "threat.sources.unauthorized_responses",
            ),
            (self.failed_logins, "threat.sources.failed_logins"),
            (self.token_failures, "threat.sources.token_failures"),
            (self.stuffing_usernames, "threat.sources.stuffing_usernames"),
            (self.stuffing_sources, "threat.sources.stuffing_sources"),
        ] {
            if value == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        Ok(())
    }
}
