//! The compose side of a run: which CLI is installed, the files and variables a compose file is
//! given, and the `up`/`down` invocations (everything else goes through bollard).

use std::path::{Path, PathBuf};

use bollard::network::ListNetworksOptions;
use bollard::Docker;

use super::DockerBackend;
use crate::backend::BackendError;
use crate::profile::Profile;

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

    pub(super) fn command(self) -> tokio::process::Command {
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

/// The run's env and TLS directories, as compose variables.
pub(super) fn run_env(profile: &Profile, run_dir: &Path) -> [(&'static str, PathBuf); 2] {
    let tls = match &profile.run_tls {
        Some(t) => t.dir.clone(),
        None => run_dir.join("no-tls"),
    };
    [("CHAOS_ENV_DIR", run_dir.join("env")), ("CHAOS_TLS_DIR", tls)]
}

/// Writes the run's env files (owner-only) and, without TLS, the empty TLS directories.
pub(crate) fn write_run_files(profile: &Profile, run_dir: &Path) -> Result<(), BackendError> {
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
        crate::backend::local::write_private(&path, text.as_bytes()).map_err(io(&path))?;
        if profile.run_tls.is_none() {
            let empty = run_dir.join("no-tls").join(&n.name);
            std::fs::create_dir_all(&empty).map_err(io(&empty))?;
        }
    }
    Ok(())
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
pub(super) async fn free_subnet(docker: &Docker) -> Result<String, BackendError> {
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

impl DockerBackend {
    pub(super) async fn compose(&self, args: &[&str]) -> Result<(), BackendError> {
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
