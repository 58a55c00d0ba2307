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

/// Hash map of banned IPv4 sources: [`BanKeyV4`] to [`BanValue`]. It contains every exact IPv4
/// ban and enforces the configured capacity. [`MAP_BAN_TABLE_V4`] indexes the same bans for the
/// XDP program.
pub const MAP_BANS_V4: &str = "BANS_V4";
/// Array of [`BanBucketV4`]: the table the XDP program searches for an exact IPv4 ban before, and
/// usually instead of, [`MAP_BANS_V4`].
///
/// A kernel hash map lookup is the largest cost of dropping a banned frame. This table is an
/// array, whose lookup the kernel compiles into a few instructions, searched as a hash table with
/// [`ban_bucket_index`] and [`BAN_BUCKET_SLOTS`] slots per bucket. Every writer keeps it in step
/// with [`MAP_BANS_V4`]: a ban goes into the hash map first, then into a free slot of its bucket.
/// A ban that finds its bucket full stays in the hash map only and is counted in the bucket's
/// `overflow`, so only sources of that bucket pay the hash map lookup. A ban of `0.0.0.0`,
/// which marks a free slot, is always searched in the hash map. The map is created
/// memory-mappable (`BPF_F_MMAPABLE`), so the agent writes single fields with atomic stores
/// instead of whole buckets.
pub const MAP_BAN_TABLE_V4: &str = "BAN_TABLE_V4";
/// Array of [`BanBucketV6`]: the IPv6 counterpart of [`MAP_BAN_TABLE_V4`], with the same number
/// of buckets and the same rules. A ban of `::`, which marks a free slot, is always searched in
/// [`MAP_BANS_V6`].
pub const MAP_BAN_TABLE_V6: &str = "BAN_TABLE_V6";
/// Array of one [`BanTableState`], at index 0.
pub const MAP_BAN_TABLE_STATE: &str = "BAN_TABLE_STATE";
/// Hash map of banned IPv6 sources: [`BanKeyV6`] to [`BanValue`]. Like [`MAP_BANS_V4`], it
/// contains every exact IPv6 ban, and [`MAP_BAN_TABLE_V6`] indexes them for the XDP program.
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
/// Default number of exact bans per family that the ban tables are sized for. The tables are
/// allocated up front, 144 bytes per ban for both families, so the default stays well below
/// the ban maps' capacity. Bans beyond it still drop, through the hash maps.
pub const DEFAULT_BAN_TABLE_ENTRIES: u32 = 262_144;

/// Version of the map names and layouts in this crate, stored beside the pinned maps. Raise it
/// whenever a pinned map's name, type, key or value changes, so that an agent never reuses
/// maps that an older or newer agent pinned.
pub const PIN_SCHEMA_VERSION: u32 = 3;

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
/// For exact-address bans, the XDP program adds every frame the ban drops to `dropped_packets`
/// and `dropped_bytes`, which all CPUs share. The adds are not atomic, so when several CPUs
/// drop frames of the same source at once some can be lost: the counters are a lower bound.
/// Range bans leave them at zero, because their drops are counted per source in
/// [`MAP_SOURCE_STATS`].
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

/// Slots per bucket of [`MAP_BAN_TABLE_V4`].
pub const BAN_BUCKET_SLOTS: usize = 4;

/// `BPF_F_MMAPABLE` map flag: user space may map an array's values into its memory.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Value of [`MAP_BAN_TABLE_V4`]: up to [`BAN_BUCKET_SLOTS`] exact IPv4 bans whose addresses hash
/// to this bucket.
///
/// `addrs[i]` is the address of slot `i` as its four network-order bytes read in memory order
/// (`u32::from_ne_bytes(octets)`), or 0 for a free slot. `bans[i]` is its ban, with the drops
/// counted as in [`MAP_BANS_V4`]. A writer fills a slot's ban before it stores the address, and
/// clears the address before the ban, so a reader that finds an address finds its ban.
///
/// `overflow` counts the bans of addresses of this bucket that found it full and are in
/// [`MAP_BANS_V4`] only. A writer raises it after the hash map insert and lowers it before the
/// delete, so while it is zero an address missing from the slots has no exact ban.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BanBucketV4 {
    pub addrs: [u32; BAN_BUCKET_SLOTS],
    pub overflow: u32,
    pub reserved: u32,
    pub bans: [BanValue; BAN_BUCKET_SLOTS],
}

/// Value of [`MAP_BAN_TABLE_V6`]: as [`BanBucketV4`], with each address as its 16 network-order
/// bytes read in memory order as two `u64` words (bytes 0 to 7, then 8 to 15). A writer stores
/// the second word of an address before the first, and clears the first before the second.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BanBucketV6 {
    pub addrs: [[u64; 2]; BAN_BUCKET_SLOTS],
    pub overflow: u32,
    pub reserved: u32,
    pub bans: [BanValue; BAN_BUCKET_SLOTS],
}

/// Geometry and state of [`MAP_BAN_TABLE_V4`] and [`MAP_BAN_TABLE_V6`]. Native byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BanTableState {
    /// Zero until a writer has set the other fields and placed the bans of [`MAP_BANS_V4`]. While
    /// it is zero, the XDP program searches the hash map only.
    pub ready: u32,
    /// Base-2 logarithm of the number of buckets, between 1 and 31.
    pub bucket_bits: u32,
    /// Random value mixed into [`ban_bucket_index`], chosen when the table is created.
    pub seed: u32,
    /// Exact IPv4 bans in [`MAP_BANS_V4`] that have no slot in the table: the sum of the
    /// buckets' `overflow` counts plus a ban of `0.0.0.0`. For reports only; the XDP program
    /// reads the bucket's count.
    pub overflow_v4: u32,
    /// The same count for [`MAP_BANS_V6`] and [`MAP_BAN_TABLE_V6`].
    pub overflow_v6: u32,
    pub reserved: u32,
}

/// Returns the bucket of `addr` (network-order bytes read in memory order) in a table of
/// `2^bucket_bits` buckets: the top bits of a multiplicative hash of the address mixed with
/// `seed`. `bucket_bits` must be between 1 and 31.
#[inline(always)]
pub const fn ban_bucket_index(addr: u32, seed: u32, bucket_bits: u32) -> u32 {
    (addr ^ seed).wrapping_mul(0x9e37_79b1) >> ((32 - bucket_bits) & 31)
}

/// Returns the bucket of an IPv6 address, given as the two words of [`BanBucketV6`], in a table
/// of `2^bucket_bits` buckets: the top bits of a multiplicative hash over both words, mixed with
/// `seed`. `bucket_bits` must be between 1 and 31.
#[inline(always)]
pub const fn ban_bucket_index_v6(addr: [u64; 2], seed: u32, bucket_bits: u32) -> u32 {
    const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;
    let first = (addr[0] ^ seed as u64).wrapping_mul(MULTIPLIER);
    let mixed = (first ^ addr[1]).wrapping_mul(MULTIPLIER);
    (mixed >> ((64 - bucket_bits) & 63)) as u32
}

/// Number of buckets of [`MAP_BAN_TABLE_V4`] and [`MAP_BAN_TABLE_V6`] for a capacity of `max_entries` exact IPv4 bans:
/// the power of two that gives at least two slots per ban, so that few buckets fill up. At
/// least 2 and at most `2^31`.
pub const fn ban_table_buckets(max_entries: u32) -> u32 {
    let needed = max_entries.div_ceil((BAN_BUCKET_SLOTS / 2) as u32);
    let buckets = match needed.checked_next_power_of_two() {
        Some(buckets) => buckets,
        None => 1 << 31,
    };
    if buckets < 2 { 2 } else { buckets }
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
    unsafe impl aya::Pod for super::BanBucketV4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BanBucketV6 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BanTableState {}
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
    assert!(core::mem::size_of::<BanBucketV4>() == 120);
    assert!(core::mem::size_of::<BanBucketV6>() == 168);
    assert!(core::mem::size_of::<BanTableState>() == 24);
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
    fn table_buckets_give_two_slots_per_ban() {
        assert_eq!(ban_table_buckets(1_000_000), 524_288);
        assert_eq!(ban_table_buckets(1), 2);
        assert_eq!(ban_table_buckets(0), 2);
        assert_eq!(ban_table_buckets(9), 8);
        assert_eq!(ban_table_buckets(u32::MAX), 1 << 31);
        for max_entries in [1, 7, 100, 4_096, 1_000_000] {
            let slots = u64::from(ban_table_buckets(max_entries)) * BAN_BUCKET_SLOTS as u64;
            assert!(slots >= 2 * u64::from(max_entries), "{max_entries}");
        }
    }

    #[test]
    fn bucket_index_spreads_neighbours() {
        for bits in [1, 2, 19, 31] {
            for addr in [0u32, 1, 0xffff_ffff, 0x0a00_0001] {
                assert!(ban_bucket_index(addr, 0x1234_5678, bits) < (1 << bits));
            }
        }
        // The 256 addresses of one /24 land in many buckets of a 1,024-bucket table.
        let mut used = [false; 1024];
        for last in 0..=255u8 {
            let addr = u32::from_ne_bytes([198, 51, 100, last]);
            used[ban_bucket_index(addr, 7, 10) as usize] = true;
        }
        assert!(used.iter().filter(|used| **used).count() > 150);
    }

    #[test]
    fn ipv6_bucket_index_spreads_one_prefix() {
        // The 256 addresses that differ in their last byte within one /64 land in many buckets of
        // a 1,024-bucket table.
        let mut used = [false; 1024];
        for last in 0..=255u8 {
            let mut octets = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last];
            octets[8] = 0x12;
            let high = u64::from_ne_bytes(octets[..8].try_into().expect("8 bytes"));
            let low = u64::from_ne_bytes(octets[8..].try_into().expect("8 bytes"));
            let index = ban_bucket_index_v6([high, low], 7, 10);
            assert!(index < 1024);
            used[index as usize] = true;
        }
        assert!(used.iter().filter(|used| **used).count() > 150);
    }

    #[test]
    fn random_addresses_rarely_find_their_bucket_full() {
        // 100,000 pseudo-random addresses (xorshift) in a table sized for 100,000 bans: with two
        // slots per ban, few buckets get more than four of them.
        const BANS: u32 = 100_000;
        let bits = ban_table_buckets(BANS).trailing_zeros();
        let mut filled = [0u8; 65_536];
        assert_eq!(1usize << bits, filled.len());
        let mut state = 0x2545_f491u32;
        let mut overflow = 0u32;
        for _ in 0..BANS {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let bucket = &mut filled[ban_bucket_index(state, 0x5eed, bits) as usize];
            if usize::from(*bucket) == BAN_BUCKET_SLOTS {
                overflow += 1;
            } else {
                *bucket += 1;
            }
        }
        // A Poisson estimate at 1.53 bans per bucket gives about 1.5%.
        assert!(overflow < BANS / 25, "{overflow} of {BANS} overflowed");
        assert!(overflow > 0, "random addresses should fill some buckets");
    }

    #[test]
    fn source_key_maps_ipv4() {
        let key = SourceKey::from_v4([192, 0, 2, 7]);
        assert_eq!(&key.addr[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(&key.addr[12..], &[192, 0, 2, 7]);
    }
}
