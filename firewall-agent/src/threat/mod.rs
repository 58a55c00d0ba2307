//! Per-source threat decisions: behaviour signals and request anomaly scores add up to a
//! decaying score per source, and a source at the threshold is banned in the kernel with a
//! duration that grows for repeat offenders.
//!
//! [`ThreatEngine::observe`] runs on the request path and only touches memory. A ban is handed
//! to [`BanWorker`], which writes the store and the kernel map on a blocking thread.

pub mod config;
mod metrics;
mod sinks;
pub mod tracker;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime};

use tokio::sync::mpsc::{self, error::TrySendError};

pub use config::{SourceMode, SourcesConfig};
pub use metrics::ThreatMetrics;
pub use sinks::AuditEvents;
pub use tracker::{Assessment, Fired, Observation, Signal, Tracker};

use crate::audit::{AuditEventKind, AuditLog, AuditRecord, auth_burst_record};
use crate::bans::{BanManager, EscalationPolicy};
use crate::network::IpNetwork;
use crate::shutdown::ShutdownListener;
use crate::store::BanOrigin;
use crate::telemetry::ErrorChain;

/// Bans that may wait for the worker. A source whose ban does not fit is tried again on its
/// next observation.
const BAN_QUEUE_CAPACITY: usize = 1024;

/// Interval between two deletions of offence histories older than the history window.
const OFFENCE_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// The engine's decision for a source at the threshold.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// The ban was queued for the worker.
    Ban(BanRequest),
    /// Detection-only mode or the allowlist kept the source from being banned.
    Flag {
        /// The source.
        source: IpAddr,
        /// Its score.
        score: f64,
    },
}

/// A ban the engine decided, for the worker to apply.
#[derive(Clone, Debug, PartialEq)]
pub struct BanRequest {
    /// The source to ban.
    pub source: IpAddr,
    /// Its score when it reached the threshold.
    pub score: f64,
    /// Reason stored with the ban: the score and the signals of the current window.
    pub reason: String,
}

/// Tracks sources and decides bans.
#[derive(Debug)]
pub struct ThreatEngine {
    mode: SourceMode,
    tracker: Mutex<Tracker>,
    /// Sources with a ban queued but not applied yet, so a ban is not queued twice.
    pending: Mutex<HashSet<IpAddr>>,
    bans: Arc<BanManager>,
    audit: AuditLog,
    metrics: Arc<ThreatMetrics>,
    queue: mpsc::Sender<BanRequest>,
}

/// Applies the bans that [`ThreatEngine`] queues.
#[derive(Debug)]
pub struct BanWorker {
    engine: Arc<ThreatEngine>,
    receiver: mpsc::Receiver<BanRequest>,
    policy: EscalationPolicy,
}

impl ThreatEngine {
    /// Creates the engine and the worker that applies its bans.
    pub fn new(
        config: &SourcesConfig,
        bans: Arc<BanManager>,
        audit: AuditLog,
        metrics: Arc<ThreatMetrics>,
    ) -> (Arc<Self>, BanWorker) {
        let (queue, receiver) = mpsc::channel(BAN_QUEUE_CAPACITY);
        let engine = Arc::new(Self {
            mode: config.mode,
            tracker: Mutex::new(Tracker::new(config.clone())),
            pending: Mutex::new(HashSet::new()),
            bans,
            audit,
            metrics,
            queue,
        });
        let worker = BanWorker {
            engine: Arc::clone(&engine),
            receiver,
            policy: config.escalation(),
        };
        (engine, worker)
    }

    /// Counts `observation` from `source`. Never blocks on I/O: a ban is queued for the
    /// worker. Returns the decision when the source reached the threshold.
    pub fn observe(&self, source: IpAddr, observation: Observation<'_>) -> Option<Decision> {
        self.observe_at(source, observation, Instant::now(), SystemTime::now())
    }

    /// [`ThreatEngine::observe`] at given monotonic and wall-clock times.
    pub fn observe_at(
        &self,
        source: IpAddr,
        observation: Observation<'_>,
        now: Instant,
        wall_now: SystemTime,
    ) -> Option<Decision> {
        let source = source.to_canonical();
        // Requests that passed the XDP program before the ban landed are not counted again.
        if self.bans.is_banned(source) || self.pending_lock().contains(&source) {
            return None;
        }

        let assessment = {
            let mut tracker = self.tracker_lock();
            let assessment = tracker.observe(source, observation, now);
            if assessment.reached_threshold {
                tracker.forget(source);
            }
            self.metrics.set_sources_tracked(tracker.sources());
            assessment
        };
        self.report_signals(source, &assessment, wall_now);
        if !assessment.reached_threshold {
            return None;
        }
        Some(self.decide(source, &assessment, wall_now))
    }

    fn report_signals(&self, source: IpAddr, assessment: &Assessment, wall_now: SystemTime) {
        for fired in &assessment.fired {
            self.metrics.record_signal(fired.signal);
            tracing::info!(
                %source,
                signal = fired.signal.label(),
                count = fired.count,
                score = assessment.score,
                "behaviour signal fired"
            );
            if fired.signal.is_authentication() {
                self.audit.record(&auth_burst_record(
                    source,
                    fired.signal.label(),
                    fired.count,
                    fired.username.as_deref(),
                    wall_now,
                ));
            }
        }
    }

    fn decide(&self, source: IpAddr, assessment: &Assessment, wall_now: SystemTime) -> Decision {
        let allowlisted = self.bans.allowlisted_by(IpNetwork::host(source));
        if self.mode == SourceMode::DetectionOnly || allowlisted.is_some() {
            let reason = match allowlisted {
                Some(network) => format!("allowlisted by {network}"),
                None => "detection-only mode".to_owned(),
            };
            self.metrics.record_flag();
            tracing::info!(%source, score = assessment.score, reason, "source reached the ban threshold, not banned");
            let mut record = AuditRecord::new(AuditEventKind::SourceFlagged, source, wall_now);
            record.score = Some(assessment.score);
            record.rule_ids = rule_ids(assessment);
            record.reason = Some(reason);
            self.audit.record(&record);
            return Decision::Flag {
                source,
                score: assessment.score,
            };
        }

        let signals = rule_ids(assessment);
        let reason = if signals.is_empty() {
            format!("threat score {:.0}", assessment.score)
        } else {
            format!(
                "threat score {:.0}: {}",
                assessment.score,
                signals.join(", ")
            )
        };
        let request = BanRequest {
            source,
            score: assessment.score,
            reason,
        };
        self.pending_lock().insert(source);
        match self.queue.try_send(request.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Closed(_)) => {
                self.pending_lock().remove(&source);
                self.metrics.record_ban_queue_full();
                tracing::warn!(%source, "ban queue full, the source is banned on a later request");
            }
        }
        Decision::Ban(request)
    }

    fn tracker_lock(&self) -> MutexGuard<'_, Tracker> {
        // Every update under the lock leaves the tracker consistent, so a poisoned lock is used.
        self.tracker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pending_lock(&self) -> MutexGuard<'_, HashSet<IpAddr>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn rule_ids(assessment: &Assessment) -> Vec<String> {
    assessment
        .fired
        .iter()
        .map(|fired| fired.signal.label().to_owned())
        .collect()
}

impl BanWorker {
    /// Applies queued bans until shutdown, and deletes offence histories older than the
    /// history window every [`OFFENCE_SWEEP_INTERVAL`]. Ban changes reach the audit log through
    /// the ban manager's observer.
    pub async fn run(mut self, mut shutdown: ShutdownListener) {
        let mut sweep = tokio::time::interval(OFFENCE_SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                request = self.receiver.recv() => match request {
                    Some(request) => self.apply(request).await,
                    None => break,
                },
                _ = sweep.tick() => self.forget_old_offences().await,
                () = shutdown.wait() => break,
            }
        }
        tracing::debug!("threat ban worker stopped");
    }

    async fn forget_old_offences(&self) {
        let bans = Arc::clone(&self.engine.bans);
        let policy = self.policy;
        let result = tokio::task::spawn_blocking(move || {
            bans.forget_old_offences(&policy, SystemTime::now())
        })
        .await;
        match result {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => tracing::debug!(removed, "old offence histories deleted"),
            Ok(Err(error)) => {
                tracing::error!(error = %ErrorChain(&error), "failed to delete old offence histories");
            }
            Err(error) => {
                tracing::error!(error = %ErrorChain(&error), "offence history task failed");
            }
        }
    }

    async fn apply(&self, request: BanRequest) {
        let source = request.source;
        let bans = Arc::clone(&self.engine.bans);
        let policy = self.policy;
        let result = tokio::task::spawn_blocking(move || {
            bans.apply_escalated(source, BanOrigin::ThreatScore, &request.reason, &policy)
        })
        .await;
        self.engine.pending_lock().remove(&source);

        match result {
            Ok(Ok(Some(ban))) => {
                // Counted from 1, as in the ban's reason: `offences` counts the earlier bans.
                let offence = ban.offences.saturating_add(1);
                tracing::info!(%source, offence, "threat ban applied");
            }
            Ok(Ok(None)) => {}
            Ok(Err(error)) => {
                tracing::error!(%source, error = %ErrorChain(&error), "failed to apply a threat ban");
            }
            Err(error) => {
                tracing::error!(%source, error = %ErrorChain(&error), "threat ban task failed");
            }
        }
    }
}

#[cfg(test)]
mod tests;
