//! The internal Raft RPC routes (`/raft/*`): each reads its request through
//! [`crate::auth::read_rpc`] and hands it to openraft or to the admin helpers.

use std::sync::Arc;

use axum::extract::{Request as HttpRequest, State};
use axum::response::IntoResponse;
use axum::Json;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use xp_store::{NodeId, TypeConfig};

use crate::auth::read_rpc;
use crate::error::ApiError;
use crate::network::{SnapshotChunk, INCARNATION_HEADER};
use crate::App;

pub async fn raft_append(
    State(app): State<Arc<App>>,
    req: HttpRequest,
) -> Result<impl IntoResponse, ApiError> {
    let req: AppendEntriesRequest<TypeConfig> = read_rpc(&app, req).await?;
    Ok(([(INCARNATION_HEADER, app.incarnation.clone())], Json(app.raft.append_entries(req).await)))
}

pub async fn raft_vote(
    State(app): State<Arc<App>>,
    req: HttpRequest,
) -> Result<impl IntoResponse, ApiError> {
    let req: VoteRequest<NodeId> = read_rpc(&app, req).await?;
    Ok(([(INCARNATION_HEADER, app.incarnation.clone())], Json(app.raft.vote(req).await)))
}

pub async fn raft_snapshot(
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

pub async fn raft_hold(
    State(app): State<Arc<App>>,
    req: HttpRequest,
) -> Result<impl IntoResponse, ApiError> {
    let req: crate::admin::HoldRequest = read_rpc(&app, req).await?;
    crate::admin::hold_elections(&app, req.ms).await;
    Ok(Json(serde_json::json!({})))
}

pub async fn raft_campaign(
    State(app): State<Arc<App>>,
    req: HttpRequest,
) -> Result<impl IntoResponse, ApiError> {
    let _: serde::de::IgnoredAny = read_rpc(&app, req).await?;
    app.raft.runtime_config().elect(true);
    app.raft.trigger().elect().await.map_err(ApiError::internal)?;
    Ok(Json(serde_json::json!({})))
}

pub async fn raft_remove_member(
    State(app): State<Arc<App>>,
    req: HttpRequest,
) -> Result<impl IntoResponse, ApiError> {
    let req: crate::admin::RemoveRequest = read_rpc(&app, req).await?;
    crate::admin::remove_member(&app, req).await.map(Json)
}

/// `POST /raft/probe`: a node starting on existing state asks whether it still belongs. The
/// answer is [`check_rpc`]'s: `200` with this node's cluster id and generation, or a refusal
/// (`410` with an eviction for a node of an earlier generation).
pub async fn raft_probe(
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
