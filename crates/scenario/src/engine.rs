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
use crate::format::{references, Matcher, PlacedStep, Scenario, Selector, Step};
use crate::generation::{GenerationEvent, StaleSpans};
use crate::profile::Profile;
use crate::report::{NodeEvidence, Report, StepReport, StepStatus};
use crate::split_brain::Detector;
use crate::workload::{
    self, Endpoints, InfoFields, Sample, Verification, WorkloadSpec, WriteOutcome, WriteRecord,
};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

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
    states: BTreeMap<String, NodeState>,
    captures: BTreeMap<String, Value>,
    last_info: BTreeMap<String, Result<Value, String>>,
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
            .timeout(Duration::from_secs(3))
            .connect_timeout(Duration::from_secs(1))
            // Redirects name the leader by its in-cluster URL; `kv` maps them to our endpoint.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client");
        let states = profile.nodes.iter().map(|n| (n.name.clone(), NodeState::Down)).collect();
        let secrets = profile
            .nodes
            .iter()
            .filter_map(|n| profile.env_value(&n.name, &profile.admin_token_key))
            .collect();
        let detector = Detector::new(&profile.leader_role);
        Engine {
            scenario,
            profile,
            backend,
            http,
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
        for action in steps.iter().map(|s| s.step.action()) {
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
            self.endpoints.set_in_cluster(&n.name, &n.api_base_url);
        }
    }

    fn start_sampler(&mut self) {
        if self.sampler.is_some() {
            return;
        }
        let (tx, rx) = watch::channel(false);
        let fields = InfoFields {
            info_path: self.profile.info_path.clone(),
            role: self.profile.role_field.clone(),
            term: self.profile.term_field.clone(),
            leader_url: "leader_api_base_url".into(),
            applied: self.profile.applied_field.clone(),
        };
        let task = tokio::spawn(workload::sample(
            self.endpoints.clone(),
            fields,
            self.epoch,
            Duration::from_millis(50),
            self.samples.clone(),
            self.detector.clone(),
            rx,
            self.profile.run_tls.clone(),
        ));
        self.sampler = Some((tx, task));
    }

    async fn stop_writer(&mut self) {
        if let Some((tx, tasks)) = self.writer.take() {
            let _ = tx.send(true);
            for t in tasks {
                let _ = t.await;
            }
        }
    }

    /// Stops the background tasks and records their evidence.
    async fn finish(&mut self, report: &mut Report) {
        self.stop_writer().await;
        if let Some((tx, task)) = self.sampler.take() {
            let _ = tx.send(true);
            let _ = task.await;
        }
        let samples = self.samples.lock().unwrap().clone();
        let writes = self.writes.lock().unwrap().clone();
        // (a hit node may be the new leader, a recovery: measured from its end)
        let kind = |action: &str| match action {
            "stop" | "kill" | "pause" | "isolate" => Some((false, false)),
            // The restarted node itself may lead again.
            "restart" => Some((true, false)),
            // The recovered node is started afterwards: measure from the end.
            "recover" => Some((true, true)),
            _ => None,
        };
        let measured: Vec<&StepReport> =
            report.steps.iter().filter(|s| kind(&s.action).is_some()).collect();
        for (i, s) in measured.iter().enumerate() {
            let (hit_may_lead, is_recovery) = kind(&s.action).expect("filtered");
            let done = s.start_ms + s.duration_ms;
            let at = if is_recovery { done } else { s.start_ms };
            let m = workload::Measured {
                at_ms: at,
                done_ms: done,
                until_ms: measured.get(i + 1).map(|n| n.start_ms),
                hit: &s.nodes,
                hit_may_lead,
                is_recovery,
            };
            let (leader, write) =
                workload::recovery_times(&samples, &writes, &m, &self.profile.leader_role);
            report.recoveries.push(workload::Recovery {
                step: s.index,
                action: s.action.clone(),
                nodes: s.nodes.clone(),
                at_ms: at,
                leader_after_ms: leader,
                write_after_ms: write.filter(|_| !writes.is_empty()),
            });
        }
        report.verification = self.verification.clone();
        report.timeline = samples;
        report.writes = writes;
        let detector = self.detector.lock().unwrap().clone();
        report.split_brains = detector.finish();
        report.allow_split_brain = self.scenario.allow_split_brain;
        for sb in &report.split_brains {
            let allowed =
                if self.scenario.allow_split_brain { " (allowed: allow_split_brain)" } else { "" };
            self.say(&format!("{}{allowed}", sb.line()));
        }
        if let Some(why) =
            crate::split_brain::failure(&report.split_brains, self.scenario.allow_split_brain)
        {
            let why = match (&report.outcome, report.reason.take()) {
                (crate::report::Outcome::Failed, Some(earlier)) => format!("{earlier}; {why}"),
                _ => why,
            };
            report.fail(why);
        }
    }

    /// Which nodes belonged to a stale generation when, from the steps so far.
    fn stale_spans(&self) -> StaleSpans {
        let nodes: Vec<String> = self.profile.nodes.iter().map(|n| n.name.clone()).collect();
        StaleSpans::from_events(&nodes, &self.generations)
    }

    fn say(&self, s: &str) {
        if self.opts.verbose {
            println!("{s}");
        }
    }

    fn timeout(&self, t: Option<crate::format::Dur>) -> Duration {
        t.map(|d| d.0).unwrap_or(self.scenario.default_timeout())
    }

    /// Each node's last info answer and log tail, for the report of a failed run.
    pub async fn collect_evidence(&mut self, report: &mut Report) {
        for n in self.profile.nodes.clone() {
            let info = match self.fetch_info(&n.name).await {
                Ok(v) => v,
                Err(e) => self
                    .last_info
                    .get(&n.name)
                    .cloned()
                    .and_then(|r| r.ok())
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

    async fn fetch_info(&mut self, node: &str) -> Result<Value, String> {
        let res = async {
            let base = self.backend.endpoint(node).await.map_err(|e| e.to_string())?;
            let r = self
                .http
                .get(format!("{base}{}", self.profile.info_path))
                .send()
                .await
                .map_err(|e| format!("unreachable: {e}"))?;
            if !r.status().is_success() {
                return Err(format!("answered {}", r.status()));
            }
            r.json::<Value>().await.map_err(|e| format!("bad JSON: {e}"))
        }
        .await;
        self.last_info.insert(node.to_owned(), res.clone());
        res
    }

    /// Any JSON document a node serves (e.g. `/api/cluster/status`).
    async fn fetch_doc(&mut self, node: &str, path: &str) -> Result<Value, String> {
        let base = self.backend.endpoint(node).await.map_err(|e| e.to_string())?;
        let r = self
            .http
            .get(format!("{base}{path}"))
            .send()
            .await
            .map_err(|e| format!("unreachable: {e}"))?;
        if !r.status().is_success() {
            return Err(format!("{path} answered {}", r.status()));
        }
        r.json::<Value>().await.map_err(|e| format!("bad JSON from {path}: {e}"))
    }

    fn running(&self) -> Vec<String> {
        self.states
            .iter()
            .filter(|(_, s)| **s == NodeState::Running)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The current leader among running nodes (highest term wins a tie of stale leaders).
    async fn current_leader(&mut self) -> Result<String, String> {
        let mut best: Option<(u64, String)> = None;
        let mut seen = Vec::new();
        for n in self.running() {
            match self.fetch_info(&n).await {
                Ok(v) => {
                    let role = v[&self.profile.role_field].as_str().unwrap_or("?").to_owned();
                    let term = v[&self.profile.term_field].as_u64().unwrap_or(0);
                    seen.push(format!("{n}={role}(term {term})"));
                    if role == self.profile.leader_role
                        && best.as_ref().is_none_or(|(t, _)| term > *t)
                    {
                        best = Some((term, n));
                    }
                }
                Err(e) => seen.push(format!("{n}: {e}")),
            }
        }
        best.map(|(_, n)| n).ok_or_else(|| {
            format!(
                "no leader among running nodes: {}",
                if seen.is_empty() { "none running".into() } else { seen.join(", ") }
            )
        })
    }

    async fn followers(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for n in self.running() {
            if let Ok(v) = self.fetch_info(&n).await {
                if v[&self.profile.role_field] == self.profile.follower_role.as_str() {
                    out.push(n);
                }
            }
        }
        out
    }

    /// Resolves a selector once.
    async fn resolve_once(&mut self, sel: &Selector) -> Result<Vec<String>, String> {
        let mut out: Vec<String> = Vec::new();
        for word in &sel.0 {
            let names = match word.as_str() {
                "all" => self.profile.nodes.iter().map(|n| n.name.clone()).collect(),
                "running" => self.running(),
                "stopped" => self
                    .states
                    .iter()
                    .filter(|(_, s)| **s == NodeState::Stopped)
                    .map(|(n, _)| n.clone())
                    .collect(),
                "leader" => vec![self.current_leader().await?],
                "followers" => self.followers().await,
                "any-follower" => {
                    let f = self.followers().await;
                    if f.is_empty() {
                        return Err("no follower among running nodes".into());
                    }
                    vec![f[self.rng.below(f.len())].clone()]
                }
                w => match w.strip_prefix("${").and_then(|w| w.strip_suffix('}')) {
                    Some(cap) => {
                        let v = self
                            .captures
                            .get(cap)
                            .ok_or_else(|| format!("nothing captured as {cap:?}"))?;
                        let name = v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
                        let node =
                            self.profile.nodes.iter().find(|n| n.name == name).ok_or_else(
                                || format!("capture {cap:?} is {v}, not a node name"),
                            )?;
                        vec![node.name.clone()]
                    }
                    None => vec![w.to_owned()],
                },
            };
            for n in names {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        Ok(out)
    }

    /// Resolves a selector, waiting (bounded) while it names a role nobody holds yet.
    async fn resolve(&mut self, sel: &Selector, timeout: Duration) -> Result<Vec<String>, String> {
        let start = Instant::now();
        loop {
            match self.resolve_once(sel).await {
                Ok(v) if !v.is_empty() => {
                    for n in &v {
                        if !self.step_nodes.contains(n) {
                            self.step_nodes.push(n.clone());
                        }
                    }
                    return Ok(v);
                }
                Ok(_) if start.elapsed() >= timeout => {
                    return Err(format!("`{sel}` selects no node"))
                }
                Err(e) if start.elapsed() >= timeout => {
                    return Err(format!("resolving `{sel}` after {timeout:?}: {e}"))
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn resolve_one(&mut self, sel: &Selector, timeout: Duration) -> Result<String, String> {
        let v = self.resolve(sel, timeout).await?;
        Ok(v[0].clone())
    }

    fn set_state(&mut self, nodes: &[String], s: NodeState) {
        for n in nodes {
            self.states.insert(n.clone(), s);
        }
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
                for n in &nodes {
                    self.backend.stop(n, Duration::from_secs(10)).await.map_err(be)?;
                }
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
                    let out = self
                        .backend
                        .oneoff(n, &self.profile.wipe.clone(), Duration::from_secs(60))
                        .await
                        .map_err(be)?;
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
                let mut cmd = self.profile.recover.clone();
                cmd.extend(r.args.iter().cloned());
                let out =
                    self.backend.oneoff(&node, &cmd, Duration::from_secs(300)).await.map_err(be)?;
                check_output(&cmd, &out, r.expect_exit, &r.stdout_contains, &[])?;
                if out.code == 0 {
                    let at_ms = self.now_ms();
                    self.generations.push(GenerationEvent::Recovered { node: node.clone(), at_ms });
                }
                Ok(format!("{node}: {} exited {}", cmd.join(" "), out.code))
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
                check_output(&cmd, &out, o.expect_exit, &o.stdout_contains, &o.stderr_contains)?;
                if let Some(name) = &o.stdout_to {
                    self.artifacts.insert(name.clone(), out.stdout.clone().into_bytes());
                }
                let kept = o
                    .stdout_to
                    .as_ref()
                    .map(|n| format!("; stdout kept as {n:?} ({} bytes)", out.stdout.len()))
                    .unwrap_or_default();
                Ok(format!("{node}: {} exited {}{kept}", cmd.join(" "), out.code))
            }
            Step::Join(j) => self.join(j).await,
            Step::Expect(e) => self.expect(e, &placed.matchers).await,
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
                let tasks = (0..writers)
                    .map(|i| {
                        let spec = WorkloadSpec {
                            rate_per_sec: (rate / writers).max(1),
                            prefix: format!("{prefix}{i}"),
                            write_budget: Duration::from_secs(2),
                            kv_path: self.profile.kv_path.clone(),
                            spread: w.spread,
                            offset: i as usize,
                            value_bytes: w.value_bytes.unwrap_or(0) as usize,
                        };
                        tokio::spawn(workload::write_loop(
                            self.endpoints.clone(),
                            spec,
                            self.epoch,
                            self.writes.clone(),
                            rx.clone(),
                            self.profile.run_tls.clone(),
                        ))
                    })
                    .collect();
                self.writer = Some((tx, tasks));
                let spread =
                    if w.spread { ", each write starting at the next node in turn" } else { "" };
                Ok(format!(
                    "{writers} writers, {rate} writes/s in all, keys {prefix}<writer>-NNNNNN{spread}"
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

    fn require_stopped(&self, node: &str, what: &str) -> Result<(), String> {
        match self.states.get(node) {
            Some(NodeState::Stopped) => Ok(()),
            Some(s) => Err(format!(
                "{what} needs {node} stopped, but it is {s:?}; add a `stop` step before it"
            )),
            None => Err(format!("no node {node:?}")),
        }
    }

    async fn join(&mut self, j: &crate::format::Join) -> StepResult {
        let timeout = self.timeout(j.timeout);
        let node = self.resolve_one(j.node.get_ref(), timeout).await?;
        self.require_stopped(&node, "join")?;
        let at_ms = self.now_ms();
        self.generations.push(GenerationEvent::Rejoined { node: node.clone(), at_ms });
        let via_sel = j
            .via
            .as_ref()
            .map(|v| v.get_ref().clone())
            .unwrap_or_else(|| Selector(vec!["leader".into()]));
        let via = self.resolve_one(&via_sel, timeout).await?;
        let admin = self
            .profile
            .env_value(&via, &self.profile.admin_token_key)
            .ok_or_else(|| format!("{via}'s env file has no {}", self.profile.admin_token_key))?;
        let ttl = j.ttl_seconds.unwrap_or(self.profile.join.token_ttl_seconds);
        // The runner is the admin here: it knows the joining node takes the place of the
        // member that has its URL (a replaced disk) and says so in the token. The cluster
        // never replaces a member by URL on its own.
        let replaces = match &self.profile.join.replaces_field {
            Some(_) => self.member_with_url_of(&via, &node).await?,
            None => None,
        };
        let mut request = serde_json::json!({ "ttl_seconds": ttl });
        if let (Some(field), Some(id)) = (&self.profile.join.replaces_field, replaces) {
            request[field] = serde_json::json!(id);
        }
        let start = Instant::now();
        let token = loop {
            let base = self.backend.endpoint(&via).await.map_err(|e| e.to_string())?;
            let res = self
                .http
                .post(format!("{base}{}", self.profile.join.token_path))
                .bearer_auth(&admin)
                .json(&request)
                .send()
                .await;
            let last = match res {
                Ok(r) if r.status().is_success() => {
                    let v: Value = r.json().await.map_err(|e| e.to_string())?;
                    match v[&self.profile.join.token_field].as_str() {
                        Some(t) => break t.to_owned(),
                        None => format!("no {} in the answer", self.profile.join.token_field),
                    }
                }
                Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => e.to_string(),
            };
            if start.elapsed() >= timeout {
                return Err(format!("could not create a join token on {via} within {timeout:?}; last answer: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        self.secrets.push(token.clone());
        let token_file = self
            .backend
            .put_file(&node, "join-token", token.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let cmd: Vec<String> = self
            .profile
            .join
            .command
            .iter()
            .map(|w| w.replace("{token_file}", &token_file))
            .collect();
        let out = self
            .backend
            .oneoff(&node, &cmd, Duration::from_secs(60))
            .await
            .map_err(|e| e.to_string())?;
        if out.code != 0 {
            return Err(self.redact(&format!(
                "join command for {node} exited {}: {}",
                out.code,
                out.stderr.trim()
            )));
        }
        self.backend.start(&node).await.map_err(|e| e.to_string())?;
        self.set_state(std::slice::from_ref(&node), NodeState::Running);
        let replacing = replaces.map(|r| format!(", replacing node {r}")).unwrap_or_default();
        Ok(format!("{node} joins via {via} (token from {via}{replacing}, node started)"))
    }

    /// The id of the member of `via`'s cluster whose URL is `node`'s (the member a wiped
    /// `node` comes back to replace), if any.
    async fn member_with_url_of(&self, via: &str, node: &str) -> Result<Option<u64>, String> {
        let url = &self.profile.node(node).ok_or_else(|| format!("no node {node:?}"))?.api_base_url;
        // The node's URL in the cluster: the profile's (docker), or the loopback URL the local
        // backend gave it (a stopped container has no endpoint: then the profile's is the one).
        let mut urls = vec![url.clone()];
        if let Ok(e) = self.backend.endpoint(node).await {
            urls.push(e);
        }
        let base = self.backend.endpoint(via).await.map_err(|e| e.to_string())?;
        let info: Value = self
            .http
            .get(format!("{base}{}", self.profile.info_path))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("reading {via}'s members: {e}"))?
            .json()
            .await
            .map_err(|e| format!("reading {via}'s members: {e}"))?;
        Ok(info["members"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["api_base_url"].as_str().is_some_and(|u| urls.iter().any(|x| x == u)))
            .and_then(|m| m["node_id"].as_u64()))
    }

    /// The value of a `${reference}` for node `this`.
    async fn reference(&mut self, r: &str, this: &str) -> Result<Value, String> {
        match r.split_once('.') {
            Some((who, field)) => {
                let node = match who {
                    "self" => this.to_owned(),
                    "leader" => self.current_leader().await?,
                    n if self.profile.node(n).is_some() => n.to_owned(),
                    cap => match self.captures.get(cap) {
                        Some(Value::String(name)) => name.clone(),
                        other => {
                            return Err(format!(
                                "${{{r}}}: capture {cap:?} is {other:?}, not a node name"
                            ))
                        }
                    },
                };
                let info = match self.last_info.get(&node) {
                    Some(Ok(v)) if node != this => v.clone(),
                    _ => {
                        self.fetch_info(&node).await.map_err(|e| format!("${{{r}}}: {node} {e}"))?
                    }
                };
                let v = info
                    .get(field)
                    .cloned()
                    .ok_or_else(|| format!("${{{r}}}: {node}'s info has no field {field:?}"))?;
                Ok(v)
            }
            None => {
                self.captures.get(r).cloned().ok_or_else(|| format!("${{{r}}} is not captured"))
            }
        }
    }

    async fn interpolate_str(&mut self, s: &str, this: &str) -> Result<String, String> {
        let mut out = s.to_owned();
        for r in references(s) {
            let v = self.reference(r, this).await?;
            let text = v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
            out = out.replace(&format!("${{{r}}}"), &text);
        }
        Ok(out)
    }

    /// Resolves references inside a matcher value; a string that is exactly one reference
    /// takes the referenced value's type (so `"${self.node_id}"` compares as a number).
    async fn interpolate(&mut self, v: &Value, this: &str) -> Result<Value, String> {
        Ok(match v {
            Value::String(s) => {
                let refs = references(s);
                if refs.len() == 1 && s == &format!("${{{}}}", refs[0]) {
                    self.reference(refs[0], this).await?
                } else {
                    Value::String(Box::pin(self.interpolate_str(s, this)).await?)
                }
            }
            Value::Array(a) => {
                let mut out = Vec::new();
                for x in a {
                    out.push(Box::pin(self.interpolate(x, this)).await?);
                }
                Value::Array(out)
            }
            other => other.clone(),
        })
    }

    async fn expect(
        &mut self,
        e: &crate::format::Expect,
        matchers: &[(String, Matcher)],
    ) -> StepResult {
        let timeout = self.timeout(e.timeout);
        let sel = e
            .nodes
            .as_ref()
            .map(|n| n.get_ref().clone())
            .unwrap_or_else(|| Selector(vec!["running".into()]));
        let start = Instant::now();
        loop {
            let attempt = self.expect_once(&sel, matchers, e.path.as_deref()).await;
            match attempt {
                Ok((nodes, summary, docs)) => {
                    for (name, field) in &e.capture {
                        let v = docs[0].get(field.get_ref()).cloned().unwrap_or(Value::Null);
                        self.captures.insert(name.clone(), v);
                    }
                    let caps = if e.capture.is_empty() {
                        String::new()
                    } else {
                        let c: Vec<String> =
                            e.capture.keys().map(|k| format!("{k}={}", self.captures[k])).collect();
                        format!("; captured {}", c.join(", "))
                    };
                    return Ok(format!(
                        "{} on {}{caps} (after {:.2}s)",
                        summary,
                        nodes.join(", "),
                        start.elapsed().as_secs_f64()
                    ));
                }
                Err(why) if start.elapsed() >= timeout => {
                    let mut msg = format!("not met within {timeout:?}: {why}\nlast answers:");
                    for n in self.profile.nodes.iter().map(|n| n.name.clone()) {
                        let last = match self.last_info.get(&n) {
                            Some(Ok(v)) => compact(
                                v,
                                &matchers.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>(),
                            ),
                            Some(Err(e)) => e.clone(),
                            None => "(not asked)".into(),
                        };
                        msg.push_str(&format!("\n  {n} [{:?}]: {last}", self.states[&n]));
                    }
                    return Err(msg);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// One check of every matcher on every selected node; returns the nodes, a summary and
    /// the documents checked (the info answers, or those of `path`).
    async fn expect_once(
        &mut self,
        sel: &Selector,
        matchers: &[(String, Matcher)],
        path: Option<&str>,
    ) -> Result<(Vec<String>, String, Vec<Value>), String> {
        let nodes = self.resolve_once(sel).await?;
        if nodes.is_empty() {
            return Err(format!("`{sel}` selects no node"));
        }
        let mut infos = Vec::new();
        for n in &nodes {
            let doc = match path {
                None => self.fetch_info(n).await,
                Some(p) => self.fetch_doc(n, p).await,
            };
            infos.push(doc.map_err(|e| format!("{n}: {e}"))?);
        }
        for (field, m) in matchers {
            if *m == Matcher::Same {
                let vals: Vec<&Value> = infos.iter().map(|i| &i[field]).collect();
                if vals.iter().any(|v| *v != vals[0]) || vals[0].is_null() {
                    let shown: Vec<String> =
                        nodes.iter().zip(&vals).map(|(n, v)| format!("{n}={v}")).collect();
                    return Err(format!("{field} differs: {}", shown.join(", ")));
                }
                continue;
            }
            for (n, info) in nodes.iter().zip(&infos) {
                let actual = info.get(field).cloned().unwrap_or(Value::Null);
                let m = match m {
                    Matcher::Eq(v) => Matcher::Eq(self.interpolate(v, n).await?),
                    Matcher::Ne(v) => Matcher::Ne(self.interpolate(v, n).await?),
                    Matcher::Contains(v) => Matcher::Contains(self.interpolate(v, n).await?),
                    Matcher::Excludes(v) => Matcher::Excludes(self.interpolate(v, n).await?),
                    Matcher::OneOf(vs) => {
                        let mut out = Vec::new();
                        for v in vs {
                            out.push(self.interpolate(v, n).await?);
                        }
                        Matcher::OneOf(out)
                    }
                    other => other.clone(),
                };
                if !matches(&m, &actual) {
                    return Err(format!("{n}: {field} is {actual}, expected {m}"));
                }
            }
        }
        let summary: Vec<String> = matchers.iter().map(|(f, m)| format!("{f} {m}")).collect();
        let prefix = path.map(|p| format!("{p}: ")).unwrap_or_default();
        Ok((nodes, format!("{prefix}{}", summary.join(", ")), infos))
    }

    /// Inspects each stopped candidate and captures the one with the most up-to-date log.
    async fn choose_survivor(&mut self, c: &crate::format::ChooseSurvivor) -> StepResult {
        let sel = c
            .among
            .as_ref()
            .map(|a| a.get_ref().clone())
            .unwrap_or_else(|| Selector(vec!["stopped".into()]));
        let candidates = self.resolve(&sel, self.scenario.default_timeout()).await?;
        let spec = self.profile.inspect.clone();
        let mut lines = Vec::new();
        // (last log term, last log index, lower id first) and the node's name.
        type Rank = (u64, u64, std::cmp::Reverse<u64>);
        let mut best: Option<(Rank, String)> = None;
        for n in &candidates {
            self.require_stopped(n, "choose-survivor")?;
            let out = self
                .backend
                .oneoff(n, &spec.command, Duration::from_secs(60))
                .await
                .map_err(|e| e.to_string())?;
            if out.code != 0 {
                lines.push(format!(
                    "{n}: not a candidate ({})",
                    out.stderr.lines().next().unwrap_or("").trim()
                ));
                continue;
            }
            let v: Value = serde_json::from_str(&out.stdout)
                .map_err(|e| format!("{n}: inspect output is not JSON: {e}"))?;
            let num = |p: &str| v.pointer(p).and_then(Value::as_u64).unwrap_or(0);
            let key = (
                num(&spec.last_log_term),
                num(&spec.last_log_index),
                std::cmp::Reverse(num(&spec.node_id)),
            );
            lines.push(format!(
                "{n}: last log term {}, index {}, node id {}",
                key.0, key.1, key.2 .0
            ));
            if best.as_ref().is_none_or(|(b, _)| key > *b) {
                best = Some((key, n.clone()));
            }
        }
        let Some((_, chosen)) = best else {
            return Err(format!("no candidate has Raft state:\n{}", lines.join("\n")));
        };
        self.captures.insert(c.capture.clone(), Value::String(chosen.clone()));
        Ok(format!(
            "{} = {chosen} (highest last log term, then index; ties: lowest id)\n{}",
            c.capture,
            lines.join("\n")
        ))
    }

    async fn verify(&mut self, v: &crate::format::Verify) -> StepResult {
        self.stop_writer().await;
        let timeout = self.timeout(v.timeout);
        let writes = self.writes.lock().unwrap().clone();
        let leader = self.resolve_one(&Selector(vec!["leader".into()]), timeout).await?;
        let start = Instant::now();
        // Read everything back from the leader, 16 at a time; a key that fails that way (e.g. a
        // redirect after a leader change) is read again below, one by one, with retries.
        let mut fast: BTreeMap<usize, Option<String>> = BTreeMap::new();
        if let Ok(base) = self.backend.endpoint(&leader).await {
            use futures_util::StreamExt as _;
            let http = self.http.clone();
            let asks: Vec<(usize, String)> = writes
                .iter()
                .enumerate()
                .filter(|(_, w)| w.outcome != WriteOutcome::Failed)
                .map(|(i, w)| (i, self.kv_url(&base, &w.key)))
                .collect();
            fast = futures_util::stream::iter(asks)
                .map(|(i, url)| {
                    let http = http.clone();
                    async move { (i, read_value(&http, &url).await) }
                })
                .buffer_unordered(16)
                .filter_map(|(i, got)| async move { got.ok().map(|v| (i, v)) })
                .collect()
                .await;
        }
        let mut found: Vec<Option<Option<String>>> = Vec::with_capacity(writes.len());
        for (i, w) in writes.iter().enumerate() {
            if w.outcome == WriteOutcome::Failed {
                found.push(None);
                continue;
            }
            let got = loop {
                if let Some(v) = fast.remove(&i) {
                    break v;
                }
                let attempt = async {
                    let base = self.backend.endpoint(&leader).await.map_err(|e| e.to_string())?;
                    let res = self.kv(reqwest::Method::GET, &base, &w.key, None).await?;
                    value_of(res).await
                }
                .await;
                match attempt {
                    Ok(v) => break v,
                    Err(e) if start.elapsed() >= timeout => {
                        return Err(format!("reading back {:?} via {leader}: {e}", w.key))
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            };
            found.push(Some(got));
        }
        let r = workload::tally(&writes, &found, &self.stale_spans());
        let summary = r.summary();
        // The stale-acknowledged writes get a line of their own, under the summary.
        let stale = r.stale_line().map(|l| format!("\n{l}")).unwrap_or_default();
        self.verification = Some(r.clone());
        if r.acknowledged < v.min_acked.unwrap_or(1) {
            return Err(format!(
                "only {} acknowledged writes (min_acked {}): {summary}{stale}",
                r.acknowledged,
                v.min_acked.unwrap_or(1)
            ));
        }
        if r.lost > v.max_lost {
            let shown: Vec<&str> = r.lost_keys.iter().take(10).map(String::as_str).collect();
            return Err(format!(
                "{summary}; more than max_lost = {}; lost keys include {}{stale}",
                v.max_lost,
                shown.join(", ")
            ));
        }
        // Unbounded by default only when the scenario accepts a split brain.
        let max_stale = v.max_stale_acked.or((!self.scenario.allow_split_brain).then_some(0));
        if let Some(max) = max_stale.filter(|m| r.stale_acked > *m) {
            return Err(format!(
                "{summary}; more than max_stale_acked = {max} acknowledged by a stale cluster{stale}"
            ));
        }
        Ok(format!("{summary}{stale}"))
    }

    fn kv_url(&self, base: &str, key: &str) -> String {
        format!("{base}{}", self.profile.kv_path.replace("{key}", key))
    }

    /// Rewrites a URL a node gave (e.g. a redirect to `http://node2:8080/...`) into one the
    /// runner can reach, using each node's in-cluster URL from the profile and its last info.
    async fn reachable(&mut self, url: &str) -> String {
        for n in self.profile.nodes.clone() {
            let mut bases = vec![n.api_base_url.clone()];
            if let Some(Ok(v)) = self.last_info.get(&n.name) {
                if let Some(u) = v["api_base_url"].as_str() {
                    bases.push(u.to_owned());
                }
            }
            for b in bases {
                if let Some(rest) = url.strip_prefix(b.as_str()) {
                    if let Ok(e) = self.backend.endpoint(&n.name).await {
                        return format!("{e}{rest}");
                    }
                }
            }
        }
        url.to_owned()
    }

    /// A KV request through node `base`, following up to three redirects to the leader.
    async fn kv(
        &mut self,
        method: reqwest::Method,
        base: &str,
        key: &str,
        body: Option<Value>,
    ) -> Result<reqwest::Response, String> {
        let mut url = self.kv_url(base, key);
        for _ in 0..4 {
            let mut req = self.http.request(method.clone(), &url);
            if let Some(b) = &body {
                req = req.json(b);
            }
            let r = req.send().await.map_err(|e| e.to_string())?;
            if !r.status().is_redirection() {
                return Ok(r);
            }
            let loc = r
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            url = self.reachable(&loc).await;
        }
        Err(format!("too many redirects for {key:?}"))
    }

    async fn write(&mut self, w: &crate::format::Write) -> StepResult {
        let timeout = self.timeout(w.timeout);
        let via_sel = w
            .via
            .as_ref()
            .map(|v| v.get_ref().clone())
            .unwrap_or_else(|| Selector(vec!["leader".into()]));
        let mut keys: Vec<(String, String)> =
            w.keys.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let prefix = w.prefix.clone().unwrap_or_else(|| "key".into());
        for i in 0..w.count {
            let value = format!("{prefix}-value-{i}");
            let value = workload::sized_value(&value, w.value_bytes.unwrap_or(0) as usize);
            keys.push((format!("{prefix}-{i}"), value));
        }
        let start = Instant::now();
        let mut via_used = String::new();
        for (k, v) in &keys {
            loop {
                let attempt = async {
                    let via = self.resolve_one(&via_sel, timeout).await?;
                    let base = self.backend.endpoint(&via).await.map_err(|e| e.to_string())?;
                    let r = self
                        .kv(reqwest::Method::PUT, &base, k, Some(serde_json::json!({ "value": v })))
                        .await?;
                    if r.status().is_success() {
                        Ok(via)
                    } else {
                        Err(format!("{} {}", r.status(), r.text().await.unwrap_or_default()))
                    }
                }
                .await;
                match attempt {
                    Ok(via) => {
                        via_used = via;
                        self.written.insert(k.clone(), v.clone());
                        break;
                    }
                    Err(e) if start.elapsed() >= timeout => {
                        return Err(format!(
                            "write of {k:?} not acknowledged within {timeout:?}: {e}"
                        ))
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        Ok(format!("{} keys acknowledged via {via_used}", keys.len()))
    }

    async fn read(&mut self, r: &crate::format::Read) -> StepResult {
        let timeout = self.timeout(r.timeout);
        let via_sel = r
            .via
            .as_ref()
            .map(|v| v.get_ref().clone())
            .unwrap_or_else(|| Selector(vec!["leader".into()]));
        let mut keys: BTreeMap<String, String> = r.keys.clone();
        if r.all_written {
            keys.extend(self.written.clone());
        }
        let nodes = self.resolve(&via_sel, timeout).await?;
        let start = Instant::now();
        for n in &nodes {
            for (k, want) in &keys {
                loop {
                    let got = async {
                        let base = self.backend.endpoint(n).await.map_err(|e| e.to_string())?;
                        let res = self.kv(reqwest::Method::GET, &base, k, None).await?;
                        if res.status() == reqwest::StatusCode::NOT_FOUND {
                            return Ok(None);
                        }
                        if !res.status().is_success() {
                            return Err(format!(
                                "{} {}",
                                res.status(),
                                res.text().await.unwrap_or_default()
                            ));
                        }
                        let v: Value = res.json().await.map_err(|e| e.to_string())?;
                        Ok(v["value"].as_str().map(str::to_owned))
                    }
                    .await;
                    match got {
                        Ok(Some(v)) if &v == want => break,
                        Ok(other) if start.elapsed() >= timeout => {
                            return Err(format!("via {n}: {k:?} is {other:?}, expected {want:?}"));
                        }
                        Err(e) if start.elapsed() >= timeout => {
                            return Err(format!("via {n}: reading {k:?}: {e}"))
                        }
                        _ => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
        }
        Ok(format!("{} keys read back via {}", keys.len(), nodes.join(", ")))
    }
}

/// The groups of a partition as resolved, checked disjoint, plus one more group of the nodes
/// named in none; a partition needs at least two groups.
fn partition_groups(all: &[String], groups: Vec<Vec<String>>) -> Result<Vec<Vec<String>>, String> {
    let mut seen: Vec<&String> = Vec::new();
    for g in &groups {
        for n in g {
            if seen.contains(&n) {
                return Err(format!("{n} is in two partition groups; the groups must be disjoint"));
            }
            seen.push(n);
        }
    }
    let rest: Vec<String> = all.iter().filter(|n| !seen.contains(n)).cloned().collect();
    let mut out: Vec<Vec<String>> = groups.clone();
    if !rest.is_empty() {
        out.push(rest);
    }
    if out.len() < 2 {
        return Err(format!(
            "a partition needs at least two groups; these groups hold every node: {}",
            out.iter().map(|g| g.join(",")).collect::<Vec<_>>().join(" | ")
        ));
    }
    Ok(out)
}

fn describe(sel: &Selector, nodes: &[String]) -> String {
    let names = nodes.join(", ");
    if sel.0.len() == 1 && sel.0[0] == names {
        names
    } else {
        format!("{sel} → {names}")
    }
}

fn check_output(
    cmd: &[String],
    out: &crate::backend::CmdOutput,
    exit: i64,
    stdout: &[String],
    stderr: &[String],
) -> Result<(), String> {
    let tail = |s: &str| {
        s.lines()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    };
    if out.code != exit {
        return Err(format!(
            "{} exited {}, expected {exit}\nstdout:\n{}\nstderr:\n{}",
            cmd.join(" "),
            out.code,
            tail(&out.stdout),
            tail(&out.stderr)
        ));
    }
    for want in stdout {
        if !out.stdout.contains(want.as_str()) {
            return Err(format!(
                "stdout of {} lacks {want:?}:\n{}",
                cmd.join(" "),
                tail(&out.stdout)
            ));
        }
    }
    for want in stderr {
        if !out.stderr.contains(want.as_str()) {
            return Err(format!(
                "stderr of {} lacks {want:?}:\n{}",
                cmd.join(" "),
                tail(&out.stderr)
            ));
        }
    }
    Ok(())
}

/// Whether `actual` satisfies `m` (`Same` is checked across nodes by the caller).
pub fn matches(m: &Matcher, actual: &Value) -> bool {
    let num = actual.as_f64();
    match m {
        Matcher::Eq(v) => loose_eq(actual, v),
        Matcher::Ne(v) => !loose_eq(actual, v),
        Matcher::OneOf(vs) => vs.iter().any(|v| loose_eq(actual, v)),
        Matcher::NotEmpty => match actual {
            Value::Null => false,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            _ => true,
        },
        Matcher::Same => true,
        Matcher::Gt(n) => num.is_some_and(|x| x > *n),
        Matcher::Ge(n) => num.is_some_and(|x| x >= *n),
        Matcher::Lt(n) => num.is_some_and(|x| x < *n),
        Matcher::Le(n) => num.is_some_and(|x| x <= *n),
        Matcher::Contains(v) => actual.as_array().is_some_and(|a| a.iter().any(|x| loose_eq(x, v))),
        Matcher::Excludes(v) => {
            actual.as_array().is_some_and(|a| !a.iter().any(|x| loose_eq(x, v)))
        }
        Matcher::Len(n) => match actual {
            Value::Array(a) => a.len() as u64 == *n,
            Value::String(s) => s.len() as u64 == *n,
            _ => false,
        },
    }
}

/// Equality where numbers compare by value (1 == 1.0).
fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| loose_eq(p, q))
        }
        _ => a == b,
    }
}

/// The fields an expectation looks at, plus role and term, on one line.
fn compact(v: &Value, fields: &[String]) -> String {
    let mut keys: Vec<&str> = vec!["role", "term", "leader_id"];
    keys.extend(fields.iter().map(String::as_str));
    keys.dedup();
    let mut seen = Vec::new();
    let parts: Vec<String> = keys
        .into_iter()
        .filter(|k| {
            let new = !seen.contains(k);
            seen.push(k);
            new
        })
        .filter_map(|k| v.get(k).map(|x| format!("{k}={x}")))
        .collect();
    parts.join(" ")
}

/// One KV read with no redirect following.
async fn read_value(http: &reqwest::Client, url: &str) -> Result<Option<String>, String> {
    value_of(http.get(url).send().await.map_err(|e| e.to_string())?).await
}

/// A KV read's answer: `Ok(None)` for a missing key, `Err` for anything but a value or a 404.
async fn value_of(res: reqwest::Response) -> Result<Option<String>, String> {
    match res.status() {
        reqwest::StatusCode::NOT_FOUND => Ok(None),
        s if s.is_success() => {
            let body: Value = res.json().await.map_err(|e| e.to_string())?;
            Ok(body["value"].as_str().map(str::to_owned))
        }
        s => Err(s.to_string()),
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
