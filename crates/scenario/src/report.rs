//! Run reports: a JSON report per scenario, per-node evidence on failure, and JUnit XML.

use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Passed,
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Running,
    Passed,
    Failed,
    Skipped,
}

#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    pub index: usize,
    /// Line of the step in the scenario file.
    pub line: usize,
    pub action: String,
    /// What the step did to the cluster (see [`crate::format::FaultKind`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<crate::format::FaultKind>,
    pub status: StepStatus,
    /// Start, in ms since the run started.
    pub start_ms: u64,
    pub duration_ms: u64,
    /// The concrete nodes the step acted on.
    pub nodes: Vec<String>,
    /// What was resolved and done, or why it failed.
    pub detail: String,
}

/// What a node looked like when the run failed.
#[derive(Clone, Debug, Serialize)]
pub struct NodeEvidence {
    pub node: String,
    pub state: String,
    pub info: serde_json::Value,
    pub log_tail: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub file: String,
    pub summary: String,
    pub backend: String,
    pub seed: u64,
    pub started_at: String,
    pub duration_ms: u64,
    pub outcome: Outcome,
    /// Why it failed or was skipped.
    pub reason: Option<String>,
    pub steps: Vec<StepReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<NodeEvidence>,
    /// Per fault or recovery step: time to a leader and the write outage (RTO).
    pub recoveries: Vec<crate::workload::Recovery>,
    /// What `verify` found (RPO, in writes).
    pub verification: Option<crate::workload::Verification>,
    /// Every observed change of a node's role, term or leader.
    pub timeline: Vec<crate::workload::Sample>,
    /// Every write of the background workload.
    pub writes: Vec<crate::workload::WriteRecord>,
    /// Intervals with two or more leaders committing at once.
    pub split_brains: Vec<crate::split_brain::SplitBrain>,
    /// Whether the scenario accepts a split brain (`allow_split_brain`).
    pub allow_split_brain: bool,
    /// Every operation on the registers, and what the stale-read check found.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub registers: Vec<crate::register::RegisterOp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register_check: Option<crate::register::RegisterCheck>,
    /// Log lines matching the profile's `crash_patterns`, as `<node>: <line>`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub crash_lines: Vec<String>,
    /// Every node's whole log at the end of the run (written as `logs/<node>.log`).
    #[serde(skip)]
    pub node_logs: std::collections::BTreeMap<String, String>,
    /// A campaign's checkers (`cargo xtask chaos`), each with its verdict and evidence.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
}

/// One checker's verdict over a whole run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    /// What it saw: counts, or the first offending events.
    pub evidence: String,
}

impl Report {
    pub fn new(scenario: &str, file: &Path, summary: &str, backend: &str, seed: u64) -> Report {
        Report {
            scenario: scenario.into(),
            file: file.display().to_string(),
            summary: summary.into(),
            backend: backend.into(),
            seed,
            started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            duration_ms: 0,
            outcome: Outcome::Running,
            reason: None,
            steps: Vec::new(),
            evidence: Vec::new(),
            recoveries: Vec::new(),
            verification: None,
            timeline: Vec::new(),
            writes: Vec::new(),
            split_brains: Vec::new(),
            allow_split_brain: false,
            registers: Vec::new(),
            register_check: None,
            crash_lines: Vec::new(),
            node_logs: Default::default(),
            checks: Vec::new(),
        }
    }
    pub fn pass(&mut self) {
        self.outcome = Outcome::Passed;
    }
    pub fn fail(&mut self, why: String) {
        self.outcome = Outcome::Failed;
        self.reason = Some(why);
    }
    pub fn skip(&mut self, why: String) {
        self.outcome = Outcome::Skipped;
        self.reason = Some(why);
    }

    /// Writes `report.json`, `report.html`, on failure `<node>.info.json` and `<node>.log`, and
    /// with the profile's `crash_patterns` each node's whole log as `logs/<node>.log`, into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("report.json"),
            serde_json::to_string_pretty(self).expect("report serializes"),
        )?;
        std::fs::write(dir.join("report.html"), crate::html::render(self))?;
        for e in &self.evidence {
            std::fs::write(
                dir.join(format!("{}.info.json", e.node)),
                serde_json::to_string_pretty(&e.info).unwrap(),
            )?;
            std::fs::write(dir.join(format!("{}.log", e.node)), &e.log_tail)?;
        }
        if !self.node_logs.is_empty() {
            std::fs::create_dir_all(dir.join("logs"))?;
            for (node, log) in &self.node_logs {
                std::fs::write(dir.join("logs").join(format!("{node}.log")), log)?;
            }
        }
        Ok(())
    }
}

fn xml_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            '\'' => "&apos;".into(),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => " ".into(),
            c => c.to_string(),
        })
        .collect()
}

/// JUnit XML: one `<testsuite>` per scenario, one `<testcase>` per step (a campaign: one per
/// checker).
pub fn junit(reports: &[Report]) -> String {
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"scenarios\">\n",
    );
    for r in reports {
        let (tests, failures) = if r.checks.is_empty() {
            (r.steps.len(), r.steps.iter().filter(|s| s.status == StepStatus::Failed).count())
        } else {
            (r.checks.len(), r.checks.iter().filter(|c| !c.passed).count())
        };
        let skipped = usize::from(r.outcome == Outcome::Skipped);
        x.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{:.3}\">\n",
            xml_escape(&r.scenario),
            tests.max(1),
            r.duration_ms as f64 / 1000.0
        ));
        if r.outcome == Outcome::Skipped {
            x.push_str(&format!(
                "    <testcase classname=\"{0}\" name=\"{0}\"><skipped message=\"{1}\"/></testcase>\n",
                xml_escape(&r.scenario),
                xml_escape(r.reason.as_deref().unwrap_or(""))
            ));
        }
        for c in &r.checks {
            x.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\"",
                xml_escape(&r.scenario),
                xml_escape(&c.name)
            ));
            if c.passed {
                x.push_str("/>\n");
            } else {
                x.push_str(&format!(
                    "><failure message=\"{}\">{}</failure></testcase>\n",
                    xml_escape(c.evidence.lines().next().unwrap_or("")),
                    xml_escape(&c.evidence)
                ));
            }
        }
        let steps: &[StepReport] = if r.checks.is_empty() { &r.steps } else { &[] };
        for s in steps {
            x.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{:02} {} (line {})\" time=\"{:.3}\"",
                xml_escape(&r.scenario),
                s.index,
                s.action,
                s.line,
                s.duration_ms as f64 / 1000.0
            ));
            if s.status == StepStatus::Failed {
                x.push_str(&format!(
                    "><failure message=\"{}\">{}</failure></testcase>\n",
                    xml_escape(s.detail.lines().next().unwrap_or("")),
                    xml_escape(&s.detail)
                ));
            } else {
                x.push_str("/>\n");
            }
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

/// Several runs of one scenario (`--repeat N`) boiled down: medians of each fault's recovery
/// times, and the spread of acknowledged and lost writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RepeatSummary {
    pub scenario: String,
    pub runs: usize,
    pub passed: usize,
    pub wall_ms_median: u64,
    pub recoveries: Vec<RecoveryMedian>,
    /// Per run that verified: acknowledged writes.
    pub acknowledged: Vec<u64>,
    /// Per run that verified: acknowledged writes that were gone.
    pub lost: Vec<u64>,
}

/// One fault or recovery step across runs (matched by step number).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoveryMedian {
    pub step: usize,
    pub action: String,
    /// The distinct sets of nodes it hit over the runs, each comma-joined (selectors like
    /// `any-follower` may pick others each run).
    pub nodes: Vec<String>,
    /// Median over the runs that measured one; `None` when none did.
    pub leader_after_ms: Option<u64>,
    pub write_after_ms: Option<u64>,
    /// How many runs measured a leader / a write.
    pub measured: (usize, usize),
}

/// The median of what was measured (the lower middle for an even count).
fn median(mut xs: Vec<u64>) -> Option<u64> {
    xs.sort_unstable();
    (!xs.is_empty()).then(|| xs[(xs.len() - 1) / 2])
}

/// Summarises runs of the same scenario.
pub fn summarize(reports: &[Report]) -> RepeatSummary {
    let mut steps: std::collections::BTreeMap<usize, Vec<&crate::workload::Recovery>> =
        Default::default();
    for r in reports {
        for rec in &r.recoveries {
            steps.entry(rec.step).or_default().push(rec);
        }
    }
    let recoveries = steps
        .into_values()
        .map(|recs| {
            let leaders: Vec<u64> = recs.iter().filter_map(|r| r.leader_after_ms).collect();
            let writes: Vec<u64> = recs.iter().filter_map(|r| r.write_after_ms).collect();
            let mut nodes: Vec<String> = recs.iter().map(|r| r.nodes.join(",")).collect();
            nodes.sort();
            nodes.dedup();
            RecoveryMedian {
                step: recs[0].step,
                action: recs[0].action.clone(),
                nodes,
                measured: (leaders.len(), writes.len()),
                leader_after_ms: median(leaders),
                write_after_ms: median(writes),
            }
        })
        .collect();
    let verified: Vec<&crate::workload::Verification> =
        reports.iter().filter_map(|r| r.verification.as_ref()).collect();
    RepeatSummary {
        scenario: reports.first().map(|r| r.scenario.clone()).unwrap_or_default(),
        runs: reports.len(),
        passed: reports.iter().filter(|r| r.outcome == Outcome::Passed).count(),
        wall_ms_median: median(reports.iter().map(|r| r.duration_ms).collect()).unwrap_or(0),
        recoveries,
        acknowledged: verified.iter().map(|v| v.acknowledged).collect(),
        lost: verified.iter().map(|v| v.lost).collect(),
    }
}

impl RepeatSummary {
    /// Writes `summary.json` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_vec_pretty(self).expect("a summary serializes");
        std::fs::write(dir.join("summary.json"), json)
    }

    /// Reads the `summary.json` that [`RepeatSummary::write`] put in `dir`.
    pub fn read(dir: &Path) -> Result<RepeatSummary, String> {
        let path = dir.join("summary.json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Lines for the terminal.
    pub fn render(&self) -> String {
        let s = |ms: Option<u64>| match ms {
            Some(ms) => format!("{:.2}s", ms as f64 / 1000.0),
            None => "-".into(),
        };
        let mut out = format!(
            "{}: {}/{} passed, wall time median {:.1}s\n",
            self.scenario,
            self.passed,
            self.runs,
            self.wall_ms_median as f64 / 1000.0
        );
        for r in &self.recoveries {
            out.push_str(&format!(
                "    step {:>2} {:<8} {:<22} to a leader {:>6}, writes out {:>6} (median of {}/{})\n",
                r.step,
                r.action,
                r.nodes.join(" | "),
                s(r.leader_after_ms),
                s(r.write_after_ms),
                r.measured.0.max(r.measured.1),
                self.runs
            ));
        }
        if !self.acknowledged.is_empty() {
            out.push_str(&format!(
                "    acknowledged writes {:?}, lost {:?}\n",
                self.acknowledged, self.lost
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{Recovery, Verification};

    fn run(duration_ms: u64, leader: Option<u64>, write: u64, node: &str, lost: u64) -> Report {
        let mut r = Report::new("s", Path::new("s.toml"), "", "local", 1);
        r.duration_ms = duration_ms;
        r.outcome = if lost == 0 { Outcome::Passed } else { Outcome::Failed };
        r.recoveries = vec![Recovery {
            step: 4,
            action: "kill".into(),
            nodes: vec![node.into()],
            at_ms: 0,
            leader_after_ms: leader,
            write_after_ms: Some(write),
        }];
        r.verification =
            Some(Verification { acknowledged: 1000 + lost, lost, ..Default::default() });
        r
    }

    #[test]
    fn summaries_take_medians_over_the_runs_that_measured() {
        let reports = [
            run(9000, Some(600), 650, "node1", 0),
            run(12000, None, 900, "node2", 0),
            run(10000, Some(500), 700, "node1", 2),
        ];
        let s = summarize(&reports);
        assert_eq!((s.runs, s.passed, s.wall_ms_median), (3, 2, 10000));
        let r = &s.recoveries[0];
        assert_eq!((r.step, r.action.as_str()), (4, "kill"));
        assert_eq!(r.nodes, ["node1", "node2"]);
        // Two runs saw a leader: the lower middle of 500 and 600.
        assert_eq!(
            (r.leader_after_ms, r.write_after_ms, r.measured),
            (Some(500), Some(700), (2, 3))
        );
        assert_eq!((&s.acknowledged, &s.lost), (&vec![1000, 1000, 1002], &vec![0, 0, 2]));
        assert!(s.render().contains("to a leader  0.50s, writes out  0.70s (median of 3/3)"));
    }
}
