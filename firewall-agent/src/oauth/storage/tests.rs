use std::sync::Arc;

use super::*;

const NOW_MS: u64 = 1_700_000_000_000;

fn open_storage() -> (tempfile::TempDir, RedbStorage) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("state.redb")).expect("open store");
    let storage = RedbStorage::open(store).expect("open oauth tables");
    (dir, storage)
}

fn code() -> CodeRecord {
    CodeRecord {
        client_id: "app".to_owned(),
        redirect_uri: "https://app.example/callback".to_owned(),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned(),
        subject: "alice".to_owned(),
        scope: "read".to_owned(),
        resource: None,
        expires_at_ms: NOW_MS + 60_000,
        consumed: false,
        grant: None,
        replayed: false,
    }
}

fn family(family_id: &str) -> FamilyRecord {
    FamilyRecord {
        family_id: family_id.to_owned(),
        client_id: "app".to_owned(),
        subject: "alice".to_owned(),
        scope: "read write".to_owned(),
        resource: None,
        expires_at_ms: NOW_MS + 3_600_000,
        revoked: false,
        access_tokens: Vec::new(),
    }
}

fn refresh(family_id: &str) -> RefreshRecord {
    RefreshRecord {
        family_id: family_id.to_owned(),
        expires_at_ms: NOW_MS + 60_000,
        rotated: false,
    }
}

#[test]
fn code_consumed_once_then_replayed() {
    let (_dir, storage) = open_storage();
    storage.put_code("hash", &code()).expect("put");

    let first = storage.consume_code("hash", NOW_MS).expect("consume");
    let second = storage.consume_code("hash", NOW_MS).expect("consume again");

    assert!(matches!(first, CodeRedemption::Fresh(_)));
    assert!(matches!(second, CodeRedemption::Replayed(_)));
}

#[test]
fn expired_code_unknown() {
    let (_dir, storage) = open_storage();
    storage.put_code("hash", &code()).expect("put");

    let redemption = storage
        .consume_code("hash", NOW_MS + 60_000)
        .expect("consume");
    assert_eq!(redemption, CodeRedemption::Unknown);
}

#[test]
fn concurrent_consumption_has_one_winner() {
    let (_dir, storage) = open_storage();
    let storage = Arc::new(storage);
    storage.put_code("hash", &code()).expect("put");

    let threads: Vec<_> = (0..16)
        .map(|_| {
            let storage = Arc::clone(&storage);
            std::thread::spawn(move || storage.consume_code("hash", NOW_MS).expect("consume"))
        })
        .collect();
    let outcomes: Vec<CodeRedemption> = threads
        .into_iter()
        .map(|thread| thread.join().expect("thread"))
        .collect();

    let fresh = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, CodeRedemption::Fresh(_)))
        .count();
    let replayed = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, CodeRedemption::Replayed(_)))
        .count();
    assert_eq!(fresh, 1);
    assert_eq!(replayed, 15);
}

#[test]
fn refresh_rotation_then_replay_revokes_family() {
    let (_dir, storage) = open_storage();
    storage
        .create_family(&family("f1"), "old", &refresh("f1"))
        .expect("create");
    let access = IssuedAccessToken {
        jti: "jti-1".to_owned(),
        expires_at_ms: NOW_MS + 900_000,
    };
    storage
        .record_family_access("f1", &access, NOW_MS)
        .expect("record access");

    let rotated = storage
        .rotate_refresh("old", "new", NOW_MS + 60_000, NOW_MS)
        .expect("rotate");
    assert!(matches!(rotated, RefreshRotation::Rotated(_)));
    assert!(storage.find_refresh("new", NOW_MS).expect("find").is_some());

    let replayed = storage
        .rotate_refresh("old", "other", NOW_MS + 60_000, NOW_MS)
        .expect("replay");
    assert_eq!(
        replayed,
        RefreshRotation::Replayed {
            family_id: "f1".to_owned()
        }
    );
    assert!(storage.find_refresh("new", NOW_MS).expect("find").is_none());
    assert!(storage.is_access_revoked("jti-1").expect("revoked"));
    let after = storage
        .rotate_refresh("new", "newer", NOW_MS + 60_000, NOW_MS)
        .expect("rotate revoked");
    assert_eq!(after, RefreshRotation::Invalid);
}

#[test]
fn idle_expired_refresh_invalid() {
    let (_dir, storage) = open_storage();
    storage
        .create_family(&family("f1"), "old", &refresh("f1"))
        .expect("create");

    let rotation = storage
        .rotate_refresh("old", "new", NOW_MS + 120_000, NOW_MS + 60_000)
        .expect("rotate");
    assert_eq!(rotation, RefreshRotation::Invalid);
}

#[test]
fn absolute_expiry_caps_rotated_token() {
    let (_dir, storage) = open_storage();
    storage
        .create_family(&family("f1"), "old", &refresh("f1"))
        .expect("create");

    storage
        .rotate_refresh("old", "new", NOW_MS + 10_000_000, NOW_MS)
        .expect("rotate");
    let (token, _) = storage
        .find_refresh("new", NOW_MS)
        .expect("find")
        .expect("token");
    assert_eq!(token.expires_at_ms, NOW_MS + 3_600_000);
}

#[test]
fn purge_removes_expired_records() {
    let (_dir, storage) = open_storage();
    storage.put_code("hash", &code()).expect("put");
    storage
        .revoke_access(&IssuedAccessToken {
            jti: "jti-1".to_owned(),
            expires_at_ms: NOW_MS,
        })
        .expect("revoke");

    let removed = storage.purge_expired(NOW_MS + 60_000).expect("purge");
    assert_eq!(removed, 2);
    assert!(!storage.is_access_revoked("jti-1").expect("read"));
}

#[test]
fn users_and_keys_persist_across_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state.redb");
    let keys = crate::oauth::keys::SigningKeys::generate(NOW_MS).expect("keys");
    {
        let storage = RedbStorage::open(Store::open(&path).expect("open")).expect("tables");
        storage
            .put_user(&UserRecord {
                username: "alice".to_owned(),
                password_hash: "$argon2id$stub".to_owned(),
                created_at_ms: NOW_MS,
            })
            .expect("put user");
        storage.replace_keys(&keys.records()).expect("store keys");
    }

    let storage = RedbStorage::open(Store::open(&path).expect("reopen")).expect("tables");
    let users = storage.list_users().expect("list users");
    let stored_keys = storage.load_keys().expect("load keys");
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].username, "alice");
    assert_eq!(stored_keys.len(), 2);
    assert!(storage.remove_user("alice").expect("remove"));
    assert!(!storage.remove_user("alice").expect("remove again"));
}
