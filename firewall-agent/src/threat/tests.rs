use std::time::Duration;

use super::*;
use crate::audit::{AuditConfig, AuditRecord};
use crate::bans::memory::MemoryBlocklist;
use crate::bans::{BanChange, BanObserver, BanPolicy};
use crate::shutdown::Shutdown;
use crate::store::{BanRecord, Store};
use crate::telemetry::Metrics;

const ATTACKER: &str = "203.0.113.66";

struct Fixture {
    _dir: tempfile::TempDir,
    blocklist: Arc<MemoryBlocklist>,
    bans: Arc<BanManager>,
    metrics: Arc<Metrics>,
}

fn fixture(allowlist: Vec<IpNetwork>) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let blocklist = Arc::new(MemoryBlocklist::new());
    let metrics = Arc::new(Metrics::new(blocklist.clone()));
    let store = Store::open(&dir.path().join("state.redb")).expect("store opens");
    let policy = BanPolicy {
        strikes: 5,
        strike_window: Duration::from_secs(60),
        ban_duration: Duration::from_secs(60),
    };
    let bans = Arc::new(
        BanManager::new(store, blocklist.clone(), policy, metrics.clone())
            .with_allowlist(allowlist),
    );
    Fixture {
        _dir: dir,
        blocklist,
        bans,
        metrics,
    }
}

fn addr(text: &str) -> IpAddr {
    text.parse().expect("valid address")
}

fn blocked() -> Observation<'static> {
    Observation::Inspected {
        score: 5.0,
        blocked: true,
    }
}

/// Records ban changes, so tests can wait for the worker.
#[derive(Default)]
struct Changes(Mutex<Vec<(BanChange, BanRecord, Option<u32>)>>);

impl BanObserver for Changes {
    fn ban_changed(&self, change: BanChange, record: &BanRecord, offences: Option<u32>) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push((
            change,
            record.clone(),
            offences,
        ));
    }
}

impl Changes {
    async fn wait_for(&self, count: usize) -> Vec<(BanChange, BanRecord, Option<u32>)> {
        for _ in 0..500 {
            let changes = self
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if changes.len() >= count {
                return changes;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("fewer than {count} ban changes within 5 s");
    }
}

/// Observes at one fixed time, so the score does not decay between observations.
fn observe(engine: &ThreatEngine, observation: Observation<'_>) -> Option<Decision> {
    static START: std::sync::OnceLock<(Instant, SystemTime)> = std::sync::OnceLock::new();
    let (now, wall_now) = *START.get_or_init(|| (Instant::now(), SystemTime::now()));
    engine.observe_at(addr(ATTACKER), observation, now, wall_now)
}

fn engine(fixture: &Fixture, config: &SourcesConfig) -> (Arc<ThreatEngine>, BanWorker) {
    ThreatEngine::new(
        config,
        Arc::clone(&fixture.bans),
        AuditLog::disabled(),
        Arc::clone(fixture.metrics.threat()),
    )
}

#[tokio::test]
async fn blocked_requests_ban_source() {
    let fixture = fixture(Vec::new());
    let changes = Arc::new(Changes::default());
    fixture.bans.set_observer(changes.clone());
    let (engine, worker) = engine(&fixture, &SourcesConfig::default());
    let shutdown = Shutdown::new();
    let task = tokio::spawn(worker.run(shutdown.listener()));

    let decisions: Vec<Option<Decision>> = (0..4).map(|_| observe(&engine, blocked())).collect();
    let recorded = changes.wait_for(1).await;

    assert!(decisions[..3].iter().all(Option::is_none));
    assert!(
        matches!(decisions[3], Some(Decision::Ban(_))),
        "{decisions:?}"
    );
    let (change, record, offences) = &recorded[0];
    assert_eq!(*change, BanChange::Applied);
    assert_eq!(record.origin, BanOrigin::ThreatScore);
    assert_eq!(*offences, Some(0));
    assert!(
        fixture.blocklist.ban_of(addr(ATTACKER)).is_some(),
        "the kernel map has the ban"
    );
    assert!(fixture.bans.is_banned(addr(ATTACKER)));
    assert!(
        observe(&engine, blocked()).is_none(),
        "a banned source is not counted"
    );
    shutdown.trigger();
    task.await.expect("worker stops");
}

#[tokio::test]
async fn repeat_offender_gets_longer_ban() {
    let fixture = fixture(Vec::new());
    let changes = Arc::new(Changes::default());
    fixture.bans.set_observer(changes.clone());
    let config = SourcesConfig {
        ban_jitter_ratio: 0.0,
        ..SourcesConfig::default()
    };
    let (engine, worker) = engine(&fixture, &config);
    let shutdown = Shutdown::new();
    let task = tokio::spawn(worker.run(shutdown.listener()));

    for _ in 0..4 {
        observe(&engine, blocked());
    }
    changes.wait_for(1).await;
    while engine.pending_lock().contains(&addr(ATTACKER)) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    fixture
        .bans
        .remove(addr(ATTACKER))
        .expect("lift the first ban");
    for _ in 0..4 {
        observe(&engine, blocked());
    }
    let recorded = changes.wait_for(3).await;

    let applied: Vec<&BanRecord> = recorded
        .iter()
        .filter(|(change, _, _)| *change == BanChange::Applied)
        .map(|(_, record, _)| record)
        .collect();
    let ttl = |record: &BanRecord| {
        record.expires_at_ms.expect("threat bans expire") - record.created_at_ms
    };
    assert_eq!(recorded[1].0, BanChange::Lifted);
    assert_eq!(applied.len(), 2);
    assert_eq!(ttl(applied[0]), 600_000);
    assert_eq!(ttl(applied[1]), 1_200_000);
    assert_eq!(recorded[2].2, Some(1));
    shutdown.trigger();
    task.await.expect("worker stops");
}

#[tokio::test]
async fn detection_only_bans_nothing() {
    let fixture = fixture(Vec::new());
    let config = SourcesConfig {
        mode: SourceMode::DetectionOnly,
        ..SourcesConfig::default()
    };
    let (engine, _worker) = engine(&fixture, &config);

    let decisions: Vec<Option<Decision>> = (0..4).map(|_| observe(&engine, blocked())).collect();

    assert!(
        matches!(decisions[3], Some(Decision::Flag { .. })),
        "{decisions:?}"
    );
    assert!(fixture.blocklist.banned_addresses().is_empty());
    assert!(!fixture.bans.is_banned(addr(ATTACKER)));
}

#[tokio::test]
async fn allowlisted_source_is_never_banned() {
    let allowed: IpNetwork = "203.0.113.0/24".parse().expect("valid range");
    let fixture = fixture(vec![allowed]);
    let (engine, _worker) = engine(&fixture, &SourcesConfig::default());

    let decisions: Vec<Option<Decision>> = (0..4).map(|_| observe(&engine, blocked())).collect();
    let direct = fixture
        .bans
        .apply_escalated(
            addr(ATTACKER),
            BanOrigin::ThreatScore,
            "test",
            &SourcesConfig::default().escalation(),
        )
        .expect("an allowlisted source is no error");

    assert!(
        matches!(decisions[3], Some(Decision::Flag { .. })),
        "{decisions:?}"
    );
    assert_eq!(direct, None);
    assert!(fixture.blocklist.banned_addresses().is_empty());
}

#[tokio::test]
async fn auth_burst_is_audited() {
    let fixture = fixture(Vec::new());
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("audit.jsonl");
    let audit_config = AuditConfig {
        path: Some(path.clone()),
        ..AuditConfig::default()
    };
    let (audit, writer) =
        AuditLog::start(&audit_config, fixture.metrics.threat().audit()).expect("audit starts");
    let config = SourcesConfig {
        mode: SourceMode::DetectionOnly,
        ..SourcesConfig::default()
    };
    let (engine, worker) = ThreatEngine::new(
        &config,
        Arc::clone(&fixture.bans),
        audit,
        Arc::clone(fixture.metrics.threat()),
    );

    for _ in 0..10 {
        observe(&engine, Observation::LoginFailed { username: "alice" });
    }
    drop(worker);
    drop(engine);
    writer.expect("enabled").finish();

    let text = std::fs::read_to_string(&path).expect("read the audit log");
    let records: Vec<AuditRecord> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    let events: Vec<AuditEventKind> = records.iter().map(|record| record.event).collect();
    assert_eq!(
        events,
        vec![
            AuditEventKind::AuthFailureBurst,
            AuditEventKind::SourceFlagged
        ]
    );
    assert_eq!(records[0].source, ATTACKER);
    assert_eq!(
        records[0].rule_ids,
        vec!["behaviour.failed_logins".to_owned()]
    );
    assert_eq!(records[0].count, Some(10));
}

#[test]
fn sources_section_parses_and_rejects_unknown_keys() {
    let path = std::path::Path::new("agent.toml");
    let text = "[threat.sources]\nmode = \"detection_only\"\nfailed_logins = 3\n\n[audit]\npath = \"/var/log/audit.jsonl\"\n";
    let typo = "[threat.sources]\nfailed_login = 3\n";

    let config = crate::config::Config::parse(text, path).expect("the sections parse");
    let error = crate::config::Config::parse(typo, path).expect_err("a misspelt key fails");

    assert_eq!(config.threat.sources.mode, SourceMode::DetectionOnly);
    assert_eq!(config.threat.sources.failed_logins, 3);
    assert_eq!(config.audit.path, Some("/var/log/audit.jsonl".into()));
    assert!(
        error.to_string().contains("threat.sources.failed_login"),
        "{error}"
    );
}

#[test]
fn sources_validation_names_the_key() {
    let factor = SourcesConfig {
        ban_factor: 0.5,
        ..SourcesConfig::default()
    };
    let cap = SourcesConfig {
        ban_max_seconds: 10,
        ..SourcesConfig::default()
    };
    let ratio = SourcesConfig {
        scan_not_found_ratio: 1.5,
        ..SourcesConfig::default()
    };

    assert_eq!(
        factor.validate().map_err(|e| e.0),
        Err("threat.sources.ban_factor")
    );
    assert_eq!(
        cap.validate().map_err(|e| e.0),
        Err("threat.sources.ban_max_seconds")
    );
    assert_eq!(
        ratio.validate().map_err(|e| e.0),
        Err("threat.sources.scan_not_found_ratio")
    );
    assert!(SourcesConfig::default().validate().is_ok());
}
