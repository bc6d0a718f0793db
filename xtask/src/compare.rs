//! `cargo xtask compare`: the same drills on xp-3 and etcd-3, repeated, into
//! `docs/comparison.md`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use scenario::report::compare::{markdown, Row};
use scenario::report::RepeatSummary;

/// (what the drill does, the xp drill, the etcd drill)
const PAIRS: &[(&str, &str, &str)] = &[
    ("SIGKILL the leader", "leader-failover", "etcd-leader-failover"),
    ("lose 2 of 3 for good, recover the survivor, rejoin", "quorum-loss", "etcd-quorum-loss"),
    ("back up, lose every node, restore, rejoin", "backup-restore", "etcd-snapshot-restore"),
    ("the lost zone returns with its disks", "zone-returns", "etcd-zone-returns"),
];

#[derive(clap::Args)]
pub struct Args {
    /// Runs of each drill (medians are taken over them).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=20))]
    repeat: u32,
    /// Render from an earlier compare run's reports instead of running the drills.
    #[arg(long)]
    from: Option<PathBuf>,
    /// Where to write the page.
    #[arg(long, default_value = "docs/comparison.md")]
    out: PathBuf,
}

#[derive(Parser)]
struct ScenarioCli {
    #[command(flatten)]
    args: crate::scenario::Args,
}

pub async fn run(args: Args) -> Result<u8> {
    let root = crate::root();
    let dir = match &args.from {
        Some(d) => d.clone(),
        None => {
            let dir = root.join("target/compare");
            let _ = std::fs::remove_dir_all(&dir);
            let mut argv: Vec<String> = vec!["scenario".into()];
            for (_, xp, etcd) in PAIRS {
                argv.push((*xp).into());
                argv.push((*etcd).into());
            }
            argv.extend(["--backend", "docker", "--repeat"].map(String::from));
            argv.push(args.repeat.to_string());
            argv.push("--report-dir".into());
            argv.push(dir.to_string_lossy().into_owned());
            let code = crate::scenario::run(ScenarioCli::parse_from(argv).args).await?;
            if code == 130 {
                bail!("interrupted; nothing written");
            }
            dir
        }
    };
    let read = |name: &str| -> Result<RepeatSummary> {
        RepeatSummary::read(&dir.join(name)).map_err(|e| {
            anyhow::anyhow!("{e} (every drill must have run with --repeat of 2 or more)")
        })
    };
    let mut summaries = Vec::new();
    for (what, xp, etcd) in PAIRS {
        summaries.push((*what, "xp-3", read(xp)?));
        summaries.push((*what, "etcd-3", read(etcd)?));
    }
    let rows: Vec<Row<'_>> =
        summaries.iter().map(|(drill, system, summary)| Row { drill, system, summary }).collect();
    let preamble = std::fs::read_to_string(root.join("docs/comparison.intro.md"))
        .context("reading docs/comparison.intro.md")?;
    let page = markdown(&rows, &format!("cargo xtask compare --repeat {}", args.repeat), &preamble);
    let out = root.join(&args.out);
    std::fs::write(&out, page).with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(0)
}
