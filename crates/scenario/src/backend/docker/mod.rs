//! The docker backend: the profile's compose file, brought up under a project name unique to
//! the run. bollard does every container operation; the compose CLI (v2 `docker compose` or
//! v1 `docker-compose`, whichever is installed) only does `up` and `down`. Containers are found
//! by their compose labels, never by name (v1 and v2 name them differently).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use bollard::container::{
    InspectContainerOptions, KillContainerOptions, ListContainersOptions, LogsOptions,
    StartContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;

mod compose;
pub(crate) mod exec;
mod image;
pub(crate) mod network;
pub(crate) mod oneoff;
mod sweep;

use compose::free_subnet;
pub(crate) use compose::write_run_files;
pub use compose::{subnet_vars, ComposeCli};
pub use image::ensure_image;
pub use sweep::{leftovers, sweep, DockerTeardown, Projects};

use super::{poll, wait_answers, Backend, BackendError, CmdOutput, Exec, Teardown};
use crate::profile::Profile;

/// Every compose project a runner creates starts with this, so `clean` can find leftovers.
pub(crate) const PROJECT_LABEL: &str = "com.docker.compose.project";
pub(crate) const SERVICE_LABEL: &str = "com.docker.compose.service";
/// Marks one-off containers (recover, join, ops) so they are cleaned up too.
pub(crate) const ONEOFF_LABEL: &str = "chaos-runner.oneoff";

/// Connects to the local engine and agrees on an API version it speaks (e.g. 1.41).
pub async fn connect() -> Result<Docker, BackendError> {
    let docker = Docker::connect_with_local_defaults()?;
    let docker = docker.negotiate_version().await?;
    docker.ping().await?;
    Ok(docker)
}

pub struct DockerBackend {
    docker: Docker,
    profile: Profile,
    cli: ComposeCli,
    project: String,
    image: String,
    subnet: String,
    compose_file: PathBuf,
    /// This run's files: `env/<node>.env` (`CHAOS_ENV_DIR`) and, without TLS, empty
    /// `no-tls/<node>/` directories (`CHAOS_TLS_DIR`; with TLS it is the run CA's directory).
    run_dir: PathBuf,
    cuts: network::Cuts,
    exec: std::sync::Arc<exec::DockerExec>,
}

impl DockerBackend {
    /// A backend for a new project; nothing is created until `up`.
    pub async fn new(
        docker: Docker,
        profile: Profile,
        cli: ComposeCli,
        image: String,
        project: String,
        run_dir: PathBuf,
    ) -> Result<DockerBackend, BackendError> {
        let subnet = free_subnet(&docker).await?;
        let compose_file = profile.resolve(&profile.compose_file);
        write_run_files(&profile, &run_dir)?;
        let exec = std::sync::Arc::new(exec::DockerExec {
            docker: docker.clone(),
            project: project.clone(),
            profile: std::sync::Arc::new(profile.clone()),
            ids: Default::default(),
        });
        let cuts = network::Cuts::new(docker.clone(), project.clone());
        Ok(DockerBackend {
            exec,
            run_dir,
            profile,
            cli,
            project,
            image,
            subnet,
            compose_file,
            cuts,
            docker,
        })
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    /// Each node's container, for the nodes that have one.
    async fn containers(&self) -> BTreeMap<String, String> {
        let mut ids = BTreeMap::new();
        for n in &self.profile.nodes {
            if let Ok(id) = self.container(&n.name).await {
                ids.insert(n.name.clone(), id);
            }
        }
        ids
    }

    async fn container(&self, node: &str) -> Result<String, BackendError> {
        let service = &self
            .profile
            .node(node)
            .ok_or_else(|| BackendError::Command(format!("no node {node:?}")))?
            .service;
        find_container(&self.docker, &self.project, service).await
    }

    async fn running(&self, id: &str) -> Result<bool, BackendError> {
        let i = self.docker.inspect_container(id, None::<InspectContainerOptions>).await?;
        Ok(i.state.and_then(|s| s.running).unwrap_or(false))
    }
}

/// The id of `service`'s container in compose project `project` (found by labels; one-offs
/// excluded).
pub(crate) async fn find_container(
    docker: &Docker,
    project: &str,
    service: &str,
) -> Result<String, BackendError> {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("{PROJECT_LABEL}={project}"), format!("{SERVICE_LABEL}={service}")],
    )]);
    let list = docker
        .list_containers(Some(ListContainersOptions { all: true, filters, ..Default::default() }))
        .await?;
    // Compose has one container per service; a swarm service keeps its earlier tasks'
    // containers: the running one, else the newest.
    list.iter()
        .filter(|c| !c.labels.as_ref().is_some_and(|l| l.contains_key(ONEOFF_LABEL)))
        .max_by_key(|c| (c.state.as_deref() == Some("running"), c.created.unwrap_or(0)))
        .and_then(|c| c.id.clone())
        .ok_or_else(|| {
            BackendError::Command(format!(
                "no container for service {service} in project {project}"
            ))
        })
}

impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn supports(&self, _action: crate::model::Action) -> Result<(), String> {
        Ok(())
    }

    async fn up(&mut self) -> Result<(), BackendError> {
        self.compose(&["up", "-d"]).await?;
        for n in &self.profile.nodes {
            let base = self.endpoint(&n.name).await?;
            wait_answers(&self.profile, &n.name, &base, Duration::from_secs(60)).await?;
        }
        Ok(())
    }

    async fn stop(&mut self, node: &str, timeout: Duration) -> Result<(), BackendError> {
        let id = self.container(node).await?;
        // Engines below API 1.42 take no signal on stop: this sends the image's stop signal
        // (SIGTERM) and SIGKILL after `t` seconds.
        let t = timeout.as_secs().max(1) as i64;
        if let Err(e) = self.docker.unpause_container(&id).await {
            let _ = e; // not paused: fine
        }
        self.docker.stop_container(&id, Some(StopContainerOptions { t })).await?;
        Ok(())
    }

    async fn kill(&mut self, node: &str, signal: &str) -> Result<(), BackendError> {
        let id = self.container(node).await?;
        self.docker.kill_container(&id, Some(KillContainerOptions { signal })).await?;
        if matches!(signal, "SIGKILL" | "SIGTERM" | "SIGINT") {
            let docker = self.docker.clone();
            poll(
                &format!("{node} to exit after {signal}"),
                Duration::from_secs(15),
                Duration::from_millis(20),
                || {
                    let (docker, id) = (docker.clone(), id.clone());
                    async move {
                        let i = docker
                            .inspect_container(&id, None::<InspectContainerOptions>)
                            .await
                            .map_err(|e| e.to_string())?;
                        if i.state.and_then(|s| s.running).unwrap_or(false) {
                            Err("still running".into())
                        } else {
                            Ok(())
                        }
                    }
                },
            )
            .await?;
        }
        Ok(())
    }

    async fn start(&mut self, node: &str) -> Result<(), BackendError> {
        let id = self.container(node).await?;
        if !self.running(&id).await? {
            self.docker.start_container(&id, None::<StartContainerOptions<String>>).await?;
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

    async fn isolate(&mut self, node: &str) -> Result<(), BackendError> {
        let id = self.container(node).await?;
        self.cuts.isolate(node, &id).await
    }

    async fn heal(&mut self, node: &str) -> Result<(), BackendError> {
        let id = self.container(node).await?;
        self.cuts.heal(node, &id).await
    }

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
        self.run_oneoff(node, cmd, timeout).await
    }

    async fn put_file(
        &mut self,
        node: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<String, BackendError> {
        self.put_in_volume(node, name, bytes).await
    }

    fn executor(&self) -> std::sync::Arc<dyn Exec> {
        self.exec.clone()
    }

    async fn endpoint(&self, node: &str) -> Result<String, BackendError> {
        let spec = self
            .profile
            .node(node)
            .ok_or_else(|| BackendError::Command(format!("no node {node:?}")))?;
        let id = self.container(node).await?;
        let info = self.docker.inspect_container(&id, None::<InspectContainerOptions>).await?;
        let port = info
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|p| p.get(&format!("{}/tcp", spec.port)).cloned().flatten())
            .and_then(|b| b.into_iter().find_map(|b| b.host_port))
            .ok_or_else(|| {
                BackendError::Command(format!(
                    "{node} has no published port (stopped or isolated?)"
                ))
            })?;
        Ok(format!("{}://127.0.0.1:{port}", self.profile.scheme()))
    }

    async fn alive(&self, node: &str) -> Result<bool, BackendError> {
        let id = self.container(node).await?;
        self.running(&id).await
    }

    async fn logs(&self, node: &str, lines: usize) -> String {
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

    async fn logs_since_start(&self, node: &str, lines: usize) -> String {
        let Ok(id) = self.container(node).await else { return String::new() };
        let Ok(info) = self.docker.inspect_container(&id, None::<InspectContainerOptions>).await
        else {
            return String::new();
        };
        let Some(started) = info
            .state
            .and_then(|s| s.started_at)
            .and_then(|t| humantime::parse_rfc3339_weak(&t).ok())
        else {
            return String::new();
        };
        // Each line comes with docker's timestamp; keep those of this start.
        let mut logs = self.docker.logs(
            &id,
            Some(LogsOptions::<String> {
                stdout: true,
                stderr: true,
                timestamps: true,
                tail: (lines * 4).to_string(),
                ..Default::default()
            }),
        );
        let mut kept = Vec::new();
        while let Some(Ok(item)) = logs.next().await {
            for line in item.to_string().lines() {
                let Some((ts, text)) = line.split_once(' ') else { continue };
                match humantime::parse_rfc3339_weak(ts) {
                    Ok(t) if t >= started => kept.push(text.to_owned()),
                    _ => {}
                }
            }
        }
        kept[kept.len().saturating_sub(lines)..].join("\n")
    }

    fn teardown(&self) -> Teardown {
        Teardown::Docker(DockerTeardown {
            project: self.project.clone(),
            compose: Some((self.cli, self.compose_file.clone(), self.image.clone())),
            run_dir: Some(self.run_dir.clone()),
        })
    }

    fn keep_hint(&self) -> String {
        format!(
            "cluster kept as compose project {p}: inspect with `docker ps --filter label={PROJECT_LABEL}={p}`; \
             remove it with `cargo xtask clean`",
            p = self.project
        )
    }
}
