//! Names and layouts of the maps shared by the XDP program and the agent.
//!
//! Both sides compile this crate, so a map's name, key and value are written down once. Every
//! struct here is `#[repr(C)]` with explicit padding, holds plain integers only, and states the
//! byte order of each field.
//!
//! Addresses are kept as byte arrays in network byte order, exactly as they appear in the packet,
//! so neither side converts them on the hot path.

#![no_std]

/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "firewall_xdp";
/// Name of an XDP program in the same object that drops every frame and does nothing else. The
/// kernel benchmark runs it as the cost floor of `BPF_PROG_TEST_RUN`; the agent never loads it.
pub const FLOOR_PROGRAM_NAME: &str = "bench_floor_drop";

/// Hash map of banned IPv4 sources: [`BanKeyV4`] to [`BanValue`].
pub const MAP_BANS_V4: &str = "BANS_V4";
/// Hash map of banned IPv6 sources: [`BanKeyV6`] to [`BanValue`].
pub const MAP_BANS_V6: &str = "BANS_V6";
/// LPM trie of banned IPv4 ranges: `Key<[u8; 4]>` to [`BanValue`].
///
/// The key is aya's LPM key: the prefix length in bits (`u32`, native byte order) followed by
/// the address (network byte order), packed, 8 bytes. Bits past the prefix are zero in every
/// key the agent writes. Single addresses live in [`MAP_BANS_V4`] instead, because a hash
/// lookup is cheaper than a trie walk.
pub const MAP_BAN_RANGES_V4: &str = "BAN_RANGES_V4";
/// LPM trie of banned IPv6 ranges: `Key<[u8; 16]>` (20 bytes) to [`BanValue`].
pub const MAP_BAN_RANGES_V6: &str = "BAN_RANGES_V6";
/// LPM trie of allowlisted IPv4 addresses and ranges: `Key<[u8; 4]>` to [`AllowValue`]. A
/// matching source passes whatever bans cover it.
pub const MAP_ALLOW_V4: &str = "ALLOW_V4";
/// LPM trie of allowlisted IPv6 addresses and ranges: `Key<[u8; 16]>` to [`AllowValue`].
pub const MAP_ALLOW_V6: &str = "ALLOW_V6";
/// Array of one [`AllowSummary`], at index 0, from which the XDP program learns when it can skip
/// the allowlist tries.
pub const MAP_ALLOW_SUMMARY: &str = "ALLOW_SUMMARY";
/// LRU per-CPU hash map of per-source counters: [`SourceKey`] to [`SourceCounters`].
///
/// It counts every classified packet except those dropped by an exact-address ban, which are
/// counted in the ban's own [`BanValue`] so that the drop path writes no LRU entry. A source's
/// totals are the sum of both.
pub const MAP_SOURCE_STATS: &str = "SOURCE_STATS";
/// Per-CPU array of [`PacketCounter`], indexed by [`Verdict`].
pub const MAP_VERDICTS: &str = "VERDICTS";

/// Default capacity of each exact-address ban map. The maps are created without preallocation,
/// so an empty map costs almost no kernel memory. The agent may override it before loading.
pub const DEFAULT_BANS_MAX_ENTRIES: u32 = 1_000_000;
/// Default capacity of each range ban trie.
pub const DEFAULT_BAN_RANGES_MAX_ENTRIES: u32 = 100_000;
/// Default capacity of each allowlist trie.
pub const DEFAULT_ALLOW_MAX_ENTRIES: u32 = 4_096;
/// Default capacity of the per-source counter map. Least recently seen sources are evicted.
pub const DEFAULT_SOURCE_STATS_MAX_ENTRIES: u32 = 65_536;

/// Version of the map names and layouts in this crate, stored beside the pinned maps. Raise it
/// whenever a pinned map's name, type, key or value changes, so that an agent never reuses
/// maps that an older or newer agent pinned.
pub const PIN_SCHEMA_VERSION: u32 = 2;

/// `expires_at_ns` value of a ban that never expires.
pub const BAN_NEVER_EXPIRES: u64 = u64::MAX;

/// Key of [`MAP_BANS_V4`]: the IPv4 source address in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BanKeyV4 {
    pub addr: [u8; 4],
}

/// Key of [`MAP_BANS_V6`]: the IPv6 source address in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BanKeyV6 {
    pub addr: [u8; 16],
}

/// Value of the allowlist tries. The entry's presence is what counts; `reserved` is zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowValue {
    pub reserved: u32,
}

/// Value of the ban maps and tries. Native byte order.
///
/// `expires_at_ns` is on the kernel's `CLOCK_BOOTTIME` clock (`bpf_ktime_get_boot_ns`), in
/// nanoseconds. The XDP program passes a packet whose ban has expired even while the entry is
/// still in the map, so expiry does not depend on the agent's sweeper.
///
/// In the exact-address maps, the XDP program adds every frame the ban drops to
/// `dropped_packets` and `dropped_bytes` with atomic adds, which are shared by all CPUs. Range
/// bans leave them at zero, because their drops are counted per source in [`MAP_SOURCE_STATS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BanValue {
    pub expires_at_ns: u64,
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
}

impl BanValue {
    /// Builds a ban with no drops counted yet.
    pub const fn new(expires_at_ns: u64) -> Self {
        Self {
            expires_at_ns,
            dropped_packets: 0,
            dropped_bytes: 0,
        }
    }
}

/// Number of allowlist entries outside loopback, per family, written by the agent. Native byte
/// order.
///
/// The XDP program looks a source up in an allowlist trie only when the source is a loopback
/// address (`127.0.0.0/8`, `::1`) or the count of its family is not zero. So every writer of an
/// allowlist trie raises the count before it inserts an entry outside loopback, and recounts
/// after it removes one. A count that is too high only costs a lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowSummary {
    pub outside_loopback_v4: u32,
    pub outside_loopback_v6: u32,
}

/// Key of [`MAP_SOURCE_STATS`]: the source address as 16 bytes in network byte order. IPv4
/// sources are stored IPv4-mapped (`::ffff:a.b.c.d`), so one map serves both families.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceKey {
    pub addr: [u8; 16],
}

impl SourceKey {
    /// Builds the key of an IPv4 source from its four network-order bytes.
    #[inline(always)]
    pub const fn from_v4(addr: [u8; 4]) -> Self {
        Self {
            addr: [
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, addr[0], addr[1], addr[2], addr[3],
            ],
        }
    }
}

/// Per-source counters, one copy per CPU. Native byte order; bytes count whole frames.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceCounters {
    pub passed_packets: u64,
    pub passed_bytes: u64,
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
}

/// Packets and bytes counted for one [`Verdict`], one copy per CPU. Native byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketCounter {
    pub packets: u64,
    pub bytes: u64,
}

/// What the XDP program did with a frame, and why. The value indexes [`MAP_VERDICTS`] and its
/// [`Verdict::label`] is the metric label, so values are never renumbered: new verdicts are
/// appended before [`Verdict::COUNT`] grows.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// An IPv4 or IPv6 packet from a source that is not banned.
    Passed = 0,
    /// A packet from a source with an unexpired ban. The only verdict that drops.
    DroppedBanned = 1,
    /// A well-formed frame that carries neither IPv4 nor IPv6 (ARP, LLDP, ...). Passed.
    PassedNotIp = 2,
    /// A frame with an invalid IP header (wrong version, IPv4 IHL below 5). Before
    /// [`Verdict::PassedTruncated`] existed it also counted truncated frames. Passed, because
    /// the kernel stack rejects it anyway and a parser bug must not black-hole traffic.
    PassedMalformed = 3,
    /// A packet from an allowlisted source, passed whatever bans cover it.
    PassedAllowlisted = 4,
    /// A packet from a source inside a banned range with an unexpired ban.
    DroppedBannedRange = 5,
    /// A frame that ends inside its Ethernet header, a VLAN tag or its IP header (including
    /// IPv4 options). Passed, for the same reason as [`Verdict::PassedMalformed`].
    PassedTruncated = 6,
}

impl Verdict {
    /// Number of verdicts, and so the size of [`MAP_VERDICTS`].
    pub const COUNT: u32 = 7;

    /// Every verdict, in index order.
    pub const ALL: [Verdict; Self::COUNT as usize] = [
        Verdict::Passed,
        Verdict::DroppedBanned,
        Verdict::PassedNotIp,
        Verdict::PassedMalformed,
        Verdict::PassedAllowlisted,
        Verdict::DroppedBannedRange,
        Verdict::PassedTruncated,
    ];

    /// Label used in metrics and CLI output.
    pub const fn label(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::DroppedBanned => "dropped_banned",
            Verdict::PassedNotIp => "passed_not_ip",
            Verdict::PassedMalformed => "passed_malformed",
            Verdict::PassedAllowlisted => "passed_allowlisted",
            Verdict::DroppedBannedRange => "dropped_banned_range",
            Verdict::PassedTruncated => "passed_truncated",
        }
    }

    /// Whether the frame is dropped.
    pub const fn is_drop(self) -> bool {
        matches!(self, Verdict::DroppedBanned | Verdict::DroppedBannedRange)
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is `#[repr(C)]`, made of unsigned integers or byte arrays only, with no
    // implicit padding (sizes are checked below), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::BanKeyV4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BanKeyV6 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BanValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AllowValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AllowSummary {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SourceKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SourceCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PacketCounter {}
}

// The layouts are part of the kernel ABI between the object and the agent: a size change here
// must be deliberate.
const _: () = {
    assert!(core::mem::size_of::<BanKeyV4>() == 4);
    assert!(core::mem::size_of::<BanKeyV6>() == 16);
    assert!(core::mem::size_of::<BanValue>() == 24);
    assert!(core::mem::size_of::<AllowSummary>() == 8);
    assert!(core::mem::size_of::<AllowValue>() == 4);
    assert!(core::mem::size_of::<SourceKey>() == 16);
    assert!(core::mem::size_of::<SourceCounters>() == 32);
    assert!(core::mem::size_of::<PacketCounter>() == 16);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_indexes_match_all() {
        for (index, verdict) in Verdict::ALL.iter().enumerate() {
            assert_eq!(*verdict as usize, index);
        }
    }

    #[test]
    fn only_banned_verdicts_drop() {
        let drops: usize = Verdict::ALL.iter().filter(|v| v.is_drop()).count();
        assert_eq!(drops, 2);
        assert!(Verdict::DroppedBanned.is_drop());
        assert!(Verdict::DroppedBannedRange.is_drop());
        assert!(!Verdict::PassedAllowlisted.is_drop());
    }

    #[test]
    fn source_key_maps_ipv4() {
        let key = SourceKey::from_v4([192, 0, 2, 7]);
        assert_eq!(&key.addr[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(&key.addr[12..], &[192, 0, 2, 7]);
    }
}
