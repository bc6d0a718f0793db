//! The Raft type configuration of xp and its replicated state machine data.

use std::collections::BTreeMap;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// xp's openraft types: u64 node ids, [`NodeMeta`] per node, JSON-serialisable requests.
    pub TypeConfig:
        D = Request,
        R = Response,
        Node = NodeMeta,
);

pub type NodeId = u64;

/// The largest node id an operator may choose: ids stay exact in every JSON client (2^53 - 1).
pub const MAX_NODE_ID: NodeId = (1 << 53) - 1;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type EntryPayload = openraft::EntryPayload<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, NodeMeta>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeMeta>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeMeta>;
pub type Raft = openraft::Raft<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;

/// What the cluster knows about a node: carried in every membership config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    pub name: String,
    pub api_base_url: String,
}

impl std::fmt::Display for NodeMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.api_base_url)
    }
}

/// A command replicated through Raft.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Sets the cluster id; the first one wins, later ones are no-ops.
    SetClusterId { cluster_id: String },
    /// Sets a key.
    Set { key: String, value: String },
    /// Reserves a node id that no node has had or will have.
    AllocateNodeId,
    /// Uses a join token for `node_id`: the first use records who used it (`joiner`, a random
    /// id the joining node keeps in its `join.json`, and the name and URL it asked to join
    /// with); a later use is the same join continuing only if all three match and the token is
    /// not spent yet. (Entries written before `joiner` existed read as `""`, which matches no
    /// one.)
    ConsumeJoinToken {
        nonce: String,
        node_id: NodeId,
        #[serde(default)]
        joiner: String,
        #[serde(default)]
        node: NodeMeta,
    },
    /// Marks a used join token spent, once its node is a voter: from then on every use is
    /// refused, the joiner's own included (before it, a use is refused while the node is a
    /// voter).
    SpendJoinToken { nonce: String },
    /// Claims an operator-chosen id for a node added by hand; refused if ever handed out.
    ReserveNodeId { node_id: NodeId },
    /// Records the data-dir incarnation a node answered with; the first record stands.
    RecordIncarnation { node_id: NodeId, incarnation: String },
    /// Records a recovery of the cluster (appended to the log by `xp-ops xp
    /// recover-single-node`, so every member that joins afterwards learns it). Idempotent: a
    /// generation at or below the latest one recorded is ignored.
    RecordRecovery { recovery: RecoveryGeneration },
}

/// How a generation of a cluster began.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryKind {
    /// `xp-ops xp recover-single-node`: a survivor of a lost quorum became the only voter.
    RecoverSingleNode,
    /// `xp-ops xp restore`: a backup was restored onto a new node (a new cluster id).
    Restore,
}

/// One recovery in a cluster's lineage. Every node that took part in the cluster before it
/// and is not among `voters` belongs to an earlier generation: if it comes back with its
/// disk it must not take part again (see `Eviction`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryGeneration {
    /// 1 for the first recovery; only grows.
    pub generation: u64,
    pub kind: RecoveryKind,
    /// RFC 3339, when the recovery tool ran.
    pub at: String,
    /// The node the cluster was recovered on.
    pub node_id: NodeId,
    pub node_name: String,
    /// The voters the recovery replaced (the old configuration).
    pub replaced_voters: Vec<NodeId>,
    /// The learners of the old configuration.
    #[serde(default)]
    pub replaced_learners: Vec<NodeId>,
    /// The voters right after the recovery.
    pub voters: Vec<NodeId>,
}

/// A recovered cluster's statement that a node of an earlier generation may no longer take
/// part: sent, authenticated by a MAC keyed from the cluster secret, in answer to a Raft RPC
/// from such a node, and relayed by the fenced node to its old peers. A node obeys it only if
/// the MAC checks, the cluster id is its own, the generation is later than its own and its id
/// is among `retired` (and not among `members`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eviction {
    pub cluster_id: String,
    /// The latest recovery of the cluster.
    pub recovery: RecoveryGeneration,
    /// Every member (voters and learners) of the recovered cluster when this was issued.
    pub members: Vec<NodeId>,
    /// The ids this eviction speaks for: every member of a configuration that a recovery in
    /// the cluster's lineage replaced, less the current members. A node that joined later is
    /// never among them, so a relayed eviction cannot fence it.
    pub retired: Vec<NodeId>,
    /// The node that issued it.
    pub issued_by: NodeId,
    /// Hex HMAC-SHA256 over the JSON of every other field, keyed from the cluster secret.
    pub mac: String,
}

/// `fence.json`: this data dir was evicted by a recovered cluster. Only `xp wipe` removes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceRecord {
    /// RFC 3339, when this node fenced itself.
    pub fenced_at: String,
    /// The reason, in plain words, with the way out.
    pub reason: String,
    pub eviction: Eviction,
}

/// The state machine's answer to a [`Request`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    #[default]
    Ok,
    /// The cluster id now in force.
    ClusterId { cluster_id: String },
    /// A freshly allocated node id.
    NodeId { node_id: NodeId },
    /// The outcome of using a join token: `first_use`, or the same join continuing
    /// (`same_joiner`, not `spent`); anything else is a replay to refuse. `node_id` is the
    /// id the token was first used for.
    JoinToken {
        first_use: bool,
        node_id: NodeId,
        #[serde(default)]
        same_joiner: bool,
        #[serde(default)]
        spent: bool,
    },
    /// The outcome of a reservation: refused when ids up to `next_free - 1` were handed out
    /// (or the id is above [`MAX_NODE_ID`]).
    Reserved { ok: bool, next_free: NodeId },
    /// A committed request that cannot take effect. Applying never fails or panics: the entry
    /// is committed on every node, so a panic would crash-loop the whole cluster.
    Refused { why: String },
}

/// Who used a join token, and whether its join is over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinUse {
    pub node_id: NodeId,
    pub joiner: String,
    pub node: NodeMeta,
    pub spent: bool,
}

/// The replicated data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmData {
    /// Set by the first entry the bootstrapping leader writes.
    pub cluster_id: Option<String>,
    /// The key-value store.
    pub kv: BTreeMap<String, String>,
    /// The next node id [`Request::AllocateNodeId`] hands out (never decreases).
    pub next_node_id: NodeId,
    /// Join-token nonces used by earlier versions, with the node id each was used for: all
    /// of them count as spent.
    pub used_join_tokens: BTreeMap<String, NodeId>,
    /// Join-token nonces used since, with who used them and whether they are spent.
    #[serde(default)]
    pub join_uses: BTreeMap<String, JoinUse>,
    /// The data-dir incarnation each node id first answered with. A node id that later answers
    /// with another one lost its disk: it is fenced until it rejoins under a new id.
    #[serde(default)]
    pub incarnations: BTreeMap<NodeId, String>,
    /// Every recovery of this cluster, oldest first (generations 1, 2, ...).
    #[serde(default)]
    pub lineage: Vec<RecoveryGeneration>,
}

impl SmData {
    /// Applies one request; pure, so the node and tests agree on its effect.
    pub fn apply(&mut self, req: &Request, membership: &Membership) -> Response {
        match req {
            Request::SetClusterId { cluster_id } => {
                let id = self.cluster_id.get_or_insert_with(|| cluster_id.clone());
                Response::ClusterId { cluster_id: id.clone() }
            }
            Request::Set { key, value } => {
                self.kv.insert(key.clone(), value.clone());
                Response::Ok
            }
            Request::AllocateNodeId => {
                self.bump_past(membership);
                let node_id = self.next_node_id;
                match node_id.checked_add(1) {
                    Some(next) => {
                        self.next_node_id = next;
                        Response::NodeId { node_id }
                    }
                    None => Response::Refused { why: "no node id left to hand out".into() },
                }
            }
            Request::ReserveNodeId { node_id } => {
                self.bump_past(membership);
                if *node_id < self.next_node_id || *node_id > MAX_NODE_ID {
                    return Response::Reserved { ok: false, next_free: self.next_node_id };
                }
                self.next_node_id = node_id + 1;
                Response::Reserved { ok: true, next_free: self.next_node_id }
            }
            Request::RecordIncarnation { node_id, incarnation } => {
                self.incarnations.entry(*node_id).or_insert_with(|| incarnation.clone());
                Response::Ok
            }
            Request::RecordRecovery { recovery } => {
                self.record_recovery(recovery);
                Response::Ok
            }
            Request::ConsumeJoinToken { nonce, node_id, joiner, node } => {
                if let Some(used_by) = self.used_join_tokens.get(nonce) {
                    return Response::JoinToken {
                        first_use: false,
                        node_id: *used_by,
                        same_joiner: false,
                        spent: true,
                    };
                }
                match self.join_uses.get(nonce) {
                    Some(u) => Response::JoinToken {
                        first_use: false,
                        node_id: u.node_id,
                        same_joiner: !joiner.is_empty()
                            && u.joiner == *joiner
                            && u.node == *node
                            && u.node_id == *node_id,
                        spent: u.spent,
                    },
                    None => {
                        let used = JoinUse {
                            node_id: *node_id,
                            joiner: joiner.clone(),
                            node: node.clone(),
                            spent: false,
                        };
                        self.join_uses.insert(nonce.clone(), used);
                        Response::JoinToken {
                            first_use: true,
                            node_id: *node_id,
                            same_joiner: true,
                            spent: false,
                        }
                    }
                }
            }
            Request::SpendJoinToken { nonce } => {
                if let Some(u) = self.join_uses.get_mut(nonce) {
                    u.spent = true;
                }
                Response::Ok
            }
        }
    }

    /// The latest recovery generation (0: never recovered).
    pub fn generation(&self) -> u64 {
        self.lineage.last().map(|r| r.generation).unwrap_or(0)
    }

    /// The latest recovery, if any.
    pub fn latest_recovery(&self) -> Option<&RecoveryGeneration> {
        self.lineage.last()
    }

    /// Adds a recovery to the lineage unless one as late is already there (so the recovery
    /// tool's direct write and the replicated entry can both apply).
    pub fn record_recovery(&mut self, recovery: &RecoveryGeneration) {
        if recovery.generation > self.generation() {
            self.lineage.push(recovery.clone());
        }
    }

    /// Keeps `next_node_id` above every id a membership has named.
    pub fn bump_past(&mut self, membership: &Membership) {
        if let Some(max) = membership.nodes().map(|(id, _)| *id).max() {
            self.next_node_id = self.next_node_id.max(max.saturating_add(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn membership(ids: &[NodeId]) -> Membership {
        let nodes = ids.iter().map(|id| (*id, NodeMeta::default())).collect::<BTreeMap<_, _>>();
        Membership::new(vec![ids.iter().copied().collect::<BTreeSet<_>>()], nodes)
    }

    fn consume(nonce: &str, node_id: NodeId, joiner: &str, url: &str) -> Request {
        let node = NodeMeta { name: "n".into(), api_base_url: url.into() };
        Request::ConsumeJoinToken { nonce: nonce.into(), node_id, joiner: joiner.into(), node }
    }

    /// `apply` on a fresh state with membership {1, 2, 3}: each request and the answer.
    #[test]
    fn apply_table() {
        let set = |k: &str| Request::Set { key: k.into(), value: "v".into() };
        let cases: Vec<(Vec<Request>, Response)> = vec![
            (vec![set("a")], Response::Ok),
            (vec![Request::AllocateNodeId], Response::NodeId { node_id: 4 }),
            (
                vec![Request::AllocateNodeId, Request::AllocateNodeId],
                Response::NodeId { node_id: 5 },
            ),
            (
                vec![Request::ReserveNodeId { node_id: 9 }],
                Response::Reserved { ok: true, next_free: 10 },
            ),
            (
                vec![Request::ReserveNodeId { node_id: 2 }],
                Response::Reserved { ok: false, next_free: 4 },
            ),
            // The largest id: refused, not an overflow panic (it crash-looped every node,
            // since the committed entry is applied again on each start).
            (
                vec![Request::ReserveNodeId { node_id: u64::MAX }],
                Response::Reserved { ok: false, next_free: 4 },
            ),
            (
                vec![Request::ReserveNodeId { node_id: MAX_NODE_ID }],
                Response::Reserved { ok: true, next_free: MAX_NODE_ID + 1 },
            ),
            (
                vec![Request::ReserveNodeId { node_id: MAX_NODE_ID }, Request::AllocateNodeId],
                Response::NodeId { node_id: MAX_NODE_ID + 1 },
            ),
            (
                vec![consume("n", 4, "j1", "a"), consume("n", 4, "j2", "a")],
                Response::JoinToken {
                    first_use: false,
                    node_id: 4,
                    same_joiner: false,
                    spent: false,
                },
            ),
            (
                vec![consume("n", 4, "j1", "a"), consume("n", 4, "j1", "a")],
                Response::JoinToken {
                    first_use: false,
                    node_id: 4,
                    same_joiner: true,
                    spent: false,
                },
            ),
            (
                // The same joiner asking with another URL is not the same join.
                vec![consume("n", 4, "j1", "a"), consume("n", 4, "j1", "b")],
                Response::JoinToken {
                    first_use: false,
                    node_id: 4,
                    same_joiner: false,
                    spent: false,
                },
            ),
            (
                vec![
                    consume("n", 4, "j1", "a"),
                    Request::SpendJoinToken { nonce: "n".into() },
                    consume("n", 4, "j1", "a"),
                ],
                Response::JoinToken {
                    first_use: false,
                    node_id: 4,
                    same_joiner: true,
                    spent: true,
                },
            ),
            (
                // An entry from before joiners were recorded matches nobody.
                vec![consume("n", 4, "", "a"), consume("n", 4, "", "a")],
                Response::JoinToken {
                    first_use: false,
                    node_id: 4,
                    same_joiner: false,
                    spent: false,
                },
            ),
            (
                vec![
                    Request::SetClusterId { cluster_id: "a".into() },
                    Request::SetClusterId { cluster_id: "b".into() },
                ],
                Response::ClusterId { cluster_id: "a".into() },
            ),
        ];
        for (reqs, want) in cases {
            let mut data = SmData::default();
            let mut last = Response::Ok;
            for r in &reqs {
                last = data.apply(r, &membership(&[1, 2, 3]));
            }
            assert_eq!(last, want, "{reqs:?}");
        }
    }

    #[test]
    fn ids_near_the_top_never_overflow() {
        let mut data = SmData { next_node_id: u64::MAX, ..Default::default() };
        assert_eq!(
            data.apply(&Request::AllocateNodeId, &membership(&[1])),
            Response::Refused { why: "no node id left to hand out".into() }
        );
        data.bump_past(&membership(&[u64::MAX]));
        assert_eq!(data.next_node_id, u64::MAX);
    }

    #[test]
    fn a_recovery_is_recorded_once_per_generation() {
        let mut data = SmData::default();
        let r = |generation| RecoveryGeneration {
            generation,
            kind: RecoveryKind::RecoverSingleNode,
            at: String::new(),
            node_id: 3,
            node_name: "node3".into(),
            replaced_voters: vec![1, 2, 3],
            replaced_learners: vec![],
            voters: vec![3],
        };
        for g in [1, 1, 2, 1] {
            data.apply(&Request::RecordRecovery { recovery: r(g) }, &membership(&[3]));
        }
        assert_eq!(data.lineage.iter().map(|r| r.generation).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(data.generation(), 2);
    }
}
