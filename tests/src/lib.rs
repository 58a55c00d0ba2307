//! Shared helpers for the integration tests: test hosts in network namespaces, the agent and
//! `fwctl` as real processes, and a small upstream server.

pub mod agent;
pub mod bench;
pub mod edge;
pub mod netns;
pub mod oauth;
pub mod frames;
pub mod tokens;
