//! Node selectors resolved live (`leader`, `any-follower`, `${capture}`...), bounded waits for
//! a role nobody holds yet, and partition groups.

use super::*;

impl<B: Backend> Engine<B> {
    pub(super) fn running(&self) -> Vec<String> {
        self.states
            .iter()
            .filter(|(_, s)| **s == NodeState::Running)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The current leader among running nodes (highest term wins a tie of stale leaders).
    pub(super) async fn current_leader(&mut self) -> Result<String, String> {
        let mut best: Option<(u64, String)> = None;
        let mut seen = Vec::new();
        for n in self.running() {
            match self.fetch_primary(&n).await {
                Ok(o) => {
                    let (role, term) = (o.status.role, o.status.term);
                    seen.push(format!("{n}={}(term {term})", role.as_str()));
                    if role == Role::Leader && best.as_ref().is_none_or(|(t, _)| term > *t) {
                        best = Some((term, n));
                    }
                }
                Err(e) => seen.push(format!("{n}: {e}")),
            }
        }
        best.map(|(_, n)| n).ok_or_else(|| {
            format!(
                "no leader among running nodes: {}",
                if seen.is_empty() { "none running".into() } else { seen.join(", ") }
            )
        })
    }

    pub(super) async fn followers(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for n in self.running() {
            if let Ok(o) = self.fetch_primary(&n).await {
                if o.status.role == Role::Follower {
                    out.push(n);
                }
            }
        }
        out
    }

    /// Resolves a selector once.
    pub(super) async fn resolve_once(&mut self, sel: &Selector) -> Result<Vec<String>, String> {
        let mut out: Vec<String> = Vec::new();
        for word in &sel.0 {
            let names = match word.as_str() {
                "all" => self.profile.nodes.iter().map(|n| n.name.clone()).collect(),
                "running" => self.running(),
                "stopped" => self
                    .states
                    .iter()
                    .filter(|(_, s)| **s == NodeState::Stopped)
                    .map(|(n, _)| n.clone())
                    .collect(),
                "leader" => vec![self.current_leader().await?],
                "followers" => self.followers().await,
                "any-follower" => {
                    let f = self.followers().await;
                    if f.is_empty() {
                        return Err("no follower among running nodes".into());
                    }
                    vec![f[self.rng.below(f.len())].clone()]
                }
                w => match w.strip_prefix("${").and_then(|w| w.strip_suffix('}')) {
                    Some(cap) => {
                        let v = self
                            .captures
                            .get(cap)
                            .ok_or_else(|| format!("nothing captured as {cap:?}"))?;
                        // A capture holds one name, or a list of them (`others`).
                        let names: Vec<Value> = match v {
                            Value::Array(a) => a.clone(),
                            one => vec![one.clone()],
                        };
                        let mut out = Vec::new();
                        for x in &names {
                            let name =
                                x.as_str().map(str::to_owned).unwrap_or_else(|| x.to_string());
                            let node =
                                self.profile.nodes.iter().find(|n| n.name == name).ok_or_else(
                                    || format!("capture {cap:?} is {v}, not a node name"),
                                )?;
                            out.push(node.name.clone());
                        }
                        out
                    }
                    None => vec![w.to_owned()],
                },
            };
            for n in names {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        Ok(out)
    }

    /// Resolves a selector, waiting (bounded) while it names a role nobody holds yet.
    pub(super) async fn resolve(
        &mut self,
        sel: &Selector,
        timeout: Duration,
    ) -> Result<Vec<String>, String> {
        let v = until(timeout, Duration::from_millis(100), async || {
            match self.resolve_once(sel).await {
                Ok(v) if v.is_empty() => Err(format!("`{sel}` selects no node")),
                Ok(v) => Ok(v),
                Err(e) => Err(format!("resolving `{sel}` after {timeout:?}: {e}")),
            }
        })
        .await?;
        for n in &v {
            if !self.step_nodes.contains(n) {
                self.step_nodes.push(n.clone());
            }
        }
        Ok(v)
    }

    pub(super) async fn resolve_one(
        &mut self,
        sel: &Selector,
        timeout: Duration,
    ) -> Result<String, String> {
        let v = self.resolve(sel, timeout).await?;
        Ok(v[0].clone())
    }

    pub(super) fn set_state(&mut self, nodes: &[String], s: NodeState) {
        for n in nodes {
            self.states.insert(n.clone(), s);
        }
    }
}

/// The groups of a partition as resolved, checked disjoint, plus one more group of the nodes
/// named in none; a partition needs at least two groups.
pub(super) fn partition_groups(
    all: &[String],
    groups: Vec<Vec<String>>,
) -> Result<Vec<Vec<String>>, String> {
    let mut seen: Vec<&String> = Vec::new();
    for g in &groups {
        for n in g {
            if seen.contains(&n) {
                return Err(format!("{n} is in two partition groups; the groups must be disjoint"));
            }
            seen.push(n);
        }
    }
    let rest: Vec<String> = all.iter().filter(|n| !seen.contains(n)).cloned().collect();
    let mut out: Vec<Vec<String>> = groups.clone();
    if !rest.is_empty() {
        out.push(rest);
    }
    if out.len() < 2 {
        return Err(format!(
            "a partition needs at least two groups; these groups hold every node: {}",
            out.iter().map(|g| g.join(",")).collect::<Vec<_>>().join(" | ")
        ));
    }
    Ok(out)
}

pub(super) fn describe(sel: &Selector, nodes: &[String]) -> String {
    let names = nodes.join(", ");
    if sel.0.len() == 1 && sel.0[0] == names {
        names
    } else {
        format!("{sel} → {names}")
    }
}

/// A step's selector, or `default` (a role word) when the step names none.
pub(super) fn or_default(sel: &Option<toml::Spanned<Selector>>, default: &str) -> Selector {
    sel.as_ref().map(|s| s.get_ref().clone()).unwrap_or_else(|| Selector(vec![default.into()]))
}
