//! The token stage: checks the `Authorization: Bearer` access token against the matched
//! route's `auth` rules.
//!
//! Responses follow RFC 6750 section 3:
//!
//! - 401 with `WWW-Authenticate: Bearer` and no error code when the route needs a token and
//!   none was sent;
//! - 401 with `error="invalid_token"` when the token fails a check;
//! - 400 with `error="invalid_request"` for a malformed `Authorization` header;
//! - 403 with `error="insufficient_scope"` and the required `scope` when the token lacks one.
//!
//! Token failures count as strikes against the client address.

use std::borrow::Cow;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;

use crate::bans::{EventSink as StrikeSink, SecurityEvent as StrikeEvent, SecurityEventKind};
use crate::events::{EventSinks, SecurityEvent};
use crate::proxy::pipeline::{
    Principal, Rejection, RequestContext, RequestOutcome, Stage, StageFuture, StageOutcome,
};
use crate::tokens::{TokenError, TokenResult, TokenVerifier, VerifiedToken};

/// The route's requirements on a request's token.
struct Requirement<'a> {
    required: bool,
    scopes: &'a [String],
    issuers: &'a [String],
}

/// Problem with the `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
enum BearerError {
    /// More than one `Authorization` header.
    Repeated,
    /// The `Bearer` scheme without a token, or a value that is not visible ASCII.
    Malformed,
}

/// Checks access tokens on every request.
#[derive(Debug)]
pub struct TokenStage {
    verifier: Arc<TokenVerifier>,
    default_required: bool,
    strikes: StrikeSink,
    events: EventSinks,
}

impl TokenStage {
    /// Creates the stage. `default_required` applies to requests whose route has no `auth`
    /// table, or that match no route.
    pub fn new(
        verifier: Arc<TokenVerifier>,
        default_required: bool,
        strikes: StrikeSink,
        events: EventSinks,
    ) -> Self {
        Self {
            verifier,
            default_required,
            strikes,
            events,
        }
    }

    async fn check(&self, request: &RequestContext) -> StageOutcome {
        let auth = request.route().and_then(|route| route.config().auth.as_ref());
        let requirement = match auth {
            Some(auth) => Requirement {
                required: auth.required,
                scopes: &auth.scopes,
                issuers: &auth.issuers,
            },
            None => Requirement {
                required: self.default_required,
                scopes: &[],
                issuers: &[],
            },
        };

        let verified = match check_bearer(&self.verifier, request).await {
            BearerCheck::Verified(verified) => verified,
            BearerCheck::Absent if requirement.required => {
                self.verifier.metrics().record(TokenResult::Missing);
                return missing_token(request);
            }
            BearerCheck::Absent => {
                self.verifier.metrics().record(TokenResult::Absent);
                return StageOutcome::Continue;
            }
            BearerCheck::Malformed => {
                return self.reject(request, TokenError::Malformed, true).await;
            }
            BearerCheck::Rejected(error) => return self.reject(request, error, false).await,
        };
        if !requirement.issuers.is_empty()
            && !requirement.issuers.iter().any(|issuer| *issuer == verified.issuer)
        {
            return self.reject(request, TokenError::IssuerNotAccepted, false).await;
        }
        if !verified.has_scopes(requirement.scopes) {
            self.verifier.metrics().record(TokenResult::InsufficientScope);
            return insufficient_scope(request, requirement.scopes);
        }

        self.verifier.metrics().record(TokenResult::Accepted);
        request.set_principal(principal(&verified));
        StageOutcome::Continue
    }

    /// Counts a failed token against the client, emits the event and builds the 401 (or the
    /// 400 for a malformed header).
    async fn reject(
        &self,
        request: &RequestContext,
        error: TokenError,
        malformed_header: bool,
    ) -> StageOutcome {
        self.verifier.metrics().record(TokenResult::Rejected(error));
        self.events.emit(&SecurityEvent::TokenRejected {
            client: request.client(),
            request_id: request.request_id(),
            reason: error.label(),
        });
        // NOTE: a ban that token strikes complete is stored with the `rate_limit` origin,
        // because the strike API has no origin of its own for token failures.
        self.strikes
            .report(StrikeEvent {
                address: request.client(),
                kind: SecurityEventKind::TokenRejected,
            })
            .await;

        let (status, challenge, description) = if malformed_header {
            (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the authorization header is malformed",
            )
        } else {
            (StatusCode::UNAUTHORIZED, "invalid_token", error.description())
        };
        set_challenge(
            request,
            &format!("Bearer error=\"{challenge}\", error_description=\"{description}\""),
        );
        StageOutcome::Reject(Rejection {
            status,
            outcome: RequestOutcome::TokenRejected,
            reason: Cow::Borrowed(description),
            retry_after: None,
        })
    }
}

impl Stage for TokenStage {
    fn name(&self) -> &'static str {
        "tokens"
    }

    fn inspect<'a>(&'a self, request: &'a RequestContext) -> StageFuture<'a> {
        Box::pin(self.check(request))
    }
}

/// The result of checking a request's bearer token, before the route's issuer and scope
/// requirements apply.
#[derive(Clone, Debug)]
pub enum BearerCheck {
    /// No `Authorization` header, or one with another scheme.
    Absent,
    /// A malformed or repeated `Authorization` header.
    Malformed,
    /// The token passed every check of the verifier.
    Verified(Arc<VerifiedToken>),
    /// The token failed a check.
    Rejected(TokenError),
}

/// Checks the request's bearer token with `verifier` and records the result in the request,
/// so that a later call, such as the token stage's after the rate-limit stage's, reuses it
/// instead of verifying again. Records no token metrics, because the token stage does.
pub async fn check_bearer(verifier: &TokenVerifier, request: &RequestContext) -> BearerCheck {
    if let Some(check) = request.bearer_check() {
        return check.clone();
    }
    let check = match bearer_token(request.headers()) {
        Ok(None) => BearerCheck::Absent,
        Err(_) => BearerCheck::Malformed,
        Ok(Some(token)) => match verifier.verify(token).await {
            Ok(verified) => BearerCheck::Verified(verified),
            Err(error) => BearerCheck::Rejected(error),
        },
    };
    request.set_bearer_check(check.clone());
    check
}

/// Returns the bearer token of the `Authorization` header, or `None` when there is no such
/// header or it uses another scheme. A token anywhere else, such as an `access_token` query
/// parameter, is not read.
fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, BearerError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(BearerError::Repeated);
    }
    let value = value.to_str().map_err(|_| BearerError::Malformed)?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = rest.trim_matches(|c| c == ' ' || c == '\t');
    if token.is_empty() || token.contains([' ', '\t']) {
        return Err(BearerError::Malformed);
    }
    Ok(Some(token))
}

fn principal(token: &VerifiedToken) -> Principal {
    Principal {
        subject: token.subject.clone(),
        client_id: token.client_id.clone(),
        scopes: token.scopes.clone(),
        issuer: token.issuer.clone(),
    }
}

fn missing_token(request: &RequestContext) -> StageOutcome {
    set_challenge(request, "Bearer");
    StageOutcome::Reject(Rejection {
        status: StatusCode::UNAUTHORIZED,
        outcome: RequestOutcome::TokenRejected,
        reason: "an access token is required".into(),
        retry_after: None,
    })
}

fn insufficient_scope(request: &RequestContext, scopes: &[String]) -> StageOutcome {
    // Scope names were checked at config load to contain no quote or backslash.
    set_challenge(
        request,
        &format!(
            "Bearer error=\"insufficient_scope\", error_description=\"the token lacks a required scope\", scope=\"{}\"",
            scopes.join(" ")
        ),
    );
    StageOutcome::Reject(Rejection {
        status: StatusCode::FORBIDDEN,
        outcome: RequestOutcome::InsufficientScope,
        reason: "the access token lacks a required scope".into(),
        retry_after: None,
    })
}

fn set_challenge(request: &RequestContext, challenge: &str) {
    if let Ok(value) = HeaderValue::from_str(challenge) {
        request.add_response_header(header::WWW_AUTHENTICATE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                header::AUTHORIZATION,
                HeaderValue::from_str(value).expect("valid header value"),
            );
        }
        headers
    }

    #[test]
    fn bearer_scheme_read_case_insensitively() {
        for value in ["Bearer abc.def.ghi", "bearer abc.def.ghi", "BEARER  abc.def.ghi "] {
            assert_eq!(bearer_token(&headers(&[value])), Ok(Some("abc.def.ghi")), "{value}");
        }
    }

    #[test]
    fn other_schemes_ignored() {
        assert_eq!(bearer_token(&headers(&["Basic dXNlcjpwYXNz"])), Ok(None));
        assert_eq!(bearer_token(&headers(&["Bearertoken"])), Ok(None));
        assert_eq!(bearer_token(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn malformed_bearer_rejected() {
        assert_eq!(
            bearer_token(&headers(&["Bearer"])),
            Err(BearerError::Malformed)
        );
        assert_eq!(
            bearer_token(&headers(&["Bearer a b"])),
            Err(BearerError::Malformed)
        );
        assert_eq!(
            bearer_token(&headers(&["Bearer a.b.c", "Bearer d.e.f"])),
            Err(BearerError::Repeated)
        );
    }
}
