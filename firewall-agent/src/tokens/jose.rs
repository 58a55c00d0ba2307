//! Parsing of a compact JWS: the syntax checks that run before decoding, the header rules,
//! and JSON objects that reject repeated members.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::config::Algorithm;
use super::error::TokenError;

/// Header members that point at key material outside the configured JWKS (RFC 7515 sections
/// 4.1.2 to 4.1.6). A token carrying any of them is rejected rather than verified against the
/// JWKS, so that no code path can be tricked into following them.
const KEY_REFERENCE_HEADERS: [&str; 4] = ["jku", "x5u", "jwk", "x5c"];

/// The three segments of a compact JWS whose syntax was checked.
#[derive(Debug)]
pub struct CompactJws<'a> {
    /// `BASE64URL(header) "." BASE64URL(payload)`: the signed bytes.
    pub signing_input: &'a str,
    /// The encoded header.
    pub header: &'a str,
    /// The encoded payload.
    pub payload: &'a str,
    /// The encoded signature.
    pub signature: &'a str,
}

/// Splits `token` into its segments after checking its size and character set, before anything
/// is decoded.
///
/// # Errors
///
/// [`TokenError::TooLarge`] above `max_bytes`; [`TokenError::Malformed`] unless the token is
/// three non-empty base64url segments (no padding) separated by exactly two dots.
pub fn split_compact(token: &str, max_bytes: usize) -> Result<CompactJws<'_>, TokenError> {
    if token.len() > max_bytes {
        return Err(TokenError::TooLarge);
    }
    let charset_valid = token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !charset_valid {
        return Err(TokenError::Malformed);
    }

    let mut segments = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(TokenError::Malformed);
    };
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err(TokenError::Malformed);
    }

    Ok(CompactJws {
        signing_input: &token[..header.len() + 1 + payload.len()],
        header,
        payload,
        signature,
    })
}

/// Decodes one base64url segment without padding; non-canonical trailing bits are rejected.
pub fn decode_segment(segment: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::Malformed)
}

/// Parses `bytes` as one JSON object and rejects a repeated member, so that two `alg` or two
/// `aud` members cannot be read differently by two parsers.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, TokenError> {
    serde_json::from_slice::<StrictObject>(bytes)
        .map(|object| object.0)
        .map_err(|_| TokenError::InvalidJson)
}

/// The header members the checks use.
#[derive(Debug, PartialEq, Eq)]
pub struct Header {
    /// The algorithm the header claims, already limited to ours.
    pub algorithm: Algorithm,
    /// The key id.
    pub kid: String,
}

/// Checks a decoded header, except `typ`, and returns its algorithm and key id.
///
/// # Errors
///
/// The [`TokenError`] of the first rule the header breaks.
pub fn check_header(header: &Map<String, Value>) -> Result<Header, TokenError> {
    let algorithm = match header.get("alg") {
        Some(Value::String(name)) => {
            Algorithm::from_name(name).ok_or(TokenError::UnsupportedAlgorithm)?
        }
        _ => return Err(TokenError::UnsupportedAlgorithm),
    };
    if KEY_REFERENCE_HEADERS
        .iter()
        .any(|name| header.contains_key(*name))
    {
        return Err(TokenError::UntrustedKeyHeader);
    }
    // No JWS extension is understood here, so any `crit` list (even an empty one, which RFC
    // 7515 section 4.1.11 forbids) is rejected.
    if header.contains_key("crit") {
        return Err(TokenError::CriticalHeader);
    }

    let kid = match header.get("kid") {
        Some(Value::String(kid)) if !kid.is_empty() => kid.clone(),
        _ => return Err(TokenError::UnknownKey),
    };
    Ok(Header { algorithm, kid })
}

/// Checks the header's `typ`: `at+jwt` or `application/at+jwt` in any case (RFC 9068 section
/// 4), and also `JWT` when `accept_typ_jwt` is set.
///
/// # Errors
///
/// [`TokenError::InvalidType`] for any other value, or none.
pub fn check_type(header: &Map<String, Value>, accept_typ_jwt: bool) -> Result<(), TokenError> {
    let Some(Value::String(typ)) = header.get("typ") else {
        return Err(TokenError::InvalidType);
    };
    let media_type = typ
        .get(..12)
        .filter(|prefix| prefix.eq_ignore_ascii_case("application/"))
        .map_or(typ.as_str(), |_| &typ[12..]);
    let accepted = media_type.eq_ignore_ascii_case("at+jwt")
        || (accept_typ_jwt && media_type.eq_ignore_ascii_case("jwt"));
    if accepted {
        Ok(())
    } else {
        Err(TokenError::InvalidType)
    }
}

/// A JSON object whose deserialisation fails on a repeated member name.
struct StrictObject(Map<String, Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(StrictObjectVisitor)
    }
}

struct StrictObjectVisitor;

impl<'de> Visitor<'de> for StrictObjectVisitor {
    type Value = StrictObject;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON object without repeated members")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut object = Map::new();
        while let Some((name, value)) = access.next_entry::<String, Value>()? {
            if object.contains_key(&name) {
                return Err(de::Error::custom(format_args!("repeated member `{name}`")));
            }
            object.insert(name, value);
        }
        Ok(StrictObject(object))
    }
}
