//! `xp-ops cluster ...`: operator commands over a running cluster's HTTP API (status,
//! leadership transfer, node removal). The admin token comes from the env file and is never
//! printed.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;
use serde::Serialize;
use xp_api::{
    AddRequest, AddResponse, ClusterStatus, ErrorBody, RemoveRequest, RemoveResponse,
    TransferRequest, TransferResponse,
};
use xp_config::{Config, DEFAULT_ENV_FILE};
use xp_recovery::restore::Backup;

use crate::Failure;

#[derive(Args)]
pub struct Target {
    /// The env file naming this node (XP_API_BASE_URL) and holding XP_ADMIN_TOKEN.
    #[arg(long, default_value = DEFAULT_ENV_FILE)]
    env_file: PathBuf,
    /// Ask this node instead of the env file's XP_API_BASE_URL.
    #[arg(long)]
    url: Option<String>,
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Every member's role, term, indexes and lag, as one node sees them (partial when some
    /// member does not answer).
    Status {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
    },
    /// Move leadership to another voter (default: the most up-to-date one).
    TransferLeader {
        #[command(flatten)]
        target: Target,
        /// Node id of the new leader.
        #[arg(long)]
        to: Option<u64>,
    },
    /// Add a running, empty node (started with this XP_NODE_ID): learner, catch up, voter.
    AddNode {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        id: u64,
        #[arg(long)]
        name: String,
        /// The new node's API URL as the cluster reaches it.
        #[arg(long)]
        url_of_node: String,
    },
    /// Take a backup on the leader (a fresh snapshot with a checksum) and save it to a file.
    Backup {
        #[command(flatten)]
        target: Target,
        /// Where to write it (`-`: standard output); an existing file is not overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Remove a node from the membership (the leader hands over first if it removes itself).
    RemoveNode {
        #[command(flatten)]
        target: Target,
        node_id: u64,
        /// How many voters remain afterwards: the cluster refuses when this is not so.
        #[arg(long)]
        confirm_voters_after: usize,
        #[arg(short = 'y', long)]
        yes: bool,
        /// Show what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// URLs the operator named (`--url`, the env file's own URL and bootstrap members): the
    /// only ones a 421 is followed to with the admin token. A URL from an answer is not the
    /// operator's word; the token is not sent there.
    trusted: Vec<String>,
    /// With TLS every server is checked against the cluster CA: a leader it names proves it is
    /// a member before it sees the token, so a 421 is followed wherever it points.
    tls: bool,
}

impl Client {
    fn new(t: &Target, need_token: bool) -> Result<Client, Failure> {
        let config = Config::load(&t.env_file)?;
        let token = match need_token {
            true => Some(config.require_admin_token()?.expose().to_owned()),
            false => None,
        };
        let mut trusted: Vec<String> =
            config.bootstrap_members.iter().map(|m| m.api_base_url.clone()).collect();
        trusted.push(config.api_base_url.clone());
        let base = t.url.clone().unwrap_or(config.api_base_url).trim_end_matches('/').to_owned();
        trusted.push(base.clone());
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none());
        let tls = config.tls.is_some();
        if let Some(files) = &config.tls {
            // Trust only the cluster CA, and present the node's certificate (mTLS): the admin
            // routes require one.
            let read = |key: &str, p: &std::path::Path| {
                std::fs::read(p).map_err(|e| Failure(2, format!("{key} = {}: {e}", p.display())))
            };
            let (ca, cert, key) = (
                read("XP_TLS_CA", &files.ca)?,
                read("XP_TLS_CERT", &files.cert)?,
                read("XP_TLS_KEY", &files.key)?,
            );
            builder = certs::client_builder(&ca, &cert, &key)
                .map_err(|e| Failure(2, format!("XP_TLS_* in {}: {e}", t.env_file.display())))?
                .timeout(Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none());
        }
        let http = builder.build().map_err(|e| Failure(2, format!("HTTP client: {e}")))?;
        Ok(Client { http, base, token, trusted, tls })
    }

    /// Sends a request and reads the typed answer; a 421 (not the leader) is retried once at
    /// the leader it names (see [`Client::trusted`]).
    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, Failure> {
        let (url, bytes) = self.call_bytes(method, path, body).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Failure(4, format!("{url} answered with an unexpected body: {e}")))
    }

    /// [`Client::call`], returning the answer's bytes as they came (and the URL that gave them).
    async fn call_bytes(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<(String, Vec<u8>), Failure> {
        let mut base = self.base.clone();
        for _ in 0..2 {
            let mut req = self.http.request(method.clone(), format!("{base}{path}"));
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let res = req.send().await.map_err(|e| Failure(4, format!("{base}{path}: {e}")))?;
            let status = res.status();
            let bytes = res.bytes().await.map_err(|e| Failure(4, format!("{base}{path}: {e}")))?;
            if status.is_success() {
                return Ok((format!("{base}{path}"), bytes.to_vec()));
            }
            let err: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_else(|_| ErrorBody {
                error: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
                leader_api_base_url: String::new(),
            });
            let leader = err.leader_api_base_url;
            if status == reqwest::StatusCode::MISDIRECTED_REQUEST
                && !leader.is_empty()
                && leader != base
            {
                if self.token.is_some() && !self.tls && !self.trusted.contains(&leader) {
                    return Err(Failure(
                        3,
                        format!(
                            "{base} is not the leader; it names {leader} as the leader, a URL \
                             this command was not given, so the admin token was not sent there. \
                             If that is your cluster's leader, run again with --url {leader}"
                        ),
                    ));
                }
                eprintln!("{base} is not the leader; asking {leader}");
                base = leader;
                continue;
            }
            let code = if status.is_client_error() { 3 } else { 4 };
            return Err(Failure(code, format!("{base}{path} answered {status}: {}", err.error)));
        }
        Err(Failure(4, "the leader moved twice during the request; try again".into()))
    }
}

/// No body.
const NONE: Option<&()> = None;

pub fn run(cmd: ClusterCommand) -> Result<(), Failure> {
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async {
        match cmd {
            ClusterCommand::Status { target, json } => {
                let c = Client::new(&target, false)?;
                let s: ClusterStatus = c.call(reqwest::Method::GET, "/api/cluster/status", NONE).await?;
                if json {
                    out!("{}", serde_json::to_string_pretty(&s).expect("status serializes"));
                    return Ok(());
                }
                let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                out!(
                    "cluster {} as seen by node {}: health {}, leader {}{}",
                    s.cluster_id,
                    s.answered_by,
                    s.health,
                    opt(s.leader_id.map(|l| l.to_string())),
                    if s.partial { " (PARTIAL: some members did not answer)" } else { "" }
                );
                out!("{:>4} {:<10} {:<6} {:<10} {:>5} {:>10} {:>10} {:>8}", "id", "name", "voter", "role", "term", "last log", "applied", "lag");
                for n in &s.nodes {
                    let num = |v: Option<u64>| opt(v.map(|x| x.to_string()));
                    out!(
                        "{:>4} {:<10} {:<6} {:<10} {:>5} {:>10} {:>10} {:>8}",
                        n.node_id, n.name, n.voter, opt(n.role.clone()), num(n.term), num(n.last_log_index), num(n.last_applied_index), num(n.lag)
                    );
                }
                for e in &s.errors {
                    out!("! {e}");
                }
                Ok(())
            }
            ClusterCommand::TransferLeader { target, to } => {
                let c = Client::new(&target, true)?;
                let body = TransferRequest { target: to };
                let r: TransferResponse = c.call(reqwest::Method::POST, "/api/admin/cluster/leader-transfer", Some(&body)).await?;
                out!("leadership moved from node {} to node {} ({}) in {} ms", r.from, r.to, r.leader_api_base_url, r.took_ms);
                Ok(())
            }
            ClusterCommand::AddNode { target, id, name, url_of_node } => {
                let c = Client::new(&target, true)?;
                let body = AddRequest { node_id: id, name, api_base_url: url_of_node, catch_up_timeout_secs: None };
                let r: AddResponse = c.call(reqwest::Method::POST, "/api/admin/cluster/add-node", Some(&body)).await?;
                out!("added node {id} as a voter in {} ms; voters now {:?}", r.took_ms, r.voters);
                Ok(())
            }
            ClusterCommand::Backup { target, out } => {
                if out.as_os_str() != "-" && out.exists() {
                    return Err(Failure(2, format!("{} exists; refusing to overwrite a backup", out.display())));
                }
                let c = Client::new(&target, true)?;
                // Written as the leader sent it (its checksum covers the state as it encoded it);
                // parsed only to check it is a backup and to print what it holds.
                let (url, bytes) = c.call_bytes(reqwest::Method::GET, "/api/admin/cluster/backup", NONE).await?;
                let b: Backup = serde_json::from_slice(&bytes)
                    .map_err(|e| Failure(4, format!("{url} answered with something that is not a backup: {e}")))?;
                let what = format!(
                    "backup of cluster {} up to {} ({} keys, sha256 {})",
                    b.cluster_id,
                    b.last_log_id.map(|l| l.index.to_string()).unwrap_or_else(|| "-".into()),
                    b.state.data.kv.len(),
                    b.checksum
                );
                if out.as_os_str() == "-" {
                    out!("{}", String::from_utf8_lossy(&bytes));
                    eprintln!("{what} written to stdout");
                    return Ok(());
                }
                let tmp = out.with_file_name(format!(".{}.tmp", out.file_name().and_then(|n| n.to_str()).unwrap_or("backup")));
                // A backup holds every key and the cluster's membership: owner-only, like the
                // data dir it came from.
                let _ = std::fs::remove_file(&tmp); // a crashed run's leftover
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)
                    .and_then(|mut f| f.write_all(&bytes).and_then(|_| f.sync_all()))
                    .and_then(|_| std::fs::rename(&tmp, &out))
                    .map_err(|e| Failure(4, format!("writing {}: {e}", out.display())))?;
                out!("{what} written to {}", out.display());
                Ok(())
            }
            ClusterCommand::RemoveNode { target, node_id, confirm_voters_after, yes, dry_run } => {
                if !yes && !dry_run {
                    return Err(Failure(2, "refusing to remove a node without -y/--yes; run with --dry-run first".into()));
                }
                let c = Client::new(&target, !dry_run)?;
                if dry_run {
                    let s: ClusterStatus = c.call(reqwest::Method::GET, "/api/cluster/status", NONE).await?;
                    let Some(n) = s.nodes.iter().find(|n| n.node_id == node_id) else {
                        return Err(Failure(3, format!("node {node_id} is not a member")));
                    };
                    let voters: Vec<u64> = s.nodes.iter().filter(|n| n.voter).map(|n| n.node_id).collect();
                    let after: Vec<u64> = voters.iter().copied().filter(|v| *v != node_id).collect();
                    out!("would remove node {node_id} ({}); voters {voters:?} -> {after:?}", n.name);
                    if after.len() != confirm_voters_after {
                        out!("note: --confirm-voters-after {confirm_voters_after} does not match {}; the cluster would refuse", after.len());
                    }
                    out!("dry run: nothing changed");
                    return Ok(());
                }
                let body = RemoveRequest { node_id, confirm_voters_after };
                let r: RemoveResponse = c.call(reqwest::Method::POST, "/api/admin/cluster/remove-node", Some(&body)).await?;
                out!("removed node {node_id}; voters now {:?}", r.voters);
                if let Some(l) = r.new_leader {
                    out!("leadership was handed to node {l} first");
                }
                Ok(())
            }
        }
    })
}
