//! The system under test, as the engine sees it: read a node's state, write and read a key.
//!
//! What sqllogictest's `AsyncDB` is to its runner, [`Target`] is to the step engine: the one
//! place that speaks a system's wire format. It is declared by the profile's `[target]`
//! ([`spec`]): HTTP requests answered with JSON or commands run beside a node that print JSON
//! (`etcdctl member list -w json`), JSON pointers into the answers, role names, and the KV
//! requests with their own notion of "acknowledged" and of redirects. Each system is one
//! profile (etcd's is its v3 JSON gateway and etcdctl). Membership changes, recovery and
//! inspection are the profile's commands, run by the backend.

mod endpoints;
pub mod spec;
pub mod state;

use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

pub use endpoints::Endpoints;
pub use spec::TargetSpec;
pub use state::{Member, NodeStatus, Observed, Role};

use crate::backend::Exec;
use spec::{CommandSpec, Encoding, RequestSpec, SourceSpec};

/// The document's field naming each secondary source that failed, and why.
pub const SOURCE_ERRORS: &str = "source_errors";
/// One write's fate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteOutcome {
    /// The cluster answered success.
    Acked,
    /// Refused before it could have been applied (no leader, connection refused).
    Failed,
    /// Timed out or broke mid-flight: it may or may not have been applied.
    Unknown,
}

/// Why a node's state could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// Connection refused, or no endpoint: the node is down.
    Down(String),
    /// It did not answer in time, or answered something else than the state.
    NoAnswer(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Down(e) | ReadError::NoAnswer(e) => f.write_str(e),
        }
    }
}

/// A write the cluster did not acknowledge.
#[derive(Clone, Debug)]
pub struct PutError {
    /// `Failed` when the answer says it was certainly not applied, else `Unknown`.
    pub outcome: WriteOutcome,
    pub detail: String,
}

/// A profile's target with an HTTP client (each user picks its own timeouts) and the
/// backend's way of running commands beside a node.
#[derive(Clone)]
pub struct Target {
    spec: std::sync::Arc<TargetSpec>,
    http: reqwest::Client,
    exec: std::sync::Arc<dyn Exec>,
}

/// How long a command source may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

impl Target {
    /// `http` must not follow redirects itself (the target maps them to runner URLs).
    pub fn new(
        spec: std::sync::Arc<TargetSpec>,
        http: reqwest::Client,
        exec: std::sync::Arc<dyn Exec>,
    ) -> Target {
        Target { spec, http, exec }
    }

    pub fn spec(&self) -> &TargetSpec {
        &self.spec
    }

    /// Every source of `node` (whose API is at `base`), mapped to its state. The primary
    /// source must answer; another that fails (an etcd learner refuses the member list) is
    /// left out, so the fields read from it are absent.
    /// Every source (a command source runs a process); a secondary source that fails leaves
    /// its fields out and says why under [`SOURCE_ERRORS`] in the document.
    pub async fn read(&self, node: &str, base: &str) -> Result<Observed, ReadError> {
        self.read_sources(node, base, true).await
    }

    /// The primary source alone: role, term, leader and indexes, as often as the sampler
    /// asks (a command source costs a process).
    pub async fn read_primary(&self, node: &str, base: &str) -> Result<Observed, ReadError> {
        self.read_sources(node, base, false).await
    }

    async fn read_sources(&self, node: &str, base: &str, all: bool) -> Result<Observed, ReadError> {
        let mut sources = serde_json::Map::new();
        let mut failed = serde_json::Map::new();
        let primary = self.spec.primary().to_owned();
        let others = self.spec.sources.keys().filter(|n| all && **n != primary);
        let names: Vec<&String> = std::iter::once(&primary).chain(others).collect();
        for name in names {
            let Some(source) = self.spec.sources.get(name) else { continue };
            let answer = match source {
                SourceSpec::Http(req) => self.read_source(base, req).await,
                SourceSpec::Command(c) => self.run_source(node, c).await,
            };
            match answer {
                Ok(v) => {
                    sources.insert(name.clone(), v);
                }
                Err(e) if *name == primary => return Err(e),
                // Its fields are then absent; why is kept, for the step that waited on them.
                Err(e) => {
                    failed.insert(name.clone(), Value::String(e.to_string()));
                }
            }
        }
        let sources = Value::Object(sources);
        let status = state::map(&self.spec, &sources);
        let mut doc = state::document(&self.spec, &status, &sources);
        if let (false, Value::Object(d)) = (failed.is_empty(), &mut doc) {
            d.insert(SOURCE_ERRORS.to_owned(), Value::Object(failed));
        }
        Ok(Observed { status, doc })
    }

    /// A command source's JSON, printed by the command run beside `node`.
    async fn run_source(&self, node: &str, c: &CommandSpec) -> Result<Value, ReadError> {
        let shown = c.command.get_ref().join(" ");
        let cmd = c.command.get_ref().iter().map(|w| w.replace("{node}", node)).collect();
        let out = self
            .exec
            .exec(node, cmd, COMMAND_TIMEOUT)
            .await
            .map_err(|e| ReadError::NoAnswer(format!("{shown}: {e}")))?;
        if out.code != 0 {
            let why = out.stderr.lines().next().unwrap_or("").trim().to_owned();
            return Err(ReadError::NoAnswer(format!("{shown} exited {}: {why}", out.code)));
        }
        serde_json::from_str(&out.stdout)
            .map_err(|e| ReadError::NoAnswer(format!("{shown} printed no JSON document: {e}")))
    }

    /// One HTTP source's answer.
    async fn read_source(&self, base: &str, req: &RequestSpec) -> Result<Value, ReadError> {
        let answer = self.send(base, req, None, None).await.map_err(|e| {
            let what = format!("{}: {e}", req.path.get_ref());
            if e.is_connect() && !e.is_timeout() {
                ReadError::Down(format!("unreachable: {what}"))
            } else {
                ReadError::NoAnswer(what)
            }
        })?;
        let status = answer.status();
        if !status.is_success() {
            return Err(ReadError::NoAnswer(format!("{} answered {status}", req.path.get_ref())));
        }
        answer
            .json()
            .await
            .map_err(|e| ReadError::NoAnswer(format!("bad JSON from {}: {e}", req.path.get_ref())))
    }

    /// Any JSON document a node serves (an `expect` step's `path`), by GET.
    pub async fn document(&self, base: &str, path: &str) -> Result<Value, String> {
        let r = self
            .http
            .get(format!("{base}{path}"))
            .send()
            .await
            .map_err(|e| format!("unreachable: {e}"))?;
        if !r.status().is_success() {
            return Err(format!("{path} answered {}", r.status()));
        }
        r.json::<Value>().await.map_err(|e| format!("bad JSON from {path}: {e}"))
    }

    /// Writes `key` through the node at `base` (following redirects if the profile says so);
    /// returns the runner base URL of the node that acknowledged it.
    pub async fn put(
        &self,
        endpoints: &Endpoints,
        base: &str,
        key: &str,
        value: &str,
    ) -> Result<String, PutError> {
        let kv = &self.spec.kv;
        let mut base = base.to_owned();
        for _ in 0..4 {
            let r = self.send(&base, &kv.write, Some(key), Some(value)).await;
            match r {
                Ok(r) if r.status().is_success() => return Ok(base),
                Ok(r) if r.status().is_redirection() && kv.follow_redirects => {
                    base = self.redirected(endpoints, &r)?;
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    let outcome = if kv.refused_status.contains(&status) {
                        WriteOutcome::Failed
                    } else {
                        WriteOutcome::Unknown
                    };
                    let body = r.text().await.unwrap_or_default();
                    return Err(PutError { outcome, detail: format!("{status} {}", body.trim()) });
                }
                Err(e) if e.is_connect() => {
                    return Err(PutError { outcome: WriteOutcome::Failed, detail: e.to_string() })
                }
                Err(e) => {
                    return Err(PutError { outcome: WriteOutcome::Unknown, detail: e.to_string() })
                }
            }
        }
        Err(PutError {
            outcome: WriteOutcome::Failed,
            detail: format!("too many redirects for {key:?}"),
        })
    }

    /// Reads `key` through the node at `base`: `None` when it does not exist.
    pub async fn get(
        &self,
        endpoints: &Endpoints,
        base: &str,
        key: &str,
    ) -> Result<Option<String>, String> {
        let kv = &self.spec.kv;
        let mut base = base.to_owned();
        for _ in 0..4 {
            let r = self.send(&base, &kv.read, Some(key), None).await.map_err(|e| e.to_string())?;
            let status = r.status();
            if status.is_redirection() && kv.follow_redirects {
                base = self.redirected(endpoints, &r).map_err(|e| e.detail)?;
                continue;
            }
            if kv.missing_status == Some(status.as_u16()) {
                return Ok(None);
            }
            if !status.is_success() {
                let body = r.text().await.unwrap_or_default();
                return Err(format!("{status} {}", body.trim()));
            }
            let v: Value = r.json().await.map_err(|e| format!("bad JSON: {e}"))?;
            return match v.pointer(kv.value.get_ref()) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => decode(kv.encoding, s).map(Some),
                Some(other) => Err(format!("{} is {other}, not a string", kv.value.get_ref())),
            };
        }
        Err(format!("too many redirects for {key:?}"))
    }

    /// The runner base URL a redirect points at.
    fn redirected(&self, endpoints: &Endpoints, r: &reqwest::Response) -> Result<String, PutError> {
        let loc = r.headers().get("location").and_then(|l| l.to_str().ok()).unwrap_or_default();
        endpoints.base_of(&endpoints.reachable(loc)).ok_or_else(|| PutError {
            outcome: WriteOutcome::Failed,
            detail: format!("redirected to {loc:?}, which is no node the runner reaches"),
        })
    }

    async fn send(
        &self,
        base: &str,
        req: &RequestSpec,
        key: Option<&str>,
        value: Option<&str>,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let enc = self.spec.kv.encoding;
        let path = match key {
            // A key in a path is taken as it is (the workload's keys are URL-safe).
            Some(k) => req.path.get_ref().replace("{key}", k),
            None => req.path.get_ref().clone(),
        };
        let method =
            reqwest::Method::from_bytes(req.method().as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut b = self.http.request(method, format!("{base}{path}"));
        if let Some(body) = &req.body {
            let mut v = serde_json::to_value(body).unwrap_or(Value::Null);
            fill(&mut v, &|s| match s {
                "{key}" => key.map(|k| encode(enc, k)),
                "{value}" => value.map(|x| encode(enc, x)),
                _ => None,
            });
            b = b.json(&v);
        }
        b.send().await
    }
}

/// Replaces every string the function maps, anywhere in `v`.
fn fill(v: &mut Value, f: &dyn Fn(&str) -> Option<String>) {
    match v {
        Value::String(s) => {
            if let Some(new) = f(s) {
                *s = new;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| fill(x, f)),
        Value::Object(o) => o.values_mut().for_each(|x| fill(x, f)),
        _ => {}
    }
}

fn encode(enc: Encoding, s: &str) -> String {
    match enc {
        Encoding::Plain => s.to_owned(),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(s),
    }
}

fn decode(enc: Encoding, s: &str) -> Result<String, String> {
    match enc {
        Encoding::Plain => Ok(s.to_owned()),
        Encoding::Base64 => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| format!("value is not base64: {e}"))?;
            String::from_utf8(bytes).map_err(|_| "value is not UTF-8".into())
        }
    }
}

/// Default timeouts of the engine's own requests (the workload and sampler pick theirs).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests;
