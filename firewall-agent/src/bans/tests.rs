use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::memory::MemoryBlocklist;
use super::*;
use crate::network::IpNetwork;
use crate::store::{BanOrigin, Store};
use crate::telemetry::Metrics;

const CLIENT: &str = "192.0.2.7";

struct Fixture {
    _dir: tempfile::TempDir,
    store_path: std::path::PathBuf,
    blocklist: Arc<MemoryBlocklist>,
    metrics: Arc<Metrics>,
    manager: BanManager,
}

fn policy() -> BanPolicy {
    BanPolicy {
        strikes: 3,
        strike_window: Duration::from_secs(10),
        ban_duration: Duration::from_secs(60),
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store_path = dir.path().join("state.redb");
    let blocklist = Arc::new(MemoryBlocklist::new());
    let metrics = Arc::new(Metrics::new(blocklist.clone()));
    let store = Store::open(&store_path).expect("store opens");
    let manager = BanManager::new(store, blocklist.clone(), policy(), metrics.clone());
    Fixture {
        _dir: dir,
        store_path,
        blocklist,
        metrics,
        manager,
    }
}

fn addr(text: &str) -> IpAddr {
    text.parse().expect("valid address")
}

fn net(text: &str) -> IpNetwork {
    text.parse().expect("valid address or range")
}

#[test]
fn strikes_below_threshold_do_not_ban() {
    let f = fixture();
    let now = Instant::now();
    let wall = SystemTime::now();

    for _ in 0..2 {
        let ban = f
            .manager
            .record_strike_at(addr(CLIENT), "rate_limited", now, wall)
            .expect("strike recorded");
        assert_eq!(ban, None);
    }

    assert_eq!(f.blocklist.ban_of(addr(CLIENT)), None);
    assert!(f.manager.list().expect("list").is_empty());
}

#[test]
fn threshold_strikes_ban_in_store_and_kernel() {
    let f = fixture();
    let now = Instant::now();
    let wall = SystemTime::now();

    let mut applied = None;
    for _ in 0..3 {
        applied = f
            .manager
            .record_strike_at(addr(CLIENT), "rate_limited", now, wall)
            .expect("strike recorded");
    }

    let ban = applied.expect("third strike bans");
    assert_eq!(ban.origin, BanOrigin::RateLimit);
    assert_eq!(ban.expires_at_ms, Some(unix_ms(wall) + 60_000));
    assert!(ban.reason.contains("rate_limited"), "{}", ban.reason);
    assert_eq!(
        f.blocklist.ban_of(addr(CLIENT)),
        Some(Some(system_time(unix_ms(wall) + 60_000)))
    );
    assert_eq!(f.manager.list_at(wall).expect("list"), vec![ban]);
    assert!(f.manager.is_banned(addr(CLIENT)));
    assert_eq!(
        f.manager.clients_with_strikes(),
        0,
        "strikes are cleared by the ban"
    );
}

#[test]
fn strikes_of_banned_client_apply_no_second_ban() {
    let f = fixture();
    let now = Instant::now();
    let wall = SystemTime::now();

    // Requests already past the XDP program when the ban lands keep striking: three more
    // strikes must neither re-apply the ban nor count it twice.
    let applied: Vec<_> = (0..6)
        .map(|_| {
            f.manager
                .record_strike_at(addr(CLIENT), "rate_limited", now, wall)
                .expect("strike recorded")
        })
        .collect();

    assert_eq!(applied.iter().filter(|ban| ban.is_some()).count(), 1);
    let text = f.metrics.encode().expect("metrics encode");
    assert!(
        text.contains("firewall_bans_applied_total{origin=\"rate_limit\"} 1"),
        "{text}"
    );
    assert_eq!(f.manager.clients_with_strikes(), 0);
}

#[test]
fn strikes_outside_window_do_not_count() {
    let f = fixture();
    let start = Instant::now();
    let wall = SystemTime::now();

    f.manager
        .record_strike_at(addr(CLIENT), "r", start, wall)
        .expect("strike");
    f.manager
        .record_strike_at(addr(CLIENT), "r", start + Duration::from_secs(1), wall)
        .expect("strike");
    // The first strike is 10 s old here, so it no longer counts: two strikes, no ban.
    let ban = f
        .manager
        .record_strike_at(addr(CLIENT), "r", start + Duration::from_secs(10), wall)
        .expect("strike");

    assert_eq!(ban, None);
    assert_eq!(f.blocklist.ban_of(addr(CLIENT)), None);
}

#[test]
fn mapped_address_is_banned_as_ipv4() {
    let f = fixture();
    let now = Instant::now();
    let wall = SystemTime::now();

    for _ in 0..3 {
        f.manager
            .record_strike_at(addr("::ffff:192.0.2.7"), "r", now, wall)
            .expect("strike");
    }

    assert_eq!(f.blocklist.banned_addresses(), vec![net(CLIENT)]);
    let stored = f.manager.list_at(wall).expect("list");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].address, net(CLIENT));
    assert!(f.manager.is_banned(addr("::ffff:192.0.2.7")));
}

#[test]
fn manual_ban_add_and_remove() {
    let f = fixture();

    let ban = f
        .manager
        .apply(addr("2001:db8::5"), None, BanOrigin::Manual, "operator")
        .expect("ban applied");
    assert_eq!(ban.expires_at_ms, None);
    assert_eq!(f.blocklist.ban_of(addr("2001:db8::5")), Some(None));

    let removed = f.manager.remove(addr("2001:db8::5")).expect("ban removed");
    assert_eq!(removed, Some(ban));
    assert_eq!(f.blocklist.ban_of(addr("2001:db8::5")), None);
    assert!(!f.manager.is_banned(addr("2001:db8::5")));
    assert_eq!(f.manager.remove(addr("2001:db8::5")).expect("no ban"), None);
}

#[test]
fn automatic_ban_does_not_shorten_manual_ban() {
    let f = fixture();
    let now = Instant::now();
    let wall = SystemTime::now();
    f.manager
        .apply_at(addr(CLIENT), None, BanOrigin::Manual, "operator", wall)
        .expect("manual ban");

    for _ in 0..3 {
        f.manager
            .record_strike_at(addr(CLIENT), "r", now, wall)
            .expect("strike");
    }

    let bans = f.manager.list_at(wall).expect("list");
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0].origin, BanOrigin::Manual);
    assert_eq!(bans[0].expires_at_ms, None);
    assert_eq!(f.blocklist.ban_of(addr(CLIENT)), Some(None));
}

#[test]
fn invalid_ban_inputs_are_rejected() {
    let f = fixture();

    let unspecified = f
        .manager
        .apply(addr("0.0.0.0"), None, BanOrigin::Manual, "x");
    assert!(matches!(unspecified, Err(BanError::InvalidAddress { .. })));

    let everything = f
        .manager
        .apply(net("0.0.0.0/0"), None, BanOrigin::Manual, "x");
    assert!(matches!(everything, Err(BanError::InvalidAddress { .. })));

    let multicast = f
        .manager
        .apply(net("ff02::/16"), None, BanOrigin::Manual, "x");
    assert!(matches!(multicast, Err(BanError::InvalidAddress { .. })));

    let zero = f
        .manager
        .apply(addr(CLIENT), Some(Duration::ZERO), BanOrigin::Manual, "x");
    assert!(matches!(
        zero,
        Err(BanError::InvalidDuration { seconds: 0 })
    ));

    assert!(f.blocklist.banned_addresses().is_empty());
}

#[test]
fn sweep_removes_expired_bans_only() {
    let f = fixture();
    let wall = SystemTime::now();
    f.manager
        .apply_at(
            addr(CLIENT),
            Some(Duration::from_secs(5)),
            BanOrigin::Manual,
            "short",
            wall,
        )
        .expect("short ban");
    f.manager
        .apply_at(
            addr("198.51.100.9"),
            Some(Duration::from_secs(50)),
            BanOrigin::Manual,
            "long",
            wall,
        )
        .expect("long ban");

    let removed = f
        .manager
        .sweep_at(Instant::now(), wall + Duration::from_secs(6))
        .expect("sweep");

    assert_eq!(removed, 1);
    assert_eq!(f.blocklist.banned_addresses(), vec![net("198.51.100.9")]);
    let stored = f.manager.list_at(wall).expect("list");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].address, net("198.51.100.9"));
}

#[test]
fn expired_ban_is_not_listed_before_sweep() {
    let f = fixture();
    let wall = SystemTime::now();
    f.manager
        .apply_at(
            addr(CLIENT),
            Some(Duration::from_secs(5)),
            BanOrigin::Manual,
            "x",
            wall,
        )
        .expect("ban");

    assert_eq!(
        f.manager
            .list_at(wall + Duration::from_secs(5))
            .expect("list")
            .len(),
        0
    );
    assert_eq!(
        f.manager
            .list_at(wall + Duration::from_secs(4))
            .expect("list")
            .len(),
        1
    );
}

#[test]
fn sweep_forgets_stale_strikes() {
    let f = fixture();
    let start = Instant::now();
    f.manager
        .record_strike_at(addr(CLIENT), "r", start, SystemTime::now())
        .expect("strike");
    assert_eq!(f.manager.clients_with_strikes(), 1);

    f.manager
        .sweep_at(start + Duration::from_secs(11), SystemTime::now())
        .expect("sweep");

    assert_eq!(f.manager.clients_with_strikes(), 0);
}

#[test]
fn restore_pushes_unexpired_and_drops_expired() {
    let f = fixture();
    let wall = SystemTime::now();
    f.manager
        .apply_at(
            addr(CLIENT),
            Some(Duration::from_secs(5)),
            BanOrigin::Manual,
            "short",
            wall,
        )
        .expect("short ban");
    f.manager
        .apply_at(
            addr("2001:db8::9"),
            None,
            BanOrigin::Manual,
            "forever",
            wall,
        )
        .expect("permanent ban");
    let Fixture {
        _dir,
        store_path,
        manager,
        metrics,
        ..
    } = f;
    drop(manager);

    // A fresh manager over the same file and an empty kernel, as after a restart.
    let kernel = Arc::new(MemoryBlocklist::new());
    let store = Store::open(&store_path).expect("store reopens");
    let restarted = BanManager::new(store, kernel.clone(), policy(), metrics);
    let summary = restarted
        .restore_at(wall + Duration::from_secs(10))
        .expect("restore");

    assert_eq!(
        summary,
        RestoreSummary {
            restored: 1,
            expired: 1
        }
    );
    assert_eq!(kernel.banned_addresses(), vec![net("2001:db8::9")]);
    assert_eq!(restarted.list_at(wall).expect("list").len(), 1);
    assert!(restarted.is_banned(addr("2001:db8::9")));
}

#[test]
fn metrics_count_bans_by_origin() {
    let f = fixture();
    f.manager
        .apply(
            addr(CLIENT),
            Some(Duration::from_secs(60)),
            BanOrigin::Manual,
            "x",
        )
        .expect("ban");

    let text = f.metrics.encode().expect("metrics encode");

    assert!(
        text.contains("firewall_bans_applied_total{origin=\"manual\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("firewall_bans_applied_total{origin=\"rate_limit\"} 0"),
        "{text}"
    );
    assert!(text.contains("firewall_bans_active 1"), "{text}");
    // Alerts on a full map need a series before the first failure.
    assert!(
        text.contains("firewall_kernel_map_full_total{map=\"BANS_V4\"} 0"),
        "{text}"
    );
}

#[test]
fn range_ban_covers_its_addresses() {
    let f = fixture();
    let record = f
        .manager
        .apply(net("198.51.100.77/24"), None, BanOrigin::Manual, "subnet")
        .expect("range ban");

    assert_eq!(record.address.to_string(), "198.51.100.0/24");
    assert_eq!(f.blocklist.banned_addresses(), vec![net("198.51.100.0/24")]);
    assert!(f.manager.is_banned(addr("198.51.100.200")));
    assert!(f.manager.is_banned(addr("::ffff:198.51.100.1")));
    assert!(!f.manager.is_banned(addr("198.51.101.1")));

    f.manager
        .remove(net("198.51.100.0/24"))
        .expect("range removed");
    assert!(!f.manager.is_banned(addr("198.51.100.200")));
}

#[test]
fn rebanning_never_shortens_a_ban() {
    let f = fixture();
    let wall = SystemTime::now();
    let long = f
        .manager
        .apply_at(
            addr(CLIENT),
            Some(Duration::from_secs(600)),
            BanOrigin::Manual,
            "long",
            wall,
        )
        .expect("long ban");

    let again = f
        .manager
        .apply_at(
            addr(CLIENT),
            Some(Duration::from_secs(60)),
            BanOrigin::Manual,
            "short",
            wall,
        )
        .expect("shorter re-ban");
    assert_eq!(again.expires_at_ms, long.expires_at_ms);

    let extended = f
        .manager
        .apply_at(
            addr(CLIENT),
            Some(Duration::from_secs(6000)),
            BanOrigin::RateLimit,
            "longer",
            wall,
        )
        .expect("longer re-ban");
    assert!(extended.expires_at_ms > long.expires_at_ms);
    assert_eq!(
        f.blocklist.ban_of(addr(CLIENT)),
        Some(extended.expires_at_ms.map(system_time))
    );
}

#[test]
fn allowlisted_address_is_not_banned() {
    let f = fixture();
    let manager = f.manager.with_allowlist([net("198.51.100.0/24")]);
    manager.restore().expect("restore writes the allowlist");
    assert_eq!(f.blocklist.allowed_networks(), vec![net("198.51.100.0/24")]);

    let error = manager
        .apply(addr("198.51.100.9"), None, BanOrigin::Manual, "x")
        .expect_err("an allowlisted address is not banned");
    assert!(
        matches!(error, BanError::Allowlisted { allowlisted, .. } if allowlisted == net("198.51.100.0/24")),
        "{error:?}"
    );
    assert!(error.to_string().contains("198.51.100.0/24"), "{error}");
    // A configured entry cannot be removed at run time, so the message points at the config.
    assert!(error.to_string().contains("[bans] config section"), "{error}");
    assert!(!error.to_string().contains("fwctl allow remove"), "{error}");
    assert!(f.blocklist.banned_addresses().is_empty());

    let now = Instant::now();
    for _ in 0..5 {
        let ban = manager
            .record_strike_at(addr("198.51.100.9"), "r", now, SystemTime::now())
            .expect("strike ignored");
        assert!(ban.is_none());
    }
    assert!(f.blocklist.banned_addresses().is_empty());
}

#[test]
fn allowlist_added_at_run_time_survives_restart() {
    let f = fixture();
    f.manager
        .allow(net("2001:db8::/48"))
        .expect("allowlist entry added");
    assert!(f.manager.allowlisted_by(net("2001:db8::1")).is_some());
    let error = f
        .manager
        .apply(addr("2001:db8::1"), None, BanOrigin::Manual, "x")
        .expect_err("allowlisted");
    assert!(matches!(error, BanError::Allowlisted { .. }), "{error:?}");
    assert!(error.to_string().contains("fwctl allow remove"), "{error}");

    let Fixture {
        _dir,
        store_path,
        manager,
        metrics,
        ..
    } = f;
    drop(manager);
    let kernel = Arc::new(MemoryBlocklist::new());
    let store = Store::open(&store_path).expect("store reopens");
    let restarted = BanManager::new(store, kernel.clone(), policy(), metrics)
        .with_allowlist([net("127.0.0.0/8")]);
    restarted.restore().expect("restore");

    assert_eq!(
        kernel.allowed_networks(),
        vec![net("127.0.0.0/8"), net("2001:db8::/48")]
    );
    let configured = restarted
        .disallow(net("127.0.0.0/8"))
        .expect_err("a configured entry stays");
    assert!(matches!(configured, BanError::ConfiguredAllow { .. }));
    assert!(restarted.disallow(net("2001:db8::/48")).expect("removed"));
    assert_eq!(kernel.allowed_networks(), vec![net("127.0.0.0/8")]);
}

#[test]
fn full_kernel_map_is_reported_and_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let blocklist = Arc::new(MemoryBlocklist::with_max_bans(1));
    let metrics = Arc::new(Metrics::new(blocklist.clone()));
    let store = Store::open(&dir.path().join("state.redb")).expect("store opens");
    let manager = BanManager::new(store, blocklist.clone(), policy(), metrics.clone());
    manager
        .apply(addr(CLIENT), None, BanOrigin::Manual, "first")
        .expect("first ban fits");

    let error = manager
        .apply(addr("198.51.100.9"), None, BanOrigin::Manual, "second")
        .expect_err("a full map is an error");

    let BanError::Kernel { source, .. } = &error else {
        panic!("expected a kernel error, got {error:?}");
    };
    assert!(matches!(
        **source,
        KernelError::MapFull { max_entries: 1, .. }
    ));
    assert_eq!(metrics.map_full("memory"), 1);
    assert_eq!(blocklist.banned_addresses(), vec![net(CLIENT)]);
}

#[test]
fn restore_stores_kernel_only_bans() {
    let f = fixture();
    let wall = SystemTime::now();
    let kept_until = wall + Duration::from_secs(600);
    f.blocklist
        .ban(net("198.51.100.0/24"), Some(kept_until))
        .expect("kernel-only range ban");
    f.blocklist
        .ban(net("2001:db8::9"), None)
        .expect("kernel-only permanent ban");
    f.blocklist
        .ban(net("192.0.2.44"), Some(wall - Duration::from_secs(1)))
        .expect("kernel-only expired ban");

    f.manager.restore_at(wall).expect("restore");

    let bans = f.manager.list_at(wall).expect("list");
    assert_eq!(bans.len(), 2, "{bans:?}");
    let range = bans
        .iter()
        .find(|ban| ban.address == net("198.51.100.0/24"))
        .expect("range ban stored");
    assert_eq!(range.origin, BanOrigin::Manual);
    assert_eq!(range.expires_at_ms, Some(unix_ms(kept_until)));
    let permanent = bans
        .iter()
        .find(|ban| ban.address == net("2001:db8::9"))
        .expect("permanent ban stored");
    assert_eq!(permanent.expires_at_ms, None);
    assert!(f.manager.is_banned(addr("198.51.100.7")));
    assert_eq!(
        f.blocklist.ban_of(net("192.0.2.44")),
        None,
        "expired ban left in the kernel"
    );
}

/// Records the changes a [`BanObserver`] hears.
#[derive(Default)]
struct RecordedChanges(Mutex<Vec<(BanChange, IpNetwork)>>);

impl BanObserver for RecordedChanges {
    fn ban_changed(&self, change: BanChange, record: &crate::store::BanRecord, _: Option<u32>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((change, record.address));
    }
}

#[test]
fn observer_hears_every_ban_change() {
    let f = fixture();
    let changes = Arc::new(RecordedChanges::default());
    assert!(f.manager.set_observer(changes.clone()));
    let wall = SystemTime::now();
    let client = net(CLIENT);
    let range = net("198.51.100.0/24");

    f.manager
        .apply_at(client, Some(Duration::from_secs(60)), BanOrigin::Manual, "test", wall)
        .expect("ban");
    f.manager
        .apply_at(client, Some(Duration::from_secs(30)), BanOrigin::Manual, "test", wall)
        .expect("shorter ban keeps the first");
    f.manager
        .apply_at(client, Some(Duration::from_secs(120)), BanOrigin::Manual, "test", wall)
        .expect("longer ban extends");
    f.manager.remove(client).expect("lift");
    f.manager
        .apply_at(range, Some(Duration::from_secs(1)), BanOrigin::Manual, "test", wall)
        .expect("short range ban");
    f.manager
        .sweep_at(Instant::now(), wall + Duration::from_secs(2))
        .expect("sweep");

    let recorded = changes.0.lock().unwrap_or_else(PoisonError::into_inner).clone();
    assert_eq!(
        recorded,
        vec![
            (BanChange::Applied, client),
            (BanChange::Extended, client),
            (BanChange::Lifted, client),
            (BanChange::Applied, range),
            (BanChange::Expired, range),
        ]
    );
}

#[test]
fn escalated_bans_grow_and_persist() {
    let f = fixture();
    let policy = EscalationPolicy {
        base: Duration::from_secs(60),
        factor: 3.0,
        max: Duration::from_secs(600),
        jitter_ratio: 0.0,
        history: Duration::from_secs(3600),
    };
    let wall = SystemTime::now();
    let ttl = |ban: &EscalatedBan| {
        ban.record.expires_at_ms.expect("expires") - ban.record.created_at_ms
    };

    let first = f
        .manager
        .apply_escalated_at(addr(CLIENT), BanOrigin::ThreatScore, "test", &policy, 0.0, wall)
        .expect("first ban")
        .expect("not allowlisted");
    f.manager.remove(net(CLIENT)).expect("lift");
    let second = f
        .manager
        .apply_escalated_at(addr(CLIENT), BanOrigin::ThreatScore, "test", &policy, 0.0, wall)
        .expect("second ban")
        .expect("not allowlisted");
    f.manager.remove(net(CLIENT)).expect("lift");
    let after_history = wall + Duration::from_secs(7200);
    let forgiven = f
        .manager
        .apply_escalated_at(addr(CLIENT), BanOrigin::ThreatScore, "test", &policy, 0.0, after_history)
        .expect("third ban")
        .expect("not allowlisted");

    assert_eq!((first.offences, ttl(&first)), (0, 60_000));
    assert_eq!((second.offences, ttl(&second)), (1, 180_000));
    assert_eq!(forgiven.offences, 0, "offences older than the history window do not count");
    assert!(second.record.reason.contains("offence 2"), "{}", second.record.reason);
}

#[test]
fn import_applies_valid_and_reports_rejected_by_index() {
    let f = fixture();
    f.manager.allow(net("198.51.100.0/24")).expect("allowlisted");
    let wall = SystemTime::now();
    let addresses = [
        net("192.0.2.7"),
        net("198.51.100.9"),
        net("0.0.0.0"),
        net("2001:db8::/48"),
        net("192.0.2.7"),
    ];

    let summary = f
        .manager
        .apply_all_at(
            &addresses,
            Some(Duration::from_secs(600)),
            BanOrigin::Manual,
            "imported",
            wall,
        )
        .expect("import applied");

    assert_eq!(summary.applied, 3);
    let rejected: Vec<usize> = summary.rejected.iter().map(|ban| ban.index).collect();
    assert_eq!(rejected, [1, 2]);
    assert!(matches!(
        summary.rejected[0].error,
        BanError::Allowlisted { .. }
    ));
    assert!(matches!(
        summary.rejected[1].error,
        BanError::InvalidAddress { .. }
    ));
    let stored: Vec<IpNetwork> = f
        .manager
        .list_at(wall)
        .expect("list")
        .iter()
        .map(|ban| ban.address)
        .collect();
    assert_eq!(stored, [net("192.0.2.7"), net("2001:db8::/48")]);
    assert!(f.blocklist.ban_of(net("192.0.2.7")).is_some());
    assert!(f.blocklist.ban_of(net("2001:db8::/48")).is_some());
}

#[test]
fn import_never_shortens_a_ban_in_force() {
    let f = fixture();
    let wall = SystemTime::now();
    let long = f
        .manager
        .apply_at(net(CLIENT), None, BanOrigin::Manual, "permanent", wall)
        .expect("ban applied");

    let summary = f
        .manager
        .apply_all_at(
            &[net(CLIENT)],
            Some(Duration::from_secs(60)),
            BanOrigin::Manual,
            "imported",
            wall,
        )
        .expect("import applied");

    assert_eq!(summary.applied, 1);
    let stored = f.manager.list_at(wall).expect("list");
    assert_eq!(stored, [long]);
    assert_eq!(f.blocklist.ban_of(net(CLIENT)), Some(None));
}

#[test]
fn import_into_full_kernel_map_reports_applied_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    let blocklist = Arc::new(MemoryBlocklist::with_max_bans(2));
    let metrics = Arc::new(Metrics::new(blocklist.clone()));
    let store = Store::open(&dir.path().join("state.redb")).expect("store opens");
    let manager = BanManager::new(store, blocklist.clone(), policy(), metrics.clone());
    let addresses = [net("192.0.2.1"), net("192.0.2.2"), net("192.0.2.3")];

    let error = manager
        .apply_all(&addresses, None, BanOrigin::Manual, "imported")
        .expect_err("the third ban does not fit");

    let BanError::KernelBans { ref source } = error else {
        panic!("expected KernelBans, got {error:?}");
    };
    assert!(source.is_map_full(), "{source:?}");
    assert!(
        matches!(
            **source,
            KernelError::BansStopped {
                applied: 2,
                total: 3,
                ..
            }
        ),
        "{source:?}"
    );
    assert_eq!(metrics.map_full("memory"), 1);
    // The store keeps every ban, so the next start retries the ones the kernel lacks.
    assert_eq!(manager.list().expect("list").len(), 3);
}
