//! RPO: every acknowledged write read back, and what is missing counted as lost (writes a
//! stale generation of the cluster acknowledged apart).

use std::collections::BTreeMap;

use serde::Serialize;

use super::workload::WriteRecord;
use crate::target::WriteOutcome;

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
    /// Acknowledged by a node of a stale generation (see [`crate::measure::generation`]): the current
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
    stale: &crate::measure::generation::StaleSpans,
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
