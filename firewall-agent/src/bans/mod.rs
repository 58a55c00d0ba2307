//! Bans: strikes from security events, ban decisions, expiry, and the link between the store
//! and the kernel blocklist.
//!
//! A ban is written to the store first and then inserted into the kernel map, so a ban that
//! reached the kernel is always restored after a restart.

mod active;
pub mod escalation;
pub mod events;
mod import;
pub mod memory;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use self::active::ActiveBans;
use crate::config::{BanConfig, MAX_DURATION_SECONDS};
use crate::kernel::{Blocklist, KernelBan, KernelError};
use crate::network::IpNetwork;
use crate::store::{AllowRecord, BanOrigin, BanRecord, Store, StoreError};
use crate::telemetry::ErrorChain;
use crate::telemetry::Metrics;

pub use escalation::{BanChange, BanObserver, EscalatedBan, EscalationPolicy};
pub use events::{EventSink, SecurityEvent, SecurityEventKind};
pub use import::{ImportSummary, RejectedBan};

/// Strike and ban durations, from the `[bans]` section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BanPolicy {
    /// Strikes within `strike_window` that lead to a ban.
    pub strikes: u32,
    /// Time over which strikes are counted.
    pub strike_window: Duration,
    /// Duration of a ban for strikes.
    pub ban_duration: Duration,
}

impl From<&BanConfig> for BanPolicy {
    fn from(config: &BanConfig) -> Self {
        Self {
            strikes: config.strikes,
            strike_window: config.strike_window(),
            ban_duration: config.ban_duration(),
        }
    }
}

/// Errors from ban operations.
#[derive(Debug, thiserror::Error)]
pub enum BanError {
    /// The store failed; nothing was changed in the kernel.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store was updated but the kernel map was not.
    #[error("failed to update the kernel maps for {address}")]
    Kernel {
        address: IpNetwork,
        #[source]
        source: Box<KernelError>,
    },
    /// The store contains a list of bans but the kernel maps contain only part of it. The
    /// source error gives the number that reached the kernel.
    #[error("failed to write the bans into the kernel maps")]
    KernelBans {
        #[source]
        source: Box<KernelError>,
    },
    /// The bans in the kernel maps could not be read.
    #[error("failed to read the bans in the kernel maps")]
    KernelRead {
        #[source]
        source: Box<KernelError>,
    },
    /// The time-to-live is zero or too long.
    #[error("invalid ban duration of {seconds} seconds: expected 1 to {MAX_DURATION_SECONDS}")]
    InvalidDuration { seconds: u64 },
    /// The address can never be a packet source, or the range contains every address.
    #[error(
        "invalid ban address {address}: an unspecified or multicast address is never a source, \
         and a /0 range would ban every address"
    )]
    InvalidAddress { address: IpNetwork },
    /// The address or range lies in the allowlist, which always wins over bans.
    #[error(
        "ban of {address} rejected: it is allowlisted by {allowlisted}; {}",
        allowlist_hint(*.configured)
    )]
    Allowlisted {
        address: IpNetwork,
        allowlisted: IpNetwork,
        /// Whether the entry comes from the config file rather than the admin API.
        configured: bool,
    },
    /// The allowlist entry comes from the config file, so it cannot be removed at run time.
    #[error("allowlist entry {address} is set in the config file; remove it there and restart")]
    ConfiguredAllow { address: IpNetwork },
}

/// Returns what to change when a ban is rejected because of an allowlist entry.
fn allowlist_hint(configured: bool) -> &'static str {
    if configured {
        "that entry is set in the [bans] config section (`allowlist`, or `allow_loopback` for \
         loopback), so change it there and restart if the ban is intended"
    } else {
        "remove that entry with `fwctl allow remove` first if the ban is intended"
    }
}

/// One allowlist entry and where it comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllowEntry {
    /// The allowlisted address or range.
    pub address: IpNetwork,
    /// Whether the entry comes from the config file (loopback and `bans.allowlist`), as opposed
    /// to the admin API.
    pub configured: bool,
}

/// Counts of [`BanManager::restore`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    /// Unexpired bans pushed into the kernel.
    pub restored: usize,
    /// Expired bans deleted from the store.
    pub expired: usize,
}

/// Owns the store and the kernel blocklist, and decides bans.
pub struct BanManager {
    store: Store,
    blocklist: Arc<dyn Blocklist>,
    policy: BanPolicy,
    metrics: Arc<Metrics>,
    /// Recent strike times per client, oldest first.
    strikes: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
    /// Bans in force, mirrored from the store.
    active: RwLock<ActiveBans>,
    /// Allowlist entries from the config file.
    configured_allows: BTreeSet<IpNetwork>,
    /// Every allowlist entry: the configured ones and those stored at run time.
    allowlist: RwLock<BTreeSet<IpNetwork>>,
    /// Hears of ban changes, such as the audit log.
    observer: OnceLock<Arc<dyn BanObserver>>,
}

impl std::fmt::Debug for BanManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BanManager")
            .field("store", &self.store)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl BanManager {
    /// Creates a manager. Call [`BanManager::restore`] before serving, so that stored bans reach
    /// the kernel.
    pub fn new(
        store: Store,
        blocklist: Arc<dyn Blocklist>,
        policy: BanPolicy,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            blocklist,
            policy,
            metrics,
            strikes: Mutex::new(HashMap::new()),
            active: RwLock::new(ActiveBans::default()),
            configured_allows: BTreeSet::new(),
            allowlist: RwLock::new(BTreeSet::new()),
            observer: OnceLock::new(),
        }
    }

    /// Sets the observer that hears of every later ban change. Only the first call takes
    /// effect; returns whether this one did.
    pub fn set_observer(&self, observer: Arc<dyn BanObserver>) -> bool {
        self.observer.set(observer).is_ok()
    }

    fn notify(&self, change: BanChange, record: &BanRecord, offences: Option<u32>) {
        if let Some(observer) = self.observer.get() {
            observer.ban_changed(change, record, offences);
        }
    }

    /// Sets the allowlist entries of the config file. [`BanManager::restore`] writes them, with
    /// the stored ones, into the kernel.
    pub fn with_allowlist(mut self, networks: impl IntoIterator<Item = IpNetwork>) -> Self {
        self.configured_allows = networks.into_iter().collect();
        *self.allowlist_mut() = self.configured_allows.clone();
        self
    }

    /// Writes the allowlist and every unexpired stored ban into the kernel, and deletes expired
    /// bans from the store and the kernel.
    ///
    /// Unexpired bans found only in the kernel maps, written there by `fwctl` while the agent was
    /// stopped, are stored as manual bans with the kernel's expiry.
    ///
    /// # Errors
    ///
    /// [`BanError`] on the first store or kernel failure; bans handled before it stay applied.
    /// A failed kernel update of the stored bans is [`BanError::KernelBans`], whose source gives
    /// the number of bans that reached the kernel.
    pub fn restore(&self) -> Result<RestoreSummary, BanError> {
        self.restore_at(SystemTime::now())
    }

    /// [`BanManager::restore`] at a given time.
    pub fn restore_at(&self, now: SystemTime) -> Result<RestoreSummary, BanError> {
        let now_ms = unix_ms(now);
        let mut summary = RestoreSummary::default();

        let mut allowlist = self.configured_allows.clone();
        allowlist.extend(
            self.store
                .list_allows()?
                .into_iter()
                .map(|record| record.address),
        );
        for &address in &allowlist {
            self.blocklist
                .allow(address)
                .map_err(|source| self.kernel_error(address, source))?;
        }
        *self.allowlist_mut() = allowlist;

        let mut unexpired = Vec::new();
        for record in self.store.list_bans()? {
            let address = record.address;
            if record.is_expired(now_ms) {
                self.store.remove_ban(record.address)?;
                // Pinned maps outlive the agent, so the expired entry may still be there.
                self.blocklist
                    .unban(address)
                    .map_err(|source| self.kernel_error(address, source))?;
                summary.expired += 1;
                continue;
            }
            unexpired.push(record);
        }

        let kernel_bans: Vec<KernelBan> = unexpired
            .iter()
            .map(|record| KernelBan {
                network: record.address,
                expires_at: record.expires_at_ms.map(system_time),
            })
            .collect();
        self.blocklist
            .ban_all(&kernel_bans)
            .map_err(|source| self.kernel_bans_error(source))?;
        {
            let mut active = self.active_mut();
            for record in &unexpired {
                active.insert(record.address, record.expires_at_ms);
            }
        }
        summary.restored = unexpired.len();
        let stored: HashSet<IpNetwork> = unexpired.iter().map(|record| record.address).collect();
        self.import_kernel_bans(&stored, now_ms)?;

        self.update_active_gauge();
        Ok(summary)
    }

    /// Stores the bans that are in the kernel maps but not in the store, as manual bans with the
    /// kernel's expiry, and removes the expired ones from the kernel.
    ///
    /// `stored` contains the addresses of the unexpired stored bans, so that no kernel ban needs
    /// a store read of its own.
    fn import_kernel_bans(
        &self,
        stored: &HashSet<IpNetwork>,
        now_ms: u64,
    ) -> Result<(), BanError> {
        let kernel_bans = self
            .blocklist
            .kernel_bans()
            .map_err(|source| BanError::KernelRead {
                source: Box::new(source),
            })?;
        let mut imported = 0usize;
        for ban in kernel_bans {
            let address = ban.network;
            if stored.contains(&address) {
                continue;
            }
            let record = BanRecord {
                address,
                expires_at_ms: ban.expires_at.map(unix_ms),
                created_at_ms: now_ms,
                origin: BanOrigin::Manual,
                reason: "added to the kernel maps while the agent was stopped".to_owned(),
            };
            if record.is_expired(now_ms) {
                self.blocklist
                    .unban(address)
                    .map_err(|source| self.kernel_error(address, source))?;
                continue;
            }
            self.store.put_ban(&record)?;
            self.active_mut().insert(address, record.expires_at_ms);
            imported += 1;
        }
        if imported > 0 {
            tracing::info!(imported, "stored the bans found only in the kernel maps");
        }
        Ok(())
    }

    /// Counts a strike against `address`. When the strikes within the strike window reach the
    /// policy's count, the client is banned for the policy's duration and its strikes are
    /// cleared. Returns the ban, if one was applied.
    ///
    /// # Errors
    ///
    /// [`BanError`] when the ban could not be stored or pushed into the kernel.
    pub fn record_strike(
        &self,
        address: IpAddr,
        reason: &str,
    ) -> Result<Option<BanRecord>, BanError> {
        self.record_strike_at(address, reason, Instant::now(), SystemTime::now())
    }

    /// [`BanManager::record_strike`] at given monotonic and wall-clock times.
    pub fn record_strike_at(
        &self,
        address: IpAddr,
        reason: &str,
        now: Instant,
        wall_now: SystemTime,
    ) -> Result<Option<BanRecord>, BanError> {
        let address = address.to_canonical();
        if let Some(allowlisted) = self.allowlisted_by(IpNetwork::host(address)) {
            tracing::debug!(%address, %allowlisted, "strike ignored for an allowlisted client");
            return Ok(None);
        }
        // Requests that passed the XDP program before the ban landed still strike. Counting them
        // would ban the client again and count one ban several times.
        if self.is_banned(address) {
            return Ok(None);
        }
        if !self.count_strike(address, now) {
            return Ok(None);
        }
        self.ban_for_strikes_at(address, reason, wall_now).map(Some)
    }

    /// Bans `address` for the policy's duration because its strikes reached the policy's count.
    /// `reason` names the kind of strike.
    ///
    /// # Errors
    ///
    /// [`BanError`] when the ban could not be stored or pushed into the kernel.
    pub fn ban_for_strikes_at(
        &self,
        address: IpAddr,
        reason: &str,
        wall_now: SystemTime,
    ) -> Result<BanRecord, BanError> {
        let reason = format!(
            "{} strikes within {} s: {reason}",
            self.policy.strikes,
            self.policy.strike_window.as_secs()
        );
        self.apply_at(
            IpNetwork::host(address),
            Some(self.policy.ban_duration),
            BanOrigin::RateLimit,
            &reason,
            wall_now,
        )
    }

    /// Bans `address` (an address or a range) for `ttl` (`None`: never expires). A ban never
    /// shortens a ban already in force: re-banning extends the expiry or keeps it.
    ///
    /// # Errors
    ///
    /// [`BanError`] when the address or duration is invalid, the address is allowlisted, or the
    /// store or kernel update fails. A kernel failure leaves the ban in the store, so the next
    /// start applies it.
    pub fn apply(
        &self,
        address: impl Into<IpNetwork>,
        ttl: Option<Duration>,
        origin: BanOrigin,
        reason: &str,
    ) -> Result<BanRecord, BanError> {
        self.apply_at(address, ttl, origin, reason, SystemTime::now())
    }

    /// [`BanManager::apply`] at a given time.
    pub fn apply_at(
        &self,
        address: impl Into<IpNetwork>,
        ttl: Option<Duration>,
        origin: BanOrigin,
        reason: &str,
        now: SystemTime,
    ) -> Result<BanRecord, BanError> {
        self.apply_counted_at(address.into(), ttl, origin, reason, now, None)
    }

    /// [`BanManager::apply_at`] that passes the source's earlier ban count to the observer.
    fn apply_counted_at(
        &self,
        address: IpNetwork,
        ttl: Option<Duration>,
        origin: BanOrigin,
        reason: &str,
        now: SystemTime,
        offences: Option<u32>,
    ) -> Result<BanRecord, BanError> {
        self.check_bannable(address)?;
        let now_ms = unix_ms(now);
        let expires_at_ms = ttl.map(|ttl| expiry_ms(now_ms, ttl)).transpose()?;

        let existing = self
            .store
            .get_ban(address)?
            .filter(|existing| !existing.is_expired(now_ms));
        if let Some(existing) = existing.as_ref()
            && outlasts(existing.expires_at_ms, expires_at_ms)
        {
            return Ok(existing.clone());
        }

        let record = BanRecord {
            address,
            expires_at_ms,
            created_at_ms: now_ms,
            origin,
            reason: reason.to_owned(),
        };
        self.store.put_ban(&record)?;
        self.active_mut().insert(address, expires_at_ms);
        self.update_active_gauge();

        self.blocklist
            .ban(address, expires_at_ms.map(system_time))
            .map_err(|source| self.kernel_error(address, source))?;

        self.metrics.record_ban(origin);
        tracing::info!(
            %address,
            origin = origin.label(),
            ttl_seconds = ttl.map(|ttl| ttl.as_secs()),
            reason,
            "ban applied"
        );
        let change = if existing.is_some() {
            BanChange::Extended
        } else {
            BanChange::Applied
        };
        self.notify(change, &record, offences);
        Ok(record)
    }

    /// Lifts the ban of `address`. Returns the removed record, or `None` if it was not banned.
    ///
    /// # Errors
    ///
    /// [`BanError`] when the store or the kernel update fails.
    pub fn remove(&self, address: impl Into<IpNetwork>) -> Result<Option<BanRecord>, BanError> {
        let address = address.into();
        let removed = self.store.remove_ban(address)?;
        self.active_mut().remove(&address);
        self.update_active_gauge();

        self.blocklist
            .unban(address)
            .map_err(|source| self.kernel_error(address, source))?;
        if let Some(record) = &removed {
            tracing::info!(%address, origin = record.origin.label(), "ban removed");
            self.notify(BanChange::Lifted, record, None);
        }
        Ok(removed)
    }

    /// Returns the bans in force, ordered by address text.
    ///
    /// # Errors
    ///
    /// [`BanError::Store`] when the store read fails.
    pub fn list(&self) -> Result<Vec<BanRecord>, BanError> {
        self.list_at(SystemTime::now())
    }

    /// [`BanManager::list`] at a given time.
    pub fn list_at(&self, now: SystemTime) -> Result<Vec<BanRecord>, BanError> {
        let now_ms = unix_ms(now);
        let mut bans = self.store.list_bans()?;
        bans.retain(|ban| !ban.is_expired(now_ms));
        Ok(bans)
    }

    /// Returns whether `address` has a ban in force, of its own or through a range, and is not
    /// allowlisted. Reads memory only.
    pub fn is_banned(&self, address: IpAddr) -> bool {
        let host = IpNetwork::host(address);
        if self.allowlisted_by(host).is_some() {
            return false;
        }

        let active = self.active.read().unwrap_or_else(PoisonError::into_inner);
        active.covers(host.address(), unix_ms(SystemTime::now()))
    }

    /// Checks that `address` may be banned: a valid source, and not allowlisted.
    pub(super) fn check_bannable(&self, address: IpNetwork) -> Result<(), BanError> {
        validate_address(address)?;
        match self.allowlisted_by(address) {
            Some(allowlisted) => Err(BanError::Allowlisted {
                address,
                allowlisted,
                configured: self.configured_allows.contains(&allowlisted),
            }),
            None => Ok(()),
        }
    }

    /// Returns the allowlist entry that holds all of `address`, if any.
    pub fn allowlisted_by(&self, address: IpNetwork) -> Option<IpNetwork> {
        self.allowlist
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|entry| entry.contains(&address))
            .copied()
    }

    /// Adds `address` to the allowlist, in the store and in the kernel. Bans it overlaps stay
    /// stored but no longer drop its packets.
    ///
    /// # Errors
    ///
    /// [`BanError`] when the store or kernel update fails.
    pub fn allow(&self, address: IpNetwork) -> Result<AllowRecord, BanError> {
        let record = AllowRecord {
            address,
            created_at_ms: unix_ms(SystemTime::now()),
        };
        self.store.put_allow(&record)?;
        self.allowlist_mut().insert(address);
        self.blocklist
            .allow(address)
            .map_err(|source| self.kernel_error(address, source))?;
        tracing::info!(%address, "allowlist entry added");
        Ok(record)
    }

    /// Removes `address` from the allowlist. Returns whether it was there.
    ///
    /// # Errors
    ///
    /// [`BanError::ConfiguredAllow`] for an entry of the config file, or [`BanError`] when the
    /// store or kernel update fails.
    pub fn disallow(&self, address: IpNetwork) -> Result<bool, BanError> {
        if self.configured_allows.contains(&address) {
            return Err(BanError::ConfiguredAllow { address });
        }
        let removed = self.store.remove_allow(address)?;
        self.allowlist_mut().remove(&address);
        self.blocklist
            .disallow(address)
            .map_err(|source| self.kernel_error(address, source))?;
        if removed {
            tracing::info!(%address, "allowlist entry removed");
        }
        Ok(removed)
    }

    /// Returns every allowlist entry, ordered by address.
    pub fn allowlist(&self) -> Vec<AllowEntry> {
        self.allowlist
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|&address| AllowEntry {
                address,
                configured: self.configured_allows.contains(&address),
            })
            .collect()
    }

    /// Removes expired bans from the store and the kernel, and drops strikes older than the
    /// strike window. Returns the number of bans removed.
    ///
    /// # Errors
    ///
    /// [`BanError`] on the first store or kernel failure; the next sweep retries the rest.
    pub fn sweep(&self) -> Result<usize, BanError> {
        self.sweep_at(Instant::now(), SystemTime::now())
    }

    /// [`BanManager::sweep`] at given monotonic and wall-clock times.
    pub fn sweep_at(&self, now: Instant, wall_now: SystemTime) -> Result<usize, BanError> {
        self.forget_stale_strikes(now);

        let now_ms = unix_ms(wall_now);
        let mut removed = 0;
        for record in self.store.list_bans()? {
            if !record.is_expired(now_ms) {
                continue;
            }
            let address = record.address;
            self.store.remove_ban(record.address)?;
            self.active_mut().remove(&address);
            self.blocklist
                .unban(address)
                .map_err(|source| self.kernel_error(address, source))?;
            tracing::info!(%address, origin = record.origin.label(), "ban expired");
            self.notify(BanChange::Expired, &record, None);
            removed += 1;
        }

        self.update_active_gauge();
        Ok(removed)
    }

    /// Number of clients with strikes in memory.
    pub fn clients_with_strikes(&self) -> usize {
        self.strikes_lock().len()
    }

    /// Adds a strike against `address` at `now` and returns whether the strikes within the
    /// window reached the policy's count. If so, the strikes are cleared and the caller applies
    /// the ban with [`BanManager::ban_for_strikes_at`]. Only memory is touched.
    pub fn count_strike(&self, address: IpAddr, now: Instant) -> bool {
        let address = address.to_canonical();
        let mut strikes = self.strikes_lock();
        let times = strikes.entry(address).or_default();
        times.push_back(now);
        while times
            .front()
            .is_some_and(|&first| now.saturating_duration_since(first) >= self.policy.strike_window)
        {
            times.pop_front();
        }

        let reached = times.len() >= self.policy.strikes as usize;
        if reached {
            strikes.remove(&address);
        }
        reached
    }

    fn forget_stale_strikes(&self, now: Instant) {
        let window = self.policy.strike_window;
        self.strikes_lock().retain(|_, times| {
            times
                .back()
                .is_some_and(|&last| now.saturating_duration_since(last) < window)
        });
    }

    /// Wraps the failure of a write of many bans, counting a full map in the metrics.
    fn kernel_bans_error(&self, source: KernelError) -> BanError {
        let cause = match &source {
            KernelError::BansStopped { source, .. } => source.as_ref(),
            other => other,
        };
        if let KernelError::MapFull { map, .. } = cause {
            self.metrics.record_map_full(map);
        }
        BanError::KernelBans {
            source: Box::new(source),
        }
    }

    /// Wraps a kernel failure for `address`, counting it when a map was full.
    fn kernel_error(&self, address: IpNetwork, source: KernelError) -> BanError {
        if let KernelError::MapFull { map, .. } = source {
            self.metrics.record_map_full(map);
        }
        BanError::Kernel {
            address,
            source: Box::new(source),
        }
    }

    fn update_active_gauge(&self) {
        let count = self
            .active
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        self.metrics.set_active_bans(count);
    }

    fn active_mut(&self) -> std::sync::RwLockWriteGuard<'_, ActiveBans> {
        // Every change under the lock is one insert or remove, so a poisoned index is consistent.
        self.active.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn allowlist_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeSet<IpNetwork>> {
        // As above: every change is one set operation.
        self.allowlist
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn strikes_lock(&self) -> MutexGuard<'_, HashMap<IpAddr, VecDeque<Instant>>> {
        self.strikes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs [`BanManager::sweep`] every `interval` until shutdown, logging failures.
pub async fn run_sweeper(
    manager: Arc<BanManager>,
    interval: Duration,
    mut shutdown: crate::shutdown::ShutdownListener,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.wait() => break,
        }
        let manager = Arc::clone(&manager);
        match tokio::task::spawn_blocking(move || manager.sweep()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(error = %ErrorChain(&error), "ban sweep failed"),
            Err(error) => tracing::error!(error = %ErrorChain(&error), "ban sweep task failed"),
        }
    }
    tracing::debug!("ban sweeper stopped");
}

/// Returns whether a ban expiring at `existing` lasts at least as long as one expiring at
/// `new`.
fn outlasts(existing: Option<u64>, new: Option<u64>) -> bool {
    match (existing, new) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(existing), Some(new)) => existing >= new,
    }
}

/// Checks that `address` can be banned: a possible packet source, and not a /0 range.
pub fn validate_address(address: IpNetwork) -> Result<(), BanError> {
    let first = address.address();
    let never_a_source = address.is_host() && first.is_unspecified();
    if never_a_source || first.is_multicast() || address.prefix_len() == 0 {
        return Err(BanError::InvalidAddress { address });
    }
    Ok(())
}

fn expiry_ms(now_ms: u64, ttl: Duration) -> Result<u64, BanError> {
    let seconds = ttl.as_secs();
    if ttl.is_zero() || seconds > MAX_DURATION_SECONDS {
        return Err(BanError::InvalidDuration { seconds });
    }
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    Ok(now_ms.saturating_add(ttl_ms))
}

/// Milliseconds since the Unix epoch; 0 for a clock set before 1970.
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Converts a Unix timestamp in milliseconds to a [`SystemTime`].
pub fn system_time(unix_ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(unix_ms)
}

#[cfg(test)]
mod tests;
