//! The real client address and the forwarding headers sent upstream.
//!
//! The client is the TCP peer, unless the peer is one of `[proxy] trusted_proxies`. Then the
//! client is the right-most address in the peer's `Forwarded` (RFC 7239) or, without it,
//! `X-Forwarded-For` header that is not itself a trusted proxy. Entries left of it come from
//! the client or from untrusted proxies, so they are passed on but never name the client.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::network::{IpNetwork, push_ip, push_ipv4};

/// Room for the longest IPv6 address in text, so that writing the usual value needs no
/// reallocation.
const IP_TEXT_CAPACITY: usize = 45;

/// `X-Forwarded-For` header name.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Host` header name.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Proto` header name.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// A trusted proxy sent a forwarding header whose client entry is not an IP address, so the
/// client cannot be known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {header} header from trusted proxy {peer}: entry `{entry}` is not an IP address")]
pub struct ForwardedError {
    /// The header that was read.
    pub header: &'static str,
    /// The trusted proxy that sent it.
    pub peer: IpAddr,
    /// The entry that could not be read, cut to 64 bytes.
    pub entry: String,
}

/// The ranges of `[proxy] trusted_proxies`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<IpNetwork>,
}

/// The origin of a request as the forwarding headers sent upstream describe it: client, peer
/// and transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forwarding {
    /// The real client address.
    pub client: IpAddr,
    /// The TCP peer of the proxy.
    pub peer: IpAddr,
    /// Whether the peer is a trusted proxy, so its forwarding headers are kept and extended.
    pub peer_trusted: bool,
    /// Whether the peer's connection uses TLS.
    pub tls: bool,
}

impl TrustedProxies {
    /// Creates the list.
    pub fn new(networks: Vec<IpNetwork>) -> Self {
        Self { networks }
    }

    /// Returns whether `address` is a trusted proxy.
    pub fn contains(&self, address: IpAddr) -> bool {
        let host = IpNetwork::host(address.to_canonical());
        self.networks.iter().any(|network| network.contains(&host))
    }

    /// Finds the real client of a request from `peer`.
    ///
    /// # Errors
    ///
    /// [`ForwardedError`] when the peer is trusted and the entry that names the client is not
    /// an IP address, such as `unknown` or an obfuscated identifier.
    pub fn resolve(
        &self,
        peer: IpAddr,
        tls: bool,
        headers: &HeaderMap,
    ) -> Result<Forwarding, ForwardedError> {
        let peer = peer.to_canonical();
        let mut forwarding = Forwarding {
            client: peer,
            peer,
            peer_trusted: self.contains(peer),
            tls,
        };
        if !forwarding.peer_trusted {
            return Ok(forwarding);
        }

        let (header_name, entries) = if headers.contains_key(header::FORWARDED) {
            ("Forwarded", forwarded_for_entries(headers))
        } else {
            ("X-Forwarded-For", x_forwarded_for_entries(headers))
        };
        for entry in entries.iter().rev() {
            let Some(address) = parse_node(entry) else {
                return Err(ForwardedError {
                    header: header_name,
                    peer,
                    entry: entry.chars().take(64).collect(),
                });
            };
            forwarding.client = address;
            if !self.contains(address) {
                break;
            }
        }
        Ok(forwarding)
    }
}

/// Returns the `for=` values of every `Forwarded` element, in order.
fn forwarded_for_entries(headers: &HeaderMap) -> Vec<String> {
    let mut entries = Vec::new();
    for value in headers.get_all(header::FORWARDED) {
        let Ok(value) = value.to_str() else {
            entries.push(String::from("(non-ASCII)"));
            continue;
        };
        for element in value.split(',') {
            let node = element.split(';').find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| value.trim().trim_matches('"').to_owned())
            });
            // An element without `for=` says nothing about the client.
            if let Some(node) = node {
                entries.push(node);
            }
        }
    }
    entries
}

/// Returns the entries of every `X-Forwarded-For` header, in order.
fn x_forwarded_for_entries(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .flat_map(|value| {
            let text = value.to_str().unwrap_or("(non-ASCII)");
            text.split(',')
                .map(|entry| entry.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .filter(|entry| !entry.is_empty())
        .collect()
}

/// Parses a node: an IPv4 address with an optional port, or an IPv6 address, bracketed when
/// it has a port.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(address) = node.parse::<IpAddr>() {
        return Some(address.to_canonical());
    }
    if let Some(rest) = node.strip_prefix('[') {
        let (address, _) = rest.split_once(']')?;
        return address.parse::<IpAddr>().ok().map(|a| a.to_canonical());
    }
    let (address, port) = node.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    address.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// Sets the forwarding headers for the upstream: `X-Forwarded-For`, `-Proto`, `-Host` and
/// `Forwarded`. From a trusted proxy the received values are kept and this hop is appended;
/// from any other peer they are replaced. `original_host` is the host the client addressed.
pub fn set_forwarding_headers(
    headers: &mut HeaderMap,
    forwarding: &Forwarding,
    original_host: Option<HeaderValue>,
) {
    let proto = if forwarding.tls { "https" } else { "http" };

    // Each value is written into one string, which becomes the header value without a copy.
    let mut chain = String::with_capacity(IP_TEXT_CAPACITY);
    if forwarding.peer_trusted {
        for entry in x_forwarded_for_entries(headers) {
            chain.push_str(&entry);
            chain.push_str(", ");
        }
    }
    push_ip(&mut chain, forwarding.peer);
    if let Ok(value) = HeaderValue::try_from(chain) {
        headers.insert(X_FORWARDED_FOR, value);
    }

    let trusted_proto = forwarding
        .peer_trusted
        .then(|| headers.get(X_FORWARDED_PROTO).cloned())
        .flatten();
    headers.insert(
        X_FORWARDED_PROTO,
        trusted_proto.unwrap_or(HeaderValue::from_static(proto)),
    );
    let trusted_host = forwarding
        .peer_trusted
        .then(|| headers.get(X_FORWARDED_HOST).cloned())
        .flatten();
    match trusted_host.or(original_host.clone()) {
        Some(host) => headers.insert(X_FORWARDED_HOST, host),
        None => headers.remove(X_FORWARDED_HOST),
    };

    let host = original_host.as_ref().and_then(|host| host.to_str().ok());
    let mut forwarded = String::with_capacity(IP_TEXT_CAPACITY + 32 + host.map_or(0, str::len));
    if forwarding.peer_trusted {
        let received = headers
            .get_all(header::FORWARDED)
            .iter()
            .filter_map(|value| value.to_str().ok());
        for (index, value) in received.enumerate() {
            if index > 0 {
                forwarded.push_str(", ");
            }
            forwarded.push_str(value);
        }
        if !forwarded.is_empty() {
            forwarded.push_str(", ");
        }
    }
    match forwarding.peer {
        IpAddr::V4(address) => {
            forwarded.push_str("for=");
            push_ipv4(&mut forwarded, address);
        }
        IpAddr::V6(address) => {
            forwarded.push_str("for=\"[");
            push_ip(&mut forwarded, IpAddr::V6(address));
            forwarded.push_str("]\"");
        }
    }
    forwarded.push_str(";proto=");
    forwarded.push_str(proto);
    // A host is a token or a quoted string, and quoting is always valid.
    if let Some(host) = host.filter(|host| !host.contains(['"', '\\'])) {
        forwarded.push_str(";host=\"");
        forwarded.push_str(host);
        forwarded.push('"');
    }
    if let Ok(value) = HeaderValue::try_from(forwarded) {
        headers.insert(header::FORWARDED, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(ranges: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            ranges
                .iter()
                .map(|range| range.parse().expect("valid range"))
                .collect(),
        )
    }

    fn address(text: &str) -> IpAddr {
        text.parse().expect("valid address")
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let trusted = proxies(&["198.51.100.0/24"]);
        let request = headers(&[("x-forwarded-for", "203.0.113.9")]);

        let forwarding = trusted
            .resolve(address("203.0.113.50"), false, &request)
            .expect("resolves");

        assert_eq!(forwarding.client, address("203.0.113.50"));
        assert!(!forwarding.peer_trusted);
    }

    #[test]
    fn rightmost_untrusted_entry_is_the_client() {
        let trusted = proxies(&["198.51.100.0/24"]);
        // The client wrote the first entry itself; the trusted proxy appended the second and
        // a second trusted hop the third.
        let request = headers(&[("x-forwarded-for", "203.0.113.1, 203.0.113.7, 198.51.100.3")]);

        let forwarding = trusted
            .resolve(address("198.51.100.2"), false, &request)
            .expect("resolves");

        assert_eq!(forwarding.client, address("203.0.113.7"));
    }

    #[test]
    fn forwarded_header_takes_precedence() {
        let trusted = proxies(&["198.51.100.0/24"]);
        let request = headers(&[
            (
                "forwarded",
                "for=203.0.113.1, for=\"[2001:db8::7]:4711\";proto=https",
            ),
            ("x-forwarded-for", "203.0.113.99"),
        ]);

        let forwarding = trusted
            .resolve(address("198.51.100.2"), false, &request)
            .expect("resolves");

        assert_eq!(forwarding.client, address("2001:db8::7"));
    }

    #[test]
    fn trusted_peer_without_headers_is_the_client() {
        let trusted = proxies(&["198.51.100.0/24"]);

        let forwarding = trusted
            .resolve(address("198.51.100.2"), false, &HeaderMap::new())
            .expect("resolves");

        assert_eq!(forwarding.client, address("198.51.100.2"));
    }

    #[test]
    fn unknown_client_entry_is_rejected() {
        let trusted = proxies(&["198.51.100.0/24"]);
        let request = headers(&[("forwarded", "for=unknown")]);

        let error = trusted
            .resolve(address("198.51.100.2"), false, &request)
            .expect_err("`unknown` is no address");

        assert_eq!(error.entry, "unknown");
        assert_eq!(error.header, "Forwarded");
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(parse_node("203.0.113.5:8080"), Some(address("203.0.113.5")));
        assert_eq!(
            parse_node("[2001:db8::1]:443"),
            Some(address("2001:db8::1"))
        );
        assert_eq!(parse_node("2001:db8::1"), Some(address("2001:db8::1")));
        assert_eq!(parse_node("_hidden"), None);
    }

    #[test]
    fn untrusted_values_are_replaced() {
        let mut request = headers(&[
            ("x-forwarded-for", "203.0.113.66"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=203.0.113.66"),
        ]);
        let forwarding = Forwarding {
            client: address("203.0.113.50"),
            peer: address("203.0.113.50"),
            peer_trusted: false,
            tls: false,
        };

        set_forwarding_headers(
            &mut request,
            &forwarding,
            Some(HeaderValue::from_static("api.example")),
        );

        assert_eq!(request[X_FORWARDED_FOR], "203.0.113.50");
        assert_eq!(request[X_FORWARDED_PROTO], "http");
        assert_eq!(request[X_FORWARDED_HOST], "api.example");
        assert_eq!(
            request[header::FORWARDED],
            "for=203.0.113.50;proto=http;host=\"api.example\""
        );
    }

    #[test]
    fn trusted_values_are_extended() {
        let mut request = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=203.0.113.7;proto=https"),
        ]);
        let forwarding = Forwarding {
            client: address("203.0.113.7"),
            peer: address("2001:db8::2"),
            peer_trusted: true,
            tls: false,
        };

        set_forwarding_headers(&mut request, &forwarding, None);

        assert_eq!(request[X_FORWARDED_FOR], "203.0.113.7, 2001:db8::2");
        assert_eq!(request[X_FORWARDED_PROTO], "https");
        assert_eq!(
            request[header::FORWARDED],
            "for=203.0.113.7;proto=https, for=\"[2001:db8::2]\";proto=http"
        );
    }
}
