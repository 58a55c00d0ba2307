//! The agent's side of the exact IPv4 ban table (`BAN_TABLE_V4`): an array map that the XDP
//! program searches as a hash table, mapped into the agent's memory.
//!
//! Every exact IPv4 ban is in the `BANS_V4` hash map, which enforces the capacity and which the
//! agent lists. The table indexes the same bans for the XDP program, which searches it instead
//! of the hash map. The rules that keep the two in step, for every writer:
//!
//! - a new ban goes into the hash map first, then into a free slot of its bucket. When the bucket
//!   is full, the ban stays in the hash map only and the bucket's `overflow` counts it;
//! - a ban that is already in the hash map but has no slot (it overflowed) never takes one, so
//!   that the counts stay exact;
//! - a removed ban leaves its slot, or its bucket's count, first, then the hash map.
//!
//! A writer that stops between two of these steps leaves a ban in the hash map without a slot
//! and uncounted. The agent therefore recounts the overflow from the hash map at every start
//! ([`BanTable::recount_overflow`]).
//!
//! The map is memory-mapped, so a slot is written field by field with atomic stores, in the
//! order the XDP program relies on: the ban before the address when a slot is filled, the
//! address before the ban when it is freed.

use std::os::fd::{AsFd as _, AsRawFd as _};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use aya::maps::{Array, IterableMap as _, MapData, MapError};
use aya::sys::SyscallError;
use firewall_common::{
    BAN_BUCKET_SLOTS, BanBucketV4, BanTableState, BanValue, MAP_BAN_TABLE_STATE, MAP_BAN_TABLE_V4,
    ban_bucket_index,
};

use super::KernelError;

/// Outcome of [`BanTable::place`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// The ban has a slot: a new one, or the one it had, whose expiry was replaced.
    Slot,
    /// The bucket was full, or the address is `0.0.0.0`: the ban lives in the hash map only.
    Overflow,
}

/// The mapped table and its state map.
pub(crate) struct BanTable {
    /// Keeps a descriptor of the mapped map open beside the mapping.
    _table_map: Array<MapData, BanBucketV4>,
    buckets: NonNull<BanBucketV4>,
    bucket_count: usize,
    mapped_len: usize,
    state_map: Array<MapData, BanTableState>,
    state: BanTableState,
}

// SAFETY: the mapping is shared memory that every access reads or writes with atomic operations,
// and the table is only written behind the agent's `Mutex` in `KernelMaps`.
unsafe impl Send for BanTable {}
// SAFETY: as above; shared references only read the mapping, with atomic loads.
unsafe impl Sync for BanTable {}

impl BanTable {
    /// Maps `table`, whose map holds `bucket_count` buckets, and reads its state. A table that is
    /// not ready yet gets its geometry and a random seed; [`BanTable::recount_overflow`] then
    /// marks it ready.
    pub(crate) fn open(
        table_map: Array<MapData, BanBucketV4>,
        state_map: Array<MapData, BanTableState>,
        bucket_count: u32,
    ) -> Result<Self, KernelError> {
        let bucket_bits = bucket_count.trailing_zeros();
        if !bucket_count.is_power_of_two() || !(1..=31).contains(&bucket_bits) {
            return Err(table_error(
                "map",
                std::io::Error::other(format!(
                    "the table has {bucket_count} buckets, not a power of two between 2 and 2^31"
                )),
            ));
        }
        let bucket_count = bucket_count as usize;
        let mapped_len = (bucket_count * size_of::<BanBucketV4>()).next_multiple_of(page_size());
        // SAFETY: a fresh shared mapping of the map's values, which the kernel sized to at least
        // `bucket_count` buckets rounded up to whole pages; no Rust reference aliases it.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                table_map.map().fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(table_error("mmap", std::io::Error::last_os_error()));
        }
        let buckets = NonNull::new(address.cast::<BanBucketV4>())
            .ok_or_else(|| table_error("mmap", std::io::Error::other("null mapping")))?;

        let state = state_map
            .get(&0, 0)
            .map_err(|source| state_error("read", source))?;
        let mut table = Self {
            _table_map: table_map,
            buckets,
            bucket_count,
            mapped_len,
            state_map,
            state,
        };
        if table.state.ready == 0 {
            table.state.bucket_bits = bucket_bits;
            table.state.seed = random_seed()?;
            table.state.overflow_v4 = 0;
        } else if table.state.bucket_bits != bucket_bits {
            return Err(table_error(
                "open",
                std::io::Error::other(format!(
                    "the state gives 2^{} buckets, the map holds {bucket_count}",
                    table.state.bucket_bits
                )),
            ));
        }
        Ok(table)
    }

    /// Counts again, per bucket, the `keys` (the hash map's addresses) that have no slot, stores
    /// the counts, and marks the table ready. Each bucket's count is replaced by one store, so
    /// the XDP program sees either the old or the new count of a bucket, never zero in between.
    pub(crate) fn recount_overflow(
        &mut self,
        keys: impl IntoIterator<Item = [u8; 4]>,
    ) -> Result<(), KernelError> {
        let mut per_bucket = vec![0u32; self.bucket_count];
        let mut total = 0u32;
        for addr in keys {
            if self.find(addr).is_some() {
                continue;
            }
            total = total.saturating_add(1);
            let key = u32::from_ne_bytes(addr);
            if key != 0 {
                let count = &mut per_bucket[self.bucket_of(key)];
                *count = count.saturating_add(1);
            }
        }
        for (bucket, count) in per_bucket.into_iter().enumerate() {
            self.overflow_field(bucket).store(count, Ordering::Release);
        }
        self.state.overflow_v4 = total;
        self.state.ready = 1;
        self.write_state()
    }

    /// Gives the ban of `addr` a slot, or replaces the expiry of the slot it has and keeps its
    /// drop counters. `in_hash_map` says whether the hash map held the address before this ban:
    /// such an address without a slot overflowed earlier and stays in the hash map.
    pub(crate) fn place(
        &mut self,
        addr: [u8; 4],
        expires_at_ns: u64,
        in_hash_map: bool,
    ) -> Result<Placement, KernelError> {
        if let Some((bucket, slot)) = self.find(addr) {
            self.ban_field(bucket, slot, BanField::ExpiresAt)
                .store(expires_at_ns, Ordering::Release);
            return Ok(Placement::Slot);
        }
        if in_hash_map {
            return Ok(Placement::Overflow);
        }
        let key = u32::from_ne_bytes(addr);
        let free = if key == 0 {
            None
        } else {
            let bucket = self.bucket_of(key);
            (0..BAN_BUCKET_SLOTS)
                .find(|&slot| self.addr_field(bucket, slot).load(Ordering::Acquire) == 0)
                .map(|slot| (bucket, slot))
        };
        let Some((bucket, slot)) = free else {
            if key != 0 {
                let overflow = self.overflow_field(self.bucket_of(key));
                let count = overflow.load(Ordering::Acquire);
                overflow.store(count.saturating_add(1), Ordering::Release);
            }
            self.state.overflow_v4 = self.state.overflow_v4.saturating_add(1);
            self.write_state()?;
            return Ok(Placement::Overflow);
        };
        self.ban_field(bucket, slot, BanField::DroppedPackets)
            .store(0, Ordering::Relaxed);
        self.ban_field(bucket, slot, BanField::DroppedBytes)
            .store(0, Ordering::Relaxed);
        self.ban_field(bucket, slot, BanField::ExpiresAt)
            .store(expires_at_ns, Ordering::Release);
        self.addr_field(bucket, slot).store(key, Ordering::Release);
        Ok(Placement::Slot)
    }

    /// Frees the slot of `addr` and returns its ban with the drops counted there. Returns `None`
    /// when the address has no slot; `in_hash_map` then says whether the hash map held it, which
    /// makes it an overflowed ban whose count goes down.
    pub(crate) fn remove(
        &mut self,
        addr: [u8; 4],
        in_hash_map: bool,
    ) -> Result<Option<BanValue>, KernelError> {
        let Some((bucket, slot)) = self.find(addr) else {
            if in_hash_map {
                let key = u32::from_ne_bytes(addr);
                if key != 0 {
                    let overflow = self.overflow_field(self.bucket_of(key));
                    let count = overflow.load(Ordering::Acquire);
                    overflow.store(count.saturating_sub(1), Ordering::Release);
                }
                self.state.overflow_v4 = self.state.overflow_v4.saturating_sub(1);
                self.write_state()?;
            }
            return Ok(None);
        };
        let ban = self.read_ban(bucket, slot);
        self.addr_field(bucket, slot).store(0, Ordering::Release);
        self.ban_field(bucket, slot, BanField::ExpiresAt)
            .store(0, Ordering::Release);
        Ok(Some(ban))
    }

    /// Calls `visit` with the address and ban of every occupied slot.
    pub(crate) fn for_each(&self, mut visit: impl FnMut([u8; 4], BanValue)) {
        for bucket in 0..self.bucket_count {
            for slot in 0..BAN_BUCKET_SLOTS {
                let key = self.addr_field(bucket, slot).load(Ordering::Acquire);
                if key != 0 {
                    visit(key.to_ne_bytes(), self.read_ban(bucket, slot));
                }
            }
        }
    }

    /// Whether the table has been set up and counted, so the XDP program searches it.
    pub(crate) fn is_ready(&self) -> bool {
        self.state.ready != 0
    }

    /// The table's state as the XDP program reads it.
    pub(crate) fn state(&self) -> BanTableState {
        self.state
    }

    fn find(&self, addr: [u8; 4]) -> Option<(usize, usize)> {
        let key = u32::from_ne_bytes(addr);
        if key == 0 {
            return None;
        }
        let bucket = self.bucket_of(key);
        (0..BAN_BUCKET_SLOTS)
            .find(|&slot| self.addr_field(bucket, slot).load(Ordering::Acquire) == key)
            .map(|slot| (bucket, slot))
    }

    fn bucket_of(&self, key: u32) -> usize {
        ban_bucket_index(key, self.state.seed, self.state.bucket_bits) as usize
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

    fn addr_field(&self, bucket: usize, slot: usize) -> &AtomicU32 {
        assert!(bucket < self.bucket_count && slot < BAN_BUCKET_SLOTS);
        // SAFETY: the bucket lies inside the mapping (checked above), the field is 4-byte
        // aligned, and every access to the shared memory is atomic.
        unsafe {
            let bucket = self.buckets.as_ptr().add(bucket);
            AtomicU32::from_ptr(&raw mut (*bucket).addrs[slot])
        }
    }

    fn overflow_field(&self, bucket: usize) -> &AtomicU32 {
        assert!(bucket < self.bucket_count);
        // SAFETY: as in `addr_field`.
        unsafe {
            let bucket = self.buckets.as_ptr().add(bucket);
            AtomicU32::from_ptr(&raw mut (*bucket).overflow)
        }
    }

    fn ban_field(&self, bucket: usize, slot: usize, field: BanField) -> &AtomicU64 {
        assert!(bucket < self.bucket_count && slot < BAN_BUCKET_SLOTS);
        // SAFETY: as in `addr_field`; the ban fields are 8-byte aligned (checked by the layout
        // asserts of `firewall-common`: 24 bytes of addresses and counts, then 24-byte bans).
        unsafe {
            let ban = &raw mut (*self.buckets.as_ptr().add(bucket)).bans[slot];
            let field = match field {
                BanField::ExpiresAt => &raw mut (*ban).expires_at_ns,
                BanField::DroppedPackets => &raw mut (*ban).dropped_packets,
                BanField::DroppedBytes => &raw mut (*ban).dropped_bytes,
            };
            AtomicU64::from_ptr(field)
        }
    }

    fn write_state(&mut self) -> Result<(), KernelError> {
        self.state_map
            .set(0, self.state, 0)
            .map_err(|source| state_error("write", source))
    }
}

impl Drop for BanTable {
    fn drop(&mut self) {
        // SAFETY: the mapping was made in `open` with this length and is not used after this.
        unsafe {
            libc::munmap(self.buckets.as_ptr().cast(), self.mapped_len);
        }
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
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| table_error("seed", std::io::Error::other("no random bytes")))?;
    Ok(u32::from_ne_bytes(bytes))
}

fn table_error(call: &'static str, io_error: std::io::Error) -> KernelError {
    KernelError::MapLayout {
        name: MAP_BAN_TABLE_V4,
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
