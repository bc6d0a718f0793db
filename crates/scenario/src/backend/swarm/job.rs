//! One-off commands as swarm jobs (a `replicated-job` service of one task): the profile's
//! recovery, wipe, join and inspect commands and `ops` steps, with the node's volume, its
//! secrets and its overlay network, placed where the volume is.
//!
//! Why a job and not a plain container on the attachable network: a container attached to an
//! overlay network while the node's last task is leaving it can fail with "network not found"
//! and leak the network attachment task in the swarm, which then blocks removing the network
//! until the engine leaves the swarm. A job's task is attached by swarm itself.

use std::collections::HashMap;
use std::time::Duration;

use bollard::container::{InspectContainerOptions, ListContainersOptions, RemoveContainerOptions};
use bollard::models::{
    ContainerStateStatusEnum, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicatedJob, TaskSpec,
};
use tokio::time::Instant;

use super::{spec, SwarmBackend};
use crate::backend::docker::oneoff::collect;
use crate::backend::docker::{ONEOFF_LABEL, PROJECT_LABEL};
use crate::backend::{fill_ports, poll, BackendError, CmdOutput};

/// Why a job's task has no container yet, as `docker service ps` tells it (bollard has no
/// task API); best effort, for an error message only. The CLI follows `DOCKER_HOST` as bollard
/// does (a docker context other than the default would differ).
pub(super) async fn task_state(name: &str) -> String {
    let out = tokio::process::Command::new("docker")
        .args(["service", "ps", "--no-trunc", "--format", "{{.CurrentState}} {{.Error}}", name])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(5), out).await {
        Ok(Ok(o)) => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        Ok(Err(e)) => format!("(docker service ps: {e})"),
        Err(_) => "(docker service ps did not answer within 5 s)".into(),
    }
}

impl SwarmBackend {
    async fn job_containers(&self, job: &str) -> Vec<String> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("com.docker.swarm.service.name={job}")],
        )]);
        self.docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters,
                ..Default::default()
            }))
            .await
            .map(|l| l.into_iter().filter_map(|c| c.id).collect())
            .unwrap_or_default()
    }

    /// Runs `cmd` as a job beside `node` to its end (at most `timeout`), then removes the job.
    /// A job whose container the engine could not start ran nothing, and is made again, three
    /// times at most. Seen here: "network … not found" (the overlay network is torn down on
    /// this host when its last task stops and made again for the next: a job right after a
    /// `stop` of every node can fall in between), and the secrets' tmpfs failing to mount.
    pub(super) async fn run_job(
        &self,
        node: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<CmdOutput, BackendError> {
        let start = Instant::now();
        let mut tries = 0;
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            match self.run_job_once(node, cmd, left).await {
                Err(BackendError::NotStarted(_)) if tries < 3 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(BackendError::NotStarted(why)) => return Err(BackendError::Command(why)),
                other => return other,
            }
        }
    }

    /// Puts the one-off in `container` on `node`'s side of the cuts in force; false when it
    /// has no address on the cluster's network any more (it ended already), or `node` has no
    /// running task (no side to put it on).
    async fn admit(&self, node: &str, container: &str) -> Result<bool, BackendError> {
        let (_, ip) = self.pid_and_address(container).await?;
        if ip.is_empty() {
            return Ok(false);
        }
        self.apply_cuts_with(Some((node, &ip))).await
    }

    async fn run_job_once(
        &self,
        node: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<CmdOutput, BackendError> {
        let start = Instant::now();
        let n = self
            .profile
            .node(node)
            .ok_or_else(|| BackendError::Command(format!("no node {node:?}")))?;
        let cmd = fill_ports(cmd, n.port, n.peer_port());
        let shown = cmd.join(" ");
        let mut command = cmd.clone();
        command[0] = format!("/{}", command[0]);
        // The node's own secrets (its env file and certificates), where the node finds them.
        let secrets = self.secrets.get(node).cloned().unwrap_or_default();
        let labels = HashMap::from([
            (PROJECT_LABEL.to_owned(), self.project.clone()),
            (ONEOFF_LABEL.to_owned(), node.to_owned()),
        ]);
        let mut container = spec::container(&self.profile, &self.project, &self.image, &n.service);
        container.labels = Some(labels.clone());
        // Its own name, not the node's: a container resolves its hostname to itself.
        container.hostname = None;
        container.command = Some(command);
        container.secrets = Some(secrets);
        let mut suffix = [0u8; 3];
        getrandom::getrandom(&mut suffix).expect("random source");
        let name = format!(
            "{}_oneoff-{node}-{}",
            self.project,
            suffix.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let job = ServiceSpec {
            name: Some(name.clone()),
            labels: Some(labels),
            task_template: Some(TaskSpec {
                container_spec: Some(container),
                // Not called by the node's name: the node's own task answers to that.
                ..spec::task(&self.network(), None, &self.node_id)
            }),
            mode: Some(ServiceSpecMode {
                replicated_job: Some(ServiceSpecModeReplicatedJob {
                    max_concurrent: Some(1),
                    total_completions: Some(1),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.docker.create_service(job, None).await?;
        let result = async {
            // The task runs on the manager (its placement), so its container is local.
            let filters = HashMap::from([(
                "label".to_owned(),
                vec![format!("com.docker.swarm.service.name={name}")],
            )]);
            let what = format!("the job running {shown} to get a container");
            let found = poll(&what, timeout, Duration::from_millis(100), || {
                let filters = filters.clone();
                async move {
                    let list = self
                        .docker
                        .list_containers(Some(ListContainersOptions {
                            all: true,
                            filters,
                            ..Default::default()
                        }))
                        .await
                        .map_err(|e| e.to_string())?;
                    let Some(id) = list.into_iter().find_map(|c| c.id) else {
                        return Err("no container yet".to_owned());
                    };
                    // Listed before it is fully made (a 404 then), and waiting on one that
                    // was created but not started returns at once: wait until it ran.
                    let state = self
                        .docker
                        .inspect_container(&id, None::<InspectContainerOptions>)
                        .await
                        .map_err(|e| format!("container {id}: {e}"))?
                        .state
                        .unwrap_or_default();
                    let error = state.error.unwrap_or_default();
                    match state.status {
                        Some(
                            ContainerStateStatusEnum::RUNNING
                            | ContainerStateStatusEnum::EXITED
                            | ContainerStateStatusEnum::DEAD,
                        ) => Ok(Ok(id)),
                        // It will not start (a mount or a program that is not there).
                        _ if !error.is_empty() => Ok(Err(format!("container {id}: {error}"))),
                        other => Err(format!("container {id} is {other:?}")),
                    }
                }
            })
            .await;
            let container = match found {
                Ok(Ok(id)) => id,
                Ok(Err(why)) => return Err(BackendError::NotStarted(format!("{shown}: {why}"))),
                Err(e) => {
                    return Err(BackendError::Command(format!(
                        "{e}; swarm says: {}",
                        task_state(&name).await
                    )))
                }
            };
            // Under a cut, the one-off is on its node's side: the rules learn its address (a
            // first packet dropped before they do is sent again by TCP).
            let guest = match self.cuts.any() {
                true => self.admit(node, &container).await,
                false => Ok(false),
            };
            let out = match &guest {
                // The command may have ended already: its exit code deserves a moment to be
                // read.
                Ok(_) => {
                    let left = timeout.saturating_sub(start.elapsed()).max(Duration::from_secs(2));
                    collect(&self.docker, &container, left, &shown).await
                }
                Err(e) => Err(BackendError::Command(format!(
                    "putting the job running {shown} on {node}'s side of the cuts: {e}"
                ))),
            };
            // Its address is free again (and a failed admission may have left some rules
            // half made): every rule rebuilt from the cuts alone, whatever happened.
            let restored = match guest {
                Ok(false) => Ok(()),
                _ => self.apply_cuts().await,
            };
            let out = out?;
            restored.map_err(|e| {
                BackendError::Command(format!(
                    "{shown} exited {}, but rebuilding the cuts after it failed: {e}",
                    out.code
                ))
            })?;
            Ok(CmdOutput { ran: cmd.clone(), ..out })
        }
        .await;
        // Removing a job's service leaves its containers behind: remove them too (teardown
        // sweeps any this misses, by the run's label).
        let _ = self.docker.delete_service(&name).await;
        for id in self.job_containers(&name).await {
            let _ = self
                .docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptions { force: true, ..Default::default() }),
                )
                .await;
        }
        result
    }
}
