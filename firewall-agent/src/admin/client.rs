//! The admin API client used by `fwctl`.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use super::api::{
    AddAllowRequest, AddBanRequest, AllowList, AllowView, BanList, BanView, ErrorBody,
    ImportBansRequest, ImportBansResponse, Stats,
};
use crate::network::IpNetwork;
use crate::telemetry::ErrorChain;

/// Errors from [`AdminClient`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing serves the socket.
    #[error(
        "the agent is not running: cannot connect to {} ({reason}); start it with \
         `firewall-agent run`, or pass --socket with the agent's admin.socket_path",
        path.display()
    )]
    NotRunning { path: PathBuf, reason: String },
    /// The socket exists but this user may not connect.
    #[error("permission denied on admin socket {}: run fwctl as the agent's user (usually root)", path.display())]
    PermissionDenied { path: PathBuf },
    /// Connecting failed for another reason.
    #[error("failed to connect to admin socket {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("admin request to {} failed", path.display())]
    Http {
        path: PathBuf,
        #[source]
        source: hyper::Error,
    },
    /// The agent returned an error.
    #[error("{message}")]
    Api { status: StatusCode, message: String },
    /// The agent's response does not decode.
    #[error("invalid response from the agent")]
    Decode {
        #[source]
        source: serde_json::Error,
    },
}

/// A client for the admin socket at one path. Each call opens one connection.
#[derive(Clone, Debug)]
pub struct AdminClient {
    socket: PathBuf,
}

impl AdminClient {
    /// Creates a client for the socket at `socket`. Nothing is connected until a call.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    /// Returns the socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET /v1/bans`.
    ///
    /// # Errors
    ///
    /// [`ClientError`] when the agent is unreachable or returns an error.
    pub async fn list_bans(&self) -> Result<BanList, ClientError> {
        self.call(Method::GET, "/v1/bans", None).await
    }

    /// `POST /v1/bans`.
    ///
    /// # Errors
    ///
    /// [`ClientError`] when the agent is unreachable or rejects the ban.
    pub async fn add_ban(&self, request: &AddBanRequest) -> Result<BanView, ClientError> {
        let body = serde_json::to_vec(request).map_err(|source| ClientError::Decode { source })?;
        self.call(Method::POST, "/v1/bans", Some(body)).await
    }

    /// `POST /v1/bans/import`.
    ///
    /// # Errors
    ///
    /// [`ClientError`] when the agent is unreachable, rejects the request, or fails to write
    /// the bans into the kernel maps.
    pub async fn import_bans(
        &self,
        request: &ImportBansRequest,
    ) -> Result<ImportBansResponse, ClientError> {
        let body = serde_json::to_vec(request).map_err(|source| ClientError::Decode { source })?;
        self.call(Method::POST, "/v1/bans/import", Some(body)).await
    }

    /// `DELETE /v1/bans/{address}`.
    ///
    /// # Errors
    ///
    /// [`ClientError`] when the agent is unreachable, or [`ClientError::Api`] with 404 when the
    /// address has no ban.
    pub async fn remove_ban(&self, address: IpNetwork) -> Result<BanView, ClientError> {
        self.call(Method::DELETE, &format!("/v1/bans/{address}"), None)
            .await
    }

    /// `GET /v1/allow`.
    ///
    /// # Errors
    ///
    /// [`ClientError`] when the agent is unreachable or returns an error.
    pub async fn list_allows(&self) -> Result<AllowList, ClientError> {
        self.call(Method::GET, "/v1/allow", None).await
    }

    /// `POST /v1/allow`.
    ///
    /// # Errors
    ///
    /// [`ClientError`] when the agent is unreachable or rejects the entry.
    pub async fn add_allow(&self, request: &AddAllowRequest) -> Result<AllowView, ClientError> {
        let body = serde_json::to_vec(request).map_err(|source| ClientError::Decode { source })?;
        self.call(Method::POST, "/v1/allow", Some(body)).await
    }

    /// `DELETE /v1/allow/{address}`.
    ///
    /// # Errors
    ///
    /// [`ClientError`] when the agent is unreachable, or [`ClientError::Api`] with 404 when the
    /// address is not allowlisted.
    pub async fn remove_allow(&self, address: IpNetwork) -> Result<AllowView, ClientError> {
        self.call(Method::DELETE, &format!("/v1/allow/{address}"), None)
            .await
    }

    /// `GET /v1/stats?top=N`.
    ///
    /// # Errors
    ///
    /// [`ClientError`] when the agent is unreachable or returns an error.
    pub async fn stats(&self, top: usize) -> Result<Stats, ClientError> {
        self.call(Method::GET, &format!("/v1/stats?top={top}"), None)
            .await
    }

    /// `GET /v1/oauth/users`.
    ///
    /// # Errors
    ///
    /// [`ClientError`] when the agent is unreachable or its authorization server is disabled.
    pub async fn list_users(&self) -> Result<super::oauth_api::UserList, ClientError> {
        self.call(Method::GET, "/v1/oauth/users", None).await
    }

    /// `POST /v1/oauth/users`.
    ///
    /// # Errors
    ///
    /// [`ClientError`] when the agent is unreachable or rejects the user.
    pub async fn add_user(
        &self,
        request: &super::oauth_api::AddUserRequest,
    ) -> Result<super::oauth_api::UserView, ClientError> {
        let body = serde_json::to_vec(request).map_err(|source| ClientError::Decode { source })?;
        self.call(Method::POST, "/v1/oauth/users", Some(body)).await
    }

    /// `DELETE /v1/oauth/users/{username}`.
    ///
    /// # Errors
    ///
    /// [`ClientError`] when the agent is unreachable, or [`ClientError::Api`] with 404 when
    /// there is no such user.
    pub async fn remove_user(&self, username: &str) -> Result<super::oauth_api::UserView, ClientError> {
        let encoded: String = form_urlencoded::byte_serialize(username.as_bytes()).collect();
        self.call(Method::DELETE, &format!("/v1/oauth/users/{encoded}"), None)
            .await
    }

    /// `GET /v1/oauth/keys`.
    ///
    /// # Errors
    ///
    /// [`ClientError`] when the agent is unreachable or its authorization server is disabled.
    pub async fn list_keys(&self) -> Result<super::oauth_api::KeyList, ClientError> {
        self.call(Method::GET, "/v1/oauth/keys", None).await
    }

    /// `POST /v1/oauth/keys/rotate`.
    ///
    /// # Errors
    ///
    /// [`ClientError`] when the agent is unreachable or the rotation fails.
    pub async fn rotate_keys(&self) -> Result<super::oauth_api::KeyList, ClientError> {
        self.call(Method::POST, "/v1/oauth/keys/rotate", None).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let stream = self.connect().await?;
        let http_error = |source| ClientError::Http {
            path: self.socket.clone(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_error)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %ErrorChain(&error), "admin client connection ended with an error");
            }
        });

        let mut request = Request::new(Full::new(Bytes::from(body.unwrap_or_default())));
        *request.method_mut() = method;
        // A fixed path always parses; the fallback is never used.
        *request.uri_mut() = path.parse().unwrap_or_default();
        let headers = request.headers_mut();
        headers.insert(header::HOST, HeaderValue::from_static("localhost"));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );

        let response = sender.send_request(request).await.map_err(http_error)?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(http_error)?
            .to_bytes();

        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|body| body.error)
                .unwrap_or_else(|_| format!("the agent responded with status {status}"));
            return Err(ClientError::Api { status, message });
        }
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode { source })
    }

    async fn connect(&self) -> Result<UnixStream, ClientError> {
        UnixStream::connect(&self.socket)
            .await
            .map_err(|source| match source.kind() {
                ErrorKind::NotFound => ClientError::NotRunning {
                    path: self.socket.clone(),
                    reason: "no such file".into(),
                },
                ErrorKind::ConnectionRefused => ClientError::NotRunning {
                    path: self.socket.clone(),
                    reason: "connection refused".into(),
                },
                ErrorKind::PermissionDenied => ClientError::PermissionDenied {
                    path: self.socket.clone(),
                },
                _ => ClientError::Connect {
                    path: self.socket.clone(),
                    source,
                },
            })
    }
}
