//! Kernel benchmark: the firewall's XDP program against `xdp-filter` (xdp-tools) and an empty
//! `XDP_DROP` program, all run on the same crafted frames through `BPF_PROG_TEST_RUN` with
//! `bpftool prog run ... repeat N`. Writes a Markdown report to the path given as the only
//! argument. `cargo xtask bench kernel` builds what it needs and runs it as root.
//!
//! Every program is loaded first, then all are measured in interleaved rounds (floor,
//! xdp-filter, this firewall, and again), so that noise from other work on the machine falls on
//! all of them alike. The report gives the median of the rounds per cell, with the spread.
//!
//! Every frame stays inside the kernel's test harness. `xdp-filter` needs an interface to load
//! on, so each of its two configurations gets one end of a veth pair without addresses, which
//! carries no traffic and is removed at the end.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use firewall_agent::kernel::{
    Blocklist, KernelBan, KernelFirewall, KernelSettings, XDP_DROP, XDP_PASS,
};
use firewall_agent::network::IpNetwork;
use firewall_common::DEFAULT_BAN_TABLE_ENTRIES;
use integration_tests::frames::FrameBuilder;

/// Runs per `bpftool prog run`; the kernel reports the mean duration of one run.
const REPEAT: u32 = 1_000_000;
/// Interleaved rounds over every program; each cell of the report is their median.
const ROUNDS: usize = 7;
/// Exact-ban counts loaded into the firewall.
const BAN_COUNTS: [u32; 3] = [1_000, 100_000, 1_000_000];
/// Ranges loaded beside the exact bans.
const RANGE_COUNT: u32 = 10_000;
/// Entries loaded into xdp-filter: it adds them one `xdp-filter ip` call at a time.
const XDP_FILTER_ENTRIES: u32 = 1_000;
/// Target for the firewall's cost above the floor on the banned IPv4 path, as a percentage of
/// xdp-filter's with the features source filtering needs.
const GOAL_PERCENT: u32 = 60;
/// Interface pairs that xdp-filter loads on, one per configuration. They have no addresses and
/// carry no traffic.
const VETHS: [(&str, &str); 2] = [("fwbench0", "fwbench1"), ("fwbench2", "fwbench3")];

const BANNED_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const PASSING_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const BANNED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
const PASSING_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20);
const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x1);
/// Allowlisted ranges of the last row. They contain none of the measured sources, so every
/// lookup walks the allowlist trie and misses.
const ADMIN_RANGE_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 128);
const ADMIN_RANGE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xad, 0, 0, 0, 0, 0);

/// One measured path: a frame file and the action every program must return for it.
struct FramePath {
    label: &'static str,
    file: PathBuf,
    expected: u32,
}

/// A loaded program to measure.
struct Program {
    label: String,
    id: u32,
    /// Whether its actions are checked against [`FramePath::expected`]; the floor drops all.
    check: bool,
}

/// Mean nanoseconds per run of one program, per path in [`FramePath`] order, then per round.
struct Row {
    program: String,
    samples: Vec<Vec<u64>>,
}

fn main() -> ExitCode {
    let Some(output) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: bench-kernel REPORT.md");
        return ExitCode::FAILURE;
    };
    match run(&output) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench-kernel: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(output: &Path) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("fw-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let paths = write_frames(&dir)?;
    let mut programs = Vec::new();
    let mut notes = Vec::new();

    let mut floor_host = load_firewall(DEFAULT_BAN_TABLE_ENTRIES)?;
    programs.push(Program {
        label: "empty XDP_DROP program (floor)".into(),
        id: floor_host
            .load_floor_program()
            .context("failed to load the floor program")?,
        check: false,
    });

    let xdp_filter = XdpFilter::load()?;
    programs.extend(xdp_filter.programs()?);

    let mut firewalls = Vec::new();
    for count in BAN_COUNTS {
        let firewall = load_firewall(count)?;
        allow_loopback(&firewall)?;
        let load_time = load_bans(&firewall, count)?;
        load_ranges(&firewall)?;
        let id = program_id(&firewall)?;
        let overflow = firewall.ban_table_state().overflow_v4;
        notes.push(format!(
            "Loading {} exact bans with batched updates (`BPF_MAP_UPDATE_BATCH`, 4,096 per call) \
             took {:.2} s; the maps then took {} of kernel memory (`bytes_memlock` of every map \
             of the program). {} of the IPv4 bans ({:.2}%) found their bucket of the ban table \
             full and are searched in the hash map instead.",
            thousands(count),
            load_time.as_secs_f64(),
            mebibytes(map_memory(id)?),
            thousands(overflow),
            f64::from(overflow) * 100.0 / f64::from(count.saturating_sub(1).max(1))
        ));
        programs.push(Program {
            label: format!(
                "this firewall, {} bans + {} ranges",
                thousands(count),
                thousands(RANGE_COUNT)
            ),
            id,
            check: true,
        });
        firewalls.push(firewall);
    }
    notes.push(single_update_note()?);

    let firewall = load_firewall(BAN_COUNTS[0])?;
    allow_loopback(&firewall)?;
    firewall.allow(IpNetwork::new(ADMIN_RANGE_V4.into(), 25)?)?;
    firewall.allow(IpNetwork::new(ADMIN_RANGE_V6.into(), 48)?)?;
    load_bans(&firewall, BAN_COUNTS[0])?;
    load_ranges(&firewall)?;
    programs.push(Program {
        label: format!(
            "this firewall, {} bans + {} ranges, allowlist outside loopback",
            thousands(BAN_COUNTS[0]),
            thousands(RANGE_COUNT)
        ),
        id: program_id(&firewall)?,
        check: true,
    });
    firewalls.push(firewall);

    let rows = measure_rounds(&programs, &paths)?;
    drop(xdp_filter);
    drop(firewalls);
    drop(floor_host);

    std::fs::write(output, report(&paths, &rows, &notes)?)
        .with_context(|| format!("failed to write {}", output.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    println!("bench-kernel: wrote {}", output.display());
    Ok(())
}

/// Measures every program on every path, [`ROUNDS`] times over, one program after the other
/// within a round.
fn measure_rounds(programs: &[Program], paths: &[FramePath]) -> Result<Vec<Row>> {
    let mut rows: Vec<Row> = programs
        .iter()
        .map(|program| Row {
            program: program.label.clone(),
            samples: vec![Vec::with_capacity(ROUNDS); paths.len()],
        })
        .collect();
    for round in 1..=ROUNDS {
        println!("bench-kernel: round {round} of {ROUNDS}");
        for (program, row) in programs.iter().zip(&mut rows) {
            let nanoseconds = measure_all(program.id, paths, program.check)
                .with_context(|| format!("failed to measure {}", program.label))?;
            for (samples, ns) in row.samples.iter_mut().zip(nanoseconds) {
                samples.push(ns);
            }
        }
    }
    Ok(rows)
}

/// Times loading 1,000,000 exact bans one update at a time into a fresh program, for
/// comparison with the batched load, and returns the note that reports it.
fn single_update_note() -> Result<String> {
    let count = BAN_COUNTS[BAN_COUNTS.len() - 1];
    let firewall = load_firewall(count)?;
    let started = Instant::now();
    for index in 0..count {
        firewall
            .ban(filler(index).into(), None)
            .with_context(|| format!("failed to insert filler ban {}", filler(index)))?;
    }
    let single = started.elapsed();
    Ok(format!(
        "The same {} exact bans, one at a time into a fresh program as `fwctl bans add` \
         does (a lookup that keeps the drop counters, then `bpf_map_update_elem`), took \
         {:.2} s.",
        thousands(count),
        single.as_secs_f64()
    ))
}

fn program_id(firewall: &KernelFirewall) -> Result<u32> {
    firewall
        .program_id()
        .context("the kernel reports no program id")
}

/// Loads the firewall with default settings, except that its ban tables are sized for
/// `table_entries` bans, as the README advises for that many, and nothing is pinned.
fn load_firewall(table_entries: u32) -> Result<KernelFirewall> {
    let settings = KernelSettings {
        pin: false,
        ban_table_entries: table_entries,
        ..KernelSettings::default()
    };
    KernelFirewall::load(&settings).context("failed to load the firewall's XDP program")
}

fn write_frames(dir: &Path) -> Result<Vec<FramePath>> {
    let frames = [
        (
            "banned IPv4",
            FrameBuilder::ipv4(BANNED_V4, SERVER_V4),
            XDP_DROP,
        ),
        (
            "passing IPv4",
            FrameBuilder::ipv4(PASSING_V4, SERVER_V4),
            XDP_PASS,
        ),
        (
            "banned IPv6",
            FrameBuilder::ipv6(BANNED_V6, SERVER_V6),
            XDP_DROP,
        ),
        (
            "passing IPv6",
            FrameBuilder::ipv6(PASSING_V6, SERVER_V6),
            XDP_PASS,
        ),
    ];
    let mut paths = Vec::new();
    for (index, (label, frame, expected)) in frames.into_iter().enumerate() {
        let file = dir.join(format!("frame{index}.bin"));
        std::fs::write(&file, frame.build())
            .with_context(|| format!("failed to write {}", file.display()))?;
        paths.push(FramePath {
            label,
            file,
            expected,
        });
    }
    Ok(paths)
}

/// Allowlists loopback, as the agent does by default.
fn allow_loopback(firewall: &KernelFirewall) -> Result<()> {
    firewall.allow(IpNetwork::new(Ipv4Addr::LOCALHOST.into(), 8)?)?;
    firewall.allow(IpNetwork::host(Ipv6Addr::LOCALHOST.into()))?;
    Ok(())
}

/// Bans the two banned sources plus fillers up to `count` exact bans, with one batched load.
/// Returns the time the load took.
fn load_bans(firewall: &KernelFirewall, count: u32) -> Result<std::time::Duration> {
    let mut bans = vec![
        KernelBan {
            network: IpNetwork::host(BANNED_V4.into()),
            expires_at: None,
        },
        KernelBan {
            network: IpNetwork::host(BANNED_V6.into()),
            expires_at: None,
        },
    ];
    bans.extend((0..count.saturating_sub(2)).map(|index| KernelBan {
        network: IpNetwork::host(filler(index).into()),
        expires_at: None,
    }));
    let started = Instant::now();
    firewall
        .ban_all(&bans)
        .with_context(|| format!("failed to load {} bans", thousands(count)))?;
    Ok(started.elapsed())
}

/// Returns the `index`-th filler ban, an address of 10.0.0.0/8. The low 24 bits go through a
/// 24-bit xorshift, which maps distinct indexes to distinct addresses scattered over the block,
/// as in a real ban list. Consecutive addresses would fill the ban table's buckets unusually
/// evenly. Fillers are map keys only, never the source of a frame.
fn filler(index: u32) -> Ipv4Addr {
    const LOW_24: u32 = 0x00ff_ffff;
    let mut bits = index.wrapping_add(1) & LOW_24;
    bits ^= (bits << 7) & LOW_24;
    bits ^= bits >> 11;
    bits ^= (bits << 3) & LOW_24;
    Ipv4Addr::from(0x0a00_0000 | bits)
}

/// Bans [`RANGE_COUNT`] /24 ranges from 11.0.0.0/24 up, none containing a measured source.
fn load_ranges(firewall: &KernelFirewall) -> Result<()> {
    for index in 0..RANGE_COUNT {
        let address = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + (index << 8)));
        let range = IpNetwork::new(address, 24)?;
        firewall.ban(range, None)?;
    }
    Ok(())
}

/// xdp-filter loaded on the bench veths, once with the features source filtering needs and
/// once with all features. Both share xdp-filter's pinned maps, which hold
/// [`XDP_FILTER_ENTRIES`] entries. Dropping it unloads both and removes the veths.
struct XdpFilter {
    _veths: Vec<Veth>,
    loaded: Vec<&'static str>,
}

/// xdp-filter's feature sets, with the label of their rows.
const XDP_FILTER_CONFIGS: [(&str, &str); 2] = [
    ("ipv4,ipv6", "xdp-filter, ipv4 and ipv6 features"),
    ("all", "xdp-filter, all features"),
];

impl XdpFilter {
    fn load() -> Result<Self> {
        let mut xdp_filter = Self {
            _veths: Vec::new(),
            loaded: Vec::new(),
        };
        for ((veth, peer), (features, _)) in VETHS.into_iter().zip(XDP_FILTER_CONFIGS) {
            xdp_filter._veths.push(Veth::create(veth, peer)?);
            command(
                "xdp-filter",
                &["load", veth, "-m", "skb", "-p", "allow", "-f", features],
            )?;
            xdp_filter.loaded.push(veth);
        }

        for address in [BANNED_V4.to_string(), BANNED_V6.to_string()] {
            command("xdp-filter", &["ip", &address, "-m", "src"])?;
        }
        for index in 0..XDP_FILTER_ENTRIES.saturating_sub(2) {
            command(
                "xdp-filter",
                &["ip", &filler(index).to_string(), "-m", "src"],
            )?;
        }
        Ok(xdp_filter)
    }

    fn programs(&self) -> Result<Vec<Program>> {
        self.loaded
            .iter()
            .zip(XDP_FILTER_CONFIGS)
            .map(|(veth, (_, label))| {
                Ok(Program {
                    label: format!("{label}, {} entries", thousands(XDP_FILTER_ENTRIES)),
                    id: attached_program_id(veth)?,
                    check: true,
                })
            })
            .collect()
    }
}

impl Drop for XdpFilter {
    fn drop(&mut self) {
        for veth in self.loaded.iter().rev() {
            if let Err(error) = command("xdp-filter", &["unload", veth, "--all"]) {
                eprintln!("bench-kernel: failed to unload xdp-filter from {veth}: {error:#}");
            }
        }
    }
}

/// Runs program `id` on every path and returns the mean nanoseconds of each. With `check`,
/// fails when the program returns another action than the path expects.
fn measure_all(id: u32, paths: &[FramePath], check: bool) -> Result<Vec<u64>> {
    let mut results = Vec::new();
    for path in paths {
        let (action, nanoseconds) = prog_run(id, &path.file)?;
        if check {
            ensure!(
                action == path.expected,
                "program {id} returned {action} on the {} frame, expected {}",
                path.label,
                path.expected
            );
        }
        results.push(nanoseconds);
    }
    Ok(results)
}

/// Runs `bpftool prog run id ID data_in FILE repeat REPEAT` and parses its
/// `Return value: A, duration (average): Nns` line.
fn prog_run(id: u32, frame: &Path) -> Result<(u32, u64)> {
    let output = command(
        "bpftool",
        &[
            "prog",
            "run",
            "id",
            &id.to_string(),
            "data_in",
            &frame.display().to_string(),
            "repeat",
            &REPEAT.to_string(),
        ],
    )?;
    let text = output.trim();
    let parse = || -> Option<(u32, u64)> {
        let rest = text.strip_prefix("Return value: ")?;
        let (action, rest) = rest.split_once(", duration (average): ")?;
        let nanoseconds = rest.strip_suffix("ns")?;
        Some((action.parse().ok()?, nanoseconds.parse().ok()?))
    };
    parse().with_context(|| format!("unexpected bpftool prog run output: {text}"))
}

/// Returns the id of the XDP program attached to `interface`, from `ip -j link show`.
fn attached_program_id(interface: &str) -> Result<u32> {
    let output = command("ip", &["-j", "link", "show", "dev", interface])?;
    let links: serde_json::Value = serde_json::from_str(&output)?;
    links[0]["xdp"]["prog"]["id"]
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .with_context(|| format!("no XDP program attached to {interface}: {output}"))
}

/// Sums `bytes_memlock` over the maps of program `id`, from `bpftool -j`.
fn map_memory(id: u32) -> Result<u64> {
    let program: serde_json::Value = serde_json::from_str(&command(
        "bpftool",
        &["-j", "prog", "show", "id", &id.to_string()],
    )?)?;
    let mut total = 0;
    for map_id in program["map_ids"].as_array().into_iter().flatten() {
        let map_id = map_id.as_u64().context("invalid map id")?.to_string();
        let map: serde_json::Value =
            serde_json::from_str(&command("bpftool", &["-j", "map", "show", "id", &map_id])?)?;
        total += map["bytes_memlock"].as_u64().unwrap_or(0);
    }
    Ok(total)
}

fn command(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("failed to run {program}; is it installed?"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed with {}: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A bench veth pair, removed on drop.
struct Veth(&'static str);

impl Veth {
    fn create(name: &'static str, peer: &str) -> Result<Self> {
        let _ = command("ip", &["link", "del", name]);
        command(
            "ip",
            &["link", "add", name, "type", "veth", "peer", "name", peer],
        )?;
        let veth = Self(name);
        command("ip", &["link", "set", name, "up"])?;
        Ok(veth)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        if let Err(error) = command("ip", &["link", "del", self.0]) {
            eprintln!("bench-kernel: failed to remove {}: {error:#}", self.0);
        }
    }
}

fn report(paths: &[FramePath], rows: &[Row], notes: &[String]) -> Result<String> {
    let floor = &rows[0];
    let mut text = String::new();
    writeln!(
        text,
        "## Kernel layer: ns per packet through BPF_PROG_TEST_RUN\n"
    )?;
    writeln!(
        text,
        "Written by `cargo xtask bench kernel` on {} ({} CPUs, kernel {}). Every sample is the \
         mean of `bpftool prog run id ID data_in FRAME repeat {}`, on the same crafted frames. \
         All programs are loaded at once and measured in {ROUNDS} interleaved rounds (floor, \
         xdp-filter, this firewall, then the next round); each cell is the median of the \
         rounds. The cost above the floor subtracts the empty `XDP_DROP` program of the same \
         round.\n",
        cpu_model(),
        std::thread::available_parallelism().map_or(0, usize::from),
        kernel_release(),
        thousands(REPEAT)
    )?;

    let header: Vec<&str> = paths.iter().map(|path| path.label).collect();
    writeln!(text, "| program | {} |", header.join(" | "))?;
    writeln!(text, "| --- |{}", " ---: |".repeat(paths.len()))?;
    for row in rows {
        let cells: Vec<String> = row
            .samples
            .iter()
            .zip(&floor.samples)
            .map(|(samples, floor)| {
                let (low, high) = spread(samples);
                format!(
                    "{} ({:+}) {low}–{high}",
                    median(samples),
                    median(&above(samples, floor))
                )
            })
            .collect();
        writeln!(text, "| {} | {} |", row.program, cells.join(" | "))?;
    }
    writeln!(
        text,
        "\nCells: median ns per run (median ns above the floor) lowest–highest ns of the \
         {ROUNDS} rounds.\n"
    )?;

    writeln!(text, "### Banned IPv4 path, cost above the floor\n")?;
    let reference = rows
        .iter()
        .find(|row| row.program.starts_with("xdp-filter, ipv4"))
        .map(|row| above(&row.samples[0], &floor.samples[0]));
    for row in rows
        .iter()
        .filter(|row| row.program.starts_with("this firewall"))
    {
        let ours = above(&row.samples[0], &floor.samples[0]);
        let Some(reference) = reference.as_ref() else {
            writeln!(text, "- {}: {} ns", row.program, median(&ours))?;
            continue;
        };
        // Ratios per round, so that each compares figures measured side by side.
        let percents: Vec<i64> = ours
            .iter()
            .zip(reference)
            .filter(|(_, reference)| **reference > 0)
            .map(|(ours, reference)| (100.0 * *ours as f64 / *reference as f64).round() as i64)
            .collect();
        let (low, high) = spread(&percents);
        writeln!(
            text,
            "- {}: {} ns, {}% of xdp-filter's {} ns (ipv4 and ipv6 features); per round \
             {low}% to {high}%",
            row.program,
            median(&ours),
            median(&percents),
            median(reference),
        )?;
    }
    writeln!(
        text,
        "\nTarget: at most {GOAL_PERCENT}% of xdp-filter's cost above the floor on this path. \
         The percentage is the median of the ratios of the {ROUNDS} rounds."
    )?;

    writeln!(text, "\n### Notes\n")?;
    for note in notes {
        writeln!(text, "- {note}")?;
    }
    writeln!(
        text,
        "- aya 0.14 has no batched map updates, so the agent issues `BPF_MAP_UPDATE_BATCH` \
         itself. LPM tries have no batched update in the kernel, so the {} ranges are loaded \
         one update at a time.",
        thousands(RANGE_COUNT)
    )?;
    writeln!(
        text,
        "- xdp-filter got {} entries, added one `xdp-filter ip` call at a time; its maps hold \
         at most 10,000 entries, so it has no figure at 100,000 or 1,000,000.",
        thousands(XDP_FILTER_ENTRIES)
    )?;
    writeln!(
        text,
        "- The firewall's figures include what xdp-filter does not do: per-source packet and \
         byte counters, the range trie lookup, the allowlist check and the expiry check. A \
         source is searched in its family's ban table, an array map used as a hash table with \
         4 slots per bucket; the bans that found their bucket full are searched in kernel hash \
         maps. Each firewall row sizes the ban tables for its number of bans \
         (`xdp.ban_table_entries`, 2 slots per ban), as the README advises; the default is \
         {}. The drops of an exact ban are counted inside the ban with plain adds, which \
         several CPUs dropping the same source at once can undercount; every other packet is \
         counted in an LRU per-CPU map keyed by source.",
        thousands(DEFAULT_BAN_TABLE_ENTRIES)
    )?;
    writeln!(
        text,
        "- Every firewall row allowlists loopback, as the agent does by default. While the \
         allowlist holds nothing else, a source outside loopback skips the allowlist trie. The \
         last row allowlists {ADMIN_RANGE_V4}/25 and {ADMIN_RANGE_V6}/48, so every packet \
         also walks an allowlist trie."
    )?;
    // A blank line keeps the next section of BENCHMARKS.md apart from this one.
    writeln!(text)?;
    Ok(text)
}

/// Per-round differences of `samples` over the floor's samples of the same rounds.
fn above(samples: &[u64], floor: &[u64]) -> Vec<i64> {
    samples
        .iter()
        .zip(floor)
        .map(|(ns, floor)| {
            i64::try_from(*ns).unwrap_or(i64::MAX) - i64::try_from(*floor).unwrap_or(i64::MAX)
        })
        .collect()
}

/// Returns the median of `values`: the middle one, or the lower middle one of an even count.
fn median<T: Copy + Ord + Default>(values: &[T]) -> T {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default()
}

/// Returns the lowest and the highest of `values`.
fn spread<T: Copy + Ord + Default>(values: &[T]) -> (T, T) {
    let low = values.iter().min().copied().unwrap_or_default();
    let high = values.iter().max().copied().unwrap_or_default();
    (low, high)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "an unknown CPU".to_owned())
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|text| text.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn thousands(value: u32) -> String {
    let digits = value.to_string();
    let mut text = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

#[cfg(test)]
mod tests {
    use super::{above, median, spread};

    #[test]
    fn median_of_odd_count_is_middle() {
        assert_eq!(median(&[90u64, 43, 71, 46, 44]), 46);
    }

    #[test]
    fn median_of_even_count_is_lower_middle() {
        assert_eq!(median(&[4u64, 1, 3, 2]), 2);
        assert_eq!(median::<u64>(&[]), 0);
    }

    #[test]
    fn cost_above_floor_taken_per_round() {
        let ours = [60u64, 90, 62];
        let floor = [19u64, 45, 20];

        let differences = above(&ours, &floor);

        assert_eq!(differences, [41, 45, 42]);
        assert_eq!(spread(&differences), (41, 45));
    }
}
