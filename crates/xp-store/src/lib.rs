//! Crash-safe on-disk Raft state of an xp node, under `${XP_DATA_DIR}/raft/`.
//!
//! The node and the recovery tool both read and write Raft state through this crate, so the
//! file format has exactly one implementation. The layout (see `docs/architecture.md`):
//!
//! | file | what | how it is written |
//! |---|---|---|
//! | `identity.json` | this node's id and name | once, atomically |
//! | `vote.json` | the last saved vote | atomically (temp, fsync, rename, fsync dir) |
//! | `committed.json` | the last committed log id | atomically |
//! | `purged.json` | the last purged log id | atomically |
//! | `log.bin` | log entries, one checksummed record each | appended and fsynced; torn tail cut on open |
//! | `state_machine.json` | `last_applied`, `last_membership` and the data | atomically; on membership changes, every 1 000 entries, before snapshots, at shutdown |
//! | `snapshot.json` | the current snapshot's meta and data | atomically |
//! | `recovery.json` | present only while `xp-ops` recovers this dir | atomically; blocks `xp run` |
//! | `fence.json` | the eviction this node obeyed: a recovered cluster replaced it | atomically; only `xp wipe` removes it |

pub mod fsutil;
pub mod lock;
pub mod log;
pub mod raft_impl;
pub mod state;
pub mod types;

pub use lock::DataDirLock;
pub use raft_impl::{open_raft_store, LogStore, StateMachineStore};
pub use state::{effective_membership, latest_recovery, Identity, RaftDir, SmFile, SnapshotFile};
pub use types::*;

use std::path::PathBuf;

/// An error reading or writing Raft state. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error on a file of the store.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A file exists but its content is not what the store wrote.
    #[error("{path}: corrupt Raft state: {why}")]
    Corrupt { path: PathBuf, why: String },
    /// The data dir is locked by a running node or another tool.
    #[error(
        "{path} is locked: an xp node (or another xp-ops command) is using this data dir; stop it first"
    )]
    Locked { path: PathBuf },
    /// The data dir belongs to another node than the env file describes.
    #[error(
        "{dir} belongs to node {found:?} (id {node_id}) but {env_file} says XP_NODE_NAME={expected:?}: \
         wrong env file or wrong data dir"
    )]
    WrongNode { dir: PathBuf, found: String, node_id: u64, env_file: PathBuf, expected: String },
    /// A recovery was started and not finished.
    #[error(
        "{path} exists: an `xp-ops xp recover-single-node` run was interrupted; run it again to finish it \
         before starting the node"
    )]
    RecoveryInProgress { path: PathBuf },
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }
    pub(crate) fn corrupt(path: impl Into<PathBuf>, why: impl Into<String>) -> StoreError {
        StoreError::Corrupt { path: path.into(), why: why.into() }
    }
}
