//! The `[target]` section of a profile: how the runner reads a node's state and writes and
//! reads keys, declared as HTTP requests answered with JSON, JSON pointers into those answers,
//! and role names. Checked when the profile loads, so a pointer into a document the profile
//! never reads is refused before anything starts.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// One HTTP request the runner sends a node; its answer is a JSON document.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// `GET` when absent.
    #[serde(default)]
    pub method: Option<Spanned<String>>,
    /// Starts with `/`; `{key}` is replaced by the key (KV requests only).
    pub path: Spanned<String>,
    /// A JSON body (a TOML table); the strings `"{key}"` and `"{value}"` anywhere in it are
    /// replaced by the key and value, encoded as the KV section says.
    #[serde(default)]
    pub body: Option<toml::Value>,
    /// Top-level fields the answer has (for checking pointers and `expect` steps); empty: any.
    #[serde(default)]
    pub fields: Vec<String>,
}

impl RequestSpec {
    pub fn method(&self) -> &str {
        self.method.as_ref().map(|m| m.get_ref().as_str()).unwrap_or("GET")
    }
}

/// Where a piece of a node's state comes from: an HTTP request to the node, or a command run
/// beside it (in its container, or as a local process) that prints one JSON document.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "RawSource")]
pub enum SourceSpec {
    Http(RequestSpec),
    Command(CommandSpec),
}

/// A command source: `{port}` and `{peer_port}` (where the node listens, as the command sees
/// it) and `{node}` are filled in.
#[derive(Clone, Debug)]
pub struct CommandSpec {
    pub command: Spanned<Vec<String>>,
    pub fields: Vec<String>,
}

/// A source as written: `path` (with `method`, `body`) or `command`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    #[serde(default)]
    method: Option<Spanned<String>>,
    #[serde(default)]
    path: Option<Spanned<String>>,
    #[serde(default)]
    body: Option<toml::Value>,
    #[serde(default)]
    command: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    fields: Vec<String>,
}

impl TryFrom<RawSource> for SourceSpec {
    type Error = String;

    fn try_from(r: RawSource) -> Result<SourceSpec, String> {
        match (r.path, r.command) {
            (Some(path), None) => Ok(SourceSpec::Http(RequestSpec {
                method: r.method,
                path,
                body: r.body,
                fields: r.fields,
            })),
            (None, Some(command)) if r.method.is_some() || r.body.is_some() => {
                let _ = command;
                Err("a command source takes no `method` or `body` (those are HTTP's)".into())
            }
            (None, Some(command)) if command.get_ref().is_empty() => {
                Err("`command` is empty: name a program and its arguments".into())
            }
            (None, Some(command)) => {
                Ok(SourceSpec::Command(CommandSpec { command, fields: r.fields }))
            }
            (Some(_), Some(_)) => {
                Err("a source is an HTTP request (`path`) or a `command`, not both".into())
            }
            (None, None) => {
                Err("a source needs a `path` (an HTTP request) or a `command` (run beside the \
                     node, printing JSON)"
                    .into())
            }
        }
    }
}

impl SourceSpec {
    pub fn fields(&self) -> &[String] {
        match self {
            SourceSpec::Http(r) => &r.fields,
            SourceSpec::Command(c) => &c.fields,
        }
    }

    /// Where it is declared (for errors).
    pub fn span(&self) -> std::ops::Range<usize> {
        match self {
            SourceSpec::Http(r) => r.path.span(),
            SourceSpec::Command(c) => c.command.span(),
        }
    }

    /// How it is shown: the path, or the command line.
    pub fn shown(&self) -> String {
        match self {
            SourceSpec::Http(r) => r.path.get_ref().clone(),
            SourceSpec::Command(c) => c.command.get_ref().join(" "),
        }
    }
}

/// Where each piece of a node's state is, as JSON pointers whose first segment names a source
/// (`/info/term` is `/term` in the `info` source's answer).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSpec {
    pub node_id: Spanned<String>,
    /// Whether the node says it is a learner (a boolean); absent: from its member entry.
    #[serde(default)]
    pub learner: Option<Spanned<String>>,
    /// The node's name (the profile's node name); absent: its member entry's name.
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    /// Absent: derived, `leader` when `leader_id` is the node's own id, `follower` when it
    /// names another node, `candidate` when there is none.
    #[serde(default)]
    pub role: Option<Spanned<String>>,
    pub term: Spanned<String>,
    pub leader_id: Spanned<String>,
    /// Index of the node's last log entry (or its commit index, if that is all it says).
    #[serde(default)]
    pub log_index: Option<Spanned<String>>,
    /// Index of the last entry the node applied: how the runner tells a committing leader from
    /// a deposed one that still says "leader" (split-brain detection).
    #[serde(default)]
    pub applied_index: Option<Spanned<String>>,
    #[serde(default)]
    pub cluster_id: Option<Spanned<String>>,
    /// Absent: the members not marked learners.
    #[serde(default)]
    pub voters: Option<Spanned<String>>,
    #[serde(default)]
    pub learners: Option<Spanned<String>>,
    #[serde(default)]
    pub health: Option<Spanned<String>>,
    /// The node's own URL and its leader's, as the cluster knows them.
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    #[serde(default)]
    pub leader_url: Option<Spanned<String>>,
    /// An array of member objects; the `member_*` pointers are relative to one member.
    #[serde(default)]
    pub members: Option<Spanned<String>>,
    #[serde(default)]
    pub member_id: Option<Spanned<String>>,
    #[serde(default)]
    pub member_name: Option<Spanned<String>>,
    #[serde(default)]
    pub member_url: Option<Spanned<String>>,
    #[serde(default)]
    pub member_learner: Option<Spanned<String>>,
}

/// How the system names its roles (when `state.role` is read, not derived).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolesSpec {
    pub leader: String,
    pub follower: String,
    #[serde(default)]
    pub candidate: Option<String>,
    #[serde(default)]
    pub learner: Option<String>,
}

/// How keys and values travel in KV requests.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    /// As they are.
    #[default]
    Plain,
    /// Standard base64 (etcd's JSON gateway).
    Base64,
}

/// The workload's writes and reads.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvSpec {
    pub write: RequestSpec,
    pub read: RequestSpec,
    /// Pointer to the value in a read's answer; absent there (or a `missing_status` answer):
    /// the key does not exist.
    pub value: Spanned<String>,
    #[serde(default)]
    pub encoding: Encoding,
    #[serde(default)]
    pub missing_status: Option<u16>,
    /// Statuses that mean the write was certainly not applied (xp's 503 before a leader took
    /// it). Any other failure leaves the write's fate unknown.
    #[serde(default)]
    pub refused_status: Vec<u16>,
    /// Follow `Location` redirects (a follower pointing at its leader).
    #[serde(default)]
    pub follow_redirects: bool,
}

/// A profile's `[target]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// Documents read from every node, by name.
    pub sources: BTreeMap<String, SourceSpec>,
    /// The source whose fields also appear at the top level of what `expect` steps see;
    /// absent: the first in name order.
    #[serde(default)]
    pub primary: Option<Spanned<String>>,
    pub state: StateSpec,
    #[serde(default)]
    pub roles: Option<RolesSpec>,
    pub kv: KvSpec,
}

/// A `[target]` that cannot work, with the byte span of the offending value.
#[derive(Debug, PartialEq, Eq)]
pub struct SpecError {
    pub span: std::ops::Range<usize>,
    pub message: String,
}

const METHODS: &[&str] = &["GET", "POST", "PUT"];

impl TargetSpec {
    /// Every pointer names a declared source (and, where the source lists its fields, one of
    /// them), every request is a method this runner sends to a path.
    pub fn check(&self) -> Result<(), SpecError> {
        let http = self.sources.values().filter_map(|s| match s {
            SourceSpec::Http(r) => Some(r),
            SourceSpec::Command(_) => None,
        });
        for r in http.chain([&self.kv.write, &self.kv.read]) {
            check_request(r)?;
        }
        for (name, source) in &self.sources {
            let SourceSpec::Command(c) = source else { continue };
            if let Some(bad) = c.command.get_ref().iter().find_map(|w| unknown_placeholder(w)) {
                return Err(SpecError {
                    span: c.command.span(),
                    message: format!(
                        "target.sources.{name}: `{bad}` is not filled in for a command source \
                         (only `{{port}}` and `{{peer_port}}`, where the node listens as the \
                         command sees it)"
                    ),
                });
            }
        }
        if let Some(SourceSpec::Command(c)) = self.sources.get(self.primary()) {
            return Err(SpecError {
                span: c.command.span(),
                message: format!(
                    "the primary source {:?} is read several times a second and tells when a \
                     node answers: make it an HTTP request, and a command another source",
                    self.primary()
                ),
            });
        }
        if let Some(p) = self.primary.as_ref().filter(|p| !self.sources.contains_key(p.get_ref())) {
            return Err(SpecError {
                span: p.span(),
                message: format!("primary = {:?} names no source of [target.sources]", p.get_ref()),
            });
        }
        if !self.kv.write.path.get_ref().contains("{key}")
            && !body_mentions(self.kv.write.body.as_ref(), "{key}")
        {
            return Err(SpecError {
                span: self.kv.write.path.span(),
                message: "kv.write names no `{key}` (in its path or body)".into(),
            });
        }
        if !self.kv.read.path.get_ref().contains("{key}")
            && !body_mentions(self.kv.read.body.as_ref(), "{key}")
        {
            return Err(SpecError {
                span: self.kv.read.path.span(),
                message: "kv.read names no `{key}` (in its path or body)".into(),
            });
        }
        if let Some(name) = self.sources.keys().find(|n| super::state::FIELDS.contains(&n.as_str()))
        {
            return Err(SpecError {
                span: self.sources[name].span(),
                message: format!(
                    "a source may not be called {name:?}: that is a field of every node's state"
                ),
            });
        }
        if !body_mentions(self.kv.write.body.as_ref(), "{value}") {
            return Err(SpecError {
                span: self.kv.write.path.span(),
                message: "kv.write has no body with `\"{value}\"` in it".into(),
            });
        }
        let s = &self.state;
        let top = [
            Some(&s.node_id),
            s.learner.as_ref(),
            s.name.as_ref(),
            s.role.as_ref(),
            Some(&s.term),
            Some(&s.leader_id),
            s.log_index.as_ref(),
            s.applied_index.as_ref(),
            s.cluster_id.as_ref(),
            s.voters.as_ref(),
            s.learners.as_ref(),
            s.health.as_ref(),
            s.url.as_ref(),
            s.leader_url.as_ref(),
            s.members.as_ref(),
        ];
        for p in top.into_iter().flatten() {
            self.check_pointer(p)?;
        }
        for p in
            [&s.member_id, &s.member_name, &s.member_url, &s.member_learner].into_iter().flatten()
        {
            if !p.get_ref().starts_with('/') {
                return Err(SpecError {
                    span: p.span(),
                    message: format!(
                        "{:?} is not a JSON pointer (it starts with `/`)",
                        p.get_ref()
                    ),
                });
            }
            if s.members.is_none() {
                return Err(SpecError {
                    span: p.span(),
                    message: "a member_* pointer needs state.members".into(),
                });
            }
        }
        if s.voters.is_none() && (s.members.is_none() || s.member_id.is_none()) {
            return Err(SpecError {
                span: s.node_id.span(),
                message: "state needs `voters`, or `members` and `member_id` to derive them".into(),
            });
        }
        if let (Some(role), None) = (&s.role, &self.roles) {
            return Err(SpecError {
                span: role.span(),
                message: "state.role is read from the node: name its values in [target.roles]"
                    .into(),
            });
        }
        if !self.kv.value.get_ref().starts_with('/') {
            return Err(SpecError {
                span: self.kv.value.span(),
                message: format!(
                    "{:?} is not a JSON pointer (it starts with `/`)",
                    self.kv.value.get_ref()
                ),
            });
        }
        Ok(())
    }

    fn check_pointer(&self, p: &Spanned<String>) -> Result<(), SpecError> {
        let err = |message: String| SpecError { span: p.span(), message };
        let text = p.get_ref();
        let parts = text.strip_prefix('/').ok_or_else(|| {
            err(format!("{text:?} is not a JSON pointer (it starts with `/<source>/`)"))
        })?;
        if parts.ends_with('/') || parts.contains("//") {
            return Err(err(format!(
                "{text:?} has an empty segment (a trailing or doubled `/`), which names a field \
                 called \"\""
            )));
        }
        let mut segs = parts.split('/');
        let source = segs.next().unwrap_or("");
        let Some(spec) = self.sources.get(source) else {
            let known: Vec<&str> = self.sources.keys().map(String::as_str).collect();
            return Err(err(format!(
                "{text:?} reads the source {source:?}, which [target.sources] does not declare \
                 (declared: {})",
                known.join(", ")
            )));
        };
        if let Some(field) = segs.next() {
            let fields = spec.fields();
            if !fields.is_empty() && !fields.iter().any(|f| f == field) {
                return Err(err(format!(
                    "{text:?}: the {source} source has no field {field:?} (its fields: {})",
                    fields.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The source whose fields `expect` also sees at the top level.
    pub fn primary(&self) -> &str {
        match &self.primary {
            Some(p) => p.get_ref(),
            None => self.sources.keys().next().map(String::as_str).unwrap_or(""),
        }
    }
}

/// The first `{name}` (lowercase letters and `_`: not JSON) in `word` other than `{port}`
/// and `{peer_port}`.
fn unknown_placeholder(word: &str) -> Option<String> {
    let mut rest = word;
    while let Some(start) = rest.find('{') {
        let after = &rest[start..];
        let end = after.find('}')?;
        let p = &after[..=end];
        let name = &p[1..p.len() - 1];
        let is_name = !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        if is_name && p != "{port}" && p != "{peer_port}" {
            return Some(p.to_owned());
        }
        rest = &after[end + 1..];
    }
    None
}

fn check_request(r: &RequestSpec) -> Result<(), SpecError> {
    if let Some(m) = r.method.as_ref().filter(|m| !METHODS.contains(&m.get_ref().as_str())) {
        return Err(SpecError {
            span: m.span(),
            message: format!("method {:?} is not one of {}", m.get_ref(), METHODS.join(", ")),
        });
    }
    if !r.path.get_ref().starts_with('/') {
        return Err(SpecError {
            span: r.path.span(),
            message: format!("path {:?} must start with `/`", r.path.get_ref()),
        });
    }
    Ok(())
}

fn body_mentions(body: Option<&toml::Value>, placeholder: &str) -> bool {
    match body {
        Some(toml::Value::String(s)) => s == placeholder,
        Some(toml::Value::Table(t)) => t.values().any(|v| body_mentions(Some(v), placeholder)),
        Some(toml::Value::Array(a)) => a.iter().any(|v| body_mentions(Some(v), placeholder)),
        _ => false,
    }
}
