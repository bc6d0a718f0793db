//! Cluster profiles: everything the runner knows about a particular system under test.
//!
//! The step engine only speaks in profile terms (the target's sources and pointers, the
//! recovery command, the join procedure); each `compose/<name>.profile.toml` fills them in for
//! one system. Another system is another profile file, not engine code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The backends a profile's `backends` list may name.
pub const BACKENDS: &[&str] = &["docker", "local", "swarm"];

/// A profile file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read profile {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}:{line}:{col}: {message}")]
    At { path: PathBuf, line: usize, col: usize, message: String },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    /// Compose service name.
    pub service: String,
    /// The node's URL inside the cluster network (its client API).
    pub url: String,
    /// Port the node listens on inside its container.
    pub port: u16,
    /// The URL the node's peers reach it at, when it is not `url` (etcd's peer port). The
    /// local backend gives it a loopback port of its own; commands name it `{node_peer_url}`
    /// and its port `{peer_port}`.
    #[serde(default)]
    pub peer_url: Option<String>,
    /// The node's env file, relative to the profile.
    pub env_file: PathBuf,
}

impl NodeSpec {
    /// The port of `peer_url` (absent: none; a URL without one: its scheme's default).
    pub fn peer_port(&self) -> Option<u16> {
        reqwest::Url::parse(self.peer_url.as_deref()?).ok()?.port_or_known_default()
    }
}

/// How a node (a stopped one, with an empty disk) joins a running cluster.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinSpec {
    /// Command run for the joining node, in a one-off beside it, before it starts. Besides
    /// `{node}`, `{node_url}` and `{via_url}` (the member it joins through, as the cluster
    /// knows it), `{token_file}` is the path of a file (owner-only, in the node's data dir)
    /// holding the join token, when the cluster issues one: a token never goes in argv.
    pub command: Vec<String>,
    /// Where a join token comes from; absent: the command alone adds the member (etcd's
    /// `member add`).
    #[serde(default)]
    pub token: Option<TokenSpec>,
}

/// An admin request for a join token.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    pub path: String,
    pub ttl_seconds: u64,
    /// Field of the answer holding the token.
    pub field: String,
    /// Field of the request naming the member the joiner replaces; the runner sets it to the
    /// id of the member that has the joining node's URL (if any).
    #[serde(default)]
    pub replaces_field: Option<String>,
}

/// A file of the host (an installed package's binary, the C library it links) put in the
/// image's build context as `<to>`; the profile's Dockerfile places it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostFile {
    pub from: PathBuf,
    pub to: String,
    /// A library, not a program a command may start with.
    #[serde(default)]
    pub library: bool,
    /// What to install when `from` is missing (said in the error).
    #[serde(default)]
    pub package: Option<String>,
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
    /// Flag the node's binaries take to name the env file (xp's `--env-file`), added to the
    /// node's command and to every one-off. Absent: the env file's variables are the node
    /// process's environment, and one-offs run without them (as compose's `env_file:` does).
    #[serde(default)]
    pub env_file_flag: Option<String>,
    /// Env keys set for a local run; `{data_dir}`, `{port}`, `{peer_port}`, `{node}` are
    /// filled in.
    #[serde(default)]
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
    /// Binaries of this workspace (built by cargo) copied into the image and runnable by
    /// `ops` steps.
    #[serde(default)]
    pub binaries: Vec<String>,
    /// Files of the host copied into the image (a system installed from packages).
    #[serde(default)]
    pub host_files: Vec<HostFile>,
    /// Where the env file is mounted and where the data volume is, inside containers.
    /// Absent: compose reads the env file into the container's environment (`env_file:`).
    #[serde(default)]
    pub env_file_in_container: Option<String>,
    pub data_dir_in_container: String,
    /// Env key holding the admin token (read from each node's env file, never printed).
    #[serde(default)]
    pub admin_token_key: Option<String>,
    /// How the runner reads a node's state and writes keys: see [`crate::target`].
    pub target: crate::target::TargetSpec,
    /// The backends this cluster can be built on (absent: every backend). A scenario on this
    /// cluster is SKIPPED on any other, with this list as the reason.
    #[serde(default)]
    pub backends: Option<Vec<String>>,
    /// How a node starts on the local backend.
    #[serde(default)]
    pub run: Vec<String>,
    /// Recovery of a stopped survivor (a one-off beside it), and the destruction of a
    /// stopped node's disk. `{node}` and `{node_url}` are filled in.
    pub recover: Vec<String>,
    pub wipe: Vec<String>,
    pub join: JoinSpec,
    /// Reading a stopped node's log position; absent: `choose-survivor` asks running nodes.
    #[serde(default)]
    pub inspect: Option<InspectSpec>,
    /// Absent: the cluster cannot run as local processes.
    #[serde(default)]
    pub local: Option<LocalSpec>,
    /// Lines a node logs only when it crashed (a Rust panic, a Go `panic:`): every run scans
    /// each node's whole log for them at the end and fails on one. Absent: nothing is scanned.
    #[serde(default)]
    pub crash_patterns: Vec<String>,
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

/// What the backends rely on: a data dir they can map (absolute, not `/`, no trailing slash),
/// nodes with distinct names and URLs that name a port, a `run` command where a backend starts
/// nodes itself, and `{peer_port}` only where nodes have a peer URL.
fn check_layout(p: &Profile) -> Result<(), String> {
    let d = &p.data_dir_in_container;
    if !d.starts_with('/') || d == "/" || d.ends_with('/') {
        return Err(format!(
            "data_dir_in_container: {d:?} must be an absolute directory other than `/`, \
             without a trailing slash (the local backend maps it to each node's data dir)"
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    let mut urls = std::collections::BTreeSet::new();
    for n in &p.nodes {
        if !names.insert(n.name.as_str()) {
            return Err(format!("node {}: two [[node]] tables have this name", n.name));
        }
        let with_port = |u: &str| reqwest::Url::parse(u).ok().and_then(|u| u.port()).is_some();
        for (what, url) in
            std::iter::once(("url", Some(&n.url))).chain([("peer_url", n.peer_url.as_ref())])
        {
            let Some(url) = url else { continue };
            if !with_port(url) {
                return Err(format!(
                    "node {}: {what} {url:?} must be an absolute URL with a port, like \
                     \"http://{}:8080\"",
                    n.name, n.service
                ));
            }
            if !urls.insert(url.trim_end_matches('/').to_owned()) {
                return Err(format!("node {}: {what} {url:?} is another node's URL too", n.name));
            }
        }
    }
    let starts_nodes =
        p.backends.as_ref().is_none_or(|b| b.iter().any(|b| b == "local" || b == "swarm"));
    match p.run.first() {
        None if starts_nodes => {
            return Err("run: empty, but the local and swarm backends start each node with it \
                        (or say `backends = [\"docker\"]`)"
                .into())
        }
        Some(first) if !p.programs().contains(first) => {
            return Err(format!(
                "run: {:?} must start with a program of the image ({})",
                p.run,
                p.programs().join(", ")
            ))
        }
        _ => {}
    }
    if p.nodes.iter().all(|n| n.peer_url.is_none()) {
        let mut words: Vec<&String> =
            p.run.iter().chain(&p.recover).chain(&p.wipe).chain(&p.join.command).collect();
        words.extend(p.local.iter().flat_map(|l| l.set.values()));
        words.extend(p.inspect.iter().flat_map(|i| &i.command));
        if let Some(w) = words.iter().find(|w| w.contains("{peer_port}")) {
            return Err(format!(
                "{w:?} names {{peer_port}}, but no [[node]] has a peer_url to take it from"
            ));
        }
    }
    Ok(())
}

impl Profile {
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ProfileError::Read { path: path.to_owned(), source })?;
        let mut p: Profile = toml::from_str(&text)
            .map_err(|e| ProfileError::Invalid { path: path.to_owned(), message: e.to_string() })?;
        p.dir = path.parent().unwrap_or(Path::new(".")).to_owned();
        if let Err(e) = p.target.check() {
            let (line, col) = crate::parse::line_col(&text, e.span.start);
            return Err(ProfileError::At { path: path.to_owned(), line, col, message: e.message });
        }
        let invalid = |message: String| ProfileError::Invalid { path: path.to_owned(), message };
        let programs = p.programs();
        let commands =
            [("recover", &p.recover), ("wipe", &p.wipe), ("join.command", &p.join.command)]
                .into_iter()
                .chain(p.inspect.as_ref().map(|i| ("inspect.command", &i.command)));
        for (what, cmd) in commands {
            match cmd.first() {
                Some(first) if programs.contains(first) => {}
                _ => {
                    return Err(invalid(format!(
                        "{what}: {cmd:?} must start with a program of the image ({})",
                        programs.join(", ")
                    )))
                }
            }
        }
        for (name, source) in &p.target.sources {
            let crate::target::spec::SourceSpec::Command(c) = source else { continue };
            let first = &c.command.get_ref()[0];
            if !programs.contains(first) {
                let (line, col) = crate::parse::line_col(&text, c.command.span().start);
                return Err(ProfileError::At {
                    path: path.to_owned(),
                    line,
                    col,
                    message: format!(
                        "target.sources.{name}: {first:?} is no program of the image ({})",
                        programs.join(", ")
                    ),
                });
            }
        }
        if p.crash_patterns.iter().any(|c| c.trim().is_empty()) {
            return Err(invalid("crash_patterns: an empty pattern would match every line".into()));
        }
        if p.nodes.is_empty() {
            return Err(ProfileError::Invalid {
                path: path.to_owned(),
                message: "no [[node]]".into(),
            });
        }
        check_layout(&p).map_err(invalid)?;
        let wants_file = p.join.command.iter().any(|w| w.contains("{token_file}"));
        if p.join.command.iter().any(|w| w.contains("{token}")) {
            return Err(ProfileError::Invalid {
                path: path.to_owned(),
                message: "join.command: `{token}` would put the join token in argv (every \
                          process list shows it); use `{token_file}`, the path of a file \
                          holding it"
                    .into(),
            });
        }
        if p.join.token.is_some() != wants_file {
            return Err(ProfileError::Invalid {
                path: path.to_owned(),
                message: if wants_file {
                    "join.command names `{token_file}` but [join.token] says where no token \
                     comes from"
                } else {
                    "join.command must pass `{token_file}` (the file holding the token)"
                }
                .into(),
            });
        }
        if p.local.is_none() && p.backends.as_ref().is_none_or(|b| b.iter().any(|b| b == "local")) {
            return Err(invalid(
                "no [local] section, so the cluster cannot run as local processes: add one, or \
                 say `backends = [\"docker\"]`"
                    .into(),
            ));
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
            .map(|n| (n.name.clone(), crate::tls::host_of(&n.url).to_owned()))
            .collect();
        self.run_tls = Some(std::sync::Arc::new(crate::tls::RunTls::create(dir, &nodes)?));
        for n in &mut self.nodes {
            n.url = n.url.replacen("http://", "https://", 1);
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
                let plain = n.url.replacen("https://", "http://", 1);
                text = text.replace(&plain, &n.url);
            }
            text.push_str(&run.env_lines(tls, node, tls_dir));
        }
        Ok(text)
    }

    /// `compose/<name>.profile.toml` under `root`.
    pub fn path_for(root: &Path, name: &str) -> PathBuf {
        root.join("compose").join(format!("{name}.profile.toml"))
    }

    /// A path that answers (any HTTP status) once a node serves: the primary source's.
    pub fn ready_path(&self) -> &str {
        self.target
            .sources
            .get(self.target.primary())
            .and_then(|s| match s {
                crate::target::spec::SourceSpec::Http(r) => Some(r.path.get_ref().as_str()),
                crate::target::spec::SourceSpec::Command(_) => None,
            })
            .unwrap_or("/")
    }

    /// What may start a command in the image: the built binaries and the host files.
    pub fn programs(&self) -> Vec<String> {
        let files = self.host_files.iter().filter(|f| !f.library).map(|f| f.to.clone());
        self.binaries.iter().cloned().chain(files).collect()
    }

    /// `words` with `{node}`, `{node_url}` and `{node_peer_url}` (and any of `extra`) filled
    /// in for `node`. `{port}` and `{peer_port}` are left to the backend, which knows where the
    /// node listens.
    pub fn command(&self, words: &[String], node: &str, extra: &[(&str, &str)]) -> Vec<String> {
        let spec = self.node(node);
        let url = spec.map(|n| n.url.as_str()).unwrap_or("");
        let peer_url = spec.and_then(|n| n.peer_url.as_deref()).unwrap_or(url);
        words
            .iter()
            .map(|w| {
                let mut w = w
                    .replace("{node_url}", url)
                    .replace("{node_peer_url}", peer_url)
                    .replace("{node}", node);
                for (k, v) in extra {
                    w = w.replace(&format!("{{{k}}}"), v);
                }
                w
            })
            .collect()
    }

    /// Whether this cluster can be built on `backend`.
    pub fn runs_on(&self, backend: &str) -> bool {
        self.backends.as_ref().is_none_or(|b| b.iter().any(|x| x == backend))
    }

    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn resolve(&self, rel: &Path) -> PathBuf {
        self.dir.join(rel)
    }
}

impl Profile {
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
