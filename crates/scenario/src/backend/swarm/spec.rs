//! A node as a swarm service: its secrets, its volume, its task.

use std::collections::HashMap;

use base64::Engine as _;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSpec, EndpointSpecModeEnum,
    HealthConfig, Mount, MountTypeEnum, MountVolumeOptions, NetworkAttachmentConfig, SecretSpec,
    ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec,
    TaskSpecContainerSpecFile, TaskSpecContainerSpecSecrets, TaskSpecPlacement,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};
use bollard::Docker;

use crate::backend::docker::{PROJECT_LABEL, SERVICE_LABEL};
use crate::backend::BackendError;
use crate::profile::{NodeSpec, Profile};

/// Where a task finds its secrets.
const SECRETS_DIR: &str = "/run/secrets";

/// The named volume of a node's service.
pub fn volume(project: &str, service: &str) -> String {
    format!("{project}_{service}-data")
}

fn labels(project: &str) -> HashMap<String, String> {
    HashMap::from([(PROJECT_LABEL.to_owned(), project.to_owned())])
}

/// Creates the node's secrets: its env file (when the profile mounts it as a file; it holds
/// the cluster's secrets) and, with TLS, its certificate, key and the run's CA. Returns them as
/// the service references them.
pub async fn secrets(
    docker: &Docker,
    profile: &Profile,
    project: &str,
    node: &str,
) -> Result<Vec<TaskSpecContainerSpecSecrets>, BackendError> {
    // (secret name suffix, where the task finds it, contents)
    let mut files: Vec<(String, String, Vec<u8>)> = Vec::new();
    if let Some(path) = &profile.env_file_in_container {
        let text = profile
            .env_text(node, SECRETS_DIR)
            .map_err(|e| BackendError::Command(e.to_string()))?;
        files.push((format!("{node}.env"), path.clone(), text.into_bytes()));
    }
    if let Some(tls) = &profile.run_tls {
        let dir = tls.dir.join(node);
        for name in [format!("{node}.pem"), format!("{node}.key"), "ca.pem".to_owned()] {
            let path = dir.join(&name);
            let bytes = std::fs::read(&path)
                .map_err(|source| BackendError::Io { path: path.clone(), source })?;
            files.push((name.clone(), name, bytes));
        }
    }
    let mut out = Vec::new();
    for (suffix, target, bytes) in files {
        let name = format!("{project}_{node}_{suffix}");
        let id = docker
            .create_secret(SecretSpec {
                name: Some(name.clone()),
                labels: Some(labels(project)),
                data: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
                ..Default::default()
            })
            .await?
            .id;
        out.push(TaskSpecContainerSpecSecrets {
            file: Some(TaskSpecContainerSpecFile {
                name: Some(target),
                uid: Some("0".into()),
                gid: Some("0".into()),
                mode: Some(0o400),
            }),
            secret_id: Some(id),
            secret_name: Some(name),
        });
    }
    Ok(out)
}

/// The service of `node`: one replica of the profile's run command, pinned to `swarm_node`,
/// its volume at the profile's data dir, its port published on the host (each task gets a
/// port of its own), reachable on `network` by its service name, never restarted by swarm
/// (a fault's effect stays until a step undoes it).
#[allow(clippy::too_many_arguments)]
pub fn service(
    profile: &Profile,
    project: &str,
    image: &str,
    node: &NodeSpec,
    network: &str,
    swarm_node: &str,
    secrets: Vec<TaskSpecContainerSpecSecrets>,
) -> Result<ServiceSpec, BackendError> {
    let mut command = profile.run.clone();
    let Some(first) = command.first_mut() else {
        return Err(BackendError::Command(format!(
            "the {} profile has no `run` command: swarm needs it to start a node",
            profile.name
        )));
    };
    *first = format!("/{first}");
    // A profile that mounts its env file gets it as a secret, where it expects it; one that
    // does not gets the variables (no secret among them) as the task's environment.
    let env = match &profile.env_file_in_container {
        Some(_) => Vec::new(),
        // TLS paths as the task sees its certificate secrets. These values are in the
        // service's spec (`docker service inspect` shows them): fine for etcd's, which hold no
        // secret; a profile whose env file holds one mounts it (`env_file_in_container`).
        None => {
            let text = profile
                .env_text(&node.name, SECRETS_DIR)
                .map_err(|e| BackendError::Command(e.to_string()))?;
            crate::backend::local::env_vars(&text)
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect()
        }
    };
    let mut container = container(profile, project, image, &node.service);
    container.command = Some(command);
    container.env = Some(env);
    container.secrets = Some(secrets);
    Ok(ServiceSpec {
        name: Some(format!("{project}_{}", node.service)),
        labels: Some(labels(project)),
        task_template: Some(TaskSpec {
            container_spec: Some(container),
            ..task(network, Some(&node.service), swarm_node)
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        // dnsrr: a stopped node's name does not resolve (as under compose), rather than
        // resolving to a virtual IP with nothing behind it.
        endpoint_spec: Some(EndpointSpec {
            mode: Some(EndpointSpecModeEnum::DNSRR),
            ports: Some(vec![EndpointPortConfig {
                target_port: Some(node.port as i64),
                publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    })
}

/// The container of a node's task (or of a one-off beside it): the image, the node's volume
/// at the profile's data dir, no health check, SIGTERM then SIGKILL after 10 s.
pub fn container(
    profile: &Profile,
    project: &str,
    image: &str,
    service: &str,
) -> TaskSpecContainerSpec {
    let mut container_labels = labels(project);
    container_labels.insert(SERVICE_LABEL.to_owned(), service.to_owned());
    TaskSpecContainerSpec {
        image: Some(image.to_owned()),
        labels: Some(container_labels),
        hostname: Some(service.to_owned()),
        mounts: Some(vec![Mount {
            target: Some(profile.data_dir_in_container.clone()),
            source: Some(volume(project, service)),
            typ: Some(MountTypeEnum::VOLUME),
            volume_options: Some(MountVolumeOptions {
                labels: Some(labels(project)),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        // The image's HEALTHCHECK is for humans: swarm would kill a task it calls unhealthy
        // (a node waiting to be initialized) and keep a starting one out of DNS. The runner
        // waits for readiness itself, as under compose, which ignores health.
        health_check: Some(HealthConfig { test: Some(vec!["NONE".into()]), ..Default::default() }),
        stop_signal: Some("SIGTERM".into()),
        stop_grace_period: Some(10_000_000_000),
        ..Default::default()
    }
}

/// A task of the node's: never restarted by swarm (a fault's effect stays until a step undoes
/// it), pinned to `swarm_node` (where the volume is), on `network` (as `alias`).
pub fn task(network: &str, alias: Option<&str>, swarm_node: &str) -> TaskSpec {
    TaskSpec {
        restart_policy: Some(TaskSpecRestartPolicy {
            condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
            ..Default::default()
        }),
        placement: Some(TaskSpecPlacement {
            constraints: Some(vec![format!("node.id=={swarm_node}")]),
            ..Default::default()
        }),
        networks: Some(vec![NetworkAttachmentConfig {
            target: Some(network.to_owned()),
            aliases: alias.map(|a| vec![a.to_owned()]),
            ..Default::default()
        }]),
        ..Default::default()
    }
}
