//! Project tasks: `cargo xtask <command>`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench;
mod demo;
mod ebpf;
mod eval;
#[path = "../../tests/src/netns.rs"]
#[allow(dead_code, reason = "shared with the integration tests, which use more of it")]
mod netns;
mod packages;
mod test;

pub use netns::is_root;

#[derive(Parser)]
#[command(about = "Build, demo and test tasks for the API firewall")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the XDP object, installing the eBPF toolchain first where it is missing.
    BuildEbpf,
    /// Build the XDP object, then the agent and fwctl with the object embedded.
    Build,
    /// Show the whole loop on real traffic in network namespaces (needs root).
    Demo,
    /// Run a benchmark and write its report into its section of BENCHMARKS.md.
    #[command(subcommand)]
    Bench(Benchmark),
    /// Replay labelled attack and benign requests through the agent and record the detection
    /// and false-positive shares in BENCHMARKS.md (needs root).
    #[command(subcommand)]
    Eval(Evaluation),
    /// Build everything and run every test, including those that need root.
    Test {
        /// Arguments passed to the test binaries, such as a test name filter.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        extra: Vec<String>,
    },
}

#[derive(Subcommand)]
enum Evaluation {
    /// The OWASP CRS regression tests (`FIREWALL_CRS_CORPUS`, or
    /// `../shared/corpus/crs-regression` beside the workspace) and the benign API traffic set.
    Crs,
}

#[derive(Subcommand)]
enum Benchmark {
    /// ns per packet of the XDP program, xdp-filter and an empty program, through
    /// BPF_PROG_TEST_RUN, with 1,000 to 1,000,000 bans loaded; then packets per second dropped on
    /// a veth pair under a bounded trafgen flood, against xdp-filter and nftables (needs root).
    Kernel {
        /// Measure only the live packet rate on the veth pair, keeping the rest of the section.
        #[arg(long, conflicts_with = "test_run_only")]
        live: bool,
        /// Measure only through BPF_PROG_TEST_RUN, keeping the live packet rate subsection.
        #[arg(long)]
        test_run_only: bool,
    },
    /// Rate-limit engines: embedded decisions per second and memory, Redis throughput, round
    /// trips and memory against a sorted-set limiter.
    Limits,
    /// Access tokens: ES256 and RS256 verifications per second per core, cold and cached,
    /// against PyJWT on the same tokens, and the latency token checks add to a request.
    Tokens,
    /// Threat detectors: throughput over the CRS corpus on one core, and the p99 latency that
    /// the threat stage adds to a 4 KB JSON body.
    Threats,
    /// HTTP proxy throughput and latency with wrk on loopback: the agent with and without its
    /// edge features and TLS, nginx as a plain reverse proxy, and the upstream direct.
    Http,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Task::BuildEbpf => {
            ebpf::build()?;
        }
        Task::Build => build_all()?,
        Task::Demo => {
            packages::ensure_installed(packages::RUNTIME_PACKAGES)?;
            build_all()?;
            demo::run()?;
        }
        Task::Bench(Benchmark::Kernel {
            live,
            test_run_only,
        }) => {
            let parts = if live {
                bench::KernelParts::LiveOnly
            } else if test_run_only {
                bench::KernelParts::TestRunOnly
            } else {
                bench::KernelParts::All
            };
            bench::kernel(parts)?
        }
        Task::Bench(Benchmark::Limits) => bench::limits()?,
        Task::Bench(Benchmark::Tokens) => bench::tokens()?,
        Task::Bench(Benchmark::Threats) => bench::threats()?,
        Task::Eval(Evaluation::Crs) => eval::crs()?,
        Task::Bench(Benchmark::Http) => bench::http()?,
        Task::Test { extra } => test::run(&extra)?,
    }
    Ok(())
}

/// Builds the XDP object, then the agent binaries in the dev profile, which the demo and the
/// tests run.
fn build_all() -> Result<()> {
    ebpf::build()?;
    println!("==> building firewall-agent and fwctl");
    packages::run_checked(Command::new(env!("CARGO")).args([
        "build",
        "--package",
        "firewall-agent",
        "--bins",
    ]))?;
    Ok(())
}

/// Returns the workspace's target directory: `CARGO_TARGET_DIR` or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Returns the workspace root, one level above this crate.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}
