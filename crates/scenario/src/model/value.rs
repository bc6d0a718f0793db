//! The values steps are written with: durations, node selectors, field matchers and
//! `${references}`.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// A duration written as `500ms`, `5s`, `2m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map(Dur).map_err(|_| {
            de::Error::custom(format!(
                "invalid duration {s:?}: expected e.g. \"500ms\", \"5s\", \"2m\""
            ))
        })
    }
}

/// Which nodes a step acts on: names, `all`, `running`, `stopped`, `leader`, `followers`, `any-follower`,
/// or `${capture}` holding a node name. A string or an array of strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector(pub Vec<String>);

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Selector, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        match OneOrMany::deserialize(d).map_err(|_| {
            de::Error::custom("expected a node selector: a string or an array of strings")
        })? {
            OneOrMany::One(s) => Ok(Selector(vec![s])),
            OneOrMany::Many(v) if v.is_empty() => Err(de::Error::custom("empty node selector")),
            OneOrMany::Many(v) => Ok(Selector(v)),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

impl schemars::JsonSchema for Dur {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "a duration such as \"500ms\", \"5s\", \"2m\"",
            "pattern": "^[0-9]+ ?(ns|us|ms|s|sec|m|min|h)$"
        })
    }
}

impl schemars::JsonSchema for Selector {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Selector".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "node names, all, running, stopped, leader, followers, any-follower, or ${capture}",
            "anyOf": [
                { "type": "string" },
                { "type": "array", "items": { "type": "string" }, "minItems": 1 }
            ]
        })
    }
}

/// Signals a `kill` step may send.
pub const SIGNALS: &[&str] = &["SIGKILL", "SIGTERM", "SIGINT", "SIGHUP", "SIGSTOP", "SIGCONT"];

/// Selector words that are not node names.
pub const SELECTOR_WORDS: &[&str] =
    &["all", "running", "stopped", "leader", "followers", "any-follower"];

/// A field matcher of an `expect` step.
#[derive(Clone, Debug, PartialEq)]
pub enum Matcher {
    /// Equal to the value (strings may hold `${references}`).
    Eq(serde_json::Value),
    Ne(serde_json::Value),
    OneOf(Vec<serde_json::Value>),
    /// Not null, not "", not [] .
    NotEmpty,
    /// The same value on every selected node.
    Same,
    Gt(f64),
    Ge(f64),
    Lt(f64),
    Le(f64),
    /// An array containing the value.
    Contains(serde_json::Value),
    /// An array not containing the value.
    Excludes(serde_json::Value),
    /// An array or string of this length.
    Len(u64),
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matcher::Eq(v) => write!(f, "= {v}"),
            Matcher::Ne(v) => write!(f, "!= {v}"),
            Matcher::OneOf(v) => write!(f, "one of {}", serde_json::Value::Array(v.clone())),
            Matcher::NotEmpty => f.write_str("not empty"),
            Matcher::Same => f.write_str("same on all nodes"),
            Matcher::Gt(n) => write!(f, "> {n}"),
            Matcher::Ge(n) => write!(f, ">= {n}"),
            Matcher::Lt(n) => write!(f, "< {n}"),
            Matcher::Le(n) => write!(f, "<= {n}"),
            Matcher::Contains(v) => write!(f, "contains {v}"),
            Matcher::Excludes(v) => write!(f, "excludes {v}"),
            Matcher::Len(n) => write!(f, "has length {n}"),
        }
    }
}

/// `${...}` references in a string, in order.
pub fn references(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        match rest[i + 2..].find('}') {
            Some(j) => {
                out.push(&rest[i + 2..i + 2 + j]);
                rest = &rest[i + 2 + j + 1..];
            }
            None => break,
        }
    }
    out
}
