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
    /// Bytes of an interrupted write at the end of `log.bin` (cut off when the node starts).
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
