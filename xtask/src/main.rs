//! `cargo xtask`: project automation. Argument parsing and dispatch only; each command is a
//! module with a `run` function.
//!
//! Exit codes: 0 success, 1 a scenario or a campaign's checker failed, 2 bad usage or a malformed scenario,
//! 130 interrupted (the cluster is still torn down).

mod bench;
mod chaos;
mod clean;
mod compare;
mod scenario;
mod swarm;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "xp project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run chaos scenarios against a real 3-node cluster.
    Scenario(scenario::Args),
    /// Run a seeded, randomized fault campaign and judge it with checkers.
    Chaos(chaos::Args),
    /// Run the same drills on xp-3 and etcd-3 (repeated) and write docs/comparison.md.
    Compare(compare::Args),
    /// Remove every container, network, volume and process a runner left behind.
    Clean,
    /// Make or leave the single-node swarm `--backend swarm` runs on.
    #[command(subcommand)]
    Swarm(swarm::Args),
    /// Regenerate docs/scenario.schema.json from the scenario parser's types.
    Schema,
    /// Run a benchmark and print its numbers (`recover [ENTRIES...]`, `ops [KEYS]`).
    Bench { what: String, args: Vec<String> },
}

/// The workspace root (the xtask crate lives in `<root>/xtask`).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_owned()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = rt.block_on(async {
        match cli.command {
            Command::Scenario(args) => scenario::run(args).await,
            Command::Chaos(args) => chaos::run(args).await,
            Command::Clean => clean::run().await.map(|_| 0),
            Command::Swarm(args) => swarm::run(args).await,
            Command::Compare(args) => compare::run(args).await,
            Command::Bench { what, args } => bench::run(&what, &args),
            Command::Schema => {
                let path = root().join("docs/scenario.schema.json");
                std::fs::write(&path, ::scenario::parse::json_schema())
                    .map_err(anyhow::Error::from)?;
                println!("wrote {}", path.display());
                Ok(0)
            }
        }
    });
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
