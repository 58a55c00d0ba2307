//! The agent's side of the XDP program: loading the object, attaching it to interfaces, and
//! reading and writing its maps.
//!
//! The rest of the agent sees the kernel through the [`Blocklist`] trait, so the ban logic and the
//! proxy are tested without a kernel.

use std::net::IpAddr;
use std::time::SystemTime;

use firewall_common::{PacketCounter, SourceCounters, Verdict};
use serde::Deserialize;

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
    /// Capacity of each ban map (IPv4 and IPv6 separately).
    pub bans_max_entries: u32,
    /// Capacity of the per-source counter map; least recently seen sources are evicted.
    pub source_stats_max_entries: u32,
}

impl Default for KernelSettings {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            mode: XdpMode::Auto,
            bans_max_entries: firewall_common::DEFAULT_BANS_MAX_ENTRIES,
            source_stats_max_entries: firewall_common::DEFAULT_SOURCE_STATS_MAX_ENTRIES,
        }
    }
}

/// Errors from the kernel layer.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    // Filled in by the loader module.
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

/// The kernel blocklist and its counters, as the agent uses them.
///
/// Addresses passed in are canonical: an IPv4-mapped IPv6 address has already been turned into
/// IPv4 by the caller.
pub trait Blocklist: Send + Sync + 'static {
    /// Inserts or replaces the ban of `addr`. `expires_at` of `None` means the ban never expires.
    fn ban(&self, addr: IpAddr, expires_at: Option<SystemTime>) -> Result<(), KernelError>;

    /// Removes the ban of `addr`. Returns whether a ban was present.
    fn unban(&self, addr: IpAddr) -> Result<bool, KernelError>;

    /// Returns the verdict counters, one entry per [`Verdict`], in [`Verdict::ALL`] order.
    fn verdict_totals(&self) -> Result<Vec<VerdictTotal>, KernelError>;

    /// Returns up to `limit` sources with the most packets (passed plus dropped), most first.
    fn top_sources(&self, limit: usize) -> Result<Vec<SourceTotal>, KernelError>;
}
