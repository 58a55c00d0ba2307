//! `cargo xtask bench kernel`: the XDP program against xdp-filter and an empty program, through
//! `BPF_PROG_TEST_RUN`, with the report written to BENCHMARKS.md.

use std::process::Command;

use anyhow::{Result, bail};

use crate::packages::{self, BENCH_PACKAGES};

/// Builds the XDP object and the `bench-kernel` binary in release mode, then runs it.
pub fn kernel() -> Result<()> {
    if !crate::is_root() {
        bail!("the kernel benchmark loads XDP programs and needs root; run it with sudo");
    }
    packages::ensure_installed(BENCH_PACKAGES)?;
    crate::ebpf::build()?;

    let report = crate::workspace_root().join("BENCHMARKS.md");
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
    )
}
