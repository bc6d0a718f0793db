//! The join flow. A wiped or new node runs `xp join --token-file F`, which records the token
//! and a random joiner id in `${XP_DATA_DIR}/join.json` (owner-only); on its next start the
//! node serves its API and asks the leader to admit it. The leader checks the token and records
//! its use through Raft, bound to the joiner id, name and URL; adds the node as a learner;
//! waits for it to catch up; makes it a voter, removing the member the token `replaces` (if
//! the admin named one); then marks the token spent. A token is single-use: a second request with
//! it is refused, unless it is the same joiner asking again before its join is over (its first
//! answer was lost).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use xp_store::fsutil::{fsync_dir, read_json, write_json};
use xp_store::{NodeId, NodeMeta, Request, Response, StoreError};

use crate::error::{require_not_fenced, ApiError};
use crate::token::{self, JoinClaims};
use crate::App;
use axum::extract::State;
use axum::Json;
pub use xp_api::{JoinRequest, JoinResponse};

pub const JOIN_FILE: &str = "join.json";
/// How long the leader waits for a joiner to catch up before it gives up.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a joining node keeps asking before it gives up.
const JOIN_DEADLINE: Duration = Duration::from_secs(180);

/// A join recorded by `xp join`, completed by the next `xp run`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingJoin {
    pub token: String,
    pub node_id: NodeId,
    pub leader_api_base_url: String,
    /// A random id this node presents with the token, so that its own retries are told from
    /// a replay (files from earlier versions have none: such a join cannot be retried).
    #[serde(default)]
    pub joiner: String,
    /// The member the token replaces, as the token says.
    #[serde(default)]
    pub replaces: Option<NodeId>,
}

impl PendingJoin {
    pub fn read(data_dir: &Path) -> Result<Option<PendingJoin>, StoreError> {
        read_json(&data_dir.join(JOIN_FILE))
    }
    pub fn write(&self, data_dir: &Path) -> Result<(), StoreError> {
        write_json(&data_dir.join(JOIN_FILE), self)
    }
    pub fn remove(data_dir: &Path) -> Result<(), StoreError> {
        let path = data_dir.join(JOIN_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => fsync_dir(data_dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Io { path, source: e }),
        }
    }
}

/// Refuses (400) a node name or URL that a node of this cluster could not have been started
/// with: the URL must have the cluster's own scheme (`scheme`, `https://` when it serves TLS,
/// else `http://`): a TLS cluster would otherwise replicate in clear text to a member that
/// needs no certificate.
pub fn check_member(name: &str, url: &str, scheme: &str) -> Result<(), ApiError> {
    let bad = |m: String| Err(ApiError::new(StatusCode::BAD_REQUEST, m));
    let name_ok = name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if name.is_empty() || name.len() > 128 || !name_ok {
        return bad(format!(
            "node name must be 1 to 128 letters, digits, '-', '_' or '.', got {name:?}"
        ));
    }
    let host = url.strip_prefix(scheme);
    let host_ok = host.is_some_and(|h| {
        !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c))
    });
    if url.len() > 512 || !host_ok {
        return bad(format!(
            "api_base_url must be {scheme}HOST[:PORT] with no path (this cluster's scheme), got \
             {url:?}"
        ));
    }
    Ok(())
}

/// Leader side of the join.
pub async fn admit(app: &App, req: JoinRequest) -> Result<JoinResponse, ApiError> {
    let secret = app.config.require_cluster_secret().map_err(ApiError::internal)?;
    let claims: JoinClaims = token::verify(&req.token, secret, token::unix_now())
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()))?;
    check_member(&req.node_name, &req.api_base_url, app.scheme())?;
    crate::error::require_leader(app, "join requests")?;
    let cluster_id = app.sm.read().unwrap().data.cluster_id.clone().unwrap_or_default();
    if claims.cluster_id != cluster_id {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "join token is for cluster {:?}, this is cluster {cluster_id:?}",
                claims.cluster_id
            ),
        ));
    }
    let id = claims.node_id;
    let spent = || {
        ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "join token already used (it was issued for node {id}); a join token admits \
                 one node once: create a new token on the leader"
            ),
        )
    };
    let membership = app.raft.metrics().borrow().membership_config.membership().clone();
    if membership.voter_ids().any(|v| v == id) {
        return Err(spent());
    }
    let meta = NodeMeta { name: req.node_name.clone(), api_base_url: req.api_base_url.clone() };
    // A token this leader already knows as spent, or as used by another joiner, is refused
    // without a write: a replay must not grow the log. (The write below stays the authority
    // for a first use.)
    let known_refusal = {
        let sm = app.sm.read().unwrap();
        sm.data.used_join_tokens.contains_key(&claims.nonce)
            || sm.data.join_uses.get(&claims.nonce).is_some_and(|u| {
                u.spent || req.joiner.is_empty() || u.joiner != req.joiner || u.node != meta
            })
    };
    if known_refusal {
        tracing::warn!(node_id = id, url = %req.api_base_url, "refused a used join token");
        return Err(spent());
    }
    let used = app
        .raft
        .client_write(Request::ConsumeJoinToken {
            nonce: claims.nonce.clone(),
            node_id: id,
            joiner: req.joiner.clone(),
            node: meta.clone(),
        })
        .await
        .map_err(ApiError::from_raft)?;
    match used.data {
        Response::JoinToken { first_use: true, .. } => {}
        Response::JoinToken { same_joiner: true, spent: false, .. } => {
            tracing::info!(node_id = id, "the joiner asked again; its join continues");
        }
        _ => {
            tracing::warn!(node_id = id, url = %req.api_base_url, "refused a used join token");
            return Err(spent());
        }
    }
    let spend = Request::SpendJoinToken { nonce: claims.nonce.clone() };
    let (voters, replaced) =
        add_voter(app, id, meta, CATCH_UP_TIMEOUT, claims.replaces, Some(spend)).await?;
    Ok(JoinResponse {
        node_id: id,
        cluster_id,
        leader_id: app.id,
        leader_api_base_url: app.config.api_base_url.clone(),
        voters: voters.into_iter().collect(),
        replaced,
    })
}

/// A learner counts as caught up once its matched index reaches the leader's last log index
/// as it was when the wait began, and trails the current one by at most this many entries
/// (under a steady write load the last index keeps moving).
pub const CAUGHT_UP_LAG: u64 = 64;

/// Whether a learner that matched `matched` has caught up with a leader whose last log index
/// was `target` when the wait began and is `last` now.
pub fn caught_up(matched: Option<u64>, target: u64, last: u64) -> bool {
    matched.is_some_and(|m| m >= target && last.saturating_sub(m) <= CAUGHT_UP_LAG)
}

/// The safe way to add a node (join and `add-node` alike): add it as a learner, wait until it
/// has really caught up (bounded by `timeout`, progress logged), make it a voter in place of
/// `replaces` (if that still is a member), then write `after_promote` (a join spends its
/// token). On timeout the learner is removed again and the caller is told how far it got.
/// Returns the new voters and the replaced ids.
///
/// openraft's own blocking `add_learner` is not used: it counts a learner within
/// `replication_lag_threshold` (5 000 entries) as caught up, so a node that answered nothing
/// was promoted in milliseconds and a two-voter cluster then lost its quorum.
pub async fn add_voter(
    app: &App,
    id: NodeId,
    meta: NodeMeta,
    timeout: Duration,
    replaces: Option<NodeId>,
    after_promote: Option<Request>,
) -> Result<(BTreeSet<NodeId>, Vec<NodeId>), ApiError> {
    let url = meta.api_base_url.clone();
    tracing::info!(node_id = id, node = %meta, "adding node as a learner");
    let start = Instant::now();
    app.raft.add_learner(id, meta, false).await.map_err(ApiError::from_raft)?;
    let target = app.raft.metrics().borrow().last_log_index.unwrap_or(0);
    let mut metrics = app.raft.metrics();
    let mut last_report = Instant::now();
    loop {
        let (matched, last) = {
            let m = metrics.borrow();
            let matched =
                m.replication.as_ref().and_then(|r| r.get(&id).copied().flatten()).map(|l| l.index);
            (matched, m.last_log_index.unwrap_or(0))
        };
        if caught_up(matched, target, last) {
            break;
        }
        if start.elapsed() >= timeout {
            let removed = remove_learner_again(app, id).await;
            let why = format!(
                "node {id} did not catch up within {}s (it matched index {} of {last}); {removed}. \
                 Is it running and reachable at {url}?",
                timeout.as_secs(),
                matched.map(|m| m.to_string()).unwrap_or_else(|| "none".into())
            );
            tracing::warn!("{why}");
            return Err(ApiError::new(StatusCode::GATEWAY_TIMEOUT, why));
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            tracing::info!(node_id = id, ?matched, target, last, "learner catching up");
            last_report = Instant::now();
        }
        // Woken by any metrics change (each replication ack), at least every 200 ms.
        let _ = tokio::time::timeout(Duration::from_millis(200), metrics.changed()).await;
    }
    tracing::info!(
        node_id = id,
        caught_up_ms = start.elapsed().as_millis() as u64,
        "learner caught up"
    );
    let membership = app.raft.metrics().borrow().membership_config.membership().clone();
    let replaced: Vec<NodeId> =
        replaces.filter(|r| *r != id && membership.get_node(r).is_some()).into_iter().collect();
    // Incremental changes, each applied by Raft to the membership current when it is
    // proposed: a change computed as a whole voter set before a concurrent one (another join)
    // committed would undo it, silently dropping a voter that believes it is one. The new
    // voter comes first, so replacing a dead member never leaves fewer voters up than before.
    change_members(app, id, ChangeMembers::AddVoterIds([id].into())).await?;
    if !replaced.is_empty() {
        let gone: BTreeSet<NodeId> = replaced.iter().copied().collect();
        change_members(app, id, ChangeMembers::RemoveVoters(gone)).await?;
    }
    let voters: BTreeSet<NodeId> =
        app.raft.metrics().borrow().membership_config.membership().voter_ids().collect();
    tracing::info!(node_id = id, ?replaced, ?voters, "node is now a voter");
    // Then the token is spent. Should this write be lost (the leader stops right here), the
    // token is refused anyway while its node is a voter, and a retry of its own joiner finds
    // the join done. Spending before the promotion instead left the node a learner for good
    // when leadership moved in between (the joiner's retry was refused).
    if let Some(req) = after_promote {
        if let Err(e) = app.raft.client_write(req).await {
            tracing::warn!(node_id = id, "node promoted, but spending its join token failed: {e}");
        }
    }
    Ok((voters, replaced))
}

/// Proposes one incremental membership change for node `id`'s join; a transient refusal
/// (another membership change still committing, e.g. a concurrent join) is retried for a while
/// rather than failing a join that has done all its work.
async fn change_members(
    app: &App,
    id: NodeId,
    change: ChangeMembers<NodeId, NodeMeta>,
) -> Result<(), ApiError> {
    let deadline = Instant::now() + PROMOTE_RETRY;
    loop {
        match app.raft.change_membership(change.clone(), false).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline && in_progress(&e) => {
                tracing::info!(node_id = id, "another membership change is committing; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(ApiError::from_raft(e)),
        }
    }
}

/// How long a promotion refused because another membership change is committing is retried.
const PROMOTE_RETRY: Duration = Duration::from_secs(10);

fn in_progress(
    e: &openraft::error::RaftError<
        NodeId,
        openraft::error::ClientWriteError<NodeId, xp_store::NodeMeta>,
    >,
) -> bool {
    matches!(
        e.api_error(),
        Some(openraft::error::ClientWriteError::ChangeMembershipError(
            openraft::error::ChangeMembershipError::InProgress(_)
        ))
    )
}

/// Takes a learner that did not catch up out of the membership again: here while this node
/// leads, else through the leader it names (leadership may have moved during the wait), with a
/// signed node-to-node call. Says what happened, for the answer.
async fn remove_learner_again(app: &App, id: NodeId) -> String {
    let remove = openraft::ChangeMembers::RemoveNodes(BTreeSet::from([id]));
    let e = match app.raft.change_membership(remove, false).await {
        Ok(_) => return "it was removed again as a learner".into(),
        Err(e) => e,
    };
    let forward = e
        .forward_to_leader()
        .and_then(|f| Some((f.leader_id?, f.leader_node.as_ref()?.api_base_url.clone())));
    let Some((leader, url)) = forward else {
        tracing::error!(node_id = id, "could not remove the learner again: {e}");
        return format!(
            "it could not be removed again as a learner ({e}): remove it with `xp-ops cluster \
             remove-node {id}`"
        );
    };
    let voters = app.raft.metrics().borrow().membership_config.membership().voter_ids().count();
    let body = xp_api::RemoveRequest { node_id: id, confirm_voters_after: voters };
    let headers = crate::network::leader_call_headers(app, leader);
    let res =
        crate::network::signed_post(&app.client, &app.rpc, &url, "remove-member", &headers, &body)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
    match res {
        Ok(r) if r.status().is_success() => {
            format!(
                "leadership moved to node {leader} meanwhile, which removed it again as a learner"
            )
        }
        other => {
            let why = match other {
                Ok(r) => format!("{} answered {}", url, r.status()),
                Err(e) => e.to_string(),
            };
            tracing::error!(node_id = id, "could not have the learner removed again: {why}");
            format!(
                "leadership moved to node {leader}, which did not remove it ({why}): remove it \
                 with `xp-ops cluster remove-node {id}`"
            )
        }
    }
}

/// Joiner side: asks the leader (following redirects to a new leader) until admitted.
pub async fn complete_join(
    app: Arc<App>,
    pending: PendingJoin,
    fatal: watch::Sender<Option<String>>,
) {
    let req = JoinRequest {
        token: pending.token.clone(),
        node_name: app.config.node_name.clone(),
        api_base_url: app.config.api_base_url.clone(),
        joiner: pending.joiner.clone(),
    };
    let mut url = pending.leader_api_base_url.clone();
    let deadline = Instant::now() + JOIN_DEADLINE;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        tracing::info!(leader = %url, node_id = pending.node_id, "asking the leader to admit this node");
        let res = app
            .client
            .post(format!("{url}/api/cluster/join"))
            .timeout(CATCH_UP_TIMEOUT + Duration::from_secs(30))
            .json(&req)
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => {
                let body: Result<JoinResponse, _> = r.json().await;
                match body {
                    Ok(b) => {
                        tracing::info!(voters = ?b.voters, leader = %b.leader_api_base_url, "joined the cluster")
                    }
                    Err(e) => tracing::warn!("joined, but the answer did not parse: {e}"),
                }
                if let Err(e) = PendingJoin::remove(&app.config.data_dir) {
                    tracing::error!("joined, but could not remove {JOIN_FILE}: {e}");
                }
                return;
            }
            Ok(r) => {
                let status = r.status();
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                let msg = body["error"].as_str().unwrap_or("").to_owned();
                if status == StatusCode::MISDIRECTED_REQUEST {
                    if let Some(l) = body["leader_api_base_url"].as_str().filter(|s| !s.is_empty())
                    {
                        url = l.to_owned();
                    }
                    last = msg;
                } else if status == StatusCode::CONFLICT && standing(&app) != Standing::Outside {
                    // An earlier attempt got through but this node restarted before it heard
                    // back: as a voter the join is done. As a learner the token is refused
                    // (spent after an admin demoted this node, or this join.json's joiner id
                    // is not the one recorded): only an admin can finish.
                    match standing(&app) {
                        Standing::Voter => tracing::info!(
                            "the cluster already counts this node as a voter; join complete"
                        ),
                        _ => tracing::error!(
                            "the cluster refuses this join token but holds this node as a \
                             learner; an admin can finish with `xp-ops cluster add-node --id {} \
                             --name {} --url-of-node {}`",
                            app.id,
                            app.config.node_name,
                            app.config.api_base_url
                        ),
                    }
                    if let Err(e) = PendingJoin::remove(&app.config.data_dir) {
                        tracing::error!("could not remove {JOIN_FILE}: {e}");
                    }
                    return;
                } else if status.is_client_error() {
                    let why = format!("the cluster refused to admit this node ({status}): {msg}");
                    abandon(&app, &why);
                    let _ = fatal.send(Some(why));
                    return;
                } else {
                    last = format!("{status}: {msg}");
                }
            }
            Err(e) => last = e.to_string(),
        }
        tracing::warn!(leader = %url, "join not done yet: {last}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let why = format!("gave up joining after {}s; last answer: {last}", JOIN_DEADLINE.as_secs());
    let _ = fatal.send(Some(why));
}

#[derive(PartialEq, Eq)]
enum Standing {
    Voter,
    Learner,
    Outside,
}

fn standing(app: &App) -> Standing {
    let m = app.raft.metrics().borrow().membership_config.clone();
    let m = m.membership();
    if m.voter_ids().any(|v| v == app.id) {
        Standing::Voter
    } else if m.get_node(&app.id).is_some() {
        Standing::Learner
    } else {
        Standing::Outside
    }
}

/// After a refusal nothing was replicated: remove what this attempt created so that
/// `xp join` can be run again with a new token.
fn abandon(app: &App, why: &str) {
    tracing::error!("{why}");
    let replicated = app.sm.read().unwrap().last_applied.is_some()
        || app.raft.metrics().borrow().last_log_index.is_some();
    if replicated {
        tracing::error!("this node already holds replicated state; leaving its data dir as it is");
        return;
    }
    let raft_dir = app.config.raft_dir();
    if let Err(e) = std::fs::remove_dir_all(&raft_dir) {
        tracing::error!("could not remove {}: {e}", raft_dir.display());
    }
    if let Err(e) = PendingJoin::remove(&app.config.data_dir) {
        tracing::error!("{e}");
    }
}

/// `POST /api/cluster/join`: the leader's side, [`admit`].
pub async fn join(
    State(app): State<Arc<App>>,
    Json(req): Json<JoinRequest>,
) -> Result<Json<JoinResponse>, ApiError> {
    require_not_fenced(&app)?;
    crate::join::admit(&app, req).await.map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caught_up_table() {
        // (matched, target when the wait began, last now) -> caught up?
        let cases = [
            (None, 0, 0, false), // never answered (a node that only says 503)
            (Some(0), 10, 10, false),
            (Some(9), 10, 10, false),
            (Some(10), 10, 10, true),
            (Some(10), 10, 74, true), // writes go on; within the lag
            (Some(10), 10, 75, false),
            (Some(3), 0, 3, true),
        ];
        for (matched, target, last, want) in cases {
            assert_eq!(caught_up(matched, target, last), want, "{matched:?} {target} {last}");
        }
    }
}
