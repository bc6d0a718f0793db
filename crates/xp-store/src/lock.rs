//! The data-dir lock: held by a running node, taken by `xp-ops` before it touches anything.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

use crate::StoreError;

/// File name of the lock, directly under `XP_DATA_DIR`.
pub const LOCK_FILE: &str = "xp.lock";

/// An exclusive advisory lock (`flock`) on `${XP_DATA_DIR}/xp.lock`, released on drop or when
/// the process dies, so a crashed node never leaves a stale lock behind. It works across
/// containers that mount the same volume, because the kernel holds it on the inode.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock without waiting; creates the data dir if needed.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, StoreError> {
        crate::fsutil::create_private_dir(data_dir)?;
        if let Some(was) = crate::fsutil::make_private(data_dir)? {
            tracing::warn!(
                dir = %data_dir.display(),
                "the data dir was open to other users (mode {was:o}); it is now owner-only"
            );
        }
        let path = data_dir.join(LOCK_FILE);
        let file = crate::fsutil::private_file()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(StoreError::io(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(DataDirLock { _file: file, path }),
            Err(TryLockError::WouldBlock) => Err(StoreError::Locked { path: data_dir.to_owned() }),
            Err(TryLockError::Error(e)) => Err(StoreError::Io { path, source: e }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
