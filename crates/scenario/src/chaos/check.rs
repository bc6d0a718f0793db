//! The checkers: each judges the whole run from its report and says what it saw.

use super::generate::{Marks, Schedule};
use crate::report::{Check, Report, StepReport, StepStatus};

/// Checker names, in report order (JUnit test cases carry them).
pub const FAULTS: &str = "faults-and-heals";
pub const LOST_WRITES: &str = "no-lost-writes";
pub const SPLIT_BRAIN: &str = "no-split-brain";
pub const READS: &str = "no-stale-reads";
pub const CONVERGENCE: &str = "convergence";
pub const CRASH: &str = "no-crash";
pub const LEFTOVERS: &str = "nothing-left-behind";

/// What the campaign did, in numbers.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Pace {
    pub episodes: usize,
    /// From the first fault step to the last heal, as run (ms).
    pub fault_phase_ms: u64,
    pub faults_per_min: f64,
}

/// How many episodes ran in how long.
pub fn pace(report: &Report, marks: &Marks) -> Pace {
    let steps = &report.steps;
    let from = steps.get(marks.faults_from.saturating_sub(1)).map(|s| s.start_ms);
    let last = steps[..marks.faults_to.min(steps.len())].last().map(|s| s.start_ms + s.duration_ms);
    let fault_phase_ms = match (from, last) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => 0,
    };
    // Episodes whose first step ran (the run may have stopped early).
    let ran = marks.episode_steps.iter().filter(|s| **s <= steps.len()).count();
    let faults_per_min =
        if fault_phase_ms == 0 { 0.0 } else { ran as f64 * 60_000.0 / fault_phase_ms as f64 };
    Pace { episodes: ran, fault_phase_ms, faults_per_min }
}

fn failed_step(report: &Report) -> Option<&StepReport> {
    report.steps.iter().find(|s| s.status == StepStatus::Failed)
}

fn not_reached(report: &Report, what: &str) -> String {
    match failed_step(report) {
        Some(s) => format!(
            "not reached: the run stopped at step {} ({}) before {what}: {}",
            s.index,
            s.action,
            s.detail.lines().next().unwrap_or("")
        ),
        None => format!("not reached: the run ended before {what}"),
    }
}

/// Every checker's verdict on a finished run (the leftovers check is the runner's: it needs
/// the backend after teardown).
pub fn run(report: &Report, schedule: &Schedule, marks: &Marks) -> Vec<Check> {
    let mut out = Vec::new();
    let check = |name: &str, passed: bool, evidence: String| Check {
        name: name.to_owned(),
        passed,
        evidence,
    };

    let p = pace(report, marks);
    let faults_failed = failed_step(report).filter(|s| s.index <= marks.faults_to);
    out.push(check(
        FAULTS,
        faults_failed.is_none() && report.steps.len() >= marks.faults_to,
        match faults_failed {
            Some(s) => format!("step {} ({}) failed: {}", s.index, s.action, s.detail),
            None if report.steps.len() < marks.faults_to => {
                format!("the run stopped after {} of {} steps", report.steps.len(), marks.faults_to)
            }
            None => format!(
                "{} episodes in {:.1} s: {:.2} faults per minute; every fault and heal step ran",
                p.episodes,
                p.fault_phase_ms as f64 / 1000.0,
                p.faults_per_min
            ),
        },
    ));

    let verify = report.steps.get(marks.verify - 1);
    out.push(match (&report.verification, verify) {
        (Some(v), Some(step)) => {
            let rpo = if v.lost_before_recovery > 0 {
                format!(
                    "\nRPO: {} writes acknowledged before a recovery whose survivors held no majority are gone (allowed: {})",
                    v.lost_before_recovery,
                    schedule.lossy()
                )
            } else {
                String::new()
            };
            check(LOST_WRITES, step.status == StepStatus::Passed, format!("{}{rpo}", step.detail))
        }
        _ => check(LOST_WRITES, false, not_reached(report, "the read-back")),
    });

    out.push(check(
        SPLIT_BRAIN,
        report.split_brains.is_empty(),
        if report.split_brains.is_empty() {
            format!(
                "no poll round saw two leaders both advancing their applied index ({} role changes observed)",
                report.timeline.len()
            )
        } else {
            report.split_brains.iter().map(|s| s.line()).collect::<Vec<_>>().join("\n")
        },
    ));

    out.push(match &report.register_check {
        Some(c) => {
            let mut ev = c.line();
            for v in c.violations.iter().take(10) {
                ev.push_str(&format!("\n{}", v.line()));
            }
            check(READS, c.passed() && c.reads_checked > 0, ev)
        }
        None => check(READS, false, not_reached(report, "any register was read")),
    });

    out.push(match report.steps.get(marks.convergence - 1) {
        Some(s) => check(CONVERGENCE, s.status == StepStatus::Passed, s.detail.clone()),
        None => check(CONVERGENCE, false, not_reached(report, "the convergence check")),
    });

    let lines: usize = report.node_logs.values().map(|l| l.lines().count()).sum();
    out.push(check(
        CRASH,
        report.crash_lines.is_empty() && !report.node_logs.is_empty(),
        if report.node_logs.is_empty() {
            "no node log was collected".to_owned()
        } else if report.crash_lines.is_empty() {
            format!(
                "{lines} log lines of {} nodes scanned; none matches the profile's crash_patterns",
                report.node_logs.len()
            )
        } else {
            let mut ev = format!("{} lines match:", report.crash_lines.len());
            for l in report.crash_lines.iter().take(10) {
                ev.push_str(&format!("\n{l}"));
            }
            ev
        },
    ));
    out
}
