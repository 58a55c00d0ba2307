//! The `[http]` section: limits and timeouts of client connections.

use std::time::Duration;

use serde::Deserialize;

use super::framing::HeadLimits;

/// Smallest accepted `max_header_bytes`: a request line and a few headers.
const MIN_HEADER_BYTES: usize = 1024;

/// `[http]` section: limits that protect the proxy from clients that send too much or too
/// slowly.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Maximum size in bytes of a request head (request line and headers). Larger heads get
    /// 431. For HTTP/2 it bounds the decoded header list.
    pub max_header_bytes: usize,
    /// Maximum number of header fields in a request. More get 431.
    pub max_header_count: usize,
    /// Time in seconds a client gets to send a whole request head, counted from when the
    /// proxy starts waiting for it, so it also bounds an idle HTTP/1.1 keep-alive connection.
    /// It is a total deadline: sending a byte at a time does not extend it.
    pub header_read_timeout_seconds: u64,
    /// Time in seconds a client gets to send a whole request body.
    pub body_read_timeout_seconds: u64,
    /// Time in seconds after which a connection with no request in flight and no bytes read
    /// or written is closed.
    pub idle_timeout_seconds: u64,
    /// Maximum number of open connections from one client address. Further connections are
    /// closed at once.
    pub max_connections_per_client: u32,
    /// Maximum number of concurrent HTTP/2 streams per connection.
    pub http2_max_concurrent_streams: u32,
    /// Initial HTTP/2 flow-control window of each stream, in bytes.
    pub http2_stream_window_bytes: u32,
    /// Initial HTTP/2 flow-control window of each connection, in bytes.
    pub http2_connection_window_bytes: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_header_count: 100,
            header_read_timeout_seconds: 10,
            body_read_timeout_seconds: 30,
            idle_timeout_seconds: 60,
            max_connections_per_client: 256,
            http2_max_concurrent_streams: 100,
            http2_stream_window_bytes: 256 * 1024,
            http2_connection_window_bytes: 1024 * 1024,
        }
    }
}

/// Largest HTTP/2 flow-control window (RFC 9113, section 6.9.1).
const MAX_HTTP2_WINDOW_BYTES: u32 = (1 << 31) - 1;

/// Smallest HTTP/2 flow-control window: the protocol's initial value (RFC 9113, section 6.9.2).
const MIN_HTTP2_WINDOW_BYTES: u32 = 65_535;

impl HttpConfig {
    /// Checks ranges.
    ///
    /// # Errors
    ///
    /// The dotted key and the problem of the first invalid value.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return Err((
                "http.max_header_bytes",
                format!("must be at least {MIN_HEADER_BYTES}"),
            ));
        }
        if self.max_header_count == 0 {
            return Err(("http.max_header_count", "must be at least 1".into()));
        }
        for (value, key) in [
            (
                self.header_read_timeout_seconds,
                "http.header_read_timeout_seconds",
            ),
            (
                self.body_read_timeout_seconds,
                "http.body_read_timeout_seconds",
            ),
            (self.idle_timeout_seconds, "http.idle_timeout_seconds"),
        ] {
            if value == 0 || value > crate::config::MAX_DURATION_SECONDS {
                return Err((key, "must be between 1 and 315360000 (ten years)".into()));
            }
        }
        if self.max_connections_per_client == 0 {
            return Err((
                "http.max_connections_per_client",
                "must be at least 1".into(),
            ));
        }
        if self.http2_max_concurrent_streams == 0 {
            return Err((
                "http.http2_max_concurrent_streams",
                "must be at least 1".into(),
            ));
        }
        for (value, key) in [
            (
                self.http2_stream_window_bytes,
                "http.http2_stream_window_bytes",
            ),
            (
                self.http2_connection_window_bytes,
                "http.http2_connection_window_bytes",
            ),
        ] {
            if !(MIN_HTTP2_WINDOW_BYTES..=MAX_HTTP2_WINDOW_BYTES).contains(&value) {
                return Err((
                    key,
                    format!(
                        "must be between {MIN_HTTP2_WINDOW_BYTES} and {MAX_HTTP2_WINDOW_BYTES}"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Returns the header read deadline.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_seconds)
    }

    /// Returns the body read deadline.
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_secs(self.body_read_timeout_seconds)
    }

    /// Returns the idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_seconds)
    }

    /// Returns the limits the framing check applies to request heads.
    pub fn head_limits(&self) -> HeadLimits {
        HeadLimits {
            max_head_bytes: self.max_header_bytes,
            max_header_count: self.max_header_count,
            read_timeout: self.header_read_timeout(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(HttpConfig::default().validate(), Ok(()));
    }

    #[test]
    fn out_of_range_values_name_key() {
        let cases = [
            (
                HttpConfig {
                    max_header_bytes: 10,
                    ..HttpConfig::default()
                },
                "http.max_header_bytes",
            ),
            (
                HttpConfig {
                    header_read_timeout_seconds: 0,
                    ..HttpConfig::default()
                },
                "http.header_read_timeout_seconds",
            ),
            (
                HttpConfig {
                    max_connections_per_client: 0,
                    ..HttpConfig::default()
                },
                "http.max_connections_per_client",
            ),
            (
                HttpConfig {
                    http2_stream_window_bytes: 100,
                    ..HttpConfig::default()
                },
                "http.http2_stream_window_bytes",
            ),
        ];

        for (config, key) in cases {
            let error = config.validate().expect_err("out of range");
            assert_eq!(error.0, key);
        }
    }
}
