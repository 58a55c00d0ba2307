//! `cargo xtask test`: every test of the workspace, including the ones that need root.

use std::process::Command;

use anyhow::{Result, bail};

use crate::packages::{self, RUNTIME_PACKAGES, TEST_PACKAGES};

/// Builds what the tests run and runs `cargo test --workspace --no-fail-fast`, passing `extra` after `--`.
pub fn run(extra: &[String]) -> Result<()> {
    if !crate::is_root() {
        if std::env::var_os("CI").is_some() {
            bail!("CI runs the tests as root, so that the kernel and namespace tests run");
        }
        println!("warning: not root; tests that need network namespaces and XDP will be skipped");
    } else {
        packages::ensure_installed(RUNTIME_PACKAGES)?;
        packages::ensure_installed(TEST_PACKAGES)?;
    }
    crate::build_all()?;

    println!("==> cargo test --workspace --no-fail-fast");
    let mut command = Command::new(env!("CARGO"));
    // Every test binary runs even after one fails, so a single run shows every failure.
    command.args(["test", "--workspace", "--no-fail-fast"]);
    if !extra.is_empty() {
        command.arg("--").args(extra);
    }
    packages::run_checked(&mut command)
}
