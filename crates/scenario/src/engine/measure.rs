//! The background evidence of a run: the state sampler, the workload writers, and at the end
//! the recovery times, split brains and stale generations that go into the report.

use super::*;
use crate::model::FaultKind;

impl<B: Backend> Engine<B> {
    pub(super) fn start_sampler(&mut self) {
        if self.sampler.is_some() {
            return;
        }
        let (tx, rx) = watch::channel(false);
        let every = Duration::from_millis(50);
        let http = self
            .profile
            .client_builder()
            .timeout(every.max(Duration::from_millis(300)))
            .connect_timeout(Duration::from_millis(300))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client");
        let task = tokio::spawn(crate::measure::sample(
            self.endpoints.clone(),
            Target::new(
                std::sync::Arc::new(self.profile.target.clone()),
                http,
                self.backend.executor(),
            ),
            self.epoch,
            every,
            self.samples.clone(),
            self.detector.clone(),
            rx,
        ));
        self.sampler = Some((tx, task));
    }

    pub(super) async fn stop_writer(&mut self) {
        if let Some((tx, tasks)) = self.writer.take() {
            let _ = tx.send(true);
            for t in tasks {
                let _ = t.await;
            }
        }
    }

    /// Stops the background tasks and records their evidence.
    pub(super) async fn finish(&mut self, report: &mut Report) {
        self.stop_writer().await;
        if let Some((tx, task)) = self.sampler.take() {
            let _ = tx.send(true);
            let _ = task.await;
        }
        let samples = self.samples.lock().unwrap().clone();
        let writes = self.writes.lock().unwrap().clone();
        // (a hit node may be the new leader, a recovery: measured from its end)
        // (whether the hit node may be the new leader, whether it is a recovery)
        let kind = |s: &StepReport| match s.fault? {
            FaultKind::Outage => Some((false, false)),
            // The restarted node itself may lead again.
            FaultKind::Restart => Some((true, false)),
            // The recovered node is started afterwards: measure from the end.
            FaultKind::Recovery => Some((true, true)),
            FaultKind::Change => None,
        };
        let measured: Vec<&StepReport> =
            report.steps.iter().filter(|s| kind(s).is_some()).collect();
        for (i, s) in measured.iter().enumerate() {
            let (hit_may_lead, is_recovery) = kind(s).expect("filtered");
            let done = s.start_ms + s.duration_ms;
            let at = if is_recovery { done } else { s.start_ms };
            let m = crate::measure::Measured {
                at_ms: at,
                done_ms: done,
                until_ms: measured.get(i + 1).map(|n| n.start_ms),
                hit: &s.nodes,
                hit_may_lead,
                is_recovery,
            };
            let (leader, write) =
                crate::measure::recovery_times(&samples, &writes, &m, Role::Leader.as_str());
            report.recoveries.push(crate::measure::Recovery {
                step: s.index,
                action: s.action.clone(),
                nodes: s.nodes.clone(),
                at_ms: at,
                leader_after_ms: leader,
                write_after_ms: write.filter(|_| !writes.is_empty()),
            });
        }
        self.scan_logs(report).await;
        report.verification = self.verification.clone();
        let ops = self.register_ops.lock().unwrap().clone();
        if !ops.is_empty() {
            let recoveries: Vec<u64> = self
                .generations
                .iter()
                .filter_map(|g| match g {
                    GenerationEvent::Recovered { at_ms, .. } => Some(*at_ms),
                    _ => None,
                })
                .collect();
            let check = crate::measure::register::check(&ops, &recoveries);
            self.say(&check.line());
            for v in check.violations.iter().take(10) {
                self.say(&format!("  {}", v.line()));
            }
            if !check.passed() {
                let why = format!(
                    "{} register reads stale or impossible (first: {} {} at {} ms: {})",
                    check.violations.len(),
                    check.violations[0].key,
                    check.violations[0].returned,
                    check.violations[0].read_start_ms,
                    check.violations[0].why
                );
                let why = match (&report.outcome, report.reason.take()) {
                    (crate::report::Outcome::Failed, Some(earlier)) => format!("{earlier}; {why}"),
                    _ => why,
                };
                report.fail(why);
            }
            report.register_check = Some(check);
            report.registers = ops;
        }
        report.timeline = samples;
        report.writes = writes;
        let detector = self.detector.lock().unwrap().clone();
        report.split_brains = detector.finish();
        report.allow_split_brain = self.scenario.allow_split_brain;
        for sb in &report.split_brains {
            let allowed =
                if self.scenario.allow_split_brain { " (allowed: allow_split_brain)" } else { "" };
            self.say(&format!("{}{allowed}", sb.line()));
        }
        if let Some(why) = crate::measure::split_brain::failure(
            &report.split_brains,
            self.scenario.allow_split_brain,
        ) {
            let why = match (&report.outcome, report.reason.take()) {
                (crate::report::Outcome::Failed, Some(earlier)) => format!("{earlier}; {why}"),
                _ => why,
            };
            report.fail(why);
        }
    }

    /// Keeps every node's whole log and fails the run on a line matching one of the profile's
    /// `crash_patterns` (a node that panicked, even if it was restarted since).
    async fn scan_logs(&mut self, report: &mut Report) {
        if self.profile.crash_patterns.is_empty() {
            return;
        }
        for n in self.profile.nodes.clone() {
            let log = self.redact(&self.backend.logs(&n.name, 1_000_000).await);
            for line in log.lines() {
                if self.profile.crash_patterns.iter().any(|p| line.contains(p.as_str())) {
                    report.crash_lines.push(format!("{}: {}", n.name, line.trim_end()));
                }
            }
            report.node_logs.insert(n.name.clone(), log);
        }
        if let Some(first) = report.crash_lines.first() {
            self.say(&format!("CRASH {} log lines: {first}", report.crash_lines.len()));
            let why = format!(
                "{} log lines match the profile's crash_patterns (first: {first})",
                report.crash_lines.len()
            );
            let why = match (&report.outcome, report.reason.take()) {
                (crate::report::Outcome::Failed, Some(earlier)) => format!("{earlier}; {why}"),
                _ => why,
            };
            report.fail(why);
        }
    }

    /// Which nodes belonged to a stale generation when, from the steps so far.
    pub(super) fn stale_spans(&self) -> StaleSpans {
        let nodes: Vec<String> = self.profile.nodes.iter().map(|n| n.name.clone()).collect();
        StaleSpans::from_events(&nodes, &self.generations)
    }
}
