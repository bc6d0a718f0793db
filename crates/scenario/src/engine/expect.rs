//! `expect` and `expect-down`: matchers over a node's state, `${node.field}` references, and
//! the bounded wait that reports what each node last answered.

use super::*;

impl<B: Backend> Engine<B> {
    /// The value of a `${reference}` for node `this`.
    pub(super) async fn reference(&mut self, r: &str, this: &str) -> Result<Value, String> {
        match r.split_once('.') {
            Some((who, field)) => {
                let node = match who {
                    "self" => this.to_owned(),
                    "leader" => self.current_leader().await?,
                    n if self.profile.node(n).is_some() => n.to_owned(),
                    cap => match self.captures.get(cap) {
                        Some(Value::String(name)) => name.clone(),
                        other => {
                            return Err(format!(
                                "${{{r}}}: capture {cap:?} is {other:?}, not a node name"
                            ))
                        }
                    },
                };
                let info = match self.last_info.get(&node) {
                    Some(Ok(o)) if node != this => o.doc.clone(),
                    _ => {
                        self.fetch_info(&node)
                            .await
                            .map_err(|e| format!("${{{r}}}: {node} {e}"))?
                            .doc
                    }
                };
                let v = info
                    .get(field)
                    .cloned()
                    .ok_or_else(|| format!("${{{r}}}: {node}'s info has no field {field:?}"))?;
                Ok(v)
            }
            None => {
                self.captures.get(r).cloned().ok_or_else(|| format!("${{{r}}} is not captured"))
            }
        }
    }

    pub(super) async fn interpolate_str(&mut self, s: &str, this: &str) -> Result<String, String> {
        let mut out = s.to_owned();
        for r in references(s) {
            let v = self.reference(r, this).await?;
            let text = v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
            out = out.replace(&format!("${{{r}}}"), &text);
        }
        Ok(out)
    }

    /// Resolves references inside a matcher value; a string that is exactly one reference
    /// takes the referenced value's type (so `"${self.node_id}"` compares as a number).
    pub(super) async fn interpolate(&mut self, v: &Value, this: &str) -> Result<Value, String> {
        Ok(match v {
            Value::String(s) => {
                let refs = references(s);
                if refs.len() == 1 && s == &format!("${{{}}}", refs[0]) {
                    self.reference(refs[0], this).await?
                } else {
                    Value::String(Box::pin(self.interpolate_str(s, this)).await?)
                }
            }
            Value::Array(a) => {
                let mut out = Vec::new();
                for x in a {
                    out.push(Box::pin(self.interpolate(x, this)).await?);
                }
                Value::Array(out)
            }
            other => other.clone(),
        })
    }

    pub(super) async fn expect(
        &mut self,
        e: &crate::model::Expect,
        matchers: &[(String, Matcher)],
    ) -> StepResult {
        let timeout = self.timeout(e.timeout);
        let sel = or_default(&e.nodes, "running");
        let start = Instant::now();
        let path = e.path.as_deref();
        let attempt = until(timeout, Duration::from_millis(100), async || {
            self.expect_once(&sel, matchers, path).await
        })
        .await;
        let (nodes, summary, docs) = match attempt {
            Ok(met) => met,
            Err(why) => {
                let mut msg = format!("not met within {timeout:?}: {why}\nlast answers:");
                for n in self.profile.nodes.iter().map(|n| n.name.clone()) {
                    let last = match self.last_info.get(&n) {
                        Some(Ok(o)) => {
                            let fields: Vec<String> =
                                matchers.iter().map(|(f, _)| f.clone()).collect();
                            let mut shown = compact(&o.doc, &fields);
                            if let Some(errs) = o.doc.get(crate::target::SOURCE_ERRORS) {
                                shown.push_str(&format!(" (sources that failed: {errs})"));
                            }
                            shown
                        }
                        Some(Err(e)) => e.clone(),
                        None => "(not asked)".into(),
                    };
                    msg.push_str(&format!("\n  {n} [{:?}]: {last}", self.states[&n]));
                }
                return Err(msg);
            }
        };
        for (name, field) in &e.capture {
            let v = docs[0].get(field.get_ref()).cloned().unwrap_or(Value::Null);
            self.captures.insert(name.clone(), v);
        }
        let caps = if e.capture.is_empty() {
            String::new()
        } else {
            let c: Vec<String> =
                e.capture.keys().map(|k| format!("{k}={}", self.captures[k])).collect();
            format!("; captured {}", c.join(", "))
        };
        Ok(format!(
            "{} on {}{caps} (after {:.2}s)",
            summary,
            nodes.join(", "),
            start.elapsed().as_secs_f64()
        ))
    }

    /// Waits (bounded) until every selected node's process has exited by itself; they are
    /// stopped from then on. Says what each last logged.
    pub(super) async fn expect_down(&mut self, s: &crate::model::ExpectDown) -> StepResult {
        let timeout = self.timeout(s.timeout);
        let nodes = self.resolve(s.nodes.get_ref(), timeout).await?;
        for n in &nodes {
            if self.states.get(n) != Some(&NodeState::Running) {
                return Err(format!(
                    "expect-down needs {n} running (it is {:?}): it proves a node the runner \
                     started went down by itself",
                    self.states.get(n)
                ));
            }
        }
        let start = Instant::now();
        let waited = until(timeout, Duration::from_millis(100), async || {
            let mut up = Vec::new();
            for n in &nodes {
                if self.backend.alive(n).await.map_err(|e| e.to_string())? {
                    up.push(n.clone());
                }
            }
            if up.is_empty() {
                return Ok(());
            }
            let mut shown = Vec::new();
            for n in &up {
                let state = match self.fetch_info(n).await {
                    Ok(o) => {
                        format!("answers as {} in term {}", o.status.role.as_str(), o.status.term)
                    }
                    Err(e) => e,
                };
                shown.push(format!("{n}: {state}"));
            }
            Err(shown.join("; "))
        })
        .await;
        if let Err(last) = waited {
            return Err(format!("still running after {timeout:?}: {last}"));
        }
        self.set_state(&nodes, NodeState::Stopped);
        let mut lines = vec![format!(
            "{} exited by itself (after {:.2}s); last log lines:",
            nodes.join(", "),
            start.elapsed().as_secs_f64()
        )];
        for n in &nodes {
            let log = self.backend.logs_since_start(n, 200).await;
            let all: Vec<&str> = log.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            let want = s.log_contains.as_str();
            let hits: Vec<&str> = all.iter().copied().filter(|l| l.contains(want)).collect();
            if hits.is_empty() {
                let tail = all[all.len().saturating_sub(5)..].join("\n  ");
                return Err(format!(
                    "{n} exited, but its log does not say {want:?}; it ends:\n  {}",
                    self.redact(&tail)
                ));
            }
            let shown = &hits[hits.len().saturating_sub(2)..];
            for l in shown {
                lines.push(format!("{n}: {}", self.redact(l)));
            }
        }
        Ok(lines.join("\n"))
    }

    /// One check of every matcher on every selected node; returns the nodes, a summary and
    /// the documents checked (the info answers, or those of `path`).
    pub(super) async fn expect_once(
        &mut self,
        sel: &Selector,
        matchers: &[(String, Matcher)],
        path: Option<&str>,
    ) -> Result<(Vec<String>, String, Vec<Value>), String> {
        let nodes = self.resolve_once(sel).await?;
        if nodes.is_empty() {
            return Err(format!("`{sel}` selects no node"));
        }
        let mut infos = Vec::new();
        for n in &nodes {
            let doc = match path {
                None => self.fetch_info(n).await.map(|o| o.doc),
                Some(p) => self.fetch_doc(n, p).await,
            };
            infos.push(doc.map_err(|e| format!("{n}: {e}"))?);
        }
        for (field, m) in matchers {
            if *m == Matcher::Same {
                let vals: Vec<&Value> = infos.iter().map(|i| &i[field]).collect();
                if vals.iter().any(|v| *v != vals[0]) || vals[0].is_null() {
                    let shown: Vec<String> =
                        nodes.iter().zip(&vals).map(|(n, v)| format!("{n}={v}")).collect();
                    return Err(format!("{field} differs: {}", shown.join(", ")));
                }
                continue;
            }
            for (n, info) in nodes.iter().zip(&infos) {
                let actual = info.get(field).cloned().unwrap_or(Value::Null);
                let m = match m {
                    Matcher::Eq(v) => Matcher::Eq(self.interpolate(v, n).await?),
                    Matcher::Ne(v) => Matcher::Ne(self.interpolate(v, n).await?),
                    Matcher::Contains(v) => Matcher::Contains(self.interpolate(v, n).await?),
                    Matcher::Excludes(v) => Matcher::Excludes(self.interpolate(v, n).await?),
                    Matcher::OneOf(vs) => {
                        let mut out = Vec::new();
                        for v in vs {
                            out.push(self.interpolate(v, n).await?);
                        }
                        Matcher::OneOf(out)
                    }
                    other => other.clone(),
                };
                if !matches(&m, &actual) {
                    return Err(format!("{n}: {field} is {actual}, expected {m}"));
                }
            }
        }
        let summary: Vec<String> = matchers.iter().map(|(f, m)| format!("{f} {m}")).collect();
        let prefix = path.map(|p| format!("{p}: ")).unwrap_or_default();
        Ok((nodes, format!("{prefix}{}", summary.join(", ")), infos))
    }
}

/// Whether `actual` satisfies `m` (`Same` is checked across nodes by the caller).
pub fn matches(m: &Matcher, actual: &Value) -> bool {
    let num = actual.as_f64();
    match m {
        Matcher::Eq(v) => loose_eq(actual, v),
        Matcher::Ne(v) => !loose_eq(actual, v),
        Matcher::OneOf(vs) => vs.iter().any(|v| loose_eq(actual, v)),
        Matcher::NotEmpty => match actual {
            Value::Null => false,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            _ => true,
        },
        Matcher::Same => true,
        Matcher::Gt(n) => num.is_some_and(|x| x > *n),
        Matcher::Ge(n) => num.is_some_and(|x| x >= *n),
        Matcher::Lt(n) => num.is_some_and(|x| x < *n),
        Matcher::Le(n) => num.is_some_and(|x| x <= *n),
        Matcher::Contains(v) => actual.as_array().is_some_and(|a| a.iter().any(|x| loose_eq(x, v))),
        Matcher::Excludes(v) => {
            actual.as_array().is_some_and(|a| !a.iter().any(|x| loose_eq(x, v)))
        }
        Matcher::Len(n) => match actual {
            Value::Array(a) => a.len() as u64 == *n,
            Value::String(s) => s.len() as u64 == *n,
            _ => false,
        },
    }
}

/// Equality where numbers compare by value (1 == 1.0).
pub(super) fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| loose_eq(p, q))
        }
        _ => a == b,
    }
}

/// The fields an expectation looks at, plus role and term, on one line.
pub(super) fn compact(v: &Value, fields: &[String]) -> String {
    let mut keys: Vec<&str> = vec!["role", "term", "leader_id"];
    keys.extend(fields.iter().map(String::as_str));
    keys.dedup();
    let mut seen = Vec::new();
    let parts: Vec<String> = keys
        .into_iter()
        .filter(|k| {
            let new = !seen.contains(k);
            seen.push(k);
            new
        })
        .filter_map(|k| v.get(k).map(|x| format!("{k}={x}")))
        .collect();
    parts.join(" ")
}
