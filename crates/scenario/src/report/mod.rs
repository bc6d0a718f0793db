//! Run reports: what one run did and saw (this file), written as JSON and HTML with per-node
//! evidence ([`files`]), JUnit XML ([`junit`]), the medians of repeated runs ([`summary`]) and
//! `docs/comparison.md` ([`compare`]). The model depends on none of its renderings.

pub mod compare;
mod files;
pub mod html;
mod junit;
mod summary;

pub use junit::junit;
pub use summary::{summarize, RecoveryMedian, RepeatSummary};

use std::path::Path;

use serde::Serialize;

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
    /// What the step did to the cluster (see [`crate::model::FaultKind`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<crate::model::FaultKind>,
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
    pub recoveries: Vec<crate::measure::Recovery>,
    /// What `verify` found (RPO, in writes).
    pub verification: Option<crate::measure::Verification>,
    /// Every observed change of a node's role, term or leader.
    pub timeline: Vec<crate::measure::Sample>,
    /// Every write of the background workload.
    pub writes: Vec<crate::measure::WriteRecord>,
    /// Intervals with two or more leaders committing at once.
    pub split_brains: Vec<crate::measure::split_brain::SplitBrain>,
    /// Whether the scenario accepts a split brain (`allow_split_brain`).
    pub allow_split_brain: bool,
    /// Every operation on the registers, and what the stale-read check found.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub registers: Vec<crate::measure::register::RegisterOp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register_check: Option<crate::measure::register::RegisterCheck>,
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
}
