//! Planning and applying the rewrite, behind a journal so a crash at any write is finished by
//! running the tool again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::SystemTime;

use openraft::CommittedLeaderId;
use serde::{Deserialize, Serialize};
use xp_config::Config;
use xp_store::fsutil::{fsync_dir, read_json, write_json};
use xp_store::log::OpenMode;
use xp_store::{
    Entry, EntryPayload, LogId, Membership, NodeId, NodeMeta, RaftDir, RecoveryGeneration,
    RecoveryKind, Request, StoredMembership, Vote,
};

use crate::inspect::{inspect, Inspection};
use crate::{backup_raft_dir, stamp, RecoveryError};

/// The write points of [`apply`], in order. A crash between any two leaves a state that is
/// either the old one (before `Journal`) or one that re-running finishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Backup,
    Journal,
    Vote,
    LogEntry,
    StateMachine,
    Snapshot,
    Record,
    Done,
}

pub const STEPS: &[Step] = &[
    Step::Backup,
    Step::Journal,
    Step::Vote,
    Step::LogEntry,
    Step::StateMachine,
    Step::Snapshot,
    Step::Record,
    Step::Done,
];

/// What the recovery will do; also the journal's content.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub started_at: String,
    pub node_id: NodeId,
    pub node_name: String,
    pub api_base_url: String,
    pub old_vote: Option<Vote>,
    pub new_vote: Vote,
    pub old_voters: Vec<NodeId>,
    pub old_members: BTreeMap<NodeId, NodeMeta>,
    pub new_entry: Entry,
    pub last_applied: Option<LogId>,
    pub last_log_id: Option<LogId>,
    /// Entries after the last one known to be committed (the later of `committed` and
    /// `last_applied`), indexes `from..=to`, that the single voter will commit.
    pub uncommitted: Option<(u64, u64)>,
    pub backup_dir: Option<PathBuf>,
    pub rewrite_snapshot: bool,
    pub record_path: PathBuf,
    /// The cluster's new recovery generation, appended to the log right after `new_entry`
    /// (as [`Request::RecordRecovery`], so it replicates to every node that joins) and written
    /// into `state_machine.json` and `snapshot.json` (so the node knows it before it leads).
    /// `None` only in journals written before generations existed.
    #[serde(default)]
    pub recovery: Option<RecoveryGeneration>,
    /// Set when `last_applied` is past the end of the live log (a crash between a snapshot
    /// install's state-machine write and its purge): the log is purged up to it first, as
    /// openraft would on start, so the recovery entries follow it without a hole.
    #[serde(default)]
    pub purge_to: Option<LogId>,
}

impl Plan {
    /// The entry recording the new generation, right after the membership entry.
    pub fn lineage_entry(&self) -> Option<Entry> {
        let recovery = self.recovery.clone()?;
        let mut log_id = self.new_entry.log_id;
        log_id.index += 1;
        Some(Entry { log_id, payload: EntryPayload::Normal(Request::RecordRecovery { recovery }) })
    }

    /// The last log id once the plan is applied.
    pub fn last_log_id_after(&self) -> LogId {
        self.lineage_entry().map(|e| e.log_id).unwrap_or(self.new_entry.log_id)
    }

    pub fn new_membership(&self) -> Membership {
        match &self.new_entry.payload {
            EntryPayload::Membership(m) => m.clone(),
            _ => unreachable!("the recovery entry is a membership entry"),
        }
    }

    /// The plan as an operator reads it.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let line = |s: &mut String, t: String| {
            s.push_str(&t);
            s.push('\n');
        };
        line(
            &mut s,
            format!(
                "recovery plan for node {} ({}), started {}",
                self.node_id, self.node_name, self.started_at
            ),
        );
        line(
            &mut s,
            format!("  voters now:        {:?} -> after: [{}]", self.old_voters, self.node_id),
        );
        for (id, m) in &self.old_members {
            line(&mut s, format!("    member {id}: {m}"));
        }
        line(
            &mut s,
            format!(
                "  node meta:         {}@{} (from XP_NODE_NAME / XP_API_BASE_URL)",
                self.node_name, self.api_base_url
            ),
        );
        line(
            &mut s,
            format!("  vote:              {} -> {}", fmt_vote(self.old_vote), self.new_vote),
        );
        line(&mut s, format!("  last applied:      {}", fmt_log_id(self.last_applied)));
        line(&mut s, format!("  last log id:       {}", fmt_log_id(self.last_log_id)));
        if let Some(p) = self.purge_to {
            line(
                &mut s,
                format!(
                    "  purge:             purge the log up to {} first (last applied is past the end of the live log; openraft would do the same on start)",
                    p.index
                ),
            );
        }
        line(
            &mut s,
            format!(
                "  append entry:      {} membership {{{}}}",
                self.new_entry.log_id, self.node_id
            ),
        );
        match self.uncommitted {
            Some((a, b)) => line(&mut s, format!(
                "  uncommitted:       {} entries ({a}..={b}) not known to be committed are kept; as the only voter this node will commit them",
                b - a + 1
            )),
            None => line(&mut s, "  uncommitted:       none".into()),
        }
        if let (Some(r), Some(e)) = (&self.recovery, self.lineage_entry()) {
            line(
                &mut s,
                format!(
                    "  generation:        {} -> {} (entry {}; nodes of earlier generations are fenced on contact)",
                    r.generation - 1,
                    r.generation,
                    e.log_id
                ),
            );
        }
        line(&mut s, "  state_machine.json: last_membership rewritten to the new membership (data untouched)".into());
        if self.rewrite_snapshot {
            line(
                &mut s,
                "  snapshot.json:     meta.last_membership rewritten to the new membership".into(),
            );
        } else {
            line(&mut s, "  snapshot.json:     none".into());
        }
        match &self.backup_dir {
            Some(b) => line(
                &mut s,
                format!("  backup:            {} (complete copy of raft/, verified)", b.display()),
            ),
            None => line(&mut s, "  backup:            NONE (--no-backup)".into()),
        }
        line(&mut s, format!("  record:            {}", self.record_path.display()));
        s
    }
}

fn fmt_vote(v: Option<Vote>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "none".into())
}
fn fmt_log_id(l: Option<LogId>) -> String {
    l.map(|l| l.to_string()).unwrap_or_else(|| "none".into())
}

/// Decides the rewrite, or refuses. `Ok(None)`: this node is already the only voter with the
/// configured meta, so there is nothing to do.
pub fn plan(
    config: &Config,
    insp: &Inspection,
    backup: bool,
    now: SystemTime,
) -> Result<Option<Plan>, RecoveryError> {
    let me = insp.identity.node_id;
    if let Some(f) = &insp.fence {
        return Err(RecoveryError::NotAMember(format!(
            "this data dir was evicted on {} by cluster {} (recovered at generation {}): its state \
             belongs to an earlier generation, and recovering it would start a second cluster. \
             Recover a node of the current generation instead, or wipe this one and rejoin it \
             with a token",
            f.fenced_at, f.eviction.cluster_id, f.eviction.recovery.generation
        )));
    }
    let membership = insp.effective_membership.membership();
    if membership.get_node(&me).is_none() {
        return Err(RecoveryError::NotAMember(format!(
            "node {me} ({}) is not in its own effective membership {:?}: its state is not that of a cluster member",
            insp.identity.node_name,
            membership.nodes().map(|(id, n)| format!("{id}={n}")).collect::<Vec<_>>()
        )));
    }
    let meta =
        NodeMeta { name: config.node_name.clone(), api_base_url: config.api_base_url.clone() };
    let voters = insp.voters();
    if voters == [me]
        && membership.learner_ids().next().is_none()
        && membership.get_node(&me) == Some(&meta)
    {
        return Ok(None);
    }
    let term = insp.max_term() + 1;
    let new_vote = Vote::new(term, me);
    let index = insp.last_index() + 1;
    let new_membership = Membership::new(vec![BTreeSet::from([me])], BTreeMap::from([(me, meta)]));
    let new_entry = Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, me), index),
        payload: EntryPayload::Membership(new_membership),
    };
    let started = stamp(now);
    let uncommitted = insp.last_log_id.and_then(|l| {
        let known_committed = insp.last_applied.max(insp.committed);
        let from = known_committed.map(|a| a.index + 1).unwrap_or(0);
        (l.index >= from).then_some((from, l.index))
    });
    let recovery = RecoveryGeneration {
        generation: insp.recovery_generation + 1,
        kind: RecoveryKind::RecoverSingleNode,
        at: humantime::format_rfc3339_seconds(now).to_string(),
        node_id: me,
        node_name: config.node_name.clone(),
        replaced_voters: voters.clone(),
        replaced_learners: membership.learner_ids().collect(),
        voters: vec![me],
    };
    let live_end = insp.last_log_id.map(|l| l.index);
    let purge_to = insp.last_applied.filter(|a| live_end.is_none_or(|e| a.index > e));
    Ok(Some(Plan {
        purge_to,
        recovery: Some(recovery),
        started_at: humantime::format_rfc3339_seconds(now).to_string(),
        node_id: me,
        node_name: config.node_name.clone(),
        api_base_url: config.api_base_url.clone(),
        old_vote: insp.vote,
        new_vote,
        old_voters: voters,
        old_members: membership.nodes().map(|(id, n)| (*id, n.clone())).collect(),
        new_entry,
        last_applied: insp.last_applied,
        last_log_id: insp.last_log_id,
        uncommitted,
        backup_dir: backup.then(|| free_backup_dir(config, &started)),
        rewrite_snapshot: insp.snapshot.is_some(),
        record_path: config.data_dir.join(format!("recovery-{started}.json")),
    }))
}

/// `raft.bak-<ts>`, or `raft.bak-<ts>-N` when a run in the same second already made one:
/// a backup is never overwritten.
fn free_backup_dir(config: &Config, started: &str) -> PathBuf {
    let base = config.data_dir.join(format!("raft.bak-{started}"));
    (2..)
        .map(|n| config.data_dir.join(format!("raft.bak-{started}-{n}")))
        .find(|p| !p.exists())
        .filter(|_| base.exists())
        .unwrap_or(base)
}

/// Written next to the data (`${XP_DATA_DIR}/recovery-<ts>.json`) when recovery completes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecoveryRecord {
    pub tool: String,
    pub started_at: String,
    pub finished_at: String,
    pub node_id: NodeId,
    pub node_name: String,
    pub api_base_url: String,
    pub vote_before: Option<Vote>,
    pub vote_after: Vote,
    pub voters_before: Vec<NodeId>,
    pub voters_after: Vec<NodeId>,
    pub last_log_id_before: Option<LogId>,
    pub last_log_id_after: LogId,
    pub last_applied: Option<LogId>,
    pub uncommitted_entries_kept: u64,
    pub backup_dir: Option<PathBuf>,
    /// The cluster's recovery generation after this recovery.
    #[serde(default)]
    pub generation: u64,
}

/// Carries out `plan`. `hook` is called before each write point (tests use it to simulate a
/// crash there). If a journal exists, the plan in it is finished instead of `plan`.
pub fn apply(
    config: &Config,
    plan: &Plan,
    hook: &mut dyn FnMut(Step),
) -> Result<RecoveryRecord, RecoveryError> {
    let dir = RaftDir::new(config.raft_dir());
    let journal = dir.recovery_path();

    if let Some(b) = &plan.backup_dir {
        hook(Step::Backup);
        backup_raft_dir(dir.path(), b)?;
    }
    hook(Step::Journal);
    write_json(&journal, plan)?;
    finish(config, plan, hook)
}

/// The journal left by an interrupted [`apply`], if any.
pub fn pending_journal(config: &Config) -> Result<Option<Plan>, RecoveryError> {
    Ok(read_json(&RaftDir::new(config.raft_dir()).recovery_path())?)
}

/// Runs the idempotent steps after the journal; used by [`apply`] and to resume.
pub fn finish(
    config: &Config,
    plan: &Plan,
    hook: &mut dyn FnMut(Step),
) -> Result<RecoveryRecord, RecoveryError> {
    let dir = RaftDir::new(config.raft_dir());
    hook(Step::Vote);
    dir.write_vote(&plan.new_vote)?;

    hook(Step::LogEntry);
    if let Some(p) = plan.purge_to {
        // The purge point first (atomic); the log then treats every entry up to it as purged.
        if dir.read_purged()?.is_none_or(|q| q.index < p.index) {
            dir.write_purged(Some(p))?;
        }
        dir.open_log(OpenMode::Repair)?.purge(p.index)?;
    }
    let mut log = dir.open_log(OpenMode::Repair)?;
    // One fsynced append of both entries; after a crash the torn one was cut on open and is
    // appended again here.
    let mut missing = Vec::new();
    for entry in [Some(plan.new_entry.clone()), plan.lineage_entry()].into_iter().flatten() {
        match log.get(entry.log_id.index) {
            Some(e) if e.log_id == entry.log_id => {} // appended before a crash
            Some(e) => {
                return Err(RecoveryError::Verify(format!(
                    "log already holds {} at index {} planned for the recovery",
                    e.log_id, entry.log_id.index
                )))
            }
            None => missing.push(entry),
        }
    }
    if !missing.is_empty() {
        log.append(missing)?;
    }
    drop(log);

    let new_membership = plan.new_membership();
    hook(Step::StateMachine);
    if let Some(mut sm) = dir.read_state_machine()? {
        sm.last_membership =
            StoredMembership::new(*sm.last_membership.log_id(), new_membership.clone());
        if let Some(r) = &plan.recovery {
            sm.data.record_recovery(r);
        }
        dir.write_state_machine(&sm)?;
    }
    hook(Step::Snapshot);
    if let Some(mut snap) = dir.read_snapshot()? {
        let m = StoredMembership::new(*snap.meta.last_membership.log_id(), new_membership.clone());
        snap.meta.last_membership = m.clone();
        snap.state.last_membership = m;
        if let Some(r) = &plan.recovery {
            snap.state.data.record_recovery(r);
        }
        dir.write_snapshot(&snap)?;
    }

    hook(Step::Record);
    let record = RecoveryRecord {
        tool: format!("xp-ops xp recover-single-node {}", env!("CARGO_PKG_VERSION")),
        started_at: plan.started_at.clone(),
        finished_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        node_id: plan.node_id,
        node_name: plan.node_name.clone(),
        api_base_url: plan.api_base_url.clone(),
        vote_before: plan.old_vote,
        vote_after: plan.new_vote,
        voters_before: plan.old_voters.clone(),
        voters_after: vec![plan.node_id],
        last_log_id_before: plan.last_log_id,
        last_log_id_after: plan.last_log_id_after(),
        last_applied: plan.last_applied,
        uncommitted_entries_kept: plan.uncommitted.map(|(a, b)| b - a + 1).unwrap_or(0),
        backup_dir: plan.backup_dir.clone(),
        generation: plan.recovery.as_ref().map(|r| r.generation).unwrap_or(0),
    };
    write_json(&plan.record_path, &record)?;

    hook(Step::Done);
    let journal = dir.recovery_path();
    std::fs::remove_file(&journal)
        .map_err(|source| xp_store::StoreError::Io { path: journal.clone(), source })?;
    fsync_dir(dir.path())?;
    Ok(record)
}

/// Re-reads the dir and checks what openraft will see on start.
pub fn verify(config: &Config, plan: &Plan) -> Result<Inspection, RecoveryError> {
    let insp = inspect(config)?;
    let fail = |what: String| Err(RecoveryError::Verify(what));
    if insp.recovery_in_progress {
        return fail("the journal is still present".into());
    }
    if insp.vote != Some(plan.new_vote) {
        return fail(format!("vote is {:?}, expected {}", insp.vote, plan.new_vote));
    }
    if insp.last_log_id != Some(plan.last_log_id_after()) {
        return fail(format!(
            "last log id is {:?}, expected {}",
            insp.last_log_id,
            plan.last_log_id_after()
        ));
    }
    if let Some(r) = &plan.recovery {
        if insp.recovery_generation != r.generation {
            return fail(format!(
                "recovery generation is {}, expected {}",
                insp.recovery_generation, r.generation
            ));
        }
    }
    if insp.voters() != [plan.node_id] {
        return fail(format!("effective voters are {:?}", insp.voters()));
    }
    let me = insp.effective_membership.membership().get_node(&plan.node_id).cloned();
    if me.as_ref().map(|m| m.api_base_url.as_str()) != Some(plan.api_base_url.as_str()) {
        return fail(format!("node meta is {me:?}, expected api_base_url {}", plan.api_base_url));
    }
    if insp.state_machine_membership.membership().voter_ids().collect::<Vec<_>>() != [plan.node_id]
    {
        return fail("state_machine.json still holds the old membership".into());
    }
    if let Some(s) = &insp.snapshot {
        if s.last_membership.membership().voter_ids().collect::<Vec<_>>() != [plan.node_id] {
            return fail("snapshot.json still holds the old membership".into());
        }
    }
    Ok(insp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::MembershipSource;
    use std::time::Duration;
    use xp_store::{Eviction, FenceRecord, Identity};

    fn config() -> Config {
        let text = "XP_DATA_DIR=/data\nXP_NODE_NAME=node1\nXP_API_BASE_URL=http://n1:8080\n\
                    XP_BIND=127.0.0.1:8080\nXP_CLUSTER_SECRET=test-cluster-secret-0123456789\n";
        Config::parse(std::path::Path::new("xp.env"), text).unwrap()
    }

    fn id(term: u64, index: u64) -> Option<LogId> {
        Some(LogId::new(CommittedLeaderId::new(term, 1), index))
    }

    fn membership(voters: &[NodeId], learners: &[NodeId]) -> StoredMembership {
        let nodes = voters
            .iter()
            .chain(learners)
            .map(|n| {
                let meta = NodeMeta {
                    name: format!("node{n}"),
                    api_base_url: format!("http://n{n}:8080"),
                };
                (*n, meta)
            })
            .collect::<BTreeMap<_, _>>();
        let configs = vec![voters.iter().copied().collect::<BTreeSet<_>>()];
        StoredMembership::new(id(1, 1), Membership::new(configs, nodes))
    }

    /// Node 1 of a 3-voter cluster: log 1..=20 in term 2, applied and committed up to 15.
    fn inspection() -> Inspection {
        Inspection {
            identity: Identity { node_id: 1, node_name: "node1".into(), incarnation: "aa".into() },
            vote: Some(Vote::new_committed(2, 2)),
            term: 2,
            committed: id(2, 15),
            purged: None,
            first_log_index: Some(1),
            last_log_id: id(2, 20),
            log_entries: 20,
            last_applied: id(2, 15),
            entries_after_applied: 5,
            effective_membership: membership(&[1, 2, 3], &[]),
            membership_source: MembershipSource::StateMachine,
            state_machine_membership: membership(&[1, 2, 3], &[]),
            snapshot: None,
            torn_tail_bytes: 0,
            recovery_in_progress: false,
            kv_keys: 3,
            cluster_id: Some("c1".into()),
            recovery_generation: 0,
            latest_recovery: None,
            fence: None,
        }
    }

    /// What a plan says, in one line, for the table.
    fn summary(p: &Plan) -> String {
        format!(
            "vote {} entry {} generation {} uncommitted {:?} purge {:?} replaced {:?}+{:?}",
            p.new_vote,
            p.new_entry.log_id,
            p.recovery.as_ref().map(|r| r.generation).unwrap_or(0),
            p.uncommitted,
            p.purge_to.map(|l| l.index),
            p.recovery.as_ref().map(|r| r.replaced_voters.clone()).unwrap_or_default(),
            p.recovery.as_ref().map(|r| r.replaced_learners.clone()).unwrap_or_default(),
        )
    }

    /// A case: what it is, how it changes the base inspection, the plan's summary.
    type Case = (&'static str, Box<dyn Fn(&mut Inspection)>, &'static str);

    #[test]
    fn plan_table() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let cases: Vec<Case> = vec![
            (
                "a survivor with 5 entries not known to be committed",
                Box::new(|_| {}),
                "vote T3-N1:uncommitted entry T3-N1-21 generation 1 uncommitted Some((16, 20)) \
                 purge None replaced [1, 2, 3]+[]",
            ),
            (
                "committed.json ahead of last_applied: the later one counts",
                Box::new(|i| i.committed = id(2, 18)),
                "vote T3-N1:uncommitted entry T3-N1-21 generation 1 uncommitted Some((19, 20)) \
                 purge None replaced [1, 2, 3]+[]",
            ),
            (
                "a vote in a higher term than any entry",
                Box::new(|i| i.vote = Some(Vote::new(7, 3))),
                "vote T8-N1:uncommitted entry T8-N1-21 generation 1 uncommitted Some((16, 20)) \
                 purge None replaced [1, 2, 3]+[]",
            ),
            (
                "a second recovery, with a learner in the old configuration",
                Box::new(|i| {
                    i.recovery_generation = 1;
                    i.effective_membership = membership(&[1, 4], &[5]);
                }),
                "vote T3-N1:uncommitted entry T3-N1-21 generation 2 uncommitted Some((16, 20)) \
                 purge None replaced [1, 4]+[5]",
            ),
            (
                "last_applied past the end of the live log: purge up to it first",
                Box::new(|i| {
                    i.last_log_id = id(2, 12);
                    i.committed = id(2, 15);
                    i.last_applied = id(2, 15);
                }),
                "vote T3-N1:uncommitted entry T3-N1-16 generation 1 uncommitted None purge \
                 Some(15) replaced [1, 2, 3]+[]",
            ),
            (
                "everything applied",
                Box::new(|i| i.last_applied = id(2, 20)),
                "vote T3-N1:uncommitted entry T3-N1-21 generation 1 uncommitted None purge None \
                 replaced [1, 2, 3]+[]",
            ),
        ];
        for (what, change, want) in cases {
            let mut insp = inspection();
            change(&mut insp);
            let p = plan(&config(), &insp, false, now).unwrap().expect(what);
            let want: String = want.split_whitespace().collect::<Vec<_>>().join(" ");
            assert_eq!(summary(&p), want, "{what}");
            assert_eq!(p.new_membership().voter_ids().collect::<Vec<_>>(), [1], "{what}");
            assert_eq!(p.lineage_entry().unwrap().log_id.index, p.new_entry.log_id.index + 1);
        }
    }

    #[test]
    fn plan_refusals_and_nothing_to_do() {
        let now = std::time::UNIX_EPOCH;
        // Already the only voter with the configured meta: nothing to do.
        let mut alone = inspection();
        alone.effective_membership = membership(&[1], &[]);
        assert!(plan(&config(), &alone, false, now).unwrap().is_none());
        // Not a member of its own membership.
        let mut outsider = inspection();
        outsider.effective_membership = membership(&[2, 3], &[]);
        let e = plan(&config(), &outsider, false, now).unwrap_err().to_string();
        assert!(e.starts_with("refusing: node 1 (node1) is not in its own effective membership"));
        // A data dir a recovered cluster evicted.
        let mut fenced = inspection();
        fenced.fence = Some(FenceRecord {
            fenced_at: "2026-11-23T16:00:00Z".into(),
            reason: "evicted".into(),
            eviction: Eviction {
                cluster_id: "c1".into(),
                recovery: xp_store::RecoveryGeneration {
                    generation: 1,
                    kind: xp_store::RecoveryKind::RecoverSingleNode,
                    at: "2026-11-23T15:59:00Z".into(),
                    node_id: 3,
                    node_name: "node3".into(),
                    replaced_voters: vec![1, 2, 3],
                    replaced_learners: vec![],
                    voters: vec![3],
                },
                members: vec![3],
                retired: vec![1, 2],
                issued_by: 3,
                mac: String::new(),
            },
        });
        let e = plan(&config(), &fenced, false, now).unwrap_err().to_string();
        assert!(e.contains("was evicted") && e.contains("would start a second cluster"), "{e}");
    }
}
