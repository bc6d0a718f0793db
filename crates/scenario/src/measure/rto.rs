//! RTO: after each fault or recovery, the time to a leader among the nodes it did not hit and
//! the write outage, from the sampler's record and the workload's acknowledgements.

use std::collections::BTreeMap;

use serde::Serialize;

use super::sampler::Sample;
use super::workload::WriteRecord;
use crate::target::WriteOutcome;

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
