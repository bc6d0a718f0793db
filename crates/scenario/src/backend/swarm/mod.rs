//! The swarm backend: one service per node (replicas 0 or 1, as seed 003's runbook scales
//! them), on an attachable overlay network, each with its named volume and pinned to the
//! manager the runner talks to, so a restarted task finds its own disk. A node's env file is a
//! Swarm secret when the profile mounts it as a file (xp's holds the cluster secret and the
//! admin token; secrets never go in a config or in the service's environment), else its
//! variables are the task's environment (etcd's, which hold no secret). TLS files are secrets.
//!
//! `stop`/`start` scale the service to 0 and 1 and wait for the task; `kill`, `pause` and
//! `exec` act on the running task's container; one-off commands run as containers beside it
//! with its volume, on the overlay network. What swarm cannot do here (cut a task off its
//! overlay network) is refused up front: see `docs/backends.md`. Every object carries the
//! run's compose project label, which is how teardown and `cargo xtask clean` find it.

mod job;
mod spec;
pub mod sweep;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bollard::container::{
    InspectContainerOptions, KillContainerOptions, ListContainersOptions, LogsOptions,
};
use bollard::models::{LocalNodeState, TaskSpecContainerSpecSecrets};
use bollard::network::CreateNetworkOptions;
use bollard::service::{InspectServiceOptions, UpdateServiceOptions};
use bollard::Docker;
use futures_util::StreamExt;

use super::docker::exec::DockerExec;
use super::docker::network::Cuts;
use super::docker::oneoff::upload_file;
use super::docker::{find_container, ONEOFF_LABEL, PROJECT_LABEL, SERVICE_LABEL};
use super::{poll, Backend, BackendError, CmdOutput, Exec, Teardown};
use crate::model::Action;
use crate::profile::Profile;

pub use sweep::SwarmTeardown;

/// The id of the swarm node this engine is, when it is a manager; otherwise what to do.
pub async fn manager_node(docker: &Docker) -> Result<String, BackendError> {
    let info = docker.info().await?;
    let swarm = info.swarm.unwrap_or_default();
    match (swarm.local_node_state, swarm.control_available) {
        (Some(LocalNodeState::ACTIVE), Some(true)) => Ok(swarm.node_id.unwrap_or_default()),
        (Some(LocalNodeState::ACTIVE), _) => Err(BackendError::Command(
            "this Docker engine is a swarm worker, not a manager: services can only be created \
             through a manager (point DOCKER_HOST at one)"
                .into(),
        )),
        (state, _) => Err(BackendError::Command(format!(
            "this Docker engine is not in a swarm (state {}): `cargo xtask swarm init` makes a \
             single-node one (advertise 127.0.0.1), `cargo xtask swarm leave` undoes it",
            state.map(|s| s.to_string()).unwrap_or_else(|| "unknown".into())
        ))),
    }
}

pub struct SwarmBackend {
    docker: Docker,
    profile: Profile,
    image: String,
    project: String,
    /// The run's env files and certificates, read when secrets are made and by one-offs.
    run_dir: PathBuf,
    /// The manager every service is pinned to (its volumes live there).
    node_id: String,
    exec: Arc<DockerExec>,
    cuts: Cuts,
    /// Each node's secrets, made by `up`; one-off jobs mount them too.
    secrets: HashMap<String, Vec<TaskSpecContainerSpecSecrets>>,
}

impl SwarmBackend {
    /// A backend for a new stack; nothing is created until `up`. Refuses an engine that is
    /// not a swarm manager, and a project name some existing service already uses.
    pub async fn new(
        docker: Docker,
        profile: Profile,
        image: String,
        project: String,
        run_dir: PathBuf,
    ) -> Result<SwarmBackend, BackendError> {
        let node_id = manager_node(&docker).await?;
        let taken = sweep::services_of(&docker, super::docker::Projects::One(&project)).await?;
        if !taken.is_empty() {
            return Err(BackendError::Command(format!(
                "a stack called {project} already exists ({} services): pick another name or \
                 remove it with `cargo xtask clean`",
                taken.len()
            )));
        }
        super::docker::write_run_files(&profile, &run_dir)?;
        let exec = Arc::new(DockerExec {
            docker: docker.clone(),
            project: project.clone(),
            profile: Arc::new(profile.clone()),
            ids: Default::default(),
        });
        let cuts = Cuts::new(docker.clone(), project.clone(), "bridge");
        Ok(SwarmBackend {
            docker: docker.clone(),
            profile,
            image,
            project,
            run_dir,
            node_id,
            exec,
            secrets: HashMap::new(),
            cuts,
        })
    }

    /// Each node's running task container, for the nodes that have one.
    async fn containers(&self) -> BTreeMap<String, String> {
        let mut ids = BTreeMap::new();
        for n in &self.profile.nodes {
            if let Ok(id) = self.container(&n.name).await {
                ids.insert(n.name.clone(), id);
            }
        }
        ids
    }

    fn network(&self) -> String {
        format!("{}_net", self.project)
    }

    fn service_name(&self, node: &str) -> Result<String, BackendError> {
        let spec = self
            .profile
            .node(node)
            .ok_or_else(|| BackendError::Command(format!("no node {node:?}")))?;
        Ok(format!("{}_{}", self.project, spec.service))
    }

    fn labels(&self) -> HashMap<String, String> {
        HashMap::from([(PROJECT_LABEL.to_owned(), self.project.clone())])
    }

    /// The node's task container: the running one, else the newest.
    async fn container(&self, node: &str) -> Result<String, BackendError> {
        let service = &self
            .profile
            .node(node)
            .ok_or_else(|| BackendError::Command(format!("no node {node:?}")))?
            .service;
        find_container(&self.docker, &self.project, service).await
    }

    /// Whether the node has a running task container.
    async fn running(&self, node: &str) -> Result<bool, BackendError> {
        let service = &self
            .profile
            .node(node)
            .ok_or_else(|| BackendError::Command(format!("no node {node:?}")))?
            .service;
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{PROJECT_LABEL}={}", self.project), format!("{SERVICE_LABEL}={service}")],
        )]);
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: false,
                filters,
                ..Default::default()
            }))
            .await?;
        Ok(list.iter().any(|c| !c.labels.as_ref().is_some_and(|l| l.contains_key(ONEOFF_LABEL))))
    }

    /// Sets the service's replicas (0 or 1); `force` also makes a new task when the count
    /// does not change (a killed task is not restarted: the restart condition is `none`).
    async fn scale(&self, node: &str, replicas: i64, force: bool) -> Result<(), BackendError> {
        let name = self.service_name(node)?;
        let current = self.docker.inspect_service(&name, None::<InspectServiceOptions>).await?;
        let version = current.version.and_then(|v| v.index).unwrap_or(0);
        let mut spec = current.spec.unwrap_or_default();
        if let Some(m) = spec.mode.as_mut().and_then(|m| m.replicated.as_mut()) {
            m.replicas = Some(replicas);
        }
        if force {
            if let Some(t) = spec.task_template.as_mut() {
                t.force_update = Some(t.force_update.unwrap_or(0) + 1);
            }
        }
        self.docker
            .update_service(
                &name,
                spec,
                UpdateServiceOptions { version, ..Default::default() },
                None,
            )
            .await?;
        Ok(())
    }

    /// Waits until the node's task runs (`true`) or none does (`false`).
    async fn wait_running(
        &self,
        node: &str,
        want: bool,
        timeout: Duration,
    ) -> Result<(), BackendError> {
        let what = format!("{node}'s task to be {}", if want { "running" } else { "gone" });
        poll(&what, timeout, Duration::from_millis(100), || async move {
            match self.running(node).await {
                Ok(r) if r == want => Ok(()),
                Ok(r) => Err(format!("running: {r}")),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    fn oneoff_labels(&self, node: &str) -> HashMap<String, String> {
        HashMap::from([
            (PROJECT_LABEL.to_owned(), self.project.clone()),
            (ONEOFF_LABEL.to_owned(), node.to_owned()),
        ])
    }
}

/// What swarm cannot do here, and why (also asked by `--plan` and campaigns): everything.
pub fn supports(_action: Action) -> Result<(), String> {
    Ok(())
}

impl Backend for SwarmBackend {
    fn name(&self) -> &'static str {
        "swarm"
    }

    fn supports(&self, action: Action) -> Result<(), String> {
        supports(action)
    }

    async fn up(&mut self) -> Result<(), BackendError> {
        let net = self.network();
        self.docker
            .create_network(CreateNetworkOptions {
                name: net.clone(),
                driver: "overlay".into(),
                attachable: true,
                check_duplicate: true,
                labels: self.labels(),
                ..Default::default()
            })
            .await?;
        for n in self.profile.nodes.clone() {
            let secrets =
                spec::secrets(&self.docker, &self.profile, &self.project, &n.name).await?;
            self.secrets.insert(n.name.clone(), secrets.clone());
            let service = spec::service(
                &self.profile,
                &self.project,
                &self.image,
                &n,
                &net,
                &self.node_id,
                secrets,
                &self.run_dir,
            )?;
            self.docker.create_service(service, None).await?;
        }
        for n in self.profile.nodes.clone() {
            self.wait_running(&n.name, true, Duration::from_secs(60)).await?;
            let url = format!("{}{}", self.endpoint(&n.name).await?, self.profile.ready_path());
            let http = self
                .profile
                .client_builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("http client");
            poll(&format!("{} to answer {url}", n.name), Duration::from_secs(60), Duration::from_millis(100), || {
                let (http, url) = (http.clone(), url.clone());
                async move { http.get(&url).send().await.map(|_| ()).map_err(|e| e.to_string()) }
            })
            .await?;
        }
        Ok(())
    }

    /// Scale to 0: swarm sends the stop signal, then SIGKILL after the grace period.
    async fn stop(&mut self, node: &str, timeout: Duration) -> Result<(), BackendError> {
        if let Ok(id) = self.container(node).await {
            let _ = self.docker.unpause_container(&id).await; // a paused task never stops
        }
        self.scale(node, 0, false).await?;
        self.wait_running(node, false, timeout + Duration::from_secs(15)).await
    }

    /// Every service to 0 first, then the waits: a scale takes swarm seconds, and one after
    /// the other would leave the last nodes up long enough to elect a leader.
    async fn stop_all(&mut self, nodes: &[String], timeout: Duration) -> Result<(), BackendError> {
        for n in nodes {
            if let Ok(id) = self.container(n).await {
                let _ = self.docker.unpause_container(&id).await;
            }
            self.scale(n, 0, false).await?;
        }
        for n in nodes {
            self.wait_running(n, false, timeout + Duration::from_secs(15)).await?;
        }
        Ok(())
    }

    async fn kill(&mut self, node: &str, signal: &str) -> Result<(), BackendError> {
        let id = self.container(node).await?;
        self.docker.kill_container(&id, Some(KillContainerOptions { signal })).await?;
        if matches!(signal, "SIGKILL" | "SIGTERM" | "SIGINT") {
            self.wait_running(node, false, Duration::from_secs(15)).await?;
        }
        Ok(())
    }

    /// Scale to 1; a task that died (killed, or exited by itself) is replaced by a new one.
    async fn start(&mut self, node: &str) -> Result<(), BackendError> {
        if self.running(node).await? {
            return Ok(());
        }
        self.scale(node, 1, true).await?;
        self.wait_running(node, true, Duration::from_secs(60)).await
    }

    async fn pause(&mut self, node: &str) -> Result<(), BackendError> {
        let id = self.container(node).await?;
        Ok(self.docker.pause_container(&id).await?)
    }

    async fn unpause(&mut self, node: &str) -> Result<(), BackendError> {
        let id = self.container(node).await?;
        Ok(self.docker.unpause_container(&id).await?)
    }

    /// Off the overlay network: swarm lets a task's container be disconnected and connected
    /// again (with its alias), and the runner still reaches it by its host-mode port.
    async fn isolate(&mut self, node: &str) -> Result<(), BackendError> {
        let id = self.container(node).await?;
        self.cuts.isolate(node, &id).await
    }

    async fn heal(&mut self, node: &str) -> Result<(), BackendError> {
        let id = self.container(node).await?;
        self.cuts.heal(node, &id).await
    }

    /// Groups after the first move to bridge networks of their own, on this engine's host:
    /// a task's container cannot be connected to an overlay network no task of its host is
    /// on yet ("network not found"), so a partition across hosts is not done (see
    /// `docs/backends.md`).
    async fn partition(&mut self, groups: &[Vec<String>]) -> Result<(), BackendError> {
        let ids = self.containers().await;
        self.cuts.partition(groups, &ids).await
    }

    async fn heal_partition(&mut self) -> Result<(), BackendError> {
        let ids = self.containers().await;
        self.cuts.heal_partition(&ids).await
    }

    async fn oneoff(
        &mut self,
        node: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<CmdOutput, BackendError> {
        self.run_job(node, cmd, timeout).await
    }

    async fn put_file(
        &mut self,
        node: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<String, BackendError> {
        let spec = self
            .profile
            .node(node)
            .ok_or_else(|| BackendError::Command(format!("no node {node:?}")))?;
        let dir = self.profile.data_dir_in_container.clone();
        let binds = vec![format!("{}:{dir}", spec::volume(&self.project, &spec.service))];
        upload_file(&self.docker, &self.image, binds, self.oneoff_labels(node), &dir, name, bytes)
            .await?;
        Ok(format!("{dir}/{name}"))
    }

    fn executor(&self) -> Arc<dyn Exec> {
        self.exec.clone()
    }

    /// The host port of the running task (published in host mode: each task gets its own).
    async fn endpoint(&self, node: &str) -> Result<String, BackendError> {
        let spec = self
            .profile
            .node(node)
            .ok_or_else(|| BackendError::Command(format!("no node {node:?}")))?;
        if !self.running(node).await? {
            return Err(BackendError::Command(format!("{node} has no running task")));
        }
        let id = self.container(node).await?;
        let info = self.docker.inspect_container(&id, None::<InspectContainerOptions>).await?;
        let port = info
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|p| p.get(&format!("{}/tcp", spec.port)).cloned().flatten())
            .and_then(|b| b.into_iter().find_map(|b| b.host_port))
            .ok_or_else(|| BackendError::Command(format!("{node}'s task has no published port")))?;
        Ok(format!("{}://127.0.0.1:{port}", self.profile.scheme()))
    }

    async fn alive(&self, node: &str) -> Result<bool, BackendError> {
        self.running(node).await
    }

    /// Every task's log, oldest first (each start is a new task with a container of its own).
    async fn logs(&self, node: &str, lines: usize) -> String {
        let Ok(ids) =
            sweep::task_containers(&self.docker, &self.project, node, &self.profile).await
        else {
            return String::new();
        };
        let mut all = String::new();
        for id in ids {
            let mut logs = self.docker.logs(
                &id,
                Some(LogsOptions::<String> { stdout: true, stderr: true, ..Default::default() }),
            );
            while let Some(Ok(item)) = logs.next().await {
                all.push_str(&item.to_string());
            }
        }
        let kept: Vec<&str> = all.lines().collect();
        kept[kept.len().saturating_sub(lines)..].join("\n")
    }

    /// The newest task's log: a start makes a new task.
    async fn logs_since_start(&self, node: &str, lines: usize) -> String {
        let Ok(id) = self.container(node).await else { return String::new() };
        let mut out = String::new();
        let mut logs = self.docker.logs(
            &id,
            Some(LogsOptions::<String> {
                stdout: true,
                stderr: true,
                tail: lines.to_string(),
                ..Default::default()
            }),
        );
        while let Some(Ok(item)) = logs.next().await {
            out.push_str(&item.to_string());
        }
        out
    }

    fn teardown(&self) -> Teardown {
        Teardown::Swarm(SwarmTeardown {
            project: self.project.clone(),
            run_dir: Some(self.run_dir.clone()),
        })
    }

    fn keep_hint(&self) -> String {
        format!(
            "cluster kept as swarm services {p}_*: inspect with `docker service ls --filter \
             label={PROJECT_LABEL}={p}`; remove it with `cargo xtask clean`",
            p = self.project
        )
    }
}
