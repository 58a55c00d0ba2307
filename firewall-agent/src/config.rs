//! The agent's configuration: a TOML file, command-line overrides, and validation.
//!
//! Every section refuses unknown keys, so a misspelt key is an error at start instead of a
//! silently ignored setting. Errors name the key and the file.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use toml::de::{DeTable, DeValue};

use crate::kernel::KernelSettings;
use crate::network::IpNetwork;

/// Default address of the proxy listener: every IPv4 address, port 8080.
pub const DEFAULT_PROXY_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080);
/// Default path of the admin API socket.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/api-firewall/admin.sock";
/// Default address of the metrics listener: loopback only, port 9750.
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9750);
/// Default path of the ban store.
pub const DEFAULT_STORE_PATH: &str = "/var/lib/api-firewall/state.redb";

/// Longest path a Unix socket address can hold on Linux (`sun_path` is 108 bytes, one of which
/// is the terminating NUL).
const MAX_UNIX_SOCKET_PATH_BYTES: usize = 107;

/// Largest accepted duration in seconds (ten years), so that adding it to the current time
/// does not overflow.
pub const MAX_DURATION_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// The whole configuration, one field per TOML section.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[proxy]`: the reverse proxy in front of the protected API.
    pub proxy: ProxyConfig,
    /// `[xdp]`: interfaces, attach mode and map sizes of the XDP program.
    pub xdp: KernelSettings,
    /// `[rate_limit]`: the per-client request limit, a shorthand for one rule when `[limits]`
    /// has none.
    pub rate_limit: RateLimitConfig,
    /// `[limits]`: rate-limit rules, tiers and the engine that counts.
    pub limits: crate::limits::LimitsConfig,
    /// `[bans]`: when rejected clients are banned, and for how long.
    pub bans: BanConfig,
    /// `[admin]`: the admin API used by `fwctl`.
    pub admin: AdminConfig,
    /// `[metrics]`: the Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// `[store]`: the file that keeps bans across restarts.
    pub store: StoreConfig,
    /// `[log]`: log output.
    pub log: LogConfig,
    /// `[http]`: limits and timeouts of client connections.
    pub http: crate::proxy::HttpConfig,
    /// `[tls]`: TLS on the proxy listener and towards an HTTPS upstream.
    pub tls: crate::tls::TlsConfig,
    /// `[[routes]]`: parts of the API with settings of their own, first match wins.
    pub routes: Vec<crate::routes::RouteConfig>,
    /// `[validation]`: the strict check of every JSON request body.
    pub validation: crate::validation::ValidationConfig,
    /// `[openapi]`: the API description that requests are checked against.
    pub openapi: crate::validation::OpenApiConfig,
    /// `[threat]`: the per-request threat detectors and what their findings do, and in
    /// `[threat.sources]` the per-source behaviour signals, scores and escalating bans.
    pub threat: crate::detect::ThreatConfig,
    /// `[audit]`: the JSON-lines audit log of security events.
    pub audit: crate::audit::AuditConfig,
    /// `[tokens]`: trusted issuers and how access tokens are checked.
    pub tokens: crate::tokens::TokensConfig,
    /// `[oauth]`: the built-in OAuth 2.1 authorization server, off by default.
    pub oauth: crate::oauth::OAuthConfig,
}

/// `[proxy]` section.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Address the proxy accepts client connections on.
    pub listen: SocketAddr,
    /// Base URL of the protected API, `http://host[:port][/path]`. Required, from the file or
    /// from `--upstream`.
    pub upstream: Option<UpstreamUrl>,
    /// Maximum time in seconds to wait for the upstream's response headers before the proxy
    /// responds with 504.
    pub request_timeout_seconds: u64,
    /// Addresses and CIDR ranges of proxies in front of this one, such as a load balancer.
    /// Only a connection from one of them may supply the client address in `Forwarded` or
    /// `X-Forwarded-For`; from any other peer these headers are replaced.
    pub trusted_proxies: Vec<IpNetwork>,
    /// Largest request body in bytes; a larger one gets 413. Routes may set their own.
    pub max_body_bytes: u64,
    /// Number of threads that serve client connections, each with its own single-threaded
    /// runtime and its own upstream connections. 0 starts one per CPU core.
    pub worker_threads: usize,
    /// Maximum number of upstream connections each worker thread keeps open for reuse. A
    /// connection beyond it closes after its response, so more concurrent requests open new ones.
    pub upstream_idle_connections: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_PROXY_LISTEN,
            upstream: None,
            request_timeout_seconds: 30,
            trusted_proxies: Vec::new(),
            max_body_bytes: crate::proxy::DEFAULT_MAX_BODY_BYTES,
            worker_threads: 0,
            upstream_idle_connections: crate::proxy::DEFAULT_UPSTREAM_IDLE_CONNECTIONS,
        }
    }
}

impl ProxyConfig {
    /// Returns the upstream response timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds)
    }
}

/// `[rate_limit]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Maximum number of requests one client address may make per window.
    pub requests: u32,
    /// Length of the sliding window in seconds.
    pub window_seconds: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            requests: 100,
            window_seconds: 60,
        }
    }
}

impl RateLimitConfig {
    /// Returns the window length.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_seconds)
    }
}

/// `[bans]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BanConfig {
    /// Number of rejected requests (strikes) within `strike_window_seconds` that bans a client.
    pub strikes: u32,
    /// Time in seconds over which strikes are counted.
    pub strike_window_seconds: u64,
    /// Duration in seconds of a ban applied for strikes.
    pub ban_seconds: u64,
    /// Interval in seconds between two sweeps that remove expired bans.
    pub sweep_interval_seconds: u64,
    /// Addresses and CIDR ranges that are never banned and whose packets always pass, such as
    /// the networks the firewall is administered from.
    pub allowlist: Vec<IpNetwork>,
    /// Whether loopback (`127.0.0.0/8` and `::1`) is on the allowlist.
    pub allow_loopback: bool,
}

impl Default for BanConfig {
    fn default() -> Self {
        Self {
            strikes: 5,
            strike_window_seconds: 60,
            ban_seconds: 3600,
            sweep_interval_seconds: 10,
            allowlist: Vec::new(),
            allow_loopback: true,
        }
    }
}

impl BanConfig {
    /// Returns the strike window.
    pub fn strike_window(&self) -> Duration {
        Duration::from_secs(self.strike_window_seconds)
    }

    /// Returns the duration of a ban for strikes.
    pub fn ban_duration(&self) -> Duration {
        Duration::from_secs(self.ban_seconds)
    }

    /// Returns the sweep interval.
    pub fn sweep_interval(&self) -> Duration {
        Duration::from_secs(self.sweep_interval_seconds)
    }

    /// Returns the allowlist of the config: `allowlist`, plus loopback when `allow_loopback`.
    pub fn allowlist_networks(&self) -> Vec<IpNetwork> {
        let mut networks = self.allowlist.clone();
        if self.allow_loopback {
            networks.push(IpNetwork::host(Ipv6Addr::LOCALHOST.into()));
            if let Ok(loopback_v4) = IpNetwork::new(Ipv4Addr::LOCALHOST.into(), 8) {
                networks.push(loopback_v4);
            }
        }
        networks
    }
}

/// `[admin]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Path of the Unix socket that serves the admin API. Created with mode 0600.
    pub socket_path: PathBuf,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            socket_path: PathBuf::from(DEFAULT_ADMIN_SOCKET),
        }
    }
}

/// `[metrics]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the Prometheus endpoint (`/metrics`). Must be a loopback address.
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_METRICS_LISTEN,
        }
    }
}

/// `[store]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Path of the embedded database file that keeps bans. Its directory is created if missing.
    pub path: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from(DEFAULT_STORE_PATH),
        }
    }
}

/// `[log]` section.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Log line format: `text` for people, `json` for log collectors.
    pub format: LogFormat,
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "invalid log format `{other}`: expected `text` or `json`"
            )),
        }
    }
}

/// A validated upstream base URL: `http[s]://host[:port][/path]`, without query or user info.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct UpstreamUrl {
    https: bool,
    authority: http::uri::Authority,
    base_path: String,
}

impl UpstreamUrl {
    /// Returns whether the upstream is reached over TLS.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// Returns the scheme, `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    /// Returns the `host[:port]` part.
    pub fn authority(&self) -> &http::uri::Authority {
        &self.authority
    }

    /// Returns the path prefix put before every request path, without a trailing slash (empty
    /// for none).
    pub fn base_path(&self) -> &str {
        &self.base_path
    }
}

impl FromStr for UpstreamUrl {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let uri: http::Uri = value
            .parse()
            .map_err(|error| format!("invalid upstream URL `{value}`: {error}"))?;

        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!(
                    "invalid upstream URL `{value}`: expected http[s]://host[:port][/path]"
                ));
            }
        };

        let Some(authority) = uri.authority().cloned() else {
            return Err(format!(
                "invalid upstream URL `{value}`: the host is missing"
            ));
        };
        if authority.as_str().contains('@') {
            return Err(format!(
                "invalid upstream URL `{value}`: user info is not supported"
            ));
        }
        if uri.query().is_some() {
            return Err(format!(
                "invalid upstream URL `{value}`: a query is not supported"
            ));
        }

        let base_path = uri.path().trim_end_matches('/').to_owned();
        Ok(Self {
            https,
            authority,
            base_path,
        })
    }
}

impl TryFrom<String> for UpstreamUrl {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme(), self.authority, self.base_path)
    }
}

impl fmt::Debug for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UpstreamUrl({self})")
    }
}

/// Command-line values that replace the file's.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--upstream`: replaces `proxy.upstream`.
    pub upstream: Option<UpstreamUrl>,
    /// `--listen`: replaces `proxy.listen`.
    pub listen: Option<SocketAddr>,
    /// `--interface`, repeatable: replaces `xdp.interfaces` when not empty.
    pub interfaces: Vec<String>,
    /// `--log-format`: replaces `log.format`.
    pub log_format: Option<LogFormat>,
    /// `--admin-socket`: replaces `admin.socket_path`.
    pub admin_socket: Option<PathBuf>,
    /// `--metrics-listen`: replaces `metrics.listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// `--store`: replaces `store.path`.
    pub store_path: Option<PathBuf>,
}

/// Source of a configuration, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigOrigin {
    /// A TOML file, possibly with command-line overrides.
    File(PathBuf),
    /// Defaults and command-line flags only.
    Flags,
}

impl fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigOrigin::File(path) => write!(f, "config {}", path.display()),
            ConfigOrigin::Flags => f.write_str("config from command-line flags"),
        }
    }
}

/// Errors from loading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("failed to read config {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("config {}: {message}", path.display())]
    Parse {
        path: PathBuf,
        /// Dotted name of the offending key, when known.
        key: Option<String>,
        message: String,
    },
    /// A value parsed but is out of range, or a required value is missing.
    #[error("{origin}: {key} {problem}")]
    Invalid {
        origin: ConfigOrigin,
        /// Dotted name of the offending key.
        key: &'static str,
        problem: String,
    },
}

impl Config {
    /// Reads the file (if any), applies the overrides and validates the result.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the file and the key when the file cannot be read, does not
    /// parse, has an unknown key, or a value is invalid or missing.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let (mut config, origin) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                (
                    Self::parse(&text, path)?,
                    ConfigOrigin::File(path.to_owned()),
                )
            }
            None => (Self::default(), ConfigOrigin::Flags),
        };

        config.apply(overrides);
        config.validate(&origin)?;
        Ok(config)
    }

    /// Parses TOML text. `path` is only used in error messages.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Parse`] with the dotted key name and line of the first problem.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let parse_error = |error: toml::de::Error, key: Option<String>| ConfigError::Parse {
            path: path.to_owned(),
            message: describe_toml_error(text, &error, key.as_deref()),
            key,
        };

        let document = DeTable::parse(text).map_err(|error| parse_error(error, None))?;
        let lookup = document.clone();
        Config::deserialize(toml::de::Deserializer::from(document)).map_err(|error| {
            let key = error
                .span()
                .and_then(|span| find_key_path(lookup.get_ref(), &span, ""));
            parse_error(error, key)
        })
    }

    /// Replaces file values with the command-line values that were given.
    pub fn apply(&mut self, overrides: Overrides) {
        if let Some(upstream) = overrides.upstream {
            self.proxy.upstream = Some(upstream);
        }
        if let Some(listen) = overrides.listen {
            self.proxy.listen = listen;
        }
        if !overrides.interfaces.is_empty() {
            self.xdp.interfaces = overrides.interfaces;
        }
        if let Some(format) = overrides.log_format {
            self.log.format = format;
        }
        if let Some(socket_path) = overrides.admin_socket {
            self.admin.socket_path = socket_path;
        }
        if let Some(listen) = overrides.metrics_listen {
            self.metrics.listen = listen;
        }
        if let Some(path) = overrides.store_path {
            self.store.path = path;
        }
    }

    /// Checks ranges and required values. `origin` is only used in error messages.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the first offending key.
    pub fn validate(&self, origin: &ConfigOrigin) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, problem: String| ConfigError::Invalid {
            origin: origin.clone(),
            key,
            problem,
        };

        if self.proxy.upstream.is_none() {
            return Err(invalid(
                "proxy.upstream",
                "is missing: set it in [proxy] or pass --upstream http://HOST:PORT".into(),
            ));
        }
        check_seconds(
            self.proxy.request_timeout_seconds,
            "proxy.request_timeout_seconds",
        )
        .map_err(|(key, problem)| invalid(key, problem))?;
        if self.proxy.worker_threads > crate::proxy::MAX_WORKER_THREADS {
            return Err(invalid(
                "proxy.worker_threads",
                format!(
                    "must be at most {}, or 0 for one per CPU core",
                    crate::proxy::MAX_WORKER_THREADS
                ),
            ));
        }

        self.validate_xdp()
            .map_err(|(key, problem)| invalid(key, problem))?;
        self.http
            .validate()
            .map_err(|(key, problem)| invalid(key, problem))?;
        self.tls
            .validate()
            .map_err(|(key, problem)| invalid(key, problem))?;
        let https_upstream = self.proxy.upstream.as_ref().is_some_and(UpstreamUrl::is_https);
        if https_upstream && self.tls.upstream_ca_path.is_none() {
            return Err(invalid(
                "tls.upstream_ca_path",
                "is missing: an https:// upstream needs the PEM file of the CA that signed its \
                 certificate"
                    .into(),
            ));
        }
        if self.proxy.max_body_bytes == 0 {
            return Err(invalid("proxy.max_body_bytes", "must be at least 1".into()));
        }
        self.validate_threat()
            .map_err(|error| invalid("threat", error.to_string()))?;
        if let Err((index, error)) = crate::routes::RouteTable::new(&self.routes) {
            return Err(invalid(
                "routes",
                format!("entry {} (`{}`): {error}", index + 1, self.routes[index].path),
            ));
        }
        self.validate_tokens()
            .map_err(|(key, problem)| invalid(key, problem))?;
        // Compiles every schema and the OpenAPI document, so a broken one fails here.
        if let Err(error) = crate::validation::Validation::build(self) {
            return Err(invalid(
                error.section(),
                crate::telemetry::ErrorChain(&error).to_string(),
            ));
        }

        if self.rate_limit.requests == 0 {
            return Err(invalid("rate_limit.requests", "must be at least 1".into()));
        }
        for (value, key) in [
            (self.rate_limit.window_seconds, "rate_limit.window_seconds"),
            (
                self.bans.strike_window_seconds,
                "bans.strike_window_seconds",
            ),
            (self.bans.ban_seconds, "bans.ban_seconds"),
            (
                self.bans.sweep_interval_seconds,
                "bans.sweep_interval_seconds",
            ),
        ] {
            check_seconds(value, key).map_err(|(key, problem)| invalid(key, problem))?;
        }
        self.limits
            .validate()
            .map_err(|(key, problem)| invalid(key, problem))?;
        if self.bans.strikes == 0 {
            return Err(invalid("bans.strikes", "must be at least 1".into()));
        }
        self.oauth
            .validate()
            .map_err(|(key, problem)| invalid(key, problem))?;

        self.validate_paths()
            .map_err(|(key, problem)| invalid(key, problem))?;
        self.threat
            .sources
            .validate()
            .map_err(|(key, problem)| invalid(key, problem))?;
        self.audit
            .validate()
            .map_err(|(key, problem)| invalid(key, problem))?;

        if !self.metrics.listen.ip().is_loopback() {
            return Err(invalid(
                "metrics.listen",
                format!(
                    "must be a loopback address (127.0.0.0/8 or ::1), got {}",
                    self.metrics.listen
                ),
            ));
        }
        Ok(())
    }

    fn validate_threat(&self) -> Result<(), crate::detect::config::ThreatConfigError> {
        self.threat.validate()?;
        for route in &self.routes {
            if let Some(threat) = &route.threat {
                threat.validate(route.display_name())?;
            }
        }
        Ok(())
    }

    fn validate_xdp(&self) -> Result<(), (&'static str, String)> {
        if self.xdp.interfaces.is_empty() {
            return Err((
                "xdp.interfaces",
                "must list at least one interface: set it in [xdp] or pass --interface NAME".into(),
            ));
        }
        for name in &self.xdp.interfaces {
            // Linux interface names are at most 15 bytes (IFNAMSIZ minus the NUL) and contain
            // no slash or whitespace.
            let valid = !name.is_empty()
                && name.len() <= 15
                && !name.contains(|c: char| c == '/' || c.is_whitespace());
            if !valid {
                return Err((
                    "xdp.interfaces",
                    format!("contains an invalid interface name `{name}`"),
                ));
            }
        }
        if self.xdp.bans_max_entries == 0 {
            return Err(("xdp.bans_max_entries", "must be at least 1".into()));
        }
        if self.xdp.ban_table_entries == 0 {
            return Err(("xdp.ban_table_entries", "must be at least 1".into()));
        }
        if self.xdp.pin && !self.xdp.pin_dir.is_absolute() {
            return Err((
                "xdp.pin_dir",
                "must be an absolute path below /sys/fs/bpf".into(),
            ));
        }
        if self.xdp.ban_ranges_max_entries == 0 {
            return Err(("xdp.ban_ranges_max_entries", "must be at least 1".into()));
        }
        if self.xdp.allow_max_entries == 0 {
            return Err(("xdp.allow_max_entries", "must be at least 1".into()));
        }
        if self.xdp.source_stats_max_entries == 0 {
            return Err(("xdp.source_stats_max_entries", "must be at least 1".into()));
        }
        Ok(())
    }

    fn validate_tokens(&self) -> Result<(), (&'static str, String)> {
        self.tokens.validate()?;
        if self.tokens.default_required && self.tokens.issuers.is_empty() {
            return Err((
                "tokens.default_required",
                "needs at least one [[tokens.issuers]] entry".into(),
            ));
        }
        for route in &self.routes {
            if let Some(auth) = &route.auth {
                self.tokens.validate_route(auth)?;
            }
        }
        Ok(())
    }

    fn validate_paths(&self) -> Result<(), (&'static str, String)> {
        let socket = &self.admin.socket_path;
        if socket.as_os_str().is_empty() || socket.file_name().is_none() {
            return Err(("admin.socket_path", "must be a file path".into()));
        }
        let socket_len = socket.as_os_str().len();
        if socket_len > MAX_UNIX_SOCKET_PATH_BYTES {
            return Err((
                "admin.socket_path",
                format!(
                    "is {socket_len} bytes long, but a Unix socket path holds at most \
                     {MAX_UNIX_SOCKET_PATH_BYTES}"
                ),
            ));
        }

        let store = &self.store.path;
        if store.as_os_str().is_empty() || store.file_name().is_none() {
            return Err(("store.path", "must be a file path".into()));
        }
        Ok(())
    }
}

fn check_seconds(value: u64, key: &'static str) -> Result<(), (&'static str, String)> {
    if value == 0 {
        return Err((key, "must be at least 1".into()));
    }
    if value > MAX_DURATION_SECONDS {
        return Err((
            key,
            format!("must be at most {MAX_DURATION_SECONDS} (ten years)"),
        ));
    }
    Ok(())
}

/// Rewrites a TOML error as "unknown key `a.b` at line N" or "invalid value for `a.b` at line
/// N: ...", falling back to the parser's message and line.
fn describe_toml_error(text: &str, error: &toml::de::Error, key: Option<&str>) -> String {
    let message = plain_type_names(error.message().trim_end());
    let message = message.as_str();
    let line = error
        .span()
        .map(|span| format!(" at line {}", line_of(text, span.start)))
        .unwrap_or_default();

    match key {
        Some(key) if message.starts_with("unknown field") => {
            let expected = message
                .split_once(", ")
                .map(|(_, expected)| format!(" ({expected})"))
                .unwrap_or_default();
            format!("unknown key `{key}`{line}{expected}")
        }
        Some(key) => format!("invalid value for `{key}`{line}: {message}"),
        None => format!("invalid TOML{line}: {message}"),
    }
}

/// Replaces the Rust type names in serde's "expected u32" with what an operator types.
fn plain_type_names(message: &str) -> String {
    const NAMES: [(&str, &str); 10] = [
        ("usize", "a whole number, 0 or more"),
        ("u64", "a whole number, 0 or more"),
        ("u32", "a whole number from 0 to 4294967295"),
        ("u16", "a whole number from 0 to 65535"),
        ("u8", "a whole number from 0 to 255"),
        ("i64", "a whole number"),
        ("i32", "a whole number"),
        ("f64", "a number"),
        ("f32", "a number"),
        ("bool", "true or false"),
    ];
    let mut plain = message.to_owned();
    for (name, words) in NAMES {
        let pattern = format!("expected {name}");
        let mut from = 0;
        while let Some(found) = plain[from..].find(&pattern) {
            let start = from + found;
            let end = start + pattern.len();
            let whole_word = plain[end..]
                .chars()
                .next()
                .is_none_or(|next| !next.is_ascii_alphanumeric());
            if whole_word {
                plain.replace_range(start..end, &format!("expected {words}"));
                from = start + "expected ".len() + words.len();
            } else {
                from = end;
            }
        }
    }
    plain
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Finds the dotted path of the key, or of the scalar or array value, whose span contains
/// `span`. Tables are searched by their entries, because a `[section]` header's span does not
/// cover the section's keys.
fn find_key_path(table: &DeTable<'_>, span: &Range<usize>, prefix: &str) -> Option<String> {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };

        if contains(&key.span(), span) {
            return Some(path);
        }
        if let Some(found) = find_value_path(value, span, path) {
            return Some(found);
        }
    }
    None
}

/// Finds the path within `value`, named `path`, as [`find_key_path`] does. The tables of an
/// array, such as each `[[routes]]` entry, are named by their index: `routes[1].path`.
fn find_value_path(value: &toml::Spanned<DeValue<'_>>, span: &Range<usize>, path: String) -> Option<String> {
    match value.get_ref() {
        DeValue::Table(inner) => find_key_path(inner, span, &path),
        DeValue::Array(items) => {
            let in_item = items.iter().enumerate().find_map(|(index, item)| match item.get_ref() {
                DeValue::Table(_) => find_value_path(item, span, format!("{path}[{index}]")),
                _ => None,
            });
            in_item.or_else(|| contains(&value.span(), span).then_some(path))
        }
        _ => contains(&value.span(), span).then_some(path),
    }
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

#[cfg(test)]
mod tests;
