//! Protocol upgrades such as WebSocket (RFC 9110, section 7.8).
//!
//! A request that offers an upgrade (`Connection: upgrade` and an `Upgrade` header, over
//! HTTP/1.1) passes the pipeline like any other and is forwarded with its `Upgrade` header.
//! Only when the upstream responds `101 Switching Protocols` with a protocol the client offered
//! does the proxy respond 101 too and relay both connections raw, until either side closes or
//! the connection stays idle for the idle timeout. A 101 to any other request gets 502, and its
//! connection to the upstream is closed without reading from it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use super::ProxyBody;
use super::connections::Activity;
use super::framing::{UpgradeDecision, UpgradeGate};
use crate::telemetry::ErrorChain;

/// Protocols removed from a forwarded `Upgrade` header. `h2c` would turn the connection into
/// HTTP/2 requests that reach the upstream without passing the pipeline.
const NEVER_FORWARDED: [&str; 1] = ["h2c"];

/// Error from accepting an upstream's `101 Switching Protocols`, which is then not relayed.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The request did not offer an upgrade, so the proxy did not forward one.
    #[error("upstream switched protocols for a request that offered no upgrade")]
    NotOffered,
    /// The 101 response has no `Upgrade` header naming the new protocol.
    #[error("upstream switched protocols without an upgrade header")]
    MissingProtocol,
    /// The 101 response names a protocol that the client did not offer.
    #[error("upstream switched to protocol `{protocol}`, which the client did not offer")]
    ProtocolNotOffered { protocol: String },
}

/// The upgrade state of one client connection: the framing guard's gate and what to do with
/// the stream when hyper hands it over.
#[derive(Debug)]
pub(super) struct ConnectionUpgrades {
    gate: Arc<UpgradeGate>,
    handover: Mutex<Option<Handover>>,
}

/// The action taken on a client stream that hyper hands over after its last request.
///
/// hyper hands the stream over instead of shutting it down whenever the connection carried a
/// request with an `Upgrade` header, even one that got no 101.
#[derive(Debug)]
pub(super) enum Handover {
    /// The connection switched protocols: relay it.
    Relay(Relay),
    /// The connection did not switch: shut the stream down, which writes the framing guard's
    /// error response if it has one.
    Close(OnUpgrade),
}

impl Handover {
    /// Relays or closes the stream once hyper hands it over. `activity` and `idle_timeout`
    /// bound the wait on a client that stops reading or sending.
    pub(super) async fn run(self, activity: &Activity, idle_timeout: Duration) {
        match self {
            Handover::Relay(relay) => relay.run(activity, idle_timeout).await,
            Handover::Close(downstream) => {
                let Ok(stream) = downstream.await else {
                    return;
                };
                let mut stream = TokioIo::new(stream);
                tokio::select! {
                    _ = stream.shutdown() => {}
                    () = activity.idle(idle_timeout) => {}
                }
            }
        }
    }
}

impl ConnectionUpgrades {
    /// Creates the state of a connection whose framing guard waits on `gate`.
    pub(super) fn new(gate: Arc<UpgradeGate>) -> Arc<Self> {
        Arc::new(Self {
            gate,
            handover: Mutex::new(None),
        })
    }

    /// Takes what to do with the stream after the connection's last request, if hyper hands
    /// it over.
    pub(super) fn take_handover(&self) -> Option<Handover> {
        self.handover
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn set_handover(&self, handover: Handover) {
        *self.handover.lock().unwrap_or_else(PoisonError::into_inner) = Some(handover);
    }
}

/// The raw relay between a client and the upstream after both switched protocols.
pub(super) struct Relay {
    downstream: OnUpgrade,
    upstream: OnUpgrade,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").finish_non_exhaustive()
    }
}

impl Relay {
    /// Copies bytes both ways until either side closes or `activity` shows no bytes moving
    /// for `idle_timeout`.
    async fn run(self, activity: &Activity, idle_timeout: Duration) {
        let (downstream, upstream) = match tokio::try_join!(self.downstream, self.upstream) {
            Ok(both) => both,
            Err(error) => {
                tracing::debug!(error = %ErrorChain(&error), "protocol switch did not complete");
                return;
            }
        };
        let mut downstream = TokioIo::new(downstream);
        let mut upstream = TokioIo::new(upstream);
        tokio::select! {
            result = tokio::io::copy_bidirectional(&mut downstream, &mut upstream) => match result {
                Ok((from_client, from_upstream)) => tracing::debug!(
                    from_client, from_upstream, "upgraded connection closed"
                ),
                Err(error) => tracing::debug!(
                    error = %ErrorChain(&error), "upgraded connection ended with an error"
                ),
            },
            () = activity.idle(idle_timeout) => {
                tracing::debug!("closing an idle upgraded connection");
            }
        }
    }
}

/// A request's part in a protocol upgrade.
///
/// Every HTTP/1.1 request with an `Upgrade` header holds the connection's gate, because the
/// framing guard reads nothing after such a request until the gate is decided. Dropping the
/// ticket without [`UpgradeTicket::switch`] decides that the connection did not switch.
pub(super) struct UpgradeTicket {
    upgradable: Option<Upgradable>,
}

/// The parts of a request that hyper marked as upgradable.
struct Upgradable {
    connection: Arc<ConnectionUpgrades>,
    downstream: OnUpgrade,
    /// The offered protocols that are forwarded, as an `Upgrade` value, or `None` when the
    /// request offers none that the proxy forwards.
    protocols: Option<HeaderValue>,
}

impl UpgradeTicket {
    /// Creates the ticket of `request`, taking its upgrade handle if hyper gave it one.
    pub(super) fn new(
        connection: &Arc<ConnectionUpgrades>,
        request: &mut Request<Incoming>,
    ) -> Self {
        // hyper gives an upgrade handle to the same requests.
        if request.version() != Version::HTTP_11 || !request.headers().contains_key(header::UPGRADE)
        {
            return Self { upgradable: None };
        }
        Self {
            upgradable: Some(Upgradable {
                connection: Arc::clone(connection),
                protocols: offered_protocols(request.headers()),
                downstream: hyper::upgrade::on(&mut *request),
            }),
        }
    }

    /// Returns the `Upgrade` value to forward, if the request offers an upgrade.
    pub(super) fn protocols(&self) -> Option<&HeaderValue> {
        self.upgradable.as_ref()?.protocols.as_ref()
    }

    /// Accepts the upstream's `101 Switching Protocols` and returns the 101 for the client.
    /// The relay starts when the request's connection hands over its stream.
    ///
    /// # Errors
    ///
    /// [`UpgradeError`] when the request offered no upgrade or the response does not name an
    /// offered protocol. The upstream connection is then dropped without being read.
    pub(super) fn switch(
        mut self,
        mut response: Response<Incoming>,
    ) -> Result<Response<ProxyBody>, UpgradeError> {
        let protocols = self.protocols().ok_or(UpgradeError::NotOffered)?;
        check_switched_protocols(response.headers(), protocols)?;
        // `protocols` was set, so `upgradable` is too; the `else` arm is a safeguard.
        let Some(upgradable) = self.upgradable.take() else {
            return Err(UpgradeError::NotOffered);
        };

        let relay = Relay {
            downstream: upgradable.downstream,
            upstream: hyper::upgrade::on(&mut response),
        };
        upgradable.connection.set_handover(Handover::Relay(relay));
        upgradable.connection.gate.decide(UpgradeDecision::Switched);
        Ok(response.map(|_| {
            Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed()
        }))
    }
}

impl Drop for UpgradeTicket {
    fn drop(&mut self) {
        if let Some(upgradable) = self.upgradable.take() {
            let connection = upgradable.connection;
            connection.set_handover(Handover::Close(upgradable.downstream));
            connection.gate.decide(UpgradeDecision::NotSwitched);
        }
    }
}

/// Returns the protocols that a request offers and the proxy forwards, as an `Upgrade` value,
/// or `None` when `Connection` lacks the `upgrade` option or no protocol is left.
fn offered_protocols(headers: &HeaderMap) -> Option<HeaderValue> {
    let connection_upgrade = list_items(headers, &header::CONNECTION)
        .any(|option| option.eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return None;
    }
    let protocols: Vec<&str> = list_items(headers, &header::UPGRADE)
        .filter(|protocol| {
            let name = protocol.split('/').next().unwrap_or(protocol);
            !NEVER_FORWARDED
                .iter()
                .any(|never| name.eq_ignore_ascii_case(never))
        })
        .collect();
    if protocols.is_empty() {
        return None;
    }
    HeaderValue::from_str(&protocols.join(", ")).ok()
}

/// Checks that a 101 response names only protocols from `offered`.
fn check_switched_protocols(
    response: &HeaderMap,
    offered: &HeaderValue,
) -> Result<(), UpgradeError> {
    let offered: Vec<&str> = offered
        .to_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .collect();
    let mut switched = list_items(response, &header::UPGRADE).peekable();
    if switched.peek().is_none() {
        return Err(UpgradeError::MissingProtocol);
    }
    for protocol in switched {
        if !offered
            .iter()
            .any(|item| item.eq_ignore_ascii_case(protocol))
        {
            return Err(UpgradeError::ProtocolNotOffered {
                protocol: protocol.to_owned(),
            });
        }
    }
    Ok(())
}

/// Returns the non-empty items of a comma-separated header across all its fields. Fields
/// that are not visible ASCII are skipped.
fn list_items<'a>(
    headers: &'a HeaderMap,
    name: &header::HeaderName,
) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

#[cfg(test)]
mod tests;
