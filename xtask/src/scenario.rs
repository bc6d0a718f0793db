//! `cargo xtask scenario`: parse scenarios, pick a backend, build the binaries (and image),
//! run each scenario with guaranteed teardown, write reports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use scenario::backend::docker::{self, ComposeCli, DockerBackend};
use scenario::backend::{swarm, LocalBackend, SwarmBackend};
use scenario::engine::RunOptions;
use scenario::model::{Action, Scenario};
use scenario::parse;
use scenario::profile::Profile;
use scenario::run::{run_one, Ended};

/// The cluster of a scenario that names none.
pub const DEFAULT_PROFILE: &str = "xp-3";

/// Every compose project of the runner starts with this (how `cargo xtask clean` finds them).
pub const PROJECT_PREFIX: &str = "xpchaos";
use scenario::report::{junit, summarize, Outcome, Report};

#[derive(clap::Args)]
pub struct Args {
    /// Scenario names (files under scenarios/) or paths.
    names: Vec<String>,
    /// Run every scenario under scenarios/.
    #[arg(long)]
    all: bool,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Where the cluster runs: docker, local, swarm (services on a swarm manager), or auto
    /// (docker when an engine answers, else local).
    #[arg(long, default_value = "auto", value_parser = ["docker", "local", "swarm", "auto"])]
    backend: String,
    /// Leave the cluster running afterwards and print how to reach and remove it.
    #[arg(long)]
    keep: bool,
    /// Directory for reports (default target/scenario-reports/<time>).
    #[arg(long)]
    report_dir: Option<PathBuf>,
    /// Also write JUnit XML here.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Seed of every random choice (printed at the start of each run).
    #[arg(long)]
    seed: Option<u64>,
    /// Print each scenario's steps and how their selectors resolve, and change nothing.
    #[arg(long)]
    plan: bool,
    /// Run each scenario N times on fresh clusters and print the median recovery times (each
    /// run's report goes to <report-dir>/<name>/run-<k>/, the medians to <name>/summary.json).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    repeat: u32,
    /// Run the cluster in plain HTTP. By default every profile with a `[tls]` section runs
    /// with TLS on: a throwaway CA per run, HTTPS, client certificates (mTLS).
    #[arg(long)]
    no_tls: bool,
}

/// Where docker-backend runs keep their env files and certificates.
pub fn docker_runs_dir() -> PathBuf {
    crate::root().join("target").join("xp-chaos-docker")
}

/// The run's profile: with TLS on (certificates under `dir`) unless `--no-tls`.
fn run_profile(profile: &Profile, no_tls: bool, dir: &Path) -> Result<Profile> {
    if no_tls {
        return Ok(profile.clone());
    }
    profile
        .clone()
        .with_tls(dir)
        .map_err(|e| anyhow::anyhow!("making this run's certificates: {e}"))
}

/// A new run's name (`prefix` and a random number) and its directory under `parent`, made here
/// (owner-only) and by no one else: a name whose directory exists (a live run, a kept one, one
/// killed and not yet cleaned) is passed over, so removing this directory on a failure never
/// touches another run's files.
fn claim_run_dir(parent: &Path, prefix: &str) -> Result<(String, PathBuf)> {
    let names = (0..100).map(|_| format!("{prefix}{}", random_u64() % 1_000_000));
    claim_first_free(parent, names)
}

/// The first of `names` whose directory under `parent` this call could make.
fn claim_first_free(
    parent: &Path,
    names: impl IntoIterator<Item = String>,
) -> Result<(String, PathBuf)> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::create_dir_all(parent).with_context(|| format!("making {}", parent.display()))?;
    for name in names {
        let dir = parent.join(&name);
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok((name, dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("making {}", dir.display())),
        }
    }
    bail!(
        "no free run name under {} after 100 tries: `cargo xtask clean` removes old runs",
        parent.display()
    )
}

/// `made`, or, when it failed, the run's directory removed: a run that never started leaves
/// none of its files behind (its private keys among them). `dir` is one [`claim_run_dir`]
/// made.
fn or_remove<T, E: Into<anyhow::Error>>(made: std::result::Result<T, E>, dir: &Path) -> Result<T> {
    made.map_err(|e| {
        let _ = std::fs::remove_dir_all(dir);
        e.into()
    })
}

/// Where local-backend runs keep their processes' files.
pub fn local_runs_dir() -> PathBuf {
    crate::root().join("target").join("xp-chaos-local")
}

fn scenario_files(args: &Args, root: &Path) -> Result<Vec<PathBuf>> {
    let dir = root.join("scenarios");
    if args.all || args.list {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        return Ok(files);
    }
    if args.names.is_empty() {
        bail!("name a scenario (e.g. `cargo xtask scenario quorum-loss`), or pass --all or --list");
    }
    args.names
        .iter()
        .map(|n| {
            let p = PathBuf::from(n);
            let candidate = if p.extension().is_some() { p } else { dir.join(format!("{n}.toml")) };
            if candidate.exists() {
                Ok(candidate)
            } else {
                bail!(
                    "no scenario {n:?}: {} does not exist (see `cargo xtask scenario --list`)",
                    candidate.display()
                )
            }
        })
        .collect()
}

fn load_all(files: &[PathBuf], root: &Path) -> Result<Vec<(Scenario, Profile)>, String> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        let src = match std::fs::read_to_string(f) {
            Ok(s) => s,
            Err(e) => {
                errors.push(format!("{}: cannot read: {e}", f.display()));
                continue;
            }
        };
        let cluster = parse::cluster_of(&src, DEFAULT_PROFILE);
        let profile = match Profile::load(&Profile::path_for(root, &cluster)) {
            Ok(p) => p,
            Err(e) => {
                errors.push(format!("{}: cluster {cluster:?}: {e}", f.display()));
                continue;
            }
        };
        match parse::parse(f, &src, &profile) {
            Ok(s) => out.push((s, profile)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors.join("\n"))
    }
}

/// Builds the workspace binaries the profiles name (`xp`, `xp-ops`) with the workspace's
/// settings (static, same target dir), showing cargo's progress: a first run compiles them.
fn build_binaries(profiles: &[&Profile]) -> Result<BTreeMap<String, PathBuf>> {
    let mut names: Vec<String> = profiles.iter().flat_map(|p| p.binaries.clone()).collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Ok(BTreeMap::new());
    }
    let t = Instant::now();
    println!(
        "building {} (cargo's progress below; a first run compiles them: several minutes on \
         2 cores, later runs take seconds) ...",
        names.join(", ")
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(crate::root()).args(["build"]);
    // `cargo run` gave this process the variables it gives a package's binary
    // (CARGO_MANIFEST_DIR, CARGO_PKG_NAME, ...). Build scripts such as ring's rerun when those
    // change, so passing them on would rebuild ring, rustls and reqwest here and again at the
    // next `cargo xtask`: the nested build gets the environment of a shell.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || ["CARGO_CRATE_NAME", "CARGO_BIN_NAME", "CARGO_PRIMARY_PACKAGE", "OUT_DIR"]
                .contains(&k.as_ref())
        {
            cmd.env_remove(&key);
        }
    }
    for b in &names {
        cmd.args(["-p", b]);
    }
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build of {} failed", names.join(", "));
    }
    // The xtask binary sits next to them: target/<triple>/<profile>/xtask.
    let dir = std::env::current_exe()?.parent().expect("exe dir").to_owned();
    let bins: BTreeMap<String, PathBuf> = names.iter().map(|b| (b.clone(), dir.join(b))).collect();
    for (b, p) in &bins {
        if !p.exists() {
            bail!("built {b} but {} does not exist", p.display());
        }
    }
    println!("built in {:.1}s", t.elapsed().as_secs_f64());
    Ok(bins)
}

enum Chosen {
    Docker(bollard::Docker, ComposeCli),
    Local,
    Swarm(bollard::Docker),
}

async fn choose_backend(wanted: &str) -> Result<Chosen> {
    let docker = async {
        let d = tokio::time::timeout(std::time::Duration::from_secs(5), docker::connect())
            .await
            .map_err(|_| anyhow::anyhow!("the Docker engine did not answer within 5s"))??;
        let cli = ComposeCli::detect()?;
        let v = d.version().await?;
        println!(
            "backend: docker (engine {}, API {}, {})",
            v.version.unwrap_or_default(),
            d.client_version(),
            cli.describe()
        );
        anyhow::Ok(Chosen::Docker(d, cli))
    };
    match wanted {
        "docker" => docker.await.context("--backend docker"),
        "swarm" => {
            let d = tokio::time::timeout(std::time::Duration::from_secs(5), docker::connect())
                .await
                .map_err(|_| anyhow::anyhow!("the Docker engine did not answer within 5s"))?
                .context("--backend swarm")?;
            let node = swarm::manager_node(&d).await.context("--backend swarm")?;
            let v = d.version().await?;
            println!(
                "backend: swarm (engine {}, API {}, manager node {node})",
                v.version.unwrap_or_default(),
                d.client_version()
            );
            Ok(Chosen::Swarm(d))
        }
        "local" => {
            println!("backend: local (processes on loopback)");
            Ok(Chosen::Local)
        }
        _ => match docker.await {
            Ok(c) => Ok(c),
            Err(e) => {
                println!("backend: local (auto: no usable Docker: {e:#})");
                Ok(Chosen::Local)
            }
        },
    }
}

fn tls_note(profile: &Profile) -> &'static str {
    match (&profile.run_tls, &profile.tls) {
        (Some(_), _) => "TLS on (a CA for this run, mTLS)",
        (None, Some(_)) => "TLS off (--no-tls)",
        (None, None) => "plain HTTP (the profile has no [tls])",
    }
}

pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom_fill(&mut b);
    u64::from_le_bytes(b) % 1_000_000_000
}

fn getrandom_fill(b: &mut [u8]) {
    // std has no random source; the time and pid are enough to pick a seed we print anyway.
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        as u64;
    let x = t ^ ((std::process::id() as u64) << 32);
    b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
}

/// What one run left: its report, whether it was interrupted, and whether anything of it is
/// still there after the teardown (`Ok(what was checked)` or `Err(what is left)`).
pub struct Run {
    pub report: Report,
    pub interrupted: bool,
    pub cleanup: Result<String, String>,
}

/// What project `project` left: `Ok` naming what was checked when nothing is left.
async fn left_of(d: &bollard::Docker, project: &str) -> Result<String, String> {
    let one = docker::Projects::One(project);
    let swarm_left = swarm::sweep::leftovers(d, one).await;
    match (docker::leftovers(d, one).await, swarm_left) {
        (Ok((0, 0, 0)), Ok(s)) if s == Default::default() => Ok(format!(
            "no container, network, volume, service or secret labelled with project {project} is left"
        )),
        (Ok((c, n, v)), Ok(s)) => Err(format!(
            "project {project} left {c} containers, {n} networks, {v} volumes, {} services, {} secrets",
            s.services, s.secrets
        )),
        (Err(e), _) | (_, Err(e)) => Err(format!("could not list what project {project} left: {e}")),
    }
}

/// Runs `scenario` on a docker or swarm backend, then checks the engine holds nothing of
/// `project` any more (unless the teardown itself failed, which is the error then).
async fn run_on_engine<B: scenario::backend::Backend>(
    d: &bollard::Docker,
    project: &str,
    scenario: Scenario,
    profile: Profile,
    backend: B,
    seed: u64,
    keep: bool,
) -> Run {
    let Ended { report, interrupted, teardown: torn } =
        run_one(scenario, profile, backend, RunOptions { seed, verbose: true }, keep).await;
    let cleanup = match torn {
        Err(e) => Err(e),
        Ok(()) => left_of(d, project).await,
    };
    Run { report, interrupted, cleanup }
}

/// Runs scenarios on one backend, building each profile's image once.
pub struct Runner {
    chosen: Chosen,
    bins: BTreeMap<String, PathBuf>,
    image_for: BTreeMap<String, String>,
    no_tls: bool,
}

impl Runner {
    /// Picks the backend (`docker`, `local` or `auto`) and builds the profiles' binaries.
    pub async fn new(backend: &str, profiles: &[&Profile], no_tls: bool) -> Result<Runner> {
        let chosen = choose_backend(backend).await?;
        let bins = build_binaries(profiles)?;
        Ok(Runner { chosen, bins, image_for: BTreeMap::new(), no_tls })
    }

    /// The profile's image, built once per run of the command.
    async fn image(&mut self, d: &bollard::Docker, profile: &Profile) -> Result<String> {
        if let Some(i) = self.image_for.get(&profile.name) {
            return Ok(i.clone());
        }
        let i = docker::ensure_image(d, profile, &self.bins, &mut |m| println!("{m}")).await?;
        self.image_for.insert(profile.name.clone(), i.clone());
        Ok(i)
    }

    /// The backend's name and why it cannot run `action`, if it cannot.
    pub fn refuses(&self, action: Action) -> Option<(&'static str, String)> {
        match &self.chosen {
            Chosen::Docker(..) => None,
            Chosen::Local => {
                scenario::backend::local::supports(action).err().map(|why| ("local", why))
            }
            Chosen::Swarm(_) => swarm::supports(action).err().map(|why| ("swarm", why)),
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match &self.chosen {
            Chosen::Docker(..) => "docker",
            Chosen::Local => "local",
            Chosen::Swarm(_) => "swarm",
        }
    }

    /// Runs `scenario` on a fresh cluster of `profile`, tears it down (unless `keep`) and
    /// checks that nothing of it is left.
    /// A docker or swarm run's project name, its claimed directory, and its profile with this
    /// run's certificates (the directory removed again if they cannot be made).
    fn engine_run(&self, profile: &Profile) -> Result<(String, PathBuf, Profile)> {
        let (project, run_dir) = claim_run_dir(&docker_runs_dir(), PROJECT_PREFIX)?;
        let profile = or_remove(run_profile(profile, self.no_tls, &run_dir.join("tls")), &run_dir)?;
        Ok((project, run_dir, profile))
    }

    pub async fn run(
        &mut self,
        scenario: Scenario,
        profile: &Profile,
        seed: u64,
        keep: bool,
    ) -> Result<Run> {
        let name = scenario.name.clone();
        match &self.chosen {
            Chosen::Docker(d, cli) => {
                let (d, cli) = (&d.clone(), *cli);
                let image = self.image(d, profile).await?;
                let (project, run_dir, profile) = self.engine_run(profile)?;
                let made = DockerBackend::new(
                    d.clone(),
                    profile.clone(),
                    cli,
                    image,
                    project.clone(),
                    run_dir.clone(),
                )
                .await;
                let backend = or_remove(made, &run_dir)?;
                println!("    compose project {project}, {}", tls_note(&profile));
                Ok(run_on_engine(d, &project, scenario, profile, backend, seed, keep).await)
            }
            Chosen::Swarm(d) => {
                let d = &d.clone();
                let image = self.image(d, profile).await?;
                let (project, run_dir, profile) = self.engine_run(profile)?;
                let made = SwarmBackend::new(
                    d.clone(),
                    profile.clone(),
                    image,
                    project.clone(),
                    run_dir.clone(),
                )
                .await;
                let backend = or_remove(made, &run_dir)?;
                println!("    swarm stack {project}, {}", tls_note(&profile));
                Ok(run_on_engine(d, &project, scenario, profile, backend, seed, keep).await)
            }
            Chosen::Local => {
                let (_, dir) = claim_run_dir(&local_runs_dir(), &format!("{name}-"))?;
                let profile = or_remove(run_profile(profile, self.no_tls, &dir.join("tls")), &dir)?;
                println!("    {}", tls_note(&profile));
                let backend = or_remove(
                    LocalBackend::new(profile.clone(), self.bins.clone(), dir.clone()),
                    &dir,
                )?;
                let Ended { report, interrupted, teardown: torn } =
                    run_one(scenario, profile, backend, RunOptions { seed, verbose: true }, keep)
                        .await;
                let cleanup = torn.map(|()| {
                    "the local backend's teardown stopped every process it started".to_owned()
                });
                Ok(Run { report, interrupted, cleanup })
            }
        }
    }
}

pub async fn run(args: Args) -> Result<u8> {
    let root = crate::root();
    let files = scenario_files(&args, &root)?;
    let loaded = match load_all(&files, &root) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return Ok(2);
        }
    };
    if args.list {
        for (s, _) in &loaded {
            println!("{:<22} {}", s.name, s.summary);
        }
        return Ok(0);
    }
    if args.plan {
        for (s, p) in &loaded {
            print!("{}", parse::render_plan(s, p));
            // The local backend's refusals are known without starting anything (docker and
            // swarm do every step); docker's availability is not, so `auto` is checked against
            // the local backend too.
            if !matches!(args.backend.as_str(), "docker" | "swarm") {
                for (i, step) in s.steps.iter().enumerate() {
                    if let Err(why) = scenario::backend::local::supports(step.step.kind()) {
                        println!(
                            "     step {} `{}`: the local backend cannot run it: {why}",
                            i + 1,
                            step.step.action()
                        );
                    }
                }
            }
            println!();
        }
        return Ok(0);
    }
    let profiles: Vec<&Profile> = loaded.iter().map(|(_, p)| p).collect();
    let mut runner = Runner::new(&args.backend, &profiles, args.no_tls).await?;
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(':', "");
    let report_root = args
        .report_dir
        .clone()
        .unwrap_or_else(|| root.join("target/scenario-reports").join(&stamp));
    let mut reports = Vec::new();
    let mut summaries = Vec::new();
    let mut interrupted = false;
    let runs = loaded
        .iter()
        .flat_map(|(s, p)| (1..=args.repeat).map(move |k| (k, s.clone(), p.clone())))
        .collect::<Vec<_>>();
    for (k, scenario, profile) in runs {
        let seed = args.seed.unwrap_or_else(random_u64);
        if args.repeat > 1 {
            println!("\n--- run {k} of {}", args.repeat);
        }
        println!(
            "\n=== {} — {}\n    file {}, cluster {}, seed {seed} (rerun with --seed {seed})",
            scenario.name,
            scenario.summary,
            scenario.file.display(),
            profile.name
        );
        let name = scenario.name.clone();
        let Run { report, interrupted: stop, .. } =
            runner.run(scenario, &profile, seed, args.keep).await?;
        let dir = if args.repeat > 1 {
            report_root.join(&name).join(format!("run-{k}"))
        } else {
            report_root.join(&name)
        };
        report.write(&dir).with_context(|| format!("writing report to {}", dir.display()))?;
        let verdict = match report.outcome {
            Outcome::Passed => "PASSED",
            Outcome::Skipped => "SKIPPED",
            _ => "FAILED",
        };
        println!(
            "=== {name}: {verdict} in {:.1}s{} — report {}",
            report.duration_ms as f64 / 1000.0,
            report.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default(),
            dir.join("report.json").display()
        );
        reports.push(report);
        if stop {
            interrupted = true;
            break;
        }
        if args.repeat > 1 && k == args.repeat {
            let these: Vec<Report> =
                reports.iter().filter(|r| r.scenario == name).cloned().collect();
            let summary = summarize(&these);
            let dir = report_root.join(&name);
            summary.write(&dir).with_context(|| format!("writing {}", dir.display()))?;
            summaries.push(summary);
        }
    }
    if let Some(j) = &args.junit {
        std::fs::write(j, junit(&reports)).with_context(|| format!("writing {}", j.display()))?;
    }
    println!("\nsummary:");
    for r in &reports {
        println!("  {:<18} {:?} {:.1}s", r.scenario, r.outcome, r.duration_ms as f64 / 1000.0);
    }
    if !summaries.is_empty() {
        println!("\nrecovery times, medians over {} runs:", args.repeat);
        for s in &summaries {
            print!("{}", s.render());
        }
    }
    let failed = reports.iter().filter(|r| r.outcome == Outcome::Failed).count();
    let passed = reports.iter().filter(|r| r.outcome == Outcome::Passed).count();
    let skipped = reports.iter().filter(|r| r.outcome == Outcome::Skipped).count();
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    Ok(if interrupted {
        130
    } else if failed > 0 {
        1
    } else {
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_that_could_not_be_made_leaves_no_files_and_touches_no_other_run() {
        use std::os::unix::fs::PermissionsExt;
        let parent = std::env::temp_dir().join(format!("xtask-runs-{}", std::process::id()));
        // Another run (live, kept, or killed and not cleaned) holds the name drawn first.
        let other = parent.join("xpchaos1");
        std::fs::create_dir_all(other.join("tls")).unwrap();
        std::fs::write(other.join("tls/node1.key"), "theirs").unwrap();
        let names = ["xpchaos1", "xpchaos2"].map(String::from);
        let (name, dir) = claim_first_free(&parent, names).unwrap();
        assert_eq!(name, "xpchaos2", "a name whose directory exists is passed over");
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "a run's directory is the owner's only");
        std::fs::create_dir_all(dir.join("tls")).unwrap();
        std::fs::write(dir.join("tls/node1.key"), "ours").unwrap();
        let kept: Result<u8> = or_remove(Ok::<u8, std::io::Error>(1), &dir);
        assert_eq!(kept.unwrap(), 1);
        assert!(dir.join("tls/node1.key").exists(), "a run that was made keeps its files");
        let failed: Result<u8> = or_remove(Err(std::io::Error::other("no subnet left")), &dir);
        assert_eq!(failed.unwrap_err().to_string(), "no subnet left");
        assert!(!dir.exists(), "its key is gone with the run's directory");
        assert!(other.join("tls/node1.key").exists(), "the other run's key is not touched");
        let all_taken = claim_first_free(&parent, ["xpchaos1".to_owned()]);
        assert!(all_taken.unwrap_err().to_string().contains("no free run name"));
        std::fs::remove_dir_all(&parent).unwrap();
    }
}
