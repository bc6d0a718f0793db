//! The same drills on two systems, side by side: a Markdown table from the medians of
//! repeated runs ([`RepeatSummary`]), for `docs/comparison.md`.

use crate::report::RepeatSummary;

/// One row: a drill on one system and its medians.
pub struct Row<'a> {
    /// What the drill does, shared by the systems compared.
    pub drill: &'a str,
    pub system: &'a str,
    pub summary: &'a RepeatSummary,
}

fn secs(ms: Option<u64>) -> String {
    match ms {
        Some(ms) => format!("{:.2} s", ms as f64 / 1000.0),
        None => "–".into(),
    }
}

/// Median of a list of counts (the lower middle), `–` when empty.
fn median(xs: &[u64]) -> String {
    let mut v = xs.to_vec();
    v.sort_unstable();
    match v.get(v.len().saturating_sub(1) / 2) {
        Some(x) if !v.is_empty() => x.to_string(),
        _ => "–".into(),
    }
}

/// The Markdown table: per drill and system, runs passed, each measured fault or recovery
/// step's time to a leader and write outage (medians), acknowledged and lost writes, wall
/// time. `regenerate` is the command that rebuilds the page.
pub fn markdown(rows: &[Row<'_>], regenerate: &str, preamble: &str) -> String {
    let mut out = String::new();
    out.push_str("# The same drills on xp and etcd\n\n");
    out.push_str(preamble.trim());
    out.push_str(&format!(
        "\n\nRegenerate with `{regenerate}` (it runs every drill below on fresh clusters and \
         rewrites this page). Times are medians over the runs that measured them.\n\n"
    ));
    out.push_str(
        "| drill | system | passed | step: time to a leader / write outage | acknowledged \
         writes | lost | wall time |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let s = r.summary;
        let steps: Vec<String> = s
            .recoveries
            .iter()
            .map(|m| {
                // Measured in fewer runs than were made: say in how many.
                let of = |n: usize, v: Option<u64>| match v {
                    Some(_) if n < s.runs => format!("{} ({n}/{})", secs(v), s.runs),
                    _ => secs(v),
                };
                format!(
                    "{} {}: {} / {}",
                    m.action,
                    m.nodes.join("¦"),
                    of(m.measured.0, m.leader_after_ms),
                    of(m.measured.1, m.write_after_ms)
                )
            })
            .collect();
        let max_lost = s.lost.iter().max().map(|x| x.to_string()).unwrap_or_else(|| "–".into());
        out.push_str(&format!(
            "| {} | {} | {}/{} | {} | {} | {} | {} |\n",
            r.drill,
            r.system,
            s.passed,
            s.runs,
            if steps.is_empty() { "–".into() } else { steps.join("<br>") },
            median(&s.acknowledged),
            max_lost,
            secs(Some(s.wall_ms_median)),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::RecoveryMedian;

    fn summary(runs: usize, passed: usize, lost: Vec<u64>) -> RepeatSummary {
        RepeatSummary {
            scenario: "d".into(),
            runs,
            passed,
            wall_ms_median: 12_340,
            recoveries: vec![RecoveryMedian {
                step: 7,
                action: "kill".into(),
                nodes: vec!["node1".into(), "node2".into()],
                leader_after_ms: Some(1_250),
                write_after_ms: None,
                measured: (2, 0),
            }],
            acknowledged: vec![900, 1000, 1100],
            lost,
        }
    }

    #[test]
    fn a_row_per_drill_and_system_with_medians() {
        let (a, b) = (summary(3, 3, vec![0, 0, 0]), summary(3, 2, vec![0, 4, 0]));
        let rows = [
            Row { drill: "leader failover", system: "one", summary: &a },
            Row { drill: "leader failover", system: "two", summary: &b },
        ];
        let md = markdown(&rows, "cargo xtask compare", "Intro.");
        assert!(md.contains("Regenerate with `cargo xtask compare`"), "{md}");
        assert!(md.contains("\nIntro.\n"), "{md}");
        assert!(
            md.contains(
                "| leader failover | one | 3/3 | kill node1¦node2: 1.25 s (2/3) / – | 1000 | 0 | 12.34 s |"
            ),
            "{md}"
        );
        assert!(md.contains("| leader failover | two | 2/3 |"), "{md}");
        assert!(md.contains("| 1000 | 4 | 12.34 s |"), "the worst run's loss is shown: {md}");
    }
}
