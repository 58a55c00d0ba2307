//! The agent's handles on the XDP program's maps, and the [`Blocklist`] built on them.

use std::collections::HashMap as StdHashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use aya::Ebpf;
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{
    Array, HashMap, IterableMap, Map, MapData, MapError, PerCpuArray, PerCpuHashMap, PerCpuValues,
};
use aya::sys::SyscallError;
use firewall_common::{
    AllowSummary, AllowValue, BAN_NEVER_EXPIRES, BanKeyV4, BanKeyV6, BanValue, MAP_ALLOW_SUMMARY,
    MAP_ALLOW_V4, MAP_ALLOW_V6, MAP_BAN_RANGES_V4, MAP_BAN_RANGES_V6, MAP_BAN_TABLE_STATE,
    MAP_BAN_TABLE_V4, MAP_BAN_TABLE_V6, MAP_BANS_V4, MAP_BANS_V6, MAP_SOURCE_STATS, MAP_VERDICTS,
    PacketCounter, SourceCounters, SourceKey, Verdict,
};
use nix::errno::Errno;

use super::batch::update_batch;
use super::clock::{boottime_deadline_ns, boottime_now_ns, wall_deadline};
use super::pins::PinDir;
use super::table::{BanTables, Family, V4, V6};
use super::{
    Blocklist, KernelBan, KernelError, KernelFirewall, KernelSettings, SourceTotal, VerdictTotal,
};
use crate::network::IpNetwork;

type Trie<K, V> = Mutex<LpmTrie<MapData, K, V>>;

/// A map that an insert can fill: its name, the config key of its capacity, and the capacity.
#[derive(Clone, Copy)]
struct Capacity {
    map: &'static str,
    setting: &'static str,
    max_entries: u32,
}

/// The maps of one loaded XDP program.
///
/// Writes need exclusive access in aya, so each ban map sits behind a mutex. Reads of the counter
/// maps need none, and the exact-address ban maps have a second, read-only handle for their drop
/// counters, so `top_sources` never delays a ban.
///
/// The exact bans live in the `BANS_V4` and `BANS_V6` hash maps and in the tables the XDP
/// program searches (see `table.rs`). A family's map and table are written under the lock of the
/// map, which is always taken before the lock of `tables`.
pub(crate) struct KernelMaps {
    bans_v4: Mutex<HashMap<MapData, BanKeyV4, BanValue>>,
    tables: Mutex<BanTables>,
    bans_v6: Mutex<HashMap<MapData, BanKeyV6, BanValue>>,
    bans_v4_reader: HashMap<MapData, BanKeyV4, BanValue>,
    bans_v6_reader: HashMap<MapData, BanKeyV6, BanValue>,
    ban_ranges_v4: Trie<[u8; 4], BanValue>,
    ban_ranges_v6: Trie<[u8; 16], BanValue>,
    allow_v4: Trie<[u8; 4], AllowValue>,
    allow_v6: Trie<[u8; 16], AllowValue>,
    allow_summary: Mutex<Array<MapData, AllowSummary>>,
    source_stats: PerCpuHashMap<MapData, SourceKey, SourceCounters>,
    source_stats_writer: Mutex<PerCpuHashMap<MapData, SourceKey, SourceCounters>>,
    verdicts: PerCpuArray<MapData, PacketCounter>,
    settings: KernelSettings,
}

impl KernelMaps {
    /// Takes the maps out of a loaded object, checking their types and layouts. `settings` are
    /// the ones the maps were created with.
    pub(crate) fn take_from(
        ebpf: &mut Ebpf,
        settings: &KernelSettings,
    ) -> Result<Self, KernelError> {
        Self::open_with(
            |name| ebpf.take_map(name).ok_or(KernelError::MapMissing { name }),
            settings,
            true,
        )
    }

    /// Opens the maps pinned in `pins`, as `fwctl` does while the agent is stopped. `settings`
    /// carries the capacities the maps were created with.
    pub(crate) fn open_pinned(
        pins: &PinDir,
        settings: &KernelSettings,
    ) -> Result<Self, KernelError> {
        Self::open_with(
            |name| {
                let layout = |source| KernelError::MapLayout { name, source };
                let data = MapData::from_pin(pins.map_path(name)).map_err(layout)?;
                Map::from_map_data(data).map_err(layout)
            },
            settings,
            false,
        )
    }

    /// Opens the maps with `open`. With `recount`, the count of exact IPv4 bans without a slot in
    /// the table is taken again from the hash map, which repairs it after a writer stopped
    /// half-way.
    fn open_with(
        mut open: impl FnMut(&'static str) -> Result<Map, KernelError>,
        settings: &KernelSettings,
        recount: bool,
    ) -> Result<Self, KernelError> {
        let mut typed = |name| -> Result<_, KernelError> { Ok((name, open(name)?)) };
        let bans_v4: HashMap<MapData, BanKeyV4, BanValue> = convert(typed(MAP_BANS_V4)?)?;
        let bans_v6: HashMap<MapData, BanKeyV6, BanValue> = convert(typed(MAP_BANS_V6)?)?;
        let source_stats: PerCpuHashMap<MapData, SourceKey, SourceCounters> =
            convert(typed(MAP_SOURCE_STATS)?)?;
        let mut tables = BanTables::open(
            convert(typed(MAP_BAN_TABLE_V4)?)?,
            convert(typed(MAP_BAN_TABLE_V6)?)?,
            convert(typed(MAP_BAN_TABLE_STATE)?)?,
            settings.ban_table_buckets(),
        )?;
        if recount || !tables.is_ready() {
            // A count taken from part of the keys could be too low and hide bans from the XDP
            // program, so a failed read stops here and leaves the stored counts as they are.
            let read_error = |map| {
                move |source| KernelError::Map {
                    map,
                    operation: "read",
                    source,
                }
            };
            let keys_v4 = bans_v4
                .keys()
                .map(|key| key.map(|key| key.addr))
                .collect::<Result<Vec<_>, _>>()
                .map_err(read_error(MAP_BANS_V4))?;
            let keys_v6 = bans_v6
                .keys()
                .map(|key| key.map(|key| key.addr))
                .collect::<Result<Vec<_>, _>>()
                .map_err(read_error(MAP_BANS_V6))?;
            tables.recount_overflow(keys_v4, keys_v6)?;
        }
        let maps = Self {
            tables: Mutex::new(tables),
            bans_v4_reader: second_handle(bans_v4.map(), MAP_BANS_V4)?,
            bans_v6_reader: second_handle(bans_v6.map(), MAP_BANS_V6)?,
            bans_v4: Mutex::new(bans_v4),
            bans_v6: Mutex::new(bans_v6),
            ban_ranges_v4: Mutex::new(convert(typed(MAP_BAN_RANGES_V4)?)?),
            ban_ranges_v6: Mutex::new(convert(typed(MAP_BAN_RANGES_V6)?)?),
            allow_v4: Mutex::new(convert(typed(MAP_ALLOW_V4)?)?),
            allow_v6: Mutex::new(convert(typed(MAP_ALLOW_V6)?)?),
            allow_summary: Mutex::new(convert(typed(MAP_ALLOW_SUMMARY)?)?),
            source_stats_writer: Mutex::new(second_handle(source_stats.map(), MAP_SOURCE_STATS)?),
            source_stats,
            verdicts: convert(typed(MAP_VERDICTS)?)?,
            settings: settings.clone(),
        };
        // Pinned tries may come with entries, so the summary is recounted from them.
        maps.recount_allow_summary(true)?;
        maps.recount_allow_summary(false)?;
        Ok(maps)
    }

    pub(crate) fn insert_ban(
        &self,
        network: IpNetwork,
        expires_at_ns: u64,
    ) -> Result<(), KernelError> {
        let capacity = self.ban_capacity(network);
        let value = BanValue::new(expires_at_ns);
        let result = match (network.address(), network.is_host()) {
            (IpAddr::V4(v4), true) => {
                let key = BanKeyV4 { addr: v4.octets() };
                return self.insert_exact_ban::<V4, _>(
                    &self.bans_v4,
                    key,
                    key.addr,
                    value,
                    capacity,
                );
            }
            (IpAddr::V6(v6), true) => {
                let key = BanKeyV6 { addr: v6.octets() };
                return self.insert_exact_ban::<V6, _>(
                    &self.bans_v6,
                    key,
                    key.addr,
                    value,
                    capacity,
                );
            }
            (IpAddr::V4(v4), false) => {
                lock(&self.ban_ranges_v4).insert(&prefix_key(network, v4.octets()), value, 0)
            }
            (IpAddr::V6(v6), false) => {
                lock(&self.ban_ranges_v6).insert(&prefix_key(network, v6.octets()), value, 0)
            }
        };
        result.map_err(|source| insert_error(capacity, "insert a ban into", source))
    }

    /// Inserts or replaces many bans, each with its expiry on the boot clock. Exact addresses go
    /// in with `BPF_MAP_UPDATE_BATCH`, ranges one update at a time, because LPM tries have no
    /// batched update.
    ///
    /// # Errors
    ///
    /// [`KernelError::BansStopped`] with the number of bans applied, when an update fails.
    pub(crate) fn insert_bans(&self, bans: &[(IpNetwork, u64)]) -> Result<(), KernelError> {
        let mut exact_v4 = ExactBans::default();
        let mut exact_v6 = ExactBans::default();
        let mut ranges = Vec::new();
        for &(network, expires_at_ns) in bans {
            let value = BanValue::new(expires_at_ns);
            match (network.address(), network.is_host()) {
                (IpAddr::V4(v4), true) => exact_v4.push(BanKeyV4 { addr: v4.octets() }, value),
                (IpAddr::V6(v6), true) => exact_v6.push(BanKeyV6 { addr: v6.octets() }, value),
                (_, false) => ranges.push((network, expires_at_ns)),
            }
        }

        let total = bans.len();
        let stopped = |applied, source| KernelError::BansStopped {
            applied,
            total,
            source,
        };
        let mut applied = 0;
        let capacity_v4 = self.ban_capacity(IpNetwork::host(Ipv4Addr::UNSPECIFIED.into()));
        insert_exact_with_slots::<V4, _>(
            &self.bans_v4,
            &self.tables,
            &exact_v4,
            capacity_v4,
            |key| key.addr,
        )
        .map_err(|(written, source)| stopped(applied + written, source))?;
        applied += exact_v4.keys.len();
        let capacity_v6 = self.ban_capacity(IpNetwork::host(Ipv6Addr::UNSPECIFIED.into()));
        insert_exact_with_slots::<V6, _>(
            &self.bans_v6,
            &self.tables,
            &exact_v6,
            capacity_v6,
            |key| key.addr,
        )
        .map_err(|(written, source)| stopped(applied + written, source))?;
        applied += exact_v6.keys.len();

        for (network, expires_at_ns) in ranges {
            self.insert_ban(network, expires_at_ns)
                .map_err(|source| stopped(applied, Box::new(source)))?;
            applied += 1;
        }
        Ok(())
    }

    pub(crate) fn remove_ban(&self, network: IpNetwork) -> Result<bool, KernelError> {
        let map = self.ban_capacity(network).map;
        let result = match (network.address(), network.is_host()) {
            (IpAddr::V4(v4), true) => {
                let key = BanKeyV4 { addr: v4.octets() };
                let source = SourceKey::from_v4(key.addr);
                self.remove_exact_ban::<V4, _>(&self.bans_v4, key, key.addr, source)?
            }
            (IpAddr::V6(v6), true) => {
                let key = BanKeyV6 { addr: v6.octets() };
                let source = SourceKey { addr: key.addr };
                self.remove_exact_ban::<V6, _>(&self.bans_v6, key, key.addr, source)?
            }
            (IpAddr::V4(v4), false) => {
                lock(&self.ban_ranges_v4).remove(&prefix_key(network, v4.octets()))
            }
            (IpAddr::V6(v6), false) => {
                lock(&self.ban_ranges_v6).remove(&prefix_key(network, v6.octets()))
            }
        };
        removed(map, "remove a ban from", result)
    }

    /// Inserts or replaces the exact ban of `key` in the hash map of family `F`, keeping its drop
    /// counters, then gives it a slot in the family's table.
    fn insert_exact_ban<F: Family, K: aya::Pod>(
        &self,
        map: &Mutex<HashMap<MapData, K, BanValue>>,
        key: K,
        addr: F::Addr,
        value: BanValue,
        capacity: Capacity,
    ) -> Result<(), KernelError> {
        let mut map = lock(map);
        let existing = map.get(&key, 0);
        let in_hash_map = existing.is_ok();
        let value = keep_drop_counts(existing, value);
        map.insert(key, value, 0)
            .map_err(|source| insert_error(capacity, "insert a ban into", source))?;
        lock(&self.tables).place::<F>(addr, value.expires_at_ns, in_hash_map)?;
        Ok(())
    }

    /// Removes the exact ban of `key` from the table and the hash map of family `F`, and adds
    /// the drops it counted to `source` in the per-source map. Returns the result of the hash
    /// map delete.
    fn remove_exact_ban<F: Family, K: aya::Pod>(
        &self,
        map: &Mutex<HashMap<MapData, K, BanValue>>,
        key: K,
        addr: F::Addr,
        source: SourceKey,
    ) -> Result<Result<(), MapError>, KernelError> {
        let mut bans = lock(map);
        let ban = bans.get(&key, 0).ok();
        // The slot goes first, and its drop counters are the ones that grew.
        let slot_ban = lock(&self.tables).remove::<F>(addr, ban.is_some())?;
        let result = bans.remove(&key);
        drop(bans);

        if let (Ok(()), Some(ban)) = (&result, slot_ban.or(ban)) {
            self.keep_source_drops(source, &ban)?;
        }
        Ok(result)
    }

    /// Adds the drops counted in a removed exact ban to its source's entry in the per-source map,
    /// so that the source keeps its totals after the ban is lifted. They go to the first CPU's
    /// copy, because only the sum over CPUs is ever read.
    ///
    /// NOTE: a frame the XDP program counts for this source between the read and the write below
    /// is lost from its totals.
    fn keep_source_drops(&self, key: SourceKey, ban: &BanValue) -> Result<(), KernelError> {
        if ban.dropped_packets == 0 {
            return Ok(());
        }
        let stats_error = |operation| {
            move |source| KernelError::Map {
                map: MAP_SOURCE_STATS,
                operation,
                source,
            }
        };

        let mut stats = lock(&self.source_stats_writer);
        let mut per_cpu = match stats.get(&key, 0) {
            Ok(values) => values.to_vec(),
            Err(_) => {
                let cpus = aya::util::nr_cpus().map_err(|(_, io_error)| {
                    stats_error("size the update of")(MapError::SyscallError(SyscallError {
                        call: "read /sys/devices/system/cpu/possible",
                        io_error,
                    }))
                })?;
                vec![SourceCounters::default(); cpus]
            }
        };
        if let Some(first) = per_cpu.first_mut() {
            first.dropped_packets = first.dropped_packets.saturating_add(ban.dropped_packets);
            first.dropped_bytes = first.dropped_bytes.saturating_add(ban.dropped_bytes);
        }
        let values = PerCpuValues::try_from(per_cpu).map_err(|io_error| {
            stats_error("update")(MapError::SyscallError(SyscallError {
                call: "bpf_map_update_elem",
                io_error,
            }))
        })?;
        stats.insert(key, values, 0).map_err(stats_error("update"))
    }

    /// Inserts an allowlist entry. An entry outside loopback raises the summary first, so the XDP
    /// program never skips a trie that contains an entry for the source.
    pub(crate) fn insert_allow(&self, network: IpNetwork) -> Result<(), KernelError> {
        let capacity = self.allow_capacity(network);
        let value = AllowValue::default();
        let is_v4 = network.address().is_ipv4();
        if !is_loopback(network) {
            self.raise_allow_summary(is_v4)?;
        }

        let result = match network.address() {
            IpAddr::V4(v4) => {
                lock(&self.allow_v4).insert(&prefix_key(network, v4.octets()), value, 0)
            }
            IpAddr::V6(v6) => {
                lock(&self.allow_v6).insert(&prefix_key(network, v6.octets()), value, 0)
            }
        };
        result
            .map_err(|source| insert_error(capacity, "insert an allowlist entry into", source))?;
        self.recount_allow_summary(is_v4)
    }

    pub(crate) fn remove_allow(&self, network: IpNetwork) -> Result<bool, KernelError> {
        let map = self.allow_capacity(network).map;
        let result = match network.address() {
            IpAddr::V4(v4) => lock(&self.allow_v4).remove(&prefix_key(network, v4.octets())),
            IpAddr::V6(v6) => lock(&self.allow_v6).remove(&prefix_key(network, v6.octets())),
        };
        let removed = removed(map, "remove an allowlist entry from", result)?;
        self.recount_allow_summary(network.address().is_ipv4())?;
        Ok(removed)
    }

    /// Adds one to the summary's count of entries outside loopback for one family.
    fn raise_allow_summary(&self, is_v4: bool) -> Result<(), KernelError> {
        let mut summary_map = lock(&self.allow_summary);
        let mut summary = summary_map
            .get(&0, 0)
            .map_err(|source| summary_error("read", source))?;
        let count = if is_v4 {
            &mut summary.outside_loopback_v4
        } else {
            &mut summary.outside_loopback_v6
        };
        *count = count.saturating_add(1);
        summary_map
            .set(0, summary, 0)
            .map_err(|source| summary_error("write", source))
    }

    /// Sets the summary's count for one family to the number of entries outside loopback that
    /// its trie contains. The trie stays locked meanwhile, so no insert of this agent races it.
    ///
    /// NOTE: another process writing the same pinned trie at the same time is not locked out,
    /// and could have its raised count overwritten. The agent and `fwctl` never write the
    /// allowlist at the same time, because `fwctl` writes it through the agent.
    fn recount_allow_summary(&self, is_v4: bool) -> Result<(), KernelError> {
        let count = if is_v4 {
            let trie = lock(&self.allow_v4);
            count_outside_loopback(&trie, |key| key.data()[0] == 127, 8)?
        } else {
            let trie = lock(&self.allow_v6);
            let loopback = Ipv6Addr::LOCALHOST.octets();
            count_outside_loopback(&trie, |key| key.data() == loopback, 128)?
        };

        let mut summary_map = lock(&self.allow_summary);
        let mut summary = summary_map
            .get(&0, 0)
            .map_err(|source| summary_error("read", source))?;
        if is_v4 {
            summary.outside_loopback_v4 = count;
        } else {
            summary.outside_loopback_v6 = count;
        }
        summary_map
            .set(0, summary, 0)
            .map_err(|source| summary_error("write", source))
    }

    fn ban_capacity(&self, network: IpNetwork) -> Capacity {
        let (map, setting, max_entries) = match (network.address().is_ipv4(), network.is_host()) {
            (true, true) => (
                MAP_BANS_V4,
                "bans_max_entries",
                self.settings.bans_max_entries,
            ),
            (false, true) => (
                MAP_BANS_V6,
                "bans_max_entries",
                self.settings.bans_max_entries,
            ),
            (true, false) => (
                MAP_BAN_RANGES_V4,
                "ban_ranges_max_entries",
                self.settings.ban_ranges_max_entries,
            ),
            (false, false) => (
                MAP_BAN_RANGES_V6,
                "ban_ranges_max_entries",
                self.settings.ban_ranges_max_entries,
            ),
        };
        Capacity {
            map,
            setting,
            max_entries,
        }
    }

    fn allow_capacity(&self, network: IpNetwork) -> Capacity {
        Capacity {
            map: if network.address().is_ipv4() {
                MAP_ALLOW_V4
            } else {
                MAP_ALLOW_V6
            },
            setting: "allow_max_entries",
            max_entries: self.settings.allow_max_entries,
        }
    }

    pub(crate) fn ban_table_state(&self) -> firewall_common::BanTableState {
        lock(&self.tables).state()
    }

    pub(crate) fn verdict_totals(&self) -> Result<Vec<VerdictTotal>, KernelError> {
        Verdict::ALL
            .iter()
            .map(|&verdict| {
                let per_cpu =
                    self.verdicts
                        .get(&(verdict as u32), 0)
                        .map_err(|source| KernelError::Map {
                            map: MAP_VERDICTS,
                            operation: "read",
                            source,
                        })?;
                Ok(VerdictTotal {
                    verdict,
                    counter: sum_packet_counters(&per_cpu),
                })
            })
            .collect()
    }

    /// Adds the drop counters kept inside the exact-address bans to `totals`.
    ///
    /// NOTE: this reads every exact ban, two system calls per entry, so with a million bans
    /// `fwctl stats` takes about a second. Batched lookups would cut that, but aya 0.14 has none.
    fn add_ban_drop_counts(
        &self,
        totals: &mut StdHashMap<SourceKey, SourceCounters>,
    ) -> Result<(), KernelError> {
        let read_error = |map| {
            move |source| KernelError::Map {
                map,
                operation: "read",
                source,
            }
        };
        for entry in self.bans_v4_reader.iter() {
            let (key, ban) = entry.map_err(read_error(MAP_BANS_V4))?;
            add_ban_drops(totals, SourceKey::from_v4(key.addr), &ban);
        }
        let tables = lock(&self.tables);
        tables.for_each::<V4>(|addr, ban| {
            add_ban_drops(totals, SourceKey::from_v4(addr), &ban);
        });
        tables.for_each::<V6>(|addr, ban| {
            add_ban_drops(totals, SourceKey { addr }, &ban);
        });
        for entry in self.bans_v6_reader.iter() {
            let (key, ban) = entry.map_err(read_error(MAP_BANS_V6))?;
            add_ban_drops(totals, SourceKey { addr: key.addr }, &ban);
        }
        Ok(())
    }

    pub(crate) fn top_sources(&self, limit: usize) -> Result<Vec<SourceTotal>, KernelError> {
        // NOTE: the map is read key by key while the XDP program inserts and evicts entries. When
        // the current key is evicted, the kernel restarts the walk at the first key, so entries
        // are deduplicated and the walk stops after as many keys as the map holds. On a busy map
        // the list can therefore miss sources.
        let mut totals: StdHashMap<SourceKey, SourceCounters> = StdHashMap::new();
        let capacity =
            usize::try_from(self.settings.source_stats_max_entries).unwrap_or(usize::MAX);
        for entry in self.source_stats.iter().take(capacity) {
            let (key, per_cpu) = entry.map_err(|source| KernelError::Map {
                map: MAP_SOURCE_STATS,
                operation: "read",
                source,
            })?;
            totals.insert(key, sum_source_counters(&per_cpu));
        }
        self.add_ban_drop_counts(&mut totals)?;

        let mut sources: Vec<SourceTotal> = totals
            .into_iter()
            .map(|(key, counters)| SourceTotal {
                addr: source_addr(&key),
                counters,
            })
            .collect();
        sources.sort_by(|left, right| {
            total_packets(&right.counters)
                .cmp(&total_packets(&left.counters))
                .then(left.addr.cmp(&right.addr))
        });
        sources.truncate(limit);
        Ok(sources)
    }
}

/// Opens a second handle on the map behind `map`, so that reads need not wait for the lock
/// that writes take.
fn second_handle<M>(map: &MapData, name: &'static str) -> Result<M, KernelError>
where
    M: TryFrom<Map, Error = MapError>,
{
    use std::os::fd::AsFd as _;

    let layout = |source| KernelError::MapLayout { name, source };
    let fd = map.fd().as_fd().try_clone_to_owned().map_err(|io_error| {
        layout(MapError::SyscallError(SyscallError {
            call: "fcntl(F_DUPFD_CLOEXEC)",
            io_error,
        }))
    })?;
    let data = MapData::from_fd(fd).map_err(layout)?;
    M::try_from(Map::from_map_data(data).map_err(layout)?).map_err(layout)
}

/// Exact bans of one family, as the parallel key and value arrays a batched update takes.
struct ExactBans<K> {
    keys: Vec<K>,
    values: Vec<BanValue>,
}

impl<K> Default for ExactBans<K> {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            values: Vec::new(),
        }
    }
}

impl<K> ExactBans<K> {
    fn push(&mut self, key: K, value: BanValue) {
        self.keys.push(key);
        self.values.push(value);
    }
}

/// Outcome of [`insert_exact`].
struct ExactWrite {
    /// Per ban, whether the map held its key before the update.
    in_hash_map: Vec<bool>,
    /// On failure, how many bans were written, counted from the first, and the error.
    result: Result<(), (usize, Box<KernelError>)>,
}

/// Writes `bans` into an exact-address ban map with batched updates. When the map already
/// contains entries, each ban first reads the entry it replaces, to keep its drop counters.
///
/// NOTE: over a map that contains entries, such as pinned maps at a restart, the reads cost one
/// system call per ban, so that path is about twice as fast as single updates, not more.
fn insert_exact<K: aya::Pod>(
    map: &HashMap<MapData, K, BanValue>,
    bans: &ExactBans<K>,
    capacity: Capacity,
) -> ExactWrite {
    use std::os::fd::AsFd as _;

    // An error reading the first key counts as a map with entries, which only costs the reads.
    let is_empty = map.keys().next().is_none();
    let mut in_hash_map = vec![false; bans.keys.len()];
    let merged: Vec<BanValue>;
    let values = if is_empty {
        &bans.values
    } else {
        merged = bans
            .keys
            .iter()
            .zip(&bans.values)
            .zip(&mut in_hash_map)
            .map(|((key, value), in_hash_map)| {
                let existing = map.get(key, 0);
                *in_hash_map = existing.is_ok();
                keep_drop_counts(existing, *value)
            })
            .collect();
        &merged
    };

    let result = update_batch(map.map().fd().as_fd(), &bans.keys, values).map_err(|stopped| {
        let source = MapError::SyscallError(SyscallError {
            call: "BPF_MAP_UPDATE_BATCH",
            io_error: stopped.source,
        });
        (
            stopped.applied,
            Box::new(insert_error(capacity, "insert bans into", source)),
        )
    });
    ExactWrite {
        in_hash_map,
        result,
    }
}

/// Writes `bans` into the hash map of family `F` with batched updates, then gives every ban the
/// map took a slot in the family's table, also when the map stopped early. On failure, returns
/// how many bans were written, counted from the first.
fn insert_exact_with_slots<F: Family, K: aya::Pod>(
    map: &Mutex<HashMap<MapData, K, BanValue>>,
    tables: &Mutex<BanTables>,
    bans: &ExactBans<K>,
    capacity: Capacity,
    addr_of: impl Fn(&K) -> F::Addr,
) -> Result<(), (usize, Box<KernelError>)> {
    let map = lock(map);
    let write = insert_exact(&map, bans, capacity);
    let written = match &write.result {
        Ok(()) => bans.keys.len(),
        Err((written, _)) => *written,
    };

    let mut tables = lock(tables);
    let mut seen = std::collections::HashSet::with_capacity(written);
    for (index, (key, value)) in bans.keys.iter().zip(&bans.values).take(written).enumerate() {
        let addr = addr_of(key);
        // A second ban of the same address in this batch finds the first one's slot, or is
        // known to have overflowed.
        let in_hash_map = write.in_hash_map[index] || !seen.insert(addr);
        tables
            .place::<F>(addr, value.expires_at_ns, in_hash_map)
            .map_err(|source| (index, Box::new(source)))?;
    }
    write.result
}

/// Carries the drop counters of the ban being replaced, if any, over to `value`, so that a
/// re-ban keeps what the source's ban has dropped so far.
///
/// NOTE: frames dropped between the read and the write of the replacement are not counted.
fn keep_drop_counts(existing: Result<BanValue, MapError>, value: BanValue) -> BanValue {
    match existing {
        Ok(existing) => BanValue {
            dropped_packets: existing.dropped_packets,
            dropped_bytes: existing.dropped_bytes,
            ..value
        },
        Err(_) => value,
    }
}

fn add_ban_drops(
    totals: &mut StdHashMap<SourceKey, SourceCounters>,
    key: SourceKey,
    ban: &BanValue,
) {
    if ban.dropped_packets == 0 {
        return;
    }
    let counters = totals.entry(key).or_default();
    counters.dropped_packets = counters.dropped_packets.saturating_add(ban.dropped_packets);
    counters.dropped_bytes = counters.dropped_bytes.saturating_add(ban.dropped_bytes);
}

/// Returns whether `network` lies inside loopback (`127.0.0.0/8` or `::1`), which the XDP program always
/// looks up in the allowlist.
fn is_loopback(network: IpNetwork) -> bool {
    match network.address() {
        IpAddr::V4(v4) => network.prefix_len() >= 8 && v4.is_loopback(),
        IpAddr::V6(v6) => network.prefix_len() == 128 && v6.is_loopback(),
    }
}

/// Counts the keys of `trie` that are not loopback: shorter than `loopback_min_prefix` bits, or
/// failing `is_loopback_address`.
fn count_outside_loopback<const N: usize>(
    trie: &LpmTrie<MapData, [u8; N], AllowValue>,
    is_loopback_address: impl Fn(&Key<[u8; N]>) -> bool,
    loopback_min_prefix: u32,
) -> Result<u32, KernelError> {
    let mut count = 0u32;
    for key in trie.keys() {
        let key = key.map_err(|source| KernelError::Map {
            map: if N == 4 { MAP_ALLOW_V4 } else { MAP_ALLOW_V6 },
            operation: "read",
            source,
        })?;
        if key.prefix_len() < loopback_min_prefix || !is_loopback_address(&key) {
            count = count.saturating_add(1);
        }
    }
    Ok(count)
}

fn summary_error(operation: &'static str, source: MapError) -> KernelError {
    KernelError::Map {
        map: MAP_ALLOW_SUMMARY,
        operation,
        source,
    }
}

/// Builds the LPM trie key of `network`, whose address bytes are `octets`.
fn prefix_key<const N: usize>(network: IpNetwork, octets: [u8; N]) -> Key<[u8; N]> {
    Key::new(u32::from(network.prefix_len()), octets)
}

/// Turns a failed insert into [`KernelError::MapFull`] when the map is full: a hash map
/// reports that with `E2BIG`, an LPM trie with `ENOSPC`.
fn insert_error(capacity: Capacity, operation: &'static str, source: MapError) -> KernelError {
    if matches!(syscall_errno(&source), Some(Errno::E2BIG | Errno::ENOSPC)) {
        return KernelError::MapFull {
            map: capacity.map,
            setting: capacity.setting,
            max_entries: capacity.max_entries,
        };
    }
    KernelError::Map {
        map: capacity.map,
        operation,
        source,
    }
}

/// Maps the result of a delete to whether the entry was present.
fn removed(
    map: &'static str,
    operation: &'static str,
    result: Result<(), MapError>,
) -> Result<bool, KernelError> {
    match result {
        Ok(()) => Ok(true),
        Err(source) if syscall_errno(&source) == Some(Errno::ENOENT) => Ok(false),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(source) => Err(KernelError::Map {
            map,
            operation,
            source,
        }),
    }
}

impl KernelMaps {
    pub(crate) fn ban(
        &self,
        network: IpNetwork,
        expires_at: Option<SystemTime>,
    ) -> Result<(), KernelError> {
        let expires_at_ns = match expires_at {
            None => BAN_NEVER_EXPIRES,
            Some(expires_at) => {
                boottime_deadline_ns(expires_at, SystemTime::now(), boottime_now_ns()?)
            }
        };
        self.insert_ban(network, expires_at_ns)
    }

    pub(crate) fn ban_all(&self, bans: &[KernelBan]) -> Result<(), KernelError> {
        let wall_now = SystemTime::now();
        let boot_now = boottime_now_ns()?;
        let bans: Vec<(IpNetwork, u64)> = bans
            .iter()
            .map(|ban| {
                let expires_at_ns = match ban.expires_at {
                    None => BAN_NEVER_EXPIRES,
                    Some(expires_at) => boottime_deadline_ns(expires_at, wall_now, boot_now),
                };
                (ban.network, expires_at_ns)
            })
            .collect();
        self.insert_bans(&bans)
    }

    /// Reads every ban of the four ban maps, with its expiry on the wall clock.
    pub(crate) fn kernel_bans(&self) -> Result<Vec<KernelBan>, KernelError> {
        let wall_now = SystemTime::now();
        let boot_now = boottime_now_ns()?;
        let read_error = |map| {
            move |source| KernelError::Map {
                map,
                operation: "read",
                source,
            }
        };
        let mut bans = Vec::new();
        let mut push = |address: IpAddr, prefix_len: u8, ban: BanValue| {
            if let Ok(network) = IpNetwork::new(address, prefix_len) {
                bans.push(KernelBan {
                    network,
                    expires_at: wall_deadline(ban.expires_at_ns, wall_now, boot_now),
                });
            }
        };

        for entry in self.bans_v4_reader.iter() {
            let (key, ban) = entry.map_err(read_error(MAP_BANS_V4))?;
            push(Ipv4Addr::from(key.addr).into(), 32, ban);
        }
        for entry in self.bans_v6_reader.iter() {
            let (key, ban) = entry.map_err(read_error(MAP_BANS_V6))?;
            push(Ipv6Addr::from(key.addr).into(), 128, ban);
        }
        for entry in lock(&self.ban_ranges_v4).iter() {
            let (key, ban) = entry.map_err(read_error(MAP_BAN_RANGES_V4))?;
            let prefix_len = u8::try_from(key.prefix_len()).unwrap_or(u8::MAX);
            push(Ipv4Addr::from(key.data()).into(), prefix_len, ban);
        }
        for entry in lock(&self.ban_ranges_v6).iter() {
            let (key, ban) = entry.map_err(read_error(MAP_BAN_RANGES_V6))?;
            let prefix_len = u8::try_from(key.prefix_len()).unwrap_or(u8::MAX);
            push(Ipv6Addr::from(key.data()).into(), prefix_len, ban);
        }
        Ok(bans)
    }
}

impl Blocklist for KernelFirewall {
    fn ban(&self, network: IpNetwork, expires_at: Option<SystemTime>) -> Result<(), KernelError> {
        self.maps().ban(network, expires_at)
    }

    fn ban_all(&self, bans: &[KernelBan]) -> Result<(), KernelError> {
        self.maps().ban_all(bans)
    }

    fn kernel_bans(&self) -> Result<Vec<KernelBan>, KernelError> {
        self.maps().kernel_bans()
    }

    fn unban(&self, network: IpNetwork) -> Result<bool, KernelError> {
        self.maps().remove_ban(network)
    }

    fn allow(&self, network: IpNetwork) -> Result<(), KernelError> {
        self.maps().insert_allow(network)
    }

    fn disallow(&self, network: IpNetwork) -> Result<bool, KernelError> {
        self.maps().remove_allow(network)
    }

    fn verdict_totals(&self) -> Result<Vec<VerdictTotal>, KernelError> {
        self.maps().verdict_totals()
    }

    fn top_sources(&self, limit: usize) -> Result<Vec<SourceTotal>, KernelError> {
        self.maps().top_sources(limit)
    }

    fn ban_table_state(&self) -> Option<firewall_common::BanTableState> {
        Some(self.maps().ban_table_state())
    }
}

/// Converts an untyped map into the typed handle the agent uses, checking its layout.
fn convert<M>((name, map): (&'static str, Map)) -> Result<M, KernelError>
where
    M: TryFrom<Map, Error = MapError>,
{
    M::try_from(map).map_err(|source| KernelError::MapLayout { name, source })
}

/// Locks a ban map. A panic elsewhere while holding the lock leaves the map itself consistent,
/// because the kernel applies each update whole, so a poisoned lock is taken over.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn syscall_errno(error: &MapError) -> Option<Errno> {
    match error {
        MapError::SyscallError(SyscallError { io_error, .. }) => {
            io_error.raw_os_error().map(Errno::from_raw)
        }
        _ => None,
    }
}

/// Turns a counter key back into an address, IPv4 sources as IPv4.
fn source_addr(key: &SourceKey) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(key.addr)).to_canonical()
}

fn total_packets(counters: &SourceCounters) -> u64 {
    counters
        .passed_packets
        .saturating_add(counters.dropped_packets)
}

fn sum_packet_counters(per_cpu: &PerCpuValues<PacketCounter>) -> PacketCounter {
    per_cpu
        .iter()
        .fold(PacketCounter::default(), |sum, cpu| PacketCounter {
            packets: sum.packets.saturating_add(cpu.packets),
            bytes: sum.bytes.saturating_add(cpu.bytes),
        })
}

fn sum_source_counters(per_cpu: &PerCpuValues<SourceCounters>) -> SourceCounters {
    per_cpu
        .iter()
        .fold(SourceCounters::default(), |sum, cpu| SourceCounters {
            passed_packets: sum.passed_packets.saturating_add(cpu.passed_packets),
            passed_bytes: sum.passed_bytes.saturating_add(cpu.passed_bytes),
            dropped_packets: sum.dropped_packets.saturating_add(cpu.dropped_packets),
            dropped_bytes: sum.dropped_bytes.saturating_add(cpu.dropped_bytes),
        })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn ipv4_source_key_reads_back_as_ipv4() {
        let key = SourceKey::from_v4([192, 0, 2, 7]);
        assert_eq!(source_addr(&key), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
    }

    #[test]
    fn ipv6_source_key_reads_back_as_ipv6() {
        let addr: Ipv6Addr = "2001:db8::7".parse().expect("valid address");
        let key = SourceKey {
            addr: addr.octets(),
        };
        assert_eq!(source_addr(&key), IpAddr::V6(addr));
    }

    #[test]
    fn ipv4_mapped_ban_address_is_canonicalised() {
        let mapped: IpAddr = "::ffff:198.51.100.9".parse().expect("valid address");
        assert_eq!(
            mapped.to_canonical(),
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9))
        );
    }

    #[test]
    fn ipv4_compatible_address_stays_ipv6() {
        // `::c633:6409` is the deprecated IPv4-compatible form, not IPv4-mapped: it stays IPv6.
        let compatible: IpAddr = "::198.51.100.9".parse().expect("valid address");
        assert!(compatible.to_canonical().is_ipv6());
    }

    #[test]
    fn per_cpu_counters_are_summed() {
        let cpus = aya::util::nr_cpus().expect("possible CPUs are readable");
        let per_cpu = PerCpuValues::try_from(vec![
            SourceCounters {
                passed_packets: 2,
                passed_bytes: 120,
                dropped_packets: 1,
                dropped_bytes: 60,
            };
            cpus
        ])
        .expect("one value per possible CPU");

        let sum = sum_source_counters(&per_cpu);
        let cpus = u64::try_from(cpus).expect("CPU count fits u64");
        assert_eq!(sum.passed_packets, 2 * cpus);
        assert_eq!(sum.passed_bytes, 120 * cpus);
        assert_eq!(sum.dropped_packets, cpus);
        assert_eq!(sum.dropped_bytes, 60 * cpus);
    }

    #[test]
    fn missing_key_errno_is_read_from_syscall_error() {
        let error = MapError::SyscallError(SyscallError {
            call: "bpf_map_delete_elem",
            io_error: std::io::Error::from_raw_os_error(Errno::ENOENT as i32),
        });
        assert_eq!(syscall_errno(&error), Some(Errno::ENOENT));
        assert_eq!(syscall_errno(&MapError::KeyNotFound), None);
    }
}
