//! The swarm backend: one service per node (replicas 0 or 1, as seed 003's runbook scales
//! them), on an attachable overlay network, each with its named volume and pinned to the
//! manager the runner talks to, so a restarted task finds its own disk. A node's env file is a
//! Swarm secret when the profile mounts it as a file (xp's holds the cluster secret and the
//! admin token; secrets never go in a config), mounted where the profile says; else its
//! variables are the task's environment. TLS files are secrets.
//!
//! `stop`/`start` scale the service to 0 and 1 and wait for the task; `kill`, `pause` and
//! `exec` act on the running task's container, network cuts are packet filters in its network
//! namespace (`filter.rs`); one-off commands run as
//! swarm jobs beside it (`job.rs`). Every object carries the run's compose project label, which
//! is how teardown and `cargo xtask clean` find it. See `docs/backends.md`.

mod filter;
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
use bollard::network::{CreateNetworkOptions, InspectNetworkOptions};
use bollard::service::{InspectServiceOptions, UpdateServiceOptions};
use bollard::Docker;
use futures_util::StreamExt;

use super::docker::exec::DockerExec;
use super::docker::oneoff::upload_file;
use super::docker::{find_container, ONEOFF_LABEL, PROJECT_LABEL, SERVICE_LABEL};
use super::{poll, wait_answers, Backend, BackendError, CmdOutput, Exec, Teardown};
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
    cuts: filter::Cuts,
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
        Ok(SwarmBackend {
            docker: docker.clone(),
            profile,
            image,
            project,
            run_dir,
            node_id,
            exec,
            secrets: HashMap::new(),
            cuts: filter::Cuts::default(),
        })
    }

    /// Each running node's task: its process and its address on the overlay network.
    async fn tasks(&self) -> Result<BTreeMap<String, filter::Task>, BackendError> {
        let mut out = BTreeMap::new();
        for n in &self.profile.nodes {
            if !self.running(&n.name).await? {
                continue;
            }
            let id = self.container(&n.name).await?;
            let (pid, ip) = self.pid_and_address(&id).await?;
            // Exited since it was listed (an etcd member removed from its cluster stops by
            // itself): no rules for it, and its next start applies them.
            if pid <= 0 || ip.is_empty() {
                continue;
            }
            out.insert(n.name.clone(), filter::Task { pid, ip, guests: Vec::new() });
        }
        Ok(out)
    }

    /// Puts the cuts in force on every running node (each node's rules replaced).
    async fn apply_cuts(&self) -> Result<(), BackendError> {
        self.apply_cuts_with(None).await.map(|_| ())
    }

    /// The same, with a one-off at address `guest.1` on the side of node `guest.0`; false (and
    /// nothing changed) when that node has no running task, so no side to put it on.
    async fn apply_cuts_with(&self, guest: Option<(&str, &str)>) -> Result<bool, BackendError> {
        let net = self
            .docker
            .inspect_network(&self.network(), None::<InspectNetworkOptions<String>>)
            .await?;
        let subnet = net
            .ipam
            .and_then(|i| i.config)
            .and_then(|c| c.into_iter().find_map(|c| c.subnet))
            .ok_or_else(|| BackendError::Command(format!("{} has no subnet", self.network())))?;
        let mut tasks = self.tasks().await?;
        if let Some((node, ip)) = guest {
            match tasks.get_mut(node) {
                Some(t) => t.guests.push(ip.to_owned()),
                None => return Ok(false),
            }
        }
        let all: Vec<String> = self.profile.nodes.iter().map(|n| n.name.clone()).collect();
        for (node, task) in &tasks {
            let rules = self.cuts.rules(node, &subnet, &tasks, &all);
            if let Err(e) = filter::apply(task.pid, &rules).await {
                // Its task ended since it was listed (an etcd member removed from its cluster
                // stops by itself): it has no rules to hold, and its next start applies them.
                if self.running(node).await? {
                    return Err(e);
                }
            }
        }
        Ok(true)
    }

    /// A container's init process (0 when it is not running) and its address on the run's
    /// overlay network (empty when it has none).
    async fn pid_and_address(&self, container: &str) -> Result<(i64, String), BackendError> {
        let info =
            self.docker.inspect_container(container, None::<InspectContainerOptions>).await?;
        let pid = info.state.and_then(|s| s.pid).unwrap_or(0);
        let ip = info
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|mut n| n.remove(&self.network()))
            .and_then(|e| e.ip_address)
            .unwrap_or_default();
        Ok((pid, ip))
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

    /// The node's newest task container, when the engine failed to start it (its process
    /// never ran): "network … not found" for a task made while the overlay network was torn
    /// down on this host after its last task stopped, "unable to remount dir as readonly" for
    /// its secrets' tmpfs, both seen here.
    async fn failed_to_start(&self, node: &str) -> Option<String> {
        let id = self.container(node).await.ok()?;
        let info =
            self.docker.inspect_container(&id, None::<InspectContainerOptions>).await.ok()?;
        let state = info.state?;
        let never_ran = state.started_at.as_deref().is_none_or(|t| t.starts_with("0001-"));
        let error = state.error.unwrap_or_default();
        (never_ran && !error.is_empty()).then_some(id)
    }

    /// Waits (60 s at most) for the node's task to run; a task the engine failed to start
    /// (nothing of the node ran) is replaced by a new one, three times at most.
    async fn await_task(&self, node: &str) -> Result<(), BackendError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut retried: Vec<String> = Vec::new();
        while !self.running(node).await? {
            if let Some(id) = self.failed_to_start(node).await {
                if retried.len() < 3 && !retried.contains(&id) {
                    retried.push(id);
                    self.scale(node, 1, true).await?;
                    continue;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                // Says what it last saw, and swarm's word on the tasks.
                return self.wait_running(node, true, Duration::ZERO).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
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
        // Read, change, write with the version read; swarm's updater may bump the version in
        // between (it records an update's status seconds after it): then again, a few times.
        let mut attempt = 0;
        loop {
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
            let options = UpdateServiceOptions { version, ..Default::default() };
            match self.docker.update_service(&name, spec, options, None).await {
                Ok(_) => return Ok(()),
                Err(e) if attempt < 5 && e.to_string().contains("out of sequence") => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits until the node's task runs (`true`) or none does (`false`).
    async fn wait_running(
        &self,
        node: &str,
        want: bool,
        timeout: Duration,
    ) -> Result<(), BackendError> {
        let what = format!("{node}'s task to be {}", if want { "running" } else { "gone" });
        let waited = poll(&what, timeout, Duration::from_millis(100), || async move {
            match self.running(node).await {
                Ok(r) if r == want => Ok(()),
                Ok(r) => Err(format!("running: {r}")),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        match waited {
            Err(e) => {
                let name = self.service_name(node)?;
                Err(BackendError::Command(format!(
                    "{e}; swarm says of {name}'s tasks: {}",
                    job::task_state(&name).await.replace('\n', " | ")
                )))
            }
            ok => ok,
        }
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
            )?;
            self.docker.create_service(service, None).await?;
        }
        for n in self.profile.nodes.clone() {
            self.await_task(&n.name).await?;
            let base = self.endpoint(&n.name).await?;
            wait_answers(&self.profile, &n.name, &base, Duration::from_secs(60)).await?;
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
        self.await_task(node).await?;
        // A new task, a new address: the cuts in force apply to it, and to the others' rules
        // about it.
        if self.cuts.any() {
            self.apply_cuts().await?;
        }
        Ok(())
    }

    async fn pause(&mut self, node: &str) -> Result<(), BackendError> {
        let id = self.container(node).await?;
        Ok(self.docker.pause_container(&id).await?)
    }

    async fn unpause(&mut self, node: &str) -> Result<(), BackendError> {
        let id = self.container(node).await?;
        Ok(self.docker.unpause_container(&id).await?)
    }

    /// Packet filters in the task's network namespace (`filter.rs`): the runner still reads
    /// the node through its host-mode port.
    async fn isolate(&mut self, node: &str) -> Result<(), BackendError> {
        self.cuts.isolate(node);
        self.apply_cuts().await
    }

    async fn heal(&mut self, node: &str) -> Result<(), BackendError> {
        self.cuts.heal(node)?;
        self.apply_cuts().await
    }

    async fn partition(&mut self, groups: &[Vec<String>]) -> Result<(), BackendError> {
        self.cuts.partition(groups)?;
        self.apply_cuts().await
    }

    async fn heal_partition(&mut self) -> Result<(), BackendError> {
        self.cuts.heal_partition()?;
        self.apply_cuts().await
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
