//! The pipeline stages built so far: the ban check and the rate limit here, the token check
//! in [`tokens`], threat scoring in [`threat`] and request validation.

pub mod tokens;

pub mod threat;

mod validation;

pub use validation::ValidationStage;

use std::sync::Arc;

use http::StatusCode;

use super::pipeline::{
    Rejection, RequestContext, RequestOutcome, Stage, StageFuture, StageOutcome,
};
use crate::bans::{BanManager, EventSink, SecurityEvent, SecurityEventKind};
use crate::limits::headers::{RATELIMIT, RATELIMIT_POLICY};
use crate::limits::{KeyInput, RateLimits, Verdict};
use crate::tokens::{TokenVerifier, VerifiedToken};
use tokens::BearerCheck;

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

/// Checks every rate-limit rule that covers a request. Over an enforced limit the request gets
/// 429 with `Retry-After`, and a rule whose action is `strike` also counts a strike toward a
/// ban. When Redis fails and a covering rule fails closed, the request gets 503.
///
/// This stage runs before the token stage, so that one engine call admits a request against
/// all its rules at once. When a covering rule keys on the token subject or the client id,
/// this stage verifies the bearer token with the token stage's verifier and records the
/// result in the request. The token stage then reuses it without verifying again. A
/// request without a valid token (absent, malformed or failing a check) gets an empty
/// subject and client id, so all such requests share one bucket per rule instead of escaping
/// it. The token stage still rejects them with 401 where the route needs a token. A rule
/// that must also limit anonymous clients one by one adds `client_address` to its key.
#[derive(Debug)]
pub struct RateLimitStage {
    limits: Arc<RateLimits>,
    events: EventSink,
    tokens: Option<Arc<TokenVerifier>>,
}

impl RateLimitStage {
    /// Creates the stage. Without [`RateLimitStage::with_tokens`], token key parts are empty.
    pub fn new(limits: Arc<RateLimits>, events: EventSink) -> Self {
        Self {
            limits,
            events,
            tokens: None,
        }
    }

    /// Verifies bearer tokens with `verifier` for rules that key on the token subject or the
    /// client id.
    #[must_use]
    pub fn with_tokens(mut self, verifier: Arc<TokenVerifier>) -> Self {
        self.tokens = Some(verifier);
        self
    }

    /// Returns the verified token of the request when a covering rule keys on it.
    async fn token_for_keys(&self, request: &RequestContext) -> Option<Arc<VerifiedToken>> {
        let verifier = self.tokens.as_ref()?;
        if !self.limits.keys_on_token(request.method(), request.path()) {
            return None;
        }
        match tokens::check_bearer(verifier, request).await {
            BearerCheck::Verified(token) => Some(token),
            BearerCheck::Absent | BearerCheck::Malformed | BearerCheck::Rejected(_) => None,
        }
    }
}

impl Stage for RateLimitStage {
    fn name(&self) -> &'static str {
        "rate_limit"
    }

    fn inspect<'a>(&'a self, request: &'a RequestContext) -> StageFuture<'a> {
        Box::pin(async move {
            let token = self.token_for_keys(request).await;
            let input = KeyInput {
                client: request.client(),
                method: request.method(),
                path: request.path(),
                headers: request.headers(),
                token_subject: token.as_ref().and_then(|token| token.subject.as_deref()),
                client_id: token.as_ref().and_then(|token| token.client_id.as_deref()),
            };
            let decision = self.limits.check(&input).await;
            if let Some(headers) = decision.headers {
                request.add_response_header(RATELIMIT_POLICY.clone(), headers.policy);
                request.add_response_header(RATELIMIT.clone(), headers.state);
            }

            match decision.verdict {
                Verdict::Admit => StageOutcome::Continue,
                Verdict::Reject {
                    retry_after,
                    strike,
                    ..
                } => {
                    if strike {
                        self.events
                            .report(SecurityEvent {
                                address: request.client(),
                                kind: SecurityEventKind::RateLimited,
                            })
                            .await;
                    }
                    StageOutcome::Reject(Rejection {
                        status: StatusCode::TOO_MANY_REQUESTS,
                        outcome: RequestOutcome::RateLimited,
                        reason: "rate limit exceeded".into(),
                        retry_after: Some(retry_after),
                    })
                }
                Verdict::Unavailable { .. } => StageOutcome::Reject(Rejection {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    outcome: RequestOutcome::LimitStoreUnavailable,
                    reason: "service temporarily unavailable".into(),
                    retry_after: Some(std::time::Duration::from_secs(1)),
                }),
            }
        })
    }
}
