//! Synchronous access to every file of a Raft dir: the one implementation of the format, used
//! by the node's openraft adapters and by the offline recovery tool alike.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::{read_json, write_json};
use crate::log::{LogFile, OpenMode};
use crate::types::{
    EntryPayload, FenceRecord, LogId, NodeId, RecoveryGeneration, Request, SmData, SnapshotMeta,
    StoredMembership, Vote,
};
use crate::StoreError;

/// Who this data dir belongs to; written once when the node first starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub node_id: NodeId,
    pub node_name: String,
    /// Random, drawn when this data dir got its identity. A wiped or replaced disk draws a new
    /// one, which is how the cluster tells it from the disk that node id had (a member that lost
    /// its log and vote must not vote or count towards a quorum again under its old id; see
    /// [`crate::SmData::incarnations`]). Empty in dirs written before it existed.
    #[serde(default)]
    pub incarnation: String,
}

impl Identity {
    /// A new identity with a fresh incarnation.
    pub fn new(node_id: NodeId, node_name: &str) -> Identity {
        Identity { node_id, node_name: node_name.to_owned(), incarnation: new_incarnation() }
    }
}

/// 16 random hex digits.
pub fn new_incarnation() -> String {
    let mut buf = [0u8; 8];
    getrandom::getrandom(&mut buf).expect("the OS has a random source");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// `state_machine.json`: the applied state (see [`crate::StateMachineStore`] for when it is
/// written).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmFile {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub data: SmData,
}

/// `snapshot.json`: the current snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFile {
    pub meta: SnapshotMeta,
    pub state: SmFile,
}

/// `committed.json` and `purged.json` hold an optional log id.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct LogIdFile {
    log_id: Option<LogId>,
}

/// A `${XP_DATA_DIR}/raft` directory.
#[derive(Clone, Debug)]
pub struct RaftDir {
    dir: PathBuf,
}

impl RaftDir {
    pub fn new(dir: impl Into<PathBuf>) -> RaftDir {
        RaftDir { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn identity_path(&self) -> PathBuf {
        self.file("identity.json")
    }
    pub fn state_machine_path(&self) -> PathBuf {
        self.file("state_machine.json")
    }
    pub fn snapshot_path(&self) -> PathBuf {
        self.file("snapshot.json")
    }
    pub fn recovery_path(&self) -> PathBuf {
        self.file("recovery.json")
    }
    pub fn fence_path(&self) -> PathBuf {
        self.file("fence.json")
    }

    /// Creates the directory if needed.
    pub fn create(&self) -> Result<(), StoreError> {
        crate::fsutil::create_private_dir(&self.dir)
    }

    /// True when the dir holds no Raft state at all (a new or wiped node).
    pub fn is_pristine(&self) -> Result<bool, StoreError> {
        match std::fs::read_dir(&self.dir) {
            Ok(mut it) => Ok(it.next().is_none()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(StoreError::Io { path: self.dir.clone(), source: e }),
        }
    }

    pub fn read_identity(&self) -> Result<Option<Identity>, StoreError> {
        read_json(&self.identity_path())
    }
    /// The identity, checked against the node name the env file gives; `Ok(None)` when the dir
    /// has none yet.
    pub fn read_identity_as(
        &self,
        node_name: &str,
        env_file: &Path,
    ) -> Result<Option<Identity>, StoreError> {
        match self.read_identity()? {
            Some(id) if id.node_name != node_name => Err(StoreError::WrongNode {
                dir: self.dir.clone(),
                found: id.node_name,
                node_id: id.node_id,
                env_file: env_file.to_owned(),
                expected: node_name.to_owned(),
            }),
            other => Ok(other),
        }
    }

    pub fn write_identity(&self, id: &Identity) -> Result<(), StoreError> {
        write_json(&self.identity_path(), id)
    }

    pub fn read_vote(&self) -> Result<Option<Vote>, StoreError> {
        read_json(&self.file("vote.json"))
    }
    pub fn write_vote(&self, vote: &Vote) -> Result<(), StoreError> {
        write_json(&self.file("vote.json"), vote)
    }

    pub fn read_committed(&self) -> Result<Option<LogId>, StoreError> {
        Ok(read_json::<LogIdFile>(&self.file("committed.json"))?.and_then(|f| f.log_id))
    }
    pub fn write_committed(&self, log_id: Option<LogId>) -> Result<(), StoreError> {
        write_json(&self.file("committed.json"), &LogIdFile { log_id })
    }

    pub fn read_purged(&self) -> Result<Option<LogId>, StoreError> {
        Ok(read_json::<LogIdFile>(&self.file("purged.json"))?.and_then(|f| f.log_id))
    }
    pub fn write_purged(&self, log_id: Option<LogId>) -> Result<(), StoreError> {
        write_json(&self.file("purged.json"), &LogIdFile { log_id })
    }

    /// Opens the log, skipping entries at or below the purge point; a damaged tail that would
    /// take a committed entry with it is refused, not cut (see [`LogFile::open`]).
    pub fn open_log(&self, mode: OpenMode) -> Result<LogFile, StoreError> {
        LogFile::open(&self.dir, self.read_purged()?, self.read_committed()?, mode)
    }

    pub fn read_state_machine(&self) -> Result<Option<SmFile>, StoreError> {
        read_json(&self.state_machine_path())
    }
    pub fn write_state_machine(&self, sm: &SmFile) -> Result<(), StoreError> {
        write_json(&self.state_machine_path(), sm)
    }

    pub fn read_snapshot(&self) -> Result<Option<SnapshotFile>, StoreError> {
        read_json(&self.snapshot_path())
    }
    pub fn write_snapshot(&self, snap: &SnapshotFile) -> Result<(), StoreError> {
        write_json(&self.snapshot_path(), snap)
    }

    /// The eviction this dir obeyed, if any (see [`FenceRecord`]).
    pub fn read_fence(&self) -> Result<Option<FenceRecord>, StoreError> {
        read_json(&self.fence_path())
    }
    pub fn write_fence(&self, fence: &FenceRecord) -> Result<(), StoreError> {
        write_json(&self.fence_path(), fence)
    }

    /// Fails when `committed.json` names an entry that nothing holds any more: not the log, not
    /// the purge point, not the state machine (which is never behind the snapshot). Acknowledged
    /// entries are missing (a log cut short at a record boundary, an emptied file): starting,
    /// or recovering, on such a dir would hand out their indexes again.
    pub fn check_committed_present(&self, log: &LogFile, sm: &SmFile) -> Result<(), StoreError> {
        let Some(committed) = self.read_committed()? else { return Ok(()) };
        let held = [log.last_log_id(), self.read_purged()?, sm.last_applied]
            .into_iter()
            .flatten()
            .map(|l| l.index)
            .max();
        if held.is_some_and(|h| h >= committed.index) {
            return Ok(());
        }
        Err(StoreError::corrupt(
            self.file("log.bin"),
            format!(
                "committed.json says entry {} is committed, but the log ends at {} and neither the \
                 purge point nor the state machine covers it: acknowledged entries are missing. \
                 Recover another survivor (xp-ops xp inspect on each), or restore a backup \
                 (xp-ops xp restore)",
                committed.index,
                held.map(|h| format!("entry {h}")).unwrap_or_else(|| "nothing".into())
            ),
        ))
    }

    /// Fails when an interrupted recovery left its journal behind.
    pub fn check_no_recovery_in_progress(&self) -> Result<(), StoreError> {
        let path = self.recovery_path();
        if path.exists() {
            return Err(StoreError::RecoveryInProgress { path });
        }
        Ok(())
    }
}

/// The membership openraft will use on start: the last membership entry in the log after
/// `last_applied`, else the state machine's.
pub fn effective_membership(log: &LogFile, sm: &SmFile) -> (StoredMembership, bool) {
    let applied = sm.last_applied.map(|l| l.index);
    let from_log = log
        .iter()
        .rev()
        .take_while(|e| applied.is_none_or(|a| e.log_id.index > a))
        .find_map(|e| match &e.payload {
            EntryPayload::Membership(m) => Some(StoredMembership::new(Some(e.log_id), m.clone())),
            _ => None,
        });
    match from_log {
        Some(m) => (m, true),
        None => (sm.last_membership.clone(), false),
    }
}

/// The latest recovery this dir knows of: the state machine's, or a later one recorded in the
/// log but not applied yet (a single voter will commit it).
pub fn latest_recovery(log: &LogFile, sm: &SmFile) -> Option<RecoveryGeneration> {
    let in_log = log.iter().filter_map(|e| match &e.payload {
        EntryPayload::Normal(Request::RecordRecovery { recovery }) => Some(recovery),
        _ => None,
    });
    sm.data.latest_recovery().into_iter().chain(in_log).max_by_key(|r| r.generation).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::OpenMode;
    use crate::types::{Entry, EntryPayload};
    use openraft::CommittedLeaderId;

    fn id(index: u64) -> Option<LogId> {
        Some(LogId::new(CommittedLeaderId::new(1, 1), index))
    }

    /// A log cut short at a record boundary below `committed.json` used to open, inspect and
    /// even be recovered (the recovery then reused committed indexes).
    #[test]
    fn committed_entries_missing_from_everything_refuse() {
        // (log up to, purged, last applied, committed) -> refused?
        let cases = [
            (5, None, None, Some(5), false),
            (5, None, None, None, false),
            (5, None, None, Some(9), true),
            (0, None, None, Some(3), true),     // an emptied log.bin
            (5, Some(9), None, Some(9), false), // purged past the end after a snapshot install
            (5, None, Some(9), Some(9), false), // applied (state machine) past the end
            (5, Some(7), Some(8), Some(9), true),
        ];
        for (last, purged, applied, committed, refused) in cases {
            let tmp = tempfile::tempdir().unwrap();
            let dir = RaftDir::new(tmp.path());
            let mut log = dir.open_log(OpenMode::Repair).unwrap();
            let entries =
                (1..=last).map(|i| Entry { log_id: id(i).unwrap(), payload: EntryPayload::Blank });
            log.append(entries).unwrap();
            drop(log);
            dir.write_purged(purged.and_then(id)).unwrap();
            dir.write_committed(committed.and_then(id)).unwrap();
            let sm = SmFile { last_applied: applied.and_then(id), ..Default::default() };
            let log = dir.open_log(OpenMode::ReadOnly).unwrap();
            let got = dir.check_committed_present(&log, &sm);
            assert_eq!(got.is_err(), refused, "{last} {purged:?} {applied:?} {committed:?}");
            if let Err(e) = got {
                assert!(e.to_string().contains("acknowledged entries are missing"), "{e}");
            }
        }
    }
}
