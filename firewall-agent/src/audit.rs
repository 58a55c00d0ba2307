//! The audit log: one JSON object per line for every security event, written to a file or to
//! stdout.
//!
//! Request handling never waits for the disk. [`AuditLog::record`] serialises the record and
//! hands the line to a bounded queue; a writer thread drains the queue. When the queue is full
//! the record is dropped and counted in `firewall_audit_records_dropped_total`.
//!
//! The file is opened in append mode and reopened on SIGHUP, after logrotate has moved it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::SystemTime;

use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::store::BanOrigin;
use crate::telemetry::ErrorChain;

/// Default capacity of the queue between request handlers and the writer thread, in records.
pub const DEFAULT_QUEUE_CAPACITY: usize = 8192;
/// Default maximum length of an excerpt, in bytes of UTF-8.
pub const DEFAULT_EXCERPT_BYTES: usize = 120;

/// Text that replaces a secret in an excerpt.
const REDACTED: &str = "[redacted]";

/// Names of headers, form fields, JSON keys and query parameters whose values are secrets.
/// A name matches when it contains one of these, ignoring case.
const SECRET_NAMES: [&str; 10] = [
    "authorization",
    "cookie",
    "password",
    "passwd",
    "pwd",
    "token",
    "secret",
    "api_key",
    "apikey",
    "session",
];

/// `[audit]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Whether security events are written to the audit log.
    pub enabled: bool,
    /// File the JSON lines are appended to; without it they go to stdout. The agent reopens the
    /// file on SIGHUP, so logrotate can move it away. A new path needs a restart.
    pub path: Option<PathBuf>,
    /// Records that may wait for the writer. Records beyond it are dropped and counted.
    pub queue_capacity: usize,
    /// Maximum length of an excerpt of the offending input, in bytes.
    pub excerpt_bytes: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: None,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            excerpt_bytes: DEFAULT_EXCERPT_BYTES,
        }
    }
}

impl AuditConfig {
    /// Checks ranges.
    ///
    /// # Errors
    ///
    /// The dotted key and the problem, for [`crate::config::ConfigError::Invalid`].
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.queue_capacity == 0 {
            return Err(("audit.queue_capacity", "must be at least 1".into()));
        }
        if !(16..=4096).contains(&self.excerpt_bytes) {
            return Err(("audit.excerpt_bytes", "must be between 16 and 4096".into()));
        }
        if let Some(path) = &self.path
            && (path.as_os_str().is_empty() || path.file_name().is_none())
        {
            return Err(("audit.path", "must be a file path".into()));
        }
        Ok(())
    }
}

/// Kind of an audit record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEventKind {
    /// A request was rejected by the threat detectors.
    RequestBlocked,
    /// A request matched detectors but passed, because detection-only mode is on.
    RequestFlagged,
    /// A source was banned.
    BanApplied,
    /// A ban in force got a later expiry.
    BanExtended,
    /// A ban expired and was removed.
    BanExpired,
    /// An operator lifted a ban.
    BanLifted,
    /// A source reached the ban threshold in detection-only mode, or is allowlisted, so it was
    /// not banned.
    SourceFlagged,
    /// Many failed logins or token rejections in a short time.
    AuthFailureBurst,
}

/// One line of the audit log. Fields that do not apply to a kind are left out of the JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Time of the event, RFC 3339 in UTC with milliseconds.
    pub timestamp: String,
    /// What happened.
    pub event: AuditEventKind,
    /// The client address or banned range.
    pub source: String,
    /// Request id, as sent upstream in `x-request-id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Name of the matched route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// HTTP method of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Request path, truncated like an excerpt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The request's anomaly score or the source's score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Ids of the rules or behaviour signals that matched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rule_ids: Vec<String>,
    /// Names of the request fields where the rules matched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Start of the offending input, truncated, with secrets redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excerpt: Option<String>,
    /// Origin of a ban.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<BanOrigin>,
    /// Duration of a ban in seconds; absent for a ban that never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// Earlier bans of the source that count toward escalation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offences: Option<u32>,
    /// Number of failures in an authentication burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// The user an event concerns, such as the target of credential stuffing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Short human-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl AuditRecord {
    /// Creates a record of `event` about `source` at `time`, with every optional field empty.
    pub fn new(event: AuditEventKind, source: impl ToString, time: SystemTime) -> Self {
        Self {
            timestamp: rfc3339(time),
            event,
            source: source.to_string(),
            request_id: None,
            route: None,
            method: None,
            path: None,
            score: None,
            rule_ids: Vec::new(),
            fields: Vec::new(),
            excerpt: None,
            origin: None,
            ttl_seconds: None,
            offences: None,
            count: None,
            username: None,
            reason: None,
        }
    }

    /// Serialises the record as one line of JSON, newline included.
    ///
    /// serde_json escapes quotes, backslashes and control characters. U+2028 and U+2029 are
    /// escaped here as well, because some log shippers treat them as line ends.
    pub fn to_line(&self) -> Result<String, serde_json::Error> {
        let json = serde_json::to_string(self)?;
        let mut line = json
            .replace('\u{2028}', "\\u2028")
            .replace('\u{2029}', "\\u2029");
        line.push('\n');
        Ok(line)
    }
}

/// Formats `time` as RFC 3339 in UTC with millisecond precision.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// Returns whether `name` (a header, form field, JSON key or query parameter) names a secret.
pub fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_NAMES.iter().any(|secret| name.contains(secret))
}

/// Builds the excerpt of `value` found in `field`: the whole value is redacted when the field
/// contains a secret; otherwise `name=value` pairs with secret names and `Bearer`/`Basic`
/// credentials inside it are redacted. The result is cut to at most `max_bytes` bytes on a
/// character boundary, with `...` marking the cut.
pub fn excerpt(field: &str, value: &str, max_bytes: usize) -> String {
    let field_name = field.rsplit(['.', ':', '[']).next().unwrap_or(field);
    let redacted = if is_secret_name(field_name) {
        REDACTED.to_owned()
    } else {
        redact_pairs(value)
    };
    truncate(&redacted, max_bytes)
}

/// Cuts `text` to at most `max_bytes` bytes, on a character boundary, marking a cut with `...`.
pub fn truncate(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let mut end = max_bytes.saturating_sub(3);
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// Replaces the values of secret-named pairs (`password=x`, `"token": "x"`, `token: x`) and
/// the credentials after `Bearer ` or `Basic ` with [`REDACTED`].
fn redact_pairs(text: &str) -> String {
    let mut output = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(value_start) = next_secret_value(rest) {
        output.push_str(&rest[..value_start]);
        let value_len = rest[value_start..]
            .find(['&', ';', ',', '"', '\'', '}', ' ', '\n', '\r'])
            .unwrap_or(rest.len() - value_start);
        if value_len > 0 {
            output.push_str(REDACTED);
        }
        rest = &rest[value_start + value_len..];
    }
    output.push_str(rest);
    output
}

/// Returns where the first secret value in `text` starts, ordered by where its name starts.
fn next_secret_value(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    let mut best: Option<(usize, usize)> = None;
    let mut consider = |candidate: (usize, usize)| {
        if best.is_none_or(|(start, _)| candidate.0 < start) {
            best = Some(candidate);
        }
    };

    for scheme in ["bearer ", "basic "] {
        if let Some(start) = lower.find(scheme) {
            consider((start, start + scheme.len()));
        }
    }
    for secret in SECRET_NAMES {
        let mut from = 0;
        while let Some(found) = lower[from..].find(secret) {
            let name_end = from + found + secret.len();
            // Skip the rest of a longer name (`access_token`, `password2`), then the separator.
            let after_name = name_end
                + lower[name_end..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                    .unwrap_or(lower.len() - name_end);
            if let Some(value_start) = value_after_separator(&lower, after_name) {
                consider((from + found, value_start));
                break;
            }
            from = name_end;
        }
    }
    best.map(|(_, value_start)| value_start)
}

/// Returns where a value starts after a name ending at `at`: after `=`, `:` or `":"`, with
/// spaces and one opening quote skipped. `None` when no separator follows.
fn value_after_separator(lower: &str, at: usize) -> Option<usize> {
    let bytes = lower.as_bytes();
    let mut index = at;
    if bytes.get(index) == Some(&b'"') {
        index += 1;
    }
    while bytes.get(index) == Some(&b' ') {
        index += 1;
    }
    if !matches!(bytes.get(index), Some(b'=' | b':')) {
        return None;
    }
    index += 1;
    while bytes.get(index) == Some(&b' ') {
        index += 1;
    }
    if matches!(bytes.get(index), Some(b'"' | b'\'')) {
        index += 1;
    }
    Some(index)
}

/// Destination of the writer thread's lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditOutput {
    /// Standard output.
    Stdout,
    /// A file opened in append mode.
    File(PathBuf),
}

/// Errors from opening the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The file could not be opened for appending.
    #[error(
        "failed to open audit log {} for appending (check that its directory exists and is \
         writable)",
        path.display()
    )]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The writer thread could not be started.
    #[error("failed to start the audit log writer thread")]
    Spawn(#[source] io::Error),
}

/// Counters of the audit log, registered by [`crate::telemetry::Metrics`].
#[derive(Clone, Debug, Default)]
pub struct AuditCounters {
    /// Records written.
    pub written: Counter,
    /// Records dropped because the queue was full.
    pub dropped: Counter,
    /// Writes that failed, such as on a full disk.
    pub write_errors: Counter,
}

/// The handle that stages and the ban manager write records through. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct AuditLog {
    sender: Option<mpsc::Sender<String>>,
    reopen: Arc<AtomicBool>,
    counters: AuditCounters,
    excerpt_bytes: usize,
}

/// The writer thread of an [`AuditLog`]. [`AuditWriter::finish`] waits for the queued records.
#[derive(Debug)]
pub struct AuditWriter {
    thread: Option<JoinHandle<()>>,
}

impl AuditLog {
    /// Opens the output of `config` and starts the writer thread. A disabled log returns a
    /// handle that discards records and no writer.
    ///
    /// # Errors
    ///
    /// [`AuditError`] naming the file when it cannot be opened for appending.
    pub fn start(
        config: &AuditConfig,
        counters: AuditCounters,
    ) -> Result<(Self, Option<AuditWriter>), AuditError> {
        let reopen = Arc::new(AtomicBool::new(false));
        if !config.enabled {
            let log = Self {
                sender: None,
                reopen,
                counters,
                excerpt_bytes: config.excerpt_bytes,
            };
            return Ok((log, None));
        }

        let output = match &config.path {
            Some(path) => AuditOutput::File(path.clone()),
            None => AuditOutput::Stdout,
        };
        let sink = Sink::open(&output)?;
        let (sender, receiver) = mpsc::channel(config.queue_capacity);
        let thread_reopen = Arc::clone(&reopen);
        let thread_counters = counters.clone();
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || run_writer(receiver, sink, output, &thread_reopen, &thread_counters))
            .map_err(AuditError::Spawn)?;

        let log = Self {
            sender: Some(sender),
            reopen,
            counters,
            excerpt_bytes: config.excerpt_bytes,
        };
        Ok((
            log,
            Some(AuditWriter {
                thread: Some(thread),
            }),
        ))
    }

    /// Creates a handle over a queue of `capacity` records without a writer, so tests can read
    /// the lines or fill the queue.
    #[cfg(test)]
    pub(crate) fn with_queue(capacity: usize) -> (Self, mpsc::Receiver<String>) {
        let (sender, receiver) = mpsc::channel(capacity);
        let log = Self {
            sender: Some(sender),
            reopen: Arc::new(AtomicBool::new(false)),
            counters: AuditCounters::default(),
            excerpt_bytes: DEFAULT_EXCERPT_BYTES,
        };
        (log, receiver)
    }

    /// Creates a handle that discards every record, for tests and tools without an audit log.
    pub fn disabled() -> Self {
        Self {
            sender: None,
            reopen: Arc::new(AtomicBool::new(false)),
            counters: AuditCounters::default(),
            excerpt_bytes: DEFAULT_EXCERPT_BYTES,
        }
    }

    /// Maximum excerpt length in bytes.
    pub fn excerpt_bytes(&self) -> usize {
        self.excerpt_bytes
    }

    /// Queues `record` for writing. Never waits: when the queue is full or the writer has
    /// stopped, the record is dropped and counted.
    pub fn record(&self, record: &AuditRecord) {
        let Some(sender) = &self.sender else {
            return;
        };
        let line = match record.to_line() {
            Ok(line) => line,
            Err(error) => {
                tracing::error!(error = %ErrorChain(&error), event = ?record.event, "failed to encode an audit record");
                return;
            }
        };
        match sender.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Closed(_)) => {
                self.counters.dropped.inc();
            }
        }
    }

    /// Asks the writer to reopen the file before its next write, after logrotate moved it.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// Waits until the writer has taken every queued record, or `timeout` passed. Returns
    /// whether the queue emptied.
    pub async fn drain(&self, timeout: std::time::Duration) -> bool {
        let Some(sender) = &self.sender else {
            return true;
        };
        let deadline = tokio::time::Instant::now() + timeout;
        while sender.capacity() < sender.max_capacity() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        true
    }

    /// Records dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.get()
    }
}

impl crate::reload::Reloadable for AuditLog {
    fn sections(&self) -> &'static str {
        "audit"
    }

    /// Reopens the audit file. A changed `[audit]` section needs a restart.
    fn reload(
        &self,
        _config: &crate::config::Config,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.reopen();
        Ok(())
    }
}

impl AuditWriter {
    /// Waits until the writer has written every queued record. Call it after every
    /// [`AuditLog`] handle is dropped, or it waits for them.
    pub fn finish(mut self) {
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("audit log writer thread panicked");
        }
    }
}

/// The open output of the writer thread.
enum Sink {
    Stdout(io::Stdout),
    File(File),
}

impl Sink {
    fn open(output: &AuditOutput) -> Result<Self, AuditError> {
        match output {
            AuditOutput::Stdout => Ok(Sink::Stdout(io::stdout())),
            AuditOutput::File(path) => open_append(path).map(Sink::File),
        }
    }

    /// Writes a batch of whole lines with one `write_all`, so lines never interleave with
    /// another writer that also appends whole lines.
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout(stdout) => {
                let mut lock = stdout.lock();
                lock.write_all(batch)?;
                lock.flush()
            }
            Sink::File(file) => file.write_all(batch),
        }
    }
}

fn open_append(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| AuditError::Open {
            path: path.to_owned(),
            source,
        })
}

/// Largest batch of lines written at once, in bytes.
const MAX_BATCH_BYTES: usize = 64 * 1024;

fn run_writer(
    mut receiver: mpsc::Receiver<String>,
    mut sink: Sink,
    output: AuditOutput,
    reopen: &AtomicBool,
    counters: &AuditCounters,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH_BYTES);
    while let Some(line) = receiver.blocking_recv() {
        batch.clear();
        batch.extend_from_slice(line.as_bytes());
        let mut lines = 1;
        while batch.len() < MAX_BATCH_BYTES {
            match receiver.try_recv() {
                Ok(line) => {
                    batch.extend_from_slice(line.as_bytes());
                    lines += 1;
                }
                Err(_) => break,
            }
        }

        if reopen.swap(false, Ordering::Relaxed) {
            match Sink::open(&output) {
                Ok(reopened) => {
                    sink = reopened;
                    tracing::info!(output = ?output, "audit log reopened");
                }
                Err(error) => {
                    tracing::error!(error = %ErrorChain(&error), "failed to reopen the audit log, writing to the old file");
                }
            }
        }

        match sink.write_batch(&batch) {
            Ok(()) => {
                counters.written.inc_by(lines);
            }
            Err(error) => {
                counters.write_errors.inc();
                tracing::error!(error = %ErrorChain(&error), lines, output = ?output, "failed to write audit records");
            }
        }
    }
}

/// Builds the audit record of a ban change.
pub fn ban_record(
    event: AuditEventKind,
    ban: &crate::store::BanRecord,
    offences: Option<u32>,
    now: SystemTime,
) -> AuditRecord {
    let mut record = AuditRecord::new(event, ban.address, now);
    record.origin = Some(ban.origin);
    record.ttl_seconds = ban
        .expires_at_ms
        .map(|expires| expires.saturating_sub(ban.created_at_ms).div_ceil(1000));
    record.offences = offences;
    record.reason = Some(ban.reason.clone());
    record
}

/// Builds the audit record of a burst of authentication failures from `source`.
pub fn auth_burst_record(
    source: IpAddr,
    signal: &str,
    count: u32,
    username: Option<&str>,
    now: SystemTime,
) -> AuditRecord {
    let mut record = AuditRecord::new(AuditEventKind::AuthFailureBurst, source, now);
    record.rule_ids = vec![signal.to_owned()];
    record.count = Some(count);
    record.username = username.map(|name| truncate(name, DEFAULT_EXCERPT_BYTES));
    record
}

#[cfg(test)]
mod tests;
