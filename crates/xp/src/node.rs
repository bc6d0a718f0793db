//! Starting and stopping a node: the data-dir lock, identity, the Raft instance, bootstrap, the
//! HTTP server and the background tasks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::{ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use xp_config::Config;
use xp_store::{
    open_raft_store, DataDirLock, Identity, NodeId, NodeMeta, Raft, RaftDir, Request,
    StateMachineStore, StoreError,
};

pub use crate::app::{health, raft_failed, raft_failure, App};
use crate::app::{PeerSeen, PROBE_EVERY};
use crate::fence::{eviction_key, Fence};
use crate::join::{PendingJoin, JOIN_FILE};
use crate::network::Network;
use crate::rpc_auth::RpcAuth;

/// How long, in all, a node starting on existing state asks its members whether it still
/// belongs (see [`Network::probe`]).
pub const PROBE_BUDGET: Duration = Duration::from_secs(2);

/// Why a node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The env file is missing a key this command needs.
    #[error(transparent)]
    Config(#[from] xp_config::ConfigError),
    /// The data dir could not be locked, read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The data dir and the env file disagree, or the node has no identity.
    #[error("{0}")]
    Identity(String),
    /// The TLS files could not be loaded or do not fit together.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// openraft refused to start or initialize.
    #[error("raft: {0}")]
    Raft(String),
    /// The HTTP listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    /// A pending join was refused by the cluster.
    #[error("{0}")]
    JoinRejected(String),
}

/// Most entries in one append. The real bound is bytes (`network::APPEND_BUDGET_BYTES`: a
/// longer batch is cut before it is sent); this only caps what openraft reads from the log to
/// build one (64 values at the default 1 MiB cap).
pub const MAX_PAYLOAD_ENTRIES: u64 = 64;

/// How long one snapshot chunk may take to be sent (and, for the last, installed), in ms.
/// openraft cancels the RPC after it; chunks are `network::SNAPSHOT_CHUNK_BYTES`.
pub const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 10_000;

/// Builds the openraft config from the env file's timing.
pub fn raft_config(config: &Config) -> Result<Arc<openraft::Config>, NodeError> {
    let t = config.raft;
    let c = openraft::Config {
        cluster_name: "xp".into(),
        heartbeat_interval: t.heartbeat_ms,
        election_timeout_min: t.election_min_ms,
        election_timeout_max: t.election_max_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_logs),
        max_in_snapshot_log_to_keep: t.snapshot_logs,
        install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT_MS,
        snapshot_max_chunk_size: crate::network::SNAPSHOT_CHUNK_BYTES,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        ..Default::default()
    };
    Ok(Arc::new(c.validate().map_err(|e| NodeError::Raft(e.to_string()))?))
}

/// Finds out which node id this data dir belongs to, writing `identity.json` on first start.
fn resolve_identity(
    config: &Config,
    dir: &RaftDir,
    pending: Option<&PendingJoin>,
) -> Result<Identity, NodeError> {
    if let Some(mut id) = dir.read_identity_as(&config.node_name, &config.path)? {
        if id.incarnation.is_empty() {
            // A dir from before incarnations: give it one now.
            id.incarnation = xp_store::state::new_incarnation();
            dir.write_identity(&id)?;
        }
        if let Some(p) = pending {
            if p.node_id != id.node_id {
                return Err(NodeError::Identity(format!(
                    "{} is node {} but the pending join is for node {}",
                    dir.path().display(),
                    id.node_id,
                    p.node_id
                )));
            }
        }
        return Ok(id);
    }
    if !dir.is_pristine()? {
        return Err(NodeError::Identity(format!(
            "{} holds Raft state but no identity.json: restore it from a backup or wipe the data dir",
            dir.path().display()
        )));
    }
    let node_id = match (pending, config.node_id) {
        (Some(p), _) => p.node_id,
        (None, Some(id)) => id,
        (None, None) => {
            return Err(NodeError::Identity(format!(
            "{} has no Raft state and {} sets no XP_NODE_ID: run `xp init` to start a new cluster \
                 or `xp join --token-file FILE` to join one",
            dir.path().display(),
            config.path.display()
        )))
        }
    };
    let id = Identity::new(node_id, &config.node_name);
    dir.create()?;
    dir.write_identity(&id)?;
    Ok(id)
}

/// A started node. Dropping it does not stop it; call [`RunningNode::shutdown`].
pub struct RunningNode {
    pub app: Arc<App>,
    pub addr: std::net::SocketAddr,
    stop_tx: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    /// Reports a fatal error from a background task (a rejected join).
    pub fatal: watch::Receiver<Option<String>>,
    /// Flushed at shutdown so `state_machine.json` is current after a clean stop.
    sm_store: StateMachineStore,
    _lock: DataDirLock,
}

impl RunningNode {
    /// Starts a node from its env file: takes the lock, opens the store, starts Raft and the API.
    pub async fn start(config: Config) -> Result<RunningNode, NodeError> {
        let secret = config.require_cluster_secret()?.clone();
        let lock = DataDirLock::acquire(&config.data_dir)?;
        let dir = RaftDir::new(config.raft_dir());
        dir.check_no_recovery_in_progress()?;
        let pending = PendingJoin::read(&config.data_dir)?;
        let identity = resolve_identity(&config, &dir, pending.as_ref())?;
        let id = identity.node_id;

        let (log, sm) = open_raft_store(&dir)?;
        let sm_state = sm.state.clone();
        let sm_store = sm.clone();
        let tls = config
            .tls
            .as_ref()
            .map(|f| crate::tls::Tls::load(f, crate::tls::url_host(&config.api_base_url)))
            .transpose()?
            .map(Arc::new);
        let rpc = Arc::new(RpcAuth::new(&secret));
        let fence = Arc::new(Fence::open(dir.clone(), eviction_key(&secret))?);
        let (seen_tx, seen_rx) = tokio::sync::mpsc::unbounded_channel();
        let network = Network::new(
            id,
            identity.incarnation.clone(),
            rpc.clone(),
            sm_state.clone(),
            Some(seen_tx),
            fence.clone(),
            crate::tls::client_builder(tls.as_deref())?,
        );
        let client = network.client.clone();

        // A node coming back on existing state asks its members first: if the cluster was
        // recovered without it, it must find out before it can lead or vote (openraft restores
        // a former leader as leader at once).
        let members: Vec<(NodeId, String)> = {
            let state = sm_state.read().unwrap();
            let membership = log.effective_membership(&state);
            membership
                .membership()
                .nodes()
                .filter(|(m, _)| **m != id)
                .map(|(m, n)| (*m, n.api_base_url.clone()))
                .collect()
        };
        if !fence.is_evicted() && !members.is_empty() {
            let started = std::time::Instant::now();
            let (answered, silent) = network.probe(members, PROBE_BUDGET).await;
            tracing::info!(
                ?answered,
                ?silent,
                evicted = fence.is_evicted(),
                ms = started.elapsed().as_millis() as u64,
                "asked the members of the persisted membership whether this node still belongs"
            );
        }
        let mut raft_cfg = raft_config(&config)?;
        if fence.is_evicted() {
            // Never elect, heartbeat or tick: Raft is started only to be stopped (the API
            // still reads its state) and the network sends nothing.
            let mut c = (*raft_cfg).clone();
            c.enable_tick = false;
            c.enable_heartbeat = false;
            c.enable_elect = false;
            raft_cfg = Arc::new(c);
        }
        let raft = Raft::new(id, raft_cfg, network, log, sm)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;

        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|source| NodeError::Bind { addr: config.bind, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| NodeError::Bind { addr: config.bind, source })?;

        let initialized =
            raft.is_initialized().await.map_err(|e| NodeError::Raft(e.to_string()))?;
        let formed_elsewhere = if !initialized && pending.is_none() {
            cluster_already_formed(&config, &client).await
        } else {
            None
        };
        if let Some((peer, cluster_id)) = &formed_elsewhere {
            tracing::warn!(
                %peer, %cluster_id,
                "not bootstrapping although XP_BOOTSTRAP_MEMBERS is set: {peer} already belongs \
                 to cluster {cluster_id}, so this node's data dir was wiped or replaced. Starting \
                 as an empty member; the cluster will fence this id. Rejoin with `xp join --token-file`"
            );
        }
        if !initialized
            && pending.is_none()
            && formed_elsewhere.is_none()
            && !config.bootstrap_members.is_empty()
        {
            let members: BTreeMap<NodeId, NodeMeta> = config
                .bootstrap_members
                .iter()
                .map(|m| {
                    (m.id, NodeMeta { name: m.name.clone(), api_base_url: m.api_base_url.clone() })
                })
                .collect();
            tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "bootstrapping a new cluster");
            raft.initialize(members).await.map_err(|e| NodeError::Raft(e.to_string()))?;
        }

        let app = Arc::new(App {
            id,
            config,
            raft,
            sm: sm_state,
            rpc,
            client,
            tls: tls.clone(),
            peers: RwLock::default(),
            transferring: Default::default(),
            incarnation: identity.incarnation.clone(),
            fence,
            other_clusters: Default::default(),
        });
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let router = crate::router::router(app.clone());
        let server = tokio::spawn(crate::tls::serve(
            listener,
            router,
            tls.map(|t| t.server.clone()),
            async {
                let _ = stop_rx.await;
            },
        ));
        tokio::spawn(stop_raft_when_evicted(app.clone()));
        tokio::spawn(assign_cluster_id(app.clone()));
        tokio::spawn(probe_peers(app.clone()));
        tokio::spawn(record_incarnations(app.clone(), seen_rx));

        let (fatal_tx, fatal) = watch::channel(None);
        if let Some(p) = pending {
            tokio::spawn(crate::join::complete_join(app.clone(), p, fatal_tx));
        }
        tracing::info!(node_id = id, name = %app.config.node_name, %addr, url = %app.config.api_base_url, "xp node started");
        Ok(RunningNode { app, addr, stop_tx: Some(stop_tx), server, fatal, sm_store, _lock: lock })
    }

    /// Stops Raft and the HTTP server within about half a second, whatever is in flight.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_millis(300), self.app.raft.shutdown()).await;
        let _ = tokio::time::timeout(Duration::from_millis(200), &mut self.server).await;
        self.server.abort();
        // Not needed for safety (the log has every entry the file lacks); it spares the replay.
        if let Err(e) = self.sm_store.flush() {
            tracing::warn!(error = %e, "could not write the state machine at shutdown; it will be rebuilt from the log on start");
        }
    }
}

/// Before bootstrapping, asks the other bootstrap members whether they already belong to a
/// formed cluster: a wiped bootstrap node must not found a second cluster under the same ids.
/// Unreachable or empty peers say nothing (at first formation they are empty or not up yet).
async fn cluster_already_formed(
    config: &Config,
    client: &reqwest::Client,
) -> Option<(String, String)> {
    let peers = config.bootstrap_members.iter().filter(|m| m.api_base_url != config.api_base_url);
    let asks = peers.map(|m| async move {
        let url = format!("{}/api/cluster/info", m.api_base_url);
        let res = client.get(&url).timeout(Duration::from_millis(800)).send().await.ok()?;
        let info: serde_json::Value = res.json().await.ok()?;
        let cluster_id = info["cluster_id"].as_str().filter(|c| !c.is_empty())?;
        Some((m.name.clone(), cluster_id.to_owned()))
    });
    futures_util::future::join_all(asks).await.into_iter().flatten().next()
}

/// The leader records, once per node id, the data-dir incarnation it answers with (its own
/// included); from then on a node answering with another one is fenced (see `api::check_rpc`).
async fn record_incarnations(
    app: Arc<App>,
    mut seen: tokio::sync::mpsc::UnboundedReceiver<(NodeId, String)>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        let peer = tokio::select! {
            s = seen.recv() => match s {
                Some(s) => Some(s),
                None => return,
            },
            _ = tick.tick() => None,
        };
        if app.raft.metrics().borrow().state != ServerState::Leader {
            continue;
        }
        for (node_id, incarnation) in [(app.id, app.incarnation.clone())].into_iter().chain(peer) {
            if incarnation.is_empty()
                || app.sm.read().unwrap().data.incarnations.contains_key(&node_id)
            {
                continue;
            }
            let req = Request::RecordIncarnation { node_id, incarnation };
            // Bounded: without a quorum the write waits; the next tick or answer tries again.
            match tokio::time::timeout(Duration::from_secs(2), app.raft.client_write(req)).await {
                Ok(Ok(_)) => tracing::info!(node_id, "recorded the node's disk incarnation"),
                Ok(Err(e)) => {
                    tracing::debug!(node_id, error = %e, "could not record an incarnation")
                }
                Err(_) => tracing::debug!(node_id, "recording an incarnation timed out"),
            }
        }
    }
}

/// Stops Raft as soon as this node is evicted (at once if it was at start): a stale node must
/// neither lead, vote nor heartbeat. The HTTP API stays up to say why.
async fn stop_raft_when_evicted(app: Arc<App>) {
    let mut evicted = app.fence.evicted();
    if evicted.wait_for(|e| *e).await.is_err() {
        return;
    }
    if let Err(e) = app.raft.shutdown().await {
        tracing::warn!(error = %e, "stopping Raft after the eviction");
    }
    tracing::warn!("Raft stopped: this node was evicted by a recovered cluster");
}

/// The first leader of a cluster gives it an id; later leaders find it set and do nothing.
async fn assign_cluster_id(app: Arc<App>) {
    let mut metrics = app.raft.metrics();
    loop {
        let is_leader = metrics.borrow().state == ServerState::Leader;
        let has_id = app.sm.read().unwrap().data.cluster_id.is_some();
        if is_leader && !has_id {
            let cluster_id = crate::token::random_hex(8);
            match app.raft.client_write(Request::SetClusterId { cluster_id }).await {
                Ok(_) => continue,
                Err(e) => tracing::debug!("could not set the cluster id yet: {e}"),
            }
        }
        if metrics.borrow().state == ServerState::Shutdown {
            return;
        }
        if tokio::time::timeout(Duration::from_millis(500), metrics.changed())
            .await
            .is_ok_and(|r| r.is_err())
        {
            return;
        }
    }
}

/// Asks every other member for its info every [`PROBE_EVERY`], recording who answered.
async fn probe_peers(app: Arc<App>) {
    loop {
        let members: Vec<(NodeId, String)> = {
            let m = app.raft.metrics().borrow().membership_config.clone();
            m.membership()
                .nodes()
                .filter(|(id, _)| **id != app.id)
                .map(|(id, n)| (*id, n.api_base_url.clone()))
                .collect()
        };
        let mut set = tokio::task::JoinSet::new();
        for (id, url) in members {
            let client = app.client.clone();
            set.spawn(async move {
                // A peer that answers but is fenced takes no part: it is not online.
                let res = client
                    .get(format!("{url}/api/cluster/info"))
                    .timeout(Duration::from_millis(400))
                    .send()
                    .await;
                let ok = match res {
                    Ok(r) if r.status().is_success() => {
                        r.json::<serde_json::Value>().await.is_ok_and(|v| v["health"] != "fenced")
                    }
                    _ => false,
                };
                (id, ok)
            });
        }
        let mut seen = BTreeMap::new();
        while let Some(Ok((id, ok))) = set.join_next().await {
            seen.insert(id, PeerSeen { reachable: ok, at: std::time::Instant::now() });
        }
        *app.peers.write().unwrap() = seen;
        if app.raft.metrics().borrow().state == ServerState::Shutdown {
            return;
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// `${XP_DATA_DIR}/join.json`.
pub fn join_file(config: &Config) -> PathBuf {
    config.data_dir.join(JOIN_FILE)
}
