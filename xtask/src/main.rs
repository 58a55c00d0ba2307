//! Project tasks: `cargo xtask <command>`.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod ebpf;

#[derive(Parser)]
#[command(about = "Build, demo and test tasks for the API firewall")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the XDP object, installing the eBPF toolchain first where it is missing.
    BuildEbpf,
    /// Build the XDP object, then the agent and fwctl with the object embedded.
    Build,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::BuildEbpf => {
            ebpf::build()?;
        }
        Command::Build => {
            ebpf::build()?;
            build_agent()?;
        }
    }
    Ok(())
}

/// Builds the agent binaries in the dev profile, which the demo and the tests use.
fn build_agent() -> Result<()> {
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--package", "firewall-agent", "--bins"])
        .status()?;
    anyhow::ensure!(status.success(), "cargo build of firewall-agent failed");
    Ok(())
}
