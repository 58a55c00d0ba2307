//! Debian packages that the demo and the tests run.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// Packages the demo and the tests call: curl as the HTTP client, iproute2 for namespaces and
/// veths, util-linux for `setpriv`.
pub const RUNTIME_PACKAGES: &[&str] = &["curl", "iproute2", "util-linux"];

/// Packages the tests need besides [`RUNTIME_PACKAGES`]: redis-server (with redis-cli) for the
/// Redis rate-limit engine, which the tests start on loopback themselves.
pub const TEST_PACKAGES: &[&str] = &["redis-server"];

/// Packages the benchmarks need.
pub const BENCH_PACKAGES: &[&str] = &["redis-server"];

/// Installs whichever of `packages` are missing, with apt-get. Does nothing, quickly, when all are
/// installed. Fails with the command to run where this is not a Debian-family host run as root.
pub fn ensure_installed(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|package| !is_installed(package))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let command = format!("apt-get install -y {}", missing.join(" "));
    if !std::path::Path::new("/usr/bin/apt-get").exists() {
        bail!("missing packages: {}; install them with your package manager", missing.join(", "));
    }
    if !crate::is_root() {
        bail!("missing packages: {}; install them as root: {command}", missing.join(", "));
    }
    println!("installing Debian packages: {}", missing.join(" "));
    if apt_install(&missing)? {
        return Ok(());
    }
    // The package lists may be missing or stale on a fresh machine.
    run_checked(Command::new("apt-get").args(["update", "-q"]))?;
    if !apt_install(&missing)? {
        bail!("`{command}` failed; see apt-get's output above");
    }
    Ok(())
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn apt_install(packages: &[&str]) -> Result<bool> {
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("failed to run apt-get")?;
    Ok(status.success())
}

/// Runs `command` and fails, naming it, if it exits non-zero.
pub fn run_checked(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("failed to run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}
