//! `xp`: the reference cluster node. Flag parsing, logging setup and dispatch only.
//!
//! Exit codes: 0 success, 1 runtime failure (node error, refused join), 2 bad usage or env file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xp::node::{NodeError, RunningNode};
use xp_config::{Config, DEFAULT_ENV_FILE};

#[derive(Parser)]
#[command(name = "xp", version, about = "xp reference cluster node (openraft)")]
struct Cli {
    /// The env file holding this node's configuration.
    #[arg(long, global = true, default_value = DEFAULT_ENV_FILE)]
    env_file: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve: run Raft and the HTTP API until SIGTERM or Ctrl-C.
    Run,
    /// Make this pristine node the single voter of a new cluster (then `xp run`).
    Init,
    /// Record a join token on a wiped or new node; the next `xp run` joins the cluster.
    Join {
        /// The token from `POST /api/admin/cluster/join-tokens` on the leader.
        #[arg(long)]
        token: String,
    },
    /// Erase this node's data dir, as after a disk replacement (refuses while the node runs).
    Wipe {
        /// Confirm that this node's data is to be destroyed.
        #[arg(long)]
        yes: bool,
    },
    /// Exit 0 when the local node answers /api/cluster/info (container healthcheck).
    Healthcheck,
}

fn init_tracing(config: Option<&Config>) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| config.and_then(|c| c.rust_log.clone()))
        .unwrap_or_else(|| "info,openraft=warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli.env_file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(Some(&config));
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result: Result<(), NodeError> = rt.block_on(async {
        match cli.command {
            Command::Run => run(config).await,
            Command::Init => {
                let id = xp::commands::init(&config).await?;
                println!("initialized a new single-node cluster: this node is node {id}; start it with `xp run`");
                Ok(())
            }
            Command::Join { token } => {
                let p = xp::commands::join(&config, &token)?;
                println!(
                    "join recorded: this node will join as node {} via {}; start it (`xp run`) to complete the join",
                    p.node_id, p.leader_api_base_url
                );
                Ok(())
            }
            Command::Wipe { yes } => {
                if !yes {
                    eprintln!("error: refusing to erase {} without --yes", config.data_dir.display());
                    std::process::exit(2);
                }
                let n = xp::commands::wipe(&config)?;
                println!("erased {} ({n} entries removed)", config.data_dir.display());
                Ok(())
            }
            Command::Healthcheck => match xp::commands::healthcheck(&config).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    eprintln!("unhealthy: {e}");
                    std::process::exit(1);
                }
            },
        }
    });
    // Do not wait for stray blocking tasks: shutdown must be quick.
    rt.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if matches!(e, NodeError::Config(_)) { 2 } else { 1 })
        }
    }
}

async fn run(config: Config) -> Result<(), NodeError> {
    let node = RunningNode::start(config).await?;
    let mut fatal = node.fatal.clone();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    let outcome = tokio::select! {
        _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: shutting down"); Ok(()) }
        _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); Ok(()) }
        why = async {
            match fatal.wait_for(|f| f.is_some()).await {
                Ok(f) => f.clone().unwrap_or_default(),
                // No background task can fail any more: wait for a signal.
                Err(_) => std::future::pending().await,
            }
        } => Err(NodeError::JoinRejected(why)),
        why = xp::node::raft_failed(&node.app) => {
            tracing::error!("{why}");
            Err(NodeError::Raft(why))
        }
    };
    node.shutdown().await;
    outcome
}
