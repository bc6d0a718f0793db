//! One-shot commands of the `xp` binary besides `run`: `init`, `join`, `wipe`, `healthcheck`.

use std::collections::BTreeMap;
use std::time::Duration;

use xp_config::Config;
use xp_store::{open_raft_store, DataDirLock, Identity, NodeMeta, Raft, RaftDir};

use crate::join::PendingJoin;
use crate::network::Network;
use crate::node::{raft_config, NodeError};
use crate::token;

/// `xp init`: makes this pristine node the single voter of a new cluster.
pub async fn init(config: &Config) -> Result<u64, NodeError> {
    let _lock = DataDirLock::acquire(&config.data_dir)?;
    let dir = RaftDir::new(config.raft_dir());
    if !dir.is_pristine()? {
        return Err(NodeError::Identity(format!(
            "{} already holds Raft state: this node already belongs to a cluster",
            dir.path().display()
        )));
    }
    let node_id = config.node_id.unwrap_or(1);
    dir.create()?;
    dir.write_identity(&Identity::new(node_id, &config.node_name))?;
    let (log, sm) = open_raft_store(&dir)?;
    let sm_store = sm.clone();
    let raft = Raft::new(
        node_id,
        raft_config(config)?,
        Network::new(
            node_id,
            String::new(),
            std::sync::Arc::new(crate::rpc_auth::RpcAuth::unshared()),
            Default::default(),
            None,
            std::sync::Arc::new(crate::fence::Fence::inert()),
            reqwest::Client::builder(),
        ),
        log,
        sm,
    )
    .await
    .map_err(|e| NodeError::Raft(e.to_string()))?;
    let meta =
        NodeMeta { name: config.node_name.clone(), api_base_url: config.api_base_url.clone() };
    raft.initialize(BTreeMap::from([(node_id, meta)]))
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;
    let _ = tokio::time::timeout(Duration::from_secs(2), raft.shutdown()).await;
    sm_store.flush()?;
    Ok(node_id)
}

/// `xp join --token-file F`: checks the token and records it; the next `xp run` completes the
/// join.
pub fn join(config: &Config, token_text: &str) -> Result<PendingJoin, NodeError> {
    let secret = config.require_cluster_secret()?;
    let _lock = DataDirLock::acquire(&config.data_dir)?;
    if let Some(p) = PendingJoin::read(&config.data_dir)? {
        return Err(NodeError::Identity(format!(
            "a join is already pending in {} (as node {} via {}); start the node to complete it",
            config.data_dir.display(),
            p.node_id,
            p.leader_api_base_url
        )));
    }
    let dir = RaftDir::new(config.raft_dir());
    if !dir.is_pristine()? {
        let who = dir
            .read_identity()
            .ok()
            .flatten()
            .map(|i| format!(" as node {}", i.node_id))
            .unwrap_or_default();
        return Err(NodeError::Identity(format!(
            "this node already belongs to a cluster{who} ({} holds Raft state); only a wiped node can join",
            dir.path().display()
        )));
    }
    let claims = token::verify(token_text, secret, token::unix_now())
        .map_err(|e| NodeError::JoinRejected(e.to_string()))?;
    let pending = PendingJoin {
        token: token_text.trim().to_owned(),
        node_id: claims.node_id,
        leader_api_base_url: claims.leader_api_base_url,
        joiner: token::random_hex(16),
        replaces: claims.replaces,
    };
    pending.write(&config.data_dir)?;
    Ok(pending)
}

/// `xp wipe --yes`: erases the data dir's contents, as after a disk replacement.
pub fn wipe(config: &Config) -> Result<usize, NodeError> {
    let lock = DataDirLock::acquire(&config.data_dir)?;
    let mut removed = 0;
    let entries = std::fs::read_dir(&config.data_dir)
        .map_err(|source| xp_store::StoreError::Io { path: config.data_dir.clone(), source })?;
    for entry in entries {
        let entry = entry
            .map_err(|source| xp_store::StoreError::Io { path: config.data_dir.clone(), source })?;
        let path = entry.path();
        if path == lock.path() {
            continue;
        }
        let res = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        res.map_err(|source| xp_store::StoreError::Io { path: path.clone(), source })?;
        removed += 1;
    }
    xp_store::fsutil::fsync_dir(&config.data_dir)?;
    Ok(removed)
}

/// `xp healthcheck`: asks the local node for `/api/cluster/info`.
pub async fn healthcheck(config: &Config) -> Result<(), String> {
    let mut addr = config.bind;
    if addr.ip().is_unspecified() {
        addr.set_ip([127, 0, 0, 1].into());
    }
    // With TLS, ask for the node's own URL (its certificate names that host) and send it to
    // the local address.
    let (builder, url) = match &config.tls {
        Some(files) => {
            let host = crate::tls::url_host(&config.api_base_url).to_owned();
            let tls = crate::tls::Tls::load(files, &host).map_err(|e| e.to_string())?;
            let b = tls.client_builder().map_err(|e| e.to_string())?.resolve(&host, addr);
            (b, format!("https://{host}:{}/api/cluster/info", addr.port()))
        }
        None => (reqwest::Client::builder(), format!("http://{addr}/api/cluster/info")),
    };
    let client = builder.timeout(Duration::from_secs(2)).build().map_err(|e| e.to_string())?;
    let res = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !res.status().is_success() {
        return Err(format!("{addr} answered {}", res.status()));
    }
    let info: serde_json::Value = res.json().await.map_err(|e| e.to_string())?;
    if info["health"] == "failed" {
        return Err(format!("{addr}: {}", info["failure"].as_str().unwrap_or("Raft stopped")));
    }
    Ok(())
}
