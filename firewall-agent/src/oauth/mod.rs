//! The built-in OAuth 2.1 authorization server, for deployments without an identity provider.

pub mod config;
pub mod jwt;
pub mod keys;
pub mod secrets;
pub mod storage;

pub use config::OAuthConfig;
