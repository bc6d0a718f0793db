//! `cargo xtask chaos`: a seeded, randomized fault campaign. The schedule is written as a
//! scenario (`repro.toml`), run like any scenario, and judged by the checkers of
//! `scenario::chaos::check`; `--shrink` drops episodes while the failure still reproduces.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use scenario::chaos::check::{self, LEFTOVERS};
use scenario::chaos::generate::{Marks, Schedule};
use scenario::chaos::{Fault, Spec};
use scenario::parse;
use scenario::profile::Profile;
use scenario::report::{junit, Check, Outcome, Report, StepStatus};

use crate::scenario::{random_u64, Run, Runner, DEFAULT_PROFILE};

#[derive(clap::Args)]
pub struct Args {
    /// The cluster profile (compose/<name>.profile.toml).
    #[arg(long, default_value = DEFAULT_PROFILE)]
    profile: String,
    /// How long faults are injected (every one is healed by then), e.g. 60s, 2m, 30m.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How long the healed cluster runs before the final checks.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    quiet: Duration,
    /// Seed of the schedule and of every random choice (default: random, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Comma-separated faults: kill, stop, restart, pause, isolate, partition, wipe-rejoin,
    /// quorum-loss (default: every safe one the profile and backend support).
    #[arg(long)]
    faults: Option<String>,
    /// Faults started per minute, on average.
    #[arg(long, default_value_t = 6.0)]
    rate: f64,
    /// Where the cluster runs: docker, local, swarm (services on a swarm manager), or auto
    /// (docker when an engine answers, else local).
    #[arg(long, default_value = "auto", value_parser = ["docker", "local", "swarm", "auto"])]
    backend: String,
    /// Leave the cluster running afterwards.
    #[arg(long)]
    keep: bool,
    /// Directory for the report and repro.toml (default target/chaos-reports/<time>-<profile>-<seed>).
    #[arg(long)]
    report_dir: Option<PathBuf>,
    /// Also write JUnit XML (one test case per checker) here.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// On a failure, drop episodes while the failure still reproduces (halves first, then
    /// smaller chunks) and keep the smallest schedule as repro.min.toml.
    #[arg(long)]
    shrink: bool,
    /// The most runs shrinking may take (each is a full run of the smaller schedule).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=200))]
    shrink_tries: u32,
    /// Print the schedule and where repro.toml would go, and change nothing.
    #[arg(long)]
    plan: bool,
    /// Run the cluster in plain HTTP (default: TLS on when the profile has [tls]).
    #[arg(long)]
    no_tls: bool,
}

/// A campaign refused before anything started: exit 2.
fn refuse(msg: impl std::fmt::Display) -> Result<u8> {
    eprintln!("error: {msg}");
    Ok(2)
}

pub async fn run(args: Args) -> Result<u8> {
    let root = crate::root();
    let path = Profile::path_for(&root, &args.profile);
    let profile = match Profile::load(&path) {
        Ok(p) => p,
        Err(e) => {
            return refuse(format!(
                "--profile {}: {e} (profiles are compose/<name>.profile.toml)",
                args.profile
            ))
        }
    };
    let explicit = args.faults.is_some();
    let faults = match &args.faults {
        Some(list) => match Fault::parse_list(list) {
            Ok(f) => f,
            Err(e) => return refuse(e),
        },
        None => Fault::SAFE
            .into_iter()
            .filter(|f| {
                *f != Fault::WipeRejoin
                    || profile.join.token.as_ref().is_some_and(|t| t.replaces_field.is_some())
            })
            .collect(),
    };
    let seed = args.seed.unwrap_or_else(random_u64);
    let spec = match Spec::new(&profile, args.duration, args.quiet, seed, faults, args.rate) {
        Ok(s) => s,
        Err(e) => return refuse(e),
    };
    let schedule = Schedule::generate(&spec);
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(':', "");
    let dir = args.report_dir.clone().unwrap_or_else(|| {
        root.join("target/chaos-reports").join(format!("{stamp}-{}-{seed}", profile.name))
    });
    let faults: Vec<&str> = spec.faults.iter().map(|f| f.name()).collect();
    println!(
        "chaos on {}: seed {seed} (rerun with --seed {seed}), {} of faults at {}/min ({}), then {} quiet",
        profile.name,
        humantime::format_duration(spec.duration),
        spec.rate_per_min,
        faults.join(","),
        humantime::format_duration(spec.quiet)
    );
    println!("{} episodes planned:", schedule.episodes.len());
    for e in &schedule.episodes {
        println!("  {}", e.describe());
    }
    if args.plan {
        println!("repro.toml would go to {}", dir.join("repro.toml").display());
        return Ok(0);
    }
    if let Some(backends) = &profile.backends {
        let wanted = if args.backend == "auto" { None } else { Some(args.backend.as_str()) };
        if let Some(w) = wanted.filter(|w| !backends.iter().any(|b| b == w)) {
            return refuse(format!(
                "--backend {w}: the {} cluster can only be built on {}",
                profile.name,
                backends.join(", ")
            ));
        }
    }
    let mut runner = Runner::new(&args.backend, &[&profile], args.no_tls).await?;
    for f in &spec.faults {
        for a in f.actions() {
            if let Some((backend, why)) = runner.refuses(*a) {
                let hint = if explicit { "" } else { " (pass --faults without it)" };
                return refuse(format!(
                    "fault {f}: the {backend} backend cannot `{a}`: {why}{hint}"
                ));
            }
        }
    }
    if let Some(backends) = &profile.backends {
        if !backends.iter().any(|b| b == runner.backend_name()) {
            return refuse(format!(
                "the {} cluster can only be built on {}; this machine chose {}",
                profile.name,
                backends.join(", "),
                runner.backend_name()
            ));
        }
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (report, interrupted) =
        campaign(&mut runner, &profile, &schedule, seed, args.keep, &dir, "repro.toml").await?;
    if let Some(j) = &args.junit {
        std::fs::write(j, junit(std::slice::from_ref(&report)))
            .with_context(|| format!("writing {}", j.display()))?;
    }
    if interrupted {
        return Ok(130);
    }
    if report.outcome == Outcome::Passed {
        return Ok(0);
    }
    if args.shrink {
        shrink(&mut runner, &profile, &schedule, seed, &dir, &report, args.shrink_tries as usize)
            .await?;
    } else {
        println!("replay: cargo xtask scenario {}", dir.join("repro.toml").display());
    }
    Ok(1)
}

/// Runs `schedule`, writes `<dir>/<file>` and the report, prints the verdicts.
async fn campaign(
    runner: &mut Runner,
    profile: &Profile,
    schedule: &Schedule,
    seed: u64,
    keep: bool,
    dir: &Path,
    file: &str,
) -> Result<(Report, bool)> {
    let (text, marks) = schedule.render();
    let repro = dir.join(file);
    std::fs::write(&repro, &text).with_context(|| format!("writing {}", repro.display()))?;
    let scenario = parse::parse(&repro, &text, profile)
        .map_err(|e| anyhow::anyhow!("the generated schedule does not parse (a bug): {e}"))?;
    println!("\n=== {} — {}\n    file {}", scenario.name, scenario.summary, repro.display());
    let Run { mut report, interrupted, cleanup } =
        runner.run(scenario, profile, seed, keep).await?;
    report.checks = verdicts(&report, schedule, &marks, cleanup);
    let failed: Vec<&Check> = report.checks.iter().filter(|c| !c.passed).collect();
    if let Some(first) = failed.first() {
        if report.outcome != Outcome::Failed {
            report.fail(format!("checker {} failed", first.name));
        }
    }
    let out = dir.join(file.trim_end_matches(".toml").replace("repro", "report"));
    report.write(&out).with_context(|| format!("writing report to {}", out.display()))?;
    println!("\ncheckers:");
    for c in &report.checks {
        let first = c.evidence.lines().next().unwrap_or("");
        println!("  {:<20} {:<4} {first}", c.name, if c.passed { "pass" } else { "FAIL" });
    }
    let pace = check::pace(&report, &marks);
    println!(
        "=== chaos on {}: {} in {:.1}s — {} episodes, {:.2} faults/min — report {}",
        profile.name,
        if report.outcome == Outcome::Passed { "PASSED" } else { "FAILED" },
        report.duration_ms as f64 / 1000.0,
        pace.episodes,
        pace.faults_per_min,
        out.join("report.html").display()
    );
    Ok((report, interrupted))
}

fn verdicts(
    report: &Report,
    schedule: &Schedule,
    marks: &Marks,
    cleanup: Result<String, String>,
) -> Vec<Check> {
    let mut checks = check::run(report, schedule, marks);
    checks.push(match cleanup {
        Ok(evidence) => Check { name: LEFTOVERS.into(), passed: true, evidence },
        Err(evidence) => Check { name: LEFTOVERS.into(), passed: false, evidence },
    });
    checks
}

/// The checkers a run failed.
fn failing(report: &Report) -> Vec<String> {
    report.checks.iter().filter(|c| !c.passed).map(|c| c.name.clone()).collect()
}

/// Shrinks a failing schedule (`scenario::chaos::shrink`): a try reproduces when one of the
/// checkers that failed first fails again; each is a full run, at most `budget` of them.
/// Writes `repro.min.toml`.
async fn shrink(
    runner: &mut Runner,
    profile: &Profile,
    schedule: &Schedule,
    seed: u64,
    dir: &Path,
    first: &Report,
    budget: usize,
) -> Result<()> {
    let wanted = failing(first);
    let total = schedule.episodes.len();
    println!(
        "\nshrinking {total} episodes (at most {budget} tries, each a full run); a smaller \
         schedule is kept while one of {} still fails",
        wanted.join(", ")
    );
    let mut t = Tries { runner, profile, seed, dir, wanted: &wanted, done: 0, budget };
    let (_, marks) = schedule.render();
    let failed_step = first.steps.iter().find(|s| s.status == StepStatus::Failed).map(|s| s.index);
    let shrunk = scenario::chaos::shrink::ddmin(
        schedule,
        &marks,
        failed_step,
        budget,
        async |trial: &Schedule, what: String| t.run(trial, what).await,
    )
    .await?;
    let kept = shrunk.kept;
    let (text, _) = kept.render();
    let min = dir.join("repro.min.toml");
    std::fs::write(&min, text).with_context(|| format!("writing {}", min.display()))?;
    let _ = std::fs::remove_file(dir.join("repro.try.toml"));
    println!(
        "smallest failing schedule after {} tries: {} of {total} episodes, {} of faults — \
         replay: cargo xtask scenario {}",
        shrunk.tries,
        kept.episodes.len(),
        humantime::format_duration(kept.spec.duration),
        min.display()
    );
    for e in &kept.episodes {
        println!("  {}", e.describe());
    }
    Ok(())
}

/// Shrinking's tries: each runs a smaller schedule in full.
struct Tries<'a> {
    runner: &'a mut Runner,
    profile: &'a Profile,
    seed: u64,
    dir: &'a Path,
    /// The checkers that failed first; a try reproduces when one of them fails again.
    wanted: &'a [String],
    done: usize,
    budget: usize,
}

impl Tries<'_> {
    /// Runs `trial`; whether the failure still reproduces without what it left out.
    async fn run(&mut self, trial: &Schedule, what: String) -> Result<bool> {
        self.done += 1;
        println!("--- shrink try {} of at most {}: {what}", self.done, self.budget);
        let (report, interrupted) = campaign(
            self.runner,
            self.profile,
            trial,
            self.seed,
            false,
            self.dir,
            "repro.try.toml",
        )
        .await?;
        if interrupted {
            anyhow::bail!("interrupted while shrinking");
        }
        let still = failing(&report).iter().any(|c| self.wanted.contains(c));
        println!(
            "    {}",
            if still {
                "still fails: the smaller schedule is kept"
            } else {
                "passes: this try is dropped"
            }
        );
        Ok(still)
    }
}
