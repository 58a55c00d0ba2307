//! The pinned maps of a stopped agent, opened directly so that `fwctl` can still add and remove
//! bans. The XDP program stays attached through its pinned link and applies them at once; the
//! agent stores them at its next start.

use std::path::Path;
use std::time::SystemTime;

use super::maps::KernelMaps;
use super::pins::PinDir;
use super::{Blocklist, KernelBan, KernelError, SourceTotal, VerdictTotal};
use crate::network::IpNetwork;

/// The maps pinned in one pin directory, without the program that uses them.
pub struct PinnedBlocklist {
    maps: KernelMaps,
}

impl std::fmt::Debug for PinnedBlocklist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedBlocklist").finish_non_exhaustive()
    }
}

impl PinnedBlocklist {
    /// Opens the maps pinned in `pin_dir`. Creates nothing: the directory must hold the pins of
    /// an agent with this agent's schema version.
    ///
    /// # Errors
    ///
    /// [`KernelError::NoPins`] when the directory holds no pinned maps,
    /// [`KernelError::PinSchemaMismatch`] when they have another schema version, and
    /// [`KernelError::MapLayout`] when a pin cannot be opened or has another layout.
    pub fn open(pin_dir: &Path) -> Result<Self, KernelError> {
        let (pins, settings) = PinDir::open_existing(pin_dir)?;
        let maps = KernelMaps::open_pinned(&pins, &settings)?;
        Ok(Self { maps })
    }
}

impl Blocklist for PinnedBlocklist {
    fn ban(&self, network: IpNetwork, expires_at: Option<SystemTime>) -> Result<(), KernelError> {
        self.maps.ban(network, expires_at)
    }

    fn ban_all(&self, bans: &[KernelBan]) -> Result<(), KernelError> {
        self.maps.ban_all(bans)
    }

    fn unban(&self, network: IpNetwork) -> Result<bool, KernelError> {
        self.maps.remove_ban(network)
    }

    fn allow(&self, network: IpNetwork) -> Result<(), KernelError> {
        self.maps.insert_allow(network)
    }

    fn disallow(&self, network: IpNetwork) -> Result<bool, KernelError> {
        self.maps.remove_allow(network)
    }

    fn verdict_totals(&self) -> Result<Vec<VerdictTotal>, KernelError> {
        self.maps.verdict_totals()
    }

    fn top_sources(&self, limit: usize) -> Result<Vec<SourceTotal>, KernelError> {
        self.maps.top_sources(limit)
    }

    fn ban_table_state(&self) -> Option<firewall_common::BanTableState> {
        Some(self.maps.ban_table_state())
    }

    fn kernel_bans(&self) -> Result<Vec<KernelBan>, KernelError> {
        self.maps.kernel_bans()
    }
}
