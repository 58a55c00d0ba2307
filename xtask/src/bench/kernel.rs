//! `cargo xtask bench kernel`: the XDP program against xdp-filter and an empty program, through
//! `BPF_PROG_TEST_RUN`, then the live packet rate on a veth pair under a trafgen flood (see
//! [`super::live`]), with the report written into its section of BENCHMARKS.md.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::packages::{self, KERNEL_BENCH_PACKAGES};

/// Title of the report's section in BENCHMARKS.md; `bench-kernel` writes the same line.
const SECTION_TITLE: &str = "## Kernel layer";

/// Parts of the kernel benchmark to run. A part that is not run keeps its text in BENCHMARKS.md.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum KernelParts {
    /// `BPF_PROG_TEST_RUN` rounds, then the live packet rate.
    All,
    /// Only the live packet rate.
    LiveOnly,
    /// Only the `BPF_PROG_TEST_RUN` rounds.
    TestRunOnly,
}

/// Builds the XDP object, the agent and the `bench-kernel` binary in release mode, runs the
/// parts of the benchmark that `parts` selects, and writes the section of BENCHMARKS.md.
pub fn kernel(parts: KernelParts) -> Result<()> {
    if !crate::is_root() {
        bail!("the kernel benchmark loads XDP programs and needs root; run it with sudo");
    }
    packages::ensure_installed(KERNEL_BENCH_PACKAGES)?;
    // The live part runs the agent, which embeds the XDP object, and fwctl to ban the client.
    crate::build_all()?;

    let path = crate::workspace_root().join("BENCHMARKS.md");
    let existing = std::fs::read_to_string(&path).unwrap_or_default();
    let current = current_section(&existing).unwrap_or_else(|| format!("{SECTION_TITLE}\n\n"));

    if parts == KernelParts::LiveOnly {
        let live = super::live::run()?;
        return super::write_section(SECTION_TITLE, &with_live(&current, &live));
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

    if parts == KernelParts::TestRunOnly {
        let Some(live) = live_subsection(&current) else {
            return super::write_section(SECTION_TITLE, &section);
        };
        return super::write_section(SECTION_TITLE, &with_live(&section, live));
    }
    let live = super::live::run()?;
    super::write_section(SECTION_TITLE, &with_live(&section, &live))
}

/// Returns the live subsection of a kernel section, from its title to the section's end.
fn live_subsection(section: &str) -> Option<&str> {
    section
        .find(super::live::SUBSECTION_TITLE)
        .map(|start| &section[start..])
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
    use super::{current_section, live_subsection, with_live};

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
    fn live_subsection_carried_to_new_table() {
        let old = "## Kernel layer\n\nold table\n\n### Live packet rate\n\nold rows\n\n";
        let live = live_subsection(old).expect("old section has a live subsection");

        let updated = with_live("## Kernel layer\n\nnew table\n", live);

        assert_eq!(
            updated,
            "## Kernel layer\n\nnew table\n\n### Live packet rate\n\nold rows\n\n"
        );
        assert_eq!(live_subsection("## Kernel layer\n\ntable\n"), None);
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
