//! Raft RPCs over HTTP: the client side (`RaftNetworkFactory`) and the request authentication
//! both sides share.

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;
use xp_store::{Eviction, NodeId, NodeMeta, TypeConfig};

use crate::fence::{Fence, Standing, GENERATION_HEADER};

/// Header carrying the RPC key derived from the cluster secret (never the secret itself).
pub const AUTH_HEADER: &str = "x-xp-cluster-auth";
/// Header naming the sending node, checked against the receiver's membership.
pub const FROM_HEADER: &str = "x-xp-from-node";
/// Header naming the node the sender means to reach. A wiped disk that rejoined under a new id
/// keeps its old URL; without this check it would take the old id's replication stream.
pub const TO_HEADER: &str = "x-xp-to-node";
/// Header carrying the sender's cluster id (when it knows one): a restored cluster has a new id,
/// so nodes of the old cluster are refused even if they share the secret.
pub const CLUSTER_HEADER: &str = "x-xp-cluster-id";
/// Header carrying the sender's data-dir incarnation, checked against the one the cluster
/// recorded for the sender's id: a member whose disk was wiped may not vote or lead again.
pub const FROM_INCARNATION_HEADER: &str = "x-xp-from-incarnation";
/// Header carrying the incarnation the cluster recorded for the target's id (when it has one):
/// a wiped member refuses replication meant for the disk it no longer has.
pub const TO_INCARNATION_HEADER: &str = "x-xp-to-incarnation";
/// Response header: the answering node's incarnation, which the leader records the first time.
pub const INCARNATION_HEADER: &str = "x-xp-incarnation";

/// How often a peer that refused us as a wiped disk is tried again.
const FENCED_RETRY: Duration = Duration::from_secs(5);

/// Hex of the key peers present on every Raft RPC.
pub fn rpc_key(secret: &xp_config::Secret) -> String {
    crate::token::derive_key(secret, "xp-raft-rpc-v1").iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds one [`Connection`] per peer.
#[derive(Clone)]
pub struct Network {
    pub client: reqwest::Client,
    pub rpc_key: String,
    pub my_id: NodeId,
    /// This data dir's incarnation.
    pub my_incarnation: String,
    /// The state machine, to read this node's cluster id and the recorded incarnations.
    pub sm: std::sync::Arc<std::sync::RwLock<xp_store::SmFile>>,
    /// Where a peer's incarnation goes when the cluster has none recorded for it yet.
    pub seen: Option<mpsc::UnboundedSender<(NodeId, String)>>,
    /// Once evicted, nothing more is sent; an eviction received in an answer is obeyed here.
    pub fence: Arc<Fence>,
}

impl Network {
    pub fn new(
        my_id: NodeId,
        my_incarnation: String,
        rpc_key: String,
        sm: std::sync::Arc<std::sync::RwLock<xp_store::SmFile>>,
        seen: Option<mpsc::UnboundedSender<(NodeId, String)>>,
        fence: Arc<Fence>,
    ) -> Network {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("reqwest client builds");
        Network { client, rpc_key, my_id, my_incarnation, sm, seen, fence }
    }

    /// This node's cluster id and generation, to judge an eviction with.
    pub fn standing(&self) -> Standing {
        let sm = self.sm.read().unwrap();
        Standing {
            node_id: self.my_id,
            cluster_id: sm.data.cluster_id.clone().unwrap_or_default(),
            generation: sm.data.generation(),
        }
    }

    /// A Raft RPC request to `target` at `url`, with every authentication header.
    fn request(&self, target: NodeId, url: &str, path: &str) -> reqwest::RequestBuilder {
        let (cluster_id, recorded, generation) = {
            let sm = self.sm.read().unwrap();
            (
                sm.data.cluster_id.clone().unwrap_or_default(),
                sm.data.incarnations.get(&target).cloned(),
                sm.data.generation(),
            )
        };
        self.client
            .post(format!("{url}/raft/{path}"))
            .header(AUTH_HEADER, &self.rpc_key)
            .header(FROM_HEADER, self.my_id.to_string())
            .header(TO_HEADER, target.to_string())
            .header(CLUSTER_HEADER, cluster_id)
            .header(FROM_INCARNATION_HEADER, &self.my_incarnation)
            .header(TO_INCARNATION_HEADER, recorded.unwrap_or_default())
            .header(GENERATION_HEADER, generation.to_string())
    }

    /// Reads an eviction out of a `410` answer and obeys it if it holds. True when this node
    /// is now fenced by it.
    async fn obey_answer(&self, from: &str, res: reqwest::Response) -> bool {
        let body: Option<EvictionBody> = res.json().await.ok();
        let Some(ev) = body.and_then(|b| b.eviction) else {
            tracing::warn!(%from, "a 410 answer carried no readable eviction; ignored");
            return false;
        };
        match self.fence.obey(&ev, &self.standing()) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(%from, "{e}");
                false
            }
        }
    }

    /// Before Raft starts on existing state: asks every other member of the persisted
    /// membership, in parallel and for at most `budget` in all, whether this node still
    /// belongs. An authenticated eviction from any of them fences this node (persisted) before
    /// it can lead or vote. Unreachable members are skipped and logged: they cannot block a
    /// start. Returns the members that answered and those that did not.
    pub async fn probe(
        &self,
        members: Vec<(NodeId, String)>,
        budget: Duration,
    ) -> (Vec<NodeId>, Vec<NodeId>) {
        let asks = members.into_iter().map(|(id, url)| async move {
            let res = self.request(id, &url, "probe").timeout(budget).json(&()).send().await;
            match res {
                Ok(r) if r.status() == reqwest::StatusCode::GONE => {
                    self.obey_answer(&url, r).await;
                    (id, true)
                }
                Ok(r) if r.status().is_success() => (id, true),
                Ok(r) => {
                    tracing::info!(node = id, %url, status = %r.status(), "probe: member refused");
                    (id, true)
                }
                Err(e) => {
                    tracing::warn!(node = id, %url, error = %e, "probe: member unreachable; skipped");
                    (id, false)
                }
            }
        });
        let all = tokio::time::timeout(budget, futures_util::future::join_all(asks)).await;
        let all = all.unwrap_or_default();
        let answered = all.iter().filter(|(_, ok)| *ok).map(|(id, _)| *id).collect();
        let silent = all.iter().filter(|(_, ok)| !*ok).map(|(id, _)| *id).collect();
        (answered, silent)
    }
}

/// The body of a `410 Gone` answer to a Raft RPC.
#[derive(serde::Deserialize)]
struct EvictionBody {
    eviction: Option<Eviction>,
}

pub struct Connection {
    net: Network,
    target: NodeId,
    url: String,
    /// The target refused us as a wiped disk (`409`): it stays so until an operator acts, so
    /// retry it slowly instead of every 200 ms.
    fenced: std::sync::atomic::AtomicBool,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &NodeMeta) -> Connection {
        Connection {
            net: self.clone(),
            target,
            url: node.api_base_url.clone(),
            fenced: Default::default(),
        }
    }
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, NodeMeta, RaftError<NodeId, E>>>;

impl Connection {
    async fn call<Req, Resp, E>(&self, path: &str, req: &Req, ttl: Duration) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        if self.net.fence.is_evicted() {
            let e = std::io::Error::other("this node was evicted by a recovered cluster");
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        }
        let recorded = self.net.sm.read().unwrap().data.incarnations.get(&self.target).cloned();
        let res = self
            .net
            .request(self.target, &self.url, path)
            .timeout(ttl)
            .json(req)
            .send()
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let status = res.status();
        self.fenced.store(status == reqwest::StatusCode::CONFLICT, Ordering::Relaxed);
        if status == reqwest::StatusCode::GONE {
            self.net.obey_answer(&self.url, res).await;
            let e = std::io::Error::other(format!("{} answered 410: evicted", self.url));
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        }
        if !status.is_success() {
            let body = res.text().await.unwrap_or_default();
            let e = std::io::Error::other(format!("{} answered {status}: {body}", self.url));
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        }
        if recorded.is_none() {
            let theirs = res.headers().get(INCARNATION_HEADER).and_then(|v| v.to_str().ok());
            if let (Some(seen), Some(theirs)) = (&self.net.seen, theirs) {
                let _ = seen.send((self.target, theirs.to_owned()));
            }
        }
        let body: Result<Resp, RaftError<NodeId, E>> =
            res.json().await.map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        body.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        self.call("append", &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call("snapshot", &rpc, option.hard_ttl().max(Duration::from_secs(5))).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call("vote", &rpc, option.hard_ttl()).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        if self.fenced.load(Ordering::Relaxed) {
            return openraft::network::Backoff::new(std::iter::repeat(FENCED_RETRY));
        }
        // Retry an unreachable peer often: a restarted node is picked up within a heartbeat or two.
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
