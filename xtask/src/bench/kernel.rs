//! `cargo xtask bench kernel`: the XDP program against xdp-filter and an empty program, through
//! `BPF_PROG_TEST_RUN`, then the live packet rate on a veth pair under a trafgen flood (see
//! [`super::live`]), with the report written into its section of BENCHMARKS.md.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::packages::{self, KERNEL_BENCH_PACKAGES};

/// Title of the report's section in BENCHMARKS.md; `bench-kernel` writes the same line.
const SECTION_TITLE: &str = "## Kernel layer";

/// Builds the XDP object and the `bench-kernel` binary in release mode, runs it, then measures
/// the live packet rate. With `live_only`, measures only the live packet rate and keeps the rest
/// of the section as it is.
pub fn kernel(live_only: bool) -> Result<()> {
    if !crate::is_root() {
        bail!("the kernel benchmark loads XDP programs and needs root; run it with sudo");
    }
    packages::ensure_installed(KERNEL_BENCH_PACKAGES)?;
    // The live part runs the agent, which embeds the XDP object, and fwctl to ban the client.
    crate::build_all()?;

    if live_only {
        let live = super::live::run()?;
        let path = crate::workspace_root().join("BENCHMARKS.md");
        let existing = std::fs::read_to_string(&path).unwrap_or_default();
        let section = current_section(&existing).unwrap_or_else(|| format!("{SECTION_TITLE}\n\n"));
        return super::write_section(SECTION_TITLE, &with_live(&section, &live));
    }

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
    let live = super::live::run()?;
    super::write_section(SECTION_TITLE, &with_live(&section, &live))
}

/// Returns the kernel section of `benchmarks`, from its title up to the next `## ` heading.
fn current_section(benchmarks: &str) -> Option<String> {
    let start = benchmarks.find(SECTION_TITLE)?;
    let after = start + SECTION_TITLE.len();
    let end = benchmarks[after..]
        .find("\n## ")
        .map_or(benchmarks.len(), |offset| after + offset + 1);
    Some(benchmarks[start..end].to_owned())
}

/// Replaces the live subsection of `section`, or appends it, with a blank line after it so the
/// next section of BENCHMARKS.md stays apart.
fn with_live(section: &str, live: &str) -> String {
    let kept = section
        .find(super::live::SUBSECTION_TITLE)
        .map_or(section, |start| &section[..start]);
    format!("{}\n\n{}\n\n", kept.trim_end(), live.trim_end())
}

#[cfg(test)]
mod tests {
    use super::{current_section, with_live};

    const LIVE: &str = "### Live packet rate\n\nnew rows\n";

    #[test]
    fn live_subsection_replaced() {
        let section = "## Kernel layer\n\ntable\n\n### Live packet rate\n\nold rows\n\n";

        let updated = with_live(section, LIVE);

        assert_eq!(
            updated,
            "## Kernel layer\n\ntable\n\n### Live packet rate\n\nnew rows\n\n"
        );
    }

    #[test]
    fn live_subsection_appended() {
        let updated = with_live("## Kernel layer\n\ntable\n", LIVE);

        assert!(
            updated.ends_with("table\n\n### Live packet rate\n\nnew rows\n\n"),
            "{updated}"
        );
    }

    #[test]
    fn section_read_up_to_next_section() {
        let file = "# Benchmarks\n\n## Kernel layer\n\ntable\n\n## Limits\n\nrows\n";

        assert_eq!(
            current_section(file).as_deref(),
            Some("## Kernel layer\n\ntable\n\n")
        );
        assert_eq!(current_section("# Benchmarks\n"), None);
    }
}
