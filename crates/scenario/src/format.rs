//! The scenario file format (TOML) and its validation.
//!
//! ```toml
//! name = "quorum-loss"
//! summary = "one line"
//! cluster = "etcd-3"          # optional: the cluster profile (the runner has a default)
//! [defaults]
//! timeout = "30s"             # optional: default wait of expect/join/stop
//!
//! [[step]]
//! expect = { nodes = "all", that = { role = { one_of = ["leader", "follower"] } } }
//! ```
//!
//! Every `[[step]]` holds exactly one action. Parsing is strict: an unknown action or field, a
//! bad duration, an unknown node or a `${reference}` to nothing is rejected before anything
//! runs, with `file:line:column`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::Spanned;

use crate::profile::Profile;

/// A parse or validation error at a position in a scenario file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{col}: {message}")]
pub struct ParseError {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// 1-based line and column of byte `offset` in `src`.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

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

/// The JSON Schema of scenario files, generated from the types the parser uses.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(RawFile);
    serde_json::to_string_pretty(&schema).expect("schema serializes") + "\n"
}

/// Selector words that are not node names.
pub const SELECTOR_WORDS: &[&str] =
    &["all", "running", "stopped", "leader", "followers", "any-follower"];

/// A scenario file, as written. The JSON Schema of scenario files is generated from this type.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "chaos scenario")]
pub struct RawFile {
    name: String,
    summary: String,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    cluster: Option<Spanned<String>>,
    #[serde(default)]
    defaults: Defaults,
    /// Accept a split brain (two leaders committing at once): still reported, but it does not
    /// fail the run, and `verify` then bounds no stale-acknowledged writes unless it says so.
    #[serde(default)]
    allow_split_brain: bool,
    #[serde(default, rename = "step")]
    #[schemars(with = "Vec<Step>")]
    steps: Vec<Spanned<Step>>,
}

/// `[defaults]`.
#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Default bound of every waiting step (default 30s).
    pub timeout: Option<Dur>,
}

/// One action.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Create and start the whole cluster and wait until every node answers.
    Up(Empty),
    /// Tear the whole cluster down (also done at the end of every run).
    Down(Empty),
    /// Graceful stop (SIGTERM, then SIGKILL after the timeout).
    Stop(Nodes),
    /// Send a signal (default SIGKILL).
    Kill(Kill),
    Start(Nodes),
    Restart(Nodes),
    /// Freeze the processes (SIGSTOP / cgroup freezer).
    Pause(Nodes),
    Unpause(Nodes),
    /// Cut the nodes off the cluster network.
    Isolate(Nodes),
    /// Reconnect isolated nodes with the same address and DNS alias.
    Heal(Nodes),
    /// Split the cluster network: nodes in different groups cannot reach each other, nodes in
    /// the same group can, and the runner still reaches every node.
    Partition(Partition),
    /// Undo the partition: every node back on the cluster network with its address and aliases.
    HealPartition(Empty),
    /// Erase a stopped node's data, as after a disk replacement.
    Wipe(Nodes),
    /// Run the profile's recovery command for a stopped node.
    Recover(Recover),
    /// Run any command of the node's image/binaries against the node's data and env file.
    Ops(Ops),
    /// Create a join token on `via`, run the profile's join command for `node`, start it
    /// (several nodes join one at a time, in order).
    Join(Join),
    /// Poll the info endpoint until every matcher holds on every selected node.
    Expect(Expect),
    /// Wait until every selected node's process exits by itself, its log saying why: a system
    /// that shuts down a member it learns was removed.
    ExpectDown(ExpectDown),
    /// Write keys through the KV API.
    Write(Write),
    /// Read keys back and compare.
    Read(Read),
    Sleep(Sleep),
    /// Start a background writer of unique keys through whichever node leads.
    WorkloadStart(WorkloadStart),
    /// Stop the background writer.
    WorkloadStop(Empty),
    /// Stop the writer if running, read back every write it attempted, count the lost ones.
    Verify(Verify),
    /// Inspect every stopped candidate and capture the most up-to-date one's name.
    ChooseSurvivor(ChooseSurvivor),
}

impl Step {
    /// The step's node selectors, by field name.
    pub fn selectors(&self) -> Vec<(&'static str, &Selector)> {
        let mut out = Vec::new();
        match self {
            Step::Stop(n)
            | Step::Start(n)
            | Step::Restart(n)
            | Step::Pause(n)
            | Step::Unpause(n)
            | Step::Isolate(n)
            | Step::Heal(n)
            | Step::Wipe(n) => out.push(("nodes", n.nodes.get_ref())),
            Step::ExpectDown(d) => out.push(("nodes", d.nodes.get_ref())),
            Step::Kill(k) => out.push(("nodes", k.nodes.get_ref())),
            Step::Recover(r) => out.push(("node", r.node.get_ref())),
            Step::Ops(o) => out.push(("node", o.node.get_ref())),
            Step::Join(j) => {
                out.push(("node", j.node.get_ref()));
                if let Some(v) = &j.via {
                    out.push(("via", v.get_ref()));
                }
            }
            Step::Expect(e) => {
                if let Some(n) = &e.nodes {
                    out.push(("nodes", n.get_ref()));
                }
            }
            Step::Write(w) => {
                if let Some(v) = &w.via {
                    out.push(("via", v.get_ref()));
                }
            }
            Step::Read(r) => {
                if let Some(v) = &r.via {
                    out.push(("via", v.get_ref()));
                }
            }
            Step::ChooseSurvivor(c) => {
                if let Some(a) = &c.among {
                    out.push(("among", a.get_ref()));
                }
            }
            Step::Partition(p) => out.extend(p.groups.iter().map(|g| ("group", g.get_ref()))),
            _ => {}
        }
        out
    }

    pub fn action(&self) -> &'static str {
        match self {
            Step::Up(_) => "up",
            Step::Down(_) => "down",
            Step::Stop(_) => "stop",
            Step::Kill(_) => "kill",
            Step::Start(_) => "start",
            Step::Restart(_) => "restart",
            Step::Pause(_) => "pause",
            Step::Unpause(_) => "unpause",
            Step::Isolate(_) => "isolate",
            Step::Heal(_) => "heal",
            Step::Partition(_) => "partition",
            Step::HealPartition(_) => "heal-partition",
            Step::Wipe(_) => "wipe",
            Step::Recover(_) => "recover",
            Step::Ops(_) => "ops",
            Step::Join(_) => "join",
            Step::Expect(_) => "expect",
            Step::ExpectDown(_) => "expect-down",
            Step::Write(_) => "write",
            Step::Read(_) => "read",
            Step::Sleep(_) => "sleep",
            Step::WorkloadStart(_) => "workload-start",
            Step::WorkloadStop(_) => "workload-stop",
            Step::Verify(_) => "verify",
            Step::ChooseSurvivor(_) => "choose-survivor",
        }
    }
}

/// What a step does to the cluster: how its recovery time is measured and whether the
/// timeline marks it. One answer per action, used by the engine's measurements and the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Takes nodes away (stop, kill, pause, isolate): time to a leader among the others.
    Outage,
    /// Restarts nodes, which may lead again once back.
    Restart,
    /// A recovery command: measured from its end (the recovered node starts afterwards).
    Recovery,
    /// Changes the cluster without an outage of its own to measure (start, unpause, heal,
    /// wipe, join, partition, heal-partition): marked on the timeline only.
    Change,
}

impl FaultKind {
    /// Whether recovery times are measured after such a step.
    pub fn measured(self) -> bool {
        self != FaultKind::Change
    }
}

impl Step {
    /// What the step does to the cluster; `None` for steps that only observe or write data.
    pub fn fault_kind(&self) -> Option<FaultKind> {
        match self {
            Step::Stop(_) | Step::Kill(_) | Step::Pause(_) | Step::Isolate(_) => {
                Some(FaultKind::Outage)
            }
            Step::Restart(_) => Some(FaultKind::Restart),
            Step::Recover(_) => Some(FaultKind::Recovery),
            Step::Start(_)
            | Step::Unpause(_)
            | Step::Heal(_)
            | Step::Wipe(_)
            | Step::Join(_)
            | Step::Partition(_)
            | Step::HealPartition(_) => Some(FaultKind::Change),
            Step::Up(_)
            | Step::Down(_)
            | Step::Ops(_)
            | Step::Expect(_)
            | Step::ExpectDown(_)
            | Step::Write(_)
            | Step::Read(_)
            | Step::Sleep(_)
            | Step::WorkloadStart(_)
            | Step::WorkloadStop(_)
            | Step::Verify(_)
            | Step::ChooseSurvivor(_) => None,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Nodes {
    #[schemars(with = "Selector")]
    pub nodes: Spanned<Selector>,
    pub timeout: Option<Dur>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// Disjoint groups of nodes (selectors, resolved when the step runs). Nodes named in no
    /// group form one more group together.
    #[schemars(with = "Vec<Selector>")]
    pub groups: Vec<Spanned<Selector>>,
    /// Bound of resolving live selectors (`leader`, `any-follower`).
    pub timeout: Option<Dur>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Kill {
    #[schemars(with = "Selector")]
    pub nodes: Spanned<Selector>,
    /// e.g. "SIGKILL" (default), "SIGTERM".
    #[schemars(with = "Option<String>")]
    pub signal: Option<Spanned<String>>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recover {
    #[schemars(with = "Selector")]
    pub node: Spanned<Selector>,
    /// Extra arguments after the profile's recovery command.
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub expect_exit: i64,
    #[serde(default)]
    pub stdout_contains: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ops {
    #[schemars(with = "Selector")]
    pub node: Spanned<Selector>,
    /// The command: its first word is a program of the profile's image.
    #[schemars(with = "Vec<String>")]
    pub run: Spanned<Vec<String>>,
    #[serde(default)]
    pub expect_exit: i64,
    #[serde(default)]
    pub stdout_contains: Vec<String>,
    #[serde(default)]
    pub stderr_contains: Vec<String>,
    pub timeout: Option<Dur>,
    /// Keep the command's standard output as a run artifact of this name.
    pub stdout_to: Option<String>,
    /// Put the artifact of this name into the node's data directory first; `{input}` in `run`
    /// becomes its path there.
    pub input: Option<String>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Join {
    /// The (wiped, stopped) node that joins; several join one at a time, in order.
    #[schemars(with = "Selector")]
    pub node: Spanned<Selector>,
    /// Where the token is created (default `leader`).
    #[schemars(with = "Option<Selector>")]
    pub via: Option<Spanned<Selector>>,
    pub ttl_seconds: Option<u64>,
    pub timeout: Option<Dur>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Default: `running`.
    #[schemars(with = "Option<Selector>")]
    pub nodes: Option<Spanned<Selector>>,
    pub timeout: Option<Dur>,
    /// Poll this JSON endpoint of each node instead of the info endpoint (e.g.
    /// a cluster-wide status page); its top-level fields are matched.
    pub path: Option<String>,
    /// Field name -> matcher.
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub that: BTreeMap<String, Spanned<toml::Value>>,
    /// Capture name -> field: saved from the first selected node once the expectation holds.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub capture: BTreeMap<String, Spanned<String>>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectDown {
    #[schemars(with = "Selector")]
    pub nodes: Spanned<Selector>,
    pub timeout: Option<Dur>,
    /// Each node's log must say this (why it went down), in its last 200 lines: the proof
    /// that the node ran and stopped for the expected reason, not that it never started.
    pub log_contains: String,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Write {
    /// Default: `leader`.
    #[schemars(with = "Option<Selector>")]
    pub via: Option<Spanned<Selector>>,
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
    /// Also write `count` keys `<prefix>-<i>` (prefix default "key").
    #[serde(default)]
    pub count: u64,
    pub prefix: Option<String>,
    /// Pad each of the `count` values to this many bytes.
    pub value_bytes: Option<u64>,
    pub timeout: Option<Dur>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Read {
    /// Default: `leader`. Each selected node is read through (followers redirect).
    #[schemars(with = "Option<Selector>")]
    pub via: Option<Spanned<Selector>>,
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
    /// Read back every key every earlier `write` step acknowledged.
    #[serde(default)]
    pub all_written: bool,
    pub timeout: Option<Dur>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkloadStart {
    /// Writes per second (default 100); one write is in flight at a time.
    pub rate: Option<u64>,
    /// Key prefix (default "w").
    pub prefix: Option<String>,
    /// Writers running side by side, sharing `rate` (default 4).
    pub concurrency: Option<u64>,
    /// Start each write at the next running node in turn (following redirects), instead of at
    /// the node that acknowledged the last one: a stale leader, if any, receives writes too.
    #[serde(default)]
    pub spread: bool,
    /// Pad every value to this many bytes (default: short values like `v17`), to exercise
    /// large entries, appends and snapshots.
    pub value_bytes: Option<u64>,
    /// Also keep this many registers (keys `<prefix>reg-<i>`), each overwritten with an
    /// increasing counter by one writer, and read by as many readers through nodes taken in
    /// turn: the history the stale-read check runs on (default 0: none).
    pub registers: Option<u64>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChooseSurvivor {
    /// The candidates (default `stopped`); each must be stopped.
    #[schemars(with = "Option<Selector>")]
    pub among: Option<Spanned<Selector>>,
    /// Capture name for the chosen node's name.
    pub capture: String,
    /// Capture name for every other node of the cluster (a list of names): the nodes an
    /// operator wipes and rejoins after the recovery (`wipe`/`join` take it as a selector).
    pub others: Option<String>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    /// Acknowledged writes the scenario accepts to lose (default 0).
    #[serde(default)]
    pub max_lost: u64,
    /// Fewest acknowledged writes for the check to mean something (default 1).
    pub min_acked: Option<u64>,
    /// Writes acknowledged by a stale cluster (a node of the generation a `recover` replaced)
    /// the scenario accepts: default 0, unbounded when the scenario sets `allow_split_brain`.
    pub max_stale_acked: Option<u64>,
    /// Writes acknowledged before a `recover` step began may be lost (a recovery from a
    /// survivor that held no majority): they are counted as `lost_before_recovery` (the RPO)
    /// and `max_lost` bounds only the others.
    #[serde(default)]
    pub recovery_may_lose: bool,
    pub timeout: Option<Dur>,
}

#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sleep {
    pub duration: Dur,
}

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

pub fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    match v {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::json!(i),
        toml::Value::Float(x) => serde_json::json!(x),
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(a) => serde_json::Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            serde_json::Value::Object(t.iter().map(|(k, v)| (k.clone(), toml_to_json(v))).collect())
        }
    }
}

/// Turns a TOML matcher into a [`Matcher`], or says what was expected.
pub fn parse_matcher(v: &toml::Value) -> Result<Matcher, String> {
    let toml::Value::Table(t) = v else { return Ok(Matcher::Eq(toml_to_json(v))) };
    const OPS: &str = "one_of, ne, not_empty, same, gt, ge, lt, le, contains, excludes, len";
    if t.len() != 1 {
        return Err(format!("a matcher table holds exactly one of: {OPS}"));
    }
    let (op, arg) = t.iter().next().unwrap();
    let num = || {
        arg.as_integer()
            .map(|i| i as f64)
            .or(arg.as_float())
            .ok_or_else(|| format!("`{op}` takes a number"))
    };
    let yes = || match arg.as_bool() {
        Some(true) => Ok(()),
        _ => Err(format!("write `{op} = true`")),
    };
    Ok(match op.as_str() {
        "one_of" => match arg {
            toml::Value::Array(a) if !a.is_empty() => {
                Matcher::OneOf(a.iter().map(toml_to_json).collect())
            }
            _ => return Err("`one_of` takes a non-empty array".into()),
        },
        "ne" => Matcher::Ne(toml_to_json(arg)),
        "not_empty" => yes().map(|_| Matcher::NotEmpty)?,
        "same" => yes().map(|_| Matcher::Same)?,
        "gt" => Matcher::Gt(num()?),
        "ge" => Matcher::Ge(num()?),
        "lt" => Matcher::Lt(num()?),
        "le" => Matcher::Le(num()?),
        "contains" => Matcher::Contains(toml_to_json(arg)),
        "excludes" => Matcher::Excludes(toml_to_json(arg)),
        "len" => Matcher::Len(
            arg.as_integer().filter(|i| *i >= 0).ok_or("`len` takes a whole number")? as u64,
        ),
        other => return Err(format!("unknown matcher `{other}`; expected one of: {OPS}")),
    })
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

/// The profile a scenario names (`default` when it names none), without parsing the rest (to
/// load that profile first).
pub fn cluster_of(src: &str, default: &str) -> String {
    #[derive(Deserialize)]
    struct Only {
        cluster: Option<String>,
    }
    toml::from_str::<toml::Table>(src)
        .ok()
        .and_then(|t| Only::deserialize(toml::Value::Table(t)).ok())
        .and_then(|o| o.cluster)
        .unwrap_or_else(|| default.to_owned())
}

/// Parses and validates `src` (read from `file`) against `profile`.
pub fn parse(file: &Path, src: &str, profile: &Profile) -> Result<Scenario, ParseError> {
    let err_at = |offset: usize, message: String| {
        let (line, col) = line_col(src, offset);
        ParseError { file: file.to_owned(), line, col, message }
    };
    let raw: RawFile = toml::from_str(src).map_err(|e| {
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        err_at(offset, e.message().trim().to_owned())
    })?;
    let cluster = match &raw.cluster {
        Some(c) if c.get_ref() != &profile.name => {
            return Err(err_at(
                c.span().start,
                format!(
                    "unknown cluster profile {:?}; this run has {:?}",
                    c.get_ref(),
                    profile.name
                ),
            ))
        }
        Some(c) => c.get_ref().clone(),
        None => profile.name.clone(),
    };
    if raw.steps.is_empty() {
        return Err(err_at(0, "a scenario needs at least one [[step]]".into()));
    }

    let nodes: BTreeSet<&str> = profile.nodes.iter().map(|n| n.name.as_str()).collect();
    let mut captures: BTreeSet<String> = BTreeSet::new();
    let mut artifacts: BTreeSet<String> = BTreeSet::new();
    let mut steps = Vec::new();

    let check_selector = |sel: &Spanned<Selector>,
                          captures: &BTreeSet<String>,
                          single: bool|
     -> Result<(), ParseError> {
        let at = sel.span().start;
        for word in &sel.get_ref().0 {
            if let Some(r) = word.strip_prefix("${").and_then(|w| w.strip_suffix('}')) {
                if !captures.contains(r) {
                    return Err(err_at(
                        at,
                        format!("`${{{r}}}` refers to nothing: no earlier step captures {r:?}"),
                    ));
                }
            } else if !nodes.contains(word.as_str()) && !SELECTOR_WORDS.contains(&word.as_str()) {
                return Err(err_at(
                    at,
                    format!(
                        "unknown node {word:?}; expected one of {} or {}",
                        nodes.iter().copied().collect::<Vec<_>>().join(", "),
                        SELECTOR_WORDS.join(", ")
                    ),
                ));
            }
        }
        if single
            && (sel.get_ref().0.len() != 1
                || ["all", "running", "followers"].contains(&sel.get_ref().0[0].as_str()))
        {
            return Err(err_at(at, "this step acts on exactly one node: a name, `leader`, `any-follower` or `${capture}`".into()));
        }
        Ok(())
    };
    let check_refs = |s: &str,
                      at: usize,
                      captures: &BTreeSet<String>,
                      allow_self: bool|
     -> Result<(), ParseError> {
        for r in references(s) {
            let ok = match r.split_once('.') {
                Some(("self", f)) => allow_self && !f.is_empty(),
                Some((n, f)) => {
                    (nodes.contains(n) || n == "leader" || captures.contains(n)) && !f.is_empty()
                }
                None => captures.contains(r),
            };
            if !ok {
                let hint = if allow_self { "self.FIELD, " } else { "" };
                return Err(err_at(
                    at,
                    format!("`${{{r}}}` refers to nothing; expected {hint}NODE.FIELD (NODE a node name, leader, or a capture holding a node name) or a name captured by an earlier step"),
                ));
            }
        }
        Ok(())
    };

    for spanned in raw.steps {
        let at = spanned.span().start;
        let line = line_col(src, at).0;
        let step = spanned.into_inner();
        let mut matchers = Vec::new();
        match &step {
            Step::Up(_)
            | Step::Down(_)
            | Step::Sleep(_)
            | Step::WorkloadStop(_)
            | Step::HealPartition(_)
            | Step::Verify(_) => {}
            Step::Partition(p) => {
                if p.groups.is_empty() {
                    return Err(err_at(
                        at,
                        "`partition` needs at least one group in `groups`".into(),
                    ));
                }
                let mut named: BTreeMap<&str, usize> = BTreeMap::new();
                for (i, g) in p.groups.iter().enumerate() {
                    check_selector(g, &captures, false)?;
                    for w in &g.get_ref().0 {
                        if ["all", "running"].contains(&w.as_str()) {
                            return Err(err_at(g.span().start, format!("a partition group cannot be `{w}`: the groups must be disjoint")));
                        }
                        if nodes.contains(w.as_str()) {
                            if let Some(j) = named.insert(w, i) {
                                if j != i {
                                    return Err(err_at(
                                        g.span().start,
                                        format!(
                                            "{w} is in two groups; the groups must be disjoint"
                                        ),
                                    ));
                                }
                            }
                        }
                    }
                }
            }
            Step::ChooseSurvivor(c) => {
                if let Some(a) = &c.among {
                    check_selector(a, &captures, false)?;
                }
                captures.insert(c.capture.clone());
                if let Some(o) = &c.others {
                    captures.insert(o.clone());
                }
            }
            Step::WorkloadStart(w) => {
                if w.registers.is_some_and(|r| r > 64) {
                    return Err(err_at(at, "`registers` must be at most 64".into()));
                }
                if w.rate == Some(0) || w.rate.is_some_and(|r| r > 2000) {
                    return Err(err_at(
                        at,
                        "`rate` must be between 1 and 2000 writes per second".into(),
                    ));
                }
                if w.concurrency == Some(0) || w.concurrency.is_some_and(|c| c > 32) {
                    return Err(err_at(at, "`concurrency` must be between 1 and 32".into()));
                }
            }
            Step::Stop(n)
            | Step::Start(n)
            | Step::Restart(n)
            | Step::Pause(n)
            | Step::Unpause(n)
            | Step::Isolate(n)
            | Step::Heal(n)
            | Step::Wipe(n) => check_selector(&n.nodes, &captures, false)?,
            Step::ExpectDown(d) => check_selector(&d.nodes, &captures, false)?,
            Step::Kill(k) => {
                check_selector(&k.nodes, &captures, false)?;
                if let Some(s) = &k.signal {
                    if !crate::backend::SIGNALS.contains(&s.get_ref().as_str()) {
                        return Err(err_at(
                            s.span().start,
                            format!(
                                "unknown signal {:?}; expected one of {}",
                                s.get_ref(),
                                crate::backend::SIGNALS.join(", ")
                            ),
                        ));
                    }
                }
            }
            Step::Recover(r) => check_selector(&r.node, &captures, true)?,
            Step::Ops(o) => {
                check_selector(&o.node, &captures, true)?;
                let words = o.run.get_ref();
                let programs = profile.programs();
                if words.is_empty() || !programs.contains(&words[0]) {
                    return Err(err_at(
                        o.run.span().start,
                        format!(
                            "`run` must start with one of the profile's programs: {}",
                            programs.join(", ")
                        ),
                    ));
                }
                for w in words {
                    check_refs(w, o.run.span().start, &captures, false)?;
                }
                if let Some(i) = &o.input {
                    if !artifacts.contains(i) {
                        return Err(err_at(at, format!("`input = {i:?}` refers to nothing: no earlier ops step has `stdout_to = {i:?}`")));
                    }
                }
                if let Some(name) = &o.stdout_to {
                    artifacts.insert(name.clone());
                }
            }
            Step::Join(j) => {
                check_selector(&j.node, &captures, false)?;
                if let Some(v) = &j.via {
                    check_selector(v, &captures, true)?;
                }
            }
            Step::Expect(e) => {
                if let Some(n) = &e.nodes {
                    check_selector(n, &captures, false)?;
                }
                if e.that.is_empty() {
                    return Err(err_at(at, "`expect` needs at least one field in `that`".into()));
                }
                let known = crate::target::state::fields(&profile.target);
                for (field, value) in &e.that {
                    if let Some(known) =
                        known.as_ref().filter(|k| e.path.is_none() && !k.contains(field))
                    {
                        return Err(err_at(
                            value.span().start,
                            format!(
                                "unknown field {field:?} of a node's state; expected one of {}",
                                known.join(", ")
                            ),
                        ));
                    }
                    let m = parse_matcher(value.get_ref())
                        .map_err(|m| err_at(value.span().start, m))?;
                    let mut strings = Vec::new();
                    collect_strings(value.get_ref(), &mut strings);
                    for s in strings {
                        check_refs(&s, value.span().start, &captures, true)?;
                    }
                    matchers.push((field.clone(), m));
                }
                for (name, field) in &e.capture {
                    if known.as_ref().is_some_and(|k| !k.contains(field.get_ref())) {
                        return Err(err_at(
                            field.span().start,
                            format!("cannot capture unknown field {:?}", field.get_ref()),
                        ));
                    }
                    captures.insert(name.clone());
                }
            }
            Step::Write(w) => {
                if let Some(v) = &w.via {
                    check_selector(v, &captures, true)?;
                }
                if w.keys.is_empty() && w.count == 0 {
                    return Err(err_at(at, "`write` needs `keys` or `count`".into()));
                }
            }
            Step::Read(r) => {
                if let Some(v) = &r.via {
                    check_selector(v, &captures, false)?;
                }
                if r.keys.is_empty() && !r.all_written {
                    return Err(err_at(at, "`read` needs `keys` or `all_written = true`".into()));
                }
            }
        }
        steps.push(PlacedStep { step, line, matchers });
    }
    Ok(Scenario {
        file: file.to_owned(),
        name: raw.name,
        summary: raw.summary,
        cluster,
        defaults: raw.defaults,
        allow_split_brain: raw.allow_split_brain,
        steps,
    })
}

fn collect_strings(v: &toml::Value, out: &mut Vec<String>) {
    match v {
        toml::Value::String(s) => out.push(s.clone()),
        toml::Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        toml::Value::Table(t) => t.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

/// Reads and parses a scenario file.
pub fn load(file: &Path, profile: &Profile) -> Result<Scenario, ParseError> {
    let src = std::fs::read_to_string(file).map_err(|e| ParseError {
        file: file.to_owned(),
        line: 0,
        col: 0,
        message: format!("cannot read: {e}"),
    })?;
    parse(file, &src, profile)
}

/// The plan of a scenario, without running anything: each step, its selectors and what they
/// resolve to before the run (names and `all` statically; roles and captures only live).
pub fn render_plan(s: &Scenario, profile: &Profile) -> String {
    let mut out = format!(
        "plan of {} ({}), cluster {}: {} steps, default timeout {:?}\n",
        s.name,
        s.file.display(),
        s.cluster,
        s.steps.len(),
        s.default_timeout()
    );
    let all: Vec<&str> = profile.nodes.iter().map(|n| n.name.as_str()).collect();
    for (i, p) in s.steps.iter().enumerate() {
        let mut parts = Vec::new();
        for (field, sel) in p.step.selectors() {
            let resolved: Vec<String> = sel
                .0
                .iter()
                .map(|w| match w.as_str() {
                    "all" => all.join(","),
                    "running" | "stopped" | "leader" | "followers" | "any-follower" => {
                        format!("{w} (live)")
                    }
                    w if w.starts_with("${") => format!("{w} (captured earlier)"),
                    w => w.to_owned(),
                })
                .collect();
            parts.push(format!("{field}={sel} → {}", resolved.join(", ")));
        }
        for (f, m) in &p.matchers {
            parts.push(format!("{f} {m}"));
        }
        out.push_str(&format!(
            "[{:>2}] line {:<3} {:<16} {}\n",
            i + 1,
            p.line,
            p.step.action(),
            parts.join("; ")
        ));
    }
    out
}
