//! Security events from the pipeline stages to the ban manager.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use super::{BanError, BanManager};
use crate::telemetry::ErrorChain;

/// Kind of a security event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityEventKind {
    /// A request was rejected by the rate limit. Counts as one strike.
    RateLimited,
    /// A request carried an access token that failed a check. Counts as one strike.
    TokenRejected,
}

impl SecurityEventKind {
    /// Label used in logs and ban reasons.
    pub const fn label(self) -> &'static str {
        match self {
            SecurityEventKind::RateLimited => "rate_limited",
            SecurityEventKind::TokenRejected => "token_rejected",
        }
    }
}

/// One security event about a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecurityEvent {
    /// The client's address.
    pub address: IpAddr,
    /// What happened.
    pub kind: SecurityEventKind,
}

/// The stages' handle on the ban manager.
#[derive(Clone, Debug)]
pub struct EventSink {
    manager: Arc<BanManager>,
}

impl EventSink {
    /// Creates a sink that reports to `manager`.
    pub fn new(manager: Arc<BanManager>) -> Self {
        Self { manager }
    }

    /// Counts the event as a strike. When it completes the strikes for a ban, waits until the
    /// ban is stored and in the kernel, so the response to the request that earned the ban is
    /// sent only once the ban is in force. Failures are logged, not returned, because the
    /// request is rejected either way.
    pub async fn report(&self, event: SecurityEvent) {
        let address = event.address.to_canonical();
        if !self.manager.count_strike(address, Instant::now()) {
            return;
        }

        // Only the strike that completes a ban pays for the store write, on a blocking thread.
        let manager = Arc::clone(&self.manager);
        let reason = event.kind.label();
        let result = tokio::task::spawn_blocking(move || {
            manager.ban_for_strikes_at(address, reason, std::time::SystemTime::now())
        })
        .await;

        match result {
            Ok(Ok(_)) => {}
            // The allowlist always wins, so this is the configured outcome, not a failure.
            Ok(Err(error @ BanError::Allowlisted { .. })) => {
                tracing::info!(%address, reason, "not banning an allowlisted source: {error}");
            }
            Ok(Err(error)) => {
                tracing::error!(%address, error = %ErrorChain(&error), "failed to apply a ban");
            }
            Err(error) => {
                tracing::error!(%address, error = %ErrorChain(&error), "ban task failed");
            }
        }
    }
}
