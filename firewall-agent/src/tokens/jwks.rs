//! JWKS fetching and caching per issuer.
//!
//! Each issuer's key set is fetched from its configured URL only. A background task fetches it
//! again when its time to live ends. A failed fetch keeps the last good set and is retried
//! after the cooldown. A `kid` that is not in the set triggers at most one fetch per cooldown,
//! so a stream of tokens with made-up key ids cannot make the proxy flood the JWKS server.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::jwk::{JwksParseError, KeySet, VerifyingKey};
use crate::telemetry::ErrorChain;

/// Maximum size of a JWKS document.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Maximum time for one JWKS fetch, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Error of a JWKS fetch or of the fetched document.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The request failed before a response arrived.
    #[error("failed to fetch the JWKS from {url}")]
    Request {
        /// The JWKS URL.
        url: String,
        /// The client error.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// No complete response within [`FETCH_TIMEOUT`].
    #[error("fetching the JWKS from {url} timed out after {} s", FETCH_TIMEOUT.as_secs())]
    Timeout {
        /// The JWKS URL.
        url: String,
    },
    /// The server responded with a status other than 200.
    #[error("the JWKS server at {url} answered with status {status}")]
    Status {
        /// The JWKS URL.
        url: String,
        /// The status.
        status: http::StatusCode,
    },
    /// The body failed or was larger than [`MAX_JWKS_BYTES`].
    #[error("failed to read the JWKS body from {url} (at most {MAX_JWKS_BYTES} bytes)")]
    Body {
        /// The JWKS URL.
        url: String,
    },
    /// The document is not a usable JWKS.
    #[error("invalid JWKS from {origin}")]
    Parse {
        /// Source of the document: its URL, or a description.
        origin: String,
        /// The problem.
        #[source]
        source: JwksParseError,
    },
    /// The URL could not be turned into a request.
    #[error("invalid JWKS URL {url}: {problem}")]
    InvalidUrl {
        /// The JWKS URL.
        url: String,
        /// The problem.
        problem: String,
    },
}

/// Boxed future of [`KeySource::fetch`].
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<KeySet, JwksError>> + Send + 'a>>;

/// Source of an issuer's keys: its JWKS URL, or keys the agent keeps itself.
pub trait KeySource: Send + Sync + fmt::Debug {
    /// Fetches the current key set.
    fn fetch(&self) -> FetchFuture<'_>;
}

/// The HTTP(S) client every JWKS fetch uses.
pub type JwksClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Builds the JWKS client: HTTP/1.1 and HTTP/2, TLS through rustls with the `ring` provider and
/// the system's root certificates.
///
/// # Errors
///
/// The I/O error when the system's root certificates cannot be loaded.
#[expect(
    deprecated,
    reason = "the ring provider is the project's only crypto provider, post-quantum key exchange included or not"
)]
pub fn jwks_client() -> std::io::Result<JwksClient> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider)?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// A JWKS served at a URL.
#[derive(Clone)]
pub struct HttpKeySource {
    url: String,
    uri: http::Uri,
    client: JwksClient,
}

impl fmt::Debug for HttpKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpKeySource").field("url", &self.url).finish_non_exhaustive()
    }
}

impl HttpKeySource {
    /// Creates a source for `url`, which config validation checked.
    ///
    /// # Errors
    ///
    /// [`JwksError::InvalidUrl`] when `url` is not an absolute http or https URL.
    pub fn new(url: &str, client: JwksClient) -> Result<Self, JwksError> {
        let uri = super::config::validate_jwks_url(url).map_err(|problem| JwksError::InvalidUrl {
            url: url.to_owned(),
            problem,
        })?;
        Ok(Self {
            url: url.to_owned(),
            uri,
            client,
        })
    }

    async fn fetch_document(&self) -> Result<Bytes, JwksError> {
        let url = || self.url.clone();
        let request = http::Request::get(self.uri.clone())
            .header(http::header::ACCEPT, "application/jwk-set+json, application/json")
            .body(Empty::new())
            .map_err(|error| JwksError::InvalidUrl {
                url: url(),
                problem: error.to_string(),
            })?;
        // Redirects are not followed: the hyper client returns them as they are, and a 3xx is
        // rejected below, so keys only ever come from the configured URL.
        let response = self
            .client
            .request(request)
            .await
            .map_err(|source| JwksError::Request { url: url(), source })?;
        if response.status() != http::StatusCode::OK {
            return Err(JwksError::Status {
                url: url(),
                status: response.status(),
            });
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|_| JwksError::Body { url: url() })?;
        Ok(body.to_bytes())
    }
}

impl KeySource for HttpKeySource {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let document = tokio::time::timeout(FETCH_TIMEOUT, self.fetch_document())
                .await
                .map_err(|_| JwksError::Timeout {
                    url: self.url.clone(),
                })??;
            KeySet::parse(&document).map_err(|source| JwksError::Parse {
                origin: self.url.clone(),
                source,
            })
        })
    }
}

/// A fixed key set, such as the agent's own signing keys.
#[derive(Clone, Debug)]
pub struct StaticKeySource {
    keys: KeySet,
}

impl StaticKeySource {
    /// Creates a source that always returns `keys`.
    pub fn new(keys: KeySet) -> Self {
        Self { keys }
    }

    /// Creates a source from a JWKS document.
    ///
    /// # Errors
    ///
    /// [`JwksError::Parse`] when the document is not a usable JWKS.
    pub fn from_document(document: &[u8]) -> Result<Self, JwksError> {
        KeySet::parse(document)
            .map(Self::new)
            .map_err(|source| JwksError::Parse {
                origin: "a static document".into(),
                source,
            })
    }
}

impl KeySource for StaticKeySource {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(std::future::ready(Ok(self.keys.clone())))
    }
}

/// Result of looking up a key.
#[derive(Debug)]
pub enum KeyLookup {
    /// The key.
    Found(VerifyingKey),
    /// The set has no such key, even after a fetch (or the cooldown forbade one).
    Unknown,
    /// No key set has ever been fetched.
    Unavailable,
}

/// Fetch times of one issuer's key set.
#[derive(Debug, Default)]
struct FetchTimes {
    /// When the next fetch is due: the end of the time to live after a success, the end of the
    /// cooldown after a failure. `None` before the first fetch.
    next_refresh: Option<Instant>,
    /// Last fetch triggered by an unknown `kid` while a set was present.
    last_unknown_kid: Option<Instant>,
}

/// The cached key set of one issuer.
#[derive(Debug)]
pub struct IssuerKeys {
    issuer: String,
    source: Arc<dyn KeySource>,
    keys: ArcSwapOption<KeySet>,
    times: Mutex<FetchTimes>,
    /// Serialises fetches, so concurrent misses cause a single fetch.
    fetching: tokio::sync::Mutex<()>,
    ttl: Duration,
    cooldown: Duration,
}

impl IssuerKeys {
    /// Creates an empty cache for `issuer`; the first lookup or refresh fetches.
    pub fn new(
        issuer: String,
        source: Arc<dyn KeySource>,
        ttl: Duration,
        cooldown: Duration,
    ) -> Self {
        Self {
            issuer,
            source,
            keys: ArcSwapOption::empty(),
            times: Mutex::new(FetchTimes::default()),
            fetching: tokio::sync::Mutex::new(()),
            ttl,
            cooldown,
        }
    }

    /// Returns the issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Returns whether the current set has `kid`, without fetching.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys
            .load()
            .as_ref()
            .is_some_and(|keys| keys.get(kid).is_some())
    }

    /// Looks up `kid`. When the set lacks it, fetches once unless a triggered fetch happened
    /// within the cooldown.
    pub async fn key(&self, kid: &str) -> KeyLookup {
        if let Some(key) = self.cached(kid) {
            return KeyLookup::Found(key);
        }

        let _fetching = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(key) = self.cached(kid) {
            return KeyLookup::Found(key);
        }
        if self.may_fetch_for_miss(Instant::now()) {
            self.fetch_now().await;
        }

        match (self.cached(kid), self.keys.load().is_some()) {
            (Some(key), _) => KeyLookup::Found(key),
            (None, true) => KeyLookup::Unknown,
            (None, false) => KeyLookup::Unavailable,
        }
    }

    /// Fetches the set when its time to live ended, or when the retry time after a failure
    /// came. Returns when the next refresh is due.
    pub async fn refresh_if_due(&self, now: Instant) -> Instant {
        let due = self.lock_times().next_refresh.is_none_or(|at| at <= now);
        if due {
            let _fetching = self.fetching.lock().await;
            self.fetch_now().await;
        }
        self.lock_times().next_refresh.unwrap_or(now + self.cooldown)
    }

    fn cached(&self, kid: &str) -> Option<VerifyingKey> {
        self.keys.load().as_ref().and_then(|keys| keys.get(kid).cloned())
    }

    /// Decides whether a lookup that missed may fetch. Without any set, a fetch is allowed
    /// unless one failed within the cooldown. With a set, it is allowed unless an unknown `kid`
    /// caused a fetch within the cooldown.
    fn may_fetch_for_miss(&self, now: Instant) -> bool {
        let has_keys = self.keys.load().is_some();
        let mut times = self.lock_times();
        if !has_keys {
            return times.next_refresh.is_none_or(|at| at <= now);
        }
        let allowed = times
            .last_unknown_kid
            .is_none_or(|last| now.duration_since(last) >= self.cooldown);
        if allowed {
            times.last_unknown_kid = Some(now);
        }
        allowed
    }

    /// Fetches the set; on failure keeps the last good set and schedules a retry after the
    /// cooldown.
    async fn fetch_now(&self) {
        let result = self.source.fetch().await;
        let now = Instant::now();
        match result {
            Ok(keys) => {
                tracing::debug!(issuer = self.issuer, keys = keys.len(), "JWKS fetched");
                self.keys.store(Some(Arc::new(keys)));
                self.lock_times().next_refresh = Some(now + self.ttl);
            }
            Err(error) => {
                let kept = self.keys.load().as_ref().map_or(0, |keys| keys.len());
                tracing::warn!(
                    issuer = self.issuer,
                    kept_keys = kept,
                    retry_seconds = self.cooldown.as_secs(),
                    error = %ErrorChain(&error),
                    "failed to refresh the JWKS, keeping the last good keys"
                );
                self.lock_times().next_refresh = Some(now + self.cooldown);
            }
        }
    }

    fn lock_times(&self) -> std::sync::MutexGuard<'_, FetchTimes> {
        self.times.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
