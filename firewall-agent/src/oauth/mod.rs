//! The built-in OAuth 2.1 authorization server, for deployments without an identity provider.
//!
//! It serves the authorization endpoint with a login page, the token, revocation,
//! introspection and JWKS endpoints under a prefix of the proxy listener (`/oauth2/` by
//! default), and the RFC 8414 metadata at `/.well-known/oauth-authorization-server`. Access
//! tokens are ES256 JWTs; codes and refresh tokens are opaque and stored hashed.

mod authorize;
pub mod bridge;
pub mod config;
pub mod http;
mod introspect;
pub mod jwt;
pub mod keys;
pub mod secrets;
pub mod server;
pub mod stage;
pub mod storage;
mod token;

pub use authorize::redirect_uri_registered;
pub use config::OAuthConfig;
pub use server::{AuthorizationServer, OAuthError};
pub use stage::OAuthStage;
