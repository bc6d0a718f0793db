//! The self-contained HTML report of one run: steps, RTO/RPO figures and an SVG timeline of
//! every node's role and term with the faults marked. No scripts, no network.

use std::fmt::Write as _;

use crate::report::{Outcome, Report, StepStatus};
use crate::target::WriteOutcome;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn role_color(role: &str) -> &'static str {
    match role {
        "leader" => "#2e7d32",
        "follower" => "#1e88e5",
        "candidate" => "#fb8c00",
        "learner" => "#8e24aa",
        "down" => "#e0e0e0",
        // A node that may no longer take part (wiped disk, or evicted by a recovered cluster).
        "fenced" => "#37474f",
        _ => "#9e9e9e",
    }
}

/// Approximate width in pixels of `text` at the timeline's 11 px font.
fn text_width(text: &str) -> f64 {
    text.chars().count() as f64 * 6.5
}

/// Rows for labels that start at `x` and are `width` wide, in the order given: each label goes
/// on the first row where it does not overlap the previous label of that row (with a small
/// gap), so no two labels overlap however close their marks are.
pub fn label_rows(labels: &[(f64, f64)]) -> Vec<usize> {
    const GAP: f64 = 6.0;
    let mut row_ends: Vec<f64> = Vec::new();
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.sort_by(|a, b| labels[*a].0.total_cmp(&labels[*b].0));
    let mut rows = vec![0; labels.len()];
    for i in order {
        let (x, w) = labels[i];
        let row = match row_ends.iter().position(|end| *end + GAP <= x) {
            Some(r) => r,
            None => {
                row_ends.push(f64::NEG_INFINITY);
                row_ends.len() - 1
            }
        };
        row_ends[row] = x + w;
        rows[i] = row;
    }
    rows
}

fn ms(v: Option<u64>) -> String {
    v.map(|m| format!("{:.2} s", m as f64 / 1000.0)).unwrap_or_else(|| "not within the run".into())
}

/// The SVG timeline.
/// Rows of fault labels above the lanes before the timeline switches to tooltips.
const MAX_LABEL_ROWS: usize = 6;

pub fn timeline_svg(r: &Report) -> String {
    let mut nodes: Vec<String> = r.timeline.iter().map(|s| s.node.clone()).collect();
    nodes.sort();
    nodes.dedup();
    let total = r
        .duration_ms
        .max(r.timeline.iter().map(|s| s.t_ms).max().unwrap_or(0))
        .max(r.writes.iter().map(|w| w.end_ms).max().unwrap_or(0))
        .max(1);
    let (left, width, lane, gap, row_h) = (90.0, 1000.0, 26.0, 8.0, 15.0);
    let x = |t: u64| left + (t as f64 / total as f64) * (width - left - 10.0);
    // Fault labels above the lanes, on as many rows as they need not to overlap.
    let marked: Vec<&crate::report::StepReport> =
        r.steps.iter().filter(|st| st.fault.is_some()).collect();
    let texts: Vec<String> = marked
        .iter()
        .map(|st| format!("{} {} {}", st.index, st.action, st.nodes.join(",")))
        .collect();
    let spans: Vec<(f64, f64)> =
        marked.iter().zip(&texts).map(|(st, t)| (x(st.start_ms) + 2.0, text_width(t))).collect();
    let rows = label_rows(&spans);
    // A campaign marks hundreds of steps: past a few rows of labels, the lanes would be pushed
    // off the page, so each marker keeps its label as a tooltip and one line says so.
    let compact = rows.iter().any(|r| *r >= MAX_LABEL_ROWS);
    let label_rows_used = if compact { 1 } else { rows.iter().max().map_or(1, |m| m + 1) };
    let top = 22.0 + label_rows_used as f64 * row_h + 14.0;
    let lanes = nodes.len() + usize::from(!r.writes.is_empty());
    let height = top + lanes as f64 * (lane + gap) + 40.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    // Node lanes.
    for (i, node) in nodes.iter().enumerate() {
        let y = top + i as f64 * (lane + gap);
        let _ = write!(s, r#"<text x="4" y="{}" font-size="13">{}</text>"#, y + 17.0, esc(node));
        let samples: Vec<_> = r.timeline.iter().filter(|t| &t.node == node).collect();
        for (j, smp) in samples.iter().enumerate() {
            let end = samples.get(j + 1).map(|n| n.t_ms).unwrap_or(total);
            let (x0, x1) = (x(smp.t_ms), x(end));
            let _ = write!(
                s,
                r#"<rect x="{x0:.1}" y="{y}" width="{:.1}" height="{lane}" fill="{}"><title>{} {} term {} from {:.2}s</title></rect>"#,
                (x1 - x0).max(0.5),
                role_color(&smp.role),
                esc(node),
                esc(&smp.role),
                smp.term,
                smp.t_ms as f64 / 1000.0
            );
            if x1 - x0 > 34.0 && smp.role != "down" {
                let _ = write!(
                    s,
                    r#"<text x="{:.1}" y="{}" fill="white">{} t{}</text>"#,
                    x0 + 3.0,
                    y + 17.0,
                    esc(&smp.role),
                    smp.term
                );
            }
        }
    }
    // Writes lane: one tick per write, coloured by outcome.
    if !r.writes.is_empty() {
        let y = top + nodes.len() as f64 * (lane + gap);
        let _ = write!(s, r#"<text x="4" y="{}" font-size="13">writes</text>"#, y + 17.0);
        for w in &r.writes {
            let color = match w.outcome {
                WriteOutcome::Acked => "#43a047",
                WriteOutcome::Failed => "#e53935",
                WriteOutcome::Unknown => "#fdd835",
            };
            let _ = write!(
                s,
                r#"<rect x="{:.1}" y="{y}" width="1" height="{lane}" fill="{color}"/>"#,
                x(w.start_ms)
            );
        }
    }
    // Split brains: a red band over the overlap, across every lane, labelled above them.
    let bottom = top + lanes as f64 * (lane + gap);
    for sb in &r.split_brains {
        let (x0, x1) = (x(sb.start_ms), x(sb.end_ms));
        let _ = write!(
            s,
            r##"<rect x="{x0:.1}" y="{}" width="{:.1}" height="{}" fill="#e53935" fill-opacity="0.25" stroke="#c62828"><title>{}</title></rect><text x="{x0:.1}" y="{}" fill="#c62828" font-weight="bold">SPLIT BRAIN</text>"##,
            top - 12.0,
            (x1 - x0).max(2.0),
            bottom - top + 12.0,
            esc(&sb.line()),
            top - 3.0
        );
    }
    // Fault and recovery markers, labels on rows where they do not overlap (or, compact, in
    // tooltips).
    if compact {
        let _ = write!(
            s,
            r##"<text x="{left}" y="14" fill="#c62828">{} faults, recoveries and changes marked: hover a line for its step</text>"##,
            marked.len()
        );
    }
    for ((st, text), row) in marked.iter().zip(&texts).zip(&rows) {
        let xm = x(st.start_ms);
        let color =
            if st.action == "recover" || st.action == "join" { "#6a1b9a" } else { "#c62828" };
        if compact {
            let _ = write!(
                s,
                r#"<line x1="{xm:.1}" y1="{}" x2="{xm:.1}" y2="{bottom}" stroke="{color}" stroke-opacity="0.6"><title>{}</title></line>"#,
                top - 10.0,
                esc(text)
            );
            continue;
        }
        let ly = 14.0 + *row as f64 * row_h;
        let _ = write!(
            s,
            r#"<line x1="{xm:.1}" y1="{ly}" x2="{xm:.1}" y2="{bottom}" stroke="{color}" stroke-dasharray="3,2"/><text x="{:.1}" y="{ly}" fill="{color}">{}</text>"#,
            xm + 2.0,
            esc(text)
        );
    }
    // Time axis.
    let secs = total as f64 / 1000.0;
    let step = [0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0]
        .into_iter()
        .find(|s| secs / s <= 12.0)
        .unwrap_or(120.0);
    let mut t = 0.0;
    while t <= secs {
        let xt = x((t * 1000.0) as u64);
        let _ = write!(
            s,
            r##"<line x1="{xt:.1}" y1="{bottom}" x2="{xt:.1}" y2="{}" stroke="#555"/><text x="{:.1}" y="{}">{t}s</text>"##,
            bottom + 5.0,
            xt - 6.0,
            bottom + 18.0
        );
        t += step;
    }
    // Legend.
    let mut lx = left;
    for role in ["leader", "follower", "candidate", "learner", "fenced", "down"] {
        let _ = write!(
            s,
            r#"<rect x="{lx}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}">{role}</text>"#,
            bottom + 24.0,
            role_color(role),
            lx + 13.0,
            bottom + 33.0
        );
        lx += 80.0;
    }
    s.push_str("</svg>");
    s
}

/// The whole page.
pub fn render(r: &Report) -> String {
    let verdict = match r.outcome {
        Outcome::Passed => ("PASSED", "#2e7d32"),
        Outcome::Skipped => ("SKIPPED", "#757575"),
        _ => ("FAILED", "#c62828"),
    };
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!doctype html><html><head><meta charset="utf-8"><title>{name} — {v}</title><style>
body{{font-family:sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse;margin:8px 0 20px}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top;font-size:13px}}
th{{background:#f4f4f4}} .badge{{color:white;padding:2px 10px;border-radius:4px;background:{c}}}
pre{{margin:0;white-space:pre-wrap;font-size:12px}} .fail{{background:#ffebee}}
</style></head><body><h1>{name} <span class="badge">{v}</span></h1><p>{summary}</p>
<p>backend <b>{backend}</b> · seed <b>{seed}</b> (rerun with <code>--seed {seed}</code>) · started {started} · {dur:.1} s</p>"#,
        name = esc(&r.scenario),
        v = verdict.0,
        c = verdict.1,
        summary = esc(&r.summary),
        backend = esc(&r.backend),
        seed = r.seed,
        started = esc(&r.started_at),
        dur = r.duration_ms as f64 / 1000.0
    );
    if let Some(reason) = &r.reason {
        let _ = write!(h, "<p><b>{}</b></p>", esc(reason));
    }
    if !r.checks.is_empty() {
        h.push_str(
            "<h2>Checkers</h2><table><tr><th>checker</th><th>verdict</th><th>evidence</th></tr>",
        );
        for c in &r.checks {
            let _ = write!(
                h,
                "<tr class=\"{}\"><td>{}</td><td><b>{}</b></td><td><pre>{}</pre></td></tr>",
                if c.passed { "" } else { "fail" },
                esc(&c.name),
                if c.passed { "pass" } else { "FAIL" },
                esc(&c.evidence)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Timeline</h2>");
    h.push_str(&timeline_svg(r));
    h.push_str("<h2>Recovery times (RTO)</h2><table><tr><th>step</th><th>action</th><th>nodes</th><th>at</th><th>to a leader</th><th>write outage (for a recovery: to the first write)</th></tr>");
    for rec in &r.recoveries {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.2} s</td><td>{}</td><td>{}</td></tr>",
            rec.step,
            esc(&rec.action),
            esc(&rec.nodes.join(", ")),
            rec.at_ms as f64 / 1000.0,
            ms(rec.leader_after_ms),
            if r.writes.is_empty() { "no workload".into() } else { ms(rec.write_after_ms) }
        );
    }
    h.push_str("</table><h2>Split brain</h2>");
    if r.split_brains.is_empty() {
        h.push_str("<p>No interval with two leaders committing at once.</p>");
    } else {
        let allowed =
            if r.allow_split_brain { " (allowed by <code>allow_split_brain</code>)" } else { "" };
        let _ = write!(h, "<ul class=\"fail\">");
        for sb in &r.split_brains {
            let _ = write!(h, "<li><b>{}</b>{allowed}</li>", esc(&sb.line()));
        }
        h.push_str("</ul>");
    }
    h.push_str("<h2>Acknowledged writes (RPO)</h2>");
    match &r.verification {
        Some(v) => {
            let by: Vec<String> =
                v.stale_acked_by.iter().map(|(n, c)| format!("{} {c}", esc(n))).collect();
            let _ = write!(
                h,
                "<table><tr><th>attempted</th><th>acknowledged</th><th>present</th><th>lost</th><th>acknowledged by a stale cluster (not lost)</th><th>failed</th><th>unknown</th><th>unknown, landed</th></tr>\
                 <tr><td>{}</td><td>{}</td><td>{}</td><td><b>{}</b></td><td><b>{}</b>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
                v.attempted,
                v.acknowledged,
                v.present,
                if v.lost_before_recovery > 0 {
                    format!("{} ({} acknowledged before a recovery)", v.lost, v.lost_before_recovery)
                } else {
                    v.lost.to_string()
                },
                v.stale_acked,
                if by.is_empty() { String::new() } else { format!(" ({}; {} present)", by.join(", "), v.stale_acked_present) },
                v.failed,
                v.unknown,
                v.unknown_landed
            );
        }
        None => h.push_str("<p>No <code>verify</code> step ran.</p>"),
    }
    if let Some(c) = &r.register_check {
        let _ = write!(h, "<h2>Register reads</h2><p>{}</p>", esc(&c.line()));
        if !c.violations.is_empty() {
            h.push_str("<table class=\"fail\"><tr><th>key</th><th>read</th><th>via</th><th>returned</th><th>why</th></tr>");
            for v in c.violations.iter().take(50) {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{:.3}-{:.3} s</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&v.key),
                    v.read_start_ms as f64 / 1000.0,
                    v.read_end_ms as f64 / 1000.0,
                    esc(v.node.as_deref().unwrap_or("?")),
                    esc(&v.returned),
                    esc(&v.why)
                );
            }
            h.push_str("</table>");
        }
    }
    h.push_str("<h2>Steps</h2><table><tr><th>#</th><th>line</th><th>action</th><th>nodes</th><th>at</th><th>took</th><th>detail</th></tr>");
    for st in &r.steps {
        let _ = write!(
            h,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2} s</td><td>{:.2} s</td><td><pre>{}</pre></td></tr>",
            if st.status == StepStatus::Failed { "fail" } else { "" },
            st.index,
            st.line,
            esc(&st.action),
            esc(&st.nodes.join(", ")),
            st.start_ms as f64 / 1000.0,
            st.duration_ms as f64 / 1000.0,
            esc(&st.detail)
        );
    }
    h.push_str("</table></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_labels_never_overlap() {
        // (start x, width) -> row
        type Labels<'a> = &'a [(f64, f64)];
        let cases: &[(Labels, &[usize])] = &[
            // Far apart: one row.
            (&[(100.0, 60.0), (300.0, 60.0)], &[0, 0]),
            // Two close faults: different rows.
            (&[(100.0, 60.0), (104.0, 60.0)], &[0, 1]),
            // Back on the first row once it is free again.
            (&[(100.0, 60.0), (104.0, 60.0), (170.0, 60.0)], &[0, 1, 0]),
            // Four faults within a few pixels: four rows (the old three-row stagger overlapped).
            (&[(100.0, 80.0), (101.0, 80.0), (102.0, 80.0), (103.0, 80.0)], &[0, 1, 2, 3]),
            // Given out of order: laid out by position.
            (&[(300.0, 60.0), (100.0, 60.0), (302.0, 60.0)], &[0, 0, 1]),
        ];
        for (labels, want) in cases {
            let rows = label_rows(labels);
            assert_eq!(rows, *want, "{labels:?}");
            for i in 0..labels.len() {
                for j in i + 1..labels.len() {
                    let ((a, aw), (b, bw)) = (labels[i], labels[j]);
                    let overlap = a < b + bw && b < a + aw;
                    assert!(rows[i] != rows[j] || !overlap, "{labels:?}: {i} and {j} overlap");
                }
            }
        }
    }

    #[test]
    fn a_campaign_s_hundreds_of_markers_become_tooltips_above_lanes_that_stay_in_view() {
        use crate::report::{StepReport, StepStatus};
        let step = |i: usize| StepReport {
            index: i,
            line: i,
            action: "kill".into(),
            fault: Some(crate::model::FaultKind::Outage),
            status: StepStatus::Passed,
            start_ms: i as u64 * 1000,
            duration_ms: 10,
            nodes: vec!["node1".into()],
            detail: String::new(),
        };
        let height = |r: &Report| -> f64 {
            let svg = timeline_svg(r);
            let h = svg.split("height=\"").nth(1).unwrap().split('"').next().unwrap();
            h.parse().unwrap()
        };
        let mut few = Report::new("s", std::path::Path::new("s.toml"), "", "docker", 1);
        few.duration_ms = 600_000;
        few.steps = (1..=3).map(step).collect();
        let svg = timeline_svg(&few);
        assert!(svg.contains(">2 kill node1</text>"), "a few markers keep their labels");
        let mut many = few.clone();
        many.steps = (1..=300).map(step).collect();
        let svg = timeline_svg(&many);
        assert!(svg.contains("300 faults, recoveries and changes marked"), "{svg}");
        assert!(svg.contains("<title>250 kill node1</title>"));
        assert!(!svg.contains(">250 kill node1</text>"));
        assert!(height(&many) <= height(&few) + 1.0, "the lanes stay where they were");
    }
}
