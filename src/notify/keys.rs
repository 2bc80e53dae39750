//! The master key file (`notify_master_key_path`) and the keys derived from it.
//!
//! The file lives outside the database, so a stolen database (or a backup of it) is ciphertext
//! and keyed hashes only. It holds one master key per key version, a line each:
//! `<version> <64 hex digits>`. From each master key, blake3's `derive_key` makes three keys
//! under distinct contexts: the address encryption key, the blind-index key, and a check value
//! the database keeps per version so a wrong key file is named as such instead of showing up
//! as "tampered" rows.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

const ENCRYPTION_CONTEXT: &str = "Ephemera notify 2026-11-23 address encryption key";
const INDEX_CONTEXT: &str = "Ephemera notify 2026-11-23 address blind index key";
const CHECK_CONTEXT: &str = "Ephemera notify 2026-11-23 master key check";

const FILE_HEADER: &str = "# Ephemera notify master keys: <key version> <key>. Keep this file \
secret, apart from the database and its backups; without it the stored addresses are lost.\n";

/// The keys of one key version.
pub struct VersionKeys {
    pub encryption: Zeroizing<[u8; 32]>,
    pub index: Zeroizing<[u8; 32]>,
    /// Stored in the database beside the version, to recognise this key.
    pub check: [u8; 32],
}

impl VersionKeys {
    fn derive(master: &[u8; 32]) -> VersionKeys {
        VersionKeys {
            encryption: Zeroizing::new(blake3::derive_key(ENCRYPTION_CONTEXT, master)),
            index: Zeroizing::new(blake3::derive_key(INDEX_CONTEXT, master)),
            check: blake3::derive_key(CHECK_CONTEXT, master),
        }
    }
}

/// Every key version the file holds.
pub struct KeyRing {
    path: PathBuf,
    masters: BTreeMap<u32, Zeroizing<[u8; 32]>>,
    derived: BTreeMap<u32, VersionKeys>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("notify_master_key_path {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error(
        "notify_master_key_path {path} can be read or written by others (mode {mode:o}); \
         run `chmod 600 {path}`"
    )]
    Exposed { path: String, mode: u32 },
    #[error(
        "notify_master_key_path {path}, line {line}: expected `<key version> <64 hex digits>`"
    )]
    Malformed { path: String, line: usize },
    #[error("notify_master_key_path {path} holds no key")]
    Empty { path: String },
}

impl KeyRing {
    /// Reads the key file, creating it (mode 0600, one fresh key as version 1) when missing.
    /// Refuses a file that anyone but its owner may read.
    pub fn open_or_create(path: &Path) -> Result<KeyRing, KeyError> {
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(file) => {
                let mut masters = BTreeMap::new();
                masters.insert(1, random_key());
                write_and_sync(file, path, &masters)?;
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(io_error(path, source)),
        }
        Self::open(path)
    }

    /// Reads an existing key file. A symbolic link is followed once, here: the ring keeps the
    /// real path, so a rotation rewrites (and locks) the file itself, not the link.
    pub fn open(path: &Path) -> Result<KeyRing, KeyError> {
        let real = fs::canonicalize(path).map_err(|source| io_error(path, source))?;
        let path = real.as_path();
        let shown = path.display().to_string();
        let metadata = fs::metadata(path).map_err(|source| io_error(path, source))?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed { path: shown, mode });
        }
        let text = Zeroizing::new(fs::read_to_string(path).map_err(|e| io_error(path, e))?);
        let mut masters = BTreeMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let malformed = || KeyError::Malformed {
                path: shown.clone(),
                line: number + 1,
            };
            let (version, hex) = line.split_once(' ').ok_or_else(malformed)?;
            let version: u32 = version.parse().map_err(|_| malformed())?;
            let key = parse_hex_key(hex.trim()).ok_or_else(malformed)?;
            masters.insert(version, key);
        }
        if masters.is_empty() {
            return Err(KeyError::Empty { path: shown });
        }
        let derived = masters
            .iter()
            .map(|(version, master)| (*version, VersionKeys::derive(master)))
            .collect();
        Ok(KeyRing {
            path: path.to_owned(),
            masters,
            derived,
        })
    }

    pub fn get(&self, version: u32) -> Option<&VersionKeys> {
        self.derived.get(&version)
    }

    pub fn newest_version(&self) -> u32 {
        // `open` refuses an empty file.
        *self.derived.keys().next_back().unwrap_or(&1)
    }

    pub fn versions(&self) -> impl Iterator<Item = u32> + '_ {
        self.derived.keys().copied()
    }

    /// Adds a fresh key as the next version and writes the file (atomically: a new file is
    /// synced and renamed over the old one), so the key exists on disk before any row uses it.
    pub fn add_version(&mut self) -> Result<u32, KeyError> {
        let version = self.newest_version() + 1;
        let master = random_key();
        self.derived.insert(version, VersionKeys::derive(&master));
        self.masters.insert(version, master);
        self.rewrite()?;
        Ok(version)
    }

    /// The file this ring was read from (symbolic links resolved).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Forgets `version` (added for a rotation that failed), on disk too.
    pub fn forget(&mut self, version: u32) -> Result<(), KeyError> {
        self.masters.remove(&version);
        self.derived.remove(&version);
        self.rewrite()
    }

    /// Forgets the versions below `newest` (no row uses them any more), on disk too.
    pub fn retire_below(&mut self, newest: u32) -> Result<(), KeyError> {
        self.masters.retain(|version, _| *version >= newest);
        self.derived.retain(|version, _| *version >= newest);
        self.rewrite()
    }

    fn rewrite(&self) -> Result<(), KeyError> {
        let mut temporary = self.path.clone().into_os_string();
        temporary.push(".new");
        let temporary = PathBuf::from(temporary);
        let _ = fs::remove_file(&temporary);
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(|source| io_error(&temporary, source))?;
        write_and_sync(file, &temporary, &self.masters)?;
        fs::rename(&temporary, &self.path).map_err(|source| io_error(&self.path, source))?;
        sync_parent(&self.path)
    }
}

fn write_and_sync(
    mut file: fs::File,
    path: &Path,
    masters: &BTreeMap<u32, Zeroizing<[u8; 32]>>,
) -> Result<(), KeyError> {
    let mut text = Zeroizing::new(String::from(FILE_HEADER));
    for (version, key) in masters {
        text.push_str(&format!("{version} "));
        for byte in key.iter() {
            text.push_str(&format!("{byte:02x}"));
        }
        text.push('\n');
    }
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| io_error(path, source))?;
    sync_parent(path)
}

/// A new or renamed file survives a crash only once its directory entry is on disk too.
fn sync_parent(path: &Path) -> Result<(), KeyError> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    fs::File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| io_error(parent, source))
}

fn random_key() -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::getrandom(key.as_mut()).expect("the operating system's random source works");
    key
}

fn parse_hex_key(hex: &str) -> Option<Zeroizing<[u8; 32]>> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut key = Zeroizing::new([0u8; 32]);
    for (byte, pair) in key.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(key)
}

fn io_error(path: &Path, error: std::io::Error) -> KeyError {
    KeyError::Io {
        path: path.display().to_string(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ephemera-keys-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_missing_file_is_created_private_and_reads_back_the_same_keys() {
        let path = temp_dir("create").join("master.key");
        let created = KeyRing::open_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let reopened = KeyRing::open_or_create(&path).unwrap();
        assert_eq!(created.newest_version(), 1);
        assert_eq!(
            *created.get(1).unwrap().encryption,
            *reopened.get(1).unwrap().encryption
        );
        let keys = created.get(1).unwrap();
        assert_ne!(
            *keys.encryption, *keys.index,
            "distinct contexts, distinct keys"
        );
        assert_ne!(keys.check, *keys.index);
    }

    #[test]
    fn a_file_others_can_read_is_refused_with_the_reason() {
        let path = temp_dir("exposed").join("master.key");
        KeyRing::open_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let error = KeyRing::open_or_create(&path).err().unwrap().to_string();
        assert!(
            error.contains("chmod 600") && error.contains("644"),
            "{error}"
        );
    }

    #[test]
    fn versions_are_added_and_retired_on_disk() {
        let path = temp_dir("rotate").join("master.key");
        let mut ring = KeyRing::open_or_create(&path).unwrap();
        assert_eq!(ring.add_version().unwrap(), 2);
        let both = KeyRing::open(&path).unwrap();
        assert_eq!(both.versions().collect::<Vec<_>>(), vec![1, 2]);
        ring.retire_below(2).unwrap();
        let newest = KeyRing::open(&path).unwrap();
        assert_eq!(newest.versions().collect::<Vec<_>>(), vec![2]);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_malformed_line_is_named() {
        let path = temp_dir("malformed").join("master.key");
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap()
            .write_all(b"# keys\n1 abcd\n")
            .unwrap();
        let error = KeyRing::open(&path).err().unwrap().to_string();
        assert!(error.contains("line 2"), "{error}");
    }
}
