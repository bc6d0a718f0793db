//! Which nodes belong to a stale generation of the cluster, and when.
//!
//! A `recover` step makes one node the whole cluster: from its end, every other node belongs to
//! the old generation, until a `wipe` or `join` step touches it (its old state is gone, or it
//! joined the new cluster). A write such a node acknowledged was acknowledged by a stale
//! cluster: the real one never saw it, so it is expected to be absent and is not "lost".

use std::collections::BTreeMap;

/// A step that changed which generation a node belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GenerationEvent {
    /// `node` was recovered (as the sole voter of a new generation) at `at_ms`.
    Recovered { node: String, at_ms: u64 },
    /// `node` was wiped or joined the current cluster at `at_ms`.
    Rejoined { node: String, at_ms: u64 },
}

/// Per node, the intervals `[from, until)` during which it belonged to a stale generation
/// (`until = None`: still at the end).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StaleSpans(BTreeMap<String, Vec<(u64, Option<u64>)>>);

impl StaleSpans {
    /// The spans implied by `events` (in order) for a cluster of `nodes`.
    pub fn from_events(nodes: &[String], events: &[GenerationEvent]) -> StaleSpans {
        let mut spans: BTreeMap<String, Vec<(u64, Option<u64>)>> = BTreeMap::new();
        let end = |spans: &mut BTreeMap<String, Vec<(u64, Option<u64>)>>, node: &str, at: u64| {
            if let Some(open) = spans.get_mut(node).and_then(|v| v.last_mut()) {
                if open.1.is_none() {
                    open.1 = Some(at);
                }
            }
        };
        for e in events {
            match e {
                GenerationEvent::Recovered { node, at_ms } => {
                    end(&mut spans, node, *at_ms);
                    for other in nodes.iter().filter(|n| *n != node) {
                        let v = spans.entry(other.clone()).or_default();
                        if v.last().is_none_or(|s| s.1.is_some()) {
                            v.push((*at_ms, None));
                        }
                    }
                }
                GenerationEvent::Rejoined { node, at_ms } => end(&mut spans, node, *at_ms),
            }
        }
        StaleSpans(spans)
    }

    /// Whether `node` belonged to a stale generation at `t_ms`.
    pub fn is_stale(&self, node: &str, t_ms: u64) -> bool {
        self.0.get(node).is_some_and(|v| {
            v.iter().any(|(from, until)| t_ms >= *from && until.is_none_or(|u| t_ms < u))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(node: &str, at_ms: u64) -> GenerationEvent {
        GenerationEvent::Recovered { node: node.into(), at_ms }
    }
    fn rejoin(node: &str, at_ms: u64) -> GenerationEvent {
        GenerationEvent::Rejoined { node: node.into(), at_ms }
    }

    #[test]
    fn nodes_are_stale_from_a_recovery_of_another_until_wiped_or_joined() {
        let nodes: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
        // (events, node, time, stale?)
        let cases: &[(&[GenerationEvent], &str, u64, bool)] = &[
            (&[], "n2", 500, false),
            // Before the recovery ended: not yet stale; the recovered node never is.
            (&[rec("n1", 1000)], "n2", 999, false),
            (&[rec("n1", 1000)], "n2", 1000, true),
            (&[rec("n1", 1000)], "n3", 99_000, true),
            (&[rec("n1", 1000)], "n1", 5000, false),
            // A wipe or join ends it, from that step on.
            (&[rec("n1", 1000), rejoin("n2", 3000)], "n2", 2999, true),
            (&[rec("n1", 1000), rejoin("n2", 3000)], "n2", 3000, false),
            (&[rec("n1", 1000), rejoin("n2", 3000)], "n3", 3000, true),
            // A second recovery of another node: the first survivor is now stale too, and a
            // node wiped in between is stale again.
            (&[rec("n1", 1000), rejoin("n2", 2000), rec("n3", 5000)], "n1", 6000, true),
            (&[rec("n1", 1000), rejoin("n2", 2000), rec("n3", 5000)], "n2", 4000, false),
            (&[rec("n1", 1000), rejoin("n2", 2000), rec("n3", 5000)], "n2", 5000, true),
            (&[rec("n1", 1000), rejoin("n2", 2000), rec("n3", 5000)], "n3", 6000, false),
            // Recovering a stale node ends its staleness.
            (&[rec("n1", 1000), rec("n2", 4000)], "n2", 3000, true),
            (&[rec("n1", 1000), rec("n2", 4000)], "n2", 4000, false),
        ];
        for (events, node, t, want) in cases {
            let spans = StaleSpans::from_events(&nodes, events);
            assert_eq!(spans.is_stale(node, *t), *want, "{node} at {t} after {events:?}");
        }
    }
}
