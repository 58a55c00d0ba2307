//! JSON bodies of the admin API, shared by the server and `fwctl`.
//!
//! | method and path | request body | response body |
//! | --- | --- | --- |
//! | `GET /v1/bans` | | [`BanList`] |
//! | `POST /v1/bans` | [`AddBanRequest`] | [`BanView`], status 201 |
//! | `POST /v1/bans/import` | [`ImportBansRequest`] | [`ImportBansResponse`] |
//! | `DELETE /v1/bans/{address}` | | [`BanView`] of the removed ban, or 404 |
//! | `GET /v1/allow` | | [`AllowList`] |
//! | `POST /v1/allow` | [`AddAllowRequest`] | [`AllowView`], status 201 |
//! | `DELETE /v1/allow/{address}` | | [`AllowView`] of the removed entry, or 404 |
//! | `GET /v1/stats?top=N` | | [`Stats`] |
//!
//! `{address}` is an address or a CIDR range, such as `198.51.100.0/24`.
//!
//! Every error is an [`ErrorBody`] with a 4xx or 5xx status.

use std::net::IpAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::bans::{AllowEntry, unix_ms};
use crate::kernel::{SourceTotal, VerdictTotal};
use crate::network::IpNetwork;
use crate::store::{BanOrigin, BanRecord};

/// Default number of sources in [`Stats::top_sources`].
pub const DEFAULT_TOP_SOURCES: usize = 10;
/// Maximum number of sources in [`Stats::top_sources`].
pub const MAX_TOP_SOURCES: usize = 1000;

/// One ban in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanView {
    /// The banned address or range, canonical.
    pub address: IpNetwork,
    /// Origin of the ban.
    pub origin: BanOrigin,
    /// Short human-readable reason.
    pub reason: String,
    /// Creation time in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Expiry in milliseconds since the Unix epoch; `null` for a ban that never expires.
    pub expires_at_ms: Option<u64>,
    /// Seconds left until expiry, rounded up, when the response was made; `null` for never.
    pub remaining_seconds: Option<u64>,
}

impl BanView {
    /// Describes `record` as of `now`.
    pub fn from_record(record: &BanRecord, now: SystemTime) -> Self {
        let now_ms = unix_ms(now);
        let remaining_seconds = record
            .expires_at_ms
            .map(|expires| expires.saturating_sub(now_ms).div_ceil(1000));
        Self {
            address: record.address,
            origin: record.origin,
            reason: record.reason.clone(),
            created_at_ms: record.created_at_ms,
            expires_at_ms: record.expires_at_ms,
            remaining_seconds,
        }
    }
}

/// Response of `GET /v1/bans`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanList {
    /// The bans in force, ordered by address text.
    pub bans: Vec<BanView>,
}

/// Request body of `POST /v1/bans`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBanRequest {
    /// The address or CIDR range to ban, IPv4 or IPv6. An IPv4-mapped IPv6 address is stored
    /// as IPv4, and a range with host bits set is stored as its network (`198.51.100.0/24`).
    pub address: String,
    /// Duration of the ban in seconds; `null` for a ban that never expires. The key is
    /// required, so that a forgotten TTL is an error instead of a permanent ban.
    #[serde(deserialize_with = "Option::deserialize")]
    pub ttl_seconds: Option<u64>,
    /// Optional reason, shown by `fwctl bans list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Request body of `POST /v1/bans/import`: many bans with one TTL and reason, stored in one
/// transaction and written to the kernel with batched map updates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportBansRequest {
    /// Addresses or CIDR ranges to ban, as in [`AddBanRequest::address`].
    pub addresses: Vec<String>,
    /// Duration of every ban in seconds; `null` for bans that never expire. Required, as in
    /// [`AddBanRequest::ttl_seconds`].
    #[serde(deserialize_with = "Option::deserialize")]
    pub ttl_seconds: Option<u64>,
    /// Optional reason, shown by `fwctl bans list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Response of `POST /v1/bans/import`. A kernel failure, such as a full map, is an
/// [`ErrorBody`] instead, and every ban of the request is then stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportBansResponse {
    /// Addresses banned, or already banned for at least as long.
    pub applied: usize,
    /// Addresses not banned, in request order.
    pub rejected: Vec<RejectedAddress>,
}

/// An address of an import that was not banned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedAddress {
    /// Position in [`ImportBansRequest::addresses`], counted from 0.
    pub index: usize,
    /// The address as sent.
    pub address: String,
    /// The reason for the rejection, as an error message.
    pub error: String,
}

/// One allowlist entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowView {
    /// The allowlisted address or range, canonical.
    pub address: IpNetwork,
    /// Whether the entry comes from the config file, which the admin API cannot remove.
    pub configured: bool,
}

impl From<AllowEntry> for AllowView {
    fn from(entry: AllowEntry) -> Self {
        Self {
            address: entry.address,
            configured: entry.configured,
        }
    }
}

/// Response of `GET /v1/allow`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowList {
    /// Every allowlist entry, ordered by address.
    pub entries: Vec<AllowView>,
}

/// Request body of `POST /v1/allow`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddAllowRequest {
    /// The address or CIDR range to allowlist, IPv4 or IPv6.
    pub address: String,
}

/// Counters of one XDP verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictView {
    /// The verdict's label, such as `passed` or `dropped_banned`.
    pub verdict: String,
    /// Packets counted.
    pub packets: u64,
    /// Bytes of the frames counted.
    pub bytes: u64,
}

impl From<&VerdictTotal> for VerdictView {
    fn from(total: &VerdictTotal) -> Self {
        Self {
            verdict: total.verdict.label().to_owned(),
            packets: total.counter.packets,
            bytes: total.counter.bytes,
        }
    }
}

/// Counters of one source address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceView {
    /// The source, canonical.
    pub address: IpAddr,
    /// Packets passed.
    pub passed_packets: u64,
    /// Bytes passed.
    pub passed_bytes: u64,
    /// Packets dropped.
    pub dropped_packets: u64,
    /// Bytes dropped.
    pub dropped_bytes: u64,
}

impl From<&SourceTotal> for SourceView {
    fn from(total: &SourceTotal) -> Self {
        Self {
            address: total.addr.to_canonical(),
            passed_packets: total.counters.passed_packets,
            passed_bytes: total.counters.passed_bytes,
            dropped_packets: total.counters.dropped_packets,
            dropped_bytes: total.counters.dropped_bytes,
        }
    }
}

/// Response of `GET /v1/stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// XDP verdict counters, one per verdict.
    pub verdicts: Vec<VerdictView>,
    /// Sources with the most packets, most first.
    pub top_sources: Vec<SourceView>,
    /// Number of bans in force.
    pub active_bans: usize,
}

/// Body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Message saying what failed and on which input.
    pub error: String,
}
