//! `--plan`: what a scenario would do, without running it.

use crate::model::*;
use crate::profile::Profile;

/// The plan of a scenario, without running anything: each step, its selectors and what they
/// resolve to before the run (names and `all` statically; roles and captures only live).
pub fn render_plan(s: &Scenario, profile: &Profile) -> String {
    let mut out = format!(
        "plan of {} ({}), cluster {}: {} steps, default timeout {:?}\n",
        s.name,
        s.file.display(),
        s.cluster,
        s.steps.len(),
        s.default_timeout()
    );
    let all: Vec<&str> = profile.nodes.iter().map(|n| n.name.as_str()).collect();
    for (i, p) in s.steps.iter().enumerate() {
        let mut parts = Vec::new();
        for (field, sel) in p.step.selectors() {
            let resolved: Vec<String> = sel
                .0
                .iter()
                .map(|w| match w.as_str() {
                    "all" => all.join(","),
                    "running" | "stopped" | "leader" | "followers" | "any-follower" => {
                        format!("{w} (live)")
                    }
                    w if w.starts_with("${") => format!("{w} (captured earlier)"),
                    w => w.to_owned(),
                })
                .collect();
            parts.push(format!("{field}={sel} → {}", resolved.join(", ")));
        }
        for (f, m) in &p.matchers {
            parts.push(format!("{f} {m}"));
        }
        out.push_str(&format!(
            "[{:>2}] line {:<3} {:<16} {}\n",
            i + 1,
            p.line,
            p.step.action(),
            parts.join("; ")
        ));
    }
    out
}
