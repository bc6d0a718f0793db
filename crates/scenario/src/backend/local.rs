//! The local backend: each node is a process on a loopback port with its own data dir.
//! `stop`/`kill`/`pause` are signals; there is no network to cut, so `isolate` and
//! `partition` are unsupported.

use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{poll, Backend, BackendError, CmdOutput, Teardown};
use crate::profile::Profile;

struct LocalNode {
    port: u16,
    env_file: PathBuf,
    log_file: PathBuf,
    /// Length of the log when the node was last started.
    started_at_byte: u64,
}

pub struct LocalBackend {
    profile: Profile,
    bins: BTreeMap<String, PathBuf>,
    dir: PathBuf,
    nodes: BTreeMap<String, LocalNode>,
    children: Arc<Mutex<BTreeMap<String, Child>>>,
    http: reqwest::Client,
}

/// Kills the run's processes (found by their command line, which names the run's directory, so
/// it works from another process too) and removes the directory.
#[derive(Clone, Debug)]
pub struct LocalTeardown {
    dir: PathBuf,
}

fn signal(pid: u32, sig: &str) -> Result<(), BackendError> {
    let status = Command::new("kill")
        .args(["-s", sig.trim_start_matches("SIG"), &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .map_err(|e| BackendError::Command(format!("kill: {e}")))?;
    if !status.success() {
        return Err(BackendError::Command(format!("kill -s {sig} {pid} failed (process gone?)")));
    }
    Ok(())
}

impl LocalTeardown {
    pub fn run(&self) -> Result<(), BackendError> {
        kill_processes_under(&self.dir);
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(BackendError::Io { path: self.dir.clone(), source }),
        }
    }
}

/// SIGKILLs every process whose command line mentions `dir` (leftovers of a killed run).
pub fn kill_processes_under(dir: &Path) -> usize {
    let needle = dir.to_string_lossy().to_string();
    let mut n = 0;
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        if pid == std::process::id() {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            let _ = signal(pid, "SIGCONT");
            if signal(pid, "SIGKILL").is_ok() {
                n += 1;
            }
        }
    }
    n
}

fn free_port() -> Result<u16, BackendError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|source| BackendError::Io { path: "127.0.0.1:0".into(), source })?;
    Ok(l.local_addr().unwrap().port())
}

impl LocalBackend {
    /// Prepares env files and data dirs under `dir` (a fresh directory for this run).
    pub fn new(
        profile: Profile,
        bins: BTreeMap<String, PathBuf>,
        dir: PathBuf,
    ) -> Result<LocalBackend, BackendError> {
        if profile.local.is_none() {
            return Err(BackendError::Command(format!(
                "the {} cluster has no [local] section in its profile: it cannot run as local \
                 processes (use --backend docker)",
                profile.name
            )));
        }
        let mut ports = BTreeMap::new();
        for n in &profile.nodes {
            ports.insert(n.name.clone(), free_port()?);
        }
        let nodes = profile
            .nodes
            .iter()
            .map(|n| {
                let node_dir = dir.join(&n.name);
                let node = LocalNode {
                    port: ports[&n.name],
                    env_file: node_dir.join("node.env"),
                    log_file: node_dir.join("node.log"),
                    started_at_byte: 0,
                };
                (n.name.clone(), node)
            })
            .collect();
        let http =
            profile.client_builder().timeout(Duration::from_secs(2)).build().expect("http client");
        let backend = LocalBackend { profile, bins, dir, nodes, children: Arc::default(), http };
        backend.prepare()?;
        Ok(backend)
    }

    /// Writes each node's env file and creates its empty data dir under the run dir; again
    /// after a `down` removed them, with the same ports.
    fn prepare(&self) -> Result<(), BackendError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| BackendError::Io { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        for n in &self.profile.nodes {
            let node = &self.nodes[&n.name];
            let tls_dir = match &self.profile.run_tls {
                Some(t) => t.dir.join(&n.name).to_string_lossy().into_owned(),
                None => String::new(),
            };
            let mut text = self
                .profile
                .env_text(&n.name, &tls_dir)
                .map_err(|e| BackendError::Command(e.to_string()))?;
            // Peers' URLs inside the cluster network become loopback URLs.
            let scheme = self.profile.scheme();
            for other in &self.profile.nodes {
                text = text.replace(
                    &other.url,
                    &format!("{scheme}://127.0.0.1:{}", self.nodes[&other.name].port),
                );
            }
            let data_dir = self.dir.join(&n.name).join("data");
            std::fs::create_dir_all(&data_dir).map_err(io(&data_dir))?;
            for (key, template) in &self.local().set {
                let value = template
                    .replace("{data_dir}", &data_dir.to_string_lossy())
                    .replace("{port}", &node.port.to_string())
                    .replace("{node}", &n.name);
                text = set_env_key(&text, key, &value);
            }
            write_private(&node.env_file, text.as_bytes()).map_err(io(&node.env_file))?;
        }
        Ok(())
    }

    fn local(&self) -> &crate::profile::LocalSpec {
        self.profile.local.as_ref().expect("checked by LocalBackend::new")
    }

    fn node(&self, name: &str) -> Result<&LocalNode, BackendError> {
        self.nodes.get(name).ok_or_else(|| BackendError::Command(format!("no node {name:?}")))
    }

    fn command(&self, node: &str, words: &[String]) -> Result<Command, BackendError> {
        let n = self.node(node)?;
        let bin = self.bins.get(&words[0]).ok_or_else(|| {
            BackendError::Command(format!("no binary {:?} in this build", words[0]))
        })?;
        let mut c = Command::new(bin);
        c.args(&words[1..]).arg(&self.local().env_file_flag).arg(&n.env_file);
        Ok(c)
    }

    fn pid(&self, node: &str) -> Option<u32> {
        self.children.lock().unwrap().get(node).map(|c| c.id())
    }

    /// Waits for the node's process to exit; true if it did.
    async fn wait_exit(&self, node: &str, timeout: Duration) -> bool {
        let start = tokio::time::Instant::now();
        loop {
            {
                let mut children = self.children.lock().unwrap();
                match children.get_mut(node) {
                    None => return true,
                    Some(c) => {
                        if let Ok(Some(_)) = c.try_wait() {
                            children.remove(node);
                            return true;
                        }
                    }
                }
            }
            if start.elapsed() >= timeout {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn set_env_key(text: &str, key: &str, value: &str) -> String {
    let mut found = false;
    let mut out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.trim_start().split_once('=').is_some_and(|(k, _)| k.trim() == key) {
                found = true;
                format!("{key}={value}")
            } else {
                l.to_owned()
            }
        })
        .collect();
    if !found {
        out.push(format!("{key}={value}"));
    }
    out.join("\n") + "\n"
}

/// What the local backend cannot do, and why (also asked by `--plan --backend local`).
pub fn supports(action: &str) -> Result<(), String> {
    match action {
        "isolate" | "heal" => {
            Err("the local backend has no network to cut a node off (use --backend docker)".into())
        }
        "partition" | "heal-partition" => Err(
            "the local backend runs every node on loopback, with no network to partition (use --backend docker)"
                .into(),
        ),
        _ => Ok(()),
    }
}

impl Backend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    fn supports(&self, action: &str) -> Result<(), String> {
        supports(action)
    }

    async fn up(&mut self) -> Result<(), BackendError> {
        if !self.dir.exists() {
            self.prepare()?; // a `down` step removed the run dir
        }
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for n in &names {
            self.start(n).await?;
        }
        for n in &names {
            let url = format!("{}{}", self.endpoint(n).await?, self.profile.ready_path());
            let http = self.http.clone();
            poll(&format!("{n} to answer {url}"), Duration::from_secs(30), Duration::from_millis(50), || {
                let (http, url) = (http.clone(), url.clone());
                async move { http.get(&url).send().await.map(|_| ()).map_err(|e| e.to_string()) }
            })
            .await?;
        }
        Ok(())
    }

    async fn stop(&mut self, node: &str, timeout: Duration) -> Result<(), BackendError> {
        let Some(pid) = self.pid(node) else { return Ok(()) };
        let _ = signal(pid, "SIGCONT");
        signal(pid, "SIGTERM")?;
        if !self.wait_exit(node, timeout).await {
            signal(pid, "SIGKILL")?;
            self.wait_exit(node, Duration::from_secs(5)).await;
        }
        Ok(())
    }

    async fn kill(&mut self, node: &str, sig: &str) -> Result<(), BackendError> {
        let pid = self
            .pid(node)
            .ok_or_else(|| BackendError::Command(format!("{node} is not running")))?;
        signal(pid, sig)?;
        if matches!(sig, "SIGKILL" | "SIGTERM" | "SIGINT")
            && !self.wait_exit(node, Duration::from_secs(10)).await
        {
            return Err(BackendError::Command(format!("{node} did not exit after {sig}")));
        }
        Ok(())
    }

    async fn start(&mut self, node: &str) -> Result<(), BackendError> {
        if self.pid(node).is_some() && !self.wait_exit(node, Duration::ZERO).await {
            return Ok(()); // already running
        }
        let n = self.node(node)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log_file)
            .map_err(|source| BackendError::Io { path: n.log_file.clone(), source })?;
        let at = log.metadata().map(|m| m.len()).unwrap_or(0);
        let child = self
            .command(node, &self.profile.run.clone())?
            .stdout(
                log.try_clone()
                    .map_err(|source| BackendError::Io { path: n.log_file.clone(), source })?,
            )
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| BackendError::Command(format!("cannot start {node}: {e}")))?;
        self.children.lock().unwrap().insert(node.to_owned(), child);
        if let Some(n) = self.nodes.get_mut(node) {
            n.started_at_byte = at;
        }
        Ok(())
    }

    async fn pause(&mut self, node: &str) -> Result<(), BackendError> {
        self.kill(node, "SIGSTOP").await
    }

    async fn unpause(&mut self, node: &str) -> Result<(), BackendError> {
        self.kill(node, "SIGCONT").await
    }

    async fn isolate(&mut self, _node: &str) -> Result<(), BackendError> {
        Err(BackendError::Command(self.supports("isolate").unwrap_err()))
    }

    async fn heal(&mut self, _node: &str) -> Result<(), BackendError> {
        Err(BackendError::Command(self.supports("heal").unwrap_err()))
    }

    async fn partition(&mut self, _groups: &[Vec<String>]) -> Result<(), BackendError> {
        Err(BackendError::Command(self.supports("partition").unwrap_err()))
    }

    async fn heal_partition(&mut self) -> Result<(), BackendError> {
        Err(BackendError::Command(self.supports("heal-partition").unwrap_err()))
    }

    async fn oneoff(
        &mut self,
        node: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<CmdOutput, BackendError> {
        let mut c = tokio::process::Command::from(self.command(node, cmd)?);
        c.kill_on_drop(true);
        let out = tokio::time::timeout(timeout, c.output())
            .await
            .map_err(|_| BackendError::Timeout {
                after: timeout,
                what: format!("running {}", cmd.join(" ")),
            })?
            .map_err(|e| BackendError::Command(format!("{}: {e}", cmd[0])))?;
        Ok(CmdOutput {
            code: out.status.code().unwrap_or(-1) as i64,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    async fn put_file(
        &mut self,
        node: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<String, BackendError> {
        self.node(node)?;
        let path = self.dir.join(node).join("data").join(name);
        // Inputs may be secrets (a join token): owner-only.
        let _ = std::fs::remove_file(&path);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, bytes))
            .map_err(|source| BackendError::Io { path: path.clone(), source })?;
        Ok(path.to_string_lossy().into_owned())
    }

    async fn endpoint(&self, node: &str) -> Result<String, BackendError> {
        Ok(format!("{}://127.0.0.1:{}", self.profile.scheme(), self.node(node)?.port))
    }

    async fn alive(&self, node: &str) -> Result<bool, BackendError> {
        Ok(!self.wait_exit(node, Duration::ZERO).await)
    }

    async fn logs(&self, node: &str, lines: usize) -> String {
        let Ok(n) = self.node(node) else { return String::new() };
        let text = std::fs::read_to_string(&n.log_file).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    async fn logs_since_start(&self, node: &str, lines: usize) -> String {
        let Ok(n) = self.node(node) else { return String::new() };
        let bytes = std::fs::read(&n.log_file).unwrap_or_default();
        let from = (n.started_at_byte as usize).min(bytes.len());
        let text = String::from_utf8_lossy(&bytes[from..]);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn teardown(&self) -> Teardown {
        Teardown::Local(LocalTeardown { dir: self.dir.clone() })
    }

    fn keep_hint(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|(n, l)| format!("{n}={}://127.0.0.1:{}", self.profile.scheme(), l.port))
            .collect();
        format!(
            "local cluster kept in {}: {}; remove it with `cargo xtask clean`",
            self.dir.display(),
            urls.join(" ")
        )
    }
}

/// Writes `bytes` to `path`, owner-only (env files hold the cluster's secrets).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    std::io::Write::write_all(&mut f, bytes)?;
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
}
