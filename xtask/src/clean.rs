//! `cargo xtask clean`: removes what a killed runner left behind, found by labels (docker) and
//! by command line (local processes).

use anyhow::Result;
use scenario::backend::{docker, local, swarm};

pub async fn run() -> Result<()> {
    let mut failed = None;
    match docker::connect().await {
        Ok(d) => {
            let prefix = crate::scenario::PROJECT_PREFIX;
            // Swarm services first: their tasks would come back if only containers went.
            // Whatever fails here, the run files and local processes below still go.
            match swarm::sweep::sweep(&d, docker::Projects::Prefixed(prefix)).await {
                Ok((left, (c, n, v))) => println!(
                    "docker: removed {c} container(s), {n} network(s), {v} volume(s) of compose \
                     projects {prefix}*; swarm: {} service(s), {} secret(s)",
                    left.services, left.secrets
                ),
                Err(e) => failed = Some(format!("docker: {e}")),
            }
        }
        Err(e) => println!("docker: no engine answered ({e}); nothing to clean there"),
    }
    let files = crate::scenario::docker_runs_dir();
    if files.exists() {
        std::fs::remove_dir_all(&files)?;
        println!("docker: removed the runs' env files and certificates ({})", files.display());
    }
    let runs = crate::scenario::local_runs_dir();
    let killed = local::kill_processes_under(&runs);
    if runs.exists() {
        std::fs::remove_dir_all(&runs)?;
    }
    println!("local: killed {killed} process(es), removed {}", runs.display());
    match failed {
        Some(e) => anyhow::bail!("{e}"),
        None => Ok(()),
    }
}
