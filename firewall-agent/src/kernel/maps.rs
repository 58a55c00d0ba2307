//! The agent's handles on the XDP program's maps, and the [`Blocklist`] built on them.

use std::collections::HashMap as StdHashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use aya::Ebpf;
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, MapData, MapError, PerCpuArray, PerCpuHashMap, PerCpuValues};
use aya::sys::SyscallError;
use firewall_common::{
    AllowValue, BAN_NEVER_EXPIRES, BanKeyV4, BanKeyV6, BanValue, MAP_ALLOW_V4, MAP_ALLOW_V6,
    MAP_BAN_RANGES_V4, MAP_BAN_RANGES_V6, MAP_BANS_V4, MAP_BANS_V6, MAP_SOURCE_STATS, MAP_VERDICTS,
    PacketCounter, SourceCounters, SourceKey, Verdict,
};
use nix::errno::Errno;

use super::clock::{boottime_deadline_ns, boottime_now_ns};
use super::{Blocklist, KernelError, KernelFirewall, KernelSettings, SourceTotal, VerdictTotal};
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
/// maps need none, so `top_sources` never delays a ban.
pub(crate) struct KernelMaps {
    bans_v4: Mutex<HashMap<MapData, BanKeyV4, BanValue>>,
    bans_v6: Mutex<HashMap<MapData, BanKeyV6, BanValue>>,
    ban_ranges_v4: Trie<[u8; 4], BanValue>,
    ban_ranges_v6: Trie<[u8; 16], BanValue>,
    allow_v4: Trie<[u8; 4], AllowValue>,
    allow_v6: Trie<[u8; 16], AllowValue>,
    source_stats: PerCpuHashMap<MapData, SourceKey, SourceCounters>,
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
        Ok(Self {
            bans_v4: Mutex::new(take_map(ebpf, MAP_BANS_V4)?),
            bans_v6: Mutex::new(take_map(ebpf, MAP_BANS_V6)?),
            ban_ranges_v4: Mutex::new(take_map(ebpf, MAP_BAN_RANGES_V4)?),
            ban_ranges_v6: Mutex::new(take_map(ebpf, MAP_BAN_RANGES_V6)?),
            allow_v4: Mutex::new(take_map(ebpf, MAP_ALLOW_V4)?),
            allow_v6: Mutex::new(take_map(ebpf, MAP_ALLOW_V6)?),
            source_stats: take_map(ebpf, MAP_SOURCE_STATS)?,
            verdicts: take_map(ebpf, MAP_VERDICTS)?,
            settings: settings.clone(),
        })
    }

    fn insert_ban(&self, network: IpNetwork, value: BanValue) -> Result<(), KernelError> {
        let capacity = self.ban_capacity(network);
        let result = match (network.address(), network.is_host()) {
            (IpAddr::V4(v4), true) => {
                lock(&self.bans_v4).insert(BanKeyV4 { addr: v4.octets() }, value, 0)
            }
            (IpAddr::V6(v6), true) => {
                lock(&self.bans_v6).insert(BanKeyV6 { addr: v6.octets() }, value, 0)
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

    fn remove_ban(&self, network: IpNetwork) -> Result<bool, KernelError> {
        let map = self.ban_capacity(network).map;
        let result = match (network.address(), network.is_host()) {
            (IpAddr::V4(v4), true) => lock(&self.bans_v4).remove(&BanKeyV4 { addr: v4.octets() }),
            (IpAddr::V6(v6), true) => lock(&self.bans_v6).remove(&BanKeyV6 { addr: v6.octets() }),
            (IpAddr::V4(v4), false) => {
                lock(&self.ban_ranges_v4).remove(&prefix_key(network, v4.octets()))
            }
            (IpAddr::V6(v6), false) => {
                lock(&self.ban_ranges_v6).remove(&prefix_key(network, v6.octets()))
            }
        };
        removed(map, "remove a ban from", result)
    }

    fn insert_allow(&self, network: IpNetwork) -> Result<(), KernelError> {
        let capacity = self.allow_capacity(network);
        let value = AllowValue::default();
        let result = match network.address() {
            IpAddr::V4(v4) => {
                lock(&self.allow_v4).insert(&prefix_key(network, v4.octets()), value, 0)
            }
            IpAddr::V6(v6) => {
                lock(&self.allow_v6).insert(&prefix_key(network, v6.octets()), value, 0)
            }
        };
        result.map_err(|source| insert_error(capacity, "insert an allowlist entry into", source))
    }

    fn remove_allow(&self, network: IpNetwork) -> Result<bool, KernelError> {
        let map = self.allow_capacity(network).map;
        let result = match network.address() {
            IpAddr::V4(v4) => lock(&self.allow_v4).remove(&prefix_key(network, v4.octets())),
            IpAddr::V6(v6) => lock(&self.allow_v6).remove(&prefix_key(network, v6.octets())),
        };
        removed(map, "remove an allowlist entry from", result)
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

    fn verdict_totals(&self) -> Result<Vec<VerdictTotal>, KernelError> {
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

    fn top_sources(&self, limit: usize) -> Result<Vec<SourceTotal>, KernelError> {
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

impl Blocklist for KernelFirewall {
    fn ban(&self, network: IpNetwork, expires_at: Option<SystemTime>) -> Result<(), KernelError> {
        let expires_at_ns = match expires_at {
            None => BAN_NEVER_EXPIRES,
            Some(expires_at) => {
                boottime_deadline_ns(expires_at, SystemTime::now(), boottime_now_ns()?)
            }
        };
        self.maps().insert_ban(network, BanValue { expires_at_ns })
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
}

fn take_map<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, KernelError>
where
    M: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(KernelError::MapMissing { name })?;
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
