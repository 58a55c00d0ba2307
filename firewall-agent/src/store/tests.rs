use std::net::IpAddr;

use super::*;

fn record(address: &str, expires_at_ms: Option<u64>, origin: BanOrigin) -> BanRecord {
    BanRecord {
        address: address.parse().expect("valid address"),
        expires_at_ms,
        created_at_ms: 1_000,
        origin,
        reason: "test".into(),
    }
}

#[test]
fn put_list_remove_round_trip() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("state.redb")).expect("store opens");
    let v4 = record("192.0.2.7", Some(5_000), BanOrigin::RateLimit);
    let v6 = record("2001:db8::1", None, BanOrigin::Manual);

    store.put_ban(&v4).expect("put v4");
    store.put_ban(&v6).expect("put v6");

    assert_eq!(
        store.list_bans().expect("list"),
        vec![v4.clone(), v6.clone()]
    );
    assert_eq!(store.get_ban(v6.address).expect("get"), Some(v6.clone()));
    assert_eq!(
        store.remove_ban(v4.address).expect("remove"),
        Some(v4.clone())
    );
    assert_eq!(store.remove_ban(v4.address).expect("remove again"), None);
    assert_eq!(store.list_bans().expect("list"), vec![v6]);
}

#[test]
fn put_replaces_existing_ban() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("state.redb")).expect("store opens");

    store
        .put_ban(&record("192.0.2.7", Some(5_000), BanOrigin::RateLimit))
        .expect("first put");
    let replacement = record("192.0.2.7", None, BanOrigin::Manual);
    store.put_ban(&replacement).expect("second put");

    assert_eq!(store.list_bans().expect("list"), vec![replacement]);
}

#[test]
fn bans_survive_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state.redb");
    let ban = record("198.51.100.9", Some(9_000), BanOrigin::Manual);

    {
        let store = Store::open(&path).expect("store opens");
        store.put_ban(&ban).expect("put");
    }
    let reopened = Store::open(&path).expect("store reopens");

    assert_eq!(reopened.list_bans().expect("list"), vec![ban]);
}

#[test]
fn parent_directory_is_created() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nested/deeper/state.redb");

    Store::open(&path).expect("store opens");

    assert!(path.exists());
}

#[test]
fn corrupt_file_error_names_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state.redb");
    std::fs::write(&path, vec![0x5a; 8192]).expect("write garbage");

    let error = Store::open(&path).expect_err("garbage is not a database");

    let message = error.to_string();
    assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[test]
fn second_open_of_same_file_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state.redb");
    let _first = Store::open(&path).expect("first open");

    let error = Store::open(&path).expect_err("the file is locked");

    assert!(
        error.to_string().contains("not used by another agent"),
        "{error}"
    );
}

#[test]
fn unwritable_directory_error_names_path() {
    // Root bypasses directory permissions, so the check needs a path under a regular file.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").expect("write file");
    let path = file.join("state.redb");

    let error = Store::open(&path).expect_err("a file cannot be a directory");

    assert!(matches!(error, StoreError::CreateDir { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&file.display().to_string()),
        "{error}"
    );
}

#[test]
fn expiry_is_checked_against_now() {
    let ban = record("192.0.2.7", Some(5_000), BanOrigin::Manual);
    assert!(!ban.is_expired(4_999));
    assert!(ban.is_expired(5_000));
    assert!(!record("192.0.2.7", None, BanOrigin::Manual).is_expired(u64::MAX));
}

#[test]
fn origin_labels_round_trip() {
    for origin in BanOrigin::ALL {
        assert_eq!(origin.label().parse::<BanOrigin>(), Ok(origin));
    }
    let address: IpAddr = "192.0.2.7".parse().expect("valid address");
    let json = serde_json::to_string(&record("192.0.2.7", None, BanOrigin::RateLimit))
        .expect("serializes");
    assert!(json.contains("\"rate_limit\""), "{json}");
    assert!(json.contains(&format!("\"{address}\"")), "{json}");
}

#[test]
fn offences_round_trip_and_forget() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("state.redb")).expect("store opens");
    let old: IpNetwork = "203.0.113.5".parse().expect("valid address");
    let recent: IpNetwork = "2001:db8::5".parse().expect("valid address");

    store
        .put_offences(old, &OffenceRecord { count: 2, last_at_ms: 1_000 })
        .expect("put old");
    store
        .put_offences(recent, &OffenceRecord { count: 1, last_at_ms: 9_000 })
        .expect("put recent");

    assert_eq!(
        store.get_offences(old).expect("get"),
        Some(OffenceRecord { count: 2, last_at_ms: 1_000 })
    );
    assert_eq!(store.forget_offences_before(5_000).expect("forget"), 1);
    assert_eq!(store.get_offences(old).expect("get"), None);
    assert!(store.get_offences(recent).expect("get").is_some());
}

#[test]
fn put_bans_stores_every_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("state.redb")).expect("store opens");
    let old = record("198.51.100.7", Some(1_000), BanOrigin::Manual);
    store.put_ban(&old).expect("put the ban to replace");
    let records = vec![
        record("198.51.100.0/24", None, BanOrigin::Manual),
        record("198.51.100.7", Some(9_000), BanOrigin::Manual),
        record("2001:db8::7", Some(9_000), BanOrigin::Manual),
    ];

    store.put_bans(&records).expect("put bans");

    assert_eq!(store.list_bans().expect("list"), records);
}
