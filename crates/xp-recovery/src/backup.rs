//! The pre-recovery backup: a complete, verified copy of `raft/` that never overwrites one.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Why the backup failed. Nothing was changed in `raft/` when it does.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The destination already exists: backups are never overwritten.
    #[error("backup destination {0} already exists; refusing to overwrite a backup (wait a second and run again)")]
    Exists(PathBuf),
    /// Copying or reading failed.
    #[error("backup failed at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The copy does not read back identical.
    #[error("backup {0} does not match the original after copying; it was removed")]
    Mismatch(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io { path: path.to_owned(), source }
}

/// SHA-256 of every file under `dir`, keyed by relative path. Dot-files (atomic-write temps)
/// are left out: they are never part of the state.
pub fn tree_digest(dir: &Path) -> Result<BTreeMap<String, String>, std::io::Error> {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> Result<(), std::io::Error> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        if entry.file_type()?.is_dir() {
            walk(root, &path, out)?;
        } else {
            let digest = Sha256::digest(fs::read(&path)?);
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().to_string();
            out.insert(rel, digest.iter().map(|b| format!("{b:02x}")).collect());
        }
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<u64, BackupError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(xp_store::fsutil::DIR_MODE)
        .create(to)
        .map_err(io(to))?;
    let mut bytes = 0;
    for entry in fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        if entry.file_type().map_err(io(&src))?.is_dir() {
            bytes += copy_tree(&src, &dst)?;
        } else if !entry.file_name().to_string_lossy().starts_with('.') {
            bytes += fs::copy(&src, &dst).map_err(io(&src))?;
            fs::File::open(&dst).and_then(|f| f.sync_all()).map_err(io(&dst))?;
        }
    }
    fs::File::open(to).and_then(|d| d.sync_all()).map_err(io(to))?;
    Ok(bytes)
}

/// Copies `raft_dir` to `dest` through a `.tmp` sibling, checks every file's hash, then renames
/// it into place. Returns the bytes copied. Leftover `.tmp` copies of earlier crashed runs are
/// removed first.
pub fn backup_raft_dir(raft_dir: &Path, dest: &Path) -> Result<u64, BackupError> {
    if dest.exists() {
        return Err(BackupError::Exists(dest.to_owned()));
    }
    let parent = dest.parent().expect("backup lives in the data dir");
    for entry in fs::read_dir(parent).map_err(io(parent))?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("raft.bak-") && name.ends_with(".tmp") {
            fs::remove_dir_all(entry.path()).map_err(io(&entry.path()))?;
        }
    }
    let tmp = parent.join(format!("{}.tmp", dest.file_name().unwrap().to_string_lossy()));
    let bytes = copy_tree(raft_dir, &tmp)?;
    let a = tree_digest(raft_dir).map_err(io(raft_dir))?;
    let b = tree_digest(&tmp).map_err(io(&tmp))?;
    if a != b {
        let _ = fs::remove_dir_all(&tmp);
        return Err(BackupError::Mismatch(dest.to_owned()));
    }
    fs::rename(&tmp, dest).map_err(io(dest))?;
    fs::File::open(parent).and_then(|d| d.sync_all()).map_err(io(parent))?;
    Ok(bytes)
}
