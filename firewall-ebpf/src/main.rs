//! The XDP program of the API firewall.
//!
//! For every received frame it finds the IPv4 or IPv6 source address and decides: an allowlisted
//! source passes, and a source with an unexpired ban of its own or of a range containing it is
//! dropped. The outcome is counted per source and per [`Verdict`]. Frames it cannot classify (not
//! IP, truncated, invalid IP header) always pass, and are counted, so a parser gap can never
//! black-hole traffic.
//!
//! The drop path of an exact-address ban is kept short, because it is the one a flood takes. It
//! parses with one load per header field and skips the allowlist trie while the allowlist
//! contains nothing outside loopback. A source is searched in an array used as a hash table
//! (`BAN_TABLE_V4`, `BAN_TABLE_V6`), whose lookup costs a fraction of a kernel hash map's. The
//! hash map is searched only for the few bans the table could not place. The drop is counted inside the ban
//! itself instead of in the LRU per-source map, then in the per-CPU verdict counter, and the
//! clock is read only for a ban that expires.
//!
//! The counters inside a ban are shared by all CPUs and updated with plain adds, not atomic
//! ones: in `cargo xtask bench kernel` the two atomic adds cost about as much as the rest of
//! the drop path together. The price is precision under load: when several CPUs drop frames of
//! the same source at the same moment, some of those adds can overwrite each other, so a ban's
//! counters are a lower bound. The per-verdict counters are per CPU and exact.
//!
//! The maps and their layouts are defined in `firewall-common`, which the agent shares.

#![no_std]
#![no_main]
// `asm!` for the BPF target, which aya-ebpf also enables.
#![feature(asm_experimental_arch)]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_ktime_get_boot_ns,
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, LruPerCpuHashMap, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};

use firewall_common::{
    AllowSummary, AllowValue, BAN_BUCKET_SLOTS, BAN_NEVER_EXPIRES, BPF_F_MMAPABLE, BanBucketV4,
    BanBucketV6, BanKeyV4, BanKeyV6, BanTableState, BanValue, MAP_BAN_TABLE_STATE,
    MAP_BAN_TABLE_V4, MAP_BAN_TABLE_V6, ban_bucket_index, ban_bucket_index_v6, ban_table_buckets,
    DEFAULT_ALLOW_MAX_ENTRIES, DEFAULT_BAN_RANGES_MAX_ENTRIES, DEFAULT_BAN_TABLE_ENTRIES, DEFAULT_BANS_MAX_ENTRIES,
    DEFAULT_SOURCE_STATS_MAX_ENTRIES, FLOOR_PROGRAM_NAME, MAP_ALLOW_SUMMARY, MAP_ALLOW_V4,
    MAP_ALLOW_V6, MAP_BAN_RANGES_V4, MAP_BAN_RANGES_V6, MAP_BANS_V4, MAP_BANS_V6, MAP_SOURCE_STATS,
    MAP_VERDICTS, PROGRAM_NAME, PacketCounter, SourceCounters, SourceKey, Verdict,
};

/// Length of an Ethernet header without VLAN tags: two MAC addresses and the EtherType.
const ETHERNET_HEADER_LEN: usize = 14;
/// Offset of the EtherType in an untagged Ethernet header.
const ETHERTYPE_OFFSET: usize = 12;
/// Length of one 802.1Q or 802.1ad tag: the tag control field and the inner EtherType.
const VLAN_TAG_LEN: usize = 4;
/// Number of stacked VLAN tags the parser skips. A frame with more is counted as not IP.
const MAX_VLAN_TAGS: usize = 2;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_8021Q: u16 = 0x8100;
const ETHERTYPE_8021AD: u16 = 0x88a8;

/// Length of an IPv4 header without options (IHL of 5 words).
const IPV4_MIN_HEADER_LEN: usize = 20;
/// Offset of the source address in an IPv4 header.
const IPV4_SOURCE_OFFSET: usize = 12;
/// Length of the fixed IPv6 header.
const IPV6_HEADER_LEN: usize = 40;
/// Offset of the source address in an IPv6 header.
const IPV6_SOURCE_OFFSET: usize = 8;
/// First byte of every IPv4 loopback address (`127.0.0.0/8`).
const IPV4_LOOPBACK_FIRST_BYTE: u8 = 127;
/// Bytes 8 to 11 of an IPv4-mapped IPv6 address (`::ffff:0:0/96`), loaded in memory order.
const IPV4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
/// The IPv6 loopback address `::1`.
const IPV6_LOOPBACK: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// `BPF_ANY` flag of `bpf_map_update_elem`: create the entry or replace it.
const BPF_ANY: u64 = 0;
/// `BPF_F_NO_PREALLOC` map flag: entries are allocated on insert, so a large, mostly empty ban
/// map costs little kernel memory.
const BPF_F_NO_PREALLOC: u32 = 1;

/// Declares a map whose symbol name must equal a map name constant of `firewall-common`, which
/// the agent uses to find the map. A mismatch fails the build.
macro_rules! shared_map {
    ($name:ident: $map_type:ty = $init:expr, named $expected:path) => {
        #[map]
        static $name: $map_type = $init;

        const _: () = assert!(
            str_eq(stringify!($name), $expected),
            "map symbol differs from its name in firewall-common"
        );
    };
}

shared_map!(
    BANS_V4: HashMap<BanKeyV4, BanValue> =
        HashMap::with_max_entries(DEFAULT_BANS_MAX_ENTRIES, BPF_F_NO_PREALLOC),
    named MAP_BANS_V4
);
shared_map!(
    BANS_V6: HashMap<BanKeyV6, BanValue> =
        HashMap::with_max_entries(DEFAULT_BANS_MAX_ENTRIES, BPF_F_NO_PREALLOC),
    named MAP_BANS_V6
);
shared_map!(
    BAN_TABLE_V4: Array<BanBucketV4> =
        Array::with_max_entries(ban_table_buckets(DEFAULT_BAN_TABLE_ENTRIES), BPF_F_MMAPABLE),
    named MAP_BAN_TABLE_V4
);
shared_map!(
    BAN_TABLE_V6: Array<BanBucketV6> =
        Array::with_max_entries(ban_table_buckets(DEFAULT_BAN_TABLE_ENTRIES), BPF_F_MMAPABLE),
    named MAP_BAN_TABLE_V6
);
shared_map!(
    BAN_TABLE_STATE: Array<BanTableState> = Array::with_max_entries(1, 0),
    named MAP_BAN_TABLE_STATE
);
shared_map!(
    BAN_RANGES_V4: LpmTrie<[u8; 4], BanValue> =
        LpmTrie::with_max_entries(DEFAULT_BAN_RANGES_MAX_ENTRIES, 0),
    named MAP_BAN_RANGES_V4
);
shared_map!(
    BAN_RANGES_V6: LpmTrie<[u8; 16], BanValue> =
        LpmTrie::with_max_entries(DEFAULT_BAN_RANGES_MAX_ENTRIES, 0),
    named MAP_BAN_RANGES_V6
);
shared_map!(
    ALLOW_V4: LpmTrie<[u8; 4], AllowValue> = LpmTrie::with_max_entries(DEFAULT_ALLOW_MAX_ENTRIES, 0),
    named MAP_ALLOW_V4
);
shared_map!(
    ALLOW_V6: LpmTrie<[u8; 16], AllowValue> =
        LpmTrie::with_max_entries(DEFAULT_ALLOW_MAX_ENTRIES, 0),
    named MAP_ALLOW_V6
);
shared_map!(
    ALLOW_SUMMARY: Array<AllowSummary> = Array::with_max_entries(1, 0),
    named MAP_ALLOW_SUMMARY
);
shared_map!(
    SOURCE_STATS: LruPerCpuHashMap<SourceKey, SourceCounters> =
        LruPerCpuHashMap::with_max_entries(DEFAULT_SOURCE_STATS_MAX_ENTRIES, 0),
    named MAP_SOURCE_STATS
);
shared_map!(
    VERDICTS: PerCpuArray<PacketCounter> = PerCpuArray::with_max_entries(Verdict::COUNT, 0),
    named MAP_VERDICTS
);

const _: () = assert!(
    str_eq(stringify!(firewall_xdp), PROGRAM_NAME),
    "program symbol differs from its name in firewall-common"
);

/// Licence of the object. The kernel offers GPL-only helpers to GPL-compatible programs only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// Reason a frame was not classified as an IP packet with a source address.
#[derive(Clone, Copy)]
enum Unclassified {
    /// The frame carries neither IPv4 nor IPv6, or more VLAN tags than the parser skips.
    NotIp,
    /// The frame ends inside its Ethernet header or a VLAN tag.
    TruncatedEthernet,
    /// The frame ends inside its IPv4 or IPv6 header.
    TruncatedIp,
    /// The IP header has the wrong version or an IHL below 5.
    InvalidIp,
}

impl Unclassified {
    #[inline(always)]
    const fn verdict(self) -> Verdict {
        match self {
            Unclassified::NotIp => Verdict::PassedNotIp,
            Unclassified::TruncatedEthernet | Unclassified::TruncatedIp => Verdict::PassedTruncated,
            Unclassified::InvalidIp => Verdict::PassedMalformed,
        }
    }
}

/// Source address of an IP packet. The integers hold the address bytes in network order, as
/// loaded from the frame in memory order, so turning them into map keys needs no byte swap.
#[derive(Clone, Copy)]
enum Source {
    V4(u32),
    /// Bytes 0 to 7, then bytes 8 to 15.
    V6([u64; 2]),
}

impl Source {
    /// Builds the source of an IPv6 packet. Treats an IPv4-mapped source (`::ffff:0:0/96`) as
    /// IPv4, as the agent does when it bans, so such a packet meets the IPv4 ban of the same
    /// address.
    #[inline(always)]
    fn from_v6(words: [u32; 4]) -> Self {
        let [word0, word1, word2, word3] = words;
        if word0 == 0 && word1 == 0 && word2 == IPV4_MAPPED_WORD {
            return Source::V4(word3);
        }
        Source::V6([join_words(word0, word1), join_words(word2, word3)])
    }

    /// Builds the key of [`SOURCE_STATS`] on an 8-byte boundary, where LLVM writes it as two
    /// words instead of 16 single bytes.
    #[inline(always)]
    fn stats_key(self) -> WordAligned<SourceKey> {
        let addr = match self {
            Source::V4(addr) => [0, join_words(IPV4_MAPPED_WORD, addr)],
            Source::V6(addr) => addr,
        };
        WordAligned(SourceKey {
            addr: v6_bytes(addr),
        })
    }
}

/// A value placed on an 8-byte boundary. Map keys made of byte arrays have an alignment of one,
/// and LLVM moves such a key into its stack slot byte by byte unless the slot is aligned.
#[repr(C, align(8))]
struct WordAligned<T>(T);

/// Returns the 8 bytes of `first` followed by those of `second`, both in memory order.
#[inline(always)]
fn join_words(first: u32, second: u32) -> u64 {
    let [b0, b1, b2, b3] = first.to_ne_bytes();
    let [b4, b5, b6, b7] = second.to_ne_bytes();
    u64::from_ne_bytes([b0, b1, b2, b3, b4, b5, b6, b7])
}

/// Returns the 16 address bytes of an IPv6 source.
#[inline(always)]
fn v6_bytes([high, low]: [u64; 2]) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&high.to_ne_bytes());
    bytes[8..].copy_from_slice(&low.to_ne_bytes());
    bytes
}

/// Entry point: drops frames from banned sources and passes every other frame. Returns
/// `XDP_DROP` or `XDP_PASS`, never `XDP_ABORTED`.
#[xdp]
pub fn firewall_xdp(ctx: XdpContext) -> u32 {
    // The kernel guarantees data <= data_end. Subtracting two packet pointers is allowed only
    // to programs loaded with CAP_PERFMON, which the agent checks for.
    let frame_len = ctx.data_end().wrapping_sub(ctx.data()) as u64;

    let verdict = match try_firewall_xdp(&ctx, frame_len) {
        Ok(verdict) => verdict,
        Err(unclassified) => unclassified.verdict(),
    };
    count_verdict(verdict, frame_len);

    if verdict.is_drop() {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// Decides the verdict of an IP packet and counts it against its source. An allowlisted source
/// passes whatever bans cover it.
#[inline(always)]
fn try_firewall_xdp(ctx: &XdpContext, frame_len: u64) -> Result<Verdict, Unclassified> {
    let source = parse_source(ctx)?;

    if let Some(ban) = exact_ban(source)
        && is_live(ban)
    {
        if is_allowlisted(source) {
            count_source(source, false, frame_len);
            return Ok(Verdict::PassedAllowlisted);
        }
        count_ban_drop(ban, frame_len);
        return Ok(Verdict::DroppedBanned);
    }

    let verdict = if is_allowlisted(source) {
        Verdict::PassedAllowlisted
    } else if range_ban(source).is_some_and(is_live) {
        Verdict::DroppedBannedRange
    } else {
        Verdict::Passed
    };
    count_source(source, verdict.is_drop(), frame_len);
    Ok(verdict)
}

/// Parses the Ethernet header, skips up to [`MAX_VLAN_TAGS`] tags, and reads the source address
/// of the IPv4 or IPv6 header behind them.
#[inline(always)]
fn parse_source(ctx: &XdpContext) -> Result<Source, Unclassified> {
    let mut ethertype =
        read_ethertype(ctx, ETHERTYPE_OFFSET).ok_or(Unclassified::TruncatedEthernet)?;
    let mut l3_offset = ETHERNET_HEADER_LEN;

    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETHERTYPE_8021Q.to_be() && ethertype != ETHERTYPE_8021AD.to_be() {
            break;
        }
        // The inner EtherType is the last two bytes of the tag.
        ethertype = read_ethertype(ctx, l3_offset + 2).ok_or(Unclassified::TruncatedEthernet)?;
        l3_offset += VLAN_TAG_LEN;
    }

    if ethertype == ETHERTYPE_IPV4.to_be() {
        parse_ipv4_source(ctx, l3_offset)
    } else if ethertype == ETHERTYPE_IPV6.to_be() {
        parse_ipv6_source(ctx, l3_offset)
    } else {
        Err(Unclassified::NotIp)
    }
}

#[inline(always)]
fn parse_ipv4_source(ctx: &XdpContext, offset: usize) -> Result<Source, Unclassified> {
    let header = frame_range(ctx, offset, 1).ok_or(Unclassified::TruncatedIp)?;
    // SAFETY: `frame_range` checked that the byte at `header` lies within the frame.
    let version_ihl = unsafe { *(header as *const u8) };
    if version_ihl >> 4 != 4 {
        return Err(Unclassified::InvalidIp);
    }
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    if header_len < IPV4_MIN_HEADER_LEN {
        return Err(Unclassified::InvalidIp);
    }

    // The version and IHL are checked before the length, so that a frame with both faults
    // counts as malformed, not truncated.
    frame_range(ctx, offset, IPV4_MIN_HEADER_LEN).ok_or(Unclassified::TruncatedIp)?;
    // SAFETY: bytes 12 to 15 of the 20 checked above.
    let addr = unsafe { load_u32(header + IPV4_SOURCE_OFFSET) };

    // Options are not read, but a header that claims more bytes than the frame has is truncated.
    frame_range(ctx, offset, header_len).ok_or(Unclassified::TruncatedIp)?;
    Ok(Source::V4(addr))
}

#[inline(always)]
fn parse_ipv6_source(ctx: &XdpContext, offset: usize) -> Result<Source, Unclassified> {
    let header = frame_range(ctx, offset, IPV6_HEADER_LEN).ok_or(Unclassified::TruncatedIp)?;

    // SAFETY: `frame_range` checked that the 40 bytes at `header` lie within the frame.
    let version_class = unsafe { *(header as *const u8) };
    if version_class >> 4 != 6 {
        return Err(Unclassified::InvalidIp);
    }

    // SAFETY: bytes 8 to 23 of the 40 checked above.
    let words = unsafe {
        [
            load_u32(header + IPV6_SOURCE_OFFSET),
            load_u32(header + IPV6_SOURCE_OFFSET + 4),
            load_u32(header + IPV6_SOURCE_OFFSET + 8),
            load_u32(header + IPV6_SOURCE_OFFSET + 12),
        ]
    };
    Ok(Source::from_v6(words))
}

/// Returns the address of the `len` bytes at `offset` in the frame, or `None` when they run past
/// its end. Every read of packet data goes through this check, which is the form the verifier
/// needs to prove the access in bounds.
#[inline(always)]
fn frame_range(ctx: &XdpContext, offset: usize, len: usize) -> Option<usize> {
    let start = ctx.data() + offset;
    if start + len > ctx.data_end() {
        return None;
    }
    Some(start)
}

/// Reads the EtherType at `offset` as it lies in the frame (network byte order), or returns
/// `None` when it runs past the frame's end. Callers compare it with `ETHERTYPE_*.to_be()`, so
/// no byte swap is needed.
#[inline(always)]
fn read_ethertype(ctx: &XdpContext, offset: usize) -> Option<u16> {
    let start = frame_range(ctx, offset, 2)?;
    // SAFETY: `frame_range` checked that the two bytes at `start` lie within the frame.
    Some(unsafe { load_u16(start) })
}

// Packet loads in one instruction. Header fields sit at any 2-byte boundary (the IPv4 source at
// offset 26), and LLVM splits a load it cannot prove aligned into single bytes and shifts. The
// BPF load instructions accept such addresses in packet data. The verifier checks packet
// alignment only with BPF_F_STRICT_ALIGNMENT or on architectures without efficient unaligned
// access, and then it assumes that the IP header starts 2 bytes past a 4-byte boundary. Under
// that rule every field read here is aligned behind any number of 4-byte VLAN tags, which is
// why IPv6 addresses are read in 4-byte words. The loads keep the bytes in memory order, so
// the values are in network byte order.

/// Loads the two bytes at `addr` in memory order.
///
/// # Safety
///
/// `addr..addr + 2` must have passed [`frame_range`].
#[inline(always)]
unsafe fn load_u16(addr: usize) -> u16 {
    let value: u64;
    // SAFETY: the caller checked the range; the load reads packet memory only.
    unsafe {
        core::arch::asm!(
            "{value} = *(u16 *)({addr} + 0)",
            addr = in(reg) addr,
            value = lateout(reg) value,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    value as u16
}

/// Loads the four bytes at `addr` in memory order.
///
/// # Safety
///
/// `addr..addr + 4` must have passed [`frame_range`].
#[inline(always)]
unsafe fn load_u32(addr: usize) -> u32 {
    let value: u64;
    // SAFETY: the caller checked the range; the load reads packet memory only.
    unsafe {
        core::arch::asm!(
            "{value} = *(u32 *)({addr} + 0)",
            addr = in(reg) addr,
            value = lateout(reg) value,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    value as u32
}

/// Returns whether an allowlist trie contains `source`. The trie is skipped when the source is not
/// loopback and [`ALLOW_SUMMARY`] counts no entry outside loopback for its family. A missing
/// summary means a lookup, so the allowlist still wins.
#[inline(always)]
fn is_allowlisted(source: Source) -> bool {
    let summary = ALLOW_SUMMARY.get(0);
    match source {
        Source::V4(addr) => {
            let may_match = addr.to_ne_bytes()[0] == IPV4_LOOPBACK_FIRST_BYTE
                || summary.is_none_or(|summary| summary.outside_loopback_v4 != 0);
            may_match && ALLOW_V4.get(Key::new(32, addr.to_ne_bytes())).is_some()
        }
        Source::V6(addr) => {
            let addr = v6_bytes(addr);
            let may_match = addr == IPV6_LOOPBACK
                || summary.is_none_or(|summary| summary.outside_loopback_v6 != 0);
            may_match && ALLOW_V6.get(Key::new(128, addr)).is_some()
        }
    }
}

/// Returns the ban of `source` itself, if it has one, expired or not.
#[inline(always)]
fn exact_ban(source: Source) -> Option<*mut BanValue> {
    match source {
        Source::V4(addr) => match table_ban_v4(addr) {
            TableSearch::Found(ban) => Some(ban),
            TableSearch::Absent => None,
            TableSearch::Unknown => BANS_V4.get_ptr_mut(BanKeyV4 {
                addr: addr.to_ne_bytes(),
            }),
        },
        Source::V6(addr) => match table_ban_v6(addr) {
            TableSearch::Found(ban) => Some(ban),
            TableSearch::Absent => None,
            TableSearch::Unknown => BANS_V6.get_ptr_mut(BanKeyV6 {
                addr: v6_bytes(addr),
            }),
        },
    }
}

/// Outcome of a search of [`BAN_TABLE_V4`] or [`BAN_TABLE_V6`].
enum TableSearch {
    /// The ban of the address, in its slot.
    Found(*mut BanValue),
    /// The address has no exact ban: it is not in its bucket and no ban overflowed the bucket.
    Absent,
    /// The table cannot tell: it is not ready, the address is all zero, or bans overflowed the
    /// bucket. The family's hash map decides.
    Unknown,
}

/// Returns the state of the ban tables once a writer has marked them ready.
#[inline(always)]
fn ready_table_state() -> Option<&'static BanTableState> {
    BAN_TABLE_STATE.get(0).filter(|state| state.ready != 0)
}

/// Returns the outcome for an address missing from its bucket. `overflow` is the bucket's count
/// of bans that live in the hash map only.
#[inline(always)]
fn miss_in_bucket(overflow: u32) -> TableSearch {
    if overflow == 0 {
        TableSearch::Absent
    } else {
        TableSearch::Unknown
    }
}

/// Searches the bucket of an IPv4 address in [`BAN_TABLE_V4`].
#[inline(always)]
fn table_ban_v4(addr: u32) -> TableSearch {
    // `0.0.0.0` marks a free slot, so its ban lives in the hash map only.
    if addr == 0 {
        return TableSearch::Unknown;
    }
    let Some(state) = ready_table_state() else {
        return TableSearch::Unknown;
    };
    let index = ban_bucket_index(addr, state.seed, state.bucket_bits);
    let Some(bucket) = BAN_TABLE_V4.get_ptr_mut(index) else {
        return TableSearch::Unknown;
    };
    for slot in 0..BAN_BUCKET_SLOTS {
        // SAFETY: the pointer comes from a successful array lookup, and array slots are never
        // freed. The agent writes the address with a single aligned 4-byte store.
        let slot_addr = unsafe { core::ptr::read_volatile(&raw const (*bucket).addrs[slot]) };
        if slot_addr == addr {
            // SAFETY: as above; `slot` is below the array length.
            return TableSearch::Found(unsafe { &raw mut (*bucket).bans[slot] });
        }
    }
    // SAFETY: as above.
    miss_in_bucket(unsafe { core::ptr::read_volatile(&raw const (*bucket).overflow) })
}

/// Searches the bucket of an IPv6 address, as the two words of [`Source::V6`], in
/// [`BAN_TABLE_V6`].
///
/// NOTE: a writer stores an address's two words one after the other, so for an instant a slot
/// being filled or freed shows its second word after a first word of zero. A source whose first
/// 8 bytes are zero (`::/64`, which is not routable) may match such a slot in that instant.
#[inline(always)]
fn table_ban_v6(addr: [u64; 2]) -> TableSearch {
    // `::` marks a free slot, so its ban lives in the hash map only.
    if addr[0] == 0 && addr[1] == 0 {
        return TableSearch::Unknown;
    }
    let Some(state) = ready_table_state() else {
        return TableSearch::Unknown;
    };
    let index = ban_bucket_index_v6(addr, state.seed, state.bucket_bits);
    let Some(bucket) = BAN_TABLE_V6.get_ptr_mut(index) else {
        return TableSearch::Unknown;
    };
    for slot in 0..BAN_BUCKET_SLOTS {
        // SAFETY: the pointer comes from a successful array lookup, and array slots are never
        // freed. The agent writes each word with a single aligned 8-byte store.
        let (first, second) = unsafe {
            (
                core::ptr::read_volatile(&raw const (*bucket).addrs[slot][0]),
                core::ptr::read_volatile(&raw const (*bucket).addrs[slot][1]),
            )
        };
        if first == addr[0] && second == addr[1] {
            // SAFETY: as above; `slot` is below the array length.
            return TableSearch::Found(unsafe { &raw mut (*bucket).bans[slot] });
        }
    }
    // SAFETY: as above.
    miss_in_bucket(unsafe { core::ptr::read_volatile(&raw const (*bucket).overflow) })
}

/// Returns the ban of the longest banned range holding `source`, if any, expired or not.
///
/// NOTE: only the longest matching range is checked. When it has expired but a shorter range
/// holding the same source has not, the source passes until the agent's sweeper removes the
/// expired range.
#[inline(always)]
fn range_ban(source: Source) -> Option<*const BanValue> {
    let ban = match source {
        Source::V4(addr) => BAN_RANGES_V4.get(Key::new(32, addr.to_ne_bytes())),
        Source::V6(addr) => BAN_RANGES_V6.get(Key::new(128, v6_bytes(addr))),
    };
    ban.map(|ban| ban as *const BanValue)
}

/// Returns whether `ban` has not expired yet. The clock is read only for a ban that expires.
#[inline(always)]
fn is_live(ban: *const BanValue) -> bool {
    // SAFETY: the pointer comes from a successful map lookup, so it points at a live `BanValue`
    // in the map's element storage for the rest of this run (the program runs under RCU). The
    // agent may replace the value concurrently, but an aligned 8-byte load is not torn.
    let expires_at_ns = unsafe { core::ptr::read_volatile(&raw const (*ban).expires_at_ns) };
    if expires_at_ns == BAN_NEVER_EXPIRES {
        return true;
    }
    // SAFETY: `bpf_ktime_get_boot_ns` takes no arguments and only reads a clock.
    let now_ns = unsafe { bpf_ktime_get_boot_ns() };
    now_ns < expires_at_ns
}

/// Adds a dropped frame to the counters inside its exact-address ban, with plain adds (see the
/// crate documentation for why they are not atomic).
#[inline(always)]
fn count_ban_drop(ban: *mut BanValue, frame_len: u64) {
    // SAFETY: the pointer comes from a successful hash map or array lookup, so it points at a
    // live, 8-byte aligned `BanValue` for the rest of this run (the program runs under RCU).
    // Volatile accesses keep each counter to one aligned 8-byte load and store, which are never
    // torn. Other CPUs, and the agent replacing the ban, may write the same counters meanwhile,
    // which can lose some adds but never corrupts a value.
    unsafe {
        let packets = &raw mut (*ban).dropped_packets;
        let bytes = &raw mut (*ban).dropped_bytes;
        core::ptr::write_volatile(packets, core::ptr::read_volatile(packets).wrapping_add(1));
        core::ptr::write_volatile(bytes, core::ptr::read_volatile(bytes).wrapping_add(frame_len));
    }
}

/// Adds the frame to the passed or dropped counters of its source on this CPU.
#[inline(always)]
fn count_source(source: Source, dropped: bool, frame_len: u64) {
    let key = source.stats_key();

    match SOURCE_STATS.get_ptr_mut(&key.0) {
        Some(counters) => {
            // SAFETY: the pointer comes from a successful lookup in a per-CPU map, so it points
            // at this CPU's copy of the entry, which no other CPU writes. It stays valid for the
            // rest of this run because the program runs under RCU.
            let counters = unsafe { &mut *counters };
            add_frame(counters, dropped, frame_len);
        }
        None => {
            let mut counters = SourceCounters::default();
            add_frame(&mut counters, dropped, frame_len);
            // An update of a per-CPU map from a program writes this CPU's copy only, so a
            // concurrent first packet on another CPU is not overwritten. A failure (no memory)
            // loses this one packet's count, which is preferable to failing the frame.
            let _ = SOURCE_STATS.insert(&key.0, counters, BPF_ANY);
        }
    }
}

#[inline(always)]
fn add_frame(counters: &mut SourceCounters, dropped: bool, frame_len: u64) {
    if dropped {
        counters.dropped_packets += 1;
        counters.dropped_bytes += frame_len;
    } else {
        counters.passed_packets += 1;
        counters.passed_bytes += frame_len;
    }
}

/// Adds the frame to the counter of `verdict` on this CPU.
#[inline(always)]
fn count_verdict(verdict: Verdict, frame_len: u64) {
    if let Some(counter) = VERDICTS.get_ptr_mut(verdict as u32) {
        // SAFETY: the pointer comes from a successful lookup in a per-CPU array, so it points at
        // this CPU's slot, which no other CPU writes, and array slots are never freed.
        let counter = unsafe { &mut *counter };
        counter.packets += 1;
        counter.bytes += frame_len;
    }
}

/// Drops every frame without reading it: the cost floor that the kernel benchmark subtracts.
#[xdp]
pub fn bench_floor_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

const _: () = assert!(
    str_eq(stringify!(bench_floor_drop), FLOOR_PROGRAM_NAME),
    "program symbol differs from its name in firewall-common"
);

/// Compares two strings at compile time, for the name checks above.
const fn str_eq(left: &str, right: &str) -> bool {
    let (left, right) = (left.as_bytes(), right.as_bytes());
    if left.len() != right.len() {
        return false;
    }
    let mut index = 0;
    while index < left.len() {
        if left[index] != right[index] {
            return false;
        }
        index += 1;
    }
    true
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Never reached: no path of this program panics. A BPF program can neither unwind nor
    // abort, so the handler only exists to satisfy the compiler.
    loop {}
}
