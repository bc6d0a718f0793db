//! [`App`]: everything the HTTP handlers and the node's background tasks share, and what it
//! says about the node's health.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use xp_config::Config;
use xp_store::{NodeId, NodeMeta, Raft, SmFile};

use crate::fence::Fence;
use crate::rpc_auth::RpcAuth;

/// What the peer probe last saw of a member.
#[derive(Clone, Debug)]
pub struct PeerSeen {
    pub reachable: bool,
    pub at: std::time::Instant,
}

/// Everything the HTTP handlers and background tasks share.
pub struct App {
    pub id: NodeId,
    pub config: Config,
    pub raft: Raft,
    pub sm: Arc<RwLock<SmFile>>,
    /// Signs this node's Raft RPCs and checks those it receives.
    pub rpc: Arc<RpcAuth>,
    pub client: reqwest::Client,
    /// Set when the node serves HTTPS: Raft and admin routes then also need a client
    /// certificate signed by the cluster CA.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// Reachability of the other members, refreshed by [`probe_peers`].
    pub peers: RwLock<BTreeMap<NodeId, PeerSeen>>,
    /// Set while this leader hands leadership over: writes are refused meanwhile.
    pub transferring: std::sync::atomic::AtomicBool,
    /// This data dir's incarnation (see [`xp_store::Identity::incarnation`]).
    pub incarnation: String,
    /// Why this node may no longer take part, once it knows: its disk was wiped, or a
    /// recovered cluster evicted it (see [`crate::fence`]).
    pub fence: Arc<Fence>,
    /// Nodes of other clusters that sent Raft RPCs here (each is logged once).
    pub other_clusters: std::sync::Mutex<std::collections::BTreeSet<(NodeId, String)>>,
}

impl App {
    /// `https://` when this node serves TLS, else `http://`: every member URL has it.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https://"
        } else {
            "http://"
        }
    }

    pub fn meta(&self) -> NodeMeta {
        NodeMeta {
            name: self.config.node_name.clone(),
            api_base_url: self.config.api_base_url.clone(),
        }
    }

    /// The API URL of the current leader, if one is known.
    pub fn leader_url(&self) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        m.membership_config.membership().get_node(&leader).map(|n| n.api_base_url.clone())
    }
}

/// How often each node checks that its peers answer (for `health`).
pub const PROBE_EVERY: Duration = Duration::from_millis(500);

/// Why Raft stopped on its own (a storage error, a panic in its core), if it did. A stop we
/// asked for (shutdown, eviction) is not a failure.
pub fn raft_failure(app: &App) -> Option<String> {
    match &app.raft.metrics().borrow().running_state {
        Ok(()) | Err(openraft::error::Fatal::Stopped) => None,
        Err(e) => Some(format!(
            "Raft stopped on an error: {e}. The process exits so a supervisor restarts it; \
             nothing acknowledged is lost (check the disk first, e.g. free space)"
        )),
    }
}

/// Resolves with the reason once Raft stops on an error (see [`raft_failure`]).
pub async fn raft_failed(app: &App) -> String {
    let mut metrics = app.raft.metrics();
    loop {
        if let Some(why) = raft_failure(app) {
            return why;
        }
        if metrics.changed().await.is_err() {
            // The core is gone without a final report: look once more, else wait forever.
            return match raft_failure(app) {
                Some(why) => why,
                None => std::future::pending().await,
            };
        }
    }
}

/// `failed` (Raft stopped on an error), `fenced` (the cluster refused this node's disk or
/// evicted it), `unconfigured` (not a member), `healthy` (sees a majority of voters, itself
/// included) or `degraded`.
pub fn health(app: &App) -> &'static str {
    if raft_failure(app).is_some() {
        return "failed";
    }
    if app.fence.is_fenced() {
        return "fenced";
    }
    let m = app.raft.metrics().borrow().membership_config.clone();
    let membership = m.membership();
    if membership.get_node(&app.id).is_none() {
        return "unconfigured";
    }
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let peers = app.peers.read().unwrap();
    let online = voters
        .iter()
        .filter(|v| {
            **v == app.id
                || peers.get(v).is_some_and(|p| p.reachable && p.at.elapsed() < PROBE_EVERY * 4)
        })
        .count();
    if online * 2 > voters.len() {
        "healthy"
    } else {
        "degraded"
    }
}
