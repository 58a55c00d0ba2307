use std::time::{Duration, UNIX_EPOCH};

use super::*;

fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

#[test]
fn timestamp_is_rfc3339_utc() {
    let record = AuditRecord::new(AuditEventKind::BanApplied, "203.0.113.9", at(1_800_000_000));

    assert_eq!(record.timestamp, "2027-01-15T08:00:00.000Z");
}

#[test]
fn secret_field_is_redacted_whole() {
    assert_eq!(
        excerpt("header:authorization", "Bearer abc.def", 120),
        REDACTED
    );
    assert_eq!(excerpt("header:Cookie", "sid=1234", 120), REDACTED);
    assert_eq!(excerpt("body.password", "hunter2", 120), REDACTED);
    assert_eq!(excerpt("query.access_token", "xyz", 120), REDACTED);
}

#[test]
fn secret_pairs_inside_value_are_redacted() {
    let form = excerpt("body", "user=alice&password=hunter2&next=/home", 120);
    assert_eq!(form, "user=alice&password=[redacted]&next=/home");

    let json = excerpt(
        "body",
        r#"{"name":"x","client_secret": "s3cr3t","n":1}"#,
        120,
    );
    assert_eq!(json, r#"{"name":"x","client_secret": "[redacted]","n":1}"#);

    let bearer = excerpt("query.q", "1 union select Bearer eyJhbGci.x.y", 120);
    assert_eq!(bearer, "1 union select Bearer [redacted]");
}

#[test]
fn ordinary_value_is_kept() {
    let value = "1' OR '1'='1";

    assert_eq!(excerpt("query.id", value, 120), value);
}

#[test]
fn excerpt_is_cut_on_char_boundary() {
    let value = "ééééééééééé";

    let cut = excerpt("query.q", value, 10);

    assert!(cut.len() <= 10, "{cut:?} is longer than 10 bytes");
    assert_eq!(cut, "ééé...");
}

#[test]
fn line_escapes_line_breaks() {
    let mut record = AuditRecord::new(AuditEventKind::RequestBlocked, "203.0.113.9", at(0));
    record.excerpt = Some("a\nb\u{2028}c\u{2029}d\"e".into());

    let line = record.to_line().expect("encode the record");

    assert_eq!(
        line.matches('\n').count(),
        1,
        "only the final newline: {line:?}"
    );
    assert!(line.ends_with('\n'));
    assert!(!line.contains('\u{2028}'));
    assert!(!line.contains('\u{2029}'));
    let decoded: AuditRecord = serde_json::from_str(line.trim_end()).expect("decode the line");
    assert_eq!(
        decoded.excerpt.as_deref(),
        Some("a\nb\u{2028}c\u{2029}d\"e")
    );
}

#[test]
fn empty_fields_are_left_out() {
    let record = AuditRecord::new(AuditEventKind::BanExpired, "198.51.100.0/24", at(0));

    let line = record.to_line().expect("encode the record");

    assert!(!line.contains("rule_ids"), "{line}");
    assert!(!line.contains("request_id"), "{line}");
    assert!(line.contains(r#""event":"ban_expired""#), "{line}");
    assert!(line.contains(r#""source":"198.51.100.0/24""#), "{line}");
}

#[test]
fn full_queue_drops_and_counts() {
    let (log, mut receiver) = AuditLog::with_queue(2);
    let record = AuditRecord::new(AuditEventKind::RequestBlocked, "203.0.113.9", at(0));

    for _ in 0..5 {
        log.record(&record);
    }

    assert_eq!(log.dropped(), 3);
    assert!(receiver.try_recv().is_ok());
    assert!(receiver.try_recv().is_ok());
    assert!(receiver.try_recv().is_err());
}

#[test]
fn disabled_log_writes_nothing() {
    let config = AuditConfig {
        enabled: false,
        ..AuditConfig::default()
    };

    let (log, writer) = AuditLog::start(&config, AuditCounters::default()).expect("start");
    log.record(&AuditRecord::new(
        AuditEventKind::BanLifted,
        "203.0.113.9",
        at(0),
    ));

    assert!(writer.is_none());
    assert_eq!(log.dropped(), 0);
}

#[test]
fn writer_appends_lines_and_reopens() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let path = dir.path().join("audit.jsonl");
    std::fs::write(&path, "existing line\n").expect("write the old line");
    let config = AuditConfig {
        path: Some(path.clone()),
        ..AuditConfig::default()
    };
    let counters = AuditCounters::default();

    let (log, writer) = AuditLog::start(&config, counters.clone()).expect("start the audit log");
    for index in 0..3 {
        let mut record = AuditRecord::new(AuditEventKind::RequestBlocked, "203.0.113.9", at(0));
        record.request_id = Some(format!("{index}"));
        log.record(&record);
    }
    wait_for(|| counters.written.get() == 3);
    let rotated = dir.path().join("audit.jsonl.1");
    std::fs::rename(&path, &rotated).expect("rotate the file");
    log.reopen();
    log.record(&AuditRecord::new(
        AuditEventKind::BanApplied,
        "203.0.113.9",
        at(0),
    ));
    drop(log);
    writer.expect("an enabled log has a writer").finish();

    let old = std::fs::read_to_string(&rotated).expect("read the rotated file");
    let lines: Vec<&str> = old.lines().collect();
    assert_eq!(lines.len(), 4, "{old}");
    assert_eq!(lines[0], "existing line");
    for (index, line) in lines[1..].iter().enumerate() {
        let record: AuditRecord = serde_json::from_str(line).expect("each line is JSON");
        assert_eq!(record.request_id, Some(index.to_string()));
    }
    let new = std::fs::read_to_string(&path).expect("read the reopened file");
    assert_eq!(new.lines().count(), 1, "{new}");
    assert!(new.contains("ban_applied"));
}

#[test]
fn missing_directory_fails_with_path() {
    let config = AuditConfig {
        path: Some("/nonexistent-audit-dir/audit.jsonl".into()),
        ..AuditConfig::default()
    };

    let error = AuditLog::start(&config, AuditCounters::default()).expect_err("must fail");

    assert!(
        error
            .to_string()
            .contains("/nonexistent-audit-dir/audit.jsonl"),
        "{error}"
    );
}

#[test]
fn config_rejects_bad_values() {
    let zero_queue = AuditConfig {
        queue_capacity: 0,
        ..AuditConfig::default()
    };
    let tiny_excerpt = AuditConfig {
        excerpt_bytes: 4,
        ..AuditConfig::default()
    };

    assert_eq!(
        zero_queue.validate().map_err(|e| e.0),
        Err("audit.queue_capacity")
    );
    assert_eq!(
        tiny_excerpt.validate().map_err(|e| e.0),
        Err("audit.excerpt_bytes")
    );
    assert!(AuditConfig::default().validate().is_ok());
}

fn wait_for(condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met within 5 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
