//! `cargo xtask bench threats`: detector throughput over the CRS corpus and the added latency
//! of the threat stage, recorded in BENCHMARKS.md.

use std::fmt::Write as _;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::eval;

/// Title of the section that each run replaces.
const SECTION_TITLE: &str = "## Threat detection cost";

/// Writes the corpus as length-prefixed raw requests, runs the benchmark example in release
/// mode on it, and writes its rows to BENCHMARKS.md.
pub fn threats() -> Result<()> {
    let corpus_dir = eval::corpus_dir();
    let mut requests: Vec<Vec<u8>> = eval::load_corpus(&corpus_dir)?
        .into_iter()
        .map(|request| request.raw)
        .collect();
    let benign = eval::load_benign_set(&crate::workspace_root().join(eval::BENIGN_SET))?;
    requests.extend(benign.iter().map(|value| eval::benign_request(value)));

    let mut corpus = Vec::new();
    for request in &requests {
        corpus.extend_from_slice(format!("{}\n", request.len()).as_bytes());
        corpus.extend_from_slice(request);
    }
    let corpus_path = std::env::temp_dir().join(format!("fw-threat-bench-{}.bin", std::process::id()));
    std::fs::write(&corpus_path, &corpus)
        .with_context(|| format!("failed to write {}", corpus_path.display()))?;

    println!("==> cargo run --release --example threat_bench");
    let output = Command::new(env!("CARGO"))
        .args(["run", "--release", "--quiet", "--package", "firewall-agent", "--example", "threat_bench"])
        .arg(&corpus_path)
        .output()
        .context("failed to run the threat benchmark");
    let _ = std::fs::remove_file(&corpus_path);
    let output = output?;
    if !output.status.success() {
        bail!(
            "the threat benchmark failed with {}:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let rows = String::from_utf8(output.stdout).context("benchmark output is not UTF-8")?;
    print!("{rows}");
    super::write_section(SECTION_TITLE, &section(&rows, requests.len())?)
}

fn section(rows: &str, requests: usize) -> Result<String> {
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
        "Written by `cargo xtask bench threats` (release build, \
         `firewall-agent/examples/threat_bench.rs`) on {cpu}, {cores} cores. Throughput: the \
         {requests} requests of the CRS regression corpus and the benign set, split into fields \
         and inspected on one thread for 5 s. Latency: two proxies in one process in front of \
         one loopback upstream, with and without the threat stage, sent each 4 KB JSON body one \
         request at a time, alternating, 5,000 times each after 500 warm-up requests; client, \
         proxies and upstream share the cores. The first body repeats the same customer, \
         address and note in each of its orders, so the stage inspects each distinct value \
         once. The second changes every value in every order and every request, so all of \
         them are inspected. Goal for the added p99: under 200 µs.\n"
    )?;
    writeln!(text, "| measure | result |")?;
    writeln!(text, "| --- | --- |")?;
    text.push_str(rows);
    Ok(text)
}
