//! What a scenario is, once parsed: typed steps, selectors, matchers and durations. Nothing
//! here reads a file or knows a backend; [`crate::parse`] makes these from TOML.

mod step;
mod value;

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub use step::*;
pub use value::*;

/// `[defaults]`.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Default bound of every waiting step (default 30s).
    pub timeout: Option<Dur>,
}

/// A parsed, validated scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub file: PathBuf,
    pub name: String,
    pub summary: String,
    pub cluster: String,
    pub defaults: Defaults,
    /// A split brain is reported but does not fail the run.
    pub allow_split_brain: bool,
    pub steps: Vec<PlacedStep>,
}

/// A step and where it is written.
#[derive(Clone, Debug)]
pub struct PlacedStep {
    pub step: Step,
    pub line: usize,
    /// Parsed matchers of an `expect` step, in field order.
    pub matchers: Vec<(String, Matcher)>,
}

impl Scenario {
    pub fn default_timeout(&self) -> Duration {
        self.defaults.timeout.map(|d| d.0).unwrap_or(Duration::from_secs(30))
    }
}
