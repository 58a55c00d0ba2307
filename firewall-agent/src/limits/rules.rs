//! Compiled rules: which requests a rule covers and the key it counts them under.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use http::{HeaderMap, HeaderName, Method};
use prometheus_client::metrics::counter::Counter;

use super::config::{FailureMode, RuleAction, RuleConfig};
use super::gcra::Tier;

/// Maximum length in bytes of a header value or path parameter taken into a key. Longer values are cut,
/// so a client cannot grow the key (and the store's memory) with a huge header.
pub const MAX_KEY_PART_BYTES: usize = 256;

/// One part of a rule's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyPart {
    /// The client address; IPv6 addresses are grouped by the rule's prefix length.
    ClientAddress,
    /// The `sub` of the verified access token.
    TokenSubject,
    /// The OAuth client id of the verified access token.
    ClientId,
    /// The method and path of the request.
    Endpoint,
    /// The value of a request header, such as an API key.
    Header(HeaderName),
    /// A `{name}` segment of the matched route pattern.
    PathParameter(String),
}

impl KeyPart {
    /// Parses `client_address`, `token_subject`, `client_id`, `endpoint`, `header:NAME` or
    /// `path:NAME`.
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "client_address" => return Ok(KeyPart::ClientAddress),
            "token_subject" => return Ok(KeyPart::TokenSubject),
            "client_id" => return Ok(KeyPart::ClientId),
            "endpoint" => return Ok(KeyPart::Endpoint),
            _ => {}
        }
        if let Some(name) = text.strip_prefix("header:") {
            return HeaderName::try_from(name.to_ascii_lowercase())
                .map(KeyPart::Header)
                .map_err(|_| format!("`{name}` is not a valid header name"));
        }
        if let Some(name) = text.strip_prefix("path:") {
            if name.is_empty() {
                return Err("`path:` needs a parameter name, such as `path:id`".into());
            }
            return Ok(KeyPart::PathParameter(name.to_owned()));
        }
        Err(format!(
            "unknown key part `{text}`: expected client_address, token_subject, client_id, \
             endpoint, header:NAME or path:NAME"
        ))
    }
}

/// One segment of a route pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Parameter(String),
}

/// A route pattern: literal segments, `{name}` segments that match any one segment, and an
/// optional trailing `*` that matches any rest, including nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    segments: Vec<Segment>,
    prefix_only: bool,
}

impl Route {
    fn parse(pattern: &str) -> Result<Self, String> {
        let Some(rest) = pattern.strip_prefix('/') else {
            return Err(format!("route `{pattern}` must start with `/`"));
        };
        let mut segments = Vec::new();
        let mut prefix_only = false;
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        for (index, part) in parts.iter().enumerate() {
            if *part == "*" {
                if index + 1 != parts.len() {
                    return Err(format!("route `{pattern}`: `*` is only allowed at the end"));
                }
                prefix_only = true;
            } else if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if name.is_empty() {
                    return Err(format!("route `{pattern}` has an empty `{{}}` parameter"));
                }
                if let Some(rest) = name.strip_prefix('*') {
                    // The `[[routes]]` table writes a catch-all as `{*rest}`; read here as a
                    // parameter, it would match one segment only.
                    return Err(format!(
                        "route `{pattern}`: `{{*{rest}}}` is not supported in rate-limit rules; end the \
                         route with `/*` to match any rest of the path"
                    ));
                }
                if name.contains(['{', '}', '*']) {
                    return Err(format!(
                        "route `{pattern}`: a segment is either literal, `{{name}}` or a final `*`"
                    ));
                }
                segments.push(Segment::Parameter(name.to_owned()));
            } else if part.contains(['{', '}', '*']) {
                return Err(format!(
                    "route `{pattern}`: a segment is either literal, `{{name}}` or a final `*`"
                ));
            } else {
                segments.push(Segment::Literal((*part).to_owned()));
            }
        }
        Ok(Self {
            segments,
            prefix_only,
        })
    }

    /// Matches `path`, returning the values of its parameters on success.
    fn matches<'p>(&self, path: &'p str) -> Option<Vec<(&str, &'p str)>> {
        let rest = path.strip_prefix('/')?;
        let mut parts = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect::<Vec<_>>()
        };
        if parts.len() < self.segments.len() {
            return None;
        }
        if parts.len() > self.segments.len() {
            if !self.prefix_only {
                return None;
            }
            parts.truncate(self.segments.len());
        }

        let mut parameters = Vec::new();
        for (segment, part) in self.segments.iter().zip(parts) {
            match segment {
                Segment::Literal(literal) if literal == part => {}
                Segment::Literal(_) => return None,
                Segment::Parameter(name) => parameters.push((name.as_str(), part)),
            }
        }
        Some(parameters)
    }

    fn has_parameter(&self, name: &str) -> bool {
        self.segments
            .iter()
            .any(|segment| matches!(segment, Segment::Parameter(p) if p == name))
    }
}

/// Request parts that keys are built from. Token fields are `None` when the request has no
/// valid access token.
#[derive(Clone, Copy, Debug)]
pub struct KeyInput<'a> {
    /// Canonical client address.
    pub client: IpAddr,
    /// Request method.
    pub method: &'a Method,
    /// Request path, without the query.
    pub path: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// `sub` of the verified access token, if any.
    pub token_subject: Option<&'a str>,
    /// Client id of the verified access token, if any.
    pub client_id: Option<&'a str>,
}

/// A validated rule, ready to match requests.
#[derive(Clone, Debug, PartialEq)]
pub struct CompiledRule {
    /// Unique rule name.
    pub name: Arc<str>,
    /// Key parts, in order.
    pub key: Vec<KeyPart>,
    /// Route patterns; empty covers every path.
    pub routes: Vec<Route>,
    /// Methods; empty covers every method.
    pub methods: Vec<Method>,
    /// Action on a request over the limit.
    pub action: RuleAction,
    /// Behaviour while the store fails.
    pub on_store_failure: FailureMode,
    /// Prefix length that groups IPv6 client addresses.
    pub ipv6_prefix_length: u8,
    /// The tiers.
    pub tiers: Arc<[Tier]>,
    /// Counter of the requests this rule admitted, looked up in the metrics on first use.
    pub admitted_count: CachedCounter,
}

/// A metrics counter looked up once and kept. Two of them always compare equal, so that rules
/// compare by their settings only.
#[derive(Clone, Debug, Default)]
pub struct CachedCounter(OnceLock<Counter>);

impl CachedCounter {
    /// Returns the counter, looking it up with `lookup` on the first call.
    pub fn get_or_init(&self, lookup: impl FnOnce() -> Counter) -> &Counter {
        self.0.get_or_init(lookup)
    }
}

impl PartialEq for CachedCounter {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl CompiledRule {
    /// Compiles and checks a rule's key parts, routes and methods.
    ///
    /// # Errors
    ///
    /// The dotted config key and the problem, naming the rule.
    pub fn compile(config: &RuleConfig) -> Result<Self, (&'static str, String)> {
        let name = &config.name;
        if config.key.is_empty() {
            return Err((
                "limits.rules.key",
                format!("rule `{name}` needs at least one key part, such as \"client_address\""),
            ));
        }
        let key = config
            .key
            .iter()
            .map(|part| KeyPart::parse(part))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|problem| ("limits.rules.key", format!("rule `{name}`: {problem}")))?;
        let routes = config
            .routes
            .iter()
            .map(|route| Route::parse(route))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|problem| ("limits.rules.routes", format!("rule `{name}`: {problem}")))?;
        let methods = config
            .methods
            .iter()
            .map(|method| {
                Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                    .map_err(|_| format!("`{method}` is not a valid method"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|problem| ("limits.rules.methods", format!("rule `{name}`: {problem}")))?;

        for part in &key {
            if let KeyPart::PathParameter(parameter) = part {
                let everywhere =
                    !routes.is_empty() && routes.iter().all(|route| route.has_parameter(parameter));
                if !everywhere {
                    return Err((
                        "limits.rules.key",
                        format!(
                            "rule `{name}` keys on path parameter `{parameter}`, so every one \
                             of its routes must contain `{{{parameter}}}`"
                        ),
                    ));
                }
            }
        }

        Ok(Self {
            name: name.as_str().into(),
            key,
            routes,
            methods,
            action: config.action,
            on_store_failure: config.on_store_failure,
            ipv6_prefix_length: config.ipv6_prefix_length,
            tiers: config
                .tiers
                .iter()
                .map(|tier| Tier::new(tier.requests, tier.window()))
                .collect(),
            admitted_count: CachedCounter::default(),
        })
    }

    /// Returns whether the key has a part taken from the access token: the subject or the
    /// client id.
    pub fn keys_on_token(&self) -> bool {
        self.key
            .iter()
            .any(|part| matches!(part, KeyPart::TokenSubject | KeyPart::ClientId))
    }

    /// Returns whether the rule covers a request with `method` and `path`.
    pub fn covers(&self, method: &Method, path: &str) -> bool {
        let method_covered = self.methods.is_empty() || self.methods.contains(method);
        let route_covered = self.routes.is_empty()
            || self
                .routes
                .iter()
                .any(|route| route.matches(path).is_some());
        method_covered && route_covered
    }

    /// Returns the key this rule counts `input` under, or `None` when the rule does not cover
    /// the request.
    ///
    /// A key part the request lacks (a missing header, or a token subject without a valid
    /// token) becomes an empty value, so all such requests share one counter instead of
    /// escaping the rule.
    pub fn key_for(&self, input: &KeyInput<'_>) -> Option<String> {
        if !self.methods.is_empty() && !self.methods.contains(input.method) {
            return None;
        }
        let parameters = if self.routes.is_empty() {
            Vec::new()
        } else {
            self.routes
                .iter()
                .find_map(|route| route.matches(input.path))?
        };

        // Room for an address and a short value without growing.
        let mut key = String::with_capacity(64);
        for (index, part) in self.key.iter().enumerate() {
            if index > 0 {
                key.push('|');
            }
            match part {
                KeyPart::ClientAddress => {
                    write_client(&mut key, input.client, self.ipv6_prefix_length);
                }
                KeyPart::TokenSubject => push_capped(&mut key, input.token_subject.unwrap_or("")),
                KeyPart::ClientId => push_capped(&mut key, input.client_id.unwrap_or("")),
                KeyPart::Endpoint => {
                    key.push_str(input.method.as_str());
                    key.push(' ');
                    push_capped(&mut key, input.path);
                }
                KeyPart::Header(name) => {
                    let value = input
                        .headers
                        .get(name)
                        .map(|value| String::from_utf8_lossy(value.as_bytes()))
                        .unwrap_or_default();
                    push_capped(&mut key, &value);
                }
                KeyPart::PathParameter(name) => {
                    let value = parameters
                        .iter()
                        .find(|(parameter, _)| parameter == name)
                        .map(|(_, value)| *value)
                        .unwrap_or("");
                    push_capped(&mut key, value);
                }
            }
        }
        Some(key)
    }
}

/// Writes an IPv4 address as is and an IPv6 address as its network of `prefix_length` bits.
fn write_client(key: &mut String, client: IpAddr, prefix_length: u8) {
    match client {
        IpAddr::V4(v4) => crate::network::push_ipv4(key, v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix_length.clamp(1, 128)))
                .unwrap_or(0);
            let network = std::net::Ipv6Addr::from(bits & mask);
            let _ = write!(key, "{network}/{prefix_length}");
        }
    }
}

/// Appends `value` cut to [`MAX_KEY_PART_BYTES`] at a character boundary, escaping `|` and `\`
/// so that two different part lists cannot produce the same key.
fn push_capped(key: &mut String, value: &str) {
    let mut end = value.len().min(MAX_KEY_PART_BYTES);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    for c in value[..end].chars() {
        if c == '|' || c == '\\' {
            key.push('\\');
        }
        key.push(c);
    }
}
