//! The embedded store: a redb file that keeps bans across restarts.
//!
//! The store is the source of truth for bans. The kernel map is rebuilt from it at start, so a
//! ban is written here before it is pushed into the kernel.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::network::IpNetwork;

/// Bans by canonical address or range text (`192.0.2.7`, `2001:db8::1`, `198.51.100.0/24`);
/// values are JSON [`BanRecord`]s.
const BANS: TableDefinition<&str, &[u8]> = TableDefinition::new("bans");
/// Allowlist entries added at run time, by canonical address or range text; values are JSON
/// [`AllowRecord`]s. Entries from the config file are not stored.
const ALLOWLIST: TableDefinition<&str, &[u8]> = TableDefinition::new("allowlist");
/// Offence history of sources banned by the threat engine, by canonical address text; values
/// are JSON [`OffenceRecord`]s. Kept after the ban expires, so a repeat offender's next ban is
/// longer.
const OFFENCES: TableDefinition<&str, &[u8]> = TableDefinition::new("offences");

/// Origin of a ban: who or what applied it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BanOrigin {
    /// An operator, through the admin API or `fwctl`.
    Manual,
    /// Too many rate-limit rejections within the strike window.
    RateLimit,
    /// A request threat score above the ban threshold.
    ThreatScore,
    /// A ban received from another host of the fleet.
    Peer,
}

impl BanOrigin {
    /// Every origin, for metric label sets.
    pub const ALL: [BanOrigin; 4] = [
        BanOrigin::Manual,
        BanOrigin::RateLimit,
        BanOrigin::ThreatScore,
        BanOrigin::Peer,
    ];

    /// Label used in metrics, logs and the admin API.
    pub const fn label(self) -> &'static str {
        match self {
            BanOrigin::Manual => "manual",
            BanOrigin::RateLimit => "rate_limit",
            BanOrigin::ThreatScore => "threat_score",
            BanOrigin::Peer => "peer",
        }
    }
}

impl fmt::Display for BanOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl FromStr for BanOrigin {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        BanOrigin::ALL
            .into_iter()
            .find(|origin| origin.label() == value)
            .ok_or_else(|| format!("unknown ban origin `{value}`"))
    }
}

/// One stored ban.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRecord {
    /// The banned address or range, canonical (IPv4 as IPv4, never IPv4-mapped IPv6).
    pub address: IpNetwork,
    /// Expiry in milliseconds since the Unix epoch; `None` for a ban that never expires.
    pub expires_at_ms: Option<u64>,
    /// Creation time in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Origin of the ban.
    pub origin: BanOrigin,
    /// Short human-readable reason, shown by `fwctl bans list`.
    pub reason: String,
}

impl BanRecord {
    /// Returns whether the ban has expired at `now_ms` (milliseconds since the Unix epoch).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|expires| expires <= now_ms)
    }
}

/// One allowlist entry added at run time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowRecord {
    /// The allowlisted address or range, canonical.
    pub address: IpNetwork,
    /// Creation time in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

/// The ban history of one source, for escalating ban durations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffenceRecord {
    /// Bans applied to the source so far.
    pub count: u32,
    /// Time of the latest ban in milliseconds since the Unix epoch.
    pub last_at_ms: u64,
}

/// Errors from the store. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The parent directory could not be created.
    #[error("failed to create store directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file could not be opened or created.
    #[error(
        "failed to open store {} (check that the file is a redb database, is writable, and is \
         not used by another agent)",
        path.display()
    )]
    Open {
        path: PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
    /// A read or write transaction failed.
    #[error("store {} failed to {action}", path.display())]
    Transaction {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: Box<redb::Error>,
    },
    /// A record could not be encoded.
    #[error("store {} failed to encode the record for key `{key}`", path.display())]
    Encode {
        path: PathBuf,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    /// A stored record does not decode.
    #[error("store {} holds an invalid record for key `{key}`", path.display())]
    Decode {
        path: PathBuf,
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The ban store. Every call is a short blocking transaction; async callers run it through
/// `tokio::task::spawn_blocking`. Clones share one open database.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    db: std::sync::Arc<Database>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens the store at `path`, creating the file and its parent directory if missing.
    ///
    /// # Errors
    ///
    /// [`StoreError`] naming the path when the directory cannot be created, or the file is
    /// corrupt, not a redb database, unwritable, or open in another process.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDir {
                path: parent.to_owned(),
                source,
            })?;
        }

        let db = Database::create(path).map_err(|error| StoreError::Open {
            path: path.to_owned(),
            source: Box::new(error.into()),
        })?;
        let store = Self {
            path: path.to_owned(),
            db: std::sync::Arc::new(db),
        };

        // Create the table now, so that a read-only file fails here and reads never find it
        // missing.
        store.write(BANS, "create the bans table", |_| Ok(()))?;
        store.write(ALLOWLIST, "create the allowlist table", |_| Ok(()))?;
        store.write(OFFENCES, "create the offences table", |_| Ok(()))?;
        Ok(store)
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns the open database, for modules that keep their own tables in the same file.
    pub(crate) fn database(&self) -> &Database {
        &self.db
    }

    /// Inserts or replaces the ban of `record.address`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Transaction`] when the write fails.
    pub fn put_ban(&self, record: &BanRecord) -> Result<(), StoreError> {
        self.put_json(BANS, "write a ban", &record.address.to_string(), record)
    }

    /// Inserts or replaces the bans of `records` in one transaction, so that either all of them
    /// are stored or none is.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when a record does not encode or the write fails.
    pub fn put_bans(&self, records: &[BanRecord]) -> Result<(), StoreError> {
        let mut encoded = Vec::with_capacity(records.len());
        for record in records {
            let key = record.address.to_string();
            let value = serde_json::to_vec(record).map_err(|source| StoreError::Encode {
                path: self.path.clone(),
                key: key.clone(),
                source,
            })?;
            encoded.push((key, value));
        }
        self.write(BANS, "write bans", |table| {
            for (key, value) in &encoded {
                table.insert(key.as_str(), value.as_slice())?;
            }
            Ok(())
        })
    }

    /// Removes the ban of `address`. Returns the removed record, if there was one.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the write fails or the removed record does not decode.
    pub fn remove_ban(&self, address: IpNetwork) -> Result<Option<BanRecord>, StoreError> {
        let key = address.to_string();
        let mut removed = None;
        self.write(BANS, "remove a ban", |table| {
            removed = table
                .remove(key.as_str())?
                .map(|value| value.value().to_vec());
            Ok(())
        })?;
        removed.map(|bytes| self.decode(&key, &bytes)).transpose()
    }

    /// Returns the ban of `address`, if there is one, expired or not.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the read fails or the record does not decode.
    pub fn get_ban(&self, address: IpNetwork) -> Result<Option<BanRecord>, StoreError> {
        let key = address.to_string();
        let bytes = self.read_table(BANS, "read a ban", |table| {
            Ok(table.get(key.as_str())?.map(|value| value.value().to_vec()))
        })?;
        bytes.map(|bytes| self.decode(&key, &bytes)).transpose()
    }

    /// Returns every stored ban, expired or not, ordered by address text.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the read fails or a record does not decode.
    pub fn list_bans(&self) -> Result<Vec<BanRecord>, StoreError> {
        self.read_all(BANS, "list bans")?
            .iter()
            .map(|(key, bytes)| self.decode(key, bytes))
            .collect()
    }

    /// Inserts or replaces the allowlist entry of `record.address`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Transaction`] when the write fails.
    pub fn put_allow(&self, record: &AllowRecord) -> Result<(), StoreError> {
        self.put_json(
            ALLOWLIST,
            "write an allowlist entry",
            &record.address.to_string(),
            record,
        )
    }

    /// Removes the allowlist entry of `address`. Returns whether there was one.
    ///
    /// # Errors
    ///
    /// [`StoreError::Transaction`] when the write fails.
    pub fn remove_allow(&self, address: IpNetwork) -> Result<bool, StoreError> {
        let key = address.to_string();
        let mut removed = false;
        self.write(ALLOWLIST, "remove an allowlist entry", |table| {
            removed = table.remove(key.as_str())?.is_some();
            Ok(())
        })?;
        Ok(removed)
    }

    /// Returns every allowlist entry added at run time, ordered by address text.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the read fails or a record does not decode.
    pub fn list_allows(&self) -> Result<Vec<AllowRecord>, StoreError> {
        self.read_all(ALLOWLIST, "list allowlist entries")?
            .iter()
            .map(|(key, bytes)| self.decode(key, bytes))
            .collect()
    }

    /// Returns the offence history of `address`, if it has one.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the read fails or the record does not decode.
    pub fn get_offences(&self, address: IpNetwork) -> Result<Option<OffenceRecord>, StoreError> {
        let key = address.to_string();
        let bytes = self.read_table(OFFENCES, "read an offence history", |table| {
            Ok(table.get(key.as_str())?.map(|value| value.value().to_vec()))
        })?;
        bytes.map(|bytes| self.decode(&key, &bytes)).transpose()
    }

    /// Inserts or replaces the offence history of `address`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Transaction`] when the write fails.
    pub fn put_offences(
        &self,
        address: IpNetwork,
        record: &OffenceRecord,
    ) -> Result<(), StoreError> {
        self.put_json(
            OFFENCES,
            "write an offence history",
            &address.to_string(),
            record,
        )
    }

    /// Removes offence histories whose latest ban is older than `before_ms` (milliseconds since
    /// the Unix epoch). Returns the number removed.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the read or write fails or a record does not decode.
    pub fn forget_offences_before(&self, before_ms: u64) -> Result<usize, StoreError> {
        let mut stale = Vec::new();
        for (key, bytes) in self.read_all(OFFENCES, "list offence histories")? {
            let record: OffenceRecord = self.decode(&key, &bytes)?;
            if record.last_at_ms < before_ms {
                stale.push(key);
            }
        }
        if stale.is_empty() {
            return Ok(0);
        }
        self.write(OFFENCES, "remove offence histories", |table| {
            for key in &stale {
                table.remove(key.as_str())?;
            }
            Ok(())
        })?;
        Ok(stale.len())
    }

    fn read_all(
        &self,
        definition: TableDefinition<'static, &'static str, &'static [u8]>,
        action: &'static str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.read_table(definition, action, |table| {
            let mut entries = Vec::new();
            for entry in table.iter()? {
                let (key, value) = entry?;
                entries.push((key.value().to_owned(), value.value().to_vec()));
            }
            Ok(entries)
        })
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
            path: self.path.clone(),
            key: key.to_owned(),
            source,
        })
    }

    /// Stores `record` as JSON under `key` in the table `definition`, replacing any value.
    fn put_json<T: serde::Serialize>(
        &self,
        definition: TableDefinition<'static, &'static str, &'static [u8]>,
        action: &'static str,
        key: &str,
        record: &T,
    ) -> Result<(), StoreError> {
        let value = serde_json::to_vec(record).map_err(|source| StoreError::Encode {
            path: self.path.clone(),
            key: key.to_owned(),
            source,
        })?;
        self.write(definition, action, |table| {
            table.insert(key, value.as_slice())?;
            Ok(())
        })
    }

    fn write<F>(
        &self,
        definition: TableDefinition<'static, &'static str, &'static [u8]>,
        action: &'static str,
        change: F,
    ) -> Result<(), StoreError>
    where
        F: FnOnce(&mut redb::Table<'_, &'static str, &'static [u8]>) -> Result<(), redb::Error>,
    {
        let run = || -> Result<(), redb::Error> {
            let transaction = self.db.begin_write()?;
            {
                let mut table = transaction.open_table(definition)?;
                change(&mut table)?;
            }
            transaction.commit()?;
            Ok(())
        };
        run().map_err(|source| self.transaction_error(action, source))
    }

    fn read_table<T, F>(
        &self,
        definition: TableDefinition<'static, &'static str, &'static [u8]>,
        action: &'static str,
        read: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(&redb::ReadOnlyTable<&'static str, &'static [u8]>) -> Result<T, redb::Error>,
    {
        let run = || -> Result<T, redb::Error> {
            let transaction = self.db.begin_read()?;
            let table = transaction.open_table(definition)?;
            read(&table)
        };
        run().map_err(|source| self.transaction_error(action, source))
    }

    fn transaction_error(&self, action: &'static str, source: redb::Error) -> StoreError {
        StoreError::Transaction {
            path: self.path.clone(),
            action,
            source: Box::new(source),
        }
    }
}

#[cfg(test)]
mod tests;
