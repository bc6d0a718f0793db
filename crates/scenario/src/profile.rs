//! Cluster profiles: everything the runner knows about a particular system under test.
//!
//! The step engine only speaks in profile terms (info endpoint, role field, recovery command,
//! join procedure); `compose/xp-3.profile.toml` fills them in for the xp cluster. Another system
//! (a 5-node variant, etcd) is another profile file, not engine code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const DEFAULT_PROFILE: &str = "xp-3";

/// The backends a profile's `backends` list may name.
pub const BACKENDS: &[&str] = &["docker", "local"];

/// A profile file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read profile {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    /// Compose service name.
    pub service: String,
    /// The URL peers use inside the cluster network.
    pub api_base_url: String,
    /// Port the node listens on inside its container.
    pub port: u16,
    /// The node's env file, relative to the profile.
    pub env_file: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinSpec {
    pub token_path: String,
    pub token_ttl_seconds: u64,
    pub token_field: String,
    /// Field of the token request naming the member the joiner replaces; the runner sets it
    /// to the id of the member that has the joining node's URL (if any).
    #[serde(default)]
    pub replaces_field: Option<String>,
    /// Command run for the joining node; `{token_file}` is replaced by the path of a file
    /// (owner-only, in the node's data dir) holding the token: a token never goes in argv.
    pub command: Vec<String>,
}

/// How to read a stopped node's Raft position, to choose the survivor of a quorum loss.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InspectSpec {
    /// A command printing JSON about the stopped node's state.
    pub command: Vec<String>,
    /// JSON pointers to the term of the last log entry, its index, and the node id.
    pub last_log_term: String,
    pub last_log_index: String,
    pub node_id: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSpec {
    /// Flag the binaries take to name the env file.
    pub env_file_flag: String,
    /// Env keys set for a local run; `{data_dir}`, `{port}`, `{node}` are filled in.
    pub set: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub summary: String,
    pub compose_file: PathBuf,
    pub dockerfile: PathBuf,
    pub image_repo: String,
    /// Binaries copied into the image (from the build) and runnable by `ops` steps.
    pub binaries: Vec<String>,
    /// Where the env file is mounted and where the data volume is, inside containers.
    pub env_file_in_container: String,
    pub data_dir_in_container: String,
    /// Env key holding the admin token (read from each node's env file, never printed).
    pub admin_token_key: String,
    pub info_path: String,
    /// Known fields of the info answer (for validating `expect`); empty: any.
    #[serde(default)]
    pub info_fields: Vec<String>,
    pub role_field: String,
    pub leader_role: String,
    pub follower_role: String,
    pub node_id_field: String,
    pub leader_id_field: String,
    pub term_field: String,
    /// Field holding the index of the last entry the node applied (committed): how the runner
    /// tells a committing leader from a deposed one that still says "leader" (split-brain
    /// detection). Absent: no split brain can be detected.
    #[serde(default)]
    pub applied_field: Option<String>,
    /// The backends this cluster can be built on (absent: every backend). A scenario on this
    /// cluster is SKIPPED on any other, with this list as the reason.
    #[serde(default)]
    pub backends: Option<Vec<String>>,
    /// `{key}` is replaced; PUT sends `{"value": v}`, GET answers `{"value": v}`.
    pub kv_path: String,
    pub run: Vec<String>,
    pub recover: Vec<String>,
    pub wipe: Vec<String>,
    pub join: JoinSpec,
    pub inspect: InspectSpec,
    pub local: LocalSpec,
    /// How a node is pointed at TLS files; absent: the cluster always runs plain HTTP.
    #[serde(default)]
    pub tls: Option<crate::tls::TlsSpec>,
    /// This run's CA and certificates, once [`Profile::with_tls`] made them: nodes serve HTTPS
    /// and every URL of the profile is `https://`.
    #[serde(skip)]
    pub run_tls: Option<std::sync::Arc<crate::tls::RunTls>>,
    #[serde(rename = "node")]
    pub nodes: Vec<NodeSpec>,
    /// The directory the profile was loaded from; relative paths are resolved against it.
    #[serde(skip)]
    pub dir: PathBuf,
}

impl Profile {
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ProfileError::Read { path: path.to_owned(), source })?;
        let mut p: Profile = toml::from_str(&text)
            .map_err(|e| ProfileError::Invalid { path: path.to_owned(), message: e.to_string() })?;
        p.dir = path.parent().unwrap_or(Path::new(".")).to_owned();
        if p.nodes.is_empty() {
            return Err(ProfileError::Invalid {
                path: path.to_owned(),
                message: "no [[node]]".into(),
            });
        }
        if p.join.command.iter().any(|w| w.contains("{token}")) {
            return Err(ProfileError::Invalid {
                path: path.to_owned(),
                message: "join.command: `{token}` would put the join token in argv (every \
                          process list shows it); use `{token_file}`, the path of a file \
                          holding it"
                    .into(),
            });
        }
        if !p.join.command.iter().any(|w| w.contains("{token_file}")) {
            return Err(ProfileError::Invalid {
                path: path.to_owned(),
                message: "join.command must pass `{token_file}` (the file holding the token)"
                    .into(),
            });
        }
        for b in p.backends.iter().flatten() {
            if !BACKENDS.contains(&b.as_str()) {
                return Err(ProfileError::Invalid {
                    path: path.to_owned(),
                    message: format!(
                        "backends: unknown backend {b:?}; expected one of {}",
                        BACKENDS.join(", ")
                    ),
                });
            }
        }
        Ok(p)
    }

    /// Turns TLS on for a run (when the profile has `[tls]`): a CA and certificates under
    /// `dir`, and every node URL made `https://`. Without `[tls]` the profile is unchanged.
    pub fn with_tls(mut self, dir: &Path) -> Result<Profile, String> {
        if self.tls.is_none() {
            return Ok(self);
        }
        let nodes: Vec<(String, String)> = self
            .nodes
            .iter()
            .map(|n| (n.name.clone(), crate::tls::host_of(&n.api_base_url).to_owned()))
            .collect();
        self.run_tls = Some(std::sync::Arc::new(crate::tls::RunTls::create(dir, &nodes)?));
        for n in &mut self.nodes {
            n.api_base_url = n.api_base_url.replacen("http://", "https://", 1);
        }
        Ok(self)
    }

    /// `https` when this run has TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.run_tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// An HTTP client builder for this run (trusting the run's CA, with the runner's
    /// certificate, when TLS is on).
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        crate::tls::client_builder(self.run_tls.as_deref())
    }

    /// `node`'s env file for this run: with TLS, its profile URLs made `https://` and the TLS
    /// keys added, naming files in `tls_dir` (the node's TLS directory as the node sees it).
    pub fn env_text(&self, node: &str, tls_dir: &str) -> Result<String, ProfileError> {
        let spec = self.node(node).ok_or_else(|| ProfileError::Invalid {
            path: self.dir.clone(),
            message: format!("no node {node:?}"),
        })?;
        let path = self.resolve(&spec.env_file);
        let mut text = std::fs::read_to_string(&path).map_err(|e| ProfileError::Invalid {
            path: path.clone(),
            message: format!("cannot read {node}'s env file: {e}"),
        })?;
        if let (Some(run), Some(tls)) = (&self.run_tls, &self.tls) {
            for n in &self.nodes {
                let plain = n.api_base_url.replacen("https://", "http://", 1);
                text = text.replace(&plain, &n.api_base_url);
            }
            text.push_str(&run.env_lines(tls, node, tls_dir));
        }
        Ok(text)
    }

    /// `compose/<name>.profile.toml` under `root`.
    pub fn path_for(root: &Path, name: &str) -> PathBuf {
        root.join("compose").join(format!("{name}.profile.toml"))
    }

    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn resolve(&self, rel: &Path) -> PathBuf {
        self.dir.join(rel)
    }

    /// The value of `key` in a node's env file.
    pub fn env_value(&self, node: &str, key: &str) -> Option<String> {
        let spec = self.node(node)?;
        let text = std::fs::read_to_string(self.resolve(&spec.env_file)).ok()?;
        text.lines()
            .filter_map(|l| l.trim().split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().trim_matches('"').to_owned())
    }
}
