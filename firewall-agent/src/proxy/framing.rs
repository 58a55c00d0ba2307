//! A check of HTTP/1.1 message framing that runs on the raw bytes before hyper parses them.
//!
//! hyper 1 accepts a request that carries both `Content-Length` and `Transfer-Encoding` (it drops
//! `Content-Length` and reads the body as chunked) and a repeated, identical `Content-Length`.
//! Both are the ambiguities request smuggling relies on, so [`FramingGuard`] rejects them before
//! hyper sees the request. It tracks where each message ends (fixed length or chunked body), so
//! every request head on a keep-alive connection is checked, and hands hyper only the bytes of
//! messages that passed.
//!
//! On a violation the guard gives hyper an end of stream at the start of the bad message. hyper
//! finishes the requests before it and then shuts the connection down; at that point the guard
//! writes its own `400` (or `431`) response with `Connection: close`. Nothing from the bad
//! message or after it reaches the service, so nothing of it is forwarded.
//!
//! A connection that opens with the HTTP/2 preface is passed through unchecked, because HTTP/2
//! frames carry their own lengths.
//!
//! After an HTTP/1.1 request with an `Upgrade` header the guard reads nothing more until the
//! request handler decides, through the connection's [`UpgradeGate`], whether the connection
//! switched protocols. After a switch the rest of the stream passes unchecked. Otherwise the
//! guard goes on checking the next request head.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker, ready};

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The client connection preface of HTTP/2 (RFC 9113, section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Size of one read from the client.
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// Maximum length of a chunk-size line with its extensions, and of one trailer line.
const MAX_CHUNK_LINE_BYTES: usize = 4 * 1024;

/// Limits the guard applies to each request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadLimits {
    /// Maximum size of a request head (request line and headers) in bytes.
    pub max_head_bytes: usize,
    /// Maximum number of header fields in a request head.
    pub max_header_count: usize,
    /// Time a client gets to send a whole request head, counted from when the guard starts
    /// waiting for it. For the first request that is the connection's start. For a later one it
    /// is the first read that finds no bytes after the previous message, so the deadline also
    /// closes an idle keep-alive connection.
    pub read_timeout: Duration,
}

/// Why the guard rejected a connection's request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramingViolation {
    /// The request line or a header field is not valid HTTP/1.1: an invalid header name or
    /// value, obsolete line folding, or a malformed request line.
    MalformedHead,
    /// The request head is larger than the limit.
    HeadTooLarge,
    /// The request head has more header fields than the limit.
    TooManyHeaders,
    /// `Content-Length` appears more than once.
    DuplicateContentLength,
    /// `Content-Length` is not a decimal number.
    InvalidContentLength,
    /// Both `Content-Length` and `Transfer-Encoding` are present.
    ContentLengthWithTransferEncoding,
    /// `Transfer-Encoding` is used in HTTP/1.0 or does not end with `chunked`.
    UnsupportedTransferEncoding,
    /// A chunk size, chunk terminator or trailer of a chunked body is malformed.
    MalformedChunkedBody,
    /// The request head did not arrive within the read timeout.
    HeadTimeout,
    /// The request target contains a fragment (`#`), which a client never sends.
    FragmentInTarget,
    /// The request target contains `<`, `>` or a backtick. hyper rejects these with an empty
    /// 400 that no log line records, so the guard rejects them first.
    InvalidTargetCharacter,
    /// `Host` is missing from an HTTP/1.1 request, repeated, empty, or not `host[:port]`.
    InvalidHost,
}

impl FramingViolation {
    /// Returns the reason sent to the client and written in logs.
    pub fn reason(self) -> &'static str {
        match self {
            FramingViolation::MalformedHead => "malformed request head",
            FramingViolation::HeadTooLarge => "request head too large",
            FramingViolation::TooManyHeaders => "too many request headers",
            FramingViolation::DuplicateContentLength => "duplicate content-length header",
            FramingViolation::InvalidContentLength => "invalid content-length header",
            FramingViolation::ContentLengthWithTransferEncoding => {
                "both content-length and transfer-encoding headers"
            }
            FramingViolation::UnsupportedTransferEncoding => "unsupported transfer-encoding",
            FramingViolation::MalformedChunkedBody => "malformed chunked body",
            FramingViolation::HeadTimeout => "request head not received in time",
            FramingViolation::FragmentInTarget => "fragment in request target",
            FramingViolation::InvalidTargetCharacter => "invalid character in request target",
            FramingViolation::InvalidHost => "missing, repeated or invalid host header",
        }
    }

    fn status_line(self) -> &'static str {
        match self {
            FramingViolation::HeadTooLarge | FramingViolation::TooManyHeaders => {
                "431 Request Header Fields Too Large"
            }
            FramingViolation::HeadTimeout => "408 Request Timeout",
            _ => "400 Bad Request",
        }
    }
}

/// Where the guard is in the byte stream of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadState {
    /// Before the first byte: the connection may still turn out to be HTTP/2.
    Start,
    /// Collecting a request head.
    Head,
    /// Inside a body of known length, with this many bytes left.
    FixedBody(u64),
    /// Inside a chunked body.
    Chunked(ChunkState),
    /// After a request that requested a protocol upgrade: nothing is read until the handler
    /// decides whether the connection switched.
    AwaitingUpgrade,
    /// HTTP/2, or a connection that switched protocols: no checks.
    Passthrough,
    /// A violation was found: hyper gets an end of stream.
    Closed,
}

/// Position inside a chunked body (RFC 9112, section 7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hexadecimal chunk size; `digits` read so far.
    Size { size: u64, digits: u8 },
    /// Whitespace after the size, before an extension or the line end.
    SizeWhitespace { size: u64 },
    /// Inside chunk extensions, `length` bytes so far.
    Extension { size: u64, length: usize },
    /// After the CR of the size line.
    SizeLf { size: u64 },
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line, or of the final empty line.
    TrailerStart,
    /// Inside a trailer line, `length` bytes so far.
    TrailerLine { length: usize },
    /// After the CR of a trailer line.
    TrailerLf,
    /// After the CR of the final empty line.
    EndLf,
}

/// Wraps a client connection and checks the framing of every HTTP/1.1 request read through it.
#[derive(Debug)]
pub struct FramingGuard<S> {
    inner: S,
    limits: HeadLimits,
    state: ReadState,
    /// Bytes read from the client and not yet checked.
    unchecked: BytesMut,
    /// Checked bytes that hyper has not read yet.
    checked: BytesMut,
    /// The first violation, kept so the response can be written at shutdown.
    violation: Option<FramingViolation>,
    /// The error response still to be written, and how much of it was written.
    response: Option<(Vec<u8>, usize)>,
    /// When the request head being waited for must be complete; `None` until the guard starts
    /// waiting for a head.
    head_deadline: Option<Instant>,
    /// Timer that wakes the connection at a head deadline. It is kept from head to head and
    /// may still be set to an earlier head's deadline; see [`FramingGuard::poll_head_deadline`].
    head_timer: Option<Pin<Box<Sleep>>>,
    /// Whether the message being read requested a protocol upgrade.
    upgrade_requested: bool,
    /// The request handler's record of whether an upgrade request switched protocols.
    upgrade_gate: Arc<UpgradeGate>,
}

/// Whether a request for a protocol upgrade switched the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpgradeDecision {
    /// The proxy responded `101 Switching Protocols`, so the rest of the stream is raw.
    Switched,
    /// The request got any other response, so the next bytes are a request head.
    NotSwitched,
}

/// The handler's decision on each upgrade request of one connection, shared between the
/// handler and the [`FramingGuard`] that waits for it.
///
/// The guard pauses after every HTTP/1.1 request with an `Upgrade` header, the same rule by
/// which hyper marks a request as upgradable, so the handler must call [`UpgradeGate::decide`]
/// exactly once for each such request. Nothing checks that: a missed decision leaves the
/// connection waiting until its idle timeout.
#[derive(Debug, Default)]
pub struct UpgradeGate {
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    decision: Option<UpgradeDecision>,
    waiting_reader: Option<Waker>,
}

impl UpgradeGate {
    /// Records the decision on the current upgrade request and wakes the guard.
    pub fn decide(&self, decision: UpgradeDecision) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.decision = Some(decision);
        if let Some(waker) = state.waiting_reader.take() {
            waker.wake();
        }
    }

    /// Takes the decision, or registers the reader to be woken when it is made.
    fn poll_decision(&self, cx: &Context<'_>) -> Poll<UpgradeDecision> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match state.decision.take() {
            Some(decision) => Poll::Ready(decision),
            None => {
                state.waiting_reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<S> FramingGuard<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, limits: HeadLimits) -> Self {
        Self {
            inner,
            limits,
            state: ReadState::Start,
            unchecked: BytesMut::new(),
            checked: BytesMut::new(),
            violation: None,
            response: None,
            head_deadline: None,
            head_timer: None,
            upgrade_requested: false,
            upgrade_gate: Arc::default(),
        }
    }

    /// Returns the gate on which the request handler decides upgrade requests.
    pub fn upgrade_gate(&self) -> Arc<UpgradeGate> {
        Arc::clone(&self.upgrade_gate)
    }

    /// Returns the violation that closed this connection, if any.
    pub fn violation(&self) -> Option<FramingViolation> {
        self.violation
    }

    /// Returns the wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Moves as many bytes as possible from `unchecked` to `checked`, stopping at a violation.
    fn check_buffered(&mut self) {
        loop {
            let progressed = match self.state {
                ReadState::Start => self.check_start(),
                ReadState::Head => self.check_head(),
                ReadState::FixedBody(left) => self.pass_fixed(left),
                ReadState::Chunked(chunk) => self.check_chunked(chunk),
                ReadState::AwaitingUpgrade => false,
                ReadState::Passthrough => {
                    let all = self.unchecked.split();
                    self.checked.unsplit(all);
                    false
                }
                ReadState::Closed => {
                    self.unchecked.clear();
                    false
                }
            };
            if !progressed || self.unchecked.is_empty() {
                return;
            }
        }
    }

    fn check_start(&mut self) -> bool {
        let length = self.unchecked.len().min(H2_PREFACE.len());
        if self.unchecked[..length] != H2_PREFACE[..length] {
            self.state = ReadState::Head;
            return true;
        }
        if length == H2_PREFACE.len() {
            self.state = ReadState::Passthrough;
            return true;
        }
        false
    }

    fn check_head(&mut self) -> bool {
        // Empty lines before a request line are allowed (RFC 9112, section 2.2).
        while self.unchecked.starts_with(b"\r\n") || self.unchecked.starts_with(b"\n") {
            let skip = if self.unchecked[0] == b'\r' { 2 } else { 1 };
            let empty_line = self.unchecked.split_to(skip);
            self.checked.unsplit(empty_line);
        }
        if self.unchecked.is_empty() {
            return false;
        }

        match inspect_head(&self.unchecked, self.limits) {
            Ok(None) => {
                if self.unchecked.len() > self.limits.max_head_bytes {
                    self.reject(FramingViolation::HeadTooLarge);
                }
                false
            }
            Ok(Some(head)) => {
                self.head_deadline = None;
                self.upgrade_requested = head.upgrade_requested;
                let bytes = self.unchecked.split_to(head.length);
                self.checked.unsplit(bytes);
                self.state = match head.body {
                    BodyFraming::None => self.state_after_message(),
                    BodyFraming::Fixed(length) => ReadState::FixedBody(length),
                    BodyFraming::Chunked => {
                        ReadState::Chunked(ChunkState::Size { size: 0, digits: 0 })
                    }
                };
                true
            }
            Err(violation) => {
                self.reject(violation);
                false
            }
        }
    }

    /// Returns the state after the end of a message: a pause for the handler's decision if
    /// the message asked for an upgrade, else the next head.
    fn state_after_message(&self) -> ReadState {
        if self.upgrade_requested {
            ReadState::AwaitingUpgrade
        } else {
            ReadState::Head
        }
    }

    fn pass_fixed(&mut self, left: u64) -> bool {
        if left == 0 {
            self.state = self.state_after_message();
            return true;
        }
        let available = u64::try_from(self.unchecked.len()).unwrap_or(u64::MAX);
        let take = left.min(available);
        // `take` is at most the buffer length, so it fits in usize.
        let body = self
            .unchecked
            .split_to(usize::try_from(take).unwrap_or(self.unchecked.len()));
        self.checked.unsplit(body);
        self.state = if take == left {
            self.state_after_message()
        } else {
            ReadState::FixedBody(left - take)
        };
        true
    }

    fn check_chunked(&mut self, mut chunk: ChunkState) -> bool {
        let mut consumed = 0;
        let mut complete = false;
        while consumed < self.unchecked.len() {
            if let ChunkState::Data(left) = chunk {
                let available = u64::try_from(self.unchecked.len() - consumed).unwrap_or(u64::MAX);
                let take = left.min(available);
                consumed += usize::try_from(take).unwrap_or(0);
                chunk = if take == left {
                    ChunkState::DataCr
                } else {
                    ChunkState::Data(left - take)
                };
                continue;
            }
            let byte = self.unchecked[consumed];
            consumed += 1;
            match next_chunk_state(chunk, byte) {
                Some(ChunkStep::Continue(next)) => chunk = next,
                Some(ChunkStep::Complete) => {
                    complete = true;
                    break;
                }
                None => {
                    // hyper reads the body up to the bad byte and fails on it itself, so the
                    // request gets the service's error response. The guard only makes sure
                    // nothing after it is read.
                    let body = self.unchecked.split_to(consumed);
                    self.checked.unsplit(body);
                    self.violation = Some(FramingViolation::MalformedChunkedBody);
                    self.state = ReadState::Closed;
                    return false;
                }
            }
        }

        let body = self.unchecked.split_to(consumed);
        self.checked.unsplit(body);
        self.state = if complete {
            self.state_after_message()
        } else {
            ReadState::Chunked(chunk)
        };
        complete
    }

    /// Returns whether a request head is being waited for. hyper reads in the `Head` state only
    /// when it wants the next request: with half-close on, as the proxy sets it, hyper 1.13
    /// does not read while a request is being handled (`Conn::poll_read_keep_alive`).
    fn waiting_for_head(&self) -> bool {
        matches!(self.state, ReadState::Start | ReadState::Head)
    }

    /// Starts the head deadline when a head is being waited for, and polls it. Returns true
    /// when it has passed.
    ///
    /// The timer is not moved for every request, which would insert it into tokio's timer wheel
    /// and remove it again each time. It is reset only when it fires: a timer that fires at an
    /// earlier head's deadline is moved to the current one.
    fn poll_head_deadline(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.waiting_for_head() {
            self.head_deadline = None;
            return false;
        }
        let timeout = self.limits.read_timeout;
        let deadline = *self
            .head_deadline
            .get_or_insert_with(|| Instant::now() + timeout);
        let timer = self
            .head_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if timer.deadline() >= deadline {
                return true;
            }
            // The timer fired at an earlier head's deadline, so the current one is still ahead.
            timer.as_mut().reset(deadline);
        }
    }

    fn expire_head(&mut self) {
        if self.unchecked.is_empty() {
            // Nothing of a head arrived: close without a response, as for an idle connection.
            tracing::debug!("closing a connection that sent no request head in time");
            self.state = ReadState::Closed;
        } else {
            self.reject(FramingViolation::HeadTimeout);
        }
    }

    fn reject(&mut self, violation: FramingViolation) {
        tracing::info!(
            reason = violation.reason(),
            "request rejected before parsing"
        );
        self.violation = Some(violation);
        self.response = Some((error_response(violation), 0));
        self.state = ReadState::Closed;
        self.unchecked.clear();
    }
}

/// How the body of a checked request is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyFraming {
    None,
    Fixed(u64),
    Chunked,
}

/// A complete request head that passed the checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CheckedHead {
    /// Length of the head in bytes, up to and including the empty line.
    length: usize,
    body: BodyFraming,
    /// Whether this is an HTTP/1.1 request with an `Upgrade` header.
    upgrade_requested: bool,
}

/// Header slots kept on the stack for parsing, enough for the usual header count limits. A
/// larger configured limit parses into a heap vector.
const STACK_HEADER_SLOTS: usize = 128;

/// Parses a request head at the start of `buffer`. Returns `None` while the head is incomplete.
fn inspect_head(
    buffer: &[u8],
    limits: HeadLimits,
) -> Result<Option<CheckedHead>, FramingViolation> {
    if limits.max_header_count <= STACK_HEADER_SLOTS {
        let mut headers = [httparse::EMPTY_HEADER; STACK_HEADER_SLOTS];
        inspect_head_with(buffer, limits, &mut headers[..limits.max_header_count])
    } else {
        let mut headers = vec![httparse::EMPTY_HEADER; limits.max_header_count];
        inspect_head_with(buffer, limits, &mut headers)
    }
}

fn inspect_head_with<'buffer>(
    buffer: &'buffer [u8],
    limits: HeadLimits,
    headers: &mut [httparse::Header<'buffer>],
) -> Result<Option<CheckedHead>, FramingViolation> {
    let mut request = httparse::Request::new(headers);
    let length = match request.parse(buffer) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(FramingViolation::TooManyHeaders),
        Err(_) => return Err(FramingViolation::MalformedHead),
    };
    if length > limits.max_head_bytes {
        return Err(FramingViolation::HeadTooLarge);
    }
    let invalid = request
        .path
        .and_then(|path| path.bytes().find(|byte| matches!(byte, b'#' | b'<' | b'>' | b'`')));
    match invalid {
        Some(b'#') => return Err(FramingViolation::FragmentInTarget),
        Some(_) => return Err(FramingViolation::InvalidTargetCharacter),
        None => {}
    }
    check_host(&request)?;

    let mut content_length = None;
    let mut transfer_codings: Vec<&[u8]> = Vec::new();
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            if content_length.is_some() {
                return Err(FramingViolation::DuplicateContentLength);
            }
            content_length = Some(parse_content_length(header.value)?);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_codings.extend(
                header
                    .value
                    .split(|&byte| byte == b',')
                    .map(<[u8]>::trim_ascii)
                    .filter(|coding| !coding.is_empty()),
            );
        }
    }

    let has_transfer_encoding = request
        .headers
        .iter()
        .any(|header| header.name.eq_ignore_ascii_case("transfer-encoding"));
    // hyper treats the same requests as upgradable.
    let upgrade_requested = request.version == Some(1)
        && request
            .headers
            .iter()
            .any(|header| header.name.eq_ignore_ascii_case("upgrade"));
    let checked = |body| {
        Ok(Some(CheckedHead {
            length,
            body,
            upgrade_requested,
        }))
    };
    if !has_transfer_encoding {
        return checked(match content_length {
            Some(0) | None => BodyFraming::None,
            Some(length) => BodyFraming::Fixed(length),
        });
    }

    if content_length.is_some() {
        return Err(FramingViolation::ContentLengthWithTransferEncoding);
    }
    let chunked_last = transfer_codings
        .last()
        .is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked"));
    if request.version != Some(1) || !chunked_last {
        return Err(FramingViolation::UnsupportedTransferEncoding);
    }
    checked(BodyFraming::Chunked)
}

/// Checks `Host` (RFC 9112, section 3.2): exactly one in HTTP/1.1, at most one in HTTP/1.0,
/// and a value of the form `host[:port]`.
fn check_host(request: &httparse::Request<'_, '_>) -> Result<(), FramingViolation> {
    let mut hosts = request
        .headers
        .iter()
        .filter(|header| header.name.eq_ignore_ascii_case("host"));
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(FramingViolation::InvalidHost);
    }
    match host {
        None if request.version == Some(1) => Err(FramingViolation::InvalidHost),
        None => Ok(()),
        Some(host) if is_valid_host(host.value.trim_ascii()) => Ok(()),
        Some(_) => Err(FramingViolation::InvalidHost),
    }
}

/// Returns whether `value` is `host[:port]`: a DNS name or IPv4 address of letters, digits,
/// `-`, `.` and `_`, or a bracketed IPv6 address. Percent-encoding is not accepted, since no
/// client needs it in a host name and it hides bytes such as NUL.
fn is_valid_host(value: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|&byte| byte == b']') else {
            return false;
        };
        let address = &rest[..end];
        let valid_v6 = std::str::from_utf8(address)
            .is_ok_and(|text| text.parse::<std::net::Ipv6Addr>().is_ok());
        if !valid_v6 {
            return false;
        }
        (None, &rest[end + 1..])
    } else {
        let end = value
            .iter()
            .position(|&byte| byte == b':')
            .unwrap_or(value.len());
        (Some(&value[..end]), &value[end..])
    };
    if let Some(name) = host {
        let valid_name = !name.is_empty()
            && name
                .iter()
                .all(|&byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_'));
        if !valid_name {
            return false;
        }
    }
    match port.strip_prefix(b":") {
        None => port.is_empty(),
        Some(digits) => {
            !digits.is_empty() && digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit)
        }
    }
}

/// Parses a `Content-Length` value: decimal digits only, without sign or list.
fn parse_content_length(value: &[u8]) -> Result<u64, FramingViolation> {
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(FramingViolation::InvalidContentLength);
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|digits| digits.parse().ok())
        .ok_or(FramingViolation::InvalidContentLength)
}

enum ChunkStep {
    Continue(ChunkState),
    Complete,
}

/// Advances the chunked-body state by one byte outside chunk data, or returns `None` when the
/// byte is not allowed there.
fn next_chunk_state(state: ChunkState, byte: u8) -> Option<ChunkStep> {
    use ChunkState::*;
    let next = match state {
        Size { size, digits } => match byte {
            // 16 hex digits fill a u64.
            _ if byte.is_ascii_hexdigit() && digits < 16 => {
                let digit = u64::from(char::from(byte).to_digit(16)?);
                Size {
                    size: (size << 4) | digit,
                    digits: digits + 1,
                }
            }
            b' ' | b'\t' if digits > 0 => SizeWhitespace { size },
            b';' if digits > 0 => Extension { size, length: 0 },
            b'\r' if digits > 0 => SizeLf { size },
            _ => return None,
        },
        SizeWhitespace { size } => match byte {
            b' ' | b'\t' => SizeWhitespace { size },
            b';' => Extension { size, length: 0 },
            b'\r' => SizeLf { size },
            _ => return None,
        },
        Extension { size, length } => match byte {
            b'\r' => SizeLf { size },
            b'\n' => return None,
            _ if byte.is_ascii_control() && byte != b'\t' => return None,
            _ if length >= MAX_CHUNK_LINE_BYTES => return None,
            _ => Extension {
                size,
                length: length + 1,
            },
        },
        SizeLf { size } => match byte {
            b'\n' if size == 0 => TrailerStart,
            b'\n' => Data(size),
            _ => return None,
        },
        Data(_) => return None,
        DataCr => match byte {
            b'\r' => DataLf,
            _ => return None,
        },
        DataLf => match byte {
            b'\n' => Size { size: 0, digits: 0 },
            _ => return None,
        },
        TrailerStart => match byte {
            b'\r' => EndLf,
            b'\n' => return None,
            _ => TrailerLine { length: 1 },
        },
        TrailerLine { length } => match byte {
            b'\r' => TrailerLf,
            b'\n' => return None,
            _ if length >= MAX_CHUNK_LINE_BYTES => return None,
            _ => TrailerLine { length: length + 1 },
        },
        TrailerLf => match byte {
            b'\n' => TrailerStart,
            _ => return None,
        },
        EndLf => match byte {
            b'\n' => return Some(ChunkStep::Complete),
            _ => return None,
        },
    };
    Some(ChunkStep::Continue(next))
}

/// Builds the response the guard writes for a violation, with the security headers that the
/// proxy sets on every response it generates.
fn error_response(violation: FramingViolation) -> Vec<u8> {
    let body = format!("{{\"error\":\"{}\"}}", violation.reason());
    let mut response = format!(
        "HTTP/1.1 {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        violation.status_line(),
        body.len()
    );
    for (name, value) in super::headers::DEFAULT_SECURITY_HEADERS {
        response.push_str(name);
        response.push_str(": ");
        response.push_str(value);
        response.push_str("\r\n");
    }
    response.push_str("\r\n");
    response.push_str(&body);
    response.into_bytes()
}

impl<S: AsyncRead + Unpin> AsyncRead for FramingGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.checked.is_empty() {
                let length = this.checked.len().min(buf.remaining());
                buf.put_slice(&this.checked[..length]);
                this.checked.advance(length);
                return Poll::Ready(Ok(()));
            }
            if this.state == ReadState::Closed {
                return Poll::Ready(Ok(()));
            }
            if this.state == ReadState::AwaitingUpgrade {
                this.state = match ready!(this.upgrade_gate.poll_decision(cx)) {
                    UpgradeDecision::Switched => ReadState::Passthrough,
                    UpgradeDecision::NotSwitched => ReadState::Head,
                };
                this.upgrade_requested = false;
                this.check_buffered();
                continue;
            }

            // Uninitialized, so that a read does not first zero 8 KiB.
            let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK_BYTES];
            let mut chunk_buf = ReadBuf::uninit(&mut chunk);
            if Pin::new(&mut this.inner)
                .poll_read(cx, &mut chunk_buf)?
                .is_pending()
            {
                if this.poll_head_deadline(cx) {
                    this.expire_head();
                    continue;
                }
                return Poll::Pending;
            }
            let filled = chunk_buf.filled();
            if filled.is_empty() {
                // End of stream: hand over what is left, so hyper sees the truncated message
                // and handles it as it would without the guard.
                let rest = this.unchecked.split();
                this.checked.unsplit(rest);
                this.state = ReadState::Closed;
                continue;
            }
            this.unchecked.extend_from_slice(filled);
            this.check_buffered();
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FramingGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some((response, written)) = this.response.as_mut() {
            while *written < response.len() {
                let count =
                    ready!(Pin::new(&mut this.inner).poll_write(cx, &response[*written..]))?;
                if count == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += count;
            }
            ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
            this.response = None;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_head_bytes: 8 * 1024,
        max_header_count: 32,
        read_timeout: Duration::from_secs(10),
    };

    /// Feeds `input` through a guard in one piece and returns the bytes it let through and
    /// the violation, if any.
    fn check(input: &[u8]) -> (Vec<u8>, Option<FramingViolation>) {
        check_in_pieces(input, input.len().max(1))
    }

    fn check_in_pieces(input: &[u8], piece: usize) -> (Vec<u8>, Option<FramingViolation>) {
        let mut guard = FramingGuard::new((), LIMITS);
        for part in input.chunks(piece) {
            guard.unchecked.extend_from_slice(part);
            guard.check_buffered();
        }
        (guard.checked.to_vec(), guard.violation)
    }

    #[test]
    fn plain_requests_pass_whole() {
        let input = b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nPOST /b HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabcGET /c HTTP/1.1\r\nhost: x\r\n\r\n";

        let (passed, violation) = check(input);

        assert_eq!(violation, None);
        assert_eq!(passed, input.to_vec());
    }

    #[test]
    fn upgrade_request_holds_back_later_bytes() {
        let head: &[u8] =
            b"GET /chat HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n";
        let mut input = head.to_vec();
        input.extend_from_slice(b"\x81\x05hello");

        let (passed, violation) = check(&input);

        assert_eq!(violation, None);
        assert_eq!(passed, head.to_vec());
    }

    #[test]
    fn http10_upgrade_header_is_ignored() {
        let input = b"GET /a HTTP/1.0\r\nupgrade: websocket\r\n\r\nGET /b HTTP/1.0\r\n\r\n";

        let (passed, violation) = check(input);

        assert_eq!(violation, None);
        assert_eq!(passed, input.to_vec());
    }

    #[tokio::test]
    async fn upgrade_decision_releases_later_bytes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let head: &[u8] = b"GET /chat HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\n\r\n";
        let after: &[u8] = b"GET /next HTTP/1.1\r\nhost: x\r\n\r\n";
        let (mut client, server) = tokio::io::duplex(1024);
        let mut guard = FramingGuard::new(server, LIMITS);
        let gate = guard.upgrade_gate();
        client.write_all(head).await.expect("write the head");
        client
            .write_all(after)
            .await
            .expect("write the next request");
        let mut buffer = [0u8; 256];

        let count = guard.read(&mut buffer).await.expect("read the head");
        let premature_read =
            tokio::time::timeout(Duration::from_millis(100), guard.read(&mut buffer)).await;
        gate.decide(UpgradeDecision::NotSwitched);
        let released = guard
            .read(&mut buffer)
            .await
            .expect("read the next request");

        assert_eq!(&buffer[..released], after);
        assert!(premature_read.is_err(), "bytes passed before the decision");
        assert_eq!(count, head.len());
    }

    /// Reads from `guard` until it returns at least one byte or the end of stream, and returns
    /// what it read.
    async fn read_some<S: AsyncRead + Unpin>(guard: &mut FramingGuard<S>) -> Vec<u8> {
        use tokio::io::AsyncReadExt;

        let mut buffer = [0u8; 256];
        let count = guard.read(&mut buffer).await.expect("read from the guard");
        buffer[..count].to_vec()
    }

    /// Reads like [`read_some`], but fails the test when nothing arrives within twice the head
    /// deadline.
    async fn read_bounded<S: AsyncRead + Unpin>(guard: &mut FramingGuard<S>) -> Vec<u8> {
        tokio::time::timeout(LIMITS.read_timeout * 2, read_some(guard))
            .await
            .expect("the guard neither returned bytes nor closed within twice the deadline")
    }

    /// Asserts that `elapsed` is the head deadline, give or take the timer's 1 ms resolution.
    fn assert_deadline(elapsed: Duration) {
        assert!(
            elapsed >= LIMITS.read_timeout
                && elapsed <= LIMITS.read_timeout + Duration::from_millis(5),
            "closed after {elapsed:?} instead of {:?}",
            LIMITS.read_timeout
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keep_alive_closes_at_head_deadline() {
        use tokio::io::AsyncWriteExt;

        let request: &[u8] = b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n";
        let (mut client, server) = tokio::io::duplex(1024);
        let mut guard = FramingGuard::new(server, LIMITS);
        client.write_all(request).await.expect("write the request");
        assert_eq!(read_some(&mut guard).await, request);

        let waiting = Instant::now();
        let early = tokio::time::timeout(
            LIMITS.read_timeout - Duration::from_millis(100),
            read_some(&mut guard),
        )
        .await;
        let closed = read_bounded(&mut guard).await;

        assert!(early.is_err(), "the guard closed before the deadline");
        assert!(
            closed.is_empty(),
            "read {closed:?} instead of the end of stream"
        );
        assert_deadline(waiting.elapsed());
        assert_eq!(guard.violation(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn each_later_head_gets_its_own_deadline() {
        use tokio::io::AsyncWriteExt;

        let request: &[u8] = b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n";
        let (mut client, server) = tokio::io::duplex(1024);
        let mut guard = FramingGuard::new(server, LIMITS);
        let start = Instant::now();
        let wait_part = LIMITS.read_timeout * 6 / 10;

        // Each request arrives 0.6 deadlines after the guard started waiting for it, so the
        // timer armed for one request fires while the guard waits for the next one.
        for _ in 0..4 {
            client.write_all(request).await.expect("write a request");
            assert_eq!(read_some(&mut guard).await, request);
            let waited = tokio::time::timeout(wait_part, read_some(&mut guard)).await;
            assert!(
                waited.is_err(),
                "the guard closed after {:?}",
                start.elapsed()
            );
        }
        client
            .write_all(request)
            .await
            .expect("write the last request");
        assert_eq!(read_some(&mut guard).await, request);
        let last_head_done = Instant::now();
        let closed = read_bounded(&mut guard).await;

        assert!(
            closed.is_empty(),
            "read {closed:?} instead of the end of stream"
        );
        assert_deadline(last_head_done.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn later_head_deadline_counts_from_the_wait() {
        use tokio::io::AsyncWriteExt;

        let request: &[u8] = b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n";
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut guard = FramingGuard::new(server, LIMITS);
        client.write_all(request).await.expect("write the request");
        assert_eq!(read_some(&mut guard).await, request);

        // The next head starts halfway to the deadline and then trickles a line a second.
        let waiting = Instant::now();
        let trickle = tokio::spawn(async move {
            tokio::time::sleep(LIMITS.read_timeout / 2).await;
            let _ = client.write_all(b"GET /b HTTP/1.1\r\n").await;
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if client.write_all(b"x-slow: 1\r\n").await.is_err() {
                    break;
                }
            }
        });
        let closed = read_bounded(&mut guard).await;
        let elapsed = waiting.elapsed();
        trickle.abort();

        assert!(
            closed.is_empty(),
            "read {closed:?} instead of the end of stream"
        );
        assert_eq!(guard.violation(), Some(FramingViolation::HeadTimeout));
        assert_deadline(elapsed);
    }

    #[test]
    fn chunked_body_is_followed_byte_by_byte() {
        let input = b"POST /a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nx-trailer: 1\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n";

        let (passed, violation) = check_in_pieces(input, 1);

        assert_eq!(violation, None);
        assert_eq!(passed, input.to_vec());
    }

    #[test]
    fn content_length_with_transfer_encoding_is_rejected() {
        let input = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";

        let (passed, violation) = check(input);

        assert_eq!(
            violation,
            Some(FramingViolation::ContentLengthWithTransferEncoding)
        );
        assert!(
            passed.is_empty(),
            "passed: {:?}",
            String::from_utf8_lossy(&passed)
        );
    }

    #[test]
    fn second_request_after_violation_is_held_back() {
        let first = b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n".to_vec();
        let mut input = first.clone();
        input.extend_from_slice(
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\nx",
        );
        input.extend_from_slice(b"GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n");

        let (passed, violation) = check(&input);

        assert_eq!(violation, Some(FramingViolation::DuplicateContentLength));
        assert_eq!(passed, first);
    }

    #[test]
    fn framing_errors_are_named() {
        let cases: [(&[u8], FramingViolation); 15] = [
            (
                b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                FramingViolation::DuplicateContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: +5\r\n\r\n",
                FramingViolation::InvalidContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n",
                FramingViolation::UnsupportedTransferEncoding,
            ),
            (
                b"POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n",
                FramingViolation::UnsupportedTransferEncoding,
            ),
            (
                b"GET / HTTP/1.1\r\nhost: x\r\nx-a: 1\r\n folded\r\n\r\n",
                FramingViolation::MalformedHead,
            ),
            (
                b"GET / HTTP/1.1\r\nhost: x\r\nbad name: 1\r\n\r\n",
                FramingViolation::MalformedHead,
            ),
            (
                b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
                FramingViolation::MalformedChunkedBody,
            ),
            (
                b"GET /#top HTTP/1.1\r\nhost: x\r\n\r\n",
                FramingViolation::FragmentInTarget,
            ),
            (
                b"GET /<script> HTTP/1.1\r\nhost: x\r\n\r\n",
                FramingViolation::InvalidTargetCharacter,
            ),
            (
                b"GET /?q=`id` HTTP/1.1\r\nhost: x\r\n\r\n",
                FramingViolation::InvalidTargetCharacter,
            ),
            (b"GET / HTTP/1.1\r\n\r\n", FramingViolation::InvalidHost),
            (
                b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
                FramingViolation::InvalidHost,
            ),
            (
                b"GET / HTTP/1.1\r\nhost: localhost%00\r\n\r\n",
                FramingViolation::InvalidHost,
            ),
            (
                b"GET / HTTP/1.0\r\nhost:\r\n\r\n",
                FramingViolation::InvalidHost,
            ),
            (
                b"GET / HTTP/1.1\r\nhost: api.example:99999x\r\n\r\n",
                FramingViolation::InvalidHost,
            ),
        ];

        for (input, expected) in cases {
            let (_, violation) = check(input);
            assert_eq!(
                violation,
                Some(expected),
                "input: {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn valid_hosts_pass() {
        for host in [
            "api.example",
            "api.example:8443",
            "203.0.113.5",
            "[2001:db8::1]:443",
            "my_host",
        ] {
            assert!(is_valid_host(host.as_bytes()), "{host}");
        }
    }

    #[test]
    fn oversized_head_is_rejected_before_it_ends() {
        let mut input = b"GET / HTTP/1.1\r\nhost: x\r\nx-long: ".to_vec();
        input.extend(std::iter::repeat_n(b'a', LIMITS.max_head_bytes + 1));

        let (passed, violation) = check_in_pieces(&input, 1024);

        assert_eq!(violation, Some(FramingViolation::HeadTooLarge));
        assert!(passed.is_empty());
    }

    #[test]
    fn too_many_headers_are_rejected() {
        let mut input = b"GET / HTTP/1.1\r\nhost: x\r\n".to_vec();
        for index in 0..LIMITS.max_header_count {
            input.extend_from_slice(format!("x-{index}: 1\r\n").as_bytes());
        }
        input.extend_from_slice(b"\r\n");

        let (_, violation) = check(&input);

        assert_eq!(violation, Some(FramingViolation::TooManyHeaders));
    }

    #[test]
    fn http2_preface_passes_unchecked() {
        let mut input = H2_PREFACE.to_vec();
        input.extend_from_slice(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00");

        let (passed, violation) = check_in_pieces(&input, 5);

        assert_eq!(violation, None);
        assert_eq!(passed, input);
    }

    #[test]
    fn error_response_closes_the_connection() {
        let response = String::from_utf8(error_response(FramingViolation::TooManyHeaders))
            .expect("ASCII response");

        assert!(response.starts_with("HTTP/1.1 431 "), "{response}");
        assert!(response.contains("\r\nconnection: close\r\n"), "{response}");
        assert!(
            response.contains("\r\nx-content-type-options: nosniff\r\n"),
            "{response}"
        );
    }
}
