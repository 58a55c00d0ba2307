//! `cargo xtask bench tokens`: token verification rates against PyJWT on the same tokens, and
//! the latency that token checks add to a proxied request, written into BENCHMARKS.md.

use std::fmt::Write as _;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::packages::{self, TOKENS_BENCH_PACKAGES};

/// Title of the section that each run replaces.
const SECTION_TITLE: &str = "## Tokens";

/// Installs PyJWT where it is missing, builds and runs `bench-tokens` in release mode, and
/// writes its rows to BENCHMARKS.md.
pub fn tokens() -> Result<()> {
    if crate::is_root() {
        packages::ensure_installed(TOKENS_BENCH_PACKAGES)?;
    }
    println!("==> cargo run --release --bin bench-tokens (about a minute)");
    let output = Command::new(env!("CARGO"))
        .args([
            "run",
            "--release",
            "--quiet",
            "--package",
            "integration-tests",
            "--bin",
            "bench-tokens",
        ])
        .output()
        .context("failed to run the token benchmark")?;
    let notes = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        bail!("the token benchmark failed with {}:\n{notes}", output.status);
    }
    let rows = String::from_utf8(output.stdout).context("benchmark output is not UTF-8")?;
    print!("{rows}");

    let pyjwt = notes
        .lines()
        .rev()
        .find(|line| line.starts_with("PyJWT"))
        .unwrap_or("PyJWT, version unknown");
    super::write_section(SECTION_TITLE, &section(&rows, pyjwt)?)
}

fn section(rows: &str, pyjwt: &str) -> Result<String> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|name| name.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);

    let mut text = String::new();
    writeln!(text, "{SECTION_TITLE}\n")?;
    writeln!(
        text,
        "Written by `cargo xtask bench tokens` (release build, `tests/src/bin/bench_tokens.rs`) on \
         {cpu}, {cores} cores. Both verifiers check the same 1,000 tokens per algorithm on one \
         thread for 3 s: the signature, `exp`, `iss` and `aud`. The agent also checks `typ`, \
         the header rules and the claim types. The reference is {pyjwt}, with keys loaded once \
         from the JWKS through `PyJWK`. A cached token skips parsing and the signature check, \
         but its expiry, key and revocation are checked again.\n"
    )?;
    writeln!(text, "| measure | this agent | PyJWT | ratio |")?;
    writeln!(text, "| --- | ---: | ---: | ---: |")?;
    text.push_str(rows);
    writeln!(
        text,
        "\nLatency rows: 2,000 sequential GET requests (999 for the new-token series) on one \
         HTTP/1.1 keep-alive connection to an in-process agent on 127.0.0.1, in front of an \
         echo upstream on the same machine. The added latency is the difference of the medians \
         against the route without token checks."
    )?;
    Ok(text)
}
