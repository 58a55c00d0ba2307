//! `POST /v1/bans/import`: a whole ban list in one request.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::{
    AdminState, ApiError, blocking, json_response, manual_reason, parse_address, parse_ttl_seconds,
};
use crate::admin::api::{ImportBansRequest, ImportBansResponse, RejectedAddress};
use crate::network::IpNetwork;
use crate::store::BanOrigin;
use crate::telemetry::ErrorChain;

/// Maximum size of an import request body: room for about two million IPv4 addresses or
/// one million IPv6 addresses as JSON strings. Only the socket's owner can send one.
pub(super) const MAX_IMPORT_BODY_BYTES: usize = 64 * 1024 * 1024;

pub(super) async fn import_bans(
    state: &AdminState,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let body = Limited::new(request.into_body(), MAX_IMPORT_BODY_BYTES)
        .collect()
        .await
        .map_err(|error| {
            ApiError::bad_request(format!(
                "failed to read the request body (at most {MAX_IMPORT_BODY_BYTES} bytes): \
                 {error}; split the import into smaller files"
            ))
        })?
        .to_bytes();
    let import: ImportBansRequest = serde_json::from_slice(&body).map_err(|error| {
        ApiError::bad_request(format!(
            "invalid request body: {error}; expected {{\"addresses\": [\"192.0.2.7\", \
             \"198.51.100.0/24\"], \"ttl_seconds\": 600}} (ttl_seconds null for bans that \
             never expire)"
        ))
    })?;
    drop(body);

    let ttl = parse_ttl_seconds(import.ttl_seconds)?;
    let reason = manual_reason(import.reason);
    let mut rejected = Vec::new();
    let mut networks = Vec::with_capacity(import.addresses.len());
    // Positions in `import.addresses` of the entries of `networks`.
    let mut positions = Vec::with_capacity(import.addresses.len());
    for (index, text) in import.addresses.iter().enumerate() {
        match parse_address(text) {
            Ok(network) => {
                networks.push(network);
                positions.push(index);
            }
            Err(error) => rejected.push(RejectedAddress {
                index,
                address: text.clone(),
                error: error.message,
            }),
        }
    }

    let bans = Arc::clone(&state.bans);
    let summary =
        blocking(move || bans.apply_all(&networks, ttl, BanOrigin::Manual, &reason)).await??;

    rejected.extend(summary.rejected.into_iter().map(|ban| {
        let index = positions.get(ban.index).copied().unwrap_or(ban.index);
        RejectedAddress {
            index,
            address: rejected_text(&import.addresses, index, ban.address),
            error: ErrorChain(&ban.error).to_string(),
        }
    }));
    rejected.sort_by_key(|rejected| rejected.index);

    Ok(json_response(
        StatusCode::OK,
        &ImportBansResponse {
            applied: summary.applied,
            rejected,
        },
    ))
}

/// Returns the address at `index` as the request sent it, or the parsed network.
fn rejected_text(addresses: &[String], index: usize, network: IpNetwork) -> String {
    addresses
        .get(index)
        .cloned()
        .unwrap_or_else(|| network.to_string())
}
