//! The agent's side of the XDP program: loading the object, attaching it to interfaces, and
//! reading and writing its maps.
//!
//! The rest of the agent sees the kernel through the [`Blocklist`] trait, so the ban logic and the
//! proxy are tested without a kernel.

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::SystemTime;

use aya::maps::MapError;
use aya::programs::ProgramError;
use firewall_common::{PacketCounter, SourceCounters, Verdict};
use serde::Deserialize;

use crate::network::IpNetwork;

// The bpf(2) system call for batched updates has no safe wrapper in aya 0.14.
#[expect(
    unsafe_code,
    reason = "BPF_MAP_UPDATE_BATCH is issued through libc::syscall"
)]
mod batch;
mod clock;
mod loader;
mod maps;
mod pinned;
mod pins;
mod privileges;
// The XDP program's IPv4 ban table is written through a shared memory mapping of the map.
#[expect(
    unsafe_code,
    reason = "the ban table is mapped with libc::mmap and written with atomic stores"
)]
mod table;

pub use loader::KernelFirewall;
pub use pinned::PinnedBlocklist;
pub use pins::{LinkHolder, link_holders, remove_pins};
pub use privileges::check_privileges;

/// Checks that every interface in `settings` exists in the network namespace of this process,
/// so that a typo fails before anything is loaded or pinned.
///
/// The kernel is asked by name (`if_nametoindex`), not `/sys/class/net`, because sysfs shows the
/// namespace it was mounted in: after `nsenter --net`, that is not the process's own.
///
/// # Errors
///
/// [`KernelError::InterfaceNotFound`] naming the first missing interface.
pub fn check_interfaces(settings: &KernelSettings) -> Result<(), KernelError> {
    for interface in &settings.interfaces {
        let valid = !interface.is_empty() && !interface.contains('\0');
        if !valid || nix::net::if_::if_nametoindex(interface.as_str()).is_err() {
            return Err(KernelError::InterfaceNotFound {
                interface: interface.escape_debug().to_string(),
            });
        }
    }
    Ok(())
}

/// Default directory of the pinned maps and links.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/api-firewall";

/// `XDP_DROP` of the kernel's `enum xdp_action`, as [`KernelFirewall::test_run`] returns it.
pub const XDP_DROP: u32 = 1;
/// `XDP_PASS` of the kernel's `enum xdp_action`, as [`KernelFirewall::test_run`] returns it.
pub const XDP_PASS: u32 = 2;

/// How the XDP program is attached to an interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Driver (native) mode, falling back to generic mode with a warning where the driver
    /// rejects it.
    #[default]
    Auto,
    /// Driver (native) mode only; attaching fails where the driver has no XDP support.
    Driver,
    /// Generic (SKB) mode: works on every interface, after the kernel has allocated the packet.
    Generic,
}

impl XdpMode {
    /// Returns whether an attachment in `mode` satisfies this setting. `Auto` accepts both, so
    /// a restarted agent keeps the mode of the link it finds pinned.
    pub const fn accepts(self, mode: AttachedMode) -> bool {
        matches!(
            (self, mode),
            (XdpMode::Auto, _)
                | (XdpMode::Driver, AttachedMode::Driver)
                | (XdpMode::Generic, AttachedMode::Generic)
        )
    }
}

/// The mode an attachment actually got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    Driver,
    Generic,
}

/// Map sizes and attach settings, from the `[xdp]` section of the config.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KernelSettings {
    /// Interfaces to attach the XDP program to.
    pub interfaces: Vec<String>,
    /// Attach mode for every interface.
    pub mode: XdpMode,
    /// Capacity of each exact-address ban map (IPv4 and IPv6 separately).
    pub bans_max_entries: u32,
    /// Exact bans per family that the XDP program's ban tables are sized for, two slots each,
    /// capped at `bans_max_entries`. Bans beyond it still drop, through the slower hash maps.
    pub ban_table_entries: u32,
    /// Capacity of each range ban trie (IPv4 and IPv6 separately).
    pub ban_ranges_max_entries: u32,
    /// Capacity of each allowlist trie (IPv4 and IPv6 separately).
    pub allow_max_entries: u32,
    /// Capacity of the per-source counter map; least recently seen sources are evicted.
    pub source_stats_max_entries: u32,
    /// Whether maps and links are pinned in `pin_dir`, so that drops continue while the agent
    /// is stopped and a restarted agent reuses the maps.
    pub pin: bool,
    /// Directory on bpffs for the pins.
    pub pin_dir: PathBuf,
}

impl Default for KernelSettings {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            mode: XdpMode::Auto,
            bans_max_entries: firewall_common::DEFAULT_BANS_MAX_ENTRIES,
            ban_table_entries: firewall_common::DEFAULT_BAN_TABLE_ENTRIES,
            ban_ranges_max_entries: firewall_common::DEFAULT_BAN_RANGES_MAX_ENTRIES,
            allow_max_entries: firewall_common::DEFAULT_ALLOW_MAX_ENTRIES,
            source_stats_max_entries: firewall_common::DEFAULT_SOURCE_STATS_MAX_ENTRIES,
            pin: true,
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
        }
    }
}

impl KernelSettings {
    /// Returns the number of buckets of each ban table.
    pub fn ban_table_buckets(&self) -> u32 {
        firewall_common::ban_table_buckets(self.ban_table_entries.min(self.bans_max_entries))
    }
}

/// Errors from the kernel layer.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("the agent was built without the XDP object; build it with `cargo xtask build`")]
    ObjectMissing,

    #[error("invalid xdp setting `{setting}`: the map capacity must be at least 1")]
    InvalidMapCapacity { setting: &'static str },

    #[error("failed to load the XDP object and create its maps")]
    Load {
        #[source]
        source: aya::EbpfError,
    },

    #[error("the XDP object has no program named {name}; rebuild it with `cargo xtask build`")]
    ProgramMissing { name: &'static str },

    #[error("the kernel rejected the XDP program {name}")]
    ProgramLoad {
        name: &'static str,
        #[source]
        source: ProgramError,
    },

    #[error("the XDP object has no map named {name}; rebuild it with `cargo xtask build`")]
    MapMissing { name: &'static str },

    #[error("map {name} in the XDP object does not have the type or layout the agent expects")]
    MapLayout {
        name: &'static str,
        #[source]
        source: MapError,
    },

    #[error("network interface {interface} not found; list the interfaces with `ip link`")]
    InterfaceNotFound { interface: String },

    #[error("the XDP program is already attached to {interface}")]
    AlreadyAttached { interface: String },

    #[error("failed to attach the XDP program to {interface} in {mode} mode")]
    Attach {
        interface: String,
        mode: &'static str,
        #[source]
        source: ProgramError,
    },

    #[error("failed to detach the XDP program from {interface}")]
    Detach {
        interface: String,
        #[source]
        source: ProgramError,
    },

    #[error(
        "kernel map {map} is full ({max_entries} entries); raise `{setting}` in the [xdp] \
         config section or remove entries"
    )]
    MapFull {
        map: &'static str,
        setting: &'static str,
        max_entries: u32,
    },

    #[error(
        "applied {applied} of {total} bans to the kernel maps, then the update failed; the \
         other {} are not in the kernel",
        total - applied
    )]
    BansStopped {
        applied: usize,
        total: usize,
        #[source]
        source: Box<KernelError>,
    },

    #[error("failed to {operation} map {map}")]
    Map {
        map: &'static str,
        operation: &'static str,
        #[source]
        source: MapError,
    },

    #[error("{} is not on bpffs; set `pin_dir` in the [xdp] section to a directory below /sys/fs/bpf", path.display())]
    PinDirNotBpffs { path: PathBuf },

    #[error("failed to mount bpffs on /sys/fs/bpf")]
    MountBpffs {
        #[source]
        source: nix::Error,
    },

    #[error("failed to {action} {}", path.display())]
    PinIo {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },

    #[error(
        "pins in {} have schema version {found}, but this agent uses version {}; remove them \
         with `fwctl detach --pin-dir {}` (stored bans are restored at the next start)",
        path.display(),
        firewall_common::PIN_SCHEMA_VERSION,
        path.display()
    )]
    PinSchemaMismatch { path: PathBuf, found: String },

    #[error(
        "pinned map {map} ({}) has {pinned} entries but the config sets {configured}; remove the \
         pins with `fwctl detach` to apply the new capacity (stored bans are restored at the next \
         start), or set the capacity back",
        path.display()
    )]
    PinnedCapacity {
        map: &'static str,
        path: PathBuf,
        pinned: u32,
        configured: u32,
    },

    #[error(
        "no pinned maps in {}: the agent has not run with `pin = true` and this `pin_dir`; \
         start the agent, or pass the agent's pin directory with --pin-dir",
        path.display()
    )]
    NoPins { path: PathBuf },

    #[error("failed to open the pinned XDP link {}", path.display())]
    OpenPinnedLink {
        path: PathBuf,
        #[source]
        source: aya::programs::links::LinkError,
    },

    #[error("failed to pin the XDP link of {interface} at {}", path.display())]
    PinLink {
        interface: String,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },

    #[error("the XDP link of {interface} is not a bpf_link, so it cannot be pinned")]
    LinkNotPinnable {
        interface: String,
        #[source]
        source: aya::programs::links::LinkError,
    },

    #[error("failed to read the CLOCK_BOOTTIME clock")]
    Clock {
        #[source]
        source: nix::Error,
    },

    #[error("failed to read the capabilities of the agent from {path}")]
    ReadCapabilities {
        path: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("{path} has no valid `CapEff:` line")]
    ParseCapabilities { path: &'static str },

    #[error(
        "missing capabilities {missing}; run the agent as root or grant them, for example with \
         `setcap {setcap}+ep` on the binary or `AmbientCapabilities=` in its systemd unit"
    )]
    MissingCapabilities { missing: String, setcap: String },

    #[error("BPF_PROG_TEST_RUN of the XDP program failed")]
    TestRun {
        #[source]
        source: ProgramError,
    },
}

impl KernelError {
    /// Returns whether the error is a full map, alone or as the reason a batch of bans stopped.
    pub fn is_map_full(&self) -> bool {
        match self {
            Self::MapFull { .. } => true,
            Self::BansStopped { source, .. } => source.is_map_full(),
            _ => false,
        }
    }
}

/// Totals of one verdict, summed over all CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerdictTotal {
    pub verdict: Verdict,
    pub counter: PacketCounter,
}

/// Counters of one source address, summed over all CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceTotal {
    /// The source, IPv4 sources as IPv4 (never IPv4-mapped).
    pub addr: IpAddr,
    pub counters: SourceCounters,
}

/// A ban as the kernel maps hold it: read back from them, or to be written by
/// [`Blocklist::ban_all`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelBan {
    pub network: IpNetwork,
    /// When the ban ends on the wall clock, converted from the kernel's boot clock; `None` for a
    /// ban that never expires.
    pub expires_at: Option<SystemTime>,
}

/// The kernel blocklist and its counters, as the agent uses them.
///
/// A single address goes into the exact-address maps and a range into the range tries. The
/// allowlist wins over every ban.
pub trait Blocklist: Send + Sync + 'static {
    /// Inserts or replaces the ban of `network`. `expires_at` of `None` means the ban never
    /// expires.
    fn ban(&self, network: IpNetwork, expires_at: Option<SystemTime>) -> Result<(), KernelError>;

    /// Inserts or replaces every ban of `bans`, with batched map updates where the map type
    /// has them. The default inserts one ban at a time.
    ///
    /// # Errors
    ///
    /// [`KernelError::BansStopped`] with the number of bans applied when an update fails, such
    /// as on a full map. The bans applied stay in the kernel.
    fn ban_all(&self, bans: &[KernelBan]) -> Result<(), KernelError> {
        for (applied, ban) in bans.iter().enumerate() {
            self.ban(ban.network, ban.expires_at)
                .map_err(|source| KernelError::BansStopped {
                    applied,
                    total: bans.len(),
                    source: Box::new(source),
                })?;
        }
        Ok(())
    }

    /// Removes the ban of `network`. Returns whether a ban was present.
    fn unban(&self, network: IpNetwork) -> Result<bool, KernelError>;

    /// Adds `network` to the allowlist.
    fn allow(&self, network: IpNetwork) -> Result<(), KernelError>;

    /// Removes `network` from the allowlist. Returns whether it was present.
    fn disallow(&self, network: IpNetwork) -> Result<bool, KernelError>;

    /// Returns the verdict counters, one entry per [`Verdict`], in [`Verdict::ALL`] order.
    fn verdict_totals(&self) -> Result<Vec<VerdictTotal>, KernelError>;

    /// Returns up to `limit` sources with the most packets (passed plus dropped), most first.
    fn top_sources(&self, limit: usize) -> Result<Vec<SourceTotal>, KernelError>;

    /// Returns the state of the XDP program's ban tables, whose `overflow_v4` and `overflow_v6`
    /// count the exact bans that found their bucket full, so that the program searches them,
    /// and the other sources of their buckets, in the slower hash maps. `None` without tables.
    fn ban_table_state(&self) -> Option<firewall_common::BanTableState> {
        None
    }

    /// Returns every ban in the kernel maps, expired or not, so that the agent can store bans
    /// that were written while it was stopped. A blocklist without kernel maps returns none.
    fn kernel_bans(&self) -> Result<Vec<KernelBan>, KernelError> {
        Ok(Vec::new())
    }
}
