//! A [`Blocklist`] kept in process memory, for tests and for running the proxy without a kernel
//! program.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use firewall_common::{PacketCounter, Verdict};

use crate::kernel::{Blocklist, KernelError, SourceTotal, VerdictTotal};

/// Bans and counters in a mutex-protected map. Counters stay at zero unless a test sets them.
#[derive(Debug, Default)]
pub struct MemoryBlocklist {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    bans: HashMap<IpAddr, Option<SystemTime>>,
    verdicts: HashMap<Verdict, PacketCounter>,
    sources: Vec<SourceTotal>,
}

impl MemoryBlocklist {
    /// Creates an empty blocklist.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the expiry of the ban of `addr`: `None` when not banned, `Some(None)` for a ban
    /// that never expires.
    pub fn ban_of(&self, addr: IpAddr) -> Option<Option<SystemTime>> {
        self.lock().bans.get(&addr).copied()
    }

    /// Returns every banned address, sorted.
    pub fn banned_addresses(&self) -> Vec<IpAddr> {
        let mut addresses: Vec<IpAddr> = self.lock().bans.keys().copied().collect();
        addresses.sort();
        addresses
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
    fn ban(&self, addr: IpAddr, expires_at: Option<SystemTime>) -> Result<(), KernelError> {
        self.lock().bans.insert(addr, expires_at);
        Ok(())
    }

    fn unban(&self, addr: IpAddr) -> Result<bool, KernelError> {
        Ok(self.lock().bans.remove(&addr).is_some())
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
