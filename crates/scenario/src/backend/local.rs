//! The local backend: each node is a process on a loopback port with its own data dir.
//! `stop`/`kill`/`pause` are signals; there is no network to cut, so `isolate` and
//! `partition` are unsupported.

use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Backend, BackendError, CmdOutput, Exec, ExecFuture, Teardown};
use crate::model::Action;
use crate::profile::Profile;

struct LocalNode {
    port: u16,
    /// The loopback port standing in for the node's `peer_url`.
    peer_port: Option<u16>,
    env_file: PathBuf,
    log_file: PathBuf,
    /// What the container's data volume is here.
    data_dir: PathBuf,
}

/// Where everything of the run is, fixed when the backend is made: shared with the
/// [`LocalExec`] the sampler holds.
struct Layout {
    profile: Profile,
    /// Programs by name: this build's binaries and the profile's host files.
    bins: BTreeMap<String, PathBuf>,
    dir: PathBuf,
    nodes: BTreeMap<String, LocalNode>,
}

pub struct LocalBackend {
    layout: Arc<Layout>,
    /// Length of each node's log when it was last started.
    started_at_byte: BTreeMap<String, u64>,
    children: Arc<Mutex<BTreeMap<String, Child>>>,
}

/// Kills the run's processes (found by their command line, which names the run's directory, so
/// it works from another process too) and removes the directory.
#[derive(Clone, Debug)]
pub struct LocalTeardown {
    dir: PathBuf,
}

fn signal(pid: u32, sig: &str) -> Result<(), BackendError> {
    send(&pid.to_string(), sig)
}

/// Signals every process of the group `pgid`.
fn signal_group(pgid: u32, sig: &str) -> Result<(), BackendError> {
    send(&format!("-{pgid}"), sig)
}

fn send(target: &str, sig: &str) -> Result<(), BackendError> {
    let status = Command::new("kill")
        .args(["-s", sig.trim_start_matches("SIG"), "--", target])
        .stderr(Stdio::null())
        .status()
        .map_err(|e| BackendError::Command(format!("kill: {e}")))?;
    if !status.success() {
        return Err(BackendError::Command(format!(
            "kill -s {sig} {target} failed (process gone?)"
        )));
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

/// SIGKILLs every process of a run under `dir` (leftovers of a killed run): one whose command
/// line names a path under `dir/`, or whose `PATH` holds `dir/bin` (a node started through a
/// shell that exec'd it, like etcd, names the run's directory in its environment only).
/// `/tmp/run1` does not match `/tmp/run10`.
pub fn kill_processes_under(dir: &Path) -> usize {
    let needle = format!("{}/", dir.to_string_lossy().trim_end_matches('/'));
    let bin = dir.join("bin").to_string_lossy().into_owned();
    let mut n = 0;
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        if pid == std::process::id() {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let in_cmdline =
            cmdline.split(|b| *b == 0).any(|arg| String::from_utf8_lossy(arg).contains(&needle));
        let in_path = environ
            .split(|b| *b == 0)
            .filter_map(|v| v.strip_prefix(b"PATH="))
            .any(|p| String::from_utf8_lossy(p).split(':').any(|d| d == bin));
        if in_cmdline || in_path {
            let _ = signal(pid, "SIGCONT");
            if signal(pid, "SIGKILL").is_ok() {
                n += 1;
            }
        }
    }
    n
}

/// A free loopback port, and the listener that holds it until the caller has picked every
/// port it needs (so one run never gets the same port twice). Another process may still take
/// it before the node binds it: the node then fails to start, saying so in its log.
fn free_port(held: &mut Vec<std::net::TcpListener>) -> Result<u16, BackendError> {
    let io = |source| BackendError::Io { path: "127.0.0.1:0".into(), source };
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io)?;
    let port = l.local_addr().map_err(io)?.port();
    held.push(l);
    Ok(port)
}

impl LocalBackend {
    /// Prepares env files and data dirs under `dir` (a fresh directory for this run). `bins`
    /// are this build's binaries; the profile's host files (an installed etcd) are added.
    pub fn new(
        profile: Profile,
        mut bins: BTreeMap<String, PathBuf>,
        dir: PathBuf,
    ) -> Result<LocalBackend, BackendError> {
        if profile.local.is_none() {
            return Err(BackendError::Command(format!(
                "the {} cluster has no [local] section in its profile: it cannot run as local \
                 processes (use --backend docker)",
                profile.name
            )));
        }
        for f in profile.host_files.iter().filter(|f| !f.library) {
            if !f.from.exists() {
                let install =
                    f.package.as_ref().map(|p| format!(": install {p}")).unwrap_or_default();
                return Err(BackendError::Command(format!(
                    "the {} cluster runs {} as a local process, and it is missing{install}",
                    profile.name,
                    f.from.display()
                )));
            }
            bins.insert(f.to.clone(), f.from.clone());
        }
        let mut nodes = BTreeMap::new();
        let mut held = Vec::new();
        for n in &profile.nodes {
            let node_dir = dir.join(&n.name);
            let peer_port = match n.peer_url {
                Some(_) => Some(free_port(&mut held)?),
                None => None,
            };
            let node = LocalNode {
                port: free_port(&mut held)?,
                peer_port,
                env_file: node_dir.join("node.env"),
                log_file: node_dir.join("node.log"),
                data_dir: node_dir.join("data"),
            };
            nodes.insert(n.name.clone(), node);
        }
        drop(held);
        let layout = Arc::new(Layout { profile, bins, dir, nodes });
        layout.prepare()?;
        Ok(LocalBackend { layout, started_at_byte: BTreeMap::new(), children: Arc::default() })
    }

    fn node(&self, name: &str) -> Result<&LocalNode, BackendError> {
        self.layout.node(name)
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

/// Whether a process is the node itself or a one-off beside it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Node,
    OneOff,
}

impl Layout {
    fn local(&self) -> &crate::profile::LocalSpec {
        self.profile.local.as_ref().expect("checked by LocalBackend::new")
    }

    fn node(&self, name: &str) -> Result<&LocalNode, BackendError> {
        self.nodes.get(name).ok_or_else(|| BackendError::Command(format!("no node {name:?}")))
    }

    fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// Writes each node's env file and creates its empty data dir under the run dir, and the
    /// `bin/` directory every process finds the programs in; again after a `down` removed
    /// them, with the same ports.
    fn prepare(&self) -> Result<(), BackendError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| BackendError::Io { path, source }
        };
        let bin_dir = self.bin_dir();
        std::fs::create_dir_all(&bin_dir).map_err(io(&bin_dir))?;
        for (name, path) in &self.bins {
            let link = bin_dir.join(name);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(path, &link).map_err(io(&link))?;
        }
        for n in &self.profile.nodes {
            let node = &self.nodes[&n.name];
            let tls_dir = match &self.profile.run_tls {
                Some(t) => t.dir.join(&n.name).to_string_lossy().into_owned(),
                None => String::new(),
            };
            let text = self
                .profile
                .env_text(&n.name, &tls_dir)
                .map_err(|e| BackendError::Command(e.to_string()))?;
            let mut text = self.localize_text(&n.name, &text)?;
            std::fs::create_dir_all(&node.data_dir).map_err(io(&node.data_dir))?;
            for (key, template) in &self.local().set {
                let value = template
                    .replace("{data_dir}", &node.data_dir.to_string_lossy())
                    .replace("{node}", &n.name);
                let value = self.localize_text(&n.name, &value)?;
                text = set_env_key(&text, key, &value);
            }
            write_private(&node.env_file, text.as_bytes()).map_err(io(&node.env_file))?;
        }
        Ok(())
    }

    /// What a container path or cluster URL is here: every node's URL (and peer URL) becomes
    /// its loopback port, the data volume's path `node`'s data dir, and `{port}` and
    /// `{peer_port}` `node`'s ports. One pass, longest match first, whole words only: a
    /// replaced part is never mapped again (a host path that happens to contain the container
    /// path), `http://node1:2379` is not part of `http://node1:23790`, nor `/var/lib/xp` of
    /// `/var/lib/xpx`.
    fn localize_text(&self, node: &str, text: &str) -> Result<String, BackendError> {
        let own = self.node(node)?;
        let scheme = self.profile.scheme();
        let mut map: Vec<(String, String)> = Vec::new();
        for other in &self.profile.nodes {
            let local = &self.nodes[&other.name];
            map.push((other.url.clone(), format!("{scheme}://127.0.0.1:{}", local.port)));
            if let (Some(url), Some(port)) = (&other.peer_url, local.peer_port) {
                let scheme = url.split("://").next().unwrap_or("http");
                map.push((url.clone(), format!("{scheme}://127.0.0.1:{port}")));
            }
        }
        map.push((
            self.profile.data_dir_in_container.clone(),
            own.data_dir.to_string_lossy().into_owned(),
        ));
        let text = super::fill_ports(&[text.to_owned()], own.port, own.peer_port).remove(0);
        Ok(replace_words(&text, &map))
    }

    /// A process for `node`: the node itself, or a one-off beside it. Its first word is a
    /// program of the build or the profile; `bin/` comes first on its `PATH`.
    fn command(&self, node: &str, words: &[String], role: Role) -> Result<Command, BackendError> {
        let n = self.node(node)?;
        let words =
            words.iter().map(|w| self.localize_text(node, w)).collect::<Result<Vec<_>, _>>()?;
        let bin = self.bins.get(&words[0]).ok_or_else(|| {
            BackendError::Command(format!("no program {:?} in this build or profile", words[0]))
        })?;
        let mut c = Command::new(bin);
        c.args(&words[1..]);
        // Nothing of the runner's environment but what finding programs and temporary files
        // needs (a variable of the shell meant for the system under test would change a node's
        // configuration behind the profile's back).
        c.env_clear();
        for key in ["HOME", "TMPDIR", "LANG", "RUST_LOG", "RUST_BACKTRACE"] {
            if let Some(v) = std::env::var_os(key) {
                c.env(key, v);
            }
        }
        let path = std::env::var("PATH").unwrap_or_default();
        c.env("PATH", format!("{}:{path}", self.bin_dir().display()));
        match &self.local().env_file_flag {
            Some(flag) => {
                c.arg(flag).arg(&n.env_file);
            }
            None if role == Role::Node => {
                let text = std::fs::read_to_string(&n.env_file)
                    .map_err(|source| BackendError::Io { path: n.env_file.clone(), source })?;
                c.envs(env_vars(&text));
            }
            None => {}
        }
        Ok(c)
    }

    async fn output(
        &self,
        node: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<CmdOutput, BackendError> {
        let mut c = self.command(node, cmd, Role::OneOff)?;
        // A group of its own: on a timeout the whole group goes (a shell script's children,
        // an etcd it started), not just the first process.
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        let mut c = tokio::process::Command::from(c);
        c.kill_on_drop(true).stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
        let child = c.spawn().map_err(|e| BackendError::Command(format!("{}: {e}", cmd[0])))?;
        let group = child.id();
        let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(out) => out.map_err(|e| BackendError::Command(format!("{}: {e}", cmd[0])))?,
            Err(_) => {
                if let Some(g) = group {
                    let _ = signal_group(g, "SIGKILL");
                }
                return Err(BackendError::Timeout {
                    after: timeout,
                    what: format!("running {}", cmd.join(" ")),
                });
            }
        };
        Ok(CmdOutput {
            code: out.status.code().unwrap_or(-1) as i64,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            ran: cmd.iter().map(|w| self.localize_text(node, w)).collect::<Result<_, _>>()?,
        })
    }
}

/// `text` with each `from` of `map` replaced by its `to`, in one left-to-right pass (the
/// longest `from` first where several start at one place), where it stands as a whole: not
/// preceded by a letter, digit, `_`, `-`, `.` or `/`, nor followed by a letter, digit, `_`,
/// `-` or `.` (a `/` may follow: a path under it, or a URL's path).
fn replace_words(text: &str, map: &[(String, String)]) -> String {
    let mut map: Vec<&(String, String)> = map.iter().filter(|(f, _)| !f.is_empty()).collect();
    map.sort_by_key(|(f, _)| std::cmp::Reverse(f.len()));
    let part = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.');
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut prev: Option<char> = None;
    while i < text.len() {
        let rest = &text[i..];
        let starts = prev.is_none_or(|c| !part(c) && c != '/');
        let hit = starts
            .then(|| {
                map.iter().find(|(from, _)| {
                    rest.starts_with(from.as_str())
                        && rest[from.len()..].chars().next().is_none_or(|c| !part(c))
                })
            })
            .flatten();
        match hit {
            Some((from, to)) => {
                out.push_str(to);
                prev = from.chars().last();
                i += from.len();
            }
            None => {
                let c = rest.chars().next().expect("i < len");
                out.push(c);
                prev = Some(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

/// An env file's `KEY=VALUE` lines (comments and blank lines skipped, quotes kept off).
pub(crate) fn env_vars(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect()
}

/// Runs a profile's command sources as local processes.
struct LocalExec(Arc<Layout>);

impl Exec for LocalExec {
    fn exec<'a>(&'a self, node: &'a str, cmd: Vec<String>, timeout: Duration) -> ExecFuture<'a> {
        Box::pin(async move { self.0.output(node, &cmd, timeout).await })
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
pub fn supports(action: Action) -> Result<(), String> {
    match action {
        Action::Isolate | Action::Heal => {
            Err("the local backend has no network to cut a node off (use --backend docker)".into())
        }
        Action::Partition | Action::HealPartition => Err(
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

    fn supports(&self, action: Action) -> Result<(), String> {
        supports(action)
    }

    async fn up(&mut self) -> Result<(), BackendError> {
        if !self.layout.dir.exists() {
            self.layout.prepare()?; // a `down` step removed the run dir
        }
        let names: Vec<String> = self.layout.nodes.keys().cloned().collect();
        for n in &names {
            self.start(n).await?;
        }
        for n in &names {
            let base = self.endpoint(n).await?;
            super::wait_answers(&self.layout.profile, n, &base, Duration::from_secs(30)).await?;
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
            .layout
            .command(node, &self.layout.profile.run, Role::Node)?
            .stdout(
                log.try_clone()
                    .map_err(|source| BackendError::Io { path: n.log_file.clone(), source })?,
            )
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| BackendError::Command(format!("cannot start {node}: {e}")))?;
        self.children.lock().unwrap().insert(node.to_owned(), child);
        self.started_at_byte.insert(node.to_owned(), at);
        Ok(())
    }

    async fn pause(&mut self, node: &str) -> Result<(), BackendError> {
        self.kill(node, "SIGSTOP").await
    }

    async fn unpause(&mut self, node: &str) -> Result<(), BackendError> {
        self.kill(node, "SIGCONT").await
    }

    async fn isolate(&mut self, _node: &str) -> Result<(), BackendError> {
        Err(BackendError::Command(self.supports(Action::Isolate).unwrap_err()))
    }

    async fn heal(&mut self, _node: &str) -> Result<(), BackendError> {
        Err(BackendError::Command(self.supports(Action::Heal).unwrap_err()))
    }

    async fn partition(&mut self, _groups: &[Vec<String>]) -> Result<(), BackendError> {
        Err(BackendError::Command(self.supports(Action::Partition).unwrap_err()))
    }

    async fn heal_partition(&mut self) -> Result<(), BackendError> {
        Err(BackendError::Command(self.supports(Action::HealPartition).unwrap_err()))
    }

    async fn oneoff(
        &mut self,
        node: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<CmdOutput, BackendError> {
        self.layout.output(node, cmd, timeout).await
    }

    async fn put_file(
        &mut self,
        node: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<String, BackendError> {
        self.node(node)?;
        let path = self.node(node)?.data_dir.join(name);
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

    fn executor(&self) -> Arc<dyn Exec> {
        Arc::new(LocalExec(self.layout.clone()))
    }

    async fn endpoint(&self, node: &str) -> Result<String, BackendError> {
        Ok(format!("{}://127.0.0.1:{}", self.layout.profile.scheme(), self.node(node)?.port))
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
        let at = self.started_at_byte.get(node).copied().unwrap_or(0);
        let from = (at as usize).min(bytes.len());
        let text = String::from_utf8_lossy(&bytes[from..]);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn teardown(&self) -> Teardown {
        Teardown::Local(LocalTeardown { dir: self.layout.dir.clone() })
    }

    fn keep_hint(&self) -> String {
        let urls: Vec<String> = self
            .layout
            .nodes
            .iter()
            .map(|(n, l)| format!("{n}={}://127.0.0.1:{}", self.layout.profile.scheme(), l.port))
            .collect();
        format!(
            "local cluster kept in {}: {}; remove it with `cargo xtask clean`",
            self.layout.dir.display(),
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

#[cfg(test)]
mod tests {
    use super::replace_words;

    #[test]
    fn container_paths_and_urls_are_mapped_once_and_only_as_whole_words() {
        let map = [
            ("http://node1:2379", "http://127.0.0.1:40001"),
            ("http://node1:23790", "http://127.0.0.1:40002"),
            ("http://node10:2379", "http://127.0.0.1:40010"),
            ("/var/lib/xp", "/run/n1/data"),
            // A host path that itself contains the container path is not mapped again.
            ("/srv", "/srv/var/lib/xp"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()));
        let table = [
            ("--url=http://node1:2379", "--url=http://127.0.0.1:40001"),
            ("http://node1:23790", "http://127.0.0.1:40002"),
            ("http://node10:2379/x", "http://127.0.0.1:40010/x"),
            (
                "a=http://node1:2379,b=http://node10:2379",
                "a=http://127.0.0.1:40001,b=http://127.0.0.1:40010",
            ),
            ("/var/lib/xp/raft", "/run/n1/data/raft"),
            ("/var/lib/xp", "/run/n1/data"),
            ("/var/lib/xpx", "/var/lib/xpx"),
            ("/data/var/lib/xp", "/data/var/lib/xp"),
            ("/var/lib/xp.bak", "/var/lib/xp.bak"),
            ("/srv/a", "/srv/var/lib/xp/a"),
            ("DATA_DIR=/var/lib/xp", "DATA_DIR=/run/n1/data"),
            ("", ""),
            ("ünïcode /var/lib/xp", "ünïcode /run/n1/data"),
        ];
        for (input, want) in table {
            assert_eq!(replace_words(input, &map), want, "input {input:?}");
        }
    }
}
