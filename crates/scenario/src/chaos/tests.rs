use std::path::{Path, PathBuf};
use std::time::Duration;

use super::generate::{self, Aim, Schedule};
use super::*;
use crate::parse;

fn profile(name: &str) -> Profile {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    Profile::load(&Profile::path_for(&root, name)).unwrap()
}

fn spec(profile_name: &str, seed: u64, faults: &[Fault], minutes: u64) -> Spec {
    Spec::new(
        &profile(profile_name),
        Duration::from_secs(60 * minutes),
        Duration::from_secs(10),
        seed,
        faults.to_vec(),
        8.0,
    )
    .unwrap()
}

fn faults_for(profile_name: &str) -> Vec<Fault> {
    // etcd's join cannot replace a live member.
    Fault::ALL.into_iter().filter(|f| profile_name != "etcd-3" || *f != Fault::WipeRejoin).collect()
}

#[test]
fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
    let a = Schedule::generate(&spec("xp-3", 7, &Fault::ALL, 5));
    let b = Schedule::generate(&spec("xp-3", 7, &Fault::ALL, 5));
    let c = Schedule::generate(&spec("xp-3", 8, &Fault::ALL, 5));
    assert_eq!(a, b);
    assert_eq!(a.render(), b.render());
    assert_ne!(a.episodes, c.episodes);
}

#[test]
fn every_schedule_is_a_valid_scenario_of_its_profile() {
    for name in ["xp-3", "xp-5", "etcd-3"] {
        let p = profile(name);
        for seed in 1..40 {
            let s = Schedule::generate(&spec(name, seed, &faults_for(name), 3));
            assert!(!s.episodes.is_empty(), "{name} seed {seed}: no episode");
            let (text, marks) = s.render();
            let parsed = parse::parse(&PathBuf::from("repro.toml"), &text, &p)
                .unwrap_or_else(|e| panic!("{name} seed {seed}: {e}\n{text}"));
            assert_eq!(parsed.steps.len(), marks.verify, "{name} seed {seed}");
            assert_eq!(parsed.steps[marks.convergence - 1].step.action(), "expect");
            assert_eq!(parsed.steps[marks.verify - 1].step.action(), "verify");
            assert_eq!(marks.episode_steps.len(), s.episodes.len());
            // Shrinking keeps it valid.
            let fewer = s.without(&[1]);
            parse::parse(&PathBuf::from("repro.toml"), &fewer.render().0, &p).unwrap();
        }
    }
}

/// Replays a schedule on paper: which nodes each moment's faults hold.
#[test]
fn safe_faults_never_hold_a_majority_and_everything_heals_in_time() {
    for (name, seed) in (1..60).flat_map(|s| [("xp-3", s), ("xp-5", s)]) {
        let sp = spec(name, seed, &Fault::SAFE, 4);
        let s = Schedule::generate(&sp);
        assert!(!s.lossy());
        for e in &s.episodes {
            assert!(e.at + e.hold <= sp.duration, "{name} {seed}: {} heals late", e.describe());
            let held = match &e.aim {
                Aim::Nodes(n) => n.len(),
                Aim::LeaderAndFollower => 2,
                _ => 1,
            };
            // Everything in force while `e` starts.
            let overlapping: Vec<_> = s
                .episodes
                .iter()
                .filter(|o| o.id != e.id && o.at <= e.at && o.at + o.hold > e.at)
                .collect();
            if e.exclusive() {
                assert!(overlapping.is_empty(), "{name} {seed}: {} overlaps", e.describe());
            }
            let total: usize = held
                + overlapping
                    .iter()
                    .map(|o| match &o.aim {
                        Aim::Nodes(n) => n.len(),
                        _ => 2,
                    })
                    .sum::<usize>();
            assert!(total <= sp.minority(), "{name} {seed}: {} holds a majority", e.describe());
            assert!(overlapping.iter().all(|o| !o.exclusive()));
        }
    }
}

#[test]
fn a_compacted_schedule_keeps_each_group_s_timing_and_its_invariants() {
    for (name, seed) in (1..40).flat_map(|s| [("xp-3", s), ("xp-5", s)]) {
        let s = Schedule::generate(&spec(name, seed, &Fault::ALL, 4));
        let ids: Vec<usize> = s.episodes.iter().map(|e| e.id).step_by(2).collect();
        let c = s.without(&ids).compact();
        assert!(c.spec.duration <= s.spec.duration);
        let (orig, comp) = (s.without(&ids), &c);
        // Pairwise: overlapping before iff overlapping after, same distance when they overlap.
        for a in &orig.episodes {
            for b in &orig.episodes {
                let overlap = |x: &generate::Episode, y: &generate::Episode| {
                    x.at <= y.at && y.at < x.at + x.hold
                };
                let find = |id| comp.episodes.iter().find(|e| e.id == id).unwrap();
                let (ca, cb) = (find(a.id), find(b.id));
                assert_eq!(overlap(a, b), overlap(ca, cb), "{name} {seed}: {} / {}", a.id, b.id);
                if overlap(a, b) {
                    assert_eq!(b.at - a.at, cb.at - ca.at);
                }
            }
        }
        for e in &comp.episodes {
            assert!(e.at + e.hold <= comp.spec.duration, "{name} {seed}");
        }
        parse::parse(&PathBuf::from("r.toml"), &c.render().0, &profile(name)).unwrap();
    }
}

#[test]
fn quorum_losses_kill_a_majority_and_are_lossy_only_without_a_majority_of_disks() {
    let mut seen = (0, 0);
    for (name, seed) in (1..80).flat_map(|s| [("xp-3", s), ("xp-5", s), ("etcd-3", s)]) {
        let sp = spec(name, seed, &[Fault::QuorumLoss, Fault::Kill], 3);
        for e in Schedule::generate(&sp).episodes.iter().filter(|e| e.fault == Fault::QuorumLoss) {
            let Aim::Nodes(killed) = &e.aim else { panic!("{}", e.describe()) };
            assert_eq!(killed.len(), sp.majority());
            assert!(!e.destroyed.is_empty());
            assert!(e.destroyed.iter().all(|d| killed.contains(d)));
            let candidates = sp.nodes.len() - e.destroyed.len();
            assert_eq!(e.lossy(sp.nodes.len()), candidates < sp.majority());
            if !sp.offline_inspect {
                // Without a way to rank a stopped node, every killed disk is lost.
                assert_eq!(&e.destroyed, killed);
            }
            if e.lossy(sp.nodes.len()) {
                seen.0 += 1;
            } else {
                seen.1 += 1;
            }
        }
    }
    assert!(seen.0 > 0 && seen.1 > 0, "both kinds of quorum loss are generated: {seen:?}");
}

#[test]
fn the_rate_is_about_what_was_asked() {
    let sp = Spec { rate_per_min: 6.0, ..spec("xp-5", 3, &[Fault::Kill, Fault::Pause], 20) };
    let n = Schedule::generate(&sp).episodes.len() as f64;
    // 120 asked; waits for a free slot make it fewer, never more.
    assert!((60.0..=130.0).contains(&n), "{n} episodes in 20 minutes at 6/min");
}

#[test]
fn a_campaign_that_cannot_run_is_refused_before_anything_starts() {
    let xp = profile("xp-3");
    let etcd = profile("etcd-3");
    let secs = Duration::from_secs;
    let cases: Vec<(&Profile, Duration, f64, Vec<Fault>, &str)> = vec![
        (&xp, secs(5), 6.0, vec![Fault::Kill], "--duration 5s"),
        (&xp, secs(25 * 3600), 6.0, vec![Fault::Kill], "--duration 1day 1h"),
        (&xp, secs(60), 0.0, vec![Fault::Kill], "--rate 0"),
        (&xp, secs(60), 61.0, vec![Fault::Kill], "--rate 61"),
        (&xp, secs(60), f64::NAN, vec![Fault::Kill], "--rate NaN"),
        (&etcd, secs(60), 6.0, vec![Fault::WipeRejoin], "--faults wipe-rejoin: the etcd-3"),
    ];
    for (p, d, rate, faults, want) in cases {
        let err = Spec::new(p, d, secs(10), 1, faults, rate).unwrap_err();
        assert!(err.0.starts_with(want), "{err}");
    }
    let mut small = xp.clone();
    small.nodes.truncate(2);
    let err = Spec::new(&small, secs(60), secs(10), 1, vec![Fault::Kill], 6.0).unwrap_err();
    assert!(err.0.contains("has 2 nodes"), "{err}");
    let mut mute = xp.clone();
    mute.crash_patterns.clear();
    let err = Spec::new(&mute, secs(60), secs(10), 1, vec![Fault::Kill], 6.0).unwrap_err();
    assert!(err.0.contains("no crash_patterns"), "{err}");
}

#[test]
fn fault_lists_are_parsed_strictly() {
    assert_eq!(
        Fault::parse_list("kill, quorum-loss").unwrap(),
        vec![Fault::Kill, Fault::QuorumLoss]
    );
    for (bad, want) in [
        ("kill,explode", "unknown fault \"explode\""),
        ("kill,kill", "\"kill\" is listed twice"),
        ("", "name at least one"),
        (" , ", "name at least one"),
    ] {
        let err = Fault::parse_list(bad).unwrap_err();
        assert!(err.0.contains(want), "{bad:?}: {err}");
    }
}

mod checkers {
    use super::*;
    use crate::chaos::check;
    use crate::report::{Report, StepReport, StepStatus};

    /// A report of a rendered schedule in which every step passed, then `edit` applied.
    fn report_of(edit: impl FnOnce(&mut Report)) -> (Report, Schedule) {
        let s = Schedule::generate(&spec("xp-3", 5, &[Fault::Kill], 1));
        let (_, marks) = s.render();
        let mut r = Report::new("chaos", Path::new("repro.toml"), "", "docker", 5);
        for i in 1..=marks.verify {
            r.steps.push(StepReport {
                index: i,
                line: i,
                action: if i == marks.verify { "verify".into() } else { "expect".into() },
                fault: None,
                status: StepStatus::Passed,
                start_ms: i as u64 * 1000,
                duration_ms: 500,
                nodes: vec![],
                detail: format!("step {i}"),
            });
        }
        r.verification = Some(Default::default());
        r.register_check = Some(crate::measure::register::RegisterCheck {
            reads_checked: 10,
            ..Default::default()
        });
        r.node_logs.insert("node1".into(), "started\n".into());
        edit(&mut r);
        (r, s)
    }

    fn verdicts(r: &Report, s: &Schedule) -> Vec<(String, bool)> {
        let (_, marks) = s.render();
        check::run(r, s, &marks).into_iter().map(|c| (c.name, c.passed)).collect()
    }

    #[test]
    fn each_checker_fails_on_its_own_evidence() {
        let all = [
            check::FAULTS,
            check::LOST_WRITES,
            check::SPLIT_BRAIN,
            check::READS,
            check::CONVERGENCE,
            check::CRASH,
        ];
        let (r, s) = report_of(|_| {});
        assert!(verdicts(&r, &s).iter().all(|(_, p)| *p), "{:?}", verdicts(&r, &s));
        let (_, marks) = s.render();
        type Edit = Box<dyn Fn(&mut Report)>;
        let (conv, ver) = (marks.convergence, marks.verify);
        let cases: Vec<(&str, Edit)> = vec![
            (check::FAULTS, Box::new(|r: &mut Report| r.steps[3].status = StepStatus::Failed)),
            (
                check::LOST_WRITES,
                Box::new(move |r: &mut Report| r.steps[ver - 1].status = StepStatus::Failed),
            ),
            (
                check::SPLIT_BRAIN,
                Box::new(|r: &mut Report| {
                    r.split_brains.push(crate::measure::split_brain::SplitBrain {
                        start_ms: 1,
                        end_ms: 2,
                        leaders: vec![],
                    })
                }),
            ),
            (
                check::READS,
                Box::new(|r: &mut Report| {
                    r.register_check.as_mut().unwrap().violations.push(
                        crate::measure::register::Violation {
                            key: "k".into(),
                            read_start_ms: 1,
                            read_end_ms: 2,
                            node: None,
                            returned: "r1".into(),
                            why: "stale".into(),
                        },
                    )
                }),
            ),
            (
                check::CONVERGENCE,
                Box::new(move |r: &mut Report| r.steps[conv - 1].status = StepStatus::Failed),
            ),
            (
                check::CRASH,
                Box::new(|r: &mut Report| r.crash_lines.push("node1: panicked at x".into())),
            ),
        ];
        for (name, edit) in cases {
            let (r, s) = report_of(edit);
            for (checker, passed) in verdicts(&r, &s) {
                // A failed convergence step is also a failed step, but after the faults.
                let expect_fail = checker == name;
                assert_eq!(passed, !expect_fail, "editing for {name}: {checker}");
            }
        }
        // A run that stopped early: what it did not reach fails, saying so.
        let (r, s) = report_of(|r| {
            r.steps.truncate(4);
            r.steps[3].status = StepStatus::Failed;
            r.verification = None;
        });
        let got = check::run(&r, &s, &s.render().1);
        for c in &got {
            if [check::LOST_WRITES, check::CONVERGENCE].contains(&c.name.as_str()) {
                assert!(!c.passed && c.evidence.starts_with("not reached"), "{c:?}");
            }
        }
        assert_eq!(got.len(), all.len());
    }
}

mod shrinking {
    use super::*;
    use crate::chaos::shrink::ddmin;

    /// Runs `ddmin` with a failure that needs the episodes `culprits`, counting the trials.
    fn shrink(
        s: &Schedule,
        culprits: &[usize],
        failed_step: Option<usize>,
        budget: usize,
    ) -> (Vec<usize>, usize) {
        let (_, marks) = s.render();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let got = rt
            .block_on(ddmin(s, &marks, failed_step, budget, async |t: &Schedule, _what: String| {
                let ids: Vec<usize> = t.episodes.iter().map(|e| e.id).collect();
                Ok::<bool, ()>(culprits.iter().all(|c| ids.contains(c)))
            }))
            .unwrap();
        (got.kept.episodes.iter().map(|e| e.id).collect(), got.tries)
    }

    #[test]
    fn the_smallest_failing_schedule_is_found_within_the_budget() {
        let s = Schedule::generate(&spec("xp-5", 9, &Fault::SAFE, 10));
        let n = s.episodes.len();
        assert!(n >= 30, "{n}");
        // One culprit, then two far apart: all found, in far fewer runs than one per episode.
        for culprits in [vec![7], vec![3, n - 2]] {
            let (kept, tries) = shrink(&s, &culprits, None, 200);
            assert_eq!(kept, culprits);
            assert!(tries < n, "{tries} trials for {n} episodes");
        }
        // The budget is a hard stop; what is kept still holds the culprit.
        let (kept, tries) = shrink(&s, &[7], None, 3);
        assert_eq!(tries, 3);
        assert!(kept.contains(&7) && kept.len() < n);
        // A failure at a step: the episodes after it go in the first trial.
        let (_, marks) = s.render();
        let step = marks.episode_steps[10];
        let (kept, _) = shrink(&s, &[7], Some(step), 1);
        assert_eq!(kept.len(), 11, "episodes 1 to 11 are left after the first cut");
        // A failure without any fault: everything goes.
        let (kept, _) = shrink(&s, &[], None, 200);
        assert!(kept.is_empty());
    }
}
