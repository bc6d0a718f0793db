//! The medians of repeated runs of one scenario (`--repeat N`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Outcome, Report};

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
    let mut steps: std::collections::BTreeMap<usize, Vec<&crate::measure::Recovery>> =
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
    let verified: Vec<&crate::measure::Verification> =
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
    use crate::measure::{Recovery, Verification};

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
