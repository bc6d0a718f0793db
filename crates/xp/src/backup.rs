//! `GET /api/admin/cluster/backup`: the leader's latest snapshot (taken on request) with its
//! metadata and a SHA-256 of the state. `xp-ops xp restore` installs one on a brand-new node.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use xp_recovery::restore::{checksum, Backup, FORMAT};
use xp_store::RaftDir;

use crate::auth::check_admin;
use crate::error::{require_leader, ApiError};
use crate::App;

/// `GET /api/admin/cluster/backup`: snapshot now, answer with the snapshot.
pub async fn backup(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Backup>, ApiError> {
    check_admin(&app, &headers)?;
    require_leader(&app, "backups")?;
    let applied = app.raft.metrics().borrow().last_applied;
    app.raft.trigger().snapshot().await.map_err(ApiError::internal)?;
    let mut metrics = app.raft.metrics();
    let done =
        tokio::time::timeout(Duration::from_secs(10), metrics.wait_for(|m| m.snapshot >= applied))
            .await
            .is_ok_and(|r| r.is_ok());
    if !done {
        return Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "the snapshot did not complete within 10s",
        ));
    }
    let snap = RaftDir::new(app.config.raft_dir())
        .read_snapshot()
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal("no snapshot on disk after taking one"))?;
    let b = Backup {
        format: FORMAT.into(),
        cluster_id: snap.state.data.cluster_id.clone().unwrap_or_default(),
        created_at: humantime_now(),
        taken_on: app.id,
        last_log_id: snap.meta.last_log_id,
        membership: snap.meta.last_membership.clone(),
        checksum: checksum(&snap.state),
        state: snap.state,
    };
    tracing::info!(last_log_id = ?b.last_log_id, keys = b.state.data.kv.len(), "backup taken");
    Ok(Json(b))
}

fn humantime_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
