//! The admin API: bans and statistics over HTTP/1.1 and JSON on a Unix socket, used by `fwctl`.

pub mod api;
pub mod client;
pub mod oauth_api;
mod server;

pub use client::{AdminClient, ClientError};
pub use server::{AdminBindError, AdminServer, AdminState};
