//! `cargo xtask swarm init|leave|status`: a single-node swarm for `--backend swarm` on this
//! machine (advertised on 127.0.0.1), and leaving it again. The runner never changes the
//! engine's swarm state by itself.

use anyhow::{bail, Context, Result};
use scenario::backend::{docker, swarm};

#[derive(clap::Subcommand)]
pub enum Args {
    /// Make this engine a single-node swarm manager (advertise 127.0.0.1).
    Init,
    /// Leave the swarm (force: a single-node manager), after `cargo xtask clean`.
    Leave,
    /// Say whether this engine can run `--backend swarm`.
    Status,
}

fn docker_cli(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .with_context(|| format!("docker {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("docker {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

pub async fn run(args: Args) -> Result<u8> {
    let d = docker::connect().await.context("the Docker engine")?;
    let state = swarm::manager_node(&d).await;
    match args {
        Args::Status => match state {
            Ok(id) => {
                println!("swarm manager (node {id}): --backend swarm can run here");
                Ok(0)
            }
            Err(e) => {
                println!("{e}");
                Ok(2)
            }
        },
        Args::Init => {
            if let Ok(id) = state {
                println!("already a swarm manager (node {id}); nothing to do");
                return Ok(0);
            }
            docker_cli(&["swarm", "init", "--advertise-addr", "127.0.0.1"])?;
            let id = swarm::manager_node(&d).await?;
            println!("single-node swarm made (node {id}); `cargo xtask swarm leave` undoes it");
            Ok(0)
        }
        Args::Leave => {
            if state.is_err()
                && d.info().await?.swarm.and_then(|s| s.node_id).is_none_or(|n| n.is_empty())
            {
                println!("not in a swarm; nothing to do");
                return Ok(0);
            }
            // Only the kind of swarm `init` makes: one node, on loopback. Leaving a real
            // swarm's manager is not this tool's call.
            let info = d.info().await?.swarm.unwrap_or_default();
            let (nodes, addr) = (info.nodes.unwrap_or(0), info.node_addr.unwrap_or_default());
            if nodes > 1 || addr != "127.0.0.1" {
                println!(
                    "this engine is in a swarm of {nodes} node(s) advertised on {addr:?}, not a \
                     single-node swarm on 127.0.0.1 as `cargo xtask swarm init` makes: not \
                     leaving it (use `docker swarm leave` yourself if you mean to)"
                );
                return Ok(2);
            }
            let left = swarm::sweep::leftovers(
                &d,
                docker::Projects::Prefixed(crate::scenario::PROJECT_PREFIX),
            )
            .await?;
            if left.services > 0 {
                println!(
                    "{} runner service(s) still exist: run `cargo xtask clean` first",
                    left.services
                );
                return Ok(2);
            }
            docker_cli(&["swarm", "leave", "--force"])?;
            println!("left the swarm");
            Ok(0)
        }
    }
}
