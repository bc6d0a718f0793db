//! Who may call what: the admin token, the client certificate (mTLS) on Raft and admin
//! routes, and the checks on a Raft RPC (signature, sender, target, cluster, generation,
//! incarnations) before its body is read.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request as HttpRequest, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use xp_store::NodeId;

use crate::error::ApiError;
use crate::fence::{should_evict, GENERATION_HEADER};
use crate::network::{
    CLUSTER_HEADER, FROM_HEADER, FROM_INCARNATION_HEADER, TO_HEADER, TO_INCARNATION_HEADER,
};
use crate::rpc_auth::RpcAuth;
use crate::token::constant_time_eq;
use crate::App;

/// Refuses (401) a request to a Raft or admin route that came without a client certificate
/// signed by the cluster CA, when this node serves TLS.
pub async fn require_client_cert(
    State(app): State<Arc<App>>,
    req: HttpRequest,
    next: axum::middleware::Next,
) -> Response {
    if app.tls.is_some() && req.extensions().get::<crate::tls::ClientCert>().is_none() {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this route needs a client certificate signed by the cluster CA (mTLS): xp-ops \
             presents XP_TLS_CERT/XP_TLS_KEY from its env file; other clients need a \
             certificate from the cluster's CA",
        )
        .into_response();
    }
    next.run(req).await
}

pub fn check_admin(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &app.config.admin_token else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the admin API is disabled: XP_ADMIN_TOKEN is not set in this node's env file",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "missing admin bearer token"))?;
    if !constant_time_eq(given.as_bytes(), expected.expose().as_bytes()) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "wrong admin token"));
    }
    Ok(())
}

/// Refuses senders of an authenticated Raft RPC that may not take part, in this order: the
/// sender id; (an evicted node relays its eviction); the target id; the cluster id (only a
/// node's own cluster may fence it, so a restored cluster is never fenced by the old one); the
/// membership (a node of an earlier generation is evicted, any other outsider refused); then
/// the disk incarnations. The signature was checked before (see [`read_rpc`]).
pub fn check_rpc(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let from: NodeId = header(FROM_HEADER)
        .parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, format!("missing {FROM_HEADER}")))?;
    // An evicted node relays its eviction to whoever of its old cluster still calls it.
    if let Some(ev) = app.fence.eviction() {
        return Err(ApiError::evicted(app.fence.reason().unwrap_or_default(), ev));
    }
    let to: Option<NodeId> = header(TO_HEADER).parse().ok();
    if to != Some(app.id) {
        return Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this is node {}, not node {}",
                app.id,
                to.map(|t| t.to_string()).unwrap_or_else(|| "?".into())
            ),
        ));
    }
    let theirs = header(CLUSTER_HEADER);
    let (ours, lineage, next_node_id) = {
        let sm = app.sm.read().unwrap();
        (
            sm.data.cluster_id.clone().unwrap_or_default(),
            sm.data.lineage.clone(),
            sm.data.next_node_id,
        )
    };
    if !theirs.is_empty() && !ours.is_empty() && theirs != ours {
        if app.other_clusters.lock().unwrap().insert((from, theirs.to_owned())) {
            tracing::warn!(
                from,
                cluster_id = theirs,
                "refusing Raft RPCs from a node of another cluster (logged once per node)"
            );
        }
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("node {from} belongs to cluster {theirs}, this is cluster {ours}"),
        ));
    }
    let m = app.raft.metrics().borrow().membership_config.clone();
    let members = m.membership();
    let sender_generation: u64 = header(GENERATION_HEADER).parse().unwrap_or(0);
    let generation = lineage.last().map(|r| r.generation).unwrap_or(0);
    let known = members.nodes().map(|(id, _)| *id).max().unwrap_or(0);
    let known = known.max(next_node_id.saturating_sub(1));
    if members.nodes().next().is_some()
        && members.get_node(&from).is_none()
        && !crate::fence::sender_is_ahead(generation, sender_generation, from, known)
    {
        let members: Vec<NodeId> = members.nodes().map(|(id, _)| *id).collect();
        let ev = should_evict(generation, sender_generation, false)
            .then(|| app.fence.issue(ours.clone(), &lineage, members, app.id))
            .flatten()
            .filter(|ev| ev.retired.contains(&from));
        if let Some(ev) = ev {
            let why = crate::fence::reason(&ev, from);
            tracing::warn!(
                from,
                generation = sender_generation,
                "evicting a node of an earlier generation"
            );
            return Err(ApiError::evicted(why, ev));
        }
        tracing::debug!(from, "refused a Raft RPC from a node outside the membership");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("node {from} is not a member of node {}'s cluster configuration", app.id),
        ));
    }
    check_incarnations(app, from, headers)
}

/// Fences a member whose disk was wiped or replaced: its id is still in the membership, but
/// with an empty log and vote it must not vote, count towards a quorum or lead again. It has
/// to rejoin with a join token, which gives it a new id.
pub fn check_incarnations(app: &App, from: NodeId, headers: &HeaderMap) -> Result<(), ApiError> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let meant_for = header(TO_INCARNATION_HEADER);
    if !meant_for.is_empty() && meant_for != app.incarnation {
        let why = format!(
            "the cluster knows node {} by another data dir (incarnation {meant_for}; this one is {}): \
             this disk was wiped or replaced, and a member that lost its Raft state may not rejoin \
             under its old id. Stop this node, `xp wipe --yes`, and rejoin with `xp join --token-file` \
             (it gets a new id and takes the old one's place)",
            app.id, app.incarnation
        );
        app.fence.wiped_disk(why.clone());
        return Err(ApiError::new(StatusCode::CONFLICT, why));
    }
    let theirs = header(FROM_INCARNATION_HEADER);
    let recorded = app.sm.read().unwrap().data.incarnations.get(&from).cloned();
    if let Some(recorded) = recorded {
        if !theirs.is_empty() && theirs != recorded {
            tracing::debug!(from, "refused a Raft RPC from a replaced data dir");
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "node {from} answers from a replaced data dir (incarnation {theirs}, recorded \
                     {recorded}): it lost its Raft state and must rejoin with a join token"
                ),
            ));
        }
    }
    Ok(())
}

/// Reads a Raft RPC: checks its signature, freshness and nonce before reading the body (nobody
/// without the cluster key makes a node buffer up to [`crate::network::RAFT_BODY_LIMIT`] bytes), then who sent
/// it ([`check_rpc`]), then the body against its signed digest, and parses it.
pub async fn read_rpc<T: serde::de::DeserializeOwned>(
    app: &App,
    req: HttpRequest,
) -> Result<T, ApiError> {
    let path = req.uri().path().to_owned();
    let digest = app
        .rpc
        .check(req.method().as_str(), &path, req.headers(), crate::rpc_auth::now_ms())
        .map_err(rpc_refusal)?;
    check_rpc(app, req.headers())?;
    let bytes = Bytes::from_request(req, &()).await.map_err(|e| {
        let message = match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                format!("Raft RPC body over this route's limit: {}", e.body_text())
            }
            _ => e.body_text(),
        };
        ApiError::new(e.status(), message)
    })?;
    RpcAuth::check_body(&digest, &bytes).map_err(rpc_refusal)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("malformed Raft RPC: {e}"))
    })
}

pub fn rpc_refusal(e: crate::rpc_auth::AuthError) -> ApiError {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    tracing::debug!("refused a Raft RPC: {e}");
    ApiError::new(status, e.to_string())
}
