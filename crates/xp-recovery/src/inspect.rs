//! Read-only inspection of a stopped node's Raft state (`xp-ops xp inspect`).

use serde::Serialize;
use xp_config::Config;
use xp_store::log::OpenMode;
use xp_store::{
    FenceRecord, Identity, LogId, NodeId, RaftDir, RecoveryGeneration, SmFile, SnapshotMeta,
    StoredMembership, Vote,
};

use crate::RecoveryError;

/// Where openraft will take the effective membership from on the next start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MembershipSource {
    /// A membership entry in the log after `last_applied`.
    Log,
    /// The state machine's `last_membership`.
    StateMachine,
}

/// Everything an operator needs to choose the survivor, read without changing a byte.
#[derive(Clone, Debug, Serialize)]
pub struct Inspection {
    pub identity: Identity,
    pub vote: Option<Vote>,
    pub term: u64,
    pub committed: Option<LogId>,
    pub purged: Option<LogId>,
    pub first_log_index: Option<u64>,
    pub last_log_id: Option<LogId>,
    pub log_entries: usize,
    pub last_applied: Option<LogId>,
    /// Entries after `last_applied`: a single voter will commit them.
    pub entries_after_applied: u64,
    pub effective_membership: StoredMembership,
    pub membership_source: MembershipSource,
    pub state_machine_membership: StoredMembership,
    pub snapshot: Option<SnapshotMeta>,
    /// Bytes of an interrupted append at the end of `log.bin`, none of them committed (cut off
    /// when the node starts). Damage that is not such a tail makes [`inspect`] fail instead.
    pub torn_tail_bytes: u64,
    /// An interrupted recovery left its journal.
    pub recovery_in_progress: bool,
    pub kv_keys: usize,
    pub cluster_id: Option<String>,
    /// The latest recovery of the cluster this dir knows of (0: never recovered).
    pub recovery_generation: u64,
    pub latest_recovery: Option<RecoveryGeneration>,
    /// Set when a recovered cluster evicted this node: its state belongs to an earlier
    /// generation and must not be recovered or started as a member again.
    pub fence: Option<FenceRecord>,
}

impl Inspection {
    /// The highest index any part of the state mentions.
    pub fn last_index(&self) -> u64 {
        [
            self.last_log_id,
            self.purged,
            self.last_applied,
            self.snapshot.as_ref().and_then(|s| s.last_log_id),
        ]
        .iter()
        .flatten()
        .map(|l| l.index)
        .max()
        .unwrap_or(0)
    }

    /// The highest term any part of the state mentions.
    pub fn max_term(&self) -> u64 {
        let log_terms = [
            self.last_log_id,
            self.purged,
            self.committed,
            self.last_applied,
            self.snapshot.as_ref().and_then(|s| s.last_log_id),
        ];
        log_terms
            .iter()
            .flatten()
            .map(|l| l.leader_id.term)
            .chain(self.vote.map(|v| v.leader_id.term))
            .max()
            .unwrap_or(0)
    }

    pub fn voters(&self) -> Vec<NodeId> {
        self.effective_membership.membership().voter_ids().collect()
    }
}

/// Reads the Raft dir named by the env file. The caller holds the data-dir lock.
pub fn inspect(config: &Config) -> Result<Inspection, RecoveryError> {
    let dir = RaftDir::new(config.raft_dir());
    let sm_path = dir.state_machine_path();
    if !sm_path.exists() {
        return Err(RecoveryError::MissingState { path: sm_path, env_file: config.path.clone() });
    }
    let identity = dir.read_identity_as(&config.node_name, &config.path)?.ok_or_else(|| {
        RecoveryError::MissingState { path: dir.identity_path(), env_file: config.path.clone() }
    })?;
    let sm: SmFile = dir.read_state_machine()?.expect("checked above");
    let vote = dir.read_vote()?;
    let committed = dir.read_committed()?;
    let purged = dir.read_purged()?;
    let log = dir.open_log(OpenMode::ReadOnly)?;
    dir.check_committed_present(&log, &sm)?;
    let snapshot = dir.read_snapshot()?.map(|s| s.meta);

    let applied_index = sm.last_applied.map(|l| l.index);
    let (effective_membership, from_log) = xp_store::effective_membership(&log, &sm);
    let membership_source =
        if from_log { MembershipSource::Log } else { MembershipSource::StateMachine };
    let latest_recovery = xp_store::latest_recovery(&log, &sm);
    let last_log_id = log.last_log_id().or(purged);
    let entries_after_applied = match (last_log_id, applied_index) {
        (Some(l), Some(a)) => l.index.saturating_sub(a),
        (Some(l), None) => l.index + 1,
        _ => 0,
    };
    let mut inspection = Inspection {
        identity,
        vote,
        term: 0,
        committed,
        purged,
        first_log_index: log.first_index(),
        last_log_id,
        log_entries: log.len(),
        last_applied: sm.last_applied,
        entries_after_applied,
        effective_membership,
        membership_source,
        state_machine_membership: sm.last_membership.clone(),
        snapshot,
        torn_tail_bytes: log.torn_tail_bytes,
        recovery_in_progress: dir.recovery_path().exists(),
        kv_keys: sm.data.kv.len(),
        cluster_id: sm.data.cluster_id.clone(),
        recovery_generation: latest_recovery.as_ref().map(|r| r.generation).unwrap_or(0),
        latest_recovery,
        fence: dir.read_fence()?,
    };
    inspection.term = inspection.max_term();
    Ok(inspection)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;
    use xp_store::{Entry, EntryPayload, Request};

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Request::Set {
                key: format!("k{index}"),
                value: "v".into(),
            }),
        }
    }

    /// A stopped node's dir with entries 1..=4, 2 of them committed; returns its config.
    fn node_dir(tmp: &std::path::Path) -> Config {
        let env = tmp.join("xp.env");
        let text = format!(
            "XP_DATA_DIR={}\nXP_NODE_NAME=node1\nXP_API_BASE_URL=http://127.0.0.1:7001\n",
            tmp.join("data").display()
        );
        std::fs::write(&env, &text).unwrap();
        let config = Config::parse(&env, &text).unwrap();
        let dir = RaftDir::new(config.raft_dir());
        dir.create().unwrap();
        dir.write_identity(&Identity::new(1, "node1")).unwrap();
        dir.write_state_machine(&SmFile::default()).unwrap();
        dir.open_log(OpenMode::Repair).unwrap().append((1..=4).map(entry)).unwrap();
        dir.write_committed(Some(entry(2).log_id)).unwrap();
        config
    }

    /// A flipped high bit in the length of the first record made it run past the end of the
    /// file. Before the fix inspect took that for a torn tail and reported "torn log tail:
    /// <whole file> bytes" with exit code 0 (and the node cut every committed entry on start).
    #[test]
    fn damage_in_the_middle_of_the_log_refuses_naming_offset_and_way_out() {
        let tmp = tempfile::tempdir().unwrap();
        let config = node_dir(tmp.path());
        let log = config.raft_dir().join("log.bin");
        let mut bytes = std::fs::read(&log).unwrap();
        bytes[3] ^= 0x80;
        std::fs::write(&log, &bytes).unwrap();
        let err = inspect(&config).unwrap_err();
        assert_eq!(err.exit_code(), 3);
        let msg = err.to_string();
        let expected =
            format!("{}: corrupt Raft state: bad record at byte 0: its length ", log.display());
        assert!(msg.starts_with(&expected), "{msg}");
        assert!(
            msg.contains("the log is damaged in its middle, not cut short by a crash"),
            "{msg}"
        );
        assert!(
            msg.ends_with(
                "recover another survivor (xp-ops xp inspect on each), or restore a backup \
                 (xp-ops xp restore)"
            ),
            "{msg}"
        );
        assert_eq!(std::fs::read(&log).unwrap(), bytes, "inspect changed the log");
    }

    /// A torn append above the committed index is only reported.
    #[test]
    fn a_torn_tail_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let config = node_dir(tmp.path());
        let log = config.raft_dir().join("log.bin");
        let bytes = std::fs::read(&log).unwrap();
        std::fs::write(&log, &bytes[..bytes.len() - 3]).unwrap();
        let i = inspect(&config).unwrap();
        assert_eq!(i.last_log_id, Some(entry(3).log_id));
        assert!(i.torn_tail_bytes > 0);
        assert_eq!(std::fs::read(&log).unwrap().len(), bytes.len() - 3);
    }
}
