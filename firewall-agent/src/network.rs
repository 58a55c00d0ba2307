//! [`IpNetwork`]: one address or a CIDR range, in the canonical form the agent stores, shows and
//! writes into the kernel maps.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 or IPv6 network: an address and a prefix length.
///
/// Values are canonical, so two spellings of one network compare equal:
/// - bits past the prefix are zero (`198.51.100.7/24` becomes `198.51.100.0/24`);
/// - an IPv4-mapped IPv6 network (`::ffff:198.51.100.0/120`) becomes IPv4 (`198.51.100.0/24`).
///
/// A network of one address (`/32` or `/128`) is written as the bare address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpNetwork {
    address: IpAddr,
    prefix_len: u8,
}

/// Error from parsing or building an [`IpNetwork`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid address or range `{input}`: {reason}; expected an address such as 198.51.100.7 or \
     2001:db8::1, or a CIDR range such as 198.51.100.0/24"
)]
pub struct InvalidNetwork {
    /// The text or value that failed, as given.
    pub input: String,
    /// Reason the input is invalid.
    pub reason: &'static str,
}

/// Length of the IPv4-mapped prefix `::ffff:0:0/96`, in bits.
const IPV4_MAPPED_PREFIX_LEN: u8 = 96;

impl IpNetwork {
    /// Builds the canonical network of `address` with `prefix_len` bits.
    ///
    /// # Errors
    ///
    /// [`InvalidNetwork`] when `prefix_len` exceeds the address length (32 or 128), or when an
    /// IPv4-mapped address has a prefix shorter than the mapped prefix (96 bits).
    pub fn new(address: IpAddr, prefix_len: u8) -> Result<Self, InvalidNetwork> {
        let invalid = |reason| InvalidNetwork {
            input: format!("{address}/{prefix_len}"),
            reason,
        };
        if prefix_len > max_prefix_len(address) {
            return Err(invalid("the prefix length exceeds the address length"));
        }

        let (address, prefix_len) = match address {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
                if prefix_len < IPV4_MAPPED_PREFIX_LEN {
                    return Err(invalid(
                        "an IPv4-mapped range needs a prefix of at least 96 bits",
                    ));
                }
                (address.to_canonical(), prefix_len - IPV4_MAPPED_PREFIX_LEN)
            }
            _ => (address, prefix_len),
        };

        Ok(Self {
            address: truncate(address, prefix_len),
            prefix_len,
        })
    }

    /// Returns the network of the single address `address`.
    pub fn host(address: IpAddr) -> Self {
        let address = address.to_canonical();
        Self {
            address,
            prefix_len: max_prefix_len(address),
        }
    }

    /// Returns the first address of the network.
    pub fn address(&self) -> IpAddr {
        self.address
    }

    /// Returns the prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Returns whether the network contains exactly one address.
    pub fn is_host(&self) -> bool {
        self.prefix_len == max_prefix_len(self.address)
    }

    /// Returns whether `address` lies in the network. IPv4-mapped addresses count as IPv4.
    pub fn contains_address(&self, address: IpAddr) -> bool {
        self.contains(&Self::host(address))
    }

    /// Returns whether every address of `other` lies in this network.
    pub fn contains(&self, other: &IpNetwork) -> bool {
        self.address.is_ipv4() == other.address.is_ipv4()
            && other.prefix_len >= self.prefix_len
            && truncate(other.address, self.prefix_len) == self.address
    }
}

impl From<IpAddr> for IpNetwork {
    fn from(address: IpAddr) -> Self {
        Self::host(address)
    }
}

impl From<Ipv4Addr> for IpNetwork {
    fn from(address: Ipv4Addr) -> Self {
        Self::host(address.into())
    }
}

impl From<Ipv6Addr> for IpNetwork {
    fn from(address: Ipv6Addr) -> Self {
        Self::host(address.into())
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.address)
        } else {
            write!(f, "{}/{}", self.address, self.prefix_len)
        }
    }
}

impl FromStr for IpNetwork {
    type Err = InvalidNetwork;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| InvalidNetwork {
            input: text.to_owned(),
            reason,
        };
        let (address_text, prefix_text) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address_text
            .parse()
            .map_err(|_| invalid("not an IPv4 or IPv6 address"))?;

        let Some(prefix_text) = prefix_text else {
            return Ok(Self::host(address));
        };
        // `u8::from_str` accepts a leading `+`, which no CIDR notation has.
        if prefix_text.is_empty() || !prefix_text.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(invalid("the prefix length is not a number"));
        }
        let prefix_len: u8 = prefix_text
            .parse()
            .map_err(|_| invalid("the prefix length exceeds the address length"))?;
        Self::new(address, prefix_len).map_err(|error| invalid(error.reason))
    }
}

impl Serialize for IpNetwork {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNetwork {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

fn max_prefix_len(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Clears the bits of `address` past the first `prefix_len`.
fn truncate(address: IpAddr, prefix_len: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// Appends `address` in its standard text form, as `Display` writes it.
///
/// The proxy writes the client address into forwarding headers and rate-limit keys on every
/// request. `Ipv4Addr`'s `Display` goes through the formatting machinery for each octet, which
/// costs more than the rest of building those values, so IPv4 addresses are written here
/// digit by digit.
pub fn push_ip(text: &mut String, address: IpAddr) {
    match address {
        IpAddr::V4(v4) => push_ipv4(text, v4),
        IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            // Writing into a `String` does not fail.
            let _ = write!(text, "{v6}");
        }
    }
}

/// Appends `address` in dotted decimal form, such as `198.51.100.7`.
pub fn push_ipv4(text: &mut String, address: Ipv4Addr) {
    for (index, octet) in address.octets().into_iter().enumerate() {
        if index > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(text: &str) -> IpNetwork {
        text.parse().expect("valid network")
    }

    #[test]
    fn range_is_canonicalised() {
        assert_eq!(network("198.51.100.7/24").to_string(), "198.51.100.0/24");
        assert_eq!(network("2001:db8::7/32").to_string(), "2001:db8::/32");
        assert_eq!(network("203.0.113.9/0").to_string(), "0.0.0.0/0");
    }

    #[test]
    fn host_prefix_is_shown_as_address() {
        assert_eq!(network("198.51.100.7/32").to_string(), "198.51.100.7");
        assert_eq!(network("2001:db8::1/128").to_string(), "2001:db8::1");
        assert!(network("198.51.100.7").is_host());
        assert!(!network("198.51.100.0/31").is_host());
    }

    #[test]
    fn mapped_ipv4_becomes_ipv4() {
        assert_eq!(network("::ffff:198.51.100.7").to_string(), "198.51.100.7");
        assert_eq!(
            network("::ffff:198.51.100.7/120").to_string(),
            "198.51.100.0/24"
        );
    }

    #[test]
    fn invalid_text_is_rejected() {
        for text in [
            "",
            "198.51.100.300",
            "198.51.100.0/33",
            "2001:db8::/129",
            "198.51.100.0/",
            "198.51.100.0/+8",
            "198.51.100.0/24/8",
            "::ffff:198.51.100.0/95",
            "example.com",
        ] {
            let error = text.parse::<IpNetwork>().expect_err(text);
            assert_eq!(error.input, text);
        }
    }

    #[test]
    fn containment_follows_prefix() {
        let range = network("198.51.100.0/24");
        assert!(range.contains_address("198.51.100.255".parse().expect("address")));
        assert!(!range.contains_address("198.51.101.0".parse().expect("address")));
        assert!(range.contains(&network("198.51.100.128/25")));
        assert!(!range.contains(&network("198.51.0.0/16")));
        assert!(!range.contains(&network("::ffff:0:0/96")));
        assert!(range.contains_address("::ffff:198.51.100.1".parse().expect("address")));
        assert!(!network("2001:db8::/32").contains(&network("198.51.100.0/24")));
    }

    #[test]
    fn serde_round_trips_text() {
        let json = serde_json::to_string(&network("198.51.100.9/24")).expect("serialises");
        assert_eq!(json, "\"198.51.100.0/24\"");
        let back: IpNetwork = serde_json::from_str("\"198.51.100.0/24\"").expect("deserialises");
        assert_eq!(back, network("198.51.100.0/24"));
        assert!(serde_json::from_str::<IpNetwork>("\"198.51.100.0/40\"").is_err());
    }

    #[test]
    fn pushed_ipv4_matches_display() {
        // Every octet value in every position, with the other octets at 0 and 255.
        for position in 0..4 {
            for filler in [0u8, 255] {
                for octet in 0..=u8::MAX {
                    let mut octets = [filler; 4];
                    octets[position] = octet;
                    let address = Ipv4Addr::from(octets);
                    let mut text = String::from("for=");

                    push_ipv4(&mut text, address);

                    assert_eq!(text, format!("for={address}"));
                }
            }
        }
    }

    #[test]
    fn pushed_ip_matches_display() {
        for text in [
            "198.51.100.7",
            "0.0.0.0",
            "2001:db8::1",
            "::ffff:198.51.100.7",
            "::1",
        ] {
            let address: IpAddr = text.parse().expect("valid address");
            let mut pushed = String::new();

            push_ip(&mut pushed, address);

            assert_eq!(pushed, address.to_string());
        }
    }
}
