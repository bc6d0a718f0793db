//! Registers: a few keys, each overwritten with an increasing counter by one writer and read by
//! readers through the running nodes in turn, and the check over their history.
//!
//! The check is the stale-read half of linearizability for a register with unique values and
//! one sequential writer per key (so the writes of a key are ordered by their counters):
//!
//! - a read may not return a value older than the *floor*: the newest value whose write was
//!   acknowledged, or that another read returned, before this read began. It may return an
//!   older value only when that value's write has an unknown outcome (such a write may take
//!   effect at any time after it was sent, even after a newer one);
//! - a read may not return a value whose write had not been sent when the read ended, nor one
//!   whose write was refused, nor anything the writers never write;
//! - reads are checked against the history since the last recovery: what a recovery may lose
//!   is `verify`'s business, not this check's.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::target::Target;
use crate::target::{Endpoints, WriteOutcome};

/// A write or a read of one register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Write,
    Read,
}

/// One operation on a register, as the runner saw it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RegisterOp {
    pub key: String,
    pub kind: OpKind,
    /// A write: the counter it wrote. A read: the counter it returned (0 for an absent key),
    /// or the value verbatim in `raw` when it was not one the writers write.
    pub value: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// Milliseconds since the run started.
    pub start_ms: u64,
    pub end_ms: u64,
    /// A write's fate; a read is `acked` when answered and `failed` otherwise (not checked).
    pub outcome: WriteOutcome,
    /// The node that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The value a writer writes for counter `n`.
pub fn value_of(n: u64) -> String {
    format!("r{n}")
}

/// The counter of a value a writer wrote, if it is one.
pub fn counter_of(v: &str) -> Option<u64> {
    v.strip_prefix('r').and_then(|n| n.parse().ok()).filter(|n| *n > 0)
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// What the register tasks share: where the nodes are, how to reach them, the run's time zero,
/// the history they append to, and the signal to stop.
#[derive(Clone)]
pub struct Tasks {
    pub endpoints: Endpoints,
    pub target: Target,
    pub epoch: Instant,
    pub out: Arc<Mutex<Vec<RegisterOp>>>,
    pub stop: watch::Receiver<bool>,
}

/// Overwrites `key` with 1, 2, 3... every `every`, one write at a time (a write that fails is
/// retried with the same value for `budget`, then given up with an unknown outcome).
pub async fn write_loop(t: Tasks, key: String, every: Duration, budget: Duration) {
    let Tasks { endpoints, target, epoch, out, mut stop } = t;
    let mut n: u64 = 0;
    let mut at: Option<String> = None;
    loop {
        let tick = tokio::time::Instant::now() + every;
        n += 1;
        let value = value_of(n);
        let (start_ms, begun) = (ms(epoch), Instant::now());
        let mut attempts = 0u32;
        let mut node = None;
        let outcome = loop {
            attempts += 1;
            let up: Vec<String> = endpoints.all().into_iter().filter_map(|(_, u)| u).collect();
            let Some(base) =
                at.clone().or_else(|| up.get(attempts as usize % up.len().max(1)).cloned())
            else {
                break WriteOutcome::Failed;
            };
            match target.put(&endpoints, &base, &key, &value).await {
                Ok(by) => {
                    node = endpoints.node_of(&by);
                    at = Some(by);
                    break WriteOutcome::Acked;
                }
                Err(e) => {
                    at = None;
                    if begun.elapsed() >= budget {
                        break e.outcome;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        // An earlier attempt of unknown fate may still land even if the last one was refused.
        let outcome = match outcome {
            WriteOutcome::Failed if attempts > 1 => WriteOutcome::Unknown,
            o => o,
        };
        out.lock().unwrap().push(RegisterOp {
            key: key.clone(),
            kind: OpKind::Write,
            value: n,
            raw: None,
            start_ms,
            end_ms: ms(epoch),
            outcome,
            node,
        });
        tokio::select! {
            _ = tokio::time::sleep_until(tick) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Reads the registers in turn, each through the next running node in turn (following
/// redirects), every `every`.
pub async fn read_loop(t: Tasks, keys: Vec<String>, offset: usize, every: Duration) {
    let Tasks { endpoints, target, epoch, out, mut stop } = t;
    let mut turn = offset;
    loop {
        let tick = tokio::time::Instant::now() + every;
        let up: Vec<String> = endpoints.all().into_iter().filter_map(|(_, u)| u).collect();
        let (k, n) = pick(turn, keys.len(), up.len());
        let key = keys[k].clone();
        let base = up.get(n).cloned();
        turn = turn.wrapping_add(1);
        if let Some(base) = base {
            let start_ms = ms(epoch);
            let got = target.get(&endpoints, &base, &key).await;
            let end_ms = ms(epoch);
            let (value, raw, outcome) = match &got {
                Ok(None) => (0, None, WriteOutcome::Acked),
                Ok(Some(v)) => match counter_of(v) {
                    Some(n) => (n, None, WriteOutcome::Acked),
                    None => (0, Some(v.chars().take(64).collect()), WriteOutcome::Acked),
                },
                Err(_) => (0, None, WriteOutcome::Failed),
            };
            out.lock().unwrap().push(RegisterOp {
                key,
                kind: OpKind::Read,
                value,
                raw,
                start_ms,
                end_ms,
                outcome,
                node: endpoints.node_of(&base),
            });
        }
        tokio::select! {
            _ = tokio::time::sleep_until(tick) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The key and the node of a reader's `turn`-th read: every key through every node in turn
/// (one counter for both would read each key through one node only when there are as many
/// keys as nodes: seen in an etcd campaign, where every stale read of a key came from one node).
fn pick(turn: usize, keys: usize, nodes: usize) -> (usize, usize) {
    (turn % keys.max(1), (turn / keys.max(1) + turn) % nodes.max(1))
}

/// A read the check refuses, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Violation {
    pub key: String,
    pub read_start_ms: u64,
    pub read_end_ms: u64,
    pub node: Option<String>,
    /// What it returned (`absent`, `r17`, or the foreign value).
    pub returned: String,
    pub why: String,
}

impl Violation {
    /// `wreg-1 read 474954-475105 ms via node2: r1799 (stale: ...)`.
    pub fn line(&self) -> String {
        format!(
            "{} read {}-{} ms via {}: {} ({})",
            self.key,
            self.read_start_ms,
            self.read_end_ms,
            self.node.as_deref().unwrap_or("?"),
            self.returned,
            self.why
        )
    }
}

/// What the check found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RegisterCheck {
    pub keys: u64,
    pub writes_acked: u64,
    pub writes_unknown: u64,
    pub writes_failed: u64,
    pub reads_checked: u64,
    pub reads_failed: u64,
    pub violations: Vec<Violation>,
}

impl RegisterCheck {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// `REGISTERS 4 keys: 310 writes acknowledged (2 unknown, 0 refused), 1204 reads checked (35 failed), 0 stale`.
    pub fn line(&self) -> String {
        format!(
            "REGISTERS {} keys: {} writes acknowledged ({} unknown, {} refused), {} reads checked ({} failed), {} stale or impossible",
            self.keys,
            self.writes_acked,
            self.writes_unknown,
            self.writes_failed,
            self.reads_checked,
            self.reads_failed,
            self.violations.len()
        )
    }
}

/// Checks the history; ops before the latest of `recoveries` (ms) that precedes a read are not
/// held against it.
pub fn check(ops: &[RegisterOp], recoveries: &[u64]) -> RegisterCheck {
    let mut r = RegisterCheck::default();
    let mut by_key: BTreeMap<&str, Vec<&RegisterOp>> = BTreeMap::new();
    for op in ops {
        by_key.entry(&op.key).or_default().push(op);
    }
    r.keys = by_key.len() as u64;
    for (key, ops) in by_key {
        let writes: BTreeMap<u64, &RegisterOp> =
            ops.iter().filter(|o| o.kind == OpKind::Write).map(|o| (o.value, *o)).collect();
        for w in writes.values() {
            match w.outcome {
                WriteOutcome::Acked => r.writes_acked += 1,
                WriteOutcome::Unknown => r.writes_unknown += 1,
                WriteOutcome::Failed => r.writes_failed += 1,
            }
        }
        let reads: Vec<&RegisterOp> = ops
            .iter()
            .filter(|o| o.kind == OpKind::Read && o.outcome == WriteOutcome::Acked)
            .copied()
            .collect();
        r.reads_failed += ops
            .iter()
            .filter(|o| o.kind == OpKind::Read && o.outcome != WriteOutcome::Acked)
            .count() as u64;
        r.reads_checked += reads.len() as u64;
        // What can raise a read's floor: acknowledged writes and answered reads with a counter,
        // by the time they ended.
        let mut raisers: Vec<(u64, u64, u64)> = writes
            .values()
            .filter(|w| w.outcome == WriteOutcome::Acked)
            .chain(reads.iter().filter(|o| o.raw.is_none()))
            .map(|o| (o.end_ms, o.start_ms, o.value))
            .collect();
        raisers.sort_unstable();
        let mut by_start: Vec<&RegisterOp> = reads.clone();
        by_start.sort_by_key(|o| o.start_ms);
        // One sweep per epoch (the reads after one recovery and before the next).
        let epoch_of = |t: u64| recoveries.iter().copied().filter(|b| *b <= t).max().unwrap_or(0);
        let (mut next, mut floor, mut epoch) = (0usize, 0u64, 0u64);
        for read in by_start {
            let since = epoch_of(read.start_ms);
            if since != epoch {
                (next, floor, epoch) = (0, 0, since);
            }
            while next < raisers.len() && raisers[next].0 < read.start_ms {
                let (_, start, value) = raisers[next];
                if start >= since {
                    floor = floor.max(value);
                }
                next += 1;
            }
            let returned = match (&read.raw, read.value) {
                (Some(raw), _) => raw.clone(),
                (None, 0) => "absent".into(),
                (None, n) => value_of(n),
            };
            let why = if read.raw.is_some() {
                Some("a value no writer wrote".to_owned())
            } else if read.value > 0 {
                match writes.get(&read.value) {
                    None => Some("a value whose write was never sent".to_owned()),
                    Some(w) if w.start_ms > read.end_ms => {
                        Some(format!("written only at {} ms, after the read ended", w.start_ms))
                    }
                    Some(w) if w.outcome == WriteOutcome::Failed => {
                        Some("a value whose write was refused".to_owned())
                    }
                    Some(w) if read.value < floor && w.outcome == WriteOutcome::Acked => {
                        Some(format!(
                            "stale: {} was acknowledged or read before this read began, and the write of {returned} was acknowledged before it was sent",
                            value_of(floor)
                        ))
                    }
                    _ => None,
                }
            } else if floor > 0 {
                Some(format!(
                    "stale: absent, but {} was acknowledged or read before this read began",
                    value_of(floor)
                ))
            } else {
                None
            };
            if let Some(why) = why {
                r.violations.push(Violation {
                    key: key.to_owned(),
                    read_start_ms: read.start_ms,
                    read_end_ms: read.end_ms,
                    node: read.node.clone(),
                    returned,
                    why,
                });
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(value: u64, start: u64, end: u64, outcome: WriteOutcome) -> RegisterOp {
        RegisterOp {
            key: "k".into(),
            kind: OpKind::Write,
            value,
            raw: None,
            start_ms: start,
            end_ms: end,
            outcome,
            node: None,
        }
    }
    fn rd(value: u64, start: u64, end: u64) -> RegisterOp {
        RegisterOp {
            key: "k".into(),
            kind: OpKind::Read,
            value,
            raw: None,
            start_ms: start,
            end_ms: end,
            outcome: WriteOutcome::Acked,
            node: Some("n1".into()),
        }
    }

    #[test]
    fn every_key_is_read_through_every_node() {
        for (keys, nodes) in [(3, 3), (3, 5), (1, 3), (4, 2), (3, 1)] {
            let seen: std::collections::BTreeSet<(usize, usize)> =
                (0..keys * nodes * 2).map(|t| pick(t, keys, nodes)).collect();
            assert_eq!(seen.len(), keys * nodes, "{keys} keys, {nodes} nodes");
        }
        assert_eq!(pick(5, 3, 0), (2, 0), "no node up: the caller finds none at 0");
    }

    #[test]
    fn values_round_trip() {
        assert_eq!(counter_of(&value_of(17)), Some(17));
        for bad in ["", "r", "r0", "17", "rx", "r-1"] {
            assert_eq!(counter_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_check_table() {
        use WriteOutcome::*;
        // Writes: r1 acked 0..10, r2 unknown 20..30, r3 acked 40..50, r4 refused 60..70,
        // r5 acked 80..90.
        let base = vec![
            w(1, 0, 10, Acked),
            w(2, 20, 30, Unknown),
            w(3, 40, 50, Acked),
            w(4, 60, 70, Failed),
            w(5, 80, 90, Acked),
        ];
        // (name, reads added to the history, recoveries, what the violations say)
        type Case = (&'static str, Vec<RegisterOp>, Vec<u64>, Vec<&'static str>);
        let cases: Vec<Case> = vec![
            ("absent before any ack", vec![rd(0, 5, 8)], vec![], vec![]),
            ("concurrent with its write", vec![rd(1, 5, 8)], vec![], vec![]),
            ("the newest acked", vec![rd(3, 55, 58)], vec![], vec![]),
            ("an unknown write landing late", vec![rd(2, 55, 58)], vec![], vec![]),
            ("older than an acked write", vec![rd(1, 55, 58)], vec![], vec!["stale: r3"]),
            ("absent after an ack", vec![rd(0, 15, 18)], vec![], vec!["stale: absent, but r1"]),
            ("a refused write", vec![rd(4, 75, 78)], vec![], vec!["whose write was refused"]),
            ("from the future", vec![rd(5, 72, 75)], vec![], vec!["written only at 80 ms"]),
            ("never sent", vec![rd(9, 95, 98)], vec![], vec!["never sent"]),
            (
                "back in time after another read",
                vec![rd(3, 41, 45), rd(1, 46, 48)],
                vec![],
                vec!["stale: r3"],
            ),
            ("reads that overlap", vec![rd(3, 41, 47), rd(1, 46, 48)], vec![], vec![]),
            ("after a recovery, older is allowed", vec![rd(1, 95, 98)], vec![92], vec![]),
            ("before the recovery, still checked", vec![rd(1, 85, 88)], vec![92], vec!["stale"]),
        ];
        for (name, reads, recoveries, want) in cases {
            let mut ops = base.clone();
            ops.extend(reads);
            let got = check(&ops, &recoveries);
            let whys: Vec<&str> = got.violations.iter().map(|v| v.why.as_str()).collect();
            assert_eq!(whys.len(), want.len(), "{name}: {whys:?}");
            for (g, w) in whys.iter().zip(&want) {
                assert!(g.starts_with(w) || g.contains(w), "{name}: {g:?} should say {w:?}");
            }
            assert_eq!(got.passed(), want.is_empty(), "{name}");
        }
        let foreign = RegisterOp { raw: Some("zzz".into()), ..rd(0, 5, 8) };
        let got = check(&[foreign], &[]);
        assert_eq!(got.violations[0].why, "a value no writer wrote");
        assert_eq!(got.violations[0].returned, "zzz");
    }

    #[test]
    fn failed_reads_are_counted_not_checked() {
        let failed = RegisterOp { outcome: WriteOutcome::Failed, ..rd(0, 55, 58) };
        let got = check(&[w(1, 0, 10, WriteOutcome::Acked), failed], &[]);
        assert_eq!((got.reads_checked, got.reads_failed, got.passed()), (0, 1, true));
        assert!(got.line().starts_with("REGISTERS 1 keys: 1 writes acknowledged"));
    }
}
