//! `GET /api/cluster/info`: what this node knows of itself and its cluster.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use openraft::ServerState;
use xp_store::NodeId;

use crate::App;
use xp_api::{ClusterInfo, MemberInfo};

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
        health: crate::app::health(app).into(),
        fenced: app.fence.reason().unwrap_or_default(),
        failure: crate::app::raft_failure(app).unwrap_or_default(),
        recovery_generation: latest.as_ref().map(|r| r.generation).unwrap_or(0),
        recovered_at: latest.map(|r| r.at).unwrap_or_default(),
        version: crate::VERSION.into(),
    }
}

pub async fn cluster_info(State(app): State<Arc<App>>) -> Json<ClusterInfo> {
    Json(cluster_info_of(&app))
}
