//! The step engine: runs a parsed scenario against a backend, one step at a time, printing a
//! line per step and recording a report.
//!
//! **The engine touches nodes only through the profile's public API and the backend**; it
//! knows no system by name. Every wait is bounded and, when it runs out, says what each node
//! last answered.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::backend::{Backend, BackendError};
use crate::measure::generation::{GenerationEvent, StaleSpans};
use crate::measure::split_brain::Detector;
use crate::measure::{Sample, Verification, WorkloadSpec, WriteRecord};
use crate::model::{references, Matcher, PlacedStep, Scenario, Selector, Step};
use crate::profile::Profile;
use crate::report::{NodeEvidence, Report, StepReport, StepStatus};
use crate::target::{Endpoints, WriteOutcome};
use crate::target::{Observed, ReadError, Role, Target};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

mod commands;
mod data;
mod expect;
mod measure;
mod select;
mod wait;

use commands::{as_run, check_output, shown};
pub use expect::matches;
use select::{describe, or_default, partition_groups};
use wait::until;

/// What the runner tracks of each node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    Down,
    Running,
    Stopped,
    Paused,
    Isolated,
}

/// Options of one run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Seed of every random choice (e.g. `any-follower`).
    pub seed: u64,
    /// Print step lines to stdout.
    pub verbose: bool,
}

/// A deterministic generator for the run's random choices (xorshift64*).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1) as u64) as usize
    }
}

pub struct Engine<B: Backend> {
    scenario: Scenario,
    profile: Profile,
    pub backend: B,
    http: reqwest::Client,
    target: Target,
    states: BTreeMap<String, NodeState>,
    captures: BTreeMap<String, Value>,
    last_info: BTreeMap<String, Result<Observed, String>>,
    /// Writes the cluster acknowledged, by key.
    written: BTreeMap<String, String>,
    rng: Rng,
    opts: RunOptions,
    /// Secrets to blank out of anything printed or reported.
    secrets: Vec<String>,
    /// Time zero of the run's timeline.
    epoch: Instant,
    endpoints: Endpoints,
    samples: Arc<Mutex<Vec<Sample>>>,
    /// Fed every poll round of the sampler.
    detector: Arc<Mutex<Detector>>,
    /// Recoveries, wipes and joins: which nodes belong to a stale generation when.
    generations: Vec<GenerationEvent>,
    writes: Arc<Mutex<Vec<WriteRecord>>>,
    /// Every operation on the registers (`workload-start` with `registers`).
    register_ops: Arc<Mutex<Vec<crate::measure::register::RegisterOp>>>,
    sampler: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
    writer: Option<(watch::Sender<bool>, Vec<tokio::task::JoinHandle<()>>)>,
    /// Workloads started so far: a later one writes under another key prefix, so it never
    /// overwrites an earlier one's keys (which `verify` would then count as lost).
    workload_runs: u32,
    /// The nodes the current step acted on (for the report and recovery times).
    step_nodes: Vec<String>,
    verification: Option<Verification>,
    /// Outputs kept by `ops` steps (`stdout_to`), by name.
    artifacts: BTreeMap<String, Vec<u8>>,
}

type StepResult = Result<String, String>;

impl<B: Backend> Engine<B> {
    pub fn new(scenario: Scenario, profile: Profile, backend: B, opts: RunOptions) -> Engine<B> {
        let http = profile
            .client_builder()
            .timeout(crate::target::REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(1))
            // Redirects name the leader by its in-cluster URL; `kv` maps them to our endpoint.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client");
        let states = profile.nodes.iter().map(|n| (n.name.clone(), NodeState::Down)).collect();
        let secrets = profile
            .nodes
            .iter()
            .filter_map(|n| profile.env_value(&n.name, profile.admin_token_key.as_deref()?))
            .collect();
        let detector = Detector::new();
        let target = Target::new(
            std::sync::Arc::new(profile.target.clone()),
            http.clone(),
            backend.executor(),
        );
        Engine {
            scenario,
            profile,
            backend,
            http,
            target,
            states,
            captures: BTreeMap::new(),
            last_info: BTreeMap::new(),
            written: BTreeMap::new(),
            rng: Rng::new(opts.seed),
            opts,
            secrets,
            epoch: Instant::now(),
            endpoints: Endpoints::default(),
            samples: Arc::default(),
            detector: Arc::new(Mutex::new(detector)),
            generations: Vec::new(),
            writes: Arc::default(),
            register_ops: Arc::default(),
            sampler: None,
            writer: None,
            workload_runs: 0,
            step_nodes: Vec::new(),
            verification: None,
            artifacts: BTreeMap::new(),
        }
    }

    fn redact(&self, s: &str) -> String {
        self.secrets.iter().fold(s.to_owned(), |acc, sec| acc.replace(sec.as_str(), "***"))
    }

    /// Runs every step (stopping at the first failure), then stops the background tasks and
    /// puts their evidence in the report. The caller tears the cluster down.
    pub async fn run(&mut self, report: &mut Report) {
        self.epoch = Instant::now();
        self.run_steps(report).await;
        self.finish(report).await;
    }

    async fn run_steps(&mut self, report: &mut Report) {
        let steps = self.scenario.steps.clone();
        let total = steps.len();
        if let Some(backends) = self.profile.backends.as_ref() {
            if !backends.iter().any(|b| b == self.backend.name()) {
                let reason = format!(
                    "the {} cluster can only be built on {}",
                    self.profile.name,
                    backends.join(", ")
                );
                report.skip(reason.clone());
                self.say(&format!("SKIPPED: {reason}"));
                return;
            }
        }
        for action in steps.iter().map(|s| s.step.kind()) {
            if let Err(reason) = self.backend.supports(action) {
                report.skip(format!("step `{action}`: {reason}"));
                self.say(&format!(
                    "SKIPPED: the {} backend cannot run this scenario: step `{action}`: {reason}",
                    self.backend.name()
                ));
                return;
            }
        }
        for (i, placed) in steps.iter().enumerate() {
            let label = format!("[{:>2}/{total}] {:<8}", i + 1, placed.step.action());
            if self.opts.verbose {
                print!("{label} ");
                let _ = std::io::stdout().flush();
            }
            let t = Instant::now();
            let start_ms = self.now_ms();
            self.step_nodes.clear();
            let result = self.step(placed).await;
            let took = t.elapsed();
            if !matches!(
                placed.step,
                Step::Expect(_) | Step::Read(_) | Step::Write(_) | Step::Sleep(_) | Step::Verify(_)
            ) {
                self.refresh_endpoints().await;
            }
            let (status, detail) = match &result {
                Ok(d) => (StepStatus::Passed, self.redact(d)),
                Err(e) => (StepStatus::Failed, self.redact(e)),
            };
            if self.opts.verbose {
                let mark = if status == StepStatus::Passed { "✓" } else { "✗" };
                let first = detail.lines().next().unwrap_or("");
                println!("{first:<60} {mark} {:>6.2}s", took.as_secs_f64());
                for more in detail.lines().skip(1) {
                    println!("             {more}");
                }
            }
            report.steps.push(StepReport {
                fault: placed.step.fault_kind(),
                index: i + 1,
                line: placed.line,
                action: placed.step.action().into(),
                status,
                start_ms,
                duration_ms: took.as_millis() as u64,
                nodes: self.step_nodes.clone(),
                detail,
            });
            if status == StepStatus::Failed {
                report.fail(format!(
                    "step {} ({}, line {}) failed",
                    i + 1,
                    placed.step.action(),
                    placed.line
                ));
                self.collect_evidence(report).await;
                return;
            }
        }
        report.pass();
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Tells the background tasks where each node can be reached now.
    async fn refresh_endpoints(&mut self) {
        for n in self.profile.nodes.clone() {
            let url = match self.states[&n.name] {
                NodeState::Running | NodeState::Paused | NodeState::Isolated => {
                    self.backend.endpoint(&n.name).await.ok()
                }
                NodeState::Down | NodeState::Stopped => None,
            };
            self.endpoints.set(&n.name, url);
            let mut known = vec![n.url.clone()];
            if let Some(Ok(o)) = self.last_info.get(&n.name) {
                known.extend(o.status.url.clone().filter(|u| *u != n.url));
            }
            self.endpoints.set_in_cluster(&n.name, known);
        }
    }

    fn say(&self, s: &str) {
        if self.opts.verbose {
            println!("{s}");
        }
    }

    fn timeout(&self, t: Option<crate::model::Dur>) -> Duration {
        t.map(|d| d.0).unwrap_or(self.scenario.default_timeout())
    }

    /// Each node's last info answer and log tail, for the report of a failed run.
    pub async fn collect_evidence(&mut self, report: &mut Report) {
        for n in self.profile.nodes.clone() {
            let info = match self.fetch_info(&n.name).await {
                Ok(o) => o.doc,
                Err(e) => self
                    .last_info
                    .get(&n.name)
                    .cloned()
                    .and_then(|r| r.ok())
                    .map(|o| o.doc)
                    .unwrap_or(Value::String(e)),
            };
            let log_tail = self.redact(&self.backend.logs(&n.name, 200).await);
            report.evidence.push(NodeEvidence {
                node: n.name.clone(),
                state: format!("{:?}", self.states[&n.name]),
                info,
                log_tail,
            });
        }
    }

    /// The node's state and the document `expect` sees.
    async fn fetch_info(&mut self, node: &str) -> Result<Observed, String> {
        let res = async {
            let base = self.backend.endpoint(node).await.map_err(|e| e.to_string())?;
            self.target.read(node, &base).await.map_err(|e: ReadError| e.to_string())
        }
        .await;
        self.last_info.insert(node.to_owned(), res.clone());
        res
    }

    /// The node's role and term from the primary source alone (choosing `leader` or
    /// `followers` runs no command source).
    async fn fetch_primary(&mut self, node: &str) -> Result<Observed, String> {
        let base = self.backend.endpoint(node).await.map_err(|e| e.to_string())?;
        self.target.read_primary(node, &base).await.map_err(|e: ReadError| e.to_string())
    }

    /// Any JSON document a node serves (an `expect` step's `path`).
    async fn fetch_doc(&mut self, node: &str, path: &str) -> Result<Value, String> {
        let base = self.backend.endpoint(node).await.map_err(|e| e.to_string())?;
        self.target.document(&base, path).await
    }

    async fn step(&mut self, placed: &PlacedStep) -> StepResult {
        let be = |e: BackendError| e.to_string();
        match &placed.step {
            Step::Up(_) => {
                self.backend.up().await.map_err(be)?;
                let all: Vec<String> = self.profile.nodes.iter().map(|n| n.name.clone()).collect();
                self.set_state(&all, NodeState::Running);
                self.refresh_endpoints().await;
                self.start_sampler();
                Ok(format!("{} nodes up", all.len()))
            }
            Step::Down(_) => {
                self.stop_writer().await;
                self.backend.teardown().run().await.map_err(be)?;
                let all: Vec<String> = self.profile.nodes.iter().map(|n| n.name.clone()).collect();
                self.set_state(&all, NodeState::Down);
                Ok("cluster removed".into())
            }
            Step::Stop(s) | Step::Restart(s) => {
                let t = self.timeout(s.timeout);
                let nodes = self.resolve(s.nodes.get_ref(), t).await?;
                self.backend.stop_all(&nodes, Duration::from_secs(10)).await.map_err(be)?;
                self.set_state(&nodes, NodeState::Stopped);
                if matches!(placed.step, Step::Restart(_)) {
                    for n in &nodes {
                        self.backend.start(n).await.map_err(be)?;
                    }
                    self.set_state(&nodes, NodeState::Running);
                }
                Ok(describe(s.nodes.get_ref(), &nodes))
            }
            Step::Kill(k) => {
                let nodes =
                    self.resolve(k.nodes.get_ref(), self.scenario.default_timeout()).await?;
                let sig = k
                    .signal
                    .as_ref()
                    .map(|s| s.get_ref().clone())
                    .unwrap_or_else(|| "SIGKILL".into());
                for n in &nodes {
                    self.backend.kill(n, &sig).await.map_err(be)?;
                }
                let state = match sig.as_str() {
                    "SIGKILL" | "SIGTERM" | "SIGINT" => Some(NodeState::Stopped),
                    "SIGSTOP" => Some(NodeState::Paused),
                    "SIGCONT" => Some(NodeState::Running),
                    _ => None,
                };
                if let Some(s) = state {
                    self.set_state(&nodes, s);
                }
                Ok(format!("{} ({sig})", describe(k.nodes.get_ref(), &nodes)))
            }
            Step::Start(s) => {
                let nodes = self.resolve(s.nodes.get_ref(), self.timeout(s.timeout)).await?;
                for n in &nodes {
                    self.backend.start(n).await.map_err(be)?;
                }
                self.set_state(&nodes, NodeState::Running);
                Ok(describe(s.nodes.get_ref(), &nodes))
            }
            Step::Pause(s) | Step::Unpause(s) | Step::Isolate(s) | Step::Heal(s) => {
                let nodes = self.resolve(s.nodes.get_ref(), self.timeout(s.timeout)).await?;
                for n in &nodes {
                    match &placed.step {
                        Step::Pause(_) => self.backend.pause(n).await,
                        Step::Unpause(_) => self.backend.unpause(n).await,
                        Step::Isolate(_) => self.backend.isolate(n).await,
                        _ => self.backend.heal(n).await,
                    }
                    .map_err(be)?;
                }
                let state = match &placed.step {
                    Step::Pause(_) => NodeState::Paused,
                    Step::Isolate(_) => NodeState::Isolated,
                    _ => NodeState::Running,
                };
                self.set_state(&nodes, state);
                Ok(describe(s.nodes.get_ref(), &nodes))
            }
            Step::Partition(p) => {
                let t = self.timeout(p.timeout);
                let mut groups: Vec<Vec<String>> = Vec::new();
                for g in &p.groups {
                    groups.push(self.resolve(g.get_ref(), t).await?);
                }
                let all: Vec<String> = self.profile.nodes.iter().map(|n| n.name.clone()).collect();
                let groups = partition_groups(&all, groups)?;
                self.backend.partition(&groups).await.map_err(be)?;
                let shown: Vec<String> = groups.iter().map(|g| g.join(",")).collect();
                Ok(format!("partitioned: {}", shown.join(" | ")))
            }
            Step::HealPartition(_) => {
                self.backend.heal_partition().await.map_err(be)?;
                Ok("partition healed".into())
            }
            Step::Wipe(s) => {
                let nodes = self.resolve(s.nodes.get_ref(), self.timeout(s.timeout)).await?;
                for n in &nodes {
                    self.require_stopped(n, "wipe")?;
                    let at_ms = self.now_ms();
                    self.generations.push(GenerationEvent::Rejoined { node: n.clone(), at_ms });
                    let cmd = self.profile.command(&self.profile.wipe, n, &[]);
                    let out =
                        self.backend.oneoff(n, &cmd, Duration::from_secs(60)).await.map_err(be)?;
                    if out.code != 0 {
                        return Err(format!(
                            "wipe of {n} exited {}: {}",
                            out.code,
                            out.stderr.trim()
                        ));
                    }
                }
                Ok(describe(s.nodes.get_ref(), &nodes))
            }
            Step::Recover(r) => {
                let node =
                    self.resolve_one(r.node.get_ref(), self.scenario.default_timeout()).await?;
                self.require_stopped(&node, "recover")?;
                let mut cmd = self.profile.command(&self.profile.recover, &node, &[]);
                cmd.extend(r.args.iter().cloned());
                let out =
                    self.backend.oneoff(&node, &cmd, Duration::from_secs(300)).await.map_err(be)?;
                let mut wants = Vec::new();
                for w in &r.stdout_contains {
                    wants.push(self.interpolate_str(w, &node).await?);
                }
                check_output(&cmd, &out, r.expect_exit, &wants, &[])?;
                if out.code == 0 {
                    let at_ms = self.now_ms();
                    self.generations.push(GenerationEvent::Recovered { node: node.clone(), at_ms });
                }
                Ok(format!("{node}: {} exited {}", shown(as_run(&cmd, &out)), out.code))
            }
            Step::Ops(o) => {
                let node =
                    self.resolve_one(o.node.get_ref(), self.scenario.default_timeout()).await?;
                let input = match &o.input {
                    Some(name) => {
                        let bytes = self
                            .artifacts
                            .get(name)
                            .cloned()
                            .ok_or_else(|| format!("no artifact {name:?}"))?;
                        Some(
                            self.backend
                                .put_file(&node, &format!("{name}.input"), &bytes)
                                .await
                                .map_err(be)?,
                        )
                    }
                    None => None,
                };
                let mut cmd = Vec::new();
                for w in o.run.get_ref() {
                    let w = match &input {
                        Some(path) => w.replace("{input}", path),
                        None => w.clone(),
                    };
                    cmd.push(self.interpolate_str(&w, &node).await?);
                }
                let out =
                    self.backend.oneoff(&node, &cmd, self.timeout(o.timeout)).await.map_err(be)?;
                let (mut outs, mut errs) = (Vec::new(), Vec::new());
                for w in &o.stdout_contains {
                    outs.push(self.interpolate_str(w, &node).await?);
                }
                for w in &o.stderr_contains {
                    errs.push(self.interpolate_str(w, &node).await?);
                }
                check_output(&cmd, &out, o.expect_exit, &outs, &errs)?;
                if let Some(name) = &o.stdout_to {
                    self.artifacts.insert(name.clone(), out.stdout.clone().into_bytes());
                }
                let kept = o
                    .stdout_to
                    .as_ref()
                    .map(|n| format!("; stdout kept as {n:?} ({} bytes)", out.stdout.len()))
                    .unwrap_or_default();
                Ok(format!("{node}: {} exited {}{kept}", shown(as_run(&cmd, &out)), out.code))
            }
            Step::Join(j) => self.join(j).await,
            Step::Expect(e) => self.expect(e, &placed.matchers).await,
            Step::ExpectDown(s) => self.expect_down(s).await,
            Step::Write(w) => self.write(w).await,
            Step::Read(r) => self.read(r).await,
            Step::Sleep(s) => {
                tokio::time::sleep(s.duration.0).await;
                Ok(format!("{:?}", s.duration.0))
            }
            Step::WorkloadStart(w) => {
                self.stop_writer().await;
                let (rate, writers) = (w.rate.unwrap_or(100), w.concurrency.unwrap_or(4));
                let mut prefix = w.prefix.clone().unwrap_or_else(|| "w".into());
                self.workload_runs += 1;
                if self.workload_runs > 1 {
                    prefix = format!("{prefix}r{}.", self.workload_runs);
                }
                let (tx, rx) = watch::channel(false);
                let mut tasks: Vec<tokio::task::JoinHandle<()>> = (0..writers)
                    .map(|i| {
                        let spec = WorkloadSpec {
                            rate_per_sec: (rate / writers).max(1),
                            prefix: format!("{prefix}{i}"),
                            write_budget: Duration::from_secs(2),
                            spread: w.spread,
                            offset: i as usize,
                            value_bytes: w.value_bytes.unwrap_or(0) as usize,
                        };
                        tokio::spawn(crate::measure::write_loop(
                            self.endpoints.clone(),
                            self.writer_target(spec.value_bytes),
                            spec,
                            self.epoch,
                            self.writes.clone(),
                            rx.clone(),
                        ))
                    })
                    .collect();
                let registers = w.registers.unwrap_or(0);
                let keys: Vec<String> =
                    (0..registers).map(|i| format!("{prefix}reg-{i}")).collect();
                let shared = crate::measure::register::Tasks {
                    endpoints: self.endpoints.clone(),
                    target: self.writer_target(0),
                    epoch: self.epoch,
                    out: self.register_ops.clone(),
                    stop: rx.clone(),
                };
                for (i, key) in keys.iter().enumerate() {
                    tasks.push(tokio::spawn(crate::measure::register::write_loop(
                        shared.clone(),
                        key.clone(),
                        Duration::from_millis(200),
                        Duration::from_secs(2),
                    )));
                    tasks.push(tokio::spawn(crate::measure::register::read_loop(
                        shared.clone(),
                        keys.clone(),
                        i,
                        Duration::from_millis(100),
                    )));
                }
                self.writer = Some((tx, tasks));
                let spread =
                    if w.spread { ", each write starting at the next node in turn" } else { "" };
                let regs = if registers > 0 {
                    format!(
                        "; {registers} registers {prefix}reg-N, each written 5 times/s and read by one of {registers} readers 10 times/s"
                    )
                } else {
                    String::new()
                };
                Ok(format!(
                    "{writers} writers, {rate} writes/s in all, keys {prefix}<writer>-NNNNNN{spread}{regs}"
                ))
            }
            Step::WorkloadStop(_) => {
                self.stop_writer().await;
                let w = self.writes.lock().unwrap().clone();
                let count = |o: WriteOutcome| w.iter().filter(|x| x.outcome == o).count();
                Ok(format!(
                    "{} writes: {} acknowledged, {} failed, {} unknown",
                    w.len(),
                    count(WriteOutcome::Acked),
                    count(WriteOutcome::Failed),
                    count(WriteOutcome::Unknown)
                ))
            }
            Step::Verify(v) => self.verify(v).await,
            Step::ChooseSurvivor(c) => self.choose_survivor(c).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matcher_table() {
        let cases: &[(Matcher, Value, bool)] = &[
            (Matcher::Eq(json!("leader")), json!("leader"), true),
            (Matcher::Eq(json!(1)), json!(1.0), true),
            (Matcher::Eq(json!([1])), json!([1]), true),
            (Matcher::Eq(json!([1])), json!([1, 2]), false),
            (Matcher::Ne(json!("")), json!(""), false),
            (Matcher::OneOf(vec![json!("leader"), json!("follower")]), json!("follower"), true),
            (Matcher::OneOf(vec![json!("leader")]), json!("candidate"), false),
            (Matcher::NotEmpty, json!(""), false),
            (Matcher::NotEmpty, json!([]), false),
            (Matcher::NotEmpty, json!("x"), true),
            (Matcher::NotEmpty, Value::Null, false),
            (Matcher::Gt(2.0), json!(3), true),
            (Matcher::Gt(2.0), json!(2), false),
            (Matcher::Ge(2.0), json!(2), true),
            (Matcher::Lt(2.0), json!("1"), false),
            (Matcher::Le(2.0), json!(2), true),
            (Matcher::Contains(json!(4)), json!([1, 4]), true),
            (Matcher::Contains(json!(5)), json!([1, 4]), false),
            (Matcher::Excludes(json!(5)), json!([1, 4]), true),
            (Matcher::Excludes(json!(4)), json!([1, 4]), false),
            (Matcher::Len(1), json!([7]), true),
            (Matcher::Len(2), json!("ab"), true),
        ];
        for (m, actual, want) in cases {
            assert_eq!(matches(m, actual), *want, "{m} on {actual}");
        }
    }

    #[test]
    fn partition_groups_are_disjoint_and_the_rest_is_one_more_group() {
        let all: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
        let g = |groups: &[&[&str]]| -> Vec<Vec<String>> {
            groups.iter().map(|g| g.iter().map(|n| n.to_string()).collect()).collect()
        };
        type Groups<'a> = &'a [&'a [&'a str]];
        let cases: &[(Groups, Result<Groups, &str>)] = &[
            (&[&["n1", "n2"], &["n3"]], Ok(&[&["n1", "n2"], &["n3"]])),
            (&[&["n1", "n2"]], Ok(&[&["n1", "n2"], &["n3"]])),
            (&[&["n2"]], Ok(&[&["n2"], &["n1", "n3"]])),
            (&[&["n1"], &["n2"]], Ok(&[&["n1"], &["n2"], &["n3"]])),
            (
                &[&["n1", "n2"], &["n2", "n3"]],
                Err("n2 is in two partition groups; the groups must be disjoint"),
            ),
            (
                &[&["n1", "n2", "n3"]],
                Err(
                    "a partition needs at least two groups; these groups hold every node: n1,n2,n3",
                ),
            ),
        ];
        for (input, want) in cases {
            let got = partition_groups(&all, g(input));
            let want = want.map(g).map_err(str::to_owned);
            assert_eq!(got, want, "{input:?}");
        }
    }

    #[test]
    fn rng_is_reproducible() {
        let a: Vec<usize> = (0..5).scan(Rng::new(42), |r, _| Some(r.below(3))).collect();
        let b: Vec<usize> = (0..5).scan(Rng::new(42), |r, _| Some(r.below(3))).collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|x| *x < 3));
    }
}
