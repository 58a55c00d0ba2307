//! The agent's side of the exact ban tables (`BAN_TABLE_V4`, `BAN_TABLE_V6`): array maps that
//! the XDP program searches as hash tables, mapped into the agent's memory.
//!
//! Every exact ban is in its family's hash map (`BANS_V4`, `BANS_V6`), which enforces the
//! capacity and which the agent lists. The tables index the same bans for the XDP program,
//! which searches them instead of the hash maps. The rules that keep the two in step, for every
//! writer:
//!
//! - a new ban goes into the hash map first, then into a free slot of its bucket. When the bucket
//!   is full, the ban stays in the hash map only and the bucket's `overflow` counts it;
//! - a ban that is already in the hash map but has no slot (it overflowed) never takes one, so
//!   that the counts stay exact;
//! - a removed ban leaves its slot, or its bucket's count, first, then the hash map.
//!
//! A writer that stops between two of these steps leaves a ban in the hash map without a slot
//! and uncounted. The agent therefore recounts the overflow from the hash maps at every start
//! ([`BanTables::recount_overflow`]).
//!
//! The maps are memory-mapped, so a slot is written field by field with atomic stores. The XDP
//! program relies on their order: the ban before the address when a slot is filled, the address
//! before the ban when it is freed.

use std::marker::PhantomData;
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use aya::maps::{Array, IterableMap as _, MapData, MapError};
use aya::sys::SyscallError;
use firewall_common::{
    BAN_BUCKET_SLOTS, BanBucketV4, BanBucketV6, BanTableState, BanValue, MAP_BAN_TABLE_STATE,
    MAP_BAN_TABLE_V4, MAP_BAN_TABLE_V6, ban_bucket_index, ban_bucket_index_v6,
};

use super::KernelError;

/// Outcome of [`BanTables::place`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// The ban has a slot: a new one, or the one it had, whose expiry was replaced.
    Slot,
    /// The bucket was full, or the address is all zero: the ban lives in the hash map only.
    Overflow,
}

/// An address family of the ban tables: where its addresses sit in a bucket and how they hash.
///
/// The `unsafe` functions take a pointer to a bucket inside a live mapping of the family's map.
pub(crate) trait Family: Sized {
    type Bucket: aya::Pod;
    /// The address as its network-order bytes.
    type Addr: Copy + Eq + std::hash::Hash;
    const MAP: &'static str;

    fn is_zero(addr: Self::Addr) -> bool;
    fn bucket_index(addr: Self::Addr, seed: u32, bucket_bits: u32) -> u32;
    /// Returns the address in `slot`, all zero for a free slot.
    unsafe fn load_addr(bucket: *mut Self::Bucket, slot: usize) -> Self::Addr;
    /// Stores `addr` in `slot` so that the slot matches `addr` only once the store is complete.
    unsafe fn store_addr(bucket: *mut Self::Bucket, slot: usize, addr: Self::Addr);
    /// Clears the address of `slot` so that it stops matching with the first store.
    unsafe fn clear_addr(bucket: *mut Self::Bucket, slot: usize);
    unsafe fn overflow(bucket: *mut Self::Bucket) -> *mut u32;
    unsafe fn ban(bucket: *mut Self::Bucket, slot: usize) -> *mut BanValue;
    fn total_overflow(state: &mut BanTableState) -> &mut u32;
    fn table(tables: &BanTables) -> &Table<Self>;
}

/// IPv4: addresses as one `u32` word.
pub(crate) enum V4 {}

impl Family for V4 {
    type Bucket = BanBucketV4;
    type Addr = [u8; 4];
    const MAP: &'static str = MAP_BAN_TABLE_V4;

    fn is_zero(addr: [u8; 4]) -> bool {
        addr == [0; 4]
    }

    fn bucket_index(addr: [u8; 4], seed: u32, bucket_bits: u32) -> u32 {
        ban_bucket_index(u32::from_ne_bytes(addr), seed, bucket_bits)
    }

    unsafe fn load_addr(bucket: *mut BanBucketV4, slot: usize) -> [u8; 4] {
        // SAFETY: the caller passes a bucket of the mapping and a slot below its length. The
        // field is 4-byte aligned and only ever accessed atomically.
        let word = unsafe { AtomicU32::from_ptr(&raw mut (*bucket).addrs[slot]) };
        word.load(Ordering::Acquire).to_ne_bytes()
    }

    unsafe fn store_addr(bucket: *mut BanBucketV4, slot: usize, addr: [u8; 4]) {
        // SAFETY: as in `load_addr`.
        let word = unsafe { AtomicU32::from_ptr(&raw mut (*bucket).addrs[slot]) };
        word.store(u32::from_ne_bytes(addr), Ordering::Release);
    }

    unsafe fn clear_addr(bucket: *mut BanBucketV4, slot: usize) {
        // SAFETY: as in `load_addr`.
        let word = unsafe { AtomicU32::from_ptr(&raw mut (*bucket).addrs[slot]) };
        word.store(0, Ordering::Release);
    }

    unsafe fn overflow(bucket: *mut BanBucketV4) -> *mut u32 {
        // SAFETY: the caller passes a bucket of the mapping.
        unsafe { &raw mut (*bucket).overflow }
    }

    unsafe fn ban(bucket: *mut BanBucketV4, slot: usize) -> *mut BanValue {
        // SAFETY: the caller passes a bucket of the mapping and a slot below its length.
        unsafe { &raw mut (*bucket).bans[slot] }
    }

    fn total_overflow(state: &mut BanTableState) -> &mut u32 {
        &mut state.overflow_v4
    }

    fn table(tables: &BanTables) -> &Table<Self> {
        &tables.v4
    }
}

/// IPv6: addresses as two `u64` words, bytes 0 to 7 and 8 to 15.
pub(crate) enum V6 {}

impl V6 {
    fn words(addr: [u8; 16]) -> [u64; 2] {
        let mut first = [0u8; 8];
        let mut second = [0u8; 8];
        first.copy_from_slice(&addr[..8]);
        second.copy_from_slice(&addr[8..]);
        [u64::from_ne_bytes(first), u64::from_ne_bytes(second)]
    }

    /// Returns the two atomic words of the address in `slot`.
    ///
    /// # Safety
    ///
    /// As for the functions of [`Family`].
    unsafe fn addr_words<'a>(bucket: *mut BanBucketV6, slot: usize) -> [&'a AtomicU64; 2] {
        // SAFETY: the words are 8-byte aligned fields of a bucket in the mapping, only ever
        // accessed atomically.
        unsafe {
            [
                AtomicU64::from_ptr(&raw mut (*bucket).addrs[slot][0]),
                AtomicU64::from_ptr(&raw mut (*bucket).addrs[slot][1]),
            ]
        }
    }
}

impl Family for V6 {
    type Bucket = BanBucketV6;
    type Addr = [u8; 16];
    const MAP: &'static str = MAP_BAN_TABLE_V6;

    fn is_zero(addr: [u8; 16]) -> bool {
        addr == [0; 16]
    }

    fn bucket_index(addr: [u8; 16], seed: u32, bucket_bits: u32) -> u32 {
        ban_bucket_index_v6(Self::words(addr), seed, bucket_bits)
    }

    unsafe fn load_addr(bucket: *mut BanBucketV6, slot: usize) -> [u8; 16] {
        // SAFETY: forwarded from the caller.
        let [first, second] = unsafe { Self::addr_words(bucket, slot) };
        let mut addr = [0u8; 16];
        addr[..8].copy_from_slice(&first.load(Ordering::Acquire).to_ne_bytes());
        addr[8..].copy_from_slice(&second.load(Ordering::Acquire).to_ne_bytes());
        addr
    }

    unsafe fn store_addr(bucket: *mut BanBucketV6, slot: usize, addr: [u8; 16]) {
        // SAFETY: forwarded from the caller.
        let [first, second] = unsafe { Self::addr_words(bucket, slot) };
        let [first_word, second_word] = Self::words(addr);
        // Until the first word lands, the slot shows the second word after a first word of
        // zero, which only a source in `::/64` (not routable) could match.
        second.store(second_word, Ordering::Release);
        first.store(first_word, Ordering::Release);
    }

    unsafe fn clear_addr(bucket: *mut BanBucketV6, slot: usize) {
        // SAFETY: forwarded from the caller.
        let [first, second] = unsafe { Self::addr_words(bucket, slot) };
        first.store(0, Ordering::Release);
        second.store(0, Ordering::Release);
    }

    unsafe fn overflow(bucket: *mut BanBucketV6) -> *mut u32 {
        // SAFETY: the caller passes a bucket of the mapping.
        unsafe { &raw mut (*bucket).overflow }
    }

    unsafe fn ban(bucket: *mut BanBucketV6, slot: usize) -> *mut BanValue {
        // SAFETY: the caller passes a bucket of the mapping and a slot below its length.
        unsafe { &raw mut (*bucket).bans[slot] }
    }

    fn total_overflow(state: &mut BanTableState) -> &mut u32 {
        &mut state.overflow_v6
    }

    fn table(tables: &BanTables) -> &Table<Self> {
        &tables.v6
    }
}

/// One mapped table.
pub(crate) struct Table<F: Family> {
    /// Keeps a descriptor of the mapped map open beside the mapping.
    _map: Array<MapData, F::Bucket>,
    buckets: NonNull<F::Bucket>,
    bucket_count: usize,
    mapped_len: usize,
    _family: PhantomData<F>,
}

// SAFETY: the mapping is shared memory that every access reads or writes with atomic operations,
// and the tables are only written behind the agent's `Mutex` in `KernelMaps`.
unsafe impl<F: Family> Send for Table<F> {}
// SAFETY: as above; shared references only read the mapping, with atomic loads.
unsafe impl<F: Family> Sync for Table<F> {}

impl<F: Family> Table<F> {
    fn open(map: Array<MapData, F::Bucket>, bucket_count: usize) -> Result<Self, KernelError> {
        let mapped_len = (bucket_count * size_of::<F::Bucket>()).next_multiple_of(page_size());
        // SAFETY: a fresh shared mapping of the map's values, which the kernel sized to at least
        // `bucket_count` buckets rounded up to whole pages. No Rust reference aliases it.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.map().fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(table_error(F::MAP, "mmap", std::io::Error::last_os_error()));
        }
        let buckets = NonNull::new(address.cast::<F::Bucket>())
            .ok_or_else(|| table_error(F::MAP, "mmap", std::io::Error::other("null mapping")))?;
        Ok(Self {
            _map: map,
            buckets,
            bucket_count,
            mapped_len,
            _family: PhantomData,
        })
    }

    fn bucket(&self, index: usize) -> *mut F::Bucket {
        assert!(index < self.bucket_count, "bucket {index} out of range");
        // SAFETY: the index is inside the mapping, checked above.
        unsafe { self.buckets.as_ptr().add(index) }
    }

    fn bucket_of(&self, addr: F::Addr, state: &BanTableState) -> usize {
        F::bucket_index(addr, state.seed, state.bucket_bits) as usize
    }

    fn find(&self, addr: F::Addr, state: &BanTableState) -> Option<(usize, usize)> {
        if F::is_zero(addr) {
            return None;
        }
        let bucket = self.bucket_of(addr, state);
        // SAFETY: `bucket` returns a bucket of the mapping, and every slot is below the length.
        (0..BAN_BUCKET_SLOTS)
            .find(|&slot| unsafe { F::load_addr(self.bucket(bucket), slot) } == addr)
            .map(|slot| (bucket, slot))
    }

    fn overflow_count(&self, bucket: usize) -> &AtomicU32 {
        // SAFETY: a 4-byte aligned field of a bucket in the mapping, only accessed atomically.
        unsafe { AtomicU32::from_ptr(F::overflow(self.bucket(bucket))) }
    }

    fn ban_field(&self, bucket: usize, slot: usize, field: BanField) -> &AtomicU64 {
        assert!(slot < BAN_BUCKET_SLOTS);
        // SAFETY: 8-byte aligned fields of a bucket in the mapping (the layout asserts of
        // `firewall-common` place the bans after 8-byte aligned addresses and counts), only
        // accessed atomically.
        unsafe {
            let ban = F::ban(self.bucket(bucket), slot);
            let field = match field {
                BanField::ExpiresAt => &raw mut (*ban).expires_at_ns,
                BanField::DroppedPackets => &raw mut (*ban).dropped_packets,
                BanField::DroppedBytes => &raw mut (*ban).dropped_bytes,
            };
            AtomicU64::from_ptr(field)
        }
    }

    fn read_ban(&self, bucket: usize, slot: usize) -> BanValue {
        BanValue {
            expires_at_ns: self
                .ban_field(bucket, slot, BanField::ExpiresAt)
                .load(Ordering::Acquire),
            dropped_packets: self
                .ban_field(bucket, slot, BanField::DroppedPackets)
                .load(Ordering::Relaxed),
            dropped_bytes: self
                .ban_field(bucket, slot, BanField::DroppedBytes)
                .load(Ordering::Relaxed),
        }
    }

    fn add_overflow(&self, addr: F::Addr, state: &BanTableState, add: bool) {
        if F::is_zero(addr) {
            return;
        }
        let count = self.overflow_count(self.bucket_of(addr, state));
        let value = count.load(Ordering::Acquire);
        let value = if add {
            value.saturating_add(1)
        } else {
            value.saturating_sub(1)
        };
        count.store(value, Ordering::Release);
    }

    /// Counts the `keys` without a slot per bucket, stores the counts, and returns their total.
    /// Each bucket's count is replaced by one store, so the XDP program reads either the old or
    /// the new count of a bucket, never zero in between.
    fn recount(&self, keys: impl IntoIterator<Item = F::Addr>, state: &BanTableState) -> u32 {
        let mut per_bucket = vec![0u32; self.bucket_count];
        let mut total = 0u32;
        for addr in keys {
            if self.find(addr, state).is_some() {
                continue;
            }
            total = total.saturating_add(1);
            if !F::is_zero(addr) {
                let count = &mut per_bucket[self.bucket_of(addr, state)];
                *count = count.saturating_add(1);
            }
        }
        for (bucket, count) in per_bucket.into_iter().enumerate() {
            self.overflow_count(bucket).store(count, Ordering::Release);
        }
        total
    }
}

impl<F: Family> Drop for Table<F> {
    fn drop(&mut self) {
        // SAFETY: the mapping was made in `open` with this length and is not used after this.
        unsafe {
            libc::munmap(self.buckets.as_ptr().cast(), self.mapped_len);
        }
    }
}

/// Both tables and the state map they share.
pub(crate) struct BanTables {
    v4: Table<V4>,
    v6: Table<V6>,
    state_map: Array<MapData, BanTableState>,
    state: BanTableState,
}

impl BanTables {
    /// Maps both tables, whose maps hold `bucket_count` buckets each, and reads their state.
    /// Tables that are not ready yet get their geometry and a random seed;
    /// [`BanTables::recount_overflow`] then marks them ready.
    pub(crate) fn open(
        v4_map: Array<MapData, BanBucketV4>,
        v6_map: Array<MapData, BanBucketV6>,
        state_map: Array<MapData, BanTableState>,
        bucket_count: u32,
    ) -> Result<Self, KernelError> {
        let bucket_bits = bucket_count.trailing_zeros();
        if !bucket_count.is_power_of_two() || !(1..=31).contains(&bucket_bits) {
            return Err(table_error(
                MAP_BAN_TABLE_V4,
                "map",
                std::io::Error::other(format!(
                    "the table has {bucket_count} buckets, not a power of two between 2 and 2^31"
                )),
            ));
        }
        let bucket_count_usize = bucket_count as usize;
        let state = state_map
            .get(&0, 0)
            .map_err(|source| state_error("read", source))?;
        let mut tables = Self {
            v4: Table::open(v4_map, bucket_count_usize)?,
            v6: Table::open(v6_map, bucket_count_usize)?,
            state_map,
            state,
        };
        if tables.state.ready == 0 {
            tables.state = BanTableState {
                bucket_bits,
                seed: random_seed()?,
                ..BanTableState::default()
            };
        } else if tables.state.bucket_bits != bucket_bits {
            return Err(table_error(
                MAP_BAN_TABLE_V4,
                "open",
                std::io::Error::other(format!(
                    "the state records 2^{} buckets but the map has {bucket_count}",
                    tables.state.bucket_bits
                )),
            ));
        }
        Ok(tables)
    }

    /// Returns whether the tables have been set up and counted, so the XDP program searches them.
    pub(crate) fn is_ready(&self) -> bool {
        self.state.ready != 0
    }

    /// Returns the tables' state as the XDP program reads it.
    pub(crate) fn state(&self) -> BanTableState {
        self.state
    }

    /// Counts again, per bucket, the addresses of the hash maps (`v4_keys`, `v6_keys`) that have
    /// no slot, and marks the tables ready.
    pub(crate) fn recount_overflow(
        &mut self,
        v4_keys: impl IntoIterator<Item = [u8; 4]>,
        v6_keys: impl IntoIterator<Item = [u8; 16]>,
    ) -> Result<(), KernelError> {
        let state = self.state;
        self.state.overflow_v4 = self.v4.recount(v4_keys, &state);
        self.state.overflow_v6 = self.v6.recount(v6_keys, &state);
        self.state.ready = 1;
        self.write_state()
    }

    /// Gives the ban of `addr` a slot, or replaces the expiry of the slot it has and keeps its
    /// drop counters. `in_hash_map` is true when the hash map contained the address before this
    /// ban. Such an address without a slot overflowed earlier and stays in the hash map.
    pub(crate) fn place<F: Family>(
        &mut self,
        addr: F::Addr,
        expires_at_ns: u64,
        in_hash_map: bool,
    ) -> Result<Placement, KernelError> {
        let table = F::table(self);
        if let Some((bucket, slot)) = table.find(addr, &self.state) {
            table
                .ban_field(bucket, slot, BanField::ExpiresAt)
                .store(expires_at_ns, Ordering::Release);
            return Ok(Placement::Slot);
        }
        if in_hash_map {
            return Ok(Placement::Overflow);
        }
        let free = if F::is_zero(addr) {
            None
        } else {
            let bucket = table.bucket_of(addr, &self.state);
            // SAFETY: a bucket of the mapping and slots below its length.
            (0..BAN_BUCKET_SLOTS)
                .find(|&slot| F::is_zero(unsafe { F::load_addr(table.bucket(bucket), slot) }))
                .map(|slot| (bucket, slot))
        };
        let Some((bucket, slot)) = free else {
            table.add_overflow(addr, &self.state, true);
            let total = F::total_overflow(&mut self.state);
            *total = total.saturating_add(1);
            self.write_state()?;
            return Ok(Placement::Overflow);
        };
        table
            .ban_field(bucket, slot, BanField::DroppedPackets)
            .store(0, Ordering::Relaxed);
        table
            .ban_field(bucket, slot, BanField::DroppedBytes)
            .store(0, Ordering::Relaxed);
        table
            .ban_field(bucket, slot, BanField::ExpiresAt)
            .store(expires_at_ns, Ordering::Release);
        // SAFETY: a bucket of the mapping and a slot below its length.
        unsafe { F::store_addr(table.bucket(bucket), slot, addr) };
        Ok(Placement::Slot)
    }

    /// Frees the slot of `addr` and returns its ban with the drops counted there. Returns `None`
    /// when the address has no slot. An address without a slot that the hash map contains
    /// (`in_hash_map`) is an overflowed ban, and its bucket's count goes down.
    pub(crate) fn remove<F: Family>(
        &mut self,
        addr: F::Addr,
        in_hash_map: bool,
    ) -> Result<Option<BanValue>, KernelError> {
        let table = F::table(self);
        let Some((bucket, slot)) = table.find(addr, &self.state) else {
            if in_hash_map {
                table.add_overflow(addr, &self.state, false);
                let total = F::total_overflow(&mut self.state);
                *total = total.saturating_sub(1);
                self.write_state()?;
            }
            return Ok(None);
        };
        let ban = table.read_ban(bucket, slot);
        // SAFETY: a bucket of the mapping and a slot below its length.
        unsafe { F::clear_addr(table.bucket(bucket), slot) };
        table
            .ban_field(bucket, slot, BanField::ExpiresAt)
            .store(0, Ordering::Release);
        Ok(Some(ban))
    }

    /// Calls `visit` with the address and ban of every occupied slot of one family's table.
    pub(crate) fn for_each<F: Family>(&self, mut visit: impl FnMut(F::Addr, BanValue)) {
        let table = F::table(self);
        for bucket in 0..table.bucket_count {
            for slot in 0..BAN_BUCKET_SLOTS {
                // SAFETY: a bucket of the mapping and a slot below its length.
                let addr = unsafe { F::load_addr(table.bucket(bucket), slot) };
                if !F::is_zero(addr) {
                    visit(addr, table.read_ban(bucket, slot));
                }
            }
        }
    }

    fn write_state(&mut self) -> Result<(), KernelError> {
        self.state_map
            .set(0, self.state, 0)
            .map_err(|source| state_error("write", source))
    }
}

#[derive(Clone, Copy)]
enum BanField {
    ExpiresAt,
    DroppedPackets,
    DroppedBytes,
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096).max(1)
}

fn random_seed() -> Result<u32, KernelError> {
    use ring::rand::{SecureRandom as _, SystemRandom};

    let mut bytes = [0u8; 4];
    SystemRandom::new().fill(&mut bytes).map_err(|_| {
        table_error(
            MAP_BAN_TABLE_STATE,
            "seed",
            std::io::Error::other("no random bytes"),
        )
    })?;
    Ok(u32::from_ne_bytes(bytes))
}

fn table_error(name: &'static str, call: &'static str, io_error: std::io::Error) -> KernelError {
    KernelError::MapLayout {
        name,
        source: MapError::SyscallError(SyscallError { call, io_error }),
    }
}

fn state_error(operation: &'static str, source: MapError) -> KernelError {
    KernelError::Map {
        map: MAP_BAN_TABLE_STATE,
        operation,
        source,
    }
}
