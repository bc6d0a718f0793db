//! The wire types of the `xp` node's HTTP API: what each route takes and answers, and the names
//! of the headers nodes send each other. The node serves them, `xp-ops` and the tests read them;
//! nobody re-encodes a field by hand.
//!
//! Field meanings are documented here once; `docs/security.md` has the auth matrix and
//! `docs/architecture.md` the route table.

use serde::{Deserialize, Serialize};

/// A node id (the same as `xp_store::NodeId`).
pub type NodeId = u64;

/// Header names of node-to-node calls (Raft RPCs). Every one of them is covered by the
/// request's signature (see `SIGNATURE_HEADER`).
pub mod headers {
    /// The sending node's id, checked against the receiver's membership.
    pub const FROM: &str = "x-xp-from-node";
    /// The node the sender means to reach (a wiped disk that rejoined under a new id keeps
    /// its old URL; without this it would take the old id's replication stream).
    pub const TO: &str = "x-xp-to-node";
    /// The sender's cluster id, when it knows one.
    pub const CLUSTER: &str = "x-xp-cluster-id";
    /// The sender's data-dir incarnation.
    pub const FROM_INCARNATION: &str = "x-xp-from-incarnation";
    /// The incarnation the cluster recorded for the target's id, when it has one.
    pub const TO_INCARNATION: &str = "x-xp-to-incarnation";
    /// Answer header: the answering node's incarnation.
    pub const INCARNATION: &str = "x-xp-incarnation";
    /// The sender's recovery generation.
    pub const GENERATION: &str = "x-xp-generation";
    /// Hex HMAC-SHA256 over the request (method, path, timestamp, nonce, body digest and the
    /// headers above), keyed from the cluster secret.
    pub const SIGNATURE: &str = "x-xp-signature";
    /// The sender's clock, unix milliseconds.
    pub const TIMESTAMP: &str = "x-xp-timestamp";
    /// 16 random bytes in hex, never used twice.
    pub const NONCE: &str = "x-xp-nonce";
    /// Hex SHA-256 of the body.
    pub const BODY_DIGEST: &str = "x-xp-body-sha256";
}

/// Every error answer: `{"error": "...", "leader_api_base_url": "..."}` (the leader's URL with
/// a `421`, else empty). A `410` to a Raft RPC also carries an `eviction`, which only nodes read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default)]
    pub leader_api_base_url: String,
}

/// `GET /api/cluster/info`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub cluster_id: String,
    pub node_id: NodeId,
    pub node_name: String,
    pub api_base_url: String,
    /// `leader`, `follower`, `candidate`, `learner`, `shutdown` or `fenced`.
    pub role: String,
    pub term: u64,
    pub leader_id: Option<NodeId>,
    pub leader_api_base_url: String,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub members: Vec<MemberInfo>,
    pub last_log_index: u64,
    pub last_applied_index: u64,
    /// `unconfigured`, `healthy` (sees a majority of voters), `degraded`, `fenced` (the
    /// cluster refuses this node: its disk was wiped or replaced, or a recovered cluster
    /// evicted it) or `failed` (Raft stopped on an error; the process is exiting).
    pub health: String,
    /// Why this node is fenced; empty when it is not.
    pub fenced: String,
    /// Why Raft stopped on an error (`health = "failed"`); empty when it did not.
    #[serde(default)]
    pub failure: String,
    /// The cluster's latest recovery generation this node knows (0: never recovered).
    pub recovery_generation: u64,
    /// When that recovery ran (RFC 3339); empty when never.
    pub recovered_at: String,
    pub version: String,
}

/// One member in [`ClusterInfo::members`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberInfo {
    pub node_id: NodeId,
    pub name: String,
    pub api_base_url: String,
    pub voter: bool,
    /// The data-dir incarnation the cluster recorded for this id; empty until recorded.
    pub incarnation: String,
}

/// `GET /api/kv/{key}` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KvValue {
    pub key: String,
    pub value: String,
}

/// `PUT /api/kv/{key}` body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KvPut {
    pub value: String,
}

/// `PUT /api/kv/{key}` answer: the log index the write was committed at.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KvWritten {
    pub key: String,
    pub log_index: u64,
}

/// `POST /api/admin/cluster/join-tokens` body.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Lifetime, 1 s to 24 h (default 900).
    pub ttl_seconds: Option<u64>,
    /// The member the joiner replaces (a node whose disk is lost): removed from the voters
    /// when the joiner becomes one. Must be a current member other than the leader.
    pub replaces: Option<NodeId>,
}

/// `POST /api/admin/cluster/join-tokens` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenResponse {
    pub join_token: String,
    pub node_id: NodeId,
    pub expires_at: u64,
    /// The member the joiner will replace, when the token names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<NodeId>,
}

/// `POST /api/cluster/join` body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token: String,
    pub node_name: String,
    pub api_base_url: String,
    /// The random joiner id `xp join` drew (in `join.json`): the same joiner asking again is a
    /// retry, anyone else with the token a replay.
    #[serde(default)]
    pub joiner: String,
}

/// `POST /api/cluster/join` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinResponse {
    pub node_id: NodeId,
    pub cluster_id: String,
    pub leader_id: NodeId,
    pub leader_api_base_url: String,
    pub voters: Vec<NodeId>,
    /// The member the join replaced (the token's `replaces`), if it still was one.
    pub replaced: Vec<NodeId>,
}

/// `POST /api/admin/cluster/leader-transfer` body.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The node to hand leadership to; default: the most up-to-date voter.
    pub target: Option<NodeId>,
}

/// `POST /api/admin/cluster/leader-transfer` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TransferResponse {
    pub from: NodeId,
    pub to: NodeId,
    pub leader_api_base_url: String,
    pub took_ms: u64,
}

/// `POST /api/admin/cluster/remove-node` (and the internal `/raft/remove-member`) body.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveRequest {
    pub node_id: NodeId,
    /// The number of voters after the removal, as the operator expects it: a guard against
    /// removing the wrong node or shrinking below what was intended.
    pub confirm_voters_after: usize,
}

/// `POST /api/admin/cluster/remove-node` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoveResponse {
    pub removed: NodeId,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// Set when the leader removed itself and handed leadership over first.
    pub new_leader: Option<NodeId>,
}

/// `POST /api/admin/cluster/add-node` body.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddRequest {
    /// The id the new node was started with (`XP_NODE_ID`); never used before in this cluster.
    pub node_id: NodeId,
    pub name: String,
    pub api_base_url: String,
    /// How long the leader waits for the node to catch up before it gives up and removes it
    /// again (default 60, at most 3600).
    #[serde(default)]
    pub catch_up_timeout_secs: Option<u64>,
}

/// `POST /api/admin/cluster/add-node` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AddResponse {
    pub added: NodeId,
    pub voters: Vec<NodeId>,
    pub took_ms: u64,
}

/// `POST /raft/hold-elections` body (internal).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    pub ms: u64,
}

/// One member in [`ClusterStatus::nodes`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: NodeId,
    pub name: String,
    pub api_base_url: String,
    pub voter: bool,
    pub reachable: bool,
    pub role: Option<String>,
    pub term: Option<u64>,
    pub last_log_index: Option<u64>,
    pub last_applied_index: Option<u64>,
    /// Entries the node's applied index is behind the leader's last log index.
    pub lag: Option<u64>,
    pub health: Option<String>,
    pub error: Option<String>,
}

/// `GET /api/cluster/status`: every member as one node sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub cluster_id: String,
    pub answered_by: NodeId,
    pub leader_id: Option<NodeId>,
    pub health: String,
    /// True when any member did not answer.
    pub partial: bool,
    pub unreachable_nodes: Vec<String>,
    /// Problems in plain words, e.g. "node3 unreachable", "node2 lagging by 4120 entries".
    pub errors: Vec<String>,
    pub nodes: Vec<NodeStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_body_without_a_leader_reads() {
        let e: ErrorBody = serde_json::from_str(r#"{"error":"x"}"#).unwrap();
        assert_eq!(e, ErrorBody { error: "x".into(), leader_api_base_url: String::new() });
        // Unknown request fields are refused, so a typo is a 4xx and not a silent default.
        assert!(serde_json::from_str::<TokenRequest>(r#"{"ttl":5}"#).is_err());
        assert!(serde_json::from_str::<RemoveRequest>(r#"{"node_id":1}"#).is_err());
    }
}
