//! Removing what runs created: one run's project at its teardown, or every runner project a
//! killed run left (`cargo xtask clean`), found by compose labels.

use std::collections::HashMap;
use std::path::PathBuf;

use bollard::container::{ListContainersOptions, RemoveContainerOptions};
use bollard::network::ListNetworksOptions;
use bollard::volume::{ListVolumesOptions, RemoveVolumeOptions};
use bollard::Docker;

use super::{connect, subnet_vars, ComposeCli, PROJECT_LABEL};
use crate::backend::BackendError;

/// Removes one run's project.
#[derive(Clone, Debug)]
pub struct DockerTeardown {
    pub project: String,
    pub compose: Option<(ComposeCli, PathBuf, String)>,
    /// The run's env and TLS files, removed last.
    pub run_dir: Option<PathBuf>,
}

impl DockerTeardown {
    pub async fn run(&self) -> Result<(), BackendError> {
        if let Some((cli, file, image)) = &self.compose {
            let project = self.project.as_str();
            // compose down first (it knows the order); the label sweep below catches the rest.
            let _ = cli
                .command()
                .args(["-p", project, "-f"])
                .arg(file)
                .args(["down", "-v", "--remove-orphans", "--timeout", "2"])
                .env("CHAOS_IMAGE", image)
                .envs(subnet_vars("10.0.0.0/24"))
                .env("CHAOS_ENV_DIR", "/nonexistent")
                .env("CHAOS_TLS_DIR", "/nonexistent")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .await;
        }
        let docker = connect().await?;
        sweep(&docker, Projects::One(&self.project)).await?;
        if let Some(dir) = &self.run_dir {
            match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(BackendError::Io { path: dir.clone(), source: e })
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Which compose projects a sweep removes: one run's, or every run's (the runner names its
/// projects with one prefix).
#[derive(Clone, Copy, Debug)]
pub enum Projects<'a> {
    One(&'a str),
    Prefixed(&'a str),
}

fn ours(labels: Option<&HashMap<String, String>>, project: Projects<'_>) -> bool {
    let Some(p) = labels.and_then(|l| l.get(PROJECT_LABEL)) else { return false };
    match project {
        Projects::One(want) => p == want,
        // An empty prefix would take every compose project on the machine.
        Projects::Prefixed(prefix) => !prefix.is_empty() && p.starts_with(prefix),
    }
}

/// The ids of the containers, the names of the networks and of the volumes of `project`.
async fn ours_all(
    docker: &Docker,
    project: Projects<'_>,
) -> Result<(Vec<String>, Vec<String>, Vec<String>), BackendError> {
    let filters = HashMap::from([("label".to_owned(), vec![PROJECT_LABEL.to_owned()])]);
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: filters.clone(),
            ..Default::default()
        }))
        .await?
        .into_iter()
        .filter(|c| ours(c.labels.as_ref(), project))
        .map(|c| c.id.unwrap_or_default())
        .collect();
    let networks = docker
        .list_networks(Some(ListNetworksOptions { filters: filters.clone() }))
        .await?
        .into_iter()
        .filter(|n| ours(n.labels.as_ref(), project))
        .map(|n| n.name.unwrap_or_default())
        .collect();
    let volumes = docker
        .list_volumes(Some(ListVolumesOptions { filters }))
        .await?
        .volumes
        .unwrap_or_default()
        .into_iter()
        .filter(|v| ours(Some(&v.labels), project))
        .map(|v| v.name)
        .collect();
    Ok((containers, networks, volumes))
}

/// How many containers, networks and volumes of `project` exist (after a teardown: none).
pub async fn leftovers(
    docker: &Docker,
    project: Projects<'_>,
) -> Result<(usize, usize, usize), BackendError> {
    let (c, n, v) = ours_all(docker, project).await?;
    Ok((c.len(), n.len(), v.len()))
}

/// Whether an error says the object is gone already or on its way out (another remover,
/// swarm's task reaper, got there first): not a failure of the sweep.
fn gone(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
        || matches!(
            e,
            bollard::errors::Error::DockerResponseServerError { status_code: 409, message }
                if message.contains("already in progress")
        )
}

/// Removes containers, networks and volumes of `project` (or of every runner project).
/// Returns how many of each were removed. A pass that meets an error goes on with the rest,
/// and passes repeat (5 s at most) while something is left, since a network or volume cannot
/// go before the container using it is gone; the error then names everything left and why.
pub async fn sweep(
    docker: &Docker,
    project: Projects<'_>,
) -> Result<(usize, usize, usize), BackendError> {
    let mut removed = (0, 0, 0);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (containers, networks, volumes) = ours_all(docker, project).await?;
        if containers.is_empty() && networks.is_empty() && volumes.is_empty() {
            return Ok(removed);
        }
        let mut errors = Vec::new();
        for id in &containers {
            let opts = RemoveContainerOptions { force: true, v: true, ..Default::default() };
            match docker.remove_container(id, Some(opts)).await {
                Ok(()) => removed.0 += 1,
                Err(e) if gone(&e) => {}
                Err(e) => errors.push(format!("container {id}: {e}")),
            }
        }
        for n in &networks {
            match docker.remove_network(n).await {
                Ok(()) => removed.1 += 1,
                Err(e) if gone(&e) => {}
                Err(e) => errors.push(format!("network {n}: {e}")),
            }
        }
        for v in &volumes {
            match docker.remove_volume(v, Some(RemoveVolumeOptions { force: true })).await {
                Ok(()) => removed.2 += 1,
                Err(e) if gone(&e) => {}
                Err(e) => errors.push(format!("volume {v}: {e}")),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let (c, n, v) = ours_all(docker, project).await?;
            if c.is_empty() && n.is_empty() && v.is_empty() {
                return Ok(removed);
            }
            return Err(BackendError::Command(format!(
                "could not remove {} containers, {} networks, {} volumes within 5 s: {}",
                c.len(),
                n.len(),
                v.len(),
                if errors.is_empty() { "no error, still listed".into() } else { errors.join("; ") }
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
