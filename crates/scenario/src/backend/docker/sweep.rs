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

/// Removes containers, networks and volumes of `project` (or of every runner project).
/// Returns how many of each were removed.
pub async fn sweep(
    docker: &Docker,
    project: Projects<'_>,
) -> Result<(usize, usize, usize), BackendError> {
    let (containers, networks, volumes) = ours_all(docker, project).await?;
    for id in &containers {
        docker
            .remove_container(
                id,
                Some(RemoveContainerOptions { force: true, v: true, ..Default::default() }),
            )
            .await?;
    }
    for n in &networks {
        docker.remove_network(n).await?;
    }
    for v in &volumes {
        docker.remove_volume(v, Some(RemoveVolumeOptions { force: true })).await?;
    }
    Ok((containers.len(), networks.len(), volumes.len()))
}
