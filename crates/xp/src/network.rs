//! Raft RPCs over HTTP: the client side (`RaftNetworkFactory`), the request authentication
//! both sides share, and the size limits both sides agree on.

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{SnapshotMeta, Vote};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;
use xp_store::{Eviction, NodeId, NodeMeta, TypeConfig};

use crate::fence::{Fence, Standing, GENERATION_HEADER};
use crate::rpc_auth::RpcAuth;

pub use xp_api::headers::CLUSTER as CLUSTER_HEADER;
pub use xp_api::headers::FROM as FROM_HEADER;
pub use xp_api::headers::FROM_INCARNATION as FROM_INCARNATION_HEADER;
pub use xp_api::headers::INCARNATION as INCARNATION_HEADER;
pub use xp_api::headers::TO as TO_HEADER;
pub use xp_api::headers::TO_INCARNATION as TO_INCARNATION_HEADER;

/// Soft bound on the body of one append: entries are sent in batches of at most this many
/// bytes of JSON (one entry larger than this goes alone). openraft 0.9 cancels an append after
/// one heartbeat interval (50 ms by default) and bounds a batch only by count
/// (`max_payload_entries`), so without this a follower behind megabytes of entries is sent
/// batches that cannot arrive in time, hears no leader and calls elections.
pub const APPEND_BUDGET_BYTES: usize = 256 * 1024;

/// Size of one snapshot chunk (`snapshot_max_chunk_size`), before base64 (+1/3).
pub const SNAPSHOT_CHUNK_BYTES: u64 = 512 * 1024;

/// Largest Raft RPC body a node accepts (`/raft/append`, `/raft/snapshot`): one entry holding
/// the largest value any configuration allows, JSON-escaped at worst (a control character
/// becomes `\u00XX`, 6 bytes), plus room for the envelope. A batch never exceeds
/// [`APPEND_BUDGET_BYTES`] unless it is that one entry, and a snapshot chunk is far smaller, so
/// a peer never answers `413` to a legal RPC. The body is read only after the cluster key was
/// checked.
pub const RAFT_BODY_LIMIT: usize = 6 * xp_config::MAX_VALUE_BYTES_CEILING as usize + (1 << 20);

/// How often a peer that refused us as a wiped disk is tried again.
const FENCED_RETRY: Duration = Duration::from_secs(5);

/// Builds one [`Connection`] per peer.
#[derive(Clone)]
pub struct Network {
    pub client: reqwest::Client,
    /// Signs every request (see [`crate::rpc_auth`]).
    pub auth: Arc<RpcAuth>,
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
        auth: Arc<RpcAuth>,
        sm: std::sync::Arc<std::sync::RwLock<xp_store::SmFile>>,
        seen: Option<mpsc::UnboundedSender<(NodeId, String)>>,
        fence: Arc<Fence>,
        client: reqwest::ClientBuilder,
    ) -> Network {
        let client = client
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("reqwest client builds");
        Network { client, auth, my_id, my_incarnation, sm, seen, fence }
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

    /// A signed Raft RPC (`POST {url}/raft/{path}` with `body` as JSON) to `target`.
    fn request<B: Serialize>(
        &self,
        target: NodeId,
        url: &str,
        path: &str,
        body: &B,
    ) -> reqwest::RequestBuilder {
        let (cluster_id, recorded, generation) = {
            let sm = self.sm.read().unwrap();
            (
                sm.data.cluster_id.clone().unwrap_or_default(),
                sm.data.incarnations.get(&target).cloned(),
                sm.data.generation(),
            )
        };
        let headers = [
            (FROM_HEADER, self.my_id.to_string()),
            (TO_HEADER, target.to_string()),
            (CLUSTER_HEADER, cluster_id),
            (FROM_INCARNATION_HEADER, self.my_incarnation.clone()),
            (TO_INCARNATION_HEADER, recorded.unwrap_or_default()),
            (GENERATION_HEADER, generation.to_string()),
        ];
        signed_post(&self.client, &self.auth, url, path, &headers, body)
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
            let res = self.request(id, &url, "probe", &()).timeout(budget).send().await;
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

/// `POST {url}/raft/{path}` with `body` as JSON, signed with `auth` over `headers` (see
/// [`crate::rpc_auth`]): what every node-to-node call goes through.
pub fn signed_post<B: Serialize>(
    client: &reqwest::Client,
    auth: &RpcAuth,
    url: &str,
    path: &str,
    headers: &[(&'static str, String)],
    body: &B,
) -> reqwest::RequestBuilder {
    let path = format!("/raft/{path}");
    let bytes = serde_json::to_vec(body).expect("Raft RPC bodies serialize");
    let signed = auth.sign("POST", &path, headers, &bytes, crate::rpc_auth::now_ms());
    client
        .post(format!("{url}{path}"))
        .headers(signed)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(bytes)
}

/// The routing headers a node's own signed call (not a Raft RPC) to member `to` carries (the signature
/// binds them, so the call is good for this cluster and this target only).
pub fn leader_call_headers(app: &crate::App, to: NodeId) -> [(&'static str, String); 4] {
    let (cluster_id, generation) = {
        let sm = app.sm.read().unwrap();
        (sm.data.cluster_id.clone().unwrap_or_default(), sm.data.generation())
    };
    [
        (FROM_HEADER, app.id.to_string()),
        (TO_HEADER, to.to_string()),
        (CLUSTER_HEADER, cluster_id),
        (GENERATION_HEADER, generation.to_string()),
    ]
}

/// The body of a `410 Gone` answer to a Raft RPC.
#[derive(serde::Deserialize)]
struct EvictionBody {
    eviction: Option<Eviction>,
}

/// One peer as the RPCs see it; cheap to clone into a task.
#[derive(Clone)]
struct Peer {
    net: Network,
    target: NodeId,
    url: String,
    /// The target refused us as a wiped disk (`409`): it stays so until an operator acts, so
    /// retry it slowly instead of every 200 ms.
    fenced: Arc<std::sync::atomic::AtomicBool>,
}

/// The batch an unfinished append carried: a later call for the same batch takes its answer.
#[derive(Clone, PartialEq, Eq)]
struct BatchKey {
    vote: Vote<NodeId>,
    prev: Option<openraft::LogId<NodeId>>,
    last: Option<openraft::LogId<NodeId>>,
}

/// An append whose call openraft gave up on, still running in its own task.
struct Inflight {
    key: BatchKey,
    task: tokio::task::JoinHandle<
        RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible>,
    >,
}

pub struct Connection {
    peer: Peer,
    /// At most one append with entries is under way per peer (see `append_entries`).
    inflight: Option<Inflight>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &NodeMeta) -> Connection {
        let peer = Peer {
            net: self.clone(),
            target,
            url: node.api_base_url.clone(),
            fenced: Default::default(),
        };
        Connection { peer, inflight: None }
    }
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, NodeMeta, RaftError<NodeId, E>>>;

/// How a `413` answer is reported to openraft.
enum TooLarge {
    /// An append of this many entries: openraft retries at once with the hint (half as many).
    Entries(usize),
    /// Nothing to shrink (a vote, one entry, a snapshot chunk: openraft 0.9 cannot resize
    /// chunks): the peer is reported unreachable, with the reason.
    Refused,
}

/// Counts the bytes of a serialisation without keeping them.
#[derive(Default)]
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How many of the leading `entries` fit one append of [`APPEND_BUDGET_BYTES`] (at least one),
/// or `None` when they all do. Stops measuring at the first entry past the budget.
fn entries_within_budget<T: Serialize>(entries: &[T]) -> Option<usize> {
    // The envelope (vote, prev log id, commit) is well under 1 KiB.
    let mut used = 1024;
    for (i, e) in entries.iter().enumerate() {
        let mut n = ByteCount::default();
        serde_json::to_writer(&mut n, e).ok()?;
        used += n.0 + 1;
        if used > APPEND_BUDGET_BYTES {
            return Some(i.max(1)).filter(|_| entries.len() > 1);
        }
    }
    None
}

impl Peer {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        ttl: Duration,
        too_large: TooLarge,
    ) -> RpcResult<Resp, E>
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
        let res =
            self.net.request(self.target, &self.url, path, req).timeout(ttl).send().await.map_err(
                |e| {
                    // A peer that answers slowly is not unreachable: openraft backs off 200 ms
                    // after `Unreachable`, during which the peer hears no heartbeat at all.
                    if e.is_timeout() && !e.is_connect() {
                        RPCError::Network(NetworkError::new(&e))
                    } else {
                        RPCError::Unreachable(Unreachable::new(&e))
                    }
                },
            )?;
        let status = res.status();
        self.fenced.store(status == reqwest::StatusCode::CONFLICT, Ordering::Relaxed);
        if status == reqwest::StatusCode::GONE {
            self.net.obey_answer(&self.url, res).await;
            let e = std::io::Error::other(format!("{} answered 410: evicted", self.url));
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        }
        if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE {
            let body = res.text().await.unwrap_or_default();
            let e = std::io::Error::other(format!("{} answered 413: {body}", self.url));
            return Err(match too_large {
                TooLarge::Entries(n) if n > 1 => {
                    tracing::warn!(target = self.target, entries = n, "{e}; sending fewer entries");
                    let hint = PayloadTooLarge::new_entries_hint(n as u64 / 2);
                    RPCError::PayloadTooLarge(hint.with_source_error(&e))
                }
                _ => {
                    // Only a peer with a smaller RAFT_BODY_LIMIT (another xp version) gets here.
                    tracing::error!(target = self.target, "{e}; the peer cannot take it");
                    RPCError::Unreachable(Unreachable::new(&e))
                }
            });
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

/// How long one append with entries may take, sent and written. openraft 0.9 cancels the call
/// after one heartbeat interval (`ReplicationCore::send_log_entries` wraps it in that timeout,
/// whatever `hard_ttl` says), which a batch of large values cannot always meet: the exchange
/// therefore runs in its own task, bounded by this instead, and the next call for the same
/// batch takes its answer.
pub const APPEND_TIMEOUT: Duration = Duration::from_secs(10);

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        let n = rpc.entries.len();
        if n == 0 {
            // A heartbeat: small, and meant to arrive within the heartbeat interval.
            return self.peer.call("append", &rpc, option.hard_ttl(), TooLarge::Refused).await;
        }
        if let Some(fit) = entries_within_budget(&rpc.entries) {
            // Not sent: openraft retries at once with this many entries (for its next 10 RPCs).
            let e = std::io::Error::other(format!(
                "{n} entries exceed the {APPEND_BUDGET_BYTES}-byte append budget"
            ));
            let hint = PayloadTooLarge::new_entries_hint(fit as u64);
            return Err(RPCError::PayloadTooLarge(hint.with_source_error(&e)));
        }
        let key = BatchKey {
            vote: rpc.vote,
            prev: rpc.prev_log_id,
            last: rpc.entries.last().map(|e| e.log_id),
        };
        // Cancel-safe: if openraft drops this future while it waits, `inflight` stays and the
        // next call waits on (or takes the answer of) the same task.
        if let Some(inflight) = &mut self.inflight {
            let res = (&mut inflight.task).await;
            let same = inflight.key == key;
            self.inflight = None;
            if same {
                return res.unwrap_or_else(|e| Err(RPCError::Unreachable(Unreachable::new(&e))));
            }
            // Another batch (it has landed, or failed): send this one.
        }
        let peer = self.peer.clone();
        let ttl = option.hard_ttl().max(APPEND_TIMEOUT);
        let task =
            tokio::spawn(async move { peer.call("append", &rpc, ttl, TooLarge::Entries(n)).await });
        let inflight = self.inflight.insert(Inflight { key, task });
        let res = (&mut inflight.task).await;
        self.inflight = None;
        res.unwrap_or_else(|e| Err(RPCError::Unreachable(Unreachable::new(&e))))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        // `hard_ttl` is `install_snapshot_timeout` (see `node::raft_config`), per chunk.
        let chunk = SnapshotChunk::from(rpc);
        self.peer.call("snapshot", &chunk, option.hard_ttl(), TooLarge::Refused).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.peer.call("vote", &rpc, option.hard_ttl(), TooLarge::Refused).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        if self.peer.fenced.load(Ordering::Relaxed) {
            return openraft::network::Backoff::new(std::iter::repeat(FENCED_RETRY));
        }
        // Retry an unreachable peer often: a restarted node is picked up within a heartbeat or two.
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}

/// The wire form of openraft's [`InstallSnapshotRequest`]: the same fields, but `data` as a
/// base64 string (serde writes a `Vec<u8>` as an array of numbers, up to 4 bytes per byte).
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotChunk {
    pub vote: Vote<NodeId>,
    pub meta: SnapshotMeta<NodeId, NodeMeta>,
    pub offset: u64,
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
    pub done: bool,
}

impl From<InstallSnapshotRequest<TypeConfig>> for SnapshotChunk {
    fn from(r: InstallSnapshotRequest<TypeConfig>) -> SnapshotChunk {
        SnapshotChunk { vote: r.vote, meta: r.meta, offset: r.offset, data: r.data, done: r.done }
    }
}

impl From<SnapshotChunk> for InstallSnapshotRequest<TypeConfig> {
    fn from(c: SnapshotChunk) -> InstallSnapshotRequest<TypeConfig> {
        InstallSnapshotRequest {
            vote: c.vote,
            meta: c.meta,
            offset: c.offset,
            data: c.data,
            done: c.done,
        }
    }
}

/// Bytes as a standard base64 string. Reads the array of numbers earlier versions sent too, so
/// a snapshot from a node not yet upgraded is still installed during a rolling upgrade.
mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl<'de> Visitor<'de> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a base64 string or an array of bytes")
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Vec<u8>, E> {
                STANDARD.decode(v).map_err(|e| E::custom(format!("snapshot chunk data: {e}")))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_any(Bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(data: Vec<u8>) -> SnapshotChunk {
        SnapshotChunk {
            vote: Vote::new_committed(3, 1),
            meta: SnapshotMeta::default(),
            offset: 7,
            data,
            done: true,
        }
    }

    #[test]
    fn snapshot_chunks_carry_any_bytes_as_base64() {
        let data: Vec<u8> = (0..=255).cycle().take(3000).collect();
        let json = serde_json::to_string(&chunk(data.clone())).unwrap();
        // base64 is 4/3 of the bytes; an array of numbers would be ~3.6x.
        assert!(json.len() < 4100 + 300, "{} bytes", json.len());
        let back: SnapshotChunk = serde_json::from_str(&json).unwrap();
        let req = InstallSnapshotRequest::<TypeConfig>::from(back);
        assert_eq!((req.data, req.offset, req.done), (data, 7, true));
    }

    #[test]
    fn snapshot_chunks_from_earlier_versions_still_read() {
        let old = InstallSnapshotRequest::<TypeConfig>::from(chunk(vec![0, 1, 255]));
        let json = serde_json::to_string(&old).unwrap();
        assert!(json.contains("[0,1,255]"), "{json}");
        let back: SnapshotChunk = serde_json::from_str(&json).unwrap();
        assert_eq!(back.data, vec![0, 1, 255]);
        let bad = json.replace("[0,1,255]", "\"not base64!\"");
        let e = serde_json::from_str::<SnapshotChunk>(&bad).unwrap_err().to_string();
        assert!(e.contains("snapshot chunk data: "), "{e}");
    }

    #[test]
    fn appends_are_cut_by_bytes() {
        let small = vec!["x".repeat(100); 64];
        assert_eq!(entries_within_budget(&small), None);
        let big = vec!["x".repeat(100_000); 25];
        assert_eq!(entries_within_budget(&big), Some(2));
        // One entry over the budget goes alone; a lone one is never cut.
        let huge = vec!["x".repeat(1 << 20); 3];
        assert_eq!(entries_within_budget(&huge), Some(1));
        assert_eq!(entries_within_budget(&huge[..1]), None);
        // Escaping counts: 50 000 control characters are 300 000 bytes of JSON.
        let escaped = vec!["\u{1}".repeat(50_000); 2];
        assert_eq!(entries_within_budget(&escaped), Some(1));
    }
}
