//! Many bans at once: one store transaction and batched kernel map updates, for imports of
//! ban lists.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use super::{BanChange, BanError, BanManager, expiry_ms, outlasts, system_time, unix_ms};
use crate::kernel::KernelBan;
use crate::network::IpNetwork;
use crate::store::{BanOrigin, BanRecord};

/// An address of an import that was not banned, and why.
#[derive(Debug)]
pub struct RejectedBan {
    /// Position of the address in the imported list, counted from 0.
    pub index: usize,
    pub address: IpNetwork,
    /// The reason: an invalid address or an allowlisted one.
    pub error: BanError,
}

/// Outcome of [`BanManager::apply_all`].
#[derive(Debug, Default)]
pub struct ImportSummary {
    /// Addresses banned, or kept banned by a ban in force that lasts at least as long.
    pub applied: usize,
    /// Addresses rejected, in list order.
    pub rejected: Vec<RejectedBan>,
}

impl BanManager {
    /// Bans every address of `addresses` for `ttl` (`None`: never expires), as
    /// [`BanManager::apply`] does for one, but with one store transaction and batched kernel map
    /// updates. Invalid and allowlisted addresses are rejected one by one and the rest are
    /// applied. An address listed twice is applied once.
    ///
    /// # Errors
    ///
    /// [`BanError::InvalidDuration`] for a bad `ttl`, before anything is changed.
    /// [`BanError::Store`] when the store write fails, with nothing changed in the kernel.
    /// [`BanError::KernelBans`] when the kernel update fails, such as on a full map. Then every
    /// ban is stored, and the error gives the number that reached the kernel.
    pub fn apply_all(
        &self,
        addresses: &[IpNetwork],
        ttl: Option<Duration>,
        origin: BanOrigin,
        reason: &str,
    ) -> Result<ImportSummary, BanError> {
        self.apply_all_at(addresses, ttl, origin, reason, SystemTime::now())
    }

    /// [`BanManager::apply_all`] at a given time.
    pub fn apply_all_at(
        &self,
        addresses: &[IpNetwork],
        ttl: Option<Duration>,
        origin: BanOrigin,
        reason: &str,
        now: SystemTime,
    ) -> Result<ImportSummary, BanError> {
        let now_ms = unix_ms(now);
        let expires_at_ms = ttl.map(|ttl| expiry_ms(now_ms, ttl)).transpose()?;
        let in_force: HashMap<IpNetwork, BanRecord> = self
            .store
            .list_bans()?
            .into_iter()
            .filter(|record| !record.is_expired(now_ms))
            .map(|record| (record.address, record))
            .collect();

        let mut summary = ImportSummary::default();
        let mut seen = HashSet::new();
        let mut changes = Vec::new();
        for (index, &address) in addresses.iter().enumerate() {
            if let Err(error) = self.check_bannable(address) {
                summary.rejected.push(RejectedBan {
                    index,
                    address,
                    error,
                });
                continue;
            }
            summary.applied += 1;
            if !seen.insert(address) {
                continue;
            }
            let existing = in_force.get(&address);
            if existing.is_some_and(|existing| outlasts(existing.expires_at_ms, expires_at_ms)) {
                continue;
            }
            let record = BanRecord {
                address,
                expires_at_ms,
                created_at_ms: now_ms,
                origin,
                reason: reason.to_owned(),
            };
            let change = if existing.is_some() {
                BanChange::Extended
            } else {
                BanChange::Applied
            };
            changes.push((record, change));
        }

        let records: Vec<BanRecord> = changes.iter().map(|(record, _)| record.clone()).collect();
        self.store.put_bans(&records)?;
        {
            let mut active = self.active_mut();
            for record in &records {
                active.insert(record.address, record.expires_at_ms);
            }
        }
        self.update_active_gauge();

        let kernel_bans: Vec<KernelBan> = records
            .iter()
            .map(|record| KernelBan {
                network: record.address,
                expires_at: record.expires_at_ms.map(system_time),
            })
            .collect();
        self.blocklist
            .ban_all(&kernel_bans)
            .map_err(|source| self.kernel_bans_error(source))?;

        for (record, change) in &changes {
            self.metrics.record_ban(origin);
            self.notify(*change, record, None);
        }
        tracing::info!(
            applied = summary.applied,
            written = records.len(),
            rejected = summary.rejected.len(),
            origin = origin.label(),
            ttl_seconds = ttl.map(|ttl| ttl.as_secs()),
            reason,
            "bans imported"
        );
        Ok(summary)
    }
}
