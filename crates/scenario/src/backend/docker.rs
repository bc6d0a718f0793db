//! The docker backend: the profile's compose file, brought up under a project name unique to
//! the run. bollard does every container operation; the compose CLI (v2 `docker compose` or
//! v1 `docker-compose`, whichever is installed) only does `up` and `down`. Containers are found
//! by their compose labels, never by name (v1 and v2 name them differently).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::container::{
    Config, CreateContainerOptions, InspectContainerOptions, KillContainerOptions,
    ListContainersOptions, LogOutput, LogsOptions, RemoveContainerOptions, StartContainerOptions,
    StopContainerOptions, WaitContainerOptions,
};
use bollard::image::BuildImageOptions;
use bollard::models::{EndpointIpamConfig, EndpointSettings, HostConfig};
use bollard::network::{
    ConnectNetworkOptions, CreateNetworkOptions, DisconnectNetworkOptions, ListNetworksOptions,
};
use bollard::volume::{ListVolumesOptions, RemoveVolumeOptions};
use bollard::Docker;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::{poll, Backend, BackendError, CmdOutput, Teardown};
use crate::profile::Profile;

/// Every compose project a runner creates starts with this, so `clean` can find leftovers.
const PROJECT_LABEL: &str = "com.docker.compose.project";
const SERVICE_LABEL: &str = "com.docker.compose.service";
/// Marks one-off containers (recover, join, ops) so they are cleaned up too.
const ONEOFF_LABEL: &str = "chaos-runner.oneoff";

/// Which compose command line is installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComposeCli {
    /// `docker compose` (the v2 plugin).
    V2,
    /// `docker-compose` (v1, e.g. Debian's package).
    V1,
}

impl ComposeCli {
    /// Prefers v2 when both answer.
    pub fn detect() -> Result<ComposeCli, BackendError> {
        let ok = |prog: &str, args: &[&str]| {
            std::process::Command::new(prog)
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if ok("docker", &["compose", "version"]) {
            Ok(ComposeCli::V2)
        } else if ok("docker-compose", &["version"]) {
            Ok(ComposeCli::V1)
        } else {
            Err(BackendError::Command(
                "neither `docker compose` nor `docker-compose` is installed (Debian: apt-get install docker-compose)".into(),
            ))
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            ComposeCli::V2 => "docker compose (v2)",
            ComposeCli::V1 => "docker-compose (v1)",
        }
    }

    fn command(self) -> tokio::process::Command {
        match self {
            ComposeCli::V2 => {
                let mut c = tokio::process::Command::new("docker");
                c.arg("compose");
                c
            }
            ComposeCli::V1 => tokio::process::Command::new("docker-compose"),
        }
    }
}

/// Connects to the local engine and agrees on an API version it speaks (e.g. 1.41).
pub async fn connect() -> Result<Docker, BackendError> {
    let docker = Docker::connect_with_local_defaults()?;
    let docker = docker.negotiate_version().await?;
    docker.ping().await?;
    Ok(docker)
}

/// Builds the profile's image from the given binaries through a tar context, or reuses the
/// image already built from the same bytes. Returns its tag.
pub async fn ensure_image(
    docker: &Docker,
    profile: &Profile,
    bins: &BTreeMap<String, PathBuf>,
    progress: &mut dyn FnMut(&str),
) -> Result<String, BackendError> {
    let dockerfile_path = profile.resolve(&profile.dockerfile);
    let dockerfile = std::fs::read(&dockerfile_path)
        .map_err(|source| BackendError::Io { path: dockerfile_path, source })?;
    let mut files: Vec<(String, Vec<u8>, u32)> = vec![("Dockerfile".into(), dockerfile, 0o644)];
    for name in &profile.binaries {
        let path = bins
            .get(name)
            .ok_or_else(|| BackendError::Command(format!("binary {name} was not built")))?;
        let bytes = std::fs::read(path)
            .map_err(|source| BackendError::Io { path: path.clone(), source })?;
        files.push((name.clone(), bytes, 0o755));
    }
    for f in &profile.host_files {
        let bytes = std::fs::read(&f.from).map_err(|e| {
            let install = f.package.as_ref().map(|p| format!(" (install {p})")).unwrap_or_default();
            BackendError::Command(format!(
                "the {} image needs {}{install}: {e}",
                profile.name,
                f.from.display()
            ))
        })?;
        files.push((f.to.clone(), bytes, 0o755));
    }
    let mut h = Sha256::new();
    for (name, bytes, _) in &files {
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    let digest: String = h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect();
    let tag = format!("{}:{digest}", profile.image_repo);
    if docker.inspect_image(&tag).await.is_ok() {
        progress(&format!("image {tag} is up to date (same binaries), reusing it"));
        return Ok(tag);
    }
    progress(&format!("building image {tag} (FROM scratch, {} files)", files.len()));
    let mut tar = tar::Builder::new(Vec::new());
    for (name, bytes, mode) in &files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(*mode);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes.as_slice())
            .map_err(|source| BackendError::Io { path: name.into(), source })?;
    }
    let context = tar
        .into_inner()
        .map_err(|source| BackendError::Io { path: "build context".into(), source })?;
    let options = BuildImageOptions {
        dockerfile: "Dockerfile".to_owned(),
        t: tag.clone(),
        rm: true,
        ..Default::default()
    };
    let mut stream = docker.build_image(options, None, Some(bytes::Bytes::from(context)));
    while let Some(item) = stream.next().await {
        let info = item?;
        if let Some(e) = info.error {
            return Err(BackendError::Command(format!("image build failed: {e}")));
        }
        if let Some(s) = info.stream {
            let s = s.trim();
            if s.starts_with("Step ") {
                progress(s);
            }
        }
    }
    Ok(tag)
}

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

/// Where an isolated node was attached, to reattach it identically.
#[derive(Clone, Debug)]
struct Attachment {
    network: String,
    ip: String,
    aliases: Vec<String>,
}

/// A node a partition moved off its networks onto a group network.
#[derive(Clone, Debug)]
struct Moved {
    node: String,
    /// Where it was, to put it back identically.
    from: Vec<Attachment>,
    /// The group network it is on now.
    to: String,
}

/// What a `partition` changed, so `heal-partition` (and only it) undoes exactly that.
#[derive(Clone, Debug, Default)]
struct Partitioned {
    networks: Vec<String>,
    moved: Vec<Moved>,
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
    isolated: BTreeMap<String, Vec<Attachment>>,
    partitioned: Option<Partitioned>,
}

/// The run's env and TLS directories, as compose variables.
fn run_env(profile: &Profile, run_dir: &Path) -> [(&'static str, PathBuf); 2] {
    let tls = match &profile.run_tls {
        Some(t) => t.dir.clone(),
        None => run_dir.join("no-tls"),
    };
    [("CHAOS_ENV_DIR", run_dir.join("env")), ("CHAOS_TLS_DIR", tls)]
}

/// Writes the run's env files (owner-only) and, without TLS, the empty TLS directories.
fn write_run_files(profile: &Profile, run_dir: &Path) -> Result<(), BackendError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BackendError::Io { path, source }
    };
    let env_dir = run_dir.join("env");
    certs::private_dir(&env_dir).map_err(|e| BackendError::Command(e.to_string()))?;
    let tls_dir = profile.tls.as_ref().map(|t| t.dir_in_container.clone()).unwrap_or_default();
    for n in &profile.nodes {
        let text = profile
            .env_text(&n.name, &tls_dir)
            .map_err(|e| BackendError::Command(e.to_string()))?;
        let path = env_dir.join(format!("{}.env", n.name));
        super::local::write_private(&path, text.as_bytes()).map_err(io(&path))?;
        if profile.run_tls.is_none() {
            let empty = run_dir.join("no-tls").join(&n.name);
            std::fs::create_dir_all(&empty).map_err(io(&empty))?;
        }
    }
    Ok(())
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
        Ok(DockerBackend {
            run_dir,
            docker,
            profile,
            cli,
            project,
            image,
            subnet,
            compose_file,
            isolated: BTreeMap::new(),
            partitioned: None,
        })
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    async fn compose(&self, args: &[&str]) -> Result<(), BackendError> {
        let out = self
            .cli
            .command()
            .args(["-p", &self.project, "-f"])
            .arg(&self.compose_file)
            .args(args)
            .env("CHAOS_IMAGE", &self.image)
            .envs(subnet_vars(&self.subnet))
            .envs(run_env(&self.profile, &self.run_dir))
            .output()
            .await
            .map_err(|e| BackendError::Command(format!("{}: {e}", self.cli.describe())))?;
        if !out.status.success() {
            return Err(BackendError::Command(format!(
                "{} {} failed: {}",
                self.cli.describe(),
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// The service container of `node` (found by labels).
    async fn container(&self, node: &str) -> Result<String, BackendError> {
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
                all: true,
                filters,
                ..Default::default()
            }))
            .await?;
        list.iter()
            .find(|c| !c.labels.as_ref().is_some_and(|l| l.contains_key(ONEOFF_LABEL)))
            .and_then(|c| c.id.clone())
            .ok_or_else(|| {
                BackendError::Command(format!(
                    "no container for service {service} in project {}",
                    self.project
                ))
            })
    }

    /// Where a container is attached now: each network with its address and DNS aliases.
    async fn attachments(&self, id: &str) -> Result<Vec<Attachment>, BackendError> {
        let info = self.docker.inspect_container(id, None::<InspectContainerOptions>).await?;
        let networks = info.network_settings.and_then(|n| n.networks).unwrap_or_default();
        Ok(networks
            .into_iter()
            .map(|(network, ep)| Attachment {
                network,
                ip: ep.ip_address.unwrap_or_default(),
                aliases: ep.aliases.unwrap_or_default(),
            })
            .collect())
    }

    /// Attaches a container to `a.network` with `a`'s address (when it has one) and aliases.
    async fn attach(&self, id: &str, a: &Attachment) -> Result<(), BackendError> {
        let endpoint_config = EndpointSettings {
            aliases: Some(a.aliases.clone()),
            ipam_config: (!a.ip.is_empty()).then(|| EndpointIpamConfig {
                ipv4_address: Some(a.ip.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.docker
            .connect_network(
                &a.network,
                ConnectNetworkOptions { container: id.to_owned(), endpoint_config },
            )
            .await?;
        Ok(())
    }

    async fn detach(&self, id: &str, network: &str) -> Result<(), BackendError> {
        self.docker
            .disconnect_network(
                network,
                DisconnectNetworkOptions { container: id.to_owned(), force: true },
            )
            .await?;
        Ok(())
    }

    async fn running(&self, id: &str) -> Result<bool, BackendError> {
        let i = self.docker.inspect_container(id, None::<InspectContainerOptions>).await?;
        Ok(i.state.and_then(|s| s.running).unwrap_or(false))
    }
}

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
}

/// The compose variables of the cluster network `subnet` (`a.b.c.0/24`): the subnet, its
/// first three octets, from which each node's fixed address is made (`${CHAOS_NET}.11` for
/// node1), and the range docker hands out addresses from (its upper half). Nodes keep their
/// addresses across stops, isolations and partitions, and a one-off container (a wipe, a join)
/// never takes the address of a stopped node, which that node's next start would then find in
/// use ("403 Address already in use", seen in a campaign on xp-5).
pub fn subnet_vars(subnet: &str) -> [(&'static str, String); 3] {
    let net = subnet.trim_end_matches("/24").trim_end_matches(".0").to_owned();
    [
        ("CHAOS_SUBNET", subnet.to_owned()),
        ("CHAOS_DYNAMIC", format!("{net}.128/25")),
        ("CHAOS_NET", net),
    ]
}

/// A /24 in 10.199.0.0/16 that no existing network uses.
async fn free_subnet(docker: &Docker) -> Result<String, BackendError> {
    let networks = docker.list_networks(None::<ListNetworksOptions<String>>).await?;
    let used: Vec<String> = networks
        .iter()
        .filter_map(|n| n.ipam.as_ref()?.config.clone())
        .flatten()
        .filter_map(|c| c.subnet)
        .collect();
    let mut seed = [0u8; 1];
    getrandom::getrandom(&mut seed).expect("random source");
    for i in 0..=255u16 {
        let x = (seed[0] as u16 + i) % 254 + 1;
        let s = format!("10.199.{x}.0/24");
        if !used.contains(&s) {
            return Ok(s);
        }
    }
    Err(BackendError::Command("no free 10.199.x.0/24 subnet for the cluster network".into()))
}

impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn supports(&self, _action: &str) -> Result<(), String> {
        Ok(())
    }

    async fn up(&mut self) -> Result<(), BackendError> {
        self.compose(&["up", "-d"]).await?;
        for n in self.profile.nodes.clone() {
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
        let attachments = self.attachments(&id).await?;
        for a in &attachments {
            self.detach(&id, &a.network).await?;
        }
        self.isolated.insert(node.to_owned(), attachments);
        Ok(())
    }

    async fn heal(&mut self, node: &str) -> Result<(), BackendError> {
        let id = self.container(node).await?;
        let Some(attachments) = self.isolated.remove(node) else {
            return Err(BackendError::Command(format!("{node} is not isolated")));
        };
        for a in attachments {
            // Same IPv4 address and DNS aliases: `network disconnect` dropped both.
            self.attach(&id, &a).await?;
        }
        Ok(())
    }

    /// The first group stays on the cluster network; each other group moves to a network of its
    /// own (labelled with the project, so teardown and `clean` remove it). A container is
    /// connected to its group network (with its DNS aliases) before it leaves the cluster
    /// network: docker then publishes its ports on the new network, so the runner keeps
    /// reaching it, on a new host port that [`Backend::endpoint`] reads afresh.
    async fn partition(&mut self, groups: &[Vec<String>]) -> Result<(), BackendError> {
        if self.partitioned.is_some() {
            return Err(BackendError::Command(
                "the cluster is already partitioned; add a `heal-partition` step first".into(),
            ));
        }
        // Recorded as it goes, so that a failure half-way can still be healed.
        self.partitioned = Some(Partitioned::default());
        for (k, group) in groups.iter().enumerate().skip(1) {
            let network = format!("{}_partition{k}", self.project);
            self.docker
                .create_network(CreateNetworkOptions {
                    name: network.clone(),
                    check_duplicate: true,
                    driver: "bridge".to_owned(),
                    labels: HashMap::from([(PROJECT_LABEL.to_owned(), self.project.clone())]),
                    ..Default::default()
                })
                .await?;
            self.partitioned.as_mut().expect("set above").networks.push(network.clone());
            for node in group {
                let id = self.container(node).await?;
                let from = self.attachments(&id).await?;
                let mut aliases: Vec<String> =
                    from.iter().flat_map(|a| a.aliases.iter().cloned()).collect();
                aliases.sort();
                aliases.dedup();
                let to = Attachment { network: network.clone(), ip: String::new(), aliases };
                self.attach(&id, &to).await?;
                self.partitioned.as_mut().expect("set above").moved.push(Moved {
                    node: node.clone(),
                    from: from.clone(),
                    to: network.clone(),
                });
                for a in &from {
                    self.detach(&id, &a.network).await?;
                }
            }
        }
        Ok(())
    }

    async fn heal_partition(&mut self) -> Result<(), BackendError> {
        let Some(p) = self.partitioned.take() else {
            return Err(BackendError::Command("the cluster is not partitioned".into()));
        };
        for m in &p.moved {
            let id = self.container(&m.node).await?;
            let now: Vec<String> =
                self.attachments(&id).await?.into_iter().map(|a| a.network).collect();
            for a in m.from.iter().filter(|a| !now.contains(&a.network)) {
                // Same IPv4 address and DNS aliases as before the partition. A node restarted
                // meanwhile on the cluster network may have been given that address (compose
                // pins none): then the aliases alone, which is what peers resolve.
                match self.attach(&id, a).await {
                    Err(BackendError::Docker(
                        bollard::errors::Error::DockerResponseServerError {
                            status_code: 403, ..
                        },
                    )) => {
                        let any_ip = Attachment { ip: String::new(), ..a.clone() };
                        self.attach(&id, &any_ip).await?;
                    }
                    other => other?,
                }
            }
            if now.contains(&m.to) {
                self.detach(&id, &m.to).await?;
            }
        }
        for n in &p.networks {
            self.docker.remove_network(n).await?;
        }
        Ok(())
    }

    async fn oneoff(
        &mut self,
        node: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<CmdOutput, BackendError> {
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
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions { name: name.clone(), platform: None }),
                config,
            )
            .await?;
        let result = async {
            self.docker.start_container(&created.id, None::<StartContainerOptions<String>>).await?;
            let mut wait =
                self.docker.wait_container(&created.id, None::<WaitContainerOptions<String>>);
            let code = match tokio::time::timeout(timeout, wait.next()).await {
                Err(_) => {
                    return Err(BackendError::Timeout {
                        after: timeout,
                        what: format!("running {}", cmd.join(" ")),
                    })
                }
                Ok(Some(Ok(r))) => r.status_code,
                // bollard reports a non-zero exit as an error carrying the code.
                Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError {
                    code, ..
                }))) => code,
                Ok(Some(Err(e))) => return Err(e.into()),
                Ok(None) => -1,
            };
            let (mut stdout, mut stderr) = (String::new(), String::new());
            let mut logs = self.docker.logs(
                &created.id,
                Some(LogsOptions::<String> { stdout: true, stderr: true, ..Default::default() }),
            );
            while let Some(item) = logs.next().await {
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
            Ok(CmdOutput { code, stdout, stderr })
        }
        .await;
        let _ = self
            .docker
            .remove_container(
                &created.id,
                Some(RemoveContainerOptions { force: true, ..Default::default() }),
            )
            .await;
        result
    }

    async fn put_file(
        &mut self,
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
        let labels = self.oneoff_labels(node);
        let config = Config {
            image: Some(self.image.clone()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                binds: Some(binds),
                network_mode: Some("none".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created =
            self.docker.create_container(None::<CreateContainerOptions<String>>, config).await?;
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes)
            .map_err(|source| BackendError::Io { path: name.into(), source })?;
        let body =
            tar.into_inner().map_err(|source| BackendError::Io { path: name.into(), source })?;
        let res = self
            .docker
            .upload_to_container(
                &created.id,
                Some(bollard::container::UploadToContainerOptions {
                    path: self.profile.data_dir_in_container.clone(),
                    ..Default::default()
                }),
                bytes::Bytes::from(body),
            )
            .await;
        let _ = self
            .docker
            .remove_container(
                &created.id,
                Some(RemoveContainerOptions { force: true, ..Default::default() }),
            )
            .await;
        res?;
        Ok(format!("{}/{name}", self.profile.data_dir_in_container))
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

#[cfg(test)]
mod tests {
    #[test]
    fn nodes_have_fixed_addresses_outside_the_range_docker_hands_out() {
        let vars = super::subnet_vars("10.199.42.0/24");
        assert_eq!(
            vars.map(|(k, v)| format!("{k}={v}")),
            [
                "CHAOS_SUBNET=10.199.42.0/24",
                "CHAOS_DYNAMIC=10.199.42.128/25",
                "CHAOS_NET=10.199.42"
            ]
        );
        // Every compose file pins each node below the dynamic range and gives docker that range.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../compose");
        let mut files = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_none_or(|x| x != "yml") {
                continue;
            }
            files += 1;
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.contains("ip_range: ${CHAOS_DYNAMIC}"), "{}", p.display());
            let nodes = text
                .lines()
                .filter(|l| {
                    l.strip_prefix("  node")
                        .and_then(|r| r.strip_suffix(':'))
                        .is_some_and(|n| n.parse::<u8>().is_ok())
                })
                .count();
            let pinned = text.matches("ipv4_address: ${CHAOS_NET}.1").count();
            assert!(
                nodes > 0 && pinned == nodes,
                "{}: {pinned} of {nodes} nodes pinned",
                p.display()
            );
        }
        assert!(files >= 6);
    }
}
