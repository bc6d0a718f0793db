//! The self-contained HTML report of one run: steps, RTO/RPO figures and an SVG timeline of
//! every node's role and term with the faults marked. No scripts, no network.

use std::fmt::Write as _;

use crate::report::{Outcome, Report, StepStatus};
use crate::workload::WriteOutcome;

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
        _ => "#9e9e9e",
    }
}

fn is_marked(action: &str) -> bool {
    matches!(
        action,
        "stop"
            | "kill"
            | "pause"
            | "unpause"
            | "isolate"
            | "heal"
            | "restart"
            | "start"
            | "recover"
            | "wipe"
            | "join"
    )
}

fn ms(v: Option<u64>) -> String {
    v.map(|m| format!("{:.2} s", m as f64 / 1000.0)).unwrap_or_else(|| "not within the run".into())
}

/// The SVG timeline.
pub fn timeline_svg(r: &Report) -> String {
    let mut nodes: Vec<String> = r.timeline.iter().map(|s| s.node.clone()).collect();
    nodes.sort();
    nodes.dedup();
    let total = r
        .duration_ms
        .max(r.timeline.iter().map(|s| s.t_ms).max().unwrap_or(0))
        .max(r.writes.iter().map(|w| w.end_ms).max().unwrap_or(0))
        .max(1);
    let (left, width, lane, gap, top) = (90.0, 1000.0, 26.0, 8.0, 64.0);
    let x = |t: u64| left + (t as f64 / total as f64) * (width - left - 10.0);
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
    // Fault and recovery markers, labels staggered on three rows.
    let bottom = top + lanes as f64 * (lane + gap);
    for (k, st) in r.steps.iter().filter(|st| is_marked(&st.action)).enumerate() {
        let xm = x(st.start_ms);
        let color =
            if st.action == "recover" || st.action == "join" { "#6a1b9a" } else { "#c62828" };
        let ly = 14.0 + (k % 3) as f64 * 15.0;
        let _ = write!(
            s,
            r#"<line x1="{xm:.1}" y1="{ly}" x2="{xm:.1}" y2="{bottom}" stroke="{color}" stroke-dasharray="3,2"/><text x="{:.1}" y="{ly}" fill="{color}">{} {} {}</text>"#,
            xm + 2.0,
            st.index,
            esc(&st.action),
            esc(&st.nodes.join(","))
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
    for role in ["leader", "follower", "candidate", "learner", "down"] {
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
    h.push_str("</table><h2>Acknowledged writes (RPO)</h2>");
    match &r.verification {
        Some(v) => {
            let _ = write!(
                h,
                "<table><tr><th>attempted</th><th>acknowledged</th><th>present</th><th>lost</th><th>failed</th><th>unknown</th><th>unknown, landed</th></tr>\
                 <tr><td>{}</td><td>{}</td><td>{}</td><td><b>{}</b></td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
                v.attempted, v.acknowledged, v.present, v.lost, v.failed, v.unknown, v.unknown_landed
            );
        }
        None => h.push_str("<p>No <code>verify</code> step ran.</p>"),
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
