//! Building the XDP object.

use std::path::PathBuf;

use anyhow::Result;

/// Builds the XDP object and returns its path.
pub fn build() -> Result<PathBuf> {
    anyhow::bail!("not written yet")
}
