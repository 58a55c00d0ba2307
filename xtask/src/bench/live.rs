//! The live part of `cargo xtask bench kernel`: packets per second dropped on a veth pair while
//! `trafgen` (netsniff-ng) floods it from a client namespace.
//!
//! Four setups take turns on the same veth, in rounds, in one run. They are no filter, this
//! firewall's XDP program (loaded by the agent, with the client banned), `xdp-filter` with the
//! client denied, and an nftables drop rule in the netdev ingress hook. Each flood is bounded by a packet count and a
//! time limit and stops by itself. Every namespace, veth, XDP program, pin and nftables table the
//! bench creates is removed when its guard drops, also on failure.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::demo::agent::{Agent, AgentSettings, Upstream, free_port};
use crate::netns::ClientHost;

/// Heading of the live part inside the kernel section of BENCHMARKS.md.
pub const SUBSECTION_TITLE: &str = "### Live packet rate";

/// Packets per flood. The flood also stops after [`FLOOD_LIMIT`].
// NOTE: on a shared 2-CPU machine trafgen sent 85,000 to 200,000 packets per second, so every
// flood ended at the time limit and the rates reflect sender and receiver CPU cost together.
const FLOOD_PACKETS: u64 = 1_000_000;
/// Maximum time one flood runs before the bench stops it.
const FLOOD_LIMIT: Duration = Duration::from_secs(5);
/// Rounds of the four setups. Taking turns spreads the changing load of a shared machine over
/// every setup, and each setup's figure is its median over the rounds.
const ROUNDS: usize = 3;

// Documentation range (RFC 5737). 192.0.2.0/24 is left alone: some machines use it for their
// real uplink.
const NAMESPACE: &str = "fwlive";
const HOST_INTERFACE: &str = "fwlive0";
const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// UDP destination port of the flood: discard, which nothing on the host listens on.
const FLOOD_PORT: u16 = 9;
/// nftables table the bench creates and deletes.
const NFT_TABLE: &str = "fwlive";

/// Figures of one flood.
struct Run {
    setup: &'static str,
    /// Source of the dropped count.
    counter: &'static str,
    /// Packets the setup dropped, or for the unfiltered run the packets the interface received.
    handled: u64,
    /// Growth of the interface's `rx_packets` during the flood.
    interface_rx: u64,
    elapsed: Duration,
    load_before: String,
    load_after: String,
}

impl Run {
    fn rate(&self) -> f64 {
        per_second(self.handled, self.elapsed)
    }
}

/// Runs the four floods and returns the Markdown subsection for BENCHMARKS.md.
pub fn run() -> Result<String> {
    println!(
        "==> live packet rate: {FLOOD_PACKETS} packets or {} s per flood",
        FLOOD_LIMIT.as_secs()
    );
    let host = ClientHost::create(NAMESPACE, HOST_INTERFACE, HOST_ADDR, CLIENT_ADDR)
        .context("failed to create the client namespace for the flood")?;
    let dir = std::env::temp_dir().join(format!("fw-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let config = dir.join("flood.cfg");
    std::fs::write(&config, trafgen_config(&host)?)
        .with_context(|| format!("failed to write {}", config.display()))?;

    let mut notes = Vec::new();
    let outcome = measure_all(&host, &config, &mut notes);
    let _ = std::fs::remove_dir_all(&dir);
    drop(host);
    report(&outcome?, &notes)
}

fn measure_all(host: &ClientHost, config: &Path, notes: &mut Vec<String>) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    for round in 1..=ROUNDS {
        println!("    round {round} of {ROUNDS}");
        measure_round(host, config, notes, &mut runs)?;
    }
    Ok(runs)
}

/// Floods once per setup, in a fixed order, and appends the four runs to `runs`.
fn measure_round(
    host: &ClientHost,
    config: &Path,
    notes: &mut Vec<String>,
    runs: &mut Vec<Run>,
) -> Result<()> {
    println!("    no filter");
    runs.push(flood(
        host,
        config,
        "no filter",
        "interface rx_packets",
        || interface_rx(HOST_INTERFACE),
    )?);

    println!("    this firewall (agent, client banned)");
    {
        let upstream = Upstream::start();
        let agent = Agent::start(AgentSettings {
            name: "live".to_owned(),
            interfaces: vec![HOST_INTERFACE.to_owned()],
            listen: SocketAddr::from((HOST_ADDR, free_port(HOST_ADDR))),
            upstream: upstream.addr,
            rate_limit_requests: 1_000,
            rate_limit_window_seconds: 10,
            strikes: 3,
            ban_seconds: 600,
        });
        if notes.is_empty()
            && let Some(line) = agent.log().lines().find(|line| line.contains("mode"))
        {
            notes.push(format!("The agent's attach log line: `{}`", line.trim()));
        }
        let client = CLIENT_ADDR.to_string();
        let output = agent.fwctl(&["bans", "add", &client, "--ttl", "10m"]);
        if !output.status.success() {
            bail!(
                "fwctl bans add {client} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        runs.push(flood(
            host,
            config,
            "this firewall",
            "`fwctl stats` dropped packets",
            || Ok(agent.dropped_packets(CLIENT_ADDR)),
        )?);
        // The agent detaches its program and removes its pins when it drops.
    }

    println!("    xdp-filter (client denied)");
    {
        let filter = XdpFilter::load(HOST_INTERFACE, CLIENT_ADDR)?;
        runs.push(flood(
            host,
            config,
            "xdp-filter",
            "`xdp-filter status` hit counter",
            || filter.dropped(),
        )?);
    }

    println!("    nftables drop rule (netdev ingress)");
    let table = NftTable::create(HOST_INTERFACE, CLIENT_ADDR)?;
    runs.push(flood(
        host,
        config,
        "nftables, netdev ingress",
        "rule counter packets",
        || table.dropped(),
    )?);
    Ok(())
}

/// Runs one bounded flood and returns how many packets `counter` grew by during it.
fn flood(
    host: &ClientHost,
    config: &Path,
    setup: &'static str,
    counter_name: &'static str,
    counter: impl Fn() -> Result<u64>,
) -> Result<Run> {
    let load_before = load_average();
    let counter_before = counter()?;
    let rx_before = interface_rx(HOST_INTERFACE)?;
    let config_arg = config.display().to_string();
    let packets = FLOOD_PACKETS.to_string();
    let peer = format!("{HOST_INTERFACE}c");

    let started = Instant::now();
    // `ip netns exec` replaces itself with trafgen, so the child's id is trafgen's.
    let mut child = host
        .command("trafgen")
        .args([
            "--dev",
            &peer,
            "--conf",
            &config_arg,
            "--num",
            &packets,
            "--cpus",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("failed to start trafgen in the client namespace")?;
    let status = loop {
        if let Some(status) = child.try_wait().context("failed to wait for trafgen")? {
            break Some(status);
        }
        if started.elapsed() >= FLOOD_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();

    if let Some(status) = status
        && !status.success()
    {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        bail!(
            "trafgen failed with {status} during the {setup} flood: {}",
            stderr.trim()
        );
    }
    // Let the receiving side drain what is still queued before reading the counters.
    thread::sleep(Duration::from_millis(200));
    let handled = counter()?.saturating_sub(counter_before);
    let interface_rx = interface_rx(HOST_INTERFACE)?.saturating_sub(rx_before);
    let run = Run {
        setup,
        counter: counter_name,
        handled,
        interface_rx,
        elapsed,
        load_before,
        load_after: load_average(),
    };
    println!(
        "      {} packets in {:.2} s: {:.0} packets/s",
        run.handled,
        elapsed.as_secs_f64(),
        run.rate()
    );
    Ok(run)
}

/// Writes the trafgen packet: Ethernet to the host end of the veth, IPv4 UDP from the client to the
/// discard port, 64 bytes on the wire without the frame check sequence.
fn trafgen_config(host: &ClientHost) -> Result<String> {
    let host_mac = read_trimmed(&format!("/sys/class/net/{}/address", host.host_interface))?;
    let peer = format!("{}c", host.host_interface);
    let output = host
        .run("cat", &[&format!("/sys/class/net/{peer}/address")])
        .context("failed to read the client's MAC address")?;
    let client_mac = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || client_mac.is_empty() {
        bail!(
            "failed to read the MAC address of {peer} in namespace {}",
            host.namespace
        );
    }
    Ok(format!(
        "{{ eth(da={host_mac}, sa={client_mac}, type=0x0800), \
         ipv4(sa={client}, da={server}, ttl=64), \
         udp(sp=40000, dp={FLOOD_PORT}), fill(0x00, 22) }}\n",
        client = host.client_addr,
        server = host.host_addr,
    ))
}

/// xdp-filter loaded on one interface with one source denied; unloaded on drop.
struct XdpFilter {
    interface: &'static str,
    source: Ipv4Addr,
}

impl XdpFilter {
    fn load(interface: &'static str, source: Ipv4Addr) -> Result<Self> {
        let filter = Self { interface, source };
        command(
            "xdp-filter",
            &[
                "load",
                interface,
                "--mode",
                "native",
                "--features",
                "ipv4,ipv6",
            ],
        )?;
        command("xdp-filter", &["ip", &source.to_string(), "--mode", "src"])?;
        Ok(filter)
    }

    /// Reads the packet count of the source's entry from `xdp-filter status`.
    fn dropped(&self) -> Result<u64> {
        let status = command("xdp-filter", &["status"])?;
        // NOTE: xdp-filter keeps its maps under one global pin path, so another xdp-filter run
        // on this machine at the same time can remove the entry while the flood runs.
        parse_xdp_filter_packets(&status, self.source).with_context(|| {
            format!(
                "`xdp-filter status` has no hit counter for {}; is another xdp-filter run \
                 active on this machine? Its output: {status}",
                self.source
            )
        })
    }
}

impl Drop for XdpFilter {
    fn drop(&mut self) {
        if let Err(error) = command("xdp-filter", &["unload", self.interface, "--all"]) {
            eprintln!(
                "failed to unload xdp-filter from {}: {error:#}",
                self.interface
            );
        }
    }
}

/// Finds the line of `source` under "Filtered IP addresses" in `xdp-filter status`, such as
/// `203.0.113.2   src   1234`, and returns its hit counter, the last field.
fn parse_xdp_filter_packets(status: &str, source: Ipv4Addr) -> Option<u64> {
    let expected = source.to_string();
    status
        .lines()
        .find(|line| line.split_whitespace().next() == Some(expected.as_str()))
        .and_then(|line| line.split_whitespace().last()?.parse().ok())
}

/// An nftables table with a counted drop rule for one source in the netdev ingress hook of one
/// interface; deleted on drop.
struct NftTable;

impl NftTable {
    fn create(interface: &str, source: Ipv4Addr) -> Result<Self> {
        let _ = command("nft", &["delete", "table", "netdev", NFT_TABLE]);
        let rules = format!(
            "table netdev {NFT_TABLE} {{\n  chain ingress {{\n    type filter hook ingress \
             device \"{interface}\" priority -500; policy accept;\n    ip saddr {source} \
             counter drop\n  }}\n}}\n"
        );
        let table = Self;
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("failed to run nft")?;
        if let Some(mut stdin) = child.stdin.take() {
            std::io::Write::write_all(&mut stdin, rules.as_bytes())
                .context("failed to write the rules to nft")?;
        }
        let output = child.wait_with_output().context("failed to wait for nft")?;
        if !output.status.success() {
            bail!(
                "nft -f failed for table netdev {NFT_TABLE}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(table)
    }

    /// Sums the packet counters of the table's rules, from `nft -j`.
    fn dropped(&self) -> Result<u64> {
        let text = command("nft", &["-j", "list", "table", "netdev", NFT_TABLE])?;
        let json: serde_json::Value =
            serde_json::from_str(&text).context("nft -j printed invalid JSON")?;
        let packets = json["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item["rule"]["expr"].as_array())
            .flatten()
            .filter_map(|expr| expr["counter"]["packets"].as_u64())
            .sum();
        Ok(packets)
    }
}

impl Drop for NftTable {
    fn drop(&mut self) {
        if let Err(error) = command("nft", &["delete", "table", "netdev", NFT_TABLE]) {
            eprintln!("failed to delete nftables table netdev {NFT_TABLE}: {error:#}");
        }
    }
}

fn report(runs: &[Run], notes: &[String]) -> Result<String> {
    let mut setups: Vec<&Run> = Vec::new();
    for run in runs {
        if !setups.iter().any(|seen| seen.setup == run.setup) {
            setups.push(run);
        }
    }
    let median_of = |setup: &str| {
        median(
            runs.iter()
                .filter(|run| run.setup == setup)
                .map(Run::rate)
                .collect(),
        )
    };
    let baseline = setups.first().map_or(0.0, |first| median_of(first.setup));
    if baseline <= 0.0 {
        bail!("the unfiltered floods delivered no packets, so no ratio can be computed");
    }

    let mut text = String::new();
    writeln!(text, "{SUBSECTION_TITLE}\n")?;
    writeln!(
        text,
        "`trafgen --cpus 1` floods 64-byte IPv4 UDP frames from namespace `{NAMESPACE}` \
         ({CLIENT_ADDR}) over a veth pair to `{HOST_INTERFACE}` ({HOST_ADDR}), \
         {} packets or {} s per flood, whichever comes first, in {ROUNDS} rounds that take the \
         setups in turn. A flood's rate is the growth of the setup's own drop counter divided by \
         the flood's wall time. The ratio compares a setup's median rate with the median rate the \
         interface received without a filter, in the same run.\n",
        thousands(FLOOD_PACKETS),
        FLOOD_LIMIT.as_secs()
    )?;
    writeln!(
        text,
        "| Setup | Counter | Packets/s per round | Median packets/s | Ratio to no filter | Interface rx per round | Load per round |"
    )?;
    writeln!(text, "|---|---|---:|---:|---:|---:|---|")?;
    for setup in setups {
        let rounds: Vec<&Run> = runs.iter().filter(|run| run.setup == setup.setup).collect();
        let rates: Vec<String> = rounds
            .iter()
            .map(|run| thousands(run.rate().round() as u64))
            .collect();
        let received: Vec<String> = rounds
            .iter()
            .map(|run| thousands(run.interface_rx))
            .collect();
        let loads: Vec<String> = rounds
            .iter()
            .map(|run| format!("{}-{}", run.load_before, run.load_after))
            .collect();
        let rate = median_of(setup.setup);
        writeln!(
            text,
            "| {} | {} | {} | {} | {:.2} | {} | {} |",
            setup.setup,
            setup.counter,
            rates.join(" / "),
            thousands(rate.round() as u64),
            rate / baseline,
            received.join(" / "),
            loads.join(", "),
        )?;
    }
    writeln!(
        text,
        "\nLoad is the 1-minute load average from /proc/loadavg before and after each flood, on a \
         machine with {} CPUs that other jobs share, so compare the ratios, not the absolute \
         rates. On a veth pair the sender and the receiver share these CPUs: a filter that drops \
         early leaves more CPU time to trafgen, which is why a ratio can exceed 1.\n",
        thread::available_parallelism().map_or(0, usize::from)
    )?;
    for note in notes {
        writeln!(text, "- {note}")?;
    }
    Ok(text)
}

/// Returns the median of `values`, the mean of the middle two for an even count, or 0 for none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => 0.0,
        len if len % 2 == 0 => (values[middle - 1] + values[middle]) / 2.0,
        _ => values[middle],
    }
}

fn interface_rx(interface: &str) -> Result<u64> {
    let path = format!("/sys/class/net/{interface}/statistics/rx_packets");
    read_trimmed(&path)?
        .parse()
        .with_context(|| format!("{path} does not hold a number"))
}

fn read_trimmed(path: &str) -> Result<String> {
    Ok(std::fs::read_to_string(PathBuf::from(path))
        .with_context(|| format!("failed to read {path}"))?
        .trim()
        .to_owned())
}

/// Returns the 1-minute load average, or "unknown" where /proc/loadavg cannot be read.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Runs `program` with `args` and returns its stdout, failing with its stderr on a non-zero exit.
fn command(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to run {program}"))?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::{median, parse_xdp_filter_packets, thousands};
    use std::net::Ipv4Addr;

    #[test]
    fn xdp_filter_packets_parsed_from_the_source_line() {
        let status = "Filtered IP addresses:\n                 Mode   Hit counter\n  \
                      203.0.113.2      src    1234\n";
        let address = Ipv4Addr::new(203, 0, 113, 2);

        assert_eq!(parse_xdp_filter_packets(status, address), Some(1234));
        assert_eq!(
            parse_xdp_filter_packets(status, Ipv4Addr::new(203, 0, 113, 3)),
            None
        );
    }

    #[test]
    fn median_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
    }

    #[test]
    fn thousands_grouped() {
        assert_eq!(thousands(2_000_000), "2,000,000");
        assert_eq!(thousands(999), "999");
    }
}
