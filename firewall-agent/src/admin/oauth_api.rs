//! JSON bodies of the admin API's OAuth endpoints, shared by the server and `fwctl`.
//!
//! | method and path | request body | response body |
//! | --- | --- | --- |
//! | `GET /v1/oauth/users` | | [`UserList`] |
//! | `POST /v1/oauth/users` | [`AddUserRequest`] | [`UserView`], status 201 |
//! | `DELETE /v1/oauth/users/{username}` | | [`UserView`] of the removed user, or 404 |
//! | `GET /v1/oauth/keys` | | [`KeyList`] |
//! | `POST /v1/oauth/keys/rotate` | | [`KeyList`] after the rotation |
//!
//! Every endpoint returns 404 when the authorization server is not enabled.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One user of the login page. The password hash is never sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    /// Login name.
    pub username: String,
    /// Creation time in milliseconds since the Unix epoch; 0 in the response of a removal.
    pub created_at_ms: u64,
}

/// Response of `GET /v1/oauth/users`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserList {
    /// The users, ordered by name.
    pub users: Vec<UserView>,
}

/// Request body of `POST /v1/oauth/users`. Adding an existing user replaces the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddUserRequest {
    /// Login name: printable characters without whitespace.
    pub username: String,
    /// Password in clear; the agent stores only its Argon2id hash.
    pub password: String,
}

impl fmt::Debug for AddUserRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddUserRequest")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// One signing key, public facts only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyView {
    /// Key identifier.
    pub kid: String,
    /// `next` (published, not signing yet), `active` (signing) or `retired` (published until
    /// its tokens expired).
    pub status: String,
    /// Creation time in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// For a retired key, when it is removed from the JWKS, in milliseconds since the Unix
    /// epoch.
    pub expires_at_ms: Option<u64>,
}

/// Response of `GET /v1/oauth/keys` and `POST /v1/oauth/keys/rotate`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyList {
    /// The published keys.
    pub keys: Vec<KeyView>,
}
