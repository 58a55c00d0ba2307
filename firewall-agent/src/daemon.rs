//! Wiring of the agent's parts: the ban manager, the pipeline, the three listeners and the
//! background tasks.
//!
//! The binary does the kernel side (privileges, loading, attaching) and hands the result in as
//! a [`Blocklist`]; in-process tests hand in a memory blocklist instead.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::admin::{AdminBindError, AdminServer, AdminState};
use crate::audit::{AuditError, AuditLog, AuditWriter};
use crate::bans::{BanError, BanManager, BanPolicy, EventSink, RestoreSummary, run_sweeper};
use crate::config::Config;
use crate::kernel::Blocklist;
use crate::limits::{LimitsError, RateLimits};
use crate::events::EventSinks;
use crate::detect::ThreatPolicy;
use crate::proxy::forwarded::TrustedProxies;
use crate::proxy::headers::CorsPreflightStage;
use crate::proxy::stages::threat::{AllowlistCheck, ThreatStage};
use crate::proxy::stages::tokens::TokenStage;
use crate::proxy::stages::{BanCheckStage, RateLimitStage, ValidationStage};
use crate::proxy::{Pipeline, ProxyBindError, ProxyServer, ProxyState, Stage, Upstream};
use crate::reload::{Reloadable, Reloader};
use crate::shutdown::{Shutdown, ShutdownListener};
use crate::store::Store;
use crate::telemetry::ErrorChain;
use crate::tokens::{
    KeySource, NoRevocation, OwnIssuerRevocations, RevocationCheck, SigningKeysSource,
    TokenVerifier,
};
use crate::telemetry::{Metrics, MetricsServer, MetricsServerError};
use crate::threat::{AuditEvents, BanWorker, ThreatEngine};
use crate::tls::{CertificateStore, TlsError, watch_certificate};

/// Interval between two sweeps of idle rate-limit entries.
const LIMIT_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Maximum time the background tasks get to finish after the listeners stopped.
const TASK_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Maximum time the audit writer gets to take the queued records at shutdown.
const AUDIT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors from binding the listeners.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The config has no upstream; [`Config::validate`] rejects that earlier.
    #[error("proxy.upstream is missing")]
    MissingUpstream,
    /// The proxy listener could not be bound.
    #[error(transparent)]
    Proxy(#[from] ProxyBindError),
    /// The admin socket could not be created.
    #[error(transparent)]
    Admin(#[from] AdminBindError),
    /// The metrics listener could not be bound.
    #[error(transparent)]
    Metrics(#[from] MetricsServerError),
    /// The audit log could not be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The rate-limit rules could not be built.
    #[error("invalid rate-limit rules")]
    Limits(#[from] LimitsError),
    /// The authorization server could not start: its store or its signing keys failed.
    #[error("failed to start the oauth authorization server")]
    OAuth(#[from] crate::oauth::OAuthError),
    /// The TLS certificate or key could not be loaded.
    #[error("failed to set up TLS on the proxy listener")]
    Tls(#[from] TlsError),
    /// The `[[routes]]` table could not be compiled; [`Config::validate`] rejects that earlier.
    #[error("invalid routes: {problem}")]
    Routes { problem: String },
    /// The token verifier could not be built.
    #[error("failed to set up access-token checks")]
    Tokens(#[from] crate::tokens::JwksError),
    /// The validation rules or the OpenAPI document could not be compiled.
    #[error("invalid validation settings")]
    Validation(#[from] crate::validation::BuildError),
}

/// The agent's parts, before any listener is bound.
pub struct Agent {
    config: Config,
    bans: Arc<BanManager>,
    blocklist: Arc<dyn Blocklist>,
    metrics: Arc<Metrics>,
    /// Consumers of the stages' security events.
    events: EventSinks,
    /// Key sources that replace the `jwks_url` of some issuers, by issuer.
    key_sources: HashMap<String, Arc<dyn KeySource>>,
    /// The lookup of revoked access tokens.
    revocation: Arc<dyn RevocationCheck>,
    /// The store, shared with the ban manager, for the authorization server's tables.
    store: Store,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("config", &self.config)
            .field("bans", &self.bans)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Creates the ban manager and the metrics over an opened store and a blocklist.
    pub fn new(config: Config, store: Store, blocklist: Arc<dyn Blocklist>) -> Self {
        let shared_store = store.clone();
        let metrics = Arc::new(Metrics::new(Arc::clone(&blocklist)));
        let bans = Arc::new(
            BanManager::new(
                store,
                Arc::clone(&blocklist),
                BanPolicy::from(&config.bans),
                Arc::clone(&metrics),
            )
            .with_allowlist(config.bans.allowlist_networks()),
        );
        Self {
            config,
            bans,
            blocklist,
            metrics,
            events: EventSinks::new(),
            key_sources: HashMap::new(),
            revocation: Arc::new(NoRevocation),
            store: shared_store,
        }
    }

    /// Takes the keys of `issuer` from `source` instead of its `jwks_url`, such as the agent's
    /// own signing keys. Call before [`Agent::bind`].
    pub fn add_key_source(&mut self, issuer: String, source: Arc<dyn KeySource>) {
        self.key_sources.insert(issuer, source);
    }

    /// Sets where revoked access tokens are looked up; by default nothing is revoked. Call
    /// before [`Agent::bind`].
    pub fn set_revocation_check(&mut self, check: Arc<dyn RevocationCheck>) {
        self.revocation = check;
    }

    /// Adds a consumer of the stages' security events. Call before [`Agent::bind`].
    pub fn add_event_sink(&mut self, sink: Arc<dyn crate::events::EventSink>) {
        self.events.push(sink);
    }

    /// Returns the ban manager.
    pub fn bans(&self) -> &Arc<BanManager> {
        &self.bans
    }

    /// Returns the metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Pushes the stored, unexpired bans into the blocklist.
    ///
    /// # Errors
    ///
    /// [`BanError`] when the store or the blocklist fails.
    pub fn restore_bans(&self) -> Result<RestoreSummary, BanError> {
        let summary = self.bans.restore()?;
        tracing::info!(
            restored = summary.restored,
            expired = summary.expired,
            "bans restored from the store"
        );
        Ok(summary)
    }

    /// Builds the threat stage from the `[threat]` section and the routes' `threat` tables.
    fn threat_stage(&self) -> ThreatStage {
        let route_tables = self.config.routes.iter().filter_map(|route| {
            route
                .threat
                .as_ref()
                .map(|threat| (route.display_name(), threat))
        });
        let policy = Arc::new(ThreatPolicy::new(&self.config.threat, route_tables));
        let bans = Arc::clone(&self.bans);
        let allowlisted: AllowlistCheck =
            Arc::new(move |client| bans.allowlisted_by(client.into()).is_some());
        ThreatStage::new(policy, self.events.clone(), allowlisted)
    }

    /// Binds the proxy, admin and metrics listeners. Nothing is served until
    /// [`BoundAgent::start`].
    ///
    /// # Errors
    ///
    /// [`DaemonError`] naming the listener that failed; listeners bound before it are closed.
    pub async fn bind(mut self) -> Result<BoundAgent, DaemonError> {
        let upstream_url = self
            .config
            .proxy
            .upstream
            .clone()
            .ok_or(DaemonError::MissingUpstream)?;
        let upstream_tls = match &self.config.tls.upstream_ca_path {
            Some(ca_path) => crate::tls::upstream_client_config(ca_path)?,
            None => crate::tls::client_config(rustls::RootCertStore::empty())?,
        };
        let upstream = Upstream::new(
            upstream_url,
            self.config.proxy.request_timeout(),
            upstream_tls,
        )
        .with_max_idle(self.config.proxy.upstream_idle_connections);

        // The threat engine and the audit log join the event sinks before any stage takes a
        // copy of them.
        let (audit, audit_writer) =
            AuditLog::start(&self.config.audit, self.metrics.threat().audit())?;
        let audit_events = Arc::new(AuditEvents::new(audit.clone()));
        self.bans.set_observer(audit_events.clone());
        let (threat, threat_worker) = ThreatEngine::new(
            &self.config.threat.sources,
            Arc::clone(&self.bans),
            audit.clone(),
            Arc::clone(self.metrics.threat()),
        );
        self.events.push(threat);
        self.events.push(audit_events);

        let limits = Arc::new(
            RateLimits::new(
                &self.config.limits,
                &self.config.rate_limit,
                Arc::clone(self.metrics.limits()),
            )
            .await?,
        );
        let events = EventSink::new(Arc::clone(&self.bans));
        let oauth = self.start_oauth()?;
        let tokens = self.token_verifier(oauth.as_ref())?;
        let mut rate_limit = RateLimitStage::new(Arc::clone(&limits), events.clone());
        if let Some(verifier) = &tokens {
            rate_limit = rate_limit.with_tokens(Arc::clone(verifier));
        }
        // The agent's own OAuth endpoints respond before threat detection, which would otherwise
        // score the passwords typed into the login form.
        let mut stages: Vec<Arc<dyn Stage>> = vec![
            Arc::new(BanCheckStage::new(Arc::clone(&self.bans))),
            Arc::new(rate_limit),
            // Browsers send preflights without credentials, so they are handled before the
            // token check.
            Arc::new(CorsPreflightStage),
        ];
        if let Some(server) = &oauth {
            stages.push(Arc::new(crate::oauth::OAuthStage::new(Arc::clone(server))));
        }
        stages.push(Arc::new(self.threat_stage()));
        if let Some(verifier) = &tokens {
            stages.push(Arc::new(TokenStage::new(
                Arc::clone(verifier),
                self.config.tokens.default_required,
                events,
                self.events.clone(),
            )));
        }
        let validation = Arc::new(ValidationStage::from_config(
            &self.config,
            Arc::clone(self.metrics.validation()),
        )?);
        stages.push(Arc::clone(&validation) as Arc<dyn Stage>);
        // The config was validated, so the routes compile; the error arm is a safeguard.
        let routes = crate::routes::RouteTable::new(&self.config.routes).map_err(|(index, error)| {
            DaemonError::Routes {
                problem: format!("route {}: {error}", index + 1),
            }
        })?;
        let state = Arc::new(
            ProxyState::new(Pipeline::new(stages), upstream, Arc::clone(&self.metrics))
                .with_routes(routes, self.config.proxy.max_body_bytes)
                .with_events(self.events.clone())
                .with_trusted_proxies(TrustedProxies::new(
                    self.config.proxy.trusted_proxies.clone(),
                )),
        );

        let mut proxy = ProxyServer::bind(self.config.proxy.listen, state)
            .await?
            .with_http(self.config.http.clone())
            .with_worker_threads(self.config.proxy.worker_threads);
        let certificates = match self.config.tls.server_files() {
            Some((cert_path, key_path)) => {
                let store = CertificateStore::load(cert_path, key_path)?;
                proxy = proxy.with_tls(store.server_config()?);
                Some(store)
            }
            None => None,
        };
        let mut admin_state = AdminState::new(Arc::clone(&self.bans), Arc::clone(&self.blocklist));
        if let Some(server) = oauth {
            admin_state = admin_state.with_oauth(server);
        }
        let admin_state = Arc::new(admin_state);
        let admin = AdminServer::bind(&self.config.admin.socket_path, admin_state).await?;
        let metrics =
            MetricsServer::bind(self.config.metrics.listen, Arc::clone(&self.metrics)).await?;

        Ok(BoundAgent {
            sweep_interval: self.config.bans.sweep_interval(),
            agent: self,
            proxy,
            admin,
            metrics,
            limits,
            audit,
            audit_writer,
            threat_worker,
            tokens,
            validation,
            certificates,
        })
    }

    /// Builds the token verifier, or `None` when no issuer is configured (then no route
    /// requires a token, which config validation ensures).
    ///
    /// When the agent runs its own authorization server, the `[[tokens.issuers]]` entry with
    /// its issuer takes keys from its signing keys instead of `jwks_url`, and its revoked tokens
    /// are rejected.
    fn token_verifier(
        &self,
        oauth: Option<&Arc<crate::oauth::AuthorizationServer>>,
    ) -> Result<Option<Arc<TokenVerifier>>, DaemonError> {
        if self.config.tokens.issuers.is_empty() {
            return Ok(None);
        }
        let mut sources = self.key_sources.clone();
        let mut revocation = Arc::clone(&self.revocation);
        if let Some(server) = oauth {
            sources
                .entry(server.config().issuer.clone())
                .or_insert_with(|| Arc::new(SigningKeysSource::new(Arc::clone(server.keys()))));
            revocation = Arc::new(OwnIssuerRevocations::new(Arc::clone(server), revocation));
        }
        let verifier = TokenVerifier::new(
            &self.config.tokens,
            sources,
            revocation,
            self.metrics.tokens().clone(),
        )?;
        Ok(Some(Arc::new(verifier)))
    }
}

impl Agent {
    /// Starts the authorization server when `[oauth]` enables it.
    fn start_oauth(&self) -> Result<Option<Arc<crate::oauth::AuthorizationServer>>, DaemonError> {
        if !self.config.oauth.enabled {
            return Ok(None);
        }
        let storage = crate::oauth::storage::RedbStorage::open(self.store.clone())
            .map_err(crate::oauth::OAuthError::from)?;
        let server = crate::oauth::AuthorizationServer::start(
            self.config.oauth.clone(),
            Arc::new(storage),
            self.events.clone(),
        )?;
        tracing::info!(issuer = %self.config.oauth.issuer, "oauth authorization server enabled");
        Ok(Some(Arc::new(server)))
    }
}

/// The agent with its listeners bound.
#[derive(Debug)]
pub struct BoundAgent {
    agent: Agent,
    proxy: ProxyServer,
    admin: AdminServer,
    metrics: MetricsServer,
    limits: Arc<RateLimits>,
    tokens: Option<Arc<TokenVerifier>>,
    validation: Arc<ValidationStage>,
    certificates: Option<Arc<CertificateStore>>,
    sweep_interval: Duration,
    audit: AuditLog,
    audit_writer: Option<AuditWriter>,
    threat_worker: BanWorker,
}

impl BoundAgent {
    /// Returns the proxy's bound address.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy.local_addr()
    }

    /// Returns the metrics listener's bound address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics.local_addr()
    }

    /// Returns the admin socket path.
    pub fn admin_path(&self) -> &Path {
        self.admin.path()
    }

    /// Starts serving and the background tasks.
    pub fn start(self) -> RunningAgent {
        let shutdown = Shutdown::new();
        let proxy_addr = self.proxy_addr();
        let metrics_addr = self.metrics_addr();
        tracing::info!(address = %proxy_addr, "proxy listening");
        tracing::info!(path = %self.admin.path().display(), "admin API listening");
        tracing::info!(address = %metrics_addr, "metrics listening");

        let listeners = vec![
            tokio::spawn(self.proxy.serve(shutdown.listener())),
            tokio::spawn(self.admin.serve(shutdown.listener())),
            tokio::spawn(self.metrics.serve(shutdown.listener())),
        ];
        let mut background = vec![
            tokio::spawn(run_sweeper(
                Arc::clone(&self.agent.bans),
                self.sweep_interval,
                shutdown.listener(),
            )),
            tokio::spawn(evict_idle_entries(
                Arc::clone(&self.limits),
                shutdown.listener(),
            )),
            tokio::spawn(self.threat_worker.run(shutdown.listener())),
        ];
        let mut reloadable = vec![
            self.limits as Arc<dyn Reloadable>,
            Arc::new(self.audit.clone()) as Arc<dyn Reloadable>,
            self.validation as Arc<dyn Reloadable>,
        ];
        if let Some(verifier) = self.tokens {
            background.push(tokio::spawn(verifier.run_refresh(shutdown.listener())));
        }
        if let Some(store) = self.certificates {
            background.push(tokio::spawn(watch_certificate(
                Arc::clone(&store),
                self.agent.config.tls.watch_interval(),
                shutdown.listener(),
            )));
            reloadable.push(store);
        }
        let reloader = Reloader::new(reloadable);

        RunningAgent {
            agent: self.agent,
            reloader,
            shutdown,
            listeners,
            background,
            proxy_addr,
            metrics_addr,
            audit: self.audit,
            _audit_writer: self.audit_writer,
        }
    }
}

/// The serving agent. [`RunningAgent::stop`] shuts it down.
#[derive(Debug)]
pub struct RunningAgent {
    agent: Agent,
    reloader: Reloader,
    shutdown: Shutdown,
    listeners: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    proxy_addr: SocketAddr,
    metrics_addr: SocketAddr,
    audit: AuditLog,
    /// The audit writer thread. It ends with the process; [`RunningAgent::stop`] waits for the
    /// queue to empty instead of joining it, because request tasks may still hold handles.
    _audit_writer: Option<AuditWriter>,
}

impl RunningAgent {
    /// Returns the proxy's bound address.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    /// Returns the metrics listener's bound address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Returns the ban manager.
    pub fn bans(&self) -> &Arc<BanManager> {
        &self.agent.bans
    }

    /// Returns the metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.agent.metrics
    }

    /// Returns the parts that take a new config without a restart.
    pub fn reloader(&self) -> &Reloader {
        &self.reloader
    }

    /// Stops accepting, lets open proxy connections drain, removes the admin socket and stops
    /// the background tasks.
    pub async fn stop(self) {
        self.shutdown.trigger();
        for task in self.listeners {
            if let Err(error) = task.await {
                tracing::error!(error = %ErrorChain(&error), "listener task failed");
            }
        }

        for task in self.background {
            let abort = task.abort_handle();
            match tokio::time::timeout(TASK_STOP_TIMEOUT, task).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) if error.is_cancelled() => {}
                Ok(Err(error)) => {
                    tracing::error!(error = %ErrorChain(&error), "background task failed")
                }
                Err(_) => {
                    tracing::warn!("background task did not stop in time, aborting it");
                    abort.abort();
                }
            }
        }
        if !self.audit.drain(AUDIT_DRAIN_TIMEOUT).await {
            tracing::warn!(
                timeout_seconds = AUDIT_DRAIN_TIMEOUT.as_secs(),
                "audit records still queued at shutdown, they are lost"
            );
        }
        tracing::info!("agent stopped");
    }
}

/// Removes idle rate-limit entries every [`LIMIT_SWEEP_INTERVAL`] until shutdown.
async fn evict_idle_entries(limits: Arc<RateLimits>, mut shutdown: ShutdownListener) {
    let mut ticker = tokio::time::interval(LIMIT_SWEEP_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.wait() => break,
        }
        let removed = limits.evict_idle(Instant::now());
        if removed > 0 {
            tracing::debug!(removed, "idle rate-limit entries evicted");
        }
    }
}
