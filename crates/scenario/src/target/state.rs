//! A node's state as the runner understands it, whatever system answered: mapped from the
//! profile's sources by its JSON pointers.

use serde::Serialize;
use serde_json::{Map, Value};

use super::spec::{RolesSpec, StateSpec, TargetSpec};

/// A node's role. Systems that do not report one get it derived from who they say leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    /// A role the profile does not name (e.g. `shutdown`).
    Other(String),
}

impl Role {
    pub fn as_str(&self) -> &str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Other(s) => s,
        }
    }

    fn named(raw: &str, roles: &RolesSpec) -> Role {
        if raw == roles.leader {
            Role::Leader
        } else if raw == roles.follower {
            Role::Follower
        } else if roles.candidate.as_deref() == Some(raw) {
            Role::Candidate
        } else if roles.learner.as_deref() == Some(raw) {
            Role::Learner
        } else {
            Role::Other(raw.to_owned())
        }
    }
}

/// One member of the node's view of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Member {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub learner: bool,
}

/// What one node says about itself and its cluster. Ids are strings: xp's are numbers, etcd's
/// are 64-bit hashes its JSON gateway renders as strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub node_id: Option<String>,
    pub name: Option<String>,
    pub role: Role,
    pub term: u64,
    pub leader_id: Option<String>,
    pub log_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub cluster_id: Option<String>,
    pub voters: Vec<String>,
    pub learners: Vec<String>,
    pub health: Option<String>,
    pub url: Option<String>,
    pub leader_url: Option<String>,
    pub members: Vec<Member>,
}

/// A node's state and the document `expect` steps match against.
#[derive(Clone, Debug)]
pub struct Observed {
    pub status: NodeStatus,
    pub doc: Value,
}

/// An id as a string: numbers printed, strings kept; null, absent, empty or `0`: none.
fn id_of(v: Option<&Value>) -> Option<String> {
    let s = match v? {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    (!s.is_empty() && s != "0").then_some(s)
}

/// A count from a number or a numeric string.
fn u64_of(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn ids_of(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| id_of(Some(x))).collect())
        .unwrap_or_default()
}

fn str_of(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
}

fn at<'a>(sources: &'a Value, p: Option<&toml::Spanned<String>>) -> Option<&'a Value> {
    sources.pointer(p?.get_ref())
}

/// Maps the answers of every source (`{source name: answer}`) to a node's state.
pub fn map(spec: &TargetSpec, sources: &Value) -> NodeStatus {
    let s: &StateSpec = &spec.state;
    let node_id = id_of(at(sources, Some(&s.node_id)));
    let leader_id = id_of(at(sources, Some(&s.leader_id)));
    let members: Vec<Member> = at(sources, s.members.as_ref())
        .and_then(Value::as_array)
        .map(|ms| {
            ms.iter()
                .filter_map(|m| {
                    let id = id_of(m.pointer(s.member_id.as_ref()?.get_ref()))?;
                    let name = s.member_name.as_ref().and_then(|p| str_of(m.pointer(p.get_ref())));
                    let url = s.member_url.as_ref().and_then(|p| {
                        let v = m.pointer(p.get_ref())?;
                        // etcd lists URLs; the first is the one.
                        str_of(Some(v)).or_else(|| str_of(v.as_array()?.first()))
                    });
                    let learner = s
                        .member_learner
                        .as_ref()
                        .and_then(|p| m.pointer(p.get_ref()))
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                    Some(Member { id, name, url, learner })
                })
                .collect()
        })
        .unwrap_or_default();
    let voters = match &s.voters {
        Some(p) => ids_of(sources.pointer(p.get_ref())),
        None => members.iter().filter(|m| !m.learner).map(|m| m.id.clone()).collect(),
    };
    let learners = match &s.learners {
        Some(p) => ids_of(sources.pointer(p.get_ref())),
        None => members.iter().filter(|m| m.learner).map(|m| m.id.clone()).collect(),
    };
    // A node that says it is a learner is one, whatever it names as leader.
    let says_learner = at(sources, s.learner.as_ref()).and_then(Value::as_bool) == Some(true);
    let role = match (&s.role, &spec.roles) {
        (Some(p), Some(roles)) => match str_of(sources.pointer(p.get_ref())) {
            Some(raw) => Role::named(&raw, roles),
            None => Role::Other("?".into()),
        },
        _ => match (&node_id, &leader_id) {
            _ if says_learner => Role::Learner,
            (Some(me), _) if learners.contains(me) => Role::Learner,
            (Some(me), Some(l)) if me == l => Role::Leader,
            (_, Some(_)) => Role::Follower,
            (_, None) => Role::Candidate,
        },
    };
    let leader_url = str_of(at(sources, s.leader_url.as_ref())).or_else(|| {
        let l = leader_id.as_ref()?;
        members.iter().find(|m| &m.id == l)?.url.clone()
    });
    let name = str_of(at(sources, s.name.as_ref())).or_else(|| {
        let me = node_id.as_ref()?;
        members.iter().find(|m| &m.id == me)?.name.clone()
    });
    let url = str_of(at(sources, s.url.as_ref())).or_else(|| {
        let me = node_id.as_ref()?;
        members.iter().find(|m| &m.id == me)?.url.clone()
    });
    NodeStatus {
        node_id,
        name,
        role,
        term: u64_of(at(sources, Some(&s.term))).unwrap_or(0),
        leader_id,
        log_index: u64_of(at(sources, s.log_index.as_ref())),
        applied_index: u64_of(at(sources, s.applied_index.as_ref())),
        cluster_id: id_of(at(sources, s.cluster_id.as_ref())),
        voters,
        learners,
        health: str_of(at(sources, s.health.as_ref())),
        url,
        leader_url,
        members,
    }
}

/// The document an `expect` step sees: the state's fields under the runner's names, every
/// source's answer under its own name, and the primary source's fields at the top level (they
/// win a clash, so a profile keeps its system's own spelling and types).
pub fn document(spec: &TargetSpec, status: &NodeStatus, sources: &Value) -> Value {
    let opt = |v: &Option<String>| v.clone().map(Value::String).unwrap_or(Value::Null);
    let num = |v: Option<u64>| v.map(Value::from).unwrap_or(Value::Null);
    let mut doc = Map::new();
    doc.insert("node_id".into(), opt(&status.node_id));
    doc.insert("name".into(), opt(&status.name));
    doc.insert("role".into(), Value::String(status.role.as_str().to_owned()));
    doc.insert("term".into(), Value::from(status.term));
    doc.insert("leader_id".into(), opt(&status.leader_id));
    doc.insert("log_index".into(), num(status.log_index));
    doc.insert("applied_index".into(), num(status.applied_index));
    doc.insert("cluster_id".into(), opt(&status.cluster_id));
    doc.insert("voters".into(), status.voters.clone().into());
    doc.insert("learners".into(), status.learners.clone().into());
    doc.insert("health".into(), opt(&status.health));
    doc.insert("url".into(), opt(&status.url));
    doc.insert("leader_url".into(), opt(&status.leader_url));
    doc.insert("members".into(), serde_json::to_value(&status.members).unwrap_or(Value::Null));
    if let Value::Object(all) = sources {
        for (name, answer) in all {
            doc.insert(name.clone(), answer.clone());
        }
        if let Some(Value::Object(primary)) = all.get(spec.primary()) {
            for (k, v) in primary {
                doc.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(doc)
}

/// The names `expect` may match on: the state's, the sources', and the primary source's
/// declared fields.
pub fn fields(spec: &TargetSpec) -> Option<Vec<String>> {
    let primary = spec.sources.get(spec.primary())?;
    if primary.fields().is_empty() {
        return None;
    }
    let mut out: Vec<String> = FIELDS.iter().map(|s| s.to_string()).collect();
    out.extend(spec.sources.keys().cloned());
    out.extend(primary.fields().iter().cloned());
    out.sort();
    out.dedup();
    Some(out)
}

/// The state fields every target has, under the runner's names.
pub const FIELDS: &[&str] = &[
    "node_id",
    "name",
    "role",
    "term",
    "leader_id",
    "log_index",
    "applied_index",
    "cluster_id",
    "voters",
    "learners",
    "health",
    "url",
    "leader_url",
    "members",
];
