//! Logs and metrics.

mod logging;
mod metrics;
mod server;

pub use logging::{LoggingError, init_logging};
pub use metrics::Metrics;
pub use server::{MetricsServer, MetricsServerError};

use std::error::Error;
use std::fmt;

/// Displays an error followed by each of its sources, separated by `: `, for logs and messages
/// that must show the whole cause.
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
