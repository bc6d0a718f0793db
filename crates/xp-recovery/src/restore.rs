//! Restoring a backup onto a brand-new node: a single-node cluster with a **new cluster id**,
//! so the old cluster's nodes are refused even if they share the secret. The backup format is
//! defined here, next to the code that trusts it; the node produces it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::CommittedLeaderId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xp_config::Config;
use xp_store::{
    Identity, LogId, Membership, NodeId, NodeMeta, RaftDir, SmFile, SnapshotFile, SnapshotMeta,
    StoredMembership, Vote,
};

use crate::RecoveryError;

pub const FORMAT: &str = "xp-backup-v1";

/// A backup file: the leader's latest snapshot, its metadata and a checksum.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Backup {
    pub format: String,
    pub cluster_id: String,
    pub created_at: String,
    pub taken_on: NodeId,
    pub last_log_id: Option<LogId>,
    pub membership: StoredMembership,
    /// SHA-256 (hex) of the JSON of `state`.
    pub checksum: String,
    pub state: SmFile,
}

pub fn checksum(state: &SmFile) -> String {
    Sha256::digest(serde_json::to_vec(state).expect("state serializes"))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).expect("the OS has a random source");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a restore did.
pub struct Restored {
    pub node_id: NodeId,
    pub cluster_id: String,
    pub old_cluster_id: String,
    pub keys: usize,
    pub last_log_id: LogId,
}

/// Installs a backup on a node that has never held Raft state. The caller holds the data-dir
/// lock. Nothing is written unless the file is a valid, untampered backup.
pub fn restore(config: &Config, file: &Path) -> Result<Restored, RecoveryError> {
    let bad = |why: String| RecoveryError::BadBackup(format!("{}: {why}", file.display()));
    let text = std::fs::read(file).map_err(|e| bad(format!("cannot read: {e}")))?;
    let b: Backup =
        serde_json::from_slice(&text).map_err(|e| bad(format!("not an xp backup: {e}")))?;
    if b.format != FORMAT {
        return Err(bad(format!("format {:?}, expected {FORMAT:?}", b.format)));
    }
    if checksum(&b.state) != b.checksum {
        return Err(bad(
            "checksum mismatch: the backup is corrupt or was edited; nothing was restored".into(),
        ));
    }
    let dir = RaftDir::new(config.raft_dir());
    if !dir.is_pristine()? {
        return Err(RecoveryError::WrongNode(format!(
            "{} already holds Raft state: restore only onto a brand-new node (wipe it first if it is a replacement)",
            dir.path().display()
        )));
    }
    let id = config.node_id.unwrap_or(1);
    let index = b.last_log_id.map(|l| l.index).unwrap_or(0);
    let log_id = LogId::new(CommittedLeaderId::new(1, id), index);
    let meta =
        NodeMeta { name: config.node_name.clone(), api_base_url: config.api_base_url.clone() };
    let membership = StoredMembership::new(
        Some(log_id),
        Membership::new(vec![BTreeSet::from([id])], BTreeMap::from([(id, meta)])),
    );
    let mut state = b.state.clone();
    let recovery = xp_store::RecoveryGeneration {
        generation: state.data.generation() + 1,
        kind: xp_store::RecoveryKind::Restore,
        at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        node_id: id,
        node_name: config.node_name.clone(),
        replaced_voters: b.membership.membership().voter_ids().collect(),
        replaced_learners: b.membership.membership().learner_ids().collect(),
        voters: vec![id],
    };
    state.data.record_recovery(&recovery);
    let cluster_id = random_hex(8);
    state.data.cluster_id = Some(cluster_id.clone());
    state.data.used_join_tokens.clear();
    state.data.join_uses.clear();
    // A new cluster of new disks: no node of the old one may claim an id here by its disk.
    state.data.incarnations.clear();
    state.data.next_node_id = state.data.next_node_id.max(id + 1);
    state.last_applied = Some(log_id);
    state.last_membership = membership.clone();

    // Build the whole dir beside its final place, then rename: a crash leaves no half-restore.
    let tmp = RaftDir::new(config.data_dir.join("raft.restore.tmp"));
    let _ = std::fs::remove_dir_all(tmp.path());
    tmp.create()?;
    tmp.write_state_machine(&state)?;
    tmp.write_snapshot(&SnapshotFile {
        meta: SnapshotMeta {
            last_log_id: Some(log_id),
            last_membership: membership,
            snapshot_id: format!("restore-{index}"),
        },
        state: state.clone(),
    })?;
    tmp.write_purged(Some(log_id))?;
    tmp.write_committed(Some(log_id))?;
    tmp.write_vote(&Vote::new(1, id))?;
    tmp.write_identity(&Identity::new(id, &config.node_name))?;
    let _ = std::fs::remove_dir(dir.path());
    std::fs::rename(tmp.path(), dir.path())
        .map_err(|source| xp_store::StoreError::Io { path: dir.path().to_owned(), source })?;
    xp_store::fsutil::fsync_dir(&config.data_dir)?;
    Ok(Restored {
        node_id: id,
        cluster_id,
        old_cluster_id: b.cluster_id,
        keys: state.data.kv.len(),
        last_log_id: log_id,
    })
}
