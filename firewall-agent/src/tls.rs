//! TLS: termination of client connections with rustls, certificate reload, and the client
//! configuration for HTTPS upstreams.
//!
//! Only TLS 1.2 and 1.3 are offered, with the `ring` provider. The certificate and key come
//! from PEM files and are read again on SIGHUP (through [`Reloadable`]) and when the watcher
//! sees a file change. A reload swaps the certificate for new handshakes only: open connections
//! keep their session and are not dropped. A certificate that fails to load leaves the previous
//! one in use.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use crate::config::Config;
use crate::reload::Reloadable;
use crate::shutdown::ShutdownListener;
use crate::telemetry::ErrorChain;

/// ALPN protocol names offered to clients, preferred first.
const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// `[tls]` section: TLS on the proxy listener and towards an HTTPS upstream.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the server certificate, then its intermediates. TLS is on when this and
    /// `key_path` are set.
    pub cert_path: Option<PathBuf>,
    /// PEM file with the private key of the certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_path: Option<PathBuf>,
    /// Interval in seconds between two checks of the certificate and key files for changes.
    pub watch_interval_seconds: u64,
    /// PEM file with the CA certificates that an HTTPS upstream's certificate must chain to.
    /// Required for an `https://` upstream.
    pub upstream_ca_path: Option<PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_path: None,
            key_path: None,
            watch_interval_seconds: 5,
            upstream_ca_path: None,
        }
    }
}

impl TlsConfig {
    /// Returns the certificate and key paths when TLS termination is configured.
    pub fn server_files(&self) -> Option<(&Path, &Path)> {
        Some((self.cert_path.as_deref()?, self.key_path.as_deref()?))
    }

    /// Checks that the certificate and key are set together.
    ///
    /// # Errors
    ///
    /// The dotted key and the problem.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        match (&self.cert_path, &self.key_path) {
            (Some(_), None) => Err((
                "tls.key_path",
                "is missing: set it with tls.cert_path".into(),
            )),
            (None, Some(_)) => Err((
                "tls.cert_path",
                "is missing: set it with tls.key_path".into(),
            )),
            _ if self.watch_interval_seconds == 0 => {
                Err(("tls.watch_interval_seconds", "must be at least 1".into()))
            }
            _ => Ok(()),
        }
    }

    /// Returns the interval between two checks of the files.
    pub fn watch_interval(&self) -> Duration {
        Duration::from_secs(self.watch_interval_seconds)
    }
}

/// Errors from loading TLS files or building a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("failed to read {kind} {}", path.display())]
    Read {
        kind: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM section of the expected kind.
    #[error("{kind} {} is invalid: {problem}", path.display())]
    Pem {
        kind: &'static str,
        path: PathBuf,
        problem: String,
    },
    /// rustls rejected the certificate, the key or the configuration.
    #[error("invalid TLS {kind}")]
    Rustls {
        kind: &'static str,
        #[source]
        source: rustls::Error,
    },
}

/// Returns the `ring` crypto provider, the only one the agent uses.
#[expect(
    deprecated,
    reason = "rustls 0.23.48 deprecates the ring provider for lacking post-quantum key \
              exchange, but ring is the provider this project uses"
)]
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server certificate in use, replaced on reload.
pub struct CertificateStore {
    current: ArcSwap<CertifiedKey>,
    files: Mutex<WatchedFiles>,
    provider: Arc<CryptoProvider>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct WatchedFiles {
    cert_path: PathBuf,
    key_path: PathBuf,
    modified: Option<(SystemTime, SystemTime)>,
}

impl fmt::Debug for CertificateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("CertificateStore")
            .field("cert_path", &files.cert_path)
            .field("key_path", &files.key_path)
            .finish_non_exhaustive()
    }
}

impl CertificateStore {
    /// Loads the certificate chain and key.
    ///
    /// # Errors
    ///
    /// [`TlsError`] naming the file that cannot be read or parsed, or a key that does not
    /// match the certificate.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, TlsError> {
        let provider = crypto_provider();
        let modified = modified_times(cert_path, key_path);
        let key = load_certified_key(cert_path, key_path, &provider)?;
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(key),
            files: Mutex::new(WatchedFiles {
                cert_path: cert_path.to_owned(),
                key_path: key_path.to_owned(),
                modified,
            }),
            provider,
        }))
    }

    /// Reads the files again and swaps the certificate in for new handshakes. `paths` replaces
    /// the file paths when given.
    ///
    /// # Errors
    ///
    /// [`TlsError`] when the new files are invalid; the previous certificate stays in use.
    pub fn reload(&self, paths: Option<(&Path, &Path)>) -> Result<(), TlsError> {
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((cert_path, key_path)) = paths {
            files.cert_path = cert_path.to_owned();
            files.key_path = key_path.to_owned();
        }
        let modified = modified_times(&files.cert_path, &files.key_path);
        let key = load_certified_key(&files.cert_path, &files.key_path, &self.provider)?;
        self.current.store(Arc::new(key));
        files.modified = modified;
        tracing::info!(cert = %files.cert_path.display(), "TLS certificate reloaded");
        Ok(())
    }

    /// Reloads when either file's modification time changed since the last load. Returns
    /// whether a reload happened.
    ///
    /// # Errors
    ///
    /// [`TlsError`] when the changed files are invalid. The failed times are remembered, so
    /// the same broken files are not retried, and the previous certificate stays in use.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let changed = {
            let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
            let modified = modified_times(&files.cert_path, &files.key_path);
            let changed = modified.is_some() && modified != files.modified;
            if changed {
                files.modified = modified;
            }
            changed
        };
        if changed {
            self.reload(None)?;
        }
        Ok(changed)
    }

    /// Builds the rustls server configuration: TLS 1.2 and 1.3, ALPN h2 and http/1.1, no
    /// client certificates, and this store as the certificate source.
    ///
    /// # Errors
    ///
    /// [`TlsError::Rustls`] when the provider does not support the protocol versions.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|source| TlsError::Rustls {
                kind: "protocol versions",
                source,
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|name| name.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for CertificateStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl Reloadable for CertificateStore {
    fn sections(&self) -> &'static str {
        "tls"
    }

    fn reload(&self, config: &Config) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let Some(paths) = config.tls.server_files() else {
            return Err(
                "tls.cert_path and tls.key_path were removed: turning TLS off needs a \
                        restart"
                    .into(),
            );
        };
        CertificateStore::reload(self, Some(paths)).map_err(Into::into)
    }
}

/// Checks the certificate files every `interval` and reloads them when they change, until
/// shutdown.
pub async fn watch_certificate(
    store: Arc<CertificateStore>,
    interval: Duration,
    mut shutdown: ShutdownListener,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.wait() => break,
        }
        if let Err(error) = store.reload_if_changed() {
            tracing::error!(
                error = %ErrorChain(&error),
                "failed to reload the changed TLS certificate, keeping the previous one"
            );
        }
    }
}

fn modified_times(cert_path: &Path, key_path: &Path) -> Option<(SystemTime, SystemTime)> {
    let modified = |path: &Path| {
        std::fs::metadata(path)
            .and_then(|meta| meta.modified())
            .ok()
    };
    Some((modified(cert_path)?, modified(key_path)?))
}

fn read_file(kind: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        kind,
        path: path.to_owned(),
        source,
    })
}

/// Reads a PEM file of certificates.
///
/// # Errors
///
/// [`TlsError`] when the file cannot be read, a section is malformed, or there is none.
pub fn read_certificates(
    kind: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(kind, path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Pem {
            kind,
            path: path.to_owned(),
            problem: error.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::Pem {
            kind,
            path: path.to_owned(),
            problem: "no CERTIFICATE section found".into(),
        });
    }
    Ok(certificates)
}

fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = read_certificates("certificate", cert_path)?;
    let pem = read_file("private key", key_path)?;
    // The message of a PEM error never contains key material.
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|error| TlsError::Pem {
        kind: "private key",
        path: key_path.to_owned(),
        problem: error.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Rustls {
        kind: "certificate and key pair",
        source,
    })
}

/// Builds the client configuration for an HTTPS upstream that trusts the CA certificates in
/// `ca_path`.
///
/// # Errors
///
/// [`TlsError`] when the CA file cannot be read or holds no valid certificate.
pub fn upstream_client_config(ca_path: &Path) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in read_certificates("upstream CA file", ca_path)? {
        roots.add(certificate).map_err(|source| TlsError::Rustls {
            kind: "upstream CA certificate",
            source,
        })?;
    }
    client_config(roots)
}

/// Builds a client configuration that trusts the CA certificates in `roots`, with TLS 1.2 and
/// 1.3. With an empty store every server certificate is rejected. ALPN is left to the HTTP
/// client, which sets it from the protocols it enables.
///
/// # Errors
///
/// [`TlsError::Rustls`] when the provider does not support the protocol versions.
pub fn client_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, TlsError> {
    let config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|source| TlsError::Rustls {
            kind: "protocol versions",
            source,
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().expect("create a temporary directory"),
            }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        /// Writes a fresh self-signed certificate for `name` and its key; returns the paths.
        fn write_pair(&self, name: &str) -> (PathBuf, PathBuf) {
            let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()])
                .expect("generate a certificate");
            let cert_path = self.path("cert.pem");
            let key_path = self.path("key.pem");
            std::fs::write(&cert_path, certified.cert.pem()).expect("write the certificate");
            std::fs::write(&key_path, certified.signing_key.serialize_pem())
                .expect("write the key");
            (cert_path, key_path)
        }
    }

    fn names_of(store: &CertificateStore) -> Vec<u8> {
        store.current.load().cert[0].to_vec()
    }

    #[test]
    fn reload_swaps_certificate() {
        let files = Files::new();
        let (cert, key) = files.write_pair("one.example");
        let store = CertificateStore::load(&cert, &key).expect("valid pair");
        let before = names_of(&store);

        files.write_pair("two.example");
        store.reload(None).expect("reload the new pair");

        assert_ne!(names_of(&store), before);
    }

    #[test]
    fn broken_reload_keeps_previous_certificate() {
        let files = Files::new();
        let (cert, key) = files.write_pair("one.example");
        let store = CertificateStore::load(&cert, &key).expect("valid pair");
        let before = names_of(&store);

        std::fs::write(&cert, "not a certificate").expect("overwrite the certificate");
        let error = store.reload(None).expect_err("invalid certificate file");

        assert!(error.to_string().contains("cert.pem"), "{error}");
        assert_eq!(names_of(&store), before);
    }

    #[test]
    fn mismatched_key_is_rejected() {
        let files = Files::new();
        let (cert, _) = files.write_pair("one.example");
        let other = rcgen::generate_simple_self_signed(vec!["two.example".to_owned()])
            .expect("generate a certificate");
        let key = files.path("other-key.pem");
        std::fs::write(&key, other.signing_key.serialize_pem()).expect("write the key");

        let error = CertificateStore::load(&cert, &key).expect_err("key of another certificate");

        assert!(matches!(error, TlsError::Rustls { .. }), "{error}");
    }

    #[test]
    fn missing_file_names_path() {
        let files = Files::new();

        let error = CertificateStore::load(&files.path("absent.pem"), &files.path("key.pem"))
            .expect_err("no such file");

        assert!(error.to_string().contains("absent.pem"), "{error}");
    }

    #[test]
    fn server_config_offers_h2_and_http11() {
        let files = Files::new();
        let (cert, key) = files.write_pair("one.example");
        let store = CertificateStore::load(&cert, &key).expect("valid pair");

        let config = store.server_config().expect("server config");

        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn cert_without_key_is_invalid() {
        let config = TlsConfig {
            cert_path: Some("/etc/fw/cert.pem".into()),
            ..TlsConfig::default()
        };

        let error = config.validate().expect_err("key missing");

        assert_eq!(error.0, "tls.key_path");
    }
}
