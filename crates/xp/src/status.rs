//! `GET /api/cluster/status`: the answering node asks every member in parallel (short timeout)
//! and reports each one's role, term, indexes and lag, plus what did not answer.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::Json;

use crate::info::cluster_info_of;
use crate::App;
use xp_api::ClusterInfo;
pub use xp_api::{ClusterStatus, NodeStatus};

/// How long the answering node waits for each member.
pub const MEMBER_TIMEOUT: Duration = Duration::from_millis(500);
/// A member further behind the leader than this is reported in `errors`.
pub const LAG_WARN: u64 = 100;

pub async fn cluster_status(State(app): State<Arc<App>>) -> Json<ClusterStatus> {
    Json(status_of(&app).await)
}

pub async fn status_of(app: &App) -> ClusterStatus {
    let me = cluster_info_of(app);
    let mut set = tokio::task::JoinSet::new();
    for m in me.members.iter().filter(|m| m.node_id != app.id) {
        let (client, m) = (app.client.clone(), m.clone());
        set.spawn(async move {
            let res = client
                .get(format!("{}/api/cluster/info", m.api_base_url))
                .timeout(MEMBER_TIMEOUT)
                .send()
                .await;
            let info = match res {
                Ok(r) if r.status().is_success() => {
                    r.json::<ClusterInfo>().await.map_err(|e| e.to_string())
                }
                Ok(r) => Err(format!("answered {}", r.status())),
                Err(e) if e.is_timeout() => {
                    Err(format!("no answer within {}ms", MEMBER_TIMEOUT.as_millis()))
                }
                Err(e) => Err(e.to_string()),
            };
            (m, info)
        });
    }
    let mut answers: Vec<(xp_api::MemberInfo, Result<ClusterInfo, String>)> = Vec::new();
    if let Some(m) = me.members.iter().find(|m| m.node_id == app.id) {
        answers.push((m.clone(), Ok(me.clone())));
    }
    while let Some(Ok(a)) = set.join_next().await {
        answers.push(a);
    }
    answers.sort_by_key(|(m, _)| m.node_id);

    // The leader's last log index is the reference for lag; without it, the highest seen.
    let leader_last = answers
        .iter()
        .filter_map(|(_, i)| i.as_ref().ok())
        .find(|i| i.role == "leader")
        .map(|i| i.last_log_index)
        .or_else(|| {
            answers.iter().filter_map(|(_, i)| i.as_ref().ok().map(|i| i.last_log_index)).max()
        });
    let mut errors = Vec::new();
    let mut unreachable = Vec::new();
    let nodes = answers
        .into_iter()
        .map(|(m, info)| match info {
            Ok(i) => {
                let lag = leader_last.map(|l| l.saturating_sub(i.last_applied_index));
                if let Some(l) = lag.filter(|l| *l > LAG_WARN) {
                    errors.push(format!("{} lagging by {l} entries", m.name));
                }
                NodeStatus {
                    node_id: m.node_id,
                    name: m.name,
                    api_base_url: m.api_base_url,
                    voter: m.voter,
                    reachable: true,
                    role: Some(i.role),
                    term: Some(i.term),
                    last_log_index: Some(i.last_log_index),
                    last_applied_index: Some(i.last_applied_index),
                    lag,
                    health: Some(i.health),
                    error: None,
                }
            }
            Err(e) => {
                errors.push(format!("{} unreachable: {e}", m.name));
                unreachable.push(m.name.clone());
                NodeStatus {
                    node_id: m.node_id,
                    name: m.name,
                    api_base_url: m.api_base_url,
                    voter: m.voter,
                    reachable: false,
                    role: None,
                    term: None,
                    last_log_index: None,
                    last_applied_index: None,
                    lag: None,
                    health: None,
                    error: Some(e),
                }
            }
        })
        .collect();
    ClusterStatus {
        cluster_id: me.cluster_id,
        answered_by: app.id,
        leader_id: me.leader_id,
        health: me.health,
        partial: !unreachable.is_empty(),
        unreachable_nodes: unreachable,
        errors,
        nodes,
    }
}
