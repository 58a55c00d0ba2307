//! The pipeline stage that serves the authorization server's endpoints on the proxy listener.

use std::sync::Arc;

use http::{Response, StatusCode};
use http_body_util::{BodyExt as _, Full};

use super::http::{OAuthRequest, OAuthResponse};
use super::server::AuthorizationServer;
use crate::proxy::{ProxyBody, RequestContext, RequestOutcome, Stage, StageFuture, StageOutcome};
use crate::telemetry::ErrorChain;

/// Serves the requests under the authorization server's prefix and its metadata path, and
/// passes every other request to the next stage.
#[derive(Debug)]
pub struct OAuthStage {
    server: Arc<AuthorizationServer>,
}

impl OAuthStage {
    /// Creates the stage.
    pub fn new(server: Arc<AuthorizationServer>) -> Self {
        Self { server }
    }
}

impl Stage for OAuthStage {
    fn name(&self) -> &'static str {
        "oauth"
    }

    fn inspect<'a>(&'a self, request: &'a RequestContext) -> StageFuture<'a> {
        Box::pin(async move {
            if !self.server.serves(request.path()) {
                return StageOutcome::Continue;
            }
            let oauth_request = OAuthRequest {
                client: request.client(),
                method: request.method().clone(),
                path: request.path().to_owned(),
                query: request.query().map(str::to_owned),
                headers: request.headers().clone(),
                body: request.body().clone(),
            };

            // Argon2 and store transactions block, so they run off the async workers.
            let server = Arc::clone(&self.server);
            let response = tokio::task::spawn_blocking(move || server.handle(&oauth_request))
                .await
                .unwrap_or_else(|error| {
                    tracing::error!(error = %ErrorChain(&error), "oauth request handler failed");
                    OAuthResponse::oauth_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        "the authorization server failed",
                    )
                });
            StageOutcome::Respond {
                outcome: RequestOutcome::Answered,
                response: into_proxy_response(response),
            }
        })
    }
}

fn into_proxy_response(response: OAuthResponse) -> Response<ProxyBody> {
    let mut proxy_response = Response::new(
        Full::new(response.body)
            .map_err(|never| match never {})
            .boxed(),
    );
    *proxy_response.status_mut() = response.status;
    *proxy_response.headers_mut() = response.headers;
    proxy_response
}
