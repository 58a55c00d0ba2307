//! Escalating ban durations for repeat offenders, and the observer that hears of every ban
//! change.
//!
//! The n-th ban of a source (n counted from 0) lasts `base × factor^n`, capped at the maximum,
//! then moved by a random jitter of up to `± jitter_ratio`, so that sources banned together are
//! not released together. The offence count is kept in the store, so it survives restarts.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use super::{BanError, BanManager, unix_ms};
use crate::config::MAX_DURATION_SECONDS;
use crate::network::IpNetwork;
use crate::store::{BanOrigin, BanRecord, OffenceRecord};

/// Growth of ban durations for repeat offenders.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EscalationPolicy {
    /// Duration of a first ban.
    pub base: Duration,
    /// Multiplier per earlier ban, at least 1.
    pub factor: f64,
    /// Maximum ban duration, before jitter.
    pub max: Duration,
    /// Largest share of the duration that jitter adds or removes, from 0 to 0.5.
    pub jitter_ratio: f64,
    /// Offences older than this no longer count.
    pub history: Duration,
}

impl EscalationPolicy {
    /// Returns the duration of a ban after `offences` earlier bans, with `jitter` in [-1, 1]
    /// scaling the jitter ratio. The result is at least one second and at most
    /// [`MAX_DURATION_SECONDS`].
    pub fn duration(&self, offences: u32, jitter: f64) -> Duration {
        let exponent = i32::try_from(offences).unwrap_or(i32::MAX);
        let grown = self.base.as_secs_f64() * self.factor.powi(exponent);
        let capped = grown.min(self.max.as_secs_f64());
        let jittered = capped * (1.0 + self.jitter_ratio * jitter.clamp(-1.0, 1.0));
        let limit = MAX_DURATION_SECONDS as f64;
        Duration::from_secs_f64(jittered.clamp(1.0, limit))
    }
}

/// A change to the bans in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BanChange {
    /// A new ban.
    Applied,
    /// A ban in force got a later expiry.
    Extended,
    /// A ban expired and was removed by the sweeper.
    Expired,
    /// An operator removed a ban.
    Lifted,
}

/// Hears of every ban change, after the store and the kernel were updated. Called on the
/// thread that made the change, so it must not block.
pub trait BanObserver: Send + Sync {
    /// Called once per change. `offences` is the source's earlier ban count, for escalated
    /// bans only.
    fn ban_changed(&self, change: BanChange, record: &BanRecord, offences: Option<u32>);
}

/// An escalated ban and the offences that sized it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EscalatedBan {
    /// The ban in force.
    pub record: BanRecord,
    /// Earlier bans of the source that counted toward the duration.
    pub offences: u32,
}

impl BanManager {
    /// Bans `address` for a duration that grows with its earlier bans, and records the offence
    /// in the store. Returns `None`, without banning, for an allowlisted address.
    ///
    /// # Errors
    ///
    /// [`BanError`] when the store or the kernel update fails.
    pub fn apply_escalated(
        &self,
        address: IpAddr,
        origin: BanOrigin,
        reason: &str,
        policy: &EscalationPolicy,
    ) -> Result<Option<EscalatedBan>, BanError> {
        self.apply_escalated_at(
            address,
            origin,
            reason,
            policy,
            random_jitter(),
            SystemTime::now(),
        )
    }

    /// [`BanManager::apply_escalated`] with a given jitter in [-1, 1] and time.
    pub fn apply_escalated_at(
        &self,
        address: IpAddr,
        origin: BanOrigin,
        reason: &str,
        policy: &EscalationPolicy,
        jitter: f64,
        now: SystemTime,
    ) -> Result<Option<EscalatedBan>, BanError> {
        let network = IpNetwork::host(address.to_canonical());
        if let Some(allowlisted) = self.allowlisted_by(network) {
            tracing::info!(address = %network, %allowlisted, reason, "ban skipped for an allowlisted source");
            return Ok(None);
        }

        let now_ms = unix_ms(now);
        let history_ms = u64::try_from(policy.history.as_millis()).unwrap_or(u64::MAX);
        let offences = self
            .store
            .get_offences(network)?
            .filter(|record| now_ms.saturating_sub(record.last_at_ms) < history_ms)
            .map_or(0, |record| record.count);

        let ttl = policy.duration(offences, jitter);
        let reason = format!("{reason} (offence {})", offences + 1);
        let record =
            self.apply_counted_at(network, Some(ttl), origin, &reason, now, Some(offences))?;
        self.store.put_offences(
            network,
            &OffenceRecord {
                count: offences.saturating_add(1),
                last_at_ms: now_ms,
            },
        )?;
        Ok(Some(EscalatedBan { record, offences }))
    }

    /// Deletes offence histories older than `policy.history`. Returns the number deleted.
    ///
    /// # Errors
    ///
    /// [`BanError::Store`] when the store fails.
    pub fn forget_old_offences(
        &self,
        policy: &EscalationPolicy,
        now: SystemTime,
    ) -> Result<usize, BanError> {
        let history_ms = u64::try_from(policy.history.as_millis()).unwrap_or(u64::MAX);
        let before_ms = unix_ms(now).saturating_sub(history_ms);
        Ok(self.store.forget_offences_before(before_ms)?)
    }
}

/// Returns a random number in [-1, 1], from the standard library's per-process random hash
/// keys.
fn random_jitter() -> f64 {
    let bits = RandomState::new().hash_one(SystemTime::now());
    // The top 53 bits make a uniform double in [0, 1).
    let unit = (bits >> 11) as f64 / (1u64 << 53) as f64;
    unit * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> EscalationPolicy {
        EscalationPolicy {
            base: Duration::from_secs(600),
            factor: 2.0,
            max: Duration::from_secs(3600),
            jitter_ratio: 0.1,
            history: Duration::from_secs(86_400),
        }
    }

    #[test]
    fn duration_grows_then_caps() {
        let policy = policy();

        assert_eq!(policy.duration(0, 0.0), Duration::from_secs(600));
        assert_eq!(policy.duration(1, 0.0), Duration::from_secs(1200));
        assert_eq!(policy.duration(2, 0.0), Duration::from_secs(2400));
        assert_eq!(policy.duration(3, 0.0), Duration::from_secs(3600));
        assert_eq!(policy.duration(u32::MAX, 0.0), Duration::from_secs(3600));
    }

    #[test]
    fn jitter_stays_within_ratio() {
        let policy = policy();

        assert_eq!(policy.duration(0, 1.0), Duration::from_secs(660));
        assert_eq!(policy.duration(0, -1.0), Duration::from_secs(540));
        assert_eq!(
            policy.duration(0, 7.0),
            Duration::from_secs(660),
            "jitter is clamped"
        );
        for _ in 0..100 {
            let jitter = random_jitter();
            assert!((-1.0..=1.0).contains(&jitter), "{jitter}");
        }
    }
}
