//! Configuration reload: the parts of the agent that can take a new config without a restart.
//!
//! The agent re-reads its config file on SIGHUP, validates it as at start, and hands it to
//! every registered [`Reloadable`]. A part that rejects the new config keeps its old one; the
//! others still take theirs. Sections without a registered part need a restart.

use std::fmt;
use std::sync::Arc;

use crate::config::Config;
use crate::telemetry::ErrorChain;

/// A part of the agent that can apply a new config while running.
pub trait Reloadable: Send + Sync {
    /// Config sections this part applies, such as `limits`, for logs.
    fn sections(&self) -> &'static str;

    /// Applies the new config.
    ///
    /// # Errors
    ///
    /// A message saying what in the new config could not be applied.
    fn reload(&self, config: &Config) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// The error of a reload: the sections that kept their old config.
#[derive(Debug, thiserror::Error)]
#[error("reload failed for {sections}; they keep their previous config")]
pub struct ReloadError {
    /// Sections that failed, comma separated.
    pub sections: String,
}

/// Every reloadable part of the agent.
#[derive(Clone, Default)]
pub struct Reloader {
    parts: Vec<Arc<dyn Reloadable>>,
}

impl fmt::Debug for Reloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sections: Vec<&str> = self.parts.iter().map(|part| part.sections()).collect();
        f.debug_struct("Reloader")
            .field("sections", &sections)
            .finish()
    }
}

impl Reloader {
    /// Creates a reloader over `parts`.
    pub fn new(parts: Vec<Arc<dyn Reloadable>>) -> Self {
        Self { parts }
    }

    /// Hands `config`, already validated, to every part.
    ///
    /// # Errors
    ///
    /// [`ReloadError`] naming the parts that rejected it; each failure is logged.
    pub fn reload(&self, config: &Config) -> Result<(), ReloadError> {
        let mut failed = Vec::new();
        for part in &self.parts {
            if let Err(error) = part.reload(config) {
                tracing::error!(sections = part.sections(), error = %ErrorChain(&*error), "failed to reload a config section");
                failed.push(part.sections());
            }
        }
        if failed.is_empty() {
            tracing::info!("config reloaded");
            Ok(())
        } else {
            Err(ReloadError {
                sections: failed.join(", "),
            })
        }
    }
}
