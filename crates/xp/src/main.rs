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
        /// A file holding the token from `POST /api/admin/cluster/join-tokens` on the leader
        /// (`-`: read it from standard input). Not taken on the command line, where every
        /// user of the machine could read it in the process list.
        #[arg(long, value_name = "PATH")]
        token_file: Option<PathBuf>,
        /// Refused: a token in argv leaks to `ps`. Use --token-file.
        #[arg(long, hide = true)]
        token: Option<String>,
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
            Command::Join { token_file, token } => {
                if token.is_some() {
                    eprintln!(
                        "error: --token is not accepted: a token on the command line shows in \
                         every user's process list. Put it in a file (mode 0600) and pass \
                         --token-file FILE, or pipe it in with --token-file -"
                    );
                    std::process::exit(2);
                }
                let Some(file) = token_file else {
                    eprintln!("error: xp join needs --token-file FILE (or - for standard input)");
                    std::process::exit(2);
                };
                let token = match read_token(&file) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("error: {e}");
                        std::process::exit(2);
                    }
                };
                let p = xp::commands::join(&config, &token)?;
                let replaces =
                    p.replaces.map(|r| format!(", replacing node {r}")).unwrap_or_default();
                println!(
                    "join recorded: this node will join as node {} via {}{replaces}; start it (`xp run`) to complete the join",
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

/// The join token from `file` (`-`: standard input), at most 8 KiB, trimmed.
fn read_token(file: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let mut text = String::new();
    let what = if file.as_os_str() == "-" {
        std::io::stdin()
            .take(8192)
            .read_to_string(&mut text)
            .map(|_| ())
            .map_err(|e| e.to_string())?;
        "standard input".to_owned()
    } else {
        std::fs::File::open(file)
            .and_then(|f| f.take(8192).read_to_string(&mut text))
            .map(|_| ())
            .map_err(|e| format!("cannot read the join token from {}: {e}", file.display()))?;
        file.display().to_string()
    };
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("no join token in {what}"));
    }
    Ok(token.to_owned())
}
