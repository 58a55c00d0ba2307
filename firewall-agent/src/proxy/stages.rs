//! The pipeline stages built so far: the ban check and the rate limit.

use std::sync::Arc;

use http::StatusCode;

use super::pipeline::{
    Rejection, RequestContext, RequestOutcome, Stage, StageFuture, StageOutcome,
};
use crate::bans::{BanManager, EventSink, SecurityEvent, SecurityEventKind};
use crate::limits::{RateDecision, RateLimiter};

/// Rejects clients with a ban in force with 403.
///
/// The XDP program drops banned clients before they reach the proxy on the interfaces it is
/// attached to. This stage covers the others, such as loopback, and the moment between a ban
/// decision and the kernel map update.
#[derive(Debug)]
pub struct BanCheckStage {
    bans: Arc<BanManager>,
}

impl BanCheckStage {
    /// Creates the stage.
    pub fn new(bans: Arc<BanManager>) -> Self {
        Self { bans }
    }
}

impl Stage for BanCheckStage {
    fn name(&self) -> &'static str {
        "ban_check"
    }

    fn inspect<'a>(&'a self, request: &'a RequestContext) -> StageFuture<'a> {
        let outcome = if self.bans.is_banned(request.client()) {
            StageOutcome::Reject(Rejection {
                status: StatusCode::FORBIDDEN,
                outcome: RequestOutcome::Banned,
                reason: "client is banned".into(),
                retry_after: None,
            })
        } else {
            StageOutcome::Continue
        };
        Box::pin(std::future::ready(outcome))
    }
}

/// Limits each client address to a number of requests per sliding window, responding with 429
/// and `Retry-After` above it. Each rejection is a strike sent to the ban manager.
#[derive(Debug)]
pub struct RateLimitStage {
    limiter: Arc<RateLimiter>,
    events: EventSink,
}

impl RateLimitStage {
    /// Creates the stage.
    pub fn new(limiter: Arc<RateLimiter>, events: EventSink) -> Self {
        Self { limiter, events }
    }
}

impl Stage for RateLimitStage {
    fn name(&self) -> &'static str {
        "rate_limit"
    }

    fn inspect<'a>(&'a self, request: &'a RequestContext) -> StageFuture<'a> {
        Box::pin(async move {
            let RateDecision::Limited { retry_after } = self.limiter.check(request.client()) else {
                return StageOutcome::Continue;
            };

            self.events
                .report(SecurityEvent {
                    address: request.client(),
                    kind: SecurityEventKind::RateLimited,
                })
                .await;
            StageOutcome::Reject(Rejection {
                status: StatusCode::TOO_MANY_REQUESTS,
                outcome: RequestOutcome::RateLimited,
                reason: "rate limit exceeded".into(),
                retry_after: Some(retry_after),
            })
        })
    }
}
