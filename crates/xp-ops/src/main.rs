//! `xp-ops`: operator commands for xp clusters. Flag parsing and printing only; the logic is in
//! `xp-recovery`.
//!
//! Exit codes: 0 done (or nothing to do), 2 bad usage or input (missing `-y`, bad env file),
//! 3 refused (node running, Raft state missing or corrupt, wrong node, not a member),
//! 4 failed while writing (backup, apply, verification) or the cluster could not be reached.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use clap::{Args, Parser, Subcommand};

/// `println!` that never panics: when stdout is closed early (`xp-ops cluster status | head`)
/// the rest of the output is dropped and the command still finishes its work and exit code.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod certs_cmd;
mod cluster;
use xp_config::{Config, DEFAULT_ENV_FILE};
use xp_recovery::{RecoveryError, Step};
use xp_store::DataDirLock;

#[derive(Parser)]
#[command(name = "xp-ops", version, about = "Operator commands for xp clusters")]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Commands acting on this host's xp node.
    #[command(subcommand)]
    Xp(XpCommand),
    /// Commands acting on the running cluster through its API.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// A cluster CA and node certificates for TLS (XP_TLS_CERT, XP_TLS_KEY, XP_TLS_CA).
    #[command(subcommand)]
    Certs(certs_cmd::CertsCommand),
}

#[derive(Subcommand)]
enum XpCommand {
    /// Make this stopped node the only voter of its cluster after a PERMANENT loss of quorum.
    RecoverSingleNode(RecoverArgs),
    /// Show a stopped node's Raft state (to choose the survivor to recover).
    Inspect(InspectArgs),
    /// Install a backup on this brand-new, stopped node: a single-node cluster with a NEW
    /// cluster id; other nodes then join it with tokens.
    Restore(RestoreArgs),
}

#[derive(Args)]
struct RestoreArgs {
    /// The backup (`xp-ops cluster backup --out FILE`).
    #[arg(long)]
    file: PathBuf,
    /// Confirm (required).
    #[arg(short = 'y', long)]
    yes: bool,
    #[arg(long, default_value = DEFAULT_ENV_FILE)]
    env_file: PathBuf,
}

#[derive(Args)]
struct RecoverArgs {
    /// Confirm the rewrite (required unless --dry-run).
    #[arg(short = 'y', long)]
    yes: bool,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Skip the backup of raft/ (not recommended).
    #[arg(long)]
    no_backup: bool,
    #[arg(long, default_value = DEFAULT_ENV_FILE)]
    env_file: PathBuf,
}

#[derive(Args)]
struct InspectArgs {
    #[arg(long, default_value = DEFAULT_ENV_FILE)]
    env_file: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

const WARNING: &str = "\
WARNING: recover-single-node is an UNSAFE consensus override. Use it only when a majority of
the cluster's voters is PERMANENTLY lost (disks gone, hosts destroyed), never for a node that is
merely down or partitioned: the lost nodes must never come back with their old data, and any
write that only they held is gone for good.";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Top::Xp(XpCommand::RecoverSingleNode(a)) => recover(a),
        Top::Xp(XpCommand::Inspect(a)) => inspect(a),
        Top::Xp(XpCommand::Restore(a)) => restore(a),
        Top::Cluster(c) => cluster::run(c),
        Top::Certs(c) => certs_cmd::run(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(code)
        }
    }
}

/// An exit code and the message to print.
struct Failure(u8, String);

impl From<RecoveryError> for Failure {
    fn from(e: RecoveryError) -> Failure {
        Failure(e.exit_code(), e.to_string())
    }
}
impl From<xp_config::ConfigError> for Failure {
    fn from(e: xp_config::ConfigError) -> Failure {
        Failure(2, e.to_string())
    }
}
impl From<xp_store::StoreError> for Failure {
    fn from(e: xp_store::StoreError) -> Failure {
        RecoveryError::from(e).into()
    }
}

fn inspect(a: InspectArgs) -> Result<(), Failure> {
    let config = Config::load(&a.env_file)?;
    let _lock = DataDirLock::acquire(&config.data_dir)?;
    let i = xp_recovery::inspect(&config)?;
    if a.json {
        out!("{}", serde_json::to_string_pretty(&i).expect("inspection serializes"));
        return Ok(());
    }
    let id = |l: Option<xp_store::LogId>| l.map(|l| l.to_string()).unwrap_or_else(|| "none".into());
    out!("node:               {} ({})", i.identity.node_id, i.identity.node_name);
    out!("disk incarnation:   {}", i.identity.incarnation);
    out!("cluster id:         {}", i.cluster_id.as_deref().unwrap_or("unknown"));
    match &i.latest_recovery {
        Some(r) => out!(
            "recovery generation: {} ({:?} on node {} {} at {}, replaced voters {:?})",
            r.generation,
            r.kind,
            r.node_id,
            r.node_name,
            r.at,
            r.replaced_voters
        ),
        None => out!("recovery generation: 0 (never recovered)"),
    }
    if let Some(f) = &i.fence {
        out!("FENCED since {}: {}", f.fenced_at, f.reason);
    }
    out!("vote:               {}", i.vote.map(|v| v.to_string()).unwrap_or_else(|| "none".into()));
    out!("highest term:       {}", i.term);
    out!("last log id:        {}", id(i.last_log_id));
    out!("committed:          {}", id(i.committed));
    out!("last applied:       {}", id(i.last_applied));
    out!("purged up to:       {}", id(i.purged));
    out!("log entries:        {} (after last applied: {})", i.log_entries, i.entries_after_applied);
    out!("effective voters:   {:?} (from the {:?})", i.voters(), i.membership_source);
    for (nid, n) in i.effective_membership.membership().nodes() {
        out!("  member {nid}: {n}");
    }
    match &i.snapshot {
        Some(s) => out!("snapshot:           {} up to {}", s.snapshot_id, id(s.last_log_id)),
        None => out!("snapshot:           none"),
    }
    out!("kv keys:            {}", i.kv_keys);
    if i.torn_tail_bytes > 0 {
        out!(
            "torn log tail:      {} bytes (an interrupted append, nothing committed in it; cut when the node starts)",
            i.torn_tail_bytes
        );
    }
    if i.recovery_in_progress {
        out!("RECOVERY IN PROGRESS: run `xp-ops xp recover-single-node -y` to finish it");
    }
    Ok(())
}

fn restore(a: RestoreArgs) -> Result<(), Failure> {
    let config = Config::load(&a.env_file)?;
    if !a.yes {
        return Err(Failure(2, "refusing to restore without -y/--yes".into()));
    }
    let _lock = DataDirLock::acquire(&config.data_dir)?;
    let r = xp_recovery::restore::restore(&config, &a.file)?;
    out!(
        "restored {} keys up to index {} as node {} of a NEW cluster {} (was {}); start the node, then join other nodes with tokens",
        r.keys, r.last_log_id.index, r.node_id, r.cluster_id, r.old_cluster_id
    );
    Ok(())
}

fn recover(a: RecoverArgs) -> Result<(), Failure> {
    let config = Config::load(&a.env_file)?;
    if !a.yes && !a.dry_run {
        return Err(Failure(
            2,
            "refusing to rewrite the Raft membership without -y/--yes; run with --dry-run first to see the plan"
                .into(),
        ));
    }
    let _lock = DataDirLock::acquire(&config.data_dir)?;
    let mut hook = fault_hook();

    if let Some(plan) = xp_recovery::pending_journal(&config)? {
        out!("an interrupted recovery was found; its plan:\n{}", plan.render());
        if a.dry_run {
            out!("dry run: nothing changed; run with -y to finish this recovery");
            return Ok(());
        }
        let record = xp_recovery::finish(&config, &plan, &mut hook)?;
        xp_recovery::verify(&config, &plan)?;
        return done(&config, &plan, &record);
    }

    let insp = xp_recovery::inspect(&config)?;
    let Some(plan) = xp_recovery::plan(&config, &insp, !a.no_backup, SystemTime::now())? else {
        out!(
            "nothing to do: node {} is already the only voter, with api_base_url {}",
            insp.identity.node_id,
            config.api_base_url
        );
        return Ok(());
    };
    out!("{WARNING}\n");
    print!("{}", plan.render());
    if a.dry_run {
        out!("\ndry run: nothing changed; run again with -y to apply this plan");
        return Ok(());
    }
    if a.no_backup {
        eprintln!(
            "warning: --no-backup: raft/ is NOT backed up; there is no way back if this goes wrong"
        );
    }
    let t = Instant::now();
    let mut progress = |step: Step| {
        if step == Step::Backup {
            out!("backing up {} ...", config.raft_dir().display());
        }
        hook(step);
    };
    let record = xp_recovery::apply(&config, &plan, &mut progress)?;
    xp_recovery::verify(&config, &plan)?;
    out!("applied in {:.3}s", t.elapsed().as_secs_f64());
    done(&config, &plan, &record)
}

fn done(
    config: &Config,
    plan: &xp_recovery::Plan,
    record: &xp_recovery::RecoveryRecord,
) -> Result<(), Failure> {
    out!(
        "\nrecovered: node {} is now the only voter (recovery generation {}); record written to {}",
        plan.node_id,
        record.generation,
        plan.record_path.display()
    );
    out!("{}", serde_json::to_string_pretty(record).expect("record serializes"));
    out!(
        "\nnext steps:\n  1. start the node (xp run) and check {url}/api/cluster/info: role=leader, voters=[{id}]\n  \
         2. create a join token on it: POST {url}/api/admin/cluster/join-tokens (admin token)\n  \
         3. on each replacement node: wipe its data dir, `xp join --token-file FILE`, then start it\n  \
         4. never start the lost nodes with their old data: power them off or isolate them now. If one comes back\n     \
         anyway it is fenced on first contact with this node (health=fenced) and must be wiped and rejoined",
        url = config.api_base_url,
        id = plan.node_id
    );
    if let Some(b) = &plan.backup_dir {
        out!(
            "  rollback: stop the node, move {} away, move {} to raft/",
            config.raft_dir().display(),
            b.display()
        );
    }
    Ok(())
}

/// Test-only fault injection: `XP_OPS_FAULT_AT=<step>` aborts the process right before that
/// write point (steps: backup, journal, vote, log_entry, state_machine, snapshot, record, done),
/// simulating a crash or power loss there.
fn fault_hook() -> impl FnMut(Step) {
    let at = std::env::var("XP_OPS_FAULT_AT").ok();
    move |step: Step| {
        let name = serde_json::to_value(step).ok().and_then(|v| v.as_str().map(str::to_owned));
        if at.is_some() && at == name {
            eprintln!(
                "XP_OPS_FAULT_AT={}: aborting before this write",
                at.as_deref().unwrap_or("")
            );
            std::process::abort();
        }
    }
}
