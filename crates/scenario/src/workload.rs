//! Evidence gathered in the background while a scenario runs: an acknowledged-write workload
//! and a dense record of every node's role and term (every poll round also goes to the
//! split-brain detector, [`crate::split_brain`]).
//!
//! Both run as tasks of their own, reaching nodes through a shared [`Endpoints`] map that the
//! engine refreshes whenever a node starts, stops or moves (a container restart may change its
//! published port).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::split_brain::{Detector, Observation};
use crate::target::{ReadError, Role, Target};

/// Node name -> the URL the runner reaches it at (None while stopped), plus each node's
/// in-cluster URL so redirects can be followed.
#[derive(Clone, Default)]
pub struct Endpoints {
    inner: Arc<RwLock<EndpointMap>>,
}

#[derive(Default)]
struct EndpointMap {
    runner: BTreeMap<String, Option<String>>,
    /// Every URL the cluster knows the node by (the profile's, the one it reports).
    in_cluster: BTreeMap<String, Vec<String>>,
}

impl Endpoints {
    pub fn set(&self, node: &str, url: Option<String>) {
        self.inner.write().unwrap().runner.insert(node.to_owned(), url);
    }
    pub fn set_in_cluster(&self, node: &str, urls: Vec<String>) {
        self.inner.write().unwrap().in_cluster.insert(node.to_owned(), urls);
    }
    pub fn get(&self, node: &str) -> Option<String> {
        self.inner.read().unwrap().runner.get(node).cloned().flatten()
    }
    /// The node the runner reaches at `base` (a runner URL such as `http://127.0.0.1:32771`).
    pub fn node_of(&self, base: &str) -> Option<String> {
        let m = self.inner.read().unwrap();
        m.runner
            .iter()
            .find(|(_, u)| {
                u.as_deref().is_some_and(|u| u.trim_end_matches('/') == base.trim_end_matches('/'))
            })
            .map(|(n, _)| n.clone())
    }
    /// The runner base URL `url` starts with (a redirect already made reachable).
    pub fn base_of(&self, url: &str) -> Option<String> {
        let m = self.inner.read().unwrap();
        m.runner.values().flatten().find(|b| url.starts_with(b.as_str())).cloned()
    }
    pub fn all(&self) -> Vec<(String, Option<String>)> {
        self.inner.read().unwrap().runner.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
    /// Rewrites an in-cluster URL (a redirect, a leader URL) into a runner-reachable one.
    pub fn reachable(&self, url: &str) -> String {
        let m = self.inner.read().unwrap();
        for (node, bases) in &m.in_cluster {
            for base in bases {
                if let Some(rest) = url.strip_prefix(base.as_str()) {
                    if let Some(Some(e)) = m.runner.get(node) {
                        return format!("{e}{rest}");
                    }
                }
            }
        }
        url.to_owned()
    }
}

/// One write's fate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteOutcome {
    /// The cluster answered success.
    Acked,
    /// Refused before it could have been applied (no leader, connection refused).
    Failed,
    /// Timed out or broke mid-flight: it may or may not have been applied.
    Unknown,
}

#[derive(Clone, Debug, Serialize)]
pub struct WriteRecord {
    pub key: String,
    pub value: String,
    /// Milliseconds since the run started.
    pub start_ms: u64,
    pub end_ms: u64,
    pub outcome: WriteOutcome,
    pub attempts: u32,
    /// The node that answered success (for an acknowledged write).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A change of one node's observed role, term or leader.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sample {
    pub t_ms: u64,
    pub node: String,
    /// The role reported, or `down` when the node did not answer.
    pub role: String,
    pub term: u64,
    pub leader: String,
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// Reads every node's state every `every` and records changes, until `stop` fires. Every
/// poll round, changed or not, goes to `detector`.
pub async fn sample(
    endpoints: Endpoints,
    target: Target,
    epoch: Instant,
    every: Duration,
    out: Arc<Mutex<Vec<Sample>>>,
    detector: Arc<Mutex<Detector>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut last: BTreeMap<String, Sample> = BTreeMap::new();
    loop {
        let round_ms = ms(epoch);
        let mut round = Vec::new();
        for (node, url) in endpoints.all() {
            // A refused connection or no endpoint: down. A timeout: no answer this round.
            let (status, obs) = match url {
                Some(u) => match target.read(&u).await {
                    Ok(o) => {
                        let obs = Observation::Answered {
                            leader: o.status.role == Role::Leader,
                            term: o.status.term,
                            applied: o.status.applied_index,
                        };
                        (Some(o.status), obs)
                    }
                    Err(ReadError::Down(_)) => (None, Observation::Down),
                    Err(ReadError::NoAnswer(_)) => (None, Observation::NoAnswer),
                },
                None => (None, Observation::Down),
            };
            round.push((node.clone(), obs));
            let s = match status {
                Some(st) => Sample {
                    t_ms: ms(epoch),
                    node: node.clone(),
                    role: st.role.as_str().to_owned(),
                    term: st.term,
                    leader: st.leader_url.or(st.leader_id).unwrap_or_default(),
                },
                None => Sample {
                    t_ms: ms(epoch),
                    node: node.clone(),
                    role: "down".into(),
                    term: 0,
                    leader: String::new(),
                },
            };
            let changed = last.get(&node).is_none_or(|p| {
                (p.role.as_str(), p.term, p.leader.as_str())
                    != (s.role.as_str(), s.term, s.leader.as_str())
            });
            if changed {
                out.lock().unwrap().push(s.clone());
                last.insert(node, s);
            }
        }
        detector.lock().unwrap().observe(round_ms, &round);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Settings of a background writer.
#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    pub rate_per_sec: u64,
    pub prefix: String,
    /// How long one write may keep retrying (same key, same value) before it is given up.
    pub write_budget: Duration,
    /// Start each write at the next running node in turn instead of the last one that
    /// acknowledged; `offset` staggers the writers.
    pub spread: bool,
    pub offset: usize,
    /// Pad values to this many bytes (0: short values).
    pub value_bytes: usize,
}

/// `base` padded with `x` to `bytes` bytes (unchanged when already as long).
pub fn sized_value(base: &str, bytes: usize) -> String {
    let mut v = base.to_owned();
    if bytes > v.len() {
        v.push('-');
        v.extend(std::iter::repeat_n('x', bytes.saturating_sub(v.len())));
    }
    v
}

/// Writes unique keys at a steady rate through whichever node leads, until `stop` fires.
/// A write is retried with the same key and value (an idempotent set), so it counts once.
/// (`target` should time a write out after 1 s, plus 1 s per 256 KiB of value: three fsyncs
/// of the entry.)
pub async fn write_loop(
    endpoints: Endpoints,
    target: Target,
    spec: WorkloadSpec,
    epoch: Instant,
    out: Arc<Mutex<Vec<WriteRecord>>>,
    mut stop: watch::Receiver<bool>,
) {
    let interval = Duration::from_micros(1_000_000 / spec.rate_per_sec.max(1));
    let mut seq: u64 = 0;
    let mut leader: Option<String> = None;
    let mut turn = spec.offset;
    loop {
        let tick = tokio::time::Instant::now() + interval;
        seq += 1;
        if spec.spread {
            leader = next_in_turn(&endpoints, &mut turn);
        }
        let key = format!("{}-{seq:06}", spec.prefix);
        let value = sized_value(&format!("v{seq}"), spec.value_bytes);
        let start_ms = ms(epoch);
        let begun = Instant::now();
        let mut attempts = 0;
        let mut acked_by = None;
        let outcome = loop {
            attempts += 1;
            let next = leader.clone().or_else(|| endpoints.all().into_iter().find_map(|(_, u)| u));
            let Some(base) = next else {
                break WriteOutcome::Failed;
            };
            match target.put(&endpoints, &base, &key, &value).await {
                Ok(by) => {
                    acked_by = endpoints.node_of(&by);
                    leader = Some(by);
                    break WriteOutcome::Acked;
                }
                Err(e) => {
                    let r = e.outcome;
                    // Try another node next time: the leader may have moved.
                    let all: Vec<String> =
                        endpoints.all().into_iter().filter_map(|(_, u)| u).collect();
                    leader = (!all.is_empty())
                        .then(|| all[(seq as usize + attempts as usize) % all.len()].clone());
                    if begun.elapsed() >= spec.write_budget {
                        break r;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        // An earlier Unknown attempt may have landed even if the last attempt failed.
        let outcome = match outcome {
            WriteOutcome::Failed if attempts > 1 => WriteOutcome::Unknown,
            o => o,
        };
        out.lock().unwrap().push(WriteRecord {
            key,
            value,
            start_ms,
            end_ms: ms(epoch),
            outcome,
            attempts,
            node: acked_by,
        });
        tokio::select! {
            _ = tokio::time::sleep_until(tick) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The runner URL of the next running node after `turn` (in name order), advancing `turn`.
fn next_in_turn(endpoints: &Endpoints, turn: &mut usize) -> Option<String> {
    let all: Vec<String> = endpoints.all().into_iter().filter_map(|(_, u)| u).collect();
    if all.is_empty() {
        return None;
    }
    let pick = all[*turn % all.len()].clone();
    *turn = turn.wrapping_add(1);
    Some(pick)
}

/// What `verify` found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Verification {
    pub attempted: u64,
    /// Acknowledged by the current cluster (not by a stale one).
    pub acknowledged: u64,
    pub present: u64,
    /// Acknowledged by the current cluster but absent or different: lost writes (RPO, in
    /// writes).
    pub lost: u64,
    pub lost_keys: Vec<String>,
    /// Of the lost ones, acknowledged before a recovery ended: a survivor that held no
    /// majority cannot have had them (the RPO of that recovery, in writes).
    pub lost_before_recovery: u64,
    /// Acknowledged by a node of a stale generation (see [`crate::generation`]): the current
    /// cluster never acknowledged them, so they are expected to be absent and are not lost.
    pub stale_acked: u64,
    /// The same, by the node that acknowledged them.
    pub stale_acked_by: BTreeMap<String, u64>,
    /// Of those, found in the cluster anyway.
    pub stale_acked_present: u64,
    pub failed: u64,
    pub unknown: u64,
    /// Of unknown outcome, but found in the cluster.
    pub unknown_landed: u64,
}

impl Verification {
    /// One line: `N writes: A acknowledged, P present, L lost; ...`.
    pub fn summary(&self) -> String {
        let before = if self.lost_before_recovery > 0 {
            format!(" ({} of them acknowledged before a recovery)", self.lost_before_recovery)
        } else {
            String::new()
        };
        format!(
            "{} writes: {} acknowledged, {} present, {} lost{before}; {} acknowledged by a stale cluster; {} failed; {} unknown, {} of them landed",
            self.attempted,
            self.acknowledged,
            self.present,
            self.lost,
            self.stale_acked,
            self.failed,
            self.unknown,
            self.unknown_landed
        )
    }

    /// The console line for writes a stale cluster acknowledged (`None` when there were none):
    /// `STALE-ACKED 37 writes acknowledged by a stale cluster (node2 25, node3 12), 0 of them present; not counted as lost`.
    pub fn stale_line(&self) -> Option<String> {
        (self.stale_acked > 0).then(|| {
            let by: Vec<String> =
                self.stale_acked_by.iter().map(|(n, c)| format!("{n} {c}")).collect();
            format!(
                "STALE-ACKED {} writes acknowledged by a stale cluster ({}), {} of them present; not counted as lost",
                self.stale_acked,
                by.join(", "),
                self.stale_acked_present
            )
        })
    }
}

/// What `verify` concludes from every write and the value the cluster holds for its key
/// (`found[i]`: `None` when not read, `Some(None)` when absent). A write acknowledged by a node
/// while it belonged to a stale generation counts as stale-acknowledged, never as lost. A lost
/// write acknowledged before `last_recovery_ms` is also counted as lost before a recovery.
pub fn tally(
    writes: &[WriteRecord],
    found: &[Option<Option<String>>],
    stale: &crate::generation::StaleSpans,
    last_recovery_ms: Option<u64>,
) -> Verification {
    let mut r = Verification { attempted: writes.len() as u64, ..Default::default() };
    for (w, got) in writes.iter().zip(found) {
        let present = got.as_ref().is_some_and(|g| g.as_deref() == Some(w.value.as_str()));
        let stale_node = w
            .node
            .as_deref()
            .filter(|n| w.outcome == WriteOutcome::Acked && stale.is_stale(n, w.end_ms));
        match (w.outcome, stale_node) {
            (WriteOutcome::Acked, Some(n)) => {
                r.stale_acked += 1;
                *r.stale_acked_by.entry(n.to_owned()).or_default() += 1;
                r.stale_acked_present += u64::from(present);
            }
            (WriteOutcome::Acked, None) => {
                r.acknowledged += 1;
                if present {
                    r.present += 1;
                } else {
                    r.lost += 1;
                    r.lost_keys.push(w.key.clone());
                    r.lost_before_recovery +=
                        u64::from(last_recovery_ms.is_some_and(|t| w.end_ms < t));
                }
            }
            (WriteOutcome::Failed, _) => r.failed += 1,
            (WriteOutcome::Unknown, _) => {
                r.unknown += 1;
                r.unknown_landed += u64::from(present);
            }
        }
    }
    r
}

/// A fault or recovery and what followed it.
#[derive(Clone, Debug, Serialize)]
pub struct Recovery {
    pub step: usize,
    pub action: String,
    pub nodes: Vec<String>,
    pub at_ms: u64,
    /// From this step until some node not hit by it reported `leader`, looked for until the
    /// next measured step (`None` when none did by then).
    pub leader_after_ms: Option<u64>,
    /// The write outage. For a fault: the longest time without an acknowledged write, from
    /// the last one before the fault to the first one after it, looking until the next fault
    /// (`None` when writes did not come back before it). For a recovery: from its end to the
    /// first acknowledged write.
    pub write_after_ms: Option<u64>,
}

/// A step whose recovery times are measured.
#[derive(Clone, Debug)]
pub struct Measured<'a> {
    /// When the step started (for a recovery: when it ended).
    pub at_ms: u64,
    /// When it was done.
    pub done_ms: u64,
    /// When the next measured step started, if any: the write outage is looked for before it.
    pub until_ms: Option<u64>,
    /// The nodes it hit.
    pub hit: &'a [String],
    /// A restart or a recovery: a hit node may be the new leader (once the step was done).
    pub hit_may_lead: bool,
    /// A recovery: the write time runs from `at_ms` to the first acknowledged write.
    pub is_recovery: bool,
}

/// Leader and write recovery times after step `m`. A fault's own nodes do not count as the new
/// leader; a restart's or a recovery's do.
pub fn recovery_times(
    samples: &[Sample],
    writes: &[WriteRecord],
    m: &Measured,
    leader_role: &str,
) -> (Option<u64>, Option<u64>) {
    let (at_ms, done_ms, hit, count_hit) = (m.at_ms, m.done_ms, m.hit, m.hit_may_lead);
    // Each node's latest sample at time t; the first t >= at_ms with a leader that counts.
    let leader_at = |t: u64, allow_hit: bool| -> bool {
        let mut latest: BTreeMap<&str, &Sample> = BTreeMap::new();
        for x in samples.iter().filter(|x| x.t_ms <= t) {
            latest.insert(&x.node, x);
        }
        // A node the step hit counts (for a restart or a recovery) only once the step was done:
        // before that, its last sample still shows the leadership the step was about to end.
        latest.values().any(|x| {
            x.role == leader_role
                && (!hit.contains(&x.node) || (allow_hit && x.t_ms >= done_ms.max(at_ms)))
        })
    };
    // Looked for until the next measured step: a leader that only came back through a later
    // recovery belongs to that recovery.
    let times: Vec<u64> = std::iter::once(at_ms)
        .chain(samples.iter().map(|x| x.t_ms).filter(|t| *t >= at_ms))
        .filter(|t| m.until_ms.is_none_or(|u| *t < u))
        .collect();
    let first =
        |allow_hit: bool| times.iter().find(|t| leader_at(**t, allow_hit)).map(|t| t - at_ms);
    let leader = first(count_hit);
    let mut acks: Vec<u64> =
        writes.iter().filter(|w| w.outcome == WriteOutcome::Acked).map(|w| w.end_ms).collect();
    acks.sort_unstable();
    let write = if m.is_recovery {
        acks.iter().find(|t| **t >= at_ms).map(|t| t - at_ms)
    } else {
        // The workload ran until its last attempt ended (or the next fault, if sooner).
        let last_try = writes.iter().map(|w| w.end_ms.max(w.start_ms)).max().unwrap_or(at_ms);
        let end = m.until_ms.map_or(last_try, |u| u.min(last_try)).max(at_ms);
        write_outage(&acks, at_ms, end)
    };
    (leader, write)
}

/// The longest gap between acknowledged writes (sorted completion times) from the last ack
/// before `at_ms` up to `end_ms`. `None` when the longest gap is the one still open at `end_ms`:
/// writes did not come back (in time).
fn write_outage(acks: &[u64], at_ms: u64, end_ms: u64) -> Option<u64> {
    let before = acks.iter().rev().find(|t| **t < at_ms).copied().unwrap_or(at_ms);
    let mut prev = before;
    let mut longest = None;
    for t in acks.iter().copied().filter(|t| *t >= at_ms && *t <= end_ms) {
        longest = Some(longest.unwrap_or(0).max(t - prev));
        prev = t;
    }
    let still_open = end_ms.saturating_sub(prev);
    longest.filter(|l| *l >= still_open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sized_value_table() {
        for (base, bytes, want_len) in
            [("v1", 0, 2), ("v1", 2, 2), ("v1", 3, 3), ("v17", 100_000, 100_000)]
        {
            let v = sized_value(base, bytes);
            assert_eq!(v.len(), want_len, "{base} {bytes}");
            assert!(v.starts_with(base));
        }
        assert_ne!(sized_value("v1", 50), sized_value("v2", 50), "values stay distinct");
    }

    fn s(t: u64, node: &str, role: &str) -> Sample {
        Sample { t_ms: t, node: node.into(), role: role.into(), term: 1, leader: String::new() }
    }
    fn w(start: u64, end: u64, outcome: WriteOutcome) -> WriteRecord {
        WriteRecord {
            key: "k".into(),
            value: "v".into(),
            start_ms: start,
            end_ms: end,
            outcome,
            attempts: 1,
            node: None,
        }
    }

    /// `kind`: "fault", "restart" or "recover".
    fn m<'a>(
        at_ms: u64,
        done_ms: u64,
        until_ms: Option<u64>,
        hit: &'a [String],
        kind: &str,
    ) -> Measured<'a> {
        let (hit_may_lead, is_recovery) = (kind != "fault", kind == "recover");
        Measured { at_ms, done_ms, until_ms, hit, hit_may_lead, is_recovery }
    }

    fn acks(ends: impl IntoIterator<Item = u64>) -> Vec<WriteRecord> {
        ends.into_iter().map(|e| w(e.saturating_sub(5), e, WriteOutcome::Acked)).collect()
    }

    #[test]
    fn recovery_times_take_the_first_leader_not_hit_and_the_longest_write_outage() {
        let n1 = ["n1".to_string()];
        let samples = [
            s(0, "n1", "leader"),
            s(1000, "n1", "down"),
            s(1100, "n2", "candidate"),
            s(1600, "n2", "leader"),
        ];
        let writes = [
            w(900, 950, WriteOutcome::Acked),
            w(1000, 2000, WriteOutcome::Unknown),
            w(1200, 1700, WriteOutcome::Acked),
        ];
        // The leader is killed at 1000: n2 leads 600 ms later; no ack from 950 to 1700.
        let got = recovery_times(&samples, &writes, &m(1000, 1000, None, &n1, "fault"), "leader");
        assert_eq!(got, (Some(600), Some(750)));
        // Another step at 1500, before a leader or writes came back: neither is this fault's.
        let got =
            recovery_times(&samples, &writes, &m(1000, 1000, Some(1500), &n1, "fault"), "leader");
        assert_eq!(got, (None, None));
        // Writes acknowledged for a while after the fault began (a graceful stop), then none
        // until the next fault at 4000 although the workload kept trying: not back.
        let mut trailing = acks([950, 1010, 1040, 1090]);
        trailing.push(w(3900, 3950, WriteOutcome::Failed));
        let got =
            recovery_times(&samples, &trailing, &m(1000, 1000, Some(4000), &n1, "fault"), "leader");
        assert_eq!(got.1, None);
        // A fault that takes 400 ms to apply (three containers killed one by one): a write that
        // was under way and acked at 1020 does not end the outage, which lasts until 5000.
        let slow = acks([950, 1020, 5000]);
        let got = recovery_times(&samples, &slow, &m(1000, 1400, None, &n1, "fault"), "leader");
        assert_eq!(got.1, Some(3980));
        // A follower restart: the leader never changed and writes kept flowing every 20 ms.
        let steady = acks((900..=2000).step_by(20));
        let n2 = ["n2".to_string()];
        let got =
            recovery_times(&samples[..1], &steady, &m(1000, 1600, None, &n2, "restart"), "leader");
        assert_eq!(got, (Some(0), Some(20)));
        // A recovery: from its end to the first acknowledged write.
        let got = recovery_times(
            &samples,
            &acks([950, 1460]),
            &m(1000, 1000, None, &n1, "recover"),
            "leader",
        );
        assert_eq!(got.1, Some(460));
        // Restarting the leader: it counts as the new leader only from a sample after the
        // restart was done, not from the one before it.
        let restart = [
            s(0, "n1", "leader"),
            s(1100, "n1", "down"),
            s(1400, "n1", "follower"),
            s(1500, "n1", "leader"),
        ];
        let got = recovery_times(&restart, &[], &m(1000, 1300, None, &n1, "restart"), "leader");
        assert_eq!(got, (Some(500), None));
        // Nobody leads after the fault, and no write is acknowledged.
        let got = recovery_times(
            &samples[..3],
            &writes[..2],
            &m(1000, 1000, None, &n1, "fault"),
            "leader",
        );
        assert_eq!(got, (None, None));
    }

    #[test]
    fn writes_a_stale_cluster_acknowledged_are_not_lost() {
        use crate::generation::{GenerationEvent, StaleSpans};
        let nodes: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
        // n1 is recovered at 1000; n2 rejoins at 5000; n3 stays stale.
        let spans = StaleSpans::from_events(
            &nodes,
            &[
                GenerationEvent::Recovered { node: "n1".into(), at_ms: 1000 },
                GenerationEvent::Rejoined { node: "n2".into(), at_ms: 5000 },
            ],
        );
        let write = |key: &str, end: u64, outcome: WriteOutcome, node: Option<&str>| WriteRecord {
            key: key.into(),
            value: format!("v-{key}"),
            start_ms: end.saturating_sub(10),
            end_ms: end,
            outcome,
            attempts: 1,
            node: node.map(str::to_owned),
        };
        let have = |key: &str| Some(Some(format!("v-{key}")));
        // (write, what the cluster holds)
        let cases = [
            // Acknowledged by n2 before the recovery and gone: lost, as before.
            (write("a", 900, WriteOutcome::Acked, Some("n2")), Some(None)),
            // Acknowledged by the recovered node: present.
            (write("b", 1500, WriteOutcome::Acked, Some("n1")), have("b")),
            // Acknowledged by the stale n2 and n3 after the recovery, absent: stale, not lost.
            (write("c", 1500, WriteOutcome::Acked, Some("n2")), Some(None)),
            (write("d", 2000, WriteOutcome::Acked, Some("n3")), Some(None)),
            (write("e", 9000, WriteOutcome::Acked, Some("n3")), have("e")),
            // n2 after it rejoined: the current cluster again, and absent: lost.
            (write("f", 6000, WriteOutcome::Acked, Some("n2")), Some(None)),
            (write("g", 6000, WriteOutcome::Failed, None), None),
            (write("h", 6000, WriteOutcome::Unknown, None), have("h")),
        ];
        let (writes, found): (Vec<_>, Vec<_>) = cases.into_iter().unzip();
        let got = tally(&writes, &found, &spans, None);
        let want = Verification {
            attempted: 8,
            acknowledged: 3,
            present: 1,
            lost: 2,
            lost_keys: vec!["a".into(), "f".into()],
            lost_before_recovery: 0,
            stale_acked: 3,
            stale_acked_by: [("n2".to_string(), 1), ("n3".to_string(), 2)].into(),
            stale_acked_present: 1,
            failed: 1,
            unknown: 1,
            unknown_landed: 1,
        };
        assert_eq!(got, want);
        assert_eq!(
            got.stale_line().unwrap(),
            "STALE-ACKED 3 writes acknowledged by a stale cluster (n2 1, n3 2), 1 of them present; not counted as lost"
        );
        assert_eq!(tally(&writes[..2], &found[..2], &spans, None).stale_line(), None);
        // The recovery at 1000 ended after "a" was acknowledged (900), before "f" (6000).
        let got = tally(&writes, &found, &spans, Some(1000));
        assert_eq!((got.lost, got.lost_before_recovery), (2, 1));
        assert!(got.summary().contains("2 lost (1 of them acknowledged before a recovery)"));
    }

    #[test]
    fn spread_writers_take_the_running_nodes_in_turn() {
        let e = Endpoints::default();
        e.set("n1", Some("http://a".into()));
        e.set("n2", None);
        e.set("n3", Some("http://c".into()));
        let mut turn = 0;
        let picks: Vec<Option<String>> = (0..3).map(|_| next_in_turn(&e, &mut turn)).collect();
        assert_eq!(
            picks,
            [Some("http://a".into()), Some("http://c".into()), Some("http://a".into())]
        );
        assert_eq!(e.node_of("http://c"), Some("n3".into()));
        assert_eq!(e.node_of("http://b"), None);
    }
}
