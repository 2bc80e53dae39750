//! The list on disk: one SQLite file (`notify_db_path`) in WAL mode with `synchronous = FULL`,
//! so a commit is on disk before anyone is told "accepted", and the operator's export can read
//! while the server writes.
//!
//! A row is `(topic, blind_index, key_version, nonce, ciphertext)`:
//! - `blind_index`: blake3 keyed hash of the address under the version's index key. It makes
//!   a sign-up idempotent without decrypting anything, and tells nothing to whoever lacks the
//!   key (no dictionary of likely addresses can be tried).
//! - `folded_index`: the same of the address in lower case, so a deletion finds the address
//!   however its owner capitalises it today (the local part is stored as given, but people do
//!   not remember whether they typed `Ann` or `ann`).
//! - `ciphertext`: XChaCha20-Poly1305 of the address under a random 192-bit nonce, with the
//!   topic and the blind index as associated data, so a row moved to another topic or another
//!   index fails to decrypt.
//!
//! The table has no rowid and no time: rows sort by blind index, so the file does not even
//! keep the order in which people signed up. `secure_delete` zeroes deleted rows in the file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};
use zeroize::Zeroizing;

use super::address::Address;
use super::keys::{KeyError, KeyRing, VersionKeys};

/// The schema this code writes (SQLite's `user_version`).
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS addresses (
        topic TEXT NOT NULL,
        blind_index BLOB NOT NULL,
        folded_index BLOB NOT NULL,
        key_version INTEGER NOT NULL,
        nonce BLOB NOT NULL,
        ciphertext BLOB NOT NULL,
        PRIMARY KEY (topic, blind_index)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS addresses_by_folded_index ON addresses (folded_index);
    CREATE TABLE IF NOT EXISTS key_versions (
        version INTEGER PRIMARY KEY,
        key_check BLOB NOT NULL
    );
    CREATE TABLE IF NOT EXISTS meta (
        name TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) WITHOUT ROWID;
";

/// How long a writer waits for another's transaction (the export, a key rotation) to end.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One change to the list.
pub enum Change {
    SignUp { topic: String, address: Address },
    Delete { address: Address },
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("notify_db_path {path}: {error}")]
    Database {
        path: String,
        error: rusqlite::Error,
    },
    #[error("notify_db_path {path}: {error}")]
    File { path: String, error: std::io::Error },
    #[error(
        "notify_master_key_path {path} does not exist, but the database holds addresses: a new \
         key would not open them. Point notify_master_key_path at the key file the database was \
         written with"
    )]
    KeyFileMissing { path: String },
    #[error("notify_db_path {path} is not an e-mail list of this server (its tables or key record are missing)")]
    NotAList { path: String },
    #[error("notify_db_path {path} can be read or written by others (mode {mode:o}); run `chmod 600 {path}`")]
    Exposed { path: String, mode: u32 },
    #[error("notify_db_path {path} does not exist (the server creates it when it starts with notify_db_path set)")]
    Missing { path: String },
    #[error("notify_db_path {path} was written by a newer Ephemera (schema {found}, this one knows {SCHEMA_VERSION})")]
    NewerSchema { path: String, found: i64 },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(
        "the master key file holds a different key for key version {version} than the one this \
         database was written with: wrong notify_master_key_path?"
    )]
    WrongKey { version: u32 },
    #[error(
        "the database has addresses under key version {version}, which the master key file does \
         not hold: wrong notify_master_key_path, or a key file older than the database?"
    )]
    MissingKey { version: u32 },
    #[error("a row of topic {topic} fails authentication: the database file was altered")]
    Tampered { topic: String },
}

/// What an export found: the addresses, and the rows that could not be read.
pub struct Export {
    pub addresses: Vec<Address>,
    /// Rows whose ciphertext fails authentication (changed in the file).
    pub tampered: usize,
    /// Key versions rows use that the key file does not hold.
    pub missing_versions: BTreeSet<u32>,
}

pub struct Store {
    connection: Connection,
    keys: KeyRing,
    key_path: PathBuf,
    path: String,
}

impl Store {
    /// Opens the list for the server: creates the database (mode 0600) and the key file when
    /// missing, and refuses a key file that does not match the database.
    pub fn open_or_create(db_path: &Path, key_path: &Path) -> Result<Store, StoreError> {
        if !key_path.exists() && database_has_keys(db_path) {
            return Err(StoreError::KeyFileMissing {
                path: key_path.display().to_string(),
            });
        }
        let keys = KeyRing::open_or_create(key_path)?;
        create_private_file(db_path)?;
        Self::open_with(db_path, key_path, keys, Access::Write)
    }

    /// Opens an existing list for the operator's commands; creates nothing. `Access::Read`
    /// (export, count) opens the file read-only, so reading can never change it.
    pub fn open_existing(
        db_path: &Path,
        key_path: &Path,
        access: Access,
    ) -> Result<Store, StoreError> {
        if !db_path.exists() {
            return Err(StoreError::Missing {
                path: db_path.display().to_string(),
            });
        }
        let keys = KeyRing::open(key_path)?;
        Self::open_with(db_path, key_path, keys, access)
    }

    fn open_with(
        db_path: &Path,
        key_path: &Path,
        keys: KeyRing,
        access: Access,
    ) -> Result<Store, StoreError> {
        let path = db_path.display().to_string();
        check_private(db_path)?;
        let flags = match access {
            Access::Read => OpenFlags::SQLITE_OPEN_READ_ONLY,
            Access::Write => OpenFlags::SQLITE_OPEN_READ_WRITE,
        } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection =
            Connection::open_with_flags(db_path, flags).map_err(|source| StoreError::Database {
                path: path.clone(),
                error: source,
            })?;
        let mut store = Store {
            connection,
            keys,
            key_path: key_path.to_owned(),
            path,
        };
        match access {
            Access::Write => store
                .prepare()
                .map_err(|source| store.database_error(source))?,
            Access::Read => store.check_schema()?,
        }
        let found: i64 = store
            .connection
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(|source| store.database_error(source))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: store.path.clone(),
                found,
            });
        }
        store.check_keys()?;
        Ok(store)
    }

    fn prepare(&self) -> rusqlite::Result<()> {
        self.connection.busy_timeout(BUSY_TIMEOUT)?;
        // WAL: the export reads beside the server's writes, and a commit is one append. FULL:
        // that append is synced before the commit returns, so "accepted" survives a kill or a
        // power cut. secure_delete: a removed address's ciphertext is zeroed, not left behind.
        self.connection
            .pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))?;
        self.connection.pragma_update(None, "synchronous", "FULL")?;
        self.connection.pragma_update(None, "secure_delete", "ON")?;
        self.connection.execute_batch(SCHEMA)?;
        let version: i64 = self
            .connection
            .pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version == 0 {
            self.connection
                .pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        Ok(())
    }

    /// A file opened read-only must already be a list: its tables there.
    fn check_schema(&self) -> Result<(), StoreError> {
        self.connection
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|source| self.database_error(source))?;
        let tables: i64 = self
            .connection
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'
                 AND name IN ('addresses', 'key_versions', 'meta')",
                [],
                |row| row.get(0),
            )
            .map_err(|source| self.database_error(source))?;
        if tables != 3 {
            return Err(StoreError::NotAList {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    /// Every key version the database records must match the key file's; a new database
    /// records the file's newest version.
    fn check_keys(&mut self) -> Result<(), StoreError> {
        let recorded = self.recorded_versions()?;
        let read_only = self
            .connection
            .is_readonly(rusqlite::MAIN_DB)
            .unwrap_or(true);
        if recorded.is_empty() && read_only {
            return Err(StoreError::NotAList {
                path: self.path.clone(),
            });
        }
        if recorded.is_empty() {
            let version = self.keys.newest_version();
            let check = self.keys.get(version).map(|keys| keys.check);
            self.connection
                .execute(
                    "INSERT INTO key_versions (version, key_check) VALUES (?1, ?2)",
                    params![version, check.unwrap_or_default().as_slice()],
                )
                .map_err(|source| self.database_error(source))?;
            return Ok(());
        }
        for (version, check) in recorded {
            match self.keys.get(version) {
                Some(keys) if keys.check == check => {}
                Some(_) => return Err(StoreError::WrongKey { version }),
                None => return Err(StoreError::MissingKey { version }),
            }
        }
        Ok(())
    }

    fn recorded_versions(&self) -> Result<BTreeMap<u32, [u8; 32]>, StoreError> {
        let mut statement = self
            .connection
            .prepare("SELECT version, key_check FROM key_versions")
            .map_err(|source| self.database_error(source))?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, u32>(0)?, row.get::<_, [u8; 32]>(1)?))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<BTreeMap<_, _>>>())
            .map_err(|source| self.database_error(source))?;
        Ok(rows)
    }

    /// Applies `changes` in one transaction, synced to disk before it returns.
    pub fn apply(&mut self, changes: &[&Change]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let database_error = |source| StoreError::Database {
            path: path.clone(),
            error: source,
        };
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(database_error)?;
        // Read inside the write lock: a key rotation (another process) commits under it.
        let (version, check): (u32, [u8; 32]) = transaction
            .query_row(
                "SELECT version, key_check FROM key_versions ORDER BY version DESC LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(database_error)?;
        if self.keys.get(version).is_none() {
            self.keys = KeyRing::open(&self.key_path)?;
        }
        let keys = self
            .keys
            .get(version)
            .ok_or(StoreError::MissingKey { version })?;
        if keys.check != check {
            return Err(StoreError::WrongKey { version });
        }
        let mut deleted = false;
        for change in changes {
            match change {
                Change::SignUp { topic, address } => {
                    // A second sign-up replaces the row (fresh nonce) instead of doing nothing,
                    // so it writes and syncs like a first one: the time to answer does not
                    // tell whether the address was there.
                    write_row(&transaction, keys, version, topic, address)
                        .map_err(database_error)?;
                }
                Change::Delete { address } => {
                    // Under every version the key file holds, in case rows of an older one
                    // are left (a database restored from before a rotation).
                    for version in self.keys.versions() {
                        let Some(keys) = self.keys.get(version) else {
                            continue;
                        };
                        transaction
                            .execute(
                                "DELETE FROM addresses WHERE folded_index = ?1 AND key_version = ?2",
                                params![folded_index(keys, address).as_slice(), version],
                            )
                            .map_err(database_error)?;
                    }
                    deleted = true;
                }
            }
        }
        // Every transaction writes, whether or not a row changed: a deletion of an address
        // that was never there is synced like one that was.
        transaction
            .execute(
                "INSERT OR REPLACE INTO meta (name, value) VALUES ('padding', randomblob(16))",
                [],
            )
            .map_err(database_error)?;
        transaction.commit().map_err(database_error)?;
        if deleted {
            self.truncate_wal();
        }
        Ok(())
    }

    /// Copies the WAL into the database and empties it, so removed rows' old page images and
    /// the order of recent sign-ups are gone from both files. Never waits: with a reader open
    /// (an export, a backup) it does what it can now, and the writer tries again on its timer
    /// (`Notifier`). Returns whether the WAL is empty.
    pub fn truncate_wal(&self) -> bool {
        let _ = self.connection.busy_timeout(std::time::Duration::ZERO);
        let done = self
            .connection
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                Ok(row.get::<_, i64>(0)? == 0)
            })
            .unwrap_or(false);
        let _ = self.connection.busy_timeout(BUSY_TIMEOUT);
        done
    }

    /// Addresses per topic: every topic in `topics` (0 when empty), then any other topic the
    /// file holds (one the settings no longer list).
    pub fn count(&self, topics: &[String]) -> Result<Vec<(String, u64)>, StoreError> {
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        let mut statement = self
            .connection
            .prepare("SELECT topic, count(*) FROM addresses GROUP BY topic")
            .map_err(|source| self.database_error(source))?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })
            .map_err(|source| self.database_error(source))?;
        for row in rows {
            let (topic, count) = row.map_err(|source| self.database_error(source))?;
            counts.insert(topic, count);
        }
        let mut listed: Vec<(String, u64)> = topics
            .iter()
            .map(|topic| (topic.clone(), counts.remove(topic).unwrap_or(0) as u64))
            .collect();
        listed.extend(counts.into_iter().map(|(topic, n)| (topic, n as u64)));
        Ok(listed)
    }

    /// Whether any row is filed under `topic`.
    pub fn holds_topic(&self, topic: &str) -> Result<bool, StoreError> {
        self.connection
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM addresses WHERE topic = ?1)",
                [topic],
                |row| row.get(0),
            )
            .map_err(|source| self.database_error(source))
    }

    /// Decrypts the addresses of `topic`, sorted. Rows that cannot be read are counted, not
    /// fatal, so one altered row does not hide the rest.
    pub fn export(&self, topic: &str) -> Result<Export, StoreError> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT key_version, blind_index, nonce, ciphertext FROM addresses WHERE topic = ?1",
            )
            .map_err(|source| self.database_error(source))?;
        // Read loosely: a row whose columns were changed to the wrong type is an altered row
        // to count, not a reason to stop reading the others.
        let rows = statement
            .query_map([topic], |row| {
                Ok((
                    row.get::<_, rusqlite::types::Value>(0)?,
                    row.get::<_, rusqlite::types::Value>(1)?,
                    row.get::<_, rusqlite::types::Value>(2)?,
                    row.get::<_, rusqlite::types::Value>(3)?,
                ))
            })
            .map_err(|source| self.database_error(source))?;
        let mut export = Export {
            addresses: Vec::new(),
            tampered: 0,
            missing_versions: BTreeSet::new(),
        };
        for row in rows {
            // A row that cannot even be read (text that is not UTF-8 where a blob belongs) is
            // an altered row too.
            let Ok(row) = row else {
                export.tampered += 1;
                continue;
            };
            let Some(row) = SealedRow::from_values(row) else {
                export.tampered += 1;
                continue;
            };
            match self.open_row(topic, &row) {
                Ok(address) => export.addresses.push(address),
                Err(StoreError::MissingKey { version }) => {
                    export.missing_versions.insert(version);
                }
                Err(_) => export.tampered += 1,
            }
        }
        export.addresses.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        Ok(export)
    }

    fn open_row(&self, topic: &str, row: &SealedRow) -> Result<Address, StoreError> {
        let keys = self.keys.get(row.version).ok_or(StoreError::MissingKey {
            version: row.version,
        })?;
        open(keys, topic, row)
    }

    /// Re-encrypts every row under a new key version, then forgets the old versions, on disk
    /// too. The new key is written to the key file before any row uses it, and all rows move
    /// in one transaction: a crash at any point leaves every row readable. Returns the new
    /// version and how many rows moved.
    pub fn rotate_key(&mut self) -> Result<(u32, usize), StoreError> {
        // One rotation at a time: two at once would each write the key file from their own
        // copy, and the second could drop the key the first re-encrypted everything under.
        self.keys = KeyRing::open(&self.key_path)?;
        // Locked and rewritten at the real path, whatever link the settings name.
        self.key_path = self.keys.path().to_owned();
        let _lock = RotationLock::take(&self.key_path)?;
        self.keys = KeyRing::open(&self.key_path)?;
        self.check_keys()?;
        // Every recorded version is in the ring (checked above), so the new one is above them.
        let new_version = self.keys.add_version()?;
        match self.move_rows_to(new_version) {
            Ok(rows) => {
                self.truncate_wal();
                // Re-read under the lock: only versions below the new one go.
                self.keys = KeyRing::open(&self.key_path)?;
                self.keys.retire_below(new_version)?;
                Ok((new_version, rows))
            }
            Err(error) => {
                // Nothing moved: the key made for it goes again, so failed tries leave none.
                let _ = self.keys.forget(new_version);
                Err(error)
            }
        }
    }

    /// Re-encrypts every row under `new_version` in one transaction; returns how many.
    fn move_rows_to(&mut self, new_version: u32) -> Result<usize, StoreError> {
        let path = self.path.clone();
        let database_error = |source| StoreError::Database {
            path: path.clone(),
            error: source,
        };
        let keys = &self.keys;
        let new_keys = keys.get(new_version).ok_or(StoreError::MissingKey {
            version: new_version,
        })?;
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(database_error)?;
        let mut rows: Vec<(String, Address)> = Vec::new();
        {
            let mut statement = transaction
                .prepare("SELECT topic, key_version, blind_index, nonce, ciphertext FROM addresses")
                .map_err(database_error)?;
            let mut query = statement.query([]).map_err(database_error)?;
            while let Some(row) = query.next().map_err(database_error)? {
                let topic: String = row.get(0).map_err(database_error)?;
                let sealed = SealedRow {
                    version: row.get(1).map_err(database_error)?,
                    blind_index: row.get(2).map_err(database_error)?,
                    nonce: row.get(3).map_err(database_error)?,
                    ciphertext: row.get(4).map_err(database_error)?,
                };
                let old_keys = keys.get(sealed.version).ok_or(StoreError::MissingKey {
                    version: sealed.version,
                })?;
                let address = open(old_keys, &topic, &sealed)?;
                rows.push((topic, address));
            }
        }
        transaction
            .execute("DELETE FROM addresses", [])
            .map_err(database_error)?;
        for (topic, address) in &rows {
            write_row(&transaction, new_keys, new_version, topic, address)
                .map_err(database_error)?;
        }
        transaction
            .execute("DELETE FROM key_versions", [])
            .map_err(database_error)?;
        transaction
            .execute(
                "INSERT INTO key_versions (version, key_check) VALUES (?1, ?2)",
                params![new_version, new_keys.check.as_slice()],
            )
            .map_err(database_error)?;
        transaction.commit().map_err(database_error)?;
        Ok(rows.len())
    }

    fn database_error(&self, error: rusqlite::Error) -> StoreError {
        StoreError::Database {
            path: self.path.clone(),
            error,
        }
    }
}

struct SealedRow {
    version: u32,
    blind_index: Vec<u8>,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
}

type LooseRow = (
    rusqlite::types::Value,
    rusqlite::types::Value,
    rusqlite::types::Value,
    rusqlite::types::Value,
);

impl SealedRow {
    /// `None` when a column holds what no row of ours would (another type, a version out of
    /// range).
    fn from_values((version, blind_index, nonce, ciphertext): LooseRow) -> Option<SealedRow> {
        use rusqlite::types::Value;
        let Value::Integer(version) = version else {
            return None;
        };
        match (blind_index, nonce, ciphertext) {
            (Value::Blob(blind_index), Value::Blob(nonce), Value::Blob(ciphertext)) => {
                Some(SealedRow {
                    version: u32::try_from(version).ok()?,
                    blind_index,
                    nonce,
                    ciphertext,
                })
            }
            _ => None,
        }
    }
}

/// How an operator's command opens the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Held for a whole key rotation: an exclusive lock on a file beside the key file.
struct RotationLock(#[allow(dead_code)] std::fs::File);

impl RotationLock {
    fn take(key_path: &Path) -> Result<RotationLock, StoreError> {
        use std::os::fd::AsRawFd as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut lock_path = key_path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|error| StoreError::File {
                path: lock_path.display().to_string(),
                error,
            })?;
        // Waits for a rotation already running; released when the file closes.
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(StoreError::File {
                path: lock_path.display().to_string(),
                error: std::io::Error::last_os_error(),
            });
        }
        Ok(RotationLock(file))
    }
}

/// Refuses a database file that anyone but its owner may read or write (like the key file).
fn check_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .map_err(|error| StoreError::File {
            path: path.display().to_string(),
            error,
        })?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(StoreError::Exposed {
            path: path.display().to_string(),
            mode,
        });
    }
    Ok(())
}

struct Sealed {
    blind_index: [u8; 32],
    nonce: [u8; 24],
    ciphertext: Vec<u8>,
}

/// Seals `address` for `topic` under `version` and writes its row, replacing the row the
/// address already has there (a sign-up again; a rotation writes into an emptied table).
fn write_row(
    transaction: &rusqlite::Transaction<'_>,
    keys: &VersionKeys,
    version: u32,
    topic: &str,
    address: &Address,
) -> rusqlite::Result<usize> {
    let sealed = seal(keys, topic, address);
    transaction.execute(
        "INSERT INTO addresses
            (topic, blind_index, folded_index, key_version, nonce, ciphertext)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (topic, blind_index) DO UPDATE SET
            key_version = excluded.key_version,
            nonce = excluded.nonce,
            ciphertext = excluded.ciphertext",
        params![
            topic,
            sealed.blind_index.as_slice(),
            folded_index(keys, address).as_slice(),
            version,
            sealed.nonce.as_slice(),
            sealed.ciphertext
        ],
    )
}

fn blind_index(keys: &VersionKeys, address: &Address) -> [u8; 32] {
    *blake3::keyed_hash(&keys.index, address.as_str().as_bytes()).as_bytes()
}

/// The blind index of the address in lower case, under a key of its own (derived from the
/// index key), so the two indexes of one row cannot be matched against each other.
fn folded_index(keys: &VersionKeys, address: &Address) -> [u8; 32] {
    let folded_key =
        blake3::derive_key("Ephemera notify 2026-11-24 folded index key", &*keys.index);
    *blake3::keyed_hash(&folded_key, address.folded().as_bytes()).as_bytes()
}

/// Whether a database file exists and records a key version (so a new key is wrong for it).
fn database_has_keys(path: &Path) -> bool {
    if !path.exists() {
        return false;
    }
    let Ok(connection) = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return false;
    };
    connection
        .query_row("SELECT count(*) FROM key_versions", [], |row| {
            row.get::<_, i64>(0)
        })
        .is_ok_and(|versions| versions > 0)
}

/// Associated data: the topic and the blind index, each length-prefixed.
fn associated_data(topic: &str, blind_index: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(8 + topic.len() + blind_index.len());
    data.extend_from_slice(&(topic.len() as u32).to_be_bytes());
    data.extend_from_slice(topic.as_bytes());
    data.extend_from_slice(&(blind_index.len() as u32).to_be_bytes());
    data.extend_from_slice(blind_index);
    data
}

fn seal(keys: &VersionKeys, topic: &str, address: &Address) -> Sealed {
    let blind_index = blind_index(keys, address);
    let mut nonce = [0u8; 24];
    getrandom::getrandom(&mut nonce).expect("the operating system's random source works");
    let cipher = XChaCha20Poly1305::new(keys.encryption.as_ref().into());
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: address.as_str().as_bytes(),
                aad: &associated_data(topic, &blind_index),
            },
        )
        // Encryption fails only for inputs past 256 GiB; addresses are at most 254 characters.
        .expect("an address encrypts");
    Sealed {
        blind_index,
        nonce,
        ciphertext,
    }
}

fn open(keys: &VersionKeys, topic: &str, row: &SealedRow) -> Result<Address, StoreError> {
    let tampered = || StoreError::Tampered {
        topic: topic.to_owned(),
    };
    if row.nonce.len() != 24 {
        return Err(tampered());
    }
    let cipher = XChaCha20Poly1305::new(keys.encryption.as_ref().into());
    let plaintext = Zeroizing::new(
        cipher
            .decrypt(
                XNonce::from_slice(&row.nonce),
                Payload {
                    msg: &row.ciphertext,
                    aad: &associated_data(topic, &row.blind_index),
                },
            )
            .map_err(|_| tampered())?,
    );
    let text = String::from_utf8(plaintext.to_vec()).map_err(|_| tampered())?;
    Ok(Address::from_stored(text))
}

/// Creates the database file readable by its owner only (SQLite gives its WAL and shared-memory
/// files the same mode), unless it exists.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(StoreError::File {
            path: path.display().to_string(),
            error,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        db: PathBuf,
        key: PathBuf,
    }

    fn files(name: &str) -> Files {
        let dir =
            std::env::temp_dir().join(format!("ephemera-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Files {
            db: dir.join("list.db"),
            key: dir.join("master.key"),
        }
    }

    fn address(text: &str) -> Address {
        Address::parse(text).unwrap()
    }

    fn sign_up(store: &mut Store, topic: &str, text: &str) {
        let change = Change::SignUp {
            topic: topic.to_owned(),
            address: address(text),
        };
        store.apply(&[&change]).unwrap();
    }

    fn exported(store: &Store, topic: &str) -> Vec<String> {
        let export = store.export(topic).unwrap();
        assert_eq!(export.tampered, 0);
        assert!(export.missing_versions.is_empty());
        export
            .addresses
            .iter()
            .map(|a| a.as_str().to_owned())
            .collect()
    }

    /// The database and its WAL, as bytes on disk.
    fn file_bytes(files: &Files) -> Vec<u8> {
        let mut bytes = std::fs::read(&files.db).unwrap();
        let mut wal = files.db.clone().into_os_string();
        wal.push("-wal");
        bytes.extend(std::fs::read(wal).unwrap_or_default());
        bytes
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|window| window == needle.as_bytes())
    }

    #[test]
    fn addresses_round_trip_once_each_and_never_in_clear_on_disk() {
        let files = files("round-trip");
        let mut store = Store::open_or_create(&files.db, &files.key).unwrap();
        sign_up(&mut store, "news", "Ann.Lee@Quietmail.example");
        sign_up(&mut store, "news", "  Ann.Lee@QUIETMAIL.example ");
        sign_up(&mut store, "news", "bo@quietmail.example");
        sign_up(&mut store, "rules", "bo@quietmail.example");
        assert_eq!(
            exported(&store, "news"),
            vec!["Ann.Lee@quietmail.example", "bo@quietmail.example"]
        );
        assert_eq!(exported(&store, "rules"), vec!["bo@quietmail.example"]);
        assert_eq!(
            store.count(&["news".into(), "other".into()]).unwrap(),
            vec![
                ("news".to_owned(), 2),
                ("other".to_owned(), 0),
                ("rules".to_owned(), 1)
            ]
        );
        // Neither an address, nor a local part, nor the domain is anywhere in the files.
        drop(store);
        let bytes = file_bytes(&files);
        assert!(bytes.len() > 4096, "the files were read");
        for clear in ["Ann.Lee", "quietmail", "Quietmail", "bo@"] {
            assert!(!contains(&bytes, clear), "{clear} is in the file");
        }
        assert!(contains(&bytes, "news"), "topics are stored as they are");
    }

    #[test]
    fn deletion_removes_the_address_from_every_topic() {
        let files = files("delete");
        let mut store = Store::open_or_create(&files.db, &files.key).unwrap();
        sign_up(&mut store, "news", "Ann@example.org");
        sign_up(&mut store, "rules", "ann@example.org");
        sign_up(&mut store, "news", "bo@example.org");
        // However its owner capitalises it today.
        let delete = Change::Delete {
            address: address("ANN@EXAMPLE.org"),
        };
        let never_there = Change::Delete {
            address: address("cy@example.org"),
        };
        store.apply(&[&delete, &never_there]).unwrap();
        assert_eq!(exported(&store, "news"), vec!["bo@example.org"]);
        assert!(exported(&store, "rules").is_empty());
        let rows: i64 = store
            .connection
            .query_row("SELECT count(*) FROM addresses", [], |row| row.get(0))
            .unwrap();
        assert_eq!(rows, 1);
    }

    #[test]
    fn a_missing_key_file_is_not_replaced_by_a_new_one_for_a_database_that_has_one() {
        let files = files("missing-key");
        let mut store = Store::open_or_create(&files.db, &files.key).unwrap();
        sign_up(&mut store, "news", "ann@example.org");
        drop(store);
        let elsewhere = files.key.with_file_name("typo.key");
        let error = Store::open_or_create(&files.db, &elsewhere).err().unwrap();
        assert!(
            matches!(error, StoreError::KeyFileMissing { .. }),
            "{error}"
        );
        assert!(!elsewhere.exists(), "no new key was made");
    }

    #[test]
    fn a_wrong_key_file_is_named_as_such_and_a_wrong_key_never_decrypts() {
        let files = files("wrong-key");
        let mut store = Store::open_or_create(&files.db, &files.key).unwrap();
        sign_up(&mut store, "news", "ann@example.org");
        drop(store);
        // Another key file, made as the server makes one.
        let other = files.key.with_file_name("other.key");
        KeyRing::open_or_create(&other).unwrap();
        let error = Store::open_existing(&files.db, &other, Access::Read)
            .err()
            .unwrap();
        assert!(
            matches!(error, StoreError::WrongKey { version: 1 }),
            "{error}"
        );
        assert!(error.to_string().contains("wrong notify_master_key_path"));
        // Below the check: the other key's encryption key fails authentication, no panic.
        let store = Store::open_existing(&files.db, &files.key, Access::Read).unwrap();
        let other_ring = KeyRing::open(&other).unwrap();
        let row = store.first_row("news");
        let error = open(other_ring.get(1).unwrap(), "news", &row)
            .err()
            .unwrap();
        assert!(matches!(error, StoreError::Tampered { .. }));
        assert!(open(store.keys.get(1).unwrap(), "news", &row).is_ok());
    }

    #[test]
    fn an_altered_row_is_detected() {
        let files = files("tampered");
        let mut store = Store::open_or_create(&files.db, &files.key).unwrap();
        sign_up(&mut store, "news", "ann@example.org");
        sign_up(&mut store, "news", "bo@example.org");
        sign_up(&mut store, "rules", "cy@example.org");
        // One bit of one ciphertext flipped.
        store.flip_a_ciphertext_bit("news");
        let export = store.export("news").unwrap();
        assert_eq!(export.tampered, 1);
        assert_eq!(export.addresses.len(), 1, "the other row still reads");
        // A row moved to another topic no longer authenticates either.
        store
            .connection
            .execute(
                "UPDATE addresses SET topic = 'news' WHERE topic = 'rules'",
                [],
            )
            .unwrap();
        assert_eq!(store.export("news").unwrap().tampered, 2);
    }

    #[test]
    fn rotation_keeps_every_address_readable_and_drops_the_old_key() {
        let files = files("rotate");
        let mut store = Store::open_or_create(&files.db, &files.key).unwrap();
        for n in 0..50 {
            sign_up(&mut store, "news", &format!("person{n}@example.org"));
        }
        let old_row = store.first_row("news");
        let (version, moved) = store.rotate_key().unwrap();
        assert_eq!((version, moved), (2, 50));
        assert_eq!(exported(&store, "news").len(), 50);
        assert_ne!(store.first_row("news").ciphertext, old_row.ciphertext);
        // The key file now holds only the new version, and a fresh open agrees.
        let ring = KeyRing::open(&files.key).unwrap();
        assert_eq!(ring.versions().collect::<Vec<_>>(), vec![2]);
        let mut reopened = Store::open_existing(&files.db, &files.key, Access::Write).unwrap();
        assert_eq!(exported(&reopened, "news").len(), 50);
        // Sign-ups after the rotation dedupe against rotated rows.
        sign_up(&mut reopened, "news", "person7@example.org");
        assert_eq!(exported(&reopened, "news").len(), 50);
    }

    #[test]
    fn a_writer_holding_the_old_key_picks_up_a_rotation_made_by_another_process() {
        let files = files("rotate-beside");
        let mut server = Store::open_or_create(&files.db, &files.key).unwrap();
        sign_up(&mut server, "news", "ann@example.org");
        let mut operator = Store::open_existing(&files.db, &files.key, Access::Write).unwrap();
        operator.rotate_key().unwrap();
        // The server's ring knows version 1 only; its next write must use version 2.
        sign_up(&mut server, "news", "bo@example.org");
        sign_up(&mut server, "news", "ann@example.org");
        let versions: Vec<u32> = {
            let mut statement = server
                .connection
                .prepare("SELECT DISTINCT key_version FROM addresses")
                .unwrap();
            let rows = statement.query_map([], |row| row.get(0)).unwrap();
            rows.map(Result::unwrap).collect()
        };
        assert_eq!(versions, vec![2]);
        assert_eq!(
            exported(&operator, "news"),
            vec!["ann@example.org", "bo@example.org"]
        );
    }

    #[test]
    fn a_rotation_through_a_linked_key_path_rotates_the_file_itself() {
        let files = files("linked");
        let mut store = Store::open_or_create(&files.db, &files.key).unwrap();
        sign_up(&mut store, "news", "ann@example.org");
        let link = files.key.with_file_name("link.key");
        std::os::unix::fs::symlink(&files.key, &link).unwrap();
        let mut through_link = Store::open_existing(&files.db, &link, Access::Write).unwrap();
        through_link.rotate_key().unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        // The server, configured with the real path, still reads every row.
        let direct = Store::open_existing(&files.db, &files.key, Access::Read).unwrap();
        assert_eq!(exported(&direct, "news"), vec!["ann@example.org"]);
    }

    #[test]
    fn a_rotation_that_fails_leaves_no_key_behind() {
        let files = files("failed-rotation");
        let mut store = Store::open_or_create(&files.db, &files.key).unwrap();
        sign_up(&mut store, "news", "ann@example.org");
        store.flip_a_ciphertext_bit("news");
        for _ in 0..2 {
            assert!(matches!(
                store.rotate_key(),
                Err(StoreError::Tampered { .. })
            ));
        }
        let ring = KeyRing::open(&files.key).unwrap();
        assert_eq!(ring.versions().collect::<Vec<_>>(), vec![1]);
    }

    impl Store {
        /// Alters one row of `topic` in the file: one bit of its ciphertext flipped.
        fn flip_a_ciphertext_bit(&self, topic: &str) {
            let row = self.first_row(topic);
            let mut altered = row.ciphertext.clone();
            altered[0] ^= 1;
            self.connection
                .execute(
                    "UPDATE addresses SET ciphertext = ?1 WHERE blind_index = ?2",
                    params![altered, row.blind_index],
                )
                .unwrap();
        }

        fn first_row(&self, topic: &str) -> SealedRow {
            self.connection
                .query_row(
                    "SELECT key_version, blind_index, nonce, ciphertext FROM addresses
                     WHERE topic = ?1 ORDER BY blind_index LIMIT 1",
                    [topic],
                    |row| {
                        Ok(SealedRow {
                            version: row.get(0)?,
                            blind_index: row.get(1)?,
                            nonce: row.get(2)?,
                            ciphertext: row.get(3)?,
                        })
                    },
                )
                .unwrap()
        }
    }
}
