//! JUnit XML for CI: one test case per scenario, and one per checker of a campaign.

use super::{Outcome, Report, StepReport, StepStatus};

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
