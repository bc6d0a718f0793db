//! Where a cluster runs: containers under docker compose, or processes on loopback.
//!
//! The engine drives a [`Backend`]; a backend knows nothing of scenarios, only of nodes by
//! name and the profile's commands.

pub mod docker;
pub mod local;
pub mod swarm;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use docker::DockerBackend;

use crate::model::Action;
pub use local::LocalBackend;
pub use swarm::SwarmBackend;

/// A backend operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The container engine refused or failed.
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    /// A command (compose, a node binary) failed.
    #[error("{0}")]
    Command(String),
    /// A wait ran out.
    #[error("timed out after {after:?} {what}")]
    Timeout { after: Duration, what: String },
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    /// A one-off's process never started (so nothing it would do was done): safe to retry.
    #[error("{0}")]
    NotStarted(String),
}

/// A one-off command's result.
#[derive(Clone, Debug, Default)]
pub struct CmdOutput {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
    /// The command as the backend ran it: `{port}` and `{peer_port}` filled, and on the local
    /// backend container paths and URLs mapped (what a step line shows).
    pub ran: Vec<String>,
}

/// The operations a scenario needs from wherever the cluster runs.
// The engine is generic over the backend (no `dyn`), so `Send` bounds on these futures are not
// needed: the engine runs on one task.
#[allow(async_fn_in_trait)]
pub trait Backend {
    fn name(&self) -> &'static str;
    /// `Err(reason)` when this backend cannot do `action`; the scenario is then skipped.
    fn supports(&self, action: Action) -> Result<(), String>;
    /// Creates and starts every node.
    async fn up(&mut self) -> Result<(), BackendError>;
    /// SIGTERM, then SIGKILL after `timeout`.
    async fn stop(&mut self, node: &str, timeout: Duration) -> Result<(), BackendError>;
    /// Stops `nodes` together: a step's nodes go down at one moment, as a zone does, so the
    /// last ones up cannot elect a leader in between. One after the other by default, for
    /// backends whose `stop` takes milliseconds; override where it takes seconds.
    async fn stop_all(&mut self, nodes: &[String], timeout: Duration) -> Result<(), BackendError> {
        for n in nodes {
            self.stop(n, timeout).await?;
        }
        Ok(())
    }
    async fn kill(&mut self, node: &str, signal: &str) -> Result<(), BackendError>;
    async fn start(&mut self, node: &str) -> Result<(), BackendError>;
    async fn pause(&mut self, node: &str) -> Result<(), BackendError>;
    async fn unpause(&mut self, node: &str) -> Result<(), BackendError>;
    async fn isolate(&mut self, node: &str) -> Result<(), BackendError>;
    async fn heal(&mut self, node: &str) -> Result<(), BackendError>;
    /// Splits the cluster network into `groups` (disjoint, covering every node): nodes in
    /// different groups cannot reach each other, nodes in one group can, and the runner still
    /// reaches every node (its endpoint may change).
    async fn partition(&mut self, groups: &[Vec<String>]) -> Result<(), BackendError>;
    /// Undoes [`Backend::partition`]: every node back where it was, same address and aliases.
    async fn heal_partition(&mut self) -> Result<(), BackendError>;
    /// Runs `cmd` (first word: a profile binary) against the node's data and env file while the
    /// node itself is stopped.
    async fn oneoff(
        &mut self,
        node: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<CmdOutput, BackendError>;
    /// Puts a file into the node's data directory (its volume) and returns its path as the
    /// node's commands see it.
    async fn put_file(
        &mut self,
        node: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<String, BackendError>;
    /// Runs commands beside running nodes (a profile's command sources); it outlives borrows
    /// of the backend, so the sampler's task can hold it.
    fn executor(&self) -> Arc<dyn Exec>;
    /// The node's API base URL as reachable from the runner.
    async fn endpoint(&self, node: &str) -> Result<String, BackendError>;
    /// Whether the node's process is alive (it may have exited by itself).
    async fn alive(&self, node: &str) -> Result<bool, BackendError>;
    /// The last `lines` lines of the node's log.
    async fn logs(&self, node: &str, lines: usize) -> String;
    /// The last `lines` lines its process wrote since it was last started (nothing of an
    /// earlier run of the same node).
    async fn logs_since_start(&self, node: &str, lines: usize) -> String;
    /// What to run to remove everything this run created, even after a panic or Ctrl-C.
    fn teardown(&self) -> Teardown;
    /// How a developer reaches the cluster when it is kept (`--keep`).
    fn keep_hint(&self) -> String;
}

/// A future an [`Exec`] returns.
pub type ExecFuture<'a> =
    Pin<Box<dyn Future<Output = Result<CmdOutput, BackendError>> + Send + 'a>>;

/// Runs a command beside a running node: inside its container (`docker exec`), or as a local
/// process. The command's first word is one of the profile's programs; `{port}` and
/// `{peer_port}` are filled with where the node listens, as the command sees it.
pub trait Exec: Send + Sync {
    fn exec<'a>(&'a self, node: &'a str, cmd: Vec<String>, timeout: Duration) -> ExecFuture<'a>;
}

/// `words` with `{port}` and `{peer_port}` filled in (a node without a peer URL: its port).
pub fn fill_ports(words: &[String], port: u16, peer_port: Option<u16>) -> Vec<String> {
    let peer = peer_port.unwrap_or(port).to_string();
    let port = port.to_string();
    words.iter().map(|w| w.replace("{peer_port}", &peer).replace("{port}", &port)).collect()
}

/// Everything needed to remove a run's resources, detached from the backend.
#[derive(Clone, Debug)]
pub enum Teardown {
    Docker(docker::DockerTeardown),
    Local(local::LocalTeardown),
    Swarm(swarm::SwarmTeardown),
}

impl Teardown {
    pub async fn run(&self) -> Result<(), BackendError> {
        match self {
            Teardown::Docker(t) => t.run().await,
            Teardown::Local(t) => t.run(),
            Teardown::Swarm(t) => t.run().await,
        }
    }
}

/// Waits (`timeout` at most) until `node` answers any HTTP status at `base` + the profile's
/// ready path: its server is up.
pub(crate) async fn wait_answers(
    profile: &crate::profile::Profile,
    node: &str,
    base: &str,
    timeout: Duration,
) -> Result<(), BackendError> {
    let url = format!("{base}{}", profile.ready_path());
    let http = profile
        .client_builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| BackendError::Command(format!("an HTTP client for {url}: {e}")))?;
    poll(&format!("{node} to answer {url}"), timeout, Duration::from_millis(50), || {
        let (http, url) = (http.clone(), url.clone());
        async move { http.get(&url).send().await.map(|_| ()).map_err(|e| e.to_string()) }
    })
    .await
}

/// Polls `f` every `every` until it is `Ok` or `timeout` passes; the error names the last failure.
pub async fn poll<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: F,
) -> Result<T, BackendError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = tokio::time::Instant::now();
    loop {
        let last = match f().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if start.elapsed() >= timeout {
            return Err(BackendError::Timeout {
                after: timeout,
                what: format!("waiting for {what}; last saw: {last}"),
            });
        }
        tokio::time::sleep(every).await;
    }
}
