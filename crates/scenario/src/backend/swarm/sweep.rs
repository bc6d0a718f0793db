//! Removing a swarm run: its services first (swarm then stops and removes their tasks), then,
//! once no task container is left, the containers, networks and volumes the docker sweep
//! removes, and the run's secrets.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bollard::container::ListContainersOptions;
use bollard::secret::ListSecretsOptions;
use bollard::service::ListServicesOptions;
use bollard::Docker;

use crate::backend::docker::{self, Projects, ONEOFF_LABEL, PROJECT_LABEL, SERVICE_LABEL};
use crate::backend::{poll, BackendError};
use crate::profile::Profile;

/// Removes one swarm run.
#[derive(Clone, Debug)]
pub struct SwarmTeardown {
    pub project: String,
    /// The run's env files and certificates, removed last.
    pub run_dir: Option<PathBuf>,
}

impl SwarmTeardown {
    /// Removes the run's objects, then its files (env files, certificates and keys) whatever
    /// the sweep said.
    pub async fn run(&self) -> Result<(), BackendError> {
        let swept = match docker::connect().await {
            Ok(d) => sweep(&d, Projects::One(&self.project)).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Some(dir) = &self.run_dir {
            match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(BackendError::Io { path: dir.clone(), source: e })
                }
                _ => {}
            }
        }
        swept
    }
}

fn ours(labels: Option<&HashMap<String, String>>, project: Projects<'_>) -> bool {
    let Some(p) = labels.and_then(|l| l.get(PROJECT_LABEL)) else { return false };
    match project {
        Projects::One(want) => p == want,
        Projects::Prefixed(prefix) => !prefix.is_empty() && p.starts_with(prefix),
    }
}

/// Whether the engine is in a swarm at all (services and secrets exist only then).
async fn in_swarm(d: &Docker) -> Result<bool, BackendError> {
    let info = d.info().await?;
    Ok(info.swarm.and_then(|s| s.control_available).unwrap_or(false))
}

/// The names of the services of `project`.
pub async fn services_of(d: &Docker, project: Projects<'_>) -> Result<Vec<String>, BackendError> {
    if !in_swarm(d).await? {
        return Ok(Vec::new());
    }
    let filters = HashMap::from([("label".to_owned(), vec![PROJECT_LABEL.to_owned()])]);
    Ok(d.list_services(Some(ListServicesOptions { filters, ..Default::default() }))
        .await?
        .into_iter()
        .filter(|s| ours(s.spec.as_ref().and_then(|s| s.labels.as_ref()), project))
        .filter_map(|s| s.spec.and_then(|s| s.name))
        .collect())
}

/// The names of the secrets of `project`.
async fn secrets_of(d: &Docker, project: Projects<'_>) -> Result<Vec<String>, BackendError> {
    if !in_swarm(d).await? {
        return Ok(Vec::new());
    }
    let filters = HashMap::from([("label".to_owned(), vec![PROJECT_LABEL.to_owned()])]);
    Ok(d.list_secrets(Some(ListSecretsOptions { filters }))
        .await?
        .into_iter()
        .filter(|s| ours(s.spec.as_ref().and_then(|s| s.labels.as_ref()), project))
        .filter_map(|s| s.spec.and_then(|s| s.name))
        .collect())
}

/// Every task container a node's service ran, oldest first.
pub async fn task_containers(
    d: &Docker,
    project: &str,
    node: &str,
    profile: &Profile,
) -> Result<Vec<String>, BackendError> {
    let service = &profile
        .node(node)
        .ok_or_else(|| BackendError::Command(format!("no node {node:?}")))?
        .service;
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("{PROJECT_LABEL}={project}"), format!("{SERVICE_LABEL}={service}")],
    )]);
    let mut list = d
        .list_containers(Some(ListContainersOptions { all: true, filters, ..Default::default() }))
        .await?;
    list.retain(|c| !c.labels.as_ref().is_some_and(|l| l.contains_key(ONEOFF_LABEL)));
    list.sort_by_key(|c| c.created.unwrap_or(0));
    Ok(list.into_iter().filter_map(|c| c.id).collect())
}

/// What a swarm run left: services and secrets (the docker sweep counts the rest).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwarmLeft {
    pub services: usize,
    pub secrets: usize,
}

pub async fn leftovers(d: &Docker, project: Projects<'_>) -> Result<SwarmLeft, BackendError> {
    Ok(SwarmLeft {
        services: services_of(d, project).await?.len(),
        secrets: secrets_of(d, project).await?.len(),
    })
}

/// Removes the services of `project` (jobs too), waits (30 s at most) until none of their task
/// containers runs, then sweeps containers (a job's is left behind by swarm), networks and
/// volumes as the docker backend does, and removes the secrets (once no service references
/// them). Every part is tried whatever an earlier one said; the error names all that failed.
/// Returns what was removed: services, secrets, and the docker sweep's counts.
pub async fn sweep(
    d: &Docker,
    project: Projects<'_>,
) -> Result<(SwarmLeft, (usize, usize, usize)), BackendError> {
    let mut errors = Vec::new();
    let services = services_of(d, project).await?;
    for s in &services {
        if let Err(e) = d.delete_service(s).await {
            errors.push(format!("service {s}: {e}"));
        }
    }
    if !services.is_empty() {
        let d2 = d.clone();
        let waited = poll(
            "the services' task containers to stop",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                let d = d2.clone();
                async move {
                    let filters = HashMap::from([(
                        "label".to_owned(),
                        vec!["com.docker.swarm.task.id".to_owned()],
                    )]);
                    let left = d
                        .list_containers(Some(ListContainersOptions {
                            all: false,
                            filters,
                            ..Default::default()
                        }))
                        .await
                        .map_err(|e| e.to_string())?
                        .into_iter()
                        .filter(|c| ours(c.labels.as_ref(), project))
                        .count();
                    if left == 0 {
                        Ok(())
                    } else {
                        Err(format!("{left} task containers running"))
                    }
                }
            },
        )
        .await;
        if let Err(e) = waited {
            errors.push(e.to_string());
        }
    }
    let counts = match docker::sweep(d, project).await {
        Ok(c) => c,
        Err(e) => {
            errors.push(e.to_string());
            (0, 0, 0)
        }
    };
    let secrets = secrets_of(d, project).await?;
    let mut removed_secrets = 0;
    for s in &secrets {
        match d.delete_secret(s).await {
            Ok(()) => removed_secrets += 1,
            Err(e) => errors.push(format!("secret {s}: {e}")),
        }
    }
    if !errors.is_empty() {
        return Err(BackendError::Command(format!(
            "swarm cleanup incomplete: {}",
            errors.join("; ")
        )));
    }
    Ok((SwarmLeft { services: services.len(), secrets: removed_secrets }, counts))
}
