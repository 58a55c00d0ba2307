//! Persistence of the authorization server: codes, refresh-token families, revocations, users,
//! clients and signing keys.
//!
//! [`OAuthStorage`] is the interface, so that fleet mode can keep this state in Redis. The
//! embedded implementation, [`RedbStorage`], keeps it in tables of the agent's redb store.
//! Codes and refresh tokens are stored under the SHA-256 of their value, never in clear.

use std::fmt;
use std::path::PathBuf;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::keys::KeyRecord;
use crate::store::Store;

const CODES: TableDefinition<&str, &[u8]> = TableDefinition::new("oauth_codes");
const REFRESH_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("oauth_refresh_tokens");
const FAMILIES: TableDefinition<&str, &[u8]> = TableDefinition::new("oauth_families");
/// Revoked access tokens: `jti` to the token's expiry in milliseconds since the Unix epoch.
const REVOKED: TableDefinition<&str, u64> = TableDefinition::new("oauth_revoked");
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("oauth_users");
const CLIENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("oauth_clients");
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("oauth_keys");

/// One authorization code, stored under the SHA-256 of its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeRecord {
    /// Client the code was issued to.
    pub client_id: String,
    /// Redirect URI of the authorization request, which the token request must repeat.
    pub redirect_uri: String,
    /// PKCE `code_challenge` (S256).
    pub code_challenge: String,
    /// Signed-in user.
    pub subject: String,
    /// Granted scope, space-separated.
    pub scope: String,
    /// RFC 8707 `resource` of the authorization request, if any.
    pub resource: Option<String>,
    /// Expiry in milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
    /// Whether a token request has redeemed the code. A consumed code is kept until it
    /// expires, so that a replay can be detected.
    pub consumed: bool,
    /// Tokens issued from the code, revoked when the code is replayed.
    pub grant: Option<CodeGrant>,
    /// Whether a replay that passed client authentication and PKCE was seen. Tokens recorded
    /// after that are revoked at once.
    #[serde(default)]
    pub replayed: bool,
}

/// Tokens issued from one authorization code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeGrant {
    /// Refresh-token family started by the code, if a refresh token was issued.
    pub family_id: Option<String>,
    /// `jti` of the access token.
    pub access_jti: String,
    /// Expiry of the access token in milliseconds since the Unix epoch.
    pub access_expires_at_ms: u64,
}

/// Result of [`OAuthStorage::consume_code`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodeRedemption {
    /// First redemption: the code is now consumed.
    Fresh(CodeRecord),
    /// The code was consumed before.
    Replayed(CodeRecord),
    /// No such code, or it expired.
    Unknown,
}

/// One refresh token, stored under the SHA-256 of its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRecord {
    /// Family the token belongs to.
    pub family_id: String,
    /// Idle expiry in milliseconds since the Unix epoch. The family's absolute expiry applies
    /// too.
    pub expires_at_ms: u64,
    /// Whether the token was exchanged for a newer one. Presenting it again is a replay.
    pub rotated: bool,
}

/// An access token that a family or a code issued, for revocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedAccessToken {
    /// The token's `jti`.
    pub jti: String,
    /// The token's expiry in milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
}

/// The lineage of refresh tokens that one grant started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyRecord {
    /// Random identifier.
    pub family_id: String,
    /// Client the grant was issued to.
    pub client_id: String,
    /// Signed-in user.
    pub subject: String,
    /// Granted scope, space-separated. A refresh may narrow it for one access token, never
    /// widen it.
    pub scope: String,
    /// RFC 8707 `resource` of the grant, if any.
    pub resource: Option<String>,
    /// Absolute expiry in milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
    /// Whether the family was revoked. Every token in it is then invalid.
    pub revoked: bool,
    /// Access tokens issued through the family that have not expired yet.
    pub access_tokens: Vec<IssuedAccessToken>,
}

/// Result of [`OAuthStorage::rotate_refresh`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshRotation {
    /// The token was valid and is now rotated out; the new token is stored.
    Rotated(FamilyRecord),
    /// The token had been rotated out before. The whole family is now revoked.
    Replayed { family_id: String },
    /// No such token, or it or its family expired or was revoked.
    Invalid,
}

/// A resource owner who signs in on the login page.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Login name.
    pub username: String,
    /// Argon2id hash in PHC string format.
    pub password_hash: String,
    /// Creation time in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("username", &self.username)
            .field("created_at_ms", &self.created_at_ms)
            .finish_non_exhaustive()
    }
}

/// A registered client.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    /// `client_id`.
    pub client_id: String,
    /// SHA-256 of the client secret, hex; `None` for a public client.
    pub secret_sha256: Option<String>,
    /// Registered redirect URIs, compared by exact string, except the port of a loopback IP
    /// redirect.
    pub redirect_uris: Vec<String>,
    /// Allowed grant types: `authorization_code`, `refresh_token`, `client_credentials`.
    pub grant_types: Vec<String>,
    /// Scopes the client may request.
    pub scopes: Vec<String>,
}

impl ClientRecord {
    /// Returns whether the client has a secret and so can authenticate.
    pub fn is_confidential(&self) -> bool {
        self.secret_sha256.is_some()
    }

    /// Returns whether the client may use `grant_type`.
    pub fn allows_grant(&self, grant_type: &str) -> bool {
        self.grant_types.iter().any(|allowed| allowed == grant_type)
    }
}

impl fmt::Debug for ClientRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientRecord")
            .field("client_id", &self.client_id)
            .field("confidential", &self.is_confidential())
            .field("redirect_uris", &self.redirect_uris)
            .field("grant_types", &self.grant_types)
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// Error from the authorization server's storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A transaction on the embedded store failed.
    #[error("oauth store {} failed to {action}", path.display())]
    Transaction {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: Box<redb::Error>,
    },
    /// A stored record does not decode, or a record does not encode.
    #[error("oauth store {} holds an invalid record in table {table}", path.display())]
    Record {
        path: PathBuf,
        table: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Storage of the authorization server. Every method is one short blocking transaction, and
/// the methods that read and change a record do both atomically.
pub trait OAuthStorage: Send + Sync + fmt::Debug {
    /// Stores a new authorization code under `code_hash`.
    fn put_code(&self, code_hash: &str, record: &CodeRecord) -> Result<(), StorageError>;

    /// Marks the code consumed and returns it, in one atomic step, so that exactly one of many
    /// concurrent redemptions gets [`CodeRedemption::Fresh`].
    fn consume_code(&self, code_hash: &str, now_ms: u64) -> Result<CodeRedemption, StorageError>;

    /// Records the tokens issued from a consumed code. Returns true when the code was marked
    /// replayed before, so the caller revokes the tokens.
    fn record_code_grant(&self, code_hash: &str, grant: &CodeGrant) -> Result<bool, StorageError>;

    /// Marks a consumed code replayed and returns the tokens issued from it so far, in one
    /// atomic step.
    fn mark_code_replayed(&self, code_hash: &str) -> Result<Option<CodeGrant>, StorageError>;

    /// Stores a new family and its first refresh token.
    fn create_family(
        &self,
        family: &FamilyRecord,
        token_hash: &str,
        token: &RefreshRecord,
    ) -> Result<(), StorageError>;

    /// Rotates the refresh token `old_hash` out and stores `new_hash` in its family with the
    /// idle expiry `new_expires_at_ms`, atomically. A replay of a rotated-out token revokes
    /// the family.
    fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        new_expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<RefreshRotation, StorageError>;

    /// Returns a refresh token and its family, if both exist and are valid at `now_ms`.
    fn find_refresh(
        &self,
        token_hash: &str,
        now_ms: u64,
    ) -> Result<Option<(RefreshRecord, FamilyRecord)>, StorageError>;

    /// Records an access token issued through a family, so that revoking the family revokes
    /// it too. Tokens of the family that expired before `now_ms` are forgotten.
    fn record_family_access(
        &self,
        family_id: &str,
        token: &IssuedAccessToken,
        now_ms: u64,
    ) -> Result<(), StorageError>;

    /// Revokes a family and every access token issued through it.
    fn revoke_family(&self, family_id: &str) -> Result<(), StorageError>;

    /// Revokes the access token `jti` until it expires.
    fn revoke_access(&self, token: &IssuedAccessToken) -> Result<(), StorageError>;

    /// Returns whether the access token `jti` is revoked.
    fn is_access_revoked(&self, jti: &str) -> Result<bool, StorageError>;

    /// Deletes codes, refresh tokens, families and revocations that expired before `now_ms`.
    /// Returns how many records it deleted.
    fn purge_expired(&self, now_ms: u64) -> Result<usize, StorageError>;

    /// Inserts or replaces a user.
    fn put_user(&self, user: &UserRecord) -> Result<(), StorageError>;
    /// Removes a user. Returns whether there was one.
    fn remove_user(&self, username: &str) -> Result<bool, StorageError>;
    /// Returns a user.
    fn get_user(&self, username: &str) -> Result<Option<UserRecord>, StorageError>;
    /// Returns every user, ordered by name.
    fn list_users(&self) -> Result<Vec<UserRecord>, StorageError>;

    /// Inserts or replaces a client.
    fn put_client(&self, client: &ClientRecord) -> Result<(), StorageError>;
    /// Returns a client.
    fn get_client(&self, client_id: &str) -> Result<Option<ClientRecord>, StorageError>;

    /// Returns every stored signing key.
    fn load_keys(&self) -> Result<Vec<KeyRecord>, StorageError>;
    /// Replaces every stored signing key with `keys`, atomically.
    fn replace_keys(&self, keys: &[KeyRecord]) -> Result<(), StorageError>;
}

/// [`OAuthStorage`] in the agent's embedded redb store.
#[derive(Clone, Debug)]
pub struct RedbStorage {
    store: Store,
}

type JsonTable<'txn> = redb::Table<'txn, &'static str, &'static [u8]>;

impl RedbStorage {
    /// Creates the tables in `store` if they are missing.
    ///
    /// # Errors
    ///
    /// [`StorageError::Transaction`] when the store is not writable.
    pub fn open(store: Store) -> Result<Self, StorageError> {
        let storage = Self { store };
        storage.write("create the oauth tables", |transaction| {
            for table in [CODES, REFRESH_TOKENS, FAMILIES, USERS, CLIENTS, KEYS] {
                transaction.open_table(table)?;
            }
            transaction.open_table(REVOKED)?;
            Ok(Ok(()))
        })?;
        Ok(storage)
    }

    fn transaction_error(&self, action: &'static str, source: redb::Error) -> StorageError {
        StorageError::Transaction {
            path: self.store.path().to_owned(),
            action,
            source: Box::new(source),
        }
    }

    fn record_error(&self, table: &'static str, source: serde_json::Error) -> StorageError {
        StorageError::Record {
            path: self.store.path().to_owned(),
            table,
            source,
        }
    }

    /// Runs `change` in one write transaction and commits it, unless `change` returns a
    /// record error.
    fn write<T, F>(&self, action: &'static str, change: F) -> Result<T, StorageError>
    where
        F: FnOnce(&redb::WriteTransaction) -> Result<Result<T, StorageError>, redb::Error>,
    {
        let run = || -> Result<Result<T, StorageError>, redb::Error> {
            let transaction = self.store.database().begin_write()?;
            let outcome = change(&transaction)?;
            if outcome.is_ok() {
                transaction.commit()?;
            }
            Ok(outcome)
        };
        run().map_err(|source| self.transaction_error(action, source))?
    }

    fn read<T, F>(&self, action: &'static str, read: F) -> Result<T, StorageError>
    where
        F: FnOnce(&redb::ReadTransaction) -> Result<Result<T, StorageError>, redb::Error>,
    {
        let run = || -> Result<Result<T, StorageError>, redb::Error> {
            let transaction = self.store.database().begin_read()?;
            read(&transaction)
        };
        run().map_err(|source| self.transaction_error(action, source))?
    }

    fn encode<T: Serialize>(
        &self,
        table: &'static str,
        value: &T,
    ) -> Result<Vec<u8>, StorageError> {
        serde_json::to_vec(value).map_err(|source| self.record_error(table, source))
    }

    fn decode<T: DeserializeOwned>(
        &self,
        table: &'static str,
        bytes: &[u8],
    ) -> Result<T, StorageError> {
        serde_json::from_slice(bytes).map_err(|source| self.record_error(table, source))
    }

    fn get_json<T: DeserializeOwned>(
        &self,
        table: &JsonTable<'_>,
        name: &'static str,
        key: &str,
    ) -> Result<Result<Option<T>, StorageError>, redb::Error> {
        let bytes = table.get(key)?.map(|value| value.value().to_vec());
        Ok(bytes.map(|bytes| self.decode(name, &bytes)).transpose())
    }

    fn put_json<T: Serialize>(
        &self,
        table: &mut JsonTable<'_>,
        name: &'static str,
        key: &str,
        value: &T,
    ) -> Result<Result<(), StorageError>, redb::Error> {
        match self.encode(name, value) {
            Ok(bytes) => {
                table.insert(key, bytes.as_slice())?;
                Ok(Ok(()))
            }
            Err(error) => Ok(Err(error)),
        }
    }

    /// Revokes a family inside an open write transaction.
    fn revoke_family_in(
        &self,
        transaction: &redb::WriteTransaction,
        family_id: &str,
    ) -> Result<Result<(), StorageError>, redb::Error> {
        let mut families = transaction.open_table(FAMILIES)?;
        let family: Option<FamilyRecord> =
            match self.get_json(&families, "oauth_families", family_id)? {
                Ok(family) => family,
                Err(error) => return Ok(Err(error)),
            };
        let Some(mut family) = family else {
            return Ok(Ok(()));
        };

        let mut revoked = transaction.open_table(REVOKED)?;
        for token in &family.access_tokens {
            revoked.insert(token.jti.as_str(), token.expires_at_ms)?;
        }
        family.revoked = true;
        self.put_json(&mut families, "oauth_families", family_id, &family)
    }

    fn list_json<T: DeserializeOwned>(
        &self,
        definition: TableDefinition<'static, &'static str, &'static [u8]>,
        name: &'static str,
        action: &'static str,
    ) -> Result<Vec<T>, StorageError> {
        self.read(action, |transaction| {
            let table = transaction.open_table(definition)?;
            let mut records = Vec::new();
            for entry in table.iter()? {
                let (_, value) = entry?;
                match self.decode(name, value.value()) {
                    Ok(record) => records.push(record),
                    Err(error) => return Ok(Err(error)),
                }
            }
            Ok(Ok(records))
        })
    }

    fn get_one<T: DeserializeOwned>(
        &self,
        definition: TableDefinition<'static, &'static str, &'static [u8]>,
        name: &'static str,
        action: &'static str,
        key: &str,
    ) -> Result<Option<T>, StorageError> {
        self.read(action, |transaction| {
            let table = transaction.open_table(definition)?;
            let bytes = table.get(key)?.map(|value| value.value().to_vec());
            Ok(bytes.map(|bytes| self.decode(name, &bytes)).transpose())
        })
    }

    fn put_one<T: Serialize>(
        &self,
        definition: TableDefinition<'static, &'static str, &'static [u8]>,
        name: &'static str,
        action: &'static str,
        key: &str,
        value: &T,
    ) -> Result<(), StorageError> {
        self.write(action, |transaction| {
            let mut table = transaction.open_table(definition)?;
            self.put_json(&mut table, name, key, value)
        })
    }
}

impl OAuthStorage for RedbStorage {
    fn put_code(&self, code_hash: &str, record: &CodeRecord) -> Result<(), StorageError> {
        self.put_one(
            CODES,
            "oauth_codes",
            "store an authorization code",
            code_hash,
            record,
        )
    }

    fn consume_code(&self, code_hash: &str, now_ms: u64) -> Result<CodeRedemption, StorageError> {
        self.write("consume an authorization code", |transaction| {
            let mut codes = transaction.open_table(CODES)?;
            let record: Option<CodeRecord> =
                match self.get_json(&codes, "oauth_codes", code_hash)? {
                    Ok(record) => record,
                    Err(error) => return Ok(Err(error)),
                };
            let Some(mut record) = record else {
                return Ok(Ok(CodeRedemption::Unknown));
            };
            if record.expires_at_ms <= now_ms {
                return Ok(Ok(CodeRedemption::Unknown));
            }
            if record.consumed {
                return Ok(Ok(CodeRedemption::Replayed(record)));
            }

            record.consumed = true;
            if let Err(error) = self.put_json(&mut codes, "oauth_codes", code_hash, &record)? {
                return Ok(Err(error));
            }
            Ok(Ok(CodeRedemption::Fresh(record)))
        })
    }

    fn record_code_grant(&self, code_hash: &str, grant: &CodeGrant) -> Result<bool, StorageError> {
        self.write(
            "record the tokens of an authorization code",
            |transaction| {
                let mut codes = transaction.open_table(CODES)?;
                let record: Option<CodeRecord> =
                    match self.get_json(&codes, "oauth_codes", code_hash)? {
                        Ok(record) => record,
                        Err(error) => return Ok(Err(error)),
                    };
                let Some(mut record) = record else {
                    return Ok(Ok(false));
                };
                record.grant = Some(grant.clone());
                Ok(self
                    .put_json(&mut codes, "oauth_codes", code_hash, &record)?
                    .map(|()| record.replayed))
            },
        )
    }

    fn mark_code_replayed(&self, code_hash: &str) -> Result<Option<CodeGrant>, StorageError> {
        self.write("mark an authorization code replayed", |transaction| {
            let mut codes = transaction.open_table(CODES)?;
            let record: Option<CodeRecord> =
                match self.get_json(&codes, "oauth_codes", code_hash)? {
                    Ok(record) => record,
                    Err(error) => return Ok(Err(error)),
                };
            let Some(mut record) = record else {
                return Ok(Ok(None));
            };
            record.replayed = true;
            Ok(self
                .put_json(&mut codes, "oauth_codes", code_hash, &record)?
                .map(|()| record.grant))
        })
    }

    fn create_family(
        &self,
        family: &FamilyRecord,
        token_hash: &str,
        token: &RefreshRecord,
    ) -> Result<(), StorageError> {
        self.write("store a refresh token family", |transaction| {
            let mut families = transaction.open_table(FAMILIES)?;
            if let Err(error) =
                self.put_json(&mut families, "oauth_families", &family.family_id, family)?
            {
                return Ok(Err(error));
            }
            let mut tokens = transaction.open_table(REFRESH_TOKENS)?;
            self.put_json(&mut tokens, "oauth_refresh_tokens", token_hash, token)
        })
    }

    fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        new_expires_at_ms: u64,
        now_ms: u64,
    ) -> Result<RefreshRotation, StorageError> {
        self.write("rotate a refresh token", |transaction| {
            let mut tokens = transaction.open_table(REFRESH_TOKENS)?;
            let token: Option<RefreshRecord> =
                match self.get_json(&tokens, "oauth_refresh_tokens", old_hash)? {
                    Ok(token) => token,
                    Err(error) => return Ok(Err(error)),
                };
            let Some(mut token) = token else {
                return Ok(Ok(RefreshRotation::Invalid));
            };
            let families = transaction.open_table(FAMILIES)?;
            let family: Option<FamilyRecord> =
                match self.get_json(&families, "oauth_families", &token.family_id)? {
                    Ok(family) => family,
                    Err(error) => return Ok(Err(error)),
                };
            drop(families);
            let Some(family) = family else {
                return Ok(Ok(RefreshRotation::Invalid));
            };
            if family.revoked || family.expires_at_ms <= now_ms {
                return Ok(Ok(RefreshRotation::Invalid));
            }

            if token.rotated {
                drop(tokens);
                if let Err(error) = self.revoke_family_in(transaction, &family.family_id)? {
                    return Ok(Err(error));
                }
                return Ok(Ok(RefreshRotation::Replayed {
                    family_id: family.family_id,
                }));
            }
            if token.expires_at_ms <= now_ms {
                return Ok(Ok(RefreshRotation::Invalid));
            }

            token.rotated = true;
            if let Err(error) =
                self.put_json(&mut tokens, "oauth_refresh_tokens", old_hash, &token)?
            {
                return Ok(Err(error));
            }
            let next = RefreshRecord {
                family_id: family.family_id.clone(),
                expires_at_ms: new_expires_at_ms.min(family.expires_at_ms),
                rotated: false,
            };
            if let Err(error) =
                self.put_json(&mut tokens, "oauth_refresh_tokens", new_hash, &next)?
            {
                return Ok(Err(error));
            }
            Ok(Ok(RefreshRotation::Rotated(family)))
        })
    }

    fn find_refresh(
        &self,
        token_hash: &str,
        now_ms: u64,
    ) -> Result<Option<(RefreshRecord, FamilyRecord)>, StorageError> {
        let token: Option<RefreshRecord> = self.get_one(
            REFRESH_TOKENS,
            "oauth_refresh_tokens",
            "read a refresh token",
            token_hash,
        )?;
        let Some(token) = token else {
            return Ok(None);
        };
        let family: Option<FamilyRecord> = self.get_one(
            FAMILIES,
            "oauth_families",
            "read a refresh token family",
            &token.family_id,
        )?;
        Ok(family
            .filter(|family| !family.revoked && family.expires_at_ms > now_ms)
            .filter(|_| !token.rotated && token.expires_at_ms > now_ms)
            .map(|family| (token, family)))
    }

    fn record_family_access(
        &self,
        family_id: &str,
        token: &IssuedAccessToken,
        now_ms: u64,
    ) -> Result<(), StorageError> {
        self.write("record an access token of a family", |transaction| {
            let mut families = transaction.open_table(FAMILIES)?;
            let family: Option<FamilyRecord> =
                match self.get_json(&families, "oauth_families", family_id)? {
                    Ok(family) => family,
                    Err(error) => return Ok(Err(error)),
                };
            let Some(mut family) = family else {
                return Ok(Ok(()));
            };
            family
                .access_tokens
                .retain(|issued| issued.expires_at_ms > now_ms);
            family.access_tokens.push(token.clone());
            self.put_json(&mut families, "oauth_families", family_id, &family)
        })
    }

    fn revoke_family(&self, family_id: &str) -> Result<(), StorageError> {
        self.write("revoke a refresh token family", |transaction| {
            self.revoke_family_in(transaction, family_id)
        })
    }

    fn revoke_access(&self, token: &IssuedAccessToken) -> Result<(), StorageError> {
        self.write("revoke an access token", |transaction| {
            let mut revoked = transaction.open_table(REVOKED)?;
            revoked.insert(token.jti.as_str(), token.expires_at_ms)?;
            Ok(Ok(()))
        })
    }

    fn is_access_revoked(&self, jti: &str) -> Result<bool, StorageError> {
        self.read("read an access token revocation", |transaction| {
            let revoked = transaction.open_table(REVOKED)?;
            Ok(Ok(revoked.get(jti)?.is_some()))
        })
    }

    fn purge_expired(&self, now_ms: u64) -> Result<usize, StorageError> {
        self.write("delete expired oauth records", |transaction| {
            let mut removed = 0;

            let mut revoked = transaction.open_table(REVOKED)?;
            removed += revoked
                .extract_if(|_, expires_at_ms| expires_at_ms <= now_ms)?
                .count();

            let mut codes = transaction.open_table(CODES)?;
            removed += codes
                .extract_if(|_, value| {
                    serde_json::from_slice::<CodeRecord>(value)
                        .map_or(true, |record| record.expires_at_ms <= now_ms)
                })?
                .count();

            let mut tokens = transaction.open_table(REFRESH_TOKENS)?;
            removed += tokens
                .extract_if(|_, value| {
                    serde_json::from_slice::<RefreshRecord>(value)
                        .map_or(true, |record| record.expires_at_ms <= now_ms)
                })?
                .count();

            // A revoked family is kept until its absolute expiry, so that a late replay of one
            // of its tokens still finds it revoked.
            let mut families = transaction.open_table(FAMILIES)?;
            removed += families
                .extract_if(|_, value| {
                    serde_json::from_slice::<FamilyRecord>(value)
                        .map_or(true, |record| record.expires_at_ms <= now_ms)
                })?
                .count();

            Ok(Ok(removed))
        })
    }

    fn put_user(&self, user: &UserRecord) -> Result<(), StorageError> {
        self.put_one(USERS, "oauth_users", "store a user", &user.username, user)
    }

    fn remove_user(&self, username: &str) -> Result<bool, StorageError> {
        self.write("remove a user", |transaction| {
            let mut users = transaction.open_table(USERS)?;
            let removed = users.remove(username)?.is_some();
            Ok(Ok(removed))
        })
    }

    fn get_user(&self, username: &str) -> Result<Option<UserRecord>, StorageError> {
        self.get_one(USERS, "oauth_users", "read a user", username)
    }

    fn list_users(&self) -> Result<Vec<UserRecord>, StorageError> {
        self.list_json(USERS, "oauth_users", "list users")
    }

    fn put_client(&self, client: &ClientRecord) -> Result<(), StorageError> {
        self.put_one(
            CLIENTS,
            "oauth_clients",
            "store a client",
            &client.client_id,
            client,
        )
    }

    fn get_client(&self, client_id: &str) -> Result<Option<ClientRecord>, StorageError> {
        self.get_one(CLIENTS, "oauth_clients", "read a client", client_id)
    }

    fn load_keys(&self) -> Result<Vec<KeyRecord>, StorageError> {
        self.list_json(KEYS, "oauth_keys", "read the signing keys")
    }

    fn replace_keys(&self, keys: &[KeyRecord]) -> Result<(), StorageError> {
        self.write("store the signing keys", |transaction| {
            let mut table = transaction.open_table(KEYS)?;
            table.retain(|_, _| false)?;
            for key in keys {
                if let Err(error) = self.put_json(&mut table, "oauth_keys", &key.kid, key)? {
                    return Ok(Err(error));
                }
            }
            Ok(Ok(()))
        })
    }
}

#[cfg(test)]
mod tests;
