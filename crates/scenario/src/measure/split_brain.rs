//! Split-brain detection over the role sampler's poll rounds.
//!
//! Two nodes both saying "leader" is not yet a split brain: a leader cut off from its quorum
//! keeps saying so (it has not heard of a higher term) while it can no longer commit anything.
//! A split brain is two leaders that both *commit*: an overlap during which two or more nodes
//! report the leader role in every poll round and at least two of them advance their applied
//! index. The detector is fed every poll round (not only role changes) so it sees each
//! leader's applied index move.
//!
//! A leader that stopped answering before the overlap opened (frozen by `pause`, say) and wakes
//! still believing it leads first applies what it had in its log before the freeze
//! (acknowledgements that waited in its socket commit it): that catch-up is not a second
//! cluster committing (a CI run on swarm saw exactly that, `+2` against `+2`). So its progress
//! counts from its last log index before the freeze (the state's `log_index`) when the profile
//! names one, or else from its first answer inside the overlap. A leader that answers when the
//! overlap opens counts from its applied index then.

use std::collections::BTreeMap;

use serde::Serialize;

/// What one node answered in one poll round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// It answered: whether it leads, its term, applied index and last log index (`None` when
    /// the profile names no such index or the answer lacks it).
    Answered { leader: bool, term: u64, applied: Option<u64>, log: Option<u64> },
    /// It is stopped, or refused the connection: certainly not leading.
    Down,
    /// It did not answer in time (loaded, paused, partitioned from the runner): what it last
    /// said still stands for this round.
    NoAnswer,
}

/// One leader of a split brain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SplitLeader {
    pub node: String,
    /// The term it led in (the last one it reported as leader during the overlap).
    pub term: u64,
    /// Its applied index when it was first seen leading during the overlap, and last.
    pub applied_from: u64,
    pub applied_to: u64,
}

impl SplitLeader {
    /// How far its applied index advanced while it led during the overlap.
    pub fn advanced(&self) -> u64 {
        self.applied_to.saturating_sub(self.applied_from)
    }
}

/// An interval with two or more committing leaders.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SplitBrain {
    /// The first poll round that saw two leaders (ms since the run started).
    pub start_ms: u64,
    /// The first poll round that no longer did (or the last round of the run).
    pub end_ms: u64,
    /// Every node that reported the leader role during the overlap, by name.
    pub leaders: Vec<SplitLeader>,
}

impl SplitBrain {
    /// The console line: `SPLIT BRAIN 4.21s–9.80s: node1 (term 1, +312 applied) and node3 (term 3, +298 applied)`.
    pub fn line(&self) -> String {
        let parts: Vec<String> = self
            .leaders
            .iter()
            .map(|l| format!("{} (term {}, +{} applied)", l.node, l.term, l.advanced()))
            .collect();
        let joined = match parts.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
            _ => parts.join(""),
        };
        format!(
            "SPLIT BRAIN {:.2}s–{:.2}s: {joined}",
            self.start_ms as f64 / 1000.0,
            self.end_ms as f64 / 1000.0
        )
    }
}

/// Why the run fails because of `brains` (`None` when there were none, or the scenario allows
/// them with `allow_split_brain = true`: they are still reported).
pub fn failure(brains: &[SplitBrain], allowed: bool) -> Option<String> {
    if brains.is_empty() || allowed {
        return None;
    }
    let lines: Vec<String> = brains.iter().map(SplitBrain::line).collect();
    Some(format!("{} (set allow_split_brain = true to accept it)", lines.join("; ")))
}

/// A node's standing as the detector sees it.
#[derive(Clone, Debug)]
struct Standing {
    leader: bool,
    term: u64,
    applied: Option<u64>,
    log: Option<u64>,
}

/// One leader during an overlap.
#[derive(Clone, Debug)]
struct Led {
    /// The last term it reported as leader.
    term: u64,
    /// Where its progress counts from (see the module's doc), and from which of the overlap's
    /// rounds on.
    from: u64,
    from_round: u64,
    /// Whether `from` still waits for its first answer inside the overlap (carried over from
    /// before it, with no log index to count from).
    pending: bool,
    /// Its applied index in each of the overlap's rounds in which it stood as leader.
    applied: BTreeMap<u64, u64>,
}

impl Led {
    fn to(&self) -> u64 {
        self.applied.values().next_back().copied().unwrap_or(self.from)
    }

    /// How far it advanced over the rounds `first..=last`, in all of which it led.
    fn advanced(&self, first: u64, last: u64) -> u64 {
        let base = match first <= self.from_round {
            true => self.from,
            false => self.applied[&first],
        };
        self.applied[&last].saturating_sub(base)
    }
}

/// An interval of poll rounds in which two or more nodes stood as leader.
#[derive(Clone, Debug)]
struct Overlap {
    start_ms: u64,
    rounds: u64,
    leaders: BTreeMap<String, Led>,
}

impl Overlap {
    /// Whether two of its leaders both advanced while both led: over some run of consecutive
    /// rounds in which both stood as leader, each applied more. Two leaders one after the
    /// other (a handover while a third, frozen, still stood as leader) are not one.
    fn split(&self) -> bool {
        let leaders: Vec<&Led> = self.leaders.values().collect();
        for (i, a) in leaders.iter().enumerate() {
            for b in &leaders[i + 1..] {
                let both: Vec<u64> =
                    a.applied.keys().filter(|r| b.applied.contains_key(r)).copied().collect();
                let mut start = 0;
                for k in 0..both.len() {
                    let run_ends = k + 1 == both.len() || both[k + 1] != both[k] + 1;
                    if !run_ends {
                        continue;
                    }
                    let (first, last) = (both[start], both[k]);
                    if a.advanced(first, last) > 0 && b.advanced(first, last) > 0 {
                        return true;
                    }
                    start = k + 1;
                }
            }
        }
        false
    }
}

/// Fed one poll round at a time; [`Detector::finish`] returns the split brains seen.
#[derive(Clone, Debug)]
pub struct Detector {
    standing: BTreeMap<String, Standing>,
    /// The overlap under way.
    open: Option<Overlap>,
    last_round_ms: u64,
    found: Vec<SplitBrain>,
}

impl Default for Detector {
    fn default() -> Detector {
        Detector::new()
    }
}

impl Detector {
    pub fn new() -> Detector {
        Detector { standing: BTreeMap::new(), open: None, last_round_ms: 0, found: Vec::new() }
    }

    /// One poll round at `t_ms`: every node's answer.
    pub fn observe(&mut self, t_ms: u64, round: &[(String, Observation)]) {
        self.last_round_ms = t_ms;
        let mut answered = Vec::new();
        for (node, obs) in round {
            match obs {
                Observation::Answered { leader, term, applied, log } => {
                    answered.push(node);
                    let s = Standing { leader: *leader, term: *term, applied: *applied, log: *log };
                    self.standing.insert(node.clone(), s);
                }
                Observation::Down => {
                    self.standing.remove(node);
                }
                Observation::NoAnswer => {}
            }
        }
        let leaders: Vec<(&String, &Standing)> =
            self.standing.iter().filter(|(_, s)| s.leader).collect();
        if leaders.len() < 2 {
            self.close(t_ms);
            return;
        }
        let overlap = self.open.get_or_insert_with(|| Overlap {
            start_ms: t_ms,
            rounds: 0,
            leaders: BTreeMap::new(),
        });
        let r = overlap.rounds;
        overlap.rounds += 1;
        for (node, s) in leaders {
            let Some(applied) = s.applied else { continue };
            let fresh = answered.contains(&node);
            let (from, pending) = match (fresh, s.log) {
                (true, _) => (applied, false),
                // Carried over: what was in its log then is not new when it applies it.
                (false, Some(log)) => (applied.max(log), false),
                (false, None) => (applied, true),
            };
            let led = overlap.leaders.entry(node.clone()).or_insert(Led {
                term: s.term,
                from,
                from_round: r,
                pending,
                applied: BTreeMap::new(),
            });
            if fresh && led.pending {
                led.from = applied;
                led.from_round = r;
                led.pending = false;
            }
            led.term = s.term;
            led.applied.insert(r, applied);
        }
    }

    /// Ends the overlap under way (if any) at `t_ms`, keeping it when it was a split brain.
    fn close(&mut self, t_ms: u64) {
        let Some(overlap) = self.open.take() else { return };
        if !overlap.split() {
            return;
        }
        let leaders: Vec<SplitLeader> = overlap
            .leaders
            .into_iter()
            .map(|(node, led)| SplitLeader {
                term: led.term,
                applied_from: led.from,
                applied_to: led.to(),
                node,
            })
            .collect();
        self.found.push(SplitBrain { start_ms: overlap.start_ms, end_ms: t_ms, leaders });
    }

    /// The split brains seen; an overlap still under way ends at the last round.
    pub fn finish(mut self) -> Vec<SplitBrain> {
        self.close(self.last_round_ms);
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A round written as `"node1=L5 node2=F5 node3=-"`: L leader, F follower, C candidate with
    /// the applied index after it (the last log index after a colon, `L5:7`; the term after a
    /// slash, `L5/3`), `-` down, `?` no answer.
    fn round(spec: &str) -> Vec<(String, Observation)> {
        spec.split_whitespace()
            .map(|w| {
                let (node, s) = w.split_once('=').unwrap();
                let obs = match s {
                    "-" => Observation::Down,
                    "?" => Observation::NoAnswer,
                    s => {
                        let role = match &s[..1] {
                            "L" => "leader",
                            "F" => "follower",
                            _ => "candidate",
                        };
                        let (indexes, term) = s[1..].split_once('/').unwrap_or((&s[1..], "1"));
                        let (applied, log) = indexes.split_once(':').unwrap_or((indexes, ""));
                        Observation::Answered {
                            leader: role == "leader",
                            term: term.parse().unwrap(),
                            applied: applied.parse().ok(),
                            log: log.parse().ok(),
                        }
                    }
                };
                (node.to_owned(), obs)
            })
            .collect()
    }

    /// Feeds rounds 100 ms apart and renders what was found, one line per split brain.
    fn check(rounds: &[&str], want: &[&str]) {
        let mut d = Detector::new();
        for (i, r) in rounds.iter().enumerate() {
            d.observe(i as u64 * 100, &round(r));
        }
        let got: Vec<String> = d.finish().iter().map(SplitBrain::line).collect();
        assert_eq!(got, want, "rounds: {rounds:#?}");
    }

    #[test]
    fn two_committing_leaders_are_a_split_brain_one_deposed_leader_is_not() {
        let cases: &[(&[&str], &[&str])] = &[
            // One leader throughout: nothing.
            (&["n1=L1 n2=F1 n3=F1", "n1=L5 n2=F5 n3=F5"], &[]),
            // A deposed leader still says leader but is stuck at 10 while n3 commits: not one.
            (
                &["n1=L10/1 n2=F10 n3=F10", "n1=L10/1 n3=L11/2", "n1=L10/1 n3=L40/2", "n1=F40/2 n3=L41/2"],
                &[],
            ),
            // Both commit while both lead: one split brain, from the first round that saw two
            // leaders to the first that did not.
            (
                &[
                    "n1=L10/1 n2=F10 n3=F10",
                    "n1=L10/1 n2=F10 n3=L10/3",
                    "n1=L20/1 n2=F20 n3=L15/3",
                    "n1=L30/1 n2=F30 n3=L22/3",
                    "n1=- n2=F30 n3=L23/3",
                ],
                &["SPLIT BRAIN 0.10s–0.40s: n1 (term 1, +20 applied) and n3 (term 3, +12 applied)"],
            ),
            // A leader that does not answer for a round still counts as leading; the overlap
            // runs to the end of the run.
            (
                &["n1=L1/1 n2=L1/2", "n1=? n2=L3/2", "n1=L4/1 n2=?"],
                &["SPLIT BRAIN 0.00s–0.20s: n1 (term 1, +3 applied) and n2 (term 2, +2 applied)"],
            ),
            // Three leaders, two of them committing: all three are listed.
            (
                &["a=L1 b=L1/2 c=L1/3", "a=L1 b=L2/2 c=L9/3", "a=F9/3 b=F9/3 c=L9/3"],
                &["SPLIT BRAIN 0.00s–0.20s: a (term 1, +0 applied), b (term 2, +1 applied) and c (term 3, +8 applied)"],
            ),
            // Two separate overlaps are two split brains; a round with one leader splits them.
            (
                &["a=L1 b=L1/2", "a=L2 b=L2/2", "a=L2 b=-", "a=L2 b=L2/2", "a=L3 b=L5/2", "a=L3 b=F5"],
                &[
                    "SPLIT BRAIN 0.00s–0.20s: a (term 1, +1 applied) and b (term 2, +1 applied)",
                    "SPLIT BRAIN 0.30s–0.50s: a (term 1, +1 applied) and b (term 2, +3 applied)",
                ],
            ),
            // A leader frozen before the overlap opened (no answer), with entries 11 and 12 in
            // its log awaiting acknowledgements, wakes believing it leads and applies them
            // (10 to 12), then follows: not a second cluster committing (a CI run on swarm
            // failed on it), whether its first answer comes before the catch-up or after.
            (
                &[
                    "n1=L10:12/11 n2=F10/11 n3=F10/11",
                    "n1=? n2=F10/11 n3=C10/15",
                    "n1=? n2=F12/15 n3=L12/15",
                    "n1=L12/11 n2=F14/15 n3=L14/15",
                    "n1=F14/15 n2=F14/15 n3=L15/15",
                ],
                &[],
            ),
            (
                &[
                    "n1=L10:12/11 n2=F10/11 n3=F10/11",
                    "n1=? n2=F10/11 n3=L12/15",
                    "n1=L10/11 n2=F13/15 n3=L13/15",
                    "n1=L12/11 n2=F14/15 n3=L14/15",
                    "n1=F14/15 n2=F14/15 n3=L15/15",
                ],
                &[],
            ),
            // The same wake-up, but it applied past what its log held before the freeze: a
            // split brain, counted from that log index, even if it answers once only.
            (
                &[
                    "n1=L10:10/11 n2=F10/11 n3=F10/11",
                    "n1=? n2=F10/11 n3=L11/15",
                    "n1=? n2=F13/15 n3=L13/15",
                    "n1=L19/11 n2=F14/15 n3=L14/15",
                    "n1=F19/15 n2=F15/15 n3=L15/15",
                ],
                &["SPLIT BRAIN 0.10s–0.40s: n1 (term 11, +9 applied) and n3 (term 15, +3 applied)"],
            ),
            // A profile without a log index: a carried-over leader counts from its first
            // answer inside the overlap (the catch-up above, answered after it, is not one).
            (
                &[
                    "n1=L10/11 n2=F10/11 n3=F10/11",
                    "n1=? n2=F10/11 n3=C10/15",
                    "n1=? n2=F12/15 n3=L12/15",
                    "n1=L12/11 n2=F14/15 n3=L14/15",
                    "n1=F14/15 n2=F14/15 n3=L15/15",
                ],
                &[],
            ),
            (
                &[
                    "n1=L10/11 n2=F10/11 n3=F10/11",
                    "n1=? n2=F10/11 n3=L12/15",
                    "n1=L12/11 n2=F14/15 n3=L14/15",
                    "n1=L19/11 n2=F16/15 n3=L16/15",
                    "n1=- n2=F16/15 n3=L17/15",
                ],
                &["SPLIT BRAIN 0.10s–0.40s: n1 (term 11, +7 applied) and n3 (term 15, +4 applied)"],
            ),
            // One leader after another while a third, frozen, still stands as leader: b led
            // and committed, was cut off (still saying leader, stuck), then c led and
            // committed. Never two committing at once: not one.
            (
                &[
                    "a=L10:10/3 b=F10/3 c=F10/3",
                    "a=? b=L11/4 c=F11/4",
                    "a=? b=L14/4 c=F14/4",
                    "a=? b=L14/4 c=L15/5",
                    "a=? b=L14/4 c=L20/5",
                    "a=F20/5 b=F20/5 c=L21/5",
                ],
                &[],
            ),
            // Without an applied index nothing can be said to commit: not reported.
            (&["a=Lx b=Lx/2", "a=Lx b=Lx/2"], &[]),
        ];
        for (rounds, want) in cases {
            check(rounds, want);
        }
    }

    #[test]
    fn a_split_brain_fails_the_run_unless_allowed() {
        let sb = SplitBrain {
            start_ms: 4210,
            end_ms: 9800,
            leaders: vec![
                SplitLeader { node: "node1".into(), term: 1, applied_from: 10, applied_to: 322 },
                SplitLeader { node: "node3".into(), term: 3, applied_from: 2, applied_to: 300 },
            ],
        };
        let line = "SPLIT BRAIN 4.21s–9.80s: node1 (term 1, +312 applied) and node3 (term 3, +298 applied)";
        let cases: &[(&[SplitBrain], bool, Option<String>)] = &[
            (&[], false, None),
            (&[], true, None),
            (
                std::slice::from_ref(&sb),
                false,
                Some(format!("{line} (set allow_split_brain = true to accept it)")),
            ),
            (std::slice::from_ref(&sb), true, None),
        ];
        for (brains, allowed, want) in cases {
            assert_eq!(failure(brains, *allowed), *want);
        }
    }
}
