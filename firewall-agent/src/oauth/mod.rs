//! The built-in OAuth 2.1 authorization server, for deployments without an identity provider.

pub mod keys;
