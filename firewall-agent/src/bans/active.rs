//! The bans in force, kept in memory so that the proxy checks a client without a store read.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::network::IpNetwork;

/// Bans in force and their expiry in Unix milliseconds (`None`: never), with the number of bans
/// at each prefix length. A lookup probes only the prefix lengths that have bans, so a client
/// check costs one hash lookup per length in use instead of one per possible length.
#[derive(Debug)]
pub(super) struct ActiveBans {
    expiries: HashMap<IpNetwork, Option<u64>>,
    v4_lengths: [u32; 33],
    v6_lengths: [u32; 129],
}

impl Default for ActiveBans {
    fn default() -> Self {
        Self {
            expiries: HashMap::new(),
            v4_lengths: [0; 33],
            v6_lengths: [0; 129],
        }
    }
}

impl ActiveBans {
    /// Inserts or replaces the ban of `network`.
    pub(super) fn insert(&mut self, network: IpNetwork, expires_at_ms: Option<u64>) {
        if self.expiries.insert(network, expires_at_ms).is_none() {
            *self.length_count(network) += 1;
        }
    }

    /// Removes the ban of `network`, if there is one.
    pub(super) fn remove(&mut self, network: &IpNetwork) {
        if self.expiries.remove(network).is_some() {
            *self.length_count(*network) -= 1;
        }
    }

    /// Number of bans, expired ones the sweeper has not removed yet included.
    pub(super) fn len(&self) -> usize {
        self.expiries.len()
    }

    /// Returns whether a ban unexpired at `now_ms` covers `address`, of its own or as a range.
    pub(super) fn covers(&self, address: IpAddr, now_ms: u64) -> bool {
        let lengths: &[u32] = match address {
            IpAddr::V4(_) => &self.v4_lengths,
            IpAddr::V6(_) => &self.v6_lengths,
        };
        (0..lengths.len())
            .rev()
            .filter(|&prefix_len| lengths[prefix_len] > 0)
            .filter_map(|prefix_len| u8::try_from(prefix_len).ok())
            .filter_map(|prefix_len| IpNetwork::new(address, prefix_len).ok())
            .filter_map(|network| self.expiries.get(&network))
            .any(|expires| expires.is_none_or(|expires| expires > now_ms))
    }

    fn length_count(&mut self, network: IpNetwork) -> &mut u32 {
        let prefix_len = usize::from(network.prefix_len());
        match network.address() {
            IpAddr::V4(_) => &mut self.v4_lengths[prefix_len],
            IpAddr::V6(_) => &mut self.v6_lengths[prefix_len],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNetwork {
        text.parse().expect("valid address or range")
    }

    fn addr(text: &str) -> IpAddr {
        text.parse().expect("valid address")
    }

    #[test]
    fn range_and_host_bans_cover() {
        let mut bans = ActiveBans::default();
        bans.insert(net("198.51.100.0/24"), None);
        bans.insert(net("2001:db8::7"), Some(2_000));

        assert!(bans.covers(addr("198.51.100.9"), 1_000));
        assert!(!bans.covers(addr("198.51.101.9"), 1_000));
        assert!(bans.covers(addr("2001:db8::7"), 1_000));
        assert!(!bans.covers(addr("2001:db8::7"), 2_000), "expired at 2000 ms");
    }

    #[test]
    fn replaced_ban_keeps_one_count() {
        let mut bans = ActiveBans::default();
        bans.insert(net("203.0.113.0/28"), None);
        bans.insert(net("203.0.113.0/28"), Some(5));
        bans.remove(&net("203.0.113.0/28"));

        assert_eq!(bans.len(), 0);
        assert!(bans.v4_lengths.iter().all(|count| *count == 0));
        assert!(!bans.covers(addr("203.0.113.1"), 1));
    }
}
