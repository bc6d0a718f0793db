//! Cluster operations on the leader: leadership transfer and node removal.
//!
//! openraft 0.9 has no leadership-transfer call, so transfer is done the way the seed design
//! describes: the leader stops taking writes, waits until the target has every entry, holds
//! elections on the other voters, stops its heartbeats until their leader lease (the maximum
//! election timeout) has passed, and then asks the target to campaign. The target wins because
//! it is as up to date as anyone and nobody else may campaign.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use openraft::ChangeMembers;
use xp_store::NodeId;

use crate::auth::check_admin;
use crate::error::{require_leader, ApiError};
use crate::network::signed_post;
use crate::token::{self, JoinClaims};
use crate::App;
pub use xp_api::{
    AddRequest, AddResponse, HoldRequest, RemoveRequest, RemoveResponse, TransferRequest,
    TransferResponse,
};
use xp_api::{TokenRequest, TokenResponse};
use xp_store::{Request, Response as SmResponse};

/// How long the other voters hold their elections during a transfer (released earlier when done).
const HOLD: Duration = Duration::from_secs(3);

/// Tells `url` (node `to`) to hold or release elections, or to campaign.
async fn peer_call(
    app: &App,
    to: NodeId,
    url: &str,
    path: &str,
    body: serde_json::Value,
) -> Result<(), String> {
    let headers = crate::network::leader_call_headers(app, to);
    let r = signed_post(&app.client, &app.rpc, url, path, &headers, &body)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(format!("{url} answered {}", r.status()))
    }
}

pub async fn transfer_leader(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Option<Json<TransferRequest>>,
) -> Result<Json<TransferResponse>, ApiError> {
    check_admin(&app, &headers)?;
    require_leader(&app, "leadership transfers")?;
    let req = body.map(|b| b.0).unwrap_or_default();
    transfer(&app, req.target).await.map(Json)
}

/// Moves leadership from this node to `target` (or the most up-to-date voter).
pub async fn transfer(app: &App, target: Option<NodeId>) -> Result<TransferResponse, ApiError> {
    let start = Instant::now();
    let m = app.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership().clone();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let matched = m.replication.clone().unwrap_or_default();
    let to = match target {
        Some(t) if t == app.id => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("node {t} is already the leader"),
            ))
        }
        Some(t) if !voters.contains(&t) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("node {t} is not a voter; voters: {voters:?}"),
            ))
        }
        Some(t) => t,
        None => voters
            .iter()
            .filter(|v| **v != app.id)
            .max_by_key(|v| {
                (matched.get(v).cloned().flatten().map(|l| l.index), std::cmp::Reverse(**v))
            })
            .copied()
            .ok_or_else(|| {
                ApiError::new(StatusCode::CONFLICT, "there is no other voter to hand leadership to")
            })?,
    };
    let url_of =
        |id: NodeId| membership.get_node(&id).map(|n| n.api_base_url.clone()).unwrap_or_default();

    // Stop taking writes, then wait for the target to hold every entry.
    app.transferring.store(true, Ordering::SeqCst);
    let result = async {
        let last = app.raft.metrics().borrow().last_log_index;
        let caught_up = async {
            loop {
                let m = app.raft.metrics().borrow().clone();
                let at = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&to).cloned().flatten())
                    .map(|l| l.index);
                if at >= last {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), caught_up).await.map_err(|_| {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("node {to} did not catch up within 5s; leadership stays here"),
            )
        })?;
        let others: Vec<NodeId> =
            voters.iter().copied().filter(|v| *v != to && *v != app.id).collect();
        for v in &others {
            let _ = peer_call(
                app,
                *v,
                &url_of(*v),
                "hold-elections",
                serde_json::json!({ "ms": HOLD.as_millis() as u64 }),
            )
            .await;
        }
        app.raft.runtime_config().elect(false);
        app.raft.runtime_config().heartbeat(false);
        // Every follower's lease on this leader must lapse before it grants the target a vote.
        tokio::time::sleep(Duration::from_millis(
            app.config.raft.election_max_ms + app.config.raft.heartbeat_ms,
        ))
        .await;
        peer_call(app, to, &url_of(to), "campaign", serde_json::json!({})).await.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("could not ask node {to} to campaign: {e}"),
            )
        })?;
        let mut metrics = app.raft.metrics();
        let won = tokio::time::timeout(
            Duration::from_secs(3),
            metrics.wait_for(|m| m.current_leader == Some(to)),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        for v in &others {
            let _ =
                peer_call(app, *v, &url_of(*v), "hold-elections", serde_json::json!({ "ms": 0 }))
                    .await;
        }
        match won {
            true => Ok(TransferResponse {
                from: app.id,
                to,
                leader_api_base_url: url_of(to),
                took_ms: start.elapsed().as_millis() as u64,
            }),
            false => Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "node {to} did not become leader within 3s; current leader: {:?}",
                    app.raft.metrics().borrow().current_leader
                ),
            )),
        }
    }
    .await;
    app.raft.runtime_config().heartbeat(true);
    app.raft.runtime_config().elect(true);
    app.transferring.store(false, Ordering::SeqCst);
    if let Ok(r) = &result {
        tracing::info!(from = r.from, to = r.to, took_ms = r.took_ms, "leadership transferred");
    }
    result
}

/// Internal: stop campaigning for `ms` (0: resume now).
pub async fn hold_elections(app: &App, ms: u64) {
    app.raft.runtime_config().elect(ms == 0);
    if ms > 0 {
        let raft = app.raft.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            raft.runtime_config().elect(true);
        });
    }
}

pub async fn remove_node(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(req): Json<RemoveRequest>,
) -> Result<Json<RemoveResponse>, ApiError> {
    check_admin(&app, &headers)?;
    require_leader(&app, "node removals")?;
    let after = check_removal(&app, &req)?;
    if req.node_id != app.id {
        return remove(&app, req.node_id).await.map(Json);
    }
    // The leader cannot remove itself cleanly: hand over first, then ask the new leader with
    // a signed node-to-node call (the admin's token is not passed on: the new leader's URL
    // comes from the membership, not from the operator).
    let id = req.node_id;
    let t = transfer(&app, None).await?;
    let body = RemoveRequest { node_id: id, confirm_voters_after: after };
    let headers = crate::network::leader_call_headers(&app, t.to);
    let r = signed_post(
        &app.client,
        &app.rpc,
        &t.leader_api_base_url,
        "remove-member",
        &headers,
        &body,
    )
    .timeout(Duration::from_secs(30))
    .send()
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "handed leadership to node {}, but asking it to remove node {id} failed: {e}",
                t.to
            ),
        )
    })?;
    let status = r.status();
    if !status.is_success() {
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        return Err(ApiError::new(
            status,
            format!("node {} refused the removal: {}", t.to, body["error"]),
        ));
    }
    let mut res: RemoveResponse = r.json().await.map_err(ApiError::internal)?;
    res.new_leader = Some(t.to);
    Ok(Json(res))
}

/// `POST /raft/remove-member`: a leader that was asked to remove itself handed leadership to
/// this node and asks it to finish.
pub async fn remove_member(app: &App, req: RemoveRequest) -> Result<RemoveResponse, ApiError> {
    require_leader(app, "node removals")?;
    check_removal(app, &req)?;
    if req.node_id == app.id {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("node {} is the leader again; ask the admin API to remove it", app.id),
        ));
    }
    remove(app, req.node_id).await
}

/// Checks that `req.node_id` is a member whose removal leaves `confirm_voters_after` voters
/// (at least one); returns that number.
fn check_removal(app: &App, req: &RemoveRequest) -> Result<usize, ApiError> {
    let membership = app.raft.metrics().borrow().membership_config.membership().clone();
    let id = req.node_id;
    if membership.get_node(&id).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("node {id} is not a member (already removed?)"),
        ));
    }
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let after = voters.len() - usize::from(voters.contains(&id));
    if after == 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("refusing to remove node {id}: it is the last voter"),
        ));
    }
    if req.confirm_voters_after != after {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "removing node {id} leaves {after} voter(s), not {}; nothing changed",
                req.confirm_voters_after
            ),
        ));
    }
    Ok(after)
}

/// Removes member `id` (not this leader) from the membership.
async fn remove(app: &App, id: NodeId) -> Result<RemoveResponse, ApiError> {
    let membership = app.raft.metrics().borrow().membership_config.membership().clone();
    let change = if membership.voter_ids().any(|v| v == id) {
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    app.raft.change_membership(change, false).await.map_err(ApiError::from_raft)?;
    let m = app.raft.metrics().borrow().membership_config.membership().clone();
    tracing::info!(removed = id, "node removed from the cluster");
    Ok(RemoveResponse {
        removed: id,
        voters: m.voter_ids().collect(),
        learners: m.learner_ids().collect(),
        new_leader: None,
    })
}

/// Refuses (400) an id, name or URL that a node could not have been started with.
fn check_new_node(req: &AddRequest, scheme: &str) -> Result<(), ApiError> {
    let bad = |m: String| Err(ApiError::new(StatusCode::BAD_REQUEST, m));
    if req.node_id == 0 || req.node_id > xp_store::MAX_NODE_ID {
        return bad(format!(
            "node_id must be between 1 and {}, got {}",
            xp_store::MAX_NODE_ID,
            req.node_id
        ));
    }
    if req.catch_up_timeout_secs.is_some_and(|t| !(1..=3600).contains(&t)) {
        return bad("catch_up_timeout_secs must be between 1 and 3600".into());
    }
    crate::join::check_member(&req.name, &req.api_base_url, scheme)
}

/// `POST /api/admin/cluster/add-node`: a running, empty node joins as learner, catches up, and
/// becomes a voter (the same path as the join flow, without a token).
pub async fn add_node(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(req): Json<AddRequest>,
) -> Result<Json<AddResponse>, ApiError> {
    check_admin(&app, &headers)?;
    check_new_node(&req, app.scheme())?;
    require_leader(&app, "node additions")?;
    let start = Instant::now();
    let membership = app.raft.metrics().borrow().membership_config.membership().clone();
    if membership.voter_ids().any(|v| v == req.node_id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("node {} is already a voter; nothing changed", req.node_id),
        ));
    }
    if membership.get_node(&req.node_id).is_none() {
        let r = app
            .raft
            .client_write(xp_store::Request::ReserveNodeId { node_id: req.node_id })
            .await
            .map_err(ApiError::from_raft)?;
        if let xp_store::Response::Reserved { ok: false, next_free } = r.data {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("node id {} was already handed out in this cluster; start the new node with XP_NODE_ID >= {next_free}", req.node_id),
            ));
        }
    }
    let meta =
        xp_store::NodeMeta { name: req.name.clone(), api_base_url: req.api_base_url.clone() };
    let timeout = std::time::Duration::from_secs(
        req.catch_up_timeout_secs.unwrap_or(crate::join::CATCH_UP_TIMEOUT.as_secs()),
    );
    let (voters, _) = crate::join::add_voter(&app, req.node_id, meta, timeout, None, None).await?;
    Ok(Json(AddResponse {
        added: req.node_id,
        voters: voters.into_iter().collect(),
        took_ms: start.elapsed().as_millis() as u64,
    }))
}

/// Longest join token lifetime the API hands out.
pub const MAX_TOKEN_TTL_SECS: u64 = 24 * 3600;

/// `POST /api/admin/cluster/join-tokens`: a single-use token for one joiner (see
/// [`crate::join`]), optionally naming the member it `replaces`.
pub async fn create_join_token(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Option<Json<TokenRequest>>,
) -> Result<Json<TokenResponse>, ApiError> {
    check_admin(&app, &headers)?;
    let (ttl, replaces) = body.map(|b| (b.0.ttl_seconds, b.0.replaces)).unwrap_or_default();
    let ttl = ttl.unwrap_or(900);
    if !(1..=MAX_TOKEN_TTL_SECS).contains(&ttl) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("ttl_seconds must be between 1 and {MAX_TOKEN_TTL_SECS}, got {ttl}"),
        ));
    }
    require_leader(&app, "join-token requests")?;
    if let Some(r) = replaces {
        let m = app.raft.metrics().borrow().membership_config.clone();
        let voters: Vec<NodeId> = m.membership().voter_ids().collect();
        if !voters.contains(&r) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "replaces: node {r} is not a voter (voters: {voters:?}); a learner or a \
                     former member needs no replacing (remove a learner with remove-node)"
                ),
            ));
        }
        if r == app.id {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "replaces: node {r} is the leader answering this request; move leadership \
                     first (xp-ops cluster transfer-leader)"
                ),
            ));
        }
    }
    let Some(cluster_id) = app.sm.read().unwrap().data.cluster_id.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the cluster has no id yet; retry in a moment",
        ));
    };
    let res = app.raft.client_write(Request::AllocateNodeId).await.map_err(ApiError::from_raft)?;
    let SmResponse::NodeId { node_id } = res.data else {
        return Err(ApiError::internal("state machine did not allocate a node id"));
    };
    let claims = JoinClaims {
        v: 1,
        cluster_id,
        leader_api_base_url: app.config.api_base_url.clone(),
        node_id,
        replaces,
        nonce: token::random_hex(16),
        expires_at: token::unix_now() + ttl,
    };
    let secret = app.config.require_cluster_secret().map_err(ApiError::internal)?;
    tracing::info!(node_id, ttl, ?replaces, "issued a join token");
    Ok(Json(TokenResponse {
        join_token: token::sign(&claims, secret),
        node_id,
        expires_at: claims.expires_at,
        replaces,
    }))
}
