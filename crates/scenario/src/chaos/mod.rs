//! Randomized fault campaigns (`cargo xtask chaos`): a seeded generator writes a schedule of
//! faults as an ordinary scenario ([`generate`]), the engine runs it, and checkers judge the
//! whole history ([`check`]). The scenario is the campaign: `repro.toml` replays it with
//! `cargo xtask scenario`, and shrinking drops faults from it.

use std::fmt;
use std::time::Duration;

use crate::model::Action;
use crate::profile::Profile;

pub mod check;
pub mod generate;
pub mod shrink;
#[cfg(test)]
mod tests;

/// A kind of fault a campaign injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// SIGKILL, later started again.
    Kill,
    /// Graceful stop, later started again.
    Stop,
    /// Stop and start at once.
    Restart,
    /// Frozen, later thawed.
    Pause,
    /// Cut off the network, later reconnected.
    Isolate,
    /// The network split into a minority and a majority, later healed.
    Partition,
    /// A follower's disk replaced: stopped, wiped, joined again.
    WipeRejoin,
    /// A majority lost at once, and the operator's recovery: choose the survivor, recover it,
    /// wipe and rejoin the rest. The only unsafe fault.
    QuorumLoss,
}

impl Fault {
    pub const ALL: [Fault; 8] = [
        Fault::Kill,
        Fault::Stop,
        Fault::Restart,
        Fault::Pause,
        Fault::Isolate,
        Fault::Partition,
        Fault::WipeRejoin,
        Fault::QuorumLoss,
    ];

    /// The faults a campaign injects when `--faults` is not given: every safe one.
    pub const SAFE: [Fault; 7] = [
        Fault::Kill,
        Fault::Stop,
        Fault::Restart,
        Fault::Pause,
        Fault::Isolate,
        Fault::Partition,
        Fault::WipeRejoin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Stop => "stop",
            Fault::Restart => "restart",
            Fault::Pause => "pause",
            Fault::Isolate => "isolate",
            Fault::Partition => "partition",
            Fault::WipeRejoin => "wipe-rejoin",
            Fault::QuorumLoss => "quorum-loss",
        }
    }

    /// The scenario actions the fault and its healing use (what the backend must support).
    pub fn actions(self) -> &'static [Action] {
        use Action::*;
        match self {
            Fault::Kill => &[Kill, Start],
            Fault::Stop => &[Stop, Start],
            Fault::Restart => &[Restart],
            Fault::Pause => &[Pause, Unpause],
            Fault::Isolate => &[Isolate, Heal],
            Fault::Partition => &[Partition, HealPartition],
            Fault::WipeRejoin => &[Stop, Wipe, Join],
            Fault::QuorumLoss => &[Kill, Stop, Wipe, ChooseSurvivor, Recover, Start, Join],
        }
    }

    /// Parses `kill,stop,...`: every name known, none twice.
    pub fn parse_list(s: &str) -> Result<Vec<Fault>, SpecError> {
        let mut out = Vec::new();
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let f = Fault::ALL.into_iter().find(|f| f.name() == word).ok_or_else(|| {
                SpecError(format!(
                    "--faults: unknown fault {word:?}; expected a comma-separated list of {}",
                    Fault::ALL.map(Fault::name).join(", ")
                ))
            })?;
            if out.contains(&f) {
                return Err(SpecError(format!("--faults: {word:?} is listed twice")));
            }
            out.push(f);
        }
        if out.is_empty() {
            return Err(SpecError(format!(
                "--faults: name at least one of {}",
                Fault::ALL.map(Fault::name).join(", ")
            )));
        }
        Ok(out)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A campaign that cannot run as asked; nothing was started.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

/// What a campaign runs: checked by [`Spec::new`] before anything starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    /// The profile's name (the repro's `cluster`).
    pub cluster: String,
    /// Every node of the profile; each must start as a voter.
    pub nodes: Vec<String>,
    /// The profile can rank stopped nodes (`[inspect]`): a quorum loss may keep a killed node
    /// as the survivor; without it the survivor is chosen among running nodes.
    pub offline_inspect: bool,
    /// How long faults are injected; every fault is healed by then.
    pub duration: Duration,
    /// Then the cluster runs unharmed for this long before the final checks.
    pub quiet: Duration,
    pub seed: u64,
    pub faults: Vec<Fault>,
    /// Faults started per minute, on average.
    pub rate_per_min: f64,
}

/// Bounds of `--duration` and `--rate`.
pub const MIN_DURATION: Duration = Duration::from_secs(10);
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
pub const MAX_RATE: f64 = 60.0;

impl Spec {
    /// A campaign on `profile`, or why it cannot run there.
    pub fn new(
        profile: &Profile,
        duration: Duration,
        quiet: Duration,
        seed: u64,
        faults: Vec<Fault>,
        rate_per_min: f64,
    ) -> Result<Spec, SpecError> {
        if duration < MIN_DURATION || duration > MAX_DURATION {
            return Err(SpecError(format!(
                "--duration {}: a campaign runs between {} and {}",
                humantime::format_duration(duration),
                humantime::format_duration(MIN_DURATION),
                humantime::format_duration(MAX_DURATION)
            )));
        }
        if quiet > Duration::from_secs(600) {
            return Err(SpecError("--quiet: at most 10m".into()));
        }
        if !(rate_per_min.is_finite() && rate_per_min > 0.0 && rate_per_min <= MAX_RATE) {
            return Err(SpecError(format!(
                "--rate {rate_per_min}: faults per minute must be above 0 and at most {MAX_RATE}"
            )));
        }
        let nodes: Vec<String> = profile.nodes.iter().map(|n| n.name.clone()).collect();
        if nodes.len() < 3 {
            return Err(SpecError(format!(
                "the {} profile has {} nodes; a campaign needs at least 3 (one may fail while a \
                 majority goes on)",
                profile.name,
                nodes.len()
            )));
        }
        if profile.crash_patterns.is_empty() {
            return Err(SpecError(format!(
                "the {} profile declares no crash_patterns, so a campaign could not tell a                  crashed node from a healthy one; add the lines its nodes log when they crash",
                profile.name
            )));
        }
        if faults.contains(&Fault::WipeRejoin)
            && profile.join.token.as_ref().is_none_or(|t| t.replaces_field.is_none())
        {
            return Err(SpecError(format!(
                "--faults wipe-rejoin: the {} profile's join cannot replace a current member \
                 (its [join.token] has no replaces_field), so a wiped member could not take its \
                 own place back; leave wipe-rejoin out",
                profile.name
            )));
        }
        Ok(Spec {
            cluster: profile.name.clone(),
            nodes,
            offline_inspect: profile.inspect.is_some(),
            duration,
            quiet,
            seed,
            faults,
            rate_per_min,
        })
    }

    /// How many nodes may be down at once with a majority left.
    pub fn minority(&self) -> usize {
        (self.nodes.len() - 1) / 2
    }

    pub fn majority(&self) -> usize {
        self.nodes.len() / 2 + 1
    }
}
