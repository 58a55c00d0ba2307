//! The threat engine and the audit log as consumers of security events and ban changes.

use std::collections::BTreeSet;
use std::time::SystemTime;

use super::{Observation, ThreatEngine};
use crate::audit::{self, AuditEventKind, AuditLog, AuditRecord};
use crate::bans::{BanChange, BanObserver};
use crate::events::{EventSink, SecurityEvent};
use crate::store::BanRecord;

impl EventSink for ThreatEngine {
    fn emit(&self, event: &SecurityEvent) {
        let observation = match event {
            SecurityEvent::RequestInspected { score, blocked, .. } => Observation::Inspected {
                score: f64::from(*score),
                blocked: *blocked,
            },
            SecurityEvent::LoginFailed { username, .. } => Observation::LoginFailed { username },
            SecurityEvent::LoginSucceeded { .. } => return,
            SecurityEvent::TokenRejected { .. } => Observation::TokenRejected,
            SecurityEvent::Response {
                subject,
                path,
                status,
                ..
            } => Observation::Response {
                path,
                status: *status,
                user: subject.as_deref(),
            },
        };
        self.observe(event.client(), observation);
    }
}

/// Writes the detectors' findings to the audit log: a rejected request as `request_blocked`,
/// a request that matched in detection-only mode as `request_flagged`.
#[derive(Clone, Debug)]
pub struct AuditEvents {
    log: AuditLog,
}

impl AuditEvents {
    /// Creates the sink.
    pub fn new(log: AuditLog) -> Self {
        Self { log }
    }
}

impl EventSink for AuditEvents {
    fn emit(&self, event: &SecurityEvent) {
        let SecurityEvent::RequestInspected {
            client,
            request_id,
            route,
            method,
            path,
            score,
            blocked,
            findings,
        } = event
        else {
            return;
        };
        if !blocked && findings.is_empty() {
            return;
        }

        let kind = if *blocked {
            AuditEventKind::RequestBlocked
        } else {
            AuditEventKind::RequestFlagged
        };
        let max_bytes = self.log.excerpt_bytes();
        let mut record = AuditRecord::new(kind, client, SystemTime::now());
        record.request_id = Some(request_id.to_string());
        record.route.clone_from(route);
        record.method = Some(audit::truncate(method, 16));
        record.path = Some(audit::excerpt("path", path, max_bytes));
        record.score = Some(f64::from(*score));
        record.rule_ids = unique(findings.iter().map(|finding| finding.rule_id.to_string()));
        record.fields = unique(findings.iter().map(|finding| finding.field.clone()));
        record.excerpt = findings
            .first()
            .map(|finding| audit::excerpt(&finding.field, &finding.excerpt, max_bytes));
        self.log.record(&record);
    }
}

impl BanObserver for AuditEvents {
    fn ban_changed(&self, change: BanChange, record: &BanRecord, offences: Option<u32>) {
        let kind = match change {
            BanChange::Applied => AuditEventKind::BanApplied,
            BanChange::Extended => AuditEventKind::BanExtended,
            BanChange::Expired => AuditEventKind::BanExpired,
            BanChange::Lifted => AuditEventKind::BanLifted,
        };
        self.log.record(&audit::ban_record(
            kind,
            record,
            offences,
            SystemTime::now(),
        ));
    }
}

/// Keeps the first occurrence of each value, in order.
fn unique(values: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    values.filter(|value| seen.insert(value.clone())).collect()
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::events::EventFinding;
    use crate::proxy::RequestId;

    fn inspected(blocked: bool) -> SecurityEvent {
        let client: IpAddr = "203.0.113.66".parse().expect("valid address");
        SecurityEvent::RequestInspected {
            client,
            request_id: RequestId(0xabc),
            route: Some("items".into()),
            method: "POST".into(),
            path: "/items".into(),
            score: 10,
            blocked,
            findings: vec![
                EventFinding {
                    rule_id: "sqli-union",
                    severity: 5,
                    field: "body:/name".into(),
                    excerpt: "1' or 1=1 -- &password=hunter2".into(),
                },
                EventFinding {
                    rule_id: "sqli-union",
                    severity: 5,
                    field: "header:cookie".into(),
                    excerpt: "sid=1' or 1=1".into(),
                },
            ],
        }
    }

    fn recorded(event: &SecurityEvent) -> Vec<AuditRecord> {
        let (log, mut receiver) = AuditLog::with_queue(8);
        AuditEvents::new(log).emit(event);
        let mut records = Vec::new();
        while let Ok(line) = receiver.try_recv() {
            records.push(serde_json::from_str(line.trim_end()).expect("each line is JSON"));
        }
        records
    }

    #[test]
    fn blocked_request_is_audited() {
        let records = recorded(&inspected(true));

        assert_eq!(records.len(), 1);
        let record = &records[0];
        assert_eq!(record.event, AuditEventKind::RequestBlocked);
        assert_eq!(record.source, "203.0.113.66");
        assert_eq!(record.request_id.as_deref(), Some("0000000000000abc"));
        assert_eq!(record.route.as_deref(), Some("items"));
        assert_eq!(record.rule_ids, vec!["sqli-union".to_owned()]);
        assert_eq!(
            record.fields,
            vec!["body:/name".to_owned(), "header:cookie".to_owned()]
        );
        assert_eq!(
            record.excerpt.as_deref(),
            Some("1' or 1=1 -- &password=[redacted]")
        );
    }

    #[test]
    fn flagged_request_is_audited() {
        let records = recorded(&inspected(false));

        assert_eq!(records.len(), 1);
        assert_eq!(records[0].event, AuditEventKind::RequestFlagged);
    }

    #[test]
    fn other_events_are_not_request_records() {
        let client: IpAddr = "203.0.113.66".parse().expect("valid address");
        let login = SecurityEvent::LoginFailed {
            client,
            username: "alice".into(),
        };

        assert!(recorded(&login).is_empty());
    }
}
