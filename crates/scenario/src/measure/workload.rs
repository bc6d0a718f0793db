//! The acknowledged-write workload: unique keys written at a steady rate by a task of its own,
//! each write's fate recorded (acknowledged, failed, unknown) for [`super::verify`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::target::{Endpoints, Target, WriteOutcome};

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

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::*;

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
        use crate::measure::generation::{GenerationEvent, StaleSpans};
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
