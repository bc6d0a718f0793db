//! A dense record of every node's role and term, read by its own task; every poll round also
//! goes to the split-brain detector ([`super::split_brain`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use super::split_brain::{Detector, Observation};
use crate::target::Endpoints;
use crate::target::{ReadError, Role, Target};

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
                Some(u) => match target.read_primary(&node, &u).await {
                    Ok(o) => {
                        let obs = Observation::Answered {
                            leader: o.status.role == Role::Leader,
                            term: o.status.term,
                            applied: o.status.applied_index,
                            log: o.status.log_index,
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
