//! Security events: observations of the stages, for the consumers that act on them or record
//! them (the per-source threat tracker, the audit log).
//!
//! Stages emit events through [`EventSinks`]; every sink receives every event, in the order
//! emitted by one request. Sinks must not block: one that does slow work hands the event to a
//! task of its own.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::proxy::RequestId;

/// One detector hit, as carried by an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventFinding {
    /// Id of the rule that matched, as config exclusions and detection-only lists name it,
    /// such as `sqli-union`.
    pub rule_id: &'static str,
    /// Weight of the hit in the anomaly score (CRS style: 5 critical, 4 error, 3 warning,
    /// 2 notice).
    pub severity: u8,
    /// The field it was found in, such as `query:q`, `body:/user/name` or `header:user-agent`.
    pub field: String,
    /// A short excerpt of the matched value, truncated, with secrets redacted.
    pub excerpt: String,
}

/// Something a stage observed about a request or a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecurityEvent {
    /// The threat detectors inspected a request and found something.
    RequestInspected {
        client: IpAddr,
        request_id: RequestId,
        /// Name of the matched route, if any.
        route: Option<String>,
        method: String,
        path: String,
        /// Anomaly score of the request.
        score: u32,
        /// Whether the request was refused (false in detection-only mode).
        blocked: bool,
        findings: Vec<EventFinding>,
    },
    /// A sign-in on the login page failed.
    LoginFailed { client: IpAddr, username: String },
    /// A sign-in on the login page succeeded.
    LoginSucceeded { client: IpAddr, username: String },
    /// An access token was refused. `reason` is a fixed label such as `expired`.
    TokenRejected {
        client: IpAddr,
        request_id: RequestId,
        reason: &'static str,
    },
    /// The response status of a request is known.
    Response {
        client: IpAddr,
        request_id: RequestId,
        /// Subject of the verified access token, if any.
        subject: Option<String>,
        route: Option<String>,
        path: String,
        status: u16,
    },
}

impl SecurityEvent {
    /// Returns the client the event is about.
    pub fn client(&self) -> IpAddr {
        match self {
            SecurityEvent::RequestInspected { client, .. }
            | SecurityEvent::LoginFailed { client, .. }
            | SecurityEvent::LoginSucceeded { client, .. }
            | SecurityEvent::TokenRejected { client, .. }
            | SecurityEvent::Response { client, .. } => *client,
        }
    }
}

/// A consumer of security events.
pub trait EventSink: Send + Sync + 'static {
    /// Takes one event. Runs on the request path, so it must return quickly and never block on
    /// I/O; nothing enforces that.
    fn emit(&self, event: &SecurityEvent);
}

/// The set of sinks that every stage emits to.
#[derive(Clone, Default)]
pub struct EventSinks {
    sinks: Vec<Arc<dyn EventSink>>,
}

impl fmt::Debug for EventSinks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSinks")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl EventSinks {
    /// Creates an empty set: events go nowhere.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a sink.
    pub fn push(&mut self, sink: Arc<dyn EventSink>) {
        self.sinks.push(sink);
    }

    /// Returns true when there is no sink, so emitters can skip building events.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Hands `event` to every sink.
    pub fn emit(&self, event: &SecurityEvent) {
        for sink in &self.sinks {
            sink.emit(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<SecurityEvent>>);

    impl EventSink for Recorder {
        fn emit(&self, event: &SecurityEvent) {
            self.0.lock().expect("recorder lock").push(event.clone());
        }
    }

    #[test]
    fn every_sink_sees_every_event() {
        let first = Arc::new(Recorder::default());
        let second = Arc::new(Recorder::default());
        let mut sinks = EventSinks::new();
        sinks.push(first.clone());
        sinks.push(second.clone());
        let event = SecurityEvent::LoginFailed {
            client: "198.51.100.9".parse().expect("test address"),
            username: "alice".into(),
        };

        sinks.emit(&event);

        assert_eq!(*first.0.lock().expect("recorder lock"), vec![event.clone()]);
        assert_eq!(
            *second.0.lock().expect("recorder lock"),
            vec![event.clone()]
        );
        assert_eq!(
            event.client(),
            "198.51.100.9".parse::<IpAddr>().expect("test address")
        );
    }
}
