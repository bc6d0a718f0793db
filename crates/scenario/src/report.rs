//! Run reports: a JSON report per scenario, per-node evidence on failure, and JUnit XML.

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
    /// Per fault or recovery step: time to a leader and to an acknowledged write (RTO).
    pub recoveries: Vec<crate::workload::Recovery>,
    /// What `verify` found (RPO, in writes).
    pub verification: Option<crate::workload::Verification>,
    /// Every observed change of a node's role, term or leader.
    pub timeline: Vec<crate::workload::Sample>,
    /// Every write of the background workload.
    pub writes: Vec<crate::workload::WriteRecord>,
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

    /// Writes `report.json`, `report.html` and, on failure, `<node>.info.json` and `<node>.log` into `dir`.
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

/// JUnit XML: one `<testsuite>` per scenario, one `<testcase>` per step.
pub fn junit(reports: &[Report]) -> String {
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"scenarios\">\n",
    );
    for r in reports {
        let failures = r.steps.iter().filter(|s| s.status == StepStatus::Failed).count();
        let skipped = usize::from(r.outcome == Outcome::Skipped);
        x.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{:.3}\">\n",
            xml_escape(&r.scenario),
            r.steps.len().max(1),
            r.duration_ms as f64 / 1000.0
        ));
        if r.outcome == Outcome::Skipped {
            x.push_str(&format!(
                "    <testcase classname=\"{0}\" name=\"{0}\"><skipped message=\"{1}\"/></testcase>\n",
                xml_escape(&r.scenario),
                xml_escape(r.reason.as_deref().unwrap_or(""))
            ));
        }
        for s in &r.steps {
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
