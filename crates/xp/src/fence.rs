//! Fencing: the two ways a node learns it may no longer take part in its cluster, and the
//! decisions behind them.
//!
//! - **Wiped disk.** The cluster knows this node's id by another data dir (see
//!   `api::check_incarnations`): it lost its log and vote. Not persisted (the disk has nothing
//!   to lose); the node stays up and is refused until it rejoins with a token.
//! - **Evicted.** The cluster was recovered (`xp-ops xp recover-single-node` or a restore) while
//!   this node was away, and this node belongs to an earlier generation. A recovered node that
//!   receives a Raft RPC from such a node answers with an authenticated [`Eviction`]; a node
//!   that starts on existing state asks its members first ([`crate::network::Network::probe`]).
//!   The evicted node persists the fence (`raft/fence.json`, removed only by `xp wipe`), stops
//!   Raft, refuses client requests, and relays the eviction to any old peer that contacts it.

use std::sync::Mutex;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::watch;
use xp_store::{Eviction, FenceRecord, NodeId, RaftDir, RecoveryGeneration, StoreError};

use crate::token::{hex, unhex};

pub use xp_api::headers::GENERATION as GENERATION_HEADER;

type HmacSha256 = Hmac<Sha256>;

/// What a node knows of itself when it judges an eviction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standing {
    pub node_id: NodeId,
    /// Empty when the node has none yet.
    pub cluster_id: String,
    pub generation: u64,
}

/// Why an eviction was not obeyed. Each is logged; none changes anything.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    /// The MAC does not check: forged, altered, or made with another cluster secret.
    #[error("its MAC does not check (forged, altered, or another cluster's secret)")]
    BadMac,
    /// It speaks for another cluster.
    #[error("it is from cluster {theirs}, this node belongs to cluster {ours}")]
    OtherCluster { theirs: String, ours: String },
    /// This node has no cluster id to compare with.
    #[error("this node has no cluster id yet")]
    NoClusterId,
    /// This node already knows that generation or a later one.
    #[error("it names generation {theirs}, this node is at generation {ours}")]
    NotLater { theirs: u64, ours: u64 },
    /// This node is a member of the recovered cluster.
    #[error("node {0} is a member of the recovered cluster")]
    StillMember(NodeId),
    /// This node was in no configuration a recovery replaced (it joined later).
    #[error("node {0} was in no configuration a recovery replaced")]
    NotRetired(NodeId),
}

/// The ids a recovered cluster may evict: every member of a configuration some recovery in
/// `lineage` replaced, less the current `members`. Sorted, without duplicates.
pub fn retired(lineage: &[RecoveryGeneration], members: &[NodeId]) -> Vec<NodeId> {
    let mut out: Vec<NodeId> = lineage
        .iter()
        .flat_map(|r| r.replaced_voters.iter().chain(&r.replaced_learners))
        .filter(|id| !members.contains(id))
        .copied()
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The receiving side's rule: an RPC from a node outside this node's membership that knows
/// only an earlier generation is answered with an eviction (otherwise a plain refusal).
pub fn should_evict(my_generation: u64, sender_generation: u64, sender_is_member: bool) -> bool {
    !sender_is_member && my_generation > sender_generation
}

/// Whether an authenticated sender outside this node's membership is ahead of this node rather
/// than behind it: it belongs to a later recovery generation, or to this one with an id above
/// every id this node has seen (`known`: the largest member id, or allocated id, it has applied). Such a
/// sender is the current cluster and this node is the one behind: a joiner replaying the log
/// from its start, whose early membership cannot name members that joined later. Refusing the
/// sender would keep this node from ever applying the membership that names it.
pub fn sender_is_ahead(my_generation: u64, sender_generation: u64, from: u64, known: u64) -> bool {
    sender_generation > my_generation || (sender_generation == my_generation && from > known)
}

/// The obeying side's rule, once the MAC has been checked (`mac_ok`).
pub fn judge(ev: &Eviction, me: &Standing, mac_ok: bool) -> Result<(), Ignored> {
    if !mac_ok {
        return Err(Ignored::BadMac);
    }
    if me.cluster_id.is_empty() {
        return Err(Ignored::NoClusterId);
    }
    if ev.cluster_id != me.cluster_id {
        return Err(Ignored::OtherCluster {
            theirs: ev.cluster_id.clone(),
            ours: me.cluster_id.clone(),
        });
    }
    if ev.recovery.generation <= me.generation {
        return Err(Ignored::NotLater { theirs: ev.recovery.generation, ours: me.generation });
    }
    if ev.members.contains(&me.node_id) {
        return Err(Ignored::StillMember(me.node_id));
    }
    if !ev.retired.contains(&me.node_id) {
        return Err(Ignored::NotRetired(me.node_id));
    }
    Ok(())
}

/// The reason an evicted node reports, with the way out.
pub fn reason(ev: &Eviction, me: NodeId) -> String {
    let r = &ev.recovery;
    format!(
        "evicted: cluster {} was recovered at generation {} on {} ({} on node {} {}, voters then \
         {:?}); node {me} belongs to an earlier generation and may not take part again. Stop it, \
         `xp wipe --yes`, and rejoin it with `xp join --token-file` from the recovered cluster's leader",
        ev.cluster_id,
        r.generation,
        r.at,
        match r.kind {
            xp_store::RecoveryKind::RecoverSingleNode => "recover-single-node",
            xp_store::RecoveryKind::Restore => "restore",
        },
        r.node_id,
        r.node_name,
        r.voters,
    )
}

/// Why this node is fenced.
#[derive(Clone, Debug)]
pub enum Fenced {
    /// The cluster knows this id by another data dir.
    WipedDisk(String),
    /// A recovered cluster evicted this node.
    Evicted(Box<FenceRecord>),
}

/// The fence state of a running node, shared by the API, the Raft network and the node.
pub struct Fence {
    key: Vec<u8>,
    dir: Option<RaftDir>,
    state: Mutex<Option<Fenced>>,
    evicted: watch::Sender<bool>,
}

impl Fence {
    /// Loads the persisted fence of `dir` (if any). `key` authenticates evictions; it is
    /// derived from the cluster secret (see [`eviction_key`]).
    pub fn open(dir: RaftDir, key: Vec<u8>) -> Result<Fence, StoreError> {
        let record = dir.read_fence()?;
        let evicted = record.is_some();
        Ok(Fence {
            key,
            dir: Some(dir),
            state: Mutex::new(record.map(|r| Fenced::Evicted(Box::new(r)))),
            evicted: watch::Sender::new(evicted),
        })
    }

    /// A fence that is never set: for one-shot commands that talk to nobody.
    pub fn inert() -> Fence {
        Fence {
            key: Vec::new(),
            dir: None,
            state: Mutex::new(None),
            evicted: watch::Sender::new(false),
        }
    }

    /// The reason, when fenced.
    pub fn reason(&self) -> Option<String> {
        self.state.lock().unwrap().as_ref().map(|f| match f {
            Fenced::WipedDisk(why) => why.clone(),
            Fenced::Evicted(r) => r.reason.clone(),
        })
    }

    pub fn is_fenced(&self) -> bool {
        self.state.lock().unwrap().is_some()
    }

    pub fn is_evicted(&self) -> bool {
        matches!(&*self.state.lock().unwrap(), Some(Fenced::Evicted(_)))
    }

    /// The eviction this node obeyed, to relay to old peers.
    pub fn eviction(&self) -> Option<Eviction> {
        match &*self.state.lock().unwrap() {
            Some(Fenced::Evicted(r)) => Some(r.eviction.clone()),
            _ => None,
        }
    }

    /// Turns true when this node is evicted (at once if it was at start).
    pub fn evicted(&self) -> watch::Receiver<bool> {
        self.evicted.subscribe()
    }

    /// Records that the cluster refused this disk (not persisted; an eviction is not replaced).
    pub fn wiped_disk(&self, why: String) {
        let mut state = self.state.lock().unwrap();
        if state.is_none() {
            tracing::error!("fenced: {why}");
            *state = Some(Fenced::WipedDisk(why));
        }
    }

    /// Signs an eviction for the nodes `lineage` retired (see [`retired`]).
    pub fn issue(
        &self,
        cluster_id: String,
        lineage: &[RecoveryGeneration],
        members: Vec<NodeId>,
        issued_by: NodeId,
    ) -> Option<Eviction> {
        let recovery = lineage.last()?.clone();
        let retired = retired(lineage, &members);
        let mut ev =
            Eviction { cluster_id, recovery, members, retired, issued_by, mac: String::new() };
        ev.mac = hex(&self.mac_of(&ev));
        Some(ev)
    }

    fn mac_of(&self, ev: &Eviction) -> Vec<u8> {
        let unsigned = Eviction { mac: String::new(), ..ev.clone() };
        let mut m = HmacSha256::new_from_slice(&self.key).expect("any key length");
        m.update(&serde_json::to_vec(&unsigned).expect("evictions serialize"));
        m.finalize().into_bytes().to_vec()
    }

    fn mac_ok(&self, ev: &Eviction) -> bool {
        let given = unhex(&ev.mac);
        !self.key.is_empty()
            && given.is_some_and(|g| crate::token::constant_time_eq(&g, &self.mac_of(ev)))
    }

    /// Obeys `ev` if [`judge`] allows it: persists the fence, then flips [`Fence::evicted`].
    /// `Ok(false)` when this node was already evicted. A fence that cannot be persisted is
    /// still applied (and says so in its reason).
    pub fn obey(&self, ev: &Eviction, me: &Standing) -> Result<bool, ObeyError> {
        judge(ev, me, self.mac_ok(ev))?;
        let mut state = self.state.lock().unwrap();
        if let Some(Fenced::Evicted(r)) = &mut *state {
            let (a, b) = (&r.eviction.recovery, &ev.recovery);
            let conflict = a.generation == b.generation && (a.node_id, &a.at) != (b.node_id, &b.at);
            if conflict && !r.reason.contains("CONFLICT") {
                // Two survivors were recovered from the same generation: two clusters under
                // one id. Nothing here can choose between them; say it loudly.
                let note = format!(
                    " CONFLICT: cluster {} was recovered twice at generation {}, on node {} ({}) \
                     and on node {} ({}): two clusters run under one id; keep one, wipe the other",
                    ev.cluster_id, a.generation, a.node_id, a.at, b.node_id, b.at
                );
                tracing::error!("{note}");
                r.reason.push_str(&note);
            }
            return Ok(false);
        }
        let record = FenceRecord {
            fenced_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            reason: reason(ev, me.node_id),
            eviction: ev.clone(),
        };
        // Durable before anything acts on it: a restart must not undo the fence. If it cannot
        // be written (a full or failed disk) the node still fences itself now: stopping is the
        // safe side, and on restart its probe asks the recovered cluster again.
        let mut record = record;
        if let Some(dir) = &self.dir {
            if let Err(e) = dir.write_fence(&record) {
                tracing::error!(error = %e, "could not persist the fence; fencing in memory only");
                record.reason.push_str(&format!(" (not persisted: {e})"));
            }
        }
        tracing::error!("fenced: {}", record.reason);
        *state = Some(Fenced::Evicted(Box::new(record)));
        drop(state);
        self.evicted.send_replace(true);
        Ok(true)
    }
}

/// Why an eviction was not obeyed.
#[derive(Debug, thiserror::Error)]
pub enum ObeyError {
    #[error("ignored an eviction: {0}")]
    Ignored(#[from] Ignored),
}

/// The key evictions are authenticated with.
pub fn eviction_key(secret: &xp_config::Secret) -> Vec<u8> {
    crate::token::derive_key(secret, "xp-eviction-v1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use xp_store::RecoveryKind;

    fn recovery(generation: u64) -> RecoveryGeneration {
        RecoveryGeneration {
            generation,
            kind: RecoveryKind::RecoverSingleNode,
            at: "2026-11-23T16:00:00Z".into(),
            node_id: 3,
            node_name: "node3".into(),
            replaced_voters: vec![1, 2, 3],
            replaced_learners: vec![],
            voters: vec![3],
        }
    }

    fn issue(f: &Fence, members: Vec<NodeId>) -> Eviction {
        f.issue("c1".into(), &[recovery(1)], members, 3).unwrap()
    }

    fn fence(key: &[u8]) -> Fence {
        Fence {
            key: key.to_vec(),
            dir: None,
            state: Mutex::new(None),
            evicted: watch::Sender::new(false),
        }
    }

    fn me(node_id: NodeId, cluster_id: &str, generation: u64) -> Standing {
        Standing { node_id, cluster_id: cluster_id.into(), generation }
    }

    #[test]
    fn should_evict_table() {
        // (my generation, sender's generation, sender is a member) -> evict?
        let cases = [
            (1, 0, false, true),  // a stale node of the old cluster
            (2, 1, false, true),  // two recoveries, one missed
            (1, 1, false, false), // same generation, just not a member (e.g. removed): refuse
            (0, 0, false, false), // never recovered: a plain refusal
            (1, 0, true, false),  // a member that has not applied the record yet
            (1, 2, false, false), // the sender knows a later generation than this node
        ];
        for (mine, theirs, member, want) in cases {
            assert_eq!(should_evict(mine, theirs, member), want, "{mine} {theirs} {member}");
        }
    }

    #[test]
    fn sender_is_ahead_table() {
        // (my generation, sender's generation, sender id, largest id I know) -> ahead?
        let cases = [
            (0, 0, 4, 3, true),  // joined after my log's first membership: I am behind
            (0, 1, 2, 3, true),  // the survivor of a recovery I have not applied yet
            (0, 0, 2, 3, false), // removed: a plain refusal
            (1, 0, 3, 5, false), // a stale node of the old cluster: evicted, never let in
            // An unknown id from an older generation: allocated by a lost zone after the
            // survivor's last entry; still behind.
            (1, 0, 6, 5, false),
            (1, 1, 5, 5, false),
        ];
        for (mine, theirs, from, known, want) in cases {
            assert_eq!(
                sender_is_ahead(mine, theirs, from, known),
                want,
                "{mine} {theirs} {from} {known}"
            );
        }
    }

    #[test]
    fn judge_table() {
        // Issued when node 4 had joined the recovered cluster; node 5 joined after that.
        let ev = issue(&fence(b"k"), vec![3, 4]);
        let cases: [(Standing, bool, Result<(), Ignored>); 8] = [
            (me(1, "c1", 0), true, Ok(())),
            (me(1, "c1", 0), false, Err(Ignored::BadMac)),
            (
                me(1, "c2", 0),
                true,
                Err(Ignored::OtherCluster { theirs: "c1".into(), ours: "c2".into() }),
            ),
            (me(1, "", 0), true, Err(Ignored::NoClusterId)),
            (me(1, "c1", 1), true, Err(Ignored::NotLater { theirs: 1, ours: 1 })),
            (me(4, "c1", 0), true, Err(Ignored::StillMember(4))),
            (me(2, "c1", 0), true, Ok(())),
            // A node that joined after the eviction was issued, restarted before it applied
            // the recovery (old membership, generation 0): a relayed eviction must not fence it.
            (me(5, "c1", 0), true, Err(Ignored::NotRetired(5))),
        ];
        for (standing, mac_ok, want) in cases {
            assert_eq!(judge(&ev, &standing, mac_ok), want, "{standing:?} mac_ok={mac_ok}");
        }
    }

    #[test]
    fn only_an_eviction_signed_with_the_cluster_key_is_obeyed() {
        let ours = fence(b"cluster-key");
        let good = issue(&ours, vec![3]);
        // Forged with another key, altered after signing, or not hex at all.
        let forged = issue(&fence(b"other-key"), vec![3]);
        let mut altered = good.clone();
        altered.members.push(1);
        let mut garbage = good.clone();
        garbage.mac = "zz".into();
        for bad in [&forged, &altered, &garbage] {
            let err = ours.obey(bad, &me(1, "c1", 0)).unwrap_err();
            assert!(matches!(err, ObeyError::Ignored(Ignored::BadMac)), "{err}");
            assert!(!ours.is_fenced());
        }
        assert!(ours.obey(&good, &me(1, "c1", 0)).unwrap());
        assert!(ours.is_fenced() && *ours.evicted().borrow());
        assert!(ours.reason().unwrap().contains("xp wipe --yes"));
        // Obeying again changes nothing.
        assert!(!ours.obey(&good, &me(1, "c1", 0)).unwrap());
        // A fence that has no key obeys nothing.
        assert!(matches!(
            Fence::inert().obey(&good, &me(1, "c1", 0)),
            Err(ObeyError::Ignored(Ignored::BadMac))
        ));
    }

    #[test]
    fn an_eviction_is_persisted_before_it_is_reported_and_survives_a_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RaftDir::new(tmp.path().join("raft"));
        dir.create().unwrap();
        let f = Fence::open(dir.clone(), b"k".to_vec()).unwrap();
        assert!(!f.is_fenced());
        let ev = issue(&f, vec![3]);
        f.obey(&ev, &me(1, "c1", 0)).unwrap();
        let again = Fence::open(dir, b"k".to_vec()).unwrap();
        assert_eq!(again.eviction(), Some(ev));
        assert!(*again.evicted().borrow());
    }

    #[test]
    fn a_fence_that_cannot_be_written_still_fences_and_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        // A raft dir that does not exist: the write fails.
        let f = Fence::open(RaftDir::new(tmp.path().join("gone")), b"k".to_vec()).unwrap();
        let ev = issue(&f, vec![3]);
        assert!(f.obey(&ev, &me(1, "c1", 0)).unwrap());
        assert!(f.is_evicted());
        assert!(f.reason().unwrap().contains("not persisted"));
    }

    #[test]
    fn retired_table() {
        let mut second = recovery(2);
        second.replaced_voters = vec![3, 4, 5];
        second.replaced_learners = vec![6];
        second.node_id = 4;
        // (lineage, current members) -> retired
        let cases: [(Vec<RecoveryGeneration>, Vec<NodeId>, Vec<NodeId>); 4] = [
            (vec![recovery(1)], vec![3], vec![1, 2]),
            (vec![recovery(1)], vec![3, 4, 5], vec![1, 2]),
            // Two recoveries: those of the first stay retired; the second retires 3, 5 and 6.
            (vec![recovery(1), second.clone()], vec![4, 7], vec![1, 2, 3, 5, 6]),
            (vec![], vec![1], vec![]),
        ];
        for (lineage, members, want) in cases {
            assert_eq!(retired(&lineage, &members), want, "{members:?}");
        }
    }

    #[test]
    fn two_recoveries_of_one_generation_are_reported_as_a_conflict() {
        let f = fence(b"k");
        let on3 = issue(&f, vec![3]);
        let mut other = recovery(1);
        other.node_id = 2;
        other.at = "2026-11-23T16:00:05Z".into();
        let on2 = f.issue("c1".into(), &[other], vec![2], 2).unwrap();
        assert!(f.obey(&on3, &me(1, "c1", 0)).unwrap());
        assert!(!f.obey(&on2, &me(1, "c1", 0)).unwrap());
        let why = f.reason().unwrap();
        assert!(why.contains("CONFLICT") && why.contains("recovered twice"), "{why}");
    }
}
