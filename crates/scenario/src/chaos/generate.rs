//! The seeded generator: a schedule of fault episodes, written out as a scenario.
//!
//! Safe faults never take more than a minority at once, so a majority can always elect a leader
//! without an operator: a fault aimed at a live role (the leader, a follower, the leader and a
//! follower) or at the network (a partition), and a disk replacement, run alone; faults aimed
//! at named nodes may overlap while the nodes they hold down stay a minority. A quorum loss
//! kills a majority and recovers the way an operator would, and also runs alone. Every fault is
//! healed by the end of the campaign, then the cluster runs unharmed for the quiet period and
//! the final checks run: convergence, then every acknowledged write read back.

use std::fmt::Write as _;
use std::time::Duration;

use super::{Fault, Spec};
use crate::engine::Rng;

/// Whom an episode hits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Aim {
    /// Whichever node leads when the fault starts.
    Leader,
    /// A follower, chosen at random when the fault starts.
    Follower,
    /// The leader and a follower (a minority of five or more).
    LeaderAndFollower,
    /// These nodes, by name.
    Nodes(Vec<String>),
}

/// One fault, from its start to its healing.
#[derive(Clone, Debug, PartialEq)]
pub struct Episode {
    /// 1-based, stable across shrinking (captures are named after it).
    pub id: usize,
    pub fault: Fault,
    pub aim: Aim,
    /// Planned start, from the start of the fault phase.
    pub at: Duration,
    /// How long the fault lasts before it is healed; zero for faults that heal themselves
    /// (restart) or are repaired in the same breath (wipe-rejoin, quorum-loss).
    pub hold: Duration,
    /// A quorum loss: the killed nodes whose disks are destroyed. The others (and the nodes
    /// that were not killed) are the survivor's candidates.
    pub destroyed: Vec<String>,
}

impl Episode {
    /// Whether no other fault may overlap it.
    pub fn exclusive(&self) -> bool {
        !matches!(self.aim, Aim::Nodes(_))
            || matches!(self.fault, Fault::Partition | Fault::WipeRejoin | Fault::QuorumLoss)
    }

    /// A quorum loss whose survivor's candidates hold no majority: acknowledged writes may be
    /// lost (only those from before it).
    pub fn lossy(&self, nodes: usize) -> bool {
        self.fault == Fault::QuorumLoss && nodes - self.destroyed.len() < nodes / 2 + 1
    }

    /// `kill node2 for 4.2s`, `quorum-loss of node1,node3 (node3's disk destroyed)`.
    pub fn describe(&self) -> String {
        let whom = match &self.aim {
            Aim::Leader => "the leader".to_owned(),
            Aim::Follower => "a follower".to_owned(),
            Aim::LeaderAndFollower => "the leader and a follower".to_owned(),
            Aim::Nodes(n) => n.join(","),
        };
        let hold = if self.hold.is_zero() {
            String::new()
        } else {
            format!(" for {:.1}s", self.hold.as_secs_f64())
        };
        let destroyed = if self.destroyed.is_empty() {
            String::new()
        } else {
            format!(" ({} disk destroyed)", self.destroyed.join(","))
        };
        format!(
            "#{} at {:>6.1}s: {} {whom}{hold}{destroyed}",
            self.id,
            self.at.as_secs_f64(),
            self.fault
        )
    }
}

/// A campaign's episodes.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub spec: Spec,
    pub episodes: Vec<Episode>,
}

/// Where the checkers find their steps in the rendered scenario (1-based step numbers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marks {
    /// The expectation that every node agrees on membership, leader and applied index.
    pub convergence: usize,
    /// The read-back of every acknowledged write.
    pub verify: usize,
    /// The first step after the initial formation and the last heal: fault and heal steps lie
    /// between (inclusive) `faults_from` and `faults_to`.
    pub faults_from: usize,
    pub faults_to: usize,
    /// The first step of each episode, in schedule order.
    pub episode_steps: Vec<usize>,
}

/// Writes per second of the unique-key workload, and the registers the readers check.
pub const WRITE_RATE: u64 = 50;
pub const REGISTERS: u64 = 3;

fn between(rng: &mut Rng, lo: Duration, hi: Duration) -> Duration {
    let span = hi.saturating_sub(lo).as_millis() as usize;
    lo + Duration::from_millis(rng.below(span + 1) as u64)
}

/// `k` distinct names from `from`, in random order.
fn pick(rng: &mut Rng, from: &[String], k: usize) -> Vec<String> {
    let mut pool = from.to_vec();
    let mut out = Vec::new();
    while out.len() < k && !pool.is_empty() {
        out.push(pool.remove(rng.below(pool.len())));
    }
    out
}

impl Schedule {
    /// The schedule `spec.seed` gives: the same seed, the same schedule.
    pub fn generate(spec: &Spec) -> Schedule {
        let mut rng = Rng::new(spec.seed ^ 0x5eed_c4a0_5000_0001);
        let end = spec.duration;
        let mean_gap = Duration::from_secs_f64(60.0 / spec.rate_per_min);
        let (minority, majority) = (spec.minority(), spec.majority());
        // (heal time, nodes held, exclusive) of the faults in force.
        let mut active: Vec<(Duration, Vec<String>, bool)> = Vec::new();
        let mut episodes = Vec::new();
        let mut t = between(&mut rng, Duration::from_secs(2), mean_gap.max(Duration::from_secs(3)));
        while t + Duration::from_secs(1) < end {
            active.retain(|a| a.0 > t);
            let fault = spec.faults[rng.below(spec.faults.len())];
            let own_kind =
                matches!(fault, Fault::Partition | Fault::WipeRejoin | Fault::QuorumLoss);
            let role_aimed = !own_kind && rng.below(2) == 0;
            let held: usize = active.iter().map(|a| a.1.len()).sum();
            let wait_all = own_kind || role_aimed || active.iter().any(|a| a.2);
            if wait_all && !active.is_empty() {
                t = active.iter().map(|a| a.0).max().unwrap() + Duration::from_millis(500);
                continue;
            }
            if !wait_all && held >= minority {
                t = active.iter().map(|a| a.0).min().unwrap() + Duration::from_millis(500);
                continue;
            }
            let hold = match fault {
                Fault::Restart | Fault::WipeRejoin | Fault::QuorumLoss => Duration::ZERO,
                _ => between(&mut rng, Duration::from_secs(2), Duration::from_secs(10))
                    .min(end.saturating_sub(t))
                    .max(Duration::from_secs(1)),
            };
            let busy: Vec<&String> = active.iter().flat_map(|a| a.1.iter()).collect();
            let free: Vec<String> =
                spec.nodes.iter().filter(|n| !busy.contains(n)).cloned().collect();
            let role = |rng: &mut Rng| {
                if minority >= 2 && rng.below(3) == 0 {
                    Aim::LeaderAndFollower
                } else if rng.below(2) == 0 {
                    Aim::Leader
                } else {
                    Aim::Follower
                }
            };
            let mut destroyed = Vec::new();
            let aim = match fault {
                Fault::QuorumLoss => {
                    let killed = pick(&mut rng, &spec.nodes, majority);
                    let d = if spec.offline_inspect { 1 + rng.below(majority) } else { majority };
                    destroyed = killed[..d].to_vec();
                    Aim::Nodes(killed)
                }
                Fault::WipeRejoin if rng.below(2) == 0 => Aim::Follower,
                Fault::WipeRejoin => Aim::Nodes(pick(&mut rng, &spec.nodes, 1)),
                Fault::Partition if rng.below(3) == 0 => {
                    let k = 1 + rng.below(minority);
                    Aim::Nodes(pick(&mut rng, &spec.nodes, k))
                }
                _ if own_kind || role_aimed => role(&mut rng),
                _ => {
                    let room = minority - held;
                    let k = if room > 1 && rng.below(2) == 0 { 2 } else { 1 };
                    Aim::Nodes(pick(&mut rng, &free, k))
                }
            };
            let held_now = match &aim {
                Aim::Nodes(n) => n.clone(),
                Aim::LeaderAndFollower => vec!["(leader)".into(), "(follower)".into()],
                _ => vec!["(role)".into()],
            };
            let ep = Episode { id: episodes.len() + 1, fault, aim, at: t, hold, destroyed };
            if !hold.is_zero() {
                active.push((t + hold, held_now, ep.exclusive()));
            }
            episodes.push(ep);
            let gap = mean_gap.mul_f64(0.5 + rng.below(1001) as f64 / 1000.0);
            t += gap.max(Duration::from_millis(500));
        }
        Schedule { spec: spec.clone(), episodes }
    }

    /// The same schedule without the episodes `ids` (shrinking).
    pub fn without(&self, ids: &[usize]) -> Schedule {
        Schedule {
            spec: self.spec.clone(),
            episodes: self.episodes.iter().filter(|e| !ids.contains(&e.id)).cloned().collect(),
        }
    }

    /// The same episodes with the dead time between them squeezed out (shrinking): each group
    /// of episodes that overlap in time keeps its inner timing and starts 2 s after the previous
    /// group has healed, so the invariants hold and a shorter schedule runs in less time.
    pub fn compact(&self) -> Schedule {
        let gap = Duration::from_secs(2);
        let mut episodes = self.episodes.clone();
        episodes.sort_by_key(|e| (e.at, e.id));
        let (mut group_end, mut shift, mut next_start) = (None::<Duration>, Duration::ZERO, gap);
        for e in &mut episodes {
            let end = e.at + e.hold;
            match group_end {
                // Overlaps the group in progress: same shift.
                Some(g) if e.at < g => group_end = Some(g.max(end)),
                _ => {
                    if let Some(g) = group_end {
                        next_start = g.saturating_sub(shift) + gap;
                    }
                    shift = e.at.saturating_sub(next_start);
                    group_end = Some(end);
                }
            }
            e.at = e.at.saturating_sub(shift);
        }
        let last = episodes.iter().map(|e| e.at + e.hold).max().unwrap_or_default();
        let mut spec = self.spec.clone();
        spec.duration = spec.duration.min(last + gap);
        Schedule { spec, episodes }
    }

    /// Whether a recovery may lose acknowledged writes (a quorum loss whose survivors held
    /// no majority).
    pub fn lossy(&self) -> bool {
        self.episodes.iter().any(|e| e.lossy(self.spec.nodes.len()))
    }

    /// The schedule as a scenario file, and where its final checks are.
    pub fn render(&self) -> (String, Marks) {
        let spec = &self.spec;
        let n = spec.nodes.len();
        let mut r = Render::default();
        let faults: Vec<&str> = spec.faults.iter().map(|f| f.name()).collect();
        let _ = writeln!(
            r.out,
            "# Generated by `cargo xtask chaos --profile {} --seed {} --duration {} --rate {} --faults {}`.\n\
             # Replay: `cargo xtask scenario <this file>`. Step times are planned; a step that\n\
             # takes long (a join, a recovery) delays the ones after it.\n",
            spec.cluster,
            spec.seed,
            humantime::format_duration(spec.duration),
            spec.rate_per_min,
            faults.join(",")
        );
        let _ = writeln!(r.out, "name = {}", q(&format!("chaos-{}-{}", spec.cluster, spec.seed)));
        let _ = writeln!(
            r.out,
            "summary = {}",
            q(&format!(
                "{} faults in {} on {} (seed {}), then {} quiet; every acknowledged write, register read, leader and node log checked",
                self.episodes.len(),
                humantime::format_duration(spec.duration),
                spec.cluster,
                spec.seed,
                humantime::format_duration(spec.quiet)
            ))
        );
        let _ =
            writeln!(r.out, "cluster = {}\n\n[defaults]\ntimeout = \"30s\"\n", q(&spec.cluster));
        r.step("", "up = {}");
        r.step(
            "a formed cluster: every node a voter, one leader",
            &format!(
                "expect = {{ nodes = \"all\", timeout = \"60s\", that = {{ role = {{ one_of = [\"leader\", \"follower\"] }}, leader_id = {{ same = true }}, voters = {{ len = {n} }} }} }}"
            ),
        );
        r.step(
            "unique writes, and registers written and read through every node",
            &format!("workload-start = {{ rate = {WRITE_RATE}, registers = {REGISTERS} }}"),
        );
        let faults_from = r.steps + 1;
        // (time, heal before start at the same time, episode, is the heal)
        let mut events: Vec<(Duration, u8, usize, bool)> = Vec::new();
        for (i, e) in self.episodes.iter().enumerate() {
            events.push((e.at, 1, i, false));
            if !e.hold.is_zero() {
                events.push((e.at + e.hold, 0, i, true));
            }
        }
        events.sort();
        let mut now = Duration::ZERO;
        let mut episode_steps = Vec::new();
        for (at, _, i, heal) in events {
            r.sleep(at.saturating_sub(now));
            now = now.max(at);
            let e = &self.episodes[i];
            if heal {
                r.heal(e);
            } else {
                episode_steps.push(r.steps + 1);
                r.inject(e, spec);
            }
        }
        let faults_to = r.steps;
        r.sleep(spec.duration.saturating_sub(now) + spec.quiet);
        r.step("", "workload-stop = {}");
        r.step(
            "convergence: every node back, one leader, the same voters and applied index",
            &format!(
                "expect = {{ nodes = \"all\", timeout = \"60s\", that = {{ role = {{ one_of = [\"leader\", \"follower\"] }}, leader_id = {{ same = true }}, voters = {{ len = {n} }}, applied_index = {{ same = true }} }} }}"
            ),
        );
        let convergence = r.steps;
        let lossy = self.lossy();
        r.step(
            if lossy {
                "every acknowledged write is there, but those a recovery without a majority could not keep"
            } else {
                "every acknowledged write is there"
            },
            &format!(
                "verify = {{ max_lost = 0, min_acked = 1, recovery_may_lose = {lossy}, timeout = \"{}s\" }}",
                verify_timeout(spec.duration).as_secs()
            ),
        );
        let verify = r.steps;
        (r.out, Marks { convergence, verify, faults_from, faults_to, episode_steps })
    }
}

/// How long reading back every acknowledged write may take: 120 s, or 40% of the campaign
/// (measured: 30 000 writes, ten minutes of the workload, read back in 100 s on two cores).
pub fn verify_timeout(duration: Duration) -> Duration {
    Duration::from_secs(120).max(duration.mul_f64(0.4))
}

/// A TOML string.
fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn list(names: &[String]) -> String {
    if names.len() == 1 {
        q(&names[0])
    } else {
        format!("[{}]", names.iter().map(|n| q(n)).collect::<Vec<_>>().join(", "))
    }
}

#[derive(Default)]
struct Render {
    out: String,
    steps: usize,
}

impl Render {
    fn step(&mut self, comment: &str, body: &str) {
        self.steps += 1;
        if comment.is_empty() {
            let _ = writeln!(self.out, "[[step]]\n{body}\n");
        } else {
            let _ = writeln!(self.out, "[[step]]  # {comment}\n{body}\n");
        }
    }

    fn sleep(&mut self, d: Duration) {
        if d >= Duration::from_millis(100) {
            self.step("", &format!("sleep = {{ duration = \"{}ms\" }}", d.as_millis()));
        }
    }

    /// The nodes an episode holds, as a selector; live aims are captured first.
    fn target(&mut self, e: &Episode) -> String {
        let capture = |r: &mut Render, sel: &str, name: &str| {
            r.step(
                &format!("episode {}: whom it hits", e.id),
                &format!(
                    "expect = {{ nodes = {}, that = {{ name = {{ not_empty = true }} }}, capture = {{ {name} = \"name\" }} }}",
                    q(sel)
                ),
            );
        };
        let f = format!("f{}", e.id);
        match &e.aim {
            Aim::Leader => {
                capture(self, "leader", &f);
                q(&format!("${{{f}}}"))
            }
            Aim::Follower => {
                capture(self, "any-follower", &f);
                q(&format!("${{{f}}}"))
            }
            Aim::LeaderAndFollower => {
                capture(self, "leader", &f);
                capture(self, "any-follower", &format!("{f}b"));
                format!("[{}, {}]", q(&format!("${{{f}}}")), q(&format!("${{{f}b}}")))
            }
            Aim::Nodes(n) => list(n),
        }
    }

    fn inject(&mut self, e: &Episode, spec: &Spec) {
        let c = e.describe();
        match e.fault {
            Fault::Partition => {
                let group = match &e.aim {
                    Aim::Leader => "[\"leader\"]".to_owned(),
                    Aim::Follower => "[\"any-follower\"]".to_owned(),
                    Aim::LeaderAndFollower => "[\"leader\", \"any-follower\"]".to_owned(),
                    Aim::Nodes(n) => {
                        format!("[{}]", n.iter().map(|x| q(x)).collect::<Vec<_>>().join(", "))
                    }
                };
                self.step(&c, &format!("partition = {{ groups = [{group}] }}"));
            }
            Fault::WipeRejoin => {
                let who = self.target(e);
                self.step(&c, &format!("stop = {{ nodes = {who} }}"));
                self.step("", &format!("wipe = {{ nodes = {who} }}"));
                self.step("", &format!("join = {{ node = {who}, timeout = \"60s\" }}"));
                self.step(
                    &format!("episode {}: the new disk follows as a voter", e.id),
                    &format!(
                        "expect = {{ nodes = {who}, timeout = \"60s\", that = {{ role = {{ one_of = [\"leader\", \"follower\"] }}, voters = {{ contains = \"${{self.node_id}}\" }} }} }}"
                    ),
                );
            }
            Fault::QuorumLoss => self.quorum_loss(e, spec, &c),
            _ => {
                let who = self.target(e);
                let action = match e.fault {
                    Fault::Kill => "kill",
                    Fault::Stop => "stop",
                    Fault::Restart => "restart",
                    Fault::Pause => "pause",
                    _ => "isolate",
                };
                self.step(&c, &format!("{action} = {{ nodes = {who} }}"));
            }
        }
    }

    fn heal(&mut self, e: &Episode) {
        let who = match &e.aim {
            Aim::Leader | Aim::Follower => q(&format!("${{f{}}}", e.id)),
            Aim::LeaderAndFollower => {
                format!("[{}, {}]", q(&format!("${{f{}}}", e.id)), q(&format!("${{f{}b}}", e.id)))
            }
            Aim::Nodes(n) => list(n),
        };
        let c = format!("episode {}: healed", e.id);
        match e.fault {
            Fault::Kill | Fault::Stop => self.step(&c, &format!("start = {{ nodes = {who} }}")),
            Fault::Pause => self.step(&c, &format!("unpause = {{ nodes = {who} }}")),
            Fault::Isolate => self.step(&c, &format!("heal = {{ nodes = {who} }}")),
            Fault::Partition => self.step(&c, "heal-partition = {}"),
            Fault::Restart | Fault::WipeRejoin | Fault::QuorumLoss => {}
        }
    }

    /// A majority killed; the operator's runbook: stop what is left, choose the most
    /// up-to-date node among those whose disks survived, make it the only voter, wipe and
    /// rejoin every other node.
    fn quorum_loss(&mut self, e: &Episode, spec: &Spec, c: &str) {
        let Aim::Nodes(killed) = &e.aim else { return };
        let rest: Vec<String> =
            spec.nodes.iter().filter(|n| !killed.contains(n)).cloned().collect();
        let (s, o) = (format!("s{}", e.id), format!("o{}", e.id));
        self.step(c, &format!("kill = {{ nodes = {} }}", list(killed)));
        self.step(
            &format!("episode {}: their disks are destroyed", e.id),
            &format!("wipe = {{ nodes = {} }}", list(&e.destroyed)),
        );
        if spec.offline_inspect {
            let candidates: Vec<String> =
                spec.nodes.iter().filter(|n| !e.destroyed.contains(n)).cloned().collect();
            self.step(
                &format!("episode {}: the operator stops what is left", e.id),
                &format!("stop = {{ nodes = {} }}", list(&rest)),
            );
            self.step(
                &format!("episode {}: the most up-to-date disk that survived", e.id),
                &format!(
                    "choose-survivor = {{ among = {}, capture = \"{s}\", others = \"{o}\" }}",
                    list(&candidates)
                ),
            );
        } else {
            self.step(
                &format!("episode {}: the most up-to-date node still running", e.id),
                &format!(
                    "choose-survivor = {{ among = {}, capture = \"{s}\", others = \"{o}\" }}",
                    list(&rest)
                ),
            );
            self.step(
                &format!("episode {}: the operator stops what is left", e.id),
                &format!("stop = {{ nodes = {} }}", list(&rest)),
            );
        }
        self.step("", &format!("recover = {{ node = \"${{{s}}}\" }}"));
        self.step("", &format!("start = {{ nodes = \"${{{s}}}\" }}"));
        self.step(
            &format!("episode {}: the survivor leads alone", e.id),
            &format!(
                "expect = {{ nodes = \"${{{s}}}\", that = {{ role = \"leader\", voters = {{ len = 1 }} }} }}"
            ),
        );
        self.step(
            &format!("episode {}: every other node gets a new disk and joins", e.id),
            &format!("wipe = {{ nodes = \"${{{o}}}\" }}"),
        );
        self.step("", &format!("join = {{ node = \"${{{o}}}\", timeout = \"60s\" }}"));
        let n = spec.nodes.len();
        self.step(
            &format!("episode {}: all {n} voters again", e.id),
            &format!(
                "expect = {{ nodes = \"all\", timeout = \"60s\", that = {{ voters = {{ len = {n} }}, leader_id = {{ same = true }} }} }}"
            ),
        );
    }
}
