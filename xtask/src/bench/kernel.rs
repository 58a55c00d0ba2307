//! `cargo xtask bench kernel`: the XDP program against xdp-filter and an empty program, through
//! `BPF_PROG_TEST_RUN`, with the report written into its section of BENCHMARKS.md.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::packages::{self, KERNEL_BENCH_PACKAGES};

/// Title of the report's section in BENCHMARKS.md; `bench-kernel` writes the same line.
const SECTION_TITLE: &str = "## Kernel layer";

/// Builds the XDP object and the `bench-kernel` binary in release mode, then runs it.
pub fn kernel() -> Result<()> {
    if !crate::is_root() {
        bail!("the kernel benchmark loads XDP programs and needs root; run it with sudo");
    }
    packages::ensure_installed(KERNEL_BENCH_PACKAGES)?;
    crate::ebpf::build()?;

    let report = crate::target_dir().join("bench-kernel.md");
    println!("==> cargo run --release --bin bench-kernel (a few minutes)");
    packages::run_checked(
        Command::new(env!("CARGO"))
            .args([
                "run",
                "--release",
                "--package",
                "integration-tests",
                "--bin",
                "bench-kernel",
                "--",
            ])
            .arg(&report),
    )?;
    let section = std::fs::read_to_string(&report)
        .with_context(|| format!("failed to read {}", report.display()))?;
    super::write_section(SECTION_TITLE, &section)
}
