//! `cargo xtask clean`: removes what a killed runner left behind, found by labels (docker) and
//! by command line (local processes).

use anyhow::Result;
use scenario::backend::{docker, local, swarm};

pub async fn run() -> Result<()> {
    match docker::connect().await {
        Ok(d) => {
            let prefix = crate::scenario::PROJECT_PREFIX;
            // Swarm services first: their tasks would come back if only containers went.
            let (left, (c, n, v)) =
                swarm::sweep::sweep(&d, docker::Projects::Prefixed(prefix)).await?;
            println!(
                "docker: removed {c} container(s), {n} network(s), {v} volume(s) of compose \
                 projects {prefix}*; swarm: {} service(s), {} secret(s)",
                left.services, left.secrets
            );
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
    Ok(())
}
