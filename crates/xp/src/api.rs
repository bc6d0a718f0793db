//! The HTTP API: cluster info, KV, join tokens, join, and the internal Raft RPC endpoints.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request as HttpRequest, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::ServerState;
use serde::{Deserialize, Serialize};
use xp_store::{Eviction, NodeId, Request, Response as SmResponse, TypeConfig};

use crate::fence::{should_evict, GENERATION_HEADER};
use crate::join::{JoinRequest, JoinResponse};
use crate::network::{
    SnapshotChunk, CLUSTER_HEADER, FROM_HEADER, FROM_INCARNATION_HEADER, INCARNATION_HEADER,
    RAFT_BODY_LIMIT, TO_HEADER, TO_INCARNATION_HEADER,
};
use crate::rpc_auth::RpcAuth;
use crate::token::{self, JoinClaims};
use crate::App;

/// Longest join token lifetime the API hands out.
pub const MAX_TOKEN_TTL_SECS: u64 = 24 * 3600;

/// Body limit of every route but the KV and the bulk Raft ones: their requests are a few
/// fields (admin, join, votes, probes).
pub const SMALL_BODY_LIMIT: usize = 64 * 1024;

/// Body limit of `PUT /api/kv/{key}`: a value at the cap, JSON-escaped at worst (`\u0041` is 6
/// bytes for one), plus the envelope. The cap itself is checked on the decoded value.
pub fn kv_body_limit(max_value_bytes: u64) -> usize {
    6 * max_value_bytes as usize + 4096
}

pub fn router(app: Arc<App>) -> Router {
    let cap = app.config.max_value_bytes;
    let kv_limit = kv_body_limit(cap);
    let kv_why = format!("a KV value may hold at most {cap} bytes (XP_MAX_VALUE_BYTES)");
    // With TLS, these need a client certificate signed by the cluster CA (mTLS) on top of
    // their own credential: the admin token, or the request signature.
    let mtls = axum::middleware::from_fn_with_state(app.clone(), require_client_cert);
    let admin = Router::new()
        .route("/api/admin/cluster/join-tokens", post(create_join_token))
        .route("/api/admin/cluster/leader-transfer", post(crate::admin::transfer_leader))
        .route("/api/admin/cluster/remove-node", post(crate::admin::remove_node))
        .route("/api/admin/cluster/add-node", post(crate::admin::add_node))
        .route("/api/admin/cluster/backup", get(crate::backup::backup))
        // Raft routes read their body themselves, after the signature was checked.
        .route("/raft/append", limited(post(raft_append), RAFT_BODY_LIMIT, String::new()))
        .route("/raft/vote", post(raft_vote))
        .route("/raft/snapshot", limited(post(raft_snapshot), RAFT_BODY_LIMIT, String::new()))
        .route("/raft/hold-elections", post(raft_hold))
        .route("/raft/campaign", post(raft_campaign))
        .route("/raft/probe", post(raft_probe))
        .route("/raft/remove-member", post(raft_remove_member))
        .route_layer(mtls);
    Router::new()
        .route("/api/cluster/info", get(cluster_info))
        .route("/api/cluster/status", get(crate::status::cluster_status))
        .route("/api/kv/{key}", limited(get(kv_get).put(kv_put), kv_limit, kv_why))
        .route("/api/cluster/join", post(join))
        .merge(admin)
        // Every other route: small bodies only (a route's own limit, set above, wins).
        .layer(DefaultBodyLimit::max(SMALL_BODY_LIMIT))
        .layer(axum::middleware::map_response(|res: Response| async move {
            explain_too_large(res, SMALL_BODY_LIMIT, "")
        }))
        .with_state(app)
}

/// Refuses (401) a request to a Raft or admin route that came without a client certificate
/// signed by the cluster CA, when this node serves TLS.
async fn require_client_cert(
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

/// `route` with its own body limit, its `413` explained by `why`.
fn limited(route: MethodRouter<Arc<App>>, limit: usize, why: String) -> MethodRouter<Arc<App>> {
    let why: Arc<str> = why.into();
    route.layer(DefaultBodyLimit::max(limit)).layer(axum::middleware::map_response(
        move |res: Response| {
            let why = why.clone();
            async move { explain_too_large(res, limit, &why) }
        },
    ))
}

/// Turns axum's plain-text `413` (a body over the route's limit) into an [`ApiError`] naming
/// the limit; answers that already are JSON (ours) pass unchanged.
fn explain_too_large(res: Response, limit: usize, why: &str) -> Response {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if res.status() != StatusCode::PAYLOAD_TOO_LARGE || is_json {
        return res;
    }
    let why = if why.is_empty() { String::new() } else { format!(": {why}") };
    let message = format!("request body too large: this route accepts at most {limit} bytes{why}");
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message).into_response()
}

/// An error answer: `{"error": "...", "leader_api_base_url": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub leader_api_base_url: Option<String>,
    pub location: Option<String>,
    /// Sent with `410 Gone` to a node of an earlier generation (see [`crate::fence`]).
    pub eviction: Option<Box<Eviction>>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            leader_api_base_url: None,
            location: None,
            eviction: None,
        }
    }
    /// `410 Gone` carrying an eviction.
    pub fn evicted(message: impl Into<String>, eviction: Eviction) -> ApiError {
        ApiError { eviction: Some(Box::new(eviction)), ..ApiError::new(StatusCode::GONE, message) }
    }
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
    /// Maps openraft errors: "not the leader" becomes 421 naming the leader.
    pub fn from_raft<E>(e: RaftError<NodeId, E>) -> ApiError
    where
        E: std::error::Error + TryAsForward,
    {
        if let Some(fwd) = e.api_error().and_then(|e| e.forward()) {
            return not_leader(fwd.0, fwd.1, "this request");
        }
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

/// Errors that may say "ask the leader instead".
pub trait TryAsForward {
    fn forward(&self) -> Option<(Option<NodeId>, Option<String>)>;
}
impl TryAsForward for ClientWriteError<NodeId, xp_store::NodeMeta> {
    fn forward(&self) -> Option<(Option<NodeId>, Option<String>)> {
        match self {
            ClientWriteError::ForwardToLeader(f) => {
                Some((f.leader_id, f.leader_node.as_ref().map(|n| n.api_base_url.clone())))
            }
            _ => None,
        }
    }
}
impl TryAsForward for openraft::error::CheckIsLeaderError<NodeId, xp_store::NodeMeta> {
    fn forward(&self) -> Option<(Option<NodeId>, Option<String>)> {
        match self {
            openraft::error::CheckIsLeaderError::ForwardToLeader(f) => {
                Some((f.leader_id, f.leader_node.as_ref().map(|n| n.api_base_url.clone())))
            }
            _ => None,
        }
    }
}

fn not_leader(leader: Option<NodeId>, url: Option<String>, what: &str) -> ApiError {
    let message = match (&leader, &url) {
        (Some(id), Some(u)) => {
            format!("this node is not the leader; send {what} to the leader, node {id} at {u}")
        }
        _ => format!("this node is not the leader and knows no leader; retry {what} later"),
    };
    let status = if url.is_some() {
        StatusCode::MISDIRECTED_REQUEST
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    ApiError { leader_api_base_url: url, ..ApiError::new(status, message) }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "error": self.message,
            "leader_api_base_url": self.leader_api_base_url.clone().unwrap_or_default(),
        });
        if let Some(ev) = &self.eviction {
            body["eviction"] = serde_json::to_value(ev).unwrap_or_default();
        }
        let mut res = (self.status, Json(body)).into_response();
        if let Some(loc) = self.location.and_then(|l| l.parse().ok()) {
            res.headers_mut().insert(header::LOCATION, loc);
        }
        res
    }
}

/// Fails with 503 and the reason when a recovered cluster evicted this node: it serves no
/// client request. (A wiped-disk fence does not block them: such a node cannot lead, and a
/// forged incarnation header must not turn a leader into an outage.)
pub fn require_not_fenced(app: &App) -> Result<(), ApiError> {
    match app.fence.is_evicted().then(|| app.fence.reason()).flatten() {
        Some(why) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why)),
        None => Ok(()),
    }
}

/// Fails with 421 (naming the leader) unless this node is the leader.
pub fn require_leader(app: &App, what: &str) -> Result<(), ApiError> {
    require_not_fenced(app)?;
    let m = app.raft.metrics().borrow().clone();
    if m.state == ServerState::Leader {
        return Ok(());
    }
    let url = m.current_leader.and_then(|l| {
        m.membership_config.membership().get_node(&l).map(|n| n.api_base_url.clone())
    });
    Err(not_leader(m.current_leader, url, what))
}

/// `GET /api/cluster/info`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub cluster_id: String,
    pub node_id: NodeId,
    pub node_name: String,
    pub api_base_url: String,
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

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberInfo {
    pub node_id: NodeId,
    pub name: String,
    pub api_base_url: String,
    pub voter: bool,
    /// The data-dir incarnation the cluster recorded for this id; empty until recorded.
    pub incarnation: String,
}

pub fn cluster_info_of(app: &App) -> ClusterInfo {
    let m = app.raft.metrics().borrow().clone();
    let (incarnations, latest) = {
        let sm = app.sm.read().unwrap();
        (sm.data.incarnations.clone(), sm.data.latest_recovery().cloned())
    };
    let membership = m.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    // An evicted node's Raft is stopped (or stopping): it follows and leads nobody.
    let evicted = app.fence.is_evicted();
    let role = match m.state {
        _ if evicted => "fenced",
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    };
    let leader = m.current_leader.filter(|_| !evicted);
    ClusterInfo {
        cluster_id: app.sm.read().unwrap().data.cluster_id.clone().unwrap_or_default(),
        node_id: app.id,
        node_name: app.config.node_name.clone(),
        api_base_url: app.config.api_base_url.clone(),
        role: role.into(),
        term: m.current_term,
        leader_id: leader,
        leader_api_base_url: leader
            .and_then(|l| membership.get_node(&l).map(|n| n.api_base_url.clone()))
            .unwrap_or_default(),
        members: membership
            .nodes()
            .map(|(id, n)| MemberInfo {
                node_id: *id,
                name: n.name.clone(),
                api_base_url: n.api_base_url.clone(),
                voter: voters.contains(id),
                incarnation: incarnations.get(id).cloned().unwrap_or_default(),
            })
            .collect(),
        learners: membership.learner_ids().collect(),
        voters,
        last_log_index: m.last_log_index.unwrap_or(0),
        last_applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
        health: crate::node::health(app).into(),
        fenced: app.fence.reason().unwrap_or_default(),
        failure: crate::node::raft_failure(app).unwrap_or_default(),
        recovery_generation: latest.as_ref().map(|r| r.generation).unwrap_or(0),
        recovered_at: latest.map(|r| r.at).unwrap_or_default(),
        version: crate::VERSION.into(),
    }
}

async fn cluster_info(State(app): State<Arc<App>>) -> Json<ClusterInfo> {
    Json(cluster_info_of(&app))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct KvValue {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Deserialize)]
struct KvPut {
    value: String,
}

/// A 307 to the same path on the leader, for KV requests that reached a follower.
fn redirect(e: ApiError, path: &str) -> ApiError {
    match e.leader_api_base_url.clone() {
        Some(url) if e.status == StatusCode::MISDIRECTED_REQUEST => ApiError {
            status: StatusCode::TEMPORARY_REDIRECT,
            location: Some(format!("{url}{path}")),
            ..e
        },
        _ => e,
    }
}

/// The path of `key`'s KV route, the key percent-encoded as one path segment: a redirect must
/// name the same key (`foo%3Fbar` decoded is `foo?bar`, which the leader would read as `foo`).
pub fn kv_path(key: &str) -> String {
    let mut out = String::from("/api/kv/");
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > 256 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "key must be 1 to 256 bytes long"));
    }
    Ok(())
}

/// The length of `s` as a JSON string, without the quotes.
fn json_string_len(s: &str) -> usize {
    s.chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        })
        .sum()
}

async fn kv_put(
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
    body: Result<Json<KvPut>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_key(&key)?;
    let cap = app.config.max_value_bytes;
    let Json(body) = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            e.status(),
            format!(
                "request body too large: this route accepts at most {} bytes: a KV value may \
                 hold at most {cap} bytes (XP_MAX_VALUE_BYTES)",
                kv_body_limit(cap)
            ),
        ),
        _ => ApiError::new(e.status(), e.body_text()),
    })?;
    // The cap bounds what the value costs in every Raft message and file, i.e. as JSON: a
    // control character is 1 byte here but 6 there (1 MiB of them used to make 6 MiB entries
    // that slowed replication enough to cost elections).
    let encoded = json_string_len(&body.value);
    if encoded as u64 > cap {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the value is {} bytes, {encoded} as JSON; a KV value may take at most {cap} \
                 bytes as JSON (XP_MAX_VALUE_BYTES)",
                body.value.len()
            ),
        ));
    }
    require_not_fenced(&app)?;
    if app.transferring.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "leadership transfer in progress; retry in a moment",
        ));
    }
    let res = app
        .raft
        .client_write(Request::Set { key: key.clone(), value: body.value })
        .await
        .map_err(|e| redirect(ApiError::from_raft(e), &kv_path(&key)))?;
    Ok(Json(serde_json::json!({ "key": key, "log_index": res.log_id.index })))
}

async fn kv_get(
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
) -> Result<Json<KvValue>, ApiError> {
    check_key(&key)?;
    require_not_fenced(&app)?;
    app.raft
        .ensure_linearizable()
        .await
        .map_err(|e| redirect(ApiError::from_raft(e), &kv_path(&key)))?;
    let value = app.sm.read().unwrap().data.kv.get(&key).cloned();
    match value {
        Some(value) => Ok(Json(KvValue { key, value })),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, format!("no key {key:?}"))),
    }
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

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    ttl_seconds: Option<u64>,
    /// The member the joiner replaces (a node whose disk is lost): removed from the voters
    /// when the joiner becomes one.
    replaces: Option<NodeId>,
}

/// `POST /api/admin/cluster/join-tokens` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenResponse {
    pub join_token: String,
    pub node_id: NodeId,
    pub expires_at: u64,
    /// The member the joiner will replace, when the token names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<NodeId>,
}

async fn create_join_token(
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
        let members: Vec<NodeId> = m.membership().nodes().map(|(id, _)| *id).collect();
        if !members.contains(&r) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("replaces: node {r} is not a member; members: {members:?}"),
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

async fn join(
    State(app): State<Arc<App>>,
    Json(req): Json<JoinRequest>,
) -> Result<Json<JoinResponse>, ApiError> {
    require_not_fenced(&app)?;
    crate::join::admit(&app, req).await.map(Json)
}

/// Refuses senders of an authenticated Raft RPC that may not take part, in this order: the
/// sender id; (an evicted node relays its eviction); the target id; the cluster id (only a
/// node's own cluster may fence it, so a restored cluster is never fenced by the old one); the
/// membership (a node of an earlier generation is evicted, any other outsider refused); then
/// the disk incarnations. The signature was checked before (see [`read_rpc`]).
fn check_rpc(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
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
    let (ours, lineage) = {
        let sm = app.sm.read().unwrap();
        (sm.data.cluster_id.clone().unwrap_or_default(), sm.data.lineage.clone())
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
    if members.nodes().next().is_some() && members.get_node(&from).is_none() {
        let sender_generation: u64 = header(GENERATION_HEADER).parse().unwrap_or(0);
        let generation = lineage.last().map(|r| r.generation).unwrap_or(0);
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
fn check_incarnations(app: &App, from: NodeId, headers: &HeaderMap) -> Result<(), ApiError> {
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
/// without the cluster key makes a node buffer up to [`RAFT_BODY_LIMIT`] bytes), then who sent
/// it ([`check_rpc`]), then the body against its signed digest, and parses it.
async fn read_rpc<T: serde::de::DeserializeOwned>(
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
            StatusCode::PAYLOAD_TOO_LARGE => format!(
                "Raft RPC body over this node's limit of {RAFT_BODY_LIMIT} bytes: {}",
                e.body_text()
            ),
            _ => e.body_text(),
        };
        ApiError::new(e.status(), message)
    })?;
    RpcAuth::check_body(&digest, &bytes).map_err(rpc_refusal)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("malformed Raft RPC: {e}"))
    })
}

fn rpc_refusal(e: crate::rpc_auth::AuthError) -> ApiError {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    tracing::debug!("refused a Raft RPC: {e}");
    ApiError::new(status, e.to_string())
}

async fn raft_append(
    State(app): State<Arc<App>>,
    req: HttpRequest,
) -> Result<impl IntoResponse, ApiError> {
    let req: AppendEntriesRequest<TypeConfig> = read_rpc(&app, req).await?;
    Ok(([(INCARNATION_HEADER, app.incarnation.clone())], Json(app.raft.append_entries(req).await)))
}

async fn raft_vote(
    State(app): State<Arc<App>>,
    req: HttpRequest,
) -> Result<impl IntoResponse, ApiError> {
    let req: VoteRequest<NodeId> = read_rpc(&app, req).await?;
    Ok(([(INCARNATION_HEADER, app.incarnation.clone())], Json(app.raft.vote(req).await)))
}

async fn raft_snapshot(
    State(app): State<Arc<App>>,
    req: HttpRequest,
) -> Result<impl IntoResponse, ApiError> {
    let chunk: SnapshotChunk = read_rpc(&app, req).await?;
    let req = InstallSnapshotRequest::<TypeConfig>::from(chunk);
    Ok((
        [(INCARNATION_HEADER, app.incarnation.clone())],
        Json(app.raft.install_snapshot(req).await),
    ))
}

async fn raft_hold(
    State(app): State<Arc<App>>,
    req: HttpRequest,
) -> Result<impl IntoResponse, ApiError> {
    let req: crate::admin::HoldRequest = read_rpc(&app, req).await?;
    crate::admin::hold_elections(&app, req.ms).await;
    Ok(Json(serde_json::json!({})))
}

async fn raft_campaign(
    State(app): State<Arc<App>>,
    req: HttpRequest,
) -> Result<impl IntoResponse, ApiError> {
    let _: serde::de::IgnoredAny = read_rpc(&app, req).await?;
    app.raft.runtime_config().elect(true);
    app.raft.trigger().elect().await.map_err(ApiError::internal)?;
    Ok(Json(serde_json::json!({})))
}

async fn raft_remove_member(
    State(app): State<Arc<App>>,
    req: HttpRequest,
) -> Result<impl IntoResponse, ApiError> {
    let req: crate::admin::RemoveRequest = read_rpc(&app, req).await?;
    crate::admin::remove_member(&app, req).await.map(Json)
}

/// `POST /raft/probe`: a node starting on existing state asks whether it still belongs. The
/// answer is [`check_rpc`]'s: `200` with this node's cluster id and generation, or a refusal
/// (`410` with an eviction for a node of an earlier generation).
async fn raft_probe(
    State(app): State<Arc<App>>,
    req: HttpRequest,
) -> Result<impl IntoResponse, ApiError> {
    let _: serde::de::IgnoredAny = read_rpc(&app, req).await?;
    let sm = app.sm.read().unwrap();
    Ok(Json(serde_json::json!({
        "cluster_id": sm.data.cluster_id.clone().unwrap_or_default(),
        "generation": sm.data.generation(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_string_len_matches_serde_json() {
        for s in ["", "abc", "a\"b\\c", "\n\r\t\u{8}\u{c}", "\u{1}\u{1f}", "é€𝄞", "\u{7f}"] {
            let want = serde_json::to_string(s).unwrap().len() - 2;
            assert_eq!(json_string_len(s), want, "{s:?}");
        }
    }
}
