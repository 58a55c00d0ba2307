//! Batches of requests for a single Redis. While one call of the check script is in flight,
//! the requests that arrive wait, and the next call carries all of them. The script decides
//! them one after another, each atomically, so a batch admits exactly what the same requests
//! sent one by one would admit. A request that finds no call in flight goes out at once, so
//! batching adds no wait when the load is light.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{Connection, StoreError, add_rules, invoke, parse_reply, request_groups};
use crate::limits::{CheckOutcome, RuleCheck};

/// Maximum requests in one call, so that one call keeps Redis busy for a short time only.
const MAX_BATCH: usize = 64;
/// Requests that may wait for a call. A request that finds the queue full waits for room
/// within its timeout.
const QUEUE_CAPACITY: usize = 4096;

/// One request waiting for a call.
struct Pending {
    connection: Connection,
    rules: Vec<RuleCheck>,
    reply: oneshot::Sender<Result<CheckOutcome, StoreError>>,
}

/// The sending side of the batch task, which stops when this is dropped.
#[derive(Debug)]
pub(super) struct Batcher {
    sender: mpsc::Sender<Pending>,
    timeout: Duration,
}

impl Batcher {
    /// Starts the batch task on the current Tokio runtime.
    pub(super) fn start(script: redis::Script, key_prefix: String, timeout: Duration) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(drive(receiver, script, key_prefix, timeout));
        Self { sender, timeout }
    }

    /// Checks and, if admitted, commits one request in the next batch. The timeout covers the
    /// wait for the batch as well as its call.
    pub(super) async fn check(
        &self,
        connection: Connection,
        rules: &[RuleCheck],
    ) -> Result<CheckOutcome, StoreError> {
        request_groups([rules])?;
        let (reply, response) = oneshot::channel();
        let pending = Pending {
            connection,
            rules: rules.to_vec(),
            reply,
        };
        let wait = async {
            self.sender
                .send(pending)
                .await
                .map_err(|_| StoreError::BatchStopped)?;
            response.await.map_err(|_| StoreError::BatchStopped)?
        };
        tokio::time::timeout(self.timeout, wait)
            .await
            .map_err(|_| StoreError::Timeout {
                timeout_ms: self.timeout.as_millis(),
            })?
    }
}

/// Sends the waiting requests in calls of at most [`MAX_BATCH`], one call at a time.
async fn drive(
    mut receiver: mpsc::Receiver<Pending>,
    script: redis::Script,
    key_prefix: String,
    timeout: Duration,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = receiver.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }

        match call(&script, &key_prefix, timeout, &batch).await {
            Ok(outcomes) => {
                for (pending, outcome) in batch.drain(..).zip(outcomes) {
                    // A caller that timed out no longer listens.
                    let _ = pending.reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                for pending in batch.drain(..) {
                    let _ = pending.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Calls the check script once for every request of `batch`, which is not empty.
async fn call(
    script: &redis::Script,
    key_prefix: &str,
    timeout: Duration,
    batch: &[Pending],
) -> Result<Vec<CheckOutcome>, StoreError> {
    let mut invocation = script.prepare_invoke();
    invocation.arg(request_groups(
        batch.iter().map(|pending| pending.rules.as_slice()),
    )?);
    for pending in batch {
        add_rules(&mut invocation, key_prefix, &pending.rules);
    }
    let mut connection = batch.first().ok_or(StoreError::Reply)?.connection.clone();
    let reply: Vec<i64> = invoke(&mut connection, &invocation, timeout).await?;

    let mut outcomes = Vec::with_capacity(batch.len());
    let mut offset = 0;
    for pending in batch {
        let tiers: usize = pending.rules.iter().map(|rule| rule.tiers.len()).sum();
        let size = 1 + pending.rules.len() + tiers;
        let part = reply.get(offset..offset + size).ok_or(StoreError::Reply)?;
        outcomes.push(parse_reply(&pending.rules, part)?);
        offset += size;
    }
    if offset != reply.len() {
        return Err(StoreError::Reply);
    }
    Ok(outcomes)
}
