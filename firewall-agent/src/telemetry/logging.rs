//! Log output through `tracing`: human-readable text by default, JSON lines on request.
//!
//! `RUST_LOG` sets the filter (for example `RUST_LOG=firewall_agent=debug`); without it, `info`
//! and above are logged.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Error from [`init_logging`].
#[derive(Debug, thiserror::Error)]
#[error("failed to set up logging: {message}")]
pub struct LoggingError {
    message: String,
}

/// Installs the global log subscriber, writing to stderr.
///
/// # Errors
///
/// [`LoggingError`] when `RUST_LOG` does not parse or a subscriber is already installed.
pub fn init_logging(format: LogFormat) -> Result<(), LoggingError> {
    let filter = EnvFilter::builder()
        .with_default_directive(tracing::Level::INFO.into())
        .from_env()
        .map_err(|error| LoggingError {
            message: format!("invalid RUST_LOG: {error}"),
        })?;

    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|error| LoggingError {
        message: error.to_string(),
    })
}
