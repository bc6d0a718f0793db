//! Atomic, durable file writes: write a temp file, fsync it, rename it over, fsync the directory.
//! Everything the store creates is the node user's alone: files `0600`, directories `0700`
//! (they hold cluster data, join tokens and the fence).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::StoreError;

/// Replaces `path` with `bytes` so that after a crash the file holds either the old or the new
/// content, never a mix.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().expect("store files live in a directory");
    let name = path.file_name().expect("store files have a name").to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = private_file()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(StoreError::io(&tmp))?;
        f.write_all(bytes).map_err(StoreError::io(&tmp))?;
        f.sync_all().map_err(StoreError::io(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(StoreError::io(path))?;
    fsync_dir(dir)
}

/// `atomic_write` of pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    atomic_write(path, &json_bytes(value))
}

/// The bytes [`write_json`] writes: pretty JSON and a newline.
pub fn json_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("store types serialize");
    bytes.push(b'\n');
    bytes
}

/// Reads a JSON file; `Ok(None)` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::Io { path: path.to_owned(), source: e }),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::corrupt(path, format!("not valid JSON for this file: {e}")))
}

/// Makes a rename or a new file in `dir` durable.
pub fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(StoreError::io(dir))
}

/// Mode of every file the store creates.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory the store creates.
pub const DIR_MODE: u32 = 0o700;

/// `OpenOptions` that create a file with [`FILE_MODE`] (an existing file keeps its mode).
pub fn private_file() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Creates `dir` and any missing parents with [`DIR_MODE`].
pub fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir).map_err(StoreError::io(dir))
}

/// Takes group and other access away from an existing `dir` (a data dir made by an earlier
/// version, or by a container runtime as `0755`). Returns the mode it had when it changed it.
pub fn make_private(dir: &Path) -> Result<Option<u32>, StoreError> {
    let mode = fs::metadata(dir).map_err(StoreError::io(dir))?.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    if mode & 0o1000 != 0 {
        // A sticky directory is either a fresh mount (a tmpfs volume is created 1777) or one
        // shared by design (/tmp): taking the latter over would lock its other users out, and
        // `xp wipe` would empty it. Refuse it when it holds anything a node did not put there.
        let foreign: Vec<String> = fs::read_dir(dir)
            .map_err(StoreError::io(dir))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| !is_data_dir_entry(n))
            .take(3)
            .collect();
        if !foreign.is_empty() {
            return Err(StoreError::Io {
                path: dir.to_owned(),
                source: std::io::Error::other(format!(
                    "is a shared directory (mode {mode:o}, sticky) holding other files ({}): \
                     XP_DATA_DIR must be a directory of the node's own",
                    foreign.join(", ")
                )),
            });
        }
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(mode & !0o077))
        .map_err(StoreError::io(dir))?;
    Ok(Some(mode))
}

/// Whether `name` is something a node, `xp-ops` or the chaos runner keeps in a data dir.
fn is_data_dir_entry(name: &str) -> bool {
    matches!(name, crate::lock::LOCK_FILE | "raft" | "join.json" | "join-token" | "lost+found")
        || name.starts_with("raft.bak-")
        || name.starts_with("recovery-")
        || name.ends_with(".input")
        || (name.starts_with('.') && name.ends_with(".tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_sticky_mount_is_taken_a_shared_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("mount");
        fs::create_dir(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o1777)).unwrap();
        fs::write(d.join("raft.bak-1"), b"").unwrap();
        assert_eq!(make_private(&d).unwrap(), Some(0o1777));
        assert_eq!(fs::metadata(&d).unwrap().permissions().mode() & 0o7777, 0o1700);
        let shared = dir.path().join("tmp");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
        fs::write(shared.join("someone-elses.sock"), b"").unwrap();
        let e = make_private(&shared).unwrap_err().to_string();
        assert!(e.contains("shared directory") && e.contains("someone-elses.sock"), "{e}");
        assert_eq!(fs::metadata(&shared).unwrap().permissions().mode() & 0o7777, 0o1777);
    }
}
