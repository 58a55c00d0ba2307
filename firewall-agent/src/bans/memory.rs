//! A [`Blocklist`] kept in process memory, for tests and for running the proxy without a kernel
//! program.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use firewall_common::{PacketCounter, Verdict};

use crate::kernel::{Blocklist, KernelBan, KernelError, SourceTotal, VerdictTotal};
use crate::network::IpNetwork;

/// Bans and counters in a mutex-protected map. Counters stay at zero unless a test sets them.
#[derive(Debug, Default)]
pub struct MemoryBlocklist {
    state: Mutex<State>,
    /// Maximum number of bans, like a kernel map's capacity; `None` for no limit.
    max_bans: Option<usize>,
}

#[derive(Debug, Default)]
struct State {
    bans: HashMap<IpNetwork, Option<SystemTime>>,
    allowed: HashSet<IpNetwork>,
    verdicts: HashMap<Verdict, PacketCounter>,
    sources: Vec<SourceTotal>,
}

impl MemoryBlocklist {
    /// Creates an empty blocklist.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates an empty blocklist that accepts at most `max_bans` bans and rejects a new one
    /// beyond that with [`KernelError::MapFull`], as a full kernel map does.
    pub fn with_max_bans(max_bans: usize) -> Self {
        Self {
            max_bans: Some(max_bans),
            ..Self::default()
        }
    }

    /// Returns the expiry of the ban of `network`: `None` when not banned, `Some(None)` for a
    /// ban that never expires.
    pub fn ban_of(&self, network: impl Into<IpNetwork>) -> Option<Option<SystemTime>> {
        self.lock().bans.get(&network.into()).copied()
    }

    /// Returns every banned address and range, sorted.
    pub fn banned_addresses(&self) -> Vec<IpNetwork> {
        let mut networks: Vec<IpNetwork> = self.lock().bans.keys().copied().collect();
        networks.sort();
        networks
    }

    /// Returns every allowlisted address and range, sorted.
    pub fn allowed_networks(&self) -> Vec<IpNetwork> {
        let mut networks: Vec<IpNetwork> = self.lock().allowed.iter().copied().collect();
        networks.sort();
        networks
    }

    /// Sets the counters of one verdict.
    pub fn set_verdict(&self, verdict: Verdict, counter: PacketCounter) {
        self.lock().verdicts.insert(verdict, counter);
    }

    /// Replaces the per-source counters.
    pub fn set_sources(&self, sources: Vec<SourceTotal>) {
        self.lock().sources = sources;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every change is one map call.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Blocklist for MemoryBlocklist {
    fn ban(&self, network: IpNetwork, expires_at: Option<SystemTime>) -> Result<(), KernelError> {
        let mut state = self.lock();
        let full = self
            .max_bans
            .is_some_and(|max| state.bans.len() >= max && !state.bans.contains_key(&network));
        if full {
            return Err(KernelError::MapFull {
                map: "memory",
                setting: "bans_max_entries",
                max_entries: self
                    .max_bans
                    .and_then(|max| u32::try_from(max).ok())
                    .unwrap_or(u32::MAX),
            });
        }
        state.bans.insert(network, expires_at);
        Ok(())
    }

    fn unban(&self, network: IpNetwork) -> Result<bool, KernelError> {
        Ok(self.lock().bans.remove(&network).is_some())
    }

    fn allow(&self, network: IpNetwork) -> Result<(), KernelError> {
        self.lock().allowed.insert(network);
        Ok(())
    }

    fn disallow(&self, network: IpNetwork) -> Result<bool, KernelError> {
        Ok(self.lock().allowed.remove(&network))
    }

    fn verdict_totals(&self) -> Result<Vec<VerdictTotal>, KernelError> {
        let state = self.lock();
        Ok(Verdict::ALL
            .iter()
            .map(|&verdict| VerdictTotal {
                verdict,
                counter: state.verdicts.get(&verdict).copied().unwrap_or_default(),
            })
            .collect())
    }

    fn kernel_bans(&self) -> Result<Vec<KernelBan>, KernelError> {
        let state = self.lock();
        Ok(state
            .bans
            .iter()
            .map(|(&network, &expires_at)| KernelBan {
                network,
                expires_at,
            })
            .collect())
    }

    fn top_sources(&self, limit: usize) -> Result<Vec<SourceTotal>, KernelError> {
        let mut sources = self.lock().sources.clone();
        sources.sort_by_key(|source| {
            std::cmp::Reverse(
                source
                    .counters
                    .passed_packets
                    .saturating_add(source.counters.dropped_packets),
            )
        });
        sources.truncate(limit);
        Ok(sources)
    }
}
