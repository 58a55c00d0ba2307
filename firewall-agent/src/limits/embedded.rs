//! The embedded engine: counters in the agent's memory, in independently locked shards.
//!
//! A request locks only the shards its entries live in, in ascending shard order so that two
//! requests cannot deadlock, checks every tier and commits only if the request is admitted.
//! There is no lock shared by all requests.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use std::collections::hash_map::RandomState;

use smallvec::SmallVec;

use super::gcra::{Tier, TierOutcome, TierState};
use super::metrics::{EvictionReason, LimitMetrics};
use super::{CheckOutcome, RuleCheck};

/// Number of shards, a power of two well above the core count of the machines the agent runs
/// on, so that two requests rarely wait for the same lock.
const SHARD_COUNT: usize = 64;
/// First fingerprint bit of the shard index. The map uses the low bits for the bucket and the
/// top 7 bits as a tag, so the shard index comes from bits that neither uses.
const SHARD_SHIFT: u32 = 40;

/// Per-tier values of one request, kept on the stack because the engine runs on every request.
/// A request usually falls under one or two rules of one or two tiers each.
type PerTier<T> = SmallVec<[T; 4]>;
/// Per-rule values of one request.
type PerRule<T> = SmallVec<[T; 2]>;

/// One (key, tier) entry.
#[derive(Clone, Copy, Debug)]
struct Entry {
    state: TierState,
    /// When the level reaches zero, in nanoseconds since the epoch; the entry is idle after it.
    idle_at_ns: u64,
}

/// A map keyed by a fingerprint that is already a good hash, so it is used as the hash.
type EntryMap = HashMap<u64, Entry, BuildHasherDefault<FingerprintHasher>>;

/// The embedded engine.
///
/// Entries are found by a 64-bit fingerprint of (rule name, key, window). Two keys share an
/// entry with a probability of about n² / 2⁶⁵ for n entries, 3·10⁻⁸ for a million. The hash
/// seed is random per process, so clients cannot aim for a collision.
#[derive(Debug)]
pub struct EmbeddedEngine {
    epoch: Instant,
    hasher: RandomState,
    shards: Box<[Mutex<EntryMap>]>,
    max_entries_per_shard: usize,
    metrics: Arc<LimitMetrics>,
}

impl EmbeddedEngine {
    /// Creates an engine that keeps at most about `max_entries` entries.
    pub fn new(max_entries: usize, metrics: Arc<LimitMetrics>) -> Self {
        Self::with_epoch(max_entries, metrics, Instant::now())
    }

    /// Creates an engine whose clock starts at `epoch`, so tests can place requests at exact
    /// times.
    pub fn with_epoch(max_entries: usize, metrics: Arc<LimitMetrics>, epoch: Instant) -> Self {
        let shards = (0..SHARD_COUNT)
            .map(|_| Mutex::new(EntryMap::default()))
            .collect();
        Self {
            epoch,
            hasher: RandomState::new(),
            shards,
            max_entries_per_shard: max_entries.div_ceil(SHARD_COUNT).max(1),
            metrics,
        }
    }

    /// Checks and, if admitted, commits a request now.
    pub fn check(&self, rules: &[RuleCheck]) -> CheckOutcome {
        self.check_at(rules, Instant::now())
    }

    /// Checks and, if admitted, commits a request at `now`.
    ///
    /// The request is admitted when every tier of every enforced rule admits it. Then each
    /// rule whose tiers all admit it is committed; a shadow rule over its limit is not.
    pub fn check_at(&self, rules: &[RuleCheck], now: Instant) -> CheckOutcome {
        let now_ns = self.nanos_since_epoch(now);
        let fingerprints: PerRule<PerTier<u64>> = rules
            .iter()
            .map(|rule| {
                rule.tiers
                    .iter()
                    .map(|tier| self.fingerprint(rule, *tier))
                    .collect()
            })
            .collect();

        let mut shard_indexes: PerTier<usize> = fingerprints
            .iter()
            .flatten()
            .map(|&f| shard_of(f))
            .collect();
        shard_indexes.sort_unstable();
        shard_indexes.dedup();
        let mut guards: PerTier<(usize, MutexGuard<'_, EntryMap>)> = shard_indexes
            .into_iter()
            .map(|index| (index, lock(&self.shards[index])))
            .collect();

        let levels: PerRule<PerTier<f64>> = rules
            .iter()
            .zip(&fingerprints)
            .map(|(rule, prints)| {
                rule.tiers
                    .iter()
                    .zip(prints)
                    .map(|(tier, &print)| {
                        let shard = guard_for(&mut guards, print);
                        shard
                            .get(&print)
                            .map_or(0.0, |entry| entry.state.level_at(*tier, now_ns))
                    })
                    .collect()
            })
            .collect();

        let outcome = CheckOutcome::decide(rules, &levels);
        for ((rule, prints), result) in rules.iter().zip(&fingerprints).zip(&outcome.rules) {
            if !result.committed {
                continue;
            }
            for ((tier, &print), tier_outcome) in rule.tiers.iter().zip(prints).zip(&result.tiers) {
                let shard = guard_for(&mut guards, print);
                self.store(shard, print, *tier, tier_outcome, now_ns);
            }
        }
        outcome
    }

    /// Removes entries whose level has drained to zero. Returns how many were removed.
    pub fn evict_idle(&self, now: Instant) -> usize {
        let now_ns = self.nanos_since_epoch(now);
        let mut removed = 0;
        let mut total = 0;
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let before = shard.len();
            shard.retain(|_, entry| entry.idle_at_ns > now_ns);
            removed += before - shard.len();
            total += shard.len();
        }
        self.metrics
            .record_evictions(EvictionReason::Idle, removed as u64);
        self.metrics.set_entries(total);
        removed
    }

    /// Returns the number of entries.
    pub fn entries(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }

    fn store(
        &self,
        shard: &mut EntryMap,
        print: u64,
        tier: Tier,
        outcome: &TierOutcome,
        now_ns: u64,
    ) {
        let idle_at_ns = now_ns.saturating_add(
            u64::try_from(tier.time_to_drain(outcome.level).as_nanos()).unwrap_or(u64::MAX),
        );
        let entry = Entry {
            state: TierState {
                level: outcome.level,
                updated_ns: now_ns,
            },
            idle_at_ns,
        };
        if shard.len() >= self.max_entries_per_shard && !shard.contains_key(&print) {
            self.make_room(shard, now_ns);
        }
        shard.insert(print, entry);
    }

    /// Frees one slot in a full shard: idle entries first, else the entry closest to idle,
    /// because removing it loses the least usage.
    fn make_room(&self, shard: &mut EntryMap, now_ns: u64) {
        let before = shard.len();
        shard.retain(|_, entry| entry.idle_at_ns > now_ns);
        let idle = before - shard.len();
        self.metrics
            .record_evictions(EvictionReason::Idle, idle as u64);
        if idle > 0 {
            return;
        }

        let closest = shard
            .iter()
            .min_by_key(|(_, entry)| entry.idle_at_ns)
            .map(|(&print, _)| print);
        if let Some(print) = closest {
            shard.remove(&print);
            self.metrics.record_evictions(EvictionReason::Capacity, 1);
        }
    }

    fn fingerprint(&self, rule: &RuleCheck, tier: Tier) -> u64 {
        self.hasher
            .hash_one((&*rule.name, rule.key.as_str(), tier.window))
    }

    fn nanos_since_epoch(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

fn shard_of(print: u64) -> usize {
    (print >> SHARD_SHIFT) as usize & (SHARD_COUNT - 1)
}

fn guard_for<'g, 'm>(
    guards: &'g mut [(usize, MutexGuard<'m, EntryMap>)],
    print: u64,
) -> &'g mut EntryMap {
    let index = shard_of(print);
    let position = guards
        .binary_search_by_key(&index, |(shard, _)| *shard)
        .unwrap_or_else(|_| unreachable!("every shard of the request is locked"));
    &mut guards[position].1
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change under the lock is a single map operation, so a poisoned map is still
    // consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A hasher that passes a `u64` fingerprint through.
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}
