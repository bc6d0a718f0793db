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
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::model::*;
use crate::profile::Profile;

mod matcher;
mod plan;
mod schema;

pub use matcher::{parse_matcher, toml_to_json};
pub use plan::render_plan;
pub use schema::json_schema;

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
                    if !SIGNALS.contains(&s.get_ref().as_str()) {
                        return Err(err_at(
                            s.span().start,
                            format!(
                                "unknown signal {:?}; expected one of {}",
                                s.get_ref(),
                                SIGNALS.join(", ")
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
