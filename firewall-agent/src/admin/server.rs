//! The admin API server: HTTP/1.1 and JSON on a Unix socket with mode 0600.

use std::convert::Infallible;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use nix::sys::stat::{Mode, umask};
use serde::Serialize;
use tokio::net::UnixListener;

use super::api::{
    AddAllowRequest, AddBanRequest, AllowList, AllowView, BanList, BanView, DEFAULT_TOP_SOURCES,
    ErrorBody, MAX_TOP_SOURCES, SourceView, Stats, VerdictView,
};
use crate::bans::{BanError, BanManager};
use crate::config::MAX_DURATION_SECONDS;
use crate::kernel::Blocklist;
use crate::network::IpNetwork;
use crate::shutdown::ShutdownListener;
use crate::store::BanOrigin;
use crate::telemetry::ErrorChain;

mod import;
mod oauth;

/// Maximum size of a request body.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Reason stored for a manual ban given without one.
const DEFAULT_MANUAL_REASON: &str = "banned by an operator";

/// Errors from [`AdminServer::bind`]. Each names the socket path.
#[derive(Debug, thiserror::Error)]
pub enum AdminBindError {
    /// Another process serves the socket.
    #[error(
        "admin socket {} is in use by a running agent: stop it first, or set another admin.socket_path",
        path.display()
    )]
    InUse { path: PathBuf },
    /// Something that is not a socket is at the path.
    #[error("admin socket path {} exists and is not a socket: remove it or choose another path", path.display())]
    NotASocket { path: PathBuf },
    /// Creating the directory, removing a stale socket, binding or setting the mode failed.
    #[error("failed to {action} admin socket {}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// State shared by the admin request handlers.
pub struct AdminState {
    bans: Arc<BanManager>,
    blocklist: Arc<dyn Blocklist>,
    oauth: Option<Arc<crate::oauth::AuthorizationServer>>,
}

impl AdminState {
    /// Creates the shared state.
    pub fn new(bans: Arc<BanManager>, blocklist: Arc<dyn Blocklist>) -> Self {
        Self {
            bans,
            blocklist,
            oauth: None,
        }
    }

    /// Serves the users and keys of the authorization server under `/v1/oauth/`.
    #[must_use]
    pub fn with_oauth(mut self, server: Arc<crate::oauth::AuthorizationServer>) -> Self {
        self.oauth = Some(server);
        self
    }
}

/// A bound admin socket. Dropping it removes the socket file.
pub struct AdminServer {
    listener: UnixListener,
    socket: SocketFile,
    state: Arc<AdminState>,
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer")
            .field("path", &self.socket.path)
            .finish_non_exhaustive()
    }
}

impl AdminServer {
    /// Creates the socket at `path` with mode 0600, creating its directory if missing. A stale
    /// socket left by an agent that died is replaced; a socket that a running agent serves is
    /// not.
    ///
    /// # Errors
    ///
    /// [`AdminBindError`] naming the path.
    pub async fn bind(path: &Path, state: Arc<AdminState>) -> Result<Self, AdminBindError> {
        let io_error = |action: &'static str| {
            move |source| AdminBindError::Io {
                path: path.to_owned(),
                action,
                source,
            }
        };

        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io_error("create the directory of"))?;
        }
        remove_stale_socket(path).await?;

        // The umask makes the socket 0600 from the moment it exists. The chmod below repeats it
        // in case another thread changed the umask meanwhile.
        let previous_umask = umask(Mode::from_bits_truncate(0o177));
        let bound = std::os::unix::net::UnixListener::bind(path);
        umask(previous_umask);
        let listener = bound.map_err(io_error("bind"))?;
        let socket = SocketFile::new(path).map_err(io_error("inspect"))?;

        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_error("set the mode of"))?;
        listener
            .set_nonblocking(true)
            .map_err(io_error("configure"))?;
        let listener = UnixListener::from_std(listener).map_err(io_error("register"))?;

        Ok(Self {
            listener,
            socket,
            state,
        })
    }

    /// Returns the socket path.
    pub fn path(&self) -> &Path {
        &self.socket.path
    }

    /// Serves requests until shutdown, then removes the socket file.
    pub async fn serve(self, mut shutdown: ShutdownListener) {
        loop {
            let stream = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!(error = %ErrorChain(&error), "failed to accept an admin connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = shutdown.wait() => break,
            };

            let state = Arc::clone(&self.state);
            let service = service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(route(&state, request).await) }
            });
            tokio::spawn(async move {
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(error) = connection.await {
                    tracing::debug!(error = %ErrorChain(&error), "admin connection ended with an error");
                }
            });
        }
        tracing::info!(path = %self.socket.path.display(), "admin listener stopped");
    }
}

/// The socket file this process created, removed on drop unless another process replaced it.
struct SocketFile {
    path: PathBuf,
    device: u64,
    inode: u64,
}

impl SocketFile {
    fn new(path: &Path) -> std::io::Result<Self> {
        let metadata = std::fs::symlink_metadata(path)?;
        Ok(Self {
            path: path.to_owned(),
            device: metadata.dev(),
            inode: metadata.ino(),
        })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|metadata| metadata.dev() == self.device && metadata.ino() == self.inode);
        if !ours {
            return;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => tracing::debug!(path = %self.path.display(), "admin socket removed"),
            Err(error) => {
                tracing::warn!(path = %self.path.display(), error = %ErrorChain(&error), "failed to remove the admin socket");
            }
        }
    }
}

/// Removes a socket at `path` that has no listener. Returns an error, without touching the
/// path, for a socket that a live agent serves or a file that is not a socket.
async fn remove_stale_socket(path: &Path) -> Result<(), AdminBindError> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(AdminBindError::Io {
                path: path.to_owned(),
                action: "inspect",
                source,
            });
        }
    };
    if !metadata.file_type().is_socket() {
        return Err(AdminBindError::NotASocket {
            path: path.to_owned(),
        });
    }

    match tokio::net::UnixStream::connect(path).await {
        Ok(_) => Err(AdminBindError::InUse {
            path: path.to_owned(),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing stale admin socket");
            std::fs::remove_file(path).map_err(|source| AdminBindError::Io {
                path: path.to_owned(),
                action: "remove the stale",
                source,
            })
        }
        Err(source) => Err(AdminBindError::Io {
            path: path.to_owned(),
            action: "probe",
            source,
        }),
    }
}

/// An error response: status and message.
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad_request(message: String) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message,
        }
    }

    fn not_found(message: String) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message,
        }
    }

    fn internal(message: String) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message,
        }
    }
}

impl From<BanError> for ApiError {
    fn from(error: BanError) -> Self {
        match error {
            BanError::InvalidAddress { .. } | BanError::InvalidDuration { .. } => {
                Self::bad_request(error.to_string())
            }
            BanError::Allowlisted { .. } | BanError::ConfiguredAllow { .. } => Self {
                status: StatusCode::CONFLICT,
                message: error.to_string(),
            },
            // A full map is the caller's to fix (raise the capacity or remove entries), so it is
            // reported whole, with the capacity setting to raise.
            BanError::Kernel { ref source, .. } | BanError::KernelBans { ref source }
                if source.is_map_full() =>
            {
                let message = ErrorChain(&error).to_string();
                tracing::warn!(error = %message, "kernel map full");
                Self {
                    status: StatusCode::INSUFFICIENT_STORAGE,
                    message,
                }
            }
            BanError::Store(_)
            | BanError::Kernel { .. }
            | BanError::KernelBans { .. }
            | BanError::KernelRead { .. } => {
                let message = ErrorChain(&error).to_string();
                tracing::error!(error = %message, "admin request failed");
                Self::internal(message)
            }
        }
    }
}

async fn route(state: &AdminState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);

    let result = match (method.clone(), path.as_str()) {
        (Method::GET, "/v1/bans") => list_bans(state).await,
        (Method::POST, "/v1/bans") => add_ban(state, request).await,
        (Method::POST, "/v1/bans/import") => import::import_bans(state, request).await,
        (Method::DELETE, target) if target.starts_with("/v1/bans/") => {
            remove_ban(state, &target["/v1/bans/".len()..]).await
        }
        (Method::GET, "/v1/allow") => list_allows(state),
        (Method::POST, "/v1/allow") => add_allow(state, request).await,
        (Method::DELETE, target) if target.starts_with("/v1/allow/") => {
            remove_allow(state, &target["/v1/allow/".len()..]).await
        }
        (Method::GET, "/v1/stats") => stats(state, query.as_deref()).await,
        (_, target) if target.starts_with(oauth::PREFIX) => {
            oauth::route(state.oauth.as_ref(), request).await
        }
        (_, "/v1/bans" | "/v1/bans/import" | "/v1/allow" | "/v1/stats") => Err(ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: format!("method {method} is not allowed on {path}"),
        }),
        _ => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("no such endpoint: {method} {path}"),
        }),
    };

    match result {
        Ok(response) => response,
        Err(error) => json_response(
            error.status,
            &ErrorBody {
                error: error.message,
            },
        ),
    }
}

async fn list_bans(state: &AdminState) -> Result<Response<Full<Bytes>>, ApiError> {
    let bans = Arc::clone(&state.bans);
    let records = blocking(move || bans.list()).await??;
    let now = SystemTime::now();
    let list = BanList {
        bans: records
            .iter()
            .map(|record| BanView::from_record(record, now))
            .collect(),
    };
    Ok(json_response(StatusCode::OK, &list))
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, ApiError> {
    Ok(Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|error| {
            ApiError::bad_request(format!(
                "failed to read the request body (at most {MAX_BODY_BYTES} bytes): {error}"
            ))
        })?
        .to_bytes())
}

async fn add_ban(
    state: &AdminState,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let body = read_body(request).await?;
    let add: AddBanRequest = serde_json::from_slice(&body).map_err(|error| {
        ApiError::bad_request(format!(
            "invalid request body: {error}; expected {{\"address\": \"192.0.2.7\", \
             \"ttl_seconds\": 600}} (ttl_seconds null for a ban that never expires)"
        ))
    })?;

    let address = parse_address(&add.address)?;
    let ttl = parse_ttl_seconds(add.ttl_seconds)?;
    let reason = manual_reason(add.reason);

    let bans = Arc::clone(&state.bans);
    let record = blocking(move || bans.apply(address, ttl, BanOrigin::Manual, &reason)).await??;
    Ok(json_response(
        StatusCode::CREATED,
        &BanView::from_record(&record, SystemTime::now()),
    ))
}

/// Checks a request's `ttl_seconds`: 1 to [`MAX_DURATION_SECONDS`], or `None` for never.
fn parse_ttl_seconds(ttl_seconds: Option<u64>) -> Result<Option<Duration>, ApiError> {
    match ttl_seconds {
        Some(0) => Err(ApiError::bad_request(
            "invalid ttl_seconds 0: expected at least 1, or null for a ban that never expires"
                .into(),
        )),
        Some(seconds) if seconds > MAX_DURATION_SECONDS => Err(ApiError::bad_request(format!(
            "invalid ttl_seconds {seconds}: expected at most {MAX_DURATION_SECONDS}"
        ))),
        Some(seconds) => Ok(Some(Duration::from_secs(seconds))),
        None => Ok(None),
    }
}

/// Returns the reason of a manual ban, or the default one when the request gives none.
fn manual_reason(reason: Option<String>) -> String {
    reason
        .filter(|reason| !reason.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_MANUAL_REASON.to_owned())
}

async fn remove_ban(state: &AdminState, text: &str) -> Result<Response<Full<Bytes>>, ApiError> {
    let address = parse_address(text)?;
    let bans = Arc::clone(&state.bans);
    let removed = blocking(move || bans.remove(address)).await??;
    match removed {
        Some(record) => Ok(json_response(
            StatusCode::OK,
            &BanView::from_record(&record, SystemTime::now()),
        )),
        None => Err(ApiError::not_found(format!("no ban found for {address}"))),
    }
}

fn list_allows(state: &AdminState) -> Result<Response<Full<Bytes>>, ApiError> {
    let list = AllowList {
        entries: state
            .bans
            .allowlist()
            .into_iter()
            .map(AllowView::from)
            .collect(),
    };
    Ok(json_response(StatusCode::OK, &list))
}

async fn add_allow(
    state: &AdminState,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let body = read_body(request).await?;
    let add: AddAllowRequest = serde_json::from_slice(&body).map_err(|error| {
        ApiError::bad_request(format!(
            "invalid request body: {error}; expected {{\"address\": \"198.51.100.0/24\"}}"
        ))
    })?;
    let address = parse_address(&add.address)?;

    let bans = Arc::clone(&state.bans);
    let record = blocking(move || bans.allow(address)).await??;
    let view = AllowView {
        address: record.address,
        configured: false,
    };
    Ok(json_response(StatusCode::CREATED, &view))
}

async fn remove_allow(state: &AdminState, text: &str) -> Result<Response<Full<Bytes>>, ApiError> {
    let address = parse_address(text)?;
    let bans = Arc::clone(&state.bans);
    if !blocking(move || bans.disallow(address)).await?? {
        return Err(ApiError::not_found(format!(
            "no allowlist entry found for {address}"
        )));
    }
    let view = AllowView {
        address,
        configured: false,
    };
    Ok(json_response(StatusCode::OK, &view))
}

async fn stats(state: &AdminState, query: Option<&str>) -> Result<Response<Full<Bytes>>, ApiError> {
    let top = parse_top(query)?;
    let verdicts = state.blocklist.verdict_totals().map_err(|error| {
        ApiError::internal(format!(
            "failed to read verdict counters: {}",
            ErrorChain(&error)
        ))
    })?;
    let sources = state.blocklist.top_sources(top).map_err(|error| {
        ApiError::internal(format!(
            "failed to read source counters: {}",
            ErrorChain(&error)
        ))
    })?;

    let bans = Arc::clone(&state.bans);
    let active_bans = blocking(move || bans.list()).await??.len();
    let stats = Stats {
        verdicts: verdicts.iter().map(VerdictView::from).collect(),
        top_sources: sources.iter().map(SourceView::from).collect(),
        active_bans,
    };
    Ok(json_response(StatusCode::OK, &stats))
}

/// Parses an address or CIDR range from the API, naming it when invalid.
fn parse_address(text: &str) -> Result<IpNetwork, ApiError> {
    text.parse::<IpNetwork>()
        .map_err(|error| ApiError::bad_request(error.to_string()))
}

/// Reads `top=N` from the query of `/v1/stats`.
fn parse_top(query: Option<&str>) -> Result<usize, ApiError> {
    let Some(value) = query
        .into_iter()
        .flat_map(|query| query.split('&'))
        .find_map(|pair| pair.strip_prefix("top="))
    else {
        return Ok(DEFAULT_TOP_SOURCES);
    };
    match value.parse::<usize>() {
        Ok(top) if (1..=MAX_TOP_SOURCES).contains(&top) => Ok(top),
        _ => Err(ApiError::bad_request(format!(
            "invalid top `{value}`: expected a number from 1 to {MAX_TOP_SOURCES}"
        ))),
    }
}

async fn blocking<T, F>(work: F) -> Result<T, ApiError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        tracing::error!(error = %ErrorChain(&error), "admin task failed");
        ApiError::internal("internal error: the request task failed".into())
    })
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let bytes = match serde_json::to_vec(body) {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::error!(error = %ErrorChain(&error), "failed to encode an admin response");
            return Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .body(Full::new(Bytes::from_static(
                    b"{\"error\":\"failed to encode the response\"}",
                )))
                .unwrap_or_default();
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_defaults_and_bounds() {
        assert_eq!(parse_top(None).ok(), Some(DEFAULT_TOP_SOURCES));
        assert_eq!(parse_top(Some("top=3")).ok(), Some(3));
        assert_eq!(parse_top(Some("x=1&top=7")).ok(), Some(7));
        assert!(parse_top(Some("top=0")).is_err());
        assert!(parse_top(Some("top=many")).is_err());
        assert!(parse_top(Some("top=1001")).is_err());
    }

    #[test]
    fn mapped_address_is_canonical() {
        let address = parse_address("::ffff:192.0.2.7").ok();
        assert_eq!(address, Some("192.0.2.7".parse().expect("valid address")));
    }

    #[test]
    fn invalid_address_is_named() {
        let error = parse_address("192.0.2.300").expect_err("invalid address");
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert!(error.message.contains("`192.0.2.300`"), "{}", error.message);
    }
}
