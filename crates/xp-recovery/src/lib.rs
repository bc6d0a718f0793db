//! Offline single-node recovery of an xp data dir after a permanent loss of quorum.
//!
//! Four steps, each its own function so the CLI, the tests and a future API share them:
//! [`inspect`] reads a stopped node's Raft state without changing a byte; [`plan`] decides the
//! rewrite; [`apply`] carries it out crash-safely behind a journal; [`verify`] re-reads the dir
//! and checks that openraft will start with this node as the only voter.
//!
//! **This crate never opens a network connection**: it works on files, under the data-dir lock.
//!
//! The rewrite, and why (openraft 0.9 startup rules): the effective membership is the last
//! membership entry in the log *after* `last_applied`, else the state machine's. So the tool
//! appends one new membership entry `{self}` at the next index, under a term higher than any
//! seen, after saving a vote for that term; it never reuses a log id for different content, and
//! leaves every entry at or below `last_applied` untouched. It also rewrites the membership in
//! `state_machine.json` and `snapshot.json`, so no copy of the old membership is left to fall
//! back to.

mod backup;
mod inspect;
mod plan;
pub mod restore;

pub use backup::{backup_raft_dir, tree_digest, BackupError};
pub use inspect::{inspect, Inspection, MembershipSource};
pub use plan::{apply, finish, pending_journal, plan, verify, Plan, RecoveryRecord, Step, STEPS};

use std::path::PathBuf;

/// Why recovery refused or failed. [`RecoveryError::exit_code`] maps each to the CLI's code.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The env file is missing or malformed.
    #[error(transparent)]
    Config(#[from] xp_config::ConfigError),
    /// A store file could not be read or written, or is corrupt, or the dir is locked.
    #[error(transparent)]
    Store(#[from] xp_store::StoreError),
    /// There is no Raft state where the env file points.
    #[error("missing Raft state: {path} does not exist; check XP_DATA_DIR in {env_file} (is this the right node?)")]
    MissingState { path: PathBuf, env_file: PathBuf },
    /// The data dir belongs to another node than the env file describes.
    #[error("{0}")]
    WrongNode(String),
    /// This node is not in the membership it would shrink.
    #[error("refusing: {0}")]
    NotAMember(String),
    /// The backup failed; nothing was changed.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// A backup file that cannot be restored (unreadable, wrong format, checksum mismatch).
    #[error("{0}")]
    BadBackup(String),
    /// After applying, the state does not read back as planned.
    #[error("verification failed after recovery: {0}")]
    Verify(String),
}

impl RecoveryError {
    /// 2: bad input (env file); 3: refused (running node, wrong or missing state, not a member);
    /// 4: failed while writing (backup or apply).
    pub fn exit_code(&self) -> u8 {
        use xp_store::StoreError as S;
        match self {
            RecoveryError::Config(_) | RecoveryError::BadBackup(_) => 2,
            RecoveryError::Store(S::Io { .. })
            | RecoveryError::Backup(_)
            | RecoveryError::Verify(_) => 4,
            _ => 3,
        }
    }
}

/// The UTC timestamp used in backup and record names, e.g. `20261123T010419Z`.
pub fn stamp(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string().replace(['-', ':'], "")
}
