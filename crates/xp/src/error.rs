//! The error answer every handler returns, and the checks that answer with one before any
//! work is done (fenced, not the leader).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;
use xp_store::{Eviction, NodeId};

use crate::App;

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
