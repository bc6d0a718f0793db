//! Steps that run the profile's commands beside a node: `join` (with its token, when the
//! system issues one) and `choose-survivor`; the checks on a command's output.

use super::*;

impl<B: Backend> Engine<B> {
    pub(super) fn require_stopped(&self, node: &str, what: &str) -> Result<(), String> {
        match self.states.get(node) {
            Some(NodeState::Stopped) => Ok(()),
            Some(s) => Err(format!(
                "{what} needs {node} stopped, but it is {s:?}; add a `stop` step before it"
            )),
            None => Err(format!("no node {node:?}")),
        }
    }

    /// Joins each selected node in turn (the next one once the previous one was started).
    pub(super) async fn join(&mut self, j: &crate::model::Join) -> StepResult {
        let timeout = self.timeout(j.timeout);
        let nodes = self.resolve(j.node.get_ref(), timeout).await?;
        for n in &nodes {
            self.require_stopped(n, "join")?;
        }
        let mut done = Vec::new();
        for node in nodes {
            done.push(self.join_one(j, node, timeout).await?);
        }
        Ok(done.join("\n"))
    }

    async fn join_one(
        &mut self,
        j: &crate::model::Join,
        node: String,
        timeout: Duration,
    ) -> StepResult {
        let at_ms = self.now_ms();
        self.generations.push(GenerationEvent::Rejoined { node: node.clone(), at_ms });
        let via_sel = or_default(&j.via, "leader");
        let via = self.resolve_one(&via_sel, timeout).await?;
        let via_url = self.profile.node(&via).map(|n| n.url.clone()).unwrap_or_default();
        let (mut vars, mut replaces) = (vec![("via_url", via_url)], None);
        if let Some(spec) = self.profile.join.token.clone() {
            let (file, r) = self.join_token(&spec, &node, &via, j.ttl_seconds, timeout).await?;
            vars.push(("token_file", file));
            replaces = r;
        }
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let cmd = self.profile.command(&self.profile.join.command, &node, &vars);
        let out = self
            .backend
            .oneoff(&node, &cmd, Duration::from_secs(60))
            .await
            .map_err(|e| e.to_string())?;
        if out.code != 0 {
            return Err(self.redact(&format!(
                "join command for {node} exited {}: {}",
                out.code,
                out.stderr.trim()
            )));
        }
        self.backend.start(&node).await.map_err(|e| e.to_string())?;
        self.set_state(std::slice::from_ref(&node), NodeState::Running);
        let how = match (&self.profile.join.token, replaces) {
            (Some(_), Some(r)) => format!("token from {via}, replacing node {r}"),
            (Some(_), None) => format!("token from {via}"),
            (None, _) => "member added".into(),
        };
        Ok(format!("{node} joins via {via} ({how}, node started)"))
    }

    /// A join token for `node` from `via` (an admin request), written into the node's data
    /// dir: the file's path, and the member the token says the node replaces.
    pub(super) async fn join_token(
        &mut self,
        spec: &crate::profile::TokenSpec,
        node: &str,
        via: &str,
        ttl: Option<u64>,
        timeout: Duration,
    ) -> Result<(String, Option<String>), String> {
        let key = self.profile.admin_token_key.clone().unwrap_or_default();
        let admin = self
            .profile
            .env_value(via, &key)
            .ok_or_else(|| format!("{via}'s env file has no {key} (admin_token_key)"))?;
        let ttl = ttl.unwrap_or(spec.ttl_seconds);
        // The runner is the admin here: it knows the joining node takes the place of the
        // member that has its URL (a replaced disk) and says so in the token. The cluster
        // never replaces a member by URL on its own.
        let replaces = match &spec.replaces_field {
            Some(_) => self.member_with_url_of(via, node).await?,
            None => None,
        };
        let mut request = serde_json::json!({ "ttl_seconds": ttl });
        if let (Some(field), Some(id)) = (&spec.replaces_field, &replaces) {
            // The id as the cluster spells it (a number where it is one).
            request[field] = id.parse::<u64>().map(Value::from).unwrap_or(Value::from(id.clone()));
        }
        let token = until(timeout, Duration::from_millis(200), async || {
            let base = self.backend.endpoint(via).await.map_err(|e| e.to_string())?;
            let res = self
                .http
                .post(format!("{base}{}", spec.path))
                .bearer_auth(&admin)
                .json(&request)
                .send()
                .await;
            match res {
                Ok(r) if r.status().is_success() => {
                    let v: Value = r.json().await.map_err(|e| e.to_string())?;
                    match v[&spec.field].as_str() {
                        Some(t) => Ok(t.to_owned()),
                        None => Err(format!("no {} in the answer", spec.field)),
                    }
                }
                Ok(r) => Err(format!("{} {}", r.status(), r.text().await.unwrap_or_default())),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
        .map_err(|last| {
            format!(
                "could not create a join token on {via} within {timeout:?}; last answer: {last}"
            )
        })?;
        self.secrets.push(token.clone());
        let file = self
            .backend
            .put_file(node, "join-token", token.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        Ok((file, replaces))
    }

    /// The id of the member of `via`'s cluster whose URL is `node`'s (the member a wiped
    /// `node` comes back to replace), if any.
    pub(super) async fn member_with_url_of(
        &mut self,
        via: &str,
        node: &str,
    ) -> Result<Option<String>, String> {
        let url = &self.profile.node(node).ok_or_else(|| format!("no node {node:?}"))?.url;
        // The node's URL in the cluster: the profile's (docker), or the loopback URL the local
        // backend gave it (a stopped container has no endpoint: then the profile's is the one).
        let mut urls = vec![url.clone()];
        if let Ok(e) = self.backend.endpoint(node).await {
            urls.push(e);
        }
        let info =
            self.fetch_info(via).await.map_err(|e| format!("reading {via}'s members: {e}"))?;
        Ok(info
            .status
            .members
            .iter()
            .find(|m| m.url.as_ref().is_some_and(|u| urls.contains(u)))
            .map(|m| m.id.clone()))
    }

    /// Inspects each stopped candidate and captures the one with the most up-to-date log.
    pub(super) async fn choose_survivor(&mut self, c: &crate::model::ChooseSurvivor) -> StepResult {
        let sel = or_default(&c.among, "stopped");
        let candidates = self.resolve(&sel, self.scenario.default_timeout()).await?;
        let mut lines = Vec::new();
        // (last log term, last log index, lower id first) and the node's name.
        type Rank = (u64, u64, std::cmp::Reverse<u64>);
        let mut best: Option<(Rank, String)> = None;
        for n in &candidates {
            let rank = match self.states.get(n) {
                Some(NodeState::Running) => self.rank_running(n).await,
                _ => {
                    self.require_stopped(n, "choose-survivor")?;
                    self.rank_stopped(n).await?
                }
            };
            let key = match rank {
                Ok(key) => key,
                Err(why) => {
                    lines.push(format!("{n}: not a candidate ({why})"));
                    continue;
                }
            };
            lines.push(format!(
                "{n}: last log term {}, index {}, node id {}",
                key.0, key.1, key.2 .0
            ));
            if best.as_ref().is_none_or(|(b, _)| key > *b) {
                best = Some((key, n.clone()));
            }
        }
        let Some((_, chosen)) = best else {
            return Err(format!("no candidate has Raft state:\n{}", lines.join("\n")));
        };
        self.captures.insert(c.capture.clone(), Value::String(chosen.clone()));
        let others = match &c.others {
            Some(name) => {
                let rest: Vec<Value> = self
                    .profile
                    .nodes
                    .iter()
                    .filter(|n| n.name != chosen)
                    .map(|n| Value::String(n.name.clone()))
                    .collect();
                let shown = Value::Array(rest.clone()).to_string();
                self.captures.insert(name.clone(), Value::Array(rest));
                format!(", {name} = {shown}")
            }
            None => String::new(),
        };
        Ok(format!(
            "{} = {chosen}{others} (highest last log term, then index; ties: lowest id)\n{}",
            c.capture,
            lines.join("\n")
        ))
    }

    /// A stopped node's log position, from the profile's inspect command.
    pub(super) async fn rank_stopped(
        &mut self,
        n: &str,
    ) -> Result<Result<(u64, u64, std::cmp::Reverse<u64>), String>, String> {
        let Some(spec) = self.profile.inspect.clone() else {
            return Err(format!(
                "{n} is stopped and the {} profile has no [inspect] command to read a stopped \
                 node's log: choose among running nodes (`among = \"running\"`)",
                self.profile.name
            ));
        };
        let cmd = self.profile.command(&spec.command, n, &[]);
        let out = self
            .backend
            .oneoff(n, &cmd, Duration::from_secs(60))
            .await
            .map_err(|e| e.to_string())?;
        if out.code != 0 {
            return Ok(Err(out.stderr.lines().next().unwrap_or("").trim().to_owned()));
        }
        let v: Value = serde_json::from_str(&out.stdout)
            .map_err(|e| format!("{n}: inspect output is not JSON: {e}"))?;
        let num = |p: &str| v.pointer(p).and_then(Value::as_u64).unwrap_or(0);
        Ok(Ok((
            num(&spec.last_log_term),
            num(&spec.last_log_index),
            std::cmp::Reverse(num(&spec.node_id)),
        )))
    }

    /// A running node's log position, from its state: (term, log index, id), as the node
    /// reports them: xp its current term and last log index, etcd the term of its status and
    /// its commit index. Among the members of one cluster that lost its leader that ranks the
    /// most up-to-date first; it is no offline inspection of the log.
    pub(super) async fn rank_running(
        &mut self,
        n: &str,
    ) -> Result<(u64, u64, std::cmp::Reverse<u64>), String> {
        let o = self.fetch_info(n).await?;
        let st = o.status;
        let index = st
            .log_index
            .or(st.applied_index)
            .ok_or_else(|| "the profile's state names no log_index or applied_index".to_owned())?;
        let id = st.node_id.as_deref().and_then(|i| i.parse().ok()).unwrap_or(u64::MAX);
        Ok((st.term, index, std::cmp::Reverse(id)))
    }
}

/// A command as a step line shows it: a script (`sh -c` with several lines) by its first line.
pub(super) fn shown(cmd: &[String]) -> String {
    let all = cmd.join(" ");
    match all.trim().split_once('\n') {
        Some((first, _)) => format!("{} …", first.trim_end_matches('\\').trim()),
        None => all,
    }
}

/// `cmd` as the backend ran it (ports filled, local paths mapped), when it says.
pub(super) fn as_run<'a>(cmd: &'a [String], out: &'a crate::backend::CmdOutput) -> &'a [String] {
    if out.ran.is_empty() {
        cmd
    } else {
        &out.ran
    }
}

pub(super) fn check_output(
    cmd: &[String],
    out: &crate::backend::CmdOutput,
    exit: i64,
    stdout: &[String],
    stderr: &[String],
) -> Result<(), String> {
    let cmd = as_run(cmd, out);
    let tail = |s: &str| {
        s.lines()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    };
    if out.code != exit {
        return Err(format!(
            "{} exited {}, expected {exit}\nstdout:\n{}\nstderr:\n{}",
            shown(cmd),
            out.code,
            tail(&out.stdout),
            tail(&out.stderr)
        ));
    }
    for want in stdout {
        if !out.stdout.contains(want.as_str()) {
            return Err(format!("stdout of {} lacks {want:?}:\n{}", shown(cmd), tail(&out.stdout)));
        }
    }
    for want in stderr {
        if !out.stderr.contains(want.as_str()) {
            return Err(format!("stderr of {} lacks {want:?}:\n{}", shown(cmd), tail(&out.stderr)));
        }
    }
    Ok(())
}
