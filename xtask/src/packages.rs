//! Debian packages that the demo and the tests run.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// Packages the demo and the tests call: curl as the HTTP client, iproute2 for namespaces and
/// veths, util-linux for `setpriv`.
pub const RUNTIME_PACKAGES: &[&str] = &["curl", "iproute2", "util-linux"];

/// Packages the tests need besides [`RUNTIME_PACKAGES`]: redis-server (with redis-cli) for the
/// Redis rate-limit engine, which the tests start on loopback themselves; Python's authlib,
/// PyJWT and requests as OAuth clients of the agent's authorization server; and the attack
/// tools sqlmap and hydra, which the threat tests run from a client namespace against an
/// injectable upstream written in Python; openssl, whose `s_client` checks that TLS 1.1 is
/// refused.
pub const TEST_PACKAGES: &[&str] = &[
    "redis-server",
    "python3",
    "openssl",
    "python3-authlib",
    "python3-jwt",
    "python3-requests",
    "sqlmap",
    "hydra",
];

/// Packages the kernel benchmark calls: xdp-filter (xdp-tools) as the reference, bpftool to
/// run programs through `BPF_PROG_TEST_RUN`, and for the live packet rate trafgen (netsniff-ng)
/// to flood and nftables as the second reference.
pub const KERNEL_BENCH_PACKAGES: &[&str] =
    &["xdp-tools", "bpftool", "iproute2", "netsniff-ng", "nftables"];

/// Packages the rate-limit benchmark calls: redis-server, which it starts on loopback.
pub const LIMITS_BENCH_PACKAGES: &[&str] = &["redis-server"];

/// Packages the token benchmark calls: PyJWT with its crypto backend, as the reference that
/// verifies the same tokens.
pub const TOKENS_BENCH_PACKAGES: &[&str] = &["python3-jwt", "python3-cryptography"];
/// Packages the HTTP benchmark calls: wrk as the load generator, nginx as the upstream and the
/// reference proxy, openssl for the test certificate.
pub const HTTP_BENCH_PACKAGES: &[&str] = &["wrk", "nginx", "openssl"];

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
    apt_install(&missing)
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// How many times apt-get retries a failed download. A mirror that refuses connections for a
/// moment would otherwise fail a fresh machine's first build.
const APT_RETRIES: &str = "Acquire::Retries=5";

/// Runs `apt-get update`, then `apt-get install` for `packages`.
///
/// The update comes first because a machine's package lists can be old enough to lack a package
/// or to offer a version the build cannot use (an older `rustc-web` with another LLVM).
pub fn apt_install(packages: &[&str]) -> Result<()> {
    run_checked(Command::new("apt-get").args(["update", "-q", "-o", APT_RETRIES]))?;
    run_checked(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends", "-o", APT_RETRIES])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
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
