//! `cargo xtask bench limits`: runs the rate-limit benchmark and records it in BENCHMARKS.md.

use std::fmt::Write as _;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::packages::{self, LIMITS_BENCH_PACKAGES};

/// Title of the section that each run replaces.
const SECTION_TITLE: &str = "## Rate limits";

/// Builds and runs the benchmark in release mode, then writes its rows to BENCHMARKS.md.
pub fn limits() -> Result<()> {
    if crate::is_root() {
        packages::ensure_installed(LIMITS_BENCH_PACKAGES)?;
    }
    println!("==> cargo run --release --example limits_bench");
    let output = Command::new(env!("CARGO"))
        .args([
            "run",
            "--release",
            "--quiet",
            "--package",
            "firewall-agent",
            "--example",
            "limits_bench",
        ])
        .output()
        .context("failed to run the limits benchmark")?;
    if !output.status.success() {
        bail!(
            "the limits benchmark failed with {}:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let rows = String::from_utf8(output.stdout).context("benchmark output is not UTF-8")?;
    print!("{rows}");

    super::write_section(SECTION_TITLE, &section(&rows)?)
}

fn section(rows: &str) -> Result<String> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|name| name.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let redis = Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|_| "redis-server not installed".into());

    let mut text = String::new();
    writeln!(text, "{SECTION_TITLE}\n")?;
    writeln!(
        text,
        "Written by `cargo xtask bench limits` (release build, `firewall-agent/examples/limits_bench.rs`) \
         on {cpu}, {cores} cores, {redis}. Redis runs on loopback on the same machine, so client \
         and server share the cores. The sorted-set column is the common design that the \
         benchmark implements itself: one member per request, one MULTI round trip per tier, \
         tiers one after another.\n"
    )?;
    writeln!(
        text,
        "| engine | measure | this engine | sorted sets | ratio |"
    )?;
    writeln!(text, "| --- | --- | --- | --- | --- |")?;
    text.push_str(rows);
    Ok(text)
}

