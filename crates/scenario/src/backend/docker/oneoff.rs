//! One-off containers beside a node: the profile's recovery, wipe, join and inspect commands
//! and `ops` steps, run on the node's volume and network while the node itself is stopped;
//! and files put into a node's volume.

use std::collections::HashMap;
use std::time::Duration;

use bollard::container::{
    Config, CreateContainerOptions, InspectContainerOptions, LogOutput, LogsOptions,
    RemoveContainerOptions, StartContainerOptions, WaitContainerOptions,
};
use bollard::models::HostConfig;
use bollard::Docker;
use futures_util::StreamExt;

use super::{DockerBackend, ONEOFF_LABEL, PROJECT_LABEL};
use crate::backend::{BackendError, CmdOutput};

/// `source:destination[:ro]` binds repeating a container's mounts (only the one at `only`).
fn binds_of(mounts: &[bollard::models::MountPoint], only: Option<&str>) -> Vec<String> {
    mounts
        .iter()
        .filter(|m| only.is_none_or(|o| m.destination.as_deref() == Some(o)))
        .filter_map(|m| {
            let src = m.name.clone().or(m.source.clone())?;
            let dst = m.destination.clone()?;
            let ro = if m.rw == Some(false) { ":ro" } else { "" };
            Some(format!("{src}:{dst}{ro}"))
        })
        .collect()
}

impl DockerBackend {
    /// Labels that tie a one-off container to this run, so teardown and `clean` find it.
    fn oneoff_labels(&self, node: &str) -> HashMap<String, String> {
        HashMap::from([
            (PROJECT_LABEL.to_owned(), self.project.clone()),
            (ONEOFF_LABEL.to_owned(), node.to_owned()),
        ])
    }
    pub(super) async fn run_oneoff(
        &self,
        node: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<CmdOutput, BackendError> {
        let cmd = match self.profile.node(node) {
            Some(n) => crate::backend::fill_ports(cmd, n.port, n.peer_port()),
            None => cmd.to_vec(),
        };
        let service_id = self.container(node).await?;
        let info =
            self.docker.inspect_container(&service_id, None::<InspectContainerOptions>).await?;
        // On the node's network (for commands that call the cluster's API), with the same
        // volume and env file as the node's own container.
        let network = info
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .and_then(|n| n.keys().next().cloned())
            .unwrap_or_else(|| "none".into());
        let binds = binds_of(info.mounts.as_deref().unwrap_or_default(), None);
        let labels = self.oneoff_labels(node);
        let config = Config {
            image: Some(self.image.clone()),
            entrypoint: Some(vec![format!("/{}", cmd[0])]),
            cmd: Some(cmd[1..].to_vec()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                binds: Some(binds),
                network_mode: Some(network),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut suffix = [0u8; 3];
        getrandom::getrandom(&mut suffix).expect("random source");
        let name = format!(
            "{}-oneoff-{node}-{}",
            self.project,
            suffix.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let mut out = run_container(&self.docker, name, config, timeout, &cmd.join(" ")).await?;
        out.ran = cmd;
        Ok(out)
    }

    pub(super) async fn put_in_volume(
        &self,
        node: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<String, BackendError> {
        // A container that never starts, with the node's volume, receives the file as a tar.
        let service_id = self.container(node).await?;
        let info =
            self.docker.inspect_container(&service_id, None::<InspectContainerOptions>).await?;
        let binds = binds_of(
            info.mounts.as_deref().unwrap_or_default(),
            Some(&self.profile.data_dir_in_container),
        );
        let dir = &self.profile.data_dir_in_container;
        upload_file(&self.docker, &self.image, binds, self.oneoff_labels(node), dir, name, bytes)
            .await?;
        Ok(format!("{}/{name}", self.profile.data_dir_in_container))
    }
}

/// Runs `config` as a container called `name` to its end (at most `timeout`), then removes it.
pub(crate) async fn run_container(
    docker: &Docker,
    name: String,
    config: Config<String>,
    timeout: Duration,
    shown: &str,
) -> Result<CmdOutput, BackendError> {
    let created = docker
        .create_container(Some(CreateContainerOptions { name, platform: None }), config)
        .await?;
    let result = async {
        docker.start_container(&created.id, None::<StartContainerOptions<String>>).await?;
        collect(docker, &created.id, timeout, shown).await
    }
    .await;
    let _ = docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptions { force: true, ..Default::default() }),
        )
        .await;
    result
}

/// Waits (at most `timeout`) for the started container `id` to end; its exit code and output.
pub(crate) async fn collect(
    docker: &Docker,
    id: &str,
    timeout: Duration,
    shown: &str,
) -> Result<CmdOutput, BackendError> {
    let mut wait = docker.wait_container(id, None::<WaitContainerOptions<String>>);
    let code = match tokio::time::timeout(timeout, wait.next()).await {
        Err(_) => {
            return Err(BackendError::Timeout { after: timeout, what: format!("running {shown}") })
        }
        Ok(Some(Ok(r))) => r.status_code,
        // bollard reports a non-zero exit as an error carrying the code.
        Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => code,
        Ok(Some(Err(e))) => return Err(e.into()),
        Ok(None) => -1,
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let mut logs = docker
        .logs(id, Some(LogsOptions::<String> { stdout: true, stderr: true, ..Default::default() }));
    while let Some(item) = logs.next().await {
        match item? {
            LogOutput::StdOut { message } => stdout.push_str(&String::from_utf8_lossy(&message)),
            LogOutput::StdErr { message } => stderr.push_str(&String::from_utf8_lossy(&message)),
            _ => {}
        }
    }
    Ok(CmdOutput { code, stdout, stderr, ran: Vec::new() })
}

/// Puts `bytes` as `dir/name` (owner-only) into the volume bound by `binds`, through a
/// container of `image` that never starts.
pub(crate) async fn upload_file(
    docker: &Docker,
    image: &str,
    binds: Vec<String>,
    labels: HashMap<String, String>,
    dir: &str,
    name: &str,
    bytes: &[u8],
) -> Result<(), BackendError> {
    let config = Config {
        image: Some(image.to_owned()),
        labels: Some(labels),
        host_config: Some(HostConfig {
            binds: Some(binds),
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker.create_container(None::<CreateContainerOptions<String>>, config).await?;
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o600);
    header.set_cksum();
    tar.append_data(&mut header, name, bytes)
        .map_err(|source| BackendError::Io { path: name.into(), source })?;
    let body = tar.into_inner().map_err(|source| BackendError::Io { path: name.into(), source })?;
    let res = docker
        .upload_to_container(
            &created.id,
            Some(bollard::container::UploadToContainerOptions {
                path: dir.to_owned(),
                ..Default::default()
            }),
            bytes::Bytes::from(body),
        )
        .await;
    let _ = docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptions { force: true, ..Default::default() }),
        )
        .await;
    res.map(|_| ()).map_err(Into::into)
}
