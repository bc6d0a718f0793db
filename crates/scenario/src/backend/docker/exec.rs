//! Commands run inside a running node's container (`docker exec`): a profile's command
//! sources, such as `etcdctl member list -w json` against the member beside it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::Docker;
use futures_util::StreamExt;

use super::find_container;
use crate::backend::{fill_ports, BackendError, CmdOutput, Exec, ExecFuture};
use crate::profile::Profile;

/// What an exec needs of the backend, detached from it (the sampler's task holds one).
pub(crate) struct DockerExec {
    pub(crate) docker: Docker,
    pub(crate) project: String,
    pub(crate) profile: Arc<Profile>,
    /// Container ids by node; a node's compose container keeps its id across stops and
    /// starts, and a failed exec forgets it (the container may have been recreated).
    pub(crate) ids: Mutex<BTreeMap<String, String>>,
}

impl DockerExec {
    async fn run(
        &self,
        node: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<CmdOutput, BackendError> {
        let spec = self
            .profile
            .node(node)
            .ok_or_else(|| BackendError::Command(format!("no node {node:?}")))?;
        let ran = fill_ports(&cmd, spec.port, spec.peer_port());
        let shown = ran.join(" ");
        // The image keeps its programs at `/`.
        let mut words = ran.clone();
        words[0] = format!("/{}", words[0]);
        let attempt = async {
            // A cached id may name a container that is gone (a swarm start makes a new task's
            // container): then once more with the node's container now.
            let cached = self.ids.lock().unwrap().get(node).cloned();
            if let Some(id) = cached {
                match self.exec_in(&id, words.clone()).await {
                    Ok(out) => return Ok(out),
                    Err(_) => {
                        self.ids.lock().unwrap().remove(node);
                    }
                }
            }
            let id = find_container(&self.docker, &self.project, &spec.service).await?;
            let out = self.exec_in(&id, words.clone()).await?;
            self.ids.lock().unwrap().insert(node.to_owned(), id);
            Ok(out)
        };
        let out: Result<CmdOutput, BackendError> =
            tokio::time::timeout(timeout, attempt).await.map_err(|_| BackendError::Timeout {
                after: timeout,
                what: format!("running {shown} in {node}'s container"),
            })?;
        Ok(CmdOutput { ran, ..out? })
    }

    async fn exec_in(&self, id: &str, cmd: Vec<String>) -> Result<CmdOutput, BackendError> {
        let created = self
            .docker
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(cmd),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await?;
        let (mut stdout, mut stderr) = (String::new(), String::new());
        if let StartExecResults::Attached { mut output, .. } =
            self.docker.start_exec(&created.id, None).await?
        {
            while let Some(item) = output.next().await {
                match item? {
                    LogOutput::StdOut { message } => {
                        stdout.push_str(&String::from_utf8_lossy(&message))
                    }
                    LogOutput::StdErr { message } => {
                        stderr.push_str(&String::from_utf8_lossy(&message))
                    }
                    _ => {}
                }
            }
        }
        // The output can end before the engine records the exit code: ask until it has one
        // (the caller's timeout bounds this).
        loop {
            let i = self.docker.inspect_exec(&created.id).await?;
            match (i.running, i.exit_code) {
                (Some(false) | None, Some(code)) => {
                    return Ok(CmdOutput { code, stdout, stderr, ran: Vec::new() })
                }
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
}

impl Exec for DockerExec {
    fn exec<'a>(&'a self, node: &'a str, cmd: Vec<String>, timeout: Duration) -> ExecFuture<'a> {
        Box::pin(self.run(node, cmd, timeout))
    }
}
