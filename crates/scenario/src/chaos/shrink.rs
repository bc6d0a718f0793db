//! Shrinking a failing schedule by delta debugging: the episodes after the failing step go
//! first (a run stops there, so they took no part), then halves, quarters, ... single
//! episodes; a drop is kept when the failure still reproduces without it. Every trial is
//! compacted (the time the dropped episodes took is squeezed out), so smaller is also shorter.

use super::generate::{Marks, Schedule};

/// What shrinking kept, and how many trials it ran.
#[derive(Clone, Debug, PartialEq)]
pub struct Shrunk {
    pub kept: Schedule,
    pub tries: usize,
}

/// Shrinks `schedule` (rendered as `marks`; its run failed at `failed_step`, if at a step) with
/// at most `budget` trials. `reproduces(trial, what)` runs a trial in full and says whether
/// the failure came back; `what` says what the trial leaves out.
pub async fn ddmin<E>(
    schedule: &Schedule,
    marks: &Marks,
    failed_step: Option<usize>,
    budget: usize,
    mut reproduces: impl AsyncFnMut(&Schedule, String) -> Result<bool, E>,
) -> Result<Shrunk, E> {
    let mut kept = schedule.clone();
    let mut tries = 0;
    if let Some(failed) = failed_step.filter(|_| budget > 0) {
        let later: Vec<usize> = schedule
            .episodes
            .iter()
            .zip(&marks.episode_steps)
            .filter(|(_, step)| **step > failed)
            .map(|(e, _)| e.id)
            .collect();
        if !later.is_empty() {
            let trial = kept.without(&later).compact();
            tries += 1;
            let what = format!("the {} episodes after the failing step {failed}", later.len());
            if reproduces(&trial, what).await? {
                kept = trial;
            }
        }
    }
    let mut chunk = kept.episodes.len().div_ceil(2);
    'sizes: while chunk >= 1 {
        let mut i = 0;
        while i < kept.episodes.len() {
            if tries >= budget {
                break 'sizes;
            }
            let end = (i + chunk).min(kept.episodes.len());
            let ids: Vec<usize> = kept.episodes[i..end].iter().map(|e| e.id).collect();
            let trial = kept.without(&ids).compact();
            tries += 1;
            let shown: Vec<String> = ids.iter().map(|id| format!("#{id}")).collect();
            if reproduces(&trial, format!("without episodes {}", shown.join(" "))).await? {
                kept = trial;
            } else {
                i += chunk;
            }
        }
        if chunk == 1 {
            break;
        }
        chunk = chunk.div_ceil(2).min(chunk - 1);
    }
    Ok(Shrunk { kept, tries })
}
